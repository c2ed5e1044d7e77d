/* MCP engine: tools/list with pagination, tools/call of the core pack, kv state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int setup_with(void **state, const char *packs, int page_size, const char *version)
{
    struct mcp_server_opts o = {.packs = packs, .page_size = page_size};
    struct fakeenv *e = fakeenv_new(&o, NULL, "s1", version, NULL);
    assert_non_null(e);
    /* the core pack's typed outputs are checked against their schemas in these tests */
    mcp_server_check_all_outputs(e->srv, true);
    e->next_id = 100;
    *state = e;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, "core", 0, "2025-11-25");
}

static int setup_paged(void **state)
{
    return setup_with(state, "core,conformance", 3, "2025-11-25");
}

static int setup_old(void **state)
{
    return setup_with(state, "core", 0, "2025-03-26");
}

static json_t *req(struct fakeenv *e, const char *method, const char *params)
{
    bool pending = true;
    json_t *r = fakehost_request(e->srv, e->s, e->next_id++, method, params, &pending);
    assert_false(pending);
    assert_non_null(r);
    return r;
}

static json_t *call(struct fakeenv *e, const char *tool, const char *args)
{
    char params[2048];
    snprintf(params, sizeof(params), "{\"name\":\"%s\",\"arguments\":%s}", tool, args);
    return req(e, "tools/call", params);
}

static const json_t *structured(const json_t *r)
{
    return json_object_get(fakehost_result(r), "structuredContent");
}

static void test_tools_list(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "tools/list", NULL);
    const json_t *tools = json_object_get(fakehost_result(r), "tools");
    static const char *const names[] = {"echo",    "add",       "kv_set", "kv_get",
                                        "kv_list", "kv_delete", "sleep"};
    assert_int_equal(json_array_size(tools), 7);
    for (size_t i = 0; i < 7; i++) {
        const json_t *t = json_array_get(tools, i);
        assert_string_equal(json_string_value(json_object_get(t, "name")), names[i]);
        assert_true(json_is_string(json_object_get(t, "description")));
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(t, "inputSchema"), "type")),
            "object");
        assert_true(json_is_object(json_object_get(t, "outputSchema")));
        assert_true(json_is_string(json_object_get(t, "title")));
    }
    assert_null(json_object_get(fakehost_result(r), "nextCursor"));
    /* Annotations tell clients which tools only read. */
    const json_t *get_ann = json_object_get(json_array_get(tools, 3), "annotations");
    const json_t *set_ann = json_object_get(json_array_get(tools, 2), "annotations");
    assert_true(json_is_true(json_object_get(get_ann, "readOnlyHint")));
    assert_true(json_is_false(json_object_get(set_ann, "readOnlyHint")));
    json_decref(r);
}

static void test_tools_list_old_protocol(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "tools/list", NULL);
    const json_t *t = json_array_get(json_object_get(fakehost_result(r), "tools"), 1);
    assert_string_equal(json_string_value(json_object_get(t, "name")), "add");
    /* outputSchema and title arrived with 2025-06-18 */
    assert_null(json_object_get(t, "outputSchema"));
    assert_null(json_object_get(t, "title"));
    json_decref(r);
    r = call(e, "add", "{\"a\":2,\"b\":3}");
    assert_string_equal(fakehost_text(r, 0), "5");
    assert_null(structured(r));
    json_decref(r);
}

/* Walks every page of a list method; returns all items. */
static json_t *collect(struct fakeenv *e, const char *method, const char *key, int *pages)
{
    json_t *all = json_array();
    char *cursor = NULL;
    *pages = 0;
    do {
        char params[512];
        if (cursor)
            snprintf(params, sizeof(params), "{\"cursor\":\"%s\"}", cursor);
        else
            snprintf(params, sizeof(params), "{}");
        free(cursor);
        cursor = NULL;
        json_t *r = req(e, method, params);
        const json_t *items = json_object_get(fakehost_result(r), key);
        assert_true(json_is_array(items));
        assert_true(json_array_size(items) <= 3);
        json_array_extend(all, (json_t *)items);
        const char *next = json_string_value(json_object_get(fakehost_result(r), "nextCursor"));
        if (next)
            cursor = strdup(next);
        (*pages)++;
        json_decref(r);
        assert_true(*pages < 50);
    } while (cursor);
    return all;
}

