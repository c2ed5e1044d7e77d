/*
 * Role `split_brain_detector`: whether this node may acknowledge writes,
 * and why not, published to its workers (ipc/cview.h) when that changes, when
 * the lease moved on by a quarter of its length, and at least every second.
 *
 * The lease comes from the failover manager (this node's newest committed
 * liveness beat, cluster/map.h); the strategy decides whose majority grants
 * it, because it decides who votes: winner_takes_all, the side with a
 * majority of the voters; oldest_node, the side with the oldest member;
 * configured_master, the side with the named master. A node on the other
 * side cannot commit beats, its lease runs out, and it is fenced: shards
 * refuse writes with a retryable error, /health says why. When the
 * partition heals its beats commit again and it unfences by itself. If this
 * process or the manager hangs, nothing renews the lease either: the shards
 * hold its end on their own clock and stop acknowledging.
 */
#define _GNU_SOURCE
#include "cluster/cluster_int.h"

#include <jansson.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "ipc/stats.h"

static struct {
    struct cluster_conf cc;
    struct ev_loop *loop;
    nng_socket sub, pub;
    struct ipc_keep keep;
    ev_io sub_w;
    ev_timer tick_w;
    ev_async newsub_w;
    double lease_until;
    bool ever_leased, fenced, have_map_self;
    char leader[MAP_NODE_ID_MAX];
    double fenced_since;
    /* what the workers last heard: a fence is published when something in it changes, when
     * the lease moved on by a quarter of its length, and at least every second; not on every
     * heartbeat and every renewal (that woke every worker of the node 20 times a second) */
    double pub_until, pub_at;
    bool pub_fenced;
    char pub_leader[MAP_NODE_ID_MAX];
    struct stats_metric *partition, *fenced_g, *fences;
} D = {.fenced = true};

static void check(bool force);

static void sub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)w;
    (void)revents;
    bool renewed = false;
    for (int n = 0; n < 64; n++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(D.sub, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            break;
        if (len > 6 && memcmp(buf, "lease ", 6) == 0) {
            json_t *o = json_loadb(buf + 6, len - 6, 0, NULL);
            double until = json_number_value(json_object_get(o, "lease_until"));
            if (until > D.lease_until) {
                D.lease_until = until;
                renewed = true;
            }
            snprintf(D.leader, sizeof(D.leader), "%s",
                     json_string_value(json_object_get(o, "leader")) ?: "");
            json_decref(o);
        }
        nng_free(buf, len);
    }
    /* a renewed lease is looked at now, not at the next heartbeat: a node unfences as soon as
     * its beat commits, and the shards' copy of the lease's end is never older than a quarter
     * of the lease (check()) */
    if (renewed)
        check(false);
}

static const char *reason(void)
{
    if (!D.ever_leased)
        return D.cc.expect > 1 ? "the cluster is forming: this node waits for bootstrap_expect "
                                 "members, or to be admitted to the cluster"
                               : "this node has no lease yet";
    switch (D.cc.strategy) {
    case SB_CONFIGURED_MASTER:
        return "this node cannot renew its lease through the configured master "
               "(split_brain_strategy = configured_master): it is cut off from it, or the master "
               "is down; writes are refused until it is back";
    case SB_OLDEST_NODE:
        return "this node cannot renew its lease through the oldest member "
               "(split_brain_strategy = oldest_node): writes are refused until it can";
    case SB_WINNER_TAKES_ALL:
        break;
    }
    return "this node cannot renew its lease with a majority of the cluster's voters (it is on "
           "the minority side of a partition, or the cluster has no leader): writes are refused "
           "until it can";
}

/* fenced or not, and what the workers hear of it; force: publish even if nothing changed (a
 * worker just subscribed, or the start) */
