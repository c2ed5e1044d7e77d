/*
 * Every endpoint a node's processes reach each other at, formatted in one
 * place. All of them live in the node's run directory (RUN):
 *
 *   ipc://RUN/sup-NAME.sock     a supervisor's control socket (nng req/rep)
 *   ipc://RUN/shard-I.sock      shard I's control socket: admin shell, tool runs
 *   RUN/shard-I.data            shard I's data link socket (listeners, ipc/dlink.h)
 *   ipc://RUN/shard-I-changes.sock  shard I's server-wide change notifications (pub; its
 *                               sibling shards subscribe: workers/shard/siblings.c)
 *   ipc://RUN/metrics.sock      the metrics worker's snapshot sub (ipc/stats.h)
 *   ipc://RUN/control.sock      the admin worker's control broadcast (ipc/control.h)
 *   ipc://RUN/cluster-map.sock  the cluster map, published by failover_manager (ipc/cview.h)
 *   ipc://RUN/cluster-fence.sock  this node's lease and fence, published by split_brain_detector
 *   ipc://RUN/cluster-view.sock the cluster monitor's view of its peers (pub)
 *   ipc://RUN/cluster.sock      failover_manager's requests: the map, the admin's cluster commands
 *   RUN/cluster-relay.data      the failover manager's link through its monitor to the peers
 */
#ifndef CMCP_IPC_ADDR_H
#define CMCP_IPC_ADDR_H

#include <stddef.h>

void ipc_addr_sup(char *buf, size_t len, const char *run_dir, const char *sup);
void ipc_addr_shard_ctl(char *buf, size_t len, const char *run_dir, int shard);
void ipc_addr_shard_data(char *buf, size_t len, const char *run_dir, int shard);
void ipc_addr_shard_changes(char *buf, size_t len, const char *run_dir, int shard);
void ipc_addr_stats(char *buf, size_t len, const char *run_dir);
void ipc_addr_control(char *buf, size_t len, const char *run_dir);
void ipc_addr_cluster_map(char *buf, size_t len, const char *run_dir);
/* the failover manager's lease, to the split-brain detector alone: it changes every beat, and
 * nng filters topics on the subscriber's side, so on the map socket it woke every worker */
void ipc_addr_cluster_lease(char *buf, size_t len, const char *run_dir);
void ipc_addr_cluster_fence(char *buf, size_t len, const char *run_dir);
void ipc_addr_cluster_view(char *buf, size_t len, const char *run_dir);
void ipc_addr_cluster_ctl(char *buf, size_t len, const char *run_dir);
void ipc_addr_cluster_relay(char *buf, size_t len, const char *run_dir);

#endif
