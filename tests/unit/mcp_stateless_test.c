/*
 * MCP engine: the stateless 2026-07-28 revision (mcp_handle_stateless):
 * routing rule, per-request _meta, HTTP header/body agreement, error codes
 * and their HTTP statuses, server/discover, resultType and cache hints, the
 * input_required multi-round trip (replay, sealed requestState that any
 * engine with the same key resumes), asynchronous stateless calls in
 * transient sessions, cancellation, and the 2025 session protocol beside it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

#define V "2026-07-28"
#define ALLCAPS "{\"sampling\":{},\"elicitation\":{},\"roots\":{}}"
#define KEY "0123456789abcdef-shared-secret"

/* What the last emit saw of its session (the transient session's id and userdata). */
static char last_sid[128];
static void *last_ud;
static bool last_stateless;

static void rec_emit(void *host, mcp_session *s, const json_t *rel, json_t *msg, bool final)
{
    snprintf(last_sid, sizeof(last_sid), "%s", mcp_session_id(s));
    last_ud = mcp_session_userdata(s);
    last_stateless = mcp_session_is_stateless(s);
    fakehost_emit(host, s, rel, msg, final);
}

static struct mcp_host_ops host_ops;
static int64_t fake_now = 1700000000000;
static int64_t now_fn(void)
{
    return fake_now;
}

static void (*announce_op)(void *host, const char *method, const char *uri);

static mcp_server *new_server(struct fakehost *fh, const char *key)
{
    host_ops = fakehost_ops;
    host_ops.emit = rec_emit;
    host_ops.announce = announce_op;
    char err[256];
    struct mcp_server_opts o = {.packs = "core,conformance"};
    mcp_server *srv = mcp_server_new(&o, &host_ops, fh, err, sizeof(err));
    assert_non_null(srv);
    if (key)
        assert_int_equal(mcp_server_set_state_key(srv, key, strlen(key), err, sizeof(err)), 0);
    struct mcp_stateless_opts so = {.now_ms = now_fn};
    mcp_server_set_stateless_opts(srv, &so);
    return srv;
}

static int setup(void **state)
{
    struct fakeenv *e = calloc(1, sizeof(*e));
    fakehost_init(&e->fh);
    e->srv = new_server(&e->fh, KEY);
    *state = e;
    return 0;
}

/* A 2026-07-28 request: params (JSON text or NULL) plus the _meta envelope
 * with caps (JSON text, NULL = {}). */
static json_t *mkreq(json_int_t id, const char *method, const char *params, const char *caps)
{
    json_t *p = params ? fakehost_parse(params) : json_object();
    json_t *meta = json_object_get(p, "_meta");
    if (!meta) {
        meta = json_object();
        json_object_set_new(p, "_meta", meta);
    }
    json_object_set_new(meta, "io.modelcontextprotocol/protocolVersion", json_string(V));
    json_object_set_new(meta, "io.modelcontextprotocol/clientInfo",
                        json_pack("{s:s,s:s}", "name", "t", "version", "1"));
    json_object_set_new(meta, "io.modelcontextprotocol/clientCapabilities",
                        fakehost_parse(caps ? caps : "{}"));
    return json_pack("{s:s,s:I,s:s,s:o}", "jsonrpc", "2.0", "id", id, "method", method, "params",
                     p);
}

/* The headers a conforming HTTP client sends for msg. */
static struct mcp_stateless_ctx headers_for(const json_t *msg)
{
    struct mcp_stateless_ctx ctx = {.http = true, .protocol_header = V};
    ctx.method_header = json_string_value(json_object_get(msg, "method"));
    const json_t *p = json_object_get(msg, "params");
    ctx.name_header = json_string_value(json_object_get(p, "name"));
    if (!ctx.name_header)
        ctx.name_header = json_string_value(json_object_get(p, "uri"));
    return ctx;
}

/* Handles msg over "HTTP" with correct headers; steals msg. */
static json_t *send_http(mcp_server *srv, json_t *msg, bool *pending)
{
    struct mcp_stateless_ctx ctx = headers_for(msg);
    json_t *r = mcp_handle_stateless(srv, msg, &ctx, pending);
    json_decref(msg);
    return r;
}

static json_t *call(mcp_server *srv, json_int_t id, const char *method, const char *params,
                    const char *caps)
{
    bool pending = true;
    json_t *r = send_http(srv, mkreq(id, method, params, caps), &pending);
    assert_false(pending);
    assert_non_null(r);
    return r;
}

static const json_t *res(const json_t *r)
{
    return json_object_get(r, "result");
}

static const char *result_type(const json_t *r)
{
    return json_string_value(json_object_get(res(r), "resultType"));
}

static const char *state_of(const json_t *r)
{
    return json_string_value(json_object_get(res(r), "requestState"));
}

/* The tools/call params of a retry: name, answers (JSON text), state (may be NULL). */
static char *retry_params(const char *tool, const char *answers, const char *state)
{
    char *p = NULL;
    if (state)
        assert_true(asprintf(&p,
                             "{\"name\":\"%s\",\"arguments\":{},\"inputResponses\":%s,"
                             "\"requestState\":\"%s\"}",
                             tool, answers, state) > 0);
    else
        assert_true(asprintf(&p, "{\"name\":\"%s\",\"arguments\":{},\"inputResponses\":%s}", tool,
                             answers) > 0);
    return p;
}

/* ------------------------------------------------------------ routing -- */

static void routing_rule(void **state)
{
    json_t *legacy = fakehost_parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}");
    json_t *modern = mkreq(1, "tools/list", NULL, NULL);
    assert_true(mcp_is_stateless_request(NULL, "2026-07-28"));
    assert_true(mcp_is_stateless_request(legacy, "2026-07-28")); /* header decides */
    assert_true(mcp_is_stateless_request(legacy, "2027-01-01")); /* later dates too */
    assert_false(mcp_is_stateless_request(legacy, "2025-11-25"));
    assert_false(mcp_is_stateless_request(legacy, NULL));
    assert_false(mcp_is_stateless_request(legacy, "v999.0.0"));
    assert_true(mcp_is_stateless_request(modern, NULL)); /* _meta decides */
    assert_true(mcp_is_stateless_request(modern, "2025-11-25"));
    assert_false(mcp_is_stateless_request(NULL, NULL));
    json_t *init = fakehost_parse("{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
                         "\"protocolVersion\":\"2025-11-25\",\"capabilities\":{}}}");
    assert_false(mcp_is_stateless_request(init, NULL));
    json_decref(init);
    json_decref(legacy);
    json_decref(modern);
}

/* ----------------------------------------------------------- discover -- */

