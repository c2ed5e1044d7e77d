/* The admin commands (ipc/admin_proto.h has the list and the shape of their answers). */
#define _GNU_SOURCE
#include "workers/admin/admin_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/admin_proto.h"
#include "ipc/cview.h"
#include "ipc/route.h"

static const char *arg_str(json_t *args, const char *key)
{
    return json_string_value(json_object_get(args, key));
}

/* Supervisor names become socket paths: nothing that could leave the run directory. */
static bool sup_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 63 || s[0] == '.' || s[0] == '-')
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
            return false;
    return true;
}

/* Forwards op to a supervisor's control socket; its answer becomes ours. */
static json_t *cmd_sup(const struct admin_cmd *c, json_t *args)
{
    const char *op = c->name;
    const char *sup = arg_str(args, "sup");
    if (!sup)
        sup = "root";
    if (!sup_name_ok(sup))
        return admin_reply_fail("badarg", "'%s' is not a supervisor name", sup);
    json_t *req = json_pack("{s:s}", "op", op);
    static const char *const pass[] = {"id", "pid", "spec", "args"};
    for (size_t i = 0; i < CMCP_ARRAY_LEN(pass); i++) {
        json_t *v = json_object_get(args, pass[i]);
        if (v)
            json_object_set(req, pass[i], v);
    }
    char err[600];
    bool absent;
    json_t *reply = admin_sup_call(sup, req, err, sizeof(err), &absent);
    if (!reply && absent)
        return admin_reply_fail("not_found", "no supervisor '%s' runs on this node (status shows the tree)",
                    sup);
    if (!reply)
        return admin_reply_fail("unreachable", "%s", err);
    if (!json_is_true(json_object_get(reply, "ok"))) {
        json_t *r = admin_reply_fail(arg_str(reply, "error") ? arg_str(reply, "error") : "failed", "%s",
                         arg_str(reply, "message") ? arg_str(reply, "message")
                                                   : "the supervisor refused");
        json_decref(reply);
        return r;
    }
    json_object_del(reply, "ok");
    json_object_set_new(reply, "supervisor", json_string(sup));
    /* Name the child in every answer, also where the supervisor's reply does not. */
    for (size_t i = 0; i < 2; i++) {
        json_t *v = json_object_get(args, pass[i]);
        if (v && !json_object_get(reply, pass[i]))
            json_object_set(reply, pass[i], v);
    }
    return admin_reply_ok(reply);
}

/* ---- status ---- */

/* The tree under sup, each supervisor's children nested; depth-bounded. */
static json_t *walk(const char *sup, int depth, json_t *errors)
{
    char err[600];
    json_t *reply = admin_sup_call(sup, json_pack("{s:s}", "op", "which_children"), err,
                                   sizeof(err), NULL);
    if (!reply || !json_is_true(json_object_get(reply, "ok"))) {
        json_array_append_new(errors, json_string(reply ? arg_str(reply, "message") : err));
        json_decref(reply);
        return json_null();
    }
    json_t *kids = json_incref(json_object_get(reply, "children"));
    json_decref(reply);
    size_t i;
    json_t *c;
    json_array_foreach(kids, i, c)
    {
        const char *type = arg_str(c, "type");
        const char *id = arg_str(c, "id");
        if (type && strcmp(type, "supervisor") == 0 && id && depth < 8 &&
            json_is_integer(json_object_get(c, "pid")) && sup_name_ok(id))
            json_object_set_new(c, "children", walk(id, depth + 1, errors));
    }
    return kids;
}

static long root_pid(void)
{
    const char *p = getenv("CMCP_ROOT_PID");
    return p ? atol(p) : (long)getppid();
}

/* Seconds since pid started, from /proc (field 22 is its start in clock ticks after boot). */
static double proc_uptime(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long start = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " "))
        if (++field == 22) {
            start = strtoull(tok, NULL, 10);
            break;
        }
    double up = 0;
    f = fopen("/proc/uptime", "re");
    if (!f || fscanf(f, "%lf", &up) != 1) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    return up - (double)start / (double)sysconf(_SC_CLK_TCK);
}

/* session_list of one shard: its status (0: no answer, err says why) and its list. */
static int shard_list(int i, json_t **list, json_t **keep, char *err, size_t errlen)
{
    struct wire_req req = {.op = WIRE_SESSION_LIST};
    struct wire_reply r;
    *list = NULL;
    if (admin_shard_call(i, &req, &r, keep, err, errlen) != 0)
        return 0;
    *list = json_object_get(r.data, "sessions");
    return r.st;
}

