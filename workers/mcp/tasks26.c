/*
 * The tasks extension of protocol 2026-07-28 (io.modelcontextprotocol/tasks, SEP-2663).
 *
 * A client that names the extension in a request's clientCapabilities.extensions lets the
 * server decide that a tools/call runs as a task: the call is answered at once with a flat
 * CreateTaskResult (resultType "task", taskId, status, createdAt, lastUpdatedAt, ttlMs,
 * pollIntervalMs) and the client polls tasks/get, whose answer inlines the outcome (result,
 * error) or the questions the tool waits on (inputRequests, answered with tasks/update).
 * tasks/cancel stops it. tasks/result and tasks/list are not part of it (-32601).
 *
 * The client is stateless, so a task cannot live in a client session as the 2025-11-25 ones
 * do (tasks.c). Each task gets a session of its own instead, its "task home", whose id is the
 * task id: the host makes it (ops.task_home), chooses the id so that it can route on it the
 * way it routes session ids, and stores it like any session, so a task is exactly as durable
 * as a session, and its record is the one tasks.c keeps ("v2": true marks the 2026 rules).
 * The tool runs as an internal call of the home; what a session call would send the client
 * is dropped (the home has no stream), and what it asks the client waits in the task record
 * as an inputRequest until tasks/update brings the answer, which is then routed to the
 * tool's reply function like a 2025 client's response.
 *
 * Statuses: working, input_required, then completed (any tool result, isError too: a tool
 * that reported an error still completed), failed (a JSON-RPC error: the protocol failed) or
 * cancelled.
 */
#include "workers/mcp/mcp_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool mcpi_tasks26_negotiated(const mcp_call *c)
{
    const json_t *ext = json_object_get(c->caps, "extensions");
    return json_is_object(ext) && json_object_get(ext, MCPI_EXT_TASKS) != NULL;
}

bool mcp_session_is_task_home(const mcp_session *s)
{
    return s && s->task_home;
}

/* -32021 naming the extension, as SEP-2575 shapes requiredCapabilities. */
void mcpi_tasks26_need_extension(mcp_call *c, const char *what)
{
    char text[400];
    snprintf(text, sizeof(text),
             "%s needs the tasks extension: declare \"" MCPI_EXT_TASKS
             "\" in the request's clientCapabilities.extensions",
             what);
    mcp_call_error(
        c, MCP_MISSING_CAPABILITY, text,
        json_pack("{s:{s:{s:{}}}}", "requiredCapabilities", "extensions", MCPI_EXT_TASKS));
}

/* ---------------------------------------------------------- task homes -- */

static mcp_session *home_new(mcp_server *srv)
{
    mcp_session *h = NULL;
    if (srv->ops.task_home) {
        h = srv->ops.task_home(srv->host);
    } else {
        unsigned char raw[16];
        char hex[sizeof(raw) * 2 + 1], id[sizeof(hex) + 8];
        randombytes_buf(raw, sizeof(raw));
        sodium_bin2hex(hex, sizeof(hex), raw, sizeof(raw));
        snprintf(id, sizeof(id), "task-%s", hex);
        if ((h = mcp_session_new(srv, id)))
            h->task_home_ours = true;
    }
    if (h)
        h->task_home = true;
    return h;
}

static mcp_session *home_find(mcp_server *srv, const char *id)
{
    mcp_session *h = NULL;
    if (srv->ops.session_find) {
        h = srv->ops.session_find(srv->host, id);
    } else {
        for (mcp_session *s = srv->sessions; s && !h; s = s->next)
            if (s->task_home && strcmp(s->id, id) == 0)
                h = s;
    }
    return h && h->task_home ? h : NULL;
}

/* ---------------------------------------------------------------- wire -- */

static void copy_field(json_t *to, const char *name, const json_t *from, const char *field)
{
    const json_t *v = json_object_get(from, field);
    if (v)
        json_object_set_new(to, name, json_deep_copy(v));
}

