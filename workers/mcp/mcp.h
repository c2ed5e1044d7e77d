/*
 * mcp: the Model Context Protocol engine of cmcp.
 *
 * A pure library: no sockets, no processes, no event loop. A shard worker
 * owns one mcp_server (configuration plus the tool/resource/prompt registry)
 * and one mcp_session per MCP session, feeds every parsed client message to
 * mcp_handle() and delivers what the engine emits through mcp_host_ops.
 *
 * Threading: none. Every function must be called from the thread that runs
 * the host's event loop, and host callbacks are invoked on it.
 *
 * Ownership: json_t arguments are borrowed unless the comment says "steals";
 * json_t results are new references the caller owns.
 *
 * See docs/mcp-engine.md for the flow of asynchronous calls.
 */
#ifndef CMCP_MCP_H
#define CMCP_MCP_H

#if !defined(CMCP_LAYER_ENGINE) && !defined(CMCP_LAYER_SHARD)
#error "workers/mcp is the MCP engine: only the shard role uses it (../shared/design/layers.md)"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

typedef struct mcp_server mcp_server;   /* one per shard: config + registry */
typedef struct mcp_session mcp_session; /* one per MCP session */
typedef struct mcp_call mcp_call;       /* one client request being served */

/* JSON-RPC error codes the engine answers with. */
enum {
    MCP_PARSE_ERROR = -32700,
    MCP_INVALID_REQUEST = -32600,
    MCP_METHOD_NOT_FOUND = -32601,
    MCP_INVALID_PARAMS = -32602,
    MCP_INTERNAL_ERROR = -32603,
    MCP_REQUEST_TIMEOUT = -32001,    /* a server->client request got no answer in time */
    MCP_RESOURCE_NOT_FOUND = -32002, /* resources/read of an unknown URI (2025 revisions) */
    /* 2025-11-25: the user must finish a URL-mode elicitation before the client retries. */
    MCP_URL_ELICITATION_REQUIRED = -32042,
    /* 2026-07-28 (stateless) errors. */
    MCP_HEADER_MISMATCH = -32020,     /* HTTP headers disagree with the body, or are missing */
    MCP_MISSING_CAPABILITY = -32021,  /* the request needs a capability the client lacks */
    MCP_UNSUPPORTED_VERSION = -32022, /* _meta protocolVersion not served here */
};

/* Newest protocol revision the engine speaks (what unknown versions get). */
#define MCP_PROTOCOL_LATEST "2025-11-25"

/* The stateless revision served by mcp_handle_stateless(). */
#define MCP_PROTOCOL_STATELESS "2026-07-28"

/* The protocol revisions initialize accepts, oldest first, NULL-terminated. */
extern const char *const mcp_protocol_versions[];
bool mcp_protocol_supported(const char *version);
/* The stateless revisions (per-request _meta, no initialize), NULL-terminated. */
extern const char *const mcp_protocol_versions_stateless[];

/* ---------------------------------------------------------------- host -- */

