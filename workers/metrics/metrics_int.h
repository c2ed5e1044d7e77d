/*
 * Inside the metrics role: collects the snapshots every process of the node publishes
 * (ipc/stats.h) and serves them over HTTP: /metrics (Prometheus text),
 * /health, /ready, /status (docs/operations.md).
 *
 * The numbers live with their owners; this process keeps only the latest
 * snapshot of each (role, id), so a restarted metrics worker has everything
 * back within a second (every publisher also publishes as soon as it sees
 * the worker connect). Internal header of metrics.c (collection),
 * render.c (what the endpoints say) and http.c (the server).
 */
#ifndef CMCP_METRICS_INT_H
#define CMCP_METRICS_INT_H

#if !defined(CMCP_LAYER_METRICS)
#error "workers/metrics/metrics_int.h is internal to the metrics role"
#endif

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <uthash.h>

#include "workers/http/http.h"
#include "base/proc.h"
#include "workers/metrics/metrics.h"

/* The latest snapshot of one process. */
struct mproc {
    UT_hash_handle hh;
    char key[100]; /* role '/' id */
    char role[32], id[64];
    int pid;
    double heard; /* ev_now() of the last snapshot */
    json_t *snap;
};

struct metrics_state {
    struct proc_args *a;
    struct ev_loop *loop;
    struct mproc *procs;
    double stale_s;
    const char *node;
};
extern struct metrics_state metrics_g;

/* metrics.c: forget processes that are gone or silent; called before every answer. */
void metrics_prune(void);

/* render.c: the bodies of the endpoints. */
void metrics_render_prometheus(struct http_buf *out);
/* 200 or 503; *body is new. */
int metrics_health(json_t **body);
int metrics_ready(json_t **body);
json_t *metrics_status(void);

/* http.c */
int metrics_http_start(const char *bind_addr, int port);
void metrics_http_stop(void);

#endif