static json_t *cmd_status(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    json_t *errors = json_array();
    json_t *tree = walk("root", 0, errors);
    long rp = root_pid();
    double up = proc_uptime(rp);
    json_t *r = json_pack("{s:s,s:s,s:I,s:o,s:b,s:s,s:o}", "node", admin_g.a->node, "version",
                          CMCP_VERSION, "pid", (json_int_t)rp, "uptime_s",
                          up >= 0 ? json_real(up) : json_null(), "draining", admin_g.draining,
                          "log_level", admin_g.log_level, "tree", tree);
    json_t *shards = json_array();
    for (int i = 0; i < admin_g.nshards; i++) {
        char err[600];
        json_t *list, *keep = NULL;
        int st = shard_list(i, &list, &keep, err, sizeof(err));
        json_t *e = json_pack("{s:i}", "shard", i);
        if (st == 200)
            json_object_set_new(e, "sessions", json_integer((json_int_t)json_array_size(list)));
        else
            json_object_set_new(e, "sessions", json_null());
        if (!st)
            json_object_set_new(e, "error", json_string(err));
        json_array_append_new(shards, e);
        json_decref(keep);
    }
    json_object_set_new(r, "shards", shards);
    char http[300], tcp[300];
    long hp = cfg_get_long(&admin_g.a->cfg, "listener", "http_port", 8080);
    long tp = cfg_get_long(&admin_g.a->cfg, "listener", "tcp_port", 8081);
    snprintf(http, sizeof(http), "%s:%ld", cfg_get(&admin_g.a->cfg, "listener", "http_bind", ""), hp);
    snprintf(tcp, sizeof(tcp), "%s:%ld", cfg_get(&admin_g.a->cfg, "listener", "tcp_bind", ""), tp);
    json_object_set_new(r, "listeners",
                        json_pack("{s:o,s:o}", "http", hp > 0 ? json_string(http) : json_null(),
                                  "tcp", tp > 0 ? json_string(tcp) : json_null()));
    long mp = cfg_get_long(&admin_g.a->cfg, "metrics", "port", 9090);
    char maddr[300];
    snprintf(maddr, sizeof(maddr), "%s:%ld", cfg_get(&admin_g.a->cfg, "metrics", "bind", ""), mp);
    json_object_set_new(r, "metrics_http", mp > 0 ? json_string(maddr) : json_null());
    json_object_set_new(r, "admin_endpoint",
                        json_string(cfg_get(&admin_g.a->cfg, "admin", "endpoint", "")));
    if (json_array_size(errors))
        json_object_set_new(r, "errors", errors);
    else
        json_decref(errors);
    return admin_reply_ok(r);
}

/* ---- sessions ---- */

static json_t *cluster_sessions(void);

static json_t *cmd_sessions(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    if (json_is_true(json_object_get(args, "cluster")))
        return cluster_sessions();
    json_t *shard = json_object_get(args, "shard");
    int from = 0, to = admin_g.nshards - 1;
    if (shard) {
        if (!json_is_integer(shard) || json_integer_value(shard) < 0 ||
            json_integer_value(shard) >= admin_g.nshards)
            return admin_reply_fail("badarg", "shard must be 0 .. %d", admin_g.nshards - 1);
        from = to = (int)json_integer_value(shard);
    }
    json_t *sessions = json_array(), *shards = json_array();
    int answered = 0, unsupported = 0;
    char first_err[600] = "";
    for (int i = from; i <= to; i++) {
        char err[600];
        json_t *list, *keep = NULL;
        int st = shard_list(i, &list, &keep, err, sizeof(err));
        if (st == 200) {
            answered++;
            size_t k;
            json_t *s;
            json_array_foreach(list, k, s)
            {
                json_t *copy = json_deep_copy(s);
                json_object_set_new(copy, "shard", json_integer(i));
                json_array_append_new(sessions, copy);
            }
            json_array_append_new(shards, json_pack("{s:i,s:I}", "shard", i, "count",
                                                    (json_int_t)json_array_size(list)));
        } else {
            if (st == 400) {
                unsupported++;
                snprintf(err, sizeof(err), "shard %d does not support session_list yet", i);
            } else if (st) {
                snprintf(err, sizeof(err), "shard %d answered status %d", i, (int)st);
            }
            if (!first_err[0])
                snprintf(first_err, sizeof(first_err), "%s", err);
            json_array_append_new(shards, json_pack("{s:i,s:s}", "shard", i, "error", err));
        }
        json_decref(keep);
    }
    if (answered == 0) {
        json_decref(sessions);
        json_decref(shards);
        return admin_reply_fail(unsupported ? "unsupported" : "unreachable", "%s", first_err);
    }
    return admin_reply_ok(json_pack("{s:o,s:o}", "sessions", sessions, "shards", shards));
}

