/*
 * MCP engine: the conformance pack returns exactly what the official
 * conformance suite's server scenarios check (texts, MIME types, log and
 * progress sequences, elicitation schemas, preserved JSON Schema keywords).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int setup(void **state)
{
    /* The suite's client reads only the first page of tools/list. */
    struct mcp_server_opts o = {.packs = "core,conformance"};
    assert_non_null(*state = fakeenv_new(&o, NULL, "s1", "2025-11-25",
                                         "{\"sampling\":{},\"elicitation\":{}}"));
    return 0;
}

static json_t *call_sync(struct fakeenv *e, const char *tool)
{
    char params[256];
    snprintf(params, sizeof(params), "{\"name\":\"%s\",\"arguments\":{}}", tool);
    bool pending = true;
    json_t *r = fakehost_request(e->srv, e->s, 1, "tools/call", params, &pending);
    assert_false(pending);
    assert_non_null(r);
    return r;
}

static const json_t *item(const json_t *r, size_t i)
{
    return json_array_get(json_object_get(fakehost_result(r), "content"), i);
}

static const char *field(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static void test_tools_list_first_page(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = fakehost_request(e->srv, e->s, 1, "tools/list", NULL, NULL);
    const json_t *tools = json_object_get(fakehost_result(r), "tools");
    static const char *const want[] = {"test_simple_text",
                                       "test_image_content",
                                       "test_audio_content",
                                       "test_embedded_resource",
                                       "test_multiple_content_types",
                                       "test_tool_with_logging",
                                       "test_tool_with_progress",
                                       "test_error_handling",
                                       "test_sampling",
                                       "test_elicitation",
                                       "test_elicitation_sep1034_defaults",
                                       "test_elicitation_sep1330_enums",
                                       "json_schema_2020_12_tool",
                                       "test_reconnection"};
    for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
        const json_t *found = NULL;
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            if (strcmp(field(t, "name"), want[w]) == 0)
                found = t;
        }
        if (!found)
            fail_msg("tool %s missing from the first page", want[w]);
        assert_true(strlen(field(found, "description")) > 0);
        assert_true(json_is_object(json_object_get(found, "inputSchema")));
    }
    /* SEP-1613: the 2020-12 keywords are served untouched. */
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        if (strcmp(field(t, "name"), "json_schema_2020_12_tool") != 0)
            continue;
        const json_t *s = json_object_get(t, "inputSchema");
        assert_string_equal(field(s, "$schema"), "https://json-schema.org/draft/2020-12/schema");
        assert_non_null(json_object_get(json_object_get(s, "$defs"), "address"));
        assert_true(json_is_false(json_object_get(s, "additionalProperties")));
    }
    json_decref(r);
}

static void test_content_tools(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call_sync(e, "test_simple_text");
    assert_string_equal(field(item(r, 0), "type"), "text");
    assert_string_equal(field(item(r, 0), "text"), "This is a simple text response for testing.");
    json_decref(r);
    r = call_sync(e, "test_image_content");
    assert_string_equal(field(item(r, 0), "type"), "image");
    assert_string_equal(field(item(r, 0), "mimeType"), "image/png");
    assert_true(strlen(field(item(r, 0), "data")) > 20);
    json_decref(r);
    r = call_sync(e, "test_audio_content");
    assert_string_equal(field(item(r, 0), "type"), "audio");
    assert_string_equal(field(item(r, 0), "mimeType"), "audio/wav");
    assert_int_equal(strncmp(field(item(r, 0), "data"), "UklGR", 5), 0); /* "RIFF" */
    json_decref(r);
    r = call_sync(e, "test_embedded_resource");
    const json_t *res = json_object_get(item(r, 0), "resource");
    assert_string_equal(field(item(r, 0), "type"), "resource");
    assert_string_equal(field(res, "uri"), "test://embedded-resource");
    assert_string_equal(field(res, "mimeType"), "text/plain");
    assert_string_equal(field(res, "text"), "This is an embedded resource content.");
    json_decref(r);
    r = call_sync(e, "test_multiple_content_types");
    assert_int_equal(json_array_size(json_object_get(fakehost_result(r), "content")), 3);
    assert_string_equal(field(item(r, 0), "text"), "Multiple content types test:");
    assert_string_equal(field(item(r, 1), "type"), "image");
    res = json_object_get(item(r, 2), "resource");
    assert_string_equal(field(res, "uri"), "test://mixed-content-resource");
    assert_string_equal(field(res, "mimeType"), "application/json");
    assert_string_equal(field(res, "text"), "{\"test\":\"data\",\"value\":123}");
    json_decref(r);
    r = call_sync(e, "test_error_handling");
    assert_true(fakehost_is_error(r));
    assert_string_equal(field(item(r, 0), "text"),
                        "This tool intentionally returns an error for testing");
    json_decref(r);
    r = fakehost_request(e->srv, e->s, 2, "tools/call",
                         "{\"name\":\"json_schema_2020_12_tool\",\"arguments\":{\"name\":\"n\","
                         "\"address\":{\"city\":\"c\"}}}",
                         NULL);
    assert_string_equal(field(item(r, 0), "text"),
                        "JSON Schema 2020-12 tool called with: {\"name\":\"n\",\"address\":{"
                        "\"city\":\"c\"}}");
    json_decref(r);
}

