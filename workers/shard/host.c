/*
 * The MCP engine's host in a shard: what the engine says for a session (a
 * request's progress, log messages, server->client requests, its final
 * response) becomes events and replies on the link the request came by, in
 * order; what belongs to the session as a whole goes to every listener (the
 * one holding the session's standalone stream delivers it). Events are
 * stored with the session (durable.c) for Last-Event-ID resumption.
 */
#include "workers/shard/shard_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"

/* ---- a request's bookkeeping in its session ---- */

void pending_add(struct sess *s, struct slot *sl, const json_t *rid)
{
    sl->sess = s;
    sl->rid = rid ? json_incref((json_t *)rid) : NULL;
    sl->next_pending = s->pending;
    s->pending = sl;
}

void pending_remove(struct slot *sl)
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
void request_end(struct sess *s, struct slot *sl, struct wire_reply *r, const json_t *resp)
{
    if (!sl->sess)
        return;
    if (sl->stream) {
        char *text = resp ? jsonw_dumps(resp, NULL) : NULL;
        if (text) {
            durable_event(s, sl->stream, ++s->seq, true, text);
            r->seq = s->seq;
            free(text);
        }
        r->stream = sl->stream;
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
                struct wire_reply r = {.st = json_array_size(batch) ? 200 : 202};
                shard_reply(sl, &r, json_array_size(batch) ? batch : NULL, s);
                if (!json_array_size(batch))
                    json_decref(batch);
            }
            return true;
        }
    }
    return false;
}

/* ---- the engine's messages ---- */

static void emit(struct slot *sl, const char *sid, int stream, int64_t seq, const char *text,
                 bool close)
{
    struct wire_event e = {.stream = stream, .seq = seq, .close = close, .body = text,
                           .blen = strlen(text)};
    snprintf(e.sid, sizeof(e.sid), "%s", sid);
    links_event(sl, &e);
}

/*
 * A stateless (2026-07-28) request's messages: its transient session names
 * the slot. Nothing is stored: that revision has no resumption.
 */
static void stateless_emit(struct slot *sl, json_t *msg, bool final)
{
    if (final) {
        struct wire_reply r = {.st = mcp_stateless_http_status(msg),
                               .cancelled = !msg,
                               .stream = sl->nev ? 1 : 0};
        sl->stateless = false;
        pending_remove(sl);
        shard_reply(sl, &r, msg, NULL);
        return;
    }
    char *text = jsonw_dumps(msg, NULL);
    json_decref(msg);
    if (!text)
        return;
    sl->nev++;
    emit(sl, "-", 1, sl->nev, text, false);
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
        struct wire_reply r = {.st = msg ? 200 : 202, .cancelled = !msg};
        request_end(s, sl, &r, msg);
        shard_reply(sl, &r, msg, s);
        return;
    }
    int stream = 0;
    if (sl) {
        if (!sl->stream)
            sl->stream = ++s->next_stream;
        stream = sl->stream;
        sl->nev++;
    }
    char *text = jsonw_dumps(msg, NULL);
    json_decref(msg);
    if (!text)
        return;
    int64_t seq = ++s->seq;
    if (sl)
        sl->last_seq = seq;
    durable_event(s, stream, seq, false, text);
    if (stream == 0 && s->std_open)
        s->std_offered = seq; /* live on the GET stream: no later GET replays it */
    emit(sl, s->id, stream, seq, text, false);
    free(text);
}

/* ---- timers ---- */

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
    ev_timer_start(shard_g.loop, &t->w);
    return t;
}

static void host_timer_cancel(void *host, void *timer)
{
    (void)host;
    struct shard_timer *t = timer;
    if (!t)
        return;
    ev_timer_stop(shard_g.loop, &t->w);
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
    sl->nev++;
    emit(sl, s->id, sl->stream, sl->last_seq, "", true);
}

/* The engine changed a session's durable state: it is written before the next reply. */
static void host_changed(void *host, mcp_session *ms)
{
    (void)host;
    struct sess *s = sess_find(mcp_session_id(ms));
    if (s)
        durable_changed(s);
}

/* A server-wide change this shard's engine told its own sessions: the sibling shards tell
 * theirs (siblings.c). */
static void host_announce(void *host, const char *method, const char *uri)
{
    (void)host;
    siblings_announce(method, uri);
}

/* A stateless client's task lives in a session of its own, whose id is the task id. */
static mcp_session *host_task_home(void *host)
{
    (void)host;
    return sess_task_home();
}

static mcp_session *host_session_find(void *host, const char *id)
{
    (void)host;
    struct sess *s = sess_find(id);
    return s ? s->ms : NULL;
}

const struct mcp_host_ops shard_host_ops = {host_emit,      host_timer_add,    host_timer_cancel,
                                            host_changed,   host_close_stream, host_announce,
                                            host_task_home, host_session_find};
