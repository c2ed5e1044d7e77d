/*
 * A session: what initialize negotiated, what the client asked for
 * (log level, subscriptions), the session's kv data, and the requests in
 * flight. Everything but the in-flight requests is durable: it is what
 * mcp_session_dump() writes and mcp_session_restore() reads back.
 */
#include "workers/mcp/mcp_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_VERSION 1

static mcp_session *session_alloc(mcp_server *srv, const char *id, bool transient)
{
    if (!id)
        id = "";
    size_t idlen = strlen(id);
    mcp_session *s = calloc(1, sizeof(*s) + idlen + 1);
    if (!s)
        return NULL;
    s->srv = srv;
    memcpy(s->id, id, idlen + 1);
    s->log_level = -1;
    s->epoch = 1;
    /* Server->client request ids carry a per-object random prefix, so that a
     * late answer to a request made before a restart or failover can never
     * be taken for the answer to a new one. */
    unsigned char rnd[3];
    if (sodium_init() < 0)
        memset(rnd, 0, sizeof(rnd));
    else
        randombytes_buf(rnd, sizeof(rnd));
    snprintf(s->out_prefix, sizeof(s->out_prefix), "srv-%02x%02x%02x", rnd[0], rnd[1], rnd[2]);
    /* Transient sessions (one stateless request each) live on their own
     * list: broadcasts (list_changed, resources/updated) never reach them. */
    mcp_session **head = transient ? &srv->stateless : &srv->sessions;
    s->stateless = transient;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
    return s;
}

mcp_session *mcp_session_new(mcp_server *srv, const char *id)
{
    return srv ? session_alloc(srv, id, false) : NULL;
}

mcp_session *mcpi_session_transient(mcp_server *srv, const char *id)
{
    return session_alloc(srv, id, true);
}

bool mcp_session_is_stateless(const mcp_session *s)
{
    return s && s->stateless;
}

size_t mcp_stateless_pending(const mcp_server *srv)
{
    size_t n = 0;
    for (const mcp_session *s = srv ? srv->stateless : NULL; s; s = s->next)
        n += HASH_COUNT(s->inflight);
    return n;
}

void mcp_session_free(mcp_session *s)
{
    if (!s)
        return;
    mcp_call *c, *tmp;
    HASH_ITER(hh, s->inflight, c, tmp)
    {
        mcpi_call_cancel(c, false);
    }
    /* Calls own their outbound requests, so none are left; be defensive. */
    struct mcpi_outreq *o, *ot;
    HASH_ITER(hh, s->outbound, o, ot)
    {
        HASH_DEL(s->outbound, o);
        free(o->key);
        json_decref(o->id);
        free(o);
    }
    if (s->prev)
        s->prev->next = s->next;
    else if (s->stateless)
        s->srv->stateless = s->next;
    else
        s->srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    mcpi_shared_put(s->srv, s->client_info);
    mcpi_shared_put(s->srv, s->client_caps);
    json_decref(s->subs);
    json_decref(s->kv);
    json_decref(s->tasks);
    json_decref(s->listen);
    json_decref(s->listen_id);
    free(s);
}

const char *mcp_session_id(const mcp_session *s)
{
    return s ? s->id : NULL;
}

bool mcp_session_initialized(const mcp_session *s)
{
    return s && s->initialized;
}

const char *mcp_session_protocol(const mcp_session *s)
{
    return s && s->initialized ? s->protocol : NULL;
}

const json_t *mcp_session_client_capabilities(const mcp_session *s)
{
    return s ? mcpi_shared_value(s->client_caps) : NULL;
}

size_t mcp_session_pending(const mcp_session *s)
{
    return s ? HASH_COUNT(s->inflight) : 0;
}

void mcp_session_set_userdata(mcp_session *s, void *p)
{
    s->userdata = p;
}

void *mcp_session_userdata(const mcp_session *s)
{
    return s->userdata;
}

uint64_t mcp_session_epoch(const mcp_session *s)
{
    return s->epoch;
}

uint64_t mcp_session_seq(const mcp_session *s)
{
    return s->seq;
}

void mcp_session_set_epoch(mcp_session *s, uint64_t epoch)
{
    s->epoch = epoch;
}

void mcpi_session_changed(mcp_session *s)
{
    s->seq++;
    s->dirty = true;
}

void mcpi_session_flush(mcp_session *s)
{
    if (!s || !s->dirty)
        return;
    if (s->stateless) { /* nothing durable: the session dies with its request */
        s->dirty = false;
        return;
    }
    s->dirty = false;
    if (s->srv->ops.session_changed)
        s->srv->ops.session_changed(s->srv->host, s);
}

