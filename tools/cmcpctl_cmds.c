/* cmcpctl's commands: a command line becomes a request; the answer becomes text or JSON. */
#define _GNU_SOURCE
#include "tools/cmcpctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "ipc/admin_proto.h"

/* The command a cmcpctl word names: the first word of a usage line in the admin protocol. */
static const struct admin_cmd *by_word(const char *word)
{
    size_t n = strlen(word);
    for (const struct admin_cmd *c = admin_cmds; c->name; c++)
        if (strncmp(c->usage, word, n) == 0 && (c->usage[n] == ' ' || c->usage[n] == '\0'))
            return c;
    return NULL;
}

const char *const *ctl_command_names(void)
{
    static char words[ADMIN_CMD_COUNT + 2][32];
    static const char *names[ADMIN_CMD_COUNT + 3];
    if (names[0])
        return names;
    int n = 0;
    for (const struct admin_cmd *c = admin_cmds; c->name && n < ADMIN_CMD_COUNT + 1; c++) {
        size_t len = strcspn(c->usage, " ");
        snprintf(words[n], sizeof(words[n]), "%.*s", (int)len, c->usage);
        bool seen = false;
        for (int i = 0; i < n && !seen; i++)
            seen = strcmp(names[i], words[n]) == 0;
        if (!seen) {
            names[n] = words[n];
            n++;
        }
    }
    names[n++] = "help";
    names[n] = NULL;
    return names;
}

void ctl_usage_commands(FILE *f)
{
    fprintf(f, "Commands (each also with --json):\n");
    for (const struct admin_cmd *c = admin_cmds; c->name; c++)
        fprintf(f, "  %-29s %s\n", c->usage, c->what);
}

/* ---- supervisor names for completion ---- */

static char sup_names[64][64];
static int nsup;

static void remember_supervisors(json_t *children)
{
    size_t i;
    json_t *c;
    json_array_foreach(children, i, c)
    {
        const char *type = json_string_value(json_object_get(c, "type"));
        const char *id = json_string_value(json_object_get(c, "id"));
        if (type && id && strcmp(type, "supervisor") == 0) {
            bool have = false;
            for (int k = 0; k < nsup; k++)
                have |= strcmp(sup_names[k], id) == 0;
            if (!have && nsup < (int)CMCP_ARRAY_LEN(sup_names))
                snprintf(sup_names[nsup++], sizeof(sup_names[0]), "%s", id);
        }
        remember_supervisors(json_object_get(c, "children"));
    }
}

int ctl_known_supervisors(const char ***names)
{
    static const char *ptrs[65];
    if (nsup == 0) {
        snprintf(sup_names[nsup++], sizeof(sup_names[0]), "root");
        json_t *resp = NULL;
        if (ctl_call("status", NULL, &resp) == CTL_OK)
            remember_supervisors(json_object_get(json_object_get(resp, "result"), "tree"));
        json_decref(resp);
    }
    for (int i = 0; i < nsup; i++)
        ptrs[i] = sup_names[i];
    ptrs[nsup] = NULL;
    *names = ptrs;
    return nsup;
}

/* ---- output ---- */

static const char *str(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : dflt;
}

static void print_pid(json_t *pid)
{
    if (json_is_integer(pid))
        printf("%-8lld", (long long)json_integer_value(pid));
    else
        printf("%-8s", "-");
}

static void print_children(json_t *children, int depth)
{
    size_t i;
    json_t *c;
    json_array_foreach(children, i, c)
    {
        printf("%*s%-*s %-10s ", 2 + depth * 2, "", 24 - depth * 2, str(c, "id", "?"),
               str(c, "state", "?"));
        print_pid(json_object_get(c, "pid"));
        printf(" %-8lld %-10s %s\n", (long long)json_integer_value(json_object_get(c, "restarts")),
               str(c, "type", "?"), str(c, "role", ""));
        if (json_is_array(json_object_get(c, "children")))
            print_children(json_object_get(c, "children"), depth + 1);
    }
}

