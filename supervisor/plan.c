#include "plan.h"

#include <string.h>
#include <sys/wait.h>

#include "cmcp.h"

void sup_intensity_init(struct sup_intensity *in, int intensity, int period_s)
{
    memset(in, 0, sizeof(*in));
    in->intensity = intensity;
    in->period_ms = (double)period_s * 1000.0;
}

bool sup_intensity_add(struct sup_intensity *in, double now_ms)
{
    /* Drop restarts older than the period, then add this one. */
    int keep = 0;
    for (int i = 0; i < in->n; i++)
        if (now_ms - in->stamps[i] <= in->period_ms)
            in->stamps[keep++] = in->stamps[i];
    in->n = keep;
    if (in->n == (int)CMCP_ARRAY_LEN(in->stamps)) {
        /* More than 64 restarts in the window is beyond any sane intensity:
         * forget the oldest so the count stays a lower bound. */
        memmove(in->stamps, in->stamps + 1, sizeof(in->stamps) - sizeof(in->stamps[0]));
        in->n--;
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
