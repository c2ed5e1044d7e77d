/*
 * A shard's sessions on disk (workers/store, LMDB): what makes "let it
 * crash" lose nothing.
 *
 * Every change the engine reports (session_changed) marks the session dirty.
 * A reply that follows changes is held until they are committed: at the end
 * of the loop turn in the fsync and none modes (what arrived together shares
 * one commit, one fsync), or after group_commit_ms in the group mode. If a commit
 * fails (a full disk, the size cap) the held replies of the requests that
 * changed something turn into errors that say so, the sessions go back to
 * their last committed state, and reads go on.
 *
 * Server->client events are stored with the sessions (the newest max_events
 * of each), so Last-Event-ID resumption works across a shard's restart.
 * Sessions end after idle_timeout_ms unused, or abandoned_timeout_ms when
 * nobody used them after initialize.
 */
#define _GNU_SOURCE
#include "shard_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cmcp.h"
#include "log.h"
#include "stats.h"

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* What the store keeps of a session: the engine's state and the shard's own fields. */
static json_t *record_of(struct sess *s)
{
    json_t *state = mcp_session_dump(s->ms);
    if (!state)
        return NULL;
    return json_pack("{s:i,s:o,s:i,s:i,s:f}", "v", 1, "state", state, "next_stream",
                     s->next_stream, "used", (int)s->used, "saved_at", wall_ms());
}

static void send_all(struct held_reply *r)
{
    while (r) {
        struct held_reply *next = r->next;
        slot_send(r->sl, r->hdr, r->body);
        free(r);
        r = next;
    }
}

/* The session as the store has it, after a failed commit left memory ahead of disk. */
static void roll_back(struct sess *s)
{
    json_t *rec = s->stored ? store_session_get(g.store, s->id) : NULL;
    char err[256];
    mcp_session *ms = rec ? mcp_session_restore(g.srv, json_object_get(rec, "state"), err,
                                                sizeof(err))
                          : NULL;
    if (!ms) {
        /* Never committed (a session whose initialize failed to save): it does not exist. */
        json_decref(rec);
        sess_remove(s, "not saved");
        return;
    }
    mcp_session *old = s->ms;
    s->ms = ms;
    s->next_stream = (int)json_integer_value(json_object_get(rec, "next_stream"));
    json_decref(rec);
    mcp_session_free(old); /* its calls in flight end without an answer */
}

static void commit_now(void)
{
    ev_timer_stop(g.loop, &g.commit_w);
    int rc = 0;
    struct sess *batch = g.dirty;
    g.dirty = NULL;
    for (struct sess *s = batch; s; s = s->next_dirty) {
        s->dirty = false;
        s->in_batch = true;
        json_t *rec = record_of(s);
        if (!rec || store_session_put(g.store, s->id, rec) != 0)
            rc = rc ? rc : -ENOMEM;
        json_decref(rec);
    }
    if (rc == 0)
        rc = store_commit(g.store);
    struct held_reply *held = g.held;
    g.held = NULL;
    g.held_tail = &g.held;
    if (rc == 0) {
        for (struct sess *s = batch; s; s = s->next_dirty) {
            s->in_batch = false;
            s->stored = true;
        }
        send_all(held);
        return;
    }
    g.commit_failures++;
    stats_counter("cmcp_store_commit_failures_total", "")->value += 1;
    const char *why = store_errmsg(g.store);
    log_error("store_commit_failed", "{s:s,s:i}", "error", why ? why : strerror(-rc), "errno", -rc);
    char msg[400];
    snprintf(msg, sizeof(msg),
             "Could not save the change: %s. It was not applied; retry once the node's data "
             "directory has room",
             rc == -ENOSPC ? "the session store is full" : why ? why : strerror(-rc));
    for (struct held_reply *r = held; r; r = r->next) {
        if (!r->mutated || !r->sess || !r->sess->in_batch)
            continue;
        const json_t *id = json_object_get(r->body, "id");
        json_t *err = rpc_error(id, -32603, msg);
        json_decref(r->body);
        r->body = err;
        json_object_set_new(r->hdr, "st", json_integer(503));
        json_object_del(r->hdr, "sid"); /* a new session that could not be saved was not made */
    }
    send_all(held);
    /* Memory must not show what the disk refused. */
    struct sess *s = batch;
    while (s) {
        struct sess *next = s->next_dirty;
        s->in_batch = false;
        roll_back(s);
        s = next;
    }
}

