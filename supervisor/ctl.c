/*
 * The supervisor's control channel: nng rep on ipc://RUN/sup-NAME.sock,
 * one JSON request and one JSON reply. It offers OTP's management API
 * (which_children, count_children, terminate_child, restart_child,
 * delete_child, start_child, get_childspec) plus status, with OTP's error
 * answers. Requests that start or stop a child are answered when that is
 * done; until then the supervisor reads no further request (rep0 holds one
 * request at a time). While a job (a restart, a backoff delay) runs, the
 * read-only requests are answered at once; restart_child and delete_child
 * of a child whose restart is pending answer `restarting`; any other request
 * that changes children is parked until the job ends.
 */
#include "supervisor/sup_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <nng/protocol/reqrep0/rep.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/admin_proto.h"
#include "ipc/stats.h"

enum { CTL_NONE, CTL_TERMINATE, CTL_RESTART, CTL_START };

static void ctl_update_watch(struct sup *s);

static json_t *ok_reply(void)
{
    return json_pack("{s:b}", "ok", 1);
}

static json_t *shutdown_json(long ms)
{
    if (ms == SUP_SHUTDOWN_BRUTAL)
        return json_string("brutal_kill");
    if (ms == SUP_SHUTDOWN_INFINITY)
        return json_string("infinity");
    return json_integer(ms);
}

static json_t *child_json(const struct sup_child *c)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:o,s:b}", "id", c->spec.id, "state",
                          sup_child_state_name(c), "type",
                          c->spec.type == SUP_SUPERVISOR ? "supervisor" : "worker", "restart",
                          sup_restart_name(c->spec.restart), "restarts", c->restarts, "shutdown",
                          shutdown_json(c->spec.shutdown_ms), "significant", c->spec.significant);
    json_object_set_new(o, "pid", c->pid ? json_integer(c->pid) : json_null());
    json_object_set_new(o, "role", json_string(c->spec.is_exec ? c->spec.argv[0] : c->spec.role));
    if (c->silent && c->state == CS_RUNNING)
        /* running, as far as its supervisor knows, but its loop has not turned for half its
         * watchdog: /health is 503 until it beats again or is replaced */
        json_object_set_new(o, "unresponsive",
                            json_pack("{s:I}", "watchdog_ms", (json_int_t)c->spec.watchdog_ms));
    return o;
}

static json_t *spec_json(const struct sup_child *c)
{
    json_t *o = child_json(c);
    json_t *args = json_array();
    for (int i = 0; i < c->spec.argc; i++)
        json_array_append_new(args, json_string(c->spec.argv[i]));
    json_object_set_new(o, c->spec.is_exec ? "exec" : "args", args);
    json_object_set_new(o, "start_timeout", c->spec.start_timeout_ms < 0
                                                ? json_string("infinity")
                                                : json_integer(c->spec.start_timeout_ms));
    json_object_set_new(o, "watchdog", c->spec.watchdog_ms > 0 ? json_integer(c->spec.watchdog_ms)
                                                               : json_string("off"));
    return o;
}