static void discover(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e->srv, 7, "server/discover", NULL, NULL);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 7);
    const json_t *d = res(r);
    assert_string_equal(result_type(r), "complete");
    const json_t *vs = json_object_get(d, "supportedVersions");
    assert_string_equal(json_string_value(json_array_get(vs, 0)), "2026-07-28");
    bool has2025 = false;
    size_t i;
    json_t *v;
    json_array_foreach(vs, i, v) has2025 |= strcmp(json_string_value(v), "2025-11-25") == 0;
    assert_true(has2025);
    const json_t *caps = json_object_get(d, "capabilities");
    assert_true(json_is_object(json_object_get(caps, "tools")));
    assert_true(json_is_object(json_object_get(caps, "resources")));
    assert_true(json_is_object(json_object_get(caps, "prompts")));
    /* subscriptions/listen delivers list changes and resource updates */
    assert_true(json_is_true(json_object_get(json_object_get(caps, "tools"), "listChanged")));
    assert_true(json_is_true(json_object_get(json_object_get(caps, "resources"), "subscribe")));
    assert_true(json_is_string(json_object_get(d, "instructions")));
    assert_int_equal(json_integer_value(json_object_get(d, "ttlMs")), 0);
    assert_string_equal(json_string_value(json_object_get(d, "cacheScope")), "public");
    const json_t *si =
        json_object_get(json_object_get(d, "_meta"), "io.modelcontextprotocol/serverInfo");
    assert_string_equal(json_string_value(json_object_get(si, "name")), "cmcp");
    assert_true(json_is_string(json_object_get(si, "version")));
    assert_int_equal(mcp_stateless_http_status(r), 200);
    assert_int_equal(mcp_stateless_pending(e->srv), 0);
    json_decref(r);
}

/* server/discover is not a 2025 method; initialize is not a 2026 one. */
static void eras_keep_their_methods(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "legacy");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", "{}"));
    json_t *r = fakehost_request(e->srv, s, 2, "server/discover", NULL, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_METHOD_NOT_FOUND);
    json_decref(r);
    r = fakehost_request(e->srv, s, 3, "tools/list", NULL, NULL);
    assert_null(json_object_get(res(r), "resultType")); /* 2025 results are untouched */
    assert_null(json_object_get(res(r), "ttlMs"));
    json_decref(r);
    mcp_session_free(s);

    static const char *const gone[] = {
        "initialize",    "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe",
        "unknown/method"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        r = call(e->srv, 500, gone[i], NULL, NULL);
        assert_int_equal(fakehost_error_code(r), MCP_METHOD_NOT_FOUND);
        assert_int_equal(json_integer_value(json_object_get(r, "id")), 500);
        assert_int_equal(mcp_stateless_http_status(r), 404);
        json_decref(r);
    }
}

/* -------------------------------------------------------------- _meta -- */

static json_t *raw(mcp_server *srv, const char *text, const struct mcp_stateless_ctx *ctx)
{
    json_t *msg = fakehost_parse(text);
    json_t *r = mcp_handle_stateless(srv, msg, ctx, NULL);
    json_decref(msg);
    return r;
}

static void meta_required(void **state)
{
    struct fakeenv *e = *state;
    struct mcp_stateless_ctx ctx = {
        .http = true, .protocol_header = V, .method_header = "server/discover"};
    static const char *const bad[] = {
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{\"_meta\":{"
        "\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{\"_meta\":{"
        "\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{\"_meta\":{"
        "\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
        "\"io.modelcontextprotocol/clientCapabilities\":[]}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{\"_meta\":{"
        "\"io.modelcontextprotocol/protocolVersion\":7,"
        "\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{\"_meta\":{"
        "\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
        "\"io.modelcontextprotocol/clientCapabilities\":{},"
        "\"io.modelcontextprotocol/clientInfo\":\"me\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":{\"_meta\":{"
        "\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
        "\"io.modelcontextprotocol/clientCapabilities\":{},"
        "\"io.modelcontextprotocol/logLevel\":\"loud\"}}}",
        "{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server/discover\",\"params\":[1]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = raw(e->srv, bad[i], &ctx);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        assert_int_equal(json_integer_value(json_object_get(r, "id")), 101);
        assert_int_equal(mcp_stateless_http_status(r), 400);
        json_decref(r);
    }
    /* clientInfo is a SHOULD: a request without it is served. */
    json_t *r = raw(e->srv,
                    "{\"jsonrpc\":\"2.0\",\"id\":105,\"method\":\"server/discover\",\"params\":{"
                    "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
                    "\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
                    &ctx);
    assert_string_equal(result_type(r), "complete");
    json_decref(r);
}

static void unsupported_version(void **state)
{
    struct fakeenv *e = *state;
    struct mcp_stateless_ctx ctx = {
        .http = true, .protocol_header = "v999.0.0", .method_header = "server/discover"};
    json_t *r = raw(e->srv,
                    "{\"jsonrpc\":\"2.0\",\"id\":301,\"method\":\"server/discover\",\"params\":{"
                    "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"v999.0.0\","
                    "\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
                    &ctx);
    assert_int_equal(fakehost_error_code(r), MCP_UNSUPPORTED_VERSION);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 301);
    const json_t *data = json_object_get(json_object_get(r, "error"), "data");
    assert_string_equal(json_string_value(json_object_get(data, "requested")), "v999.0.0");
    assert_string_equal(json_string_value(json_array_get(json_object_get(data, "supported"), 0)),
                        "2026-07-28");
    assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);
    /* A legacy version in _meta is not served statelessly either. */
    ctx.protocol_header = "2025-11-25";
    r = raw(e->srv,
            "{\"jsonrpc\":\"2.0\",\"id\":302,\"method\":\"tools/list\",\"params\":{\"_meta\":{"
            "\"io.modelcontextprotocol/protocolVersion\":\"2025-11-25\","
            "\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
            &(struct mcp_stateless_ctx){
                .http = true, .protocol_header = "2025-11-25", .method_header = "tools/list"});
    assert_int_equal(fakehost_error_code(r), MCP_UNSUPPORTED_VERSION);
    json_decref(r);
}

/* ------------------------------------------------------------ headers -- */

static int header_code(mcp_server *srv, const char *method, const char *params,
                       struct mcp_stateless_ctx ctx)
{
    json_t *msg = mkreq(9, method, params, NULL);
    json_t *r = mcp_handle_stateless(srv, msg, &ctx, NULL);
    json_decref(msg);
    int code = fakehost_error_code(r);
    if (code)
        assert_int_equal(json_integer_value(json_object_get(r, "id")), 9);
    if (code == MCP_HEADER_MISMATCH)
        assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);
    return code;
}

static void headers_match_body(void **state)
{
    struct fakeenv *e = *state;
    const char *echo = "{\"name\":\"echo\",\"arguments\":{\"text\":\"hi\"}}";
    struct mcp_stateless_ctx ok = {
        .http = true, .protocol_header = V, .method_header = "tools/call", .name_header = "echo"};
    assert_int_equal(header_code(e->srv, "tools/call", echo, ok), 0);
    struct mcp_stateless_ctx c = ok;
    c.protocol_header = NULL;
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.protocol_header = "2025-11-25";
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.method_header = NULL;
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.method_header = "TOOLS/CALL"; /* values are case-sensitive */
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.method_header = "prompts/list";
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.name_header = NULL;
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.name_header = "wrong_tool_name";
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c = ok;
    c.name_header = "=?base64?ZWNobw==?="; /* "echo" */
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), 0);
    c.name_header = "=?base64?ZWN!!obw==?=";
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c.name_header = "=?base64?ZWNobw?="; /* padding missing */
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    c.name_header = "=?base64?ZWNobw=="; /* no closing marker: a literal, which differs */
    assert_int_equal(header_code(e->srv, "tools/call", echo, c), MCP_HEADER_MISMATCH);
    /* resources/read mirrors the uri; methods without a name need none. */
    struct mcp_stateless_ctx rd = {.http = true,
                                   .protocol_header = V,
                                   .method_header = "resources/read",
                                   .name_header = "test://static-text"};
    assert_int_equal(header_code(e->srv, "resources/read", "{\"uri\":\"test://static-text\"}", rd),
                     0);
    rd.name_header = "test://static-binary";
    assert_int_equal(header_code(e->srv, "resources/read", "{\"uri\":\"test://static-text\"}", rd),
                     MCP_HEADER_MISMATCH);
    struct mcp_stateless_ctx list = {
        .http = true, .protocol_header = V, .method_header = "tools/list"};
    assert_int_equal(header_code(e->srv, "tools/list", NULL, list), 0);
    /* Not HTTP (stdio, TCP): no headers to check. */
    struct mcp_stateless_ctx stdio = {0};
    assert_int_equal(header_code(e->srv, "tools/call", echo, stdio), 0);
}