static void test_pagination(void **state)
{
    struct fakeenv *e = *state;
    int pages;
    json_t *tools = collect(e, "tools/list", "tools", &pages);
    size_t n = mcp_server_tool_count(e->srv);
    /* core + conformance: the task fixtures, then the client-feature ones last */
    assert_int_equal(n, 46);
    assert_int_equal(json_array_size(tools), n);
    assert_int_equal(pages, 16);
    /* No duplicates, first and last in registration order. */
    assert_string_equal(json_string_value(json_object_get(json_array_get(tools, 0), "name")),
                        "echo");
    assert_string_equal(json_string_value(json_object_get(json_array_get(tools, n - 1), "name")),
                        "test_icons");
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(
                json_string_value(json_object_get(json_array_get(tools, i), "name")),
                json_string_value(json_object_get(json_array_get(tools, j), "name")));
    json_decref(tools);
    json_t *prompts = collect(e, "prompts/list", "prompts", &pages);
    assert_int_equal(json_array_size(prompts), 7);
    assert_int_equal(pages, 3);
    json_decref(prompts);
    json_t *res = collect(e, "resources/list", "resources", &pages);
    assert_int_equal(json_array_size(res), 4);
    assert_int_equal(pages, 2);
    json_decref(res);
    json_t *tpl = collect(e, "resources/templates/list", "resourceTemplates", &pages);
    assert_int_equal(json_array_size(tpl), 3);
    json_decref(tpl);
}

static void test_bad_cursors(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "tools/list", "{\"cursor\":\"not-a-cursor!\"}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = req(e, "tools/list", "{\"cursor\":42}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    /* A prompts/list cursor is not a tools/list cursor. */
    r = req(e, "prompts/list", NULL);
    const char *pc = json_string_value(json_object_get(fakehost_result(r), "nextCursor"));
    assert_non_null(pc);
    char params[256];
    snprintf(params, sizeof(params), "{\"cursor\":\"%s\"}", pc);
    json_decref(r);
    r = req(e, "tools/list", params);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    /* null means "no cursor" */
    r = req(e, "tools/list", "{\"cursor\":null}");
    assert_int_equal(json_array_size(json_object_get(fakehost_result(r), "tools")), 3);
    json_decref(r);
}

static void test_echo_add(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e, "echo", "{\"text\":\"hello \\u00e9\"}");
    assert_false(fakehost_is_error(r));
    assert_string_equal(fakehost_text(r, 0), "hello \xc3\xa9");
    assert_string_equal(json_string_value(json_object_get(structured(r), "text")),
                        "hello \xc3\xa9");
    json_decref(r);
    r = call(e, "add", "{\"a\":40,\"b\":2}");
    assert_int_equal(json_integer_value(json_object_get(structured(r), "sum")), 42);
    assert_string_equal(fakehost_text(r, 0), "42");
    json_decref(r);
    r = call(e, "add", "{\"a\":1.5,\"b\":-0.25}");
    assert_true(json_is_real(json_object_get(structured(r), "sum")));
    assert_true(json_real_value(json_object_get(structured(r), "sum")) == 1.25);
    json_decref(r);
    r = call(e, "add", "{\"a\":9223372036854775807,\"b\":1}");
    assert_true(json_is_real(json_object_get(structured(r), "sum")));
    json_decref(r);
    r = call(e, "add", "{\"a\":1.7e308,\"b\":1.7e308}");
    assert_true(fakehost_is_error(r));
    json_decref(r);
}

