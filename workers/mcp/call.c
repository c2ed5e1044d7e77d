/*
 * One client request being served. A method handler gets an mcp_call and
 * finishes it with mcp_call_return()/mcp_call_error(), either at once
 * (the response goes back as mcp_handle()'s return value) or later from a
 * timer or a client's reply (the response is emitted with final=true).
 *
 * Whatever a call holds -- timers, server->client requests, tool state --
 * is released when it finishes or is cancelled, so a handler never has to
 * clean up after itself on the cancellation path.
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *number(double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        return json_integer((json_int_t)v);
    return json_real(v);
}

mcp_call *mcpi_call_new(mcp_server *srv, mcp_session *s, const json_t *id, const char *method,
                        const json_t *params)
{
    mcp_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->srv = srv;
    c->s = s;
    c->id = json_deep_copy(id);
    c->key = mcpi_id_key(id);
    c->method = strdup(method);
    /* Sessionless requests (the stateless revisions) are served as the newest
     * revision; their capabilities would come from the request's _meta. */
    c->protocol = s && s->initialized && s->protocol ? s->protocol : MCP_PROTOCOL_LATEST;
    c->caps = s ? mcpi_shared_value(s->client_caps) : NULL;
    const json_t *tok = json_object_get(json_object_get(params, "_meta"), "progressToken");
    if (json_is_string(tok) || json_is_integer(tok))
        c->progress_token = json_deep_copy(tok);
    c->sync = true;
    return c;
}

mcp_server *mcp_call_server(const mcp_call *c)
{
    return c->srv;
}

mcp_session *mcp_call_session(const mcp_call *c)
{
    return c->s;
}

const json_t *mcp_call_id(const mcp_call *c)
{
    return c->id;
}

const char *mcp_call_method(const mcp_call *c)
{
    return c->method;
}

const char *mcp_call_protocol(const mcp_call *c)
{
    return c->protocol;
}

bool mcp_call_protocol_at_least(const mcp_call *c, const char *version)
{
    return mcpi_proto_at_least(c->protocol, version);
}

bool mcp_call_has_progress(const mcp_call *c)
{
    return c->progress_token != NULL;
}

const json_t *mcpi_call_rel(const mcp_call *c)
{
    return c->task_id ? NULL : c->id;
}

bool mcp_call_done(const mcp_call *c)
{
    return c->done;
}

void mcpi_call_set_tool(mcp_call *c, struct mcpi_tool *t)
{
    c->tool = t;
    t->refs++;
}

void mcp_call_set_state(mcp_call *c, void *state, void (*free_fn)(void *))
{
    if (c->state && c->state_free && c->state != state)
        c->state_free(c->state);
    c->state = state;
    c->state_free = free_fn;
}

void *mcp_call_state(const mcp_call *c)
{
    return c->state;
}

void mcp_call_on_cancel(mcp_call *c, void (*fn)(mcp_call *c))
{
    c->on_cancel = fn;
}

/* ------------------------------------------------------------- timers -- */

