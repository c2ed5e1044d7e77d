/*
 * Role `shard`: owns the MCP sessions whose ids name it. Listeners send it
 * client messages over their data links (ipc/dlink.h); it runs them through
 * the MCP engine and answers on the same link, after the server->client
 * messages (progress, log messages, server requests) the request made, in
 * order. Session-wide messages go to every listener; the one holding the
 * session's standalone stream delivers them. Control requests (the admin
 * shell, tool runs) come over nng req/rep. Sessions and their
 * events live in the shard's store (shard_durable.c), so a shard killed with
 * SIGKILL comes back with every session it acknowledged, and a client that
 * lost its stream resumes it with Last-Event-ID, also across restarts.
 */
#define _GNU_SOURCE
#include "shard.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "cmcp.h"
#include "log.h"
#include "shard_internal.h"
#include "shard_tools.h"
#include "control.h"
#include "stats.h"

struct shard g;

/* ---- metrics (docs/operations.md) ---- */

/*
 * Method labels are a fixed set: a client sending made-up method names must not
 * make the metrics grow without bound.
 */
static const char *const known_methods[] = {
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel", "server/discover",
    "notifications/initialized", "notifications/cancelled", "notifications/roots/list_changed",
    NULL};

static const char *method_label(const json_t *msg)
{
    if (json_is_array(msg))
        return "batch";
    const char *m = json_string_value(json_object_get(msg, "method"));
    if (!m)
        return json_object_get(msg, "id") ? "response" : "invalid";
    for (int i = 0; known_methods[i]; i++)
        if (strcmp(known_methods[i], m) == 0)
            return known_methods[i];
    return "other";
}

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

static void gauge_sessions(void)
{
    stats_gauge("cmcp_sessions_active", "")->value = (double)g.nsessions;
}

/* ---- session ids ---- */

void shard_session_id_new(char *buf, size_t len, int shard)
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char rnd[26];
    randombytes_buf(rnd, sizeof(rnd));
    int n = snprintf(buf, len, "%d-", shard);
    for (size_t i = 0; i < sizeof(rnd) && (size_t)n + 1 < len; i++)
        buf[n++] = b32[rnd[i] & 31];
    buf[n] = '\0';
}

int shard_of_session(const char *sid)
{
    if (!sid || sid[0] < '0' || sid[0] > '9')
        return -1;
    char *end;
    long v = strtol(sid, &end, 10);
    if (*end != '-' || v < 0 || v > 4095 || strlen(end + 1) != 26)
        return -1;
    return (int)v;
}

/* ---- sessions ---- */

struct sess *sess_find(const char *id)
{
    struct sess *s = NULL;
    if (id)
        HASH_FIND_STR(g.sessions, id, s);
    return s;
}

struct sess *sess_insert(const char *id, mcp_session *ms)
{
    struct sess *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->ms = ms;
    s->last_active = cmcp_now_ms();
    HASH_ADD_STR(g.sessions, id, s);
    g.nsessions++;
    gauge_sessions();
    return s;
}

static void pending_remove(struct slot *sl);
static void reply(struct slot *sl, json_t *hdr, json_t *body, struct sess *s);

/* Ends a session: its requests in flight end without an answer. */
void sess_remove(struct sess *s, const char *why)
{
    while (s->pending) {
        struct slot *p = s->pending;
        pending_remove(p);
        reply(p, json_pack("{s:i,s:b}", "st", 404, "cancelled", 1), NULL, NULL);
    }
    durable_forget(s);
    HASH_DEL(g.sessions, s);
    g.nsessions--;
    const char *event = strcmp(why, "deleted") == 0                                 ? "session_deleted"
                        : strcmp(why, "idle") == 0 || strcmp(why, "abandoned") == 0 ? "session_expired"
                                                                                    : "session_closed";
    log_info(event, "{s:s,s:s}", "sid", s->id, "reason", why);
    char labels[80];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", why);
    stats_counter("cmcp_sessions_closed_total", labels)->value += 1;
    gauge_sessions();
    mcp_session_free(s->ms);
    free(s);
}

/* Shutdown: out of memory only, the store keeps them. */
static void sess_drop_all(void)
{
    struct sess *s, *tmp;
    HASH_ITER(hh, g.sessions, s, tmp)
    {
        HASH_DEL(g.sessions, s);
        mcp_session_free(s->ms);
        free(s);
    }
    g.nsessions = 0;
}

/* ---- replies ---- */

static void slot_recv(struct slot *sl);

/* ---- data links from the listeners ---- */

