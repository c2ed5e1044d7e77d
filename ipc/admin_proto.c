/* The admin protocol's commands and answers (admin_proto.h). */
#include "ipc/admin_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const struct admin_cmd admin_cmds[] = {
    {ADMIN_STATUS, "status", "status",
     "node, version, uptime, the supervision tree, sessions per shard, ports"},
    {ADMIN_WHICH_CHILDREN, "which_children", "which_children [SUP]",
     "children of a supervisor (default root): state, pid, restarts"},
    {ADMIN_COUNT_CHILDREN, "count_children", "count_children [SUP]",
     "specs, active, supervisors, workers"},
    {ADMIN_RESTART_CHILD, "restart_child", "restart_child SUP ID", "start a stopped child again"},
    {ADMIN_TERMINATE_CHILD, "terminate_child", "terminate_child SUP ID|PID",
     "stop a child (it is not restarted; its spec stays)"},
    {ADMIN_START_CHILD, "start_child", "start_child SUP SPEC",
     "add and start a child: SPEC is JSON, e.g. '{\"id\":\"w\",\"role\":\"testworker\"}'"},
    {ADMIN_START_CHILD, "start_child", "start_child SUP --args A...",
     "simple_one_for_one: a new child with these arguments"},
    {ADMIN_DELETE_CHILD, "delete_child", "delete_child SUP ID", "forget a stopped child's spec"},
    {ADMIN_SESSIONS, "sessions", "sessions [--shard N | --cluster]",
     "the sessions this node's shards hold; --cluster: every member's, with each session's "
     "owner and in-sync replicas"},
    {ADMIN_SESSION_SHOW, "session_show", "session show ID",
     "everything a shard knows of one session"},
    {ADMIN_SESSION_KILL, "session_kill", "session kill ID",
     "end one session (its client must initialize again)"},
    {ADMIN_METRICS, "metrics", "metrics", "the node's metrics (Prometheus text; --json: samples)"},
    {ADMIN_LOG_LEVEL, "log_level", "log_level [LEVEL]",
     "show or set the log level of every process (debug info notice warning error)"},
    {ADMIN_DRAIN, "drain", "drain",
     "accept no new sessions; existing ones go on; /health answers 503; in a cluster, the node's "
     "partitions move to other members, and this waits (up to 20 s) until it owns none"},
    {ADMIN_UNDRAIN, "undrain", "undrain", "accept new sessions (and partitions) again"},
    {ADMIN_SHUTDOWN, "shutdown", "shutdown", "stop the node (the whole tree, in order)"},
    {ADMIN_NODES, "nodes", "nodes",
     "every cluster member: id, incarnation, state, voter or not, partitions, last heard"},
    {ADMIN_CLUSTER_STATUS, "cluster_status", "cluster status",
     "leader, term, map version and hash, this node fenced or not and why, partitions per node"},
    {ADMIN_VERIFY_STATE, "verify_state", "verify_state",
     "every member holds the same map version and hash, and every partition's in-sync copies "
     "the same history (epoch, seq, chain) as its owner (differences listed)"},
    {ADMIN_RECONCILE_STATE, "reconcile_state", "reconcile_state",
     "wait (up to 10 s) until every member has caught up with the map and every in-sync copy "
     "with its owner, then verify"},
    {ADMIN_REBALANCE, "rebalance", "rebalance",
     "move partitions to their preferred members, a few at a time (for 30 s)"},
    {ADMIN_FORCE_LEADER, "force_leader", "force_leader",
     "Raft recovery: this node becomes the only voter (after a lost majority; can lose writes)"},
    {ADMIN_LEAVE, "leave", "leave [NODE]", "a member leaves the cluster (drain it first)"},
    {ADMIN_SYNC_FROM_PEER, "sync_from_peer", "sync_from_peer NODE",
     "copy NODE's partitions again: this node's copies of them leave the in-sync sets and NODE "
     "rebuilds them from snapshots (here or on another member with room); waits up to 20 s"},
    {ADMIN_CMD_COUNT, NULL, NULL, NULL},
};

const struct admin_cmd *admin_cmd_find(const char *name)
{
    for (const struct admin_cmd *c = admin_cmds; name && c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

json_t *admin_reply_ok(json_t *result)
{
    return json_pack("{s:b,s:o}", "ok", 1, "result", result ? result : json_object());
}

json_t *admin_reply_fail(const char *code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", code, "message", msg);
}

bool admin_reply_read(const json_t *reply, json_t **result, const char **code,
                      const char **message)
{
    *result = json_object_get(reply, "result");
    *code = json_string_value(json_object_get(reply, "error"));
    *message = json_string_value(json_object_get(reply, "message"));
    if (!*code)
        *code = "error";
    if (!*message)
        *message = "(no message)";
    return json_is_true(json_object_get(reply, "ok"));
}