static void timer_unlink(mcp_call *c, struct mcpi_timer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        c->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

static void timer_fire(void *arg)
{
    struct mcpi_timer *t = arg;
    mcp_call *c = t->c;
    void (*cb)(mcp_call *, void *) = t->cb;
    void *cb_arg = t->arg;
    /* The host has forgotten the timer: drop our record before the callback,
     * which may well finish (and free) the call. */
    timer_unlink(c, t);
    free(t);
    if (c->done)
        return;
    if (c->stateless) {
        /* Stateless calls finish "synchronously" inside their callbacks, so
         * that questions asked there can be settled before the call ends. */
        c->sync = true;
        cb(c, cb_arg);
        mcpi_call_stateless_after(c);
        return;
    }
    cb(c, cb_arg);
}

void *mcp_call_timer(mcp_call *c, double after_ms, void (*cb)(mcp_call *c, void *arg), void *arg)
{
    mcp_server *srv = c->srv;
    if (c->done || !cb || !srv->ops.timer_add || !srv->ops.timer_cancel)
        return NULL;
    struct mcpi_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->c = c;
    t->cb = cb;
    t->arg = arg;
    t->next = c->timers;
    if (c->timers)
        c->timers->prev = t;
    c->timers = t;
    t->handle = srv->ops.timer_add(srv->host, after_ms < 0 ? 0 : after_ms, timer_fire, t);
    if (!t->handle) {
        timer_unlink(c, t);
        free(t);
        return NULL;
    }
    return t;
}

void mcp_call_timer_cancel(mcp_call *c, void *timer)
{
    for (struct mcpi_timer *t = c->timers; t; t = t->next) {
        if (t == timer) {
            c->srv->ops.timer_cancel(c->srv->host, t->handle);
            timer_unlink(c, t);
            free(t);
            return;
        }
    }
}

/* ----------------------------------------------------------- lifecycle -- */

/* Drop everything the call holds in the outside world. Server->client
 * requests still open are withdrawn with notifications/cancelled, as the
 * spec asks of a requester that stops waiting. */
static void call_cleanup(mcp_call *c, bool tell_client)
{
    while (c->timers)
        mcp_call_timer_cancel(c, c->timers);
    if (!c->s)
        return;
    struct mcpi_outreq *o, *tmp;
    HASH_ITER(hh, c->s->outbound, o, tmp)
    {
        if (o->c != c)
            continue;
        HASH_DEL(c->s->outbound, o);
        if (tell_client) {
            json_t *p = json_pack("{s:o,s:s}", "requestId", json_deep_copy(o->id), "reason",
                                  "the request that needed this answer has ended");
            mcpi_emit(c->s, mcpi_call_rel(c), mcpi_notification("notifications/cancelled", p),
                      false);
        }
        free(o->key);
        json_decref(o->id);
        free(o);
    }
}

void mcpi_call_free(mcp_call *c)
{
    if (!c)
        return;
    call_cleanup(c, false);
    if (c->state && c->state_free)
        c->state_free(c->state);
    mcpi_tool_unref(c->tool);
    mcpi_mrtr_free(c->mrtr);
    json_decref(c->id);
    json_decref(c->progress_token);
    json_decref(c->response);
    free(c->key);
    free(c->method);
    free(c->task_id);
    free(c);
}

static void finish(mcp_call *c, json_t *response)
{
    if (c->done || c->cancelling) {
        json_decref(response);
        return;
    }
    c->done = true;
    call_cleanup(c, true);
    if (c->stateless)
        response = mcpi_stateless_decorate(c, response);
    if (c->sync) {
        c->response = response; /* mcp_handle() returns it */
        return;
    }
    mcp_session *s = c->s;
    HASH_DEL(s->inflight, c);
    if (c->task_id) { /* a task's tool run: the answer is the task's, nobody waits on c->id */
        mcpi_task_settle(s, c->task_id, response);
        mcpi_call_free(c);
        return;
    }
    mcpi_session_flush(s);
    mcpi_emit(s, c->id, response, true);
    mcpi_call_free(c);
    if (s->stateless) /* the transient session ends with its request */
        mcp_session_free(s);
}

void mcpi_call_stateless_after(mcp_call *c)
{
    if (c->mrtr && !c->done)
        mcpi_mrtr_settle(c);
    c->sync = false;
    if (!c->done)
        return;
    mcp_session *s = c->s;
    json_t *response = c->response;
    c->response = NULL;
    HASH_DEL(s->inflight, c);
    mcpi_emit(s, c->id, response, true);
    mcpi_call_free(c);
    mcp_session_free(s);
}

bool mcpi_call_waiting(const mcp_call *c)
{
    if (c->mrtr)
        return c->mrtr->queue || json_object_size(c->mrtr->asked) > 0;
    if (!c->s)
        return false;
    struct mcpi_outreq *o, *tmp;
    HASH_ITER(hh, c->s->outbound, o, tmp)
    {
        if (o->c == c)
            return true;
    }
    return false;
}

void mcpi_call_cancel(mcp_call *c, bool emit)
{
    mcp_session *s = c->s;
    c->cancelling = true;
    if (c->on_cancel)
        c->on_cancel(c);
    c->done = true;
    call_cleanup(c, emit);
    HASH_DEL(s->inflight, c);
    if (emit && !c->task_id) { /* (a task's tool run has no request to end) */
        mcpi_session_flush(s);
        mcpi_emit(s, c->id, NULL, true);
    }
    mcpi_call_free(c);
    if (emit && s->stateless) /* (not when mcp_session_free is tearing s down) */
        mcp_session_free(s);
}

/* A tool's structuredContent must match the outputSchema it declared
 * (clients validate it and reject the whole result otherwise). Checking here
 * turns a tool bug into a readable tool error instead. */
static json_t *check_tool_result(mcp_call *c, json_t *result)
{
    const json_t *sc = json_object_get(result, "structuredContent");
    if (c->tool && c->tool->output_schema &&
        (!c->tool->output_trusted || c->srv->check_all_outputs) &&
        !json_is_true(json_object_get(result, "isError"))) {
        char why[256];
        if (!sc ||
            !mcpi_schema_check(c->tool->output_schema, sc, "structuredContent", why, sizeof(why))) {
            char text[512];
            snprintf(text, sizeof(text),
                     "tool '%s' returned a result that does not match its outputSchema (%s); "
                     "this is a bug in the tool",
                     c->tool->name, sc ? why : "structuredContent is missing");
            json_decref(result);
            return json_pack("{s:[o],s:b}", "content", mcpi_text_content(text), "isError", 1);
        }
    }
    if (sc && !mcpi_proto_at_least(c->protocol, "2025-06-18"))
        json_object_del(result, "structuredContent");
    return result;
}

void mcp_call_return(mcp_call *c, json_t *result)
{
    if (!result)
        result = json_object();
    if (c->done || c->cancelling) {
        json_decref(result);
        return;
    }
    if (strcmp(c->method, "tools/call") == 0)
        result = check_tool_result(c, result);
    finish(c, mcpi_result_response(c->id, result));
}

void mcpi_call_finish_result(mcp_call *c, json_t *result)
{
    if (c->done || c->cancelling) {
        json_decref(result);
        return;
    }
    finish(c, mcpi_result_response(c->id, result));
}

void mcp_call_return_text(mcp_call *c, bool is_error, const char *fmt, ...)
{
    char *text = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&text, fmt, ap) < 0)
        text = NULL;
    va_end(ap);
    json_t *r = json_pack("{s:[o]}", "content", mcpi_text_content(text ? text : ""));
    if (is_error)
        json_object_set_new(r, "isError", json_true());
    free(text);
    mcp_call_return(c, r);
}