/* SEP-2243: arguments a tool marks "x-mcp-header" are mirrored in Mcp-Param-* headers. */
static void param_headers_match_arguments(void **state)
{
    struct fakeenv *e = *state;
    const char *call = "{\"name\":\"test_custom_header\",\"arguments\":{\"region\":\"Hello\"}}";
    json_t *mp = json_pack("{s:s}", "region", "Hello");
    struct mcp_stateless_ctx ok = {.http = true,
                                   .protocol_header = V,
                                   .method_header = "tools/call",
                                   .name_header = "test_custom_header",
                                   .param_headers = mp};
    assert_int_equal(header_code(e->srv, "tools/call", call, ok), 0);
    json_object_set_new(mp, "region", json_string("=?base64?SGVsbG8=?=")); /* "Hello" */
    assert_int_equal(header_code(e->srv, "tools/call", call, ok), 0);
    json_object_set_new(mp, "region", json_string("=?base64?SGVsbG8?=")); /* padding missing */
    assert_int_equal(header_code(e->srv, "tools/call", call, ok), MCP_HEADER_MISMATCH);
    json_object_set_new(mp, "region", json_string("=?base64?SGVs!!!bG8=?="));
    assert_int_equal(header_code(e->srv, "tools/call", call, ok), MCP_HEADER_MISMATCH);
    json_object_set_new(mp, "region", json_string("Goodbye"));
    assert_int_equal(header_code(e->srv, "tools/call", call, ok), MCP_HEADER_MISMATCH);
    /* a value without the closing marker is a literal: it must equal the body as is */
    const char *lit = "{\"name\":\"test_custom_header\",\"arguments\":{\"region\":"
                      "\"=?base64?SGVsbG8=\"}}";
    json_object_set_new(mp, "region", json_string("=?base64?SGVsbG8="));
    assert_int_equal(header_code(e->srv, "tools/call", lit, ok), 0);
    /* the header left out while the body has the argument */
    struct mcp_stateless_ctx none = ok;
    none.param_headers = NULL;
    assert_int_equal(header_code(e->srv, "tools/call", call, none), MCP_HEADER_MISMATCH);
    /* an argument not given needs no header; a tool without marks needs none */
    assert_int_not_equal(header_code(e->srv, "tools/call",
                                     "{\"name\":\"test_custom_header\",\"arguments\":{}}",
                                     none),
                         MCP_HEADER_MISMATCH);
    struct mcp_stateless_ctx echo = {.http = true,
                                     .protocol_header = V,
                                     .method_header = "tools/call",
                                     .name_header = "echo"};
    assert_int_equal(
        header_code(e->srv, "tools/call", "{\"name\":\"echo\",\"arguments\":{\"text\":\"hi\"}}",
                    echo),
        0);
    json_decref(mp);
}

/* ------------------------------------------------------------ results -- */

static void results_carry_result_type(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e->srv, 1, "tools/list", NULL, NULL);
    assert_string_equal(result_type(r), "complete");
    assert_true(json_array_size(json_object_get(res(r), "tools")) > 10);
    assert_string_equal(json_string_value(json_object_get(res(r), "cacheScope")), "public");
    assert_true(json_is_integer(json_object_get(res(r), "ttlMs")));
    json_decref(r);

    r = call(e->srv, 2, "tools/call", "{\"name\":\"echo\",\"arguments\":{\"text\":\"hi\"}}", NULL);
    assert_string_equal(result_type(r), "complete");
    assert_string_equal(fakehost_text(r, 0), "hi");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(res(r), "structuredContent"), "text")),
        "hi");
    assert_non_null(
        json_object_get(json_object_get(res(r), "_meta"), "io.modelcontextprotocol/serverInfo"));
    assert_null(json_object_get(res(r), "ttlMs")); /* tools/call is not cacheable */
    json_decref(r);

    static const char *const lists[] = {"prompts/list", "resources/list",
                                        "resources/templates/list"};
    for (size_t i = 0; i < 3; i++) {
        r = call(e->srv, 3, lists[i], NULL, NULL);
        assert_string_equal(result_type(r), "complete");
        assert_string_equal(json_string_value(json_object_get(res(r), "cacheScope")), "public");
        json_decref(r);
    }
    r = call(e->srv, 4, "resources/read", "{\"uri\":\"test://static-text\"}", NULL);
    assert_string_equal(result_type(r), "complete");
    assert_string_equal(json_string_value(json_object_get(res(r), "cacheScope")), "private");
    json_decref(r);
    r = call(e->srv, 5, "prompts/get", "{\"name\":\"test_simple_prompt\"}", NULL);
    assert_string_equal(result_type(r), "complete");
    json_decref(r);
    r = call(e->srv, 6, "completion/complete",
             "{\"ref\":{\"type\":\"ref/prompt\",\"name\":\"test_prompt_with_arguments\"},"
             "\"argument\":{\"name\":\"arg1\",\"value\":\"pa\"}}",
             NULL);
    assert_string_equal(result_type(r), "complete");
    json_decref(r);

    /* Tool input errors stay isError results; unknown tools are -32602 (400). */
    r = call(e->srv, 7, "tools/call", "{\"name\":\"add\",\"arguments\":{\"a\":\"x\"}}", NULL);
    assert_true(fakehost_is_error(r));
    assert_int_equal(mcp_stateless_http_status(r), 200);
    json_decref(r);
    r = call(e->srv, 8, "tools/call", "{\"name\":\"nope\",\"arguments\":{}}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);
}

static void ttl_options(void **state)
{
    struct fakeenv *e = *state;
    struct mcp_stateless_opts so = {.list_ttl_ms = 60000, .read_ttl_ms = 5000, .now_ms = now_fn};
    mcp_server_set_stateless_opts(e->srv, &so);
    json_t *r = call(e->srv, 1, "tools/list", NULL, NULL);
    assert_int_equal(json_integer_value(json_object_get(res(r), "ttlMs")), 60000);
    json_decref(r);
    r = call(e->srv, 2, "resources/read", "{\"uri\":\"test://static-text\"}", NULL);
    assert_int_equal(json_integer_value(json_object_get(res(r), "ttlMs")), 5000);
    json_decref(r);
}

