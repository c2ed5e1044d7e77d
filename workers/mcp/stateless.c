/*
 * The stateless revision (2026-07-28) on the same engine: per-request _meta
 * instead of initialize, HTTP header/body agreement, server/discover,
 * resultType and cache hints on every result, its error codes, and
 * transient sessions for requests that go asynchronous.
 *
 * Checks run in this order, each answering with the first failure:
 *   1. JSON-RPC shape (-32600; batches and client responses are refused);
 *   2. params and _meta: protocolVersion (string) and clientCapabilities
 *      (object) present, clientInfo and logLevel well-formed (-32602);
 *   3. on HTTP, MCP-Protocol-Version, Mcp-Method and Mcp-Name present and
 *      equal to the body (-32020);
 *   4. the _meta protocol version served here (-32022 with
 *      data {supported, requested});
 *   5. the method exists in this revision (-32601: initialize, ping,
 *      logging/setLevel and resources/(un)subscribe are gone; their place is
 *      taken by server/discover and subscriptions/listen).
 */
#include "workers/mcp/mcp_internal.h"

#include <ctype.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every revision we serve, newest first (what -32022 and discover list). */
static json_t *all_versions(void)
{
    json_t *a = json_array();
    for (int i = 0; mcp_protocol_versions_stateless[i]; i++)
        json_array_append_new(a, json_string(mcp_protocol_versions_stateless[i]));
    int n = 0;
    while (mcp_protocol_versions[n])
        n++;
    while (n-- > 0)
        json_array_append_new(a, json_string(mcp_protocol_versions[n]));
    return a;
}

bool mcp_is_stateless_request(const json_t *msg, const char *protocol_header)
{
    if (protocol_header && mcpi_date_shaped(protocol_header) &&
        strcmp(protocol_header, MCP_PROTOCOL_STATELESS) >= 0)
        return true;
    if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "method")))
        return false;
    const json_t *meta = json_object_get(json_object_get(msg, "params"), "_meta");
    return json_object_get(meta, MCPI_META_VERSION) != NULL;
}

json_t *mcpi_server_info_meta(mcp_server *srv)
{
    return json_pack("{s:o}", MCPI_META_SERVERINFO,
                     mcpi_server_implementation(srv, MCP_PROTOCOL_STATELESS));
}

/* ------------------------------------------------------------ discover -- */

void mcpi_discover(mcp_call *c, const json_t *params)
{
    /* listChanged and subscribe: subscriptions/listen (listen.c) delivers every
     * list_changed of the registry and every mcp_server_resource_updated() of this
     * server. A stream hears the changes of the engine that serves it (one shard). */
    json_t *caps =
        json_pack("{s:{s:b},s:{s:b,s:b},s:{s:b},s:{},s:{},s:{s:{}}}", "tools", "listChanged", 1,
                  "resources", "subscribe", 1, "listChanged", 1, "prompts", "listChanged", 1,
                  "completions", "logging", "extensions", MCPI_EXT_TASKS);
    json_t *r = json_pack("{s:o,s:o}", "supportedVersions", all_versions(), "capabilities", caps);
    if (c->srv->instructions && *c->srv->instructions)
        json_object_set_new(r, "instructions", json_string(c->srv->instructions));
    mcp_call_return(c, r);
}

/* ------------------------------------------------------------ results -- */

