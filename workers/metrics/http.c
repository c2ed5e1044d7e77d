/*
 * The metrics worker's HTTP server: GET /metrics, /health, /ready, /status.
 * Requests are parsed by the project's HTTP layer (workers/http); every
 * answer is computed at once, so a connection never waits on anything.
 *
 * A port that is taken is retried every few seconds rather than failing the
 * worker: a restart loop here would spend the root's restart intensity, and
 * the node's MCP service must not depend on its metrics.
 */
#define _GNU_SOURCE
#include "workers/metrics/metrics_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/sock.h"
#include "ipc/stats.h"

#define MAX_CONNS 64
#define IDLE_TIMEOUT 30.0
#define RETRY_BIND 2.0

struct mconn {
    int fd;
    ev_io rw, ww;
    ev_timer idle;
    struct http_conn parser;
    struct http_buf out;
    bool closing;
    struct mconn *next;
};

static int listen_fd = -1;
static struct sock_acceptor acceptor;
static ev_timer retry_w;
static char bind_addr[256];
static int bind_port;
static int bind_failures;
static struct mconn *conns;
static int nconns;

static void conn_close(struct mconn *c)
{
    ev_io_stop(metrics_g.loop, &c->rw);
    ev_io_stop(metrics_g.loop, &c->ww);
    ev_timer_stop(metrics_g.loop, &c->idle);
    close(c->fd);
    http_conn_free(&c->parser);
    http_buf_free(&c->out);
    for (struct mconn **pp = &conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    nconns--;
    free(c);
}

/* Writes what it can; 0 while the connection lives, -1 once closed. */
static int conn_flush(struct mconn *c)
{
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_start(metrics_g.loop, &c->ww);
            return 0;
        }
        if (n <= 0) {
            conn_close(c);
            return -1;
        }
        http_buf_consume(&c->out, (size_t)n);
    }
    ev_io_stop(metrics_g.loop, &c->ww);
    if (c->closing) {
        conn_close(c);
        return -1;
    }
    return 0;
}

static void count_scrape(const char *path)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "path=\"%s\"", path);
    stats_counter("cmcp_metrics_scrapes_total", labels)->value += 1;
}

static void answer_json(struct mconn *c, const struct http_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    if (!text) {
        http_write_simple(&c->out, req, 500, false, "text/plain", "out of memory\n", 14);
        c->closing = true;
        return;
    }
    size_t n = strlen(text);
    http_write_status(&c->out, status);
    http_write_connection(&c->out, req, req->keep_alive);
    http_write_header(&c->out, "Cache-Control", "no-store");
    http_write_body(&c->out, "application/json", text, n);
    free(text);
}

