/*
 * What only the Raft leader's failover manager does (manager.h):
 *
 *   joins     a node asks to be admitted: its join is proposed to the map
 *             (the leader's own first: the oldest member of a new cluster is
 *             the one that bootstrapped it); a serving member that Raft's
 *             configuration lacks is then added, as a spare, then a standby;
 *   voters    the voter set per split_brain_strategy: winner_takes_all keeps
 *             `voters` (odd, at most the live members) and replaces a voter
 *             that is down by a standby; oldest_node keeps the member with
 *             the lowest join index as the only voter; configured_master the
 *             named node; one configuration change at a time; a leader the
 *             strategy does not want hands leadership to a wanted voter; a
 *             member that left is demoted, then removed;
 *   downs     a member is marked down only when (a) this node has not
 *             applied a liveness beat of it for down_after_ms (every node
 *             tracks when it applied each member's beats, so a new leader
 *             knows too), and (b) a majority of the voters suspect it in
 *             their latest heartbeats; the mark-down names the newest beat
 *             the leader saw, so a beat committed before it voids it;
 *   owners    partitions without a live owner go to their preferred member
 *             at once; a draining member's, and on `rebalance` misplaced
 *             ones, a few at a time.
 */
#define _GNU_SOURCE
#include "cluster/manager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"

#define MOVES_PER_TICK 8 /* hand-offs from live owners, each tick (rate limit) */

static struct {
    double last_init, last_plan;
    uint64_t planned_version;
    double rebalance_until; /* an operator asked for a rebalance */
} L;

void leader_became(double now)
{
    mgr.leader_since = now;
    /* Silence is counted from when this node applied a member's last beat (every node tracks
     * it, leader_applied): that is never before the member sent it, so a member marked down
     * after down_after_ms of it has had its lease (lease_ms from sending) run out, whoever
     * leads. A member never seen applying here (a map from a snapshot) gets a full period. */
    for (int i = 0; i < MAP_MAX_NODES; i++) {
        if (!mgr.beat_seen[i])
            mgr.beat_seen[i] = now;
        mgr.suspect_since[i] = 0;
    }
    L.planned_version = 0;
    log_notice("cluster_leader", "{s:s,s:I}", "member", mgr.cc.node_id, "term",
               (json_int_t)mgr.raft.current_term);
}

/* After every applied command, on every node: when members were last seen alive. */
void leader_applied(const char *cmd, size_t len, enum map_result r)
{
    if (r != MAP_OK)
        return;
    json_t *o = json_loadb(cmd, len, 0, NULL);
    const char *op = json_string_value(json_object_get(o, "op"));
    const char *node = json_string_value(json_object_get(o, "node"));
    int i = map_node_find(&mgr.fsm.map, node);
    double now = cmcp_now_ms();
    if (op && i >= 0 && (strcmp(op, "beat") == 0 || strcmp(op, "join") == 0)) {
        mgr.beat_seen[i] = now;
        if (strcmp(op, "join") == 0 && strcmp(node, mgr.cc.node_id) == 0) {
            /* admitted: the first beat (and so the lease) need not wait for the timer */
            ev_timer_stop(mgr.loop, &mgr.beat_w);
            ev_timer_set(&mgr.beat_w, 0, mgr.cc.lease_ms / 6000.0);
            ev_timer_start(mgr.loop, &mgr.beat_w);
        }
    }
    bool placed = op && (strcmp(op, "assign") == 0 || strcmp(op, "place") == 0);
    if (op && mgr_is_leader() && strcmp(op, "beat") != 0 && !placed)
        mgr_kick(); /* membership changed: voters and owners follow now, not at the period */
    if (placed) {
        /* a failover completes when the partitions of the downed member have owners again */
        for (int k = 0; k < mgr.fsm.map.nnodes; k++) {
            if (!mgr.suspect_since[k] || mgr.fsm.map.nodes[k].state != MAP_DOWN ||
                map_owned(&mgr.fsm.map, k) > 0)
                continue;
            double took = (now - mgr.suspect_since[k]) / 1000.0;
            stats_observe(mgr.failover_hist, took);
            log_notice("cluster_failover_done", "{s:s,s:f}", "member", mgr.fsm.map.nodes[k].id,
                       "seconds", took);
            mgr.suspect_since[k] = 0;
        }
    }
    json_decref(o);
}

/* ---- Raft's configuration ---- */