void mcp_call_error(mcp_call *c, int code, const char *message, json_t *data)
{
    if (c->done || c->cancelling) {
        json_decref(data);
        return;
    }
    finish(c, mcp_error_response(c->id, code, message, data));
}

/* ------------------------------------------------- progress and logging -- */

bool mcp_call_progress(mcp_call *c, double progress, double total, const char *msg)
{
    if (c->done || !c->progress_token || !c->s || !isfinite(progress) || !isfinite(total))
        return false;
    if (c->any_progress && !(progress > c->last_progress))
        return false; /* the spec: progress MUST increase */
    c->any_progress = true;
    c->last_progress = progress;
    json_t *p = json_pack("{s:o,s:o}", "progressToken", json_deep_copy(c->progress_token),
                          "progress", number(progress));
    if (total > 0)
        json_object_set_new(p, "total", number(total));
    if (msg && mcpi_proto_at_least(c->protocol, "2025-03-26"))
        json_object_set_new(p, "message", json_string(msg));
    mcpi_emit(c->s, mcpi_call_rel(c), mcpi_notification("notifications/progress", p), false);
    return true;
}

void mcp_call_log(mcp_call *c, enum mcp_log_level level, const char *logger, json_t *data)
{
    if (c->done || !c->s || !mcpi_level_passes(c->s, level)) {
        json_decref(data);
        return;
    }
    json_t *p = json_pack("{s:s}", "level", mcp_log_level_name(level));
    if (logger)
        json_object_set_new(p, "logger", json_string(logger));
    json_object_set_new(p, "data", data ? data : json_null());
    mcpi_emit(c->s, mcpi_call_rel(c), mcpi_notification("notifications/message", p), false);
}

/* --------------------------------------------- server->client requests -- */

bool mcp_call_client_supports(const mcp_call *c, const char *method, const json_t *params)
{
    const json_t *caps = c->caps;
    if (!method)
        return false;
    if (strcmp(method, "ping") == 0)
        return true;
    if (strcmp(method, "sampling/createMessage") == 0) {
        const json_t *sm = json_object_get(caps, "sampling");
        if (!json_is_object(sm))
            return false;
        /* Tool use inside sampling is a sub-capability (2025-11-25); toolChoice is part of it. */
        if (!json_object_get(params, "tools") && !json_object_get(params, "toolChoice"))
            return true;
        return json_is_object(json_object_get(sm, "tools")) &&
               mcpi_proto_at_least(c->protocol, "2025-11-25");
    }
    if (strcmp(method, "elicitation/create") == 0) {
        const json_t *el = json_object_get(caps, "elicitation");
        if (!json_is_object(el) || !mcpi_proto_at_least(c->protocol, "2025-06-18"))
            return false;
        const char *mode = json_string_value(json_object_get(params, "mode"));
        bool has_form = json_object_get(el, "form") != NULL;
        bool has_url = json_object_get(el, "url") != NULL;
        if (mode && strcmp(mode, "url") == 0) /* URL mode arrived with 2025-11-25 */
            return has_url && mcpi_proto_at_least(c->protocol, "2025-11-25");
        /* An empty elicitation object is the pre-2025-11-25 way of saying "forms". */
        return has_form || !has_url;
    }
    if (strcmp(method, "roots/list") == 0)
        return json_is_object(json_object_get(caps, "roots"));
    return false;
}

