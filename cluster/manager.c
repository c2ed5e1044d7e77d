/*
 * Role `failover_manager`: this node's Raft member (libraft on
 * cluster/raftio) and its copy of the cluster map (cluster/map.h).
 *
 * Raft's messages and the managers' control messages travel through the
 * node's cluster monitor (the relay), sealed between nodes. A new cluster
 * forms when bootstrap_expect members see each other and none holds a map:
 * the one with the lowest node id bootstraps Raft as the only voter, the
 * others ask it to let them in (leader.c); a node that finds a cluster (a
 * peer with a map) asks the same way. Every node proposes a liveness beat
 * every lease_ms / 6 (retried within 10 ms while there is no leader to take
 * it); the newest committed beat gives this node its lease
 * (beat proposed at t -> writes allowed until t + lease_ms), published to
 * the split-brain detector. The map is published to the node's workers
 * (ipc/cview.h) on every change and every second.
 */
#define _GNU_SOURCE
#include "cluster/manager.h"

#include <errno.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "cluster/raftio.h"
#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "ipc/sock.h"

struct manager mgr;

/* ---- Raft's requests ---- */

static void apply_done(struct raft_apply *req, int status, void *result)
{
    (void)result;
    if (status != 0 && status != RAFT_LEADERSHIPLOST)
        log_debug("cluster_apply_failed", "{s:s}", "error", raft_strerror(status));
    free(req);
}

bool mgr_is_leader(void)
{
    return mgr.raft_running && raft_state(&mgr.raft) == RAFT_LEADER;
}

const char *mgr_leader(void)
{
    if (!mgr.raft_running)
        return NULL;
    raft_id id;
    const char *addr;
    raft_leader(&mgr.raft, &id, &addr);
    return id ? addr : NULL;
}

int mgr_propose(const char *cmd)
{
    if (!cmd)
        return -1;
    if (mgr_is_leader()) {
        struct raft_apply *req = calloc(1, sizeof(*req));
        struct raft_buffer buf = {raft_malloc(strlen(cmd)), strlen(cmd)};
        if (!req || !buf.base) {
            free(req);
            raft_free(buf.base);
            return -1;
        }
        memcpy(buf.base, cmd, buf.len);
        int rv = raft_apply(&mgr.raft, req, &buf, 1, apply_done);
        if (rv != 0) {
            raft_free(buf.base);
            free(req);
            return -1;
        }
        return 0;
    }
    const char *leader = mgr_leader();
    if (!leader)
        return -1;
    return mgr_send_control(leader, json_pack("{s:s,s:s}", "op", "propose", "cmd", cmd));
}

/* ---- the relay through the monitor ---- */

static int relay_send(int kind, const char *node, const void *bytes, size_t len)
{
    if (!mgr.relay)
        return -1;
    size_t fl;
    char *f = relay_frame(kind, node, bytes, len, &fl);
    int rc = f ? dlink_send_frame(mgr.relay, f, fl) : -1;
    free(f);
    return rc;
}

int mgr_send_control(const char *node, json_t *msg)
{
    char *t = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!t)
        return -1;
    int rc = -1;
    if (strcmp(node, mgr.cc.node_id) == 0) { /* to ourselves (the leader's own join) */
        json_t *o = json_loads(t, 0, NULL);
        leader_control(node, o);
        json_decref(o);
        rc = 0;
    } else {
        rc = relay_send(RELAY_CONTROL, node, t, strlen(t));
    }
    free(t);
    return rc;
}

static int raft_send(void *ud, raft_id to, const char *address, const void *bytes, size_t len)
{
    (void)ud;
    (void)to;
    return relay_send(RELAY_RAFT, address, bytes, len);
}

static void control_in(const char *from, const char *data, size_t len)
{
    json_t *o = json_loadb(data, len, 0, NULL);
    const char *op = json_string_value(json_object_get(o, "op"));
    if (op && !mgr_is_leader()) {
        /* meant for the leader: pass it on when we know who that is (once) */
        const char *l = mgr_leader();
        if (l && strcmp(l, from) != 0 && !json_object_get(o, "via")) {
            json_object_set_new(o, "via", json_string(mgr.cc.node_id));
            mgr_send_control(l, json_incref(o));
        }
    } else if (op && strcmp(op, "propose") == 0) {
        mgr_propose(json_string_value(json_object_get(o, "cmd")));
    } else if (op) {
        leader_control(from, o);
    }
    json_decref(o);
}

