/*
 * Streamable HTTP on the listener (MCP 2025-11-25 "Transports"): POST a
 * message, GET a standalone stream, DELETE a session, on one endpoint.
 *
 * A connection serves one request at a time (HTTP/1.1 has no multiplexing);
 * pipelined requests wait in the parser. A POST is answered with JSON when
 * its request finishes without emitting anything, and turns into an SSE
 * stream at its first event (progress, log message, server request). Every
 * SSE event carries the id "<stream>-<seq>" the shard gave it, so a client
 * that lost a stream resumes it with GET + Last-Event-ID.
 */
#define _GNU_SOURCE
#include "workers/listener/listener_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nettle/base64.h>
#include <nettle/sha1.h>

#include "base/cmcp.h"
#include "workers/http/http.h"
#include "base/log.h"
#include "ipc/dlink.h"
#include "ipc/sock.h"

#define OUT_MAX (64L << 20)
#define READ_TIMEOUT 30.0 /* a request that takes longer to arrive is cut off (408) */

enum hstate { H_IDLE, H_WAIT, H_SSE, H_DEAD };

struct hconn {
    struct conn base;
    int fd;
    int resume_stream;
    uint64_t follow_tok; /* a resumed stream's request running elsewhere, moved here */
    ev_io rw, ww;
    ev_timer timer; /* idle/read timeout, keep-alive comments while streaming */
    struct http_conn parser;
    struct http_buf out;
    struct http_request *req; /* the request being answered */
    enum hstate state;
    bool keep_alive, chunked, close_after;
    bool standalone; /* the SSE stream is a GET stream (registered by session) */
    bool legacy;     /* the stream of a 2024-11-05 HTTP+SSE session (GET /sse) */
    bool buffering;  /* GET stream waiting for its replay: events are held */
    json_t *held;    /* [ [stream, seq, text], ... ] held while buffering */
    long last_seq;   /* highest seq written on this stream */
    char *sid; /* the session of a GET or legacy stream, else NULL (most connections) */
    struct oauth_grant grant; /* [auth]: what the current request's token may do */
};

static struct mcp_http_policy policy;
static const char *versions[] = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25",
                                 "2026-07-28"};
static char origins_buf[32][64], hosts_buf[32][64];
static const char *origins[32], *hosts[32];
static struct sock_acceptor acceptor;

static void http_stream_event(struct conn *conn, const struct wire_event *e);
static const struct conn_ops http_conn_ops = {"http", http_stream_event};

static void hconn_close(struct hconn *h, const char *why);
static void hconn_next(struct hconn *h);

/* Remembers the session whose stream this connection carries; false when out of memory. */
static bool hconn_set_sid(struct hconn *h, const char *sid)
{
    char *copy = strdup(sid);
    if (!copy)
        return false;
    free(h->sid);
    h->sid = copy;
    return true;
}

static void hconn_flush(struct hconn *h)
{
    if (h->state == H_DEAD)
        return;
    while (h->out.len > 0) {
        ssize_t n = send(h->fd, h->out.data, h->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            ev_io_start(listener_g.loop, &h->ww);
            return;
        }
        if (n <= 0) {
            hconn_close(h, "write failed");
            return;
        }
        http_buf_consume(&h->out, (size_t)n);
    }
    /* Everything went: an idle connection keeps no output buffer (the next answer allocates). */
    http_buf_free(&h->out);
    ev_io_stop(listener_g.loop, &h->ww);
    if (h->close_after && h->state != H_SSE && h->state != H_WAIT)
        hconn_close(h, "response sent, connection: close");
}

static void hconn_send(struct hconn *h)
{
    if (h->out.failed || h->out.len > (size_t)OUT_MAX) {
        hconn_close(h, h->out.failed ? "out of memory" : "client does not read");
        return;
    }
    if (!ev_is_active(&h->ww))
        hconn_flush(h);
}

/* Ends the current request: the connection goes on with the next one, or closes. */
static void hconn_request_done(struct hconn *h)
{
    if (h->state == H_DEAD)
        return;
    if (h->standalone && h->sid)
        listener_stream_clear(h->sid, &h->base);
    if (!h->legacy) { /* a legacy stream's session ends with the connection: keep its id */
        free(h->sid);
        h->sid = NULL;
    }
    h->standalone = h->buffering = false;
    json_decref(h->held);
    h->held = NULL;
    http_request_free(h->req);
    h->req = NULL;
    h->state = H_IDLE;
    if (!h->keep_alive)
        h->close_after = true;
    ev_timer_stop(listener_g.loop, &h->timer);
    ev_timer_set(&h->timer, listener_g.idle_timeout, 0);
    ev_timer_start(listener_g.loop, &h->timer);
    hconn_send(h);
    if (h->state == H_IDLE && !h->close_after)
        hconn_next(h);
}

static void write_json(struct hconn *h, int status, const char *sid, const char *body, size_t len)
{
    if (len)
        listener_count_msg("http", false);
    http_write_status(&h->out, status);
    http_write_connection(&h->out, h->req, h->keep_alive);
    if (sid)
        http_write_header(&h->out, "Mcp-Session-Id", sid);
    if (status == 503)
        http_write_header(&h->out, "Retry-After", "1"); /* a fenced node, a restarting shard */
    if (len)
        http_write_body(&h->out, "application/json", body, len);
    else
        http_write_body(&h->out, NULL, "", 0);
}

