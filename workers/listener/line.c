/*
 * Transports where one connection is one session and carries one JSON-RPC
 * message per unit: newline-delimited JSON over TCP (as erlmcp's TCP
 * transport) and stdio (for clients that launch `cmcpd --stdio`), and
 * WebSocket at /mcp/ws (one message per text frame, framing by wslay), whose
 * connections the HTTP transport hands over after the 101 answer.
 */
#define _GNU_SOURCE
#include "workers/listener/listener_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "base/cmcp.h"
#include "base/log.h"

#define OUT_MAX (64L << 20) /* a client that reads nothing is cut off here */
/* Requests one connection (TCP, stdio, WebSocket) may have in flight; beyond, it is not
 * read until answers went out (the kernel's buffers then hold the client back). */
#define LINE_MAX_INFLIGHT 128 /* = the engine's per-session limit (MCPI_MAX_INFLIGHT): wait, not fail */

struct qmsg {
    struct qmsg *next;
    size_t len;
    char text[];
};

struct lconn {
    struct conn base;
    int in_fd, out_fd;
    bool is_stdio;
    wslay_event_context_ptr ws; /* WebSocket framing, or NULL for lines */
    size_t in_off;              /* bytes of `in` wslay has consumed */
    struct qmsg *queued, **queued_tail; /* WebSocket messages waiting for the session id */
    ev_timer ping;
    bool ws_busy;
    bool in_busy; /* lconn_process is walking `in` */
    ev_io rw, ww;
    ev_timer idle;
    char *in; /* bytes not yet processed: NULL on an idle connection */
    size_t in_len, in_cap;
    char *out; /* bytes not yet written: NULL once all went */
    size_t out_len, out_off, out_cap;
    char sid[64];
    bool init_pending, closing, dead;
    bool eof; /* the client closed its side (stdin at EOF, a TCP half-close): answer, then end */
    int inflight;      /* requests sent to the shard and not yet answered */
    bool paused;       /* not read while inflight is at LINE_MAX_INFLIGHT */
    bool dirty;        /* has output to write at the end of this loop turn */
    struct lconn *dnext;
    struct oauth_grant grant; /* WebSocket under [auth]: the upgrade's token (auth.c) */
};

static void line_stream_event(struct conn *conn, const struct wire_event *e);
static const struct conn_ops tcp_ops = {"tcp", line_stream_event};
static const struct conn_ops stdio_ops = {"stdio", line_stream_event};
static const struct conn_ops ws_ops = {"websocket", line_stream_event};

static const char *lconn_transport(const struct lconn *c)
{
    return c->base.ops->transport;
}

static struct sock_acceptor tcp_acceptor;

static void lconn_close(struct lconn *c, const char *why);
static void lconn_process(struct lconn *c);

static void lconn_flush(struct lconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->out_fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_start(listener_g.loop, &c->ww);
            return;
        }
        if (n <= 0) {
            lconn_close(c, "write failed");
            return;
        }
        c->out_off += (size_t)n;
    }
    /* All written: an idle connection keeps no output buffer (the next message allocates). */
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = c->out_cap = 0;
    ev_io_stop(listener_g.loop, &c->ww);
    if (c->closing)
        lconn_close(c, "closed after reply");
}

/*
 * Output leaves at the end of the loop turn (an ev_prepare watcher), so that
 * the answers a turn produced for one connection go in one write().
 */
static ev_prepare flush_w;
static struct lconn *dirty_head;

static void flush_dirty_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    for (int guard = 0; dirty_head && guard < 1000000; guard++) {
        struct lconn *c = dirty_head;
        dirty_head = c->dnext;
        c->dnext = NULL;
        c->dirty = false;
        if (!c->dead && !ev_is_active(&c->ww))
            lconn_flush(c);
    }
}

static void mark_dirty(struct lconn *c)
{
    if (c->dirty)
        return;
    if (!ev_is_active(&flush_w)) {
        ev_prepare_init(&flush_w, flush_dirty_cb);
        ev_prepare_start(listener_g.loop, &flush_w);
        ev_unref(listener_g.loop); /* it alone does not keep the loop running */
    }
    c->dirty = true;
    c->dnext = dirty_head;
    dirty_head = c;
}