struct mcp_host_ops {
    /*
     * Deliver a server->client message of session s. rel = the id of the
     * client request it belongs to (progress, log messages and
     * server->client requests made while serving that request), or NULL for
     * session-wide messages (list_changed, resources/updated, ...).
     * final=true marks the end of the request `rel`: msg is then its
     * response, or NULL when the request was cancelled and gets no response.
     * Ownership of msg passes to the host. rel is only valid during the call.
     * Only requests that went asynchronous (mcp_handle set *pending) ever
     * get a final emit; messages with rel set are always emitted before that
     * request's final emit (or before mcp_handle returns a synchronous
     * response) -- and may be emitted during the mcp_handle call that
     * received the request, before *pending is known. msg shares no JSON
     * with the engine, so the host may hand it to another thread.
     * Host callbacks must not call back into the engine synchronously.
     */
    void (*emit)(void *host, mcp_session *s, const json_t *rel, json_t *msg, bool final);
    /* One-shot timer; returns a handle for timer_cancel (NULL = failed).
     * The engine never cancels a timer that has fired. */
    void *(*timer_add)(void *host, double after_ms, void (*cb)(void *arg), void *arg);
    void (*timer_cancel)(void *host, void *timer);
    /* Called after the session's durable state changed, before the reply is
     * sent (may be NULL). Commit mcp_session_dump(s) here. */
    void (*session_changed)(void *host, mcp_session *s);
    /* Optional (may be NULL): close the SSE stream that carries request rel
     * without ending the request, so the client reconnects with
     * Last-Event-ID (SEP-1699 polling). The final response then travels on
     * the resumed stream. Used by the conformance pack's test_reconnection. */
    void (*close_stream)(void *host, mcp_session *s, const json_t *rel);
    /* Optional (may be NULL): a server-wide change this engine has just told its own
     * sessions and listen streams about: method = notifications/{tools,prompts,resources}/
     * list_changed (uri NULL) or notifications/resources/updated (uri set). A host that runs
     * several engines of one server (a node's shards) passes it on; the others tell theirs
     * with mcp_server_deliver(), which does not announce again. */
    void (*announce)(void *host, const char *method, const char *uri);
    /*
     * Optional (may be NULL): the tasks extension of 2026-07-28 (docs/tasks.md). A stateless
     * client has no session to keep its tasks in, so each task gets a durable session of its
     * own, a "task home", whose id is the task id. task_home returns a new session made with
     * mcp_session_new() under an id the host chose (one it can route on later, like its
     * session ids), which the host keeps and stores like any session; NULL when it cannot.
     * session_find returns the host's session of that id, or NULL. Without them the engine
     * makes and finds task homes itself, in memory only (tests, single-process hosts).
     */
    mcp_session *(*task_home)(void *host);
    mcp_session *(*session_find)(void *host, const char *id);
};

struct mcp_server_opts {
    const char *packs;        /* "core", "core,conformance", "none"; NULL = "core" */
    const char *name;         /* serverInfo.name; NULL = "cmcp" */
    const char *version;      /* serverInfo.version; NULL = the cmcp version */
    const char *instructions; /* initialize's instructions; NULL = a built-in text */
    int page_size;            /* items per page of the list methods; <= 0 = 100 */
};

/* NULL + a message in err for e.g. an unknown pack. */
mcp_server *mcp_server_new(const struct mcp_server_opts *o, const struct mcp_host_ops *ops,
                           void *host, char *err, size_t errlen);
/*
 * Stateless revision (2026-07-28) settings; set them right after
 * mcp_server_new (they are not in mcp_server_opts so that existing
 * positional initializers of it keep compiling).
 *
 * The state key seals the requestState of input_required results
 * (XSalsa20-Poly1305 under a 32-byte key derived from it with BLAKE2b), so
 * that any engine holding the same key can resume a multi-round-trip
 * request: every shard of a deployment must get the same secret (>= 16
 * bytes). Without one the server uses a random key of its own, which only
 * works when this engine serves every round. 0, or -1 with err.
 */
int mcp_server_set_state_key(mcp_server *srv, const void *key, size_t len, char *err,
                             size_t errlen);
struct mcp_stateless_opts {
    int state_ttl_ms; /* how long a requestState stays valid; <= 0 = 600000 (10 min) */
    int list_ttl_ms;  /* ttlMs on the list methods and server/discover; <= 0 = 0 */
    int read_ttl_ms;  /* ttlMs on resources/read; <= 0 = 0 */
    /* Wall clock in ms for requestState expiry; NULL = CLOCK_REALTIME (tests override it). */
    int64_t (*now_ms)(void);
};
void mcp_server_set_stateless_opts(mcp_server *srv, const struct mcp_stateless_opts *o);

/*
 * Icons of the server itself (2025-11-25, SEP-973): serverInfo.icons in initialize (2025-11-25
 * sessions) and in the stateless _meta["io.modelcontextprotocol/serverInfo"]. icons is an
 * array of {src, mimeType?, sizes?, theme?}: src an https:// or http:// URL or a data: URI,
 * sizes "WxH" or "any" strings, theme "light" or "dark"; other fields are refused. The same
 * check applies to the icons of tool, resource and prompt definitions. NULL or [] = none.
 * 0, or -1 with err.
 */
int mcp_server_set_icons(mcp_server *srv, const json_t *icons, char *err, size_t errlen);

/* Frees the server and every session still attached to it. */
void mcp_server_free(mcp_server *srv);

/* ------------------------------------------------------------- session -- */