/* Builds a child spec from a start_child request's "spec" object. */
static json_t *spec_from_json(struct sup *s, json_t *j, struct child_spec *cs)
{
    memset(cs, 0, sizeof(*cs));
    cs->index = -1;
    const char *id = json_string_value(json_object_get(j, "id"));
    if (!id || !*id || strlen(id) >= sizeof(cs->id))
        return admin_reply_fail("badarg", "spec.id must be a non-empty string under 64 bytes");
    snprintf(cs->id, sizeof(cs->id), "%s", id);
    snprintf(cs->section, sizeof(cs->section), "%s", id);
    const char *type = json_string_value(json_object_get(j, "type"));
    cs->type = type && strcmp(type, "supervisor") == 0 ? SUP_SUPERVISOR : SUP_WORKER;
    if (type && strcmp(type, "supervisor") && strcmp(type, "worker"))
        return admin_reply_fail("badarg", "spec.type must be worker or supervisor");
    const char *restart = json_string_value(json_object_get(j, "restart"));
    if (sup_restart_parse(restart ? restart : "permanent", &cs->restart) != 0)
        return admin_reply_fail("badarg", "spec.restart must be permanent, transient or temporary");
    json_t *sd = json_object_get(j, "shutdown");
    cs->shutdown_ms = cs->type == SUP_SUPERVISOR ? SUP_SHUTDOWN_INFINITY : 5000;
    if (json_is_integer(sd) && json_integer_value(sd) >= 0)
        cs->shutdown_ms = (long)json_integer_value(sd);
    else if (json_is_string(sd) && sup_shutdown_parse(json_string_value(sd), &cs->shutdown_ms) != 0)
        return admin_reply_fail("badarg", "spec.shutdown must be brutal_kill, infinity or milliseconds");
    if (sd && !json_is_string(sd) && !(json_is_integer(sd) && json_integer_value(sd) >= 0))
        return admin_reply_fail("badarg", "spec.shutdown must be brutal_kill, infinity or milliseconds");
    json_t *st = json_object_get(j, "start_timeout");
    cs->start_timeout_ms = cs->type == SUP_SUPERVISOR ? -1 : 5000;
    if (json_is_integer(st) && json_integer_value(st) > 0)
        cs->start_timeout_ms = (long)json_integer_value(st);
    else if (json_is_string(st) && strcmp(json_string_value(st), "infinity") == 0)
        cs->start_timeout_ms = -1;
    else if (st)
        return admin_reply_fail("badarg", "spec.start_timeout must be milliseconds (> 0) or infinity");
    cs->significant = json_is_true(json_object_get(j, "significant"));
    if (cs->significant && cs->restart == SUP_PERMANENT)
        return admin_reply_fail("badarg", "a significant child must be transient or temporary");
    if (cs->significant && s->spec->auto_shutdown == SUP_AUTO_NEVER)
        return admin_reply_fail("badarg", "supervisor '%s' has auto_shutdown = never: no child may be "
                                   "significant",
                         s->spec->name);
    const char *role = json_string_value(json_object_get(j, "role"));
    json_t *exec = json_object_get(j, "exec");
    json_t *args = json_object_get(j, "args");
    json_t *list = exec ? exec : args;
    if (exec) {
        cs->is_exec = true;
        cs->ready_by_exec = true;
    } else if (cs->type == SUP_SUPERVISOR) {
        snprintf(cs->role, sizeof(cs->role), "supervisor");
        char sec[80];
        snprintf(sec, sizeof(sec), "tree.%s", id);
        if (!cfg_has_section(s->cfg, sec))
            return admin_reply_fail("badarg", "no [%s] section in the node's configuration describes "
                                       "supervisor '%s'",
                             sec, id);
    } else {
        if (!role)
            return admin_reply_fail("badarg", "spec needs a role (a cmcpd role) or exec (a command)");
        if (s->o->role_known && !s->o->role_known(role))
            return admin_reply_fail("badarg", "unknown role '%s'", role);
        snprintf(cs->role, sizeof(cs->role), "%s", role);
    }
    if (list) {
        if (!json_is_array(list) || json_array_size(list) > SUP_MAX_ARGS)
            return admin_reply_fail("badarg", "spec.%s must be an array of at most %d strings",
                             exec ? "exec" : "args", SUP_MAX_ARGS);
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
            if (!json_is_string(v)) {
                sup_child_spec_free(cs);
                return admin_reply_fail("badarg", "spec arguments must be strings");
            }
            cs->argv[cs->argc++] = strdup(json_string_value(v));
        }
        cs->argv[cs->argc] = NULL;
    }
    if (cs->is_exec && cs->argc == 0)
        return admin_reply_fail("badarg", "spec.exec must name a command");
    const char *ready = json_string_value(json_object_get(j, "ready"));
    if (ready)
        cs->ready_by_exec = strcmp(ready, "exec") == 0;
    json_t *wd = json_object_get(j, "watchdog");
    if (cs->type == SUP_WORKER && !cs->is_exec && !cs->ready_by_exec)
        cs->watchdog_ms = sup_watchdog_default(cs->role);
    if (json_is_string(wd) && strcmp(json_string_value(wd), "off") == 0)
        cs->watchdog_ms = 0;
    else if (json_is_integer(wd) && json_integer_value(wd) >= 100 && cs->type == SUP_WORKER &&
             !cs->is_exec && !cs->ready_by_exec)
        cs->watchdog_ms = (long)json_integer_value(wd);
    else if (wd) {
        sup_child_spec_free(cs);
        return admin_reply_fail("badarg", "spec.watchdog must be off or milliseconds (>= 100), "
                                          "for a cmcpd role that reports ready by fd");
    }
    return NULL;
}

static json_t *do_which(struct sup *s)
{
    json_t *arr = json_array();
    for (int i = 0; i < s->nkids; i++)
        json_array_append_new(arr, child_json(s->kids[i]));
    return json_pack("{s:b,s:s,s:o}", "ok", 1, "supervisor", s->spec->name, "children", arr);
}

