/* The shard's session table: lookup, creation under the node's cap, removal. */
#include "workers/shard/shard_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/cview.h"
#include "ipc/route.h"
#include "ipc/stats.h"

static void gauge_sessions(void)
{
    stats_gauge("cmcp_sessions_active", "")->value = (double)shard_g.nsessions;
}

struct sess *sess_find(const char *id)
{
    struct sess *s = NULL;
    if (id)
        HASH_FIND_STR(shard_g.sessions, id, s);
    return s;
}

/* A client's session: the home of a 2026 task (its id is the task id) is not one, so a 2025
 * request, stream or DELETE naming it is told the session does not exist. */
struct sess *sess_find_client(const char *id)
{
    struct sess *s = sess_find(id);
    return s && !mcp_session_is_task_home(s->ms) ? s : NULL;
}

struct sess *sess_insert(const char *id, mcp_session *ms)
{
    struct sess *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->ms = ms;
    s->last_active = cmcp_now_ms();
    HASH_ADD_STR(shard_g.sessions, id, s);
    shard_g.nsessions++;
    gauge_sessions();
    return s;
}

/* Out of the table: its requests in flight end without an answer, held replies let go of it. */
static void detach(struct sess *s)
{
    while (s->pending) {
        struct slot *p = s->pending;
        pending_remove(p);
        struct wire_reply r = {.st = 404, .cancelled = true};
        shard_reply(p, &r, NULL, NULL);
    }
    gate_forget(s);
    HASH_DEL(shard_g.sessions, s);
    shard_g.nsessions--;
}

void sess_remove(struct sess *s, const char *why)
{
    detach(s);
    durable_forget(s);
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

void sess_unload(struct sess *s)
{
    detach(s);
    durable_unlist(s);
    gauge_sessions();
    mcp_session_free(s->ms);
    free(s);
}

/* Shutdown: out of memory only, the store keeps them. */
void sess_drop_all(void)
{
    struct sess *s, *tmp;
    HASH_ITER(hh, shard_g.sessions, s, tmp)
    {
        HASH_DEL(shard_g.sessions, s);
        mcp_session_free(s->ms);
        free(s);
    }
    shard_g.nsessions = 0;
}

/* The session nobody used after initialize that has waited longest, or NULL. */
static struct sess *oldest_abandoned(void)
{
    struct sess *best = NULL, *s, *tmp;
    HASH_ITER(hh, shard_g.sessions, s, tmp)
    {
        if (s->used == 0 && !s->pending && !s->in_batch && !mcp_session_is_task_home(s->ms) &&
            (!best || s->last_active < best->last_active))
            best = s;
    }
    return best;
}


/* A new session with a fresh id in partition part, in the table; NULL when out of memory. */
static struct sess *sess_new_in(int part)
{
    char id[64];
    route_session_id_new(id, sizeof(id), part);
    mcp_session *ms = mcp_session_new(shard_g.srv, id);
    struct sess *s = ms ? sess_insert(id, ms) : NULL;
    if (!s && ms)
        mcp_session_free(ms);
    return s;
}

/*
 * A partition for a new session: one this node owns that lives in this
 * shard (partition mod shard count), taken in turn. -1 when there is none.
 */
static int pick_partition(void)
{
    static int next;
    const struct cview *v = cview_get();
    if (!v->have_map || v->self < 0)
        return -1;
    for (int k = 0; k < v->npart; k++) {
        int p = (next + k) % v->npart;
        if (p % shard_g.nshards == shard_g.index && v->owner[p] == v->self) {
            next = p + 1;
            return p;
        }
    }
    return -1;
}

struct sess *sess_create(struct slot *sl, const json_t *rid)
{
    if (shard_g.nsessions >= shard_g.max_sessions) {
        /* At the cap, a session nobody used since its initialize makes room first: clients
         * that initialize for every request and never DELETE must not lock others out. */
        struct sess *victim = oldest_abandoned();
        if (victim) {
            shard_g.abandoned++;
            sess_remove(victim, "abandoned");
        }
    }
    if (shard_g.nsessions >= shard_g.max_sessions) {
        log_warn("session_refused", "{s:s,s:I}", "reason", "session cap reached", "max",
                 (json_int_t)shard_g.max_sessions);
        struct wire_reply r = {.st = 503};
        shard_reply(sl, &r,
                    shard_rpc_error(rid, -32000,
                                    "Too many sessions on this node; retry later or close "
                                    "unused sessions"),
                    NULL);
        return NULL;
    }
    int part = pick_partition();
    if (part < 0) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "This node owns no partition for shard %d now (the cluster %s); retry shortly, "
                 "or connect to another node",
                 shard_g.index, cview_get()->have_map ? "gave them to other members"
                                                      : "map is not known yet");
        /* 421 (not applied, not this node's): a listener whose map was a moment older
         * makes the session elsewhere instead (listener calls.c, call_not_owner). */
        struct wire_reply r = {.st = cview_get()->have_map ? 421 : 503};
        shard_reply(sl, &r, shard_rpc_error(rid, -32000, msg), NULL);
        return NULL;
    }
    struct sess *s = sess_new_in(part);
    if (!s) {
        struct wire_reply r = {.st = 503};
        shard_reply(sl, &r, shard_rpc_error(rid, -32603, "Out of memory"), NULL);
        return NULL;
    }
    shard_g.created++;
    stats_counter("cmcp_sessions_created_total", "")->value += 1;
    return s;
}

/*
 * A session to hold one task of a stateless client (the engine's task_home, docs/tasks.md):
 * made in a partition of this shard like a client's session, so its id, which is the task
 * id, routes to this shard (and, in a cluster, to the partition's owner) the way session ids
 * do, and stored and replicated like one. NULL when the node is at its session cap or owns
 * no partition here now.
 */
mcp_session *sess_task_home(void)
{
    if (shard_g.nsessions >= shard_g.max_sessions) {
        log_warn("task_refused", "{s:s,s:I}", "reason", "session cap reached", "max",
                 (json_int_t)shard_g.max_sessions);
        return NULL;
    }
    int part = pick_partition();
    if (part < 0) {
        log_warn("task_refused", "{s:s,s:i}", "reason", "no partition owned here now", "shard",
                 shard_g.index);
        return NULL;
    }
    struct sess *s = sess_new_in(part);
    if (!s)
        return NULL;
    stats_counter("cmcp_tasks_created_total", "")->value += 1;
    return s->ms;
}
