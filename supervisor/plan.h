/*
 * The pure decisions of a supervisor, kept apart from processes so that they
 * can be unit-tested: restart intensity accounting, whether a dead child is
 * restarted, which children each strategy stops and starts, and backoff.
 */
#ifndef CMCP_SUP_PLAN_H
#define CMCP_SUP_PLAN_H

#if !defined(CMCP_LAYER_SUPERVISOR)
#error "supervisor/plan.h is internal to the supervisor (../shared/design/layers.md)"
#endif

#include <stdbool.h>

#include "supervisor/spec.h"

/* Restart timestamps within the period (OTP's `restarts` list). */
struct sup_intensity {
    double *stamps; /* the restarts within the period, oldest first; grown on demand */
    int n, cap;     /* at most intensity + 1 are ever kept: enough to decide */
    int intensity;
    double period_ms;
};

void sup_intensity_init(struct sup_intensity *in, int intensity, int period_s);
void sup_intensity_free(struct sup_intensity *in);
/*
 * Records one restart at now_ms. True when more than `intensity` restarts fall
 * within the last `period` (a restart exactly `period` old still counts, as
 * in OTP). Intensity 0: the first restart already exceeds it.
 */
bool sup_intensity_add(struct sup_intensity *in, double now_ms);

/* An exit is "normal" for OTP when status 0 or the reserved shutdown status, and not a signal. */
bool sup_exit_normal(int wait_status);
/* Does a child of this restart type get restarted after this exit? */
bool sup_should_restart(enum sup_restart r, int wait_status);

struct sup_plan_child {
    bool running;
    bool temporary;
};

struct sup_plan {
    int stop[SUP_MAX_CHILDREN]; /* indices, in the order to stop them (reverse start order) */
    int nstop;
    int start[SUP_MAX_CHILDREN]; /* indices, in the order to start them */
    int nstart;
    int drop[SUP_MAX_CHILDREN]; /* temporary children whose specs are forgotten */
    int ndrop;
};

/* The plan after child `dead` (already down) must be restarted under strategy s. */
void sup_plan_restart(enum sup_strategy s, const struct sup_plan_child *kids, int n, int dead,
                      struct sup_plan *out);

/* Delay before restart number `consecutive` (0-based) of a child: min * 2^k capped at max. */
long sup_backoff_delay(long min_ms, long max_ms, int consecutive);

#endif