static void write_error(struct hconn *h, int status, const json_t *id, int code, const char *msg)
{
    char *body = listener_rpc_error(id, code, msg);
    write_json(h, status, NULL, body, body ? strlen(body) : 0);
    free(body);
    hconn_request_done(h);
}

/* [auth] said no: 401 or 403 with the WWW-Authenticate a client follows (auth.c). */
static void write_refusal(struct hconn *h, struct auth_refusal *ref)
{
    size_t len = ref->body ? strlen(ref->body) : 0;
    listener_count_msg("http", false);
    http_write_status(&h->out, ref->status);
    http_write_connection(&h->out, h->req, h->keep_alive);
    if (ref->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", ref->retry_after);
        http_write_header(&h->out, "Retry-After", ra);
    } else {
        http_write_header(&h->out, "WWW-Authenticate", ref->www);
    }
    http_write_body(&h->out, "application/json", ref->body ? ref->body : "", len);
    listener_auth_refusal_free(ref);
    hconn_request_done(h);
}

/* A tools/call the token may not make ([auth] tool_scopes): refused, true. */
static bool tool_refused(struct hconn *h, const char *body, size_t len)
{
    struct auth_refusal ref;
    if (!h->grant.denied || listener_auth_tools(&h->grant, body, len, "http", &ref))
        return false;
    write_refusal(h, &ref);
    return true;
}

static void sse_begin(struct hconn *h, const char *sid)
{
    http_write_status(&h->out, 200);
    http_write_connection(&h->out, h->req, h->keep_alive);
    if (sid)
        http_write_header(&h->out, "Mcp-Session-Id", sid);
    h->chunked = http_request_can_chunk(h->req);
    if (!h->chunked)
        h->keep_alive = false; /* the stream ends when the connection does */
    http_write_sse_start(&h->out, h->chunked);
    h->state = H_SSE;
    ev_timer_stop(listener_g.loop, &h->timer);
    ev_timer_set(&h->timer, listener_g.keepalive, listener_g.keepalive);
    ev_timer_start(listener_g.loop, &h->timer);
    hconn_send(h); /* the client learns its stream is open even before any event */
}

static void sse_event(struct hconn *h, long stream, long seq, const char *data, size_t len)
{
    listener_count_msg("http", false);
    char id[MCP_SSE_ID_MAX];
    struct http_sse_event ev = {NULL, "message", data, len, 0};
    if (seq > 0) {
        mcp_sse_id_format(id, sizeof(id), (uint64_t)stream, (uint64_t)seq);
        ev.id = id;
        if (seq > h->last_seq)
            h->last_seq = seq;
    }
    http_sse_write(&h->out, &ev, h->chunked);
    hconn_send(h);
}

/*
 * The priming event that opens a session's SSE stream: an id and no data, so a client that
 * loses the stream before any message can still resume it with Last-Event-ID from its very
 * start (Streamable HTTP's SHOULD). seq is the stream's position before its first event;
 * retry_ms > 0 also says how long to wait before resuming.
 */
static void sse_prime(struct hconn *h, long stream, long seq, int retry_ms)
{
    char id[MCP_SSE_ID_MAX];
    mcp_sse_id_format(id, sizeof(id), (uint64_t)stream, (uint64_t)seq);
    struct http_sse_event ev = {id, NULL, "", 0, retry_ms};
    http_sse_write(&h->out, &ev, h->chunked);
    hconn_send(h);
}

static void sse_end(struct hconn *h)
{
    http_write_stream_end(&h->out, h->chunked);
    hconn_request_done(h);
}

/* ---- POST ---- */

#define RECONNECT_RETRY_MS 500 /* what a client whose stream we close waits before resuming */

static void post_event(struct call *c, const struct wire_event *e)
{
    struct hconn *h = (struct hconn *)c->conn;
    if (h->state == H_WAIT) {
        sse_begin(h, NULL);
        /* A stateless (2026-07-28) stream cannot be resumed (a GET needs a session): no
         * priming event, which exists for resumption only. */
        if (!c->stateless)
            sse_prime(h, e->stream, 0, 0);
    }
    if (e->close) {
        /* The request goes on, but this stream ends: a priming event gives the client an id
         * to resume from and the delay before it should. */
        sse_prime(h, e->stream, (long)e->seq, RECONNECT_RETRY_MS);
        listener_call_detach(c);
        sse_end(h);
        return;
    }
    sse_event(h, e->stream, (long)e->seq, e->body, e->blen);
}

static void post_done(struct call *c, const struct wire_reply *r)
{
    struct hconn *h = (struct hconn *)c->conn;
    int st = r->st;
    if (h->state == H_SSE) {
        if (r->blen)
            sse_event(h, r->stream, (long)r->seq, r->body, r->blen);
        sse_end(h);
        return;
    }
    if (st == 200 && r->blen == 0)
        st = 202;
    if (st == 200 || st == 202)
        write_json(h, st, r->sid[0] ? r->sid : NULL, r->body, st == 200 ? r->blen : 0);
    else
        write_json(h, st ? st : 502, NULL, r->body, r->blen);
    hconn_request_done(h);
}