static json_t *do_count(struct sup *s)
{
    int active = 0, sups = 0, workers = 0;
    for (int i = 0; i < s->nkids; i++) {
        active += s->kids[i]->pid != 0;
        sups += s->kids[i]->spec.type == SUP_SUPERVISOR;
        workers += s->kids[i]->spec.type == SUP_WORKER;
    }
    /* OTP: a simple_one_for_one supervisor has one spec, its template. */
    int specs = s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE ? 1 : s->nkids;
    return json_pack("{s:b,s:i,s:i,s:i,s:i}", "ok", 1, "specs", specs, "active", active,
                     "supervisors", sups, "workers", workers);
}

static json_t *do_status(struct sup *s)
{
    return json_pack("{s:b,s:s,s:s,s:i,s:i,s:i,s:I,s:I,s:I,s:b,s:i}", "ok", 1, "supervisor",
                     s->spec->name, "strategy", sup_strategy_name(s->spec->strategy), "intensity",
                     s->spec->intensity, "period_s", s->spec->period_s, "children", s->nkids,
                     "starts_total", (json_int_t)s->starts_total, "restarts_total",
                     (json_int_t)s->restarts_total, "intensity_exceeded_total",
                     (json_int_t)s->intensity_exceeded_total, "stopping", s->stopping, "pid",
                     (int)getpid());
}

static struct sup_child *lookup(struct sup *s, json_t *req, json_t **err)
{
    bool simple = s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE;
    json_t *pid = json_object_get(req, "pid");
    const char *id = json_string_value(json_object_get(req, "id"));
    struct sup_child *c = NULL;
    if (json_is_integer(pid))
        c = sup_find_pid(s, (pid_t)json_integer_value(pid));
    else if (id && !simple)
        c = sup_find(s, id);
    else if (id && simple)
        *err = admin_reply_fail("simple_one_for_one",
                         "supervisor '%s' is simple_one_for_one: name the child by pid",
                         s->spec->name);
    else
        *err = admin_reply_fail("badarg", "give the child's id (or pid)");
    if (!c && !*err)
        *err = admin_reply_fail("not_found", "supervisor '%s' has no such child", s->spec->name);
    return c;
}

static json_t *defer(struct sup *s, int op, struct sup_child *c, enum step_op step)
{
    s->ctl_waiting = true;
    s->ctl_op = op;
    s->ctl_child = c;
    ctl_update_watch(s);
    sup_job_begin(s, JOB_CTL);
    sup_job_add(s, step, c, 0);
    sup_job_run(s);
    return NULL;
}

