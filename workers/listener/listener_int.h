/*
 * Inside the listener role: the call machinery every transport shares
 * (calls.c: the shard links, calls matched to replies by token, standalone
 * streams), the transports (http.c: Streamable HTTP, the legacy HTTP+SSE
 * transport, the WebSocket upgrade; line.c: TCP, stdio, WebSocket), and the
 * role's start (main.c). A transport reaches the others only through this
 * file: a connection carries its ops, a call its outcome's ops, and a
 * connection changes hands through listener_adopt().
 */
#ifndef CMCP_LISTENER_INT_H
#define CMCP_LISTENER_INT_H

#if !defined(CMCP_LAYER_LISTENER)
#error "workers/listener/listener_int.h is internal to the listener role"
#endif

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>

#include "base/config.h"
#include "ipc/sock.h"
#include "ipc/wire.h"
#include "workers/listener/listener.h"
#include "workers/oauth/oauth.h"

struct call;
struct conn;
struct shard_link;

/* What a connection's transport does with what is not the answer to one of its calls. */
struct conn_ops {
    const char *transport; /* a metric label: http, tcp, stdio, websocket */
    /* An event of a session that belongs to no request: its standalone stream's. */
    void (*stream_event)(struct conn *conn, const struct wire_event *e);
};

/* The part of every client connection that the call machinery sees. */
struct conn {
    const struct conn_ops *ops;
    struct call *calls; /* calls in flight for this connection */
};

/* What a transport does with the outcome of a call. */
struct call_ops {
    /* An event of this call's stream (progress, log, server request). */
    void (*event)(struct call *c, const struct wire_event *e);
    /* The reply. Always called once, also for failures (then st is 503/504 and the body a
     * JSON-RPC error made here). */
    void (*done)(struct call *c, const struct wire_reply *r);
};

struct call {
    UT_hash_handle hh; /* by tok */
    uint64_t tok;
    int shard;      /* the shard index (on this node, or on the owner it is forwarded to) */
    struct shard_link *link; /* where it went: a local shard, or the owner's (forwarded) */
    bool rerouted;  /* it followed a refreshed map once (a 421 from a shard) */
    char rsid[64];  /* the session it was routed by, "" for none */
    bool sending;   /* its frame has not wholly left for the shard yet */
    bool finished;
    bool busy_wait; /* its shard is up but has not taken it yet */
    bool orphaned;  /* its connection went away: a frame not yet sent never is */
    bool held_back; /* its shard was given up on (heartbeats): never sent, failed at once */
    const struct call_ops *ops;
    struct conn *conn; /* NULL once the connection went away */
    struct call *next_in_conn;
    struct call *qnext, *qprev; /* the shard link's queue of frames not yet written */
    void *tdata;       /* transport's own per-call data */
    json_t *rid;       /* the JSON-RPC id of the request, when known */
    char *frame;       /* the request as framed for the shard (ipc/wire.h) */
    size_t frame_len;
    uint64_t frame_end; /* the link's byte count once the frame is written */
    const char *body;  /* the request inside frame, to name its id in an error made here */
    size_t body_len;
    char sid[64];      /* the session, when known (for resuming its stream) */
    bool stateless;    /* a 2026-07-28 request: cancel it in its shard if the client leaves */
    bool endless;      /* a subscriptions/listen stream: no request timeout once delivered */
    int stream;        /* the SSE stream its events go to, once it has one */
    ev_timer timer;    /* shard wait, then the request timeout */
    double t0;         /* when it was sent (request duration) */
    enum wire_op op;   /* what it asks (the duration's label when it is no JSON-RPC message) */
    int method;        /* its method (wire_methods), once known */
};

/*
 * Sends a request to a shard (-1: pick one, for a new session or a stateless
 * request); its token and listener index are filled in here. Returns the
 * call, or NULL when it could not be queued.
 */
struct call *listener_call(struct conn *conn, int shard, struct wire_req *req,
                           const struct call_ops *ops, void *tdata);
