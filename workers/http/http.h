/*
 * cmcp HTTP layer: incremental request parsing (on the packaged http_parser),
 * response and Server-Sent Events serialization, and the MCP Streamable HTTP
 * request policy. Everything here is pure bookkeeping over caller-supplied
 * bytes: no sockets, no event loop, no clocks. docs/http.md has the rules.
 *
 * Errors follow the project convention: 0 or a count on success, a negative
 * errno value (-ENOMEM, -EINVAL, -ENOSPC, -ENOENT) on failure.
 */
#ifndef CMCP_HTTP_H
#define CMCP_HTTP_H

#if !defined(CMCP_LAYER_HTTP) && !defined(CMCP_LAYER_LISTENER) && !defined(CMCP_LAYER_METRICS)
#error "workers/http serves the listener and the metrics worker only (../shared/design/layers.md)"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <http_parser.h>
#include <jansson.h>

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */

struct http_header {
    const char *name; /* as received (case preserved), NUL-terminated */
    size_t name_len;
    const char *value; /* leading/trailing blanks removed, NUL-terminated */
    size_t value_len;
};

/*
 * One parsed request. Every string is NUL-terminated and lives as long as
 * the request. A request handed out by http_conn_take() belongs to the caller
 * and is released with http_request_free().
 */
struct http_request {
    enum http_method method;
    const char *method_name; /* "POST", "GET", ... */
    const char *target;      /* raw request-target, e.g. "/mcp?x=1" */
    size_t target_len;
    const char *path; /* raw (not percent-decoded) path, "" if none */
    size_t path_len;
    const char *query; /* raw query without '?', "" if none */
    size_t query_len;
    unsigned version_major, version_minor;
    bool keep_alive;             /* the connection may stay open after the answer */
    bool upgrade;                /* Upgrade/CONNECT: no more HTTP follows on the conn */
    bool expect_continue;        /* the request carried Expect: 100-continue */
    bool chunked;                /* the body came with Transfer-Encoding: chunked */
    struct http_header *headers; /* in arrival order, repeats kept */
    size_t n_headers;
    char *body; /* NUL-terminated (the NUL is not counted); never NULL */
    size_t body_len;

    /* private: parsing state (http_conn) */
    char *head_; /* target, header names and values, path, query */
    size_t head_len_, head_cap_, body_cap_, hdr_cap_;
    size_t *hdr_off_; /* 4 per header: name off/len, value off/len */
    bool url_closed_, last_was_value_, hdrs_done_;
    struct http_request *next_;
};

void http_request_free(struct http_request *req);

/* First value of header `name` (any case), or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);
/* How many times header `name` occurs. */
size_t http_request_header_count(const struct http_request *req, const char *name);
/* The idx-th (0-based) occurrence of header `name`, or NULL. */
const char *http_request_header_nth(const struct http_request *req, const char *name, size_t idx);
/* Whether any occurrence of the comma-separated header `name` lists `token` (any case). */
bool http_request_header_has_token(const struct http_request *req, const char *name,
                                   const char *token);

/*
 * Looks query parameter `name` up in a raw query string (form encoding:
 * %XX and '+' decoded) and copies the first match, decoded and NUL-terminated,
 * into out. Returns the decoded length, -ENOENT if absent, -ENOSPC if out is
 * too small, -EINVAL for a malformed %-escape.
 */
int http_query_param(const char *query, size_t query_len, const char *name, char *out,
                     size_t out_len);
int http_request_query_param(const struct http_request *req, const char *name, char *out,
                             size_t out_len);

/* ------------------------------------------------------------------------ */
/* Connections                                                              */

#define HTTP_DEFAULT_MAX_HEADER_BYTES (16u * 1024u)
#define HTTP_DEFAULT_MAX_BODY_BYTES (4u * 1024u * 1024u)
#define HTTP_DEFAULT_MAX_HEADERS 64u
#define HTTP_DEFAULT_MAX_PIPELINE 16u