static void print_status(json_t *r)
{
    json_t *up = json_object_get(r, "uptime_s");
    printf("node %s (cmcp %s), root pid %lld, up %.1f s, log level %s\n", str(r, "node", "?"),
           str(r, "version", "?"), (long long)json_integer_value(json_object_get(r, "pid")),
           json_number_value(up), str(r, "log_level", "?"));
    printf("sessions: %s\n", json_is_true(json_object_get(r, "draining"))
                                 ? "DRAINING (no new sessions; cmcpctl undrain)"
                                 : "accepting");
    json_t *l = json_object_get(r, "listeners");
    printf("listeners: http %s, tcp %s\n", str(l, "http", "off"), str(l, "tcp", "off"));
    printf("metrics: %s   admin: %s\n", str(r, "metrics_http", "off"),
           str(r, "admin_endpoint", "off"));
    printf("tree:\n  %-24s %-10s %-8s %-8s %-10s %s\n", "ID", "STATE", "PID", "RESTARTS", "TYPE",
           "ROLE");
    printf("  %-24s %-10s %-8lld %-8s %-10s %s\n", "root", "running",
           (long long)json_integer_value(json_object_get(r, "pid")), "-", "supervisor",
           "supervisor");
    print_children(json_object_get(r, "tree"), 1);
    size_t i;
    json_t *s;
    printf("shards:");
    json_array_foreach(json_object_get(r, "shards"), i, s)
    {
        json_t *n = json_object_get(s, "sessions");
        if (json_is_integer(n))
            printf("%s shard %lld: %lld sessions", i ? "," : "",
                   (long long)json_integer_value(json_object_get(s, "shard")),
                   (long long)json_integer_value(n));
        else
            printf("%s shard %lld: unknown", i ? "," : "",
                   (long long)json_integer_value(json_object_get(s, "shard")));
    }
    printf("\n");
    json_t *errs = json_object_get(r, "errors");
    json_array_foreach(errs, i, s) printf("warning: %s\n", json_string_value(s));
}

/* A number or "-" (fields a shard may not report). */
static void fmt_num(char *buf, size_t len, json_t *v, const char *fmt)
{
    if (json_is_number(v))
        snprintf(buf, len, fmt, json_number_value(v));
    else
        snprintf(buf, len, "-");
}

static void print_sessions(json_t *r)
{
    json_t *list = json_object_get(r, "sessions");
    bool cluster = json_is_true(json_object_get(r, "cluster"));
    if (cluster)
        printf("%-30s %-12s %-16s ", "SESSION", "OWNER", "REPLICAS");
    else
        printf("%-30s %-5s ", "SESSION", "SHARD");
    printf("%-11s %-24s %8s %8s %7s\n", "PROTOCOL", "CLIENT", "IDLE_S", "REQUESTS", "PENDING");
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        char client[64], idle[32], reqs[32], pending[32];
        json_t *c = json_object_get(s, "client");
        if (json_is_object(c))
            snprintf(client, sizeof(client), "%s %s", str(c, "name", "?"), str(c, "version", ""));
        else
            snprintf(client, sizeof(client), "%s", json_is_string(c) ? json_string_value(c) : "-");
        fmt_num(idle, sizeof(idle), json_object_get(s, "idle_s"), "%.1f");
        fmt_num(reqs, sizeof(reqs), json_object_get(s, "requests"), "%.0f");
        fmt_num(pending, sizeof(pending), json_object_get(s, "pending"), "%.0f");
        if (cluster) {
            char reps[64] = "";
            size_t k;
            json_t *rp;
            json_array_foreach(json_object_get(s, "replicas"), k, rp)
            {
                size_t used = strlen(reps);
                snprintf(reps + used, sizeof(reps) - used, "%s%s", k ? "," : "",
                         json_is_string(rp) ? json_string_value(rp) : "?");
            }
            printf("%-30s %-12s %-16s ", str(s, "sid", "?"), str(s, "owner", "?"),
                   reps[0] ? reps : "-");
        } else {
            printf("%-30s %-5lld ", str(s, "sid", "?"),
                   (long long)json_integer_value(json_object_get(s, "shard")));
        }
        printf("%-11s %-24s %8s %8s %7s\n", str(s, "protocol", "-"), client, idle, reqs, pending);
    }
    json_array_foreach(json_object_get(r, "members"), i, s)
    {
        if (json_object_get(s, "error"))
            printf("warning: member %s: %s\n", str(s, "member", "?"), str(s, "error", ""));
    }
    json_array_foreach(json_object_get(r, "shards"), i, s)
    {
        if (json_object_get(s, "error"))
            printf("warning: %s\n", str(s, "error", ""));
    }
    printf("%zu session%s\n", json_array_size(list), json_array_size(list) == 1 ? "" : "s");
}