/* session_show / session_kill: routed by the shard the id names. */
static json_t *cmd_session(const struct admin_cmd *c, json_t *args)
{
    const char *sid = arg_str(args, "sid");
    int part = sid ? route_session_owner(sid) : -1;
    if (part < 0)
        return admin_reply_fail("badarg",
                                "'%s' is not a session id (<partition>-<26 characters>)",
                                sid ? sid : "");
    const struct cview *v = cview_get();
    if (v->have_map && part >= v->npart)
        return admin_reply_fail("not_found", "session %s names partition %d; the cluster has %d",
                                sid, part, v->npart);
    int shard = part % admin_g.nshards; /* a partition lives in shard partition mod shards */
    bool show = c->id == ADMIN_SESSION_SHOW;
    const char *op = show ? "session_show" : "session_kill";
    char err[600];
    struct wire_req req = {.op = show ? WIRE_SESSION_SHOW : WIRE_SESSION_KILL};
    snprintf(req.sid, sizeof(req.sid), "%s", sid);
    struct wire_reply rep;
    json_t *keep = NULL;
    if (admin_shard_call(shard, &req, &rep, &keep, err, sizeof(err)) != 0)
        return admin_reply_fail("unreachable", "%s", err);
    int st = rep.st;
    json_t *r;
    if (st == 200 && show)
        r = admin_reply_ok(json_pack("{s:O?,s:i}", "session", rep.data, "shard", shard));
    else if (st == 200)
        r = admin_reply_ok(json_pack("{s:s,s:i}", "killed", sid, "shard", shard));
    else if (st == 404)
        r = admin_reply_fail("not_found", "shard %d holds no session %s", shard, sid);
    else if (st == 400)
        r = admin_reply_fail("unsupported", "shard %d does not support %s yet", shard, op);
    else
        r = admin_reply_fail("failed", "shard %d answered status %d", shard, st);
    json_decref(keep);
    if (st == 200 && !show)
        log_notice("admin_session_killed", "{s:s,s:i}", "sid", sid, "shard", shard);
    return r;
}

/* ---- metrics ---- */

/* One exposition line "name{labels} value" into a sample object, or NULL. */
static json_t *sample_of(char *line)
{
    char *p = line;
    while (*p && *p != '{' && *p != ' ')
        p++;
    char *name_end = p, *labels = "", *labels_end = NULL;
    if (*p == '{') {
        labels = p + 1;
        bool q = false;
        for (p++; *p && (q || *p != '}'); p++) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                q = !q;
        }
        if (*p != '}')
            return NULL;
        labels_end = p++;
    }
    while (*p == ' ')
        p++;
    char *end;
    double v = strtod(p, &end);
    if (end == p)
        return NULL;
    *name_end = '\0';
    if (labels_end)
        *labels_end = '\0';
    return json_pack("{s:s,s:s,s:f}", "name", line, "labels", labels, "value", v);
}

static json_t *cmd_metrics(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    char err[600];
    int status = 0;
    char *text = admin_metrics_get("/metrics", &status, err, sizeof(err));
    if (!text)
        return admin_reply_fail("unreachable", "%s", err);
    if (status != 200) {
        free(text);
        return admin_reply_fail("failed", "the metrics worker answered HTTP %d", status);
    }
    json_t *samples = json_array();
    char *copy = strdup(text);
    char *save = NULL;
    for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#' || !line[0])
            continue;
        json_t *s = sample_of(line);
        if (s)
            json_array_append_new(samples, s);
    }
    free(copy);
    json_t *r = json_pack("{s:s,s:o}", "text", text, "samples", samples);
    free(text);
    return admin_reply_ok(r);
}

/* ---- node state ---- */

static json_t *cmd_log_level(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    const char *level = arg_str(args, "level");
    if (!level)
        return admin_reply_ok(json_pack("{s:s}", "level", admin_g.log_level));
    if (admin_set_log_level(level) != 0)
        return admin_reply_fail("badarg", "'%s' is not a log level (debug, info, notice, warning, error)",
                    level);
    return admin_reply_ok(json_pack("{s:s}", "level", admin_g.log_level));
}

/* ---- the cluster (the failover manager's control socket) ---- */

/* The manager's answer to op, or NULL with *fail set to the reply to give. */
static json_t *cluster_ask(json_t *req, json_t **fail)
{
    char err[600];
    json_t *r = admin_cluster_call(req, err, sizeof(err));
    if (!r) {
        *fail = admin_reply_fail("unreachable", "%s", err);
        return NULL;
    }
    if (!json_is_true(json_object_get(r, "ok"))) {
        *fail = admin_reply_fail(arg_str(r, "error") ? arg_str(r, "error") : "failed", "%s",
                                 arg_str(r, "message") ? arg_str(r, "message")
                                                       : "the failover manager refused");
        json_decref(r);
        return NULL;
    }
    json_object_del(r, "ok");
    return r;
}

static const char *raft_role_of(json_t *raft, const char *id)
{
    static const char *const roles[] = {"voters", "standbys"};
    for (int k = 0; k < 2; k++) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(raft, roles[k]), i, v)
        {
            if (strcmp(json_string_value(v) ?: "", id) == 0)
                return k == 0 ? "voter" : "standby";
        }
    }
    return "-";
}

static json_t *view_peer(json_t *st, const char *id)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(st, "view"), "peers"), i, p)
    {
        if (strcmp(arg_str(p, "id") ?: "", id) == 0)
            return p;
    }
    return NULL;
}

