/*
 * The listener's shard links. One req socket per shard (so that a pipe
 * going away names the shard that died), a context and an aio per call, and
 * one sub socket on every shard's events. nng completes aios on its own
 * threads; completions reach the loop through an ipc_bridge.
 *
 * A call to a shard that is down waits in nng's queue until the shard is
 * back or shard_wait_ms passes. A call already delivered when the shard's
 * pipe drops fails at once with a clear error: the shard may or may not have
 * applied it, and retrying is the client's informed choice.
 */
#define _GNU_SOURCE
#include "listener.h"

#include <errno.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmcp.h"
#include "log.h"
#include "shard.h"
#include "control.h"
#include "stats.h"

struct listener_cfg L;

struct shard_link {
    nng_socket req;
    int index;
    int pipes; /* 1 while the shard is connected (pipe notifications) */
    struct ipc_item up, down;
    bool up_posted, down_posted;
};

static struct shard_link *links;
static nng_socket sub;
static ev_io sub_w;
static struct ipc_bridge bridge;
static struct call *calls_by_tok;
static uint64_t next_tok = 1;
static int rr_next;

struct stream_ent {
    UT_hash_handle hh;
    char sid[64];
    struct conn *conn;
};
static struct stream_ent *streams;

char *listener_rpc_error(const json_t *id, int code, const char *msg)
{
    json_t *o = json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id",
                          id ? (json_t *)id : json_null(), "error", "code", code, "message", msg);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

/* ---- metrics and drain ---- */

void listener_count_conn(const char *transport, int delta)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "transport=\"%s\"", transport);
    stats_gauge("cmcp_transport_connections", labels)->value += delta;
}

void listener_count_msg(const char *transport, bool received)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "transport=\"%s\"", transport);
    stats_counter(received ? "cmcp_transport_messages_received_total"
                           : "cmcp_transport_messages_sent_total",
                  labels)
        ->value += 1;
}

bool listener_draining(void)
{
    return control_draining();
}

/* ---- calls ---- */

static void call_free_if_idle(struct call *c)
{
    if (!c->finished || c->aio_busy)
        return;
    HASH_DEL(calls_by_tok, c);
    if (c->ctx_open)
        nng_ctx_close(c->ctx);
    nng_aio_free(c->aio);
    if (c->held)
        nng_msg_free(c->held);
    json_decref(c->rid);
    free(c->body);
    free(c);
}

static void call_unlink(struct call *c)
{
    if (!c->conn)
        return;
    struct call **pp = &c->conn->calls;
    for (; *pp; pp = &(*pp)->next_in_conn)
        if (*pp == c) {
            *pp = c->next_in_conn;
            break;
        }
    c->conn = NULL;
}

/* Ends a call with a reply (real or made here). */
static void call_finish(struct call *c, json_t *hdr, const char *body, size_t len)
{
    if (c->finished)
        return;
    c->finished = true;
    ev_timer_stop(L.loop, &c->timer);
    if (c->conn) {
        static struct stats_metric *duration;
        if (!duration)
            duration = stats_histogram("cmcp_request_duration_seconds", "");
        stats_observe(duration, (cmcp_now_ms() - c->t0) / 1000.0);
        c->ops->done(c, hdr, body, len);
    }
    call_unlink(c);
    if (c->aio_busy)
        nng_aio_cancel(c->aio);
    call_free_if_idle(c);
}

static void call_fail(struct call *c, int st, int code, const char *msg)
{
    /* Answer with the request's own id, so that line clients can match the error. */
    if (!c->rid && c->body) {
        json_t *req = json_loadb(c->body, c->body_len, 0, NULL);
        json_t *id = json_object_get(req, "id");
        if (id)
            c->rid = json_incref(id);
        json_decref(req);
    }
    char *body = listener_rpc_error(c->rid, code, msg);
    json_t *hdr = json_pack("{s:i}", "st", st);
    call_finish(c, hdr, body, body ? strlen(body) : 0);
    json_decref(hdr);
    free(body);
}