static void test_call_errors(void **state)
{
    struct fakeenv *e = *state;
    /* Bad arguments are tool errors the model can read... */
    json_t *r = call(e, "add", "{\"a\":\"x\",\"b\":2}");
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "arguments.a"));
    assert_non_null(strstr(fakehost_text(r, 0), "number"));
    json_decref(r);
    r = call(e, "add", "{\"a\":1}");
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "'b'"));
    json_decref(r);
    r = call(e, "echo", "{\"text\":\"x\",\"extra\":1}");
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "extra"));
    json_decref(r);
    r = call(e, "sleep", "{\"ms\":600001}");
    assert_true(fakehost_is_error(r));
    json_decref(r);
    r = call(e, "sleep", "{\"ms\":1.5}");
    assert_true(fakehost_is_error(r));
    json_decref(r);
    /* ...while requests the server cannot route are protocol errors. */
    r = call(e, "nope", "{}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
                        "Unknown tool: nope");
    json_decref(r);
    r = req(e, "tools/call", "{\"arguments\":{}}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = call(e, "echo", "[1]");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    /* Missing arguments count as {} (then fail the schema as a tool error). */
    r = req(e, "tools/call", "{\"name\":\"kv_list\"}");
    assert_false(fakehost_is_error(r));
    json_decref(r);
}

static void test_kv(void **state)
{
    struct fakeenv *e = *state;
    uint64_t seq0 = mcp_session_seq(e->s);
    int changed0 = e->fh.changed;
    json_t *r = call(e, "kv_set", "{\"key\":\"color\",\"value\":\"blue\"}");
    assert_false(fakehost_is_error(r));
    assert_true(json_is_true(json_object_get(structured(r), "created")));
    json_decref(r);
    /* kv_set is durable: the host was told before the response came back. */
    assert_int_equal(e->fh.changed, changed0 + 1);
    assert_int_equal(mcp_session_seq(e->s), seq0 + 1);
    r = call(e, "kv_set", "{\"key\":\"cfg\",\"value\":{\"n\":[1,2]}}");
    json_decref(r);
    r = call(e, "kv_set", "{\"key\":\"color\",\"value\":\"red\"}");
    assert_false(json_is_true(json_object_get(structured(r), "created")));
    json_decref(r);
    assert_int_equal(mcp_session_seq(e->s), seq0 + 3);

    r = call(e, "kv_get", "{\"key\":\"color\"}");
    assert_string_equal(fakehost_text(r, 0), "red"); /* strings stay strings */
    assert_string_equal(json_string_value(json_object_get(structured(r), "value")), "red");
    json_decref(r);
    r = call(e, "kv_get", "{\"key\":\"cfg\"}");
    assert_string_equal(fakehost_text(r, 0), "{\"n\":[1,2]}");
    json_decref(r);
    r = call(e, "kv_list", "{}");
    const json_t *keys = json_object_get(structured(r), "keys");
    assert_int_equal(json_array_size(keys), 2);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "color");
    json_decref(r);
    r = call(e, "kv_get", "{\"key\":\"missing\"}");
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "missing"));
    json_decref(r);
    r = call(e, "kv_delete", "{\"key\":\"cfg\"}");
    assert_true(json_is_true(json_object_get(structured(r), "deleted")));
    json_decref(r);
    r = call(e, "kv_delete", "{\"key\":\"cfg\"}");
    assert_false(json_is_true(json_object_get(structured(r), "deleted")));
    json_decref(r);
    /* Read-only calls change nothing durable. */
    int changed = e->fh.changed;
    json_decref(call(e, "kv_get", "{\"key\":\"color\"}"));
    assert_int_equal(e->fh.changed, changed);

    /* kv is per session. */
    mcp_session *other = mcp_session_new(e->srv, "s2");
    json_decref(fakehost_initialize(e->srv, other, "2025-11-25", NULL));
    r = fakehost_request(e->srv, other, 1, "tools/call",
                         "{\"name\":\"kv_get\",\"arguments\":{\"key\":\"color\"}}", NULL);
    assert_true(fakehost_is_error(r));
    json_decref(r);
    mcp_session_free(other);
}