static void check(bool force)
{
    double now = cmcp_now_ms();
    bool fenced = now > D.lease_until;
    if (!fenced)
        D.ever_leased = true;
    if (fenced != D.fenced) {
        if (fenced) {
            D.fenced_since = now;
            D.fences->value += 1;
            log_warn("cluster_fenced", "{s:s,s:s,s:f}", "reason", reason(), "leader", D.leader,
                     "lease_expired_ms_ago", now - D.lease_until);
        } else {
            log_notice("cluster_unfenced", "{s:f,s:s}", "fenced_ms",
                       D.fenced_since ? now - D.fenced_since : 0.0, "leader", D.leader);
        }
        D.fenced = fenced;
    }
    D.fenced_g->value = fenced;
    D.partition->value = fenced && D.ever_leased;
    /* The workers' copy of the lease's end lags the real one by less than a quarter of the
     * lease: it can only make them stop acknowledging that much earlier, never later. */
    if (!force && fenced == D.pub_fenced && strcmp(D.leader, D.pub_leader) == 0 &&
        D.lease_until - D.pub_until < D.cc.lease_ms / 4 && now - D.pub_at < 1000.0)
        return;
    D.pub_until = D.lease_until;
    D.pub_at = now;
    D.pub_fenced = fenced;
    snprintf(D.pub_leader, sizeof(D.pub_leader), "%s", D.leader);
    log_debug("fence_published", "{s:f,s:b}", "lease_left_ms", D.lease_until - now, "fenced",
              fenced);
    cluster_publish(D.pub, "fence",
                    json_pack("{s:f,s:b,s:s,s:s}", "lease_until", D.lease_until, "fenced", fenced,
                              "reason", fenced ? reason() : "", "leader", D.leader));
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    check(false);
}

static void fence_subscribed(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    check(true);
}

int split_brain_detector_main(struct proc_args *a)
{
    int rc = cluster_role_start(a, "split_brain_detector", &D.cc, &D.loop);
    if (rc != 0)
        return rc;
    D.partition = stats_gauge("cmcp_partition_detected", "");
    D.fenced_g = stats_gauge("cmcp_cluster_fenced", "");
    D.fences = stats_counter("cmcp_cluster_fences_total", "");
    char addr[512];
    int rv, fd;
    ipc_addr_cluster_fence(addr, sizeof(addr), a->run_dir);
    if ((rv = cluster_pub_open(&D.pub, addr)) == 0 && (rv = nng_sub0_open(&D.sub)) == 0) {
        /* a shard (re)started hears the fence at once, not at the next heartbeat */
        cluster_pub_on_subscriber(D.pub, D.loop, &D.newsub_w, fence_subscribed);
        nng_socket_set(D.sub, NNG_OPT_SUB_SUBSCRIBE, "lease ", 6);
        ipc_socket_tune(D.sub);
        ipc_addr_cluster_lease(addr, sizeof(addr), a->run_dir);
        if ((rv = nng_socket_get_int(D.sub, NNG_OPT_RECVFD, &fd)) == 0)
            rv = ipc_keep_dial(&D.keep, D.loop, D.sub, addr, NULL, NULL);
    }
    if (rv != 0) {
        log_error("cluster_start_failed", "{s:s,s:s}", "role", "split_brain_detector", "error",
                  nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    ev_io_init(&D.sub_w, sub_cb, fd, EV_READ);
    ev_io_start(D.loop, &D.sub_w);
    ev_timer_init(&D.tick_w, tick_cb, 0, D.cc.heartbeat_ms / 1000.0);
    ev_timer_start(D.loop, &D.tick_w);
    /* A one-node cluster: wait (briefly) for the first lease, so that the shards started next
     * find this node unfenced from their first request. */
    for (int t = 0; D.cc.expect == 1 && t < 200 && D.lease_until <= cmcp_now_ms(); t++)
        ev_run(D.loop, EVRUN_ONCE);
    check(true);
    log_info("split_brain_detector_ready", "{s:s,s:b}", "strategy",
             D.cc.strategy == SB_WINNER_TAKES_ALL ? "winner_takes_all"
             : D.cc.strategy == SB_OLDEST_NODE    ? "oldest_node"
                                                  : "configured_master",
             "fenced", D.fenced);
    proc_notify_ready(a);
    ev_run(D.loop, 0);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    ipc_keep_stop(&D.keep);
    nng_close(D.sub);
    nng_close(D.pub);
    cluster_role_stop();
    return 0;
}
