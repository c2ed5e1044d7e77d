/*
 * Internals shared by the files of the MCP engine. Nothing here is part of
 * the public API (mcp.h); names shared between files use the mcpi_ prefix.
 */
#ifndef CMCP_MCP_INTERNAL_H
#define CMCP_MCP_INTERNAL_H

#if !defined(CMCP_LAYER_ENGINE)
#error "workers/mcp/mcp_internal.h is internal to the MCP engine (../shared/design/layers.md)"
#endif

#include "workers/mcp/mcp.h"

#include <uthash.h>

/* Bounds that keep one client from growing a shard's memory without limit. */
#define MCPI_MAX_INFLIGHT 128      /* concurrent requests per session */
#define MCPI_MAX_SUBSCRIPTIONS 256 /* resources/subscribe per session */
#define MCPI_MAX_COMPLETIONS 100   /* values in one completion answer (spec) */
#define MCPI_DEFAULT_PAGE 100
#define MCPI_STATE_TTL_MS 600000    /* requestState lifetime by default */
#define MCPI_MAX_STATE_BYTES 262144 /* a requestState token we accept */
#define MCPI_MAX_INPUT_KEY 64       /* inputRequests key length */
#define MCPI_MAX_TASKS 64           /* tasks a session keeps at once (tasks.c) */
#define MCPI_TASK_TTL_MS 3600000    /* a task's ttl when the client asks for none */
#define MCPI_TASK_TTL_MAX_MS 86400000 /* the longest ttl granted */
#define MCPI_TASK_POLL_MS 500         /* pollInterval suggested to clients */
#define MCPI_META_RELATED_TASK "io.modelcontextprotocol/related-task"
#define MCPI_EXT_TASKS "io.modelcontextprotocol/tasks" /* the 2026 tasks extension (tasks26.c) */

/* Reserved _meta keys of the stateless revision. */
#define MCPI_META_VERSION "io.modelcontextprotocol/protocolVersion"
#define MCPI_META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define MCPI_META_INFO "io.modelcontextprotocol/clientInfo"
#define MCPI_META_LOGLEVEL "io.modelcontextprotocol/logLevel"
#define MCPI_META_SERVERINFO "io.modelcontextprotocol/serverInfo"

struct mcpi_tool {
    char *name, *title, *description;
    json_t *input_schema, *output_schema, *annotations;
    mcp_tool_fn run;
    void *ud;
    long limit_ms;  /* its time limit: > 0 ms, 0 none, < 0 the server's default */
    bool output_trusted; /* typed output: its outputSchema is not checked on every call */
    enum mcp_task_support task_support;
    json_t *icons; /* NULL: none */
    bool task_deferred; /* becomes a task itself (mcp_call_run_as_task) */
    int refs; /* the registry's and each running call's */
    UT_hash_handle hh;
};

struct mcpi_resource {
    char *uri; /* URI, or the template for templates */
    char *name, *title, *description, *mime_type;
    json_t *icons; /* NULL: none */
    mcp_resource_read_fn read;
    json_t *(*list)(mcp_session *s, void *ud);
    mcp_complete_fn complete;
    void *ud;
    UT_hash_handle hh;
};

struct mcpi_prompt {
    char *name, *title, *description;
    json_t *arguments; /* array, never NULL */
    json_t *icons;     /* NULL: none */
    mcp_prompt_fn get;
    mcp_complete_fn complete;
    void *ud;
    UT_hash_handle hh;
};

struct mcp_server {
    struct mcp_host_ops ops;
    void *host;
    char *name, *version, *instructions;
    json_t *icons; /* serverInfo.icons (2025-11-25); NULL: none */
    int page_size;
    /* uthash keeps insertion order when iterating: lists come out in
     * registration order, which is what pagination offsets rely on. */
    struct mcpi_tool *tools;
    struct mcpi_resource *resources, *templates;
    struct mcpi_prompt *prompts;
    mcp_session *sessions; /* utlist-style doubly linked via next/prev */
    struct mcpi_shared *shared; /* client info and capabilities values sessions share (shared.c) */
    /* stateless revision */
    mcp_session *stateless;      /* transient sessions of async stateless calls */
    unsigned char state_key[32]; /* requestState sealing key (crypto_secretbox) */
    int state_ttl_ms, list_ttl_ms, read_ttl_ms;
    long tool_limit_ms; /* a tool's time limit unless it has its own (0: none) */
    bool check_all_outputs; /* tests: trusted outputs are checked too */
    int64_t (*now_ms)(void);
};

