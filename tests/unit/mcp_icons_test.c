/*
 * MCP engine: icons (2025-11-25, SEP-973) on the server's implementation info
 * and on tools, prompts, resources and resource templates -- the checks at
 * registration, the lists of 2025-11-25 sessions, their absence for older
 * clients, and the stateless 2026-07-28 lists and serverInfo _meta.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

#define PNG_1X1                                                                                    \
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8DwHwAF"   \
    "AAH/VscvDQAAAABJRU5ErkJggg=="
/* What the conformance pack lists for its icon fixtures and the server. */
#define FIXTURE_ICONS                                                                              \
    "[{\"src\":\"" PNG_1X1 "\",\"mimeType\":\"image/png\",\"sizes\":[\"1x1\"],\"theme\":"          \
    "\"light\"},{\"src\":\"https://example.com/icons/cmcp-dark.svg\",\"mimeType\":"                \
    "\"image/svg+xml\",\"sizes\":[\"any\"],\"theme\":\"dark\"}]"

static void expect_json(const json_t *got, const char *want)
{
    json_t *w = fakehost_parse(want);
    if (!json_equal(got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "got:  %s\nwant: %s\n", g ? g : "(null)", want);
        free(g);
        fail();
    }
    json_decref(w);
}

/* The entry of list (an array) whose key field is value. */
static const json_t *entry(const json_t *list, const char *key, const char *value)
{
    size_t i;
    const json_t *o;
    json_array_foreach(list, i, o)
    {
        const char *v = json_string_value(json_object_get(o, key));
        if (v && strcmp(v, value) == 0)
            return o;
    }
    fprintf(stderr, "no entry with %s=%s\n", key, value);
    fail();
    return NULL;
}

static json_t *list(struct fakeenv *e, const char *method)
{
    json_t *r = fakehost_request(e->srv, e->s, ++e->next_id, method, NULL, NULL);
    assert_non_null(fakehost_result(r));
    return r;
}

/* Every list names its icon fixture with the pack's icons, and nothing else has any. */
static void check_lists(struct fakeenv *e, bool with_icons)
{
    static const struct {
        const char *method, *key, *field, *name;
    } lists[] = {
        {"tools/list", "tools", "name", "test_icons"},
        {"prompts/list", "prompts", "name", "test_prompt_with_icons"},
        {"resources/list", "resources", "uri", "test://icons/static"},
        {"resources/templates/list", "resourceTemplates", "uriTemplate", "test://icons/{name}"}};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        json_t *r = list(e, lists[i].method);
        const json_t *items = json_object_get(fakehost_result(r), lists[i].key);
        const json_t *it = entry(items, lists[i].field, lists[i].name);
        if (with_icons)
            expect_json(json_object_get(it, "icons"), FIXTURE_ICONS);
        else
            assert_null(json_object_get(it, "icons"));
        size_t n = 0, j;
        const json_t *o;
        json_array_foreach(items, j, o)
        {
            n += json_object_get(o, "icons") != NULL;
        }
        assert_int_equal(n, with_icons ? 1 : 0);
        json_decref(r);
    }
}

