/*
 * The server: configuration, the registry of tools, resources and prompts,
 * and the messages that go to every session (list_changed, updates).
 */
#include "workers/mcp/mcp_internal.h"

#include "base/cmcp.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_INSTRUCTIONS                                                                       \
    "cmcp serves tools, resources and prompts over MCP. Call tools/list to see what this "         \
    "server offers; long-running tools report progress when you pass _meta.progressToken."

char *mcpi_strdup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

void mcpi_emit(mcp_session *s, const json_t *rel, json_t *msg, bool final)
{
    mcp_server *srv = s->srv;
    if (s->task_home) { /* a 2026 task has no client stream: its questions are in the task */
        json_decref(msg);
        return;
    }
    if (srv->ops.emit)
        srv->ops.emit(srv->host, s, rel, msg, final);
    else
        json_decref(msg);
}

static void deliver_list_changed(mcp_server *srv, const char *method)
{
    for (mcp_session *s = srv->sessions; s; s = s->next)
        mcpi_session_list_changed(s, method);
    mcpi_listen_list_changed(srv, method);
}

static void deliver_resource_updated(mcp_server *srv, const char *uri)
{
    for (mcp_session *s = srv->sessions; s; s = s->next)
        mcpi_session_resource_updated(s, uri);
    mcpi_listen_resource_updated(srv, uri);
}

/* Session-wide notification to every initialized session, here and (through the host) in
 * the server's other engines. */
void mcpi_broadcast(mcp_server *srv, const char *method)
{
    deliver_list_changed(srv, method);
    if (srv->ops.announce)
        srv->ops.announce(srv->host, method, NULL);
}

void mcp_server_resource_updated(mcp_server *srv, const char *uri)
{
    if (!srv || !uri)
        return;
    deliver_resource_updated(srv, uri);
    if (srv->ops.announce)
        srv->ops.announce(srv->host, "notifications/resources/updated", uri);
}

int mcp_server_deliver(mcp_server *srv, const char *method, const char *uri)
{
    if (!srv || !method)
        return -1;
    if (strcmp(method, "notifications/resources/updated") == 0) {
        if (!uri || !*uri)
            return -1;
        deliver_resource_updated(srv, uri);
        return 0;
    }
    if (strcmp(method, "notifications/tools/list_changed") != 0 &&
        strcmp(method, "notifications/prompts/list_changed") != 0 &&
        strcmp(method, "notifications/resources/list_changed") != 0)
        return -1;
    deliver_list_changed(srv, method);
    return 0;
}

/* "core, conformance" -> each pack in order; unknown names are a config error. */
static int load_packs(mcp_server *srv, const char *packs, char *err, size_t errlen)
{
    if (!packs)
        packs = "core";
    char *copy = strdup(packs), *save = NULL;
    int rv = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && rv == 0; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && isspace((unsigned char)end[-1]))
            *--end = '\0';
        if (*tok == '\0' || strcmp(tok, "none") == 0)
            continue;
        if (strcmp(tok, "core") == 0) {
            rv = mcpi_pack_core(srv, err, errlen);
        } else if (strcmp(tok, "conformance") == 0) {
            rv = mcpi_pack_conformance_tools(srv, err, errlen);
            if (rv == 0)
                rv = mcpi_pack_conformance_fixtures(srv, err, errlen);
            if (rv == 0)
                rv = mcpi_pack_conformance_client(srv, err, errlen);
        } else {
            snprintf(err, errlen,
                     "unknown tool pack '%s' in packs=\"%s\": use a comma-separated list of "
                     "core, conformance (or none)",
                     tok, packs);
            rv = -1;
        }
    }
    free(copy);
    return rv;
}

mcp_server *mcp_server_new(const struct mcp_server_opts *o, const struct mcp_host_ops *ops,
                           void *host, char *err, size_t errlen)
{
    static const struct mcp_server_opts defaults = {0};
    if (!o)
        o = &defaults;
    mcp_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory creating the MCP server");
        return NULL;
    }
    if (ops)
        srv->ops = *ops;
    srv->host = host;
    srv->name = strdup(o->name ? o->name : "cmcp");
    srv->version = strdup(o->version ? o->version : CMCP_VERSION);
    srv->instructions = strdup(o->instructions ? o->instructions : DEFAULT_INSTRUCTIONS);
    srv->page_size = o->page_size > 0 ? o->page_size : MCPI_DEFAULT_PAGE;
    srv->state_ttl_ms = MCPI_STATE_TTL_MS;
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to initialize");
        mcp_server_free(srv);
        return NULL;
    }
    crypto_secretbox_keygen(srv->state_key);
    if (load_packs(srv, o->packs, err, errlen) != 0) {
        mcp_server_free(srv);
        return NULL;
    }
    return srv;
}

