/*
 * The supervisor runtime. One libev loop; every change to the set of
 * running children happens in a "job": an ordered list of steps (start,
 * stop, stop-all, drop, delay) executed one at a time, each waiting for the
 * child to report ready or to be reaped. Deaths that arrive while a job runs
 * are queued, and control requests wait, as messages wait in an OTP
 * supervisor's mailbox while it restarts children.
 */
#define _GNU_SOURCE
#include "supervisor/sup_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "ipc/control.h"
#include "base/log.h"
#include "base/proc.h"
#include "base/notify.h"
#include "supervisor/spawn.h"
#include "ipc/stats.h"

static void child_exit_cb(struct ev_loop *loop, ev_child *w, int revents);

/*
 * Arms a one-shot timer `ms` from now. libev counts from ev_now(), the time the
 * loop last woke; a callback that runs late (a busy machine) would otherwise
 * shorten every backoff, start timeout and shutdown timeout by that lag.
 */
static void timer_arm(struct ev_loop *loop, ev_timer *t, long ms)
{
    ev_now_update(loop);
    ev_timer_set(t, (double)ms / 1000.0, 0);
    ev_timer_start(loop, t);
}
static void step_done(struct sup *s);
static void step_failed(struct sup *s, struct sup_child *c);
static void job_finished(struct sup *s, bool ok);

const char *sup_child_state_name(const struct sup_child *c)
{
    switch (c->state) {
    case CS_STARTING:
        return "starting";
    case CS_RUNNING:
        return "running";
    case CS_STOPPING:
        return "stopping";
    case CS_DOWN:
        break;
    }
    struct sup *s = c->sup;
    /* OTP's `restarting`: down, with a restart (or its retry) still to come. */
    if (s->busy && !s->stopping && s->job == JOB_RESTART)
        for (int i = s->cur; i < s->nsteps; i++)
            if (s->steps[i].op == OP_START && s->steps[i].c == c)
                return "restarting";
    return "undefined";
}

struct sup_child *sup_find(struct sup *s, const char *id)
{
    for (int i = 0; i < s->nkids; i++)
        if (strcmp(s->kids[i]->spec.id, id) == 0)
            return s->kids[i];
    return NULL;
}

struct sup_child *sup_find_pid(struct sup *s, pid_t pid)
{
    for (int i = 0; i < s->nkids; i++)
        if (s->kids[i]->pid == pid)
            return s->kids[i];
    return NULL;
}

struct sup_child *sup_child_add(struct sup *s, const struct child_spec *cs)
{
    if (s->nkids == SUP_MAX_CHILDREN)
        return NULL;
    struct sup_child *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    sup_child_spec_copy(&c->spec, cs);
    c->sup = s;
    c->ready_fd = c->exec_fd = -1;
    s->kids[s->nkids++] = c;
    return c;
}

void sup_child_remove(struct sup *s, struct sup_child *c)
{
    int j = 0;
    for (int i = 0; i < s->nkids; i++)
        if (s->kids[i] != c)
            s->kids[j++] = s->kids[i];
    s->nkids = j;
    j = 0;
    for (int i = 0; i < s->ndeaths; i++)
        if (s->deaths[i] != c)
            s->deaths[j++] = s->deaths[i];
    s->ndeaths = j;
    sup_child_spec_free(&c->spec);
    free(c);
}

static void close_watch(struct sup *s, ev_io *w, int *fd)
{
    if (*fd >= 0) {
        ev_io_stop(s->loop, w);
        close(*fd);
        *fd = -1;
    }
}

static void became_ready(struct sup *s, struct sup_child *c)
{
    if (c->state != CS_STARTING)
        return;
    c->state = CS_RUNNING;
    c->ready_ms = cmcp_now_ms();
    ev_timer_stop(s->loop, &c->timer);
    if (c->spec.watchdog_ms > 0 && c->ready_fd >= 0) {
        /* From now on the timer is the watchdog: it looks at the last beat a few times
         * per limit (timer_cb). */
        c->beat_ms = c->checked_ms = c->ready_ms;
        c->silent = false;
        double every = (double)c->spec.watchdog_ms / 4000.0;
        ev_timer_set(&c->timer, every, every);
        ev_timer_start(s->loop, &c->timer);
    }
    log_info("child_ready", "{s:s,s:i,s:f,s:f}", "child", c->spec.id, "child_pid", (int)c->pid,
             "start_ms", c->ready_ms - c->started_ms, "t_mono", c->ready_ms);
    if (s->busy && s->cur < s->nsteps && s->steps[s->cur].op == OP_START && s->steps[s->cur].c == c)
        step_done(s);
}