static void answer(struct mconn *c, const struct http_request *req)
{
    if (!req->keep_alive)
        c->closing = true;
    if (req->method != HTTP_GET) {
        static const char msg[] = "only GET is served here\n";
        http_write_status(&c->out, 405);
        http_write_connection(&c->out, req, req->keep_alive);
        http_write_header(&c->out, "Allow", "GET");
        http_write_body(&c->out, "text/plain; charset=utf-8", msg, sizeof(msg) - 1);
        return;
    }
    const char *path = req->path;
    json_t *body;
    if (strcmp(path, "/metrics") == 0) {
        count_scrape("/metrics");
        struct http_buf text = {0};
        metrics_render_prometheus(&text);
        if (text.failed) {
            http_write_simple(&c->out, req, 500, false, "text/plain", "out of memory\n", 14);
            c->closing = true;
        } else {
            http_write_status(&c->out, 200);
            http_write_connection(&c->out, req, req->keep_alive);
            http_write_header(&c->out, "Cache-Control", "no-store");
            http_write_body(&c->out, "text/plain; version=0.0.4; charset=utf-8", text.data,
                            text.len);
        }
        http_buf_free(&text);
    } else if (strcmp(path, "/health") == 0) {
        count_scrape("/health");
        int st = metrics_health(&body);
        answer_json(c, req, st, body);
    } else if (strcmp(path, "/ready") == 0) {
        count_scrape("/ready");
        int st = metrics_ready(&body);
        answer_json(c, req, st, body);
    } else if (strcmp(path, "/status") == 0) {
        count_scrape("/status");
        answer_json(c, req, 200, metrics_status());
    } else {
        count_scrape("other");
        static const char msg[] = "not found: this server has /metrics, /health, /ready and "
                                  "/status\n";
        http_write_simple(&c->out, req, 404, req->keep_alive, "text/plain; charset=utf-8", msg,
                          sizeof(msg) - 1);
    }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct mconn *c = w->data;
    char buf[16384];
    ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    ev_timer_again(metrics_g.loop, &c->idle);
    int rc = http_conn_feed(&c->parser, buf, (size_t)n);
    struct http_request *req;
    while (!c->closing && (req = http_conn_take(&c->parser)) != NULL) {
        answer(c, req);
        http_request_free(req);
    }
    const char *detail = NULL;
    int err = rc < 0 ? http_conn_error(&c->parser, &detail) : 0;
    if (err && !c->closing) {
        const char *msg = detail ? detail : "bad request";
        http_write_simple(&c->out, NULL, err, false, "text/plain; charset=utf-8", msg,
                          strlen(msg));
        c->closing = true;
    }
    if (c->closing)
        ev_io_stop(metrics_g.loop, &c->rw); /* answer what came, read no more */
    conn_flush(c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_flush(w->data);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(w->data);
}

static void accepted(struct sock_acceptor *a, int fd)
{
    (void)a;
    if (nconns >= MAX_CONNS) {
        close(fd); /* scrapers are few; a flood does not grow our memory */
        return;
    }
    struct mconn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    struct http_limits lim = {16384, 65536, 64, 4};
    c->fd = fd;
    http_conn_init(&c->parser, &lim);
    ev_io_init(&c->rw, read_cb, fd, EV_READ);
    ev_io_init(&c->ww, write_cb, fd, EV_WRITE);
    ev_timer_init(&c->idle, idle_cb, 0, IDLE_TIMEOUT);
    c->rw.data = c->ww.data = c->idle.data = c;
    ev_io_start(metrics_g.loop, &c->rw);
    ev_timer_again(metrics_g.loop, &c->idle);
    c->next = conns;
    conns = c;
    nconns++;
}

/* One attempt to listen; logs the first failure loudly and later ones quietly. */
static int try_listen(void)
{
    char err[300];
    int fd = sock_tcp_listen(bind_addr, bind_port, false, 64, err, sizeof(err));
    if (fd < 0) {
        bind_failures++;
        if (bind_failures == 1 || bind_failures % 30 == 0)
            log_error("metrics_http_listen_failed", "{s:s,s:i,s:s,s:i,s:s}", "bind", bind_addr,
                      "port", bind_port, "error", err, "attempts", bind_failures, "hint",
                      "another program holds the port: free it, or set [metrics] port "
                      "(0 turns the HTTP server off); retrying every 2 s");
        return -1;
    }
    listen_fd = fd;
    sock_acceptor_start(&acceptor, metrics_g.loop, fd, 32, accepted, NULL);
    log_info("metrics_http_listening", "{s:s,s:i,s:i}", "bind", bind_addr, "port", bind_port,
             "attempts", bind_failures + 1);
    return 0;
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    if (try_listen() == 0)
        ev_timer_stop(loop, w);
}

int metrics_http_start(const char *addr, int port)
{
    snprintf(bind_addr, sizeof(bind_addr), "%s", addr);
    bind_port = port;
    if (try_listen() == 0)
        return 0;
    ev_timer_init(&retry_w, retry_cb, RETRY_BIND, RETRY_BIND);
    ev_timer_start(metrics_g.loop, &retry_w);
    return -1;
}

void metrics_http_stop(void)
{
    ev_timer_stop(metrics_g.loop, &retry_w);
    while (conns)
        conn_close(conns);
    if (listen_fd >= 0) {
        sock_acceptor_stop(&acceptor);
        close(listen_fd);
        listen_fd = -1;
    }
}