static json_t *cmd_nodes(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    json_t *fail = NULL, *st = cluster_ask(json_pack("{s:s}", "op", "status"), &fail);
    if (!st)
        return fail;
    json_t *out = json_array();
    size_t i;
    json_t *n;
    const char *self = arg_str(st, "node");
    json_array_foreach(json_object_get(json_object_get(st, "map"), "nodes"), i, n)
    {
        const char *id = arg_str(n, "id");
        json_t *p = view_peer(st, id);
        json_t *e = json_pack("{s:s,s:O,s:O,s:s,s:O,s:O,s:O}", "id", id, "incarnation",
                              json_object_get(n, "incarnation"), "state",
                              json_object_get(n, "state"), "raft",
                              raft_role_of(json_object_get(st, "raft"), id), "partitions",
                              json_object_get(n, "owned"), "join_index",
                              json_object_get(n, "join_index"), "endpoint",
                              json_object_get(n, "endpoint"));
        if (strcmp(id, self ?: "") == 0)
            json_object_set_new(e, "last_heard_ms", json_real(0));
        else
            json_object_set(e, "last_heard_ms",
                            p ? json_object_get(p, "heard_ago_ms") : json_null());
        json_object_set(e, "health", p ? json_object_get(p, "health") : json_string(
                                                                            strcmp(id, self ?: "") == 0
                                                                                ? "self"
                                                                                : "unknown"));
        json_array_append_new(out, e);
    }
    json_t *r = json_pack("{s:o,s:s?}", "nodes", out, "self", self);
    json_decref(st);
    return admin_reply_ok(r);
}

static json_t *cmd_cluster_status(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    json_t *fail = NULL, *st = cluster_ask(json_pack("{s:s}", "op", "status"), &fail);
    if (!st)
        return fail;
    json_t *map = json_object_get(st, "map"), *raft = json_object_get(st, "raft");
    json_t *per = json_object();
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(map, "nodes"), i, n)
        json_object_set(per, arg_str(n, "id"), json_object_get(n, "owned"));
    char why[256] = "";
    bool may = cview_may_write(cmcp_now_ms(), why, sizeof(why));
    json_t *r = json_pack("{s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:b,s:s,s:O,s:o,s:O,s:O}", "node",
                          json_object_get(st, "node"), "incarnation",
                          json_object_get(st, "incarnation"), "leader",
                          json_object_get(raft, "leader"), "term", json_object_get(raft, "term"),
                          "raft_state", json_object_get(raft, "state"), "map_version",
                          json_object_get(map, "version"), "map_hash", json_object_get(map, "hash"),
                          "fenced", !may, "fence_reason", may ? "" : why, "lease_ms",
                          json_object_get(st, "lease_ms"), "partitions_per_node", per, "voters",
                          json_object_get(raft, "voters"), "standbys",
                          json_object_get(raft, "standbys"));
    json_object_set(r, "beat_commit_ms", json_object_get(st, "beat_commit_ms"));
    json_decref(st);
    return admin_reply_ok(r);
}

/* Where every partition stands on member `id` (this node: its own shards over IPC; another
 * member: its shards' forward ports): {"P": [epoch, seq, chain], ...}, or NULL with err. */
static json_t *member_positions(const char *id, const char *endpoint, bool self, char *err,
                                size_t errlen)
{
    json_t *out = json_object();
    for (int i = 0; i < admin_g.nshards; i++) {
        struct wire_req req = {.op = WIRE_POSITIONS};
        struct wire_reply r;
        json_t *keep = NULL;
        int rc = self ? admin_shard_call(i, &req, &r, &keep, err, errlen)
                      : admin_remote_shard_call(endpoint, i, &req, &r, &keep, err, errlen);
        if (rc != 0 || r.st != 200) {
            if (rc == 0)
                snprintf(err, errlen, "member %s, shard %d answered %d", id, i, r.st);
            json_decref(keep);
            json_decref(out);
            return NULL;
        }
        size_t k;
        json_t *e;
        json_array_foreach(json_object_get(r.data, "partitions"), k, e)
        {
            char key[16];
            snprintf(key, sizeof(key), "%d", (int)json_integer_value(json_array_get(e, 0)));
            json_object_set_new(out, key, json_pack("[O,O,O]", json_array_get(e, 1),
                                                    json_array_get(e, 2), json_array_get(e, 3)));
        }
        json_decref(keep);
    }
    return out;
}

/*
 * The data: each partition's owner and in-sync replicas (as the map names them) must hold
 * the same history, (seq, chain) of the partition's last change. Differences are listed;
 * under write load a replica may be a change or two behind for a moment (reconcile_state
 * waits). With one copy per partition there is nothing to compare.
 */
