/*
 * What the metrics endpoints say, computed from the snapshots at hand.
 *
 * /metrics sums counters, gauges and histograms of the same name and labels
 * over processes (K listeners publish the same series), and renders the
 * Prometheus text format 0.0.4: one HELP and TYPE per family, families and
 * series in a stable order. A metric whose name or labels would make the
 * exposition invalid is left out (and logged once), so one bad publisher
 * cannot break every scrape.
 */
#define _GNU_SOURCE
#include "workers/metrics/metrics_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/cview.h"
#include "ipc/stats.h"

struct series {
    UT_hash_handle hh;
    char *labels;
    double value;
    unsigned long buckets[STATS_BUCKETS];
    double sum;
    unsigned long count;
};

struct family {
    UT_hash_handle hh;
    char *name;
    enum stat_kind kind;
    struct series *series;
};

static const struct {
    const char *name, *help;
} helps[] = {
    {"cmcp_up", "1 while the node's metrics worker serves"},
    {"cmcp_ready", "1 when every child of the supervision tree is running and the node finished "
                   "its start"},
    {"cmcp_requests_total", "JSON-RPC requests served, by method and transport"},
    {"cmcp_request_errors_total", "JSON-RPC requests answered with an error, by method and code"},
    {"cmcp_request_duration_seconds", "Time from a request's arrival to its response"},
    {"cmcp_sessions_active", "MCP sessions held"},
    {"cmcp_sessions_created_total", "MCP sessions created"},
    {"cmcp_sessions_closed_total", "MCP sessions ended, by reason"},
    {"cmcp_tasks_created_total", "2026 tasks made (each in a session of its own)"},
    {"cmcp_transport_connections", "Open client connections, by transport"},
    {"cmcp_transport_messages_received_total", "Messages received from clients, by transport"},
    {"cmcp_transport_messages_sent_total", "Messages sent to clients, by transport"},
    {"cmcp_shard_links_up", "Listener-to-shard data links connected"},
    {"cmcp_shard_link_drops_total", "Listener-to-shard data links that broke (a shard stopped)"},
    {"cmcp_auth_jwks_fetches_total",
     "Fetches of the issuer's key set ([auth] jwks_url), by result: changed, unchanged, failed"},
    {"cmcp_shard_changes_relayed_total",
     "Server-wide change notifications a shard passed to its sibling shards (out) or got from "
     "them (in), by method"},
    {"cmcp_shards_unresponsive",
     "Shards a listener gave up on because they answer no heartbeat (summed over listeners)"},
    {"cmcp_shard_unresponsive_total", "Times a listener gave up on a shard that answered no "
                                      "heartbeat"},
    {"cmcp_supervisor_restarts_total", "Restarts of a child by its supervisor"},
    {"cmcp_supervisor_children", "Children of a supervisor, by state"},
    {"cmcp_supervisor_watchdog_kills_total",
     "Children a supervisor killed because their loop stopped beating (then restarted)"},
    {"cmcp_process_resident_memory_bytes", "Resident memory of a process of the node"},
    {"cmcp_process_uptime_seconds", "Seconds since a process of the node started"},
    {"cmcp_admin_auth_throttled_total",
     "Admin handshakes refused because their host failed too many authentications"},
    {"cmcp_build_info", "1, labelled with the version and source revision of this build"},
    {"process_cpu_seconds_total", "User and system CPU time a process of the node used"},
    {"process_open_fds", "Open file descriptors of a process of the node"},
    {"process_resident_memory_bytes", "Resident memory of a process of the node"},
    {"process_start_time_seconds", "When a process of the node started, in seconds since the "
                                   "epoch"},
    {"cmcp_metrics_processes", "Processes whose metrics the metrics worker holds"},
    {"cmcp_node_draining", "1 while the node accepts no new sessions (cmcpctl drain)"},
    {"cmcp_admin_commands_total", "Admin commands executed, by command and outcome"},
    {"cmcp_admin_auth_failures_total", "Admin messages refused, by reason"},
    {"cmcp_metrics_scrapes_total", "HTTP requests to the metrics worker, by path"},
    {"cmcp_sessions_recovered_total", "Sessions a shard read back from its store at start"},
    {"cmcp_store_commit_failures_total", "Store commits that failed (the writes were refused)"},
    {"cmcp_store_commits_total",
     "Store commits (each one fdatasync with durability = fsync), by what they wrote: own (the "
     "sessions this node owns) or copies (changes received as a replica); against "
     "cmcp_requests_total, how well writes are grouped"},
    {"cmcp_writes_refused_total", "Writes a shard refused and rolled back, by reason: fenced "
                                  "(no lease) or not_owner (the partition moved)"},
    {"cmcp_session_replication_lag_seconds",
     "Age of the oldest commit a shard's replicas have not all acknowledged (0: none waits)"},
    {"cmcp_replication_changes_applied_total", "Changes a shard received as a replica"},
    {"cmcp_replication_unknown_total",
     "Commits whose replies said the outcome is unknown (the node lost the partition or its "
     "lease before the replicas acknowledged)"},
    {"cmcp_forwarded_requests_total",
     "Requests this node's listeners sent to the cluster member that owns their session"},
    {"cmcp_partitions_under_replicated",
     "Partitions this node owns with fewer in-sync replicas than the replication factor"},
    {"cmcp_replication_catchups_total",
     "Catch-ups of a replica (snapshot, then the changes since) that ended, by result: "
     "rejoined (back in the in-sync set) or aborted (started over)"},
    {"cmcp_replication_snapshot_bytes_total", "Bytes of partition snapshots built for catch-ups"},
    {"cmcp_replication_catchups_started_total",
     "Catch-ups of a replica, by how its copy was brought up: from the owner's retained change "
     "log (only the changes after its position) or a snapshot of the whole partition"},
    {"cmcp_replication_log_bytes",
     "Bytes of recent changes a shard keeps to bring a copy that is behind up from its position "
     "([cluster] replica_log_bytes)"},
    {"cmcp_replication_snapshots_installed_total",
     "Partition snapshots a shard installed as a replica"},
    {"cmcp_cluster_nodes", "Members of the cluster map, by state (as this node's map says)"},
    {"cmcp_cluster_leader", "1 on the node that is the Raft leader"},
    {"cmcp_cluster_raft_term", "This node's Raft term"},
    {"cmcp_cluster_map_version", "Version of the cluster map this node holds (its Raft index)"},
    {"cmcp_cluster_peers_healthy", "Peers this node hears heartbeats from in time"},
    {"cmcp_cluster_heartbeat_rtt_seconds", "Round trip of node-to-node heartbeats"},
    {"cmcp_cluster_commit_seconds", "From proposing this node's liveness beat to its being "
                                    "applied here: one Raft commit through the leader"},
    {"cmcp_cluster_fenced", "1 while this node has no valid lease and refuses writes"},
    {"cmcp_partition_detected", "1 while this node, once a member, is cut off from the side that "
                                "may write (it is fenced)"},
    {"cmcp_cluster_fences_total", "Times this node was fenced"},
    {"cmcp_cluster_force_leader_total", "force_leader commands this node obeyed"},
    {"cmcp_failover_duration_seconds", "On the leader: from a member's last sign of life to "
                                       "its partitions having owners again"},
};

