/*
 * A latency histogram in the manner of HdrHistogram (Debian packages no C
 * HdrHistogram): log-linear buckets, 2048 linear sub-buckets per power of
 * two, so every recorded value is kept to within 1/1024 (three significant
 * decimal digits) from 1 ns up to 2^41 ns (about 36 minutes). Fixed size
 * (256 KiB), no allocation while recording, histograms of several threads
 * add up exactly.
 */
#ifndef CMCP_BENCH_HIST_H
#define CMCP_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 11
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_HALF (HIST_SUB / 2)
#define HIST_SHIFTS 31
#define HIST_LEN (HIST_SUB + HIST_SHIFTS * HIST_HALF)

struct hist {
    uint64_t count;
    uint64_t min, max; /* exact */
    double sum;
    uint64_t b[HIST_LEN];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t v);
void hist_add(struct hist *dst, const struct hist *src);
/* The value below which pct percent of the records lie (the upper bound of
 * that record's bucket, never above the exact max); 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double pct);
double hist_mean(const struct hist *h);

#endif