mcp_session *mcp_session_new(mcp_server *srv, const char *id);
/* Cancels its pending calls (their on_cancel hooks run) and timers. Nothing
 * is emitted for them: the host is tearing the session down. */
void mcp_session_free(mcp_session *s);
const char *mcp_session_id(const mcp_session *s);
bool mcp_session_initialized(const mcp_session *s);
const char *mcp_session_protocol(const mcp_session *s); /* negotiated version or NULL */
const json_t *mcp_session_client_capabilities(const mcp_session *s); /* NULL before initialize */
size_t mcp_session_pending(const mcp_session *s);                    /* requests in flight */
void mcp_session_set_userdata(mcp_session *s, void *p);
void *mcp_session_userdata(const mcp_session *s);

/*
 * Owner epoch and mutation sequence number. seq grows by one on every
 * durable change; (epoch, seq) orders two copies of a session. Setting the
 * epoch (the cluster layer does it on takeover) does not bump seq.
 */
uint64_t mcp_session_epoch(const mcp_session *s);
uint64_t mcp_session_seq(const mcp_session *s);
void mcp_session_set_epoch(mcp_session *s, uint64_t epoch);

/* Session state as JSON for the durable store and back: protocol version,
 * client info & capabilities, log level, subscriptions, kv data, epoch and
 * seq. In-flight requests are not durable. */
json_t *mcp_session_dump(const mcp_session *s);
mcp_session *mcp_session_restore(mcp_server *srv, const json_t *state, char *err, size_t errlen);

/*
 * Tasks (2025-11-25): a session's tasks live in its durable state (mcp_session_dump), result
 * and all. A task that was still running when the state was saved comes back from
 * mcp_session_restore as "failed": the tool that ran it is gone with the old process and a C
 * tool cannot be resumed mid-run. Drops the tasks whose ttl has run out by now_ms (wall clock
 * ms; the shard's sweep calls it), cancelling any still running; returns how many went. The
 * session's state then changed (session_changed runs).
 */
size_t mcp_session_expire_tasks(mcp_session *s, int64_t now_ms);
/* Tasks the session holds (any status). */
size_t mcp_session_task_count(const mcp_session *s);
/* Whether s is the task home of a 2026 task (host ops' task_home): a session without a client;
 * the host drops it once mcp_session_task_count() is 0 (its task expired). */
bool mcp_session_is_task_home(const mcp_session *s);

/* -------------------------------------------------------------- handle -- */

enum mcp_msg_kind {
    MCP_MSG_INVALID = 0,
    MCP_MSG_REQUEST,
    MCP_MSG_NOTIFICATION,
    MCP_MSG_RESPONSE, /* a client's answer to a server->client request */
    MCP_MSG_BATCH,    /* a JSON array (2025-03-26 only) */
};
/* What a parsed message is, so a transport can pick 202 vs a response. */
enum mcp_msg_kind mcp_classify(const json_t *msg);
/* True for a well-formed initialize request (the transport makes a session for it). */
bool mcp_is_initialize(const json_t *msg);

/*
 * Handle one parsed client message (a request, notification or response;
 * NOT a batch). Returns the immediate response (caller owns), or NULL when
 * there is none: for notifications and responses, and for requests that
 * went asynchronous (*pending=true; their response arrives later through
 * ops->emit(..., final=true)). Invalid messages get JSON-RPC errors
 * (-32600 invalid request, -32601 unknown method, -32602 bad params);
 * requests other than initialize and ping before initialize get -32600
 * with a message saying so. pending may be NULL.
 */
json_t *mcp_handle(mcp_server *srv, mcp_session *s, json_t *msg, bool *pending);
/*
 * A JSON-RPC batch (protocol 2025-03-26 only; other sessions get a single
 * -32600 error). Returns the array of immediate responses, a single error
 * object for an empty or refused batch, or NULL when nothing answers now.
 * *npending (may be NULL) = how many requests of the batch went asynchronous.
 */
json_t *mcp_handle_batch(mcp_server *srv, mcp_session *s, json_t *batch, int *npending);
/* Parse text and handle it (object or batch); -32700 for bad JSON. */
json_t *mcp_handle_text(mcp_server *srv, mcp_session *s, const char *buf, size_t len,
                        bool *pending);

/* ----------------------------------------------------------- stateless -- */