static void commit_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    commit_now();
}

static bool work_pending(void)
{
    return g.dirty || g.held || store_has_staged(g.store);
}

/*
 * Commits soon: in the fsync and none modes once this turn of the loop has
 * handled what arrived with it (requests that came together share a commit,
 * and no reply waits for a later one), in group mode at the end of the window.
 */
static void commit_soon(void)
{
    if (!ev_is_active(&g.commit_w)) {
        ev_timer_set(&g.commit_w, g.durability == STORE_GROUP ? g.group_ms / 1000.0 : 0.0, 0);
        ev_timer_start(g.loop, &g.commit_w);
    }
}

void durable_flush(void)
{
    if (work_pending())
        commit_now();
}

void durable_reply(struct slot *sl, json_t *hdr, json_t *body, struct sess *s)
{
    if (!work_pending()) {
        slot_send(sl, hdr, body);
        return;
    }
    /* Replies leave in order, after the changes made before them are on disk: a read
     * never shows a change whose commit may still fail. */
    struct held_reply *r = calloc(1, sizeof(*r));
    if (!r) {
        commit_now();
        slot_send(sl, hdr, body);
        return;
    }
    r->sl = sl;
    r->hdr = hdr;
    r->body = body;
    r->sess = s;
    r->mutated = s && s->dirty;
    *g.held_tail = r;
    g.held_tail = &r->next;
    commit_soon();
}

void durable_changed(struct sess *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->next_dirty = g.dirty;
    g.dirty = s;
}

void durable_event(struct sess *s, int stream, int64_t seq, bool final, const char *text)
{
    if (store_event_put(g.store, s->id, stream, seq, final, text) != 0)
        log_warn("event_not_stored", "{s:s,s:s}", "sid", s->id, "error", store_errmsg(g.store));
    commit_soon();
}

/* The session ends: out of memory, and out of the store with the next commit. */
void durable_forget(struct sess *s)
{
    for (struct sess **pp = &g.dirty; *pp; pp = &(*pp)->next_dirty)
        if (*pp == s) {
            *pp = s->next_dirty;
            break;
        }
    for (struct held_reply *r = g.held; r; r = r->next)
        if (r->sess == s)
            r->sess = NULL;
    if (s->stored || s->in_batch) {
        store_session_del(g.store, s->id);
        commit_soon();
    }
}

struct replay {
    json_t *out;
    int64_t after;
    bool done;
};

static int replay_cb(void *ud, int stream, int64_t seq, bool final, const char *text)
{
    struct replay *r = ud;
    if (final)
        r->done = true;
    if (seq > r->after)
        json_array_append_new(r->out, json_pack("[i,I,s]", stream, (json_int_t)seq, text));
    return 0;
}

json_t *durable_replay(struct sess *s, int stream, int64_t after, bool *done)
{
    durable_flush(); /* what was emitted is on disk before it is read back */
    struct replay r = {json_array(), after, false};
    store_events_foreach(g.store, s->id, stream, 0, replay_cb, &r);
    *done = r.done || stream > s->next_stream;
    return r.out;
}

void durable_touch(struct sess *s, const json_t *msg)
{
    s->last_active = cmcp_now_ms();
    const char *m = json_string_value(json_object_get(msg, "method"));
    if (!m || (strcmp(m, "initialize") && strcmp(m, "notifications/initialized")))
        s->used++;
}

/* ---- expiry ---- */