static void exec_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_child *c = w->data;
    int st = spawn_exec_status(c->exec_fd);
    if (st == 0)
        return;
    close_watch(c->sup, &c->exec_w, &c->exec_fd);
    if (st == 1) {
        c->exec_ok = true;
        if (c->spec.ready_by_exec)
            became_ready(c->sup, c);
        return;
    }
    snprintf(c->fail_reason, sizeof(c->fail_reason), "exec of %s failed: %s",
             c->spec.is_exec ? c->spec.argv[0] : spawn_self_exe(), strerror(-st));
    log_error("child_exec_failed", "{s:s,s:s}", "child", c->spec.id, "reason", c->fail_reason);
    /* The child _exits at once; its reaping fails the start. */
}

static void ready_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_child *c = w->data;
    char buf[256];
    ssize_t n = read(c->ready_fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    bool ready = n > 0 && memchr(buf, '\n', (size_t)n) != NULL;
    bool watched = c->spec.watchdog_ms > 0;
    if (n <= 0 || (ready && !watched))
        close_watch(c->sup, &c->ready_w, &c->ready_fd);
    /* EOF without a newline: the child gave up its fd; its exit or the start timeout decides
     * (a watched child that closed it stops beating: its watchdog decides). */
    if (n <= 0)
        return;
    if (ready)
        became_ready(c->sup, c);
    if (watched && c->state == CS_RUNNING) {
        /* a beat: its loop turns */
        c->beat_ms = cmcp_now_ms();
        if (c->silent) {
            c->silent = false;
            log_notice("child_responsive", "{s:s,s:i}", "child", c->spec.id, "child_pid",
                       (int)c->pid);
        }
    }
}

/* What the kernel says a process is doing: its state letter, spelt out, and where it
 * sleeps in the kernel (wchan), for the log line of a watchdog kill. */
static void proc_state(pid_t pid, char *buf, size_t len)
{
    char path[64], stat[512] = "", wchan[64] = "";
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(stat, sizeof(stat), f))
            stat[0] = '\0';
        fclose(f);
    }
    snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
    f = fopen(path, "r");
    if (f) {
        if (!fgets(wchan, sizeof(wchan), f))
            wchan[0] = '\0';
        fclose(f);
    }
    const char *rp = strrchr(stat, ')'); /* the command name may hold spaces */
    char st = rp && rp[1] == ' ' ? rp[2] : '?';
    const char *what = st == 'R'   ? "running (spinning?)"
                       : st == 'S' ? "sleeping (waiting on something)"
                       : st == 'D' ? "in uninterruptible sleep (disk or kernel I/O)"
                       : st == 'T' || st == 't' ? "stopped (SIGSTOP or a debugger)"
                       : st == 'Z' ? "a zombie"
                                   : "unknown";
    snprintf(buf, len, "%c: %s%s%s", st, what, wchan[0] && strcmp(wchan, "0") ? ", in " : "",
             wchan[0] && strcmp(wchan, "0") ? wchan : "");
}

/* The watchdog of a running child: half its limit silent is a warning (and /health says
 * so); the whole limit is a kill, and the exit is a crash by the usual rules. */
