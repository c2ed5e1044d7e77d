/*
 * Dispatch of client messages: requests to their method handler,
 * notifications (initialized, cancelled) to the session, and responses to
 * the call waiting for them. Also batches (2025-03-26) and raw text.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct mcpi_method methods[] = {
    {"initialize", mcpi_initialize, MCPI_BEFORE_INIT | MCPI_LEGACY},
    {"ping", mcpi_ping, MCPI_BEFORE_INIT | MCPI_LEGACY},
    {"logging/setLevel", mcpi_set_level, MCPI_LEGACY},
    {"server/discover", mcpi_discover, MCPI_STATELESS | MCPI_CACHEABLE},
    {"tools/list", mcpi_tools_list, MCPI_CACHEABLE},
    {"tools/call", mcpi_tools_call, MCPI_INPUT},
    {"resources/list", mcpi_resources_list, MCPI_CACHEABLE},
    {"resources/read", mcpi_resources_read, MCPI_CACHEABLE | MCPI_INPUT},
    {"resources/templates/list", mcpi_templates_list, MCPI_CACHEABLE},
    {"resources/subscribe", mcpi_resources_subscribe, MCPI_LEGACY},
    {"resources/unsubscribe", mcpi_resources_unsubscribe, MCPI_LEGACY},
    {"prompts/list", mcpi_prompts_list, MCPI_CACHEABLE},
    {"prompts/get", mcpi_prompts_get, MCPI_INPUT},
    {"completion/complete", mcpi_complete, 0},
    {"tasks/get", mcpi_tasks_get, 0},
    {"tasks/result", mcpi_tasks_result, MCPI_LEGACY},
    {"tasks/list", mcpi_tasks_list, MCPI_LEGACY},
    {"tasks/cancel", mcpi_tasks_cancel, 0},
    {"tasks/update", mcpi_tasks26_update, MCPI_STATELESS},
    {"subscriptions/listen", mcpi_listen, MCPI_STATELESS},
};

const struct mcpi_method *mcpi_find_method(const char *name)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, name) == 0)
            return &methods[i];
    return NULL;
}

static json_t *invalid(const json_t *msg, const char *why)
{
    const json_t *id = json_is_object(msg) ? json_object_get(msg, "id") : NULL;
    return mcp_error_response(id, MCP_INVALID_REQUEST, why, NULL);
}

/* Why mcp_classify() said "invalid", in words a client developer can act on. */
static const char *invalid_reason(const json_t *msg)
{
    if (!json_is_object(msg))
        return "Invalid Request: a JSON-RPC message must be a JSON object";
    const json_t *v = json_object_get(msg, "jsonrpc");
    if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0)
        return "Invalid Request: \"jsonrpc\" must be \"2.0\"";
    const json_t *m = json_object_get(msg, "method");
    if (m && !json_is_string(m))
        return "Invalid Request: \"method\" must be a string";
    if (m)
        return "Invalid Request: a request id must be a string or an integer (not null)";
    return "Invalid Request: not a request (no \"method\") nor a response (exactly one of "
           "\"result\" and \"error\", with the request's id)";
}

static void handle_notification(mcp_session *s, const json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    const json_t *params = json_object_get(msg, "params");
    if (!s)
        return;
    if (strcmp(method, "notifications/initialized") == 0) {
        if (s->initialized)
            s->client_ready = true;
    } else if (strcmp(method, "notifications/cancelled") == 0) {
        /* Unknown or finished ids are ignored: cancellation races completion. */
        const json_t *rid = json_object_get(params, "requestId");
        if (!mcpi_valid_id(rid))
            return;
        char *key = mcpi_id_key(rid);
        mcp_call *c = NULL;
        HASH_FIND_STR(s->inflight, key, c);
        free(key);
        if (c && strcmp(c->method, "initialize") != 0)
            mcpi_call_cancel(c, true);
    }
    /* notifications/roots/list_changed, notifications/progress and unknown
     * notifications need nothing from us: JSON-RPC forbids answering them. */
}