struct mcpi_timer {
    mcp_call *c;
    void *handle; /* the host's */
    void (*cb)(mcp_call *c, void *arg);
    void *arg;
    struct mcpi_timer *prev, *next;
};

/* A server->client request waiting for the client's answer. */
struct mcpi_outreq {
    char *key; /* the id as text: the hash key */
    json_t *id;
    mcp_call *c;
    mcp_reply_fn reply;
    void *arg;
    struct mcpi_timer *timeout;
    UT_hash_handle hh;
};

/* A stateless multi-round-trip request being replayed (see mrtr.c). */
struct mcpi_mrtr_q; /* a delivery waiting for the handler to return */
struct mcpi_mrtr {
    json_t *answers;  /* key -> response, from requestState and inputResponses */
    json_t *consumed; /* key -> response delivered this round (kept in the next requestState) */
    json_t *asked;    /* key -> {method, params}: unanswered, becomes inputRequests */
    json_t *keys;     /* key -> true: every key asked this round (uniqueness) */
    char binding[64]; /* base64 digest of method, name and arguments */
    char principal[64];
    struct mcpi_mrtr_q *queue, *queue_tail;
    unsigned long next_auto;
};

struct mcp_call {
    mcp_server *srv;
    mcp_session *s;
    json_t *id;
    char *key; /* the id as text (hash key among the session's in-flight calls) */
    char *method;
    const char *protocol;   /* never NULL */
    const json_t *caps;     /* client capabilities, may be NULL */
    json_t *progress_token; /* NULL without _meta.progressToken */
    double last_progress;
    bool any_progress;
    bool sync;        /* the method handler is still on the stack */
    bool done;        /* finished (response built or cancelled) */
    bool cancelling;  /* on_cancel is running: its results are dropped */
    json_t *response; /* built when finished while sync */
    struct mcpi_tool *tool;
    struct mcpi_timer *timers;
    void *state;
    void (*state_free)(void *);
    void (*on_cancel)(mcp_call *c);
    bool stateless;         /* served by mcp_handle_stateless */
    bool resumed;           /* stateless: a verified requestState came with it */
    struct mcpi_mrtr *mrtr; /* stateless tools/call, prompts/get, resources/read */
    char *task_id;          /* the tool run of a task (tasks.c): its answer goes to the task */
    UT_hash_handle hh;
};

/*
 * A server holds one per session for as long as the session lives (100K of
 * them in a shard is the design point), so every byte here counts: the
 * protocol is a static string, client info and capabilities are shared
 * between sessions (shared.c), subscriptions and kv exist only once used,
 * and the id is stored inline.
 */
struct mcp_session {
    mcp_server *srv;
    const char *protocol; /* one of mcp_protocol_versions(_stateless); NULL before initialize */
    struct mcpi_shared *client_info, *client_caps; /* NULL when the client sent none */
    json_t *subs; /* object: uri -> true; NULL while there are none */
    json_t *kv;   /* object: key -> value; NULL while empty */
    json_t *tasks; /* object: taskId -> task record (tasks.c); NULL while none */
    uint64_t epoch, seq;
    mcp_call *inflight;
    struct mcpi_outreq *outbound;
    void *userdata;
    mcp_session *prev, *next;
    unsigned long next_out;
    signed char log_level; /* -1: not set, every level passes */
    bool initialized;      /* initialize answered */
    bool client_ready;     /* notifications/initialized seen (not durable) */
    bool dirty;            /* durable state changed since the last session_changed */
    bool stateless;        /* transient session of one stateless request */
    bool task_home;        /* holds one 2026 task, named by its id (tasks26.c) */
    bool task_home_ours;   /* ...made by the engine (no host task_home op): in memory only */
    json_t *listen;        /* subscriptions/listen: the honoured filter (NULL: not listening) */
    json_t *listen_id;     /* ...and the listen request's id (its subscriptionId) */
    char out_prefix[11];   /* "srv-" and 6 hex digits */
    char id[];
};