static void relay_in(struct dlink *dl, const char *data, size_t len)
{
    (void)dl;
    int kind;
    char node[64];
    const char *payload;
    size_t plen;
    if (relay_parse(data, len, &kind, node, &payload, &plen) != 0)
        return;
    if (kind == RELAY_RAFT && mgr.raft_running)
        raftio_recv(&mgr.io, cluster_raft_id(node), node, payload, plen);
    else if (kind == RELAY_CONTROL)
        control_in(node, payload, plen);
}

static void relay_closed(struct dlink *dl, const char *why)
{
    (void)dl;
    log_warn("cluster_relay_down", "{s:s}", "why", why);
    mgr.relay = NULL;
    ev_timer_set(&mgr.relay_w, 0.05, 0);
    ev_timer_start(mgr.loop, &mgr.relay_w);
}

static const struct dlink_ops relay_ops = {relay_in, NULL, relay_closed};

static void relay_connect_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    int fd = sock_unix_connect(mgr.relay_path);
    if (fd >= 0)
        mgr.relay = dlink_new(fd, &relay_ops, NULL);
    if (!mgr.relay) {
        ev_timer_set(w, 0.1, 0);
        ev_timer_start(loop, w);
    }
}

/* ---- the monitor's view ---- */

static void maybe_start(void);

static void view_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    for (int n = 0; n < 64; n++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(mgr.view_sub, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            return;
        if (len > 5 && memcmp(buf, "view ", 5) == 0) {
            json_t *v = json_loadb(buf + 5, len - 5, 0, NULL);
            if (v) {
                json_decref(mgr.view);
                mgr.view = v;
            }
        }
        nng_free(buf, len);
    }
    if (!mgr.raft_running && mgr.view) {
        maybe_start(); /* the members it waited for may be in this view */
        if (mgr.raft_running)
            mgr_kick(); /* and ask to join now */
    } else if (mgr.raft_running && mgr_is_leader()) {
        mgr_kick(); /* a new accusation may complete the evidence for a mark-down */
    }
}

bool mgr_view_suspects(const char *node, const char *target)
{
    json_t *list = NULL;
    if (strcmp(node, mgr.cc.node_id) == 0) {
        list = json_object_get(mgr.view, "suspects");
    } else {
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(mgr.view, "peers"), i, p)
        {
            if (strcmp(json_string_value(json_object_get(p, "id")) ?: "", node) == 0 &&
                strcmp(json_string_value(json_object_get(p, "health")) ?: "", "healthy") == 0)
                list = json_object_get(p, "suspects"); /* a view we heard lately */
        }
    }
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        if (strcmp(json_string_value(s) ?: "", target) == 0)
            return true;
    }
    return false;
}

/* ---- applied commands: this node's lease ---- */

static void applied_cb(struct map_fsm *f, const char *cmd, size_t len, enum map_result r)
{
    (void)f;
    json_t *o = json_loadb(cmd, len, 0, NULL);
    const char *op = json_string_value(json_object_get(o, "op"));
    const char *node = json_string_value(json_object_get(o, "node"));
    if (r == MAP_OK && op && node && strcmp(op, "beat") == 0 &&
        strcmp(node, mgr.cc.node_id) == 0) {
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(o, "seq"));
        int me = map_node_find(&mgr.fsm.map, node);
        /* only a beat of this incarnation that we proposed and still remember the time of */
        if (me >= 0 && mgr.fsm.map.nodes[me].incarnation == mgr.cc.incarnation &&
            seq + BEAT_RING > mgr.beat_seq && seq <= mgr.beat_seq) {
            double until = mgr.beat_sent[seq % BEAT_RING] + mgr.cc.lease_ms;
            if (until > mgr.lease_until)
                mgr.lease_until = until;
            double took = cmcp_now_ms() - mgr.beat_sent[seq % BEAT_RING];
            stats_observe(mgr.commit_hist, took / 1000.0);
            mgr.commit_ms[mgr.ncommit++ % COMMIT_RING] = took;
        }
    }
    json_decref(o);
    leader_applied(cmd, len, r);
    /* what was applied reaches the workers and the detector as soon as this batch of entries
     * is done, not at the next tick: a status that shows a map or a lease is not ahead of
     * what the shards hold by more than one publication */
    if (!ev_is_active(&mgr.soon_w)) {
        ev_timer_set(&mgr.soon_w, 0, 0);
        ev_timer_start(mgr.loop, &mgr.soon_w);
    }
}

