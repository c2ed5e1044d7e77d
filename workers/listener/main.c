/*
 * The listener role's start: its settings, the shard links, then every
 * transport's sockets; it runs until SIGTERM.
 */
#define _GNU_SOURCE
#include "workers/listener/listener_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/control.h"
#include "ipc/cview.h"
#include "ipc/dlink.h"
#include "ipc/stats.h"

struct listener_state listener_g;

static const struct transport *const transports[] = {
    &listener_http_transport,
    &listener_line_transport,
};

int listener_adopt(const char *protocol, int fd, const char *first, size_t first_len,
                   const char *early, size_t early_len, const struct oauth_grant *grant)
{
    for (size_t i = 0; i < CMCP_ARRAY_LEN(transports); i++)
        if (transports[i]->adopts && strcmp(transports[i]->adopts, protocol) == 0)
            return transports[i]->adopt(fd, first, first_len, early, early_len, grant);
    close(fd);
    return -1;
}

int listener_listen(struct sock_acceptor *a, const char *bind_addr, int port, const char *what,
                    void (*on_fd)(struct sock_acceptor *a, int fd))
{
    char err[300];
    /* The root bound the port once for every listener (base/proc.h): one accept queue that
     * outlives any listener. Without it (a tree whose root did not), bind here, sharing the
     * port with the other listeners of the node (SO_REUSEPORT). */
    int fd = proc_listen_fd(what);
    if (fd >= 0) {
        sock_acceptor_start(a, listener_g.loop, fd, 64, on_fd, NULL);
        return 0;
    }
    fd = sock_tcp_listen(bind_addr, port, true, 4096, err, sizeof(err));
    if (fd < 0) {
        log_error("listen_failed", "{s:s,s:s,s:i,s:s}", "transport", what, "bind", bind_addr,
                  "port", port, "error", err);
        proc_start_error("cannot serve MCP over %s on %s:%d: %s. Is another program using the "
                         "port? (`ss -ltnp 'sport = :%d'` shows it.) Stop it, or give cmcp "
                         "another port: [listener] %s_port, or CMCP_LISTENER_%s_PORT",
                         strcmp(what, "http") == 0 ? "HTTP" : "TCP", bind_addr, port, err, port,
                         what, strcmp(what, "http") == 0 ? "HTTP" : "TCP");
        return -1;
    }
    sock_acceptor_start(a, listener_g.loop, fd, 64, on_fd, NULL);
    return 0;
}

static ev_signal sigterm_w, sigint_w;

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/*
 * Counters (and the connection gauges) are there at 0 from the start, for every label
 * value this listener can produce, not only after their first event: rate() and alerts
 * see a series from its first scrape. Request durations are histograms by method and
 * appear with a method's first request.
 */
static void zero_series(struct cfg *c)
{
    stats_counter("cmcp_shard_link_drops_total", "");
    stats_counter("cmcp_forwarded_requests_total", "");
    stats_gauge("cmcp_shard_links_up", "");
    const char *tr[5];
    int n = wire_transports(cfg_get_long(c, "listener", "http_port", 8080),
                            cfg_get_long(c, "listener", "tcp_port", 8081),
                            listener_g.index == 0 && getenv("CMCP_STDIO"), tr);
    for (int i = 0; i < n; i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "transport=\"%s\"", tr[i]);
        stats_counter("cmcp_transport_messages_received_total", labels);
        stats_counter("cmcp_transport_messages_sent_total", labels);
        stats_gauge("cmcp_transport_connections", labels);
    }
}

int listener_main(struct proc_args *a)
{
    struct cfg *c = &a->cfg;
    memset(&listener_g, 0, sizeof(listener_g));
    listener_g.index = a->index < 0 ? 0 : a->index;
    listener_g.nshards = (int)cfg_get_long(c, "tree.shard", "count", 1);
    if (listener_g.nshards < 1) {
        fprintf(stderr, "cmcpd: listener: no shards configured ([tree.shard] count)\n");
        return CMCP_EXIT_USAGE;
    }
    listener_g.max_message = cfg_get_long(c, "listener", "max_message_bytes", 4L << 20);
    listener_g.idle_timeout = cfg_get_long(c, "listener", "idle_timeout_ms", 300000) / 1000.0;
    listener_g.request_timeout =
        cfg_get_long(c, "listener", "request_timeout_ms", 660000) / 1000.0;
    listener_g.shard_wait = cfg_get_long(c, "listener", "shard_wait_ms", 5000) / 1000.0;
    listener_g.keepalive = cfg_get_long(c, "listener", "keepalive_ms", 15000) / 1000.0;
    listener_g.shard_unresponsive =
        cfg_get_long(c, "listener", "shard_unresponsive_ms", 3000) / 1000.0;
    listener_g.run_dir = a->run_dir;
    listener_g.cfg = c;
    listener_g.loop = ev_default_loop(EVFLAG_SIGNALFD);
    dlink_init(listener_g.loop);
    stats_init(listener_g.loop, a->run_dir, "listener", a->id);
    zero_series(c);
    control_subscribe(listener_g.loop, a->run_dir, NULL); /* drain/undrain, log_level */
    cview_subscribe(listener_g.loop, a->run_dir, listener_map_changed); /* who owns what */
    cview_fetch_map(a->run_dir, 500);
    if (listener_links_start() != 0)
        return CMCP_EXIT_FAILURE;

    long http_port = cfg_get_long(c, "listener", "http_port", 8080);
    long tcp_port = cfg_get_long(c, "listener", "tcp_port", 8081);
    if (http_port > 0 && http_port == tcp_port) {
        /* SO_REUSEPORT would let both bind and split the connections between them. */
        log_error("listener_start_failed", "{s:s,s:I}", "error",
                  "[listener] http_port and tcp_port are the same port", "port",
                  (json_int_t)http_port);
        fprintf(stderr, "cmcpd: listener: http_port and tcp_port are both %ld; give each its own "
                        "port\n",
                (long)http_port);
        return CMCP_EXIT_USAGE;
    }
    if (listener_auth_start() != 0)
        return CMCP_EXIT_USAGE;
    for (size_t i = 0; i < CMCP_ARRAY_LEN(transports); i++)
        if (transports[i]->start() != 0)
            return CMCP_EXIT_FAILURE;

    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(listener_g.loop, &sigterm_w);
    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_start(listener_g.loop, &sigint_w);
    log_info("listener_ready", "{s:i,s:s,s:I,s:s,s:I,s:i}", "listener", listener_g.index,
             "http_bind", cfg_get(c, "listener", "http_bind", "127.0.0.1"), "http_port",
             (json_int_t)http_port, "tcp_bind", cfg_get(c, "listener", "tcp_bind", "127.0.0.1"),
             "tcp_port", (json_int_t)tcp_port, "shards", listener_g.nshards);
    proc_notify_ready(a);
    ev_run(listener_g.loop, 0);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    listener_links_stop();
    listener_auth_stop();
    cview_unsubscribe();
    control_unsubscribe();
    stats_shutdown();
    log_info("listener_stopped", NULL);
    return 0;
}
