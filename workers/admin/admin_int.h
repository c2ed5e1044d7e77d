/*
 * Inside the admin role: the node's admin socket, which cmcpctl speaks to.
 *
 * nng rep on [admin] endpoint (tcp://127.0.0.1:9300 by default). Every
 * exchange is authenticated with the node's cookie and sealed (ipc/auth.h);
 * a command runs only once its message verified. The commands and the shape
 * of their answers are the admin protocol's (ipc/admin_proto.h).
 * Supervisor commands are forwarded to ipc://RUN/sup-NAME.sock, session
 * commands to the shards (ipc://RUN/shard-i.sock), `metrics` to the metrics
 * worker's HTTP server; drain, undrain and log_level are broadcast on
 * ipc://RUN/control.sock (ipc/control.h). One admin request is served at a
 * time; each forwarded call waits at most [admin] timeout_ms.
 *
 * Internal header of admin.c (socket, authentication, state) and
 * cmds.c (the commands) and fwd.c (calls to other processes).
 */
#ifndef CMCP_ADMIN_INT_H
#define CMCP_ADMIN_INT_H

#if !defined(CMCP_LAYER_ADMIN)
#error "workers/admin/admin_int.h is internal to the admin role"
#endif

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/proc.h"
#include "ipc/auth.h"
#include "ipc/wire.h"
#include "workers/admin/admin.h"

struct admin_state {
    struct proc_args *a;
    int timeout_ms;
    int nshards;
    bool draining;
    char log_level[16];
    bool shutdown_requested;
};
extern struct admin_state admin_g;

/* cmds.c: runs one command (a name ipc/admin_proto.h knows); returns the answer (new). */
json_t *admin_run(const char *cmd, json_t *args);

/* cmds.c: asks the failover manager to move this node's partitions away and waits, for at
 * most max_ms, until it owns none: {"owned_left", "waited_ms"[, "message"]}, or NULL with
 * *fail set (not in a cluster, or the manager refused). */
json_t *admin_cluster_drain(double max_ms, json_t **fail);

/* admin.c: node-wide state changes (broadcast, persisted, published as metrics). */
void admin_set_drain(bool drain);
int admin_set_log_level(const char *level);
void admin_request_shutdown(void);

/* fwd.c. On failure NULL with err set to a sentence naming what failed; *absent (may be
 * NULL) tells a process that is not there (nothing listens) from one that did not answer. */
json_t *admin_sup_call(const char *sup, json_t *req, char *err, size_t errlen,
                       bool *absent); /* req stolen */
/* A request to this node's failover manager (its control socket: status, map, drain, ...). */
json_t *admin_cluster_call(json_t *req, char *err, size_t errlen); /* req stolen */
/* A shard op: 0 with its reply in *r (r->data lives in *keep, which the caller releases; no
 * body), or -1 with err. */
int admin_shard_call(int shard, const struct wire_req *req, struct wire_reply *r, json_t **keep,
                     char *err, size_t errlen);
/* The same op to shard `shard` of the member whose peer endpoint is given (host:port), over
 * a sealed link to its forward port (ipc/peer.h: peer_call). As admin_shard_call. */
int admin_remote_shard_call(const char *endpoint, int shard, const struct wire_req *req,
                            struct wire_reply *r, json_t **keep, char *err, size_t errlen);
/* admin.c: the node's cookie, which also seals links to other members. */
const struct auth_key *admin_cookie_key(void);
/* GET path from the metrics worker's HTTP server: body (malloc'd) and status. */
char *admin_metrics_get(const char *path, int *status, char *err, size_t errlen);

#endif
