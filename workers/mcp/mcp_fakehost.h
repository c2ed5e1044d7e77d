/*
 * A fake mcp_host_ops for tests (header-only): it records every emitted
 * message and keeps timers on a virtual clock that the test advances by
 * hand, so asynchronous calls run deterministically and instantly.
 *
 *   struct fakehost fh; fakehost_init(&fh);
 *   mcp_server *srv = mcp_server_new(&opts, &fakehost_ops, &fh, err, sizeof err);
 *   ...; fakehost_advance(&fh, 250);   // fires timers due in the next 250 ms
 *   json_t *e = fakehost_take(&fh);    // the emitted records so far (then cleared)
 *
 * Each record is {"rel": id|null, "final": bool, "msg": message|null}.
 */
#ifndef CMCP_MCP_FAKEHOST_H
#define CMCP_MCP_FAKEHOST_H

#if !defined(CMCP_LAYER_ENGINE) && !defined(CMCP_LAYER_SHARD)
#error "workers/mcp/mcp_fakehost.h is for the tests of the engine and of its host (../shared/design/layers.md)"
#endif

#include "workers/mcp/mcp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKEHOST_MAX_TIMERS 4096

struct fakehost_timer {
    double due;
    void (*cb)(void *arg);
    void *arg;
    bool live;
};

struct fakehost {
    json_t *emitted;
    double now;
    struct fakehost_timer timers[FAKEHOST_MAX_TIMERS];
    int ntimers;
    int changed;           /* session_changed calls */
    int emitted_at_change; /* how many records existed at the last session_changed */
    int closed;            /* close_stream calls */
};

static inline void fakehost_emit(void *host, mcp_session *s, const json_t *rel, json_t *msg,
                                 bool final)
{
    struct fakehost *fh = host;
    (void)s;
    json_array_append_new(fh->emitted, json_pack("{s:O,s:b,s:o}", "rel", rel ? rel : json_null(),
                                                 "final", final, "msg", msg ? msg : json_null()));
}

static inline void *fakehost_timer_add(void *host, double after_ms, void (*cb)(void *arg),
                                       void *arg)
{
    struct fakehost *fh = host;
    if (fh->ntimers >= FAKEHOST_MAX_TIMERS)
        return NULL;
    struct fakehost_timer *t = &fh->timers[fh->ntimers++];
    t->due = fh->now + after_ms;
    t->cb = cb;
    t->arg = arg;
    t->live = true;
    return t;
}

static inline void fakehost_timer_cancel(void *host, void *timer)
{
    (void)host;
    ((struct fakehost_timer *)timer)->live = false;
}

static inline void fakehost_session_changed(void *host, mcp_session *s)
{
    struct fakehost *fh = host;
    (void)s;
    fh->changed++;
    fh->emitted_at_change = (int)json_array_size(fh->emitted);
}

static inline void fakehost_close_stream(void *host, mcp_session *s, const json_t *rel)
{
    (void)s;
    (void)rel;
    ((struct fakehost *)host)->closed++;
}

static const struct mcp_host_ops fakehost_ops = {
    .emit = fakehost_emit,
    .timer_add = fakehost_timer_add,
    .timer_cancel = fakehost_timer_cancel,
    .session_changed = fakehost_session_changed,
    .close_stream = fakehost_close_stream,
};

static inline void fakehost_init(struct fakehost *fh)
{
    memset(fh, 0, sizeof(*fh));
    fh->emitted = json_array();
}

static inline void fakehost_fini(struct fakehost *fh)
{
    json_decref(fh->emitted);
    fh->emitted = NULL;
}

static inline int fakehost_live_timers(const struct fakehost *fh)
{
    int n = 0;
    for (int i = 0; i < fh->ntimers; i++)
        n += fh->timers[i].live;
    return n;
}

/* Fires, in due order, every timer due within ms from now (including timers
 * armed by the callbacks); returns how many fired. */
static inline int fakehost_advance(struct fakehost *fh, double ms)
{
    double until = fh->now + ms;
    int fired = 0;
    for (;;) {
        int best = -1;
        for (int i = 0; i < fh->ntimers; i++)
            if (fh->timers[i].live && fh->timers[i].due <= until &&
                (best < 0 || fh->timers[i].due < fh->timers[best].due))
                best = i;
        if (best < 0)
            break;
        struct fakehost_timer *t = &fh->timers[best];
        t->live = false;
        if (t->due > fh->now)
            fh->now = t->due;
        t->cb(t->arg);
        fired++;
    }
    fh->now = until;
    return fired;
}

