/*
 * The cluster map as libraft's state machine (struct raft_fsm): commands are
 * applied to a struct cluster_map, snapshots are the map as JSON.
 */
#ifndef CMCP_CLUSTER_FSM_H
#define CMCP_CLUSTER_FSM_H

#include <raft.h>

#include "cluster/map.h"

struct map_fsm {
    struct raft_fsm fsm; /* first: libraft hands this pointer back */
    struct raft *raft;   /* where the index of the entry being applied is read */
    struct cluster_map map;
    /* Called after every command applied (on every node), with its result. May be NULL. */
    void (*applied)(struct map_fsm *f, const char *cmd, size_t len, enum map_result r);
    void *ud;
};

/* Initialises f (an empty map) for the raft instance that will own it. */
void map_fsm_init(struct map_fsm *f, struct raft *raft);

/* The result of a command as libraft hands it to raft_apply's callback. */
#define MAP_FSM_RESULT(result) ((enum map_result)(intptr_t)(result))

#endif
