/*
 * The wire contract between a node's processes that serve MCP: listeners,
 * the admin worker and tool runs on one side, shards on the other. One
 * typed request, one typed reply and one typed event, each with one builder
 * and one parser, used by every sender and receiver; the bytes are this
 * file's business only.
 *
 * Where they travel: listener <-> shard on a data link (ipc/dlink.h, one
 * frame each); admin and toolrun -> shard over nng req/rep (one message
 * each, no token). A request carries the sender's token; its events and its
 * reply carry it back, on the same link and in the order the shard made
 * them.
 *
 * Two encodings, told apart by a frame's first byte:
 *   - compact records for the hot path: a plain client message (WIRE_MSG)
 *     and a reply that says no more than a status and a session id;
 *       0x01 MSG    tok u64, lid u16, transport (u8 length + bytes), session (u8 + bytes), body
 *       0x02 REPLY  tok u64, status u16, method u8, session (u8 length + bytes), body
 *     (integers little-endian);
 *   - everything else is an envelope: a compact JSON header, '\n', the body
 *     (raw JSON-RPC text, possibly empty), passed through untouched so that
 *     only its final consumer parses it.
 */
#ifndef CMCP_IPC_WIRE_H
#define CMCP_IPC_WIRE_H

#include <jansson.h>
#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dlink;

#define WIRE_SID_MAX 64 /* session ids are shorter (ipc/route.h); the wire refuses longer */
#define WIRE_TR_MAX 16  /* transport labels: http, sse, tcp, stdio, websocket */

/* The operations a shard serves. */
enum wire_op {
    WIRE_OP_NONE = 0,
    WIRE_MSG,              /* a client message (or a 2025-03-26 batch); no sid: initialize */
    WIRE_STREAM,           /* open the session's standalone stream, or resume a stream */
    WIRE_DELETE,           /* end the session (DELETE; a TCP/stdio connection closed) */
    WIRE_OPEN,             /* make a session before its initialize (legacy HTTP+SSE) */
    WIRE_STATELESS,        /* a 2026-07-28 request: no session, any shard */
    WIRE_STATELESS_CANCEL, /* its client went away: cancel it */
    WIRE_SESSION_LIST,     /* the admin shell's view of sessions */
    WIRE_SESSION_SHOW,
    WIRE_SESSION_KILL,
    WIRE_TOOL_FETCH, /* a tool run asks for its call's arguments */
    WIRE_TOOL_RESULT, /* ...and hands over its result */
    WIRE_POSITIONS,   /* verify_state: where each partition this shard stores stands */
    WIRE_PING,        /* a listener's heartbeat: answered at once from the shard's loop */
    WIRE_OP_COUNT,
};
const char *wire_op_name(enum wire_op op);

struct wire_req {
    enum wire_op op;
    uint64_t tok;           /* the sender's token (data links) */
    int lid;                /* the sending listener's index (data links) */
    char sid[WIRE_SID_MAX]; /* the session, "" for none */
    char tr[WIRE_TR_MAX];   /* MSG: the transport, a metric label */
    const char *pv;         /* MSG, STATELESS: the MCP-Protocol-Version header, or NULL */
    bool resume;            /* STREAM: Last-Event-ID names... */
    int last_stream;        /* ...this stream... */
    int64_t last_seq;       /* ...and the last event the client has */
    uint64_t follow_tok;    /* STREAM, resume: if that request still runs on another link,
                             * move it here: its events and reply carry this token from now */
    bool http;              /* STATELESS: over HTTP (status codes matter) */
    const char *mm, *mn;    /* STATELESS: the Mcp-Method and Mcp-Name headers, or NULL */
    const json_t *mp;       /* STATELESS: the Mcp-Param-* headers, {suffix (lower case): value},
                             * or NULL (borrowed) */
    const char *key;        /* STATELESS_CANCEL: the request, as the shard names it */
    const char *token;      /* TOOL_*: the run */
    const char *body;       /* the JSON-RPC text (MSG, STATELESS), a tool's result */
    size_t blen;
};

/*
 * A request as one data-link frame (length prefix included) in a malloc'd
 * buffer; *body_off says where the body starts in it. NULL when out of
 * memory or too large.
 */
