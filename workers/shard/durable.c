/*
 * A shard's sessions on disk (workers/store, LMDB): what makes "let it
 * crash" lose nothing.
 *
 * Every change the engine reports (session_changed) marks the session dirty.
 * Changes are committed at the end of the loop turn in the fsync and none
 * modes (what arrived together shares one commit, one fsync), or after
 * group_commit_ms in the group mode; the ack gate (gate.c) holds the replies
 * that follow them until then, and hears how the commit went. If a commit
 * fails (a full disk, the size cap) the sessions go back to their last
 * committed state, and reads go on.
 *
 * Server->client events are stored with the sessions (the newest max_events
 * of each), so Last-Event-ID resumption works across a shard's restart.
 * Sessions end after idle_timeout_ms unused, or abandoned_timeout_ms when
 * nobody used them after initialize.
 */
#define _GNU_SOURCE
#include "workers/shard/shard_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/cview.h"
#include "ipc/stats.h"

static struct {
    struct store *store;
    enum store_durability durability;
    double group_ms, idle_ms, abandoned_ms;
    ev_timer commit_w, sweep_w;
    struct sess *dirty;
    long commit_failures, refused;
    void (*committed)(int rc, const char *why);
} D;

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

/* The session as the store has it, after a failed commit left memory ahead of disk. */
static void roll_back(struct sess *s)
{
    json_t *rec = s->stored ? store_session_get(D.store, s->id) : NULL;
    char err[256];
    mcp_session *ms = rec ? mcp_session_restore(shard_g.srv, json_object_get(rec, "state"), err,
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

/*
 * Whether this node may acknowledge these writes: it holds a lease (the
 * cluster's split-brain detector says so, and the lease has not run out on
 * this process's own clock) and owns every partition the batch touches.
 * Otherwise the sentence a client reads.
 */
static bool may_commit(struct sess *batch, char *msg, size_t len, const char **label)
{
    *label = "reason=\"fenced\"";
    char why[300];
    if (!cview_may_write(cmcp_now_ms(), why, sizeof(why))) {
        snprintf(msg, len, "Not applied: %s. Retry shortly (another node may take over this "
                           "session's partition)",
                 why);
        return false;
    }
    *label = "reason=\"not_owner\"";
    for (struct sess *s = batch; s; s = s->next_dirty) {
        int p = cview_partition_of(s->id);
        if (!cview_owns(p)) {
            snprintf(msg, len, "Not applied: this node does not own partition %d of session %s "
                               "(the cluster moved it). Initialize a new session",
                     p, s->id);
            return false;
        }
    }
    return true;
}

/* Memory must not show what the disk refused. */
static void roll_back_batch(struct sess *batch)
{
    struct sess *s = batch;
    while (s) {
        struct sess *next = s->next_dirty;
        s->in_batch = false;
        roll_back(s);
        s = next;
    }
}

static void commit_now(void)
{
    ev_timer_stop(shard_g.loop, &D.commit_w);
    repl_apply_now(); /* replicas' changes staged this turn: their own commit */
    int rc = 0;
    struct sess *batch = D.dirty;
    D.dirty = NULL;
    if (!batch && !store_has_staged(D.store)) {
        D.committed(0, NULL); /* nothing to write: what waited on it goes, in order */
        return;
    }
    char msg[600];
    const char *label;
    if ((batch || store_has_staged(D.store)) && !may_commit(batch, msg, sizeof(msg), &label)) {
        store_discard(D.store);
        D.refused++;
        stats_counter("cmcp_writes_refused_total", label)->value += 1;
        for (struct sess *s = batch; s; s = s->next_dirty) {
            s->dirty = false;
            s->in_batch = true;
        }
        D.committed(-EAGAIN, msg);
        roll_back_batch(batch);
        return;
    }
    for (struct sess *s = batch; s; s = s->next_dirty) {
        s->dirty = false;
        s->in_batch = true;
        json_t *rec = record_of(s);
        if (!rec || store_session_put(D.store, s->id, rec) != 0)
            rc = rc ? rc : -ENOMEM;
        json_decref(rec);
    }
    bool replicating = rc == 0 && repl_active(), sent = false;
    if (replicating)
        rc = repl_collect(D.store); /* numbered changes, written with the data */
    if (rc == 0 && replicating) {
        repl_send(); /* the replicas write while this node does */
        sent = true;
    }
    if (rc == 0)
        rc = store_commit(D.store);
    else
        store_discard(D.store);
    if (rc == 0) {
        stats_counter("cmcp_store_commits_total", "of=\"own\"")->value += 1;
        for (struct sess *s = batch; s; s = s->next_dirty) {
            s->in_batch = false;
            s->stored = true;
        }
        if (replicating)
            repl_round(gate_seal()); /* the replies go once the replicas have it */
        else
            D.committed(0, NULL);
        return;
    }
    if (sent) {
        /* the replicas may hold what this node could not write: never "not applied" */
        repl_round_dropped();
        D.commit_failures++;
        stats_counter("cmcp_store_commit_failures_total", "")->value += 1;
        const char *why = store_errmsg(D.store);
        log_error("store_commit_failed", "{s:s,s:i}", "error", why ? why : strerror(-rc), "errno",
                  -rc);
        snprintf(msg, sizeof(msg),
                 "Could not save the change on this node (%s), but its copies on other nodes may "
                 "have it: its outcome is unknown. Read the session's state again before "
                 "retrying",
                 rc == -ENOSPC ? "the session store is full" : why ? why : strerror(-rc));
        D.committed(rc, msg);
        roll_back_batch(batch);
        return;
    }
    if (replicating)
        repl_collect_abort();
    if (rc == -ESTALE) {
        D.refused++;
        stats_counter("cmcp_writes_refused_total", "reason=\"not_owner\"")->value += 1;
        D.committed(rc, "Not applied: this node no longer owns the session's partition (the "
                        "cluster moved it). Retry: the new owner serves it");
        roll_back_batch(batch);
        return;
    }
    D.commit_failures++;
    stats_counter("cmcp_store_commit_failures_total", "")->value += 1;
    const char *why = store_errmsg(D.store);
    log_error("store_commit_failed", "{s:s,s:i}", "error", why ? why : strerror(-rc), "errno", -rc);
    snprintf(msg, sizeof(msg),
             "Could not save the change: %s. It was not applied; retry once the node's data "
             "directory has room",
             rc == -ENOSPC ? "the session store is full" : why ? why : strerror(-rc));
    D.committed(rc, msg);
    roll_back_batch(batch);
}

static void commit_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    commit_now();
}

bool durable_pending(void)
{
    return D.dirty || store_has_staged(D.store);
}

void durable_commit_soon(void)
{
    if (!ev_is_active(&D.commit_w)) {
        ev_timer_set(&D.commit_w, D.durability == STORE_GROUP ? D.group_ms / 1000.0 : 0.0, 0);
        ev_timer_start(shard_g.loop, &D.commit_w);
    }
}

void durable_flush(void)
{
    /* A scheduled commit may have replies waiting on it even with nothing left to write. */
    if (durable_pending() || ev_is_active(&D.commit_w))
        commit_now();
}

void durable_changed(struct sess *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->next_dirty = D.dirty;
    D.dirty = s;
}

void durable_event(struct sess *s, int stream, int64_t seq, bool final, const char *text)
{
    repl_apply_now(); /* staged writes are this node's own or its replicas', never both */
    if (store_event_put(D.store, s->id, stream, seq, final, text) != 0)
        log_warn("event_not_stored", "{s:s,s:s}", "sid", s->id, "error", store_errmsg(D.store));
    durable_commit_soon();
}

void durable_unlist(struct sess *s)
{
    for (struct sess **pp = &D.dirty; *pp; pp = &(*pp)->next_dirty)
        if (*pp == s) {
            *pp = s->next_dirty;
            break;
        }
}

/* The session ends: out of memory, and out of the store with the next commit. */
void durable_forget(struct sess *s)
{
    durable_unlist(s);
    if (s->stored || s->in_batch) {
        repl_apply_now();
        store_session_del(D.store, s->id);
        durable_commit_soon();
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
    store_events_foreach(D.store, s->id, stream, 0, replay_cb, &r);
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
    store_trim(D.store); /* what the last commits and reads mapped of the store's file */
    double now = cmcp_now_ms();
    int64_t wall = (int64_t)wall_ms();
    struct sess *s, *tmp;
    HASH_ITER(hh, shard_g.sessions, s, tmp)
    {
        if (s->in_batch)
            continue;
        /* Tasks past their ttl go (a change of the session, committed like any other). */
        mcp_session_expire_tasks(s->ms, wall);
        if (s->pending)
            continue;
        if (mcp_session_is_task_home(s->ms)) { /* a 2026 task's: it goes with its task */
            if (mcp_session_task_count(s->ms) == 0)
                sess_remove(s, "task expired");
            continue;
        }
        bool abandoned = s->used == 0;
        double limit = abandoned ? D.abandoned_ms : D.idle_ms;
        if (now - s->last_active < limit)
            continue;
        if (abandoned)
            shard_g.abandoned++;
        else
            shard_g.expired++;
        sess_remove(s, abandoned ? "abandoned" : "idle");
    }
}

/* ---- opening and recovery ---- */

static int recover_cb(void *ud, const char *sid, json_t *rec)
{
    (void)ud;
    /* with replicas, the store also holds copies of other owners' partitions: not ours */
    if (repl_active() && !cview_owns(cview_partition_of(sid)))
        return 0;
    durable_restore(sid, rec);
    return 0;
}

void durable_restore(const char *sid, json_t *rec)
{
    char err[256];
    mcp_session *ms = mcp_session_restore(shard_g.srv, json_object_get(rec, "state"), err, sizeof(err));
    if (!ms) {
        log_warn("session_unreadable", "{s:s,s:s,s:s}", "sid", sid, "error", err, "action",
                 "dropped");
        repl_apply_now();
        store_session_del(D.store, sid);
        return;
    }
    struct sess *s = sess_insert(sid, ms);
    if (!s) {
        mcp_session_free(ms);
        return;
    }
    s->next_stream = (int)json_integer_value(json_object_get(rec, "next_stream"));
    s->used = (unsigned)json_integer_value(json_object_get(rec, "used"));
    s->seq = store_last_seq(D.store, sid);
    s->stored = true;
    /* A restart gives every session a fresh idle period rather than ending it at once. */
    s->last_active = cmcp_now_ms();
    shard_g.recovered++;
}


int durable_open(void (*committed)(int rc, const char *why), char *err, size_t errlen)
{
    struct cfg *c = &shard_g.a->cfg;
    D.committed = committed;
    const char *data_dir = cfg_get(c, "node", "data_dir", "./var/data");
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/shard-%d", data_dir, shard_g.index);
    if (cmcp_mkdir_p(data_dir, 0755) != 0) {
        snprintf(err, errlen, "cannot create data directory %s: %s ([node] data_dir)", data_dir,
                 strerror(errno));
        return -1;
    }
    store_durability_parse(cfg_get(c, "sessions", "durability", "fsync"), &D.durability);
    D.group_ms = (double)cfg_get_long(c, "sessions", "group_commit_ms", 2);
    D.idle_ms = (double)cfg_get_long(c, "sessions", "idle_timeout_ms", 1800000);
    D.abandoned_ms = (double)cfg_get_long(c, "sessions", "abandoned_timeout_ms", 60000);
    struct store_opts o = {dir, D.durability,
                           (size_t)cfg_get_long(c, "sessions", "store_max_bytes", 1L << 30),
                           (int)cfg_get_long(c, "sessions", "max_events", 256)};
    char *report = NULL;
    if (store_open(&D.store, &o, &report, err, errlen) != 0)
        return -1;
    if (report) {
        /* A damaged store was salvaged or moved aside: say so loudly, and go on serving. */
        log_error("store_repaired", "{s:s,s:s}", "dir", dir, "report", report);
        free(report);
    }
    ev_init(&D.commit_w, commit_cb);
    double t0 = cmcp_now_ms();
    store_session_foreach(D.store, recover_cb, NULL);
    if (repl_start(D.store, err, errlen) != 0)
        return -1;
    if (store_has_staged(D.store))
        store_commit(D.store);
    stats_counter("cmcp_sessions_recovered_total", "")->value += (double)shard_g.recovered;
    log_info("sessions_recovered", "{s:s,s:I,s:f,s:s}", "dir", dir, "sessions",
             (json_int_t)shard_g.recovered, "ms", cmcp_now_ms() - t0, "durability",
             store_durability_name(D.durability));
    double every = (D.abandoned_ms < D.idle_ms ? D.abandoned_ms : D.idle_ms) / 10.0;
    if (every > 1000)
        every = 1000;
    ev_timer_init(&D.sweep_w, sweep_cb, every / 1000.0, every / 1000.0);
    ev_timer_start(shard_g.loop, &D.sweep_w);
    return 0;
}

void durable_close(void)
{
    if (!D.store)
        return;
    durable_flush();
    repl_stop();
    ev_timer_stop(shard_g.loop, &D.sweep_w);
    ev_timer_stop(shard_g.loop, &D.commit_w);
    store_close(D.store);
    D.store = NULL;
}

json_t *durable_positions(void)
{
    json_t *arr = json_array();
    const struct cview *v = cview_get();
    int npart = v->have_map ? v->npart : 0;
    for (int p = shard_g.index; D.store && p < npart; p += shard_g.nshards) {
        uint64_t epoch = 0, seq = 0, chain = 0;
        if (store_position_chain(D.store, p, &epoch, &seq, &chain) != 0 || seq == 0)
            continue;
        char hex[17];
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)chain);
        json_array_append_new(arr, json_pack("[i,I,I,s]", p, (json_int_t)epoch,
                                             (json_int_t)seq, hex));
    }
    return arr;
}