static void dirty_forget(struct lconn *c)
{
    if (!c->dirty)
        return;
    for (struct lconn **pp = &dirty_head; *pp; pp = &(*pp)->dnext)
        if (*pp == c) {
            *pp = c->dnext;
            break;
        }
    c->dirty = false;
}

static void ws_pump(struct lconn *c);

static void lconn_append(struct lconn *c, const char *data, size_t len, bool newline);

static void lconn_write_line(struct lconn *c, const char *text, size_t len)
{
    if (c->dead)
        return;
    listener_count_msg(lconn_transport(c), false);
    if (c->ws) {
        struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
        if (wslay_event_queue_msg(c->ws, &m) != 0) {
            lconn_close(c, "websocket queue failed");
            return;
        }
        ws_pump(c);
        return;
    }
    lconn_append(c, text, len, true);
}

/* Bytes for the peer: a line (with its newline) or WebSocket frames from wslay. */
static void lconn_append(struct lconn *c, const char *text, size_t len, bool newline)
{
    if (c->dead)
        return;
    if (c->out_len + len + 1 > (size_t)OUT_MAX) {
        lconn_close(c, "client does not read its messages");
        return;
    }
    if (c->out_len + len + 1 > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + len + 1)
            cap *= 2;
        char *o = realloc(c->out, cap);
        if (!o) {
            lconn_close(c, "out of memory");
            return;
        }
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, text, len);
    c->out_len += len;
    if (newline)
        c->out[c->out_len++] = '\n';
    if (!ev_is_active(&c->ww))
        mark_dirty(c);
}

/* Keeps bytes read until they form whole messages; -1 when out of memory. */
static int in_append(struct lconn *c, const char *data, size_t len)
{
    if (c->in_len + len > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : 1024;
        while (cap < c->in_len + len)
            cap *= 2;
        char *n = realloc(c->in, cap);
        if (!n)
            return -1;
        c->in = n;
        c->in_cap = cap;
    }
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    return 0;
}

/* Between messages the connection holds no input buffer: idle connections are most of them. */
static void in_release(struct lconn *c)
{
    if (c->in_len || c->in_busy || c->ws_busy || c->dead)
        return;
    free(c->in);
    c->in = NULL;
    c->in_cap = c->in_off = 0;
}

static void lconn_free_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct lconn *c = w->data;
    dirty_forget(c);
    if (c->ws)
        wslay_event_context_free(c->ws);
    free(c->in);
    free(c->out);
    free(c);
}

static void lconn_close(struct lconn *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    ev_io_stop(listener_g.loop, &c->rw);
    ev_io_stop(listener_g.loop, &c->ww);
    ev_timer_stop(listener_g.loop, &c->idle);
    listener_detach_calls(&c->base);
    if (c->sid[0]) {
        listener_stream_clear(c->sid, &c->base);
        listener_session_end(c->sid);
    }
    log_debug("connection_closed", "{s:s,s:s,s:s}", "transport", lconn_transport(c), "reason",
              why, "sid", c->sid);
    listener_count_conn(lconn_transport(c), -1);
    ev_timer_stop(listener_g.loop, &c->ping);
    while (c->queued) {
        struct qmsg *q = c->queued;
        c->queued = q->next;
        free(q);
    }
    if (c->is_stdio) {
        /* The client closed stdin: the node it launched has nothing more to do. */
        const char *root = getenv("CMCP_ROOT_PID");
        if (root && atoi(root) > 1)
            kill((pid_t)atoi(root), SIGTERM);
    } else {
        close(c->in_fd);
    }
    /* Free on the next loop turn: callers up the stack may still touch c. */
    ev_timer_init(&c->idle, lconn_free_cb, 0, 0);
    c->idle.data = c;
    ev_timer_start(listener_g.loop, &c->idle);
}

static void send_line(struct lconn *c, const char *line, size_t len);

/*
 * After the client closed its side: once every message it sent has been answered (nothing
 * in flight, nothing held for the session id, no whole line left unread), the connection
 * ends when its answers have been written. `printf '…\n…\n' | cmcpd --stdio` prints
 * every answer before the node stops.
 */