static void resource_not_found_is_invalid_params(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e->srv, 1, "resources/read",
                     "{\"uri\":\"test://nonexistent-resource-for-conformance-testing\"}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(r, "error"), "data"), "uri")),
                        "test://nonexistent-resource-for-conformance-testing");
    json_decref(r);
}

static void wrong_shapes(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = raw(e->srv, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}]", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);
    r = raw(e->srv, "{\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"result\":{}}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    r = raw(e->srv, "{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"tools/list\"}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_REQUEST);
    json_decref(r);
    /* Notifications are accepted and ignored (HTTP 202). */
    r = raw(e->srv, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{}}",
            NULL);
    assert_null(r);
    assert_int_equal(mcp_stateless_http_status(NULL), 202);
    bool pending = true;
    r = mcp_handle_stateless_text(e->srv, "{nope", 5, NULL, &pending);
    assert_false(pending);
    assert_int_equal(fakehost_error_code(r), MCP_PARSE_ERROR);
    assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);
    const char *ok = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server/discover\",\"params\":{"
                     "\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\","
                     "\"io.modelcontextprotocol/clientCapabilities\":{}}}}";
    r = mcp_handle_stateless_text(e->srv, ok, strlen(ok), NULL, NULL);
    assert_string_equal(result_type(r), "complete");
    json_decref(r);
}

static void http_statuses(void **state)
{
    static const struct {
        int code, status;
    } map[] = {
        {MCP_PARSE_ERROR, 400},        {MCP_INVALID_REQUEST, 400},     {MCP_METHOD_NOT_FOUND, 404},
        {MCP_INVALID_PARAMS, 400},     {MCP_INTERNAL_ERROR, 200},      {MCP_HEADER_MISMATCH, 400},
        {MCP_MISSING_CAPABILITY, 400}, {MCP_UNSUPPORTED_VERSION, 400}, {-32000, 200}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        json_t *r = mcp_error_response(NULL, map[i].code, "x", NULL);
        assert_int_equal(mcp_stateless_http_status(r), map[i].status);
        json_decref(r);
    }
    json_t *ok = fakehost_parse("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}");
    assert_int_equal(mcp_stateless_http_status(ok), 200);
    json_decref(ok);
}

/* ---------------------------------------------------- input_required -- */

static void elicitation_round_trip(void **state)
{
    struct fakeenv *e = *state;
    json_t *r1 =
        call(e->srv, 1, "tools/call",
             "{\"name\":\"test_elicitation\",\"arguments\":{\"message\":\"Who?\"}}", ALLCAPS);
    assert_string_equal(result_type(r1), "input_required");
    assert_int_equal(mcp_stateless_http_status(r1), 200);
    const json_t *ir = json_object_get(res(r1), "inputRequests");
    assert_int_equal(json_object_size(ir), 1);
    const json_t *q = json_object_get(ir, "elicitation-1");
    assert_non_null(q);
    assert_string_equal(json_string_value(json_object_get(q, "method")), "elicitation/create");
    const json_t *qp = json_object_get(q, "params");
    assert_string_equal(json_string_value(json_object_get(qp, "message")), "Who?");
    assert_string_equal(json_string_value(json_object_get(qp, "mode")), "form");
    assert_non_null(json_object_get(qp, "requestedSchema"));
    assert_non_null(state_of(r1));
    assert_null(json_object_get(res(r1), "ttlMs")); /* interim results are not cacheable */
    assert_non_null(
        json_object_get(json_object_get(res(r1), "_meta"), "io.modelcontextprotocol/serverInfo"));
    /* Nothing was emitted: no server->client request on any stream. */
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);

    char *p = NULL;
    assert_true(
        asprintf(&p,
                 "{\"name\":\"test_elicitation\",\"arguments\":{\"message\":\"Who?\"},"
                 "\"inputResponses\":{\"elicitation-1\":{\"action\":\"accept\",\"content\":{"
                 "\"username\":\"alice\",\"email\":\"a@example.com\"}}},\"requestState\":\"%s\"}",
                 state_of(r1)) > 0);
    json_t *r2 = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r2), "complete");
    assert_false(fakehost_is_error(r2));
    assert_string_equal(fakehost_text(r2, 0),
                        "User response: action=accept, content={\"username\":\"alice\",\"email\":"
                        "\"a@example.com\"}");
    assert_int_equal(json_integer_value(json_object_get(r2, "id")), 2);
    json_decref(r1);
    json_decref(r2);
    assert_int_equal(mcp_stateless_pending(e->srv), 0);
}

static void sampling_and_roots_round_trips(void **state)
{
    struct fakeenv *e = *state;
    json_t *r1 =
        call(e->srv, 1, "tools/call",
             "{\"name\":\"test_input_required_result_sampling\",\"arguments\":{}}", ALLCAPS);
    const json_t *q =
        json_object_get(json_object_get(res(r1), "inputRequests"), "capital_question");
    assert_string_equal(json_string_value(json_object_get(q, "method")), "sampling/createMessage");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(q, "params"), "maxTokens")),
                     100);
    char *p = retry_params("test_input_required_result_sampling",
                           "{\"capital_question\":{\"role\":\"assistant\",\"content\":{\"type\":"
                           "\"text\",\"text\":\"Paris\"},\"model\":\"m\",\"stopReason\":"
                           "\"endTurn\"}}",
                           state_of(r1));
    json_t *r2 = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(fakehost_text(r2, 0), "LLM response: Paris");
    json_decref(r1);
    json_decref(r2);

    r1 = call(e->srv, 3, "tools/call",
              "{\"name\":\"test_input_required_result_list_roots\",\"arguments\":{}}", ALLCAPS);
    q = json_object_get(json_object_get(res(r1), "inputRequests"), "client_roots");
    assert_string_equal(json_string_value(json_object_get(q, "method")), "roots/list");
    p = retry_params("test_input_required_result_list_roots",
                     "{\"client_roots\":{\"roots\":[{\"uri\":\"file:///test/root\",\"name\":"
                     "\"Test Root\"}]}}",
                     state_of(r1));
    r2 = call(e->srv, 4, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(fakehost_text(r2, 0), "Client roots: file:///test/root");
    json_decref(r1);
    json_decref(r2);
}

/* Answers without a requestState are taken at face value (the basic flow). */
static void answers_without_state(void **state)
{
    struct fakeenv *e = *state;
    char *p =
        retry_params("test_input_required_result_elicitation",
                     "{\"user_name\":{\"action\":\"accept\",\"content\":{\"name\":\"Alice\"}},"
                     "\"unknown_extra_key\":{\"action\":\"accept\",\"content\":{\"foo\":"
                     "\"bar\"}},\"another_unexpected\":{\"action\":\"accept\"}}",
                     NULL);
    json_t *r = call(e->srv, 1, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r), "complete");
    assert_string_equal(fakehost_text(r, 0), "Hello, Alice!");
    json_decref(r);
    /* The wrong key: asked again, not an error. */
    p = retry_params("test_input_required_result_elicitation",
                     "{\"wrong_key\":{\"action\":\"accept\",\"content\":{\"data\":\"wrong\"}}}",
                     NULL);
    r = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r), "input_required");
    assert_non_null(json_object_get(json_object_get(res(r), "inputRequests"), "user_name"));
    json_decref(r);
}