/* handle.c: the method table. */
enum {
    MCPI_BEFORE_INIT = 1 << 0, /* allowed before initialize */
    MCPI_LEGACY = 1 << 1,      /* 2025 revisions only (initialize, ping, setLevel, subscribe) */
    MCPI_STATELESS = 1 << 2,   /* stateless revision only (server/discover) */
    MCPI_CACHEABLE = 1 << 3,   /* stateless results carry ttlMs/cacheScope */
    MCPI_INPUT = 1 << 4,       /* may answer input_required (MRTR) */
};
struct mcpi_method {
    const char *name;
    void (*fn)(mcp_call *c, const json_t *params);
    unsigned flags;
};
const struct mcpi_method *mcpi_find_method(const char *name);

/* jsonrpc.c */
char *mcpi_id_key(const json_t *id); /* malloc'd canonical text of a request id */
bool mcpi_valid_id(const json_t *id);
json_t *mcpi_result_response(const json_t *id, json_t *result);
json_t *mcpi_notification(const char *method, json_t *params);
bool mcpi_proto_at_least(const char *have, const char *want);
/* The static string equal to version (either era's list), or NULL if none is. */
const char *mcpi_protocol_static(const char *version);
json_t *mcpi_supported_versions(void);

/* server.c */
void mcpi_emit(mcp_session *s, const json_t *rel, json_t *msg, bool final);
void mcpi_broadcast(mcp_server *srv, const char *method);
struct mcpi_tool *mcpi_tool_find(mcp_server *srv, const char *name);
void mcpi_tool_unref(struct mcpi_tool *t);
char *mcpi_strdup0(const char *s); /* NULL-safe strdup */

bool mcpi_date_shaped(const char *v);
bool mcpi_stateless_version(const char *v); /* served by mcp_handle_stateless */

/* shared.c: immutable JSON values shared by sessions, counted by their users. */
struct mcpi_shared;
struct mcpi_shared *mcpi_shared_get(mcp_server *srv, const json_t *v); /* NULL for NULL, ENOMEM */
struct mcpi_shared *mcpi_shared_ref(struct mcpi_shared *sh);
void mcpi_shared_put(mcp_server *srv, struct mcpi_shared *sh);
const json_t *mcpi_shared_value(const struct mcpi_shared *sh);
size_t mcpi_shared_count(const mcp_server *srv); /* distinct values held */

/* session.c */
mcp_session *mcpi_session_transient(mcp_server *srv, const char *id);
void mcpi_session_changed(mcp_session *s); /* count a durable change */
/* After a handler ran: its response, or NULL (and *pending) when it kept the call, which
 * then finishes through ops->emit. A stateless request's session goes with its response. */
json_t *mcpi_call_settle(mcp_call *c, mcp_session *s, bool *pending);
void mcpi_session_flush(mcp_session *s);   /* tell the host before replying */
bool mcpi_level_passes(const mcp_session *s, enum mcp_log_level level);
int mcpi_session_subscribe(mcp_session *s, const char *uri, bool on);
bool mcpi_session_subscribed(const mcp_session *s, const char *uri);
void mcpi_session_resource_updated(mcp_session *s, const char *uri);
void mcpi_session_list_changed(mcp_session *s, const char *method);

/* stateless.c */
void mcpi_discover(mcp_call *c, const json_t *params);
/* listen.c: subscriptions/listen and delivery to the streams that listen. */
void mcpi_listen(mcp_call *c, const json_t *params);
void mcpi_listen_list_changed(mcp_server *srv, const char *method);
void mcpi_listen_resource_updated(mcp_server *srv, const char *uri);
json_t *mcpi_stateless_decorate(mcp_call *c, json_t *response); /* resultType, serverInfo, ... */
json_t *mcpi_server_info_meta(mcp_server *srv);

