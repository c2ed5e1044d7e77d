/*
 * The cluster map: the state machine that Raft (libraft) replicates on every
 * node (docs/cluster.md). Pure: no sockets, no loop, no clock. The same
 * commands applied in the same order give the same map on every node.
 *
 * What it holds:
 *   members     node id (a stable name), incarnation (new at every start of
 *               a node), endpoint, state, join index (the Raft index of its
 *               first join: "oldest" means lowest join index), and the
 *               newest committed liveness beat of its incarnation;
 *   partitions  a fixed number P (chosen at bootstrap) of slots, each with
 *               its owner and an epoch that grows at every change of owner.
 *
 * Commands are JSON objects (an "op" and its fields); map_cmd_* build them.
 * A command that no longer fits the map when it is applied (a mark-down
 * whose proposer saw an older liveness beat than the one applied since, an
 * unknown node) changes nothing and says why: every node reaches the same
 * verdict, so the map stays the same everywhere.
 *
 * Liveness (the lease): a node proposes a beat every few hundred ms; it may
 * acknowledge writes until (the time it proposed its newest committed beat)
 * + T_lease, on its own clock. A mark-down names the newest beat its
 * proposer had applied; it applies only if no newer beat was committed
 * before it in the log, so the log itself orders "the node renewed its
 * lease" and "the node was marked down", and never both take effect.
 */
#ifndef CMCP_CLUSTER_MAP_H
#define CMCP_CLUSTER_MAP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAP_NODE_ID_MAX 64    /* = PEER_NODE_ID_MAX (ipc/peer.h) */
#define MAP_ENDPOINT_MAX 128  /* = PEER_ENDPOINT_MAX */
#define MAP_MAX_NODES 64
#define MAP_MAX_PARTITIONS 4096
#define MAP_DEFAULT_PARTITIONS 256
#define MAP_MAX_REPLICAS 4 /* replication factor 5 at most: the owner and four */

enum map_state { MAP_UP = 1, MAP_DRAINING, MAP_DOWN, MAP_LEFT };

struct map_node {
    char id[MAP_NODE_ID_MAX];
    uint64_t incarnation;
    char endpoint[MAP_ENDPOINT_MAX];
    enum map_state state;
    uint64_t join_index; /* the Raft index of its first join */
    uint64_t beat;       /* newest committed liveness beat of this incarnation (0: none yet) */
};

struct map_partition {
    int owner; /* index into nodes[], -1 for none */
    uint64_t epoch;
    /* The in-sync replicas (replication factor > 1): members whose stores hold every change
     * the owner acknowledged. The owner acknowledges a write only once each of them has it;
     * one leaves the set only by a committed command (a mark-down, an isr_drop). */
    int nrep;
    int16_t rep[MAP_MAX_REPLICAS];
    /* Grows at every change of the in-sync set and at every isr_drop of the partition's
     * epoch (a member or not). An isr_add names the generation its owner saw when it asked:
     * one that commits after a later isr_drop (the owner gave up on that replica and
     * acknowledged writes without it) is refused, not applied late. */
    uint32_t isr_gen;
};

struct cluster_map {
    uint64_t version; /* grows at every change of membership or ownership (not at beats) */
    uint64_t applied; /* the Raft index of the last command applied */
    int npart;        /* P, fixed by the first command (init); 0 before */
    int rf;           /* replication factor, fixed by init (1: the owner only) */
    uint64_t lost;    /* partitions placed after every copy of them was gone (rf > 1) */
    int nnodes;
    struct map_node nodes[MAP_MAX_NODES];
    struct map_partition parts[MAP_MAX_PARTITIONS];
};

/* What applying a command did. */
enum map_result {
    MAP_OK = 0,
    MAP_NOOP,       /* nothing to change (already so) */
    MAP_STALE,      /* a mark-down that a newer beat overtook, or an old incarnation's command */
    MAP_UNKNOWN,    /* a node the map does not hold */
    MAP_FULL,       /* MAP_MAX_NODES members */
    MAP_BAD,        /* not a command of this map (malformed, out of range) */
};
const char *map_result_name(enum map_result r);

void map_init(struct cluster_map *m);
/* Applies one command at Raft index `index`. Never fails the map: a bad command changes nothing. */
enum map_result map_apply(struct cluster_map *m, const char *cmd, size_t len, uint64_t index);

/* Commands (malloc'd JSON text, NULL when out of memory). */
char *map_cmd_init(int partitions, int rf);
char *map_cmd_join(const char *node, uint64_t incarnation, const char *endpoint);
char *map_cmd_beat(const char *node, uint64_t incarnation, uint64_t seq);
char *map_cmd_down(const char *node, uint64_t incarnation, uint64_t seen_beat);
char *map_cmd_leave(const char *node);
char *map_cmd_drain(const char *node, bool drain);
/* Gives partitions parts[0..n) to owner (a node id), each at epoch + 1. */
char *map_cmd_assign(const int *parts, int n, const char *owner);