static json_t *handle(struct sup *s, json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "op"));
    json_t *err = NULL;
    if (!op)
        return admin_reply_fail("badarg", "a request is a JSON object with an \"op\"");
    if (strcmp(op, "which_children") == 0)
        return do_which(s);
    if (strcmp(op, "count_children") == 0)
        return do_count(s);
    if (strcmp(op, "status") == 0)
        return do_status(s);
    if (s->stopping)
        return admin_reply_fail("shutting_down", "supervisor '%s' is shutting down", s->spec->name);
    bool simple = s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE;
    if (strcmp(op, "get_childspec") == 0) {
        struct sup_child *c = lookup(s, req, &err);
        return c ? json_pack("{s:b,s:o}", "ok", 1, "spec", spec_json(c)) : err;
    }
    if (strcmp(op, "terminate_child") == 0) {
        struct sup_child *c = lookup(s, req, &err);
        if (!c)
            return err;
        if (!c->pid) {
            if (c->spec.restart == SUP_TEMPORARY || simple)
                sup_child_remove(s, c);
            return ok_reply();
        }
        return defer(s, CTL_TERMINATE, c, OP_STOP);
    }
    if (strcmp(op, "restart_child") == 0 || strcmp(op, "delete_child") == 0) {
        if (simple)
            return admin_reply_fail("simple_one_for_one", "%s is not available for simple_one_for_one "
                                                   "supervisor '%s'",
                             op, s->spec->name);
        struct sup_child *c = lookup(s, req, &err);
        if (!c)
            return err;
        if (c->pid)
            return admin_reply_fail("running", "child '%s' is running (pid %d); terminate it first",
                             c->spec.id, (int)c->pid);
        if (op[0] == 'd') {
            sup_child_remove(s, c);
            return ok_reply();
        }
        return defer(s, CTL_RESTART, c, OP_START);
    }
    if (strcmp(op, "start_child") == 0) {
        struct child_spec cs;
        if (simple) {
            sup_child_spec_copy(&cs, &s->spec->tmpl);
            snprintf(cs.id, sizeof(cs.id), "%s-%d", s->spec->tmpl.id, ++s->dyn_seq);
            json_t *args = json_object_get(req, "args");
            size_t i;
            json_t *v;
            json_array_foreach(args, i, v)
            {
                if (json_is_string(v) && cs.argc < SUP_MAX_ARGS)
                    cs.argv[cs.argc++] = strdup(json_string_value(v));
            }
            cs.argv[cs.argc] = NULL;
            /* An optional group cap: at most group_max running children of the group
             * (a tool's concurrency across the node, for tool_sup). */
            const char *group = json_string_value(json_object_get(req, "group"));
            json_t *gmax = json_object_get(req, "group_max");
            if (group) {
                snprintf(cs.group, sizeof(cs.group), "%s", group);
                int running = 0;
                for (int k = 0; k < s->nkids; k++)
                    running += strcmp(s->kids[k]->spec.group, cs.group) == 0;
                if (json_is_integer(gmax) && running >= json_integer_value(gmax)) {
                    sup_child_spec_free(&cs);
                    return admin_reply_fail("group_full", "%d children of group '%s' run already (the "
                                                   "most allowed)",
                                     running, group);
                }
            }
        } else {
            json_t *spec = json_object_get(req, "spec");
            if (!json_is_object(spec))
                return admin_reply_fail("badarg", "start_child needs a \"spec\" object");
            json_t *e = spec_from_json(s, spec, &cs);
            if (e)
                return e;
            struct sup_child *old = sup_find(s, cs.id);
            if (old) {
                sup_child_spec_free(&cs);
                if (old->pid)
                    return json_pack("{s:b,s:s,s:i,s:s}", "ok", 0, "error", "already_started",
                                     "pid", (int)old->pid, "message", "a child with this id runs");
                return admin_reply_fail("already_present",
                                 "child '%s' exists but is not running: use restart_child",
                                 old->spec.id);
            }
        }
        if (s->spec->max_children > 0 && s->nkids >= s->spec->max_children) {
            sup_child_spec_free(&cs);
            return admin_reply_fail("too_many_children", "supervisor '%s' runs its maximum of %d children",
                             s->spec->name, s->spec->max_children);
        }
        struct sup_child *c = sup_child_add(s, &cs);
        sup_child_spec_free(&cs);
        if (!c)
            return admin_reply_fail("too_many_children", "supervisor '%s' holds %d children already",
                             s->spec->name, SUP_MAX_CHILDREN);
        return defer(s, CTL_START, c, OP_START);
    }
    return admin_reply_fail("badarg", "unknown op '%s' (which_children, count_children, status, "
                               "get_childspec, terminate_child, restart_child, delete_child, "
                               "start_child)",
                     op);
}

static void send_reply(struct sup *s, json_t *reply)
{
    char *text = json_dumps(reply, JSON_COMPACT);
    json_decref(reply);
    if (!text)
        return;
    /* Not NNG_FLAG_NONBLOCK: rep0 drops a reply outright when the pipe is still busy with
     * the previous one (its completion runs on nng's own thread, late under load), and the
     * client would wait forever. The wait is that completion; SENDTIMEO bounds it. */
    int rv = nng_send(s->ctl, text, strlen(text), 0);
    if (rv != 0)
        log_warn("ctl_reply_failed", "{s:s}", "error", nng_strerror(rv));
    free(text);
}

void sup_ctl_job_done(struct sup *s, bool ok, struct sup_child *c)
{
    if (!s->ctl_waiting)
        return;
    s->ctl_waiting = false;
    json_t *reply;
    if (!c) {
        reply = admin_reply_fail("shutting_down", "supervisor '%s' is shutting down", s->spec->name);
    } else if (s->ctl_op == CTL_TERMINATE) {
        if (c->spec.restart == SUP_TEMPORARY || s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE)
            sup_child_remove(s, c);
        reply = ok_reply();
    } else if (ok) {
        reply = json_pack("{s:b,s:s,s:i}", "ok", 1, "id", c->spec.id, "pid", (int)c->pid);
    } else {
        reply = admin_reply_fail("start_failed", "child '%s' failed to start: %s", c->spec.id,
                          c->fail_reason);
        if (s->ctl_op == CTL_START)
            sup_child_remove(s, c); /* OTP keeps no spec of a child whose start_child failed */
    }
    s->ctl_child = NULL;
    send_reply(s, reply);
    ctl_update_watch(s);
}

