/* MCP engine: asynchronous calls -- sleep with progress, cancellation, timers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int setup(void **state)
{
    struct mcp_server_opts o = {.packs = "core"};
    assert_non_null(*state = fakeenv_new(&o, NULL, "s1", "2025-11-25", NULL));
    return 0;
}

static void start_sleep(struct fakeenv *e, json_int_t id, int ms, const char *token_json)
{
    char params[256];
    if (token_json)
        snprintf(params, sizeof(params),
                 "{\"name\":\"sleep\",\"arguments\":{\"ms\":%d},\"_meta\":{\"progressToken\":%s}}",
                 ms, token_json);
    else
        snprintf(params, sizeof(params), "{\"name\":\"sleep\",\"arguments\":{\"ms\":%d}}", ms);
    bool pending = false;
    json_t *r = fakehost_request(e->srv, e->s, id, "tools/call", params, &pending);
    assert_null(r);
    assert_true(pending);
}

static void test_sleep_with_progress(void **state)
{
    struct fakeenv *e = *state;
    start_sleep(e, 7, 1000, "\"tok-1\"");
    assert_int_equal(mcp_session_pending(e->s), 1);
    assert_int_equal(fakehost_live_timers(&e->fh), 1);
    /* Nothing before the first tick. */
    assert_int_equal(fakehost_advance(&e->fh, 99), 0);
    assert_int_equal(json_array_size(e->fh.emitted), 0);
    fakehost_advance(&e->fh, 1001);
    json_t *em = fakehost_take(&e->fh);
    /* 9 progress notifications (100..900 of 1000), then the response. */
    assert_int_equal(json_array_size(em), 10);
    for (size_t i = 0; i < 9; i++) {
        const json_t *rec = json_array_get(em, i);
        assert_false(json_is_true(json_object_get(rec, "final")));
        assert_int_equal(json_integer_value(json_object_get(rec, "rel")), 7);
        const json_t *msg = json_object_get(rec, "msg");
        assert_string_equal(json_string_value(json_object_get(msg, "method")),
                            "notifications/progress");
        const json_t *p = json_object_get(msg, "params");
        assert_string_equal(json_string_value(json_object_get(p, "progressToken")), "tok-1");
        assert_int_equal(json_integer_value(json_object_get(p, "progress")), (i + 1) * 100);
        assert_int_equal(json_integer_value(json_object_get(p, "total")), 1000);
        assert_non_null(json_object_get(p, "message"));
    }
    const json_t *last = json_array_get(em, 9);
    assert_true(json_is_true(json_object_get(last, "final")));
    assert_int_equal(json_integer_value(json_object_get(last, "rel")), 7);
    const json_t *resp = json_object_get(last, "msg");
    assert_int_equal(json_integer_value(json_object_get(resp, "id")), 7);
    assert_false(fakehost_is_error(resp));
    assert_true(json_number_value(json_object_get(
                    json_object_get(fakehost_result(resp), "structuredContent"), "slept_ms")) ==
                1000.0);
    json_decref(em);
    assert_int_equal(mcp_session_pending(e->s), 0);
    assert_int_equal(fakehost_live_timers(&e->fh), 0);
}

static void test_sleep_long_caps_ticks(void **state)
{
    struct fakeenv *e = *state;
    start_sleep(e, 8, 60000, "5"); /* integer token */
    fakehost_advance(&e->fh, 60000);
    json_t *em = fakehost_take(&e->fh);
    /* At most 100 steps: 99 progress + the response. */
    assert_int_equal(json_array_size(em), 100);
    const json_t *p = json_object_get(json_object_get(json_array_get(em, 0), "msg"), "params");
    assert_int_equal(json_integer_value(json_object_get(p, "progressToken")), 5);
    assert_int_equal(json_integer_value(json_object_get(p, "progress")), 600);
    json_decref(em);
}

static void test_sleep_without_token(void **state)
{
    struct fakeenv *e = *state;
    start_sleep(e, 9, 250, NULL);
    assert_int_equal(fakehost_advance(&e->fh, 249), 0);
    assert_int_equal(fakehost_advance(&e->fh, 1), 1);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1); /* no progress without a token */
    assert_true(json_is_true(json_object_get(json_array_get(em, 0), "final")));
    json_decref(em);
    /* ms = 0 answers at once. */
    bool pending = true;
    json_t *r = fakehost_request(e->srv, e->s, 10, "tools/call",
                                 "{\"name\":\"sleep\",\"arguments\":{\"ms\":0}}", &pending);
    assert_false(pending);
    assert_false(fakehost_is_error(r));
    json_decref(r);
}

