/*
 * The cluster as a node's workers see it: who owns which partition, and
 * whether this node may acknowledge writes now. The cluster's processes
 * publish it over nng pub/sub; workers (shards, listeners) subscribe here
 * and never link cluster code (docs/layout.md).
 *
 * Two publications, each a topic word, a space, and a JSON object:
 *   ipc://RUN/cluster-map.sock    (failover_manager)
 *     "map {"version":V,"hash":H,"self":NODE,"partitions":P,"owners":[I...],"epochs":[E...],
 *           "nodes":[{"id","state","endpoint",...}...]}"
 *       on every change and again every second, whole (a missed publication
 *       leaves nothing to repair); a subscriber takes a map only if its
 *       version is newer than the one it holds, and a worker that starts
 *       asks for it at once (cview_fetch_map) rather than waiting a second
 *   ipc://RUN/cluster-fence.sock  (split_brain_detector)
 *     "fence {"lease_until":MS,"fenced":B,"reason":TEXT,"version":V}"
 *       every ~100 ms: lease_until is a CLOCK_MONOTONIC time in ms (the
 *       same clock in every process of the host), until which this node
 *       may acknowledge writes
 * pub/sub may drop a message: the next one carries the whole state again,
 * and a lease that is not renewed runs out by itself, which is the safe way
 * to fail.
 */
#ifndef CMCP_IPC_CVIEW_H
#define CMCP_IPC_CVIEW_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define CVIEW_MAX_PARTITIONS 4096

struct cview {
    bool have_map, have_fence;
    uint64_t version;
    char hash[17];     /* the map's hash (cluster/map.h), for comparing nodes' maps */
    int npart;
    int self;          /* this node's index in nodes, -1 until it is a member */
    char self_id[64];
    int16_t owner[CVIEW_MAX_PARTITIONS]; /* node index, -1 for none */
    uint64_t epoch[CVIEW_MAX_PARTITIONS];
    json_t *nodes;     /* the map's members as published (id, state, endpoint, ...) */
    int rf;            /* the map's replication factor (1: owner only) */
    uint8_t nrep[CVIEW_MAX_PARTITIONS];     /* in-sync replicas of each partition */
    int16_t rep[CVIEW_MAX_PARTITIONS][4];   /* their node indexes */
    uint32_t isr_gen[CVIEW_MAX_PARTITIONS]; /* each in-sync set's generation (an isr_add names it) */
    double lease_until; /* CLOCK_MONOTONIC ms */
    bool fenced;
    char reason[256];
};

/* Subscribes on loop (non-blocking; the publishers may start later). changed (may be NULL)
 * runs on the loop after each accepted map or change of fence state. 0, or -1 after logging. */
int cview_subscribe(struct ev_loop *loop, const char *run_dir, void (*changed)(void));
void cview_unsubscribe(void);
/* Asks the failover manager for the whole map now (req/rep on ipc://RUN/cluster.sock) rather
 * than waiting for its next publication: a worker that starts, or finds its map stale. Blocks
 * at most timeout_ms. 0, or -1 (no manager there yet: the publications bring it). */
int cview_fetch_map(const char *run_dir, int timeout_ms);
const struct cview *cview_get(void);

/* The partition a session id names (as ipc/route.h reads it). */
int cview_partition_of(const char *sid);
/* Whether this node owns partition p in the map it holds (false without a map). */
bool cview_owns(int p);
/* Member i's id and peer endpoint (host:port) in the map held, or NULL. */
const char *cview_node_id(int i);
const char *cview_node_endpoint(int i);
/* Whether member i is in state "up" in the map held. */
bool cview_node_up(int i);
/* Whether this node may acknowledge writes at now_ms (CLOCK_MONOTONIC); why not into why. */
bool cview_may_write(double now_ms, char *why, size_t whylen);

/* Parsers of the two publications (the subscriber uses them; tests too). 0, or -1. */
int cview_apply_map(struct cview *v, const char *json, size_t len);
int cview_apply_fence(struct cview *v, const char *json, size_t len);

#endif
