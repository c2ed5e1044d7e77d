/*
 * MCP engine: the tasks extension of 2026-07-28 (io.modelcontextprotocol/tasks, tasks26.c) --
 * negotiation per request, server-directed creation, the flat CreateTaskResult, tasks/get
 * with the outcome inlined, tasks/update answering a task's questions (all at once or some),
 * tasks/cancel, removed methods, the MRTR-then-task composition, ttl expiry, and the task
 * home: its durable state, a restore, and a host that makes and finds homes itself.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

#define V "2026-07-28"
#define EXT "io.modelcontextprotocol/tasks"
#define CAPS "{\"elicitation\":{},\"extensions\":{\"" EXT "\":{}}}"
#define NOCAPS "{\"elicitation\":{}}"

static int64_t fake_now = 1700000000000;
static int64_t now_fn(void)
{
    return fake_now;
}

/* A host that makes and finds task homes itself (as a shard does), with ids it chooses. */
static mcp_session *homes[64];
static int nhomes;
static mcp_server *home_srv;
static mcp_session *host_task_home(void *host)
{
    (void)host;
    char id[32];
    snprintf(id, sizeof(id), "7-home%d", nhomes);
    return nhomes < 64 ? (homes[nhomes++] = mcp_session_new(home_srv, id)) : NULL;
}
static mcp_session *host_session_find(void *host, const char *id)
{
    (void)host;
    for (int i = 0; i < nhomes; i++)
        if (homes[i] && strcmp(mcp_session_id(homes[i]), id) == 0)
            return homes[i];
    return NULL;
}
static struct mcp_host_ops homing_ops;

static mcp_server *new_server(struct fakehost *fh, const struct mcp_host_ops *ops)
{
    char err[256];
    struct mcp_server_opts o = {.packs = "core,conformance"};
    mcp_server *srv = mcp_server_new(&o, ops, fh, err, sizeof(err));
    assert_non_null(srv);
    assert_int_equal(mcp_server_set_state_key(srv, "0123456789abcdef-key", 20, err, sizeof(err)),
                     0);
    struct mcp_stateless_opts so = {.now_ms = now_fn};
    mcp_server_set_stateless_opts(srv, &so);
    return srv;
}

static int setup(void **state)
{
    struct fakeenv *e = calloc(1, sizeof(*e));
    fakehost_init(&e->fh);
    e->srv = new_server(&e->fh, &fakehost_ops);
    *state = e;
    return 0;
}

static int setup_homing(void **state)
{
    struct fakeenv *e = calloc(1, sizeof(*e));
    fakehost_init(&e->fh);
    homing_ops = fakehost_ops;
    homing_ops.task_home = host_task_home;
    homing_ops.session_find = host_session_find;
    nhomes = 0;
    e->srv = home_srv = new_server(&e->fh, &homing_ops);
    *state = e;
    return 0;
}

/* A stateless request over "HTTP" with the headers a conforming client sends. */
static json_t *send(mcp_server *srv, const char *method, const char *params, const char *caps,
                    bool *pending)
{
    static json_int_t next_id = 1;
    json_t *p = params ? fakehost_parse(params) : json_object();
    json_object_set_new(p, "_meta",
                        json_pack("{s:s,s:o}", "io.modelcontextprotocol/protocolVersion", V,
                                  "io.modelcontextprotocol/clientCapabilities", fakehost_parse(caps)));
    json_t *msg = json_pack("{s:s,s:I,s:s,s:O}", "jsonrpc", "2.0", "id", next_id++, "method",
                            method, "params", p);
    struct mcp_stateless_ctx ctx = {.http = true, .protocol_header = V, .method_header = method};
    ctx.name_header = json_string_value(json_object_get(p, "name"));
    if (!ctx.name_header)
        ctx.name_header = json_string_value(json_object_get(p, "taskId"));
    json_t *r = mcp_handle_stateless(srv, msg, &ctx, pending);
    json_decref(msg);
    json_decref(p);
    return r;
}