/*
 * The 2026-07-28 revision has no initialize and no session: every request
 * carries its protocol version and client capabilities in params._meta
 * ("io.modelcontextprotocol/protocolVersion", ".../clientCapabilities",
 * optional ".../clientInfo" and ".../logLevel"). It shares the endpoint with
 * the 2025 session protocol; mcp_is_stateless_request() tells them apart.
 */

/*
 * True when msg belongs to the stateless revision: the MCP-Protocol-Version
 * header (NULL when absent or not HTTP) names 2026-07-28 or a later date, or
 * msg is a request whose params._meta carries
 * "io.modelcontextprotocol/protocolVersion" (any value). Mcp-Session-Id
 * plays no part: a stateless request ignores it. msg may be NULL (body not
 * parsed, e.g. GET): the header alone decides.
 */
bool mcp_is_stateless_request(const json_t *msg, const char *protocol_header);

/* What the transport saw around a stateless request. */
struct mcp_stateless_ctx {
    /* true on HTTP: MCP-Protocol-Version and Mcp-Method are required and,
     * with Mcp-Name, must match the body (-32020 otherwise). false (stdio,
     * TCP): the header fields are ignored. Values are as received, OWS
     * trimmed; NULL = header absent. Mcp-Name may use =?base64?...?=. */
    bool http;
    const char *protocol_header;
    const char *method_header;
    const char *name_header;
    /* The Mcp-Param-* headers (SEP-2243), {name suffix in lower case: value as received},
     * or NULL for none. A tools/call whose tool marks an argument "x-mcp-header": NAME must
     * carry Mcp-Param-NAME equal to it (=?base64?...?= allowed) when the argument is given. */
    const json_t *param_headers;
    /* The host's name for this request, unique among its requests in flight
     * on this server: the transient session of an asynchronous request has
     * this id (mcp_session_id), and mcp_stateless_cancel() takes it. */
    const char *key;
    void *userdata;        /* mcp_session_userdata() of the transient session */
    const char *principal; /* authenticated principal (binds requestState), or NULL */
};

/*
 * Serve one stateless message (msg is borrowed). Like mcp_handle(): returns
 * the response now, or NULL with *pending=true when the request went
 * asynchronous (timers), or NULL with *pending=false for a notification.
 *
 * Every result carries resultType ("complete" or "input_required") and
 * _meta["io.modelcontextprotocol/serverInfo"]; the cacheable ones ttlMs and
 * cacheScope. A tool (or prompt, or resource read) that asks the client
 * something with mcp_call_request() gets an input_required result with the
 * request(s) in inputRequests and a sealed requestState; the client retries
 * with inputResponses and the requestState, and the call is replayed with
 * the answers delivered to the tool's reply functions. No state stays in
 * the engine between rounds, so any engine with the same state_key resumes.
 *
 * An asynchronous request lives in a transient session (not listed among
 * the server's sessions, no durable state, no session_changed): everything
 * it emits goes through ops->emit with that session, whose id is ctx->key
 * and userdata ctx->userdata; the final emit ends it and the session is
 * freed right after. pending may be NULL.
 */
json_t *mcp_handle_stateless(mcp_server *srv, json_t *msg, const struct mcp_stateless_ctx *ctx,
                             bool *pending);
/* The -32700 response for text jansson could not parse (what it said, and where). */
json_t *mcp_parse_error_response(const json_error_t *jerr);
/* Parse text and serve it statelessly (-32700 for bad JSON, -32600 for a batch). */
json_t *mcp_handle_stateless_text(mcp_server *srv, const char *buf, size_t len,
                                  const struct mcp_stateless_ctx *ctx, bool *pending);

/*
 * The HTTP status for a stateless response: 200 for results (and for
 * JSON-RPC errors of requests that were understood: -32603, tool errors,
 * ...), 400 for -32700, -32600, -32602, -32020, -32021, -32022, and 404 for
 * -32601 (the spec's "unknown method" status, which also tells 2026 clients
 * apart from a legacy server's 404). NULL (notification) -> 202.
 */
int mcp_stateless_http_status(const json_t *response);

/* The client closed the stream of an asynchronous stateless request (or
 * sent notifications/cancelled on stdio): cancel it. Its on_cancel hook
 * runs and the host gets emit(final=true, msg=NULL). 0, or -1 if unknown. */
