/* Inside the cluster layer: what its roles share (the relay's frames, start-up helpers). */
#ifndef CMCP_CLUSTER_INT_H
#define CMCP_CLUSTER_INT_H

#if !defined(CMCP_LAYER_CLUSTER)
#error "cluster/cluster_int.h is internal to the cluster layer"
#endif

#include <ev.h>
#include <nng/nng.h>
#include <stddef.h>

#include "base/proc.h"
#include "cluster/cluster.h"
#include "cluster/config.h"

/*
 * The relay between a node's failover manager and its cluster monitor (an
 * AF_UNIX data link, RUN/cluster-relay.data): a frame is a kind byte, the
 * other node's id (a length byte and its bytes: the destination going out,
 * the source coming in), then the payload, which the monitor moves to and
 * from the peer links' channel of the same number (cluster/peer.h).
 */
enum relay_kind { RELAY_RAFT = 2, RELAY_CONTROL = 3 }; /* = PEER_RAFT, PEER_CONTROL */

/* A frame for the relay (malloc'd, length prefix included); NULL when out of memory. */
char *relay_frame(int kind, const char *node, const void *payload, size_t len, size_t *flen);
/* Splits a relay frame's payload (without prefix). 0, or -1 when malformed. */
int relay_parse(const char *data, size_t len, int *kind, char node[64], const char **payload,
                size_t *plen);

/* A pub socket listening at addr; 0 or an nng error. */
int cluster_pub_open(nng_socket *s, const char *addr);
/* Calls republish on loop's thread whenever a subscriber connects to s, so that a process
 * (re)started after a publication hears the current state at once, not a period later. w must
 * live as long as s. */
void cluster_pub_on_subscriber(nng_socket s, struct ev_loop *loop, ev_async *w,
                               void (*republish)(struct ev_loop *, ev_async *, int));
/* Publishes "topic json" (json stolen) without blocking; a full queue drops it. */
void cluster_publish(nng_socket s, const char *topic, json_t *o);

/* The common start of a cluster role: its settings, a loop, stats, control. 0, or an exit code. */
int cluster_role_start(struct proc_args *a, const char *role, struct cluster_conf *cc,
                       struct ev_loop **loop);
void cluster_role_stop(void);

#endif
