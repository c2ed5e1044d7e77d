/* MCP engine: resources, templates, subscriptions, prompts and completion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int setup(void **state)
{
    struct mcp_server_opts o = {.packs = "core,conformance"};
    struct fakeenv *e = fakeenv_new(&o, NULL, "s1", "2025-11-25", NULL);
    assert_non_null(e);
    e->next_id = 1;
    *state = e;
    return 0;
}

static json_t *req(struct fakeenv *e, const char *method, const char *params)
{
    json_t *r = fakehost_request(e->srv, e->s, e->next_id++, method, params, NULL);
    assert_non_null(r);
    return r;
}

static const json_t *content0(const json_t *r)
{
    return json_array_get(json_object_get(fakehost_result(r), "contents"), 0);
}

static void test_list_and_read(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "resources/list", NULL);
    const json_t *res = json_object_get(fakehost_result(r), "resources");
    assert_int_equal(json_array_size(res), 4);
    const json_t *r0 = json_array_get(res, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "uri")), "test://static-text");
    assert_string_equal(json_string_value(json_object_get(r0, "name")), "static-text");
    assert_string_equal(json_string_value(json_object_get(r0, "mimeType")), "text/plain");
    assert_true(json_is_string(json_object_get(r0, "description")));
    json_decref(r);

    r = req(e, "resources/read", "{\"uri\":\"test://static-text\"}");
    assert_string_equal(json_string_value(json_object_get(content0(r), "text")),
                        "This is the content of the static text resource.");
    assert_string_equal(json_string_value(json_object_get(content0(r), "uri")),
                        "test://static-text");
    json_decref(r);
    r = req(e, "resources/read", "{\"uri\":\"test://static-binary\"}");
    assert_string_equal(json_string_value(json_object_get(content0(r), "mimeType")), "image/png");
    assert_int_equal(strncmp(json_string_value(json_object_get(content0(r), "blob")), "iVBOR", 5),
                     0);
    json_decref(r);
    r = req(e, "resources/read", "{\"uri\":\"test://watched-resource\"}");
    assert_string_equal(json_string_value(json_object_get(content0(r), "text")),
                        "Watched resource content");
    json_decref(r);
}

static void test_templates(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "resources/templates/list", NULL);
    const json_t *t = json_object_get(fakehost_result(r), "resourceTemplates");
    assert_int_equal(json_array_size(t), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(t, 0), "uriTemplate")),
                        "kv://{key}");
    assert_string_equal(json_string_value(json_object_get(json_array_get(t, 1), "uriTemplate")),
                        "test://template/{id}/data");
    json_decref(r);
    r = req(e, "resources/read", "{\"uri\":\"test://template/123/data\"}");
    assert_string_equal(json_string_value(json_object_get(content0(r), "uri")),
                        "test://template/123/data");
    assert_string_equal(json_string_value(json_object_get(content0(r), "mimeType")),
                        "application/json");
    assert_string_equal(json_string_value(json_object_get(content0(r), "text")),
                        "{\"id\":\"123\",\"templateTest\":true,\"data\":\"Data for ID: 123\"}");
    json_decref(r);
    /* A variable never spans '/', nor is empty. */
    static const char *const misses[] = {"test://template/1/2/data", "test://template//data",
                                         "test://template/1/datax", "test://nothing"};
    for (size_t i = 0; i < 4; i++) {
        char p[128];
        snprintf(p, sizeof(p), "{\"uri\":\"%s\"}", misses[i]);
        r = req(e, "resources/read", p);
        assert_int_equal(fakehost_error_code(r), MCP_RESOURCE_NOT_FOUND);
        const json_t *err = json_object_get(r, "error");
        assert_string_equal(json_string_value(json_object_get(err, "message")),
                            "Resource not found");
        assert_string_equal(json_string_value(json_object_get(json_object_get(err, "data"), "uri")),
                            misses[i]);
        json_decref(r);
    }
    r = req(e, "resources/read", "{}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
}

