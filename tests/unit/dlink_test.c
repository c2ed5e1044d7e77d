#define _GNU_SOURCE
/* The listener-shard data link (ipc/dlink.h): framing, order, large frames, breaks. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ipc/dlink.h"
#include "link_rx.h"

static struct ev_loop *loop;

/* Runs the loop until cond holds (bounded: at most 2,000 turns). */
#define RUN_UNTIL(cond)                                                                     \
    do {                                                                                    \
        for (int turn_ = 0; turn_ < 2000 && !(cond); turn_++)                               \
            ev_run(loop, EVRUN_NOWAIT);                                                     \
    } while (0)

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

/* Queues one frame of text, built in place. */
static void send_text(struct dlink *l, const char *text)
{
    size_t n = strlen(text);
    char *p = dlink_reserve(l, n);
    assert_non_null(p);
    memcpy(p, text, n);
    dlink_commit(l, n);
}

static void test_frames_in_order(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct rx a = {0}, b = {0};
    struct dlink *la = dlink_new(sv[0], &rx_ops, &a);
    dlink_new(sv[1], &rx_ops, &b);
    send_text(la, "first");
    char whole[DLINK_HDR + 6];
    dlink_frame_prefix(whole, 6);
    memcpy(whole + DLINK_HDR, "second", 6);
    assert_int_equal(dlink_send_frame(la, whole, sizeof(whole)), 0);
    send_text(la, ""); /* an empty frame is a frame */
    uint64_t queued = dlink_queued(la);
    assert_true(queued == 3 * DLINK_HDR + 5 + 6);
    assert_true(dlink_backlog(la) == queued);
    RUN_UNTIL(b.frames == 3);
    assert_int_equal(b.frames, 3);
    assert_true(dlink_sent(la) == queued);
    assert_int_equal(dlink_backlog(la), 0);
    assert_int_equal(b.len[0], 5);
    assert_memory_equal(b.data[0], "first", 5);
    assert_int_equal(b.len[1], 6);
    assert_memory_equal(b.data[1], "second", 6);
    assert_int_equal(b.len[2], 0);
    /* a frame over the limit is refused before anything is queued */
    assert_null(dlink_reserve(la, (size_t)DLINK_MAX_FRAME + 1));
    assert_true(dlink_queued(la) == queued);
    dlink_close(la);
    RUN_UNTIL(b.closed);
    assert_int_equal(b.closed, 1);
    assert_string_equal(b.why, "closed by the peer");
    assert_int_equal(a.closed, 0); /* dlink_close does not report to its own owner */
    rx_free(&a);
    rx_free(&b);
}

/* A frame much larger than a read chunk and than the socket buffer arrives whole. */
static void test_large_frame(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct rx a = {0}, b = {0};
    struct dlink *la = dlink_new(sv[0], &rx_ops, &a);
    struct dlink *lb = dlink_new(sv[1], &rx_ops, &b);
    size_t n = 3u << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    for (int i = 0; i < 3; i++) {
        char *p = dlink_reserve(la, n);
        assert_non_null(p);
        memcpy(p, big, n);
        dlink_commit(la, n);
    }
    RUN_UNTIL(b.frames == 3);
    assert_int_equal(b.frames, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b.len[i], n);
        assert_memory_equal(b.data[i], big, n);
    }
    free(big);
    dlink_close(la);
    dlink_close(lb);
    rx_free(&a);
    rx_free(&b);
}

/* Bytes that are not frames of this protocol break the link with a reason. */
static void test_garbage_breaks_link(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct rx b = {0};
    dlink_new(sv[1], &rx_ops, &b);
    assert_int_equal(write(sv[0], "GET / HTTP/1.1\r\n\r\n", 18), 18);
    RUN_UNTIL(b.closed);
    assert_int_equal(b.closed, 1);
    assert_non_null(strstr(b.why, "frame too large"));
    assert_int_equal(b.frames, 0);
    close(sv[0]);
}