static const char *help_of(const char *name)
{
    for (size_t i = 0; i < CMCP_ARRAY_LEN(helps); i++)
        if (strcmp(helps[i].name, name) == 0)
            return helps[i].help;
    return NULL;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool name_valid(const char *s)
{
    if (!s || !*s || !(s[0] == '_' || s[0] == ':' || is_alpha(s[0])))
        return false;
    for (const char *p = s; *p; p++)
        if (!(*p == '_' || *p == ':' || is_digit(*p) || is_alpha(*p)))
            return false;
    return true;
}

/* name="value"(,name="value")*, values with \\ \" \n escapes; `le` only where we add it. */
static bool labels_valid(const char *s, bool histogram)
{
    const char *p = s;
    while (*p) {
        const char *n = p;
        if (!(*p == '_' || is_alpha(*p)))
            return false;
        while (*p == '_' || is_digit(*p) || is_alpha(*p))
            p++;
        if (histogram && p - n == 2 && strncmp(n, "le", 2) == 0)
            return false;
        if (p[0] != '=' || p[1] != '"')
            return false;
        p += 2;
        while (*p && *p != '"') {
            if (*p == '\n')
                return false;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return false;
                p++;
            }
            p++;
        }
        if (*p != '"')
            return false;
        p++;
        if (*p == ',')
            p++;
        else if (*p)
            return false;
    }
    return true;
}