static bool read_only(const char *op)
{
    return op && (strcmp(op, "which_children") == 0 || strcmp(op, "count_children") == 0 ||
                  strcmp(op, "status") == 0 || strcmp(op, "get_childspec") == 0);
}

static void log_request(json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "op"));
    if (op && strcmp(op, "which_children") && strcmp(op, "count_children") &&
        strcmp(op, "status") && strcmp(op, "get_childspec"))
        log_info("ctl_request", "{s:s,s:O?}", "op", op, "args", req);
}

/* A request that changes children, read while a job runs: an answer now, or NULL to park it. */
static json_t *busy_answer(struct sup *s, json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "op"));
    if (strcmp(op, "restart_child") && strcmp(op, "delete_child"))
        return NULL;
    if (s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE)
        return NULL; /* answered simple_one_for_one once the job is over */
    const char *id = json_string_value(json_object_get(req, "id"));
    struct sup_child *c = id ? sup_find(s, id) : NULL;
    if (c && strcmp(sup_child_state_name(c), "restarting") == 0)
        return admin_reply_fail("restarting", "child '%s' is being restarted", c->spec.id);
    return NULL;
}

static void ctl_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup *s = w->data;
    /* Bounded: the loop comes back for the rest. */
    for (int round = 0; round < 64 && !s->ctl_waiting && !s->ctl_parked; round++) {
        char *buf = NULL;
        size_t len = 0;
        int rv = nng_recv(s->ctl, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK);
        if (rv != 0)
            return;
        json_error_t jerr;
        json_t *req = json_loadb(buf, len, 0, &jerr);
        nng_free(buf, len);
        json_t *reply = NULL;
        if (!json_is_object(req)) {
            reply = admin_reply_fail("badarg", "request is not a JSON object: %s", jerr.text);
        } else if (!json_is_string(json_object_get(req, "op"))) {
            reply = admin_reply_fail("badarg", "a request is a JSON object with an \"op\"");
        } else if (s->busy && !s->stopping &&
                   !read_only(json_string_value(json_object_get(req, "op")))) {
            reply = busy_answer(s, req);
            if (!reply) {
                s->ctl_parked = req;
                ctl_update_watch(s);
                return;
            }
        } else {
            log_request(req);
            reply = handle(s, req);
        }
        json_decref(req);
        if (reply)
            send_reply(s, reply);
    }
}
int sup_ctl_open(struct sup *s)
{
    ipc_addr_sup(s->ctl_addr, sizeof(s->ctl_addr), s->o->run_dir, s->spec->name);
    int rv, fd;
    if ((rv = nng_rep0_open(&s->ctl)) != 0) {
        log_error("ctl_open_failed", "{s:s}", "error", nng_strerror(rv));
        return -1;
    }
    nng_socket_set_ms(s->ctl, NNG_OPT_SENDTIMEO, 2000); /* a client that does not read */
    if ((rv = nng_listen(s->ctl, s->ctl_addr, NULL, 0)) != 0) {
        log_error("ctl_listen_failed", "{s:s,s:s,s:s}", "address", s->ctl_addr, "error",
                  nng_strerror(rv), "hint",
                  "is another node running with the same run_dir? give each node its own");
        fprintf(stderr, "cmcpd: cannot listen on %s: %s\n", s->ctl_addr, nng_strerror(rv));
        nng_close(s->ctl);
        return -1;
    }
    if ((rv = nng_socket_get_int(s->ctl, NNG_OPT_RECVFD, &fd)) != 0) {
        log_error("ctl_open_failed", "{s:s}", "error", nng_strerror(rv));
        nng_close(s->ctl);
        return -1;
    }
    s->ctl_open = true;
    ev_io_init(&s->ctl_w, ctl_cb, fd, EV_READ);
    s->ctl_w.data = s;
    ctl_update_watch(s);
    return 0;
}

void sup_ctl_close(struct sup *s)
{
    if (!s->ctl_open)
        return;
    ev_io_stop(s->loop, &s->ctl_w);
    nng_close(s->ctl);
    s->ctl_open = false;
    /* ipc:// leaves its socket file behind. */
    const char *path = s->ctl_addr + strlen("ipc://");
    unlink(path);
}

static void ctl_update_watch(struct sup *s)
{
    if (!s->ctl_open)
        return;
    if (!s->ctl_waiting && !s->ctl_parked)
        ev_io_start(s->loop, &s->ctl_w);
    else
        ev_io_stop(s->loop, &s->ctl_w);
}

