/*
 * Links between nodes (cluster/peer.h) over real TCP on loopback: the
 * handshake and identities, sealed frames both ways and in order, a node
 * with another cookie refused on both sides, and, through a relay in the
 * middle that replays or alters one frame, the frame refused and the link
 * closed.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc/peer.h"
#include "ipc/dlink.h"

static struct ev_loop *loop;

struct side {
    struct peer_env env;
    int ups, downs, msgs;
    char last_why[300];
    char got[64][32];
    int channels[64];
    struct peer_link *link;
};

static struct side A, B;

static struct side *owner(struct peer_link *l)
{
    struct side *s = peer_ud(l);
    return s ? s : peer_dialed(l) ? &B : &A; /* accepted links carry no ud: A accepts */
}

static void on_up(struct peer_link *l)
{
    struct side *s = owner(l);
    s->ups++;
    s->link = l;
}

static void on_message(struct peer_link *l, int channel, const char *data, size_t len)
{
    struct side *s = owner(l);
    if (s->msgs < 64) {
        snprintf(s->got[s->msgs], sizeof(s->got[0]), "%.*s", (int)len, data);
        s->channels[s->msgs] = channel;
    }
    s->msgs++;
}

static void on_down(struct peer_link *l, const char *why)
{
    struct side *s = owner(l);
    s->downs++;
    snprintf(s->last_why, sizeof(s->last_why), "%s", why);
    if (s->link == l)
        s->link = NULL;
}

static const struct peer_ops ops = {on_up, on_message, on_down};

#define RUN_UNTIL(cond)                                                                     \
    do {                                                                                    \
        for (int turn_ = 0; turn_ < 4000 && !(cond); turn_++)                               \
            ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(200);                          \
    } while (0)

static int listen_port(struct peer_env *env)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(env->listen_fd, (struct sockaddr *)&sa, &sl), 0);
    return ntohs(sa.sin_port);
}

static struct auth_key key_a, key_b;

static void sides(const struct auth_key *kb)
{
    memset(&A, 0, sizeof(A));
    memset(&B, 0, sizeof(B));
    struct peer_ident ia = {"node-a", 0x1111222233334444ULL, "127.0.0.1:7400"};
    struct peer_ident ib = {"node-b", 0xfedcba9876543210ULL, "127.0.0.1:7410"};
    peer_env_init(&A.env, loop, &key_a, &ia, &ops);
    peer_env_init(&B.env, loop, kb, &ib, &ops);
    char err[200];
    assert_int_equal(peer_listen(&A.env, "127.0.0.1", 0, err, sizeof(err)), 0);
}

static void test_link_up_and_sealed_frames(void **state)
{
    (void)state;
    sides(&key_a);
    struct peer_link *l = peer_dial(&B.env, "127.0.0.1", listen_port(&A.env), &B);
    assert_non_null(l);
    assert_int_equal(peer_send(l, PEER_HEARTBEAT, "x", 1), -1); /* not up yet */
    RUN_UNTIL(A.ups && B.ups);
    assert_int_equal(A.ups, 1);
    assert_int_equal(B.ups, 1);
    assert_string_equal(peer_remote(B.link)->node, "node-a");
    assert_true(peer_remote(B.link)->incarnation == 0x1111222233334444ULL);
    assert_string_equal(peer_remote(A.link)->node, "node-b");
    assert_string_equal(peer_remote(A.link)->endpoint, "127.0.0.1:7410");
    for (int i = 0; i < 20; i++) {
        char m[16];
        snprintf(m, sizeof(m), "b%d", i);
        assert_int_equal(peer_send(B.link, PEER_RAFT, m, strlen(m)), 0);
        snprintf(m, sizeof(m), "a%d", i);
        assert_int_equal(peer_send(A.link, PEER_HEARTBEAT, m, strlen(m)), 0);
    }
    RUN_UNTIL(A.msgs == 20 && B.msgs == 20);
    for (int i = 0; i < 20; i++) {
        char m[16];
        snprintf(m, sizeof(m), "b%d", i);
        assert_string_equal(A.got[i], m);
        assert_int_equal(A.channels[i], PEER_RAFT);
        snprintf(m, sizeof(m), "a%d", i);
        assert_string_equal(B.got[i], m);
    }
    peer_close(B.link);
    RUN_UNTIL(A.downs);
    assert_int_equal(A.downs, 1);
    assert_int_equal(B.downs, 0); /* closing does not report to its own owner */
    peer_stop_listening(&A.env);
}

static void test_wrong_cookie_refused_both_ways(void **state)
{
    (void)state;
    sides(&key_b);
    peer_dial(&B.env, "127.0.0.1", listen_port(&A.env), &B);
    RUN_UNTIL(A.downs && B.downs);
    assert_int_equal(A.ups + B.ups, 0);
    assert_int_equal(A.env.refused, 1);
    assert_int_equal(B.env.refused, 1);
    assert_non_null(strstr(A.last_why, "does not hold our cookie"));
    assert_non_null(strstr(B.last_why, "refused"));
    peer_stop_listening(&A.env);
}