#define PEER_PAUSE_BYTES (8u << 20)  /* a listener this far behind reading its answers... */
#define PEER_RESUME_BYTES (1u << 20) /* ...is not read from until it caught up to this */

static void peer_unref(struct dpeer *p)
{
    if (--p->refs == 0 && !p->dl)
        free(p);
}

/* Queues a frame for a data link (hdr NULL: it was queued already; only the backlog check). */
static void peer_send(struct dpeer *p, const json_t *hdr, const char *text, size_t len)
{
    if (!p || !p->dl)
        return; /* the listener went away: nobody waits for this */
    if (hdr && dlink_send(p->dl, hdr, text, len) != 0) {
        log_error("reply_failed", "{s:s}", "error", "out of memory or message too large");
        return;
    }
    if (!p->paused && dlink_backlog(p->dl) > PEER_PAUSE_BYTES) {
        p->paused = true;
        dlink_pause_reading(p->dl, true);
    }
}

/* A data slot's life ends with its answer. */
static void slot_release(struct slot *sl)
{
    if (sl->sess)
        pending_remove(sl);
    json_decref(sl->rid);
    json_decref(sl->batch);
    json_decref(sl->batch_ids);
    peer_unref(sl->peer);
    free(sl);
}

static void slot_send_text(struct slot *sl, json_t *hdr, const char *text, size_t len)
{
    if (sl->peer) {
        json_t *st = json_object_get(hdr, "st"), *sid = json_object_get(hdr, "sid");
        if (json_is_integer(st) && json_object_size(hdr) == 1u + (sid != NULL) &&
            (!sid || json_is_string(sid))) {
            /* a plain answer: a status and maybe the new session (dlink.h, compact records) */
            struct dpeer *p = sl->peer;
            if (p->dl && dlink_send_reply(p->dl, sl->dtok, (int)json_integer_value(st),
                                          json_string_value(sid), text, len) != 0)
                log_error("reply_failed", "{s:s}", "error", "out of memory or message too large");
            if (p->dl)
                peer_send(p, NULL, NULL, 0);
        } else {
            json_object_set_new(hdr, "tok", json_integer((json_int_t)sl->dtok));
            peer_send(sl->peer, hdr, text, len);
        }
        slot_release(sl);
        return;
    }
    nng_msg *m = ipc_envelope(hdr, text, len);
    if (!m) {
        log_error("reply_failed", "{s:s}", "error", "out of memory");
        slot_recv(sl);
        return;
    }
    sl->sending = true;
    nng_aio_set_msg(sl->aio, m);
    nng_ctx_send(sl->ctx, sl->aio);
}

void slot_send(struct slot *sl, json_t *hdr, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    slot_send_text(sl, hdr, text ? text : "", text ? strlen(text) : 0);
    free(text);
    json_decref(hdr);
    json_decref(body);
}

/* An event of a request goes on its link; one of the session as a whole to every listener. */
static void emit_frame(struct slot *sl, json_t *h, const char *text)
{
    size_t len = strlen(text);
    if (sl) {
        json_object_set_new(h, "tok", json_integer((json_int_t)sl->dtok));
        json_object_set_new(h, "ev", json_true());
        peer_send(sl->peer, h, text, len);
    } else {
        for (struct dpeer *p = g.peers; p; p = p->next)
            peer_send(p, h, text, len);
    }
    json_decref(h);
}

/* Every reply goes out after the changes before it are committed (shard_durable.c). */
static void reply(struct slot *sl, json_t *hdr, json_t *body, struct sess *s)
{
    count_error(sl->method, body);
    sl->method = NULL;
    durable_reply(sl, hdr, body, s);
}

json_t *rpc_error(const json_t *id, int code, const char *msg)
{
    return mcp_error_response(id, code, msg, NULL);
}

static void pending_remove(struct slot *sl)
{
    struct sess *s = sl->sess;
    if (s) {
        for (struct slot **pp = &s->pending; *pp; pp = &(*pp)->next_pending)
            if (*pp == sl) {
                *pp = sl->next_pending;
                break;
            }
    }
    json_decref(sl->rid);
    json_decref(sl->batch);
    json_decref(sl->batch_ids);
    sl->rid = sl->batch = sl->batch_ids = NULL;
    sl->sess = NULL;
    sl->stream = sl->nev = 0;
    sl->last_seq = 0;
    sl->stateless = false;
    sl->next_pending = NULL;
}

static struct slot *pending_find(struct sess *s, const json_t *rid)
{
    for (struct slot *sl = s->pending; sl; sl = sl->next_pending)
        if (rid && json_equal(sl->rid, rid))
            return sl;
    return NULL;
}