static void change_done(struct raft_change *req, int status)
{
    if (status != 0)
        log_warn("cluster_raft_change_failed", "{s:s}", "error", raft_strerror(status));
    mgr.change_pending = false;
    free(req);
    mgr_kick(); /* the next change (a joiner, a promotion) need not wait for the period */
}

static const struct raft_server *conf_find(const char *node)
{
    raft_id id = cluster_raft_id(node);
    for (unsigned i = 0; i < mgr.raft.configuration.n; i++)
        if (mgr.raft.configuration.servers[i].id == id)
            return &mgr.raft.configuration.servers[i];
    return NULL;
}

static void assign_role(const char *node, int role, const char *why)
{
    struct raft_change *req = calloc(1, sizeof(*req));
    if (!req)
        return;
    int rv = raft_assign(&mgr.raft, req, cluster_raft_id(node), role, change_done);
    if (rv != 0) {
        free(req);
        return;
    }
    mgr.change_pending = true;
    log_notice("cluster_voter_change", "{s:s,s:s,s:s}", "member", node, "as",
               role == RAFT_VOTER ? "voter" : "standby", "why", why);
}

static bool serving(const struct map_node *n)
{
    return n->state == MAP_UP || n->state == MAP_DRAINING;
}

void leader_control(const char *from, const json_t *msg)
{
    const char *op = json_string_value(json_object_get(msg, "op"));
    if (!op || !mgr_is_leader())
        return;
    if (strcmp(op, "rebalance") == 0) {
        L.rebalance_until = cmcp_now_ms() + 30000;
        log_notice("cluster_rebalance", "{s:s,s:i}", "asked_by", from, "moves_per_tick",
                   MOVES_PER_TICK);
        return;
    }
    if (strcmp(op, "join") != 0)
        return;
    const char *node = json_string_value(json_object_get(msg, "node"));
    const char *inc = json_string_value(json_object_get(msg, "inc"));
    const char *ep = json_string_value(json_object_get(msg, "ep"));
    if (!node || !inc || !ep || strlen(inc) != 16)
        return; /* (every peer is a cookie holder: a join passed on by another member is fine) */
    /* The map's membership goes ahead of Raft's configuration: once the map says a joiner is
     * up, it owns partitions, and voter management adds it to the configuration (so that it
     * gets the log). It asks until its own copy of the map says so: a join the map holds
     * already is not proposed again. */
    uint64_t incv = strtoull(inc, NULL, 16);
    if (strcmp(node, mgr.cc.node_id) != 0 && map_node_find(&mgr.fsm.map, mgr.cc.node_id) < 0)
        return; /* the leader joins the map first (the oldest member of a new cluster is the one
                 * that bootstrapped it); the others ask again */
    int i = map_node_find(&mgr.fsm.map, node);
    if (i >= 0 && mgr.fsm.map.nodes[i].incarnation == incv &&
        strcmp(mgr.fsm.map.nodes[i].endpoint, ep) == 0 && serving(&mgr.fsm.map.nodes[i]))
        return;
    char *cmd = map_cmd_join(node, incv, ep);
    mgr_propose(cmd);
    free(cmd);
}

static void transfer_done(struct raft_transfer *req)
{
    mgr.transfer_pending = false;
    free(req);
}

/* Hands leadership to another voter (libraft picks the most up to date), once at a time. */
static void hand_leadership_on(const char *why)
{
    if (mgr.transfer_pending)
        return;
    struct raft_transfer *req = calloc(1, sizeof(*req));
    if (req && raft_transfer(&mgr.raft, req, 0, transfer_done) == 0) {
        mgr.transfer_pending = true;
        log_notice("cluster_leader_transfer", "{s:s,s:s}", "member", mgr.cc.node_id, "why", why);
    } else {
        free(req);
    }
}

/* Members that left: a leader that left hands leadership on; the others, once they no longer
 * vote, leave Raft's configuration too (1 when a change was started). */