/* The shard died with the request inside it: its outcome is unknown. */
static void call_fail_shard_stopped(struct call *c)
{
    char msg[200];
    snprintf(msg, sizeof(msg),
             "Shard %d stopped while handling this request; it may or may not have been "
             "applied. Retry if that is safe",
             c->shard);
    call_fail(c, 503, -32603, msg);
}

static void call_deliver_held(struct call *c)
{
    nng_msg *m = c->held;
    c->held = NULL;
    json_t *hdr;
    const char *body;
    size_t len;
    if (ipc_envelope_parse(m, &hdr, &body, &len) != 0) {
        nng_msg_free(m);
        call_fail(c, 502, -32603, "Internal error: malformed reply from the shard");
        return;
    }
    call_finish(c, hdr, body, len);
    json_decref(hdr);
    nng_msg_free(m);
}

static void call_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct call *c = w->data;
    if (c->held) {
        /* Events published before the reply were lost on the way (pub/sub drops under
         * pressure); the response still goes out, and the log says so. */
        log_warn("events_missing", "{s:i,s:I}", "shard", c->shard, "tok", (json_int_t)c->tok);
        call_deliver_held(c);
        return;
    }
    char msg[200];
    if (c->sending && links[c->shard].pipes > 0 && !c->busy_wait) {
        /* The shard is up, only busy: the request waits its turn in nng's queue. It is
         * not lost, so it gets the whole request timeout rather than the restart grace. */
        c->busy_wait = true;
        ev_timer_set(&c->timer, L.request_timeout, 0);
        ev_timer_start(L.loop, &c->timer);
        return;
    }
    if (c->sending) {
        snprintf(msg, sizeof(msg),
                 "Shard %d is unavailable (restarting); the request was not delivered. Retry "
                 "shortly",
                 c->shard);
        call_fail(c, 503, -32603, msg);
    } else {
        snprintf(msg, sizeof(msg), "Request timed out after %.0f ms in shard %d", L.request_timeout * 1000,
                 c->shard);
        call_fail(c, 504, -32603, msg);
    }
}