static json_t *call(mcp_server *srv, const char *method, const char *params, const char *caps)
{
    bool pending = true;
    json_t *r = send(srv, method, params, caps, &pending);
    assert_false(pending);
    assert_non_null(r);
    return r;
}

static const json_t *res(const json_t *r)
{
    return json_object_get(r, "result");
}

static const char *str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* tools/call that must create a task: its id (malloc'd). */
static char *create(mcp_server *srv, const char *tool, const char *args)
{
    char params[512];
    snprintf(params, sizeof(params), "{\"name\":\"%s\",\"arguments\":%s}", tool, args);
    json_t *r = call(srv, "tools/call", params, CAPS);
    const json_t *t = res(r);
    assert_non_null(t);
    assert_string_equal(str(t, "resultType"), "task");
    assert_string_equal(str(t, "status"), "working");
    assert_non_null(str(t, "createdAt"));
    assert_non_null(str(t, "lastUpdatedAt"));
    assert_true(json_integer_value(json_object_get(t, "ttlMs")) > 0);
    assert_true(json_integer_value(json_object_get(t, "pollIntervalMs")) > 0);
    /* flat: no wrapper, no v1 names, nothing of tasks/get's, no MRTR state */
    const char *absent[] = {"task",  "ttl",           "pollInterval", "result",
                            "error", "inputRequests", "requestState"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        assert_null(json_object_get(t, absent[i]));
    char *id = strdup(str(t, "taskId"));
    json_decref(r);
    return id;
}

/* tasks/get (or another tasks/ method) of id; the response. */
static json_t *on(mcp_server *srv, const char *method, const char *id, const char *caps)
{
    char params[200];
    snprintf(params, sizeof(params), "{\"taskId\":\"%s\"}", id);
    return call(srv, method, params, caps);
}

static char *status_buf(mcp_server *srv, const char *id)
{
    static char buf[32];
    json_t *r = on(srv, "tasks/get", id, CAPS);
    assert_non_null(str(res(r), "status"));
    snprintf(buf, sizeof(buf), "%s", str(res(r), "status"));
    json_decref(r);
    return buf;
}

static void advance(struct fakeenv *e, double ms)
{
    fakehost_advance(&e->fh, ms);
    fake_now += (int64_t)ms;
}

/* ------------------------------------------------------------ negotiation -- */

static void test_advertised_and_gated(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = call(e->srv, "server/discover", NULL, "{}");
    const json_t *caps = json_object_get(res(r), "capabilities");
    assert_non_null(json_object_get(json_object_get(caps, "extensions"), EXT));
    assert_null(json_object_get(caps, "tasks"));
    json_decref(r);

    /* Without the extension: the tasks methods are -32021 naming it, a required tool too. */
    const char *methods[] = {"tasks/get", "tasks/update", "tasks/cancel"};
    for (size_t i = 0; i < 3; i++) {
        r = call(e->srv, methods[i], "{\"taskId\":\"x\",\"inputResponses\":{}}", NOCAPS);
        assert_int_equal(fakehost_error_code(r), -32021);
        json_decref(r);
    }
    r = call(e->srv, "tools/call", "{\"name\":\"failing_job\",\"arguments\":{}}", NOCAPS);
    assert_int_equal(fakehost_error_code(r), -32021);
    const json_t *need = json_object_get(json_object_get(json_object_get(r, "error"), "data"),
                                         "requiredCapabilities");
    assert_non_null(json_object_get(json_object_get(need, "extensions"), EXT));
    assert_int_equal(mcp_stateless_http_status(r), 400);
    json_decref(r);

    /* ...and an optional one is an ordinary call. */
    bool pending = false;
    r = send(e->srv, "tools/call", "{\"name\":\"slow_compute\",\"arguments\":{\"ms\":150}}", NOCAPS,
             &pending);
    assert_null(r);
    assert_true(pending); /* (its timers run in a transient session, no task) */
    advance(e, 200);
    json_t *em = fakehost_take(&e->fh);
    const json_t *last = json_object_get(json_array_get(em, json_array_size(em) - 1), "msg");
    assert_string_equal(str(res(last), "resultType"), "complete");
    assert_null(json_object_get(res(last), "taskId"));
    json_decref(em);

    /* A sync-only tool never becomes a task, a legacy "task" param notwithstanding. */
    r = call(e->srv, "tools/call",
             "{\"name\":\"greet\",\"arguments\":{\"name\":\"W\"},\"task\":{\"ttl\":60000}}", CAPS);
    assert_string_equal(str(res(r), "resultType"), "complete");
    assert_string_equal(fakehost_text(r, 0), "Hello, W!");
    json_decref(r);

    /* Removed methods, unknown and missing ids. */
    r = call(e->srv, "tasks/result", "{\"taskId\":\"x\"}", CAPS);
    assert_int_equal(fakehost_error_code(r), -32601);
    json_decref(r);
    r = call(e->srv, "tasks/list", NULL, CAPS);
    assert_int_equal(fakehost_error_code(r), -32601);
    json_decref(r);
    r = on(e->srv, "tasks/get", "no-such-task", CAPS);
    assert_int_equal(fakehost_error_code(r), -32602);
    json_decref(r);
    r = call(e->srv, "tasks/cancel", "{}", CAPS);
    assert_int_equal(fakehost_error_code(r), -32602);
    json_decref(r);
}

static void test_name_header_is_the_task_id(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "slow_compute", "{\"ms\":100}");
    json_t *msg = json_pack("{s:s,s:i,s:s,s:{s:s,s:{s:s,s:o}}}", "jsonrpc", "2.0", "id", 1,
                            "method", "tasks/get", "params", "taskId", id, "_meta",
                            "io.modelcontextprotocol/protocolVersion", V,
                            "io.modelcontextprotocol/clientCapabilities", fakehost_parse(CAPS));
    struct mcp_stateless_ctx ctx = {.http = true,
                                    .protocol_header = V,
                                    .method_header = "tasks/get",
                                    .name_header = "another-task"};
    json_t *r = mcp_handle_stateless(e->srv, msg, &ctx, NULL);
    assert_int_equal(fakehost_error_code(r), -32020);
    json_decref(r);
    ctx.name_header = NULL; /* missing: the client must send it */
    r = mcp_handle_stateless(e->srv, msg, &ctx, NULL);
    assert_int_equal(fakehost_error_code(r), -32020);
    json_decref(r);
    json_decref(msg);
    free(id);
}

/* -------------------------------------------------------------- lifecycle -- */

static void test_lifecycle(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "slow_compute", "{\"seconds\":0.3}");
    json_t *r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "working");
    assert_string_equal(str(res(r), "resultType"), "complete");
    assert_null(json_object_get(res(r), "result"));
    json_decref(r);
    advance(e, 400);
    r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    const json_t *result = json_object_get(res(r), "result");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(result, "structuredContent"), "ms")),
        300);
    assert_null(
        json_object_get(json_object_get(result, "_meta"), "io.modelcontextprotocol/related-task"));
    json_decref(r);
    /* nothing of the task's run reached the client's host as a message */
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    free(id);

    /* A tool error completed (isError); a protocol error failed (error, no result). */
    id = create(e->srv, "failing_job", "{}");
    advance(e, 300);
    r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    assert_true(json_is_true(json_object_get(json_object_get(res(r), "result"), "isError")));
    json_decref(r);
    free(id);
    id = create(e->srv, "protocol_error_job", "{}");
    advance(e, 300);
    r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "failed");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(res(r), "error"), "code")),
                     -32603);
    assert_null(json_object_get(res(r), "result"));
    json_decref(r);
    free(id);
}

