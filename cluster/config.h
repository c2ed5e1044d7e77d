/* The [cluster] settings every cluster role reads, checked once (cluster_int use). */
#ifndef CMCP_CLUSTER_CONFIG_H
#define CMCP_CLUSTER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"
#include "cluster/map.h"

#define CLUSTER_MAX_SEEDS 32

enum sb_strategy { SB_WINNER_TAKES_ALL, SB_OLDEST_NODE, SB_CONFIGURED_MASTER };

struct cluster_conf {
    char node_id[MAP_NODE_ID_MAX];
    uint64_t incarnation;         /* this start of the node (the root makes it) */
    char bind_host[128];
    int bind_port;                /* 0: no peers */
    char advertise[MAP_ENDPOINT_MAX];
    char seeds[CLUSTER_MAX_SEEDS][MAP_ENDPOINT_MAX];
    int nseeds;
    int expect;                   /* members a new cluster waits for before it bootstraps */
    int partitions;
    int rf;                       /* replication factor a new cluster is made with */
    int groups;                   /* replica_groups (default: the shard count, 2 at least) */
    int voters;
    enum sb_strategy strategy;
    char master[MAP_NODE_ID_MAX];
    double heartbeat_ms, lease_ms, down_after_ms, election_ms, dns_refresh_ms;
    char raft_dir[512];
    char cookie_file[512];
};

/* Reads and checks [cluster] (and the cookie's path). 0, or -1 with err naming the key. */
int cluster_conf_load(struct cluster_conf *cc, struct cfg *c, char *err, size_t errlen);
/* Splits "host:port" (IPv6 in brackets). 0, or -1. */
int cluster_split_hostport(const char *s, char *host, size_t hostlen, int *port);
/* The Raft id of a node: a stable 64-bit hash of its name, never 0. */
uint64_t cluster_raft_id(const char *node_id);

#endif