static json_t *handle_request(mcp_server *srv, mcp_session *s, const json_t *msg, bool *pending)
{
    const json_t *id = json_object_get(msg, "id");
    const char *name = json_string_value(json_object_get(msg, "method"));
    const json_t *params = json_object_get(msg, "params");
    const struct mcpi_method *m = mcpi_find_method(name);
    if (!m || (m->flags & MCPI_STATELESS)) {
        char text[256];
        snprintf(text, sizeof(text), "Method not found: %.200s", name);
        return mcp_error_response(id, MCP_METHOD_NOT_FOUND, text, NULL);
    }
    if (params && !json_is_object(params) && !json_is_null(params))
        return mcp_error_response(id, MCP_INVALID_PARAMS,
                                  "Invalid params: \"params\" must be an object", NULL);
    if (!s && strcmp(name, "ping") != 0)
        return mcp_error_response(id, MCP_INVALID_REQUEST,
                                  "Invalid Request: no session; send initialize first", NULL);
    if (s && !s->initialized && !(m->flags & MCPI_BEFORE_INIT)) {
        char text[256];
        snprintf(text, sizeof(text),
                 "Invalid Request: session not initialized; send initialize before %.100s", name);
        return mcp_error_response(id, MCP_INVALID_REQUEST, text, NULL);
    }
    if (s) {
        char *key = mcpi_id_key(id);
        mcp_call *dup = NULL;
        HASH_FIND_STR(s->inflight, key, dup);
        free(key);
        if (dup)
            return mcp_error_response(
                id, MCP_INVALID_REQUEST,
                "Invalid Request: a request with this id is still in progress; ids must be "
                "unique within a session",
                NULL);
        if (HASH_COUNT(s->inflight) >= MCPI_MAX_INFLIGHT)
            return mcp_error_response(id, MCP_INVALID_REQUEST,
                                      "Invalid Request: too many requests in progress in this "
                                      "session; wait for some to finish or cancel them",
                                      NULL);
    }
    json_t *empty = NULL;
    if (!json_is_object(params))
        params = empty = json_object();
    mcp_call *c = mcpi_call_new(srv, s, id, name, params);
    if (!c) {
        json_decref(empty);
        return mcp_error_response(id, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
    }
    m->fn(c, params);
    json_decref(empty);
    if (!c->done && !s) /* nowhere to park it: only session requests can wait */
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: request needs a session", NULL);
    return mcpi_call_settle(c, s, pending);
}

json_t *mcpi_call_settle(mcp_call *c, mcp_session *s, bool *pending)
{
    c->sync = false;
    if (c->done) {
        json_t *resp = c->response;
        c->response = NULL;
        mcpi_call_free(c);
        if (s && s->stateless)
            mcp_session_free(s); /* a stateless request's session lives as long as it */
        else
            mcpi_session_flush(s);
        return resp;
    }
    /* The handler kept the call: it finishes later through ops->emit. */
    HASH_ADD_KEYPTR(hh, s->inflight, c->key, strlen(c->key), c);
    if (pending)
        *pending = true;
    return NULL;
}

json_t *mcp_handle(mcp_server *srv, mcp_session *s, json_t *msg, bool *pending)
{
    if (pending)
        *pending = false;
    if (!srv)
        return NULL;
    switch (mcp_classify(msg)) {
    case MCP_MSG_REQUEST:
        return handle_request(srv, s, msg, pending);
    case MCP_MSG_NOTIFICATION:
        handle_notification(s, msg);
        return NULL;
    case MCP_MSG_RESPONSE:
        if (s)
            mcpi_call_route_reply(s, msg);
        return NULL;
    case MCP_MSG_BATCH:
        return invalid(msg, "Invalid Request: a batch must go through mcp_handle_batch");
    case MCP_MSG_INVALID:
    default:
        return invalid(msg, invalid_reason(msg));
    }
}

json_t *mcp_handle_batch(mcp_server *srv, mcp_session *s, json_t *batch, int *npending)
{
    if (npending)
        *npending = 0;
    if (!json_is_array(batch) || json_array_size(batch) == 0)
        return mcp_error_response(NULL, MCP_INVALID_REQUEST,
                                  "Invalid Request: a batch must be a non-empty array", NULL);
    /* Batches exist only in 2025-03-26; initialize can never be batched, so
     * a session without a negotiated protocol cannot use them either. */
    if (!s || !s->initialized || strcmp(s->protocol, "2025-03-26") != 0)
        return mcp_error_response(NULL, MCP_INVALID_REQUEST,
                                  "Invalid Request: JSON-RPC batches are only supported with "
                                  "protocol version 2025-03-26; send messages one at a time",
                                  NULL);
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(batch, i, m)
    {
        json_t *r;
        bool pend = false;
        if (mcp_is_initialize(m) || json_is_array(m))
            r = invalid(m, "Invalid Request: initialize and nested batches cannot be batched");
        else
            r = mcp_handle(srv, s, m, &pend);
        if (r)
            json_array_append_new(out, r);
        if (pend && npending)
            (*npending)++;
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *mcp_parse_error_response(const json_error_t *jerr)
{
    char text[300];
    snprintf(text, sizeof(text), "Parse error: %.200s (line %d, column %d)", jerr->text,
             jerr->line, jerr->column);
    return mcp_error_response(NULL, MCP_PARSE_ERROR, text, NULL);
}

json_t *mcp_handle_text(mcp_server *srv, mcp_session *s, const char *buf, size_t len, bool *pending)
{
    if (pending)
        *pending = false;
    json_error_t jerr;
    json_t *msg = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!msg)
        return mcp_parse_error_response(&jerr);
    json_t *r;
    if (json_is_array(msg)) {
        int n = 0;
        r = mcp_handle_batch(srv, s, msg, &n);
        if (pending)
            *pending = n > 0;
    } else {
        r = mcp_handle(srv, s, msg, pending);
    }
    json_decref(msg);
    return r;
}