static void test_cancel(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "slow_compute", "{\"seconds\":60}");
    for (int round = 0; round < 2; round++) { /* the second is on a cancelled task: same ack */
        json_t *r = on(e->srv, "tasks/cancel", id, CAPS);
        assert_string_equal(str(res(r), "resultType"), "complete");
        const char *absent[] = {"taskId", "status", "result", "error", "inputRequests"};
        for (size_t i = 0; i < 5; i++)
            assert_null(json_object_get(res(r), absent[i]));
        json_decref(r);
        assert_string_equal(status_buf(e->srv, id), "cancelled");
    }
    assert_int_equal(fakehost_live_timers(&e->fh), 0); /* the run stopped */
    free(id);
}

static void test_ttl_expiry(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "slow_compute", "{\"ms\":0}");
    advance(e, 10);
    assert_string_equal(status_buf(e->srv, id), "completed");
    fake_now += 3600000; /* the default ttl */
    json_t *r = on(e->srv, "tasks/get", id, CAPS);
    assert_int_equal(fakehost_error_code(r), -32602);
    json_decref(r);
    free(id);
}

/* ---------------------------------------------------------------- input -- */

/* The inputRequests of task id (a copy), which must be input_required. */
static json_t *asked(mcp_server *srv, const char *id)
{
    json_t *r = on(srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "input_required");
    json_t *ir = json_deep_copy(json_object_get(res(r), "inputRequests"));
    json_decref(r);
    assert_non_null(ir);
    return ir;
}

