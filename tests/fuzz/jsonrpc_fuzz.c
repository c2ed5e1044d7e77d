/*
 * libFuzzer target for the JSON-RPC side: arbitrary bytes as a client
 * message (or 2025-03-26 batch) through the MCP engine, on a session that
 * the input itself may initialize first. Timers are recorded and fired at
 * once, so asynchronous tools run to completion within one input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "workers/mcp/mcp.h"

struct ftimer {
    void (*cb)(void *);
    void *arg;
    struct ftimer *next;
};
static struct ftimer *timers;

static void emit(void *host, mcp_session *s, const json_t *rel, json_t *msg, bool final)
{
    (void)host;
    (void)s;
    (void)rel;
    (void)final;
    json_decref(msg);
}

static void *timer_add(void *host, double ms, void (*cb)(void *), void *arg)
{
    (void)host;
    (void)ms;
    struct ftimer *t = calloc(1, sizeof(*t));
    t->cb = cb;
    t->arg = arg;
    t->next = timers;
    timers = t;
    return t;
}

static void timer_cancel(void *host, void *timer)
{
    (void)host;
    for (struct ftimer **pp = &timers; *pp; pp = &(*pp)->next)
        if (*pp == timer) {
            *pp = ((struct ftimer *)timer)->next;
            free(timer);
            return;
        }
}

static const struct mcp_host_ops ops = {
    .emit = emit, .timer_add = timer_add, .timer_cancel = timer_cancel};

static void run_timers(void)
{
    for (int n = 0; timers && n < 10000; n++) {
        struct ftimer *t = timers;
        timers = t->next;
        void (*cb)(void *) = t->cb;
        void *arg = t->arg;
        free(t);
        cb(arg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mcp_server *srv;
    if (!srv) {
        char err[256];
        struct mcp_server_opts o = {"core,conformance", "fuzz", "0", NULL, 3};
        srv = mcp_server_new(&o, &ops, NULL, err, sizeof(err));
        if (!srv)
            abort();
    }
    mcp_session *s = mcp_session_new(srv, "0-fuzzfuzzfuzzfuzzfuzzfuzzfu");
    /* Half the inputs meet an initialized session, so the methods past initialize run too. */
    if (size > 0 && (data[0] & 1)) {
        static const char init[] =
            "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
            "\"protocolVersion\":\"2025-03-26\",\"capabilities\":{\"sampling\":{},"
            "\"elicitation\":{},\"roots\":{}},\"clientInfo\":{\"name\":\"f\",\"version\":\"1\"}}}";
        bool pending = false;
        json_decref(mcp_handle_text(srv, s, init, sizeof(init) - 1, &pending));
    }
    bool pending = false;
    json_t *r = mcp_handle_text(srv, s, (const char *)data, size, &pending);
    if (r) {
        char *t = json_dumps(r, JSON_COMPACT);
        free(t);
        json_decref(r);
    }
    run_timers();
    json_t *dump = mcp_session_dump(s);
    if (dump) {
        char err[128];
        mcp_session *copy = mcp_session_restore(srv, dump, err, sizeof(err));
        if (copy)
            mcp_session_free(copy);
        json_decref(dump);
    }
    mcp_session_free(s);
    run_timers();
    return 0;
}