static void lists_and_server_info(void **state)
{
    (void)state;
    struct mcp_server_opts o = {.packs = "core,conformance"};
    struct fakeenv *e = fakeenv_new(&o, NULL, "s1", NULL, NULL);
    assert_non_null(e);
    json_t *init = fakehost_initialize(e->srv, e->s, "2025-11-25", "{}");
    char want[2048];
    snprintf(want, sizeof(want),
             "{\"name\":\"cmcp\",\"version\":\"%s\",\"icons\":" FIXTURE_ICONS "}",
             json_string_value(
                 json_object_get(json_object_get(fakehost_result(init), "serverInfo"), "version")));
    expect_json(json_object_get(fakehost_result(init), "serverInfo"), want);
    json_decref(init);
    json_decref(fakehost_take(&e->fh));
    check_lists(e, true);
    fakeenv_teardown((void **)&e);

    /* 2025-06-18 clients do not know the field: none anywhere. */
    e = fakeenv_new(&o, NULL, "s2", NULL, NULL);
    init = fakehost_initialize(e->srv, e->s, "2025-06-18", "{}");
    assert_null(json_object_get(json_object_get(fakehost_result(init), "serverInfo"), "icons"));
    json_decref(init);
    check_lists(e, false);
    fakeenv_teardown((void **)&e);

    /* Without the conformance pack the server has no icons, unless the host sets some. */
    struct mcp_server_opts core = {.packs = "core"};
    e = fakeenv_new(&core, NULL, "s3", NULL, NULL);
    char err[256];
    json_t *mine = fakehost_parse("[{\"src\":\"https://example.com/me.png\"}]");
    assert_int_equal(mcp_server_set_icons(e->srv, mine, err, sizeof(err)), 0);
    json_decref(mine);
    init = fakehost_initialize(e->srv, e->s, "2025-11-25", "{}");
    expect_json(json_object_get(json_object_get(fakehost_result(init), "serverInfo"), "icons"),
                "[{\"src\":\"https://example.com/me.png\"}]");
    json_decref(init);
    assert_int_equal(mcp_server_set_icons(e->srv, NULL, err, sizeof(err)), 0);
    fakeenv_teardown((void **)&e);
}

/* 2026-07-28: the lists carry icons, and so does every result's serverInfo _meta. */
static void stateless_icons(void **state)
{
    (void)state;
    struct mcp_server_opts o = {.packs = "conformance"};
    struct fakeenv *e = fakeenv_new(&o, NULL, NULL, NULL, NULL);
    const char *methods[] = {"tools/list", "prompts/list", "resources/list",
                             "resources/templates/list", "server/discover"};
    const char *keys[] = {"tools", "prompts", "resources", "resourceTemplates", NULL};
    for (size_t i = 0; i < 5; i++) {
        json_t *msg = fakehost_parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"_meta\":"
                            "{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
                            "\"io.modelcontextprotocol/clientCapabilities\":{}}}}");
        json_object_set_new(msg, "method", json_string(methods[i]));
        struct mcp_stateless_ctx ctx = {.key = "k"};
        bool pending;
        json_t *r = mcp_handle_stateless(e->srv, msg, &ctx, &pending);
        json_decref(msg);
        const json_t *res = fakehost_result(r);
        assert_non_null(res);
        const json_t *si =
            json_object_get(json_object_get(res, "_meta"), "io.modelcontextprotocol/serverInfo");
        expect_json(json_object_get(si, "icons"), FIXTURE_ICONS);
        if (keys[i]) {
            size_t n = 0, j;
            const json_t *it;
            json_array_foreach(json_object_get(res, keys[i]), j, it)
            {
                if (json_object_get(it, "icons")) {
                    expect_json(json_object_get(it, "icons"), FIXTURE_ICONS);
                    n++;
                }
            }
            assert_int_equal(n, 1);
        }
        json_decref(r);
    }
    fakeenv_teardown((void **)&e);
}

static int noop_prompt_called;
static json_t *noop_prompt(mcp_call *c, const json_t *args, void *ud)
{
    (void)c;
    (void)args;
    (void)ud;
    noop_prompt_called++;
    return NULL;
}
static void noop_tool(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    mcp_call_return_text(c, false, "ok");
}
static json_t *noop_read(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    (void)c;
    (void)uri;
    (void)vars;
    (void)ud;
    return NULL;
}