static void test_subscriptions(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *other = mcp_session_new(e->srv, "s2");
    json_decref(fakehost_initialize(e->srv, other, "2025-11-25", NULL));
    int changed = e->fh.changed;
    json_t *r = req(e, "resources/subscribe", "{\"uri\":\"test://watched-resource\"}");
    assert_int_equal(json_object_size(fakehost_result(r)), 0);
    json_decref(r);
    assert_int_equal(e->fh.changed, changed + 1); /* subscriptions are durable */
    json_decref(fakehost_take(&e->fh));
    mcp_server_resource_updated(e->srv, "test://watched-resource");
    mcp_server_resource_updated(e->srv, "test://static-text");
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1); /* only the subscribed session, only that uri */
    const json_t *msg = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(json_string_value(json_object_get(msg, "method")),
                        "notifications/resources/updated");
    assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "params"), "uri")),
                        "test://watched-resource");
    assert_true(json_is_null(json_object_get(json_array_get(em, 0), "rel")));
    json_decref(em);
    r = req(e, "resources/unsubscribe", "{\"uri\":\"test://watched-resource\"}");
    assert_int_equal(json_object_size(fakehost_result(r)), 0);
    json_decref(r);
    mcp_server_resource_updated(e->srv, "test://watched-resource");
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    r = req(e, "resources/subscribe", "{\"uri\":\"\"}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    /* The subscription count is bounded. */
    for (int i = 0; i < 256; i++) {
        char p[64];
        snprintf(p, sizeof(p), "{\"uri\":\"test://x/%d\"}", i);
        json_decref(req(e, "resources/subscribe", p));
    }
    r = req(e, "resources/subscribe", "{\"uri\":\"test://one-too-many\"}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    mcp_session_free(other);
}

static void test_prompts(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "prompts/list", NULL);
    const json_t *ps = json_object_get(fakehost_result(r), "prompts");
    assert_int_equal(json_array_size(ps), 7);
    const json_t *p1 = json_array_get(ps, 2);
    assert_string_equal(json_string_value(json_object_get(p1, "name")),
                        "test_prompt_with_arguments");
    const json_t *args = json_object_get(p1, "arguments");
    assert_int_equal(json_array_size(args), 2);
    assert_true(json_is_true(json_object_get(json_array_get(args, 0), "required")));
    assert_null(json_object_get(json_array_get(ps, 1), "arguments")); /* test_simple_prompt */
    json_decref(r);

    r = req(e, "prompts/get", "{\"name\":\"test_simple_prompt\"}");
    const json_t *m0 = json_array_get(json_object_get(fakehost_result(r), "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "role")), "user");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m0, "content"), "text")),
                        "This is a simple prompt for testing.");
    json_decref(r);
    r = req(e, "prompts/get",
            "{\"name\":\"test_prompt_with_arguments\",\"arguments\":{\"arg1\":\"hello\","
            "\"arg2\":\"world\"}}");
    m0 = json_array_get(json_object_get(fakehost_result(r), "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(m0, "content"), "text")),
                        "Prompt with arguments: arg1='hello', arg2='world'");
    json_decref(r);
    r = req(e, "prompts/get",
            "{\"name\":\"test_prompt_with_arguments\",\"arguments\":{\"arg1\":\"hello\"}}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "arg2"));
    json_decref(r);
    r = req(e, "prompts/get",
            "{\"name\":\"test_prompt_with_arguments\",\"arguments\":{\"arg1\":1,\"arg2\":\"x\"}}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = req(e, "prompts/get", "{\"name\":\"nope\"}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    r = req(e, "prompts/get",
            "{\"name\":\"test_prompt_with_embedded_resource\",\"arguments\":{\"resourceUri\":"
            "\"test://example-resource\"}}");
    const json_t *msgs = json_object_get(fakehost_result(r), "messages");
    assert_int_equal(json_array_size(msgs), 2);
    const json_t *c0 = json_object_get(json_array_get(msgs, 0), "content");
    assert_string_equal(json_string_value(json_object_get(c0, "type")), "resource");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c0, "resource"), "uri")),
                        "test://example-resource");
    json_decref(r);
    r = req(e, "prompts/get", "{\"name\":\"test_prompt_with_image\"}");
    c0 = json_object_get(json_array_get(json_object_get(fakehost_result(r), "messages"), 0),
                         "content");
    assert_string_equal(json_string_value(json_object_get(c0, "type")), "image");
    assert_string_equal(json_string_value(json_object_get(c0, "mimeType")), "image/png");
    json_decref(r);
    /* kv_review embeds the session's value, and fails clearly without it. */
    r = req(e, "prompts/get", "{\"name\":\"kv_review\",\"arguments\":{\"key\":\"k\"}}");
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    json_decref(req(e, "tools/call",
                    "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"k\","
                    "\"value\":\"v\"}}"));
    r = req(e, "prompts/get", "{\"name\":\"kv_review\",\"arguments\":{\"key\":\"k\"}}");
    c0 = json_object_get(json_array_get(json_object_get(fakehost_result(r), "messages"), 0),
                         "content");
    assert_string_equal(json_string_value(json_object_get(json_object_get(c0, "resource"), "text")),
                        "\"v\"");
    json_decref(r);
}