static json_t *verify_data(json_t *st, json_t *map, int *checked, int *copies)
{
    json_t *diffs = json_array();
    json_t *nodes = json_object_get(map, "nodes"), *owners = json_object_get(map, "owners");
    json_t *replicas = json_object_get(map, "replicas");
    if (json_integer_value(json_object_get(map, "replication_factor")) < 2 || !replicas)
        return diffs;
    const char *me = arg_str(st, "node") ?: "";
    size_t nn = json_array_size(nodes);
    json_t **pos = calloc(nn ? nn : 1, sizeof(*pos));
    bool *tried = calloc(nn ? nn : 1, sizeof(*tried));
    size_t np = json_array_size(owners);
    for (size_t p = 0; p < np && pos && tried; p++) {
        json_int_t o = json_integer_value(json_array_get(owners, p));
        json_t *reps = json_array_get(replicas, p);
        if (o < 0 || (size_t)o >= nn || json_array_size(reps) == 0)
            continue;
        /* ask each member once, when a partition first needs it */
        json_int_t who[1 + 8];
        size_t nwho = 0;
        who[nwho++] = o;
        size_t k;
        json_t *rv;
        json_array_foreach(reps, k, rv) if (nwho < 9) who[nwho++] = json_integer_value(rv);
        bool skip = false;
        for (size_t w = 0; w < nwho; w++) {
            size_t n = (size_t)who[w];
            if (n >= nn)
                continue;
            json_t *node = json_array_get(nodes, n);
            const char *id = arg_str(node, "id") ?: "";
            if (!tried[n]) {
                tried[n] = true;
                char err[400] = "";
                pos[n] = member_positions(id, arg_str(node, "endpoint"), strcmp(id, me) == 0,
                                          err, sizeof(err));
                if (!pos[n])
                    json_array_append_new(diffs, json_pack("{s:s,s:s}", "member", id,
                                                           "difference", err));
            }
            skip |= !pos[n];
        }
        if (skip)
            continue;
        (*checked)++;
        char key[16];
        snprintf(key, sizeof(key), "%d", (int)p);
        json_t *op = json_object_get(pos[o], key);
        json_int_t oseq = op ? json_integer_value(json_array_get(op, 1)) : 0;
        const char *ochain = op ? json_string_value(json_array_get(op, 2)) : "";
        for (size_t w = 1; w < nwho; w++) {
            size_t n = (size_t)who[w];
            json_t *rp = json_object_get(pos[n], key);
            json_int_t rseq = rp ? json_integer_value(json_array_get(rp, 1)) : 0;
            const char *rchain = rp ? json_string_value(json_array_get(rp, 2)) : "";
            (*copies)++;
            if (rseq == oseq && strcmp(rchain ?: "", ochain ?: "") == 0)
                continue;
            const char *what = rseq < oseq   ? "the replica is behind the owner"
                               : rseq > oseq ? "the replica is ahead of the owner"
                                             : "same position, another history";
            json_array_append_new(
                diffs, json_pack("{s:i,s:s,s:I,s:s,s:s,s:I,s:s,s:s}", "partition", (int)p,
                                 "owner", arg_str(json_array_get(nodes, (size_t)o), "id"),
                                 "owner_seq", oseq, "owner_chain", ochain ?: "", "replica",
                                 arg_str(json_array_get(nodes, n), "id"), "replica_seq", rseq,
                                 "replica_chain", rchain ?: "", "difference", what));
        }
    }
    for (size_t n = 0; pos && n < nn; n++)
        json_decref(pos[n]);
    free(pos);
    free(tried);
    return diffs;
}

/* Every member's map version and hash as its heartbeats report them, against ours; then
 * every partition's copies against each other. */
static json_t *verify(bool *consistent)
{
    json_t *fail = NULL, *st = cluster_ask(json_pack("{s:s}", "op", "status"), &fail);
    if (!st)
        return fail;
    json_t *map = json_object_get(st, "map");
    json_int_t version = json_integer_value(json_object_get(map, "version"));
    const char *hash = arg_str(map, "hash") ?: "";
    json_t *diffs = json_array(), *members = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(map, "nodes"), i, n)
    {
        const char *id = arg_str(n, "id");
        const char *state = arg_str(n, "state") ?: "";
        if (strcmp(id, arg_str(st, "node") ?: "") == 0 || strcmp(state, "left") == 0)
            continue;
        json_t *p = view_peer(st, id);
        json_int_t pv = p ? json_integer_value(json_object_get(p, "map_version")) : -1;
        const char *ph = p ? arg_str(p, "map_hash") ?: "" : "";
        json_array_append_new(members, json_pack("{s:s,s:I,s:s}", "id", id, "map_version", pv,
                                                 "map_hash", ph));
        if (strcmp(state, "down") == 0)
            continue; /* a member marked down is not expected to answer */
        if (!p || pv != version || strcmp(ph, hash) != 0)
            json_array_append_new(
                diffs, json_pack("{s:s,s:s}", "id", id, "difference",
                                 !p                ? "not heard from"
                                 : pv != version   ? "another map version"
                                                   : "same version, another hash"));
    }
    int checked = 0, copies = 0;
    json_t *data = verify_data(st, map, &checked, &copies);
    *consistent = json_array_size(diffs) == 0 && json_array_size(data) == 0;
    json_t *r = json_pack("{s:b,s:I,s:s,s:o,s:o,s:i,s:i,s:o}", "consistent", *consistent,
                          "map_version", version, "map_hash", hash, "members", members,
                          "differences", diffs, "partitions_checked", checked,
                          "copies_compared", copies, "data_differences", data);
    json_decref(st);
    return admin_reply_ok(r);
}