static const struct call_ops post_ops = {post_event, post_done};

static int route(struct hconn *h, const char *sid)
{
    /* a session another member owns is forwarded to it (calls.c) */
    int shard = listener_route(sid);
    if (shard < 0) {
        write_error(h, 404, NULL, -32001,
                    "Session not found: it expired or was deleted. Initialize a new session");
        return -1;
    }
    return shard;
}

static void handle_post(struct hconn *h, const char *sid, const char *version)
{
    struct http_request *r = h->req;
    struct wire_req req = {.op = WIRE_MSG, .tr = "http", .pv = version, .body = r->body,
                           .blen = r->body_len};
    int shard = -1;
    if (sid) {
        if ((shard = route(h, sid)) < 0)
            return;
        cmcp_strlcpy(req.sid, sizeof(req.sid), sid);
    }
    if (!sid && listener_draining()) {
        write_error(h, 503, NULL, -32000, LISTENER_DRAINING_MSG);
        return;
    }
    h->state = H_WAIT;
    struct call *c = listener_call(&h->base, shard, &req, &post_ops, NULL);
    if (c && sid)
        cmcp_strlcpy(c->sid, sizeof(c->sid), sid);
    if (!c) {
        h->state = H_IDLE;
        write_error(h, 503, NULL, -32603, "Internal error: cannot reach a shard; retry");
    }
}

/* ---- the stateless 2026-07-28 revision: no session, any shard ---- */

/* The Mcp-Param-* headers (SEP-2243) as {suffix in lower case: value}, or NULL for none:
 * the shard checks them against the arguments the tool marks "x-mcp-header". */
static json_t *param_headers(const struct http_request *r)
{
    static const char prefix[] = "mcp-param-";
    const size_t plen = sizeof(prefix) - 1;
    json_t *o = NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct http_header *hd = &r->headers[i];
        if (hd->name_len <= plen || strncasecmp(hd->name, prefix, plen) != 0)
            continue;
        char key[128];
        size_t n = hd->name_len - plen < sizeof(key) - 1 ? hd->name_len - plen : sizeof(key) - 1;
        for (size_t k = 0; k < n; k++)
            key[k] = (char)tolower((unsigned char)hd->name[plen + k]);
        key[n] = '\0';
        if (!o)
            o = json_object();
        if (o && !json_object_get(o, key)) /* a repeated header: the first counts */
            json_object_set_new(o, key, json_stringn(hd->value, hd->value_len));
    }
    return o;
}

static void handle_stateless(struct hconn *h)
{
    struct http_request *r = h->req;
    struct wire_req req = {.op = WIRE_STATELESS,
                           .http = true,
                           .pv = http_request_header(r, "MCP-Protocol-Version"),
                           .mm = http_request_header(r, "Mcp-Method"),
                           .mn = http_request_header(r, "Mcp-Name"),
                           .body = r->body,
                           .blen = r->body_len};
    json_t *mp = param_headers(r);
    req.mp = mp;
    h->state = H_WAIT;
    /* A 2026 task lives in the shard (and node) that made it: its id is shaped like a session
     * id and names it, and tasks/get, tasks/update and tasks/cancel carry it in Mcp-Name (the
     * engine refuses a request whose Mcp-Name is not its taskId, so routing on the header is
     * safe). Anything else goes to any shard. */
    int shard = -1;
    if (req.mm && req.mn && strncmp(req.mm, "tasks/", 6) == 0 &&
        (shard = listener_route(req.mn)) >= 0)
        snprintf(req.sid, sizeof(req.sid), "%s", req.mn);
    else
        shard = -1;
    struct call *c = listener_call(&h->base, shard, &req, &post_ops, NULL);
    json_decref(mp); /* framed into the request by now */
    if (!c) {
        h->state = H_IDLE;
        write_error(h, 503, NULL, -32603, "Internal error: cannot reach a shard; retry");
        return;
    }
    c->stateless = true;
    /* subscriptions/listen never answers: the request timeout must not end it (the engine
     * refuses a Mcp-Method that does not match the body, so the header can be trusted) */
    if (req.mm && strcmp(req.mm, "subscriptions/listen") == 0) {
        c->endless = true;
        if (!c->sending)
            ev_timer_stop(listener_g.loop, &c->timer);
    }
}

/* ---- GET: the standalone stream, or a resumed one ---- */

/* A request still running whose stream a client resumed on this connection. */
static void resumed_event(struct call *c, const struct wire_event *e)
{
    http_stream_event(c->conn, e);
}

static void resumed_done(struct call *c, const struct wire_reply *r)
{
    struct hconn *h = (struct hconn *)c->conn;
    long seq = (long)r->seq;
    if (h->buffering) {
        /* The replay has not been written yet; it will include this final event. */
        if (r->blen) {
            if (!h->held)
                h->held = json_array();
            json_array_append_new(h->held, json_pack("[i,I,s#,b]", h->resume_stream,
                                                     (json_int_t)seq, r->body, (int)r->blen, 1));
        }
        return;
    }
    if (h->state == H_SSE) {
        if (r->blen && seq > h->last_seq)
            sse_event(h, h->resume_stream, seq, r->body, r->blen);
        sse_end(h);
    }
}