static void test_kv_resources(void **state)
{
    struct fakeenv *e = *state;
    json_decref(req(e, "resources/subscribe", "{\"uri\":\"kv://a%20b\"}"));
    json_decref(fakehost_take(&e->fh));
    int changed = e->fh.changed;
    json_decref(call(e, "kv_set", "{\"key\":\"a b\",\"value\":[true]}"));
    assert_int_equal(e->fh.changed, changed + 1);
    /* The commit came before the notifications that announce the change. */
    assert_int_equal(e->fh.emitted_at_change, 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 2);
    const json_t *m0 = json_object_get(json_array_get(em, 0), "msg");
    const json_t *m1 = json_object_get(json_array_get(em, 1), "msg");
    assert_string_equal(json_string_value(json_object_get(m0, "method")),
                        "notifications/resources/list_changed");
    assert_string_equal(json_string_value(json_object_get(m1, "method")),
                        "notifications/resources/updated");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m1, "params"), "uri")),
                        "kv://a%20b");
    json_decref(em);
    json_t *r = req(e, "resources/list", NULL);
    const json_t *res = json_object_get(fakehost_result(r), "resources");
    assert_int_equal(json_array_size(res), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "uri")),
                        "kv://a%20b");
    json_decref(r);
    r = req(e, "resources/read", "{\"uri\":\"kv://a%20b\"}");
    const json_t *c0 = json_array_get(json_object_get(fakehost_result(r), "contents"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "text")), "[true]");
    assert_string_equal(json_string_value(json_object_get(c0, "mimeType")), "application/json");
    json_decref(r);
    r = req(e, "resources/read", "{\"uri\":\"kv://nothing\"}");
    assert_int_equal(fakehost_error_code(r), MCP_RESOURCE_NOT_FOUND);
    json_decref(r);
    /* An update to an existing key is not a list change. */
    json_decref(call(e, "kv_set", "{\"key\":\"a b\",\"value\":1}"));
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    json_decref(em);
    json_decref(req(e, "resources/unsubscribe", "{\"uri\":\"kv://a%20b\"}"));
    json_decref(call(e, "kv_set", "{\"key\":\"a b\",\"value\":2}"));
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
}

static void run_noop(mcp_call *c, const json_t *args, void *ud)
{
    (*(int *)ud)++;
    mcp_call_return_text(c, false, "noop %d", *(int *)ud);
}

static void test_registry(void **state)
{
    struct fakeenv *e = *state;
    int runs = 0;
    char err[256];
    struct mcp_tool_def def = {
        .name = "noop", .description = "does nothing", .run = run_noop, .ud = &runs};
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(em, 0), "msg"), "method")),
        "notifications/tools/list_changed");
    json_decref(em);
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "already"));
    def.name = "bad name";
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), -1);
    json_t *r = call(e, "noop", "{}");
    assert_string_equal(fakehost_text(r, 0), "noop 1");
    json_decref(r);
    assert_int_equal(mcp_server_remove_tool(e->srv, "noop"), 0);
    assert_int_equal(mcp_server_remove_tool(e->srv, "noop"), -1);
    r = call(e, "noop", "{}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    json_decref(fakehost_take(&e->fh));
}

static void run_args_echo(mcp_call *c, const json_t *args, void *ud)
{
    char *t = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    mcp_call_return_text(c, false, "%s", t);
    free(t);
}

static void run_bad_output(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return(c, json_pack("{s:[{s:s,s:s}],s:{s:s}}", "content", "type", "text", "text", "x",
                                 "structuredContent", "n", "not a number"));
}

