/* Internal to the supervisor module: the runtime's state, shared by sup.c and ctl.c. */
#ifndef CMCP_SUP_INTERNAL_H
#define CMCP_SUP_INTERNAL_H

#if !defined(CMCP_LAYER_SUPERVISOR)
#error "supervisor/sup_internal.h is internal to the supervisor (../shared/design/layers.md)"
#endif

#include <ev.h>
#include <jansson.h>
#include <nng/nng.h>
#include <stdbool.h>
#include <sys/types.h>

#include "supervisor/plan.h"
#include "supervisor/spec.h"
#include "supervisor/sup.h"

enum child_state { CS_DOWN, CS_STARTING, CS_RUNNING, CS_STOPPING };

struct sup;

struct sup_child {
    struct child_spec spec;
    struct sup *sup;
    pid_t pid;
    enum child_state state;
    bool pending; /* named by a step of the job in progress ("restarting") */
    int ready_fd, exec_fd;
    ev_io ready_w, exec_w;
    ev_timer timer; /* start timeout, then shutdown timeout */
    ev_child child_w;
    double started_ms, ready_ms;
    double beat_ms;   /* the last beat (or ready) of a child with a watchdog */
    double checked_ms; /* when its watchdog last looked */
    bool silent;      /* it missed half its watchdog: /health says so, a warning was logged */
    bool hung;        /* its watchdog killed it: its exit is told as such */
    int restarts;
    int consecutive; /* quick deaths in a row, for backoff */
    int last_status;
    bool has_status;
    bool exec_ok;
    char fail_reason[128];
};

enum step_op { OP_START, OP_STOP, OP_STOPALL, OP_DROP, OP_DELAY };
enum job_kind { JOB_INIT, JOB_RESTART, JOB_CTL, JOB_SHUTDOWN };

struct step {
    enum step_op op;
    struct sup_child *c;
    long ms;
};

struct sup {
    struct ev_loop *loop;
    struct cfg *cfg;
    const struct sup_run_opts *o;
    struct sup_spec *spec;
    struct sup_child *kids[SUP_MAX_CHILDREN];
    int nkids;
    int dyn_seq; /* ids of simple_one_for_one children */
    struct sup_intensity intensity;

    bool busy; /* a job runs */
    enum job_kind job;
    struct step steps[3 * SUP_MAX_CHILDREN + 2];
    int nsteps, cur;
    bool stopping; /* the final shutdown job has begun */
    bool init_done; /* every child of the initial start reported ready (node_ready) */
    bool finished; /* the shutdown job is done: leave the loop */
    bool delay_retry; /* the delay timer retries the current step instead of advancing */
    int exit_code;
    ev_timer delay_w;
    ev_timer watchdog_w; /* the root under systemd with WatchdogSec: WATCHDOG=1 */

    struct sup_child *deaths[SUP_MAX_CHILDREN];
    int ndeaths;

    /* control channel */
    nng_socket ctl;
    bool ctl_open;
    ev_io ctl_w;
    bool ctl_waiting; /* a reply is owed for a deferred request */
    json_t *ctl_parked; /* a request that changes children, read while a job ran: it waits
                           for the job's end, as a message waits in an OTP mailbox */
    int ctl_op;       /* the deferred request's operation (ctl.c) */
    struct sup_child *ctl_child;
    char ctl_addr[512];

    ev_signal sigterm_w, sigint_w, sighup_w;

    /* counters for the metrics worker */
    long starts_total, restarts_total, intensity_exceeded_total;
    unsigned long stats_sig; /* what was last published (ctl.c) */
};

/* sup.c: what the control channel drives */
struct sup_child *sup_find(struct sup *s, const char *id);
struct sup_child *sup_find_pid(struct sup *s, pid_t pid);
struct sup_child *sup_child_add(struct sup *s, const struct child_spec *cs);
void sup_child_remove(struct sup *s, struct sup_child *c);
void sup_job_begin(struct sup *s, enum job_kind kind);
void sup_job_add(struct sup *s, enum step_op op, struct sup_child *c, long ms);
void sup_job_run(struct sup *s);
void sup_shutdown(struct sup *s, int exit_code, const char *reason);
const char *sup_child_state_name(const struct sup_child *c);

/* ctl.c */
int sup_ctl_open(struct sup *s);
void sup_ctl_close(struct sup *s);
/* No job runs any more: handle a parked request, then read requests again. */
void sup_ctl_resume(struct sup *s);
/* The supervisor is shutting down: a parked request gets its "shutting_down" answer. */
void sup_ctl_drop_parked(struct sup *s);
/* Called when a JOB_CTL finishes: completes the deferred reply. */
void sup_ctl_job_done(struct sup *s, bool ok, struct sup_child *c);
/* Publishes the children (states, pids, restarts) for the metrics worker when they changed
 * since the last call: after every loop iteration, so /health sees a restart at once. */
void sup_ctl_stats(struct sup *s);
/* A restart of c happened: cmcp_supervisor_restarts_total{supervisor,child}. */
void sup_ctl_count_restart(struct sup *s, struct sup_child *c);
/* c's watchdog killed it: cmcp_supervisor_watchdog_kills_total{supervisor,child}. */
void sup_ctl_count_watchdog_kill(struct sup *s, struct sup_child *c);

/* The root's one line at ready naming every endpoint the tree serves ("cmcp ready: MCP on
 * http://127.0.0.1:8080/mcp ..."), into buf. */
void sup_root_ready_summary(struct cfg *c, sup_role_known_fn role_known, char *buf, size_t len);

#endif