static void test_logging_sequence(void **state)
{
    struct fakeenv *e = *state;
    json_decref(
        fakehost_request(e->srv, e->s, 1, "logging/setLevel", "{\"level\":\"debug\"}", NULL));
    bool pending = false;
    json_t *r =
        fakehost_request(e->srv, e->s, 2, "tools/call",
                         "{\"name\":\"test_tool_with_logging\",\"arguments\":{}}", &pending);
    assert_null(r);
    assert_true(pending);
    fakehost_advance(&e->fh, 49);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1); /* "started" at once */
    json_decref(em);
    fakehost_advance(&e->fh, 51);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 3); /* processing, completed, response */
    static const char *const texts[] = {"Tool processing data", "Tool execution completed"};
    for (int i = 0; i < 2; i++) {
        const json_t *rec = json_array_get(em, i);
        assert_int_equal(json_integer_value(json_object_get(rec, "rel")), 2);
        const json_t *p = json_object_get(json_object_get(rec, "msg"), "params");
        assert_string_equal(field(p, "level"), "info");
        assert_string_equal(field(p, "data"), texts[i]);
    }
    assert_true(json_is_true(json_object_get(json_array_get(em, 2), "final")));
    json_decref(em);
    /* At level warning the info messages are filtered out, the call still answers. */
    json_decref(
        fakehost_request(e->srv, e->s, 3, "logging/setLevel", "{\"level\":\"warning\"}", NULL));
    json_decref(fakehost_request(e->srv, e->s, 4, "tools/call",
                                 "{\"name\":\"test_tool_with_logging\",\"arguments\":{}}", NULL));
    fakehost_advance(&e->fh, 200);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    json_decref(em);
}

static void test_progress_sequence(void **state)
{
    struct fakeenv *e = *state;
    bool pending = false;
    json_t *r = fakehost_request(e->srv, e->s, 5, "tools/call",
                                 "{\"name\":\"test_tool_with_progress\",\"arguments\":{},\"_meta\":"
                                 "{\"progressToken\":\"progress-test-1\"}}",
                                 &pending);
    assert_null(r);
    fakehost_advance(&e->fh, 100);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 4);
    for (int i = 0; i < 3; i++) {
        const json_t *p = json_object_get(json_object_get(json_array_get(em, i), "msg"), "params");
        assert_string_equal(field(p, "progressToken"), "progress-test-1");
        assert_int_equal(json_integer_value(json_object_get(p, "progress")), i * 50);
        assert_int_equal(json_integer_value(json_object_get(p, "total")), 100);
    }
    const json_t *resp = json_object_get(json_array_get(em, 3), "msg");
    assert_false(fakehost_is_error(resp));
    json_decref(em);
    /* Without a token: same delays, no notifications. */
    json_decref(fakehost_request(e->srv, e->s, 6, "tools/call",
                                 "{\"name\":\"test_tool_with_progress\",\"arguments\":{}}", NULL));
    fakehost_advance(&e->fh, 100);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    json_decref(em);
}

