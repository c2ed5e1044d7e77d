/* MCP engine: session state, dump/restore round trip, epoch and seq. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"
#include "workers/mcp/mcp_internal.h"

static int setup(void **state)
{
    struct mcp_server_opts o = {.packs = "core"};
    assert_non_null(*state = fakeenv_new(&o, NULL, NULL, NULL, NULL));
    return 0;
}

static void must_ok(mcp_server *srv, mcp_session *s, json_int_t id, const char *method,
                    const char *params)
{
    json_t *r = fakehost_request(srv, s, id, method, params, NULL);
    if (!fakehost_result(r) || fakehost_is_error(r)) {
        char *t = json_dumps(r, 0);
        fail_msg("%s failed: %s", method, t);
    }
    json_decref(r);
}

static void test_fresh_session(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "abc");
    assert_string_equal(mcp_session_id(s), "abc");
    assert_false(mcp_session_initialized(s));
    assert_int_equal(mcp_session_seq(s), 0);
    assert_int_equal(mcp_session_epoch(s), 1);
    mcp_session_set_userdata(s, e);
    assert_ptr_equal(mcp_session_userdata(s), e);
    json_t *d = mcp_session_dump(s);
    assert_int_equal(json_integer_value(json_object_get(d, "v")), 1);
    assert_true(json_is_false(json_object_get(d, "initialized")));
    assert_true(json_is_null(json_object_get(d, "protocol")));
    assert_true(json_is_null(json_object_get(d, "log_level")));
    char err[256];
    mcp_session *r = mcp_session_restore(e->srv, d, err, sizeof(err));
    assert_non_null(r);
    assert_false(mcp_session_initialized(r));
    json_decref(d);
    mcp_session_free(r);
    mcp_session_free(s);
}

static void test_round_trip(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "sess-42");
    json_decref(fakehost_initialize(e->srv, s, "2025-06-18",
                                    "{\"sampling\":{},\"roots\":{\"listChanged\":true}}"));
    must_ok(e->srv, s, 1, "logging/setLevel", "{\"level\":\"error\"}");
    must_ok(e->srv, s, 2, "resources/subscribe", "{\"uri\":\"kv://a\"}");
    must_ok(e->srv, s, 3, "tools/call",
            "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"a\","
            "\"value\":{\"deep\":[1,\"two\",null]}}}");
    must_ok(e->srv, s, 4, "tools/call",
            "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"b\","
            "\"value\":\"text\"}}");
    mcp_session_set_epoch(s, 7);
    uint64_t seq = mcp_session_seq(s);
    assert_int_equal(seq, 5); /* initialize, setLevel, subscribe, 2 x kv_set */
    json_t *d = mcp_session_dump(s);
    assert_int_equal(json_integer_value(json_object_get(d, "seq")), 5);
    assert_int_equal(json_integer_value(json_object_get(d, "epoch")), 7);
    assert_string_equal(json_string_value(json_object_get(d, "log_level")), "error");
    assert_string_equal(json_string_value(json_object_get(d, "protocol")), "2025-06-18");
    assert_string_equal(json_string_value(json_object_get(d, "id")), "sess-42");
    assert_string_equal(json_string_value(json_array_get(json_object_get(d, "subscriptions"), 0)),
                        "kv://a");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(d, "client"), "info"), "name")),
                        "t");
    /* Through text, as the durable store will keep it. */
    char *text = json_dumps(d, JSON_COMPACT);
    json_t *back = json_loads(text, 0, NULL);
    free(text);
    mcp_session_free(s);

    char err[256];
    mcp_session *r = mcp_session_restore(e->srv, back, err, sizeof(err));
    assert_non_null(r);
    assert_true(mcp_session_initialized(r));
    assert_string_equal(mcp_session_protocol(r), "2025-06-18");
    assert_string_equal(mcp_session_id(r), "sess-42");
    assert_int_equal(mcp_session_seq(r), 5);
    assert_int_equal(mcp_session_epoch(r), 7);
    assert_non_null(json_object_get(mcp_session_client_capabilities(r), "sampling"));
    json_t *d2 = mcp_session_dump(r);
    assert_true(json_equal(d, d2));
    json_decref(d2);
    json_decref(back);
    json_decref(d);

    /* The restored session serves requests with its old state. */
    json_t *resp = fakehost_request(e->srv, r, 10, "tools/call",
                                    "{\"name\":\"kv_get\",\"arguments\":{\"key\":\"b\"}}", NULL);
    assert_string_equal(fakehost_text(resp, 0), "text");
    json_decref(resp);
    json_decref(fakehost_take(&e->fh));
    /* ...its subscription still works, its log level still filters. */
    resp =
        fakehost_request(e->srv, r, 11, "tools/call",
                         "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"a\",\"value\":0}}", NULL);
    json_decref(resp);
    mcp_session_log(r, MCP_LOG_WARNING, NULL, json_string("filtered"));
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(em, 0), "msg"), "method")),
        "notifications/resources/updated");
    json_decref(em);
    assert_int_equal(mcp_session_seq(r), 6);
    mcp_session_free(r);
}

