/*
 * Internals shared by the files of the MCP engine. Nothing here is part of
 * the public API (mcp.h); names shared between files use the mcpi_ prefix.
 */
#ifndef CMCP_MCP_INTERNAL_H
#define CMCP_MCP_INTERNAL_H

#include "mcp.h"

#include <uthash.h>

/* Bounds that keep one client from growing a shard's memory without limit. */
#define MCPI_MAX_INFLIGHT 128      /* concurrent requests per session */
#define MCPI_MAX_SUBSCRIPTIONS 256 /* resources/subscribe per session */
#define MCPI_MAX_COMPLETIONS 100   /* values in one completion answer (spec) */
#define MCPI_DEFAULT_PAGE 100

struct mcpi_tool {
    char *name, *title, *description;
    json_t *input_schema, *output_schema, *annotations;
    mcp_tool_fn run;
    void *ud;
    int refs; /* the registry's and each running call's */
    UT_hash_handle hh;
};

struct mcpi_resource {
    char *uri; /* URI, or the template for templates */
    char *name, *title, *description, *mime_type;
    mcp_resource_read_fn read;
    json_t *(*list)(mcp_session *s, void *ud);
    mcp_complete_fn complete;
    void *ud;
    UT_hash_handle hh;
};

struct mcpi_prompt {
    char *name, *title, *description;
    json_t *arguments; /* array, never NULL */
    mcp_prompt_fn get;
    mcp_complete_fn complete;
    void *ud;
    UT_hash_handle hh;
};

struct mcp_server {
    struct mcp_host_ops ops;
    void *host;
    char *name, *version, *instructions;
    int page_size;
    /* uthash keeps insertion order when iterating: lists come out in
     * registration order, which is what pagination offsets rely on. */
    struct mcpi_tool *tools;
    struct mcpi_resource *resources, *templates;
    struct mcpi_prompt *prompts;
    mcp_session *sessions; /* utlist-style doubly linked via next/prev */
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
    UT_hash_handle hh;
};

struct mcp_session {
    mcp_server *srv;
    char *id;
    bool initialized;  /* initialize answered */
    bool client_ready; /* notifications/initialized seen (not durable) */
    char *protocol;
    json_t *client_info, *client_caps;
    int log_level; /* -1: not set, every level passes */
    json_t *subs;  /* object: uri -> true */
    json_t *kv;    /* object: key -> value */
    uint64_t epoch, seq;
    bool dirty; /* durable state changed since the last session_changed */
    mcp_call *inflight;
    struct mcpi_outreq *outbound;
    unsigned long next_out;
    char out_prefix[16];
    void *userdata;
    mcp_session *prev, *next;
};

/* jsonrpc.c */
char *mcpi_id_key(const json_t *id); /* malloc'd canonical text of a request id */
bool mcpi_valid_id(const json_t *id);
json_t *mcpi_result_response(const json_t *id, json_t *result);
json_t *mcpi_notification(const char *method, json_t *params);
bool mcpi_proto_at_least(const char *have, const char *want);
json_t *mcpi_supported_versions(void);

/* server.c */
void mcpi_emit(mcp_session *s, const json_t *rel, json_t *msg, bool final);
void mcpi_broadcast(mcp_server *srv, const char *method);
struct mcpi_tool *mcpi_tool_find(mcp_server *srv, const char *name);
void mcpi_tool_unref(struct mcpi_tool *t);
char *mcpi_strdup0(const char *s); /* NULL-safe strdup */

/* session.c */
void mcpi_session_changed(mcp_session *s); /* count a durable change */
void mcpi_session_flush(mcp_session *s);   /* tell the host before replying */
bool mcpi_level_passes(const mcp_session *s, enum mcp_log_level level);
int mcpi_session_subscribe(mcp_session *s, const char *uri, bool on);
bool mcpi_session_subscribed(const mcp_session *s, const char *uri);
void mcpi_session_resource_updated(mcp_session *s, const char *uri);
void mcpi_session_list_changed(mcp_session *s, const char *method);

/* call.c */
mcp_call *mcpi_call_new(mcp_server *srv, mcp_session *s, const json_t *id, const char *method,
                        const json_t *params);
void mcpi_call_free(mcp_call *c);
void mcpi_call_cancel(mcp_call *c, bool emit);
void mcpi_call_route_reply(mcp_session *s, const json_t *msg);
void mcpi_call_set_tool(mcp_call *c, struct mcpi_tool *t);

/* method handlers: each finishes the call, or leaves it pending (tools/call). */
void mcpi_initialize(mcp_call *c, const json_t *params);
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
extern const char mcpi_test_png_base64[];
extern const char mcpi_test_wav_base64[];

/* Small helpers for building results. */
json_t *mcpi_text_content(const char *text);

#endif
