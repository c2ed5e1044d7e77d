/*
 * The shard's operations: one handler for each operation of the wire
 * contract (ipc/wire.h), and the metrics of the requests they serve. Every
 * answer leaves through shard_reply(), which counts it and hands it to the
 * ack gate (gate.c).
 */
#define _GNU_SOURCE
#include "workers/shard/shard_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/cview.h"
#include "ipc/stats.h"
#include "workers/shard/tools.h"

/* ---- metrics (docs/operations.md) ---- */

/* Transport labels are a fixed set too. */
static const char *transport_label(const char *tr)
{
    static const char *const known[] = {"http", "sse", "tcp", "stdio", "websocket", NULL};
    for (int i = 0; tr && known[i]; i++)
        if (strcmp(known[i], tr) == 0)
            return known[i];
    return "other";
}

/* Labels are static strings, so a metric is found again by their addresses: no formatting
 * and no lookup on every request. */
static void count_request(const char *method, const char *transport)
{
    static struct {
        const char *m, *t;
        struct stats_metric *c;
    } cache[64];
    const char *t = transport_label(transport);
    size_t h = (((uintptr_t)method >> 3) * 31u + ((uintptr_t)t >> 3)) % 64;
    for (size_t i = 0; i < 64; i++, h = (h + 1) % 64) {
        if (cache[h].m == method && cache[h].t == t) {
            cache[h].c->value += 1;
            return;
        }
        if (!cache[h].m) {
            char labels[160];
            snprintf(labels, sizeof(labels), "method=\"%s\",transport=\"%s\"", method, t);
            cache[h].m = method;
            cache[h].t = t;
            cache[h].c = stats_counter("cmcp_requests_total", labels);
            cache[h].c->value += 1;
            return;
        }
    }
    char labels[160];
    snprintf(labels, sizeof(labels), "method=\"%s\",transport=\"%s\"", method, t);
    stats_counter("cmcp_requests_total", labels)->value += 1;
}

static void count_error(const char *method, const json_t *body)
{
    json_t *err = json_object_get(body, "error");
    if (!err || !method)
        return;
    char labels[160];
    snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%d\"", method,
             (int)json_integer_value(json_object_get(err, "code")));
    stats_counter("cmcp_request_errors_total", labels)->value += 1;
}

/* ---- replies ---- */

json_t *shard_rpc_error(const json_t *id, int code, const char *msg)
{
    return mcp_error_response(id, code, msg, NULL);
}

void shard_reply(struct slot *sl, struct wire_reply *r, json_t *body, struct sess *s)
{
    count_error(sl->method, body);
    r->method = wire_method_index(sl->method);
    sl->method = NULL;
    gate_reply(sl, r, body, s);
}

/* A reply that is a status, and maybe a body. */
static void reply_st(struct slot *sl, int st, json_t *body, struct sess *s)
{
    struct wire_reply r = {.st = st};
    shard_reply(sl, &r, body, s);
}

/* ---- the operations ---- */

/*
 * A session before its initialize: the legacy HTTP+SSE transport names the
 * session in the endpoint it announces, before the client says anything.
 */
static void op_open(struct slot *sl)
{
    struct sess *s = sess_create(sl, NULL);
    if (!s)
        return;
    struct wire_reply r = {.st = 200};
    snprintf(r.sid, sizeof(r.sid), "%s", s->id);
    shard_reply(sl, &r, NULL, s);
}