static json_t *update(mcp_server *srv, const char *id, json_t *answers)
{
    char *a = json_dumps(answers, JSON_COMPACT);
    char *params = NULL;
    assert_true(asprintf(&params, "{\"taskId\":\"%s\",\"inputResponses\":%s}", id, a) > 0);
    json_t *r = call(srv, "tasks/update", params, CAPS);
    free(params);
    free(a);
    json_decref(answers);
    return r;
}

static void test_update_answers(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "confirm_delete", "{\"filename\":\"f.txt\"}");
    json_t *ir = asked(e->srv, id);
    assert_int_equal(json_object_size(ir), 1);
    const char *key = json_object_iter_key(json_object_iter(ir));
    assert_string_equal(str(json_object_get(ir, key), "method"), "elicitation/create");

    /* unknown keys are ignored (acked), a bad answer to a known one is -32602 */
    json_t *r = update(e->srv, id, fakehost_parse("{\"unknown-key\":{\"ignored\":true}}"));
    assert_string_equal(str(res(r), "resultType"), "complete");
    assert_null(json_object_get(res(r), "status"));
    json_decref(r);
    json_decref(asked(e->srv, id));
    r = update(e->srv, id, json_pack("{s:i}", key, 5));
    assert_int_equal(fakehost_error_code(r), -32602);
    json_decref(r);
    r = update(e->srv, id, json_pack("{s:{s:s}}", key, "action", "maybe")); /* no ElicitResult */
    assert_int_equal(fakehost_error_code(r), -32602);
    json_decref(r);
    json_decref(asked(e->srv, id)); /* still waiting */

    r = update(e->srv, id,
               json_pack("{s:{s:s,s:{s:b}}}", key, "action", "accept", "content", "confirm", 1));
    assert_string_equal(str(res(r), "resultType"), "complete");
    json_decref(r);
    json_decref(ir);
    r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    assert_string_equal(
        str(json_array_get(json_object_get(json_object_get(res(r), "result"), "content"), 0),
            "text"),
        "Deleted f.txt");
    json_decref(r);
    free(id);
}

static void test_partial_answers(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "multi_input", "{}");
    json_t *ir = asked(e->srv, id);
    assert_int_equal(json_object_size(ir), 2);
    void *it = json_object_iter(ir);
    char *k1 = strdup(json_object_iter_key(it));
    char *k2 = strdup(json_object_iter_key(json_object_iter_next(ir, it)));
    json_decref(ir);
    json_t *r = update(e->srv, id,
                       json_pack("{s:{s:s,s:{s:s,s:b}}}", k1, "action", "accept", "content", "name",
                                 "Ada", "confirm", 1));
    json_decref(r);
    ir = asked(e->srv, id); /* still waiting, only on the other one */
    assert_int_equal(json_object_size(ir), 1);
    assert_non_null(json_object_get(ir, k2));
    json_decref(ir);
    r = update(e->srv, id,
               json_pack("{s:{s:s,s:{s:s,s:b}}}", k2, "action", "accept", "content", "name", "Ada",
                         "confirm", 1));
    json_decref(r);
    r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    const char *text = str(
        json_array_get(json_object_get(json_object_get(res(r), "result"), "content"), 0), "text");
    assert_non_null(strstr(text, "Ada"));
    json_decref(r);
    free(k1);
    free(k2);
    free(id);
}