static const struct call_ops resumed_ops = {resumed_event, resumed_done};

static void get_done(struct call *c, const struct wire_reply *r)
{
    struct hconn *h = (struct hconn *)c->conn;
    if (r->st != 200) {
        if (h->follow_tok)
            listener_call_forget(h->follow_tok);
        h->follow_tok = 0;
        write_json(h, r->st ? r->st : 502, NULL, r->body, r->blen);
        hconn_request_done(h);
        return;
    }
    long stream = r->stream;
    if (h->follow_tok && !r->followed) {
        /* the request was not running elsewhere (it ended, or never streamed there) */
        listener_call_forget(h->follow_tok);
    }
    h->follow_tok = 0;
    sse_begin(h, NULL);
    /* r->seq: where the shard starts this stream (the resumed id, or what earlier GET
     * streams were already offered) */
    sse_prime(h, stream, (long)r->seq, 0);
    json_t *evs = r->data;
    size_t i;
    json_t *e;
    json_array_foreach(evs, i, e)
    {
        const char *t = json_string_value(json_array_get(e, 2));
        sse_event(h, stream, (long)json_integer_value(json_array_get(e, 1)), t, strlen(t));
    }
    if (h->state != H_SSE)
        return;
    /* Events that arrived live while the replay was prepared, past what it covered. */
    h->buffering = false;
    json_array_foreach(h->held, i, e)
    {
        long seq = (long)json_integer_value(json_array_get(e, 1));
        const char *t = json_string_value(json_array_get(e, 2));
        if (seq > h->last_seq)
            sse_event(h, stream, seq, t, strlen(t));
    }
    bool ended = false;
    json_array_foreach(h->held, i, e) ended |= json_is_true(json_array_get(e, 3));
    json_decref(h->held);
    h->held = NULL;
    if (stream != 0 && (ended || r->done ||
                        !listener_call_by_stream(h->sid, (int)stream)))
        sse_end(h);
}

static const struct call_ops get_ops = {NULL, get_done};

static void http_stream_event(struct conn *conn, const struct wire_event *e)
{
    struct hconn *h = (struct hconn *)conn;
    if (e->stream != h->resume_stream)
        return;
    if (h->buffering) {
        if (!h->held)
            h->held = json_array();
        json_array_append_new(h->held, json_pack("[i,I,s#]", e->stream, (json_int_t)e->seq,
                                                 e->body, (int)e->blen));
        return;
    }
    if (h->state == H_SSE)
        sse_event(h, e->stream, (long)e->seq, e->body, e->blen);
}

static void handle_get(struct hconn *h, const char *sid)
{
    if (!sid) {
        write_error(h, 400, NULL, -32000,
                    "Bad Request: GET opens a session's stream and needs its Mcp-Session-Id "
                    "header");
        return;
    }
    int shard = route(h, sid);
    if (shard < 0)
        return;
    struct wire_req req = {.op = WIRE_STREAM};
    snprintf(req.sid, sizeof(req.sid), "%s", sid);
    h->resume_stream = 0;
    const char *last = http_request_header(h->req, "Last-Event-ID");
    if (last) {
        uint64_t stream, seq;
        if (mcp_sse_id_parse(last, &stream, &seq) != 0) {
            write_error(h, 400, NULL, -32000, "Bad Request: Last-Event-ID is not an id this "
                                              "server sent");
            return;
        }
        req.resume = true;
        req.last_stream = (int)stream;
        req.last_seq = (int64_t)seq;
        h->resume_stream = (int)stream;
        h->last_seq = (long)seq;
    }
    if (!hconn_set_sid(h, sid)) {
        write_error(h, 503, NULL, -32603, "Internal error: out of memory; retry");
        return;
    }
    /* Register before asking, so events that cross the replay are held, not lost. */
    h->standalone = true;
    h->buffering = true;
    if (h->resume_stream == 0) {
        listener_stream_set(sid, &h->base);
    } else {
        struct call *running = listener_call_by_stream(sid, h->resume_stream);
        if (running) {
            listener_call_attach(running, &h->base, &resumed_ops);
        } else {
            /* it may be running on another listener or node: the shard moves it here */
            struct call *f =
                listener_call_expect(&h->base, shard, sid, h->resume_stream, &resumed_ops);
            if (f)
                req.follow_tok = h->follow_tok = f->tok;
        }
    }
    h->state = H_WAIT;
    struct call *c = listener_call(&h->base, shard, &req, &get_ops, NULL);
    if (!c) {
        if (h->follow_tok)
            listener_call_forget(h->follow_tok);
        h->follow_tok = 0;
        h->state = H_IDLE;
        write_error(h, 503, NULL, -32603, "Internal error: cannot reach a shard; retry");
    }
}

/* ---- DELETE ---- */

static void delete_done(struct call *c, const struct wire_reply *r)
{
    struct hconn *h = (struct hconn *)c->conn;
    write_json(h, r->st ? r->st : 502, NULL, r->body, r->st == 200 ? 0 : r->blen);
    hconn_request_done(h);
}