int mcp_stateless_cancel(mcp_server *srv, const char *key);
/* Asynchronous stateless requests in flight. */
size_t mcp_stateless_pending(const mcp_server *srv);
/* Whether s is the transient session of a stateless request. */
bool mcp_session_is_stateless(const mcp_session *s);

/* A JSON-RPC error response; id may be NULL (-> null); steals data. */
json_t *mcp_error_response(const json_t *id, int code, const char *message, json_t *data);

/* ------------------------------------------------------ notifications -- */

/* RFC 5424 levels as MCP names them (logging/setLevel). */
enum mcp_log_level {
    MCP_LOG_DEBUG = 0,
    MCP_LOG_INFO,
    MCP_LOG_NOTICE,
    MCP_LOG_WARNING,
    MCP_LOG_ERROR,
    MCP_LOG_CRITICAL,
    MCP_LOG_ALERT,
    MCP_LOG_EMERGENCY,
};
const char *mcp_log_level_name(enum mcp_log_level l);
int mcp_log_level_parse(const char *name); /* -1 when unknown */

/* Session-wide notifications/message, sent when level passes the session's
 * logging/setLevel (every level until the client sets one). Steals data. */
void mcp_session_log(mcp_session *s, enum mcp_log_level level, const char *logger, json_t *data);
/* notifications/resources/updated to every session subscribed to uri. */
void mcp_server_resource_updated(mcp_server *srv, const char *uri);
/* A change another engine of this server announced (host ops' announce): told to this
 * engine's sessions and listen streams as if it had happened here; not announced again.
 * -1 for a method that is no server-wide change notification (nothing is sent). */
int mcp_server_deliver(mcp_server *srv, const char *method, const char *uri);

/* ------------------------------------------------------------ registry -- */

/*
 * A tool. run() serves one tools/call: it finishes the call with
 * mcp_call_return*() either before returning (synchronous) or later from a
 * timer or a server->client reply (asynchronous). args are the validated
 * arguments (an object, {} when the client sent none); they are only valid
 * during run(), so copy what a later step needs.
 */
typedef void (*mcp_tool_fn)(mcp_call *c, const json_t *args, void *ud);

struct mcp_tool_def {
    const char *name;            /* 1..128 of [A-Za-z0-9_.-] */
    const char *title;           /* may be NULL */
    const char *description;     /* required */
    const json_t *input_schema;  /* NULL = {"type":"object"} */
    const json_t *output_schema; /* NULL = none; else structuredContent must match */
    const json_t *annotations;   /* may be NULL */
    mcp_tool_fn run;
    void *ud;
    /* Its structuredContent is built by typed code that matches output_schema by
     * construction (the core pack): not checked on every call. Unit tests run such tools with
     * mcp_server_check_all_outputs on, so a mismatch still fails a test. */
    bool output_trusted;
    /* Whether it may run as a task (docs/tasks.md), listed as execution.taskSupport. On
     * 2025-11-25 sessions (tools/call with a "task" param): FORBIDDEN (the default) refuses
     * a task-augmented call, REQUIRED refuses a plain one (-32601, as the spec says). On
     * 2026-07-28 (the tasks extension): OPTIONAL and REQUIRED tools called by a client that
     * declared the extension become tasks; REQUIRED is -32021 for one that did not. */
    enum mcp_task_support {
        MCP_TASK_FORBIDDEN = 0,
        MCP_TASK_OPTIONAL,
        MCP_TASK_REQUIRED
    } task_support;
    /* Icons (2025-11-25, SEP-973): NULL, or an array of {src, mimeType?, sizes?, theme?}
     * (see mcp_server_set_icons); listed for 2025-11-25 and 2026-07-28 clients. */
    const json_t *icons;
    /* 2026 tasks extension: the tool itself decides when the call becomes a task, with
     * mcp_call_run_as_task() (after gathering input with input_required rounds, say). Without
     * it, a task-supporting tool called by a client that negotiated the extension is a task
     * from the start. */
    bool task_deferred;
};
/* Registers (copies) a tool; sessions get notifications/tools/list_changed.
 * 0, or -1 with err for a bad or duplicate definition. */