static int remove_left(void)
{
    const struct cluster_map *m = &mgr.fsm.map;
    int me = map_node_find(m, mgr.cc.node_id);
    if (me >= 0 && m->nodes[me].state == MAP_LEFT) {
        hand_leadership_on("this node left the cluster");
        return 1;
    }
    /* A drained leader (its partitions all handed over: it is about to be stopped, e.g. a
     * drain on stop) hands leadership on too, so the others' leases are renewed without
     * waiting for an election after it goes. */
    if (me >= 0 && m->nodes[me].state == MAP_DRAINING && map_owned(m, me) == 0 && map_up(m) > 0)
        hand_leadership_on("this node is drained");
    for (unsigned k = 0; k < mgr.raft.configuration.n; k++) {
        const struct raft_server *s = &mgr.raft.configuration.servers[k];
        int i = map_node_find(m, s->address);
        if (i < 0 || m->nodes[i].state != MAP_LEFT || s->role == RAFT_VOTER || s->id == mgr.raft.id)
            continue;
        struct raft_change *req = calloc(1, sizeof(*req));
        if (req && raft_remove(&mgr.raft, req, s->id, change_done) == 0) {
            mgr.change_pending = true;
            log_notice("cluster_member_removed", "{s:s,s:s}", "member", m->nodes[i].id, "why",
                       "it left the cluster");
            return 1;
        }
        free(req);
    }
    return 0;
}

/* Serving members of the map that Raft's configuration lacks: added (as spares), one. */
static int add_joined(void)
{
    const struct cluster_map *m = &mgr.fsm.map;
    for (int i = 0; i < m->nnodes; i++) {
        const struct map_node *n = &m->nodes[i];
        if (!serving(n) || conf_find(n->id))
            continue;
        struct raft_change *req = calloc(1, sizeof(*req));
        if (req && raft_add(&mgr.raft, req, cluster_raft_id(n->id), n->id, change_done) == 0) {
            mgr.change_pending = true;
            log_notice("cluster_member_added", "{s:s,s:s}", "member", n->id, "endpoint",
                       n->endpoint);
            return 1;
        }
        free(req);
    }
    return 0;
}

/* The voter set the strategy wants, as one change toward it (or none). */
static void manage_voters(void)
{
    if (mgr.change_pending || remove_left() || add_joined())
        return;
    const struct cluster_map *m = &mgr.fsm.map;
    /* spares (just added) replicate as standbys first */
    for (unsigned i = 0; i < mgr.raft.configuration.n; i++) {
        const struct raft_server *s = &mgr.raft.configuration.servers[i];
        if (s->role == RAFT_SPARE) {
            assign_role(s->address, RAFT_STANDBY, "a new member replicates the log");
            return;
        }
    }
    bool want[MAP_MAX_NODES] = {false};
    int nserving = 0;
    for (int i = 0; i < m->nnodes; i++)
        nserving += serving(&m->nodes[i]) && conf_find(m->nodes[i].id) != NULL;
    if (nserving == 0)
        return; /* the map does not know its members yet: leave the bootstrap's voters */
    if (mgr.cc.strategy == SB_CONFIGURED_MASTER) {
        int i = map_node_find(m, mgr.cc.master);
        if (i < 0 || !conf_find(mgr.cc.master))
            return; /* it has not joined yet: the voters stay as they are */
        want[i] = true;
    } else if (mgr.cc.strategy == SB_OLDEST_NODE) {
        int oldest = -1;
        for (int i = 0; i < m->nnodes; i++)
            if (serving(&m->nodes[i]) && conf_find(m->nodes[i].id) &&
                (oldest < 0 || m->nodes[i].join_index < m->nodes[oldest].join_index))
                oldest = i;
        want[oldest] = true;
    } else {
        /* keep the serving voters, fill up to `voters` from the oldest standbys, and keep a
         * voter that is down until a standby has taken its place: the voter set never shrinks
         * because a member failed (that would put the quorum on the failed one's side) */
        int target = mgr.cc.voters % 2 ? mgr.cc.voters : mgr.cc.voters - 1;
        int have = 0;
        for (int i = 0; i < m->nnodes && have < target; i++) {
            const struct raft_server *s = conf_find(m->nodes[i].id);
            if (serving(&m->nodes[i]) && s && s->role == RAFT_VOTER)
                want[i] = true, have++;
        }
        while (have < target) {
            int best = -1;
            for (int i = 0; i < m->nnodes; i++)
                if (!want[i] && serving(&m->nodes[i]) && conf_find(m->nodes[i].id) &&
                    (best < 0 || m->nodes[i].join_index < m->nodes[best].join_index))
                    best = i;
            if (best < 0)
                break;
            want[best] = true;
            have++;
        }
        for (int i = 0; i < m->nnodes && have < target; i++) {
            const struct raft_server *s = conf_find(m->nodes[i].id);
            if (!want[i] && m->nodes[i].state == MAP_DOWN && s && s->role == RAFT_VOTER)
                want[i] = true, have++;
        }
        /* an even count of serving voters cannot be: one fewer is as safe and tolerates as much */
        int voting = 0;
        for (int i = 0; i < m->nnodes; i++)
            voting += want[i];
        for (int i = m->nnodes - 1; i >= 0 && voting % 2 == 0 && voting > 1; i--)
            if (want[i] && conf_find(m->nodes[i].id)->role != RAFT_VOTER)
                want[i] = false, voting--;
    }
    /* promotions first (quorum grows before it shrinks), then demotions */
    for (int i = 0; i < m->nnodes; i++) {
        const struct raft_server *s = conf_find(m->nodes[i].id);
        if (want[i] && s && s->role != RAFT_VOTER) {
            assign_role(m->nodes[i].id, RAFT_VOTER, "the strategy's voter set");
            return;
        }
    }
    /* demote members that are down or gone first: the quorum then never needs them */
    for (int pass = 0; pass < 2; pass++)
        for (unsigned k = 0; k < mgr.raft.configuration.n; k++) {
            const struct raft_server *s = &mgr.raft.configuration.servers[k];
            int i = map_node_find(m, s->address);
            if (s->role != RAFT_VOTER || i < 0 || want[i] || s->id == mgr.raft.id ||
                serving(&m->nodes[i]) != (pass == 1))
                continue;
            assign_role(s->address, RAFT_STANDBY, pass == 1 ? "the strategy's voter set"
                                                            : "it is down or left");
            return;
        }
    /* the strategy does not want this leader as a voter (oldest_node or configured_master
     * name another member): hand leadership to a wanted voter, which then demotes this one */
    int me = map_node_find(m, mgr.cc.node_id);
    if (me >= 0 && !want[me] && !mgr.transfer_pending) {
        for (int i = 0; i < m->nnodes; i++) {
            const struct raft_server *s = conf_find(m->nodes[i].id);
            if (!want[i] || !s || s->role != RAFT_VOTER || !serving(&m->nodes[i]))
                continue;
            struct raft_transfer *req = calloc(1, sizeof(*req));
            if (req && raft_transfer(&mgr.raft, req, s->id, transfer_done) == 0) {
                mgr.transfer_pending = true;
                log_notice("cluster_leader_transfer", "{s:s,s:s,s:s}", "member", mgr.cc.node_id,
                           "to", m->nodes[i].id, "why", "the strategy's voter set");
            } else {
                free(req);
            }
            return;
        }
    }
}