static const struct call_ops delete_ops = {NULL, delete_done};

static void handle_delete(struct hconn *h, const char *sid)
{
    if (!sid) {
        write_error(h, 400, NULL, -32000, "Bad Request: DELETE needs the Mcp-Session-Id header");
        return;
    }
    int shard = route(h, sid);
    if (shard < 0)
        return;
    struct wire_req req = {.op = WIRE_DELETE};
    snprintf(req.sid, sizeof(req.sid), "%s", sid);
    h->state = H_WAIT;
    struct call *c = listener_call(&h->base, shard, &req, &delete_ops, NULL);
    if (!c) {
        h->state = H_IDLE;
        write_error(h, 503, NULL, -32603, "Internal error: cannot reach a shard; retry");
    }
}

/* ---- WebSocket upgrade (/mcp/ws, RFC 6455) ---- */

static void hconn_release(struct hconn *h);

static void handle_ws(struct hconn *h)
{
    struct http_request *r = h->req;
    const char *key = http_request_header(r, "Sec-WebSocket-Key");
    const char *ver = http_request_header(r, "Sec-WebSocket-Version");
    const char *host = http_request_header(r, "Host");
    const char *origin = http_request_header(r, "Origin");
    const char *msg = NULL;
    int status = 400;
    if (r->method != HTTP_GET)
        msg = "WebSocket needs GET", status = 405;
    else if (!host || !mcp_http_host_allowed(&policy, host))
        msg = "Host not allowed", status = 403;
    else if (origin && !mcp_http_origin_allowed(&policy, origin))
        msg = "Origin not allowed", status = 403;
    else if (!r->upgrade || !http_request_header_has_token(r, "Upgrade", "websocket"))
        msg = "Upgrade: websocket required (this is the WebSocket endpoint; HTTP clients use /mcp)",
        status = 426;
    else if (!ver || strcmp(ver, "13") != 0)
        msg = "Sec-WebSocket-Version 13 required", status = 426;
    else if (!key || strlen(key) != 24)
        msg = "Sec-WebSocket-Key missing or malformed";
    const char *proto = http_request_header(r, "Sec-WebSocket-Protocol");
    if (!msg && proto && !http_request_header_has_token(r, "Sec-WebSocket-Protocol", "mcp"))
        msg = "unsupported subprotocol: this endpoint speaks 'mcp'";
    if (msg) {
        char *body = listener_rpc_error(NULL, -32000, msg);
        http_write_status(&h->out, status);
        if (status == 426)
            http_write_header(&h->out, "Sec-WebSocket-Version", "13");
        http_write_connection(&h->out, r, false);
        http_write_body(&h->out, "application/json", body, body ? strlen(body) : 0);
        free(body);
        h->keep_alive = false;
        hconn_request_done(h);
        return;
    }
    /* Sec-WebSocket-Accept = base64(SHA-1(key + the RFC's GUID)). */
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    struct sha1_ctx sha;
    uint8_t digest[SHA1_DIGEST_SIZE];
    char accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE) + 1];
    sha1_init(&sha);
    sha1_update(&sha, strlen(key), (const uint8_t *)key);
    sha1_update(&sha, sizeof(guid) - 1, (const uint8_t *)guid);
    sha1_digest(&sha, SHA1_DIGEST_SIZE, digest);
    base64_encode_raw(accept, SHA1_DIGEST_SIZE, digest);
    accept[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
    struct http_buf ans = {0};
    http_write_status(&ans, 101);
    http_write_header(&ans, "Upgrade", "websocket");
    http_write_header(&ans, "Connection", "Upgrade");
    http_write_header(&ans, "Sec-WebSocket-Accept", accept);
    if (proto)
        http_write_header(&ans, "Sec-WebSocket-Protocol", "mcp");
    http_buf_append(&ans, "\r\n", 2);
    size_t early_len = 0;
    const char *early = http_conn_upgrade_data(&h->parser, &early_len);
    int fd = h->fd;
    /* Whatever this connection still had to send goes first. */
    if (h->out.len)
        http_buf_append(&h->out, ans.data, ans.len);
    struct http_buf *first = h->out.len ? &h->out : &ans;
    if (ans.failed) {
        http_buf_free(&ans);
        hconn_close(h, "websocket start failed: out of memory");
        return;
    }
    int rc = listener_adopt("websocket", fd, first->data, first->len, early, early_len,
                            listener_auth_on() ? &h->grant : NULL);
    http_buf_free(&ans);
    if (rc != 0) {
        h->fd = -1; /* the WebSocket side closed it */
        hconn_close(h, "websocket start failed");
        return;
    }
    http_buf_reset(&h->out);
    hconn_release(h); /* the socket belongs to the WebSocket connection now */
}

/* ---- the deprecated HTTP+SSE transport (2024-11-05): GET /sse, POST /messages ---- */

/* Host and Origin as on /mcp; the legacy transport has no version or Accept rules. */
static bool legacy_origin_ok(struct hconn *h)
{
    const char *host = http_request_header(h->req, "Host");
    const char *origin = http_request_header(h->req, "Origin");
    if ((host && !mcp_http_host_allowed(&policy, host)) ||
        (origin && !mcp_http_origin_allowed(&policy, origin))) {
        write_error(h, 403, NULL, -32000, "Forbidden: Host or Origin not allowed");
        return false;
    }
    return true;
}