bool mcpi_level_passes(const mcp_session *s, enum mcp_log_level level)
{
    return !s || s->log_level < 0 || (int)level >= s->log_level;
}

void mcp_session_log(mcp_session *s, enum mcp_log_level level, const char *logger, json_t *data)
{
    if (!s || !s->initialized || !mcpi_level_passes(s, level)) {
        json_decref(data);
        return;
    }
    json_t *p = json_pack("{s:s}", "level", mcp_log_level_name(level));
    if (logger)
        json_object_set_new(p, "logger", json_string(logger));
    json_object_set_new(p, "data", data ? data : json_null());
    mcpi_emit(s, NULL, mcpi_notification("notifications/message", p), false);
}

int mcpi_session_subscribe(mcp_session *s, const char *uri, bool on)
{
    bool have = json_object_get(s->subs, uri) != NULL;
    if (on == have)
        return 0;
    if (on) {
        if (json_object_size(s->subs) >= MCPI_MAX_SUBSCRIPTIONS)
            return -1;
        if (!s->subs && !(s->subs = json_object()))
            return -1;
        if (json_object_set_new(s->subs, uri, json_true()) != 0)
            return -1;
    } else {
        json_object_del(s->subs, uri);
        if (json_object_size(s->subs) == 0) { /* most sessions have none: keep no object */
            json_decref(s->subs);
            s->subs = NULL;
        }
    }
    mcpi_session_changed(s);
    return 0;
}

bool mcpi_session_subscribed(const mcp_session *s, const char *uri)
{
    return json_object_get(s->subs, uri) != NULL;
}

void mcpi_session_resource_updated(mcp_session *s, const char *uri)
{
    if (!s->initialized || !mcpi_session_subscribed(s, uri))
        return;
    mcpi_emit(s, NULL,
              mcpi_notification("notifications/resources/updated", json_pack("{s:s}", "uri", uri)),
              false);
}

void mcpi_session_list_changed(mcp_session *s, const char *method)
{
    if (s->initialized)
        mcpi_emit(s, NULL, mcpi_notification(method, NULL), false);
}

static json_t *or_null(const json_t *v)
{
    return v ? json_deep_copy(v) : json_null();
}

json_t *mcp_session_dump(const mcp_session *s)
{
    json_t *subs = json_array();
    const char *uri;
    json_t *v;
    json_object_foreach((json_t *)s->subs, uri, v)
    {
        json_array_append_new(subs, json_string(uri));
    }
    json_t *st =
        json_pack("{s:i,s:s,s:I,s:I,s:b,s:o,s:{s:o,s:o},s:o,s:o,s:o}", "v", STATE_VERSION, "id",
                  s->id, "epoch", (json_int_t)s->epoch, "seq", (json_int_t)s->seq, "initialized",
                  s->initialized, "protocol", s->protocol ? json_string(s->protocol) : json_null(),
                  "client", "info", or_null(mcpi_shared_value(s->client_info)), "capabilities",
                  or_null(mcpi_shared_value(s->client_caps)), "log_level",
                  s->log_level >= 0 ? json_string(mcp_log_level_name(s->log_level)) : json_null(),
                  "subscriptions", subs, "kv", s->kv ? json_deep_copy(s->kv) : json_object());
    if (st && s->task_home)
        json_object_set_new(st, "task_home", json_true());
    if (st && json_object_size(s->tasks) > 0) /* (most sessions have none: no field) */
        json_object_set_new(st, "tasks", json_deep_copy(s->tasks));
    return st;
}

static int bad(char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "cannot restore session state: %s", what);
    return -1;
}