/* Logs a bad metric once per name, not once per scrape. */
static void warn_invalid(const char *name, const char *labels, const char *why)
{
    static char seen[32][96];
    static int nseen;
    for (int i = 0; i < nseen; i++)
        if (strcmp(seen[i], name ? name : "") == 0)
            return;
    if (nseen < (int)CMCP_ARRAY_LEN(seen))
        snprintf(seen[nseen++], sizeof(seen[0]), "%s", name ? name : "");
    log_warn("metric_dropped", "{s:s?,s:s?,s:s}", "metric", name, "labels", labels, "reason", why);
}

static enum stat_kind kind_parse(const char *k, bool *ok)
{
    *ok = true;
    if (k && strcmp(k, "counter") == 0)
        return STAT_COUNTER;
    if (k && strcmp(k, "gauge") == 0)
        return STAT_GAUGE;
    if (k && strcmp(k, "histogram") == 0)
        return STAT_HISTOGRAM;
    *ok = false;
    return STAT_GAUGE;
}

static struct series *series_get(struct family **fams, const char *name, enum stat_kind kind,
                                 const char *labels)
{
    struct family *f = NULL;
    HASH_FIND_STR(*fams, name, f);
    if (!f) {
        f = calloc(1, sizeof(*f));
        if (!f || !(f->name = strdup(name))) {
            free(f);
            return NULL;
        }
        f->kind = kind;
        HASH_ADD_KEYPTR(hh, *fams, f->name, strlen(f->name), f);
    } else if (f->kind != kind) {
        warn_invalid(name, labels, "published as two different kinds; the first one seen wins");
        return NULL;
    }
    struct series *s = NULL;
    HASH_FIND_STR(f->series, labels, s);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s || !(s->labels = strdup(labels))) {
            free(s);
            return NULL;
        }
        HASH_ADD_KEYPTR(hh, f->series, s->labels, strlen(s->labels), s);
    }
    return s;
}

static void add_value(struct family **fams, const char *name, enum stat_kind kind,
                      const char *labels, double v)
{
    struct series *s = series_get(fams, name, kind, labels);
    if (s)
        s->value += v;
}

/* Label text for a process: role="...",id="..." with values escaped. */
static void proc_labels(char *buf, size_t len, const struct mproc *p)
{
    char esc[2][160];
    const char *src[2] = {p->role, p->id};
    for (int k = 0; k < 2; k++) {
        size_t o = 0;
        for (const char *c = src[k]; *c && o + 3 < sizeof(esc[k]); c++) {
            if (*c == '\\' || *c == '"')
                esc[k][o++] = '\\';
            esc[k][o++] = *c == '\n' ? ' ' : *c;
        }
        esc[k][o] = '\0';
    }
    snprintf(buf, len, "role=\"%s\",id=\"%s\"", esc[0], esc[1]);
}

