/*
 * Tasks (protocol 2025-11-25): tools/call with a "task" param answers at once
 * with a CreateTaskResult and runs the tool in the background; the client
 * follows it with tasks/get, tasks/result, tasks/list and tasks/cancel.
 *
 * A task is a record in the session's durable state (s->tasks, saved by
 * mcp_session_dump like kv): its status, timestamps, ttl and, once it ends,
 * the tool's response. So whatever the host stores of a session it stores of
 * its tasks, and a task outlives the process that ran it: a finished task
 * still answers after a restart. A task still running cannot: its tool ran
 * in C code in the old process, and no C tool can be resumed mid-run, so
 * mcpi_tasks_restore reports it failed, with a message saying so.
 *
 * The tool itself runs as an internal call (c->task_id set) parked among the
 * session's calls in flight under the key "task:<id>"; what it emits is
 * session-wide (it belongs to no open request), and its final answer goes to
 * mcpi_task_settle instead of the host. A tasks/result asked before the task
 * ends waits as a call of its own (state: the task id) and is answered when
 * the task settles.
 *
 * Statuses used: working -> completed | failed | cancelled. A tool's isError
 * result or a JSON-RPC error makes the task failed (its result is still the
 * tool's answer). input_required is not used: a task's tool may still ask
 * the client things (elicitation, sampling), the questions travel on the
 * session's stream, and the status stays working.
 */
#include "workers/mcp/mcp_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const wire_fields[] = {"taskId",        "status", "statusMessage", "createdAt",
                                          "lastUpdatedAt", "ttl",    "pollInterval",  NULL};

#define RESTARTED_MESSAGE                                                                          \
    "The shard serving this session restarted (or another node took the session over) while "      \
    "the task ran. A tool cannot be resumed mid-run, so the task failed and has no result; call "  \
    "the tool again"

static void iso8601(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static bool terminal(const char *status)
{
    return status && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
                      strcmp(status, "cancelled") == 0);
}

static const char *status_of(const json_t *rec)
{
    return json_string_value(json_object_get(rec, "status"));
}

/* The Task object of the protocol: the record without its internal fields. */
static json_t *task_wire(const json_t *rec)
{
    json_t *o = json_object();
    for (size_t i = 0; wire_fields[i]; i++) {
        json_t *v = json_object_get(rec, wire_fields[i]);
        if (v)
            json_object_set_new(o, wire_fields[i], json_deep_copy(v));
    }
    return o;
}

static void set_status(int64_t now, json_t *rec, const char *status, const char *message)
{
    char ts[40];
    iso8601(now, ts, sizeof(ts));
    json_object_set_new(rec, "status", json_string(status));
    json_object_set_new(rec, "lastUpdatedAt", json_string(ts));
    if (message)
        json_object_set_new(rec, "statusMessage", json_string(message));
    else
        json_object_del(rec, "statusMessage");
}

static bool expired(const json_t *rec, int64_t now)
{
    const json_t *ttl = json_object_get(rec, "ttl");
    if (!json_is_integer(ttl))
        return false; /* null: kept until the session ends */
    return json_integer_value(json_object_get(rec, "created_ms")) + json_integer_value(ttl) <= now;
}

/* notifications/tasks/status: the spec lets receivers tell requestors of status changes. */
static void notify(mcp_session *s, const json_t *rec)
{
    if (s->initialized)
        mcpi_emit(s, NULL, mcpi_notification("notifications/tasks/status", task_wire(rec)), false);
}

static mcp_call *tool_run_of(mcp_session *s, const char *id)
{
    char key[160];
    snprintf(key, sizeof(key), "task:%s", id);
    mcp_call *c = NULL;
    HASH_FIND_STR(s->inflight, key, c);
    return c;
}

