/* MCP engine: initialize and version negotiation, ping, logging/setLevel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int setup(void **state)
{
    struct mcp_server_opts o = {.packs = "core,conformance",
                                .name = "test-server",
                                .version = "9.9.9",
                                .instructions = "Use the tools."};
    assert_non_null(*state = fakeenv_new(&o, NULL, "s1", NULL, NULL));
    return 0;
}

static json_t *init_with(struct fakeenv *e, const char *params)
{
    return fakehost_request(e->srv, e->s, 1, "initialize", params, NULL);
}

static void test_each_supported_version_is_echoed(void **state)
{
    struct fakeenv *e = *state;
    for (int i = 0; mcp_protocol_versions[i]; i++) {
        mcp_session *s = mcp_session_new(e->srv, "v");
        json_t *r = fakehost_initialize(e->srv, s, mcp_protocol_versions[i], NULL);
        assert_string_equal(
            json_string_value(json_object_get(fakehost_result(r), "protocolVersion")),
            mcp_protocol_versions[i]);
        assert_string_equal(mcp_session_protocol(s), mcp_protocol_versions[i]);
        const json_t *caps = json_object_get(fakehost_result(r), "capabilities");
        /* completions is a capability since 2025-03-26 only */
        bool modern = strcmp(mcp_protocol_versions[i], "2025-03-26") >= 0;
        assert_int_equal(json_object_get(caps, "completions") != NULL, modern);
        json_decref(r);
        mcp_session_free(s);
    }
}

static void test_initialize_result(void **state)
{
    struct fakeenv *e = *state;
    int changed_before = e->fh.changed;
    json_t *r = init_with(e, "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{\"sampling\":"
                             "{}},\"clientInfo\":{\"name\":\"c\",\"version\":\"1\"}}");
    const json_t *res = fakehost_result(r);
    assert_non_null(res);
    assert_string_equal(json_string_value(json_object_get(res, "protocolVersion")), "2025-11-25");
    const json_t *info = json_object_get(res, "serverInfo");
    assert_string_equal(json_string_value(json_object_get(info, "name")), "test-server");
    assert_string_equal(json_string_value(json_object_get(info, "version")), "9.9.9");
    assert_string_equal(json_string_value(json_object_get(res, "instructions")), "Use the tools.");
    const json_t *caps = json_object_get(res, "capabilities");
    assert_true(json_is_true(json_object_get(json_object_get(caps, "tools"), "listChanged")));
    assert_true(json_is_true(json_object_get(json_object_get(caps, "resources"), "subscribe")));
    assert_true(json_is_true(json_object_get(json_object_get(caps, "resources"), "listChanged")));
    assert_true(json_is_true(json_object_get(json_object_get(caps, "prompts"), "listChanged")));
    assert_true(json_is_object(json_object_get(caps, "logging")));
    assert_true(json_is_object(json_object_get(caps, "completions")));
    assert_true(mcp_session_initialized(e->s));
    assert_non_null(json_object_get(mcp_session_client_capabilities(e->s), "sampling"));
    /* The negotiated state is durable: the host heard of it before the reply. */
    assert_int_equal(e->fh.changed, changed_before + 1);
    assert_true(mcp_session_seq(e->s) >= 1);
    json_decref(r);
    /* A second initialize on the same session is refused. */
    r = init_with(e, "{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{}}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
}

static void test_unknown_date_gets_latest(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = init_with(e, "{\"protocolVersion\":\"2031-01-01\",\"capabilities\":{}}");
    assert_string_equal(json_string_value(json_object_get(fakehost_result(r), "protocolVersion")),
                        MCP_PROTOCOL_LATEST);
    assert_string_equal(mcp_session_protocol(e->s), MCP_PROTOCOL_LATEST);
    json_decref(r);
}

static void expect_unsupported(struct fakeenv *e, const char *params, const json_t *requested)
{
    json_t *r = init_with(e, params);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    const json_t *err = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(err, "message")),
                        "Unsupported protocol version");
    const json_t *data = json_object_get(err, "data");
    const json_t *sup = json_object_get(data, "supported");
    assert_int_equal(json_array_size(sup), 4);
    assert_string_equal(json_string_value(json_array_get(sup, 0)), "2024-11-05");
    assert_string_equal(json_string_value(json_array_get(sup, 3)), "2025-11-25");
    assert_true(json_equal(json_object_get(data, "requested"), (json_t *)requested));
    assert_false(mcp_session_initialized(e->s));
    json_decref(r);
}