static void collect(struct family **fams)
{
    json_t *dummy;
    int ready = metrics_ready(&dummy);
    json_decref(dummy);
    add_value(fams, "cmcp_up", STAT_GAUGE, "", 1);
    add_value(fams, "cmcp_ready", STAT_GAUGE, "", ready == 200 ? 1 : 0);
    add_value(fams, "cmcp_metrics_processes", STAT_GAUGE, "", HASH_COUNT(metrics_g.procs));
    char bl[160];
    snprintf(bl, sizeof(bl), "version=\"%s\",revision=\"%s\"", CMCP_VERSION, cmcp_revision);
    add_value(fams, "cmcp_build_info", STAT_GAUGE, bl, 1);
    for (struct mproc *p = metrics_g.procs; p; p = p->hh.next) {
        char pl[400];
        proc_labels(pl, sizeof(pl), p);
        add_value(fams, "cmcp_process_resident_memory_bytes", STAT_GAUGE, pl,
                  json_number_value(json_object_get(p->snap, "rss")));
        add_value(fams, "cmcp_process_uptime_seconds", STAT_GAUGE, pl,
                  json_number_value(json_object_get(p->snap, "uptime_s")));
        /* the standard process_* series (client libraries' names), one per process */
        add_value(fams, "process_resident_memory_bytes", STAT_GAUGE, pl,
                  json_number_value(json_object_get(p->snap, "rss")));
        json_t *cpu = json_object_get(p->snap, "cpu_s"), *fds = json_object_get(p->snap, "fds");
        json_t *st = json_object_get(p->snap, "start_time");
        if (cpu)
            add_value(fams, "process_cpu_seconds_total", STAT_COUNTER, pl, json_number_value(cpu));
        if (fds && json_integer_value(fds) >= 0)
            add_value(fams, "process_open_fds", STAT_GAUGE, pl, json_number_value(fds));
        if (st && json_number_value(st) > 0)
            add_value(fams, "process_start_time_seconds", STAT_GAUGE, pl, json_number_value(st));
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(p->snap, "metrics"), i, m)
        {
            const char *name = json_string_value(json_object_get(m, "name"));
            const char *labels = json_string_value(json_object_get(m, "labels"));
            bool ok;
            enum stat_kind kind = kind_parse(json_string_value(json_object_get(m, "kind")), &ok);
            labels = labels ? labels : "";
            if (!ok || !name_valid(name)) {
                warn_invalid(name, labels, "invalid metric name or kind");
                continue;
            }
            if (!labels_valid(labels, kind == STAT_HISTOGRAM)) {
                warn_invalid(name, labels, "labels are not Prometheus label text");
                continue;
            }
            struct series *s = series_get(fams, name, kind, labels);
            if (!s)
                continue;
            if (kind != STAT_HISTOGRAM) {
                s->value += json_number_value(json_object_get(m, "value"));
                continue;
            }
            json_t *b = json_object_get(m, "buckets");
            for (size_t k = 0; k < STATS_BUCKETS && k < json_array_size(b); k++)
                s->buckets[k] += (unsigned long)json_integer_value(json_array_get(b, k));
            s->sum += json_number_value(json_object_get(m, "sum"));
            s->count += (unsigned long)json_integer_value(json_object_get(m, "count"));
        }
    }
}

static int fam_cmp(struct family *a, struct family *b)
{
    return strcmp(a->name, b->name);
}

static int ser_cmp(struct series *a, struct series *b)
{
    return strcmp(a->labels, b->labels);
}

static void fmt_value(char *buf, size_t len, double v)
{
    if (isnan(v))
        snprintf(buf, len, "NaN");
    else if (isinf(v))
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    else
        snprintf(buf, len, "%.15g", v); /* 17 would print binary noise */
}

static void render_series(struct http_buf *out, const struct family *f, const struct series *s)
{
    char v[64];
    const char *open = s->labels[0] ? "{" : "", *close = s->labels[0] ? "}" : "";
    if (f->kind != STAT_HISTOGRAM) {
        fmt_value(v, sizeof(v), s->value);
        http_buf_appendf(out, "%s%s%s%s %s\n", f->name, open, s->labels, close, v);
        return;
    }
    unsigned long cum = 0;
    for (int k = 0; k < STATS_BUCKETS; k++) {
        cum += s->buckets[k];
        fmt_value(v, sizeof(v), stats_bucket_bounds[k]);
        http_buf_appendf(out, "%s_bucket{%s%sle=\"%s\"} %lu\n", f->name, s->labels,
                         s->labels[0] ? "," : "", v, cum);
    }
    fmt_value(v, sizeof(v), s->sum);
    http_buf_appendf(out, "%s_sum%s%s%s %s\n", f->name, open, s->labels, close, v);
    http_buf_appendf(out, "%s_count%s%s%s %lu\n", f->name, open, s->labels, close, s->count);
}