/* Checks every field before the session exists, so a bad record leaves nothing behind. */
static int check_state(const json_t *st, char *err, size_t errlen)
{
    if (!json_is_object(st))
        return bad(err, errlen, "state must be a JSON object (from mcp_session_dump)");
    if (json_integer_value(json_object_get(st, "v")) != STATE_VERSION)
        return bad(err, errlen, "unknown state version 'v' (this build reads version 1)");
    if (!json_is_string(json_object_get(st, "id")))
        return bad(err, errlen, "'id' must be a string");
    const json_t *e = json_object_get(st, "epoch"), *q = json_object_get(st, "seq");
    if (!json_is_integer(e) || json_integer_value(e) < 0 || !json_is_integer(q) ||
        json_integer_value(q) < 0)
        return bad(err, errlen, "'epoch' and 'seq' must be non-negative integers");
    const json_t *init = json_object_get(st, "initialized");
    if (!json_is_boolean(init))
        return bad(err, errlen, "'initialized' must be true or false");
    const json_t *proto = json_object_get(st, "protocol");
    if (json_is_true(init) && !mcp_protocol_supported(json_string_value(proto)))
        return bad(err, errlen, "'protocol' must be a protocol version this build supports");
    const json_t *client = json_object_get(st, "client");
    if (client && !json_is_object(client))
        return bad(err, errlen, "'client' must be an object");
    const json_t *info = json_object_get(client, "info");
    const json_t *caps = json_object_get(client, "capabilities");
    if ((info && !json_is_null(info) && !json_is_object(info)) ||
        (caps && !json_is_null(caps) && !json_is_object(caps)))
        return bad(err, errlen, "'client.info' and 'client.capabilities' must be objects");
    const json_t *lvl = json_object_get(st, "log_level");
    if (lvl && !json_is_null(lvl) && mcp_log_level_parse(json_string_value(lvl)) < 0)
        return bad(err, errlen, "'log_level' must be an MCP log level name or null");
    const json_t *subs = json_object_get(st, "subscriptions");
    if (subs && !json_is_array(subs))
        return bad(err, errlen, "'subscriptions' must be an array of URIs");
    size_t i;
    json_t *u;
    json_array_foreach(subs, i, u)
    {
        if (!json_is_string(u))
            return bad(err, errlen, "'subscriptions' must be an array of URIs");
    }
    const json_t *kv = json_object_get(st, "kv");
    if (kv && !json_is_object(kv))
        return bad(err, errlen, "'kv' must be an object");
    const json_t *tasks = json_object_get(st, "tasks");
    if (tasks && !json_is_object(tasks))
        return bad(err, errlen, "'tasks' must be an object of task records");
    const char *tid;
    json_t *rec;
    json_object_foreach((json_t *)tasks, tid, rec)
    {
        if (!json_is_string(json_object_get(rec, "taskId")) ||
            !json_is_string(json_object_get(rec, "status")) ||
            !json_is_integer(json_object_get(rec, "created_ms")))
            return bad(err, errlen, "a task record needs taskId, status and created_ms");
    }
    return 0;
}

mcp_session *mcp_session_restore(mcp_server *srv, const json_t *st, char *err, size_t errlen)
{
    if (!srv) {
        snprintf(err, errlen, "cannot restore session state: no server");
        return NULL;
    }
    if (check_state(st, err, errlen) != 0)
        return NULL;
    mcp_session *s = session_alloc(srv, json_string_value(json_object_get(st, "id")), false);
    if (!s) {
        snprintf(err, errlen, "cannot restore session state: out of memory");
        return NULL;
    }
    s->epoch = (uint64_t)json_integer_value(json_object_get(st, "epoch"));
    s->seq = (uint64_t)json_integer_value(json_object_get(st, "seq"));
    s->initialized = json_is_true(json_object_get(st, "initialized"));
    /* A session that was answered is treated as ready: the initialized
     * notification may have come after the last durable write. */
    s->client_ready = s->initialized;
    /* Only a session that was never initialized can have a protocol we do not know: none. */
    s->protocol = mcpi_protocol_static(json_string_value(json_object_get(st, "protocol")));
    const json_t *client = json_object_get(st, "client");
    const json_t *info = json_object_get(client, "info");
    const json_t *caps = json_object_get(client, "capabilities");
    s->client_info = json_is_object(info) ? mcpi_shared_get(srv, info) : NULL;
    s->client_caps = json_is_object(caps) ? mcpi_shared_get(srv, caps) : NULL;
    s->log_level = (signed char)mcp_log_level_parse(
        json_string_value(json_object_get(st, "log_level")));
    size_t i;
    json_t *u;
    json_t *subs = json_object_get(st, "subscriptions");
    if (json_array_size(subs) > 0 && (s->subs = json_object()) != NULL) {
        json_array_foreach(subs, i, u)
        {
            json_object_set_new(s->subs, json_string_value(u), json_true());
        }
    }
    const json_t *kv = json_object_get(st, "kv");
    if (json_object_size(kv) > 0)
        s->kv = json_deep_copy(kv);
    s->task_home = json_is_true(json_object_get(st, "task_home"));
    /* Tasks that were running are reported failed: their tools died with the old process. */
    const json_t *tasks = json_object_get(st, "tasks");
    if (json_object_size(tasks) > 0)
        s->tasks = mcpi_tasks_restore(srv, tasks);
    return s;
}