/* ---- publishing ---- */

void mgr_publish_map(void)
{
    json_t *j = map_to_json(&mgr.fsm.map);
    json_object_set_new(j, "self", json_string(mgr.cc.node_id));
    mgr.published_version = mgr.fsm.map.version;
    mgr.version_gauge->value = (double)mgr.fsm.map.version;
    int counts[5] = {0};
    for (int i = 0; i < mgr.fsm.map.nnodes; i++)
        counts[mgr.fsm.map.nodes[i].state]++;
    mgr.nodes_up->value = counts[MAP_UP];
    mgr.nodes_draining->value = counts[MAP_DRAINING];
    mgr.nodes_down->value = counts[MAP_DOWN];
    mgr.nodes_left->value = counts[MAP_LEFT];
    cluster_publish(mgr.map_pub, "map", j);
}

static void publish_lease(bool force)
{
    const char *leader = mgr_leader();
    uint64_t term = mgr.raft_running ? mgr.raft.current_term : 0;
    bool is_leader = mgr_is_leader();
    double now = cmcp_now_ms();
    if (!force && mgr.lease_until == mgr.pub_lease_until && term == mgr.pub_lease_term &&
        is_leader == mgr.pub_lease_leader && mgr.fsm.map.version == mgr.pub_lease_version &&
        strcmp(leader ? leader : "", mgr.pub_lease_leader_id) == 0 &&
        now - mgr.pub_lease_at < 1000.0)
        return;
    snprintf(mgr.pub_lease_leader_id, sizeof(mgr.pub_lease_leader_id), "%s", leader ? leader : "");
    mgr.pub_lease_until = mgr.lease_until;
    mgr.pub_lease_term = term;
    mgr.pub_lease_leader = is_leader;
    mgr.pub_lease_version = mgr.fsm.map.version;
    mgr.pub_lease_at = now;
    cluster_publish(mgr.lease_pub, "lease",
                    json_pack("{s:f,s:s?,s:I,s:b,s:I,s:I}", "lease_until", mgr.lease_until,
                              "leader", leader, "term", (json_int_t)term, "is_leader", is_leader,
                              "beat", (json_int_t)mgr.beat_seq,
                              "version", (json_int_t)mgr.fsm.map.version));
}

static void soon_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    if (mgr.fsm.map.version != mgr.published_version)
        mgr_publish_map();
    publish_lease(false);
}

/* a worker or the detector (re)started: the map now */
static void map_subscribed(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    mgr_publish_map();
}

/* the detector (re)started: the lease now */
static void lease_subscribed(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    publish_lease(true);
}

static void pub_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    mgr_publish_map();
}

/* ---- starting Raft ---- */

