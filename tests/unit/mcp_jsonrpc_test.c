/* MCP engine: JSON-RPC classification, error codes, batches, raw text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int setup(void **state)
{
    struct mcp_server_opts o = {.packs = "core"};
    assert_non_null(*state = fakeenv_new(&o, NULL, "sess-1", NULL, NULL));
    return 0;
}

static json_t *J(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    return v;
}

static void test_classify(void **state)
{
    static const struct {
        const char *text;
        enum mcp_msg_kind kind;
    } cases[] = {
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}", MCP_MSG_REQUEST},
        {"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"ping\"}", MCP_MSG_REQUEST},
        {"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}", MCP_MSG_NOTIFICATION},
        {"{\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"result\":{}}", MCP_MSG_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-1,\"message\":\"x\"}}",
         MCP_MSG_RESPONSE},
        {"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-1,\"message\":\"x\"}}",
         MCP_MSG_RESPONSE},
        {"[{\"jsonrpc\":\"2.0\",\"method\":\"x\"}]", MCP_MSG_BATCH},
        {"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", MCP_MSG_INVALID},
        {"{\"id\":1,\"method\":\"ping\"}", MCP_MSG_INVALID},
        {"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", MCP_MSG_INVALID},
        {"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}", MCP_MSG_INVALID},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":7}", MCP_MSG_INVALID},
        {"{\"jsonrpc\":\"2.0\",\"id\":1}", MCP_MSG_INVALID},
        {"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{\"code\":1}}", MCP_MSG_INVALID},
        {"\"hello\"", MCP_MSG_INVALID},
        {"42", MCP_MSG_INVALID},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *m = J(cases[i].text);
        if (mcp_classify(m) != cases[i].kind)
            fail_msg("case %zu (%s): got %d, want %d", i, cases[i].text, mcp_classify(m),
                     cases[i].kind);
        json_decref(m);
    }
    json_t *init = J("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{}}");
    assert_true(mcp_is_initialize(init));
    json_decref(init);
    json_t *ping = J("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    assert_false(mcp_is_initialize(ping));
    json_decref(ping);
}

static void expect_error(struct fakeenv *e, const char *text, int code, bool id_null)
{
    json_t *m = J(text);
    bool pending = true;
    json_t *r = mcp_handle(e->srv, e->s, m, &pending);
    assert_non_null(r);
    assert_false(pending);
    if (fakehost_error_code(r) != code)
        fail_msg("%s: got error %d, want %d", text, fakehost_error_code(r), code);
    assert_string_equal(json_string_value(json_object_get(r, "jsonrpc")), "2.0");
    assert_true(json_is_string(json_object_get(json_object_get(r, "error"), "message")));
    if (id_null)
        assert_true(json_is_null(json_object_get(r, "id")));
    json_decref(r);
    json_decref(m);
}

static void test_invalid_messages(void **state)
{
    struct fakeenv *e = *state;
    expect_error(e, "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"ping\"}", MCP_INVALID_REQUEST,
                 false);
    expect_error(e, "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}", MCP_INVALID_REQUEST,
                 true);
    expect_error(e, "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}", MCP_INVALID_REQUEST,
                 true);
    expect_error(e, "{\"jsonrpc\":\"2.0\",\"id\":5}", MCP_INVALID_REQUEST, false);
    expect_error(e, "\"text\"", MCP_INVALID_REQUEST, true);
    /* The id survives in the error when it was valid. */
    json_t *m = J("{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":12}");
    json_t *r = mcp_handle(e->srv, e->s, m, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    assert_string_equal(json_string_value(json_object_get(r, "id")), "abc");
    json_decref(r);
    json_decref(m);
}

static void test_before_initialize(void **state)
{
    struct fakeenv *e = *state;
    /* ping is always allowed */
    json_t *r = fakehost_request(e->srv, e->s, 1, "ping", NULL, NULL);
    assert_non_null(fakehost_result(r));
    assert_int_equal(json_object_size(fakehost_result(r)), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 1);
    json_decref(r);
    r = fakehost_request(e->srv, e->s, 2, "tools/list", NULL, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
               "not initialized"));
    json_decref(r);
    /* Unknown methods are -32601 even before initialize. */
    r = fakehost_request(e->srv, e->s, 3, "no/such", NULL, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_METHOD_NOT_FOUND);
    json_decref(r);
    assert_false(mcp_session_initialized(e->s));
    assert_null(mcp_session_protocol(e->s));
}