static void sse_open_done(struct call *c, const struct wire_reply *r)
{
    struct hconn *h = (struct hconn *)c->conn;
    const char *sid = r->sid;
    if (r->st != 200 || !sid[0]) {
        write_json(h, r->st ? r->st : 502, NULL, r->body, r->blen);
        hconn_request_done(h);
        return;
    }
    if (!hconn_set_sid(h, sid)) {
        write_error(h, 503, NULL, -32603, "Internal error: out of memory; retry");
        return;
    }
    h->legacy = true;
    h->standalone = true;
    h->resume_stream = 0;
    listener_stream_set(sid, &h->base);
    sse_begin(h, NULL);
    char url[200];
    snprintf(url, sizeof(url), "/messages?sessionId=%s", sid);
    struct http_sse_event ev = {NULL, "endpoint", url, strlen(url), 0};
    http_sse_write(&h->out, &ev, h->chunked);
    hconn_send(h);
}

static const struct call_ops sse_open_ops = {NULL, sse_open_done};

static void handle_legacy_sse(struct hconn *h)
{
    if (h->req->method != HTTP_GET) {
        write_error(h, 405, NULL, -32000, "Method not allowed: GET /sse opens the stream");
        return;
    }
    if (!legacy_origin_ok(h))
        return;
    if (listener_draining()) {
        write_error(h, 503, NULL, -32000, LISTENER_DRAINING_MSG);
        return;
    }
    struct wire_req req = {.op = WIRE_OPEN};
    h->state = H_WAIT;
    struct call *c = listener_call(&h->base, -1, &req, &sse_open_ops, NULL);
    if (!c) {
        h->state = H_IDLE;
        write_error(h, 503, NULL, -32603, "Internal error: cannot reach a shard; retry");
    }
}

/* Everything a legacy request produces goes to its session's stream as `event: message`. */
static void legacy_write(struct call *c, const char *body, size_t len)
{
    struct hconn *s = (struct hconn *)c->conn;
    if (!len || s->state != H_SSE)
        return;
    struct http_sse_event ev = {NULL, "message", body, len, 0};
    http_sse_write(&s->out, &ev, s->chunked);
    hconn_send(s);
}

static void legacy_event(struct call *c, const struct wire_event *e)
{
    legacy_write(c, e->body, e->blen);
}

static void legacy_done(struct call *c, const struct wire_reply *r)
{
    legacy_write(c, r->body, r->blen);
}

static const struct call_ops legacy_ops = {legacy_event, legacy_done};

static void handle_legacy_post(struct hconn *h)
{
    struct http_request *r = h->req;
    char sid[MCP_SESSION_ID_MAX + 1];
    if (r->method != HTTP_POST) {
        write_error(h, 405, NULL, -32000, "Method not allowed: POST /messages?sessionId=...");
        return;
    }
    if (!legacy_origin_ok(h))
        return;
    if (http_request_query_param(r, "sessionId", sid, sizeof(sid)) < 0) {
        write_error(h, 400, NULL, -32000, "Bad Request: /messages needs ?sessionId= from the "
                                          "endpoint event");
        return;
    }
    struct conn *stream = listener_stream_get(sid);
    if (!stream || stream->ops != &http_conn_ops || !((struct hconn *)stream)->legacy) {
        write_error(h, 404, NULL, -32001, "Session not found: open GET /sse again");
        return;
    }
    if (!mcp_http_content_is_json(r)) {
        write_error(h, 415, NULL, -32000, "Unsupported Media Type: send application/json");
        return;
    }
    if (tool_refused(h, r->body, r->body_len))
        return;
    struct wire_req req = {.op = WIRE_MSG, .tr = "sse", .body = r->body, .blen = r->body_len};
    snprintf(req.sid, sizeof(req.sid), "%s", sid);
    struct call *c = listener_call(stream, listener_route(sid), &req, &legacy_ops, NULL);
    if (!c) {
        write_error(h, 503, NULL, -32603, "Internal error: cannot reach a shard; retry");
        return;
    }
    /* Accepted: the answer travels on the session's stream. */
    write_json(h, 202, NULL, "", 0);
    hconn_request_done(h);
}

/* ---- dispatch ---- */

static bool path_is(const struct http_request *r, const char *p, size_t n)
{
    return r->path_len == n && memcmp(r->path, p, n) == 0;
}

/*
 * [auth] (auth.c): the RFC 9728 metadata is public; every MCP endpoint (Streamable HTTP,
 * the WebSocket upgrade, both legacy HTTP+SSE ones) needs a valid bearer token. True when
 * this function answered the request.
 */