/* Answer tasks/result c with the task's outcome (rec NULL: the task is gone). */
static void answer_result(mcp_call *c, const char *id, const json_t *rec)
{
    if (!rec) {
        char text[200];
        snprintf(text, sizeof(text), "Task not found: %.100s (its ttl ran out)", id);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return;
    }
    const json_t *resp = json_object_get(rec, "response");
    const json_t *res = json_object_get(resp, "result");
    const json_t *err = json_object_get(resp, "error");
    if (json_is_object(res)) {
        json_t *r = json_deep_copy(res);
        json_t *meta = json_object_get(r, "_meta");
        if (!json_is_object(meta)) {
            meta = json_object();
            json_object_set_new(r, "_meta", meta);
        }
        json_object_set_new(meta, MCPI_META_RELATED_TASK, json_pack("{s:s}", "taskId", id));
        mcpi_call_finish_result(c, r);
    } else if (json_is_object(err)) {
        const json_t *data = json_object_get(err, "data");
        mcp_call_error(c, (int)json_integer_value(json_object_get(err, "code")),
                       json_string_value(json_object_get(err, "message")),
                       data ? json_deep_copy(data) : NULL);
    } else {
        char text[240];
        snprintf(text, sizeof(text),
                 "Task %.100s was cancelled before it finished: it has no result", id);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
    }
}

/* Answer every tasks/result waiting for task id. */
static void wake(mcp_session *s, const char *id, const json_t *rec)
{
    mcp_call *c, *tmp;
    HASH_ITER(hh, s->inflight, c, tmp)
    {
        if (strcmp(c->method, "tasks/result") == 0 && c->state && strcmp(c->state, id) == 0)
            answer_result(c, id, rec);
    }
}

mcp_call *mcpi_task_run_new(mcp_call *c, mcp_session *s, const char *id, json_t *rec,
                            const json_t *params)
{
    json_t *jid = json_string(id);
    mcp_call *run = rec && jid ? mcpi_call_new(c->srv, s, jid, "tools/call", params) : NULL;
    json_decref(jid);
    char *key = NULL;
    if (!run || asprintf(&key, "task:%s", id) < 0 || !(run->task_id = strdup(id)) ||
        (!s->tasks && !(s->tasks = json_object()))) {
        json_decref(rec);
        free(key);
        mcpi_call_free(run);
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return NULL;
    }
    free(run->key);
    run->key = key;
    run->protocol = c->protocol;
    json_object_set_new(s->tasks, id, rec);
    mcpi_session_changed(s);
    return run;
}

/* The tool run of a task ended: record its response (steals). */
static void record_outcome(mcp_session *s, const char *id, json_t *response, bool tell)
{
    json_t *rec = json_object_get(s->tasks, id);
    if (!rec || terminal(status_of(rec))) { /* cancelled or expired meanwhile */
        json_decref(response);
        return;
    }
    if (json_is_true(json_object_get(rec, "v2"))) { /* a 2026 task (tasks26.c) */
        mcpi_tasks26_outcome(rec, response, mcpi_now_ms(s->srv));
        json_decref(response);
        mcpi_session_changed(s);
        return;
    }
    const json_t *res = json_object_get(response, "result");
    const json_t *err = json_object_get(response, "error");
    const char *status = "completed", *message = NULL;
    if (err) {
        status = "failed";
        message = json_string_value(json_object_get(err, "message"));
    } else if (json_is_true(json_object_get(res, "isError"))) {
        status = "failed";
        const json_t *first = json_array_get(json_object_get(res, "content"), 0);
        message = json_string_value(json_object_get(first, "text"));
        if (!message)
            message = "the tool reported an error";
    }
    set_status(mcpi_now_ms(s->srv), rec, status, message);
    json_t *kept = json_object();
    if (err)
        json_object_set_new(kept, "error", json_deep_copy(err));
    else
        json_object_set_new(kept, "result", res ? json_deep_copy(res) : json_object());
    json_object_set_new(rec, "response", kept);
    json_decref(response);
    mcpi_session_changed(s);
    if (tell)
        notify(s, rec);
    wake(s, id, rec);
}

void mcpi_task_record_outcome(mcp_session *s, const char *id, json_t *response, bool tell)
{
    record_outcome(s, id, response, tell);
}

void mcpi_task_iso8601(int64_t ms, char *out, size_t len)
{
    iso8601(ms, out, len);
}

bool mcpi_task_terminal(const char *status)
{
    return terminal(status);
}

bool mcpi_task_expired(const json_t *rec, int64_t now)
{
    return expired(rec, now);
}

void mcpi_task_set_status(int64_t now, json_t *rec, const char *status, const char *message)
{
    set_status(now, rec, status, message);
}