static int raft_up(const struct raft_configuration *boot, const struct raft_configuration *recover)
{
    char err[300];
    struct raftio_opts o = {mgr.loop, mgr.cc.raft_dir, raft_send, NULL};
    if (raftio_init(&mgr.io, &o, err, sizeof(err)) != 0) {
        log_error("cluster_raft_failed", "{s:s}", "error", err);
        return -1;
    }
    map_fsm_init(&mgr.fsm, &mgr.raft);
    mgr.fsm.applied = applied_cb;
    int rv = raft_init(&mgr.raft, &mgr.io, &mgr.fsm.fsm, cluster_raft_id(mgr.cc.node_id),
                       mgr.cc.node_id);
    if (rv == 0) {
        unsigned et = (unsigned)mgr.cc.election_ms;
        raft_set_election_timeout(&mgr.raft, et);
        raft_set_heartbeat_timeout(&mgr.raft, et / 6 ? et / 6 : 1);
        raft_set_snapshot_threshold(&mgr.raft, 512);
        raft_set_snapshot_trailing(&mgr.raft, 256);
        /* the map's snapshot is small: a lost reply to one is resent after a second, not
         * libraft's default 30 s (a member that lost its disk would lag that long) */
        raft_set_install_snapshot_timeout(&mgr.raft, 1000);
        raft_set_pre_vote(&mgr.raft, true); /* a node back from a partition does not depose */
    }
    if (rv == 0 && boot)
        rv = raft_bootstrap(&mgr.raft, boot);
    if (rv == 0 && recover)
        rv = raft_recover(&mgr.raft, recover);
    if (rv == 0)
        rv = raft_start(&mgr.raft);
    if (rv != 0) {
        log_error("cluster_raft_failed", "{s:s,s:s}", "error", raft_strerror(rv), "detail",
                  raft_errmsg(&mgr.raft));
        return -1;
    }
    mgr.raft_running = true;
    log_info("cluster_raft_started", "{s:s,s:b,s:b}", "member", mgr.cc.node_id, "bootstrap",
             boot != NULL, "recover", recover != NULL);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * A node without Raft state: bootstrap a new cluster when bootstrap_expect
 * members see each other, none has a map and this one has the lowest id;
 * otherwise start empty and wait to be added by a leader (it asks to join).
 */
static void maybe_start(void)
{
    if (mgr.raft_closing || mgr.stopping)
        return;
    if (raftio_has_state(mgr.cc.raft_dir) > 0) {
        raft_up(NULL, NULL);
        return;
    }
    const char *ids[MAP_MAX_NODES];
    int n = 0;
    ids[n++] = mgr.cc.node_id;
    bool cluster_exists = false;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(mgr.view, "peers"), i, p)
    {
        const char *h = json_string_value(json_object_get(p, "health"));
        if (!h || strcmp(h, "healthy") != 0 || n == MAP_MAX_NODES)
            continue;
        ids[n++] = json_string_value(json_object_get(p, "id"));
        cluster_exists |= json_integer_value(json_object_get(p, "map_version")) > 0;
    }
    if (cluster_exists) {
        log_info("cluster_joining", "{s:s}", "member", mgr.cc.node_id);
        raft_up(NULL, NULL);
        return;
    }
    if (n < mgr.cc.expect)
        return; /* wait for the others */
    qsort(ids, (size_t)n, sizeof(ids[0]), cmp_str);
    if (strcmp(ids[0], mgr.cc.node_id) != 0) {
        raft_up(NULL, NULL); /* the lowest id bootstraps; we wait to be contacted */
        return;
    }
    /* The new cluster starts with this node as its only voter; the others ask to join like
     * any later node, and the leader makes voters of them by the strategy (leader.c). Only
     * one node ever bootstraps, so two configurations can never be made. */
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    raft_configuration_add(&conf, cluster_raft_id(mgr.cc.node_id), mgr.cc.node_id, RAFT_VOTER);
    log_notice("cluster_bootstrap", "{s:s,s:i}", "member", mgr.cc.node_id, "members_seen", n);
    mgr.bootstrapped = raft_up(&conf, NULL) == 0;
    raft_configuration_close(&conf);
}

/* ---- every tick ---- */

static bool i_am_member(void)
{
    int me = map_node_find(&mgr.fsm.map, mgr.cc.node_id);
    if (me < 0)
        return false;
    const struct map_node *n = &mgr.fsm.map.nodes[me];
    return n->incarnation == mgr.cc.incarnation && (n->state == MAP_UP || n->state == MAP_DRAINING);
}