static void invalid_answers(void **state)
{
    struct fakeenv *e = *state;
    static const char *const bad[] = {
        "{\"user_name\":12345}",
        "null",
        "[1]",
        "\"x\"",
        "{\"user_name\":{\"action\":\"maybe\"}}",
        "{\"user_name\":{\"action\":\"accept\",\"content\":7}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *p = retry_params("test_input_required_result_elicitation", bad[i], NULL);
        json_t *r = call(e->srv, 1, "tools/call", p, ALLCAPS);
        free(p);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        assert_int_equal(mcp_stateless_http_status(r), 400);
        json_decref(r);
    }
    /* A sampling answer must look like a CreateMessageResult. */
    char *p = retry_params("test_input_required_result_sampling",
                           "{\"capital_question\":{\"text\":\"Paris\"}}", NULL);
    json_t *r = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
}

static void multi_round(void **state)
{
    struct fakeenv *e = *state;
    const char *tool = "test_input_required_result_multi_round";
    json_t *r1 =
        call(e->srv, 1, "tools/call",
             "{\"name\":\"test_input_required_result_multi_round\",\"arguments\":{}}", ALLCAPS);
    assert_non_null(json_object_get(json_object_get(res(r1), "inputRequests"), "step1"));
    char *p = retry_params(
        tool, "{\"step1\":{\"action\":\"accept\",\"content\":{\"name\":\"Alice\"}}}", state_of(r1));
    json_t *r2 = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r2), "input_required");
    const json_t *ir2 = json_object_get(res(r2), "inputRequests");
    assert_int_equal(json_object_size(ir2), 1);
    assert_non_null(json_object_get(ir2, "step2"));
    assert_string_not_equal(state_of(r1), state_of(r2));
    /* Round 3 carries only step2: step1 comes back out of the requestState. */
    p = retry_params(tool, "{\"step2\":{\"action\":\"accept\",\"content\":{\"color\":\"blue\"}}}",
                     state_of(r2));
    json_t *r3 = call(e->srv, 3, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r3), "complete");
    assert_string_equal(fakehost_text(r3, 0), "Hello Alice, your favorite color is blue.");
    /* The round-1 state lacks step1's answer: with only step2 it asks step1 again. */
    p = retry_params(tool, "{\"step2\":{\"action\":\"accept\",\"content\":{\"color\":\"blue\"}}}",
                     state_of(r1));
    json_t *r4 = call(e->srv, 4, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r4), "input_required");
    assert_non_null(json_object_get(json_object_get(res(r4), "inputRequests"), "step1"));
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    json_decref(r4);
}

static void multiple_inputs(void **state)
{
    struct fakeenv *e = *state;
    const char *tool = "test_input_required_result_multiple_inputs";
    json_t *r1 =
        call(e->srv, 1, "tools/call",
             "{\"name\":\"test_input_required_result_multiple_inputs\",\"arguments\":{}}", ALLCAPS);
    const json_t *ir = json_object_get(res(r1), "inputRequests");
    assert_int_equal(json_object_size(ir), 3);
    assert_non_null(json_object_get(ir, "user_name"));
    assert_non_null(json_object_get(ir, "greeting"));
    assert_non_null(json_object_get(ir, "client_roots"));
    /* Two of three: the third is asked again, with a new state. */
    char *p =
        retry_params(tool,
                     "{\"user_name\":{\"action\":\"accept\",\"content\":{\"name\":\"Alice\"}},"
                     "\"client_roots\":{\"roots\":[]}}",
                     state_of(r1));
    json_t *r2 = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r2), "input_required");
    ir = json_object_get(res(r2), "inputRequests");
    assert_int_equal(json_object_size(ir), 1);
    assert_non_null(json_object_get(ir, "greeting"));
    p = retry_params(tool,
                     "{\"greeting\":{\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
                     "\"text\":\"Hi!\"}],\"model\":\"m\"}}",
                     state_of(r2));
    json_t *r3 = call(e->srv, 3, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(fakehost_text(r3, 0),
                        "All inputs received: name=Alice, greeting=Hi!, roots=");
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
}

static void request_state_verified(void **state)
{
    struct fakeenv *e = *state;
    const char *tool = "test_input_required_result_request_state";
    json_t *r1 =
        call(e->srv, 1, "tools/call",
             "{\"name\":\"test_input_required_result_request_state\",\"arguments\":{}}", ALLCAPS);
    assert_non_null(state_of(r1));
    const char *ans = "{\"confirm\":{\"action\":\"accept\",\"content\":{\"ok\":true}}}";
    char *p = retry_params(tool, ans, state_of(r1));
    json_t *r2 = call(e->srv, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_non_null(strstr(fakehost_text(r2, 0), "state-ok"));
    json_decref(r2);

    /* Tampered, truncated, foreign: -32602 and never a result. */
    char *tampered = NULL;
    assert_true(asprintf(&tampered, "%s-TAMPERED", state_of(r1)) > 0);
    char *flipped = strdup(state_of(r1));
    flipped[strlen(flipped) / 2] = flipped[strlen(flipped) / 2] == 'A' ? 'B' : 'A';
    const char *const bad[] = {tampered, flipped, "1.AAAA", "garbage", "2.xyz"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = retry_params(tool, ans, bad[i]);
        json_t *r = call(e->srv, 3, "tools/call", p, ALLCAPS);
        free(p);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        json_decref(r);
    }
    free(tampered);
    free(flipped);

    /* A state is bound to its tool and arguments. */
    p = retry_params("test_input_required_result_tampered_state", ans, state_of(r1));
    json_t *r = call(e->srv, 4, "tools/call", p, ALLCAPS);
    free(p);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
               "another request"));
    json_decref(r);

    /* ... and expires. */
    fake_now += 600001;
    p = retry_params(tool, ans, state_of(r1));
    r = call(e->srv, 5, "tools/call", p, ALLCAPS);
    free(p);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    assert_non_null(strstr(
        json_string_value(json_object_get(json_object_get(r, "error"), "message")), "expired"));
    json_decref(r);
    json_decref(r1);
}

/* Any engine with the same key resumes; another key refuses. */
static void any_shard_resumes(void **state)
{
    struct fakeenv *e = *state;
    struct fakehost fh2, fh3;
    fakehost_init(&fh2);
    fakehost_init(&fh3);
    mcp_server *other = new_server(&fh2, KEY);
    mcp_server *stranger = new_server(&fh3, "another-secret-of-enough-length");
    const char *tool = "test_input_required_result_multi_round";
    json_t *r1 =
        call(e->srv, 1, "tools/call",
             "{\"name\":\"test_input_required_result_multi_round\",\"arguments\":{}}", ALLCAPS);
    char *p = retry_params(
        tool, "{\"step1\":{\"action\":\"accept\",\"content\":{\"name\":\"Bo\"}}}", state_of(r1));
    json_t *r2 = call(other, 2, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r2), "input_required");
    p = retry_params(tool, "{\"step2\":{\"action\":\"accept\",\"content\":{\"color\":\"red\"}}}",
                     state_of(r2));
    json_t *r3 = call(e->srv, 3, "tools/call", p, ALLCAPS);
    json_t *r4 = call(stranger, 4, "tools/call", p, ALLCAPS);
    free(p);
    assert_string_equal(fakehost_text(r3, 0), "Hello Bo, your favorite color is red.");
    assert_int_equal(fakehost_error_code(r4), MCP_INVALID_PARAMS);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
    json_decref(r4);
    mcp_server_free(other);
    mcp_server_free(stranger);
    fakehost_fini(&fh2);
    fakehost_fini(&fh3);
    char err[128];
    assert_int_equal(mcp_server_set_state_key(e->srv, "short", 5, err, sizeof(err)), -1);
}