mcp_call *mcpi_task_run_of(mcp_session *s, const char *id)
{
    return tool_run_of(s, id);
}

void mcpi_task_settle(mcp_session *s, const char *task_id, json_t *response)
{
    record_outcome(s, task_id, response, true);
    mcpi_session_flush(s);
}

size_t mcp_session_task_count(const mcp_session *s)
{
    return s ? json_object_size(s->tasks) : 0;
}

size_t mcp_session_expire_tasks(mcp_session *s, int64_t now_ms)
{
    if (!s || !s->tasks)
        return 0;
    size_t n = 0;
    const char *id;
    json_t *rec;
    void *tmp;
    json_object_foreach_safe(s->tasks, tmp, id, rec)
    {
        if (!expired(rec, now_ms))
            continue;
        char *key = strdup(id);
        if (!key)
            continue;
        mcp_call *run = tool_run_of(s, key);
        if (run)
            mcpi_call_cancel(run, true);
        json_object_del(s->tasks, key);
        mcpi_session_changed(s); /* (before wake: its answers go after the deletion is saved) */
        wake(s, key, NULL);
        free(key);
        n++;
    }
    if (n)
        mcpi_session_flush(s);
    return n;
}

json_t *mcpi_tasks_restore(mcp_server *srv, const json_t *tasks)
{
    json_t *out = json_object();
    const char *id;
    json_t *rec;
    json_object_foreach((json_t *)tasks, id, rec)
    {
        json_t *r = json_deep_copy(rec);
        if (!terminal(status_of(r))) {
            set_status(mcpi_now_ms(srv), r, "failed", RESTARTED_MESSAGE);
            json_object_del(r, "inputRequests"); /* (a 2026 task waiting for input) */
            json_object_set_new(r, "response",
                                json_pack("{s:{s:i,s:s}}", "error", "code", MCP_INTERNAL_ERROR,
                                          "message", RESTARTED_MESSAGE));
        }
        json_object_set_new(out, id, r);
    }
    return out;
}

void mcpi_task_create(mcp_call *c, struct mcpi_tool *t, const json_t *params, const json_t *args)
{
    mcp_session *s = c->s;
    const json_t *task = json_object_get(params, "task");
    if (!json_is_object(task)) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: \"task\" must be an object, e.g. {\"ttl\": 60000}", NULL);
        return;
    }
    const json_t *ttl = json_object_get(task, "ttl");
    if (ttl && !json_is_null(ttl) && (!json_is_number(ttl) || json_number_value(ttl) < 0)) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: task.ttl must be a non-negative number of milliseconds",
                       NULL);
        return;
    }
    if (t->task_support == MCP_TASK_FORBIDDEN) {
        char text[300];
        snprintf(text, sizeof(text),
                 "Invalid params: tool %.128s cannot run as a task (its execution.taskSupport "
                 "is forbidden); call it without \"task\"",
                 t->name);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return;
    }
    int64_t now = mcpi_now_ms(c->srv);
    mcp_session_expire_tasks(s, now);
    if (json_object_size(s->tasks) >= MCPI_MAX_TASKS) {
        mcp_call_error(c, MCP_INVALID_REQUEST,
                       "Invalid Request: this session holds the most tasks it may (64); wait "
                       "for some to expire (their ttl) or ask for shorter ttls",
                       NULL);
        return;
    }
    double want = ttl && json_is_number(ttl) ? json_number_value(ttl) : MCPI_TASK_TTL_MS;
    json_int_t granted = want > MCPI_TASK_TTL_MAX_MS ? MCPI_TASK_TTL_MAX_MS : (json_int_t)want;
    unsigned char raw[16];
    char id[sizeof(raw) * 2 + 1];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(id, sizeof(id), raw, sizeof(raw));
    char ts[40];
    iso8601(now, ts, sizeof(ts));
    json_t *rec = json_pack("{s:s,s:s,s:s,s:s,s:I,s:i,s:I,s:s}", "taskId", id, "status", "working",
                            "createdAt", ts, "lastUpdatedAt", ts, "ttl", granted, "pollInterval",
                            MCPI_TASK_POLL_MS, "created_ms", (json_int_t)now, "tool", t->name);
    mcp_call *run = mcpi_task_run_new(c, s, id, rec, params);
    if (!run)
        return;
    /* The answer says "working" whatever the tool does next: it is the state at creation. */
    mcpi_call_finish_result(c, json_pack("{s:o}", "task", task_wire(rec)));
    mcpi_tool_run(run, t, args);
    run->sync = false;
    if (run->done) { /* finished before returning: record it, no one to tell yet */
        json_t *resp = run->response;
        run->response = NULL;
        mcpi_call_free(run);
        record_outcome(s, id, resp, false);
        return;
    }
    HASH_ADD_KEYPTR(hh, s->inflight, run->key, strlen(run->key), run);
}

