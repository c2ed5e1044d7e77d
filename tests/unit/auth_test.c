/* The admin channel's authentication and sealing (ipc/auth.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ipc/auth.h"

static const char cookie_a[] = "0123456789abcdef0123456789abcdef\n";
static const char cookie_b[] = "fedcba9876543210fedcba9876543210";

struct pair {
    struct auth_key kc, ks;
    struct auth_client c;
    struct auth_server s;
    struct auth_session *ss; /* the server's side of the session */
};

/* Runs the four handshake messages; returns the first failure (or AUTH_OK). */
static int handshake(struct pair *p, const char *client_cookie, const char *server_cookie)
{
    assert_int_equal(auth_key_from_cookie(&p->kc, client_cookie, strlen(client_cookie)), AUTH_OK);
    assert_int_equal(auth_key_from_cookie(&p->ks, server_cookie, strlen(server_cookie)), AUTH_OK);
    auth_client_init(&p->c, &p->kc);
    auth_server_init(&p->s, &p->ks);
    uint8_t *m1, *m2, *m3, *m4, *body = NULL;
    size_t l1, l2, l3, l4, bl;
    assert_int_equal(auth_client_hello(&p->c, &m1, &l1), AUTH_OK);
    assert_int_equal(auth_server_hello(&p->s, m1, l1, 1.0, &m2, &l2), AUTH_OK);
    assert_int_equal(auth_client_auth(&p->c, m2, l2, &m3, &l3), AUTH_OK);
    int rc = auth_server_auth(&p->s, m3, l3, 1.5, "{\"node\":\"t\"}", &m4, &l4);
    if (rc == AUTH_OK) {
        rc = auth_client_welcome(&p->c, m4, l4, &body, &bl);
        if (rc == AUTH_OK)
            assert_string_equal((char *)body, "{\"node\":\"t\"}");
        free(m4);
        p->ss = auth_server_session(&p->s, m3, l3, 2.0);
    }
    free(body);
    free(m1);
    free(m2);
    free(m3);
    return rc;
}

static void test_handshake_and_exchange(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_a, cookie_a), AUTH_OK);
    assert_non_null(p.ss);
    for (int i = 1; i <= 5; i++) {
        char req[64], resp[64];
        snprintf(req, sizeof(req), "{\"cmd\":\"status\",\"n\":%d}", i);
        uint8_t *m, *pt;
        size_t ml, pl;
        int64_t ctr = auth_seal(&p.c.s, AUTH_REQUEST, 0, req, strlen(req), &m, &ml);
        assert_int_equal(ctr, i);
        struct auth_session *ss = auth_server_session(&p.s, m, ml, 3.0);
        assert_ptr_equal(ss, p.ss);
        struct auth_header h;
        assert_int_equal(auth_open(ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_OK);
        assert_int_equal(pl, strlen(req));
        assert_string_equal((char *)pt, req);
        assert_int_equal(h.ctr, (uint64_t)i);
        free(m);
        free(pt);
        /* And the answer, bound to the request by ref. */
        snprintf(resp, sizeof(resp), "{\"ok\":true,\"n\":%d}", i);
        int64_t rc = auth_seal(ss, AUTH_RESPONSE, (uint64_t)ctr, resp, strlen(resp), &m, &ml);
        assert_true(rc > 0);
        assert_int_equal(auth_open(&p.c.s, AUTH_RESPONSE, m, ml, &h, &pt, &pl), AUTH_OK);
        assert_string_equal((char *)pt, resp);
        assert_int_equal(h.ref, (uint64_t)ctr);
        free(m);
        free(pt);
    }
}

static void test_wrong_cookie_refused_by_server(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_b, cookie_a), AUTH_E_PROOF);
    /* No session was made. */
    for (int i = 0; i < AUTH_MAX_SESSIONS; i++)
        assert_false(p.s.sessions[i].used);
}

static void test_server_must_prove_too(void **state)
{
    (void)state;
    struct auth_key kc, ks;
    auth_key_from_cookie(&kc, cookie_a, strlen(cookie_a));
    auth_key_from_cookie(&ks, cookie_a, strlen(cookie_a));
    struct auth_client c;
    struct auth_server s;
    auth_client_init(&c, &kc);
    auth_server_init(&s, &ks);
    uint8_t *m1, *m2, *m3, *m4, *body = NULL;
    size_t l1, l2, l3, l4, bl;
    auth_client_hello(&c, &m1, &l1);
    auth_server_hello(&s, m1, l1, 1.0, &m2, &l2);
    auth_client_auth(&c, m2, l2, &m3, &l3);
    assert_int_equal(auth_server_auth(&s, m3, l3, 1.0, "{}", &m4, &l4), AUTH_OK);
    /* An impostor that relays but cannot make the server's proof. */
    m4[AUTH_HEADER_BYTES + 3] ^= 0x40;
    assert_int_equal(auth_client_welcome(&c, m4, l4, &body, &bl), AUTH_E_PROOF);
    assert_null(body);
    free(m1);
    free(m2);
    free(m3);
    free(m4);
}