/* A state issued to one principal is refused for another. */
static void state_bound_to_principal(void **state)
{
    struct fakeenv *e = *state;
    json_t *msg =
        mkreq(1, "tools/call",
              "{\"name\":\"test_input_required_result_elicitation\",\"arguments\":{}}", ALLCAPS);
    struct mcp_stateless_ctx ctx = headers_for(msg);
    ctx.principal = "alice";
    json_t *r1 = mcp_handle_stateless(e->srv, msg, &ctx, NULL);
    json_decref(msg);
    char *p = retry_params("test_input_required_result_elicitation",
                           "{\"user_name\":{\"action\":\"accept\",\"content\":{\"name\":\"A\"}}}",
                           state_of(r1));
    msg = mkreq(2, "tools/call", p, ALLCAPS);
    ctx = headers_for(msg);
    ctx.principal = "mallory";
    json_t *r2 = mcp_handle_stateless(e->srv, msg, &ctx, NULL);
    assert_int_equal(fakehost_error_code(r2), MCP_INVALID_PARAMS);
    ctx.principal = "alice";
    json_t *r3 = mcp_handle_stateless(e->srv, msg, &ctx, NULL);
    assert_string_equal(fakehost_text(r3, 0), "Hello, A!");
    json_decref(msg);
    free(p);
    json_decref(r1);
    json_decref(r2);
    json_decref(r3);
}

static void capabilities_respected(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e->srv, 401, "tools/call",
                     "{\"name\":\"test_missing_capability\",\"arguments\":{}}", "{}");
    assert_int_equal(fakehost_error_code(r), MCP_MISSING_CAPABILITY);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), 401);
    const json_t *need = json_object_get(json_object_get(json_object_get(r, "error"), "data"),
                                         "requiredCapabilities");
    assert_true(json_is_object(json_object_get(need, "sampling")));
    assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);
    /* The 2025 tools too: test_sampling without sampling. */
    r = call(e->srv, 402, "tools/call",
             "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"x\"}}",
             "{\"elicitation\":{}}");
    assert_int_equal(fakehost_error_code(r), MCP_MISSING_CAPABILITY);
    json_decref(r);
    /* Only what was declared is asked. */
    r = call(e->srv, 403, "tools/call",
             "{\"name\":\"test_input_required_result_capabilities\",\"arguments\":{}}",
             "{\"sampling\":{}}");
    const json_t *ir = json_object_get(res(r), "inputRequests");
    assert_int_equal(json_object_size(ir), 1);
    assert_non_null(json_object_get(ir, "greeting"));
    json_decref(r);
    /* With sampling, test_missing_capability asks (auto key). */
    r = call(e->srv, 404, "tools/call", "{\"name\":\"test_missing_capability\",\"arguments\":{}}",
             "{\"sampling\":{}}");
    assert_non_null(json_object_get(json_object_get(res(r), "inputRequests"), "sampling-1"));
    json_decref(r);
}

static void prompt_round_trip(void **state)
{
    struct fakeenv *e = *state;
    json_t *r1 =
        call(e->srv, 1, "prompts/get", "{\"name\":\"test_input_required_result_prompt\"}", ALLCAPS);
    assert_string_equal(result_type(r1), "input_required");
    assert_non_null(json_object_get(json_object_get(res(r1), "inputRequests"), "user_context"));
    assert_null(json_object_get(res(r1), "messages"));
    char *p = NULL;
    assert_true(asprintf(&p,
                         "{\"name\":\"test_input_required_result_prompt\",\"inputResponses\":{"
                         "\"user_context\":{\"action\":\"accept\",\"content\":{\"context\":"
                         "\"tests\"}}},\"requestState\":\"%s\"}",
                         state_of(r1)) > 0);
    json_t *r2 = call(e->srv, 2, "prompts/get", p, ALLCAPS);
    free(p);
    assert_string_equal(result_type(r2), "complete");
    const json_t *msg0 = json_array_get(json_object_get(res(r2), "messages"), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(msg0, "content"), "text")),
        "Answer using this context: tests");
    json_decref(r1);
    json_decref(r2);
}

/* A custom tool: lists may not ask (tools/list is not a MRTR method) and keys are checked. */
static int ask_rv[4];
static void noop_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    mcp_call_return_text(c, false, "answered");
}
static void keys_tool(mcp_call *c, const json_t *args, void *ud)
{
    ask_rv[0] = mcp_call_request_keyed(c, "bad key!", "roots/list", NULL, 0, noop_reply, NULL);
    ask_rv[1] = mcp_call_request_keyed(c, "k", "roots/list", NULL, 0, noop_reply, NULL);
    ask_rv[2] = mcp_call_request_keyed(c, "k", "roots/list", NULL, 0, noop_reply, NULL);
    ask_rv[3] = mcp_call_request(c, "roots/list", NULL, 0, noop_reply, NULL);
}

static void request_keys(void **state)
{
    struct fakeenv *e = *state;
    char err[128];
    struct mcp_tool_def def = {.name = "keys", .description = "asks", .run = keys_tool};
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), 0);
    json_t *r = call(e->srv, 1, "tools/call", "{\"name\":\"keys\"}", ALLCAPS);
    assert_int_equal(ask_rv[0], -EINVAL);
    assert_int_equal(ask_rv[1], 0);
    assert_int_equal(ask_rv[2], -EEXIST);
    assert_int_equal(ask_rv[3], 0);
    const json_t *ir = json_object_get(res(r), "inputRequests");
    assert_int_equal(json_object_size(ir), 2);
    assert_non_null(json_object_get(ir, "k"));
    assert_non_null(json_object_get(ir, "roots-1"));
    json_decref(r);
}

/* ------------------------------------------------------- asynchronous -- */

static void async_call_in_transient_session(void **state)
{
    struct fakeenv *e = *state;
    json_t *msg = mkreq(11, "tools/call",
                        "{\"name\":\"test_tool_with_progress\",\"arguments\":{},\"_meta\":{"
                        "\"progressToken\":\"p1\"}}",
                        NULL);
    struct mcp_stateless_ctx ctx = headers_for(msg);
    ctx.key = "L0-42";
    int ud;
    ctx.userdata = &ud;
    bool pending = false;
    json_t *r = mcp_handle_stateless(e->srv, msg, &ctx, &pending);
    json_decref(msg);
    assert_null(r);
    assert_true(pending);
    assert_int_equal(mcp_stateless_pending(e->srv), 1);
    fakehost_advance(&e->fh, 1000);
    assert_int_equal(mcp_stateless_pending(e->srv), 0);
    assert_string_equal(last_sid, "L0-42");
    assert_ptr_equal(last_ud, &ud);
    assert_true(last_stateless);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 4); /* 3 progress, 1 final */
    const json_t *fin = json_array_get(em, 3);
    assert_true(json_is_true(json_object_get(fin, "final")));
    const json_t *resp = json_object_get(fin, "msg");
    assert_int_equal(json_integer_value(json_object_get(resp, "id")), 11);
    assert_string_equal(result_type(resp), "complete");
    assert_string_equal(fakehost_text(resp, 0), "Tool with progress executed successfully");
    json_decref(em);
}