int mcp_server_add_tool(mcp_server *srv, const struct mcp_tool_def *def, char *err, size_t errlen);
/*
 * Time limits of tool calls: a call still running after its tool's limit ends with an
 * error result that says so (isError, the limit and how to change it), and its cancel
 * hook runs, as for notifications/cancelled. `tool` NULL sets the default of every tool
 * without a limit of its own; ms 0 means none. 0, or -1 for an unknown tool.
 */
int mcp_server_set_tool_time_limit(mcp_server *srv, const char *tool, long ms);

/* Checks every tool's result against its outputSchema, trusted or not (for tests). */
void mcp_server_check_all_outputs(mcp_server *srv, bool on);

/* Unregisters; calls already running finish normally. 0, or -1 if unknown. */
int mcp_server_remove_tool(mcp_server *srv, const char *name);
size_t mcp_server_tool_count(const mcp_server *srv);
/* Whether the server has a tool of that name. */
bool mcp_server_has_tool(mcp_server *srv, const char *name);

/* Resource contents for resources/read: an array of {uri, mimeType, text|blob}.
 * Return NULL for "no such resource" (-> -32002), or finish the call with
 * mcp_call_error() and return NULL for any other error. */
typedef json_t *(*mcp_resource_read_fn)(mcp_call *c, const char *uri, const json_t *vars, void *ud);
/* Completion values (array of strings) for a template variable or prompt argument. */
typedef json_t *(*mcp_complete_fn)(mcp_call *c, const char *arg, const char *prefix,
                                   const json_t *context_args, void *ud);

struct mcp_resource_def {
    const char *uri; /* a URI, or an RFC 6570 level-1 template for templates */
    const char *name, *title, *description, *mime_type;
    mcp_resource_read_fn read;
    const json_t *icons; /* NULL or an array of icons, as for tools */
    /* Templates only (all optional): the concrete resources the template
     * currently names for this session (array of Resource objects), shown
     * by resources/list, and completion of its variables. */
    json_t *(*list)(mcp_session *s, void *ud);
    mcp_complete_fn complete;
    void *ud;
};
int mcp_server_add_resource(mcp_server *srv, const struct mcp_resource_def *def, char *err,
                            size_t errlen);
int mcp_server_add_template(mcp_server *srv, const struct mcp_resource_def *def, char *err,
                            size_t errlen);

/* prompts/get: returns {description?, messages[]}, or NULL after
 * mcp_call_error(). Required arguments were checked before. */
typedef json_t *(*mcp_prompt_fn)(mcp_call *c, const json_t *args, void *ud);

struct mcp_prompt_def {
    const char *name, *title, *description;
    const json_t *arguments; /* array of {name, description?, required?} or NULL */
    const json_t *icons;     /* NULL or an array of icons, as for tools */
    mcp_prompt_fn get;
    mcp_complete_fn complete;
    void *ud;
};
int mcp_server_add_prompt(mcp_server *srv, const struct mcp_prompt_def *def, char *err,
                          size_t errlen);

/* ---------------------------------------------------------------- call -- */

mcp_server *mcp_call_server(const mcp_call *c);
mcp_session *mcp_call_session(const mcp_call *c);
const json_t *mcp_call_id(const mcp_call *c);
const char *mcp_call_method(const mcp_call *c);
/* The protocol revision the request is served under (never NULL). */
const char *mcp_call_protocol(const mcp_call *c);
bool mcp_call_protocol_at_least(const mcp_call *c, const char *version);
bool mcp_call_has_progress(const mcp_call *c);
bool mcp_call_done(const mcp_call *c);

/* Per-call state of a tool, freed (free_fn) when the call ends in any way. */
void mcp_call_set_state(mcp_call *c, void *state, void (*free_fn)(void *));
void *mcp_call_state(const mcp_call *c);
/* Runs when the client cancels the call or its session is freed, before the
 * call's timers and server->client requests are dropped. */
void mcp_call_on_cancel(mcp_call *c, void (*fn)(mcp_call *c));

/* notifications/progress for the request's _meta.progressToken (no-op
 * without one). progress must grow; non-growing values are dropped (false).
 * total <= 0 and msg NULL are left out. */
bool mcp_call_progress(mcp_call *c, double progress, double total, const char *msg);
/* notifications/message tied to this request, filtered by the session's level.
 * Steals data. */
