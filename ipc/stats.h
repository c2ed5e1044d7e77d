/*
 * Counters, gauges and histograms of one process, published for the metrics
 * worker. They live with their owner (a restarted metrics worker loses
 * nothing): every process keeps its own in memory and publishes a snapshot of
 * all of them about once a second, and at once when asked, on an nng pub
 * socket dialled to ipc://RUN/metrics.sock (the metrics worker's sub). A
 * dropped snapshot costs nothing: the next one carries the same totals.
 *
 * Hot paths take a handle once and update it directly:
 *   static struct stats_metric *req;  req = stats_counter("cmcp_requests_total",
 *                                 "method=\"tools/call\",transport=\"http\"");
 *   req->value += 1;
 */
#ifndef CMCP_STATS_H
#define CMCP_STATS_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>

enum stat_kind { STAT_COUNTER, STAT_GAUGE, STAT_HISTOGRAM };

#define STATS_BUCKETS 12 /* request durations: 100 us .. 10 s, then +Inf */

struct stats_metric {
    enum stat_kind kind;
    double value;                        /* counter or gauge */
    unsigned long buckets[STATS_BUCKETS]; /* histogram: counts per upper bound (not cumulative) */
    double sum;
    unsigned long count;
};

/* Upper bounds of the histogram buckets, in seconds (the last is +Inf). */
extern const double stats_bucket_bounds[STATS_BUCKETS];

/* Starts publishing (a timer on loop). role/id name the process in every snapshot. */
void stats_init(struct ev_loop *loop, const char *run_dir, const char *role, const char *id);
void stats_shutdown(void);

/* Finds or creates a metric; labels is Prometheus label text without braces, or "". */
struct stats_metric *stats_counter(const char *name, const char *labels);
struct stats_metric *stats_gauge(const char *name, const char *labels);
struct stats_metric *stats_histogram(const char *name, const char *labels);
void stats_observe(struct stats_metric *h, double seconds);

/* Publishes now (e.g. right after a state change /health must see at once). */
void stats_publish_now(void);

/*
 * Structured state that is not a number, sent as "info" in every snapshot
 * (supervisors: their children with pids and states, for /status and
 * /health). Steals the reference; NULL clears it.
 */
void stats_set_info(json_t *info);

/* The snapshot as it would be published now (new reference): for tests and for the metrics
 * worker's own numbers. */
json_t *stats_snapshot(void);


#endif