/*
 * A request is over: tell the listener how many events it published, and
 * when it streamed, keep its response as the stream's last event so that a
 * resumed stream ends with it.
 */
static void request_end(struct sess *s, struct slot *sl, json_t *hdr, const json_t *resp)
{
    if (!sl->sess)
        return;
    if (sl->stream) {
        char *text = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
        if (text) {
            durable_event(s, sl->stream, ++s->seq, true, text);
            json_object_set_new(hdr, "seq", json_integer(s->seq));
            free(text);
        }
        json_object_set_new(hdr, "stream", json_integer(sl->stream));
    }
    pending_remove(sl);
}

/* A response for a member of a pending batch: the batch is answered when its last one is. */
static bool batch_member_done(struct sess *s, const json_t *rel, json_t *msg)
{
    for (struct slot *sl = s->pending; sl; sl = sl->next_pending) {
        if (!sl->batch_ids)
            continue;
        size_t i;
        json_t *id;
        json_array_foreach(sl->batch_ids, i, id)
        {
            if (!json_equal(id, rel))
                continue;
            json_array_remove(sl->batch_ids, i);
            if (msg)
                json_array_append_new(sl->batch, msg);
            if (json_array_size(sl->batch_ids) == 0) {
                json_t *batch = sl->batch;
                json_decref(sl->batch_ids);
                sl->batch = sl->batch_ids = NULL;
                pending_remove(sl);
                reply(sl, json_pack("{s:i}", "st", json_array_size(batch) ? 200 : 202),
                      json_array_size(batch) ? batch : NULL, s);
                if (!json_array_size(batch))
                    json_decref(batch);
            }
            return true;
        }
    }
    return false;
}

/* ---- the engine's host ---- */

static void publish(struct sess *s, struct slot *sl, int stream, long seq, const char *text)
{
    emit_frame(sl, json_pack("{s:s,s:i,s:I}", "sid", s->id, "stream", stream, "seq", (json_int_t)seq),
               text);
}

/*
 * A stateless (2026-07-28) request's messages: its transient session names
 * the slot. Nothing is stored: that revision has no resumption.
 */
static void stateless_emit(struct slot *sl, json_t *msg, bool final)
{
    if (final) {
        json_t *hdr = json_pack("{s:i}", "st", mcp_stateless_http_status(msg));
        if (!msg)
            json_object_set_new(hdr, "cancelled", json_true());
        if (sl->nev)
            json_object_set_new(hdr, "stream", json_integer(1));
        sl->stateless = false;
        pending_remove(sl);
        reply(sl, hdr, msg, NULL);
        return;
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return;
    sl->nev++;
    emit_frame(sl, json_pack("{s:s,s:i,s:i}", "sid", "-", "stream", 1, "seq", sl->nev), text);
    free(text);
}

static void host_emit(void *host, mcp_session *ms, const json_t *rel, json_t *msg, bool final)
{
    (void)host;
    if (mcp_session_is_stateless(ms)) {
        struct slot *sl = mcp_session_userdata(ms);
        if (sl)
            stateless_emit(sl, msg, final);
        else
            json_decref(msg);
        return;
    }
    struct sess *s = sess_find(mcp_session_id(ms));
    if (!s) {
        json_decref(msg);
        return;
    }
    struct slot *sl = rel ? pending_find(s, rel) : NULL;
    if (final && !sl && rel && batch_member_done(s, rel, msg))
        return;
    if (final) {
        if (!sl) {
            json_decref(msg);
            return;
        }
        json_t *hdr = json_pack("{s:i}", "st", msg ? 200 : 202);
        if (!msg)
            json_object_set_new(hdr, "cancelled", json_true());
        request_end(s, sl, hdr, msg);
        reply(sl, hdr, msg, s);
        return;
    }
    int stream = 0;
    if (sl) {
        if (!sl->stream)
            sl->stream = ++s->next_stream;
        stream = sl->stream;
        sl->nev++;
    }
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (!text)
        return;
    int64_t seq = ++s->seq;
    if (sl)
        sl->last_seq = seq;
    durable_event(s, stream, seq, false, text);
    publish(s, sl, stream, seq, text);
    free(text);
}

struct shard_timer {
    ev_timer w;
    void (*cb)(void *);
    void *arg;
};

static void timer_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct shard_timer *t = (struct shard_timer *)w;
    void (*cb)(void *) = t->cb;
    void *arg = t->arg;
    free(t);
    cb(arg);
}

