/*
 * Role `shard`: owns the MCP sessions whose ids name it (shard_int.h lists
 * its parts). Sessions come back from the store before the shard listens,
 * so no request misses one; a shard killed with SIGKILL comes back with
 * every session it acknowledged, and a client that lost its stream resumes
 * it with Last-Event-ID, also across restarts.
 */
#define _GNU_SOURCE
#include "workers/shard/shard_int.h"

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/control.h"
#include "ipc/cview.h"
#include "ipc/stats.h"
#include "workers/shard/tools.h"

struct shard_state shard_g;

static ev_signal sigterm_w, sigint_w;

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    (void)w;
    ev_break(loop, EVBREAK_ALL);
}

/*
 * The key that seals a stateless request's multi-round state: the same in
 * every shard of the node (the root makes it, data_dir/state.key), so that
 * the next round may land on any shard.
 */
static int load_state_key(char *err, size_t errlen)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/state.key",
             cfg_get(&shard_g.a->cfg, "node", "data_dir", "./var/data"));
    unsigned char key[32];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(key, 1, sizeof(key), f) : 0;
    if (f)
        fclose(f);
    if (n != sizeof(key)) {
        snprintf(err, errlen, "cannot read the node's state key %s (the root makes it at start)",
                 path);
        return -1;
    }
    int rc = mcp_server_set_state_key(shard_g.srv, key, sizeof(key), err, errlen);
    sodium_memzero(key, sizeof(key));
    return rc;
}

static int start_failed(const char *err, int code)
{
    log_error("shard_start_failed", "{s:s}", "error", err);
    fprintf(stderr, "cmcpd: shard: %s\n", err);
    return code;
}

/*
 * Counters are there at 0 from the start for every label value this shard can produce,
 * not only after their first event: rate() and alerts see a series from its first
 * scrape. Requests by method for each transport the node serves (the listeners' rule);
 * errors by method and code appear with their first error (the codes are not a fixed set).
 */
static void zero_series(struct cfg *c)
{
    static const char *const unlabelled[] = {
        "cmcp_sessions_created_total",    "cmcp_store_commit_failures_total",
        "cmcp_replication_unknown_total", "cmcp_replication_changes_applied_total",
        "cmcp_sessions_recovered_total",  "cmcp_replication_snapshots_installed_total",
        "cmcp_tasks_created_total"};
    for (size_t i = 0; i < CMCP_ARRAY_LEN(unlabelled); i++)
        stats_counter(unlabelled[i], "");
    stats_counter("cmcp_replication_catchups_total", "result=\"rejoined\"");
    stats_counter("cmcp_replication_catchups_total", "result=\"aborted\"");
    stats_counter("cmcp_store_commits_total", "of=\"own\"");
    stats_counter("cmcp_store_commits_total", "of=\"copies\"");
    stats_counter("cmcp_replication_catchups_started_total", "from=\"log\"");
    stats_counter("cmcp_replication_catchups_started_total", "from=\"snapshot\"");
    static const char *const refused[] = {"fenced", "not_owner"};
    static const char *const closed[] = {"deleted",           "idle",      "abandoned",
                                         "initialize failed", "not saved", "task expired"};
    char labels[160];
    for (size_t i = 0; i < CMCP_ARRAY_LEN(refused); i++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", refused[i]);
        stats_counter("cmcp_writes_refused_total", labels);
    }
    for (size_t i = 0; i < CMCP_ARRAY_LEN(closed); i++) {
        snprintf(labels, sizeof(labels), "reason=\"%s\"", closed[i]);
        stats_counter("cmcp_sessions_closed_total", labels);
    }
    const char *tr[5];
    int n = wire_transports(cfg_get_long(c, "listener", "http_port", 8080),
                            cfg_get_long(c, "listener", "tcp_port", 8081),
                            getenv("CMCP_STDIO") != NULL, tr);
    for (int t = 0; t < n; t++)
        for (int m = 1; m < wire_method_count; m++) {
            snprintf(labels, sizeof(labels), "method=\"%s\",transport=\"%s\"", wire_methods[m],
                     tr[t]);
            stats_counter("cmcp_requests_total", labels);
        }
}

/*
 * [tools] call_timeout_ms (every built-in tool) and call_timeouts = NAME=MS, ... (one
 * tool): how long a tool call may run before it is stopped and answered as failed.
 * 0, or -1 with err naming the entry.
 */
static int tool_limits(struct cfg *c, char *err, size_t errlen)
{
    mcp_server_set_tool_time_limit(shard_g.srv, NULL,
                                   cfg_get_long(c, "tools", "call_timeout_ms", 600000));
    const struct cfg_entry *e = cfg_find(c, "tools", "call_timeouts");
    if (!e)
        return 0;
    char items[64][64];
    int n = cfg_split_list(e->value, items, 64);
    for (int i = 0; i < n; i++) {
        char *eq = strchr(items[i], '=');
        char *end = NULL;
        long ms = eq ? strtol(eq + 1, &end, 10) : -1;
        if (!eq || eq == items[i] || !end || *end || ms < 0 || ms > 86400000) {
            snprintf(err, errlen, "%s:%d: [tools] call_timeouts: '%s' is not NAME=MS (MS from 0, "
                                  "none, to 86400000)",
                     e->origin, e->line, items[i]);
            return -1;
        }
        *eq = '\0';
        if (mcp_server_set_tool_time_limit(shard_g.srv, items[i], ms) != 0) {
            snprintf(err, errlen, "%s:%d: [tools] call_timeouts names '%s', which is no tool of "
                                  "this node (tools/list shows them)",
                     e->origin, e->line, items[i]);
            return -1;
        }
    }
    return 0;
}