static void watchdog_check(struct sup *s, struct sup_child *c)
{
    double now = cmcp_now_ms(), since = now - c->checked_ms;
    c->checked_ms = now;
    if (since > (double)c->spec.watchdog_ms / 2) {
        /* The supervisor itself did not run for a while (the whole tree stopped, a paused
         * VM): its children's silence is its own. They get a fresh limit. */
        c->beat_ms = now;
        return;
    }
    double silent = now - c->beat_ms;
    if (silent >= (double)c->spec.watchdog_ms) {
        char st[160];
        proc_state(c->pid, st, sizeof(st));
        log_error("child_hung", "{s:s,s:i,s:f,s:I,s:s,s:s}", "child", c->spec.id, "child_pid",
                  (int)c->pid, "silent_ms", silent, "watchdog_ms", (json_int_t)c->spec.watchdog_ms,
                  "process_state", st, "action", "SIGKILL, then restart");
        c->hung = true;
        ev_timer_stop(s->loop, &c->timer);
        sup_ctl_count_watchdog_kill(s, c);
        kill(c->pid, SIGKILL);
    } else if (silent >= (double)c->spec.watchdog_ms / 2 && !c->silent) {
        c->silent = true;
        char st[160];
        proc_state(c->pid, st, sizeof(st));
        log_warn("child_unresponsive", "{s:s,s:i,s:f,s:I,s:s}", "child", c->spec.id, "child_pid",
                 (int)c->pid, "silent_ms", silent, "watchdog_ms", (json_int_t)c->spec.watchdog_ms,
                 "process_state", st);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_child *c = w->data;
    if (!c->pid)
        return;
    if (c->state == CS_RUNNING) {
        if (c->spec.watchdog_ms > 0)
            watchdog_check(c->sup, c);
        return;
    }
    if (c->state == CS_STARTING) {
        snprintf(c->fail_reason, sizeof(c->fail_reason), "did not report ready within %ld ms",
                 c->spec.start_timeout_ms);
        log_error("child_start_timeout", "{s:s,s:i,s:I}", "child", c->spec.id, "child_pid",
                  (int)c->pid, "timeout_ms", (json_int_t)c->spec.start_timeout_ms);
    } else if (c->state == CS_STOPPING) {
        log_warn("child_shutdown_timeout", "{s:s,s:i,s:I,s:s}", "child", c->spec.id, "child_pid",
                 (int)c->pid, "timeout_ms", (json_int_t)c->spec.shutdown_ms, "action", "SIGKILL");
    }
    kill(c->pid, SIGKILL);
}

static int child_start(struct sup *s, struct sup_child *c)
{
    char *argv[SUP_MAX_ARGS + 24];
    char idx[16], wd[24];
    int n = 0;
    if (c->spec.is_exec) {
        for (int i = 0; i < c->spec.argc; i++)
            argv[n++] = c->spec.argv[i];
    } else {
        argv[n++] = (char *)spawn_self_exe();
        argv[n++] = "--role";
        argv[n++] = c->spec.role;
        argv[n++] = "--id";
        argv[n++] = c->spec.type == SUP_SUPERVISOR ? c->spec.section : c->spec.id;
        argv[n++] = "--sup";
        argv[n++] = s->spec->name;
        argv[n++] = "--ready-fd";
        argv[n++] = "3";
        if (c->spec.watchdog_ms > 0 && !c->spec.ready_by_exec) {
            snprintf(wd, sizeof(wd), "%ld", c->spec.watchdog_ms);
            argv[n++] = "--watchdog";
            argv[n++] = wd;
        }
        if (c->spec.index >= 0) {
            snprintf(idx, sizeof(idx), "%d", c->spec.index);
            argv[n++] = "--index";
            argv[n++] = idx;
        }
        if (s->o->config_path) {
            argv[n++] = "--config";
            argv[n++] = (char *)s->o->config_path;
        }
        for (int i = 0; i < c->spec.argc; i++)
            argv[n++] = c->spec.argv[i];
    }
    argv[n] = NULL;

    struct spawn_result r;
    c->fail_reason[0] = '\0';
    c->exec_ok = false;
    /* The node's listening sockets go to listeners, and to supervisors that may start one. */
    int keep[PROC_LISTEN_FD_MAX], nkeep = 0;
    if (!c->spec.is_exec && (c->spec.type == SUP_SUPERVISOR || strcmp(c->spec.role, "listener") == 0))
        nkeep = proc_listen_fds(keep);
    int rc = spawn_child(argv, !c->spec.ready_by_exec, keep, nkeep, &r);
    if (rc != 0) {
        snprintf(c->fail_reason, sizeof(c->fail_reason), "fork failed: %s", strerror(-rc));
        log_error("child_start_failed", "{s:s,s:s}", "child", c->spec.id, "reason", c->fail_reason);
        return -1;
    }
    c->pid = r.pid;
    c->state = CS_STARTING;
    c->started_ms = cmcp_now_ms();
    c->has_status = false;
    c->hung = c->silent = false;
    s->starts_total++;
    ev_child_init(&c->child_w, child_exit_cb, r.pid, 0);
    c->child_w.data = c;
    ev_child_start(s->loop, &c->child_w);
    c->exec_fd = r.exec_fd;
    ev_io_init(&c->exec_w, exec_cb, r.exec_fd, EV_READ);
    c->exec_w.data = c;
    ev_io_start(s->loop, &c->exec_w);
    if (r.ready_fd >= 0) {
        c->ready_fd = r.ready_fd;
        ev_io_init(&c->ready_w, ready_cb, r.ready_fd, EV_READ);
        c->ready_w.data = c;
        ev_io_start(s->loop, &c->ready_w);
    }
    ev_timer_init(&c->timer, timer_cb, 0, 0);
    c->timer.data = c;
    if (c->spec.start_timeout_ms >= 0) {
        timer_arm(s->loop, &c->timer, c->spec.start_timeout_ms);
    }
    log_info("child_started", "{s:s,s:i,s:s,s:s,s:f}", "child", c->spec.id, "child_pid",
             (int)r.pid, "child_role", c->spec.is_exec ? c->spec.argv[0] : c->spec.role, "type",
             c->spec.type == SUP_SUPERVISOR ? "supervisor" : "worker", "t_mono", c->started_ms);
    return 0;
}

static void begin_stop(struct sup *s, struct sup_child *c)
{
    if (c->state == CS_STOPPING || !c->pid)
        return;
    c->state = CS_STOPPING;
    close_watch(s, &c->ready_w, &c->ready_fd);
    ev_timer_stop(s->loop, &c->timer);
    if (c->spec.shutdown_ms == SUP_SHUTDOWN_BRUTAL) {
        log_info("child_stopping", "{s:s,s:i,s:s}", "child", c->spec.id, "child_pid", (int)c->pid,
                 "method", "brutal_kill");
        kill(c->pid, SIGKILL);
        return;
    }
    log_info("child_stopping", "{s:s,s:i,s:s,s:I}", "child", c->spec.id, "child_pid", (int)c->pid,
             "method", "SIGTERM", "timeout_ms", (json_int_t)c->spec.shutdown_ms);
    kill(c->pid, SIGTERM);
    if (c->spec.shutdown_ms >= 0) {
        timer_arm(s->loop, &c->timer, c->spec.shutdown_ms);
    }
}

/* Is c named by a step of the job that has not run yet (or runs now)? */
static bool job_names(struct sup *s, struct sup_child *c)
{
    if (!s->busy)
        return false;
    for (int i = s->cur; i < s->nsteps; i++)
        if (s->steps[i].c == c || s->steps[i].op == OP_STOPALL)
            return true;
    return false;
}

static bool all_significant_down(struct sup *s)
{
    for (int i = 0; i < s->nkids; i++)
        if (s->kids[i]->spec.significant && s->kids[i]->pid)
            return false;
    return true;
}

/* A running child died on its own and nothing is in progress: OTP's restart/2. */
static void handle_death(struct sup *s, struct sup_child *c)
{
    double now = cmcp_now_ms();
    int st = c->last_status;
    if (!sup_should_restart(c->spec.restart, st)) {
        bool sig = c->spec.significant;
        log_info("child_not_restarted", "{s:s,s:s}", "child", c->spec.id, "restart",
                 sup_restart_name(c->spec.restart));
        if (c->spec.restart == SUP_TEMPORARY || s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE)
            sup_child_remove(s, c);
        if (sig && (s->spec->auto_shutdown == SUP_AUTO_ANY ||
                    (s->spec->auto_shutdown == SUP_AUTO_ALL && all_significant_down(s))))
            sup_shutdown(s, s->o->is_root ? CMCP_EXIT_OK : CMCP_EXIT_SHUTDOWN,
                         "auto_shutdown: significant child ended");
        return;
    }
    if (sup_intensity_add(&s->intensity, now)) {
        s->intensity_exceeded_total++;
        log_error("restart_intensity_exceeded", "{s:s,s:i,s:i,s:s}", "child", c->spec.id,
                  "intensity", s->spec->intensity, "period_s", s->spec->period_s, "action",
                  "shutdown");
        sup_shutdown(s, CMCP_EXIT_SHUTDOWN, "reached_max_restart_intensity");
        return;
    }
    c->restarts++;
    s->restarts_total++;
    sup_ctl_count_restart(s, c);
    long delay = 0;
    if (s->spec->backoff_min_ms > 0) {
        if (now - c->started_ms >= (double)s->spec->backoff_stable_ms)
            c->consecutive = 0;
        delay = sup_backoff_delay(s->spec->backoff_min_ms, s->spec->backoff_max_ms, c->consecutive);
        c->consecutive++;
    }
    enum sup_strategy strat = s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE ? SUP_ONE_FOR_ONE
                                                                          : s->spec->strategy;
    log_notice("child_restarting", "{s:s,s:s,s:i,s:I}", "child", c->spec.id, "strategy",
               sup_strategy_name(strat), "restarts", c->restarts, "delay_ms", (json_int_t)delay);

    struct sup_plan_child pk[SUP_MAX_CHILDREN];
    int dead = 0;
    for (int i = 0; i < s->nkids; i++) {
        pk[i].running = s->kids[i]->pid != 0;
        pk[i].temporary = s->kids[i]->spec.restart == SUP_TEMPORARY;
        if (s->kids[i] == c)
            dead = i;
    }
    static struct sup_plan plan;
    sup_plan_restart(strat, pk, s->nkids, dead, &plan);
    sup_job_begin(s, JOB_RESTART);
    /* The group goes down at once, as in OTP; only the start waits out the backoff. */
    for (int i = 0; i < plan.nstop; i++)
        sup_job_add(s, OP_STOP, s->kids[plan.stop[i]], 0);
    struct sup_child *drops[SUP_MAX_CHILDREN], *starts[SUP_MAX_CHILDREN];
    for (int i = 0; i < plan.ndrop; i++)
        drops[i] = s->kids[plan.drop[i]];
    for (int i = 0; i < plan.nstart; i++)
        starts[i] = s->kids[plan.start[i]];
    for (int i = 0; i < plan.ndrop; i++)
        sup_job_add(s, OP_DROP, drops[i], 0);
    if (delay > 0)
        sup_job_add(s, OP_DELAY, NULL, delay);
    for (int i = 0; i < plan.nstart; i++)
        sup_job_add(s, OP_START, starts[i], 0);
    sup_job_run(s);
}

static void child_exit_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct sup_child *c = w->data;
    struct sup *s = c->sup;
    ev_child_stop(loop, w);
    double now = cmcp_now_ms();
    enum child_state prev = c->state;
    pid_t pid = c->pid;
    /* An exec failure may still sit in the pipe: read it before closing. */
    if (c->exec_fd >= 0)
        exec_cb(loop, &c->exec_w, 0);
    close_watch(s, &c->exec_w, &c->exec_fd);
    close_watch(s, &c->ready_w, &c->ready_fd);
    ev_timer_stop(loop, &c->timer);
    c->pid = 0;
    c->state = CS_DOWN;
    c->last_status = w->rstatus;
    c->has_status = true;
    char desc[96];
    spawn_describe_status(w->rstatus, desc, sizeof(desc));
    if (prev == CS_STARTING && !c->fail_reason[0])
        snprintf(c->fail_reason, sizeof(c->fail_reason), "exited before ready: %s", desc);
    if (prev == CS_STOPPING)
        log_info("child_exited", "{s:s,s:i,s:s,s:b,s:f}", "child", c->spec.id, "child_pid",
                 (int)pid, "status", desc, "expected", 1, "t_mono", now);
    else
        log_warn("child_exited", "{s:s,s:i,s:s,s:b,s:f,s:f,s:s}", "child", c->spec.id,
                 "child_pid", (int)pid, "status", desc, "expected", 0, "uptime_ms",
                 now - c->started_ms, "t_mono", now, "cause",
                 c->hung ? "watchdog: it stopped answering" : "crashed or exited");

    if (prev == CS_STOPPING || prev == CS_STARTING) {
        if (s->busy && s->cur < s->nsteps) {
            struct step *st = &s->steps[s->cur];
            if (st->op == OP_START && st->c == c)
                step_failed(s, c);
            else if (st->op == OP_STOP && st->c == c)
                step_done(s);
            else if (st->op == OP_STOPALL) {
                bool any = false;
                for (int i = 0; i < s->nkids; i++)
                    any |= s->kids[i]->pid != 0;
                if (!any)
                    step_done(s);
            }
        }
        return;
    }
    /* It was running and died by itself. */
    if (s->stopping || job_names(s, c))
        return; /* the job in progress deals with it */
    if (s->busy) {
        /* At most once: an entry is handled by looking at the child as it is then. */
        for (int i = 0; i < s->ndeaths; i++)
            if (s->deaths[i] == c)
                return;
        if (s->ndeaths < SUP_MAX_CHILDREN)
            s->deaths[s->ndeaths++] = c;
        return;
    }
    handle_death(s, c);
}