static const json_t *start_elicit(struct fakeenv *e, const char *tool, json_t **em_out)
{
    char params[256];
    snprintf(params, sizeof(params), "{\"name\":\"%s\",\"arguments\":{}}", tool);
    bool pending = false;
    assert_null(fakehost_request(e->srv, e->s, 7, "tools/call", params, &pending));
    assert_true(pending);
    *em_out = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(*em_out), 1);
    const json_t *req = json_object_get(json_array_get(*em_out, 0), "msg");
    assert_string_equal(field(req, "method"), "elicitation/create");
    return req;
}

static void finish_elicit(struct fakeenv *e, const json_t *req, const char *content)
{
    json_t *m =
        json_pack("{s:s,s:O,s:{s:s,s:o}}", "jsonrpc", "2.0", "id", json_object_get(req, "id"),
                  "result", "action", "accept", "content", json_loads(content, 0, NULL));
    assert_null(mcp_handle(e->srv, e->s, m, NULL));
    json_decref(m);
    json_t *em = fakehost_take(&e->fh);
    const json_t *resp = json_object_get(json_array_get(em, 0), "msg");
    assert_int_equal(strncmp(fakehost_text(resp, 0), "Elicitation completed: action=accept", 36),
                     0);
    json_decref(em);
}

static void test_sep1034_defaults(void **state)
{
    struct fakeenv *e = *state;
    json_t *em;
    const json_t *req = start_elicit(e, "test_elicitation_sep1034_defaults", &em);
    const json_t *props = json_object_get(
        json_object_get(json_object_get(req, "params"), "requestedSchema"), "properties");
    assert_string_equal(field(json_object_get(props, "name"), "default"), "John Doe");
    assert_string_equal(field(json_object_get(props, "age"), "type"), "integer");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(props, "age"), "default")),
                     30);
    assert_true(json_real_value(json_object_get(json_object_get(props, "score"), "default")) ==
                95.5);
    assert_string_equal(field(json_object_get(props, "status"), "default"), "active");
    assert_int_equal(json_array_size(json_object_get(json_object_get(props, "status"), "enum")), 3);
    assert_true(json_is_true(json_object_get(json_object_get(props, "verified"), "default")));
    finish_elicit(e, req, "{\"name\":\"Jane Smith\",\"age\":25}");
    json_decref(em);
}

static void test_sep1330_enums(void **state)
{
    struct fakeenv *e = *state;
    json_t *em;
    const json_t *req = start_elicit(e, "test_elicitation_sep1330_enums", &em);
    const json_t *props = json_object_get(
        json_object_get(json_object_get(req, "params"), "requestedSchema"), "properties");
    const json_t *us = json_object_get(props, "untitledSingle");
    assert_int_equal(json_array_size(json_object_get(us, "enum")), 3);
    assert_null(json_object_get(us, "oneOf"));
    const json_t *ts = json_object_get(props, "titledSingle");
    assert_null(json_object_get(ts, "enum"));
    assert_string_equal(field(json_array_get(json_object_get(ts, "oneOf"), 0), "title"),
                        "First Option");
    const json_t *le = json_object_get(props, "legacyEnum");
    assert_int_equal(json_array_size(json_object_get(le, "enumNames")),
                     json_array_size(json_object_get(le, "enum")));
    const json_t *um = json_object_get(props, "untitledMulti");
    assert_string_equal(field(um, "type"), "array");
    assert_string_equal(field(json_object_get(um, "items"), "type"), "string");
    const json_t *tm = json_object_get(props, "titledMulti");
    assert_string_equal(
        field(json_array_get(json_object_get(json_object_get(tm, "items"), "anyOf"), 2), "const"),
        "value3");
    assert_null(json_object_get(json_object_get(tm, "items"), "enum"));
    finish_elicit(e, req, "{\"untitledMulti\":[\"option1\"]}");
    json_decref(em);
}

static void test_reconnection(void **state)
{
    struct fakeenv *e = *state;
    bool pending = false;
    assert_null(fakehost_request(e->srv, e->s, 9, "tools/call",
                                 "{\"name\":\"test_reconnection\",\"arguments\":{}}", &pending));
    assert_true(pending);
    assert_int_equal(e->fh.closed, 1); /* the transport was asked to drop the stream */
    fakehost_advance(&e->fh, 100);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_false(fakehost_is_error(json_object_get(json_array_get(em, 0), "msg")));
    json_decref(em);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tools_list_first_page, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_content_tools, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_logging_sequence, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_progress_sequence, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_sep1034_defaults, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_sep1330_enums, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_reconnection, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
