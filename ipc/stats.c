/*
 * A process's metrics and their publication (stats.h). The registry is a
 * hash by "name{labels}"; handles stay valid for the life of the process, so
 * hot paths update a double in place and never look anything up.
 *
 * Publishing is fire-and-forget on an nng pub socket: nothing here waits for
 * the metrics worker, and a worker that is down or restarting costs one
 * dropped message. When the worker (re)connects, the pipe notification makes
 * us publish at once, so a restarted worker has every process's numbers
 * within milliseconds instead of a second; ipc_keep (ipc.h) makes sure the
 * dial to a restarted worker is really made again.
 */
#define _GNU_SOURCE
#include "ipc/stats.h"

#include <dirent.h>
#include <math.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "base/cmcp.h"
#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "base/log.h"

#define STATS_INTERVAL 1.0 /* seconds between snapshots */

const double stats_bucket_bounds[STATS_BUCKETS] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                   0.05,   0.1,    0.5,   1.0,    10.0,  INFINITY};

struct entry {
    UT_hash_handle hh;
    char *key; /* name '{' labels '}' */
    char *name, *labels;
    struct stats_metric m;
};

static struct {
    struct entry *all;
    struct ev_loop *loop;
    nng_socket pub;
    bool open;
    ev_timer tick;
    struct ipc_keep keep; /* the dial to the metrics worker */
    char role[32], id[64];
    double started_ms;
    double started_wall; /* seconds since the epoch when it started (process_start_time_seconds) */
    unsigned long seq;
    json_t *info;
} S;

/* Returned when a name is reused with another kind or memory runs out: callers never get NULL. */
static struct stats_metric dummy;

static const char *kind_name(enum stat_kind k)
{
    return k == STAT_COUNTER ? "counter" : k == STAT_GAUGE ? "gauge" : "histogram";
}

static struct stats_metric *find_or_add(const char *name, const char *labels, enum stat_kind kind)
{
    labels = labels ? labels : "";
    size_t kl = strlen(name) + strlen(labels) + 3;
    char *key = malloc(kl);
    if (!key)
        return &dummy;
    snprintf(key, kl, "%s{%s}", name, labels);
    struct entry *e = NULL;
    HASH_FIND_STR(S.all, key, e);
    if (e) {
        free(key);
        if (e->m.kind != kind) {
            log_warn("stats_kind_mismatch", "{s:s,s:s,s:s}", "metric", name, "registered_as",
                     kind_name(e->m.kind), "requested_as", kind_name(kind));
            return &dummy;
        }
        return &e->m;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        free(key);
        return &dummy;
    }
    e->key = key;
    e->name = strdup(name);
    e->labels = strdup(labels);
    if (!e->name || !e->labels) {
        free(e->name);
        free(e->labels);
        free(e->key);
        free(e);
        return &dummy;
    }
    e->m.kind = kind;
    HASH_ADD_KEYPTR(hh, S.all, e->key, strlen(e->key), e);
    return &e->m;
}

struct stats_metric *stats_counter(const char *name, const char *labels)
{
    return find_or_add(name, labels, STAT_COUNTER);
}

struct stats_metric *stats_gauge(const char *name, const char *labels)
{
    return find_or_add(name, labels, STAT_GAUGE);
}

struct stats_metric *stats_histogram(const char *name, const char *labels)
{
    return find_or_add(name, labels, STAT_HISTOGRAM);
}

void stats_observe(struct stats_metric *h, double seconds)
{
    if (h->kind != STAT_HISTOGRAM || isnan(seconds))
        return;
    int i = 0;
    while (i < STATS_BUCKETS - 1 && seconds > stats_bucket_bounds[i])
        i++;
    h->buckets[i]++;
    h->sum += seconds;
    h->count++;
}

void stats_set_info(json_t *info)
{
    json_decref(S.info);
    S.info = info;
}

/* Resident set size from /proc/self/statm (pages), in bytes; 0 if unreadable. */
static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, resident = 0;
    if (!f)
        return 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

/* Descriptors this process has open (/proc/self/fd), or -1. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the one opendir holds */
}