static void print_json(json_t *v)
{
    char *t = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (t)
        printf("%s\n", t);
    free(t);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A scalar as text: strings bare, the rest as JSON. */
static void print_scalar(json_t *v)
{
    if (json_is_string(v)) {
        printf("%s", json_string_value(v));
        return;
    }
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    printf("%s", t ? t : "?");
    free(t);
}

/* An object as "key: value" lines in key order, nested ones indented under their key. */
static void print_fields(json_t *o, int indent)
{
    size_t n = json_object_size(o), k = 0;
    const char **keys = calloc(n ? n : 1, sizeof(char *));
    if (!keys)
        return;
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
        keys[k++] = key;
    qsort(keys, n, sizeof(char *), cmp_str);
    for (k = 0; k < n; k++) {
        v = json_object_get(o, keys[k]);
        printf("%*s%s:", indent, "", keys[k]);
        if (json_is_object(v)) {
            printf(json_object_size(v) ? "\n" : " -\n");
            print_fields(v, indent + 2);
        } else if (json_is_array(v)) {
            size_t i;
            json_t *item;
            if (json_array_size(v) == 0)
                printf(" -");
            json_array_foreach(v, i, item)
            {
                if (json_is_object(item)) {
                    printf("\n%*s- item %zu\n", indent + 2, "", i);
                    print_fields(item, indent + 4);
                } else {
                    printf("%s", i ? ", " : " ");
                    print_scalar(item);
                }
            }
            printf("\n");
        } else {
            printf(" ");
            print_scalar(v);
            printf("\n");
        }
    }
    free(keys);
}

static void print_nodes(json_t *r)
{
    printf("%-20s %-16s %-9s %-8s %10s %12s  %s\n", "NODE", "INCARNATION", "STATE", "RAFT",
           "PARTITIONS", "LAST_HEARD", "ENDPOINT");
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(r, "nodes"), i, n)
    {
        char heard[32];
        json_t *h = json_object_get(n, "last_heard_ms");
        if (json_is_number(h) && json_number_value(h) >= 0)
            snprintf(heard, sizeof(heard), "%.0f ms", json_number_value(h));
        else
            snprintf(heard, sizeof(heard), "never");
        printf("%-20s %-16s %-9s %-8s %10lld %12s  %s%s\n", str(n, "id", "?"),
               str(n, "incarnation", "?"), str(n, "state", "?"), str(n, "raft", "-"),
               (long long)json_integer_value(json_object_get(n, "partitions")), heard,
               str(n, "endpoint", "-"),
               strcmp(str(n, "id", ""), str(r, "self", "")) == 0 ? "  (this node)" : "");
    }
}