/* mrtr.c */
int mcpi_mrtr_begin(mcp_call *c, const json_t *params, const char *principal);
int mcpi_mrtr_request(mcp_call *c, const char *key, const char *method, json_t *params,
                      mcp_reply_fn reply, void *arg);
void mcpi_mrtr_settle(mcp_call *c); /* deliver answers; input_required if questions remain */
void mcpi_mrtr_free(struct mcpi_mrtr *m);
/* Why answer is not a valid result of a method request (ElicitResult, ...), or NULL. */
const char *mcpi_answer_problem(const char *method, const json_t *answer);
int mcpi_state_seal(mcp_server *srv, const json_t *state, char **out);
json_t *mcpi_state_open(mcp_server *srv, const char *token);
int64_t mcpi_now_ms(mcp_server *srv);

/* call.c */
mcp_call *mcpi_call_new(mcp_server *srv, mcp_session *s, const json_t *id, const char *method,
                        const json_t *params);
void mcpi_call_free(mcp_call *c);
void mcpi_call_cancel(mcp_call *c, bool emit);
void mcpi_call_route_reply(mcp_session *s, const json_t *msg);
void mcpi_call_set_tool(mcp_call *c, struct mcpi_tool *t);
/* After a stateless call's handler, timer or reply ran (c->sync was set):
 * settle its questions, then emit and free it if it finished. */
void mcpi_call_stateless_after(mcp_call *c);
bool mcpi_call_waiting(const mcp_call *c);                 /* has questions out (either era) */
void mcpi_call_finish_result(mcp_call *c, json_t *result); /* as is, steals (input_required) */

/* tasks.c */
/* tools/call with a "task" param: creates the task, answers CreateTaskResult, runs t. */
void mcpi_task_create(mcp_call *c, struct mcpi_tool *t, const json_t *params, const json_t *args);
/* The tool run of a new task id on session s (both eras): a call keyed "task:ID" whose answer
 * goes to the task, with rec (stolen) kept in s->tasks and the session marked changed. NULL
 * when out of memory: rec is freed and c answered with an error. */
mcp_call *mcpi_task_run_new(mcp_call *c, mcp_session *s, const char *id, json_t *rec,
                            const json_t *params);
/* The tool run of a task finished with response (a JSON-RPC response; steals). */
void mcpi_task_settle(mcp_session *s, const char *task_id, json_t *response);
/* The task records of a restored session: running ones become failed. */
json_t *mcpi_tasks_restore(mcp_server *srv, const json_t *tasks);
const json_t *mcpi_call_rel(const mcp_call *c); /* c->id, or NULL for a task's tool run */
/* tools.c: check args, run t for c, arm its time limit. */
void mcpi_tool_run(mcp_call *c, struct mcpi_tool *t, const json_t *args);
void mcpi_tasks_get(mcp_call *c, const json_t *params);
void mcpi_tasks_result(mcp_call *c, const json_t *params);
void mcpi_tasks_list(mcp_call *c, const json_t *params);
void mcpi_tasks_cancel(mcp_call *c, const json_t *params);
/* The outcome of a task record, for tasks26.c (steals response). */
void mcpi_task_record_outcome(mcp_session *s, const char *id, json_t *response, bool tell);
void mcpi_task_iso8601(int64_t ms, char *out, size_t len);
bool mcpi_task_terminal(const char *status);
bool mcpi_task_expired(const json_t *rec, int64_t now);
void mcpi_task_set_status(int64_t now, json_t *rec, const char *status, const char *message);
mcp_call *mcpi_task_run_of(mcp_session *s, const char *id);

/* tasks26.c: the 2026-07-28 tasks extension (io.modelcontextprotocol/tasks). */
bool mcpi_tasks26_negotiated(const mcp_call *c); /* the request's clientCapabilities name it */
void mcpi_tasks26_need_extension(mcp_call *c, const char *what); /* -32021 naming it */
/* A stateless tools/call of a task-supporting tool: becomes a task, or runs, or -32021. */
void mcpi_tasks26_call(mcp_call *c, struct mcpi_tool *t, const json_t *params, const json_t *args);
void mcpi_tasks26_get(mcp_call *c, const json_t *params);
void mcpi_tasks26_update(mcp_call *c, const json_t *params);
void mcpi_tasks26_cancel(mcp_call *c, const json_t *params);
/* A task's tool asks the client something: kept in the task as an inputRequest. */
void mcpi_tasks26_ask(mcp_call *c, const char *key, const char *method, const json_t *params);
/* ...and a question that timed out leaves it (the tool's reply gets the timeout error). */
void mcpi_tasks26_withdraw(mcp_call *c, const char *key);
/* A 2026 task's outcome: completed for any result (isError too), failed for an error. */
void mcpi_tasks26_outcome(json_t *rec, const json_t *response, int64_t now);