static void *host_timer_add(void *host, double after_ms, void (*cb)(void *), void *arg)
{
    (void)host;
    struct shard_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cb = cb;
    t->arg = arg;
    ev_timer_init(&t->w, timer_fire, after_ms / 1000.0, 0);
    ev_timer_start(g.loop, &t->w);
    return t;
}

static void host_timer_cancel(void *host, void *timer)
{
    (void)host;
    struct shard_timer *t = timer;
    if (!t)
        return;
    ev_timer_stop(g.loop, &t->w);
    free(t);
}

/*
 * Ends the SSE stream of a request that goes on (SEP-1699): the listener
 * closes the client's stream after a priming event, the client reconnects
 * with Last-Event-ID, and the rest of the request arrives on that stream.
 */
static void host_close_stream(void *host, mcp_session *ms, const json_t *rel)
{
    (void)host;
    struct sess *s = sess_find(mcp_session_id(ms));
    struct slot *sl = s && rel ? pending_find(s, rel) : NULL;
    if (!sl)
        return;
    if (!sl->stream)
        sl->stream = ++s->next_stream;
    int64_t last = sl->last_seq;
    sl->nev++;
    emit_frame(sl, json_pack("{s:s,s:i,s:I,s:b}", "sid", s->id, "stream", sl->stream, "seq",
                             (json_int_t)last, "close", 1),
               "");
}

/* The engine changed a session's durable state: it is written before the next reply. */
static void host_changed(void *host, mcp_session *ms)
{
    (void)host;
    struct sess *s = sess_find(mcp_session_id(ms));
    if (s)
        durable_changed(s);
}

static const struct mcp_host_ops host_ops = {host_emit, host_timer_add, host_timer_cancel, host_changed,
                                             host_close_stream};

/* ---- requests ---- */

/* The session nobody used after initialize that has waited longest, or NULL. */
static struct sess *oldest_abandoned(void)
{
    struct sess *best = NULL, *s, *tmp;
    HASH_ITER(hh, g.sessions, s, tmp)
    {
        if (s->used == 0 && !s->pending && !s->in_batch &&
            (!best || s->last_active < best->last_active))
            best = s;
    }
    return best;
}

/* A new session, or NULL after answering why not (the cap). */
static struct sess *sess_create(struct slot *sl, json_t *rid)
{
    if (g.nsessions >= g.max_sessions) {
        /* At the cap, a session nobody used since its initialize makes room first: clients
         * that initialize for every request and never DELETE must not lock others out. */
        struct sess *victim = oldest_abandoned();
        if (victim) {
            g.abandoned++;
            sess_remove(victim, "abandoned");
        }
    }
    if (g.nsessions >= g.max_sessions) {
        log_warn("session_refused", "{s:s,s:I}", "reason", "session cap reached", "max",
                 (json_int_t)g.max_sessions);
        reply(sl, json_pack("{s:i}", "st", 503),
              rpc_error(rid, -32000,
                        "Too many sessions on this node; retry later or close unused sessions"),
              NULL);
        return NULL;
    }
    char id[64];
    shard_session_id_new(id, sizeof(id), g.index);
    mcp_session *ms = mcp_session_new(g.srv, id);
    struct sess *s = ms ? sess_insert(id, ms) : NULL;
    if (!s) {
        if (ms)
            mcp_session_free(ms);
        reply(sl, json_pack("{s:i}", "st", 503), rpc_error(rid, -32603, "Out of memory"), NULL);
        return NULL;
    }
    g.created++;
    stats_counter("cmcp_sessions_created_total", "")->value += 1;
    return s;
}

/*
 * A session before its initialize: the legacy HTTP+SSE transport names the
 * session in the endpoint it announces, before the client says anything.
 */
static void op_open(struct slot *sl)
{
    struct sess *s = sess_create(sl, NULL);
    if (s)
        reply(sl, json_pack("{s:i,s:s}", "st", 200, "sid", s->id), NULL, s);
}