static void call_run(struct ipc_item *it)
{
    struct call *c = (struct call *)it;
    c->aio_busy = false;
    int rv = nng_aio_result(c->aio);
    if (c->finished) {
        if (rv == 0 && !c->sending)
            nng_msg_free(nng_aio_get_msg(c->aio));
        else if (rv != 0 && c->sending)
            nng_msg_free(nng_aio_get_msg(c->aio));
        call_free_if_idle(c);
        return;
    }
    if (c->sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            call_fail(c, 503, -32603, "Internal error: could not reach the shard");
            return;
        }
        c->sending = false;
        /* Delivered: from now on only the request timeout applies. */
        ev_timer_stop(L.loop, &c->timer);
        ev_timer_set(&c->timer, L.request_timeout, 0);
        ev_timer_start(L.loop, &c->timer);
        c->aio_busy = true;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    if (rv != 0) {
        call_fail_shard_stopped(c);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    json_t *hdr;
    const char *body;
    size_t len;
    if (ipc_envelope_parse(m, &hdr, &body, &len) != 0) {
        nng_msg_free(m);
        call_fail(c, 502, -32603, "Internal error: malformed reply from the shard");
        return;
    }
    int nev = (int)json_integer_value(json_object_get(hdr, "nev"));
    json_decref(hdr);
    if (c->nev_seen < nev) {
        /* Events travel by pub/sub and may trail the reply: wait briefly for them. */
        c->held = m;
        c->nev_expected = nev;
        ev_timer_stop(L.loop, &c->timer);
        ev_timer_set(&c->timer, 0.5, 0);
        ev_timer_start(L.loop, &c->timer);
        return;
    }
    c->held = m;
    call_deliver_held(c);
}

static void call_aio_cb(void *arg)
{
    struct call *c = arg;
    ipc_bridge_post(&bridge, &c->item);
}

struct call *listener_call(struct conn *conn, int shard, json_t *hdr, const char *body, size_t len,
                           const struct call_ops *ops, void *tdata)
{
    if (shard < 0) {
        shard = rr_next;
        rr_next = (rr_next + 1) % L.nshards;
    }
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->tok = next_tok++;
    c->t0 = cmcp_now_ms();
    c->shard = shard;
    c->ops = ops;
    c->conn = conn;
    c->tdata = tdata;
    c->item.run = call_run;
    if (nng_aio_alloc(&c->aio, call_aio_cb, c) != 0 || nng_ctx_open(&c->ctx, links[shard].req) != 0) {
        if (c->aio)
            nng_aio_free(c->aio);
        free(c);
        return NULL;
    }
    c->ctx_open = true;
    if (len && (c->body = malloc(len)) != NULL) {
        memcpy(c->body, body, len);
        c->body_len = len;
    }
    /* No resend: a request is delivered at most once (see the comment at the top). */
    nng_ctx_set_ms(c->ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    json_object_set_new(hdr, "lid", json_integer(L.index));
    json_object_set_new(hdr, "tok", json_integer((json_int_t)c->tok));
    nng_msg *m = ipc_envelope(hdr, body, len);
    if (!m) {
        nng_ctx_close(c->ctx);
        nng_aio_free(c->aio);
        free(c);
        return NULL;
    }
    HASH_ADD(hh, calls_by_tok, tok, sizeof(c->tok), c);
    if (conn) {
        c->next_in_conn = conn->calls;
        conn->calls = c;
    }
    ev_timer_init(&c->timer, call_timer_cb, L.shard_wait, 0);
    c->timer.data = c;
    ev_timer_start(L.loop, &c->timer);
    c->sending = true;
    c->aio_busy = true;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
    return c;
}

struct call *listener_call_by_stream(const char *sid, int stream)
{
    struct call *c, *tmp;
    HASH_ITER(hh, calls_by_tok, c, tmp)
    {
        if (!c->finished && c->stream == stream && strcmp(c->sid, sid) == 0)
            return c;
    }
    return NULL;
}

void listener_call_detach(struct call *c)
{
    call_unlink(c);
}

void listener_call_attach(struct call *c, struct conn *conn, const struct call_ops *ops)
{
    call_unlink(c);
    c->conn = conn;
    c->ops = ops;
    c->next_in_conn = conn->calls;
    conn->calls = c;
}

void listener_detach_calls(struct conn *conn)
{
    struct call **head = &conn->calls;
    while (*head) {
        struct call *c = *head;
        *head = c->next_in_conn;
        c->conn = NULL;
        c->next_in_conn = NULL;
    }
}

static const struct call_ops end_ops;
static void end_done(struct call *c, json_t *hdr, const char *body, size_t len)
{
    (void)c;
    (void)hdr;
    (void)body;
    (void)len;
}
static const struct call_ops end_ops = {NULL, end_done};

void listener_stateless_cancel(struct call *c)
{
    if (!c->stateless || c->finished)
        return;
    char key[64];
    snprintf(key, sizeof(key), "%d-%llu", L.index, (unsigned long long)c->tok);
    json_t *hdr = json_pack("{s:s,s:s}", "op", "stateless_cancel", "key", key);
    listener_call(NULL, c->shard, hdr, "", 0, &end_ops, NULL);
    json_decref(hdr);
}

void listener_session_end(const char *sid)
{
    int shard = shard_of_session(sid);
    if (shard < 0 || shard >= L.nshards)
        return;
    json_t *hdr = json_pack("{s:s,s:s}", "op", "delete", "sid", sid);
    listener_call(NULL, shard, hdr, "", 0, &end_ops, NULL);
    json_decref(hdr);
}

/* ---- shard liveness ---- */

static void link_down_run(struct ipc_item *it)
{
    struct shard_link *l = (struct shard_link *)((char *)it - offsetof(struct shard_link, down));
    l->down_posted = false;
    l->pipes = 0;
    /* Every call already handed to this shard is lost with it. */
    struct call *c, *tmp;
    int failed = 0;
    HASH_ITER(hh, calls_by_tok, c, tmp)
    {
        if (c->shard != l->index || c->finished || c->sending || c->held)
            continue;
        call_fail_shard_stopped(c);
        failed++;
    }
    log_warn("shard_link_down", "{s:i,s:i}", "shard", l->index, "calls_failed", failed);
}

static void link_up_run(struct ipc_item *it)
{
    struct shard_link *l = (struct shard_link *)((char *)it - offsetof(struct shard_link, up));
    l->up_posted = false;
    l->pipes = 1; /* one ipc pipe per shard */
    log_info("shard_link_up", "{s:i}", "shard", l->index);
}

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    struct shard_link *l = arg;
    /* Items are reused: posting one twice before it ran would corrupt the queue. The
     * flags are only touched under the bridge's order, good enough for a rare event. */
    if (ev == NNG_PIPE_EV_REM_POST && !l->down_posted) {
        l->down_posted = true;
        ipc_bridge_post(&bridge, &l->down);
    } else if (ev == NNG_PIPE_EV_ADD_POST && !l->up_posted) {
        l->up_posted = true;
        ipc_bridge_post(&bridge, &l->up);
    }
}

/* ---- events ---- */

static void sub_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    for (int n = 0; n < 256; n++) {
        nng_msg *m;
        if (nng_recvmsg(sub, &m, NNG_FLAG_NONBLOCK) != 0)
            return;
        json_t *hdr;
        const char *body;
        size_t len;
        if (ipc_envelope_parse(m, &hdr, &body, &len) == 0) {
            json_t *lid = json_object_get(hdr, "lid");
            json_t *tok = json_object_get(hdr, "tok");
            if (json_is_integer(tok)) {
                /* An event of a request: only the listener that sent it cares. */
                if (json_integer_value(lid) == L.index) {
                    uint64_t t = (uint64_t)json_integer_value(tok);
                    struct call *c = NULL;
                    HASH_FIND(hh, calls_by_tok, &t, sizeof(t), c);
                    if (c && !c->finished) {
                        c->nev_seen++;
                        c->stream = (int)json_integer_value(json_object_get(hdr, "stream"));
                        if (c->conn && c->ops->event)
                            c->ops->event(c, hdr, body, len);
                        if (c->held && c->nev_seen >= c->nev_expected)
                            call_deliver_held(c);
                    }
                }
            } else {
                const char *sid = json_string_value(json_object_get(hdr, "sid"));
                struct stream_ent *e = NULL;
                if (sid)
                    HASH_FIND_STR(streams, sid, e);
                if (e && e->conn->kind == CONN_LINE)
                    line_stream_event(e->conn, sid, hdr, body, len);
                else if (e)
                    http_stream_event(e->conn, sid, hdr, body, len);
            }
            json_decref(hdr);
        }
        nng_msg_free(m);
    }
}

