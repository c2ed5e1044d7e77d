/*
 * Role `admin`: the node's admin socket, which cmcpctl speaks to.
 *
 * nng rep on [admin] endpoint (tcp://127.0.0.1:9300 by default). Every
 * exchange is authenticated with the node's cookie and sealed (ipc/auth.h);
 * a command runs only once its message verified. Commands are JSON:
 *   request  {"cmd": NAME, "args": {...}}
 *   response {"ok": true, "result": {...}} | {"ok": false, "error": CODE, "message": TEXT}
 * Supervisor commands are forwarded to ipc://RUN/sup-NAME.sock, session
 * commands to the shards (ipc://RUN/shard-i.sock), `metrics` to the metrics
 * worker's HTTP server; drain, undrain and log_level are broadcast on
 * ipc://RUN/control.sock (ipc/control.h). One admin request is served at a
 * time; each forwarded call waits at most [admin] timeout_ms.
 *
 * Internal header of admin.c (socket, authentication, state) and
 * admin_cmds.c (the commands) and admin_fwd.c (calls to other processes).
 */
#ifndef CMCP_ADMIN_H
#define CMCP_ADMIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "proc.h"

int admin_main(struct proc_args *a);

struct admin_state {
    struct proc_args *a;
    int timeout_ms;
    int nshards;
    bool draining;
    char log_level[16];
    bool shutdown_requested;
};
extern struct admin_state A;

/* admin_cmds.c: runs one command; returns the response object (new). */
json_t *admin_run(const char *cmd, json_t *args);
/* The names admin_run knows, NULL-terminated (cmcpctl completes the same list). */
extern const char *const admin_commands[];

/* admin.c: node-wide state changes (broadcast, persisted, published as metrics). */
void admin_set_drain(bool drain);
int admin_set_log_level(const char *level);
void admin_request_shutdown(void);

/* admin_fwd.c. On failure NULL with err set to a sentence naming what failed; *absent (may be
 * NULL) tells a process that is not there (nothing listens) from one that did not answer. */
json_t *admin_sup_call(const char *sup, json_t *req, char *err, size_t errlen,
                       bool *absent); /* req stolen */
/* A shard op: header sent, reply header returned (its "st" is the status). */
json_t *admin_shard_call(int shard, json_t *hdr, char *err, size_t errlen); /* hdr stolen */
/* GET path from the metrics worker's HTTP server: body (malloc'd) and status. */
char *admin_metrics_get(const char *path, int *status, char *err, size_t errlen);

#endif