static void test_challenge_answers_once(void **state)
{
    (void)state;
    struct auth_key k;
    auth_key_from_cookie(&k, cookie_a, strlen(cookie_a));
    struct auth_client c;
    struct auth_server s;
    auth_client_init(&c, &k);
    auth_server_init(&s, &k);
    uint8_t *m1, *m2, *m3, *m4;
    size_t l1, l2, l3, l4;
    auth_client_hello(&c, &m1, &l1);
    auth_server_hello(&s, m1, l1, 1.0, &m2, &l2);
    auth_client_auth(&c, m2, l2, &m3, &l3);
    assert_int_equal(auth_server_auth(&s, m3, l3, 1.0, "{}", &m4, &l4), AUTH_OK);
    free(m4);
    /* The same AUTH again (a replayed handshake) finds no pending challenge. */
    assert_int_equal(auth_server_auth(&s, m3, l3, 1.1, "{}", &m4, &l4), AUTH_E_SESSION);
    free(m1);
    free(m2);
    free(m3);
}

static void test_challenge_expires(void **state)
{
    (void)state;
    struct auth_key k;
    auth_key_from_cookie(&k, cookie_a, strlen(cookie_a));
    struct auth_client c;
    struct auth_server s;
    auth_client_init(&c, &k);
    auth_server_init(&s, &k);
    uint8_t *m1, *m2, *m3, *m4;
    size_t l1, l2, l3, l4;
    auth_client_hello(&c, &m1, &l1);
    auth_server_hello(&s, m1, l1, 1.0, &m2, &l2);
    auth_client_auth(&c, m2, l2, &m3, &l3);
    assert_int_equal(auth_server_auth(&s, m3, l3, 1.0 + AUTH_PENDING_TTL + 1, "{}", &m4, &l4),
                     AUTH_E_SESSION);
    free(m1);
    free(m2);
    free(m3);
}

static void test_replay_refused(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_a, cookie_a), AUTH_OK);
    uint8_t *m, *pt;
    size_t ml, pl;
    struct auth_header h;
    auth_seal(&p.c.s, AUTH_REQUEST, 0, "{\"cmd\":\"drain\"}", 15, &m, &ml);
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_OK);
    free(pt);
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_E_REPLAY);
    free(m);
}

static void test_tamper_refused(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_a, cookie_a), AUTH_OK);
    const char req[] = "{\"cmd\":\"status\"}";
    uint8_t *m, *pt;
    size_t ml, pl;
    struct auth_header h;
    auth_seal(&p.c.s, AUTH_REQUEST, 0, req, strlen(req), &m, &ml);
    /* Every byte of the ciphertext and tag, and the header's ref, is covered. */
    for (size_t i = AUTH_HEADER_BYTES; i < ml; i++) {
        m[i] ^= 0x01;
        assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_E_TAMPERED);
        m[i] ^= 0x01;
    }
    m[AUTH_HEADER_BYTES - 1] ^= 0x01; /* ref is additional data */
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_E_TAMPERED);
    m[AUTH_HEADER_BYTES - 1] ^= 0x01;
    m[5] = AUTH_RESPONSE; /* a type change is not taken */
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_E_STATE);
    m[5] = AUTH_REQUEST;
    m[0] = 'X';
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_E_MALFORMED);
    m[0] = 'C';
    /* Truncated. */
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, AUTH_HEADER_BYTES + 3, &h, &pt, &pl),
                     AUTH_E_MALFORMED);
    /* After all that, the untouched message still opens: failures moved no counter. */
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_OK);
    assert_string_equal((char *)pt, req);
    free(pt);
    free(m);
}

static void test_counter_order(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_a, cookie_a), AUTH_OK);
    uint8_t *m[3], *pt;
    size_t ml[3], pl;
    struct auth_header h;
    for (int i = 0; i < 3; i++)
        assert_int_equal(auth_seal(&p.c.s, AUTH_REQUEST, 0, "x", 1, &m[i], &ml[i]), i + 1);
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m[0], ml[0], &h, &pt, &pl), AUTH_OK);
    free(pt);
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m[2], ml[2], &h, &pt, &pl), AUTH_OK);
    free(pt);
    /* The second arrives after the third: older than the last accepted. */
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, m[1], ml[1], &h, &pt, &pl), AUTH_E_REPLAY);
    /* A forged huge counter does not verify and does not lock the real peer out. */
    uint8_t *f;
    size_t fl;
    auth_seal(&p.c.s, AUTH_REQUEST, 0, "y", 1, &f, &fl);
    for (int i = 22; i < 30; i++)
        f[i] = 0xff;
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, f, fl, &h, &pt, &pl), AUTH_E_TAMPERED);
    free(f);
    uint8_t *n;
    size_t nl;
    auth_seal(&p.c.s, AUTH_REQUEST, 0, "z", 1, &n, &nl);
    assert_int_equal(auth_open(p.ss, AUTH_REQUEST, n, nl, &h, &pt, &pl), AUTH_OK);
    assert_string_equal((char *)pt, "z");
    free(pt);
    free(n);
    for (int i = 0; i < 3; i++)
        free(m[i]);
}