json_t *mcpi_stateless_decorate(mcp_call *c, json_t *response)
{
    json_t *err = json_object_get(response, "error");
    if (err) {
        /* 2026-07-28: resource not found is Invalid Params (-32002 retired). */
        if (json_integer_value(json_object_get(err, "code")) == MCP_RESOURCE_NOT_FOUND)
            json_object_set_new(err, "code", json_integer(MCP_INVALID_PARAMS));
        return response;
    }
    json_t *result = json_object_get(response, "result");
    if (!json_is_object(result))
        return response;
    if (!json_object_get(result, "resultType")) {
        json_object_set_new(result, "resultType", json_string("complete"));
        const struct mcpi_method *m = mcpi_find_method(c->method);
        if (m && (m->flags & MCPI_CACHEABLE)) {
            bool read = strcmp(c->method, "resources/read") == 0;
            if (!json_object_get(result, "ttlMs"))
                json_object_set_new(result, "ttlMs",
                                    json_integer(read ? c->srv->read_ttl_ms : c->srv->list_ttl_ms));
            /* Lists and discover are the same for every caller; a resource's
             * contents may be the caller's own. */
            if (!json_object_get(result, "cacheScope"))
                json_object_set_new(result, "cacheScope", json_string(read ? "private" : "public"));
        }
    }
    json_t *meta = json_object_get(result, "_meta");
    if (!json_is_object(meta)) {
        meta = json_object();
        json_object_set_new(result, "_meta", meta);
    }
    if (!json_object_get(meta, MCPI_META_SERVERINFO)) {
        json_t *si = mcpi_server_info_meta(c->srv);
        json_object_update(meta, si);
        json_decref(si);
    }
    return response;
}

int mcp_stateless_http_status(const json_t *response)
{
    if (!response)
        return 202;
    const json_t *err = json_object_get(response, "error");
    if (!err)
        return 200;
    switch (json_integer_value(json_object_get(err, "code"))) {
    case MCP_METHOD_NOT_FOUND:
        return 404;
    case MCP_PARSE_ERROR:
    case MCP_INVALID_REQUEST:
    case MCP_INVALID_PARAMS:
    case MCP_HEADER_MISMATCH:
    case MCP_MISSING_CAPABILITY:
    case MCP_UNSUPPORTED_VERSION:
        return 400;
    default:
        return 200;
    }
}

/* -------------------------------------------------------------- checks -- */

static json_t *bad_meta(const json_t *id, const char *why, const char *field)
{
    char text[300];
    snprintf(text, sizeof(text),
             "Invalid params: %s (every 2026-07-28 request carries params._meta with "
             "\"" MCPI_META_VERSION "\" and \"" MCPI_META_CAPS "\")",
             why);
    return mcp_error_response(id, MCP_INVALID_PARAMS, text,
                              field ? json_pack("{s:s}", "field", field) : NULL);
}

/* _meta per request: NULL when fine, else the -32602 response. */
static json_t *check_meta(const json_t *id, const json_t *params)
{
    if (params && !json_is_object(params) && !json_is_null(params))
        return mcp_error_response(id, MCP_INVALID_PARAMS,
                                  "Invalid params: \"params\" must be an object", NULL);
    const json_t *meta = json_object_get(params, "_meta");
    if (!meta)
        return bad_meta(id, "params._meta is missing", "_meta");
    if (!json_is_object(meta))
        return bad_meta(id, "params._meta must be an object", "_meta");
    const json_t *v = json_object_get(meta, MCPI_META_VERSION);
    if (!v)
        return bad_meta(id, "_meta lacks \"" MCPI_META_VERSION "\"", MCPI_META_VERSION);
    if (!json_is_string(v))
        return bad_meta(id, "\"" MCPI_META_VERSION "\" must be a string", MCPI_META_VERSION);
    const json_t *caps = json_object_get(meta, MCPI_META_CAPS);
    if (!caps)
        return bad_meta(id, "_meta lacks \"" MCPI_META_CAPS "\" ({} when the client has none)",
                        MCPI_META_CAPS);
    if (!json_is_object(caps))
        return bad_meta(id, "\"" MCPI_META_CAPS "\" must be an object", MCPI_META_CAPS);
    const json_t *info = json_object_get(meta, MCPI_META_INFO);
    if (info && (!json_is_object(info) || !json_is_string(json_object_get(info, "name")) ||
                 !json_is_string(json_object_get(info, "version"))))
        return bad_meta(id, "\"" MCPI_META_INFO "\" must be an object with name and version",
                        MCPI_META_INFO);
    const json_t *lvl = json_object_get(meta, MCPI_META_LOGLEVEL);
    if (lvl && mcp_log_level_parse(json_string_value(lvl)) < 0)
        return bad_meta(id,
                        "\"" MCPI_META_LOGLEVEL "\" must be debug, info, notice, warning, error, "
                        "critical, alert or emergency",
                        MCPI_META_LOGLEVEL);
    return NULL;
}