/* ---- a relay between B and A that can replay or alter one of B's sealed frames ---- */

struct relay {
    int lfd, from_b, to_a;
    char buf[65536];
    size_t len;
    int frames; /* whole frames forwarded from B */
    int mode;   /* 1: send frame #target twice; 2: flip a byte of frame #target */
    int target;
};

static void relay_pump(struct relay *r)
{
    char tmp[65536];
    ssize_t n = read(r->from_b, tmp, sizeof(tmp));
    if (n > 0) {
        memcpy(r->buf + r->len, tmp, (size_t)n);
        r->len += (size_t)n;
    }
    while (r->len >= 4) {
        uint32_t fl = (uint32_t)(unsigned char)r->buf[0] | (uint32_t)(unsigned char)r->buf[1] << 8 |
                      (uint32_t)(unsigned char)r->buf[2] << 16;
        if (r->len < 4 + fl)
            break;
        r->frames++;
        if (r->frames == r->target && r->mode == 2)
            r->buf[4 + fl - 1] ^= 1;
        assert_int_equal(write(r->to_a, r->buf, 4 + fl), (ssize_t)(4 + fl));
        if (r->frames == r->target && r->mode == 1)
            assert_int_equal(write(r->to_a, r->buf, 4 + fl), (ssize_t)(4 + fl));
        memmove(r->buf, r->buf + 4 + fl, r->len - 4 - fl);
        r->len -= 4 + fl;
    }
    /* A's answers go back to B untouched */
    n = read(r->to_a, tmp, sizeof(tmp));
    if (n > 0)
        assert_int_equal(write(r->from_b, tmp, (size_t)n), n);
}

static void run_through_relay(int mode)
{
    sides(&key_a);
    struct relay r = {.mode = mode, .target = 0};
    r.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(r.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(r.lfd, 1), 0);
    socklen_t sl = sizeof(sa);
    getsockname(r.lfd, (struct sockaddr *)&sa, &sl);
    peer_dial(&B.env, "127.0.0.1", ntohs(sa.sin_port), &B);
    for (int i = 0; i < 100 && (r.from_b = accept4(r.lfd, NULL, NULL, SOCK_NONBLOCK)) < 0; i++)
        ev_run(loop, EVRUN_NOWAIT), usleep(1000);
    assert_true(r.from_b >= 0);
    r.to_a = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_port = htons((uint16_t)listen_port(&A.env));
    assert_int_equal(connect(r.to_a, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(fcntl(r.to_a, F_SETFL, fcntl(r.to_a, F_GETFL) | O_NONBLOCK), 0);
    /* handshake: HELLO, AUTH and the identity are B's frames 1..3; frame 5 is its second message */
    r.target = 5;
    for (int t = 0; t < 4000 && !(A.ups && B.ups); t++) {
        ev_run(loop, EVRUN_NOWAIT);
        relay_pump(&r);
        usleep(200);
    }
    assert_int_equal(A.ups, 1);
    assert_int_equal(peer_send(B.link, PEER_RAFT, "first", 5), 0);
    assert_int_equal(peer_send(B.link, PEER_RAFT, "second", 6), 0);
    assert_int_equal(peer_send(B.link, PEER_RAFT, "third", 5), 0);
    for (int t = 0; t < 4000 && !A.downs; t++) {
        ev_run(loop, EVRUN_NOWAIT);
        relay_pump(&r);
        usleep(200);
    }
    assert_int_equal(A.downs, 1);
    assert_non_null(strstr(A.last_why, mode == 1 ? "replay" : "seal"));
    /* what came before the bad frame was delivered, nothing after it */
    assert_true(A.msgs >= 1);
    assert_string_equal(A.got[0], "first");
    assert_int_equal(A.msgs, mode == 1 ? 2 : 1);
    close(r.from_b);
    close(r.to_a);
    close(r.lfd);
    peer_close(B.link);
    peer_stop_listening(&A.env);
    RUN_UNTIL(0);
}

static void test_replayed_frame_refused(void **state)
{
    (void)state;
    run_through_relay(1);
}

static void test_altered_frame_refused(void **state)
{
    (void)state;
    run_through_relay(2);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    loop = ev_default_loop(0);
    dlink_init(loop);
    assert_int_equal(auth_key_from_cookie(&key_a, "the-cluster-cookie-0123456789", 29), 0);
    assert_int_equal(auth_key_from_cookie(&key_b, "another-cookie-entirely-98765", 29), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_link_up_and_sealed_frames),
        cmocka_unit_test(test_wrong_cookie_refused_both_ways),
        cmocka_unit_test(test_replayed_frame_refused),
        cmocka_unit_test(test_altered_frame_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
