/*
 * MCP engine: the 2025-11-25 client features tools reach through the C API --
 * URL-mode elicitation (mcp_call_elicit_url, notifications/elicitation/complete,
 * the -32042 URLElicitationRequiredError) and sampling with tools
 * (mcp_sampling_params, mcp_sampling_result_check) -- on 2025 sessions and on
 * the stateless 2026-07-28 revision, through the conformance pack's fixtures
 * test_url_elicitation, test_url_elicitation_required and test_sampling_tools.
 * Wire shapes are compared whole.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

#define URLCAPS "{\"elicitation\":{\"form\":{},\"url\":{}}}"
#define TOOLCAPS "{\"sampling\":{\"tools\":{}}}"
#define PARIS_TOOLS                                                                                \
    "[{\"name\":\"get_weather\",\"description\":\"The current weather of a city\","                \
    "\"inputSchema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"        \
    "\"required\":[\"city\"]}}]"

/* got must equal the JSON text want, whole. */
static void expect_json(const json_t *got, const char *want)
{
    json_t *w = fakehost_parse(want);
    if (!json_equal(got, w)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        char *x = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
        fprintf(stderr, "got:  %s\nwant: %s\n", g ? g : "(null)", x ? x : "(null)");
        free(g);
        free(x);
        fail();
    }
    json_decref(w);
}

static struct fakeenv *env(const char *version, const char *caps)
{
    struct mcp_server_opts o = {.packs = "conformance"};
    struct fakeenv *e = fakeenv_new(&o, NULL, "s1", version, caps);
    assert_non_null(e);
    return e;
}

/* Starts a tools/call that goes pending and emits one server->client request: returns it. */
static json_t *start(struct fakeenv *e, json_int_t id, const char *params)
{
    bool pending = false;
    json_t *r = fakehost_request(e->srv, e->s, id, "tools/call", params, &pending);
    assert_null(r);
    assert_true(pending);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    const json_t *rec = json_array_get(em, 0);
    assert_false(json_is_true(json_object_get(rec, "final")));
    assert_int_equal(json_integer_value(json_object_get(rec, "rel")), id);
    json_t *req = json_incref(json_object_get(rec, "msg"));
    json_decref(em);
    return req;
}

/* Answers a server->client request; returns what the engine emitted then (caller owns). */
static json_t *answer(struct fakeenv *e, const json_t *req, const char *result)
{
    json_t *m = json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", json_object_get(req, "id"),
                          "result", fakehost_parse(result));
    bool pending = true;
    assert_null(mcp_handle(e->srv, e->s, m, &pending));
    json_decref(m);
    return fakehost_take(&e->fh);
}

/* A synchronous tools/call's response. */
static json_t *call_now(struct fakeenv *e, json_int_t id, const char *params)
{
    bool pending = true;
    json_t *r = fakehost_request(e->srv, e->s, id, "tools/call", params, &pending);
    assert_false(pending);
    assert_non_null(r);
    return r;
}

/* ------------------------------------------------ URL-mode elicitation -- */