/* ------------------------------------------------------------ methods -- */

/* The task params name, or NULL after answering the call with the error. */
static json_t *find(mcp_call *c, const json_t *params, const char **idp)
{
    if (!mcp_call_protocol_at_least(c, "2025-11-25") || !c->s || c->stateless) {
        mcp_call_error(c, MCP_METHOD_NOT_FOUND,
                       "Method not found: tasks need protocol version 2025-11-25", NULL);
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
    json_t *rec = json_object_get(c->s->tasks, id);
    if (rec && expired(rec, mcpi_now_ms(c->srv))) {
        mcp_session_expire_tasks(c->s, mcpi_now_ms(c->srv));
        rec = NULL;
    }
    if (!rec) {
        char text[240];
        snprintf(text, sizeof(text),
                 "Task not found: %.100s (unknown in this session, or dropped after its ttl)", id);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return NULL;
    }
    *idp = json_string_value(json_object_get(rec, "taskId"));
    return rec;
}

void mcpi_tasks_get(mcp_call *c, const json_t *params)
{
    if (c->stateless) {
        mcpi_tasks26_get(c, params);
        return;
    }
    const char *id;
    json_t *rec = find(c, params, &id);
    if (rec)
        mcpi_call_finish_result(c, task_wire(rec));
}

void mcpi_tasks_result(mcp_call *c, const json_t *params)
{
    const char *id;
    json_t *rec = find(c, params, &id);
    if (!rec)
        return;
    if (terminal(status_of(rec))) {
        answer_result(c, id, rec);
        return;
    }
    /* The spec lets tasks/result wait for the end: it stays in flight until wake(). */
    char *want = strdup(id);
    if (!want) {
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return;
    }
    mcp_call_set_state(c, want, free);
}

void mcpi_tasks_cancel(mcp_call *c, const json_t *params)
{
    if (c->stateless) {
        mcpi_tasks26_cancel(c, params);
        return;
    }
    const char *id;
    json_t *rec = find(c, params, &id);
    if (!rec)
        return;
    const char *status = status_of(rec);
    if (terminal(status)) {
        char text[240];
        snprintf(text, sizeof(text), "Cannot cancel task %.100s: it is already %s", id, status);
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return;
    }
    char *key = strdup(id);
    if (!key) {
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return;
    }
    mcp_call *run = tool_run_of(c->s, key);
    if (run)
        mcpi_call_cancel(run, true); /* its cancel hook runs, its questions are withdrawn */
    set_status(mcpi_now_ms(c->srv), rec, "cancelled", "cancelled by the client (tasks/cancel)");
    mcpi_session_changed(c->s);
    notify(c->s, rec);
    wake(c->s, key, rec);
    free(key);
    mcpi_call_finish_result(c, task_wire(rec));
}

void mcpi_tasks_list(mcp_call *c, const json_t *params)
{
    if (!mcp_call_protocol_at_least(c, "2025-11-25") || !c->s || c->stateless) {
        mcp_call_error(c, MCP_METHOD_NOT_FOUND,
                       "Method not found: tasks need protocol version 2025-11-25", NULL);
        return;
    }
    size_t offset;
    if (mcpi_page_begin(c, params, "tasks", &offset) != 0)
        return;
    mcp_session_expire_tasks(c->s, mcpi_now_ms(c->srv));
    json_t *all = json_array();
    const char *id;
    json_t *rec;
    json_object_foreach(c->s->tasks, id, rec)
    {
        json_array_append_new(all, task_wire(rec));
    }
    mcpi_page_finish(c, json_object(), "tasks", all, "tasks", offset);
}