/* This incarnation left the cluster (cmcpctl leave): it stays out, fenced, until restarted. */
static bool i_left(void)
{
    int me = map_node_find(&mgr.fsm.map, mgr.cc.node_id);
    if (me < 0)
        return false;
    const struct map_node *n = &mgr.fsm.map.nodes[me];
    bool left = n->incarnation == mgr.cc.incarnation && n->state == MAP_LEFT;
    if (left && !mgr.left_logged)
        log_notice("cluster_left", "{s:s,s:s}", "member", mgr.cc.node_id, "next",
                   "this node refuses writes and stays out of the cluster; stop it (a restart "
                   "joins it again as a new incarnation)");
    mgr.left_logged = left;
    return left;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    double now = cmcp_now_ms();
    if (!mgr.raft_running) {
        maybe_start();
        return;
    }
    bool leader = mgr_is_leader();
    if (leader && !mgr.leader_since)
        leader_became(now);
    if (!leader)
        mgr.leader_since = 0;
    mgr.leader_gauge->value = leader;
    mgr.term_gauge->value = (double)mgr.raft.current_term;
    if (leader)
        leader_tick(now);
    if (!i_am_member() && !i_left()) {
        /* ask to be (re)admitted: the leader if we know it, else every peer we hear (a node
         * that knows the leader passes it on) */
        char inc[17];
        snprintf(inc, sizeof(inc), "%016llx", (unsigned long long)mgr.cc.incarnation);
        const char *l = mgr_leader();
        if (l) {
            mgr_send_control(l, json_pack("{s:s,s:s,s:s,s:s}", "op", "join", "node",
                                          mgr.cc.node_id, "inc", inc, "ep", mgr.cc.advertise));
        } else {
            size_t i;
            json_t *p;
            json_array_foreach(json_object_get(mgr.view, "peers"), i, p)
            {
                const char *id = json_string_value(json_object_get(p, "id"));
                if (id && json_is_true(json_object_get(p, "linked")))
                    mgr_send_control(id, json_pack("{s:s,s:s,s:s,s:s}", "op", "join", "node",
                                                   mgr.cc.node_id, "inc", inc, "ep",
                                                   mgr.cc.advertise));
            }
        }
    }
    if (mgr.fsm.map.version != mgr.published_version)
        mgr_publish_map();
    publish_lease(false);
}

void mgr_kick(void)
{
    ev_timer_stop(mgr.loop, &mgr.tick_w);
    ev_timer_set(&mgr.tick_w, 0.001, mgr.cc.heartbeat_ms / 1000.0);
    ev_timer_start(mgr.loop, &mgr.tick_w);
}

static void beat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    /* A joiner beats before its own copy of the map shows it (it gets the log only once the
     * leader has added it to Raft's configuration): the leader's map may say it is up already,
     * and silence there would get it marked down. A beat the map cannot take is refused. */
    if (!mgr.raft_running || i_left())
        return;
    uint64_t seq = ++mgr.beat_seq;
    mgr.beat_sent[seq % BEAT_RING] = cmcp_now_ms();
    char *cmd = map_cmd_beat(mgr.cc.node_id, mgr.cc.incarnation, seq);
    int rc = mgr_propose(cmd);
    free(cmd);
    /* No leader to take it (an election): try again soon rather than a period later, so that
     * the lease is renewed as soon as a new leader is there. */
    ev_timer_stop(mgr.loop, &mgr.beat_w);
    ev_timer_set(&mgr.beat_w, rc == 0 ? mgr.cc.lease_ms / 6000.0 : 0.01, mgr.cc.lease_ms / 6000.0);
    ev_timer_start(mgr.loop, &mgr.beat_w);
}

/* ---- the control socket: the map, and the admin's cluster commands ---- */

static void force_restart(struct raft *r)
{
    (void)r;
    mgr.raft_closing = false;
    raftio_free(&mgr.io);
    if (mgr.stopping)
        return;
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    raft_configuration_add(&conf, cluster_raft_id(mgr.cc.node_id), mgr.cc.node_id, RAFT_VOTER);
    raft_up(NULL, &conf);
    raft_configuration_close(&conf);
}

static void stop_closed(struct raft *r)
{
    (void)r;
    mgr.raft_closing = false;
}