/* A partial frame left by a peer that died is not delivered. */
static void test_partial_frame_not_delivered(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct rx b = {0};
    dlink_new(sv[1], &rx_ops, &b);
    const char part[] = {10, 0, 0, 0, '{', '}', '\n'};
    assert_int_equal(write(sv[0], part, sizeof(part)), (ssize_t)sizeof(part));
    close(sv[0]);
    RUN_UNTIL(b.closed);
    assert_int_equal(b.closed, 1);
    assert_int_equal(b.frames, 0);
}

/* Closing a link from inside its own frame callback is safe. */
/*
 * A sealed pair: frames open on the other side in order (built in place, or
 * whole); the bytes on the wire are not the plaintext; a frame altered on
 * the way, or one delivered twice, closes the link saying so.
 */
static void sealed_pair(int sv[2], struct rx *a, struct rx *b, struct dlink **la,
                        struct dlink **lb)
{
    unsigned char k1[DLINK_KEY_BYTES], k2[DLINK_KEY_BYTES];
    memset(k1, 0x11, sizeof(k1));
    memset(k2, 0x22, sizeof(k2));
    pair(sv);
    *la = dlink_new(sv[0], &rx_ops, a);
    assert_int_equal(dlink_seal(*la, k1, k2), 0);
    if (lb) {
        *lb = dlink_new(sv[1], &rx_ops, b);
        assert_int_equal(dlink_seal(*lb, k2, k1), 0);
    }
    assert_true(dlink_sealed(*la));
    assert_int_equal(dlink_seal(*la, k1, k2), -1); /* once */
}

static void test_sealed_frames(void **state)
{
    (void)state;
    int sv[2];
    struct rx a = {0}, b = {0};
    struct dlink *la, *lb;
    sealed_pair(sv, &a, &b, &la, &lb);
    send_text(la, "first secret");
    char whole[DLINK_HDR + 6];
    dlink_frame_prefix(whole, 6);
    memcpy(whole + DLINK_HDR, "second", 6);
    assert_int_equal(dlink_send_frame(la, whole, sizeof(whole)), 0);
    send_text(la, "");
    assert_true(dlink_queued(la) == 3 * (DLINK_HDR + DLINK_SEAL_TAG) + 12 + 6);
    send_text(lb, "back");
    RUN_UNTIL(b.frames == 3 && a.frames == 1);
    assert_int_equal(b.frames, 3);
    assert_int_equal(b.len[0], 12);
    assert_memory_equal(b.data[0], "first secret", 12);
    assert_memory_equal(b.data[1], "second", 6);
    assert_int_equal(b.len[2], 0);
    assert_int_equal(a.frames, 1);
    assert_memory_equal(a.data[0], "back", 4);
    dlink_close(la);
    dlink_close(lb);
    rx_free(&a);
    rx_free(&b);
}

/* The raw bytes of one sealed frame of `text`, as a sealed link writes them. */
static size_t sealed_bytes(const char *text, char *out, size_t cap)
{
    int sv[2];
    struct rx a = {0};
    struct dlink *la;
    sealed_pair(sv, &a, NULL, &la, NULL);
    send_text(la, text);
    RUN_UNTIL(dlink_backlog(la) == 0);
    ssize_t n = read(sv[1], out, cap);
    assert_true(n > 0);
    assert_null(memmem(out, (size_t)n, text, strlen(text))); /* not in the clear */
    dlink_close(la);
    close(sv[1]);
    rx_free(&a);
    return (size_t)n;
}