/* Mcp-Name may carry "=?base64?<standard base64>?=" (the spec's sentinel for
 * values that are not plain header text). Returns the decoded bytes (caller
 * frees, *len set) or NULL when the sentinel is malformed. */
static char *decode_header_value(const char *v, size_t *len)
{
    size_t n = strlen(v);
    static const char pre[] = "=?base64?", post[] = "?=";
    if (n >= sizeof(pre) - 1 + sizeof(post) - 1 && strncmp(v, pre, sizeof(pre) - 1) == 0 &&
        strcmp(v + n - (sizeof(post) - 1), post) == 0) {
        const char *b = v + sizeof(pre) - 1;
        size_t blen = n - (sizeof(pre) - 1) - (sizeof(post) - 1);
        char *out = malloc(blen + 1);
        size_t olen = 0;
        const char *end = NULL;
        if (!out ||
            sodium_base642bin((unsigned char *)out, blen + 1, b, blen, NULL, &olen, &end,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            end != b + blen) {
            free(out);
            return NULL;
        }
        out[olen] = '\0';
        *len = olen;
        return out;
    }
    *len = n;
    return strdup(v);
}

static json_t *mismatch(const json_t *id, const char *header, const char *have, const char *want)
{
    char text[400];
    if (!have)
        snprintf(text, sizeof(text),
                 "Header mismatch: the %s header is required on 2026-07-28 requests (it must "
                 "equal the body's %s)",
                 header, want);
    else
        snprintf(text, sizeof(text),
                 "Header mismatch: %s header value '%.100s' does not match body value '%.100s'",
                 header, have, want);
    return mcp_error_response(id, MCP_HEADER_MISMATCH, text, json_pack("{s:s}", "header", header));
}

/* An argument's value as its Mcp-Param header must carry it: a string as is, a number or a
 * boolean as its JSON text. NULL for what no header can mirror (objects, arrays). */
static char *param_text(const json_t *v)
{
    if (json_is_string(v))
        return strdup(json_string_value(v));
    if (json_is_number(v) || json_is_boolean(v))
        return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    return NULL;
}

/*
 * SEP-2243: a tool's input schema may mark an argument "x-mcp-header": NAME, so that
 * intermediaries can route on it; a client then mirrors the argument in Mcp-Param-NAME. A
 * request whose argument is given must carry the header, equal to it (=?base64?...?= decoded
 * first), else -32020: a proxy that routed on the header and a server that acts on the body
 * must never disagree.
 */
static json_t *check_param_headers(mcp_server *srv, const json_t *id, const json_t *params,
                                   const struct mcp_stateless_ctx *ctx)
{
    struct mcpi_tool *t =
        mcpi_tool_find(srv, json_string_value(json_object_get(params, "name")));
    const json_t *props = t ? json_object_get(t->input_schema, "properties") : NULL;
    const json_t *args = json_object_get(params, "arguments");
    const char *prop;
    const json_t *schema;
    json_object_foreach((json_t *)props, prop, schema)
    {
        const char *hname = json_string_value(json_object_get(schema, "x-mcp-header"));
        const json_t *v = json_object_get(args, prop);
        if (!hname || !v || json_is_null(v))
            continue; /* not mirrored, or not given (a client omits null) */
        char header[160], key[128];
        snprintf(header, sizeof(header), "Mcp-Param-%.100s", hname);
        size_t i = 0;
        for (; hname[i] && i < sizeof(key) - 1; i++)
            key[i] = (char)tolower((unsigned char)hname[i]);
        key[i] = '\0';
        const char *have = json_string_value(json_object_get(ctx->param_headers, key));
        char *want = param_text(v);
        if (!want)
            continue;
        json_t *err = NULL;
        if (!have) {
            err = mismatch(id, header, NULL, prop);
        } else {
            size_t len;
            char *got = decode_header_value(have, &len);
            if (!got) {
                char text[300];
                snprintf(text, sizeof(text),
                         "Header mismatch: %s header value '%.100s' is not valid =?base64?...?= "
                         "encoding",
                         header, have);
                err = mcp_error_response(id, MCP_HEADER_MISMATCH, text,
                                         json_pack("{s:s}", "header", header));
            } else if (len != strlen(want) || memcmp(got, want, len) != 0) {
                err = mismatch(id, header, have, want);
            }
            free(got);
        }
        free(want);
        if (err)
            return err;
    }
    return NULL;
}

static json_t *check_headers(mcp_server *srv, const json_t *id, const char *method,
                             const json_t *params, const char *version,
                             const struct mcp_stateless_ctx *ctx)
{
    if (!ctx->protocol_header)
        return mismatch(id, "MCP-Protocol-Version", NULL, "_meta protocolVersion");
    if (strcmp(ctx->protocol_header, version) != 0)
        return mismatch(id, "MCP-Protocol-Version", ctx->protocol_header, version);
    if (!ctx->method_header)
        return mismatch(id, "Mcp-Method", NULL, "method");
    if (strcmp(ctx->method_header, method) != 0)
        return mismatch(id, "Mcp-Method", ctx->method_header, method);
    const char *field = NULL;
    if (strcmp(method, "tools/call") == 0 || strcmp(method, "prompts/get") == 0)
        field = "name";
    else if (strcmp(method, "resources/read") == 0)
        field = "uri";
    else if (strcmp(method, "tasks/get") == 0 || strcmp(method, "tasks/update") == 0 ||
             strcmp(method, "tasks/cancel") == 0)
        field = "taskId"; /* SEP-2663: the task id routes like a name */
    const char *body = field ? json_string_value(json_object_get(params, field)) : NULL;
    if (!body)
        return NULL; /* nothing to mirror (a missing name is -32602 later) */
    if (!ctx->name_header)
        return mismatch(id, "Mcp-Name", NULL, field);
    size_t len;
    char *name = decode_header_value(ctx->name_header, &len);
    if (!name) {
        char text[300];
        snprintf(text, sizeof(text),
                 "Header mismatch: Mcp-Name header value '%.100s' is not valid =?base64?...?= "
                 "encoding",
                 ctx->name_header);
        return mcp_error_response(id, MCP_HEADER_MISMATCH, text,
                                  json_pack("{s:s}", "header", "Mcp-Name"));
    }
    bool same = len == strlen(body) && memcmp(name, body, len) == 0;
    free(name);
    if (!same)
        return mismatch(id, "Mcp-Name", ctx->name_header, body);
    return strcmp(method, "tools/call") == 0 ? check_param_headers(srv, id, params, ctx) : NULL;
}

/* ------------------------------------------------------------ handling -- */

static json_t *invalid(const json_t *msg, const char *why)
{
    const json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    return mcp_error_response(id, MCP_INVALID_REQUEST, why, NULL);
}

static json_t *handle_request(mcp_server *srv, const json_t *msg,
                              const struct mcp_stateless_ctx *ctx, bool *pending)
{
    const json_t *id = json_object_get(msg, "id");
    const char *name = json_string_value(json_object_get(msg, "method"));
    const json_t *params = json_object_get(msg, "params");
    json_t *err = check_meta(id, params);
    if (err)
        return err;
    const json_t *meta = json_object_get(params, "_meta");
    const char *version = json_string_value(json_object_get(meta, MCPI_META_VERSION));
    if (ctx->http && (err = check_headers(srv, id, name, params, version, ctx)))
        return err;
    if (!mcpi_stateless_version(version)) {
        json_t *data = json_pack("{s:o,s:s}", "supported", all_versions(), "requested", version);
        char text[200];
        snprintf(text, sizeof(text),
                 "Unsupported protocol version: %.40s (this server serves %s per request; "
                 "earlier revisions start with initialize)",
                 version, MCP_PROTOCOL_STATELESS);
        return mcp_error_response(id, MCP_UNSUPPORTED_VERSION, text, data);
    }
    const struct mcpi_method *m = mcpi_find_method(name);
    if (!m || (m->flags & MCPI_LEGACY)) {
        char text[300];
        snprintf(text, sizeof(text), "Method not found: %.200s%s", name,
                 m ? " (not part of protocol 2026-07-28)" : "");
        return mcp_error_response(id, MCP_METHOD_NOT_FOUND, text, NULL);
    }

    mcp_session *s = mcpi_session_transient(srv, ctx->key);
    if (!s)
        return mcp_error_response(id, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
    s->initialized = true;
    s->client_ready = true;
    s->protocol = mcpi_protocol_static(version);
    s->client_caps = mcpi_shared_get(srv, json_object_get(meta, MCPI_META_CAPS));
    s->client_info = mcpi_shared_get(srv, json_object_get(meta, MCPI_META_INFO));
    /* No logLevel: the client wants no notifications/message at all. */
    int lvl = mcp_log_level_parse(json_string_value(json_object_get(meta, MCPI_META_LOGLEVEL)));
    s->log_level = (signed char)(lvl >= 0 ? lvl : MCP_LOG_EMERGENCY + 1);
    s->userdata = ctx->userdata;

    json_t *empty = NULL;
    if (!json_is_object(params))
        params = empty = json_object();
    mcp_call *c = mcpi_call_new(srv, s, id, name, params);
    if (!c) {
        json_decref(empty);
        mcp_session_free(s);
        return mcp_error_response(id, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
    }
    c->stateless = true;
    if (!(m->flags & MCPI_INPUT) || mcpi_mrtr_begin(c, params, ctx->principal) == 0)
        m->fn(c, params);
    json_decref(empty);
    if (c->mrtr && !c->done)
        mcpi_mrtr_settle(c);
    return mcpi_call_settle(c, s, pending);
}

json_t *mcp_handle_stateless(mcp_server *srv, json_t *msg, const struct mcp_stateless_ctx *ctx,
                             bool *pending)
{
    static const struct mcp_stateless_ctx none = {0};
    if (pending)
        *pending = false;
    if (!srv)
        return NULL;
    if (!ctx)
        ctx = &none;
    switch (mcp_classify(msg)) {
    case MCP_MSG_REQUEST:
        return handle_request(srv, msg, ctx, pending);
    case MCP_MSG_NOTIFICATION:
        /* Nothing to do: 2026-07-28 has no client notifications over HTTP;
         * on stdio the host maps notifications/cancelled to
         * mcp_stateless_cancel() itself (it knows its request keys). */
        return NULL;
    case MCP_MSG_RESPONSE:
        return invalid(msg, "Invalid Request: protocol 2026-07-28 takes no JSON-RPC responses "
                            "from clients; answer input_required results by retrying the request "
                            "with inputResponses");
    case MCP_MSG_BATCH:
        return invalid(msg, "Invalid Request: JSON-RPC batches are not part of protocol "
                            "2026-07-28; send one message per request");
    case MCP_MSG_INVALID:
    default:
        return invalid(msg, "Invalid Request: not a JSON-RPC 2.0 request (\"jsonrpc\":\"2.0\", a "
                            "string \"method\", a string or integer \"id\")");
    }
}

json_t *mcp_handle_stateless_text(mcp_server *srv, const char *buf, size_t len,
                                  const struct mcp_stateless_ctx *ctx, bool *pending)
{
    if (pending)
        *pending = false;
    json_error_t jerr;
    json_t *msg = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!msg)
        return mcp_parse_error_response(&jerr);
    json_t *r = mcp_handle_stateless(srv, msg, ctx, pending);
    json_decref(msg);
    return r;
}

int mcp_stateless_cancel(mcp_server *srv, const char *key)
{
    if (!srv || !key)
        return -1;
    for (mcp_session *s = srv->stateless; s; s = s->next) {
        if (strcmp(s->id, key) != 0 || !s->inflight)
            continue;
        mcpi_call_cancel(s->inflight, true); /* frees s */
        return 0;
    }
    return -1;
}
