/*
 * The cluster roles (docs/cluster.md), under cluster_sup (one_for_all):
 *   cluster_monitor       links to the other nodes, heartbeats, who is heard, the local view;
 *                         relays the failover manager's messages to its peers
 *   failover_manager      the Raft member and the cluster map; liveness beats (this node's
 *                         lease); on the leader: joins, mark-downs, partition ownership, voters
 *   split_brain_detector  lease and quorum -> fence or unfence this node, per strategy
 * A node without peers is a one-node cluster running the same code.
 */
#ifndef CMCP_CLUSTER_H
#define CMCP_CLUSTER_H

#include "base/config.h"
#include "base/proc.h"

int cluster_monitor_main(struct proc_args *a);
int failover_manager_main(struct proc_args *a);
int split_brain_detector_main(struct proc_args *a);
/* Checks [cluster] as the roles will read it (rules between keys, names, addresses): 0, or
 * -1 with err naming the key and what is wrong. The root runs it before it starts anything. */
int cluster_conf_check(struct cfg *c, char *err, size_t errlen);
/* Their configuration keys: [cluster]. */
extern const struct cfg_key cluster_cfg_keys[];

#endif