void sup_job_begin(struct sup *s, enum job_kind kind)
{
    s->busy = true;
    s->job = kind;
    s->nsteps = 0;
    s->cur = 0;
    s->delay_retry = false;
}

void sup_job_add(struct sup *s, enum step_op op, struct sup_child *c, long ms)
{
    s->steps[s->nsteps++] = (struct step){op, c, ms};
}

static void delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup *s = w->data;
    if (s->delay_retry) {
        s->delay_retry = false;
        sup_job_run(s);
    } else {
        step_done(s);
    }
}

void sup_job_run(struct sup *s)
{
    while (s->busy && s->cur < s->nsteps) {
        struct step *st = &s->steps[s->cur];
        struct sup_child *c = st->c;
        switch (st->op) {
        case OP_START:
            if (c->pid) {
                s->cur++;
                continue;
            }
            if (child_start(s, c) != 0) {
                step_failed(s, c);
                return;
            }
            if (c->state == CS_RUNNING) { /* cannot happen before the loop runs, but be exact */
                s->cur++;
                continue;
            }
            return;
        case OP_STOP:
            if (!c->pid) {
                s->cur++;
                continue;
            }
            begin_stop(s, c);
            return;
        case OP_STOPALL: {
            bool any = false;
            for (int i = 0; i < s->nkids; i++)
                if (s->kids[i]->pid) {
                    any = true;
                    begin_stop(s, s->kids[i]);
                }
            if (!any) {
                s->cur++;
                continue;
            }
            return;
        }
        case OP_DROP:
            if (!c->pid)
                sup_child_remove(s, c);
            s->cur++;
            continue;
        case OP_DELAY:
            timer_arm(s->loop, &s->delay_w, st->ms);
            return;
        }
    }
    if (s->busy)
        job_finished(s, true);
}