/*
 * sessions --cluster: every up member's sessions (each member's shards over sealed links to
 * their forward ports; this node's over IPC), each with the member that owns it and its
 * in-sync replicas as the map says. A member that does not answer is listed, not hidden.
 */
static json_t *cluster_sessions(void)
{
    json_t *fail = NULL, *st = cluster_ask(json_pack("{s:s}", "op", "status"), &fail);
    if (!st)
        return fail;
    json_t *map = json_object_get(st, "map");
    json_t *nodes = json_object_get(map, "nodes"), *owners = json_object_get(map, "owners");
    json_t *replicas = json_object_get(map, "replicas");
    const char *me = arg_str(st, "node") ?: "";
    json_t *sessions = json_array(), *members = json_array();
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        const char *id = arg_str(n, "id") ?: "";
        const char *state = arg_str(n, "state") ?: "";
        if (strcmp(state, "up") != 0 && strcmp(state, "draining") != 0)
            continue;
        int count = 0;
        char err[600] = "";
        for (int k = 0; k < admin_g.nshards; k++) {
            struct wire_req req = {.op = WIRE_SESSION_LIST};
            struct wire_reply r;
            json_t *keep = NULL;
            int rc = strcmp(id, me) == 0
                         ? admin_shard_call(k, &req, &r, &keep, err, sizeof(err))
                         : admin_remote_shard_call(arg_str(n, "endpoint"), k, &req, &r, &keep,
                                                   err, sizeof(err));
            if (rc != 0 || r.st != 200) {
                if (rc == 0)
                    snprintf(err, sizeof(err), "shard %d answered %d", k, r.st);
                json_decref(keep);
                break;
            }
            size_t j;
            json_t *s;
            json_array_foreach(json_object_get(r.data, "sessions"), j, s)
            {
                int p = route_session_owner(arg_str(s, "sid") ?: "");
                json_int_t o = p >= 0 ? json_integer_value(json_array_get(owners, (size_t)p)) : -1;
                json_t *copy = json_deep_copy(s), *reps = json_array();
                size_t q;
                json_t *rv;
                json_array_foreach(p >= 0 ? json_array_get(replicas, (size_t)p) : NULL, q, rv)
                    json_array_append_new(reps, json_string(arg_str(json_array_get(
                                              nodes, (size_t)json_integer_value(rv)), "id") ?: "?"));
                json_object_set_new(copy, "shard", json_integer(k));
                json_object_set_new(copy, "member", json_string(id));
                json_object_set_new(copy, "owner", json_string(
                    arg_str(json_array_get(nodes, (size_t)o), "id") ?: "?"));
                json_object_set_new(copy, "replicas", reps);
                json_array_append_new(sessions, copy);
                count++;
            }
            json_decref(keep);
        }
        json_array_append_new(members, err[0] ? json_pack("{s:s,s:s}", "member", id, "error", err)
                                              : json_pack("{s:s,s:i}", "member", id, "count",
                                                          count));
    }
    json_decref(st);
    return admin_reply_ok(json_pack("{s:b,s:o,s:o,s:o}", "cluster", 1, "sessions", sessions,
                                    "members", members, "shards", json_array()));
}

static json_t *cmd_verify_state(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    bool consistent;
    return verify(&consistent);
}

/* The map is Raft's: a lagging member catches up by itself. This waits for it (bounded). */
static json_t *cmd_reconcile_state(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    bool consistent = false;
    json_t *r = NULL;
    for (int k = 0; k < 50; k++) {
        json_decref(r);
        r = verify(&consistent);
        if (consistent || !json_is_true(json_object_get(r, "ok")))
            break;
        usleep(200000);
    }
    return r;
}

static json_t *cluster_op(const char *op, json_t *args)
{
    json_t *req = json_pack("{s:s}", "op", op);
    if (arg_str(args, "node"))
        json_object_set(req, "node", json_object_get(args, "node"));
    json_t *fail = NULL, *r = cluster_ask(req, &fail);
    return r ? admin_reply_ok(r) : fail;
}

static json_t *cmd_cluster_op(const struct admin_cmd *c, json_t *args)
{
    if (c->id == ADMIN_FORCE_LEADER)
        log_warn("admin_force_leader", "{s:s}", "effect",
                 "Raft recovers with this node as its only voter; writes may be lost");
    return cluster_op(c->name, args);
}

/*
 * sync_from_peer NODE: this node's copies of the partitions NODE owns are rebuilt from it.
 * They leave the in-sync sets (isr_drop, by committed map changes), so NODE's shards rebuild
 * a copy (snapshot, then the changes since) and put it back (isr_add): the catch-up every
 * owner runs for partitions below their replication factor. Waits, bounded, until each of
 * them has its full set of copies again.
 */