void mcp_call_log(mcp_call *c, enum mcp_log_level level, const char *logger, json_t *data);

/* A timer owned by the call: cancelled automatically when the call ends.
 * Returns NULL when the host has no timers. */
void *mcp_call_timer(mcp_call *c, double after_ms, void (*cb)(mcp_call *c, void *arg), void *arg);
void mcp_call_timer_cancel(mcp_call *c, void *timer);

/* Answer to a server->client request: exactly one of result / error is set. */
typedef void (*mcp_reply_fn)(mcp_call *c, const json_t *result, const json_t *error, void *arg);
/*
 * Send a server->client request (sampling/createMessage, elicitation/create,
 * roots/list, ...) tied to this call; steals params. reply runs when the
 * client answers, or with error -32001 after timeout_ms (<= 0: none). Checks
 * the client declared the matching capability first: returns -ENOTSUP if
 * not (reply will not run), -EINVAL if the call is over, 0 when sent.
 */
int mcp_call_request(mcp_call *c, const char *method, json_t *params, double timeout_ms,
                     mcp_reply_fn reply, void *arg);
/*
 * Same, naming the request: on the stateless revision the key names it in
 * inputRequests/inputResponses (1..64 of [A-Za-z0-9_.-], unique within the
 * call: -EEXIST otherwise). NULL key: "<kind>-<n>" (e.g. "sampling-1").
 * The key is not used by the 2025 revisions (ids are "srv-...").
 *
 * Stateless revision: nothing is sent. If the retry that is being served
 * carries the answer (inputResponses, or an earlier round's answers kept in
 * requestState), reply runs with it once the handler has returned;
 * otherwise the call ends with an input_required result listing every
 * question still open, and the client retries. The request is replayed
 * from the start on every round, so a tool must ask the same questions in
 * the same order given the same answers. timeout_ms is ignored. Only
 * tools/call, prompts/get and resources/read may ask (-EINVAL otherwise).
 * An answer that is not a valid result for method (e.g. an ElicitResult
 * without a valid action) ends the call with -32602.
 */
int mcp_call_request_keyed(mcp_call *c, const char *key, const char *method, json_t *params,
                           double timeout_ms, mcp_reply_fn reply, void *arg);
/*
 * A tools/call of a task_deferred tool becomes a task (2026 tasks extension): c is answered
 * with a CreateTaskResult and run(task_call, args, ud of c's tool) serves the task from now on
 * (args are borrowed). On a call that already is a task's run, run just continues in it. A
 * client that did not negotiate the extension gets -32021 naming it.
 */
void mcp_call_run_as_task(mcp_call *c, mcp_tool_fn run, const json_t *args);
/* Whether the client declared what method needs (false for unknown methods). */
bool mcp_call_client_supports(const mcp_call *c, const char *method, const json_t *params);
/* Whether the call is served statelessly (2026-07-28). */
bool mcp_call_stateless(const mcp_call *c);
/* Stateless: the request carried a requestState that verified (a later round). */
bool mcp_call_resumed(const mcp_call *c);
/*
 * Finish a call that needs a client capability the client did not declare
 * ("sampling", "elicitation", "roots", or a sub-capability with a dot:
 * "elicitation.url", "sampling.tools"). Stateless: the spec's
 * MissingRequiredClientCapabilityError, -32021 with
 * data.requiredCapabilities = {capability: {}} ({elicitation: {url: {}}}). 2025 revisions: an
 * isError result with text for tools/call, -32600 with text otherwise.
 */
void mcp_call_missing_capability(mcp_call *c, const char *capability, const char *text);

/* ------------------------------------------------ URL-mode elicitation -- */

/*
 * URL-mode elicitation (2025-11-25): send the user to a URL for an interaction that must not
 * pass through the client (credentials, a payment, a third party's OAuth). Form mode stays
 * mcp_call_request(c, "elicitation/create", {message, requestedSchema}, ...).
 */
