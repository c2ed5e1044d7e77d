/*
 * MCP engine: values shared between sessions (workers/mcp/shared.c). The
 * file is compiled in here with a hash that collides on purpose, so that
 * the chains behind one hash are exercised; mcp_session_test checks the
 * sharing through sessions with the real hash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define MCPI_SHARED_HASH(v) (value_hash(v) & 1) /* two hashes for every value there is */
#include "workers/mcp/shared.c"

static mcp_server *server(void)
{
    char err[256];
    mcp_server *srv = mcp_server_new(NULL, NULL, NULL, err, sizeof(err));
    assert_non_null(srv);
    return srv;
}

static void test_equal_values_share_one_copy(void **state)
{
    (void)state;
    mcp_server *srv = server();
    json_t *a = json_loads("{\"name\":\"x\",\"version\":\"1\",\"n\":[1,2.5,true,null]}", 0, NULL);
    json_t *b = json_loads("{\"n\":[1,2.5,true,null],\"version\":\"1\",\"name\":\"x\"}", 0, NULL);
    struct mcpi_shared *sa = mcpi_shared_get(srv, a), *sb = mcpi_shared_get(srv, b);
    assert_ptr_equal(sa, sb); /* member order does not matter */
    assert_true(json_equal((json_t *)mcpi_shared_value(sa), a));
    assert_ptr_not_equal(mcpi_shared_value(sa), a); /* a copy: the caller's value stays its own */
    assert_int_equal(mcpi_shared_count(srv), 1);
    assert_null(mcpi_shared_get(srv, NULL));
    assert_null(mcpi_shared_value(NULL));
    mcpi_shared_put(srv, NULL);
    mcpi_shared_put(srv, sa);
    assert_int_equal(mcpi_shared_count(srv), 1); /* b still holds it */
    assert_ptr_equal(mcpi_shared_ref(sb), sb);
    mcpi_shared_put(srv, sb);
    mcpi_shared_put(srv, sb);
    assert_int_equal(mcpi_shared_count(srv), 0);
    json_decref(a);
    json_decref(b);
    mcp_server_free(srv);
}

static void test_collisions_chain_and_unchain(void **state)
{
    (void)state;
    mcp_server *srv = server();
    enum { N = 40 };
    json_t *v[N];
    struct mcpi_shared *sh[N];
    for (int i = 0; i < N; i++) {
        v[i] = json_pack("{s:i,s:s}", "i", i, "kind", i % 3 ? "caps" : "info");
        sh[i] = mcpi_shared_get(srv, v[i]);
        assert_non_null(sh[i]);
    }
    assert_int_equal(mcpi_shared_count(srv), N); /* 40 values behind 2 hashes */
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(mcpi_shared_get(srv, v[i]), sh[i]); /* found along its chain */
        mcpi_shared_put(srv, sh[i]);
    }
    /* Let go in an order that removes heads of chains, tails and middles. */
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = (i * 17) % N;
    for (int k = 0; k < N; k++) {
        int i = order[k];
        mcpi_shared_put(srv, sh[i]);
        sh[i] = NULL;
        assert_int_equal(mcpi_shared_count(srv), N - 1 - k);
        for (int j = 0; j < N; j++) { /* every value still held is still found, once */
            if (!sh[j])
                continue;
            assert_ptr_equal(mcpi_shared_get(srv, v[j]), sh[j]);
            mcpi_shared_put(srv, sh[j]);
        }
    }
    assert_null(srv->shared);
    for (int i = 0; i < N; i++)
        json_decref(v[i]);
    mcp_server_free(srv);
}

static void test_hash_follows_json_equal(void **state)
{
    (void)state;
    static const char *const pairs[][2] = {
        {"{\"a\":{\"b\":1,\"c\":[]}}", "{\"a\":{\"c\":[],\"b\":1}}"},
        {"[1,\"x\",{}]", "[1,\"x\",{}]"},
        {"\"caf\\u00e9\"", "\"caf\xc3\xa9\""},
    };
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        json_t *a = json_loads(pairs[i][0], JSON_DECODE_ANY, NULL);
        json_t *b = json_loads(pairs[i][1], JSON_DECODE_ANY, NULL);
        assert_true(json_equal(a, b));
        assert_true(value_hash(a) == value_hash(b));
        json_decref(a);
        json_decref(b);
    }
    /* Different values hash apart (not guaranteed in general, but these must not all collide). */
    json_t *x = json_loads("{\"a\":1,\"b\":2}", 0, NULL), *y = json_loads("{\"a\":2,\"b\":1}", 0, NULL);
    json_t *p = json_loads("[1,2]", 0, NULL), *q = json_loads("[2,1]", 0, NULL);
    assert_true(value_hash(x) != value_hash(y));
    assert_true(value_hash(p) != value_hash(q));
    json_decref(x);
    json_decref(y);
    json_decref(p);
    json_decref(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_values_share_one_copy),
        cmocka_unit_test(test_collisions_chain_and_unchain),
        cmocka_unit_test(test_hash_follows_json_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