static json_t *cmd_sync_from_peer(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    const char *peer = arg_str(args, "node");
    if (!peer || !*peer)
        return admin_reply_fail("badarg", "sync_from_peer needs the member to copy from");
    json_t *fail = NULL, *st = cluster_ask(json_pack("{s:s}", "op", "status"), &fail);
    if (!st)
        return fail;
    json_t *map = json_object_get(st, "map");
    json_t *nodes = json_object_get(map, "nodes");
    int me = -1, from = -1;
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        if (strcmp(arg_str(n, "id") ?: "", arg_str(st, "node") ?: "") == 0)
            me = (int)i;
        if (strcmp(arg_str(n, "id") ?: "", peer) == 0)
            from = (int)i;
    }
    int rf = (int)json_integer_value(json_object_get(map, "replication_factor"));
    if (from < 0 || me < 0 || from == me || rf < 2) {
        json_t *e = admin_reply_fail("badarg", "%s",
                                     rf < 2     ? "this cluster keeps one copy of each partition: "
                                                  "there is nothing to copy again"
                                     : from < 0 ? "no such member (cmcpctl nodes lists them)"
                                                : "name another member than this one");
        json_decref(st);
        return e;
    }
    json_t *owners = json_object_get(map, "owners"), *reps = json_object_get(map, "replicas");
    json_t *epochs = json_object_get(map, "epochs");
    int asked = 0, refused = 0;
    json_t *parts = json_array();
    for (size_t p = 0; p < json_array_size(owners); p++) {
        if (json_integer_value(json_array_get(owners, p)) != from)
            continue;
        bool mine = false;
        size_t k;
        json_t *rv;
        json_array_foreach(json_array_get(reps, p), k, rv) mine |= json_integer_value(rv) == me;
        if (!mine)
            continue;
        json_t *f = NULL, *r = cluster_ask(
            json_pack("{s:s,s:i,s:O,s:s}", "op", "isr_drop", "part", (int)p, "epoch",
                      json_array_get(epochs, p), "node", arg_str(st, "node")), &f);
        if (r) {
            asked++;
            /* [partition, the set's generation before: a rebuilt copy is two changes on] */
            json_array_append_new(parts, json_pack("[i,O]", (int)p, json_array_get(json_object_get(
                                                                    map, "isr_gens"), p)));
        } else {
            refused++;
        }
        json_decref(r);
        json_decref(f);
    }
    json_decref(st);
    /* the owner rebuilds each copy; wait until every one of them is back in its set */
    double t0 = cmcp_now_ms();
    int missing = asked;
    for (int k = 0; asked && k < 200 && cmcp_now_ms() - t0 < 20000; k++) {
        usleep(100000);
        json_t *f = NULL, *s2 = cluster_ask(json_pack("{s:s}", "op", "status"), &f);
        json_decref(f);
        if (!s2)
            continue;
        json_t *m2 = json_object_get(s2, "map");
        missing = 0;
        size_t j;
        json_t *pv;
        json_array_foreach(parts, j, pv)
        {
            size_t p = (size_t)json_integer_value(json_array_get(pv, 0));
            json_int_t gen0 = json_integer_value(json_array_get(pv, 1));
            json_int_t gen = json_integer_value(
                json_array_get(json_object_get(m2, "isr_gens"), p));
            /* taken out (one change) and a copy put back (another), and the set full */
            if (gen < gen0 + 2 ||
                (int)json_array_size(json_array_get(json_object_get(m2, "replicas"), p)) < rf - 1)
                missing++;
        }
        json_decref(s2);
        if (missing == 0)
            break;
    }
    json_t *r = json_pack("{s:s,s:i,s:i,s:i,s:f,s:o}", "from", peer, "partitions", asked,
                          "refused", refused, "not_yet_in_sync", missing, "waited_ms",
                          cmcp_now_ms() - t0, "partitions_list", parts);
    if (missing)
        json_object_set_new(r, "message",
                            json_string("copies are still being rebuilt: cmcpctl verify_state "
                                        "says when they are in sync"));
    return admin_reply_ok(r);
}