static void print_cluster_status(json_t *r)
{
    printf("node %s (incarnation %s): raft %s, term %lld, leader %s\n", str(r, "node", "?"),
           str(r, "incarnation", "?"), str(r, "raft_state", "?"),
           (long long)json_integer_value(json_object_get(r, "term")), str(r, "leader", "none"));
    printf("map version %lld, hash %s\n", (long long)json_integer_value(json_object_get(r, "map_version")),
           str(r, "map_hash", "?"));
    if (json_is_true(json_object_get(r, "fenced")))
        printf("FENCED: %s\n", str(r, "fence_reason", "?"));
    else
        printf("writes: accepted (lease %.0f ms left)\n",
               json_number_value(json_object_get(r, "lease_ms")));
    printf("partitions per node:");
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(r, "partitions_per_node"), k, v)
        printf(" %s=%lld", k, (long long)json_integer_value(v));
    printf("\n");
    json_t *c = json_object_get(r, "beat_commit_ms");
    if (json_is_object(c))
        printf("raft commit of this node's beats: p50 %.1f ms, p99 %.1f ms (last %lld)\n",
               json_number_value(json_object_get(c, "p50")),
               json_number_value(json_object_get(c, "p99")),
               (long long)json_integer_value(json_object_get(c, "n")));
}

static void print_verify(json_t *r)
{
    bool ok = json_is_true(json_object_get(r, "consistent"));
    printf("%s: map version %lld, hash %s\n", ok ? "consistent" : "DIFFERENT",
           (long long)json_integer_value(json_object_get(r, "map_version")), str(r, "map_hash", "?"));
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(r, "differences"), i, d)
        printf("  %s: %s\n", str(d, "id", "?"), str(d, "difference", "?"));
}

static void print_result(const struct admin_cmd *c, json_t *r)
{
    switch (c->id) {
    case ADMIN_STATUS:
        print_status(r);
        return;
    case ADMIN_WHICH_CHILDREN:
        printf("supervisor %s:\n", str(r, "supervisor", "?"));
        printf("  %-24s %-10s %-8s %-8s %-10s %s\n", "ID", "STATE", "PID", "RESTARTS", "TYPE",
               "ROLE");
        print_children(json_object_get(r, "children"), 0);
        return;
    case ADMIN_COUNT_CHILDREN:
        printf("supervisor %s: specs %lld, active %lld, supervisors %lld, workers %lld\n",
               str(r, "supervisor", "?"), (long long)json_integer_value(json_object_get(r, "specs")),
               (long long)json_integer_value(json_object_get(r, "active")),
               (long long)json_integer_value(json_object_get(r, "supervisors")),
               (long long)json_integer_value(json_object_get(r, "workers")));
        return;
    case ADMIN_RESTART_CHILD:
    case ADMIN_START_CHILD:
        printf("%s %s under %s (pid %lld)\n", c->id == ADMIN_RESTART_CHILD ? "restarted" : "started",
               str(r, "id", "?"), str(r, "supervisor", "?"),
               (long long)json_integer_value(json_object_get(r, "pid")));
        return;
    case ADMIN_TERMINATE_CHILD:
    case ADMIN_DELETE_CHILD: {
        const char *done = c->id == ADMIN_TERMINATE_CHILD ? "terminated" : "deleted";
        json_t *pid = json_object_get(r, "pid");
        if (json_is_integer(pid) && !json_object_get(r, "id"))
            printf("%s pid %lld (supervisor %s)\n", done, (long long)json_integer_value(pid),
                   str(r, "supervisor", "?"));
        else
            printf("%s %s (supervisor %s)\n", done, str(r, "id", "?"), str(r, "supervisor", "?"));
        return;
    }
    case ADMIN_SESSIONS:
        print_sessions(r);
        return;
    case ADMIN_SESSION_SHOW:
        print_fields(json_object_get(r, "session"), 0); /* --json prints it as it came */
        return;
    case ADMIN_SESSION_KILL:
        printf("killed session %s (shard %lld)\n", str(r, "killed", "?"),
               (long long)json_integer_value(json_object_get(r, "shard")));
        return;
    case ADMIN_METRICS:
        fputs(str(r, "text", ""), stdout);
        return;
    case ADMIN_LOG_LEVEL:
        printf("log level: %s\n", str(r, "level", "?"));
        return;
    case ADMIN_DRAIN:
    case ADMIN_UNDRAIN:
        printf(json_is_true(json_object_get(r, "draining"))
                   ? "draining: the node accepts no new sessions; existing sessions go on\n"
                   : "accepting new sessions\n");
        return;
    case ADMIN_SHUTDOWN:
        printf("node %s is shutting down (root pid %lld)\n", ctl_node_name(),
               (long long)json_integer_value(json_object_get(r, "pid")));
        return;
    case ADMIN_NODES:
        print_nodes(r);
        return;
    case ADMIN_CLUSTER_STATUS:
        print_cluster_status(r);
        return;
    case ADMIN_VERIFY_STATE:
    case ADMIN_RECONCILE_STATE:
        print_verify(r);
        return;
    case ADMIN_REBALANCE:
    case ADMIN_FORCE_LEADER:
    case ADMIN_LEAVE:
    case ADMIN_SYNC_FROM_PEER:
    case ADMIN_CMD_COUNT:
        break;
    }
    print_json(r);
}

