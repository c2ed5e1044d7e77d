/*
 * Inside the failover manager: manager.c (the process: Raft, the relay,
 * liveness beats, what it publishes, its control socket) and leader.c
 * (what only the Raft leader does: joins, voters, mark-downs, ownership).
 */
#ifndef CMCP_CLUSTER_MANAGER_H
#define CMCP_CLUSTER_MANAGER_H

#if !defined(CMCP_LAYER_CLUSTER)
#error "cluster/manager.h is internal to the cluster layer"
#endif

#include <jansson.h>
#include <raft.h>

#include "cluster/cluster_int.h"
#include "cluster/fsm.h"
#include "ipc/dlink.h"
#include "ipc/stats.h"

#define BEAT_RING 64
#define COMMIT_RING 256

struct manager {
    struct proc_args *a;
    struct cluster_conf cc;
    struct ev_loop *loop;
    struct raft raft;
    struct raft_io io;
    struct map_fsm fsm;
    bool raft_running, bootstrapped;
    /* raft_close() was called and its callback has not run: the struct is still libraft's, and
     * nothing may raft_init() it again (a tick's maybe_start() once did, during the stop, and
     * the old close then freed the new instance's address) */
    bool raft_closing, stopping;
    /* this node's liveness: beats proposed, when, and the lease the newest committed one gave */
    uint64_t beat_seq;
    double beat_sent[BEAT_RING];
    double lease_until;
    /* the last lease published to the detector, and when: one that says nothing new is not
     * sent again within a second (the tick and each applied batch both publish) */
    double pub_lease_until, pub_lease_at;
    uint64_t pub_lease_term, pub_lease_version;
    bool pub_lease_leader;
    char pub_lease_leader_id[MAP_NODE_ID_MAX];
    /* the leader's own observations (monotonic ms), by member index */
    double leader_since;
    double beat_seen[MAP_MAX_NODES]; /* when this node last applied that member's beat */
    uint64_t beat_seen_seq[MAP_MAX_NODES];
    double suspect_since[MAP_MAX_NODES];
    bool change_pending; /* a Raft configuration change in flight (one at a time) */
    bool left_logged;    /* cluster_left was logged for this incarnation */
    bool transfer_pending; /* this leader, leaving, hands leadership on */
    /* the monitor's latest view */
    json_t *view;
    /* sockets */
    struct dlink *relay;
    char relay_path[512];
    nng_socket map_pub, lease_pub, view_sub, ctl_rep;
    ev_io view_w, ctl_w;
    ev_timer tick_w, beat_w, relay_w, pub_w, soon_w;
    ev_async newsub_w;   /* a worker or the detector subscribed to map_pub */
    ev_async newlease_w; /* the detector subscribed to lease_pub */
    uint64_t published_version;
    struct stats_metric *leader_gauge, *version_gauge, *term_gauge, *failover_hist,
        *nodes_up, *nodes_down, *nodes_draining, *nodes_left, *force_count, *commit_hist;
    /* how long this node's last beats took from proposal to applied here (ms), for status */
    double commit_ms[COMMIT_RING];
    unsigned ncommit;
};
extern struct manager mgr;

/* manager.c */
int mgr_propose(const char *cmd); /* applies through the leader: here, or sent to it */
int mgr_send_control(const char *node, json_t *msg); /* msg stolen */
const char *mgr_leader(void);     /* the leader's node id as Raft knows it, or NULL */
bool mgr_is_leader(void);
/* Whether the monitor's view says voter `node` currently suspects `target`. */
bool mgr_view_suspects(const char *node, const char *target);
void mgr_publish_map(void);
void mgr_kick(void); /* runs the tick (the leader's work) at once rather than at its period */

/* leader.c */
void leader_tick(double now);
void leader_became(double now);
void leader_control(const char *from, const json_t *msg); /* a join, a proposal */
/* After every applied command (on every node, leader or not). */
void leader_applied(const char *cmd, size_t len, enum map_result r);

#endif
