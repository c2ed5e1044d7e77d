/*
 * The admin protocol between cmcpctl and the admin worker, once for both:
 * the commands, and the shape of a request and of its answer. The exchange
 * itself is authenticated and sealed (ipc/auth.h).
 *
 *   request  {"cmd": NAME, "args": {...}}
 *   answer   {"ok": true, "result": {...}}
 *          | {"ok": false, "error": CODE, "message": TEXT}
 *
 * CODE is a word a script can test (badarg, not_found, unreachable,
 * unsupported, failed, running, restarting, ...); TEXT says what failed and
 * what to do. A supervisor's control socket refuses in the same shape (the
 * admin worker passes its refusals on), and answers success with its fields
 * beside "ok": true.
 */
#ifndef CMCP_IPC_ADMIN_PROTO_H
#define CMCP_IPC_ADMIN_PROTO_H

#include <jansson.h>
#include <stdbool.h>

enum admin_cmd_id {
    ADMIN_STATUS,
    ADMIN_WHICH_CHILDREN,
    ADMIN_COUNT_CHILDREN,
    ADMIN_RESTART_CHILD,
    ADMIN_TERMINATE_CHILD,
    ADMIN_START_CHILD,
    ADMIN_DELETE_CHILD,
    ADMIN_SESSIONS,
    ADMIN_SESSION_SHOW,
    ADMIN_SESSION_KILL,
    ADMIN_METRICS,
    ADMIN_LOG_LEVEL,
    ADMIN_DRAIN,
    ADMIN_UNDRAIN,
    ADMIN_SHUTDOWN,
    ADMIN_NODES,
    ADMIN_CLUSTER_STATUS,
    ADMIN_VERIFY_STATE,
    ADMIN_RECONCILE_STATE,
    ADMIN_REBALANCE,
    ADMIN_FORCE_LEADER,
    ADMIN_LEAVE,
    ADMIN_SYNC_FROM_PEER,
    ADMIN_CMD_COUNT,
};

struct admin_cmd {
    enum admin_cmd_id id;
    const char *name;  /* on the wire */
    const char *usage; /* as typed in cmcpctl (one line; some commands have two forms) */
    const char *what;
};

/* Every command and form, in the order cmcpctl's help lists them; ends with a NULL name. */
extern const struct admin_cmd admin_cmds[];
/* The command of a wire name, or NULL. */
const struct admin_cmd *admin_cmd_find(const char *name);

/* Answers (new references). */
json_t *admin_reply_ok(json_t *result); /* result stolen; NULL: {} */
json_t *admin_reply_fail(const char *code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Reads an answer: true with *result (borrowed) when it is ok; false with
 * *code and *message (borrowed, never NULL) when it is not.
 */
bool admin_reply_read(const json_t *reply, json_t **result, const char **code,
                      const char **message);

#endif