int mcp_server_set_state_key(mcp_server *srv, const void *key, size_t len, char *err, size_t errlen)
{
    if (!srv || !key || len < 16) {
        snprintf(err, errlen,
                 "the requestState key must be at least 16 bytes (got %zu): give every shard "
                 "the same random secret",
                 key ? len : 0);
        return -1;
    }
    /* Any secret of 16+ bytes becomes a 32-byte key; the context string keeps
     * it apart from other uses of the same secret. */
    static const unsigned char ctx[] = "cmcp requestState v1";
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(srv->state_key));
    crypto_generichash_update(&st, ctx, sizeof(ctx));
    crypto_generichash_update(&st, key, len);
    crypto_generichash_final(&st, srv->state_key, sizeof(srv->state_key));
    return 0;
}

void mcp_server_set_stateless_opts(mcp_server *srv, const struct mcp_stateless_opts *o)
{
    if (!srv || !o)
        return;
    srv->state_ttl_ms = o->state_ttl_ms > 0 ? o->state_ttl_ms : MCPI_STATE_TTL_MS;
    srv->list_ttl_ms = o->list_ttl_ms > 0 ? o->list_ttl_ms : 0;
    srv->read_ttl_ms = o->read_ttl_ms > 0 ? o->read_ttl_ms : 0;
    srv->now_ms = o->now_ms;
}

static void resource_free(struct mcpi_resource *r)
{
    free(r->uri);
    free(r->name);
    free(r->title);
    free(r->description);
    free(r->mime_type);
    json_decref(r->icons);
    free(r);
}

void mcpi_tool_unref(struct mcpi_tool *t)
{
    if (!t || --t->refs > 0)
        return;
    free(t->name);
    free(t->title);
    free(t->description);
    json_decref(t->input_schema);
    json_decref(t->output_schema);
    json_decref(t->annotations);
    json_decref(t->icons);
    free(t);
}

void mcp_server_free(mcp_server *srv)
{
    if (!srv)
        return;
    while (srv->sessions)
        mcp_session_free(srv->sessions);
    while (srv->stateless)
        mcp_session_free(srv->stateless);
    struct mcpi_tool *t, *tt;
    HASH_ITER(hh, srv->tools, t, tt)
    {
        HASH_DEL(srv->tools, t);
        mcpi_tool_unref(t);
    }
    struct mcpi_resource *r, *rt;
    HASH_ITER(hh, srv->resources, r, rt)
    {
        HASH_DEL(srv->resources, r);
        resource_free(r);
    }
    HASH_ITER(hh, srv->templates, r, rt)
    {
        HASH_DEL(srv->templates, r);
        resource_free(r);
    }
    struct mcpi_prompt *p, *pt;
    HASH_ITER(hh, srv->prompts, p, pt)
    {
        HASH_DEL(srv->prompts, p);
        free(p->name);
        free(p->title);
        free(p->description);
        json_decref(p->icons);
        json_decref(p->arguments);
        free(p);
    }
    free(srv->name);
    free(srv->version);
    free(srv->instructions);
    json_decref(srv->icons);
    sodium_memzero(srv->state_key, sizeof(srv->state_key));
    free(srv);
}

/* The spec's SHOULD for tool names; we make it a MUST for our own registry so
 * that names survive every client's validation. */
static bool valid_tool_name(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 128)
        return false;
    for (const char *p = n; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
            return false;
    return true;
}

struct mcpi_tool *mcpi_tool_find(mcp_server *srv, const char *name)
{
    struct mcpi_tool *t = NULL;
    HASH_FIND_STR(srv->tools, name, t);
    return t;
}

size_t mcp_server_tool_count(const mcp_server *srv)
{
    return HASH_COUNT(srv->tools);
}

int mcp_server_add_tool(mcp_server *srv, const struct mcp_tool_def *def, char *err, size_t errlen)
{
    if (!def || !valid_tool_name(def->name)) {
        snprintf(err, errlen,
                 "tool name '%s' is invalid: use 1-128 characters of A-Z a-z 0-9 _ - .",
                 def && def->name ? def->name : "(null)");
        return -1;
    }
    if (!def->description || !def->run) {
        snprintf(err, errlen, "tool '%s' needs a description and a run function", def->name);
        return -1;
    }
    if ((def->input_schema && !json_is_object(def->input_schema)) ||
        (def->output_schema && !json_is_object(def->output_schema))) {
        snprintf(err, errlen, "tool '%s': inputSchema and outputSchema must be JSON objects",
                 def->name);
        return -1;
    }
    char owner[160];
    snprintf(owner, sizeof(owner), "tool '%s'", def->name);
    if (mcpi_icons_check(def->icons, owner, err, errlen) != 0)
        return -1;
    if (mcpi_tool_find(srv, def->name)) {
        snprintf(err, errlen, "tool '%s' is already registered: tool names must be unique",
                 def->name);
        return -1;
    }
    struct mcpi_tool *t = calloc(1, sizeof(*t));
    t->name = strdup(def->name);
    t->title = mcpi_strdup0(def->title);
    t->description = strdup(def->description);
    t->input_schema = def->input_schema ? json_deep_copy(def->input_schema)
                                        : json_pack("{s:s}", "type", "object");
    t->output_schema = def->output_schema ? json_deep_copy(def->output_schema) : NULL;
    t->annotations = def->annotations ? json_deep_copy(def->annotations) : NULL;
    t->run = def->run;
    t->ud = def->ud;
    t->limit_ms = -1; /* the server's default */
    t->output_trusted = def->output_trusted && def->output_schema;
    t->task_support = def->task_support;
    t->icons = mcpi_icons_copy(def->icons);
    t->task_deferred = def->task_deferred;
    t->refs = 1;
    HASH_ADD_KEYPTR(hh, srv->tools, t->name, strlen(t->name), t);
    mcpi_broadcast(srv, "notifications/tools/list_changed");
    return 0;
}