/*
 * [auth] tool_scopes names tools the listener guards by scope (docs/authorization.md). The
 * listener cannot know which tools exist (it runs no MCP); the shard can, and a misspelt
 * name, which would leave the real tool unguarded, stops the start. 0 or -1 with err.
 */
static int auth_tool_names(struct cfg *c, char *err, size_t errlen)
{
    const struct cfg_entry *e = cfg_find(c, "auth", "tool_scopes");
    if (!e || !cfg_get_bool(c, "auth", "enabled", false))
        return 0;
    for (const char *p = e->value; *p;) {
        size_t len = strcspn(p, ",");
        char item[128];
        snprintf(item, sizeof(item), "%.*s", (int)(len < sizeof(item) ? len : sizeof(item) - 1),
                 p);
        p += len + (p[len] == ',');
        char *eq = strchr(item, '='), *name = item;
        if (!eq)
            continue; /* the listener's check names a malformed entry */
        *eq = '\0';
        while (*name == ' ' || *name == '\t')
            name++;
        for (char *t = eq - 1; t >= name && (*t == ' ' || *t == '\t'); t--)
            *t = '\0';
        if (*name && !mcp_server_has_tool(shard_g.srv, name)) {
            snprintf(err, errlen, "%s:%d: [auth] tool_scopes names '%s', which is no tool of this "
                                  "node (tools/list shows them): a misspelt name would leave the "
                                  "tool unguarded",
                     e->origin, e->line, name);
            return -1;
        }
    }
    return 0;
}

int shard_main(struct proc_args *a)
{
    memset(&shard_g, 0, sizeof(shard_g));
    shard_g.a = a;
    shard_g.index = a->index < 0 ? 0 : a->index;
    long nshards = cfg_get_long(&a->cfg, "tree.shard", "count", 1);
    shard_g.nshards = nshards > 0 ? (int)nshards : 1;
    shard_g.replica_groups = (int)cfg_get_long(&a->cfg, "cluster", "replica_groups",
                                               shard_g.nshards > 2 ? shard_g.nshards : 2);
    shard_g.max_sessions =
        cfg_get_long(&a->cfg, "sessions", "max", 100000) / (nshards > 0 ? nshards : 1);
    if (shard_g.max_sessions < 1)
        shard_g.max_sessions = 1;
    char err[600];
    struct mcp_server_opts so = {cfg_get(&a->cfg, "tools", "packs", "core"), "cmcp", CMCP_VERSION,
                                 NULL, 100};
    shard_g.srv = mcp_server_new(&so, &shard_host_ops, &shard_g, err, sizeof(err));
    if (!shard_g.srv)
        return start_failed(err, CMCP_EXIT_USAGE);
    if (load_state_key(err, sizeof(err)) != 0)
        return start_failed(err, CMCP_EXIT_FAILURE);
    shard_g.loop = ev_default_loop(EVFLAG_SIGNALFD);
    ipc_bridge_init(&shard_g.bridge, shard_g.loop);
    stats_init(shard_g.loop, a->run_dir, "shard", a->id);
    zero_series(&a->cfg);
    control_subscribe(shard_g.loop, a->run_dir, NULL); /* log_level from cmcpctl */
    /* The cluster: which partitions this node owns, and its lease (writes need both). The
     * cluster's processes start before the shards; their next publications arrive within a
     * heartbeat, and the shard reports ready with them (or, bounded, without them: fenced). */
    cview_subscribe(shard_g.loop, a->run_dir, repl_map_changed);
    cview_fetch_map(a->run_dir, 500);
    for (double until = cmcp_now_ms() + 3000;
         cmcp_now_ms() < until && !(cview_get()->have_map && cview_get()->have_fence);)
        ev_run(shard_g.loop, EVRUN_ONCE);
    if (shard_tools_init(shard_g.srv, &a->cfg, a->run_dir, shard_g.index, &shard_g.bridge, err,
                         sizeof(err)) != 0 ||
        tool_limits(&a->cfg, err, sizeof(err)) != 0 ||
        auth_tool_names(&a->cfg, err, sizeof(err)) != 0)
        return start_failed(err, CMCP_EXIT_USAGE);
    /* Sessions come back before the shard listens, so no request misses one. */
    if (durable_open(gate_committed, err, sizeof(err)) != 0)
        return start_failed(err, CMCP_EXIT_FAILURE);
    if (links_start(err, sizeof(err)) != 0)
        return start_failed(err, CMCP_EXIT_FAILURE);
    if (forward_start(err, sizeof(err)) != 0)
        return start_failed(err, CMCP_EXIT_FAILURE);
    if (siblings_start(err, sizeof(err)) != 0)
        return start_failed(err, CMCP_EXIT_FAILURE);
    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(shard_g.loop, &sigterm_w);
    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_start(shard_g.loop, &sigint_w);
    log_info("shard_ready", "{s:i,s:I,s:s}", "shard", shard_g.index, "max_sessions",
             (json_int_t)shard_g.max_sessions, "packs", so.packs);
    proc_notify_ready(a);
    ev_run(shard_g.loop, 0);
    /* Stop: what is staged goes to disk; then the sockets close before the state they use. */
    durable_flush();
    shard_tools_shutdown();
    siblings_stop();
    forward_stop();
    links_stop();
    durable_close();
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    sess_drop_all();
    cview_unsubscribe();
    control_unsubscribe();
    stats_shutdown();
    mcp_server_free(shard_g.srv);
    log_info("shard_stopped", "{s:i}", "shard", shard_g.index);
    return 0;
}