static void test_bad_versions(void **state)
{
    struct fakeenv *e = *state;
    json_t *v = json_string("1.0.0");
    expect_unsupported(e, "{\"protocolVersion\":\"1.0.0\",\"capabilities\":{}}", v);
    json_decref(v);
    v = json_null();
    expect_unsupported(e, "{\"capabilities\":{}}", v);
    json_decref(v);
    v = json_integer(7);
    expect_unsupported(e, "{\"protocolVersion\":7}", v);
    json_decref(v);
    /* capabilities of the wrong type are bad params too */
    json_t *r = init_with(e, "{\"protocolVersion\":\"2025-06-18\",\"capabilities\":[]}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    assert_false(mcp_session_initialized(e->s));
}

static void test_ping_and_set_level(void **state)
{
    struct fakeenv *e = *state;
    json_decref(fakehost_initialize(e->srv, e->s, "2025-11-25", NULL));
    json_t *r = fakehost_request(e->srv, e->s, 2, "ping", NULL, NULL);
    assert_true(json_is_object(fakehost_result(r)));
    assert_int_equal(json_object_size(fakehost_result(r)), 0);
    json_decref(r);

    static const char *const levels[] = {"debug", "info",     "notice", "warning",
                                         "error", "critical", "alert",  "emergency"};
    for (int i = 0; i < 8; i++) {
        assert_int_equal(mcp_log_level_parse(levels[i]), i);
        assert_string_equal(mcp_log_level_name(i), levels[i]);
        char p[64];
        snprintf(p, sizeof(p), "{\"level\":\"%s\"}", levels[i]);
        int before = e->fh.changed;
        r = fakehost_request(e->srv, e->s, 10 + i, "logging/setLevel", p, NULL);
        assert_int_equal(json_object_size(fakehost_result(r)), 0);
        assert_int_equal(e->fh.changed, before + 1);
        json_decref(r);
    }
    r = fakehost_request(e->srv, e->s, 30, "logging/setLevel", "{\"level\":\"loud\"}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = fakehost_request(e->srv, e->s, 31, "logging/setLevel", NULL, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
}

static void test_log_filtering(void **state)
{
    struct fakeenv *e = *state;
    json_decref(fakehost_initialize(e->srv, e->s, "2025-11-25", NULL));
    json_decref(fakehost_take(&e->fh));
    /* No level set yet: everything passes. */
    mcp_session_log(e->s, MCP_LOG_DEBUG, "t", json_string("d1"));
    json_decref(
        fakehost_request(e->srv, e->s, 2, "logging/setLevel", "{\"level\":\"warning\"}", NULL));
    mcp_session_log(e->s, MCP_LOG_INFO, "t", json_string("dropped"));
    mcp_session_log(e->s, MCP_LOG_WARNING, "t", json_string("w1"));
    mcp_session_log(e->s, MCP_LOG_EMERGENCY, NULL, json_pack("{s:i}", "n", 1));
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 3);
    const json_t *m0 = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(json_string_value(json_object_get(m0, "method")), "notifications/message");
    const json_t *p0 = json_object_get(m0, "params");
    assert_string_equal(json_string_value(json_object_get(p0, "level")), "debug");
    assert_string_equal(json_string_value(json_object_get(p0, "logger")), "t");
    assert_string_equal(json_string_value(json_object_get(p0, "data")), "d1");
    assert_true(json_is_null(json_object_get(json_array_get(em, 0), "rel")));
    const json_t *p1 = json_object_get(json_object_get(json_array_get(em, 1), "msg"), "params");
    assert_string_equal(json_string_value(json_object_get(p1, "data")), "w1");
    const json_t *p2 = json_object_get(json_object_get(json_array_get(em, 2), "msg"), "params");
    assert_string_equal(json_string_value(json_object_get(p2, "level")), "emergency");
    assert_null(json_object_get(p2, "logger"));
    json_decref(em);
}

static void test_server_options(void **state)
{
    char err[256] = "";
    struct mcp_server_opts bad = {.packs = "core,bogus"};
    assert_null(mcp_server_new(&bad, &fakehost_ops, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "bogus"));
    struct mcp_server_opts none = {.packs = "none"};
    mcp_server *srv = mcp_server_new(&none, NULL, NULL, err, sizeof(err));
    assert_non_null(srv);
    assert_int_equal(mcp_server_tool_count(srv), 0);
    mcp_server_free(srv);
    srv = mcp_server_new(NULL, NULL, NULL, err, sizeof(err)); /* defaults: core */
    assert_non_null(srv);
    assert_int_equal(mcp_server_tool_count(srv), 7);
    /* Without a host emit the engine still works (messages are dropped). */
    mcp_session *s = mcp_session_new(srv, "x");
    json_t *r = fakehost_initialize(srv, s, "2025-06-18", NULL);
    assert_non_null(fakehost_result(r));
    json_decref(r);
    mcp_server_free(srv); /* frees s too */
    assert_true(mcp_protocol_supported("2025-03-26"));
    assert_false(mcp_protocol_supported("2025-03-27"));
    assert_false(mcp_protocol_supported(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_each_supported_version_is_echoed, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_initialize_result, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_date_gets_latest, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_bad_versions, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_ping_and_set_level, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_log_filtering, setup, fakeenv_teardown),
        cmocka_unit_test(test_server_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