static void url_elicitation_round_trip(void **state)
{
    (void)state;
    struct fakeenv *e = env("2025-11-25", URLCAPS);
    json_t *req = start(e, 7,
                        "{\"name\":\"test_url_elicitation\",\"arguments\":{\"elicitationId\":"
                        "\"el-1\"}}");
    assert_string_equal(json_string_value(json_object_get(req, "method")), "elicitation/create");
    expect_json(json_object_get(req, "params"),
                "{\"mode\":\"url\",\"message\":\"Please open the link to connect your Example Co "
                "account\",\"elicitationId\":\"el-1\",\"url\":\"https://example.com/connect?"
                "elicitationId=el-1\"}");
    json_t *em = answer(e, req, "{\"action\":\"accept\"}");
    /* The completion notification on the call's stream, then the result. */
    assert_int_equal(json_array_size(em), 2);
    const json_t *n = json_array_get(em, 0);
    assert_int_equal(json_integer_value(json_object_get(n, "rel")), 7);
    assert_false(json_is_true(json_object_get(n, "final")));
    expect_json(json_object_get(n, "msg"),
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/elicitation/complete\","
                "\"params\":{\"elicitationId\":\"el-1\"}}");
    const json_t *fin = json_object_get(json_array_get(em, 1), "msg");
    assert_true(json_is_true(json_object_get(json_array_get(em, 1), "final")));
    assert_false(fakehost_is_error(fin));
    expect_json(json_object_get(fakehost_result(fin), "structuredContent"),
                "{\"action\":\"accept\",\"elicitationId\":\"el-1\",\"completeNotified\":true}");
    json_decref(em);
    json_decref(req);

    /* Declined: no completion notification. A fresh id when none is given. */
    req = start(e, 8, "{\"name\":\"test_url_elicitation\",\"arguments\":{}}");
    const char *id =
        json_string_value(json_object_get(json_object_get(req, "params"), "elicitationId"));
    assert_non_null(id);
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '4'); /* UUID v4 */
    char *want = NULL;
    assert_true(asprintf(&want,
                         "{\"action\":\"decline\",\"elicitationId\":\"%s\",\"completeNotified\":"
                         "false}",
                         id) > 0);
    em = answer(e, req, "{\"action\":\"decline\"}");
    assert_int_equal(json_array_size(em), 1);
    expect_json(json_object_get(fakehost_result(json_object_get(json_array_get(em, 0), "msg")),
                                "structuredContent"),
                want);
    free(want);
    json_decref(em);
    json_decref(req);
    fakeenv_teardown((void **)&e);
}

/* Form-only clients (an empty elicitation object, or form alone), and 2025-06-18 sessions
 * even with url declared, get no URL-mode request: the tool reports it. */
static void url_elicitation_needs_capability(void **state)
{
    (void)state;
    static const struct {
        const char *version, *caps;
    } cases[] = {{"2025-11-25", "{\"elicitation\":{}}"},
                 {"2025-11-25", "{\"elicitation\":{\"form\":{}}}"},
                 {"2025-11-25", "{}"},
                 {"2025-06-18", "{\"elicitation\":{\"url\":{}}}"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fakeenv *e = env(cases[i].version, cases[i].caps);
        json_t *r = call_now(e, 3, "{\"name\":\"test_url_elicitation\",\"arguments\":{}}");
        assert_true(fakehost_is_error(r));
        assert_non_null(strstr(fakehost_text(r, 0), "'elicitation.url' capability"));
        json_decref(r);
        json_t *em = fakehost_take(&e->fh);
        assert_int_equal(json_array_size(em), 0); /* nothing was sent */
        json_decref(em);
        fakeenv_teardown((void **)&e);
    }
}

static void url_elicitation_required_error(void **state)
{
    (void)state;
    struct fakeenv *e = env("2025-11-25", URLCAPS);
    json_t *r = call_now(e, 4,
                         "{\"name\":\"test_url_elicitation_required\",\"arguments\":{"
                         "\"elicitationId\":\"\"}}");
    assert_int_equal(fakehost_error_code(r), MCP_URL_ELICITATION_REQUIRED);
    assert_int_equal(MCP_URL_ELICITATION_REQUIRED, -32042);
    const json_t *err = json_object_get(r, "error");
    assert_string_equal(json_string_value(json_object_get(err, "message")),
                        "This request requires more information.");
    const json_t *els = json_object_get(json_object_get(err, "data"), "elicitations");
    assert_int_equal(json_array_size(els), 1);
    const char *id = json_string_value(json_object_get(json_array_get(els, 0), "elicitationId"));
    assert_non_null(id);
    char *want = NULL;
    assert_true(asprintf(&want,
                         "[{\"mode\":\"url\",\"message\":\"Authorization is required to access "
                         "your Example Co files.\",\"elicitationId\":\"%s\",\"url\":\"https://"
                         "example.com/connect?elicitationId=%s\"}]",
                         id, id) > 0);
    expect_json(els, want);
    free(want);

    /* The retry that names the id: the interaction counts as done, and the client hears
     * that it completed (on the call's stream, before the response). */
    json_decref(fakehost_take(&e->fh));
    char *params = NULL;
    assert_true(asprintf(&params,
                         "{\"name\":\"test_url_elicitation_required\",\"arguments\":{"
                         "\"elicitationId\":\"%s\"}}",
                         id) > 0);
    json_t *r2 = call_now(e, 5, params);
    free(params);
    assert_false(fakehost_is_error(r2));
    assert_true(asprintf(&want,
                         "{\"connected\":true,\"elicitationId\":\"%s\",\"completeNotified\":true}",
                         id) > 0);
    expect_json(json_object_get(fakehost_result(r2), "structuredContent"), want);
    free(want);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(em, 0), "rel")), 5);
    assert_true(asprintf(&want,
                         "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/elicitation/complete\","
                         "\"params\":{\"elicitationId\":\"%s\"}}",
                         id) > 0);
    expect_json(json_object_get(json_array_get(em, 0), "msg"), want);
    free(want);
    json_decref(em);
    json_decref(r2);
    json_decref(r);
    fakeenv_teardown((void **)&e);

    /* No url capability: no -32042 (it would name something the client cannot do). */
    e = env("2025-11-25", "{\"elicitation\":{}}");
    r = call_now(e, 6, "{\"name\":\"test_url_elicitation_required\",\"arguments\":{}}");
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "'elicitation.url' capability"));
    json_decref(r);
    fakeenv_teardown((void **)&e);
}