void metrics_render_prometheus(struct http_buf *out)
{
    metrics_prune();
    struct family *fams = NULL;
    collect(&fams);
    HASH_SORT(fams, fam_cmp);
    struct family *f, *ftmp;
    HASH_ITER(hh, fams, f, ftmp)
    {
        const char *help = help_of(f->name);
        http_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name,
                         help ? help : "cmcp metric (no description registered)", f->name,
                         f->kind == STAT_COUNTER ? "counter"
                         : f->kind == STAT_GAUGE ? "gauge"
                                                 : "histogram");
        HASH_SORT(f->series, ser_cmp);
        struct series *s, *stmp;
        HASH_ITER(hh, f->series, s, stmp)
        {
            render_series(out, f, s);
            HASH_DEL(f->series, s);
            free(s->labels);
            free(s);
        }
        HASH_DEL(fams, f);
        free(f->name);
        free(f);
    }
}

/* ---- health, readiness, status ---- */

static struct mproc *root_proc(void)
{
    for (struct mproc *p = metrics_g.procs; p; p = p->hh.next) {
        json_t *info = json_object_get(p->snap, "info");
        if (strcmp(p->role, "supervisor") == 0 && json_is_true(json_object_get(info, "root")))
            return p;
    }
    return NULL;
}

/* The sum of a gauge over every process (e.g. cmcp_node_draining). */
static double gauge_sum(const char *name)
{
    double v = 0;
    for (struct mproc *p = metrics_g.procs; p; p = p->hh.next) {
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(p->snap, "metrics"), i, m)
        {
            const char *n = json_string_value(json_object_get(m, "name"));
            if (n && strcmp(n, name) == 0)
                v += json_number_value(json_object_get(m, "value"));
        }
    }
    return v;
}