static json_t *raft_json(void)
{
    json_t *voters = json_array(), *standbys = json_array();
    for (unsigned i = 0; mgr.raft_running && i < mgr.raft.configuration.n; i++) {
        const struct raft_server *s = &mgr.raft.configuration.servers[i];
        json_array_append_new(s->role == RAFT_VOTER ? voters : standbys, json_string(s->address));
    }
    static const char *const states[] = {"unavailable", "follower", "candidate", "leader"};
    int st = mgr.raft_running ? raft_state(&mgr.raft) : RAFT_UNAVAILABLE;
    return json_pack("{s:s,s:I,s:s?,s:I,s:I,s:o,s:o}", "state", states[st & 3], "term",
                     (json_int_t)(mgr.raft_running ? mgr.raft.current_term : 0), "leader",
                     mgr_leader(), "last_index",
                     (json_int_t)(mgr.raft_running ? raft_last_index(&mgr.raft) : 0), "applied",
                     (json_int_t)(mgr.raft_running ? raft_last_applied(&mgr.raft) : 0), "voters",
                     voters, "standbys", standbys);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The last beats' commit times: count, median, 99th percentile and most, in ms. */
static json_t *commit_json(void)
{
    unsigned n = mgr.ncommit < COMMIT_RING ? mgr.ncommit : COMMIT_RING;
    if (n == 0)
        return json_null();
    double v[COMMIT_RING];
    memcpy(v, mgr.commit_ms, n * sizeof(double));
    qsort(v, n, sizeof(double), by_value);
    return json_pack("{s:i,s:f,s:f,s:f}", "n", (int)n, "p50", v[n / 2], "p99",
                     v[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], "max", v[n - 1]);
}

/* An in-sync set change a shard asked for, proposed to Raft (cmd is freed); the answer. */
static json_t *isr_propose(char *cmd, const char *event, json_t *part, const char *node,
                           json_t *epoch)
{
    int rc = cmd ? mgr_propose(cmd) : -1;
    free(cmd);
    if (rc != 0)
        return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "unavailable", "message",
                         "no leader to take the change now; retry");
    log_notice(event, "{s:I,s:s,s:I}", "partition", (json_int_t)json_integer_value(part),
               "replica", node, "epoch", (json_int_t)json_integer_value(epoch));
    return json_pack("{s:b,s:b}", "ok", 1, "submitted", 1);
}

static json_t *ctl_request(json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "op"));
    if (!op)
        return json_pack("{s:b,s:s}", "ok", 0, "error", "a request is {\"op\": ...}");
    if (strcmp(op, "status") == 0 || strcmp(op, "map") == 0) {
        json_t *m = map_to_json(&mgr.fsm.map);
        json_object_set_new(m, "self", json_string(mgr.cc.node_id));
        char inc[17];
        snprintf(inc, sizeof(inc), "%016llx", (unsigned long long)mgr.cc.incarnation);
        double left = mgr.lease_until - cmcp_now_ms();
        return json_pack("{s:b,s:s,s:s,s:o,s:o,s:f,s:O,s:o}", "ok", 1, "node", mgr.cc.node_id,
                         "incarnation", inc, "raft", raft_json(), "map", m, "lease_ms",
                         left > 0 ? left : 0.0, "view", mgr.view ? mgr.view : json_null(),
                         "beat_commit_ms", commit_json());
    }
    if (strcmp(op, "drain") == 0 || strcmp(op, "undrain") == 0 || strcmp(op, "leave") == 0) {
        const char *node = json_string_value(json_object_get(req, "node"));
        if (!node)
            node = mgr.cc.node_id;
        if (map_node_find(&mgr.fsm.map, node) < 0)
            return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "not_found", "message",
                             "no such member in the cluster map");
        char *cmd = op[0] == 'l' ? map_cmd_leave(node) : map_cmd_drain(node, op[0] == 'd');
        int rc = mgr_propose(cmd);
        free(cmd);
        if (rc != 0)
            return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "unavailable", "message",
                             "no leader to take the change now (an election, or this node is cut "
                             "off); retry");
        return json_pack("{s:b,s:b,s:s}", "ok", 1, "submitted", 1, "node", node);
    }
    if (strcmp(op, "isr_drop") == 0) {
        /* an owner's shard: a replica did not acknowledge in time, and writes wait for it */
        json_t *part = json_object_get(req, "part"), *epoch = json_object_get(req, "epoch");
        const char *node = json_string_value(json_object_get(req, "node"));
        if (!json_is_integer(part) || !json_is_integer(epoch) || !node)
            return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "badarg", "message",
                             "isr_drop needs part, epoch and node");
        return isr_propose(map_cmd_isr_drop((int)json_integer_value(part),
                                            (uint64_t)json_integer_value(epoch), node),
                           "cluster_isr_drop_asked", part, node, epoch);
    }
    if (strcmp(op, "isr_add") == 0) {
        /* an owner's shard: a replica it caught up (snapshot, then every change since) joins
         * the in-sync set; the map checks epoch, state and room when it applies */
        json_t *part = json_object_get(req, "part"), *epoch = json_object_get(req, "epoch");
        const char *node = json_string_value(json_object_get(req, "node"));
        const char *inc_s = json_string_value(json_object_get(req, "inc"));
        uint64_t inc = inc_s && strlen(inc_s) == 16 ? strtoull(inc_s, NULL, 16) : 0;
        if (!json_is_integer(part) || !json_is_integer(epoch) || !node)
            return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "badarg", "message",
                             "isr_add needs part, epoch and node");
        json_t *gen = json_object_get(req, "gen");
        return isr_propose(map_cmd_isr_add((int)json_integer_value(part),
                                           (uint64_t)json_integer_value(epoch), node, inc,
                                           json_is_integer(gen) ? json_integer_value(gen) : -1),
                           "cluster_isr_add_asked", part, node, epoch);
    }
    if (strcmp(op, "rebalance") == 0) {
        const char *l = mgr_leader();
        if (!l || mgr_send_control(l, json_pack("{s:s}", "op", "rebalance")) != 0)
            return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "unavailable", "message",
                             "no leader to take the rebalance now; retry");
        return json_pack("{s:b,s:b,s:s}", "ok", 1, "submitted", 1, "leader", l);
    }
    if (strcmp(op, "force_leader") == 0) {
        if (!mgr.raft_running)
            return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "unavailable", "message",
                             "Raft is not running on this node yet");
        log_error("cluster_force_leader", "{s:s,s:s}", "member", mgr.cc.node_id, "effect",
                  "Raft recovers with this node as its only voter: writes acknowledged by the "
                  "other side of a partition since may be lost");
        mgr.force_count->value += 1;
        mgr.raft_running = false;
        mgr.raft_closing = true;
        raft_close(&mgr.raft, force_restart);
        return json_pack("{s:b,s:b,s:s}", "ok", 1, "forced", 1, "node", mgr.cc.node_id);
    }
    return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", "badarg", "message", "unknown op");
}