static bool auth_answered(struct hconn *h)
{
    struct http_request *r = h->req;
    size_t mlen = 0;
    const char *md = listener_auth_metadata(r->path, r->path_len, &mlen);
    if (md) {
        if (r->method != HTTP_GET) {
            write_error(h, 405, NULL, -32000, "Method not allowed: GET the metadata");
            return true;
        }
        listener_count_msg("http", false);
        http_write_status(&h->out, 200);
        http_write_connection(&h->out, r, h->keep_alive);
        http_write_header(&h->out, "Cache-Control", "max-age=300");
        http_write_body(&h->out, "application/json", md, mlen);
        hconn_request_done(h);
        return true;
    }
    if (!path_is(r, "/mcp", 4) && !path_is(r, "/mcp/ws", 7) && !path_is(r, "/sse", 4) &&
        !path_is(r, "/messages", 9))
        return false;
    struct auth_refusal ref;
    if (!listener_auth_request(http_request_header(r, "Authorization"), "http", &h->grant,
                               &ref)) {
        write_refusal(h, &ref);
        return true;
    }
    return false;
}

static void handle(struct hconn *h)
{
    struct http_request *r = h->req;
    listener_count_msg("http", true);
    h->keep_alive = r->keep_alive;
    h->last_seq = 0;
    if (listener_auth_on() && auth_answered(h))
        return;
    if (r->path_len == 7 && memcmp(r->path, "/mcp/ws", 7) == 0) {
        handle_ws(h);
        return;
    }
    if (r->path_len == 4 && memcmp(r->path, "/sse", 4) == 0) {
        handle_legacy_sse(h);
        return;
    }
    if (r->path_len == 9 && memcmp(r->path, "/messages", 9) == 0) {
        handle_legacy_post(h);
        return;
    }
    if (!(r->path_len == 4 && memcmp(r->path, "/mcp", 4) == 0)) {
        const char *msg = "{\"error\":\"not found: the MCP endpoints are /mcp (Streamable HTTP), "
                          "/mcp/ws (WebSocket) and /sse (HTTP+SSE, 2024-11-05)\"}";
        write_json(h, 404, NULL, msg, strlen(msg));
        hconn_request_done(h);
        return;
    }
    struct mcp_http_verdict v = mcp_http_check(r, &policy);
    if (v.reason != MCP_HTTP_OK) {
        /* The error names the request it answers when the body says which. */
        json_t *body = r->method == HTTP_POST ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
        mcp_http_write_verdict(&h->out, r, &v, &policy, json_object_get(body, "id"),
                               h->keep_alive);
        json_decref(body);
        hconn_request_done(h);
        return;
    }
    if (r->method == HTTP_POST && tool_refused(h, r->body, r->body_len))
        return;
    if (r->method == HTTP_POST && mcp_http_is_stateless(r)) {
        handle_stateless(h);
        return;
    }
    const char *sid = http_request_header(r, "Mcp-Session-Id");
    if (sid && !mcp_http_session_id_valid(sid)) {
        write_error(h, 400, NULL, -32000, "Bad Request: malformed Mcp-Session-Id header");
        return;
    }
    if (r->method == HTTP_POST)
        handle_post(h, sid, v.version);
    else if (r->method == HTTP_GET)
        handle_get(h, sid);
    else
        handle_delete(h, sid);
}

/*
 * Expect: 100-continue. The interim answer may go out only when every earlier
 * response is complete (responses leave in request order).
 */
static void maybe_continue(struct hconn *h)
{
    if (h->state != H_IDLE || h->req || http_conn_ready(&h->parser) > 0)
        return;
    if (!http_conn_expecting_continue(&h->parser))
        return;
    http_write_continue(&h->out);
    http_conn_continue_sent(&h->parser);
    hconn_send(h);
}

static void hconn_next(struct hconn *h)
{
    while (h->state == H_IDLE && !h->close_after) {
        struct http_request *r = http_conn_take(&h->parser);
        if (!r)
            break;
        h->req = r;
        handle(h);
    }
    maybe_continue(h);
    if (h->state == H_IDLE && !h->close_after) {
        const char *detail = NULL;
        int err = http_conn_error(&h->parser, &detail);
        if (err) {
            char msg[200];
            snprintf(msg, sizeof(msg), "%s", detail ? detail : http_reason_phrase(err));
            char *body = listener_rpc_error(NULL, err == 413 ? -32600 : -32700, msg);
            http_buf_appendf(&h->out, "HTTP/1.1 %d %s\r\nConnection: close\r\n", err,
                             http_reason_phrase(err));
            http_write_body(&h->out, "application/json", body, body ? strlen(body) : 0);
            free(body);
            h->close_after = true;
            hconn_send(h);
        }
    }
}

/* ---- the connection ---- */

static void hconn_free_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct hconn *h = w->data;
    http_conn_free(&h->parser);
    http_buf_free(&h->out);
    http_request_free(h->req);
    json_decref(h->held);
    free(h->sid);
    free(h);
}

/* Ends this HTTP connection's life without closing its socket (handed over). */
static void hconn_release(struct hconn *h)
{
    int fd = h->fd;
    h->fd = -1;
    hconn_close(h, "upgraded to websocket");
    (void)fd;
}