static void test_methods_and_params(void **state)
{
    struct fakeenv *e = *state;
    json_decref(fakehost_initialize(e->srv, e->s, "2025-11-25", NULL));
    json_t *r = fakehost_request(e->srv, e->s, 1, "tools/nope", NULL, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_METHOD_NOT_FOUND);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                        "Method not found: tools/nope");
    json_decref(r);
    r = fakehost_request(e->srv, e->s, 2, "tools/list", "[1,2]", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = fakehost_request(e->srv, e->s, 3, "ping", "{}", NULL);
    assert_non_null(fakehost_result(r));
    json_decref(r);
    /* Notifications and stray responses get no answer. */
    json_t *n = J("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/whatever\"}");
    bool pending = true;
    assert_null(mcp_handle(e->srv, e->s, n, &pending));
    assert_false(pending);
    json_decref(n);
    n = J("{\"jsonrpc\":\"2.0\",\"id\":\"srv-unknown-1\",\"result\":{}}");
    assert_null(mcp_handle(e->srv, e->s, n, NULL));
    json_decref(n);
    json_decref(fakehost_take(&e->fh));
}

static void test_handle_text(void **state)
{
    struct fakeenv *e = *state;
    const char *bad = "{\"jsonrpc\": \"2.0\", \"id\": 1, ";
    json_t *r = mcp_handle_text(e->srv, e->s, bad, strlen(bad), NULL);
    assert_int_equal(fakehost_error_code(r), MCP_PARSE_ERROR);
    assert_true(json_is_null(json_object_get(r, "id")));
    json_decref(r);
    const char *ok = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}";
    r = mcp_handle_text(e->srv, e->s, ok, strlen(ok), NULL);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 9);
    assert_non_null(fakehost_result(r));
    json_decref(r);
}

static void test_batches(void **state)
{
    struct fakeenv *e = *state;
    /* Refused outside 2025-03-26 (and before initialize). */
    json_t *b = J("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]");
    json_t *r = mcp_handle_batch(e->srv, e->s, b, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    json_decref(fakehost_initialize(e->srv, e->s, "2025-06-18", NULL));
    r = mcp_handle_batch(e->srv, e->s, b, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    json_decref(b);

    mcp_session *s = mcp_session_new(e->srv, "batch");
    json_decref(fakehost_initialize(e->srv, s, "2025-03-26", NULL));
    b = J("[]");
    r = mcp_handle_batch(e->srv, s, b, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    json_decref(b);
    b = J("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"},"
          "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"},"
          "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"sleep\","
          "\"arguments\":{\"ms\":50}}},"
          "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"initialize\",\"params\":{}},"
          "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"tools/call\",\"params\":{\"name\":\"add\","
          "\"arguments\":{\"a\":1,\"b\":2}}}]");
    int npending = -1;
    r = mcp_handle_batch(e->srv, s, b, &npending);
    json_decref(b);
    assert_true(json_is_array(r));
    assert_int_equal(json_array_size(r), 3); /* ping, refused initialize, add */
    assert_int_equal(npending, 1);           /* sleep */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 0), "id")), 1);
    assert_int_equal(fakehost_error_code(json_array_get(r, 1)), MCP_INVALID_REQUEST);
    assert_string_equal(fakehost_text(json_array_get(r, 2), 0), "3");
    json_decref(r);
    /* The sleep finishes through emit. */
    json_decref(fakehost_take(&e->fh));
    fakehost_advance(&e->fh, 100);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_true(json_is_true(json_object_get(json_array_get(em, 0), "final")));
    json_decref(em);
    /* Only notifications: nothing to answer. */
    b = J("[{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}]");
    assert_null(mcp_handle_batch(e->srv, s, b, NULL));
    json_decref(b);
    const char *text = "[{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}]";
    r = mcp_handle_text(e->srv, s, text, strlen(text), NULL);
    assert_true(json_is_array(r));
    assert_int_equal(json_array_size(r), 1);
    json_decref(r);
    mcp_session_free(s);
}

static void test_error_response_helper(void **state)
{
    json_t *id = json_string("x");
    json_t *r = mcp_error_response(id, -32000, "boom", json_pack("{s:i}", "n", 1));
    assert_string_equal(json_string_value(json_object_get(r, "id")), "x");
    assert_int_equal(fakehost_error_code(r), -32000);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(r, "error"), "data"), "n")),
                     1);
    json_decref(r);
    json_decref(id);
    r = mcp_error_response(NULL, MCP_PARSE_ERROR, "bad", NULL);
    assert_true(json_is_null(json_object_get(r, "id")));
    assert_null(json_object_get(json_object_get(r, "error"), "data"));
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),
        cmocka_unit_test_setup_teardown(test_invalid_messages, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_before_initialize, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_methods_and_params, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_handle_text, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_batches, setup, fakeenv_teardown),
        cmocka_unit_test(test_error_response_helper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