/* Bad icons are refused at registration, with a sentence naming the entry and the fault. */
static void registration_checks(void **state)
{
    (void)state;
    static const struct {
        const char *icons, *why;
    } bad[] = {
        {"{\"src\":\"https://example.com/a.png\"}", "icons must be an array"},
        {"[\"https://example.com/a.png\"]", "icon 0 must be an object"},
        {"[{\"mimeType\":\"image/png\"}]", "icon 0 needs a src"},
        {"[{\"src\":\"ftp://example.com/a.png\"}]", "src must be an https:// or http:// URL"},
        {"[{\"src\":\"data:image/png;base64\"}]", "or a data: URI"},
        {"[{\"src\":\"https://example.com/a.png\",\"size\":[\"48x48\"]}]", "unknown field 'size'"},
        {"[{\"src\":\"https://example.com/a.png\",\"sizes\":[\"48\"]}]", "\"WxH\" or \"any\""},
        {"[{\"src\":\"https://example.com/a.png\",\"sizes\":\"48x48\"}]", "sizes must be an array"},
        {"[{\"src\":\"https://example.com/a.png\",\"theme\":\"Dark\"}]",
         "theme must be \"light\" or \"dark\""},
        {"[{\"src\":\"https://example.com/a.png\"},{\"src\":\"https://x\",\"mimeType\":\"png\"}]",
         "icon 1: mimeType must be a MIME type"},
    };
    struct mcp_server_opts o = {.packs = "none"};
    struct fakeenv *e = fakeenv_new(&o, NULL, NULL, NULL, NULL);
    char err[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *icons = fakehost_parse(bad[i].icons);
        struct mcp_tool_def t = {.name = "t", .description = "d", .run = noop_tool, .icons = icons};
        struct mcp_prompt_def p = {.name = "p", .get = noop_prompt, .icons = icons};
        struct mcp_resource_def r = {
            .uri = "x://r", .name = "r", .read = noop_read, .icons = icons};
        struct mcp_resource_def tp = {
            .uri = "x://{v}", .name = "tp", .read = noop_read, .icons = icons};
        err[0] = '\0';
        assert_int_equal(mcp_server_add_tool(e->srv, &t, err, sizeof(err)), -1);
        if (!strstr(err, bad[i].why) || strncmp(err, "tool 't': ", 10) != 0) {
            fprintf(stderr, "case %zu: %s\n", i, err);
            fail();
        }
        assert_int_equal(mcp_server_add_prompt(e->srv, &p, err, sizeof(err)), -1);
        assert_int_equal(strncmp(err, "prompt 'p': ", 12), 0);
        assert_int_equal(mcp_server_add_resource(e->srv, &r, err, sizeof(err)), -1);
        assert_int_equal(strncmp(err, "resource 'x://r': ", 18), 0);
        assert_int_equal(mcp_server_add_template(e->srv, &tp, err, sizeof(err)), -1);
        assert_int_equal(strncmp(err, "resource template 'x://{v}': ", 29), 0);
        assert_int_equal(mcp_server_set_icons(e->srv, icons, err, sizeof(err)), -1);
        assert_int_equal(strncmp(err, "server: ", 8), 0);
        json_decref(icons);
    }
    assert_int_equal(mcp_server_tool_count(e->srv), 0);
    /* Good ones: both URL schemes, a data: URI, an empty list (= none). */
    json_t *good = fakehost_parse("[{\"src\":\"http://example.com/a.png\",\"sizes\":[\"48x48\",\"96x96\"]},"
                         "{\"src\":\"data:image/svg+xml,%3Csvg%2F%3E\",\"theme\":\"dark\"}]");
    struct mcp_tool_def t = {.name = "t", .description = "d", .run = noop_tool, .icons = good};
    assert_int_equal(mcp_server_add_tool(e->srv, &t, err, sizeof(err)), 0);
    json_t *empty = json_array();
    struct mcp_prompt_def p = {.name = "p", .get = noop_prompt, .icons = empty};
    assert_int_equal(mcp_server_add_prompt(e->srv, &p, err, sizeof(err)), 0);
    e->s = mcp_session_new(e->srv, "s");
    json_decref(fakehost_initialize(e->srv, e->s, "2025-11-25", "{}"));
    json_t *r = list(e, "tools/list");
    expect_json(
        json_object_get(json_array_get(json_object_get(fakehost_result(r), "tools"), 0), "icons"),
        "[{\"src\":\"http://example.com/a.png\",\"sizes\":[\"48x48\",\"96x96\"]},"
        "{\"src\":\"data:image/svg+xml,%3Csvg%2F%3E\",\"theme\":\"dark\"}]");
    json_decref(r);
    r = list(e, "prompts/list");
    assert_null(json_object_get(json_array_get(json_object_get(fakehost_result(r), "prompts"), 0),
                                "icons"));
    json_decref(r);
    json_decref(good);
    json_decref(empty);
    assert_int_equal(noop_prompt_called, 0);
    fakeenv_teardown((void **)&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lists_and_server_info),
        cmocka_unit_test(stateless_icons),
        cmocka_unit_test(registration_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
