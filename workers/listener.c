/*
 * The listener's shard links: one data link (ipc/dlink.h, a framed AF_UNIX
 * stream) per shard carries this listener's requests to the shard and, in
 * order, the shard's events and responses back. Calls are matched to
 * responses by a token.
 *
 * A call waits in its link's queue until its frame has wholly left for the
 * shard; while the shard is down (restarting) it waits there up to
 * shard_wait_ms, then fails as "not delivered". A call whose frame left
 * fails at once with a clear error when the link drops: the shard may or may
 * not have applied it, and retrying is the client's informed choice (at most
 * once delivery; nothing is resent that may have arrived).
 */
#define _GNU_SOURCE
#include "listener.h"

#include <errno.h>
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
    int index;
    struct dlink *dl; /* NULL while the shard is down */
    char path[512];
    ev_timer retry;
    double retry_s;
    bool ever_up;
    struct call *qhead, *qtail; /* calls whose frame has not wholly been written */
};

static struct shard_link *links;
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
    /* Transports name themselves with string literals: found again by address. */
    static struct {
        const char *t;
        struct stats_metric *rx, *tx;
    } cache[8];
    for (int i = 0; i < 8; i++) {
        if (cache[i].t && cache[i].t != transport)
            continue;
        if (!cache[i].t) {
            char labels[64];
            snprintf(labels, sizeof(labels), "transport=\"%s\"", transport);
            cache[i].t = transport;
            cache[i].rx = stats_counter("cmcp_transport_messages_received_total", labels);
            cache[i].tx = stats_counter("cmcp_transport_messages_sent_total", labels);
        }
        (received ? cache[i].rx : cache[i].tx)->value += 1;
        return;
    }
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

static void queue_del(struct call *c)
{
    struct shard_link *l = &links[c->shard];
    if (!c->sending)
        return;
    c->sending = false;
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        l->qhead = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        l->qtail = c->qprev;
    c->qnext = c->qprev = NULL;
}

static void call_free(struct call *c)
{
    HASH_DEL(calls_by_tok, c);
    json_decref(c->rid);
    free(c->frame);
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
    /* A frame still queued on a live link is in the link's buffer already (its answer
     * will find no call); on a link that is down it is never sent. */
    queue_del(c);
    if (c->conn) {
        static struct stats_metric *duration;
        if (!duration)
            duration = stats_histogram("cmcp_request_duration_seconds", "");
        stats_observe(duration, (cmcp_now_ms() - c->t0) / 1000.0);
        c->ops->done(c, hdr, body, len);
    }
    call_unlink(c);
    call_free(c);
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

static void call_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct call *c = w->data;
    char msg[200];
    if (c->sending && links[c->shard].dl && !c->busy_wait) {
        /* The shard is up, only busy: the request waits its turn behind others. It is
         * not lost, so it gets the whole request timeout rather than the restart grace. */
        c->busy_wait = true;
        ev_timer_set(&c->timer, L.request_timeout, 0);
        ev_timer_start(L.loop, &c->timer);
        return;
    }
    if (c->sending && !links[c->shard].dl) {
        snprintf(msg, sizeof(msg),
                 "Shard %d is unavailable (restarting); the request was not delivered. Retry "
                 "shortly",
                 c->shard);
        call_fail(c, 503, -32603, msg);
    } else {
        snprintf(msg, sizeof(msg), "Request timed out after %.0f ms in shard %d",
                 L.request_timeout * 1000, c->shard);
        call_fail(c, 504, -32603, msg);
    }
}

/* The frame left for the shard: from now on only the request timeout applies. */
static void call_delivered(struct call *c)
{
    queue_del(c);
    if (!c->busy_wait) {
        ev_timer_stop(L.loop, &c->timer);
        ev_timer_set(&c->timer, L.request_timeout, 0);
        ev_timer_start(L.loop, &c->timer);
    }
}

static void link_progress(struct dlink *dl)
{
    struct shard_link *l = dlink_ud(dl);
    uint64_t sent = dlink_sent(dl);
    while (l->qhead && l->qhead->frame_end <= sent)
        call_delivered(l->qhead);
}