static void test_schema_validation(void **state)
{
    struct fakeenv *e = *state;
    char err[256];
    json_t *schema =
        json_loads("{\"type\":\"object\",\"properties\":{"
                   "\"mode\":{\"enum\":[\"fast\",\"slow\"]},"
                   "\"name\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":4},"
                   "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":1},"
                   "\"ratio\":{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1},"
                   "\"opt\":{\"type\":[\"integer\",\"null\"]},"
                   "\"nested\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"boolean\"}},"
                   "\"required\":[\"x\"]}},"
                   "\"required\":[\"mode\"]}",
                   0, NULL);
    assert_non_null(schema);
    json_t *out = json_loads("{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"number\"}},"
                             "\"required\":[\"n\"]}",
                             0, NULL);
    struct mcp_tool_def def = {
        .name = "v", .description = "validates", .input_schema = schema, .run = run_args_echo};
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), 0);
    struct mcp_tool_def bad = {.name = "bad_out",
                               .description = "lies about its output",
                               .output_schema = out,
                               .run = run_bad_output};
    assert_int_equal(mcp_server_add_tool(e->srv, &bad, err, sizeof(err)), 0);
    json_decref(schema);
    json_decref(out);
    json_decref(fakehost_take(&e->fh));

    static const struct {
        const char *args, *why; /* why == NULL: valid */
    } cases[] = {
        {"{\"mode\":\"fast\"}", NULL},
        {"{\"mode\":\"fast\",\"name\":\"\\u00e9\\u00e9\",\"tags\":[\"a\"],\"ratio\":1,\"opt\":null,"
         "\"nested\":{\"x\":true},\"other\":[1]}",
         NULL},
        {"{\"mode\":\"fast\",\"opt\":3.0}", NULL},
        {"{}", "'mode'"},
        {"{\"mode\":\"medium\"}", "one of"},
        {"{\"mode\":\"fast\",\"name\":\"a\"}", "at least 2"},
        {"{\"mode\":\"fast\",\"name\":\"abcde\"}", "at most 4"},
        {"{\"mode\":\"fast\",\"tags\":[]}", "at least 1 items"},
        {"{\"mode\":\"fast\",\"tags\":[1]}", "arguments.tags[0]"},
        {"{\"mode\":\"fast\",\"ratio\":0}", "> 0"},
        {"{\"mode\":\"fast\",\"ratio\":1.5}", "<= 1"},
        {"{\"mode\":\"fast\",\"opt\":\"x\"}", "arguments.opt"},
        {"{\"mode\":\"fast\",\"nested\":{}}", "'x'"},
        {"{\"mode\":\"fast\",\"nested\":{\"x\":1}}", "arguments.nested.x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char params[512];
        snprintf(params, sizeof(params), "{\"name\":\"v\",\"arguments\":%s}", cases[i].args);
        json_t *r = req(e, "tools/call", params);
        if (fakehost_is_error(r) != (cases[i].why != NULL))
            fail_msg("case %zu (%s): isError=%d: %s", i, cases[i].args, fakehost_is_error(r),
                     fakehost_text(r, 0));
        if (cases[i].why && !strstr(fakehost_text(r, 0), cases[i].why))
            fail_msg("case %zu: '%s' does not mention %s", i, fakehost_text(r, 0), cases[i].why);
        json_decref(r);
    }
    /* A tool whose structuredContent breaks its own outputSchema gets a readable error. */
    json_t *r = call(e, "bad_out", "{}");
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "outputSchema"));
    assert_null(structured(r));
    json_decref(r);
}

static void test_kv_uri_escaping(void **state)
{
    struct fakeenv *e = *state;
    json_decref(call(e, "kv_set", "{\"key\":\"a/b?c\",\"value\":1}"));
    json_t *r = req(e, "resources/list", NULL);
    const json_t *res = json_array_get(json_object_get(fakehost_result(r), "resources"), 0);
    assert_string_equal(json_string_value(json_object_get(res, "uri")), "kv://a%2Fb%3Fc");
    assert_string_equal(json_string_value(json_object_get(res, "name")), "a/b?c");
    json_decref(r);
    r = req(e, "resources/read", "{\"uri\":\"kv://a%2Fb%3Fc\"}");
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(fakehost_result(r), "contents"), 0), "text")),
        "1");
    json_decref(r);
    /* Raw '/' never falls into a variable; broken escapes match nothing. */
    static const char *const misses[] = {"kv://a/b?c", "kv://a%2", "kv://a%zz", "kv://%00"};
    for (size_t i = 0; i < 4; i++) {
        char p[128];
        snprintf(p, sizeof(p), "{\"uri\":\"%s\"}", misses[i]);
        r = req(e, "resources/read", p);
        assert_int_equal(fakehost_error_code(r), MCP_RESOURCE_NOT_FOUND);
        json_decref(r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tools_list, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_tools_list_old_protocol, setup_old, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_pagination, setup_paged, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_bad_cursors, setup_paged, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_echo_add, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_call_errors, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_kv, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_kv_resources, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_registry, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_schema_validation, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_kv_uri_escaping, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