json_t *stats_snapshot(void)
{
    json_t *arr = json_array();
    for (struct entry *e = S.all; e; e = e->hh.next) {
        json_t *o = json_pack("{s:s,s:s,s:s}", "name", e->name, "labels", e->labels, "kind",
                              kind_name(e->m.kind));
        if (!o)
            continue;
        if (e->m.kind == STAT_HISTOGRAM) {
            json_t *b = json_array();
            for (int i = 0; i < STATS_BUCKETS; i++)
                json_array_append_new(b, json_integer((json_int_t)e->m.buckets[i]));
            json_object_set_new(o, "buckets", b);
            json_object_set_new(o, "sum", json_real(e->m.sum));
            json_object_set_new(o, "count", json_integer((json_int_t)e->m.count));
        } else {
            json_object_set_new(o, "value", json_real(e->m.value));
        }
        json_array_append_new(arr, o);
    }
    struct rusage ru;
    double cpu = getrusage(RUSAGE_SELF, &ru) == 0
                     ? (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6
                     : 0;
    json_t *snap = json_pack("{s:s,s:s,s:i,s:f,s:f,s:I,s:o,s:f,s:i,s:f}", "role", S.role, "id",
                             S.id, "pid", (int)getpid(), "rss", rss_bytes(), "uptime_s",
                             S.started_ms > 0 ? (cmcp_now_ms() - S.started_ms) / 1000.0 : 0.0,
                             "seq", (json_int_t)S.seq, "metrics", arr, "cpu_s", cpu, "fds",
                             open_fds(), "start_time", S.started_wall);
    if (snap && S.info)
        json_object_set(snap, "info", S.info);
    return snap;
}

void stats_publish_now(void)
{
    if (!S.open)
        return;
    S.seq++;
    json_t *snap = stats_snapshot();
    char *text = snap ? json_dumps(snap, JSON_COMPACT) : NULL;
    json_decref(snap);
    if (!text)
        return;
    /* pub never blocks; with no subscriber connected the message is simply dropped. */
    int rv = nng_send(S.pub, text, strlen(text), NNG_FLAG_NONBLOCK);
    (void)rv;
    free(text);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    stats_publish_now();
}

/* On the loop: the metrics worker has (re)connected. */
static void connected(void *arg)
{
    (void)arg;
    stats_publish_now();
}

void stats_init(struct ev_loop *loop, const char *run_dir, const char *role, const char *id)
{
    if (S.open)
        return;
    snprintf(S.role, sizeof(S.role), "%s", role ? role : "?");
    snprintf(S.id, sizeof(S.id), "%s", id ? id : "?");
    S.started_ms = cmcp_now_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    S.started_wall = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    char addr[512];
    ipc_addr_stats(addr, sizeof(addr), run_dir);
    int rv = nng_pub0_open(&S.pub);
    if (rv != 0) {
        log_warn("stats_disabled", "{s:s,s:s}", "error", nng_strerror(rv), "effect",
                 "this process's metrics will not reach the metrics worker");
        return;
    }
    ipc_socket_tune(S.pub);
    S.loop = loop;
    /* The metrics worker starts after most processes; the dial keeps trying. */
    rv = ipc_keep_dial(&S.keep, loop, S.pub, addr, connected, NULL);
    if (rv != 0)
        log_warn("stats_dial_failed", "{s:s,s:s}", "address", addr, "error", nng_strerror(rv));
    S.open = true;
    ev_timer_init(&S.tick, tick_cb, STATS_INTERVAL, STATS_INTERVAL);
    ev_timer_start(loop, &S.tick);
    /* The timer must not keep a loop alive that would otherwise end. */
    ev_unref(loop);
}

void stats_shutdown(void)
{
    if (!S.open)
        return;
    S.open = false;
    ev_ref(S.loop);
    ev_timer_stop(S.loop, &S.tick);
    ipc_keep_stop(&S.keep);
    nng_close(S.pub);
    S.loop = NULL;
    /* The registry stays: code may still hold handles into it until the process exits. */
    json_decref(S.info);
    S.info = NULL;
}