struct mcp_url_elicitation {
    const char *message;        /* why the user should go there (required) */
    const char *url;            /* an https:// or http:// URL (required) */
    const char *elicitation_id; /* unique within the server, opaque to the client (required) */
};
#define MCP_ELICITATION_ID_LEN 37 /* a UUID and its NUL */
/* A fresh random elicitation id (UUID v4 text). */
void mcp_elicitation_id_new(char id[MCP_ELICITATION_ID_LEN]);
/*
 * elicitation/create {mode: "url", message, elicitationId, url}. As mcp_call_request_keyed
 * (key may be NULL), and: -ENOTSUP (nothing sent) unless the client declared
 * capabilities.elicitation.url on protocol 2025-11-25 or later -- report it with
 * mcp_call_missing_capability(c, "elicitation.url", text); -EINVAL for a missing field or a
 * url that is not http(s). The reply's ElicitResult has no content: action "accept" says the
 * user agreed to open the URL, not that the interaction is over.
 */
int mcp_call_elicit_url(mcp_call *c, const char *key, const struct mcp_url_elicitation *e,
                        double timeout_ms, mcp_reply_fn reply, void *arg);
/*
 * notifications/elicitation/complete {elicitationId}: the out-of-band interaction finished.
 * The call variant sends it tied to the running call (its stream); the session variant as a
 * session-wide message (rel NULL: the standalone stream), for an interaction that ends after
 * the call that started it. 0, -EINVAL (no id, call over), or -ENOTSUP: sessions older than
 * 2025-11-25, and the stateless revision (2026-07-28 has no such notification).
 */
int mcp_call_elicitation_complete(mcp_call *c, const char *elicitation_id);
int mcp_session_elicitation_complete(mcp_session *s, const char *elicitation_id);
/*
 * Finish the call with URLElicitationRequiredError: -32042, message, data.elicitations = the
 * n URL-mode elicitations the user must complete before the client retries the request.
 * Only on 2025-11-25 sessions whose client declared elicitation.url: -ENOTSUP otherwise, and
 * the call goes on (ask with mcp_call_elicit_url() instead; the 2026-07-28 revision has no
 * -32042 and turns that into an input_required result). -EINVAL for n == 0 or an entry
 * missing a field. 0 when the call ended.
 */
int mcp_call_url_elicitation_required(mcp_call *c, const char *message,
                                      const struct mcp_url_elicitation *e, size_t n);

/* --------------------------------------------------- sampling with tools -- */

/*
 * Params of a sampling/createMessage request (messages is borrowed and copied). tools
 * (2025-11-25: an array of {name, description?, inputSchema} the client's model may call;
 * NULL for none) and tool_choice ("auto", "required" or "none"; NULL leaves it out, which
 * the spec reads as auto) need the client's sampling.tools capability, which
 * mcp_call_request checks (-ENOTSUP). Checks what the spec asks of the conversation: roles
 * user or assistant; content one block or an array of text, image, audio, tool_use and
 * tool_result blocks; tool_use only from the assistant and tool_result only from the user,
 * a message with tool_result holds nothing else, and every tool_use is answered by a
 * tool_result with its id in the next message; tool names unique, each with an object
 * inputSchema. NULL + a sentence in err otherwise.
 */
json_t *mcp_sampling_params(const json_t *messages, int max_tokens, const json_t *tools,
                            const char *tool_choice, char *err, size_t errlen);
/*
 * Check a client's CreateMessageResult: role, model (strings), content (a block or an array
 * of text/image/audio/tool_use/tool_result blocks). A tool_use block needs id, name and an
 * object input, comes from the assistant, and must name one of tools when tools is given.
 * 0, or -1 with err.
 */
int mcp_sampling_result_check(const json_t *result, const json_t *tools, char *err, size_t errlen);
/* The result's tool_use blocks (a new array, [] when the model used no tool). */
json_t *mcp_sampling_tool_uses(const json_t *result);
/* A tool_result block answering the tool_use tool_use_id; steals content (an array of
 * content blocks, NULL = []). */
json_t *mcp_sampling_tool_result(const char *tool_use_id, json_t *content, bool is_error);

/* Finish the call with a result object (steals). For tools/call it is a
 * CallToolResult; structuredContent is dropped for clients older than
 * 2025-06-18. Finishing twice is ignored. */
void mcp_call_return(mcp_call *c, json_t *result);
/* A CallToolResult with one text block. */
void mcp_call_return_text(mcp_call *c, bool is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Finish with a JSON-RPC error (steals data). */
void mcp_call_error(mcp_call *c, int code, const char *message, json_t *data);

#endif
