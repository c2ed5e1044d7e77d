#include "supervisor/plan.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "base/cmcp.h"

void sup_intensity_init(struct sup_intensity *in, int intensity, int period_s)
{
    memset(in, 0, sizeof(*in));
    in->intensity = intensity < 0 ? 0 : intensity;
    in->period_ms = (double)period_s * 1000.0;
}

void sup_intensity_free(struct sup_intensity *in)
{
    free(in->stamps);
    in->stamps = NULL;
    in->n = in->cap = 0;
}

bool sup_intensity_add(struct sup_intensity *in, double now_ms)
{
    /* Drop restarts older than the period (oldest first), then add this one. */
    int old = 0;
    while (old < in->n && now_ms - in->stamps[old] > in->period_ms)
        old++;
    if (old > 0) {
        memmove(in->stamps, in->stamps + old, (size_t)(in->n - old) * sizeof(in->stamps[0]));
        in->n -= old;
    }
    /* intensity + 1 stamps within the period already decide "exceeded": forget the
     * oldest beyond that, so memory stays bounded whatever the restart rate. */
    int keep = in->intensity + 1;
    if (in->n >= keep) {
        int drop = in->n - keep + 1;
        memmove(in->stamps, in->stamps + drop, (size_t)(in->n - drop) * sizeof(in->stamps[0]));
        in->n -= drop;
    }
    if (in->n == in->cap) {
        int cap = in->cap ? in->cap * 2 : 8;
        if (cap > keep)
            cap = keep;
        double *v = realloc(in->stamps, (size_t)cap * sizeof(*v));
        if (!v) /* out of memory: count this restart as the one too many */
            return true;
        in->stamps = v;
        in->cap = cap;
    }
    in->stamps[in->n++] = now_ms;
    return in->n > in->intensity;
}

bool sup_exit_normal(int st)
{
    return WIFEXITED(st) && (WEXITSTATUS(st) == CMCP_EXIT_OK || WEXITSTATUS(st) == CMCP_EXIT_SHUTDOWN);
}

bool sup_should_restart(enum sup_restart r, int st)
{
    switch (r) {
    case SUP_PERMANENT:
        return true;
    case SUP_TRANSIENT:
        return !sup_exit_normal(st);
    case SUP_TEMPORARY:
        return false;
    }
    return false;
}

void sup_plan_restart(enum sup_strategy s, const struct sup_plan_child *kids, int n, int dead,
                      struct sup_plan *p)
{
    memset(p, 0, sizeof(*p));
    int first = dead, last = dead; /* the affected range, in start order */
    if (s == SUP_ONE_FOR_ALL) {
        first = 0;
        last = n - 1;
    } else if (s == SUP_REST_FOR_ONE) {
        last = n - 1;
    }
    for (int i = last; i >= first; i--) {
        if (i == dead)
            continue;
        if (kids[i].running)
            p->stop[p->nstop++] = i;
        /* Temporary siblings are stopped with the group but never come back. */
        if (kids[i].temporary)
            p->drop[p->ndrop++] = i;
    }
    for (int i = first; i <= last; i++)
        if (i == dead || !kids[i].temporary)
            p->start[p->nstart++] = i;
}

long sup_backoff_delay(long min_ms, long max_ms, int consecutive)
{
    if (min_ms <= 0)
        return 0;
    long d = min_ms;
    for (int i = 0; i < consecutive && d < max_ms; i++)
        d *= 2;
    return d > max_ms ? max_ms : d;
}