static void ctl_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    for (int n = 0; n < 16; n++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(mgr.ctl_rep, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            return;
        json_t *req = json_loadb(buf, len, 0, NULL);
        nng_free(buf, len);
        json_t *resp = ctl_request(req);
        json_decref(req);
        char *t = json_dumps(resp, JSON_COMPACT);
        json_decref(resp);
        if (t)
            nng_send(mgr.ctl_rep, t, strlen(t), 0);
        free(t);
    }
}

static int sockets_open(void)
{
    char addr[512];
    int rv, fd;
    ipc_addr_cluster_map(addr, sizeof(addr), mgr.a->run_dir);
    if ((rv = cluster_pub_open(&mgr.map_pub, addr)) != 0)
        return rv;
    cluster_pub_on_subscriber(mgr.map_pub, mgr.loop, &mgr.newsub_w, map_subscribed);
    ipc_addr_cluster_lease(addr, sizeof(addr), mgr.a->run_dir);
    if ((rv = cluster_pub_open(&mgr.lease_pub, addr)) != 0)
        return rv;
    cluster_pub_on_subscriber(mgr.lease_pub, mgr.loop, &mgr.newlease_w, lease_subscribed);
    ipc_addr_cluster_ctl(addr, sizeof(addr), mgr.a->run_dir);
    if ((rv = nng_rep0_open(&mgr.ctl_rep)) != 0 || (rv = nng_listen(mgr.ctl_rep, addr, NULL, 0)) ||
        (rv = nng_socket_get_int(mgr.ctl_rep, NNG_OPT_RECVFD, &fd)) != 0)
        return rv;
    nng_socket_set_ms(mgr.ctl_rep, NNG_OPT_SENDTIMEO, 2000);
    ev_io_init(&mgr.ctl_w, ctl_cb, fd, EV_READ);
    ev_io_start(mgr.loop, &mgr.ctl_w);
    ipc_addr_cluster_view(addr, sizeof(addr), mgr.a->run_dir);
    if ((rv = nng_sub0_open(&mgr.view_sub)) != 0)
        return rv;
    nng_socket_set(mgr.view_sub, NNG_OPT_SUB_SUBSCRIBE, "view ", 5);
    ipc_socket_tune(mgr.view_sub);
    if ((rv = nng_dial(mgr.view_sub, addr, NULL, NNG_FLAG_NONBLOCK)) != 0 ||
        (rv = nng_socket_get_int(mgr.view_sub, NNG_OPT_RECVFD, &fd)) != 0)
        return rv;
    ev_io_init(&mgr.view_w, view_cb, fd, EV_READ);
    ev_io_start(mgr.loop, &mgr.view_w);
    return 0;
}

