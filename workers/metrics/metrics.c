/*
 * Role `metrics`, collection side: an nng sub socket listening on
 * ipc://RUN/metrics.sock receives every process's snapshots; the latest per
 * (role, id) is kept until the process is gone (its pid no longer alive) or
 * silent for [metrics] stale_ms.
 */
#define _GNU_SOURCE
#include "workers/metrics/metrics_int.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "ipc/control.h"
#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/cview.h"
#include "ipc/stats.h"

struct metrics_state metrics_g;

static nng_socket sub;
static ev_io sub_w;
static ev_timer prune_w;
static ev_signal sigterm_w, sigint_w;

/* A pid that is gone, or a zombie waiting for its supervisor, no longer counts. */
static bool pid_alive(int pid)
{
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH))
        return false;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return true; /* no /proc: trust kill() */
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && rp[2] == 'Z');
}

static void proc_drop(struct mproc *p, const char *why)
{
    log_debug("metrics_process_dropped", "{s:s,s:s,s:i,s:s}", "process_role", p->role,
              "process_id", p->id, "process_pid", p->pid, "reason", why);
    HASH_DEL(metrics_g.procs, p);
    json_decref(p->snap);
    free(p);
}

void metrics_prune(void)
{
    double now = ev_now(metrics_g.loop);
    struct mproc *p, *tmp;
    HASH_ITER(hh, metrics_g.procs, p, tmp)
    {
        if (!pid_alive(p->pid))
            proc_drop(p, "process gone");
        else if (now - p->heard > metrics_g.stale_s)
            proc_drop(p, "not heard from");
    }
}

static void take_snapshot(json_t *snap)
{
    const char *role = json_string_value(json_object_get(snap, "role"));
    const char *id = json_string_value(json_object_get(snap, "id"));
    json_t *pid = json_object_get(snap, "pid");
    if (!role || !id || !json_is_integer(pid) || !json_is_array(json_object_get(snap, "metrics")))
        return;
    char key[sizeof(((struct mproc *)0)->key)];
    snprintf(key, sizeof(key), "%s/%s", role, id);
    struct mproc *p = NULL;
    HASH_FIND_STR(metrics_g.procs, key, p);
    if (!p) {
        p = calloc(1, sizeof(*p));
        if (!p)
            return;
        snprintf(p->key, sizeof(p->key), "%s", key);
        snprintf(p->role, sizeof(p->role), "%s", role);
        snprintf(p->id, sizeof(p->id), "%s", id);
        HASH_ADD_STR(metrics_g.procs, key, p);
    }
    /* A restarted process (new pid) replaces its predecessor's numbers wholesale. */
    p->pid = (int)json_integer_value(pid);
    p->heard = ev_now(metrics_g.loop);
    json_decref(p->snap);
    p->snap = json_incref(snap);
}

static void sub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    for (int n = 0; n < 256; n++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(sub, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            return;
        json_t *snap = json_loadb(buf, len, 0, NULL);
        nng_free(buf, len);
        if (json_is_object(snap))
            take_snapshot(snap);
        json_decref(snap);
    }
}

static void prune_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    metrics_prune();
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

int metrics_main(struct proc_args *a)
{
    memset(&metrics_g, 0, sizeof(metrics_g));
    metrics_g.a = a;
    metrics_g.node = a->node;
    metrics_g.stale_s = (double)cfg_get_long(&a->cfg, "metrics", "stale_ms", 3000) / 1000.0;
    metrics_g.loop = ev_default_loop(EVFLAG_SIGNALFD);
    char addr[512];
    ipc_addr_stats(addr, sizeof(addr), a->run_dir);
    int rv, fd;
    /* Subscribe before listening: sub0 drops what arrives before a subscription, and every
     * publisher sends a snapshot the moment it connects. */
    if ((rv = nng_sub0_open(&sub)) != 0 ||
        (rv = nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "", 0)) != 0 ||
        (rv = nng_listen(sub, addr, NULL, 0)) != 0 ||
        (rv = nng_socket_get_int(sub, NNG_OPT_RECVFD, &fd)) != 0) {
        log_error("metrics_start_failed", "{s:s,s:s,s:s}", "address", addr, "error",
                  nng_strerror(rv), "hint",
                  "another node may be using this run directory; give each node its own");
        fprintf(stderr, "cmcpd: metrics: cannot listen on %s: %s\n", addr, nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    /* Every process sends about one snapshot a second; room for bursts of publish_now. */
    nng_socket_set_int(sub, NNG_OPT_RECVBUF, 1024);
    ev_io_init(&sub_w, sub_cb, fd, EV_READ);
    ev_io_start(metrics_g.loop, &sub_w);
    ev_timer_init(&prune_w, prune_cb, 1.0, 1.0);
    ev_timer_start(metrics_g.loop, &prune_w);

    const char *bind_addr = cfg_get(&a->cfg, "metrics", "bind", "127.0.0.1");
    long port = cfg_get_long(&a->cfg, "metrics", "port", 9090);
    /* A port we cannot have yet is retried in the background (http.c): the node's
     * work never waits on its metrics. */
    if (port > 0)
        metrics_http_start(bind_addr, (int)port);

    stats_init(metrics_g.loop, a->run_dir, "metrics", a->id);
    /* counters are there at 0 from the start, for every path label */
    static const char *const paths[] = {"/metrics", "/health", "/ready", "/status", "other"};
    for (size_t i = 0; i < CMCP_ARRAY_LEN(paths); i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "path=\"%s\"", paths[i]);
        stats_counter("cmcp_metrics_scrapes_total", labels);
    }
    control_subscribe(metrics_g.loop, a->run_dir, NULL);
    /* /health says when this node is fenced, judged on this process's own clock from the
     * lease the shards also hold: a hung cluster process cannot leave it saying "ok". */
    cview_subscribe(metrics_g.loop, a->run_dir, NULL);
    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(metrics_g.loop, &sigterm_w);
    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_start(metrics_g.loop, &sigint_w);
    log_info("metrics_ready", "{s:s,s:s,s:I}", "collect", addr, "http_bind", bind_addr,
             "http_port", (json_int_t)port);
    proc_notify_ready(a);
    ev_run(metrics_g.loop, 0);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */

    metrics_http_stop();
    stats_shutdown();
    control_unsubscribe();
    cview_unsubscribe();
    nng_close(sub);
    unlink(addr + strlen("ipc://"));
    struct mproc *p, *tmp;
    HASH_ITER(hh, metrics_g.procs, p, tmp)
    {
        HASH_DEL(metrics_g.procs, p);
        json_decref(p->snap);
        free(p);
    }
    log_info("metrics_stopped", NULL);
    return 0;
}