static int link_push(struct shard_link *l, struct call *c)
{
    if (dlink_send_frame(l->dl, c->frame, c->frame_len) != 0)
        return -1;
    c->frame_end = dlink_queued(l->dl);
    return 0;
}

/* A client message with nothing but its transport and session: a compact record (dlink.h). */
static bool plain_msg(const json_t *hdr, const char **tr, const char **sid)
{
    const char *op = json_string_value(json_object_get(hdr, "op"));
    if (!op || strcmp(op, "msg") != 0)
        return false;
    size_t known = 1;
    json_t *v;
    *tr = *sid = NULL;
    if ((v = json_object_get(hdr, "tr")) && (*tr = json_string_value(v)) != NULL &&
        strlen(*tr) < 16)
        known++;
    if ((v = json_object_get(hdr, "sid")) && (*sid = json_string_value(v)) != NULL &&
        strlen(*sid) < 64)
        known++;
    if (json_object_get(hdr, "pv")) /* (the shard does not use it for a session's message) */
        known++;
    return known == json_object_size(hdr);
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
    size_t body_off = 0;
    const char *tr, *sid;
    if (plain_msg(hdr, &tr, &sid)) {
        c->frame = dlink_msg_build(c->tok, L.index, tr, sid, body, len, &c->frame_len, &body_off);
    } else {
        json_object_set_new(hdr, "lid", json_integer(L.index));
        json_object_set_new(hdr, "tok", json_integer((json_int_t)c->tok));
        c->frame = dlink_frame_build(hdr, body, len, &c->frame_len, &body_off);
    }
    if (!c->frame) {
        free(c);
        return NULL;
    }
    c->body = c->frame + body_off;
    c->body_len = len;
    HASH_ADD(hh, calls_by_tok, tok, sizeof(c->tok), c);
    if (conn) {
        c->next_in_conn = conn->calls;
        conn->calls = c;
    }
    ev_timer_init(&c->timer, call_timer_cb, L.shard_wait, 0);
    c->timer.data = c;
    ev_timer_start(L.loop, &c->timer);
    /* Queued until the frame has left; sent now when the shard is up. */
    struct shard_link *l = &links[shard];
    c->sending = true;
    c->qprev = l->qtail;
    if (l->qtail)
        l->qtail->qnext = c;
    else
        l->qhead = c;
    l->qtail = c;
    if (l->dl && link_push(l, c) != 0) {
        /* Out of memory for the link's buffer: this request is not sent. */
        call_unlink(c);
        queue_del(c);
        ev_timer_stop(L.loop, &c->timer);
        call_free(c);
        return NULL;
    }
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

/* ---- what the shards send: events and responses ---- */

static void link_frame(struct dlink *dl, const char *data, size_t len)
{
    (void)dl;
    if (len > 0 && data[0] == DLINK_REC_REPLY) {
        struct dlink_reply r;
        if (dlink_reply_parse(data, len, &r) != 0) {
            log_warn("shard_frame_malformed", "{s:i}", "bytes", (int)len);
            return;
        }
        struct call *c = NULL;
        HASH_FIND(hh, calls_by_tok, &r.tok, sizeof(r.tok), c);
        if (!c || c->finished)
            return;
        json_t *hdr = json_object();
        json_object_set_new(hdr, "st", json_integer(r.st));
        if (r.sid[0])
            json_object_set_new(hdr, "sid", json_string(r.sid));
        if (c->sending)
            queue_del(c);
        call_finish(c, hdr, r.body, r.blen);
        json_decref(hdr);
        return;
    }
    json_t *hdr;
    const char *body;
    size_t blen;
    if (dlink_envelope_split(data, len, &hdr, &body, &blen) != 0) {
        log_warn("shard_frame_malformed", "{s:i}", "bytes", (int)len);
        return;
    }
    json_t *tok = json_object_get(hdr, "tok");
    if (json_is_integer(tok)) {
        uint64_t t = (uint64_t)json_integer_value(tok);
        struct call *c = NULL;
        HASH_FIND(hh, calls_by_tok, &t, sizeof(t), c);
        if (c && !c->finished) {
            if (json_is_true(json_object_get(hdr, "ev"))) {
                /* An event of the request, before its response (the link keeps order). */
                c->stream = (int)json_integer_value(json_object_get(hdr, "stream"));
                if (c->conn && c->ops->event)
                    c->ops->event(c, hdr, body, blen);
            } else {
                if (c->sending)
                    queue_del(c); /* answered, so it arrived */
                call_finish(c, hdr, body, blen);
            }
        }
    } else {
        /* An event of a session that belongs to no request: its standalone stream's. */
        const char *sid = json_string_value(json_object_get(hdr, "sid"));
        struct stream_ent *e = NULL;
        if (sid)
            HASH_FIND_STR(streams, sid, e);
        if (e && e->conn->kind == CONN_LINE)
            line_stream_event(e->conn, sid, hdr, body, blen);
        else if (e)
            http_stream_event(e->conn, sid, hdr, body, blen);
    }
    json_decref(hdr);
}

/* ---- shard liveness ---- */

static void link_connect(struct shard_link *l);

static void link_closed(struct dlink *dl, const char *why)
{
    struct shard_link *l = dlink_ud(dl);
    link_progress(dl); /* frames written just before the break left */
    l->dl = NULL;
    /* Every call whose frame left is lost with the shard; the rest wait for its return. */
    struct call *c, *tmp;
    int failed = 0;
    HASH_ITER(hh, calls_by_tok, c, tmp)
    {
        if (c->shard != l->index || c->finished || c->sending)
            continue;
        call_fail_shard_stopped(c);
        failed++;
    }
    for (c = l->qhead; c; c = c->qnext)
        c->frame_end = 0;
    log_warn("shard_link_down", "{s:i,s:s,s:i}", "shard", l->index, "why", why, "calls_failed",
             failed);
    stats_gauge("cmcp_shard_links_up", "")->value -= 1;
    stats_counter("cmcp_shard_link_drops_total", "")->value += 1;
    l->retry_s = 0.005;
    ev_timer_set(&l->retry, l->retry_s, 0);
    ev_timer_start(L.loop, &l->retry);
}

static const struct dlink_ops link_ops = {link_frame, link_progress, link_closed};

static void link_connect(struct shard_link *l)
{
    int fd = dlink_connect(l->path);
    if (fd < 0) {
        /* Not up yet (restarting, or still loading its sessions): try again shortly. */
        l->retry_s = l->retry_s < 0.2 ? l->retry_s * 2 : 0.2;
        ev_timer_set(&l->retry, l->retry_s, 0);
        ev_timer_start(L.loop, &l->retry);
        return;
    }
    l->dl = dlink_new(fd, &link_ops, l);
    if (!l->dl) {
        ev_timer_set(&l->retry, 0.2, 0);
        ev_timer_start(L.loop, &l->retry);
        return;
    }
    stats_gauge("cmcp_shard_links_up", "")->value += 1;
    /* What waited for the shard goes now, in the order it came. */
    int waiting = 0;
    for (struct call *c = l->qhead; c; c = c->qnext, waiting++)
        if (link_push(l, c) != 0)
            break;
    if (waiting || l->ever_up)
        log_info("shard_link_up", "{s:i,s:i}", "shard", l->index, "waiting", waiting);
    l->ever_up = true;
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    link_connect(w->data);
}

/* ---- standalone streams ---- */

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
    dlink_init(L.loop);
    stats_init(L.loop, a->run_dir, "listener", a->id);
    control_subscribe(L.loop, a->run_dir, NULL); /* drain/undrain, log_level */

    links = calloc((size_t)L.nshards, sizeof(*links));
    if (!links) {
        log_error("listener_start_failed", "{s:s}", "error", "out of memory");
        return CMCP_EXIT_FAILURE;
    }
    for (int i = 0; i < L.nshards; i++) {
        struct shard_link *l = &links[i];
        l->index = i;
        dlink_shard_path(l->path, sizeof(l->path), a->run_dir, i);
        ev_timer_init(&l->retry, retry_cb, 0, 0);
        l->retry.data = l;
        l->retry_s = 0.005;
        link_connect(l);
    }

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
        dlink_close(links[i].dl);
    control_unsubscribe();
    stats_shutdown();
    log_info("listener_stopped", NULL);
    return 0;
}