static void op_msg(struct slot *sl, const char *sid, const char *tr, const char *body, size_t blen)
{
    json_error_t jerr;
    json_t *msg = json_loadb(body, blen, JSON_REJECT_DUPLICATES, &jerr);
    if (!msg) {
        char m[200];
        snprintf(m, sizeof(m), "Parse error: %s", jerr.text);
        reply(sl, json_pack("{s:i}", "st", 400), rpc_error(NULL, -32700, m), NULL);
        return;
    }
    sl->method = method_label(msg);
    count_request(sl->method, tr);
    struct sess *s = NULL;
    bool created = false;
    if (!sid) {
        const char *method = json_string_value(json_object_get(msg, "method"));
        if (!method || strcmp(method, "initialize") != 0) {
            reply(sl, json_pack("{s:i}", "st", 400),
                  rpc_error(json_object_get(msg, "id"), -32600,
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
        s = sess_find(sid);
        if (!s) {
            reply(sl, json_pack("{s:i}", "st", 404),
                  rpc_error(json_object_get(msg, "id"), -32001,
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
        resp = mcp_handle_batch(g.srv, s->ms, msg, &npending);
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
            sl->sess = s;
            sl->next_pending = s->pending;
            s->pending = sl;
            json_decref(msg);
            return;
        }
    } else {
        /* Register first: the engine may emit for this request before returning. */
        json_t *rid = json_object_get(msg, "id");
        if (rid && json_object_get(msg, "method")) {
            sl->sess = s;
            sl->rid = json_incref(rid);
            sl->next_pending = s->pending;
            s->pending = sl;
        }
        resp = mcp_handle(g.srv, s->ms, msg, &pending);
    }
    json_decref(msg);
    if (pending)
        return; /* the engine answers through host_emit(final) */
    json_t *rh = json_pack("{s:i}", "st", resp ? 200 : 202);
    request_end(s, sl, rh, resp);
    if (created) {
        bool ok = resp && !json_object_get(resp, "error") && mcp_session_initialized(s->ms);
        if (!ok && !mcp_session_protocol(s->ms)) {
            g.created--;
            sess_remove(s, "initialize failed");
            s = NULL;
        } else {
            json_object_set_new(rh, "sid", json_string(s->id));
            log_info("session_created", "{s:s,s:s}", "sid", s->id, "protocol",
                     mcp_session_protocol(s->ms) ? mcp_session_protocol(s->ms) : "?");
        }
    }
    reply(sl, rh, resp, s);
}

static void op_stream(struct slot *sl, json_t *hdr)
{
    struct sess *s = sess_find(json_string_value(json_object_get(hdr, "sid")));
    if (!s) {
        reply(sl, json_pack("{s:i}", "st", 404),
              rpc_error(NULL, -32001, "Session not found: initialize a new session"), NULL);
        return;
    }
    int stream = 0;
    int64_t after = 0;
    json_t *last = json_object_get(hdr, "last");
    if (json_is_array(last)) {
        stream = (int)json_integer_value(json_array_get(last, 0));
        after = (int64_t)json_integer_value(json_array_get(last, 1));
    }
    s->last_active = cmcp_now_ms();
    bool done = false;
    json_t *evs = durable_replay(s, stream, after, &done);
    reply(sl, json_pack("{s:i,s:i,s:o,s:b}", "st", 200, "stream", stream, "events", evs, "done",
                        stream != 0 && done),
          NULL, s);
}

static void op_delete(struct slot *sl, json_t *hdr)
{
    struct sess *s = sess_find(json_string_value(json_object_get(hdr, "sid")));
    if (!s) {
        reply(sl, json_pack("{s:i}", "st", 404), rpc_error(NULL, -32001, "Session not found"),
              NULL);
        return;
    }
    g.deleted++;
    sess_remove(s, "deleted");
    reply(sl, json_pack("{s:i}", "st", 200), NULL, NULL);
}

/*
 * A request of the stateless 2026-07-28 revision: no session; any shard serves
 * it (multi-round state travels sealed in the request, under the node's key).
 */
static void op_stateless(struct slot *sl, json_t *hdr, const char *body, size_t blen)
{
    char key[64];
    snprintf(key, sizeof(key), "%" JSON_INTEGER_FORMAT "-%" JSON_INTEGER_FORMAT,
             json_integer_value(json_object_get(hdr, "lid")),
             json_integer_value(json_object_get(hdr, "tok")));
    struct mcp_stateless_ctx ctx = {json_is_true(json_object_get(hdr, "http")),
                                    json_string_value(json_object_get(hdr, "pv")),
                                    json_string_value(json_object_get(hdr, "mm")),
                                    json_string_value(json_object_get(hdr, "mn")),
                                    key,
                                    sl,
                                    NULL};
    json_t *parsed = json_loadb(body, blen, 0, NULL);
    sl->method = method_label(parsed);
    json_decref(parsed);
    count_request(sl->method, "http");
    sl->stateless = true;
    bool pending = false;
    json_t *resp = mcp_handle_stateless_text(g.srv, body, blen, &ctx, &pending);
    if (pending)
        return; /* stateless_emit(final) answers */
    json_t *rh = json_pack("{s:i}", "st", mcp_stateless_http_status(resp));
    if (sl->nev)
        json_object_set_new(rh, "stream", json_integer(1));
    sl->stateless = false;
    pending_remove(sl);
    reply(sl, rh, resp, NULL);
}

static void op_stateless_cancel(struct slot *sl, json_t *hdr)
{
    const char *key = json_string_value(json_object_get(hdr, "key"));
    int rc = key ? mcp_stateless_cancel(g.srv, key) : -1;
    reply(sl, json_pack("{s:i}", "st", rc == 0 ? 200 : 404), NULL, NULL);
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
    json_decref(dump);
    return o;
}

static void op_session_list(struct slot *sl)
{
    json_t *arr = json_array();
    struct sess *s, *tmp;
    HASH_ITER(hh, g.sessions, s, tmp)
    {
        json_array_append_new(arr, session_summary(s));
    }
    reply(sl, json_pack("{s:i,s:i,s:I,s:o}", "st", 200, "shard", g.index, "count",
                        (json_int_t)g.nsessions, "sessions", arr),
          NULL, NULL);
}

static void op_session_show(struct slot *sl, json_t *hdr)
{
    struct sess *s = sess_find(json_string_value(json_object_get(hdr, "sid")));
    if (!s) {
        reply(sl, json_pack("{s:i}", "st", 404), rpc_error(NULL, -32001, "Session not found"),
              NULL);
        return;
    }
    json_t *o = session_summary(s);
    json_object_set_new(o, "state", mcp_session_dump(s->ms));
    json_object_set_new(o, "next_stream", json_integer(s->next_stream));
    json_object_set_new(o, "last_event_seq", json_integer(s->seq));
    reply(sl, json_pack("{s:i,s:o}", "st", 200, "session", o), NULL, NULL);
}

/* A toolrun asks for its call's arguments, or hands over its result. */
static void op_tool(struct slot *sl, json_t *hdr, const char *body, size_t blen, bool fetch)
{
    const char *token = json_string_value(json_object_get(hdr, "token"));
    if (fetch) {
        char *args = shard_tools_fetch(token);
        if (!args) {
            reply(sl, json_pack("{s:i}", "st", 404), NULL, NULL);
            return;
        }
        json_t *h = json_pack("{s:i}", "st", 200);
        slot_send_text(sl, h, args, strlen(args));
        json_decref(h);
        free(args);
        return;
    }
    int rc = shard_tools_result(token, body, blen);
    reply(sl, json_pack("{s:i}", "st", rc == 0 ? 200 : 404), NULL, NULL);
}

static void dispatch(struct slot *sl, json_t *hdr, const char *body, size_t blen);

static void slot_run(struct ipc_item *it)
{
    struct slot *sl = (struct slot *)it;
    int rv = nng_aio_result(sl->aio);
    if (sl->sending) {
        sl->sending = false;
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(sl->aio));
            if (rv == NNG_ECLOSED)
                return;
        }
        slot_recv(sl);
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED)
            slot_recv(sl);
        return;
    }
    nng_msg *m = nng_aio_get_msg(sl->aio);
    json_t *hdr;
    const char *body;
    size_t blen;
    if (ipc_envelope_parse(m, &hdr, &body, &blen) != 0) {
        nng_msg_free(m);
        reply(sl, json_pack("{s:i}", "st", 400), NULL, NULL);
        return;
    }
    dispatch(sl, hdr, body, blen);
    json_decref(hdr);
    nng_msg_free(m);
}

static void dispatch(struct slot *sl, json_t *hdr, const char *body, size_t blen)
{
    const char *op = json_string_value(json_object_get(hdr, "op"));
    if (op && strcmp(op, "msg") == 0)
        op_msg(sl, json_string_value(json_object_get(hdr, "sid")),
               json_string_value(json_object_get(hdr, "tr")), body, blen);
    else if (op && strcmp(op, "stream") == 0)
        op_stream(sl, hdr);
    else if (op && (strcmp(op, "delete") == 0 || strcmp(op, "session_kill") == 0))
        op_delete(sl, hdr);
    else if (op && strcmp(op, "session_list") == 0)
        op_session_list(sl);
    else if (op && strcmp(op, "session_show") == 0)
        op_session_show(sl, hdr);
    else if (op && strcmp(op, "open") == 0)
        op_open(sl);
    else if (op && strcmp(op, "stateless") == 0)
        op_stateless(sl, hdr, body, blen);
    else if (op && strcmp(op, "stateless_cancel") == 0)
        op_stateless_cancel(sl, hdr);
    else if (op && (strcmp(op, "tool_fetch") == 0 || strcmp(op, "tool_result") == 0))
        op_tool(sl, hdr, body, blen, op[5] == 'f');
    else
        reply(sl, json_pack("{s:i}", "st", 400), NULL, NULL);
}

static void slot_aio_cb(void *arg)
{
    struct slot *sl = arg;
    ipc_bridge_post(&g.bridge, &sl->item);
}

static void slot_recv(struct slot *sl)
{
    nng_ctx_recv(sl->ctx, sl->aio);
}

static void peer_frame(struct dlink *dl, const char *data, size_t len)
{
    struct dpeer *p = dlink_ud(dl);
    if (len > 0 && data[0] == DLINK_REC_MSG) {
        /* the hot path: a client message, no JSON header to parse */
        struct dlink_msg m;
        struct slot *sl = dlink_msg_parse(data, len, &m) == 0 ? calloc(1, sizeof(*sl)) : NULL;
        if (!sl) {
            log_warn("frame_malformed", "{s:i}", "bytes", (int)len);
            return;
        }
        sl->peer = p;
        p->refs++;
        sl->dtok = m.tok;
        op_msg(sl, m.sid[0] ? m.sid : NULL, m.tr, m.body, m.blen);
        return;
    }
    json_t *hdr;
    const char *body;
    size_t blen;
    json_t *tok = NULL;
    if (dlink_envelope_split(data, len, &hdr, &body, &blen) != 0 ||
        !json_is_integer(tok = json_object_get(hdr, "tok"))) {
        /* Without its token nobody can be answered: a listener of another build? */
        log_warn("frame_malformed", "{s:i}", "bytes", (int)len);
        json_decref(hdr);
        return;
    }
    struct slot *sl = calloc(1, sizeof(*sl));
    if (!sl) {
        json_t *h = json_pack("{s:i}", "st", 503);
        json_object_set(h, "tok", tok);
        static const char e[] = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,"
                                "\"message\":\"Out of memory in the shard; retry later\"}}";
        peer_send(p, h, e, sizeof(e) - 1);
        json_decref(h);
        json_decref(hdr);
        return;
    }
    sl->peer = p;
    p->refs++;
    sl->dtok = (uint64_t)json_integer_value(tok);
    dispatch(sl, hdr, body, blen);
    json_decref(hdr);
}

static void peer_progress(struct dlink *dl)
{
    struct dpeer *p = dlink_ud(dl);
    if (p->paused && dlink_backlog(dl) < PEER_RESUME_BYTES) {
        p->paused = false;
        dlink_pause_reading(dl, false);
    }
}

static void peer_closed(struct dlink *dl, const char *why)
{
    struct dpeer *p = dlink_ud(dl);
    log_info("listener_link_closed", "{s:i,s:s}", "shard", g.index, "why", why);
    p->dl = NULL;
    if (p->prev)
        p->prev->next = p->next;
    else
        g.peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    /* Requests still being served keep it until they end (their answers go nowhere). */
    p->refs++;
    peer_unref(p);
}

static const struct dlink_ops peer_ops = {peer_frame, peer_progress, peer_closed};

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn("accept_failed", "{s:s}", "error", strerror(errno));
            return;
        }
        struct dpeer *p = calloc(1, sizeof(*p));
        if (!p) {
            close(fd);
            continue;
        }
        p->dl = dlink_new(fd, &peer_ops, p);
        if (!p->dl) {
            free(p);
            continue;
        }
        p->next = g.peers;
        if (g.peers)
            g.peers->prev = p;
        g.peers = p;
    }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    (void)w;
    ev_break(loop, EVBREAK_ALL);
}