static void lconn_eof_check(struct lconn *c)
{
    if (!c->eof || c->dead || c->closing)
        return;
    if (c->inflight > 0 || c->init_pending || c->queued || c->in_busy ||
        (c->in_len && memchr(c->in, '\n', c->in_len)))
        return;
    if (c->out_len == 0) {
        lconn_close(c, "end of input");
        return;
    }
    c->closing = true; /* lconn_flush closes it once the answers are out */
}

static void line_event(struct call *call, const struct wire_event *e)
{
    lconn_write_line((struct lconn *)call->conn, e->body, e->blen);
}

/* Sends queued WebSocket messages, in order, while the session has room for them. */
static void drain_queue(struct lconn *c)
{
    while (c->queued && !c->init_pending && !c->dead && c->inflight < LINE_MAX_INFLIGHT) {
        struct qmsg *q = c->queued;
        c->queued = q->next;
        if (!c->queued)
            c->queued_tail = &c->queued;
        send_line(c, q->text, q->len);
        free(q);
    }
}

static void line_done(struct call *call, const struct wire_reply *r)
{
    struct lconn *c = (struct lconn *)call->conn;
    c->inflight--;
    if (r->sid[0] && !c->sid[0]) {
        cmcp_strlcpy(c->sid, sizeof(c->sid), r->sid);
        listener_stream_set(c->sid, &c->base);
    }
    if (r->blen > 0)
        lconn_write_line(c, r->body, r->blen);
    if (c->init_pending && call->tdata == (void *)1) {
        c->init_pending = false;
        drain_queue(c); /* WebSocket messages that arrived while the session was made */
        lconn_process(c);
        in_release(c);
    } else if (c->queued) {
        drain_queue(c);
    }
    if (c->paused && c->inflight < LINE_MAX_INFLIGHT && !c->queued && !c->dead) {
        /* Answers went out: read the client again, starting with what waits in `in`. */
        c->paused = false;
        if (!c->closing && !c->eof)
            ev_io_start(listener_g.loop, &c->rw);
        lconn_process(c);
        in_release(c);
    }
    lconn_eof_check(c);
}

static const struct call_ops line_ops = {line_event, line_done};

static void line_stream_event(struct conn *conn, const struct wire_event *e)
{
    lconn_write_line((struct lconn *)conn, e->body, e->blen);
}

static void send_line(struct lconn *c, const char *line, size_t len)
{
    listener_count_msg(lconn_transport(c), true);
    if (!c->sid[0] && !c->init_pending && listener_draining()) {
        char *e = listener_rpc_error(NULL, -32000, LISTENER_DRAINING_MSG);
        c->closing = true;
        ev_io_stop(listener_g.loop, &c->rw);
        lconn_write_line(c, e, strlen(e));
        free(e);
        return;
    }
    struct auth_refusal ref;
    if (c->grant.denied &&
        !listener_auth_tools(&c->grant, line, len, lconn_transport(c), &ref)) {
        /* A tools/call the token may not make: refused as a JSON-RPC error, the connection
         * goes on (the token was checked at the upgrade; there is no HTTP status here). */
        if (ref.body)
            lconn_write_line(c, ref.body, strlen(ref.body));
        listener_auth_refusal_free(&ref);
        return;
    }
    struct wire_req req = {.op = WIRE_MSG, .body = line, .blen = len};
    cmcp_strlcpy(req.tr, sizeof(req.tr), lconn_transport(c));
    int shard = -1;
    void *tdata = NULL;
    if (c->sid[0]) {
        cmcp_strlcpy(req.sid, sizeof(req.sid), c->sid);
        shard = listener_route(c->sid); /* the shard gave us this id: it routes */
    } else {
        /* The first message creates the session; hold the rest until we know its id. */
        c->init_pending = true;
        tdata = (void *)1;
    }
    struct call *call = listener_call(&c->base, shard, &req, &line_ops, tdata);
    if (call)
        c->inflight++;
    if (!call) {
        char *e = listener_rpc_error(NULL, -32603, "Internal error: cannot reach a shard");
        lconn_write_line(c, e, strlen(e));
        free(e);
        c->init_pending = false;
    }
}

