/*
 * Role `listener`: terminates the client transports (Streamable HTTP, TCP,
 * stdio) and routes every message to the shard that owns its session.
 * Internal header shared by listener.c (shard links, calls, events) and the
 * transport files.
 */
#ifndef CMCP_LISTENER_H
#define CMCP_LISTENER_H

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>

#include "dlink.h"
#include "proc.h"

int listener_main(struct proc_args *a);

struct call;

/* The part of every client connection that the call machinery sees. */
enum conn_kind { CONN_LINE, CONN_HTTP };
struct conn {
    enum conn_kind kind;
    struct call *calls; /* calls in flight for this connection */
};

/* What a transport does with the outcome of a call. */
struct call_ops {
    /* An event of this call's stream (progress, log, server request). */
    void (*event)(struct call *c, json_t *hdr, const char *body, size_t len);
    /* The reply: hdr holds st/sid/stream/seq/cancelled; body may be empty. Always called once,
     * also for failures (then st is 503/504 and body a JSON-RPC error made here). */
    void (*done)(struct call *c, json_t *hdr, const char *body, size_t len);
};

struct call {
    UT_hash_handle hh; /* by tok */
    uint64_t tok;
    int shard;
    bool sending;   /* its frame has not wholly left for the shard yet */
    bool finished;
    bool busy_wait; /* its shard is up but has not taken it yet */
    const struct call_ops *ops;
    struct conn *conn; /* NULL once the connection went away */
    struct call *next_in_conn;
    struct call *qnext, *qprev; /* the shard link's queue of frames not yet written */
    void *tdata;       /* transport's own per-call data */
    json_t *rid;       /* the JSON-RPC id of the request, when known */
    char *frame;       /* the request as framed for the shard (dlink.h) */
    size_t frame_len;
    uint64_t frame_end; /* the link's byte count once the frame is written */
    const char *body;  /* the request inside frame, to name its id in an error made here */
    size_t body_len;
    char sid[64];      /* the session, when known (for resuming its stream) */
    bool stateless;    /* a 2026-07-28 request: cancel it in its shard if the client leaves */
    int stream;        /* the SSE stream its events go to, once it has one */
    ev_timer timer;    /* shard wait, then the request timeout */
    double t0;         /* when it was sent (request duration) */
};

/* Sends an envelope to a shard (-1: pick one for a new session). Returns the call or NULL. */
struct call *listener_call(struct conn *conn, int shard, json_t *hdr, const char *body, size_t len,
                           const struct call_ops *ops, void *tdata);
/* The call in flight whose events form stream `stream` of session sid, or NULL. */
struct call *listener_call_by_stream(const char *sid, int stream);
/* Moves a call to another connection (a client resumed its stream there). */
void listener_call_attach(struct call *c, struct conn *conn, const struct call_ops *ops);
/* The call's connection no longer carries it (its stream was closed early). */
void listener_call_detach(struct call *c);
/* Asks the shard to cancel a stateless request whose client went away. */
void listener_stateless_cancel(struct call *c);
/* Detach a connection's calls (the connection is closing). */
void listener_detach_calls(struct conn *conn);

/* Standalone streams: events of a session that belong to no request go to this conn. */
void listener_stream_set(const char *sid, struct conn *conn);
void listener_stream_clear(const char *sid, struct conn *conn);
struct conn *listener_stream_get(const char *sid);
/* Fire-and-forget "delete" of a session (a TCP/stdio connection closed). */
void listener_session_end(const char *sid);

/* Metrics of the transports (ipc/stats.h). */
void listener_count_conn(const char *transport, int delta);
void listener_count_msg(const char *transport, bool received);
/* While drained (cmcpctl drain), no new session is accepted; this answers why. */
bool listener_draining(void);
#define LISTENER_DRAINING_MSG                                                                   \
    "This node is draining: it takes no new sessions. Connect to another node, or retry "      \
    "after it is undrained"

/* Builds a JSON-RPC error response text (malloc'd). */
char *listener_rpc_error(const json_t *id, int code, const char *msg);

/* Transport hooks, called by listener.c for session-wide events */
void line_stream_event(struct conn *conn, const char *sid, json_t *hdr, const char *body,
                       size_t len);
void http_stream_event(struct conn *conn, const char *sid, json_t *hdr, const char *body,
                       size_t len);

/* Process-wide state the transports read. */
struct listener_cfg {
    int index, nshards;
    long max_message;
    double idle_timeout, request_timeout, shard_wait, keepalive;
    const char *run_dir;
    struct cfg *cfg;
    struct ev_loop *loop;
};
extern struct listener_cfg L;

/* line.c: newline-delimited JSON-RPC over TCP and stdio */
int line_tcp_listen(const char *bind, int port);
int line_stdio_start(int in_fd, int out_fd);
/* Takes over an upgraded HTTP connection: writes `answer` (the 101) then speaks WebSocket,
 * starting with the bytes that followed the upgrade request. */
int line_ws_start(int fd, const char *answer, size_t answer_len, const char *early, size_t early_len);
/* A listening socket (SO_REUSEPORT) or -1 after logging why. */
int listener_socket(const char *bind_addr, int port, const char *what);
/* http.c */
int http_listen(const char *bind, int port);

#endif