/* The API's own checks, through a tool that reports return values. */
static void api_probe(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    static const struct mcp_url_elicitation bad[] = {
        {.message = "m", .url = "ftp://example.com/x", .elicitation_id = "a"},
        {.message = "m", .url = "https://", .elicitation_id = "a"},
        {.message = "m", .url = "https://example.com/", .elicitation_id = ""},
        {.message = "", .url = "https://example.com/", .elicitation_id = "a"},
        {.message = "m", .url = NULL, .elicitation_id = "a"},
    };
    char out[200] = "";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int a = mcp_call_elicit_url(c, NULL, &bad[i], 0, NULL, NULL);
        int b = mcp_call_url_elicitation_required(c, NULL, &bad[i], 1);
        snprintf(out + strlen(out), sizeof(out) - strlen(out), "%d/%d ", a, b);
    }
    snprintf(out + strlen(out), sizeof(out) - strlen(out), "n0=%d complete-empty=%d",
             mcp_call_url_elicitation_required(c, "x", bad, 0),
             mcp_call_elicitation_complete(c, ""));
    mcp_call_return_text(c, false, "%s", out);
}

static void url_api_checks(void **state)
{
    (void)state;
    struct fakeenv *e = env("2025-11-25", URLCAPS);
    char err[256];
    struct mcp_tool_def def = {.name = "probe", .description = "p", .run = api_probe};
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), 0);
    json_decref(fakehost_take(&e->fh));
    json_t *r = call_now(e, 9, "{\"name\":\"probe\"}");
    char want[200];
    snprintf(want, sizeof(want), "%d/%d %d/%d %d/%d %d/%d %d/%d n0=%d complete-empty=%d", -EINVAL,
             -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL, -EINVAL,
             -EINVAL, -EINVAL);
    assert_string_equal(fakehost_text(r, 0), want);
    json_decref(r);

    /* The session-wide completion: rel NULL. */
    assert_int_equal(mcp_session_elicitation_complete(e->s, "late-1"), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_true(json_is_null(json_object_get(json_array_get(em, 0), "rel")));
    expect_json(json_object_get(json_array_get(em, 0), "msg"),
                "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/elicitation/complete\","
                "\"params\":{\"elicitationId\":\"late-1\"}}");
    json_decref(em);
    assert_int_equal(mcp_session_elicitation_complete(e->s, NULL), -EINVAL);
    fakeenv_teardown((void **)&e);

    e = env("2025-06-18", URLCAPS);
    assert_int_equal(mcp_session_elicitation_complete(e->s, "x"), -ENOTSUP);
    fakeenv_teardown((void **)&e);

    char id[MCP_ELICITATION_ID_LEN], id2[MCP_ELICITATION_ID_LEN];
    mcp_elicitation_id_new(id);
    mcp_elicitation_id_new(id2);
    assert_int_equal(strlen(id), 36);
    assert_string_not_equal(id, id2);
    assert_true(id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b');
}

/* ------------------------------------------------- sampling with tools -- */

static void sampling_tools_round_trip(void **state)
{
    (void)state;
    struct fakeenv *e = env("2025-11-25", TOOLCAPS);
    json_t *req = start(e, 11, "{\"name\":\"test_sampling_tools\",\"arguments\":{}}");
    assert_string_equal(json_string_value(json_object_get(req, "method")),
                        "sampling/createMessage");
    expect_json(json_object_get(req, "params"),
                "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":"
                "\"What is the weather in Paris?\"}}],\"maxTokens\":200,\"tools\":" PARIS_TOOLS
                ",\"toolChoice\":{\"mode\":\"auto\"}}");
    json_t *em = answer(e, req,
                        "{\"role\":\"assistant\",\"model\":\"m1\",\"stopReason\":\"toolUse\","
                        "\"content\":[{\"type\":\"text\",\"text\":\"Let me check.\"},{\"type\":"
                        "\"tool_use\",\"id\":\"tu-1\",\"name\":\"get_weather\",\"input\":{"
                        "\"city\":\"Paris\"}}]}");
    /* The follow-up: the history, the tool's result, and no more tools to use. */
    assert_int_equal(json_array_size(em), 1);
    const json_t *req2 = json_object_get(json_array_get(em, 0), "msg");
    assert_false(json_is_true(json_object_get(json_array_get(em, 0), "final")));
    assert_string_equal(json_string_value(json_object_get(req2, "method")),
                        "sampling/createMessage");
    assert_false(json_equal(json_object_get(req2, "id"), json_object_get(req, "id")));
    expect_json(json_object_get(req2, "params"),
                "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":"
                "\"What is the weather in Paris?\"}},{\"role\":\"assistant\",\"content\":[{"
                "\"type\":\"text\",\"text\":\"Let me check.\"},{\"type\":\"tool_use\",\"id\":"
                "\"tu-1\",\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}]},{\"role\":"
                "\"user\",\"content\":[{\"type\":\"tool_result\",\"toolUseId\":\"tu-1\","
                "\"content\":[{\"type\":\"text\",\"text\":\"Weather in Paris: sunny, 22 C\"}]}]}],"
                "\"maxTokens\":200,\"tools\":" PARIS_TOOLS ",\"toolChoice\":{\"mode\":\"none\"}}");
    json_t *em2 = answer(e, req2,
                         "{\"role\":\"assistant\",\"model\":\"m1\",\"stopReason\":\"endTurn\","
                         "\"content\":{\"type\":\"text\",\"text\":\"Sunny in Paris.\"}}");
    assert_int_equal(json_array_size(em2), 1);
    const json_t *fin = json_object_get(json_array_get(em2, 0), "msg");
    assert_true(json_is_true(json_object_get(json_array_get(em2, 0), "final")));
    assert_false(fakehost_is_error(fin));
    expect_json(json_object_get(fakehost_result(fin), "structuredContent"),
                "{\"rounds\":2,\"toolUses\":[{\"name\":\"get_weather\",\"input\":{\"city\":"
                "\"Paris\"}}],\"answer\":\"Sunny in Paris.\",\"stopReason\":\"endTurn\"}");
    assert_string_equal(fakehost_text(fin, 0),
                        "Sampling with tools: 2 round(s), 1 tool use(s); answer: Sunny in Paris.");
    json_decref(em2);
    json_decref(em);
    json_decref(req);
    assert_int_equal(mcp_session_pending(e->s), 0);

    /* A model that answers at once: one round. */
    req = start(e, 12, "{\"name\":\"test_sampling_tools\",\"arguments\":{\"prompt\":\"Hi\"}}");
    em = answer(e, req,
                "{\"role\":\"assistant\",\"model\":\"m1\",\"content\":{\"type\":\"text\","
                "\"text\":\"Hello\"}}");
    assert_int_equal(json_array_size(em), 1);
    expect_json(json_object_get(fakehost_result(json_object_get(json_array_get(em, 0), "msg")),
                                "structuredContent"),
                "{\"rounds\":1,\"toolUses\":[],\"answer\":\"Hello\",\"stopReason\":\"(none)\"}");
    json_decref(em);
    json_decref(req);
    fakeenv_teardown((void **)&e);
}

/* Answers that are no valid CreateMessageResult for this request become an error result. */
static void sampling_tools_bad_answers(void **state)
{
    (void)state;
    static const struct {
        const char *answer, *why;
    } cases[] = {
        {"{\"role\":\"assistant\",\"model\":\"m\",\"content\":{\"type\":\"tool_use\",\"id\":\"a\","
         "\"name\":\"rm_rf\",\"input\":{}}}",
         "not among the tools offered"},
        {"{\"role\":\"assistant\",\"model\":\"m\",\"content\":{\"type\":\"tool_use\",\"id\":\"a\","
         "\"name\":\"get_weather\"}}",
         "an object \"input\""},
        {"{\"role\":\"user\",\"model\":\"m\",\"content\":{\"type\":\"tool_use\",\"id\":\"a\","
         "\"name\":\"get_weather\",\"input\":{}}}",
         "comes from the assistant"},
        {"{\"role\":\"assistant\",\"content\":{\"type\":\"text\",\"text\":\"x\"}}", "\"model\""},
        {"{\"role\":\"assistant\",\"model\":\"m\",\"content\":[]}", "non-empty array"},
        {"{\"role\":\"assistant\",\"model\":\"m\",\"content\":{\"type\":\"video\"}}",
         "unknown content type 'video'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fakeenv *e = env("2025-11-25", TOOLCAPS);
        json_t *req = start(e, 20, "{\"name\":\"test_sampling_tools\",\"arguments\":{}}");
        json_t *em = answer(e, req, cases[i].answer);
        assert_int_equal(json_array_size(em), 1);
        const json_t *fin = json_object_get(json_array_get(em, 0), "msg");
        assert_true(fakehost_is_error(fin));
        if (!strstr(fakehost_text(fin, 0), cases[i].why)) {
            fprintf(stderr, "case %zu: %s\n", i, fakehost_text(fin, 0));
            fail();
        }
        json_decref(em);
        json_decref(req);
        fakeenv_teardown((void **)&e);
    }
}

/* Without sampling.tools (or before 2025-11-25) nothing is sent. */
static void sampling_tools_needs_capability(void **state)
{
    (void)state;
    static const struct {
        const char *version, *caps;
    } cases[] = {
        {"2025-11-25", "{\"sampling\":{}}"}, {"2025-11-25", "{}"}, {"2025-06-18", TOOLCAPS}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fakeenv *e = env(cases[i].version, cases[i].caps);
        json_t *r = call_now(e, 3, "{\"name\":\"test_sampling_tools\",\"arguments\":{}}");
        assert_true(fakehost_is_error(r));
        assert_non_null(strstr(fakehost_text(r, 0), "'sampling.tools' capability"));
        json_decref(r);
        json_t *em = fakehost_take(&e->fh);
        assert_int_equal(json_array_size(em), 0);
        json_decref(em);
        fakeenv_teardown((void **)&e);
    }
}

static void sampling_params_checks(void **state)
{
    (void)state;
    char err[256];
    json_t *tools = fakehost_parse(PARIS_TOOLS);
    static const struct {
        const char *messages, *why;
    } bad[] = {
        {"[]", "non-empty array"},
        {"[{\"role\":\"system\",\"content\":{\"type\":\"text\",\"text\":\"x\"}}]", "role"},
        {"[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"x\"}},{\"role\":"
         "\"assistant\",\"content\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"get_weather\","
         "\"input\":{}}}]",
         "tool_use 't1' has no tool_result"},
        {"[{\"role\":\"assistant\",\"content\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"g\","
         "\"input\":{}}},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"toolUseId\":"
         "\"t1\",\"content\":[]},{\"type\":\"text\",\"text\":\"and\"}]}]",
         "mixes tool_result"},
        {"[{\"role\":\"assistant\",\"content\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"g\","
         "\"input\":{}}},{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"toolUseId\":"
         "\"t2\",\"content\":[]}]}]",
         "tool_use 't1' has no tool_result"},
        {"[{\"role\":\"assistant\",\"content\":{\"type\":\"tool_result\",\"toolUseId\":\"t\","
         "\"content\":[]}}]",
         "goes back from the user"},
        {"[{\"role\":\"user\",\"content\":{\"type\":\"image\",\"data\":\"x\"}}]", "\"mimeType\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *m = fakehost_parse(bad[i].messages);
        err[0] = '\0';
        assert_null(mcp_sampling_params(m, 100, tools, "auto", err, sizeof(err)));
        if (!strstr(err, bad[i].why)) {
            fprintf(stderr, "case %zu: %s\n", i, err);
            fail();
        }
        json_decref(m);
    }
    json_t *ok = fakehost_parse("[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":\"x\"}}]");
    assert_null(mcp_sampling_params(ok, 100, tools, "sometimes", err, sizeof(err)));
    assert_non_null(strstr(err, "toolChoice mode 'sometimes'"));
    assert_null(mcp_sampling_params(ok, 0, NULL, NULL, err, sizeof(err)));
    json_t *twice =
        fakehost_parse("[{\"name\":\"a\",\"inputSchema\":{}},{\"name\":\"a\",\"inputSchema\":{}}]");
    assert_null(mcp_sampling_params(ok, 10, twice, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "offered twice"));
    json_decref(twice);
    json_t *noschema = fakehost_parse("[{\"name\":\"a\"}]");
    assert_null(mcp_sampling_params(ok, 10, noschema, NULL, err, sizeof(err)));
    json_decref(noschema);
    /* Without tools: a plain request, no tools or toolChoice keys. */
    json_t *p = mcp_sampling_params(ok, 10, NULL, NULL, err, sizeof(err));
    expect_json(p, "{\"messages\":[{\"role\":\"user\",\"content\":{\"type\":\"text\",\"text\":"
                   "\"x\"}}],\"maxTokens\":10}");
    json_decref(p);
    json_decref(ok);

    json_t *tb = mcp_sampling_tool_result("t9", NULL, true);
    expect_json(tb,
                "{\"type\":\"tool_result\",\"toolUseId\":\"t9\",\"content\":[],\"isError\":true}");
    json_decref(tb);
    json_t *res = fakehost_parse("{\"role\":\"assistant\",\"model\":\"m\",\"content\":[{\"type\":\"text\","
                        "\"text\":\"a\"},{\"type\":\"tool_use\",\"id\":\"1\",\"name\":\"x\","
                        "\"input\":{}},{\"type\":\"tool_use\",\"id\":\"2\",\"name\":\"y\","
                        "\"input\":{}}]}");
    assert_int_equal(mcp_sampling_result_check(res, NULL, err, sizeof(err)), 0);
    assert_int_equal(mcp_sampling_result_check(res, tools, err, sizeof(err)), -1);
    json_t *uses = mcp_sampling_tool_uses(res);
    assert_int_equal(json_array_size(uses), 2);
    json_decref(uses);
    json_decref(res);
    json_decref(tools);
}

/* ---------------------------------------------------------- stateless -- */

static json_t *stateless(mcp_server *srv, const char *params, const char *caps)
{
    json_t *p = fakehost_parse(params);
    json_t *meta = json_object();
    json_object_set_new(meta, "io.modelcontextprotocol/protocolVersion", json_string("2026-07-28"));
    json_object_set_new(meta, "io.modelcontextprotocol/clientCapabilities", fakehost_parse(caps));
    json_object_set_new(p, "_meta", meta);
    json_t *msg = json_pack("{s:s,s:i,s:s,s:o}", "jsonrpc", "2.0", "id", 1, "method", "tools/call",
                            "params", p);
    struct mcp_stateless_ctx ctx = {.http = false, .key = "k1"};
    bool pending = true;
    json_t *r = mcp_handle_stateless(srv, msg, &ctx, &pending);
    json_decref(msg);
    assert_false(pending);
    assert_non_null(r);
    return r;
}

/* The retry's params: the tool, answers (JSON text) and the previous round's state. */
static char *retry(const char *tool, const char *answers, const json_t *prev)
{
    char *p = NULL;
    const char *st =
        json_string_value(json_object_get(json_object_get(prev, "result"), "requestState"));
    assert_non_null(st);
    assert_true(asprintf(&p,
                         "{\"name\":\"%s\",\"arguments\":{},\"inputResponses\":%s,"
                         "\"requestState\":\"%s\"}",
                         tool, answers, st) > 0);
    return p;
}

static void stateless_url_and_sampling(void **state)
{
    (void)state;
    struct fakeenv *e = env("2025-11-25", "{}"); /* the server; its session is not used */

    /* URL elicitation: an input request, then the answer; no notification (2026 has none). */
    json_t *r = stateless(e->srv, "{\"name\":\"test_url_elicitation\",\"arguments\":{}}", URLCAPS);
    const json_t *res = json_object_get(r, "result");
    assert_string_equal(json_string_value(json_object_get(res, "resultType")), "input_required");
    const json_t *q = json_object_get(json_object_get(res, "inputRequests"), "url_elicitation");
    assert_string_equal(json_string_value(json_object_get(q, "method")), "elicitation/create");
    const json_t *qp = json_object_get(q, "params");
    const char *id = json_string_value(json_object_get(qp, "elicitationId"));
    assert_non_null(id);
    assert_string_equal(json_string_value(json_object_get(qp, "mode")), "url");
    char *p = retry("test_url_elicitation", "{\"url_elicitation\":{\"action\":\"accept\"}}", r);
    json_t *r2 = stateless(e->srv, p, URLCAPS);
    free(p);
    char *want = NULL;
    assert_true(asprintf(&want,
                         "{\"action\":\"accept\",\"elicitationId\":\"%s\",\"completeNotified\":"
                         "false}",
                         id) > 0); /* the same id on the replay */
    expect_json(json_object_get(json_object_get(r2, "result"), "structuredContent"), want);
    free(want);
    json_decref(r2);
    json_decref(r);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);

    /* No -32042 on 2026-07-28: the same tool asks instead. */
    r = stateless(e->srv, "{\"name\":\"test_url_elicitation_required\",\"arguments\":{}}", URLCAPS);
    res = json_object_get(r, "result");
    assert_string_equal(json_string_value(json_object_get(res, "resultType")), "input_required");
    assert_non_null(json_object_get(json_object_get(res, "inputRequests"), "connect"));
    json_decref(r);

    /* Without the url sub-capability: -32021 naming it. */
    r = stateless(e->srv, "{\"name\":\"test_url_elicitation\",\"arguments\":{}}",
                  "{\"elicitation\":{\"form\":{}}}");
    assert_int_equal(fakehost_error_code(r), MCP_MISSING_CAPABILITY);
    expect_json(json_object_get(json_object_get(r, "error"), "data"),
                "{\"requiredCapabilities\":{\"elicitation\":{\"url\":{}}}}");
    json_decref(r);
    r = stateless(e->srv, "{\"name\":\"test_sampling_tools\",\"arguments\":{}}",
                  "{\"sampling\":{}}");
    assert_int_equal(fakehost_error_code(r), MCP_MISSING_CAPABILITY);
    expect_json(json_object_get(json_object_get(r, "error"), "data"),
                "{\"requiredCapabilities\":{\"sampling\":{\"tools\":{}}}}");
    json_decref(r);

    /* Sampling with tools over two rounds of input requests. */
    r = stateless(e->srv, "{\"name\":\"test_sampling_tools\",\"arguments\":{}}", TOOLCAPS);
    res = json_object_get(r, "result");
    q = json_object_get(json_object_get(res, "inputRequests"), "sampling_tools");
    assert_string_equal(json_string_value(json_object_get(q, "method")), "sampling/createMessage");
    expect_json(json_object_get(json_object_get(q, "params"), "toolChoice"), "{\"mode\":\"auto\"}");
    p = retry("test_sampling_tools",
              "{\"sampling_tools\":{\"role\":\"assistant\",\"model\":\"m\",\"content\":[{\"type\":"
              "\"tool_use\",\"id\":\"u1\",\"name\":\"get_weather\",\"input\":{\"city\":\"Oslo\"}}],"
              "\"stopReason\":\"toolUse\"}}",
              r);
    r2 = stateless(e->srv, p, TOOLCAPS);
    free(p);
    res = json_object_get(r2, "result");
    assert_string_equal(json_string_value(json_object_get(res, "resultType")), "input_required");
    q = json_object_get(json_object_get(res, "inputRequests"), "sampling_followup");
    const json_t *msgs = json_object_get(json_object_get(q, "params"), "messages");
    assert_int_equal(json_array_size(msgs), 3);
    expect_json(json_object_get(json_array_get(msgs, 2), "content"),
                "[{\"type\":\"tool_result\",\"toolUseId\":\"u1\",\"content\":[{\"type\":\"text\","
                "\"text\":\"Weather in Oslo: sunny, 22 C\"}]}]");
    p = retry("test_sampling_tools",
              "{\"sampling_followup\":{\"role\":\"assistant\",\"model\":\"m\",\"content\":{"
              "\"type\":\"text\",\"text\":\"Sunny.\"},\"stopReason\":\"endTurn\"}}",
              r2);
    json_t *r3 = stateless(e->srv, p, TOOLCAPS);
    free(p);
    res = json_object_get(r3, "result");
    assert_string_equal(json_string_value(json_object_get(res, "resultType")), "complete");
    expect_json(json_object_get(res, "structuredContent"),
                "{\"rounds\":2,\"toolUses\":[{\"name\":\"get_weather\",\"input\":{\"city\":"
                "\"Oslo\"}}],\"answer\":\"Sunny.\",\"stopReason\":\"endTurn\"}");
    json_decref(r3);
    json_decref(r2);
    json_decref(r);
    fakeenv_teardown((void **)&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(url_elicitation_round_trip),
        cmocka_unit_test(url_elicitation_needs_capability),
        cmocka_unit_test(url_elicitation_required_error),
        cmocka_unit_test(url_api_checks),
        cmocka_unit_test(sampling_tools_round_trip),
        cmocka_unit_test(sampling_tools_bad_answers),
        cmocka_unit_test(sampling_tools_needs_capability),
        cmocka_unit_test(sampling_params_checks),
        cmocka_unit_test(stateless_url_and_sampling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