/* The Task of the extension; detailed (tasks/get) adds the outcome or the open questions. */
static json_t *wire(const json_t *rec, bool detailed)
{
    json_t *o = json_object();
    copy_field(o, "taskId", rec, "taskId");
    copy_field(o, "status", rec, "status");
    copy_field(o, "statusMessage", rec, "statusMessage");
    copy_field(o, "createdAt", rec, "createdAt");
    copy_field(o, "lastUpdatedAt", rec, "lastUpdatedAt");
    copy_field(o, "ttlMs", rec, "ttl");
    copy_field(o, "pollIntervalMs", rec, "pollInterval");
    if (!detailed)
        return o;
    const char *status = json_string_value(json_object_get(rec, "status"));
    const json_t *resp = json_object_get(rec, "response");
    if (status && strcmp(status, "completed") == 0)
        copy_field(o, "result", resp, "result");
    else if (status && strcmp(status, "failed") == 0)
        copy_field(o, "error", resp, "error");
    else if (status && strcmp(status, "input_required") == 0)
        copy_field(o, "inputRequests", rec, "inputRequests");
    return o;
}

void mcpi_tasks26_outcome(json_t *rec, const json_t *response, int64_t now)
{
    const json_t *err = json_object_get(response, "error");
    const json_t *res = json_object_get(response, "result");
    json_object_del(rec, "inputRequests");
    json_t *kept = json_object();
    if (err) {
        mcpi_task_set_status(now, rec, "failed",
                             json_string_value(json_object_get(err, "message")));
        json_object_set_new(kept, "error", json_deep_copy(err));
    } else {
        mcpi_task_set_status(now, rec, "completed", NULL);
        json_object_set_new(kept, "result", res ? json_deep_copy(res) : json_object());
    }
    json_object_set_new(rec, "response", kept);
}

/* ------------------------------------------------------------ creation -- */

/* Make the task, answer c with its CreateTaskResult, and run the tool in the task's home:
 * t's own run function, or fn (mcp_call_run_as_task). */
static void start(mcp_call *c, struct mcpi_tool *t, const json_t *args, mcp_tool_fn fn)
{
    mcp_server *srv = c->srv;
    mcp_session *h = home_new(srv);
    if (!h) {
        mcp_call_error(c, MCP_INTERNAL_ERROR,
                       "Internal error: this server cannot keep a new task now (out of memory, "
                       "or no room for more sessions); retry later",
                       NULL);
        return;
    }
    /* The home asks the client what its client declared it can answer. */
    if (c->s && c->s->client_caps)
        h->client_caps = mcpi_shared_ref(c->s->client_caps);
    if (c->s && c->s->client_info)
        h->client_info = mcpi_shared_ref(c->s->client_info);
    int64_t now = mcpi_now_ms(srv);
    char ts[40];
    mcpi_task_iso8601(now, ts, sizeof(ts));
    const char *id = h->id;
    json_t *rec = json_pack("{s:s,s:s,s:s,s:s,s:I,s:i,s:I,s:s,s:b}", "taskId", id, "status",
                            "working", "createdAt", ts, "lastUpdatedAt", ts, "ttl",
                            (json_int_t)MCPI_TASK_TTL_MS, "pollInterval", MCPI_TASK_POLL_MS,
                            "created_ms", (json_int_t)now, "tool", t->name, "v2", 1);
    mcp_call *run = mcpi_task_run_new(c, h, id, rec, NULL);
    if (!run)
        return;
    json_t *created = wire(rec, false);
    json_object_set_new(created, "resultType", json_string("task"));
    /* "working" whatever the tool does next: it is the state at creation. */
    mcpi_call_finish_result(c, created);
    if (fn) {
        mcpi_call_set_tool(run, t);
        fn(run, args, t->ud);
    } else {
        mcpi_tool_run(run, t, args);
    }
    run->sync = false;
    if (run->done) { /* finished before returning */
        json_t *resp = run->response;
        run->response = NULL;
        mcpi_call_free(run);
        mcpi_task_record_outcome(h, id, resp, false);
    } else {
        HASH_ADD_KEYPTR(hh, h->inflight, run->key, strlen(run->key), run);
    }
    mcpi_session_flush(h);
}