static void sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    store_trim(g.store); /* what the last commits and reads mapped of the store's file */
    double now = cmcp_now_ms();
    struct sess *s, *tmp;
    HASH_ITER(hh, g.sessions, s, tmp)
    {
        if (s->pending || s->in_batch)
            continue;
        bool abandoned = s->used == 0;
        double limit = abandoned ? g.abandoned_ms : g.idle_ms;
        if (now - s->last_active < limit)
            continue;
        if (abandoned)
            g.abandoned++;
        else
            g.expired++;
        sess_remove(s, abandoned ? "abandoned" : "idle");
    }
}

/* ---- opening and recovery ---- */

static int recover_cb(void *ud, const char *sid, json_t *rec)
{
    (void)ud;
    char err[256];
    mcp_session *ms = mcp_session_restore(g.srv, json_object_get(rec, "state"), err, sizeof(err));
    if (!ms) {
        log_warn("session_unreadable", "{s:s,s:s,s:s}", "sid", sid, "error", err, "action",
                 "dropped");
        store_session_del(g.store, sid);
        return 0;
    }
    struct sess *s = sess_insert(sid, ms);
    if (!s) {
        mcp_session_free(ms);
        return 0;
    }
    s->next_stream = (int)json_integer_value(json_object_get(rec, "next_stream"));
    s->used = (unsigned)json_integer_value(json_object_get(rec, "used"));
    s->seq = store_last_seq(g.store, sid);
    s->stored = true;
    /* A restart gives every session a fresh idle period rather than ending it at once. */
    s->last_active = cmcp_now_ms();
    g.recovered++;
    return 0;
}


int durable_open(char *err, size_t errlen)
{
    struct cfg *c = &g.a->cfg;
    const char *data_dir = cfg_get(c, "node", "data_dir", "./var/data");
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/shard-%d", data_dir, g.index);
    if (cmcp_mkdir_p(data_dir, 0755) != 0) {
        snprintf(err, errlen, "cannot create data directory %s: %s ([node] data_dir)", data_dir,
                 strerror(errno));
        return -1;
    }
    store_durability_parse(cfg_get(c, "sessions", "durability", "fsync"), &g.durability);
    g.group_ms = (double)cfg_get_long(c, "sessions", "group_commit_ms", 2);
    g.idle_ms = (double)cfg_get_long(c, "sessions", "idle_timeout_ms", 1800000);
    g.abandoned_ms = (double)cfg_get_long(c, "sessions", "abandoned_timeout_ms", 60000);
    struct store_opts o = {dir, g.durability,
                           (size_t)cfg_get_long(c, "sessions", "store_max_bytes", 1L << 30),
                           (int)cfg_get_long(c, "sessions", "max_events", 256)};
    char *report = NULL;
    if (store_open(&g.store, &o, &report, err, errlen) != 0)
        return -1;
    if (report) {
        /* A damaged store was salvaged or moved aside: say so loudly, and go on serving. */
        log_error("store_repaired", "{s:s,s:s}", "dir", dir, "report", report);
        free(report);
    }
    g.held_tail = &g.held;
    ev_init(&g.commit_w, commit_cb);
    double t0 = cmcp_now_ms();
    store_session_foreach(g.store, recover_cb, NULL);
    if (store_has_staged(g.store))
        store_commit(g.store);
    stats_counter("cmcp_sessions_recovered_total", "")->value += (double)g.recovered;
    log_info("sessions_recovered", "{s:s,s:I,s:f,s:s}", "dir", dir, "sessions",
             (json_int_t)g.recovered, "ms", cmcp_now_ms() - t0, "durability",
             store_durability_name(g.durability));
    double every = (g.abandoned_ms < g.idle_ms ? g.abandoned_ms : g.idle_ms) / 10.0;
    if (every > 1000)
        every = 1000;
    ev_timer_init(&g.sweep_w, sweep_cb, every / 1000.0, every / 1000.0);
    ev_timer_start(g.loop, &g.sweep_w);
    return 0;
}

void durable_close(void)
{
    if (!g.store)
        return;
    durable_flush();
    ev_timer_stop(g.loop, &g.sweep_w);
    ev_timer_stop(g.loop, &g.commit_w);
    store_close(g.store);
    g.store = NULL;
}