json_t *admin_cluster_drain(double max_ms, json_t **fail)
{
    /* alone (no other member up), there is nobody to hand partitions to: no wait */
    json_t *st0 = cluster_ask(json_pack("{s:s}", "op", "status"), fail);
    if (!st0)
        return NULL;
    int others = 0, mine = -1;
    size_t i0;
    json_t *n0;
    json_array_foreach(json_object_get(json_object_get(st0, "map"), "nodes"), i0, n0)
    {
        bool self = strcmp(arg_str(n0, "id") ?: "", arg_str(st0, "node") ?: "") == 0;
        if (self)
            mine = (int)json_integer_value(json_object_get(n0, "owned"));
        else
            others += strcmp(arg_str(n0, "state") ?: "", "up") == 0;
    }
    json_decref(st0);
    json_t *cl = cluster_ask(json_pack("{s:s}", "op", "drain"), fail);
    if (!cl)
        return NULL;
    if (!others)
        return json_pack("{s:o,s:i,s:f,s:s}", "cluster", cl, "owned_left", mine, "waited_ms",
                         0.0, "message", "no other member is up to take this node's partitions");
    /* its partitions move (a few at a time, to members holding copies): wait, bounded,
     * until this node owns none, and say how it ended */
    double t0 = cmcp_now_ms();
    int owned = -1, members_up = 0;
    for (int k = 0; k < 6000; k++) {
        json_t *f = NULL, *st = cluster_ask(json_pack("{s:s}", "op", "status"), &f);
        json_decref(f);
        owned = -1;
        members_up = 0;
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(json_object_get(st, "map"), "nodes"), i, n)
        {
            const char *state = arg_str(n, "state") ?: "";
            members_up += strcmp(state, "up") == 0;
            if (strcmp(arg_str(n, "id") ?: "", arg_str(st, "node") ?: "") == 0)
                owned = (int)json_integer_value(json_object_get(n, "owned"));
        }
        json_decref(st);
        if (owned == 0 || members_up == 0 || cmcp_now_ms() - t0 > max_ms)
            break;
        usleep(100000);
    }
    json_t *r = json_pack("{s:o,s:i,s:f}", "cluster", cl, "owned_left", owned, "waited_ms",
                          cmcp_now_ms() - t0);
    if (owned > 0)
        json_object_set_new(
            r, "message",
            json_string(members_up ? "partitions are still moving: run drain again to wait "
                                     "more, or see cmcpctl nodes"
                                   : "no other member is up to take this node's partitions"));
    return r;
}

static json_t *cmd_drain(const struct admin_cmd *c, json_t *args)
{
    (void)args;
    bool drain = c->id == ADMIN_DRAIN;
    bool was = admin_g.draining;
    admin_set_drain(drain);
    json_t *r = json_pack("{s:b,s:b}", "draining", admin_g.draining, "changed",
                          was != admin_g.draining);
    /* in a cluster, the node's partitions move too (the map says who owns them); the node
     * drains whether or not the cluster could take the change (say which) */
    json_t *fail = NULL, *cl = drain ? admin_cluster_drain(20000, &fail)
                                     : cluster_ask(json_pack("{s:s}", "op", "undrain"), &fail);
    if (cl && drain) {
        json_object_update(r, cl); /* cluster (the manager's answer), owned_left, waited_ms */
        json_decref(cl);
    } else {
        json_object_set_new(r, "cluster", cl ? cl : json_pack("{s:O?}", "error",
                                                              json_object_get(fail, "message")));
    }
    json_decref(fail);
    return admin_reply_ok(r);
}

static json_t *cmd_shutdown(const struct admin_cmd *c, json_t *args)
{
    (void)c;
    (void)args;
    admin_request_shutdown();
    return admin_reply_ok(json_pack("{s:b,s:I}", "stopping", 1, "pid", (json_int_t)root_pid()));
}

static json_t *(*const handlers[ADMIN_CMD_COUNT])(const struct admin_cmd *c, json_t *args) = {
    [ADMIN_STATUS] = cmd_status,
    [ADMIN_WHICH_CHILDREN] = cmd_sup,
    [ADMIN_COUNT_CHILDREN] = cmd_sup,
    [ADMIN_RESTART_CHILD] = cmd_sup,
    [ADMIN_TERMINATE_CHILD] = cmd_sup,
    [ADMIN_START_CHILD] = cmd_sup,
    [ADMIN_DELETE_CHILD] = cmd_sup,
    [ADMIN_SESSIONS] = cmd_sessions,
    [ADMIN_SESSION_SHOW] = cmd_session,
    [ADMIN_SESSION_KILL] = cmd_session,
    [ADMIN_METRICS] = cmd_metrics,
    [ADMIN_LOG_LEVEL] = cmd_log_level,
    [ADMIN_DRAIN] = cmd_drain,
    [ADMIN_UNDRAIN] = cmd_drain,
    [ADMIN_SHUTDOWN] = cmd_shutdown,
    [ADMIN_NODES] = cmd_nodes,
    [ADMIN_CLUSTER_STATUS] = cmd_cluster_status,
    [ADMIN_VERIFY_STATE] = cmd_verify_state,
    [ADMIN_RECONCILE_STATE] = cmd_reconcile_state,
    [ADMIN_REBALANCE] = cmd_cluster_op,
    [ADMIN_FORCE_LEADER] = cmd_cluster_op,
    [ADMIN_LEAVE] = cmd_cluster_op,
    [ADMIN_SYNC_FROM_PEER] = cmd_sync_from_peer,
};

json_t *admin_run(const char *cmd, json_t *args)
{
    const struct admin_cmd *c = admin_cmd_find(cmd);
    if (!c || !handlers[c->id])
        return admin_reply_fail("badarg", "unknown command '%s' (cmcpctl help lists them)", cmd);
    json_t *empty = json_object();
    json_t *r = handlers[c->id](c, json_is_object(args) ? args : empty);
    json_decref(empty);
    return r;
}