static void test_restore_errors(void **state)
{
    struct fakeenv *e = *state;
    static const char *const bad[] = {
        "[]",
        "{\"v\":2,\"id\":\"x\",\"epoch\":1,\"seq\":0,\"initialized\":false}",
        "{\"v\":1,\"epoch\":1,\"seq\":0,\"initialized\":false}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":-1,\"seq\":0,\"initialized\":false}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":\"0\",\"initialized\":false}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":0}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":0,\"initialized\":true,\"protocol\":\"1.0\"}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":0,\"initialized\":false,\"log_level\":\"loud\"}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":0,\"initialized\":false,\"subscriptions\":[1]}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":0,\"initialized\":false,\"kv\":[]}",
        "{\"v\":1,\"id\":\"x\",\"epoch\":1,\"seq\":0,\"initialized\":false,\"client\":{\"info\":1}"
        "}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *st = json_loads(bad[i], 0, NULL);
        assert_non_null(st);
        char err[256] = "";
        mcp_session *s = mcp_session_restore(e->srv, st, err, sizeof(err));
        if (s)
            fail_msg("state %zu was accepted: %s", i, bad[i]);
        assert_non_null(strstr(err, "cannot restore session state"));
        json_decref(st);
    }
    /* A minimal valid record restores. */
    json_t *st = json_loads("{\"v\":1,\"id\":\"x\",\"epoch\":3,\"seq\":9,\"initialized\":true,"
                            "\"protocol\":\"2024-11-05\"}",
                            0, NULL);
    char err[256];
    mcp_session *s = mcp_session_restore(e->srv, st, err, sizeof(err));
    assert_non_null(s);
    assert_string_equal(mcp_session_protocol(s), "2024-11-05");
    json_decref(st);
    mcp_session_free(s);
}

static void test_pending_calls_are_not_durable(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "p");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", NULL));
    bool pending = false;
    json_decref(fakehost_request(e->srv, s, 1, "tools/call",
                                 "{\"name\":\"sleep\",\"arguments\":{\"ms\":500}}", &pending));
    assert_true(pending);
    uint64_t seq = mcp_session_seq(s);
    json_t *d = mcp_session_dump(s);
    char err[256];
    mcp_session *copy = mcp_session_restore(e->srv, d, err, sizeof(err));
    assert_int_equal(mcp_session_pending(copy), 0);
    assert_int_equal(mcp_session_seq(copy), seq);
    json_decref(d);
    mcp_session_free(copy);
    mcp_session_free(s);
}