/* No logLevel: no notifications/message; with one: filtered by it. */
static void log_level_per_request(void **state)
{
    struct fakeenv *e = *state;
    json_t *r =
        call(e->srv, 1, "tools/call", "{\"name\":\"test_logging_tool\",\"arguments\":{}}", NULL);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    json_decref(r);
    r = call(e->srv, 2, "tools/call",
             "{\"name\":\"test_logging_tool\",\"arguments\":{},\"_meta\":{"
             "\"io.modelcontextprotocol/logLevel\":\"info\"}}",
             NULL);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_array_get(em, 0), "msg"), "method")),
        "notifications/message");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(em, 0), "rel")), 2);
    json_decref(em);
    json_decref(r);
    r = call(e->srv, 3, "tools/call",
             "{\"name\":\"test_logging_tool\",\"arguments\":{},\"_meta\":{"
             "\"io.modelcontextprotocol/logLevel\":\"error\"}}",
             NULL);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    json_decref(r);
}

static void cancel(void **state)
{
    struct fakeenv *e = *state;
    json_t *msg = mkreq(12, "tools/call", "{\"name\":\"sleep\",\"arguments\":{\"ms\":5000}}", NULL);
    struct mcp_stateless_ctx ctx = headers_for(msg);
    ctx.key = "L1-7";
    bool pending = false;
    assert_null(mcp_handle_stateless(e->srv, msg, &ctx, &pending));
    json_decref(msg);
    assert_true(pending);
    assert_int_equal(mcp_stateless_cancel(e->srv, "L1-8"), -1);
    assert_int_equal(mcp_stateless_cancel(e->srv, "L1-7"), 0);
    assert_int_equal(mcp_stateless_pending(e->srv), 0);
    assert_int_equal(fakehost_live_timers(&e->fh), 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_true(json_is_true(json_object_get(json_array_get(em, 0), "final")));
    assert_true(json_is_null(json_object_get(json_array_get(em, 0), "msg")));
    json_decref(em);
    assert_int_equal(mcp_stateless_cancel(e->srv, "L1-7"), -1);
    /* A pending call still there when the server goes is freed with it (ASan checks). */
    msg = mkreq(13, "tools/call", "{\"name\":\"sleep\",\"arguments\":{\"ms\":5000}}", NULL);
    ctx = headers_for(msg);
    ctx.key = "L1-9";
    assert_null(mcp_handle_stateless(e->srv, msg, &ctx, &pending));
    json_decref(msg);
    assert_int_equal(mcp_stateless_pending(e->srv), 1);
}

/* The method of emitted record i (NULL past the end). */
static const char *emitted_method(const json_t *em, size_t i)
{
    return json_string_value(
        json_object_get(json_object_get(json_array_get(em, i), "msg"), "method"));
}

static const json_t *emitted_params(const json_t *em, size_t i)
{
    return json_object_get(json_object_get(json_array_get(em, i), "msg"), "params");
}

/* subscriptions/listen: ack, then only what the filter names, stamped with the listen id;
 * a 2025 session's change reaches it; cancelling ends it with no response. */
static void listen_stream(void **state)
{
    struct fakeenv *e = *state;
    bool pending = false;
    json_t *bad =
        mkreq(20, "subscriptions/listen", "{\"notifications\":{\"toolsListChanged\":1}}", NULL);
    json_t *r = send_http(e->srv, bad, &pending);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    json_t *msg =
        mkreq(21, "subscriptions/listen",
              "{\"notifications\":{\"toolsListChanged\":true,\"promptsListChanged\":false,"
              "\"resourceSubscriptions\":[\"test://watched-resource\"]}}",
              NULL);
    struct mcp_stateless_ctx ctx = headers_for(msg);
    ctx.key = "L2-1";
    assert_null(mcp_handle_stateless(e->srv, msg, &ctx, &pending));
    json_decref(msg);
    assert_true(pending);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_string_equal(emitted_method(em, 0), "notifications/subscriptions/acknowledged");
    const json_t *p = emitted_params(em, 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(p, "_meta"),
                                                        "io.modelcontextprotocol/subscriptionId")),
                     21);
    json_t *want = json_pack("{s:b,s:[s]}", "toolsListChanged", 1, "resourceSubscriptions",
                             "test://watched-resource");
    assert_true(json_equal(json_object_get(p, "notifications"), want));
    json_decref(want);
    json_decref(em);

    /* a 2025 session toggles a tool and touches the watched resource */
    mcp_session *s = mcp_session_new(e->srv, "legacy");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", "{}"));
    json_decref(fakehost_take(&e->fh));
    r = fakehost_request(e->srv, s, 2, "tools/call", "{\"name\":\"test_toggle_dynamic_tool\"}",
                         NULL);
    assert_false(fakehost_is_error(r));
    json_decref(r);
    mcp_server_resource_updated(e->srv, "test://other");
    r = fakehost_request(e->srv, s, 3, "tools/call", "{\"name\":\"test_update_watched_resource\"}",
                         NULL);
    json_decref(r);
    em = fakehost_take(&e->fh);
    /* the session's own list_changed, then the stream's; no update for test://other */
    int tools = 0, updated = 0;
    for (size_t i = 0; i < json_array_size(em); i++) {
        const char *m = emitted_method(em, i);
        const json_t *meta = json_object_get(emitted_params(em, i), "_meta");
        const json_t *sub = json_object_get(meta, "io.modelcontextprotocol/subscriptionId");
        if (!sub)
            continue; /* the 2025 session's copy */
        assert_int_equal(json_integer_value(sub), 21);
        if (strcmp(m, "notifications/tools/list_changed") == 0)
            tools++;
        else if (strcmp(m, "notifications/resources/updated") == 0 &&
                 strcmp(json_string_value(json_object_get(emitted_params(em, i), "uri")),
                        "test://watched-resource") == 0)
            updated++;
        else
            fail_msg("unexpected %s on the listen stream", m);
    }
    assert_int_equal(tools, 1);
    assert_int_equal(updated, 1);
    json_decref(em);

    assert_int_equal(mcp_stateless_pending(e->srv), 1);
    assert_int_equal(mcp_stateless_cancel(e->srv, "L2-1"), 0);
    assert_int_equal(mcp_stateless_pending(e->srv), 0);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    assert_true(json_is_null(json_object_get(json_array_get(em, 0), "msg")));
    json_decref(em);
    /* nothing reaches a cancelled stream */
    r = fakehost_request(e->srv, s, 4, "tools/call", "{\"name\":\"test_toggle_dynamic_tool\"}",
                         NULL);
    json_decref(r);
    em = fakehost_take(&e->fh);
    for (size_t i = 0; i < json_array_size(em); i++)
        assert_null(json_object_get(json_object_get(emitted_params(em, i), "_meta"),
                                    "io.modelcontextprotocol/subscriptionId"));
    json_decref(em);
    mcp_session_free(s);
}