static void test_sealed_tampered_or_replayed_frame_breaks_link(void **state)
{
    (void)state;
    char raw[256];
    size_t n = sealed_bytes("a request", raw, sizeof(raw));
    unsigned char k1[DLINK_KEY_BYTES], k2[DLINK_KEY_BYTES];
    memset(k1, 0x11, sizeof(k1));
    memset(k2, 0x22, sizeof(k2));
    for (int attack = 0; attack < 3; attack++) {
        int sv[2];
        pair(sv);
        struct rx b = {0};
        struct dlink *lb = dlink_new(sv[1], &rx_ops, &b);
        assert_int_equal(dlink_seal(lb, k2, k1), 0);
        char copy[256];
        memcpy(copy, raw, n);
        if (attack == 0) { /* one bit flipped in the ciphertext */
            copy[DLINK_HDR + 2] ^= 1;
            assert_int_equal(write(sv[0], copy, n), (ssize_t)n);
        } else if (attack == 1) { /* the same frame twice: the second does not open */
            assert_int_equal(write(sv[0], copy, n), (ssize_t)n);
            assert_int_equal(write(sv[0], copy, n), (ssize_t)n);
        } else { /* the frame as a link with other keys would read it */
            dlink_close(lb);
            close(sv[0]);
            pair(sv);
            lb = dlink_new(sv[1], &rx_ops, &b);
            assert_int_equal(dlink_seal(lb, k1, k2), 0);
            assert_int_equal(write(sv[0], copy, n), (ssize_t)n);
        }
        RUN_UNTIL(b.closed);
        assert_int_equal(b.closed, 1);
        assert_non_null(strstr(b.why, "did not open"));
        assert_int_equal(b.frames, attack == 1 ? 1 : 0);
        if (attack == 1)
            assert_memory_equal(b.data[0], "a request", 9);
        close(sv[0]);
        rx_free(&b);
    }
}

static struct dlink *close_me;
static int close_frames;
static void frame_close(struct dlink *l, const char *data, size_t len)
{
    (void)data;
    (void)len;
    close_frames++;
    dlink_close(l);
    close_me = NULL;
}
static const struct dlink_ops close_ops = {frame_close, NULL, rx_closed};

static void test_close_inside_callback(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct rx a = {0};
    struct dlink *la = dlink_new(sv[0], &rx_ops, &a);
    close_me = dlink_new(sv[1], &close_ops, NULL);
    for (int i = 0; i < 5; i++)
        send_text(la, "x");
    RUN_UNTIL(close_frames > 0 && a.closed);
    assert_int_equal(close_frames, 1); /* the rest of the batch is not delivered after close */
    assert_int_equal(a.closed, 1);
    rx_free(&a);
}

/* dlink_flush writes at once, without the loop turn's end: what a shard needs before it blocks
 * in an fsync (its replicas write meanwhile). A link whose write failed is closed by it. */
static void test_flush_writes_now(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    struct rx a = {0};
    struct dlink *la = dlink_new(sv[0], &rx_ops, &a);
    send_text(la, "now");
    assert_true(dlink_sent(la) == 0); /* queued: it would leave as the loop next waits */
    dlink_flush(la);
    assert_true(dlink_sent(la) == DLINK_HDR + 3);
    assert_true(dlink_backlog(la) == 0);
    char buf[16];
    ssize_t n = read(sv[1], buf, sizeof(buf)); /* no loop turn in between */
    assert_int_equal(n, DLINK_HDR + 3);
    assert_memory_equal(buf + DLINK_HDR, "now", 3);
    dlink_flush(la); /* nothing queued: nothing happens */
    assert_true(dlink_sent(la) == DLINK_HDR + 3);
    close(sv[1]);
    send_text(la, "lost");
    dlink_flush(la); /* the peer is gone: the link ends, its closed callback says why */
    assert_int_equal(a.closed, 1);
    rx_free(&a);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as every cmcp process does: a write to a gone peer fails */
    loop = ev_default_loop(0);
    dlink_init(loop);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_in_order),
        cmocka_unit_test(test_large_frame),
        cmocka_unit_test(test_garbage_breaks_link),
        cmocka_unit_test(test_partial_frame_not_delivered),
        cmocka_unit_test(test_close_inside_callback),
        cmocka_unit_test(test_flush_writes_now),
        cmocka_unit_test(test_sealed_frames),
        cmocka_unit_test(test_sealed_tampered_or_replayed_frame_breaks_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
