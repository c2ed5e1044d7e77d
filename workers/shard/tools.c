/*
 * External command tools, the shard's half. Each [tool.NAME] section is a
 * tool of the MCP engine; a call of it asks tool_sup (simple_one_for_one)
 * to start a `toolrun` child, which fetches the arguments from this shard
 * (op tool_fetch), runs the command, and hands the result back (op
 * tool_result). tool_sup caps how many runs of a tool (its group) and how
 * many runs in all exist on the node. Cancelling the call terminates the
 * run; a run that never reports is given up after its timeout plus a margin.
 */
#define _GNU_SOURCE
#include "workers/shard/tools.h"

#include <inttypes.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "base/log.h"

#define REPORT_MARGIN_MS 5000 /* past the tool's own timeout, a run that said nothing is lost */

struct ext_tool {
    char name[128];
    long timeout_ms;
    long max_concurrency;
};

struct ext_run {
    struct ext_run *next;
    uint64_t token;
    struct ext_tool *tool;
    mcp_call *call; /* NULL once the call is over (cancelled, answered, session gone) */
    char *args;
    int pid;
    bool cancel_pending; /* cancelled before tool_sup told us the pid */
};

/* A control request to tool_sup in flight. */
struct ctl_op {
    struct ipc_item item;
    nng_aio *aio;
    nng_ctx ctx;
    bool sending;
    uint64_t token; /* the run it concerns (0: a terminate, nothing to do after) */
};

static struct {
    struct ipc_bridge *bridge;
    int shard;
    nng_socket sup;
    struct ipc_keep sup_keep; /* the dial to tool_sup */
    bool sup_open;
    struct ext_tool *tools;
    int ntools;
    struct ext_run *runs;
    uint64_t next_token;
} X;

static struct ext_run *run_find(uint64_t token)
{
    for (struct ext_run *r = X.runs; r; r = r->next)
        if (r->token == token)
            return r;
    return NULL;
}