/* ---- command lines ---- */

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "cmcpctl: ");
    fprintf(stderr, fmt, arg);
    /* In the shell, `help` (cmcpctl --help would start another program). */
    fprintf(stderr, O.in_shell ? " (help lists the commands)\n" : " (cmcpctl --help lists the commands)\n");
    return CTL_USAGE;
}

/* A child named by id, or by pid (all digits) under simple_one_for_one. */
static void set_child(json_t *args, const char *v)
{
    bool digits = v[0] != '\0' && strspn(v, "0123456789") == strlen(v);
    if (digits)
        json_object_set_new(args, "pid", json_integer(atoll(v)));
    else
        json_object_set_new(args, "id", json_string(v));
}

/* A command with at most one argument, kept as args[key]. */
static int optional_arg(int argc, char **argv, json_t *args, const char *key, const char *usage)
{
    if (argc > 2)
        return usage_error(usage, argv[0]);
    if (argc == 2)
        json_object_set_new(args, key, json_string(argv[1]));
    return CTL_OK;
}

/* argv -> (command, args); CTL_OK or CTL_USAGE after saying why. */
static int parse(int argc, char **argv, const struct admin_cmd **cmd, json_t *args)
{
    const char *c = argv[0];
    const struct admin_cmd *ac = by_word(c);
    *cmd = NULL; /* set on every path: a caller reads it only on CTL_OK */
    if (!ac)
        return usage_error("unknown command '%s'", c);
    *cmd = ac;
    switch (ac->id) {
    case ADMIN_CLUSTER_STATUS:
        if (argc != 2 || strcmp(argv[1], "status"))
            return usage_error("usage: %s status", c);
        break;
    case ADMIN_LEAVE:
        return optional_arg(argc, argv, args, "node", "usage: %s [NODE]");
    case ADMIN_SYNC_FROM_PEER:
        if (argc != 2)
            return usage_error("usage: %s NODE (the member whose partitions to copy again)", c);
        json_object_set_new(args, "node", json_string(argv[1]));
        return 0;
    case ADMIN_STATUS:
    case ADMIN_METRICS:
    case ADMIN_DRAIN:
    case ADMIN_UNDRAIN:
    case ADMIN_SHUTDOWN:
    case ADMIN_NODES:
    case ADMIN_VERIFY_STATE:
    case ADMIN_RECONCILE_STATE:
    case ADMIN_REBALANCE:
    case ADMIN_FORCE_LEADER:
        if (argc != 1)
            return usage_error("%s takes no arguments", c);
        break;
    case ADMIN_WHICH_CHILDREN:
    case ADMIN_COUNT_CHILDREN:
        return optional_arg(argc, argv, args, "sup", "%s takes at most one supervisor name");
    case ADMIN_RESTART_CHILD:
    case ADMIN_TERMINATE_CHILD:
    case ADMIN_DELETE_CHILD:
        if (argc != 3)
            return usage_error("usage: %s SUP ID", c);
        json_object_set_new(args, "sup", json_string(argv[1]));
        set_child(args, argv[2]);
        break;
    case ADMIN_START_CHILD:
        if (argc < 3)
            return usage_error("usage: %s SUP SPEC_JSON, or SUP --args ARG...", c);
        json_object_set_new(args, "sup", json_string(argv[1]));
        if (!strcmp(argv[2], "--args")) {
            json_t *a = json_array();
            for (int i = 3; i < argc; i++)
                json_array_append_new(a, json_string(argv[i]));
            json_object_set_new(args, "args", a);
        } else {
            if (argc != 3)
                return usage_error("%s: give the spec as one JSON argument (quote it)", c);
            json_error_t e;
            json_t *spec = json_loads(argv[2], 0, &e);
            if (json_is_object(spec))
                json_object_set_new(args, "spec", spec);
            else if (json_is_array(spec))
                json_object_set_new(args, "args", spec);
            else {
                json_decref(spec);
                return usage_error("start_child: the spec is not a JSON object or array: %s",
                                   e.text);
            }
        }
        break;
    case ADMIN_SESSIONS:
        if (argc == 3 && !strcmp(argv[1], "--shard")) {
            char *end;
            long n = strtol(argv[2], &end, 10);
            if (*end || n < 0)
                return usage_error("--shard wants a shard number, not '%s'", argv[2]);
            json_object_set_new(args, "shard", json_integer(n));
        } else if (argc == 2 && !strcmp(argv[1], "--cluster")) {
            json_object_set_new(args, "cluster", json_true());
        } else if (argc != 1) {
            return usage_error("usage: %s [--shard N | --cluster]", c);
        }
        break;
    case ADMIN_SESSION_SHOW:
    case ADMIN_SESSION_KILL:
        if (argc != 3 || (strcmp(argv[1], "show") && strcmp(argv[1], "kill")))
            return usage_error("usage: %s show ID | session kill ID", c);
        *cmd = admin_cmd_find(!strcmp(argv[1], "show") ? "session_show" : "session_kill");
        json_object_set_new(args, "sid", json_string(argv[2]));
        break;
    case ADMIN_LOG_LEVEL:
        return optional_arg(argc, argv, args, "level", "usage: %s [LEVEL]");
    case ADMIN_CMD_COUNT:
        return usage_error("unknown command '%s'", c);
    }
    return CTL_OK;
}