static const json_t *values(const json_t *r)
{
    return json_object_get(json_object_get(fakehost_result(r), "completion"), "values");
}

static void test_completion(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = req(e, "completion/complete",
                    "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"test_prompt_with_arguments\"},"
                    "\"argument\":{\"name\":\"arg1\",\"value\":\"par\"}}");
    const json_t *v = values(r);
    assert_int_equal(json_array_size(v), 3);
    assert_string_equal(json_string_value(json_array_get(v, 0)), "paris");
    const json_t *comp = json_object_get(fakehost_result(r), "completion");
    assert_int_equal(json_integer_value(json_object_get(comp, "total")), 3);
    assert_true(json_is_false(json_object_get(comp, "hasMore")));
    json_decref(r);
    r = req(e, "completion/complete",
            "{\"ref\":{\"type\":\"ref/resource\",\"uri\":\"test://template/{id}/data\"},"
            "\"argument\":{\"name\":\"id\",\"value\":\"1\"}}");
    v = values(r);
    assert_int_equal(json_array_size(v), 2); /* 1, 123 */
    json_decref(r);
    /* kv keys complete from the session's own data. */
    json_decref(req(e, "tools/call",
                    "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"alpha\","
                    "\"value\":1}}"));
    json_decref(req(e, "tools/call",
                    "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"beta\","
                    "\"value\":1}}"));
    r = req(e, "completion/complete",
            "{\"ref\":{\"type\":\"ref/resource\",\"uri\":\"kv://{key}\"},"
            "\"argument\":{\"name\":\"key\",\"value\":\"al\"},\"context\":{\"arguments\":{}}}");
    v = values(r);
    assert_int_equal(json_array_size(v), 1);
    assert_string_equal(json_string_value(json_array_get(v, 0)), "alpha");
    json_decref(r);
    /* A prompt without a completer answers with no values. */
    r = req(e, "completion/complete",
            "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"test_simple_prompt\"},"
            "\"argument\":{\"name\":\"x\",\"value\":\"\"}}");
    assert_int_equal(json_array_size(values(r)), 0);
    json_decref(r);
    static const char *const bad[] = {
        "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"nope\"},\"argument\":{\"name\":\"a\","
        "\"value\":\"\"}}",
        "{\"ref\":{\"type\":\"ref/resource\",\"uri\":\"test://nope/{x}\"},\"argument\":{"
        "\"name\":\"x\",\"value\":\"\"}}",
        "{\"ref\":{\"type\":\"ref/tool\",\"name\":\"echo\"},\"argument\":{\"name\":\"a\","
        "\"value\":\"\"}}",
        "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"test_simple_prompt\"}}",
    };
    for (size_t i = 0; i < 4; i++) {
        r = req(e, "completion/complete", bad[i]);
        if (fakehost_error_code(r) != MCP_INVALID_PARAMS)
            fail_msg("bad completion %zu was not -32602", i);
        json_decref(r);
    }
}

static json_t *many(mcp_call *c, const char *arg, const char *prefix, const json_t *ctx, void *ud)
{
    json_t *out = json_array();
    for (int i = 0; i < 150; i++)
        json_array_append_new(out, json_sprintf("v%d", i));
    return out;
}

static json_t *empty_prompt(mcp_call *c, const json_t *args, void *ud)
{
    return json_pack("{s:[]}", "messages");
}

static void test_completion_cap(void **state)
{
    struct fakeenv *e = *state;
    char err[128];
    struct mcp_prompt_def def = {.name = "big", .get = empty_prompt, .complete = many};
    assert_int_equal(mcp_server_add_prompt(e->srv, &def, err, sizeof(err)), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(em, 0), "msg"), "method")),
        "notifications/prompts/list_changed");
    json_decref(em);
    json_t *r = req(e, "completion/complete",
                    "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"big\"},\"argument\":{\"name\":"
                    "\"a\",\"value\":\"\"}}");
    const json_t *comp = json_object_get(fakehost_result(r), "completion");
    assert_int_equal(json_array_size(json_object_get(comp, "values")), 100);
    assert_int_equal(json_integer_value(json_object_get(comp, "total")), 150);
    assert_true(json_is_true(json_object_get(comp, "hasMore")));
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_and_read, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_templates, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_subscriptions, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_prompts, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_completion, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_completion_cap, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