/* ---- mark-downs ---- */

static int majority_suspects(const char *target)
{
    int voters = 0, suspect = 0;
    for (unsigned k = 0; k < mgr.raft.configuration.n; k++) {
        const struct raft_server *s = &mgr.raft.configuration.servers[k];
        if (s->role != RAFT_VOTER)
            continue;
        voters++;
        if (strcmp(s->address, target) != 0 && mgr_view_suspects(s->address, target))
            suspect++;
    }
    return suspect > voters / 2;
}

static void mark_downs(double now)
{
    const struct cluster_map *m = &mgr.fsm.map;
    for (int i = 0; i < m->nnodes; i++) {
        const struct map_node *n = &m->nodes[i];
        if (!serving(n) || strcmp(n->id, mgr.cc.node_id) == 0)
            continue;
        if (!mgr.beat_seen[i])
            mgr.beat_seen[i] = now;
        double since = mgr.beat_seen[i];
        if (now - since < mgr.cc.down_after_ms) {
            mgr.suspect_since[i] = 0;
            continue;
        }
        if (!mgr.suspect_since[i])
            mgr.suspect_since[i] = since; /* the failover's clock starts at the last sign of life */
        if (!majority_suspects(n->id))
            continue;
        char *cmd = map_cmd_down(n->id, n->incarnation, n->beat);
        if (mgr_propose(cmd) == 0)
            log_warn("cluster_mark_down", "{s:s,s:I,s:f,s:s}", "member", n->id, "beat",
                     (json_int_t)n->beat, "silent_ms", now - since, "evidence",
                     "no liveness beat applied, and a majority of the voters do not hear it");
        free(cmd);
    }
}

/* ---- ownership ---- */