static void op_msg(struct slot *sl, const char *sid, const char *tr, const char *body, size_t blen)
{
    json_error_t jerr;
    json_t *msg = json_loadb(body, blen, JSON_REJECT_DUPLICATES, &jerr);
    if (!msg) {
        char m[200];
        snprintf(m, sizeof(m), "Parse error: %s", jerr.text);
        reply_st(sl, 400, shard_rpc_error(NULL, -32700, m), NULL);
        return;
    }
    sl->method = wire_method_label(msg);
    count_request(sl->method, tr);
    struct sess *s = NULL;
    bool created = false;
    if (!sid) {
        const char *method = json_string_value(json_object_get(msg, "method"));
        if (!method || strcmp(method, "initialize") != 0) {
            reply_st(sl, 400, shard_rpc_error(json_object_get(msg, "id"), -32600,
                            "Bad Request: no session. Send initialize first, then the "
                            "Mcp-Session-Id it returns with every request"),
                  NULL);
            json_decref(msg);
            return;
        }
        s = sess_create(sl, json_object_get(msg, "id"));
        if (!s) {
            json_decref(msg);
            return;
        }
        created = true;
    } else {
        s = sess_find_client(sid);
        if (!s) {
            reply_st(sl, 404, shard_rpc_error(json_object_get(msg, "id"), -32001,
                            "Session not found: it expired or was deleted. Initialize a new "
                            "session"),
                  NULL);
            json_decref(msg);
            return;
        }
    }
    durable_touch(s, msg);
    bool pending = false;
    json_t *resp;
    if (json_is_array(msg)) {
        int npending = 0;
        resp = mcp_handle_batch(shard_g.srv, s->ms, msg, &npending);
        if (npending > 0) {
            /* Wait for the asynchronous members: note which ids still owe a response. */
            sl->batch = json_is_array(resp) ? resp : json_array();
            if (!json_is_array(resp))
                json_decref(resp);
            sl->batch_ids = json_array();
            size_t i;
            json_t *m;
            json_array_foreach(msg, i, m)
            {
                json_t *id = json_object_get(m, "id");
                if (!id || !json_object_get(m, "method"))
                    continue;
                bool answered = false;
                size_t j;
                json_t *r;
                json_array_foreach(sl->batch, j, r) answered |= json_equal(json_object_get(r, "id"), id);
                if (!answered)
                    json_array_append(sl->batch_ids, id);
            }
            pending_add(s, sl, NULL);
            json_decref(msg);
            return;
        }
    } else {
        /* Register first: the engine may emit for this request before returning. */
        json_t *rid = json_object_get(msg, "id");
        if (rid && json_object_get(msg, "method"))
            pending_add(s, sl, rid);
        resp = mcp_handle(shard_g.srv, s->ms, msg, &pending);
    }
    json_decref(msg);
    if (pending)
        return; /* the engine answers through host_emit(final) */
    struct wire_reply r = {.st = resp ? 200 : 202};
    request_end(s, sl, &r, resp);
    if (created) {
        bool ok = resp && !json_object_get(resp, "error") && mcp_session_initialized(s->ms);
        if (!ok && !mcp_session_protocol(s->ms)) {
            shard_g.created--;
            sess_remove(s, "initialize failed");
            s = NULL;
        } else {
            snprintf(r.sid, sizeof(r.sid), "%s", s->id);
            log_debug("session_created", "{s:s,s:s}", "sid", s->id, "protocol",
                      mcp_session_protocol(s->ms) ? mcp_session_protocol(s->ms) : "?");
        }
    }
    shard_reply(sl, &r, resp, s);
}

static void op_stream(struct slot *sl, const struct wire_req *req)
{
    struct sess *s = sess_find_client(req->sid);
    if (!s) {
        reply_st(sl, 404, shard_rpc_error(NULL, -32001, "Session not found: initialize a new session"),
                 NULL);
        return;
    }
    int stream = req->resume ? req->last_stream : 0;
    int64_t after = req->resume ? req->last_seq : s->std_offered;
    s->last_active = cmcp_now_ms();
    bool done = false;
    /* seq: where this stream starts, the id of its priming event */
    struct wire_reply r = {.st = 200, .stream = stream, .seq = after};
    r.data = durable_replay(s, stream, after, &done);
    if (!req->resume) {
        /* this stream is offered everything up to now (the replay) and what follows */
        s->std_offered = s->seq;
        s->std_open = true;
    }
    r.done = stream != 0 && done;
    if (stream != 0 && !done && req->follow_tok) {
        /* The request still runs, carried by another link (another listener, or another
         * node's): it moves to this one, so the resumed stream goes on live */
        for (struct slot *run = s->pending; run; run = run->next_pending)
            if (run->stream == stream && !run->stateless) {
                r.followed = links_move(run, sl, req->follow_tok);
                break;
            }
    }
    shard_reply(sl, &r, NULL, s);
}