int mcp_server_remove_tool(mcp_server *srv, const char *name)
{
    struct mcpi_tool *t = name ? mcpi_tool_find(srv, name) : NULL;
    if (!t)
        return -1;
    HASH_DEL(srv->tools, t);
    mcpi_tool_unref(t);
    mcpi_broadcast(srv, "notifications/tools/list_changed");
    return 0;
}

static int add_resource(mcp_server *srv, struct mcpi_resource **table,
                        const struct mcp_resource_def *def, bool is_template, char *err,
                        size_t errlen)
{
    if (!def || !def->uri || !*def->uri || !def->name || !def->read) {
        snprintf(err, errlen, "a resource%s needs a uri, a name and a read function",
                 is_template ? " template" : "");
        return -1;
    }
    if (is_template && !strchr(def->uri, '{')) {
        snprintf(err, errlen, "resource template '%s' has no {variable}", def->uri);
        return -1;
    }
    char owner[300];
    snprintf(owner, sizeof(owner), "resource%s '%s'", is_template ? " template" : "", def->uri);
    if (mcpi_icons_check(def->icons, owner, err, errlen) != 0)
        return -1;
    struct mcpi_resource *r = NULL;
    HASH_FIND_STR(*table, def->uri, r);
    if (r) {
        snprintf(err, errlen, "resource '%s' is already registered", def->uri);
        return -1;
    }
    r = calloc(1, sizeof(*r));
    r->uri = strdup(def->uri);
    r->name = strdup(def->name);
    r->title = mcpi_strdup0(def->title);
    r->description = mcpi_strdup0(def->description);
    r->mime_type = mcpi_strdup0(def->mime_type);
    r->icons = mcpi_icons_copy(def->icons);
    r->read = def->read;
    r->list = def->list;
    r->complete = def->complete;
    r->ud = def->ud;
    HASH_ADD_KEYPTR(hh, *table, r->uri, strlen(r->uri), r);
    mcpi_broadcast(srv, "notifications/resources/list_changed");
    return 0;
}

int mcp_server_add_resource(mcp_server *srv, const struct mcp_resource_def *def, char *err,
                            size_t errlen)
{
    return add_resource(srv, &srv->resources, def, false, err, errlen);
}

int mcp_server_add_template(mcp_server *srv, const struct mcp_resource_def *def, char *err,
                            size_t errlen)
{
    return add_resource(srv, &srv->templates, def, true, err, errlen);
}

int mcp_server_add_prompt(mcp_server *srv, const struct mcp_prompt_def *def, char *err,
                          size_t errlen)
{
    if (!def || !def->name || !*def->name || !def->get) {
        snprintf(err, errlen, "a prompt needs a name and a get function");
        return -1;
    }
    if (def->arguments && !json_is_array(def->arguments)) {
        snprintf(err, errlen, "prompt '%s': arguments must be an array", def->name);
        return -1;
    }
    char owner[160];
    snprintf(owner, sizeof(owner), "prompt '%s'", def->name);
    if (mcpi_icons_check(def->icons, owner, err, errlen) != 0)
        return -1;
    if (mcpi_prompt_find(srv, def->name)) {
        snprintf(err, errlen, "prompt '%s' is already registered", def->name);
        return -1;
    }
    struct mcpi_prompt *p = calloc(1, sizeof(*p));
    p->name = strdup(def->name);
    p->title = mcpi_strdup0(def->title);
    p->description = mcpi_strdup0(def->description);
    p->arguments = def->arguments ? json_deep_copy(def->arguments) : json_array();
    p->icons = mcpi_icons_copy(def->icons);
    p->get = def->get;
    p->complete = def->complete;
    p->ud = def->ud;
    HASH_ADD_KEYPTR(hh, srv->prompts, p->name, strlen(p->name), p);
    mcpi_broadcast(srv, "notifications/prompts/list_changed");
    return 0;
}