/* The shard a session id names on this node, or -1 (malformed, or not one of ours). */
int listener_route(const char *sid);
/* The member that owns a session's partition when it is not this node, else NULL. */
const char *listener_owner_elsewhere(const char *sid);
/* The cluster map changed: calls waiting for a node that lost their partition move on. */
void listener_map_changed(void);
/* The call in flight whose events form stream `stream` of session sid, or NULL. */
struct call *listener_call_by_stream(const char *sid, int stream);
/*
 * A call for a request this listener did not send: a session's request running on another
 * listener or node, whose stream a client resumed here (a STREAM request's follow_tok names
 * it; the shard moves the request to this link, and its events and response come to this
 * call). It ends like any call: its response, the request timeout, or its link going down.
 */
struct call *listener_call_expect(struct conn *conn, int shard, const char *sid, int stream,
                                  const struct call_ops *ops);
/* Ends a call without answering anyone (nothing if it ended already). */
void listener_call_forget(uint64_t tok);
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

/* ---- [auth]: bearer tokens on the HTTP endpoints (auth.c, docs/authorization.md) ---- */

/* A refusal to write: its status (401, 403; 503 while jwks_url gave no key yet, with
 * Retry-After instead of WWW-Authenticate), WWW-Authenticate value and JSON-RPC body. */
struct auth_refusal {
    int status;
    int retry_after; /* seconds, with 503 */
    char www[1400];
    char *body; /* malloc'd; listener_auth_refusal_free */
};
/* Reads [auth] and the JWKS, watches the file; 0, or -1 after saying why. */
int listener_auth_start(void);
void listener_auth_stop(void);
bool listener_auth_on(void);
/* The RFC 9728 metadata when path is one of its URLs and auth is on, else NULL. */
const char *listener_auth_metadata(const char *path, size_t len, size_t *out_len);
/* Checks a request's Authorization value: true with *grant, or false with *ref to send. */
bool listener_auth_request(const char *authorization, const char *transport,
                           struct oauth_grant *grant, struct auth_refusal *ref);
/* Whether a message body may be sent under grant ([auth] tool_scopes); false with *ref. */
bool listener_auth_tools(const struct oauth_grant *grant, const char *body, size_t blen,
                         const char *transport, struct auth_refusal *ref);
void listener_auth_refusal_free(struct auth_refusal *ref);
/* jwks.c: [auth] jwks_url, the issuer's keys fetched on the loop (libcurl's multi interface,
 * loaded when needed), refreshed, and kept in data_dir for the next start. 0 (nothing to
 * do without jwks_url), or -1 with err. */
int jwks_start(struct ev_loop *loop, struct oauth *validator, const char *data_dir, char *err,
               size_t errlen);
/* A token named a key the validator lacks: fetch again soon (at most every 10 s). */
void jwks_unknown_key(void);
void jwks_stop(void);

/* ---- transports ---- */

struct transport {
    const char *name;
    /* Opens its sockets (or stdio); 0, or -1 after saying why. */
    int (*start)(void);
    /* The protocol it takes connections in (an HTTP upgrade to "websocket"), or NULL. */
    const char *adopts;
    /* Takes over such a connection: writes `first` (the upgrade's answer), then reads `early`
     * (bytes that came after the upgrade request) as its own, under the upgrade's token
     * grant (NULL: auth is off). 0, or -1 (the fd is closed). */
    int (*adopt)(int fd, const char *first, size_t first_len, const char *early,
                 size_t early_len, const struct oauth_grant *grant);
};
extern const struct transport listener_http_transport; /* http.c */
extern const struct transport listener_line_transport; /* line.c */

/* Hands a connection to the transport that speaks `protocol`; -1 when none does. */
int listener_adopt(const char *protocol, int fd, const char *first, size_t first_len,
                   const char *early, size_t early_len, const struct oauth_grant *grant);
/* A listening socket for a transport, accepted from the loop into on_fd; -1 after saying why. */
int listener_listen(struct sock_acceptor *a, const char *bind_addr, int port, const char *what,
                    void (*on_fd)(struct sock_acceptor *a, int fd));

/* Process-wide state the transports read. */
struct listener_state {
    int index, nshards;
    long max_message;
    double idle_timeout, request_timeout, shard_wait, keepalive;
    double shard_unresponsive; /* a local shard silent to heartbeats this long is given up on */
    const char *run_dir;
    struct cfg *cfg;
    struct ev_loop *loop;
};
extern struct listener_state listener_g;

/* calls.c: the shard links, made at start. */
int listener_links_start(void);
void listener_links_stop(void);

#endif
