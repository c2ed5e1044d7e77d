/*
 * The node control broadcast: node-wide orders from the admin worker to every
 * process that must obey them (listeners, shards, supervisors).
 *
 * The admin worker binds an nng pub at ipc://RUN/control.sock and publishes
 * JSON objects:
 *   {"op":"drain"}                        stop accepting new sessions; existing ones go on
 *   {"op":"undrain"}                      accept new sessions again
 *   {"op":"log_level","level":"debug"}   the node's log level (debug|info|notice|warning|error)
 *   {"op":"state","drain":B,"log_level":L|null}   the whole state, again every second
 * It also keeps that state in RUN/control.state, so a process started (or
 * restarted) while the node is drained knows it before its first request,
 * and a restarted admin worker carries on. The file names the root's pid:
 * a state left by an earlier run of the node is ignored.
 *
 * A process calls control_subscribe() once, on its loop. The helper applies
 * log levels itself (log_set_level) and tells the callback about changes
 * only: "drain", "undrain" (also at subscribe time when the node is already
 * drained), "log_level". pub/sub may drop a message; the periodic "state"
 * repairs that within a second.
 */
#ifndef CMCP_CONTROL_H
#define CMCP_CONTROL_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* op: "drain", "undrain" or "log_level"; msg: {"op":..., "level":...}. Runs on the loop. */
typedef void (*control_fn)(const char *op, const json_t *msg);

/*
 * Dials ipc://RUN/control.sock (non-blocking: the admin worker may start
 * later or restart; nng redials) and watches it on loop. cb may be NULL.
 * When the node is already drained, cb("drain") runs before this returns.
 * 0, or -1 after logging why (the process then simply never drains).
 */
int control_subscribe(struct ev_loop *loop, const char *run_dir, control_fn cb);
void control_unsubscribe(void);

/* The last known state (false before any news). */
bool control_draining(void);


/* Admin side: persist / read the state file (RUN/control.state). */
int control_state_write(const char *run_dir, bool drain, const char *log_level);
/* {"drain":B,"log_level":L|null} of this run of the node, or NULL (none, stale or unreadable). */
json_t *control_state_read(const char *run_dir);

#endif