static struct mproc *proc_find(const char *role, const char *id)
{
    char key[sizeof(((struct mproc *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", role, id);
    struct mproc *p = NULL;
    HASH_FIND_STR(metrics_g.procs, key, p);
    return p;
}

/* Adds a reason for every supervisor that is stopping or has a child not settled. */
static void tree_reasons(json_t *reasons)
{
    for (struct mproc *p = metrics_g.procs; p; p = p->hh.next) {
        if (strcmp(p->role, "supervisor") != 0)
            continue;
        json_t *info = json_object_get(p->snap, "info");
        char msg[256];
        if (json_is_true(json_object_get(info, "stopping"))) {
            snprintf(msg, sizeof(msg), "supervisor %s is shutting down", p->id);
            json_array_append_new(reasons, json_string(msg));
            continue;
        }
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(info, "children"), i, c)
        {
            const char *st = json_string_value(json_object_get(c, "state"));
            const char *id = json_string_value(json_object_get(c, "id"));
            const char *type = json_string_value(json_object_get(c, "type"));
            json_t *unresp = json_object_get(c, "unresponsive");
            if (st && id && strcmp(st, "running") == 0 && unresp) {
                long wd = (long)json_integer_value(json_object_get(unresp, "watchdog_ms"));
                snprintf(msg, sizeof(msg),
                         "supervisor %s: child %s (pid %lld) has not answered for over %ld ms; "
                         "its watchdog replaces it at %ld ms",
                         p->id, id, (long long)json_integer_value(json_object_get(c, "pid")),
                         wd / 2, wd);
                json_array_append_new(reasons, json_string(msg));
            } else if (st && (strcmp(st, "restarting") == 0 || strcmp(st, "starting") == 0 ||
                       strcmp(st, "stopping") == 0)) {
                snprintf(msg, sizeof(msg), "supervisor %s: child %s is %s", p->id, id, st);
                json_array_append_new(reasons, json_string(msg));
            } else if (st && id && type && strcmp(st, "running") == 0 &&
                       strcmp(type, "supervisor") == 0 && !proc_find("supervisor", id)) {
                /* Its children are unknown until it reports (the metrics worker just started). */
                snprintf(msg, sizeof(msg), "supervisor %s has not reported yet", id);
                json_array_append_new(reasons, json_string(msg));
            }
        }
    }
}

/*
 * Children an operator stopped (terminate_child) or that ended normally: the
 * node still serves, so /health stays 200, but says which parts are down.
 */
static json_t *stopped_children(void)
{
    json_t *out = json_array();
    for (struct mproc *p = metrics_g.procs; p; p = p->hh.next) {
        if (strcmp(p->role, "supervisor") != 0)
            continue;
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(json_object_get(p->snap, "info"), "children"), i, c)
        {
            const char *st = json_string_value(json_object_get(c, "state"));
            if (st && strcmp(st, "undefined") == 0)
                json_array_append_new(out, json_pack("{s:s,s:O?}", "supervisor", p->id, "id",
                                                     json_object_get(c, "id")));
        }
    }
    return out;
}

int metrics_ready(json_t **body)
{
    metrics_prune();
    json_t *reasons = json_array();
    struct mproc *root = root_proc();
    if (!root)
        json_array_append_new(reasons, json_string("the root supervisor has not reported yet"));
    else if (!json_is_true(json_object_get(json_object_get(root->snap, "info"), "ready")))
        json_array_append_new(reasons, json_string("the node has not finished starting"));
    tree_reasons(reasons);
    bool ok = json_array_size(reasons) == 0;
    *body = json_pack("{s:b,s:s,s:o}", "ready", ok, "node", metrics_g.node, "reasons", reasons);
    return ok ? 200 : 503;
}

int metrics_health(json_t **body)
{
    metrics_prune();
    json_t *reasons = json_array();
    struct mproc *root = root_proc();
    bool started = root && json_is_true(json_object_get(json_object_get(root->snap, "info"),
                                                        "ready"));
    if (!root)
        json_array_append_new(reasons, json_string("the root supervisor has not reported yet "
                                                   "(the node is starting, or stopping)"));
    else if (!started)
        json_array_append_new(reasons, json_string("the node has not finished starting"));
    tree_reasons(reasons);
    bool draining = gauge_sum("cmcp_node_draining") > 0;
    if (draining)
        json_array_append_new(reasons, json_string("draining: the node accepts no new sessions "
                                                   "(cmcpctl undrain ends it)"));
    char why[300];
    bool fenced = !cview_may_write(cmcp_now_ms(), why, sizeof(why));
    if (fenced) {
        char msg[340];
        snprintf(msg, sizeof(msg), "fenced: %s", why);
        json_array_append_new(reasons, json_string(msg));
    }
    bool ok = json_array_size(reasons) == 0;
    *body = json_pack("{s:s,s:s,s:b,s:b,s:b,s:o,s:o}", "status", ok ? "ok" : "unavailable", "node",
                      metrics_g.node, "ready", started, "draining", draining, "fenced", fenced,
                      "reasons", reasons, "stopped", stopped_children());
    return ok ? 200 : 503;
}

/* The subtree of supervisor `name` from its own snapshot; depth-bounded. */
static json_t *tree_of(struct mproc *sup, int depth)
{
    json_t *info = json_object_get(sup->snap, "info");
    json_t *node = json_pack("{s:s,s:i,s:O?,s:O?,s:O?}", "supervisor", sup->id, "pid", sup->pid,
                             "strategy", json_object_get(info, "strategy"), "ready",
                             json_object_get(info, "ready"), "stopping",
                             json_object_get(info, "stopping"));
    json_t *kids = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(info, "children"), i, c)
    {
        json_t *k = json_deep_copy(c);
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *type = json_string_value(json_object_get(c, "type"));
        const char *role = json_string_value(json_object_get(c, "role"));
        struct mproc *p = NULL;
        if (id && type && strcmp(type, "supervisor") == 0)
            p = proc_find("supervisor", id);
        else if (id && role)
            p = proc_find(role, id);
        if (p && json_integer_value(json_object_get(c, "pid")) == p->pid)
            json_object_set(k, "rss", json_object_get(p->snap, "rss"));
        if (p && depth < 16 && type && strcmp(type, "supervisor") == 0 &&
            json_integer_value(json_object_get(c, "pid")) == p->pid) {
            json_t *sub = tree_of(p, depth + 1);
            json_object_set(k, "children", json_object_get(sub, "children"));
            json_object_set(k, "strategy", json_object_get(sub, "strategy"));
            json_decref(sub);
        }
        json_array_append_new(kids, k);
    }
    json_object_set_new(node, "children", kids);
    return node;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "id")));
}