static void test_directions_have_own_keys(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_a, cookie_a), AUTH_OK);
    /* A request reflected back to the client as if it were a response does not open. */
    uint8_t *m, *pt;
    size_t ml, pl;
    struct auth_header h;
    for (int i = 0; i < 3; i++) { /* past the welcome's counter, so only the key can refuse it */
        auth_seal(&p.c.s, AUTH_REQUEST, 0, "{}", 2, &m, &ml);
        if (i < 2)
            free(m);
    }
    m[5] = AUTH_RESPONSE;
    assert_int_equal(auth_open(&p.c.s, AUTH_RESPONSE, m, ml, &h, &pt, &pl), AUTH_E_TAMPERED);
    free(m);
}

static void test_sessions_are_independent(void **state)
{
    (void)state;
    struct pair p1, p2;
    assert_int_equal(handshake(&p1, cookie_a, cookie_a), AUTH_OK);
    assert_int_equal(handshake(&p2, cookie_a, cookie_a), AUTH_OK);
    /* A message of one session presented to the other's server state does not open. */
    uint8_t *m, *pt;
    size_t ml, pl;
    struct auth_header h;
    auth_seal(&p1.c.s, AUTH_REQUEST, 0, "{}", 2, &m, &ml);
    assert_null(auth_server_session(&p2.s, m, ml, 3.0));
    assert_int_equal(auth_open(p2.ss, AUTH_REQUEST, m, ml, &h, &pt, &pl), AUTH_E_SESSION);
    free(m);
}

static void test_unknown_and_expired_session(void **state)
{
    (void)state;
    struct pair p;
    assert_int_equal(handshake(&p, cookie_a, cookie_a), AUTH_OK);
    uint8_t *m;
    size_t ml;
    auth_seal(&p.c.s, AUTH_REQUEST, 0, "{}", 2, &m, &ml);
    assert_non_null(auth_server_session(&p.s, m, ml, 10.0));
    assert_null(auth_server_session(&p.s, m, ml, 2.0 + AUTH_SESSION_TTL + 1));
    assert_null(auth_server_session(&p.s, m, ml, 10.0)); /* gone for good */
    free(m);
}

static void test_short_cookie_refused(void **state)
{
    (void)state;
    struct auth_key k;
    assert_int_equal(auth_key_from_cookie(&k, "short\n", 6), AUTH_E_MALFORMED);
    assert_int_equal(auth_key_from_cookie(&k, "   \n", 4), AUTH_E_MALFORMED);
}

static void test_cookie_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/cmcp-auth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[512];
    snprintf(path, sizeof(path), "%s/sub/cookie", dir);
    struct auth_key k1, k2;
    bool created = false;
    assert_int_equal(auth_cookie_load(path, false, &k1, &created, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "does not exist"));
    assert_int_equal(auth_cookie_load(path, true, &k1, &created, err, sizeof(err)), 0);
    assert_true(created);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(auth_cookie_load(path, true, &k2, &created, err, sizeof(err)), 0);
    assert_false(created);
    assert_memory_equal(k1.auth, k2.auth, sizeof(k1.auth));
    assert_memory_equal(k1.base, k2.base, sizeof(k1.base));
    chmod(path, 0640);
    assert_int_equal(auth_cookie_load(path, false, &k2, NULL, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "chmod 600"));
    unlink(path);
    char sub[300];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    rmdir(sub);
    rmdir(dir);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_exchange),
        cmocka_unit_test(test_wrong_cookie_refused_by_server),
        cmocka_unit_test(test_server_must_prove_too),
        cmocka_unit_test(test_challenge_answers_once),
        cmocka_unit_test(test_challenge_expires),
        cmocka_unit_test(test_replay_refused),
        cmocka_unit_test(test_tamper_refused),
        cmocka_unit_test(test_counter_order),
        cmocka_unit_test(test_directions_have_own_keys),
        cmocka_unit_test(test_sessions_are_independent),
        cmocka_unit_test(test_unknown_and_expired_session),
        cmocka_unit_test(test_short_cookie_refused),
        cmocka_unit_test(test_cookie_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