/* The records emitted so far (caller owns); the log starts over. */
static inline json_t *fakehost_take(struct fakehost *fh)
{
    json_t *e = fh->emitted;
    fh->emitted = json_array();
    return e;
}

/* A test's JSON text (any value); a text that is not JSON stops the test program. */
static inline json_t *fakehost_parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);
    if (!j) {
        fprintf(stderr, "bad test JSON %s: %s\n", text, je.text);
        abort();
    }
    return j;
}

/* Builds a request from a JSON text for params (NULL: none) and handles it. */
static inline json_t *fakehost_request(mcp_server *srv, mcp_session *s, json_int_t id,
                                       const char *method, const char *params, bool *pending)
{
    json_t *msg = json_pack("{s:s,s:I,s:s}", "jsonrpc", "2.0", "id", id, "method", method);
    if (params) {
        json_error_t e;
        json_t *p = json_loads(params, JSON_DECODE_ANY, &e);
        if (!p) {
            fprintf(stderr, "fakehost_request: bad params JSON %s: %s\n", params, e.text);
            abort();
        }
        json_object_set_new(msg, "params", p);
    }
    json_t *r = mcp_handle(srv, s, msg, pending);
    json_decref(msg);
    return r;
}

static inline void fakehost_notify(mcp_server *srv, mcp_session *s, const char *method,
                                   const char *params)
{
    json_t *msg = json_pack("{s:s,s:s}", "jsonrpc", "2.0", "method", method);
    if (params)
        json_object_set_new(msg, "params", json_loads(params, 0, NULL));
    json_t *r = mcp_handle(srv, s, msg, NULL);
    json_decref(r);
    json_decref(msg);
}

/* initialize + notifications/initialized with the given version and client
 * capabilities (JSON text); returns the initialize response. */
static inline json_t *fakehost_initialize(mcp_server *srv, mcp_session *s, const char *version,
                                          const char *caps)
{
    char params[1024];
    snprintf(params, sizeof(params),
             "{\"protocolVersion\":\"%s\",\"capabilities\":%s,\"clientInfo\":{\"name\":\"t\","
             "\"version\":\"1\"}}",
             version, caps ? caps : "{}");
    json_t *r = fakehost_request(srv, s, 0, "initialize", params, NULL);
    fakehost_notify(srv, s, "notifications/initialized", NULL);
    return r;
}

/* What an engine test starts from: a server on a fake host, and maybe a session. */
struct fakeenv {
    struct fakehost fh;
    mcp_server *srv;
    mcp_session *s; /* NULL unless a session id was given */
    json_int_t next_id;
};

/* A server with options o on ops (NULL: fakehost_ops); with sid, a session; with version
 * too, that session is initialized with caps (JSON text or NULL) and what it emitted is
 * dropped. NULL when the server could not be made. */
static inline struct fakeenv *fakeenv_new(const struct mcp_server_opts *o,
                                          const struct mcp_host_ops *ops, const char *sid,
                                          const char *version, const char *caps)
{
    struct fakeenv *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    fakehost_init(&e->fh);
    char err[256];
    e->srv = mcp_server_new(o, ops ? ops : &fakehost_ops, &e->fh, err, sizeof(err));
    if (!e->srv) {
        fakehost_fini(&e->fh);
        free(e);
        return NULL;
    }
    if (sid)
        e->s = mcp_session_new(e->srv, sid);
    if (sid && version) {
        json_decref(fakehost_initialize(e->srv, e->s, version, caps));
        json_decref(fakehost_take(&e->fh));
    }
    return e;
}

/* A cmocka teardown for the fakeenv in *state. */
static inline int fakeenv_teardown(void **state)
{
    struct fakeenv *e = *state;
    mcp_server_free(e->srv);
    fakehost_fini(&e->fh);
    free(e);
    return 0;
}

/* Accessors for assertions: 0 / NULL when the response is not of that shape. */
static inline int fakehost_error_code(const json_t *r)
{
    return (int)json_integer_value(json_object_get(json_object_get(r, "error"), "code"));
}

static inline const json_t *fakehost_result(const json_t *r)
{
    return json_object_get(r, "result");
}

/* result.content[i].text of a tools/call response. */
static inline const char *fakehost_text(const json_t *r, size_t i)
{
    return json_string_value(json_object_get(
        json_array_get(json_object_get(json_object_get(r, "result"), "content"), i), "text"));
}

static inline bool fakehost_is_error(const json_t *r)
{
    return json_is_true(json_object_get(json_object_get(r, "result"), "isError"));
}

#endif