static void test_cancel(void **state)
{
    struct fakeenv *e = *state;
    start_sleep(e, 120, 5000, "\"t\"");
    fakehost_advance(&e->fh, 250);
    json_decref(fakehost_take(&e->fh));
    assert_int_equal(fakehost_live_timers(&e->fh), 1);
    fakehost_notify(e->srv, e->s, "notifications/cancelled",
                    "{\"requestId\":120,\"reason\":\"user\"}");
    /* Cancelled: its timer is gone, no response, a final record with NULL. */
    assert_int_equal(fakehost_live_timers(&e->fh), 0);
    assert_int_equal(mcp_session_pending(e->s), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    const json_t *rec = json_array_get(em, 0);
    assert_true(json_is_true(json_object_get(rec, "final")));
    assert_true(json_is_null(json_object_get(rec, "msg")));
    assert_int_equal(json_integer_value(json_object_get(rec, "rel")), 120);
    json_decref(em);
    assert_int_equal(fakehost_advance(&e->fh, 10000), 0);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
}

static void test_cancel_string_id_and_unknown(void **state)
{
    struct fakeenv *e = *state;
    json_t *msg =
        json_pack("{s:s,s:s,s:s,s:{s:s,s:{s:i}}}", "jsonrpc", "2.0", "id", "req-a", "method",
                  "tools/call", "params", "name", "sleep", "arguments", "ms", 1000);
    bool pending = false;
    assert_null(mcp_handle(e->srv, e->s, msg, &pending));
    assert_true(pending);
    /* Same id while in flight: refused. */
    json_t *r = mcp_handle(e->srv, e->s, msg, &pending);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    json_decref(msg);
    /* Unknown ids, a numeric id that only looks the same, malformed: ignored. */
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{\"requestId\":\"nope\"}");
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{}");
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{\"requestId\":null}");
    assert_int_equal(mcp_session_pending(e->s), 1);
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{\"requestId\":\"req-a\"}");
    assert_int_equal(mcp_session_pending(e->s), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(em, 0), "rel")), "req-a");
    json_decref(em);
    /* A cancellation after completion is ignored too. */
    start_sleep(e, 11, 100, NULL);
    fakehost_advance(&e->fh, 100);
    json_decref(fakehost_take(&e->fh));
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{\"requestId\":11}");
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
}

static void test_concurrent_calls(void **state)
{
    struct fakeenv *e = *state;
    start_sleep(e, 1, 300, NULL);
    start_sleep(e, 2, 100, NULL);
    start_sleep(e, 3, 200, NULL);
    assert_int_equal(mcp_session_pending(e->s), 3);
    /* Synchronous requests are answered while the others wait. */
    json_t *r = fakehost_request(e->srv, e->s, 4, "ping", NULL, NULL);
    assert_non_null(fakehost_result(r));
    json_decref(r);
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{\"requestId\":3}");
    fakehost_advance(&e->fh, 1000);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(em, 0), "rel")), 3);
    assert_true(json_is_null(json_object_get(json_array_get(em, 0), "msg")));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(em, 1), "rel")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(em, 2), "rel")), 1);
    json_decref(em);
}

static void test_session_free_with_pending(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "doomed");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", NULL));
    json_decref(fakehost_take(&e->fh));
    bool pending = false;
    json_t *r = fakehost_request(e->srv, s, 1, "tools/call",
                                 "{\"name\":\"sleep\",\"arguments\":{\"ms\":1000},\"_meta\":"
                                 "{\"progressToken\":1}}",
                                 &pending);
    assert_null(r);
    assert_true(pending);
    assert_int_equal(fakehost_live_timers(&e->fh), 1);
    mcp_session_free(s);
    /* Timers cancelled, nothing emitted for a session being torn down. */
    assert_int_equal(fakehost_live_timers(&e->fh), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
}

static void test_inflight_limit(void **state)
{
    struct fakeenv *e = *state;
    json_int_t id;
    for (id = 1; id <= 128; id++)
        start_sleep(e, id, 1000, NULL);
    json_t *r = fakehost_request(e->srv, e->s, id, "tools/call",
                                 "{\"name\":\"sleep\",\"arguments\":{\"ms\":10}}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    fakehost_advance(&e->fh, 1000);
    assert_int_equal(mcp_session_pending(e->s), 0);
    json_decref(fakehost_take(&e->fh));
}

static void test_no_timers(void **state)
{
    struct fakehost fh;
    fakehost_init(&fh);
    struct mcp_host_ops ops = fakehost_ops;
    ops.timer_add = NULL;
    ops.timer_cancel = NULL;
    char err[128];
    mcp_server *srv = mcp_server_new(NULL, &ops, &fh, err, sizeof(err));
    mcp_session *s = mcp_session_new(srv, "n");
    json_decref(fakehost_initialize(srv, s, "2025-11-25", NULL));
    bool pending = true;
    json_t *r = fakehost_request(srv, s, 1, "tools/call",
                                 "{\"name\":\"sleep\",\"arguments\":{\"ms\":10}}", &pending);
    assert_false(pending);
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "timers"));
    json_decref(r);
    mcp_server_free(srv);
    fakehost_fini(&fh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sleep_with_progress, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_sleep_long_caps_ticks, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_sleep_without_token, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_string_id_and_unknown, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_calls, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_session_free_with_pending, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_inflight_limit, setup, fakeenv_teardown),
        cmocka_unit_test(test_no_timers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