/* A host running several engines of one server: each change an engine tells its own
 * clients is announced to the host once; a change delivered from a sibling engine reaches
 * this engine's listen streams and is not announced again. */
static char announced[8][160];
static int nannounced;

static void rec_announce(void *host, const char *method, const char *uri)
{
    (void)host;
    if (nannounced < 8)
        snprintf(announced[nannounced], sizeof(announced[0]), "%s %s", method, uri ? uri : "-");
    nannounced++;
}

static void announce_and_deliver(void **state)
{
    struct fakeenv *e = *state;
    mcp_server_free(e->srv); /* one whose host takes announcements */
    announce_op = rec_announce;
    e->srv = new_server(&e->fh, KEY);
    announce_op = NULL;
    nannounced = 0;
    bool pending = false;
    json_t *msg = mkreq(30, "subscriptions/listen",
                        "{\"notifications\":{\"toolsListChanged\":true,"
                        "\"resourceSubscriptions\":[\"test://watched-resource\"]}}",
                        NULL);
    struct mcp_stateless_ctx ctx = headers_for(msg);
    ctx.key = "L3-1";
    assert_null(mcp_handle_stateless(e->srv, msg, &ctx, &pending));
    json_decref(msg);
    json_decref(fakehost_take(&e->fh)); /* the ack */

    /* from a sibling: told here, not announced back */
    assert_int_equal(mcp_server_deliver(e->srv, "notifications/resources/updated",
                                        "test://watched-resource"),
                     0);
    assert_int_equal(mcp_server_deliver(e->srv, "notifications/tools/list_changed", NULL), 0);
    assert_int_equal(nannounced, 0);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 2);
    assert_string_equal(emitted_method(em, 0), "notifications/resources/updated");
    assert_string_equal(emitted_method(em, 1), "notifications/tools/list_changed");
    json_decref(em);
    /* what is no server-wide change is refused and sends nothing */
    assert_int_equal(mcp_server_deliver(e->srv, "notifications/progress", NULL), -1);
    assert_int_equal(mcp_server_deliver(e->srv, "notifications/resources/updated", NULL), -1);
    assert_int_equal(mcp_server_deliver(e->srv, "notifications/resources/updated", ""), -1);
    assert_int_equal(mcp_server_deliver(e->srv, NULL, NULL), -1);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);

    /* made here: told here and announced, once each */
    mcp_server_resource_updated(e->srv, "test://watched-resource");
    mcp_session *s = mcp_session_new(e->srv, "legacy");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", "{}"));
    json_t *r = fakehost_request(e->srv, s, 2, "tools/call",
                                 "{\"name\":\"test_toggle_dynamic_tool\"}", NULL);
    assert_false(fakehost_is_error(r));
    json_decref(r);
    assert_int_equal(nannounced, 2);
    assert_string_equal(announced[0], "notifications/resources/updated test://watched-resource");
    assert_string_equal(announced[1], "notifications/tools/list_changed -");
    json_decref(fakehost_take(&e->fh));
    assert_int_equal(mcp_stateless_cancel(e->srv, "L3-1"), 0);
    json_decref(fakehost_take(&e->fh));
    mcp_session_free(s);
}

/* No sessions in 2026: the kv tools say so; sessions still have them. */
static void kv_needs_a_session(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e->srv, 1, "tools/call",
                     "{\"name\":\"kv_set\",\"arguments\":{\"key\":\"a\",\"value\":1}}", NULL);
    assert_true(fakehost_is_error(r));
    assert_non_null(strstr(fakehost_text(r, 0), "no sessions"));
    json_decref(r);
    assert_int_equal(e->fh.changed, 0);
}

/* Both eras on one server: a 2025 session uses the same fixtures with real
 * server->client requests (the key plays no part). */
static void session_protocol_beside(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "legacy");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", ALLCAPS));
    json_decref(fakehost_take(&e->fh));
    bool pending = false;
    json_t *r = fakehost_request(e->srv, s, 5, "tools/call",
                                 "{\"name\":\"test_input_required_result_elicitation\"}", &pending);
    assert_null(r);
    assert_true(pending);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    const json_t *req = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(json_string_value(json_object_get(req, "method")), "elicitation/create");
    json_t *answer =
        json_pack("{s:s,s:O,s:{s:s,s:{s:s}}}", "jsonrpc", "2.0", "id", json_object_get(req, "id"),
                  "result", "action", "accept", "content", "name", "Carol");
    json_decref(em);
    assert_null(mcp_handle(e->srv, s, answer, NULL));
    json_decref(answer);
    em = fakehost_take(&e->fh);
    const json_t *fin = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(fakehost_text(fin, 0), "Hello, Carol!");
    assert_null(json_object_get(json_object_get(fin, "result"), "resultType"));
    json_decref(em);
    /* The 2025 prompt asks too. */
    r = fakehost_request(e->srv, s, 6, "prompts/get",
                         "{\"name\":\"test_input_required_result_prompt\"}", &pending);
    assert_null(r);
    assert_true(pending);
    em = fakehost_take(&e->fh);
    req = json_object_get(json_array_get(em, 0), "msg");
    answer =
        json_pack("{s:s,s:O,s:{s:s,s:{s:s}}}", "jsonrpc", "2.0", "id", json_object_get(req, "id"),
                  "result", "action", "accept", "content", "context", "ctx");
    json_decref(em);
    assert_null(mcp_handle(e->srv, s, answer, NULL));
    json_decref(answer);
    em = fakehost_take(&e->fh);
    fin = json_object_get(json_array_get(em, 0), "msg");
    assert_non_null(json_object_get(json_object_get(fin, "result"), "messages"));
    json_decref(em);
    /* Without elicitation a 2025 session gets an isError result (not -32021). */
    mcp_session *s2 = mcp_session_new(e->srv, "legacy2");
    json_decref(fakehost_initialize(e->srv, s2, "2025-11-25", "{}"));
    r = fakehost_request(e->srv, s2, 7, "tools/call", "{\"name\":\"test_missing_capability\"}",
                         NULL);
    assert_true(fakehost_is_error(r));
    json_decref(r);
    mcp_session_free(s);
    mcp_session_free(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routing_rule),
        cmocka_unit_test_setup_teardown(discover, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(eras_keep_their_methods, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(meta_required, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(unsupported_version, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(headers_match_body, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(results_carry_result_type, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(ttl_options, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(resource_not_found_is_invalid_params, setup,
                                        fakeenv_teardown),
        cmocka_unit_test_setup_teardown(wrong_shapes, setup, fakeenv_teardown),
        cmocka_unit_test(http_statuses),
        cmocka_unit_test_setup_teardown(elicitation_round_trip, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(sampling_and_roots_round_trips, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(answers_without_state, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(invalid_answers, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(multi_round, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(multiple_inputs, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(request_state_verified, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(any_shard_resumes, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(state_bound_to_principal, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(capabilities_respected, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(prompt_round_trip, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(request_keys, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(async_call_in_transient_session, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(log_level_per_request, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(cancel, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(param_headers_match_arguments, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(listen_stream, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(announce_and_deliver, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(kv_needs_a_session, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(session_protocol_beside, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