static void step_done(struct sup *s)
{
    s->cur++;
    sup_job_run(s);
}

static void step_failed(struct sup *s, struct sup_child *c)
{
    double now = cmcp_now_ms();
    switch (s->job) {
    case JOB_INIT: {
        char reason[256];
        snprintf(reason, sizeof(reason), "child %s failed to start: %s", c->spec.id,
                 c->fail_reason);
        log_error("start_failed", "{s:s,s:s}", "child", c->spec.id, "reason", c->fail_reason);
        sup_shutdown(s, CMCP_EXIT_START, reason);
        return;
    }
    case JOB_RESTART:
        /* OTP retries a failed restart, and every try counts toward intensity. */
        if (sup_intensity_add(&s->intensity, now)) {
            s->intensity_exceeded_total++;
            log_error("restart_intensity_exceeded", "{s:s,s:i,s:i,s:s,s:s}", "child", c->spec.id,
                      "intensity", s->spec->intensity, "period_s", s->spec->period_s, "reason",
                      c->fail_reason, "action", "shutdown");
            sup_shutdown(s, CMCP_EXIT_SHUTDOWN, "reached_max_restart_intensity");
            return;
        }
        c->restarts++;
        s->restarts_total++;
        sup_ctl_count_restart(s, c);
        long delay = 0;
        if (s->spec->backoff_min_ms > 0)
            delay = sup_backoff_delay(s->spec->backoff_min_ms, s->spec->backoff_max_ms,
                                      c->consecutive++);
        log_warn("restart_failed", "{s:s,s:s,s:I}", "child", c->spec.id, "reason", c->fail_reason,
                 "retry_in_ms", (json_int_t)delay);
        s->delay_retry = true;
        timer_arm(s->loop, &s->delay_w, delay);
        return;
    case JOB_CTL:
        log_error("start_failed", "{s:s,s:s}", "child", c->spec.id, "reason", c->fail_reason);
        job_finished(s, false);
        return;
    case JOB_SHUTDOWN:
        return;
    }
}