int failover_manager_main(struct proc_args *a)
{
    memset(&mgr, 0, sizeof(mgr));
    mgr.a = a;
    int rc = cluster_role_start(a, "failover_manager", &mgr.cc, &mgr.loop);
    if (rc != 0)
        return rc;
    dlink_init(mgr.loop);
    mgr.leader_gauge = stats_gauge("cmcp_cluster_leader", "");
    mgr.version_gauge = stats_gauge("cmcp_cluster_map_version", "");
    mgr.term_gauge = stats_gauge("cmcp_cluster_raft_term", "");
    mgr.failover_hist = stats_histogram("cmcp_failover_duration_seconds", "");
    mgr.commit_hist = stats_histogram("cmcp_cluster_commit_seconds", "");
    mgr.nodes_up = stats_gauge("cmcp_cluster_nodes", "state=\"up\"");
    mgr.nodes_draining = stats_gauge("cmcp_cluster_nodes", "state=\"draining\"");
    mgr.nodes_down = stats_gauge("cmcp_cluster_nodes", "state=\"down\"");
    mgr.nodes_left = stats_gauge("cmcp_cluster_nodes", "state=\"left\"");
    mgr.force_count = stats_counter("cmcp_cluster_force_leader_total", "");
    int rv = sockets_open();
    if (rv != 0) {
        log_error("cluster_start_failed", "{s:s,s:s}", "role", "failover_manager", "error",
                  nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    ipc_addr_cluster_relay(mgr.relay_path, sizeof(mgr.relay_path), a->run_dir);
    ev_init(&mgr.relay_w, relay_connect_cb);
    relay_connect_cb(mgr.loop, &mgr.relay_w, 0);
    ev_timer_init(&mgr.tick_w, tick_cb, 0, mgr.cc.heartbeat_ms / 1000.0);
    ev_timer_start(mgr.loop, &mgr.tick_w);
    ev_timer_init(&mgr.beat_w, beat_cb, 0, mgr.cc.lease_ms / 6000.0);
    ev_timer_start(mgr.loop, &mgr.beat_w);
    ev_timer_init(&mgr.soon_w, soon_cb, 0, 0);
    ev_timer_init(&mgr.pub_w, pub_cb, 1.0, 1.0);
    ev_timer_start(mgr.loop, &mgr.pub_w);
    if (mgr.cc.expect == 1 && raftio_has_state(mgr.cc.raft_dir) == 0)
        maybe_start(); /* a one-node cluster forms at once: its map is ready before the shards */
    /* A one-node cluster reports ready once it holds its map and a lease, so that the shards
     * started after it can acknowledge writes from their first request; a member of a larger
     * one reports ready at once (forming waits for the others). */
    for (int t = 0; mgr.cc.expect == 1 && t < 400 && !(mgr.lease_until > cmcp_now_ms()); t++)
        ev_run(mgr.loop, EVRUN_ONCE);
    log_info("failover_manager_ready", "{s:s,s:i,s:b}", "member", mgr.cc.node_id, "expect",
             mgr.cc.expect, "lease", mgr.lease_until > cmcp_now_ms());
    proc_notify_ready(a);
    ev_run(mgr.loop, 0);
    mgr.stopping = true;
    if (mgr.raft_running) {
        mgr.raft_running = false;
        mgr.raft_closing = true;
        raft_close(&mgr.raft, stop_closed);
    }
    for (int t = 0; mgr.raft_closing && t < 50; t++)
        ev_run(mgr.loop, EVRUN_NOWAIT);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    nng_close(mgr.map_pub);
    nng_close(mgr.lease_pub);
    nng_close(mgr.ctl_rep);
    nng_close(mgr.view_sub);
    json_decref(mgr.view);
    cluster_role_stop();
    return 0;
}