char *wire_req_frame(const struct wire_req *r, size_t *len, size_t *body_off);
/* A request as an nng message (control: admin, tool runs). NULL when out of memory. */
nng_msg *wire_req_msg(const struct wire_req *r);
/*
 * Parses a request in either encoding. Strings point into data or into
 * *keep, which the caller releases (json_decref) when done. 0, or -1 when
 * malformed (not an envelope, a field of the wrong type); an operation this
 * build does not know parses as WIRE_OP_NONE, so that it can be refused
 * with an answer.
 */
int wire_req_parse(const char *data, size_t len, struct wire_req *r, json_t **keep);

/*
 * JSON-RPC method names as metric labels: a fixed set, so that a client sending
 * made-up names cannot make the metrics grow. Index 0 is "" (not known: the
 * request was not a JSON-RPC message, or no shard read it); then the methods
 * a shard serves, and "batch", "response", "invalid", "other". A reply carries
 * its request's index, so that the listener, which times requests but does not
 * parse them, labels the duration by method.
 */
extern const char *const wire_methods[];
extern const int wire_method_count;
/* The label of a parsed message (an entry of wire_methods, never NULL). */
const char *wire_method_label(const json_t *msg);
/* The index of a label, 0 when it is not one of wire_methods. */
int wire_method_index(const char *label);

/* The transport labels a node serves with these ports (0: off) and stdio or not, into out
 * (at most 5: http, sse, websocket, tcp, stdio); returns how many. */
int wire_transports(long http_port, long tcp_port, bool stdio, const char *out[5]);

struct wire_reply {
    uint64_t tok;           /* the request's token (data links) */
    int st;                 /* HTTP-like: 200 response in body, 202 none, 400, 404, 503, 504 */
    int method;             /* the request's method as a metric label: wire_methods[method] */
    char sid[WIRE_SID_MAX]; /* a session this request made (initialize, OPEN), or "" */
    int stream;             /* the request streamed: its stream number (0: it did not) */
    int64_t seq;            /* ...and its final event's sequence number (0: none) */
    bool cancelled;         /* cancelled: there is no response */
    bool done;              /* STREAM: the resumed request stream has ended */
    bool followed;          /* STREAM: the running request moved to follow_tok (its events and
                             * reply follow); MSG: this request moved to another link (no reply) */
    /*
     * What an op answers beyond the body (borrowed; NULL for none):
     *   STREAM        the events replayed, [[stream, seq, message-text], ...]
     *   SESSION_LIST  {"shard": I, "count": N, "sessions": [summary, ...]}
     *   SESSION_SHOW  the session's summary and state
     *   POSITIONS     {"shard": I, "node": ID, "partitions": [[P, epoch, seq, "chain"], ...]}
     */
    json_t *data;
    const char *body; /* a JSON-RPC response, an error, a tool run's arguments */
    size_t blen;
};

/* Queues a reply on a data link (compact when it can be). 0, or -1 (closed, out of memory). */
int wire_reply_send(struct dlink *l, const struct wire_reply *r);
/* A reply as an nng message. NULL when out of memory. */
nng_msg *wire_reply_msg(const struct wire_reply *r);

/* A server->client message a shard sends before a request's reply, or for a session. */
struct wire_event {
    uint64_t tok;           /* the request it belongs to; 0: the session as a whole */
    char sid[WIRE_SID_MAX]; /* its session ("-" for a stateless request) */
    int stream;             /* the stream it is on (0: the standalone stream) */
    int64_t seq;            /* its number in the session, for Last-Event-ID */
    bool close;             /* no message: the request goes on, its SSE stream ends (SEP-1699) */
    const char *body;
    size_t blen;
};
int wire_event_send(struct dlink *l, const struct wire_event *e);

/*
 * Parses what a shard sent: a reply (returns WIRE_REPLY, fills *r) or an
 * event (WIRE_EVENT, fills *e); -1 when malformed. e may be NULL where no
 * event can come (nng control replies). Strings and data point into data or
 * *keep, as for wire_req_parse.
 */
enum { WIRE_REPLY = 1, WIRE_EVENT = 2 };
int wire_from_shard_parse(const char *data, size_t len, struct wire_reply *r,
                          struct wire_event *e, json_t **keep);

#endif