static json_t *sorted_by_id(json_t *arr)
{
    size_t n = json_array_size(arr);
    json_t **v = calloc(n ? n : 1, sizeof(*v));
    json_t *out = json_array();
    if (!v)
        return arr;
    for (size_t i = 0; i < n; i++)
        v[i] = json_array_get(arr, i);
    qsort(v, n, sizeof(*v), by_key);
    for (size_t i = 0; i < n; i++)
        json_array_append(out, v[i]);
    free(v);
    json_decref(arr);
    return out;
}

/* A listening address as host:port, or null when the port is 0 (off). */
static json_t *addr_json(const char *section, const char *bind_key, const char *port_key,
                         const char *dflt_bind, long dflt_port)
{
    long port = cfg_get_long(&metrics_g.a->cfg, section, port_key, dflt_port);
    if (port <= 0)
        return json_null();
    char buf[300];
    snprintf(buf, sizeof(buf), "%s:%ld", cfg_get(&metrics_g.a->cfg, section, bind_key, dflt_bind), port);
    return json_string(buf);
}

json_t *metrics_status(void)
{
    json_t *health, *ready;
    int hs = metrics_health(&health);
    metrics_ready(&ready);
    struct mproc *root = root_proc();
    json_t *st = json_pack("{s:s,s:s,s:s}", "node", metrics_g.node, "version", CMCP_VERSION, "status",
                           hs == 200 ? "ok" : "unavailable");
    json_object_set(st, "ready", json_object_get(ready, "ready"));
    json_object_set(st, "draining", json_object_get(health, "draining"));
    json_object_set_new(st, "health", health);
    json_decref(ready);
    json_object_set_new(st, "pid", root ? json_integer(root->pid) : json_null());
    json_object_set(st, "uptime_s", root ? json_object_get(root->snap, "uptime_s") : json_null());
    json_object_set_new(st, "tree", root ? tree_of(root, 0) : json_null());
    json_t *shards = json_array(), *listeners = json_array(), *procs = json_array();
    for (struct mproc *p = metrics_g.procs; p; p = p->hh.next) {
        json_array_append_new(procs, json_pack("{s:s,s:s,s:i,s:O?,s:O?}", "role", p->role, "id",
                                               p->id, "pid", p->pid, "rss",
                                               json_object_get(p->snap, "rss"), "uptime_s",
                                               json_object_get(p->snap, "uptime_s")));
        if (strcmp(p->role, "shard") == 0) {
            /* Sessions held, once the shard publishes cmcp_sessions_active; null before. */
            double total = 0;
            bool seen = false;
            size_t i;
            json_t *m;
            json_array_foreach(json_object_get(p->snap, "metrics"), i, m)
            {
                const char *n = json_string_value(json_object_get(m, "name"));
                if (n && strcmp(n, "cmcp_sessions_active") == 0) {
                    total += json_number_value(json_object_get(m, "value"));
                    seen = true;
                }
            }
            json_array_append_new(shards, json_pack("{s:s,s:i,s:o}", "id", p->id, "pid", p->pid,
                                                    "sessions",
                                                    seen ? json_integer((json_int_t)total)
                                                         : json_null()));
        } else if (strcmp(p->role, "listener") == 0) {
            /* Listeners share their ports (inherited from the root): the configuration names them. */
            json_array_append_new(
                listeners,
                json_pack("{s:s,s:i,s:o,s:o}", "id", p->id, "pid", p->pid, "http",
                          addr_json("listener", "http_bind", "http_port", "127.0.0.1", 8080),
                          "tcp", addr_json("listener", "tcp_bind", "tcp_port", "127.0.0.1", 8081)));
        }
    }
    json_object_set_new(st, "shards", sorted_by_id(shards));
    json_object_set_new(st, "listeners", sorted_by_id(listeners));
    json_object_set_new(st, "processes", sorted_by_id(procs));
    json_object_set_new(st, "metrics_http",
                        addr_json("metrics", "bind", "port", "127.0.0.1", 9090));
    const char *admin = cfg_get(&metrics_g.a->cfg, "admin", "endpoint", "");
    json_object_set_new(st, "admin_endpoint", admin[0] ? json_string(admin) : json_null());
    return st;
}