void mcpi_tasks26_call(mcp_call *c, struct mcpi_tool *t, const json_t *params, const json_t *args)
{
    (void)params; /* a legacy "task" param is tolerated and changes nothing */
    if (!mcpi_tasks26_negotiated(c)) {
        if (t->task_support == MCP_TASK_REQUIRED) {
            char what[200];
            snprintf(what, sizeof(what), "Tool %.128s (execution.taskSupport required)", t->name);
            mcpi_tasks26_need_extension(c, what);
            return;
        }
        mcpi_tool_run(c, t, args); /* an ordinary call: the client cannot follow a task */
        return;
    }
    if (t->task_deferred)
        mcpi_tool_run(c, t, args); /* it becomes a task when it says so */
    else
        start(c, t, args, NULL);
}

void mcp_call_run_as_task(mcp_call *c, mcp_tool_fn fn, const json_t *args)
{
    if (!c || c->done || !fn)
        return;
    void *ud = c->tool ? c->tool->ud : NULL;
    if (c->task_id || !c->stateless || !c->tool) {
        fn(c, args, ud); /* already a task, or a 2025 call: go on in this call */
        return;
    }
    if (!mcpi_tasks26_negotiated(c)) {
        mcpi_tasks26_need_extension(c, "This tool call");
        return;
    }
    start(c, c->tool, args, fn);
}

/* ------------------------------------------------------------- methods -- */

/* The task params name (its home in *hp), or NULL after answering c with the error. */
static json_t *lookup(mcp_call *c, const json_t *params, mcp_session **hp)
{
    if (!mcpi_tasks26_negotiated(c)) {
        mcpi_tasks26_need_extension(c, c->method);
        return NULL;
    }
    const char *id = json_string_value(json_object_get(params, "taskId"));
    if (!id) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: \"taskId\" (a string, from the CreateTaskResult) is "
                       "required",
                       NULL);
        return NULL;
    }
    int64_t now = mcpi_now_ms(c->srv);
    mcp_session *h = home_find(c->srv, id);
    json_t *rec = h ? json_object_get(h->tasks, id) : NULL;
    if (rec && mcpi_task_expired(rec, now)) {
        mcp_session_expire_tasks(h, now);
        rec = NULL;
    }
    if (h && !rec && h->task_home_ours && mcp_session_task_count(h) == 0) {
        mcp_session_free(h); /* (a host's homes are dropped by the host) */
        h = NULL;
    }
    if (!rec) {
        char text[300];
        snprintf(text, sizeof(text),
                 "Task not found: %.100s (unknown to this server, or dropped after its ttlMs)", id);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return NULL;
    }
    *hp = h;
    return rec;
}

void mcpi_tasks26_get(mcp_call *c, const json_t *params)
{
    mcp_session *h;
    json_t *rec = lookup(c, params, &h);
    if (rec)
        mcpi_call_finish_result(c, wire(rec, true));
}

void mcpi_tasks26_cancel(mcp_call *c, const json_t *params)
{
    mcp_session *h;
    json_t *rec = lookup(c, params, &h);
    if (!rec)
        return;
    /* A task that already ended stays as it ended; the ack is the same (idempotent). */
    if (!mcpi_task_terminal(json_string_value(json_object_get(rec, "status")))) {
        char *id = strdup(json_string_value(json_object_get(rec, "taskId")));
        if (!id) {
            mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
            return;
        }
        mcp_call *run = mcpi_task_run_of(h, id);
        if (run)
            mcpi_call_cancel(run, true); /* its cancel hook runs, its timers go */
        free(id);
        json_object_del(rec, "inputRequests");
        mcpi_task_set_status(mcpi_now_ms(c->srv), rec, "cancelled",
                             "cancelled by the client (tasks/cancel)");
        mcpi_session_changed(h);
        mcpi_session_flush(h);
    }
    mcpi_call_finish_result(c, json_object());
}