static void run_free(struct ext_run *r)
{
    for (struct ext_run **pp = &X.runs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (r->call) {
        mcp_call_set_state(r->call, NULL, NULL);
        r->call = NULL;
    }
    free(r->args);
    free(r);
}

/* The engine frees a call's state when the call ends: the run forgets its call. */
static void call_state_gone(void *p)
{
    struct ext_run *r = p;
    r->call = NULL;
}

static void ctl_done(struct ipc_item *it)
{
    struct ctl_op *op = (struct ctl_op *)it;
    int rv = nng_aio_result(op->aio);
    nng_msg *m = rv == 0 && !op->sending ? nng_aio_get_msg(op->aio) : NULL;
    json_t *reply = m ? json_loadb(nng_msg_body(m), nng_msg_len(m), 0, NULL) : NULL;
    if (m)
        nng_msg_free(m);
    struct ext_run *r = op->token ? run_find(op->token) : NULL;
    if (r) {
        if (json_is_true(json_object_get(reply, "ok"))) {
            r->pid = (int)json_integer_value(json_object_get(reply, "pid"));
            if (r->cancel_pending)
                shard_tools_terminate(r->pid);
        } else {
            const char *err = json_string_value(json_object_get(reply, "error"));
            const char *msg = json_string_value(json_object_get(reply, "message"));
            if (r->call) {
                if (err && strcmp(err, "group_full") == 0)
                    mcp_call_return_text(r->call, true,
                                         "tool %s is busy: %ld calls of it run already "
                                         "(max_concurrency); retry later",
                                         r->tool->name, r->tool->max_concurrency);
                else if (err && strcmp(err, "too_many_children") == 0)
                    mcp_call_return_text(r->call, true,
                                         "tool %s cannot start: the node runs its most external "
                                         "tool calls at once; retry later",
                                         r->tool->name);
                else
                    mcp_call_return_text(r->call, true, "tool %s could not start: %s",
                                         r->tool->name,
                                         msg ? msg : rv ? nng_strerror(rv) : "no answer from tool_sup");
            }
            run_free(r);
        }
    }
    json_decref(reply);
    nng_ctx_close(op->ctx);
    nng_aio_free(op->aio);
    free(op);
}

static void ctl_aio_cb(void *arg)
{
    struct ctl_op *op = arg;
    if (op->sending && nng_aio_result(op->aio) == 0) {
        /* The send completed: now wait for the answer (on nng's thread; no loop state). */
        op->sending = false;
        nng_ctx_recv(op->ctx, op->aio);
        return;
    }
    if (op->sending)
        nng_msg_free(nng_aio_get_msg(op->aio)); /* a failed send leaves the message with us */
    ipc_bridge_post(X.bridge, &op->item);
}

/* Sends a JSON request to tool_sup; its answer reaches ctl_done on the loop. */
static int ctl_send(json_t *req, uint64_t token)
{
    if (!X.sup_open)
        return -1;
    struct ctl_op *op = calloc(1, sizeof(*op));
    if (!op)
        return -1;
    op->item.run = ctl_done;
    op->token = token;
    char *text = json_dumps(req, JSON_COMPACT);
    nng_msg *m = NULL;
    if (!text || nng_aio_alloc(&op->aio, ctl_aio_cb, op) != 0 ||
        nng_ctx_open(&op->ctx, X.sup) != 0 || nng_msg_alloc(&m, 0) != 0 ||
        nng_msg_append(m, text, strlen(text)) != 0) {
        free(text);
        if (m)
            nng_msg_free(m);
        if (op->aio)
            nng_aio_free(op->aio);
        free(op);
        return -1;
    }
    free(text);
    nng_aio_set_timeout(op->aio, 10000);
    op->sending = true;
    nng_aio_set_msg(op->aio, m);
    nng_ctx_send(op->ctx, op->aio);
    return 0;
}

void shard_tools_terminate(int pid)
{
    json_t *req = json_pack("{s:s,s:i}", "op", "terminate_child", "pid", pid);
    ctl_send(req, 0);
    json_decref(req);
}

static void on_cancel(mcp_call *c)
{
    struct ext_run *r = mcp_call_state(c);
    if (!r)
        return;
    log_info("tool_call_cancelled", "{s:s,s:i}", "tool", r->tool->name, "runner_pid", r->pid);
    if (r->pid)
        shard_tools_terminate(r->pid);
    else
        r->cancel_pending = true;
}

static void lost_cb(mcp_call *c, void *arg)
{
    (void)arg;
    struct ext_run *r = mcp_call_state(c);
    if (!r)
        return;
    mcp_call_return_text(c, true, "tool %s did not report a result within %ld ms; its run was "
                                  "stopped",
                         r->tool->name, r->tool->timeout_ms + REPORT_MARGIN_MS);
    if (r->pid)
        shard_tools_terminate(r->pid);
    run_free(r);
}

static void run_tool(mcp_call *c, const json_t *args, void *ud)
{
    struct ext_tool *tool = ud;
    if (!X.sup_open) {
        mcp_call_return_text(c, true, "tool %s cannot run: this node's tree has no tool_sup",
                             tool->name);
        return;
    }
    struct ext_run *r = calloc(1, sizeof(*r));
    if (!r || !(r->args = json_dumps(args, JSON_COMPACT))) {
        free(r);
        mcp_call_error(c, -32603, "Out of memory", NULL);
        return;
    }
    r->token = ++X.next_token;
    r->tool = tool;
    r->call = c;
    r->next = X.runs;
    X.runs = r;
    mcp_call_set_state(c, r, call_state_gone);
    mcp_call_on_cancel(c, on_cancel);
    mcp_call_timer(c, (double)(tool->timeout_ms + REPORT_MARGIN_MS), lost_cb, NULL);
    char shard[16], token[64];
    snprintf(shard, sizeof(shard), "%d", X.shard);
    /* Tokens name the shard too, so a runner can never hand a result to the wrong one. */
    snprintf(token, sizeof(token), "%d.%" PRIu64, X.shard, r->token);
    json_t *req = json_pack("{s:s,s:[s,s,s,s,s,s],s:s,s:I}", "op", "start_child", "args",
                            "--tool", tool->name, "--shard", shard, "--token", token, "group",
                            tool->name, "group_max", (json_int_t)tool->max_concurrency);
    if (ctl_send(req, r->token) != 0) {
        mcp_call_return_text(c, true, "tool %s could not start: tool_sup is unreachable",
                             tool->name);
        run_free(r);
    }
    json_decref(req);
}

static struct ext_run *run_by_token_text(const char *token)
{
    if (!token)
        return NULL;
    int shard;
    uint64_t tok;
    if (sscanf(token, "%d.%" SCNu64, &shard, &tok) != 2 || shard != X.shard)
        return NULL;
    return run_find(tok);
}

char *shard_tools_fetch(const char *token)
{
    struct ext_run *r = run_by_token_text(token);
    return r && r->call ? strdup(r->args) : NULL;
}

int shard_tools_result(const char *token, const char *body, size_t len)
{
    struct ext_run *r = run_by_token_text(token);
    if (!r)
        return -1;
    if (r->call) {
        json_error_t jerr;
        json_t *res = json_loadb(body, len, 0, &jerr);
        if (json_is_object(res))
            mcp_call_return(r->call, res);
        else {
            json_decref(res);
            mcp_call_return_text(r->call, true, "tool %s: its runner sent an unreadable result",
                                 r->tool->name);
        }
    }
    run_free(r);
    return 0;
}

int shard_tools_init(mcp_server *srv, struct cfg *cfg, const char *run_dir, int shard,
                     struct ipc_bridge *bridge, char *err, size_t errlen)
{
    memset(&X, 0, sizeof(X));
    X.bridge = bridge;
    X.shard = shard;
    int n = 0;
    for (int i = 0; i < cfg->n; i++)
        if (strncmp(cfg->v[i].section, "tool.", 5) == 0 && strcmp(cfg->v[i].key, "command") == 0)
            n++;
    if (n == 0)
        return 0;
    X.tools = calloc((size_t)n, sizeof(*X.tools));
    for (int i = 0; i < cfg->n; i++) {
        const struct cfg_entry *e = &cfg->v[i];
        if (strncmp(e->section, "tool.", 5) != 0 || strcmp(e->key, "command") != 0)
            continue;
        struct ext_tool *t = &X.tools[X.ntools++];
        snprintf(t->name, sizeof(t->name), "%s", e->section + 5);
        t->timeout_ms = cfg_get_long(cfg, e->section, "timeout_ms", 30000);
        t->max_concurrency = cfg_get_long(cfg, e->section, "max_concurrency", 4);
        const char *desc = cfg_get(cfg, e->section, "description", NULL);
        const char *schema_text = cfg_get(cfg, e->section, "input_schema", NULL);
        json_error_t jerr;
        json_t *schema = NULL;
        if (schema_text && !(schema = json_loads(schema_text, 0, &jerr))) {
            const struct cfg_entry *se = cfg_find(cfg, e->section, "input_schema");
            snprintf(err, errlen, "%s:%d: [%s] input_schema is not JSON: %s (line %d of the value)",
                     se->origin, se->line, e->section, jerr.text, jerr.line);
            return -1;
        }
        if (!desc) {
            snprintf(err, errlen, "%s:%d: [%s] needs a description", e->origin, e->line,
                     e->section);
            json_decref(schema);
            return -1;
        }
        struct mcp_tool_def def = {.name = t->name,
                                   .title = cfg_get(cfg, e->section, "title", NULL),
                                   .description = desc,
                                   .input_schema = schema,
                                   .run = run_tool,
                                   .ud = t};
        int rc = mcp_server_add_tool(srv, &def, err, errlen);
        json_decref(schema);
        if (rc != 0)
            return -1;
        mcp_server_set_tool_time_limit(srv, t->name, 0); /* its own timeout_ms applies */
    }
    char addr[512];
    ipc_addr_sup(addr, sizeof(addr), run_dir, "tool_sup");
    if (nng_req0_open(&X.sup) == 0) {
        ipc_socket_tune(X.sup);
        nng_socket_set_ms(X.sup, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        ipc_keep_dial(&X.sup_keep, bridge->loop, X.sup, addr, NULL, NULL);
        X.sup_open = true;
    }
    log_info("external_tools", "{s:i}", "count", X.ntools);
    return 0;
}

void shard_tools_shutdown(void)
{
    while (X.runs) {
        if (X.runs->pid)
            shard_tools_terminate(X.runs->pid);
        run_free(X.runs);
    }
    if (X.sup_open) {
        ipc_keep_stop(&X.sup_keep);
        nng_close(X.sup);
    }
    X.sup_open = false;
    free(X.tools);
    X.tools = NULL;
}