static void lconn_process(struct lconn *c)
{
    if (c->ws) {
        ws_pump(c);
        return;
    }
    if (c->in_busy)
        return; /* the outer call goes on with what is left */
    c->in_busy = true;
    size_t start = 0;
    while (!c->dead && !c->init_pending && start < c->in_len) {
        if (c->inflight >= LINE_MAX_INFLIGHT) {
            c->paused = true; /* line_done reads on */
            ev_io_stop(listener_g.loop, &c->rw);
            break;
        }
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (!nl)
            break;
        size_t len = (size_t)(nl - (c->in + start));
        char *line = c->in + start;
        start += len + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        bool blank = true;
        for (size_t i = 0; i < len && blank; i++)
            blank = line[i] == ' ' || line[i] == '\t';
        if (!blank)
            send_line(c, line, len);
    }
    if (start > 0) {
        memmove(c->in, c->in + start, c->in_len - start);
        c->in_len -= start;
    }
    c->in_busy = false;
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct lconn *c = w->data;
    char buf[65536];
    ssize_t n = read(c->in_fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n == 0 && !c->ws) {
        /* the client's side is closed: what it sent is still answered, then the end */
        c->eof = true;
        ev_io_stop(listener_g.loop, &c->rw);
        lconn_process(c);
        in_release(c);
        lconn_eof_check(c);
        return;
    }
    if (n <= 0) {
        lconn_close(c, n == 0 ? "end of input" : "read failed");
        return;
    }
    if (in_append(c, buf, (size_t)n) < 0) {
        lconn_close(c, "out of memory");
        return;
    }
    ev_timer_again(listener_g.loop, &c->idle);
    lconn_process(c);
    if (!c->dead && !c->ws && c->in_len > (size_t)listener_g.max_message &&
        !memchr(c->in, '\n', c->in_len)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "Request too large: a message exceeds the limit of %ld bytes "
                 "([listener] max_message_bytes); closing the connection",
                 listener_g.max_message);
        char *e = listener_rpc_error(NULL, -32600, msg);
        c->closing = true;
        ev_io_stop(listener_g.loop, &c->rw);
        lconn_write_line(c, e, strlen(e));
        free(e);
    }
    in_release(c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    lconn_flush(w->data);
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct lconn *c = w->data;
    if (c->base.calls) {
        ev_timer_again(listener_g.loop, w); /* a request is in progress: not idle */
        return;
    }
    lconn_close(c, "idle timeout");
}

/* ---- WebSocket ---- */

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *user)
{
    (void)flags;
    struct lconn *c = user;
    size_t avail = c->in_len - c->in_off;
    if (avail == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = avail < len ? avail : len;
    memcpy(buf, c->in + c->in_off, n);
    c->in_off += n;
    return (ssize_t)n;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                          void *user)
{
    (void)ctx;
    (void)flags;
    struct lconn *c = user;
    lconn_append(c, (const char *)data, len, false);
    return c->dead ? -1 : (ssize_t)len;
}

static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                      void *user)
{
    (void)ctx;
    struct lconn *c = user;
    if (arg->opcode == WSLAY_BINARY_FRAME) {
        /* MCP messages are JSON text; a binary frame is a protocol error (1003). */
        static const char why[] = "MCP messages are text frames";
        wslay_event_queue_close(c->ws, WSLAY_CODE_UNSUPPORTED_DATA, (const uint8_t *)why,
                                sizeof(why) - 1);
        return;
    }
    if (arg->opcode != WSLAY_TEXT_FRAME)
        return; /* ping/pong/close are answered by wslay */
    if (c->init_pending || c->queued || c->inflight >= LINE_MAX_INFLIGHT) {
        /* Before the session exists, or while it has as many requests in flight as the
         * engine takes: kept in order, and the connection is not read meanwhile. */
        if (!c->init_pending && !c->paused) {
            c->paused = true;
            ev_io_stop(listener_g.loop, &c->rw);
        }
        struct qmsg *q = malloc(sizeof(*q) + arg->msg_length);
        if (!q)
            return;
        q->next = NULL;
        q->len = arg->msg_length;
        memcpy(q->text, arg->msg, arg->msg_length);
        *c->queued_tail = q;
        c->queued_tail = &q->next;
        return;
    }
    send_line(c, (const char *)arg->msg, arg->msg_length);
}