void mcpi_tasks26_update(mcp_call *c, const json_t *params)
{
    mcp_session *h;
    json_t *rec = lookup(c, params, &h);
    if (!rec)
        return;
    const json_t *answers = json_object_get(params, "inputResponses");
    if (!json_is_object(answers)) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: \"inputResponses\" must be an object of answers keyed "
                       "like the task's inputRequests",
                       NULL);
        return;
    }
    json_t *open = json_object_get(rec, "inputRequests");
    const char *key;
    const json_t *v;
    /* Answers to open questions are checked like input_required answers (mrtr.c): all of
     * them before any is delivered, so a bad one changes nothing. */
    json_object_foreach((json_t *)answers, key, v)
    {
        const json_t *q = json_object_get(open, key);
        if (!q)
            continue;
        const char *why =
            json_is_object(v)
                ? mcpi_answer_problem(json_string_value(json_object_get(q, "method")), v)
                : "it must be an object (the client's result for that request)";
        if (why) {
            char text[300];
            snprintf(text, sizeof(text), "Invalid params: the answer to %.64s is not valid: %s",
                     key, why);
            mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
            return;
        }
    }
    /* Answered questions leave the task first; the tool's replies may ask again or end it. */
    json_t *deliver = json_array();
    json_object_foreach((json_t *)answers, key, v)
    {
        if (!json_object_get(open, key))
            continue; /* not asked, or answered already: ignored */
        json_object_del(open, key);
        json_array_append_new(deliver,
                              json_pack("{s:s,s:s,s:O}", "jsonrpc", "2.0", "id", key, "result", v));
    }
    if (json_array_size(deliver) > 0) {
        if (json_object_size(open) == 0) {
            json_object_del(rec, "inputRequests");
            mcpi_task_set_status(mcpi_now_ms(c->srv), rec, "working", NULL);
        }
        mcpi_session_changed(h);
    }
    size_t i;
    json_t *msg;
    json_array_foreach(deliver, i, msg)
    {
        mcpi_call_route_reply(h, msg);
    }
    json_decref(deliver);
    mcpi_session_flush(h);
    mcpi_call_finish_result(c, json_object());
}

void mcpi_tasks26_ask(mcp_call *c, const char *key, const char *method, const json_t *params)
{
    json_t *rec = c->task_id ? json_object_get(c->s->tasks, c->task_id) : NULL;
    if (!rec)
        return;
    json_t *open = json_object_get(rec, "inputRequests");
    if (!json_is_object(open)) {
        open = json_object();
        json_object_set_new(rec, "inputRequests", open);
    }
    json_object_set_new(open, key,
                        json_pack("{s:s,s:o}", "method", method, "params",
                                  params ? json_deep_copy(params) : json_object()));
    const char *status = json_string_value(json_object_get(rec, "status"));
    if (!status || strcmp(status, "input_required") != 0)
        mcpi_task_set_status(mcpi_now_ms(c->srv), rec, "input_required",
                             "waiting for the client's answers (tasks/update)");
    mcpi_session_changed(c->s);
    mcpi_session_flush(c->s);
}

void mcpi_tasks26_withdraw(mcp_call *c, const char *key)
{
    json_t *rec = c->task_id && key ? json_object_get(c->s->tasks, c->task_id) : NULL;
    json_t *open = json_object_get(rec, "inputRequests");
    if (!json_object_get(open, key))
        return;
    json_object_del(open, key);
    if (json_object_size(open) == 0) {
        json_object_del(rec, "inputRequests");
        mcpi_task_set_status(mcpi_now_ms(c->srv), rec, "working", NULL);
    }
    mcpi_session_changed(c->s);
    mcpi_session_flush(c->s);
}