/* Sessions of clients that sent equal info and capabilities share one copy of each. */
static void test_client_values_shared(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *a = mcp_session_new(e->srv, "a"), *b = mcp_session_new(e->srv, "b"),
                *c = mcp_session_new(e->srv, "c"), *d = mcp_session_new(e->srv, "d");
    json_decref(fakehost_initialize(e->srv, a, "2025-06-18", "{\"roots\":{},\"sampling\":{}}"));
    json_decref(fakehost_initialize(e->srv, b, "2025-11-25", "{\"sampling\":{},\"roots\":{}}"));
    json_decref(fakehost_initialize(e->srv, c, "2025-11-25", "{\"elicitation\":{}}"));
    json_decref(fakehost_request(e->srv, d, 0, "initialize",
                                 "{\"protocolVersion\":\"2025-11-25\"}", NULL));
    assert_ptr_equal(mcp_session_client_capabilities(a), mcp_session_client_capabilities(b));
    assert_ptr_not_equal(mcp_session_client_capabilities(a), mcp_session_client_capabilities(c));
    assert_ptr_equal(a->client_info, c->client_info); /* the same {"name":"t","version":"1"} */
    /* No capabilities sent: the empty object; no clientInfo: none. */
    assert_int_equal(json_object_size(mcp_session_client_capabilities(d)), 0);
    assert_non_null(mcp_session_client_capabilities(d));
    assert_null(d->client_info);
    assert_int_equal(mcpi_shared_count(e->srv), 4); /* 2 capability sets, {}, one info */
    /* The protocol is a static string, not a copy per session. */
    assert_ptr_equal(mcp_session_protocol(b), mcp_session_protocol(c));
    /* A restored session shares with the live ones. */
    json_t *dump = mcp_session_dump(a);
    mcp_session_free(a);
    assert_int_equal(mcpi_shared_count(e->srv), 4);
    char err[256];
    mcp_session *r = mcp_session_restore(e->srv, dump, err, sizeof(err));
    assert_non_null(r);
    json_decref(dump);
    assert_ptr_equal(mcp_session_client_capabilities(r), mcp_session_client_capabilities(b));
    assert_ptr_equal(r->client_info, b->client_info);
    mcp_session_free(b);
    mcp_session_free(r);
    assert_int_equal(mcpi_shared_count(e->srv), 3); /* the last user of the first set left */
    mcp_session_free(c);
    mcp_session_free(d);
    assert_int_equal(mcpi_shared_count(e->srv), 0);
}

/* Subscriptions and kv cost nothing until used and again once emptied; dumps do not change. */
static void test_lazy_state(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "lazy");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", NULL));
    assert_null(s->subs);
    assert_null(s->kv);
    json_t *d0 = mcp_session_dump(s);
    assert_true(json_is_array(json_object_get(d0, "subscriptions")));
    assert_int_equal(json_array_size(json_object_get(d0, "subscriptions")), 0);
    assert_true(json_is_object(json_object_get(d0, "kv")));
    assert_int_equal(json_object_size(json_object_get(d0, "kv")), 0);
    json_decref(d0);
    must_ok(e->srv, s, 1, "resources/subscribe", "{\"uri\":\"kv://a\"}");
    must_ok(e->srv, s, 2, "tools/call", "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"a\",\"value\":1}}");
    assert_non_null(s->subs);
    assert_non_null(s->kv);
    json_decref(fakehost_take(&e->fh));
    must_ok(e->srv, s, 3, "resources/unsubscribe", "{\"uri\":\"kv://a\"}");
    must_ok(e->srv, s, 4, "tools/call", "{\"name\":\"kv_delete\",\"arguments\":{\"key\":\"a\"}}");
    assert_null(s->subs);
    assert_null(s->kv);
    json_t *resp = fakehost_request(e->srv, s, 5, "tools/call",
                                    "{\"name\":\"kv_get\",\"arguments\":{\"key\":\"a\"}}", NULL);
    assert_true(json_is_true(json_object_get(fakehost_result(resp), "isError")));
    json_decref(resp);
    resp = fakehost_request(e->srv, s, 6, "tools/call",
                            "{\"name\":\"kv_list\",\"arguments\":{}}", NULL);
    assert_string_equal(fakehost_text(resp, 0), "[]");
    json_decref(resp);
    json_decref(fakehost_take(&e->fh));
    mcp_session_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_session, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_restore_errors, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_pending_calls_are_not_durable, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_client_values_shared, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_lazy_state, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