/* rf > 1: promotions to in-sync replicas, placement of new partitions with their replicas. */
static void plan_replicated(double now, enum map_plan_mode mode)
{
    const struct cluster_map *m = &mgr.fsm.map;
    static struct map_move mv[MAP_MAX_PARTITIONS];
    int n = map_plan_replicated(m, mgr.cc.expect, mgr.cc.groups, mode, MOVES_PER_TICK, mv,
                                MAP_MAX_PARTITIONS);
    L.planned_version = m->version;
    L.last_plan = now;
    int promoted = 0, lost = 0, placed = 0;
    for (int i = 0; i < n; i++) {
        const struct map_partition *pp = &m->parts[mv[i].part];
        if (pp->epoch == 0)
            placed++;
        else if (map_is_replica(m, mv[i].part, mv[i].owner) || pp->owner == mv[i].owner)
            promoted++;
        else
            lost++;
    }
    for (int i = 0; i < n; i += 512) { /* commands of a bounded size */
        char *cmd = map_cmd_place(m, mv + i, n - i < 512 ? n - i : 512);
        mgr_propose(cmd);
        free(cmd);
    }
    if (n)
        log_info("cluster_place", "{s:i,s:i,s:i,s:s}", "new", placed, "promoted", promoted,
                 "lost", lost, "mode", mode == MAP_PLAN_REBALANCE ? "rebalance"
                                       : mode == MAP_PLAN_DRAIN   ? "drain"
                                                                  : "failover");
    if (lost)
        log_error("cluster_partitions_lost", "{s:i,s:s}", "partitions", lost, "effect",
                  "no member holding a copy of them is up: they start empty on a new owner "
                  "(their sessions are gone)");
    /* Partitions whose only up-to-date copy is on their owner, which is down: they wait for
     * it (map_plan_replicated); said once per change of their number. */
    static int waiting_said;
    int waiting = 0;
    const char *whose = "";
    for (int p = 0; p < m->npart; p++) {
        const struct map_partition *pp = &m->parts[p];
        if (pp->owner < 0 || m->nodes[pp->owner].state != MAP_DOWN)
            continue;
        bool copy = false;
        for (int k = 0; k < pp->nrep && !copy; k++)
            copy = m->nodes[pp->rep[k]].state == MAP_UP;
        if (!copy) {
            waiting++;
            whose = m->nodes[pp->owner].id;
        }
    }
    if (waiting != waiting_said) {
        if (waiting)
            log_warn("cluster_partitions_waiting", "{s:i,s:s,s:s}", "partitions", waiting,
                     "owner", whose, "effect",
                     "their only up-to-date copy is on a member that is down: their sessions "
                     "are unavailable until it is back (cmcpctl leave NODE gives them up: they "
                     "start empty)");
        else
            log_info("cluster_partitions_waiting", "{s:i}", "partitions", 0);
        waiting_said = waiting;
    }
}

static void plan(double now)
{
    const struct cluster_map *m = &mgr.fsm.map;
    if (m->version == L.planned_version && now - L.last_plan < 1000)
        return; /* proposed for this map already: wait for it to apply */
    bool draining = false;
    for (int i = 0; i < m->nnodes; i++)
        draining |= m->nodes[i].state == MAP_DRAINING;
    enum map_plan_mode mode = now < L.rebalance_until ? MAP_PLAN_REBALANCE
                              : draining              ? MAP_PLAN_DRAIN
                                                      : MAP_PLAN_FAILOVER;
    if (m->rf > 1) {
        plan_replicated(now, mode);
        return;
    }
    static int parts[MAP_MAX_PARTITIONS], owners[MAP_MAX_PARTITIONS], group[MAP_MAX_PARTITIONS];
    int n = map_plan(m, mgr.cc.expect, mode, MOVES_PER_TICK, parts, owners, MAP_MAX_PARTITIONS);
    L.planned_version = m->version;
    L.last_plan = now;
    for (int o = 0; o < m->nnodes && n > 0; o++) {
        int k = 0;
        for (int i = 0; i < n; i++)
            if (owners[i] == o)
                group[k++] = parts[i];
        if (!k)
            continue;
        char *cmd = map_cmd_assign(group, k, m->nodes[o].id);
        mgr_propose(cmd);
        free(cmd);
        log_info("cluster_assign", "{s:s,s:i,s:s}", "owner", m->nodes[o].id, "partitions", k,
                 "mode", mode == MAP_PLAN_REBALANCE ? "rebalance"
                         : mode == MAP_PLAN_DRAIN  ? "drain"
                                                   : "failover");
    }
}

void leader_tick(double now)
{
    if (!mgr.fsm.map.npart) {
        if (now - L.last_init > 1000) {
            char *cmd = map_cmd_init(mgr.cc.partitions, mgr.cc.rf);
            mgr_propose(cmd);
            free(cmd);
            L.last_init = now;
        }
        return;
    }
    manage_voters();
    mark_downs(now);
    plan(now);
}