static void hconn_close(struct hconn *h, const char *why)
{
    if (h->state == H_DEAD)
        return;
    if (h->standalone && h->sid)
        listener_stream_clear(h->sid, &h->base);
    if (h->legacy && h->sid)
        listener_session_end(h->sid); /* the stream is the session's only lifeline */
    h->state = H_DEAD;
    ev_io_stop(listener_g.loop, &h->rw);
    ev_io_stop(listener_g.loop, &h->ww);
    ev_timer_stop(listener_g.loop, &h->timer);
    /* A 2026 client that leaves cancels its request: there is no session to return to. */
    for (struct call *c = h->base.calls; c; c = c->next_in_conn)
        listener_stateless_cancel(c);
    listener_detach_calls(&h->base);
    if (h->fd >= 0)
        close(h->fd);
    listener_count_conn("http", -1);
    log_debug("connection_closed", "{s:s,s:s}", "transport", "http", "reason", why);
    ev_timer_init(&h->timer, hconn_free_cb, 0, 0);
    h->timer.data = h;
    ev_timer_start(listener_g.loop, &h->timer);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct hconn *h = w->data;
    int unread = 0;
    if (h->state == H_IDLE && dlink_loop_stall(loop) > 1.5 && sock_peer_hung_up(h->fd, &unread)) {
        /* This listener stalled, and meanwhile the client gave up and closed: what it
         * sent is not run late (a retrying client would have it applied twice). */
        log_info("requests_dropped", "{s:s,s:i,s:f,s:s}", "transport", "http", "unread_bytes",
                 unread, "stall_s", dlink_loop_stall(loop), "why",
                 "the client closed while this listener stalled");
        hconn_close(h, "peer closed while the listener stalled");
        return;
    }
    char buf[65536];
    ssize_t n = recv(h->fd, buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        hconn_close(h, n == 0 ? "peer closed" : "read failed");
        return;
    }
    if (h->state == H_IDLE) {
        ev_timer_stop(listener_g.loop, &h->timer);
        ev_timer_set(&h->timer, READ_TIMEOUT, 0);
        ev_timer_start(listener_g.loop, &h->timer);
    }
    http_conn_feed(&h->parser, buf, (size_t)n);
    maybe_continue(h);
    if (!http_conn_wants_input(&h->parser))
        ev_io_stop(listener_g.loop, &h->rw); /* resumes once the queued requests are answered */
    hconn_next(h);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct hconn *h = w->data;
    hconn_flush(h);
    if (h->state != H_DEAD && !ev_is_active(&h->rw) && http_conn_wants_input(&h->parser) &&
        !h->close_after)
        ev_io_start(listener_g.loop, &h->rw);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct hconn *h = w->data;
    if (h->state == H_SSE) {
        http_sse_comment(&h->out, "keep-alive", h->chunked);
        hconn_send(h);
        return;
    }
    if (h->state == H_WAIT)
        return; /* the call has its own timeout */
    if (!http_conn_idle(&h->parser)) {
        const char *m = "{\"error\":\"request not received in time\"}";
        http_buf_appendf(&h->out, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n");
        http_write_body(&h->out, "application/json", m, strlen(m));
        h->close_after = true;
        hconn_send(h);
        return;
    }
    hconn_close(h, "idle timeout");
}

static void http_accepted(struct sock_acceptor *a, int fd)
{
    (void)a;
    struct hconn *h = calloc(1, sizeof(*h));
    if (!h) {
        close(fd);
        return;
    }
    h->base.ops = &http_conn_ops;
    h->fd = fd;
    struct http_limits lim = {0, (size_t)listener_g.max_message, 0, 0};
    http_conn_init(&h->parser, &lim);
    ev_io_init(&h->rw, read_cb, fd, EV_READ);
    h->rw.data = h;
    ev_io_init(&h->ww, write_cb, fd, EV_WRITE);
    h->ww.data = h;
    ev_timer_init(&h->timer, timer_cb, listener_g.idle_timeout, 0);
    h->timer.data = h;
    ev_io_start(listener_g.loop, &h->rw);
    ev_timer_start(listener_g.loop, &h->timer);
    listener_count_conn("http", 1);
}

static size_t load_list(const char *key, char buf[][64], const char **out)
{
    const char *v = cfg_get(listener_g.cfg, "listener", key, "");
    int n = cfg_split_list(v, buf, 32);
    for (int i = 0; i < n; i++)
        out[i] = buf[i];
    return (size_t)n;
}

/* Streamable HTTP, HTTP+SSE and the WebSocket upgrade on [listener] http_port (0: off). */
static int http_start(void)
{
    long port = cfg_get_long(listener_g.cfg, "listener", "http_port", 8080);
    if (port <= 0)
        return 0;
    memset(&policy, 0, sizeof(policy));
    policy.versions = versions;
    policy.n_versions = CMCP_ARRAY_LEN(versions);
    policy.default_version = MCP_HTTP_DEFAULT_VERSION;
    policy.n_allowed_origins = load_list("allowed_origins", origins_buf, origins);
    policy.allowed_origins = policy.n_allowed_origins ? origins : NULL;
    policy.n_allowed_hosts = load_list("allowed_hosts", hosts_buf, hosts);
    policy.allowed_hosts = policy.n_allowed_hosts ? hosts : NULL;
    return listener_listen(&acceptor, cfg_get(listener_g.cfg, "listener", "http_bind", "127.0.0.1"),
                           (int)port, "http", http_accepted);
}

const struct transport listener_http_transport = {"http", http_start, NULL, NULL};