static void write_ready(struct sup *s)
{
    if (s->o->ready_fd >= 0) {
        ssize_t w = write(s->o->ready_fd, "\n", 1);
        (void)w;
        close(s->o->ready_fd);
    }
}

static void job_finished(struct sup *s, bool ok)
{
    enum job_kind kind = s->job;
    s->busy = false;
    s->nsteps = s->cur = 0;
    if (kind == JOB_SHUTDOWN) {
        s->finished = true;
        ev_break(s->loop, EVBREAK_ALL);
        return;
    }
    if (kind == JOB_INIT) {
        s->init_done = true;
        if (s->o->is_root) {
            /* In text, the line a person reads; in JSON, one more field of the event. */
            char summary[700];
            sup_root_ready_summary(s->cfg, s->o->role_known, summary, sizeof(summary));
            log_info("node_ready", "{s:s,s:i,s:s}", "strategy",
                     sup_strategy_name(s->spec->strategy), "children", s->nkids, "msg", summary);
            char state[800];
            snprintf(state, sizeof(state), "READY=1\nSTATUS=%s", summary);
            notify_send(state); /* systemd's Type=notify: up once the whole tree is */
        } else {
            log_info("supervisor_ready", "{s:s,s:i}", "strategy",
                     sup_strategy_name(s->spec->strategy), "children", s->nkids);
        }
        write_ready(s);
    }
    if (kind == JOB_CTL)
        sup_ctl_job_done(s, ok, s->ctl_child);
    while (!s->busy && !s->stopping && s->ndeaths > 0) {
        struct sup_child *c = s->deaths[0];
        memmove(s->deaths, s->deaths + 1, (size_t)(--s->ndeaths) * sizeof(s->deaths[0]));
        if (!c->pid)
            handle_death(s, c);
    }
    if (!s->busy && !s->stopping)
        sup_ctl_resume(s);
}