static void op_delete(struct slot *sl, const struct wire_req *req)
{
    /* (the admin may end a task's home; a client DELETE names sessions only) */
    struct sess *s = req->op == WIRE_DELETE ? sess_find_client(req->sid) : sess_find(req->sid);
    if (!s) {
        reply_st(sl, 404, shard_rpc_error(NULL, -32001, "Session not found"),
              NULL);
        return;
    }
    shard_g.deleted++;
    sess_remove(s, "deleted");
    reply_st(sl, 200, NULL, NULL);
}

/*
 * A request of the stateless 2026-07-28 revision: no session; any shard serves
 * it (multi-round state travels sealed in the request, under the node's key).
 */
static void op_stateless(struct slot *sl, const struct wire_req *req)
{
    char key[64];
    snprintf(key, sizeof(key), "%d-%llu", req->lid, (unsigned long long)req->tok);
    struct mcp_stateless_ctx ctx = {req->http, req->pv, req->mm, req->mn, req->mp, key, sl, NULL};
    /* parsed once: for the method's label and for the engine (the engine's own
     * mcp_handle_stateless_text() parses with the same flags) */
    json_error_t jerr;
    json_t *msg = json_loadb(req->body, req->blen, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    sl->method = wire_method_label(msg);
    count_request(sl->method, "http");
    sl->stateless = true;
    bool pending = false;
    json_t *resp;
    if (msg) {
        resp = mcp_handle_stateless(shard_g.srv, msg, &ctx, &pending);
        json_decref(msg);
    } else {
        resp = mcp_parse_error_response(&jerr);
    }
    if (pending)
        return; /* the host's stateless_emit(final) answers */
    struct wire_reply r = {.st = mcp_stateless_http_status(resp), .stream = sl->nev ? 1 : 0};
    sl->stateless = false;
    pending_remove(sl);
    shard_reply(sl, &r, resp, NULL);
}

static void op_stateless_cancel(struct slot *sl, const struct wire_req *req)
{
    int rc = req->key ? mcp_stateless_cancel(shard_g.srv, req->key) : -1;
    reply_st(sl, rc == 0 ? 200 : 404, NULL, NULL);
}

/* ---- the admin shell's view of sessions (cmcpctl sessions / session show / kill) ---- */

static json_t *session_summary(struct sess *s)
{
    json_t *dump = mcp_session_dump(s->ms);
    json_t *info = json_object_get(json_object_get(dump, "client"), "info");
    int pending = 0;
    for (struct slot *p = s->pending; p; p = p->next_pending)
        pending++;
    const char *proto = mcp_session_protocol(s->ms);
    json_t *o = json_pack("{s:s,s:s?,s:O?,s:f,s:i,s:i,s:b}", "sid", s->id, "protocol", proto,
                          "client", info, "idle_s", (cmcp_now_ms() - s->last_active) / 1000.0,
                          "requests", (int)s->used, "pending", pending, "stored", s->stored);
    if (mcp_session_is_task_home(s->ms)) /* holds a 2026 task (docs/tasks.md), no client */
        json_object_set_new(o, "task", json_true());
    json_decref(dump);
    return o;
}

static void op_session_list(struct slot *sl)
{
    json_t *arr = json_array();
    struct sess *s, *tmp;
    HASH_ITER(hh, shard_g.sessions, s, tmp)
    {
        json_array_append_new(arr, session_summary(s));
    }
    struct wire_reply r = {.st = 200};
    r.data = json_pack("{s:i,s:I,s:o}", "shard", shard_g.index, "count",
                       (json_int_t)shard_g.nsessions, "sessions", arr);
    shard_reply(sl, &r, NULL, NULL);
}

static void op_session_show(struct slot *sl, const struct wire_req *req)
{
    struct sess *s = sess_find(req->sid);
    if (!s) {
        reply_st(sl, 404, shard_rpc_error(NULL, -32001, "Session not found"),
              NULL);
        return;
    }
    json_t *o = session_summary(s);
    json_object_set_new(o, "state", mcp_session_dump(s->ms));
    json_object_set_new(o, "next_stream", json_integer(s->next_stream));
    json_object_set_new(o, "last_event_seq", json_integer(s->seq));
    struct wire_reply r = {.st = 200, .data = o};
    shard_reply(sl, &r, NULL, NULL);
}

/* verify_state: where each partition this shard's store holds stands (owned or a copy). */
static void op_positions(struct slot *sl)
{
    const struct cview *v = cview_get();
    struct wire_reply r = {.st = 200};
    r.data = json_pack("{s:i,s:s,s:o}", "shard", shard_g.index, "node", v->self_id,
                       "partitions", durable_positions());
    shard_reply(sl, &r, NULL, NULL);
}

/* A toolrun asks for its call's arguments, or hands over its result. */
static void op_tool(struct slot *sl, const struct wire_req *req)
{
    if (req->op == WIRE_TOOL_FETCH) {
        char *args = shard_tools_fetch(req->token);
        if (!args) {
            reply_st(sl, 404, NULL, NULL);
            return;
        }
        /* the arguments are JSON text already: straight out, past the gate (nothing changed) */
        struct wire_reply r = {.st = 200, .body = args, .blen = strlen(args)};
        links_reply(sl, &r);
        free(args);
        return;
    }
    int rc = shard_tools_result(req->token, req->body, req->blen);
    reply_st(sl, rc == 0 ? 200 : 404, NULL, NULL);
}

/*
 * A request for a session whose partition this node does not own (the map
 * moved it, or a listener's map is older than ours): answered 421 and not
 * applied, so that the listener refreshes its map and sends it to the owner
 * (calls.c). A shard never forwards: one node boundary at most.
 */
static bool refuse_not_owner(struct slot *sl, const struct wire_req *req)
{
    int p = cview_partition_of(req->sid);
    const struct cview *v = cview_get();
    if (p < 0 || !v->have_map || v->self < 0 || p >= v->npart || v->owner[p] == v->self)
        return false;
    const char *owner = v->owner[p] >= 0 ? cview_node_id(v->owner[p]) : NULL;
    char msg[300];
    snprintf(msg, sizeof(msg),
             "Not applied: this session's partition %d is owned by %s (epoch %llu), not by "
             "this node; send it there",
             p, owner ? owner : "no node yet", (unsigned long long)v->epoch[p]);
    reply_st(sl, 421, shard_rpc_error(NULL, -32001, msg), NULL);
    return true;
}

void shard_dispatch(struct slot *sl, const struct wire_req *req)
{
    /* (a stateless request names a session only when it is for a 2026 task: its home) */
    if (req->sid[0] &&
        (req->op == WIRE_MSG || req->op == WIRE_STREAM || req->op == WIRE_DELETE ||
         req->op == WIRE_STATELESS) &&
        refuse_not_owner(sl, req))
        return;
    switch (req->op) {
    case WIRE_MSG:
        op_msg(sl, req->sid[0] ? req->sid : NULL, req->tr, req->body, req->blen);
        return;
    case WIRE_STREAM:
        op_stream(sl, req);
        return;
    case WIRE_DELETE:
    case WIRE_SESSION_KILL:
        op_delete(sl, req);
        return;
    case WIRE_OPEN:
        op_open(sl);
        return;
    case WIRE_STATELESS:
        op_stateless(sl, req);
        return;
    case WIRE_STATELESS_CANCEL:
        op_stateless_cancel(sl, req);
        return;
    case WIRE_SESSION_LIST:
        op_session_list(sl);
        return;
    case WIRE_SESSION_SHOW:
        op_session_show(sl, req);
        return;
    case WIRE_TOOL_FETCH:
    case WIRE_TOOL_RESULT:
        op_tool(sl, req);
        return;
    case WIRE_POSITIONS:
        op_positions(sl);
        return;
    case WIRE_PING: /* over nng (a data link answers it before dispatch): alive */
        reply_st(sl, 200, NULL, NULL);
        return;
    case WIRE_OP_NONE:
    case WIRE_OP_COUNT:
        break;
    }
    reply_st(sl, 400, NULL, NULL);
}