/* A zero field means "the default". */
struct http_limits {
    size_t max_header_bytes; /* request line + header names and values -> 431 (414 for the URL) */
    size_t max_body_bytes;   /* decoded body -> 413 */
    size_t max_headers;      /* header lines -> 431 */
    size_t max_pipeline;     /* complete requests queued before parsing pauses */
};

/* Per-connection parser state. Embed it; every field is private. */
struct http_conn {
    http_parser parser;
    struct http_limits limits;
    struct http_request *cur; /* being parsed */
    struct http_request *q_head, *q_tail;
    size_t n_ready;
    size_t head_bytes; /* header bytes of the current message so far */
    int err_status;
    const char *err_detail;
    char *backlog; /* bytes received while paused, or after an upgrade */
    size_t backlog_off, backlog_len, backlog_cap;
    bool paused, upgraded, continue_sent;
};

/* limits may be NULL for all defaults. Never fails (allocation is lazy). */
void http_conn_init(struct http_conn *c, const struct http_limits *limits);
/* Frees queued and partial requests and buffered bytes. */
void http_conn_free(struct http_conn *c);

/*
 * Accepts len bytes read from the socket; every byte is taken (bytes that
 * cannot be parsed yet are kept). Returns the number of complete requests
 * ready to take, or -1 once the connection has an error (http_conn_error()):
 * requests that arrived before the error are still ready and must be answered
 * first; then answer the error and close.
 */
int http_conn_feed(struct http_conn *c, const char *buf, size_t len);

/* The next complete request in arrival order, or NULL. Caller frees it. */
struct http_request *http_conn_take(struct http_conn *c);
size_t http_conn_ready(const struct http_conn *c);

/*
 * 0 if the connection is healthy, else the HTTP status to answer with
 * (400, 413, 414, 431, 505, 503 for pipeline overflow, 500 for out of
 * memory) and a static description in *detail (detail may be NULL). After an
 * error nothing more is parsed: answer it with Connection: close, then close.
 */
int http_conn_error(const struct http_conn *c, const char **detail);

/*
 * False while the pipeline queue is full (parsing paused until requests are
 * taken), after an error and after an upgrade request: stop reading the socket
 * until it turns true again. Bytes fed anyway are buffered up to a bound.
 */
bool http_conn_wants_input(const struct http_conn *c);

/* True when no partial request is buffered (choose idle vs. read timeouts). */
bool http_conn_idle(const struct http_conn *c);

/*
 * Expect: 100-continue. Non-NULL while the request being received has sent
 * its headers with that expectation and no 100 has been sent yet. Its head
 * (method, path, headers, flags) is complete; the body is not. Run the
 * policy on it; to accept, write http_write_continue() and call
 * http_conn_continue_sent(); to refuse, answer the final status with
 * Connection: close and close (the client may send the body anyway).
 */
const struct http_request *http_conn_expecting_continue(const struct http_conn *c);
void http_conn_continue_sent(struct http_conn *c);

/*
 * After a request with upgrade set has been received the connection speaks
 * another protocol (or must be closed). The bytes that followed that request
 * are returned here (and later feeds are appended).
 */
bool http_conn_upgraded(const struct http_conn *c);
const char *http_conn_upgrade_data(const struct http_conn *c, size_t *len);

/* ------------------------------------------------------------------------ */
/* Output buffer and responses                                              */

/* A growable byte buffer. Zero-initialised is valid and empty. */
struct http_buf {
    char *data;
    size_t len, cap;
    bool failed; /* sticky: an append ran out of memory or got invalid input */
};