int ctl_run(int argc, char **argv)
{
    const struct admin_cmd *cmd = NULL;
    json_t *args = json_object();
    if (parse(argc, argv, &cmd, args) != CTL_OK) {
        json_decref(args);
        return CTL_USAGE;
    }
    int rc = ctl_connect();
    if (rc != CTL_OK) {
        json_decref(args);
        return rc;
    }
    json_t *resp = NULL;
    rc = ctl_call(cmd->name, args, &resp);
    if (rc != CTL_OK)
        return rc;
    json_t *result;
    const char *code, *message;
    if (!admin_reply_read(resp, &result, &code, &message)) {
        if (O.json)
            print_json(resp);
        fprintf(stderr, "cmcpctl: %s failed on node %s: %s: %s\n", cmd->name, ctl_node_name(),
                code, message);
        json_decref(resp);
        return CTL_FAILED;
    }
    if (cmd->id == ADMIN_STATUS)
        remember_supervisors(json_object_get(result, "tree"));
    if (O.json) {
        if (cmd->id == ADMIN_METRICS)
            json_object_del(result, "text"); /* the samples say it all, parsed */
        print_json(result);
    } else {
        print_result(cmd, result);
    }
    fflush(stdout);
    /* a check that found differences fails, so that scripts can test it */
    bool differs = (cmd->id == ADMIN_VERIFY_STATE || cmd->id == ADMIN_RECONCILE_STATE) &&
                   !json_is_true(json_object_get(result, "consistent"));
    json_decref(resp);
    return differs ? CTL_FAILED : CTL_OK;
}