/*
 * The key that seals a stateless request's multi-round state: the same in
 * every shard of the node (the root makes it, data_dir/state.key), so that
 * the next round may land on any shard.
 */
static int load_state_key(char *err, size_t errlen)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/state.key",
             cfg_get(&g.a->cfg, "node", "data_dir", "./var/data"));
    unsigned char key[32];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(key, 1, sizeof(key), f) : 0;
    if (f)
        fclose(f);
    if (n != sizeof(key)) {
        snprintf(err, errlen, "cannot read the node's state key %s (the root makes it at start)",
                 path);
        return -1;
    }
    int rc = mcp_server_set_state_key(g.srv, key, sizeof(key), err, errlen);
    sodium_memzero(key, sizeof(key));
    return rc;
}

int shard_main(struct proc_args *a)
{
    memset(&g, 0, sizeof(g));
    g.a = a;
    g.index = a->index < 0 ? 0 : a->index;
    long nshards = cfg_get_long(&a->cfg, "tree.shard", "count", 1);
    g.max_sessions = cfg_get_long(&a->cfg, "sessions", "max", 100000) / (nshards > 0 ? nshards : 1);
    if (g.max_sessions < 1)
        g.max_sessions = 1;
    char err[256];
    struct mcp_server_opts so = {cfg_get(&a->cfg, "tools", "packs", "core"), "cmcp", CMCP_VERSION,
                                 NULL, 100};
    g.srv = mcp_server_new(&so, &host_ops, &g, err, sizeof(err));
    if (!g.srv) {
        log_error("shard_start_failed", "{s:s}", "error", err);
        fprintf(stderr, "cmcpd: shard: %s\n", err);
        return CMCP_EXIT_USAGE;
    }
    if (load_state_key(err, sizeof(err)) != 0) {
        log_error("shard_start_failed", "{s:s}", "error", err);
        fprintf(stderr, "cmcpd: shard: %s\n", err);
        return CMCP_EXIT_FAILURE;
    }
    g.loop = ev_default_loop(EVFLAG_SIGNALFD);
    ipc_bridge_init(&g.bridge, g.loop);
    stats_init(g.loop, a->run_dir, "shard", a->id);
    control_subscribe(g.loop, a->run_dir, NULL); /* log_level from cmcpctl */
    if (shard_tools_init(g.srv, &a->cfg, a->run_dir, g.index, &g.bridge, err, sizeof(err)) != 0) {
        log_error("shard_start_failed", "{s:s}", "error", err);
        fprintf(stderr, "cmcpd: shard: %s\n", err);
        return CMCP_EXIT_USAGE;
    }
    /* Sessions come back before the shard listens, so no request misses one. */
    if (durable_open(err, sizeof(err)) != 0) {
        log_error("shard_start_failed", "{s:s}", "error", err);
        fprintf(stderr, "cmcpd: shard: %s\n", err);
        return CMCP_EXIT_FAILURE;
    }
    char addr[512];
    int rv;
    ipc_shard_req_address(addr, sizeof(addr), a->run_dir, g.index);
    if ((rv = nng_rep0_open(&g.rep)) != 0 || (rv = nng_listen(g.rep, addr, NULL, 0)) != 0) {
        log_error("listen_failed", "{s:s,s:s}", "address", addr, "error", nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    char data_path[512];
    dlink_shard_path(data_path, sizeof(data_path), a->run_dir, g.index);
    if ((g.data_fd = dlink_listen(data_path)) < 0) {
        log_error("listen_failed", "{s:s,s:s}", "address", data_path, "error", strerror(errno));
        return CMCP_EXIT_FAILURE;
    }
    dlink_init(g.loop);
    ev_io_init(&g.data_w, accept_cb, g.data_fd, EV_READ);
    ev_io_start(g.loop, &g.data_w);
    for (int i = 0; i < SHARD_SLOTS; i++) {
        struct slot *sl = &g.slots[i];
        sl->item.run = slot_run;
        if ((rv = nng_ctx_open(&sl->ctx, g.rep)) != 0 ||
            (rv = nng_aio_alloc(&sl->aio, slot_aio_cb, sl)) != 0) {
            log_error("shard_start_failed", "{s:s}", "error", nng_strerror(rv));
            return CMCP_EXIT_FAILURE;
        }
        slot_recv(sl);
    }
    ev_signal_init(&g.sigterm, on_signal, SIGTERM);
    ev_signal_start(g.loop, &g.sigterm);
    ev_signal_init(&g.sigint, on_signal, SIGINT);
    ev_signal_start(g.loop, &g.sigint);
    log_info("shard_ready", "{s:i,s:I,s:s}", "shard", g.index, "max_sessions",
             (json_int_t)g.max_sessions, "packs", so.packs);
    proc_notify_ready(a);
    ev_run(g.loop, 0);
    /* Stop: what is staged goes to disk; then close the sockets first so that no aio
     * callback runs into freed state. */
    durable_flush();
    shard_tools_shutdown();
    nng_close(g.rep);
    ev_io_stop(g.loop, &g.data_w);
    close(g.data_fd);
    unlink(data_path);
    while (g.peers) {
        struct dpeer *p = g.peers;
        g.peers = p->next;
        dlink_close(p->dl);
        p->dl = NULL; /* the slots that refer to it are not freed: the process ends */
    }
    for (int i = 0; i < SHARD_SLOTS; i++)
        nng_aio_free(g.slots[i].aio);
    durable_close();
    sess_drop_all();
    control_unsubscribe();
    stats_shutdown();
    mcp_server_free(g.srv);
    log_info("shard_stopped", "{s:i}", "shard", g.index);
    return 0;
}