void listener_stream_set(const char *sid, struct conn *conn)
{
    struct stream_ent *e = NULL;
    HASH_FIND_STR(streams, sid, e);
    if (!e) {
        e = calloc(1, sizeof(*e));
        snprintf(e->sid, sizeof(e->sid), "%s", sid);
        HASH_ADD_STR(streams, sid, e);
    }
    e->conn = conn;
}

struct conn *listener_stream_get(const char *sid)
{
    struct stream_ent *e = NULL;
    HASH_FIND_STR(streams, sid, e);
    return e ? e->conn : NULL;
}

void listener_stream_clear(const char *sid, struct conn *conn)
{
    struct stream_ent *e = NULL;
    HASH_FIND_STR(streams, sid, e);
    if (e && e->conn == conn) {
        HASH_DEL(streams, e);
        free(e);
    }
}

/* ---- main ---- */

static ev_signal sigterm_w, sigint_w;

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

int listener_main(struct proc_args *a)
{
    memset(&L, 0, sizeof(L));
    L.index = a->index < 0 ? 0 : a->index;
    L.nshards = (int)cfg_get_long(&a->cfg, "tree.shard", "count", 1);
    if (L.nshards < 1) {
        fprintf(stderr, "cmcpd: listener: no shards configured ([tree.shard] count)\n");
        return CMCP_EXIT_USAGE;
    }
    L.max_message = cfg_get_long(&a->cfg, "listener", "max_message_bytes", 4L << 20);
    L.idle_timeout = cfg_get_long(&a->cfg, "listener", "idle_timeout_ms", 300000) / 1000.0;
    L.request_timeout = cfg_get_long(&a->cfg, "listener", "request_timeout_ms", 660000) / 1000.0;
    L.shard_wait = cfg_get_long(&a->cfg, "listener", "shard_wait_ms", 5000) / 1000.0;
    L.keepalive = cfg_get_long(&a->cfg, "listener", "keepalive_ms", 15000) / 1000.0;
    L.run_dir = a->run_dir;
    L.cfg = &a->cfg;
    L.loop = ev_default_loop(EVFLAG_SIGNALFD);
    ipc_bridge_init(&bridge, L.loop);
    stats_init(L.loop, a->run_dir, "listener", a->id);
    control_subscribe(L.loop, a->run_dir, NULL); /* drain/undrain, log_level */

    int rv;
    links = calloc((size_t)L.nshards, sizeof(*links));
    if ((rv = nng_sub0_open(&sub)) != 0) {
        log_error("listener_start_failed", "{s:s}", "error", nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "", 0);
    nng_socket_set_int(sub, NNG_OPT_RECVBUF, 8192);
    ipc_socket_tune(sub);
    for (int i = 0; i < L.nshards; i++) {
        char addr[512];
        struct shard_link *l = &links[i];
        l->index = i;
        l->up.run = link_up_run;
        l->down.run = link_down_run;
        if ((rv = nng_req0_open(&l->req)) != 0) {
            log_error("listener_start_failed", "{s:s}", "error", nng_strerror(rv));
            return CMCP_EXIT_FAILURE;
        }
        ipc_socket_tune(l->req);
        nng_pipe_notify(l->req, NNG_PIPE_EV_ADD_POST, pipe_cb, l);
        nng_pipe_notify(l->req, NNG_PIPE_EV_REM_POST, pipe_cb, l);
        ipc_shard_req_address(addr, sizeof(addr), a->run_dir, i);
        /* Non-blocking dial: a shard that is not up yet is dialled again until it is. */
        nng_dial(l->req, addr, NULL, NNG_FLAG_NONBLOCK);
        ipc_shard_pub_address(addr, sizeof(addr), a->run_dir, i);
        nng_dial(sub, addr, NULL, NNG_FLAG_NONBLOCK);
    }
    int fd;
    nng_socket_get_int(sub, NNG_OPT_RECVFD, &fd);
    ev_io_init(&sub_w, sub_cb, fd, EV_READ);
    ev_io_start(L.loop, &sub_w);

    const char *http_bind = cfg_get(&a->cfg, "listener", "http_bind", "127.0.0.1");
    long http_port = cfg_get_long(&a->cfg, "listener", "http_port", 8080);
    const char *tcp_bind = cfg_get(&a->cfg, "listener", "tcp_bind", "127.0.0.1");
    long tcp_port = cfg_get_long(&a->cfg, "listener", "tcp_port", 8081);
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
    if (http_port > 0 && http_listen(http_bind, (int)http_port) != 0)
        return CMCP_EXIT_FAILURE;
    if (tcp_port > 0 && line_tcp_listen(tcp_bind, (int)tcp_port) != 0)
        return CMCP_EXIT_FAILURE;
    if (L.index == 0 && getenv("CMCP_STDIO") && line_stdio_start(0, 1) != 0)
        return CMCP_EXIT_FAILURE;

    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(L.loop, &sigterm_w);
    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_start(L.loop, &sigint_w);
    log_info("listener_ready", "{s:i,s:s,s:I,s:s,s:I,s:i}", "listener", L.index, "http_bind",
             http_bind, "http_port", (json_int_t)http_port, "tcp_bind", tcp_bind, "tcp_port",
             (json_int_t)tcp_port, "shards", L.nshards);
    proc_notify_ready(a);
    ev_run(L.loop, 0);
    for (int i = 0; i < L.nshards; i++)
        nng_close(links[i].req);
    nng_close(sub);
    control_unsubscribe();
    stats_shutdown();
    log_info("listener_stopped", NULL);
    return 0;
}