void sup_ctl_resume(struct sup *s)
{
    if (!s->ctl_open)
        return;
    if (s->ctl_parked && !s->busy && !s->ctl_waiting) {
        json_t *req = s->ctl_parked;
        s->ctl_parked = NULL;
        log_request(req);
        json_t *reply = handle(s, req);
        json_decref(req);
        if (reply)
            send_reply(s, reply);
    }
    ctl_update_watch(s);
}

void sup_ctl_drop_parked(struct sup *s)
{
    if (!s->ctl_parked)
        return;
    json_decref(s->ctl_parked);
    s->ctl_parked = NULL;
    send_reply(s, admin_reply_fail("shutting_down", "supervisor '%s' is shutting down", s->spec->name));
    ctl_update_watch(s);
}

/* ---- what the metrics worker sees of this supervisor ---- */

static const char *const stat_states[] = {"starting", "running", "stopping", "restarting",
                                          "undefined"};

/* FNV-1a over what /status and /health show: publish only when it changed. */
static unsigned long state_signature(struct sup *s)
{
    unsigned long h = 1469598103934665603UL;
#define MIX(v) (h = (h ^ (unsigned long)(v)) * 1099511628211UL)
    MIX(s->init_done);
    MIX(s->stopping);
    MIX(s->nkids);
    for (int i = 0; i < s->nkids; i++) {
        const struct sup_child *c = s->kids[i];
        for (const char *p = c->spec.id; *p; p++)
            MIX(*p);
        for (const char *p = sup_child_state_name(c); *p; p++)
            MIX(*p);
        MIX(c->pid);
        MIX(c->restarts);
        MIX(c->silent);
    }
#undef MIX
    return h;
}

void sup_ctl_stats(struct sup *s)
{
    unsigned long sig = state_signature(s);
    if (sig == s->stats_sig && s->stats_sig != 0)
        return;
    s->stats_sig = sig;
    int counts[CMCP_ARRAY_LEN(stat_states)] = {0};
    json_t *kids = json_array();
    for (int i = 0; i < s->nkids; i++) {
        const char *st = sup_child_state_name(s->kids[i]);
        for (size_t k = 0; k < CMCP_ARRAY_LEN(stat_states); k++)
            counts[k] += strcmp(st, stat_states[k]) == 0;
        json_array_append_new(kids, child_json(s->kids[i]));
        char labels[200];
        /* A counter exists from 0, so the first restart shows as an increase. */
        snprintf(labels, sizeof(labels), "supervisor=\"%s\",child=\"%s\"", s->spec->name,
                 s->kids[i]->spec.id);
        stats_counter("cmcp_supervisor_restarts_total", labels);
        if (s->kids[i]->spec.watchdog_ms > 0)
            stats_counter("cmcp_supervisor_watchdog_kills_total", labels);
    }
    for (size_t k = 0; k < CMCP_ARRAY_LEN(stat_states); k++) {
        char labels[160];
        snprintf(labels, sizeof(labels), "supervisor=\"%s\",state=\"%s\"", s->spec->name,
                 stat_states[k]);
        stats_gauge("cmcp_supervisor_children", labels)->value = counts[k];
    }
    stats_set_info(json_pack("{s:s,s:b,s:s,s:b,s:b,s:i,s:I,s:I,s:o}", "supervisor",
                             s->spec->name, "root", s->o->is_root, "strategy",
                             sup_strategy_name(s->spec->strategy), "ready", s->init_done,
                             "stopping", s->stopping, "intensity", s->spec->intensity,
                             "restarts_total", (json_int_t)s->restarts_total, "starts_total",
                             (json_int_t)s->starts_total, "children", kids));
    stats_publish_now();
}

void sup_ctl_count_restart(struct sup *s, struct sup_child *c)
{
    char labels[200];
    snprintf(labels, sizeof(labels), "supervisor=\"%s\",child=\"%s\"", s->spec->name,
             c->spec.id);
    stats_counter("cmcp_supervisor_restarts_total", labels)->value += 1;
}

void sup_ctl_count_watchdog_kill(struct sup *s, struct sup_child *c)
{
    char labels[200];
    snprintf(labels, sizeof(labels), "supervisor=\"%s\",child=\"%s\"", s->spec->name,
             c->spec.id);
    stats_counter("cmcp_supervisor_watchdog_kills_total", labels)->value += 1;
}
