/* The cluster's configuration keys: [cluster] (docs/configuration in docs/cluster.md). */
#include "cluster/cluster.h"

const struct cfg_key cluster_cfg_keys[] = {
    {"cluster", "node_id", CFG_STR, NULL, 0, 0},
    /* host:port other nodes reach this one at; empty: a one-node cluster without peers */
    {"cluster", "bind", CFG_STR, NULL, 0, 0},
    {"cluster", "advertise", CFG_STR, NULL, 0, 0},
    {"cluster", "seeds", CFG_LIST, NULL, 0, 0},
    {"cluster", "bootstrap_expect", CFG_INT, NULL, 0, 64},
    {"cluster", "partitions", CFG_INT, NULL, 1, 4096},
    {"cluster", "replication_factor", CFG_INT, NULL, 0, 5},
    /* partitions p, p + G, p + 2G ... of one owner share their replicas; 0: each its own */
    {"cluster", "replica_groups", CFG_INT, NULL, 0, 4096},
    {"cluster", "replication", CFG_ENUM, "sync|async", 0, 0},
    {"cluster", "replica_ack_timeout_ms", CFG_INT, NULL, 20, 60000},
    /* catch-ups (a replica rebuilt from a snapshot): at once per shard, chunk size, limit */
    {"cluster", "replica_catchups", CFG_INT, NULL, 1, 64},
    {"cluster", "replica_snapshot_chunk_bytes", CFG_INT, NULL, 4096, 16777216},
    {"cluster", "replica_snapshot_max_bytes", CFG_INT, NULL, 65536, 4294967296},
    {"cluster", "replica_log_bytes", CFG_INT, NULL, 0, 4294967296},
    {"cluster", "split_brain_strategy", CFG_ENUM, "winner_takes_all|oldest_node|configured_master",
     0, 0},
    {"cluster", "master", CFG_STR, NULL, 0, 0},
    {"cluster", "voters", CFG_INT, NULL, 1, 7},
    {"cluster", "heartbeat_ms", CFG_INT, NULL, 10, 10000},
    {"cluster", "lease_ms", CFG_INT, NULL, 100, 60000},
    {"cluster", "down_after_ms", CFG_INT, NULL, 150, 600000},
    {"cluster", "election_ms", CFG_INT, NULL, 50, 60000},
    {"cluster", "dns_refresh_ms", CFG_INT, NULL, 100, 3600000},
    {NULL, NULL, 0, NULL, 0, 0},
};