/* A question nobody answers in time leaves the task; the tool gets the timeout error. */
static void test_question_timeout(void **state)
{
    struct fakeenv *e = *state;
    char *id = create(e->srv, "confirm_delete", "{\"filename\":\"t\"}");
    json_decref(asked(e->srv, id));
    advance(e, 600001); /* the fixture's 10 min */
    json_t *r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    assert_true(json_is_true(json_object_get(json_object_get(res(r), "result"), "isError")));
    assert_null(json_object_get(res(r), "inputRequests"));
    json_decref(r);
    free(id);
}

/* input_required rounds first, then the last round becomes a task (test_tool_with_task). */
static void test_mrtr_then_task(void **state)
{
    struct fakeenv *e = *state;
    json_t *r =
        call(e->srv, "tools/call", "{\"name\":\"test_tool_with_task\",\"arguments\":{}}", CAPS);
    assert_string_equal(str(res(r), "resultType"), "input_required");
    assert_null(json_object_get(res(r), "taskId"));
    const char *key =
        json_object_iter_key(json_object_iter(json_object_get(res(r), "inputRequests")));
    assert_string_equal(key, "user_name");
    char *params = NULL;
    assert_true(asprintf(&params,
                         "{\"name\":\"test_tool_with_task\",\"arguments\":{},\"inputResponses\":"
                         "{\"user_name\":{\"action\":\"accept\",\"content\":{\"name\":\"Alice\"}}},"
                         "\"requestState\":\"%s\"}",
                         str(res(r), "requestState")) > 0);
    json_decref(r);
    r = call(e->srv, "tools/call", params, CAPS);
    free(params);
    assert_string_equal(str(res(r), "resultType"), "task");
    assert_null(json_object_get(res(r), "requestState"));
    assert_null(json_object_get(res(r), "inputRequests"));
    char *id = strdup(str(res(r), "taskId"));
    json_decref(r);
    advance(e, 300);
    r = on(e->srv, "tasks/get", id, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    const char *text = str(
        json_array_get(json_object_get(json_object_get(res(r), "result"), "content"), 0), "text");
    assert_non_null(strstr(text, "Alice"));
    json_decref(r);
    free(id);

    /* without the extension, the required tool is refused before it asks anything */
    r = call(e->srv, "tools/call", "{\"name\":\"test_tool_with_task\",\"arguments\":{}}", NOCAPS);
    assert_int_equal(fakehost_error_code(r), -32021);
    json_decref(r);
}

/* ------------------------------------------------------------- durability -- */

static void test_host_homes_and_restore(void **state)
{
    struct fakeenv *e = *state;
    char *done = create(e->srv, "slow_compute", "{\"ms\":50}");
    assert_string_equal(done, "7-home0"); /* the host named it */
    char *running = create(e->srv, "slow_compute", "{\"seconds\":60}");
    char *waiting = create(e->srv, "confirm_delete", "{\"filename\":\"g\"}");
    advance(e, 100);
    assert_string_equal(status_buf(e->srv, done), "completed");
    assert_string_equal(status_buf(e->srv, waiting), "input_required");
    assert_true(e->fh.changed > 0); /* homes are committed like sessions */
    assert_true(mcp_session_is_task_home(homes[0]));
    assert_int_equal(mcp_session_task_count(homes[0]), 1);

    /* Another engine (a restarted shard) restores the homes from their dumps. */
    json_t *dumps[3];
    for (int i = 0; i < 3; i++) {
        dumps[i] = mcp_session_dump(homes[i]);
        assert_true(json_is_true(json_object_get(dumps[i], "task_home")));
    }
    struct fakehost fh2;
    fakehost_init(&fh2);
    nhomes = 0;
    mcp_server *srv2 = home_srv = new_server(&fh2, &homing_ops);
    char err[256];
    for (int i = 0; i < 3; i++) {
        homes[nhomes++] = mcp_session_restore(srv2, dumps[i], err, sizeof(err));
        assert_non_null(homes[i]);
        assert_true(mcp_session_is_task_home(homes[i]));
        json_decref(dumps[i]);
    }
    json_t *r = on(srv2, "tasks/get", done, CAPS);
    assert_string_equal(str(res(r), "status"), "completed");
    assert_non_null(json_object_get(res(r), "result"));
    json_decref(r);
    const char *lost[] = {running, waiting};
    for (int i = 0; i < 2; i++) {
        r = on(srv2, "tasks/get", lost[i], CAPS);
        assert_string_equal(str(res(r), "status"), "failed");
        const json_t *err_o = json_object_get(res(r), "error");
        assert_int_equal(json_integer_value(json_object_get(err_o, "code")), -32603);
        assert_non_null(strstr(str(err_o, "message"), "restarted"));
        assert_null(json_object_get(res(r), "inputRequests"));
        json_decref(r);
    }
    mcp_server_free(srv2);
    fakehost_fini(&fh2);
    home_srv = e->srv;
    free(done);
    free(running);
    free(waiting);
}

/* subscriptions/listen for task notifications: -32021 without the extension; with it, the
 * acknowledgement leaves taskIds out (no notifications/tasks are sent). */
static void test_listen_task_ids(void **state)
{
    struct fakeenv *e = *state;
    const char *p = "{\"notifications\":{\"toolsListChanged\":true,\"taskIds\":[\"t1\"]}}";
    json_t *r = call(e->srv, "subscriptions/listen", p, NOCAPS);
    assert_int_equal(fakehost_error_code(r), -32021);
    json_decref(r);
    r = call(e->srv, "subscriptions/listen", "{\"notifications\":{\"taskIds\":5}}", CAPS);
    assert_int_equal(fakehost_error_code(r), -32602);
    json_decref(r);
    bool pending = false;
    r = send(e->srv, "subscriptions/listen", p, CAPS, &pending);
    assert_null(r);
    assert_true(pending);
    json_t *em = fakehost_take(&e->fh);
    const json_t *ack = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(str(ack, "method"), "notifications/subscriptions/acknowledged");
    const json_t *n = json_object_get(json_object_get(ack, "params"), "notifications");
    assert_true(json_is_true(json_object_get(n, "toolsListChanged")));
    assert_null(json_object_get(n, "taskIds"));
    json_decref(em);
    assert_int_equal(mcp_stateless_cancel(e->srv, ""), 0);
}

/* The 2025 session protocol beside it keeps its own tasks (tasks.c) unchanged. */
static void test_2025_unchanged(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s = mcp_session_new(e->srv, "s25");
    json_decref(fakehost_initialize(e->srv, s, "2025-11-25", "{\"elicitation\":{}}"));
    json_decref(fakehost_take(&e->fh));
    json_t *r = fakehost_request(e->srv, s, 5, "tasks/update", "{\"taskId\":\"x\"}", NULL);
    assert_int_equal(fakehost_error_code(r), -32601);
    json_decref(r);
    r = fakehost_request(e->srv, s, 6, "tools/call",
                         "{\"name\":\"failing_job\",\"arguments\":{},\"task\":{}}", NULL);
    const json_t *t = json_object_get(fakehost_result(r), "task");
    assert_non_null(t);
    assert_non_null(json_object_get(t, "ttl"));
    json_decref(r);
    r = fakehost_request(e->srv, s, 7, "tools/call", "{\"name\":\"failing_job\",\"arguments\":{}}",
                         NULL);
    assert_int_equal(fakehost_error_code(r), -32601); /* required: a task or nothing */
    json_decref(r);
    mcp_session_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_advertised_and_gated, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_name_header_is_the_task_id, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_lifecycle, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_ttl_expiry, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_update_answers, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_partial_answers, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_question_timeout, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_mrtr_then_task, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_host_homes_and_restore, setup_homing,
                                        fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_listen_task_ids, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_2025_unchanged, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