/*
 * Replicated placement (rf > 1). A move names the epoch it was planned on
 * and applies only if the partition is still at it (a plan that an earlier
 * move overtook changes nothing). The owner changes only to the current
 * owner or one of its in-sync replicas while one of them is a member that
 * is up (a promotion: epoch + 1); only when none is left may a partition go
 * to a member that holds nothing (its sessions are lost, and the map says so
 * by counting it in `lost`). Replicas must be up and not the owner.
 */
struct map_move {
    int part;
    uint64_t epoch; /* the epoch it was planned on */
    int owner;      /* node index */
    int nrep;
    int rep[MAP_MAX_REPLICAS];
};
char *map_cmd_place(const struct cluster_map *m, const struct map_move *mv, int n);
/* Takes node out of partition part's in-sync replicas (if part is still at epoch). */
char *map_cmd_isr_drop(int part, uint64_t epoch, const char *node);
/*
 * Puts node back into partition part's in-sync replicas: its owner brought it up to date
 * (a snapshot, then every change since) and waits for it on every write from now on. Applies
 * only if part is still at epoch, node is up (and still incarnation inc, when inc != 0: a
 * restart since the catch-up started is no proof of a copy), neither the owner nor a replica
 * already (NOOP), and the set has room (nrep < rf - 1; else MAP_FULL).
 */
char *map_cmd_isr_add(int part, uint64_t epoch, const char *node, uint64_t inc, int64_t gen);

/* ---- reading the map ---- */

int map_node_find(const struct cluster_map *m, const char *id);
const char *map_state_name(enum map_state s);
/* Partitions owned by node index i. */
int map_owned(const struct cluster_map *m, int i);
/* Members in state UP. */
int map_up(const struct cluster_map *m);
/* The member a partition prefers among those that may own (UP): rendezvous hashing. -1: none. */
int map_preferred(const struct cluster_map *m, int part);

/* How far a plan goes beyond partitions that have no live owner. */
enum map_plan_mode {
    MAP_PLAN_FAILOVER,  /* only partitions without a live owner */
    MAP_PLAN_DRAIN,     /* and partitions of DRAINING members */
    MAP_PLAN_REBALANCE, /* and every partition away from its preferred member */
};

/*
 * The ownership changes the map needs now, as (partition, new owner) pairs
 * into parts/owners (at most max): partitions without a live owner (none,
 * DOWN, LEFT) go to their preferred UP member, at once; then, as the mode
 * says, at most `moves` hand-offs from live owners. Unowned partitions wait
 * until at least min_up members are UP (a forming cluster spreads them over
 * all its first members rather than giving all to the first). Returns the
 * count.
 */
int map_plan(const struct cluster_map *m, int min_up, enum map_plan_mode mode, int moves,
             int *parts, int *owners, int max);

/*
 * The plan of a map with rf > 1, as moves (at most max): partitions never
 * owned get their preferred member as owner (all copies empty: in sync from
 * the start). Their rf - 1 replicas: with groups > 0 (the shard count, the
 * same on every member), the partitions of one owner and one shard share
 * them, so that one commit of that shard goes to one shard on each replica
 * node rather than being split over all of them: the members up after the
 * owner in the map's order, from the (partition mod groups)-th on, which
 * spreads an owner's shards over the others. With groups = 0, each
 * partition's own next rf - 1 by the same hashing as its owner. Partitions
 * without a live owner are promoted to their best in-sync replica that is up
 * (the others stay replicas), or, with none left, given to the preferred
 * member (lost); in the drain and rebalance modes at most `moves` live
 * owners hand over to an in-sync replica (drain: to any; rebalance: only to
 * the preferred member), the old owner staying a replica unless it drains.
 */
int map_plan_replicated(const struct cluster_map *m, int min_up, int groups,
                        enum map_plan_mode mode, int moves, struct map_move *mv, int max);
/* Whether node index i is an in-sync replica of partition p. */
bool map_is_replica(const struct cluster_map *m, int p, int i);

/* The whole map as JSON (new reference): what workers and cmcpctl see; also the snapshot. */
json_t *map_to_json(const struct cluster_map *m);
/* Restores a map from map_to_json's output. 0, or -1 when malformed (m unchanged). */
int map_from_json(struct cluster_map *m, const json_t *j);
/* A hash of everything but liveness beats, as 16 hex digits (for verify_state). */
void map_hash(const struct cluster_map *m, char out[17]);

#endif