static void outreq_timeout(mcp_call *c, void *arg)
{
    struct mcpi_outreq *o = arg;
    mcp_reply_fn reply = o->reply;
    void *reply_arg = o->arg;
    HASH_DEL(c->s->outbound, o);
    if (c->s->task_home) /* a 2026 task's question: it leaves the task's inputRequests */
        mcpi_tasks26_withdraw(c, json_string_value(o->id));
    json_t *p = json_pack("{s:o,s:s}", "requestId", json_deep_copy(o->id), "reason", "timed out");
    mcpi_emit(c->s, mcpi_call_rel(c), mcpi_notification("notifications/cancelled", p), false);
    free(o->key);
    json_decref(o->id);
    free(o);
    json_t *err = json_pack("{s:i,s:s}", "code", MCP_REQUEST_TIMEOUT, "message",
                            "the client did not answer in time");
    reply(c, NULL, err, reply_arg);
    json_decref(err);
}

int mcp_call_request(mcp_call *c, const char *method, json_t *params, double timeout_ms,
                     mcp_reply_fn reply, void *arg)
{
    return mcp_call_request_keyed(c, NULL, method, params, timeout_ms, reply, arg);
}

int mcp_call_request_keyed(mcp_call *c, const char *key, const char *method, json_t *params,
                           double timeout_ms, mcp_reply_fn reply, void *arg)
{
    if (!c || c->done || !c->s || !method || !reply) {
        json_decref(params);
        return -EINVAL;
    }
    if (!mcp_call_client_supports(c, method, params)) {
        json_decref(params);
        return -ENOTSUP;
    }
    if (c->stateless)
        return mcpi_mrtr_request(c, key, method, params, reply, arg);
    mcp_session *s = c->s;
    struct mcpi_outreq *o = calloc(1, sizeof(*o));
    if (!o) {
        json_decref(params);
        return -ENOMEM;
    }
    char id[64];
    snprintf(id, sizeof(id), "%s-%lu", s->out_prefix, ++s->next_out);
    o->id = json_string(id);
    o->key = mcpi_id_key(o->id);
    o->c = c;
    o->reply = reply;
    o->arg = arg;
    HASH_ADD_KEYPTR(hh, s->outbound, o->key, strlen(o->key), o);
    if (timeout_ms > 0)
        o->timeout = mcp_call_timer(c, timeout_ms, outreq_timeout, o);
    if (s->task_home) { /* a 2026 task: the question waits in the task for tasks/update */
        mcpi_tasks26_ask(c, id, method, params);
        json_decref(params);
        return 0;
    }
    json_t *msg =
        json_pack("{s:s,s:o,s:s}", "jsonrpc", "2.0", "id", json_deep_copy(o->id), "method", method);
    if (params)
        json_object_set_new(msg, "params", params);
    mcpi_emit(s, mcpi_call_rel(c), msg, false);
    return 0;
}

void mcpi_call_route_reply(mcp_session *s, const json_t *msg)
{
    const json_t *id = json_object_get(msg, "id");
    if (!mcpi_valid_id(id))
        return; /* an error about a message we could not have sent: nothing to resume */
    char *key = mcpi_id_key(id);
    struct mcpi_outreq *o = NULL;
    HASH_FIND_STR(s->outbound, key, o);
    free(key);
    if (!o)
        return; /* late (the call ended) or never ours: the spec says ignore */
    HASH_DEL(s->outbound, o);
    mcp_call *c = o->c;
    if (o->timeout)
        mcp_call_timer_cancel(c, o->timeout);
    mcp_reply_fn reply = o->reply;
    void *arg = o->arg;
    free(o->key);
    json_decref(o->id);
    free(o);
    const json_t *result = json_object_get(msg, "result");
    const json_t *error = json_object_get(msg, "error");
    reply(c, error ? NULL : result, error, arg);
}

bool mcp_call_stateless(const mcp_call *c)
{
    return c->stateless;
}

bool mcp_call_resumed(const mcp_call *c)
{
    return c->resumed;
}

void mcp_call_missing_capability(mcp_call *c, const char *capability, const char *text)
{
    if (!capability)
        capability = "unknown";
    char fallback[256];
    if (!text) {
        snprintf(fallback, sizeof(fallback),
                 "this request needs a client that supports %s: declare the '%s' capability",
                 capability, capability);
        text = fallback;
    }
    if (c->stateless) {
        /* "elicitation.url" -> {"elicitation": {"url": {}}} */
        json_t *need = json_object();
        const char *dot = strchr(capability, '.');
        if (dot) {
            char top[64];
            snprintf(top, sizeof(top), "%.*s", (int)(dot - capability), capability);
            json_object_set_new(need, top, json_pack("{s:{}}", dot + 1));
        } else {
            json_object_set_new(need, capability, json_object());
        }
        mcp_call_error(c, MCP_MISSING_CAPABILITY, text,
                       json_pack("{s:o}", "requiredCapabilities", need));
    } else if (strcmp(c->method, "tools/call") == 0) {
        mcp_call_return_text(c, true, "%s", text);
    } else {
        mcp_call_error(c, MCP_INVALID_REQUEST, text, NULL);
    }
}