/* Lets wslay read what arrived and write what is queued; closes when the close handshake ended. */
static void ws_pump(struct lconn *c)
{
    if (c->dead || c->ws_busy)
        return;
    c->ws_busy = true; /* wslay's callbacks may write, which pumps again: once is enough */
    if (wslay_event_want_read(c->ws) && c->in_off < c->in_len)
        wslay_event_recv(c->ws);
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (!c->dead && wslay_event_want_write(c->ws))
        wslay_event_send(c->ws);
    c->ws_busy = false;
    if (!c->dead && !wslay_event_want_read(c->ws) && !wslay_event_want_write(c->ws)) {
        /* Both close frames went, or an error ended the protocol: close once flushed. */
        c->closing = true;
        ev_io_stop(listener_g.loop, &c->rw);
        if (c->out_len == 0)
            lconn_close(c, "websocket closed");
    }
}

static void ping_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct lconn *c = w->data;
    struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"cmcp", 4};
    wslay_event_queue_msg(c->ws, &m);
    ws_pump(c);
}

static struct lconn *lconn_new(int in_fd, int out_fd, bool is_stdio)
{
    struct lconn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base.ops = is_stdio ? &stdio_ops : &tcp_ops;
    c->queued_tail = &c->queued;
    ev_init(&c->ping, ping_cb);
    c->ping.data = c;
    c->in_fd = in_fd;
    c->out_fd = out_fd;
    c->is_stdio = is_stdio;
    fcntl(in_fd, F_SETFL, fcntl(in_fd, F_GETFL) | O_NONBLOCK);
    fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) | O_NONBLOCK);
    ev_io_init(&c->rw, read_cb, in_fd, EV_READ);
    c->rw.data = c;
    ev_io_init(&c->ww, write_cb, out_fd, EV_WRITE);
    c->ww.data = c;
    ev_init(&c->idle, idle_cb);
    c->idle.repeat = is_stdio ? 0 : listener_g.idle_timeout;
    c->idle.data = c;
    ev_io_start(listener_g.loop, &c->rw);
    if (!is_stdio)
        ev_timer_again(listener_g.loop, &c->idle);
    listener_count_conn(is_stdio ? "stdio" : "tcp", 1);
    return c;
}

static void tcp_accepted(struct sock_acceptor *a, int fd)
{
    (void)a;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (!lconn_new(fd, fd, false))
        close(fd);
}

/* TCP on [listener] tcp_port; stdio on listener 0 of a `cmcpd --stdio` node. */
static int line_start(void)
{
    struct cfg *c = listener_g.cfg;
    long port = cfg_get_long(c, "listener", "tcp_port", 8081);
    if (port > 0 && listener_listen(&tcp_acceptor, cfg_get(c, "listener", "tcp_bind", "127.0.0.1"),
                                    (int)port, "tcp", tcp_accepted) != 0)
        return -1;
    if (listener_g.index == 0 && getenv("CMCP_STDIO") && !lconn_new(0, 1, true))
        return -1;
    return 0;
}

static int ws_adopt(int fd, const char *answer, size_t answer_len, const char *early,
                    size_t early_len, const struct oauth_grant *grant)
{
    struct lconn *c = lconn_new(fd, fd, false);
    if (!c) {
        close(fd);
        return -1;
    }
    if (grant)
        c->grant = *grant;
    static const struct wslay_event_callbacks cbs = {ws_recv_cb, ws_send_cb, NULL, NULL,
                                                      NULL,       NULL,       ws_msg_cb};
    if (wslay_event_context_server_init(&c->ws, &cbs, c) != 0) {
        lconn_close(c, "out of memory");
        return -1;
    }
    c->base.ops = &ws_ops;
    listener_count_conn("tcp", -1);
    listener_count_conn("websocket", 1);
    /* A message over the limit ends the connection with close code 1009 (too big). */
    wslay_event_config_set_max_recv_msg_length(c->ws, (uint64_t)listener_g.max_message);
    c->ping.repeat = listener_g.keepalive;
    ev_timer_again(listener_g.loop, &c->ping);
    lconn_append(c, answer, answer_len, false); /* the 101 goes out before any frame */
    if (early_len) {
        if (in_append(c, early, early_len) < 0) {
            lconn_close(c, "out of memory");
            return -1;
        }
        lconn_process(c);
        in_release(c);
    }
    return 0;
}

const struct transport listener_line_transport = {"line", line_start, "websocket", ws_adopt};