void http_buf_init(struct http_buf *b);
void http_buf_free(struct http_buf *b);
void http_buf_reset(struct http_buf *b);
int http_buf_append(struct http_buf *b, const void *p, size_t n);
int http_buf_appendf(struct http_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes (what write(2) sent). */
void http_buf_consume(struct http_buf *b, size_t n);

/* RFC 9110 reason phrase, "Unknown" for codes it does not define. */
const char *http_reason_phrase(int status);

/* "HTTP/1.1 <status> <reason>\r\n". */
int http_write_status(struct http_buf *b, int status);
/* One header line; -EINVAL if name is not a token or value holds CR, LF or NUL. */
int http_write_header(struct http_buf *b, const char *name, const char *value);
int http_write_headerf(struct http_buf *b, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "Date: <IMF-fixdate>" for t. */
int http_write_date(struct http_buf *b, time_t t);
/*
 * The Connection header the answer needs: "close" when !keep_alive,
 * "keep-alive" for a persistent HTTP/1.0 connection, nothing otherwise.
 */
int http_write_connection(struct http_buf *b, const struct http_request *req, bool keep_alive);
/* Content-Type (if ctype), Content-Length, blank line, body: ends the response. */
int http_write_body(struct http_buf *b, const char *ctype, const void *body, size_t len);
/* Status, Connection, Content-Type, Content-Length and body in one call. */
int http_write_simple(struct http_buf *b, const struct http_request *req, int status,
                      bool keep_alive, const char *ctype, const void *body, size_t len);
/* "HTTP/1.1 100 Continue\r\n\r\n". */
int http_write_continue(struct http_buf *b);

/*
 * Streaming bodies. chunked must be false for HTTP/1.0 clients
 * (http_request_can_chunk()); the body then ends when the connection closes.
 * stream_start writes Content-Type, Transfer-Encoding if chunked, and the
 * blank line; chunk frames data (len 0 writes nothing: the empty chunk would
 * end the body); stream_end writes the last chunk.
 */
bool http_request_can_chunk(const struct http_request *req);
int http_write_stream_start(struct http_buf *b, const char *ctype, bool chunked);
int http_write_chunk(struct http_buf *b, const void *data, size_t len, bool chunked);
int http_write_stream_end(struct http_buf *b, bool chunked);
/* stream_start for text/event-stream, with Cache-Control: no-cache and X-Accel-Buffering: no. */
int http_write_sse_start(struct http_buf *b, bool chunked);

/* ------------------------------------------------------------------------ */
/* Server-Sent Events (WHATWG HTML "event stream" format)                   */

struct http_sse_event {
    const char *id;    /* NULL: no id field; must not hold CR, LF */
    const char *event; /* NULL: no event field (clients see "message") */
    const char *data;  /* NULL: no data field; else split into data: lines */
    size_t data_len;   /* data may hold CR, LF, CRLF line breaks */
    unsigned retry_ms; /* 0: no retry field */
};

/* One event ending with a blank line, as one chunk when chunked. */
int http_sse_write(struct http_buf *b, const struct http_sse_event *ev, bool chunked);
/* ": text" comment line(s), e.g. a keep-alive; clients ignore them. */
int http_sse_comment(struct http_buf *b, const char *text, bool chunked);

/* ------------------------------------------------------------------------ */
/* MCP Streamable HTTP policy                                               */

/*
 * Lists left NULL take the defaults. An allow-list entry "*" allows anything.
 * Hosts: "name" or "name:port" ("[::1]" for IPv6), no port = any port.
 * Origins: "scheme://name" or "scheme://name:port", no port = any port, or
 * the literal "null". Defaults: localhost, 127.0.0.1 and [::1] on any port
 * (http and https for origins); a request without Origin is allowed.
 */
struct mcp_http_policy {
    const char *const *allowed_hosts;
    size_t n_allowed_hosts;
    const char *const *allowed_origins;
    size_t n_allowed_origins;
    const char *const *versions; /* supported protocol versions */
    size_t n_versions;
    const char *const *post_only_versions; /* no GET stream, no DELETE (2026-07-28) */
    size_t n_post_only_versions;
    const char *default_version; /* assumed without MCP-Protocol-Version: 2025-03-26 */
};

#define MCP_HTTP_ALLOW "GET, POST, DELETE"
#define MCP_HTTP_DEFAULT_VERSION "2025-03-26"

/* JSON-RPC codes used in verdicts. -32000 is the "server error" the TS SDK uses for transport
 * errors. */
#define MCP_RPC_TRANSPORT_ERROR (-32000)
#define MCP_RPC_HEADER_MISMATCH (-32020)
#define MCP_RPC_UNSUPPORTED_VERSION (-32022)

enum mcp_http_reason {
    MCP_HTTP_OK = 0,
    MCP_HTTP_BAD_HOST,            /* 400: Host missing (HTTP/1.1), repeated or malformed */
    MCP_HTTP_HOST_FORBIDDEN,      /* 403 */
    MCP_HTTP_BAD_ORIGIN,          /* 400: Origin repeated */
    MCP_HTTP_ORIGIN_FORBIDDEN,    /* 403 */
    MCP_HTTP_METHOD,              /* 405, allow lists the methods */
    MCP_HTTP_BAD_VERSION,         /* 400: MCP-Protocol-Version repeated */
    MCP_HTTP_UNSUPPORTED_VERSION, /* 400, data {supported, requested} */
    MCP_HTTP_NOT_ACCEPTABLE,      /* 406 */
    MCP_HTTP_UNSUPPORTED_MEDIA,   /* 415 */
};

struct mcp_http_verdict {
    enum mcp_http_reason reason;
    int status;          /* 0 when OK */
    int rpc_code;        /* JSON-RPC error code, 0 when OK */
    const char *message; /* static text for the error message */
    const char *allow;   /* Allow header value for 405, else NULL */
    /*
     * OK: the protocol version in force (the header's, or default_version);
     * UNSUPPORTED_VERSION: the rejected value. Points into the request or
     * the policy.
     */
    const char *version;
    bool version_from_header;
};

/* Checks Host, Origin, method, MCP-Protocol-Version, Accept and Content-Type, in that order. */
struct mcp_http_verdict mcp_http_check(const struct http_request *req,
                                       const struct mcp_http_policy *pol);

bool mcp_http_accepts_json(const struct http_request *req);
bool mcp_http_accepts_sse(const struct http_request *req);
/* Content-Type is application/json (parameters allowed; a charset must be utf-8). */
bool mcp_http_content_is_json(const struct http_request *req);
/* Host / Origin against the policy's allow-lists (pure string checks). */
bool mcp_http_host_allowed(const struct mcp_http_policy *pol, const char *host);
bool mcp_http_origin_allowed(const struct mcp_http_policy *pol, const char *origin);
bool mcp_http_version_supported(const struct mcp_http_policy *pol, const char *version);

/*
 * The JSON-RPC error response for a verdict: {"jsonrpc":"2.0","id":id,"error":
 * {code,message[,data]}}. id may be NULL (JSON null); it is not stolen. For
 * UNSUPPORTED_VERSION, data is {supported:[...], requested}. NULL on ENOMEM.
 */
json_t *mcp_http_verdict_json(const struct mcp_http_verdict *v, const struct mcp_http_policy *pol,
                              json_t *id);
/* A complete HTTP response for a verdict (status, Allow, JSON body). */
int mcp_http_write_verdict(struct http_buf *b, const struct http_request *req,
                           const struct mcp_http_verdict *v, const struct mcp_http_policy *pol,
                           json_t *id, bool keep_alive);

/*
 * The era of a POST: true for the stateless revision (2026-07-28 and later),
 * named by the MCP-Protocol-Version header or, without it, by the
 * per-request protocol in params._meta. The body is parsed only when it may
 * carry that key, so 2025 traffic pays nothing.
 */
#define MCP_HTTP_STATELESS_VERSION "2026-07-28"
bool mcp_http_is_stateless(const struct http_request *req);

/* MCP-Session-Id syntax: 1..128 visible ASCII characters (0x21-0x7E). */
#define MCP_SESSION_ID_MAX 128
bool mcp_http_session_id_valid(const char *s);

/*
 * SSE event ids "<stream>-<seq>" (both decimal, no leading zeros), unique per
 * session because stream numbers are; Last-Event-ID names its stream.
 */
#define MCP_SSE_ID_MAX 42 /* 20 + 1 + 20 digits and the NUL */
int mcp_sse_id_format(char *buf, size_t len, uint64_t stream_no, uint64_t seq);
int mcp_sse_id_parse(const char *s, uint64_t *stream_no, uint64_t *seq);

#endif