/* method handlers: each finishes the call, or leaves it pending (tools/call). */
void mcpi_initialize(mcp_call *c, const json_t *params);
json_t *mcpi_server_capabilities(const char *protocol);
void mcpi_ping(mcp_call *c, const json_t *params);
void mcpi_set_level(mcp_call *c, const json_t *params);
void mcpi_tools_list(mcp_call *c, const json_t *params);
void mcpi_tools_call(mcp_call *c, const json_t *params);
void mcpi_resources_list(mcp_call *c, const json_t *params);
void mcpi_resources_read(mcp_call *c, const json_t *params);
void mcpi_templates_list(mcp_call *c, const json_t *params);
void mcpi_resources_subscribe(mcp_call *c, const json_t *params);
void mcpi_resources_unsubscribe(mcp_call *c, const json_t *params);
void mcpi_prompts_list(mcp_call *c, const json_t *params);
void mcpi_prompts_get(mcp_call *c, const json_t *params);
void mcpi_complete(mcp_call *c, const json_t *params);

/* paging.c: -1 after finishing c with -32602 for a bad cursor. */
int mcpi_page_begin(mcp_call *c, const json_t *params, const char *kind, size_t *offset);
/* Move items [offset, offset+page) of all into result[key]; adds nextCursor. Steals all. */
void mcpi_page_finish(mcp_call *c, json_t *result, const char *key, json_t *all, const char *kind,
                      size_t offset);

/* schema.c: a JSON Schema subset for tool arguments (see the file). */
/* root names the value in messages ("arguments" -> "arguments.a must be ..."). */
bool mcpi_schema_check(const json_t *schema, const json_t *value, const char *root, char *err,
                       size_t errlen);

/* resources.c */
bool mcpi_uri_template_match(const char *tmpl, const char *uri, json_t **vars);
struct mcpi_resource *mcpi_template_find(mcp_server *srv, const char *uri_template);
struct mcpi_prompt *mcpi_prompt_find(mcp_server *srv, const char *name);
json_t *mcpi_complete_filter(const char *const *choices, const char *prefix);

/* the packs */
int mcpi_pack_core(mcp_server *srv, char *err, size_t errlen);
int mcpi_pack_conformance_tools(mcp_server *srv, char *err, size_t errlen);
int mcpi_pack_conformance_fixtures(mcp_server *srv, char *err, size_t errlen);
int mcpi_pack_conformance_tasks(mcp_server *srv, char *err, size_t errlen); /* tools_tasks.c */
/* test://watched-resource changed: bumps its version, notifies its subscribers; the version. */
unsigned mcpi_watched_touch(mcp_server *srv);
extern const char mcpi_test_png_base64[];
extern const char mcpi_test_wav_base64[];

/* icons.c: 0, or -1 with a sentence naming owner ("tool 'x'") in err. */
int mcpi_icons_check(const json_t *icons, const char *owner, char *err, size_t errlen);
json_t *mcpi_icons_copy(const json_t *icons); /* NULL for NULL or [] */
/* o.icons = a copy of icons when there are some and the protocol knows the field. */
void mcpi_icons_put(json_t *o, const json_t *icons, const char *protocol);
/* {name, version, icons?}: serverInfo for initialize and the stateless _meta. */
json_t *mcpi_server_implementation(const mcp_server *srv, const char *protocol);
int mcpi_pack_conformance_client(mcp_server *srv, char *err, size_t errlen);

/* Small helpers for building results. */
json_t *mcpi_text_content(const char *text);

#endif