void sup_shutdown(struct sup *s, int exit_code, const char *reason)
{
    if (s->stopping)
        return;
    s->stopping = true;
    s->exit_code = exit_code;
    if (s->o->is_root)
        notify_send("STOPPING=1");
    log_notice("supervisor_shutdown", "{s:s,s:i,s:i}", "reason", reason, "exit_code", exit_code,
               "children", s->nkids);
    ev_timer_stop(s->loop, &s->delay_w);
    if (s->busy && s->job == JOB_CTL)
        sup_ctl_job_done(s, false, NULL);
    sup_ctl_drop_parked(s);
    s->ndeaths = 0;
    sup_job_begin(s, JOB_SHUTDOWN);
    if (s->spec->strategy == SUP_SIMPLE_ONE_FOR_ONE) {
        sup_job_add(s, OP_STOPALL, NULL, 0);
    } else {
        for (int i = s->nkids - 1; i >= 0; i--)
            sup_job_add(s, OP_STOP, s->kids[i], 0);
    }
    sup_job_run(s);
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup *s = w->data;
    if (w->signum == SIGHUP) {
        log_notice("signal_ignored", "{s:s,s:s}", "signal", "SIGHUP", "note",
                   "configuration reload is not supported; restart the node");
        return;
    }
    if (s->stopping) {
        /* A second Ctrl-C: stop waiting for graceful exits. */
        log_warn("shutdown_forced", "{s:i}", "signal", w->signum);
        for (int i = 0; i < s->nkids; i++)
            if (s->kids[i]->pid)
                kill(s->kids[i]->pid, SIGKILL);
        return;
    }
    sup_shutdown(s, CMCP_EXIT_OK, w->signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* The root's loop turns: systemd's watchdog is fed (a hung root is restarted by systemd). */
static void watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    notify_send("WATCHDOG=1");
}

int sup_run(struct cfg *cfg, const struct sup_run_opts *o)
{
    struct sup *s = calloc(1, sizeof(*s));
    s->spec = calloc(1, sizeof(*s->spec));
    s->cfg = cfg;
    s->o = o;
    if (!s->spec || sup_spec_from_cfg(cfg, o->name, s->spec, o->role_known) != 0) {
        log_error("config_error", "{s:s}", "error", cfg->err);
        fprintf(stderr, "cmcpd: configuration error: %s\n", cfg->err);
        return CMCP_EXIT_USAGE;
    }
    s->loop = ev_default_loop(EVFLAG_SIGNALFD);
    sup_intensity_init(&s->intensity, s->spec->intensity, s->spec->period_s);
    if (o->is_root) {
        /* under systemd: readiness and the watchdog are the root's; children never see them */
        long long wd = notify_init();
        ev_timer_init(&s->watchdog_w, watchdog_cb, wd / 2e6, wd / 2e6);
        s->watchdog_w.data = s;
        if (wd > 0)
            ev_timer_start(s->loop, &s->watchdog_w);
    }
    ev_timer_init(&s->delay_w, delay_cb, 0, 0);
    s->delay_w.data = s;
    ev_signal *sw[] = {&s->sigterm_w, &s->sigint_w, &s->sighup_w};
    int signums[] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        ev_signal_init(sw[i], signal_cb, signums[i]);
        sw[i]->data = s;
        ev_signal_start(s->loop, sw[i]);
    }
    for (int i = 0; i < s->spec->nchildren; i++)
        sup_child_add(s, &s->spec->children[i]);
    if (sup_ctl_open(s) != 0)
        return CMCP_EXIT_FAILURE;
    /* Our children's states and restarts for /metrics, /health and /status; log_level orders. */
    stats_init(s->loop, o->run_dir, "supervisor", o->name);
    control_subscribe(s->loop, o->run_dir, NULL);
    log_info("supervisor_starting", "{s:s,s:i,s:i,s:i}", "strategy",
             sup_strategy_name(s->spec->strategy), "intensity", s->spec->intensity, "period_s",
             s->spec->period_s, "children", s->nkids);
    sup_job_begin(s, JOB_INIT);
    for (int i = 0; i < s->nkids; i++)
        sup_job_add(s, OP_START, s->kids[i], 0);
    sup_job_run(s);
    sup_ctl_stats(s);
    while (!s->finished) {
        ev_run(s->loop, EVRUN_ONCE);
        sup_ctl_stats(s);
    }
    int code = s->exit_code;
    if (o->is_root)
        ev_timer_stop(s->loop, &s->watchdog_w);
    log_info(o->is_root ? "node_stopped" : "supervisor_stopped", "{s:i}", "exit_code", code);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, code); /* nothing below may hang the stop */
    sup_ctl_close(s);
    control_unsubscribe();
    stats_shutdown();
    while (s->nkids > 0)
        sup_child_remove(s, s->kids[s->nkids - 1]);
    sup_intensity_free(&s->intensity);
    sup_spec_free(s->spec);
    free(s->spec);
    free(s);
    return code;
}
