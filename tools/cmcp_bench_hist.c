/* HdrHistogram-style latency histogram: see cmcp_bench_hist.h. */
#include "tools/cmcp_bench_hist.h"

#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - (HIST_SUB_BITS - 1); /* v >> shift lies in [HALF, SUB) */
    if (shift > HIST_SHIFTS)
        return HIST_LEN - 1;
    return HIST_SUB + (shift - 1) * HIST_HALF + (unsigned)((v >> shift) - HIST_HALF);
}

static uint64_t hist_upper(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned k = idx - HIST_SUB;
    unsigned shift = k / HIST_HALF + 1;
    uint64_t sub = k % HIST_HALF + HIST_HALF;
    return ((sub + 1) << shift) - 1;
}

void hist_record(struct hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_add(struct hist *dst, const struct hist *src)
{
    if (!src->count)
        return;
    for (unsigned i = 0; i < HIST_LEN; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_percentile(const struct hist *h, double pct)
{
    if (!h->count)
        return 0;
    if (pct >= 100.0)
        return h->max;
    uint64_t rank = (uint64_t)(pct / 100.0 * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_LEN; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

double hist_mean(const struct hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}
