/* MCP engine: tasks (2025-11-25) -- the task state machine, its durable state and ttl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

static int64_t clock_ms = 1700000000000LL;
static int64_t now_fn(void)
{
    return clock_ms;
}

static int setup_version(void **state, const char *version)
{
    struct mcp_server_opts o = {.packs = "core,conformance"};
    struct fakeenv *e = fakeenv_new(&o, NULL, "s1", NULL, NULL);
    assert_non_null(e);
    struct mcp_stateless_opts so = {.now_ms = now_fn};
    mcp_server_set_stateless_opts(e->srv, &so);
    json_decref(fakehost_initialize(e->srv, e->s, version, NULL));
    json_decref(fakehost_take(&e->fh));
    e->next_id = 100;
    *state = e;
    return 0;
}

static int setup(void **state)
{
    return setup_version(state, "2025-11-25");
}

static int setup_old(void **state)
{
    return setup_version(state, "2025-06-18");
}

static json_t *req(struct fakeenv *e, const char *method, const char *params, bool *pending)
{
    bool p = false;
    json_t *r = fakehost_request(e->srv, e->s, e->next_id++, method, params, &p);
    if (pending)
        *pending = p;
    else
        assert_false(p);
    return r;
}

/* tools/call as a task: returns the task id (malloc'd). */
static char *start(struct fakeenv *e, const char *tool, const char *args, const char *task)
{
    char params[512];
    snprintf(params, sizeof(params), "{\"name\":\"%s\",\"arguments\":%s,\"task\":%s}", tool, args,
             task);
    json_t *r = req(e, "tools/call", params, NULL);
    const json_t *t = json_object_get(fakehost_result(r), "task");
    assert_non_null(t);
    assert_string_equal(json_string_value(json_object_get(t, "status")), "working");
    assert_non_null(json_object_get(t, "createdAt"));
    assert_non_null(json_object_get(t, "lastUpdatedAt"));
    assert_true(json_is_integer(json_object_get(t, "pollInterval")));
    char *id = strdup(json_string_value(json_object_get(t, "taskId")));
    json_decref(r);
    return id;
}

static json_t *by_id(struct fakeenv *e, const char *method, const char *id, bool *pending)
{
    char params[200];
    snprintf(params, sizeof(params), "{\"taskId\":\"%s\"}", id);
    return req(e, method, params, pending);
}

static const char *status(struct fakeenv *e, const char *id)
{
    static char buf[32];
    json_t *r = by_id(e, "tasks/get", id, NULL);
    const char *st = json_string_value(json_object_get(fakehost_result(r), "status"));
    assert_non_null(st);
    snprintf(buf, sizeof(buf), "%s", st);
    json_decref(r);
    return buf;
}

/* The emitted record of the final answer to request id, or of the first message of method. */
static const json_t *find_emit(const json_t *emitted, json_int_t id, const char *method)
{
    size_t i;
    json_t *rec;
    json_array_foreach(emitted, i, rec)
    {
        const json_t *msg = json_object_get(rec, "msg");
        if (method && json_is_string(json_object_get(msg, "method")) &&
            strcmp(json_string_value(json_object_get(msg, "method")), method) == 0)
            return rec;
        if (!method && json_integer_value(json_object_get(msg, "id")) == id &&
            json_is_true(json_object_get(rec, "final")))
            return rec;
    }
    return NULL;
}

static void test_capabilities(void **state)
{
    struct fakeenv *e = *state;
    mcp_session *s2 = mcp_session_new(e->srv, "s2");
    json_t *r = fakehost_initialize(e->srv, s2, "2025-11-25", NULL);
    const json_t *tasks =
        json_object_get(json_object_get(fakehost_result(r), "capabilities"), "tasks");
    assert_non_null(
        json_object_get(json_object_get(json_object_get(tasks, "requests"), "tools"), "call"));
    assert_non_null(json_object_get(tasks, "list"));
    assert_non_null(json_object_get(tasks, "cancel"));
    json_decref(r);
    mcp_session *s3 = mcp_session_new(e->srv, "s3");
    r = fakehost_initialize(e->srv, s3, "2025-06-18", NULL);
    assert_null(json_object_get(json_object_get(fakehost_result(r), "capabilities"), "tasks"));
    json_decref(r);
    /* tools/list: the task fixtures say they may run as tasks, echo says nothing */
    r = req(e, "tools/list", NULL, NULL);
    size_t i;
    json_t *t;
    int seen = 0;
    json_array_foreach(json_object_get(fakehost_result(r), "tools"), i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        const json_t *ex = json_object_get(t, "execution");
        if (strcmp(name, "slow_compute") == 0) {
            assert_string_equal(json_string_value(json_object_get(ex, "taskSupport")), "optional");
            seen++;
        } else if (strcmp(name, "failing_job") == 0) {
            assert_string_equal(json_string_value(json_object_get(ex, "taskSupport")), "required");
            seen++;
        } else if (strcmp(name, "echo") == 0) {
            assert_null(ex);
        }
    }
    assert_int_equal(seen, 2);
    json_decref(r);
}

static void test_complete_and_result(void **state)
{
    struct fakeenv *e = *state;
    int changed = e->fh.changed;
    char *id = start(e, "slow_compute", "{\"ms\":300}", "{\"ttl\":60000}");
    assert_true(e->fh.changed > changed); /* the task was saved before the answer went */
    assert_string_equal(status(e, id), "working");
    /* tasks/result before the end waits */
    bool pending = false;
    json_int_t rid = e->next_id;
    json_t *r = by_id(e, "tasks/result", id, &pending);
    assert_null(r);
    assert_true(pending);
    json_decref(fakehost_take(&e->fh));
    changed = e->fh.changed;
    fakehost_advance(&e->fh, 400);
    assert_true(e->fh.changed > changed);
    json_t *em = fakehost_take(&e->fh);
    const json_t *note = find_emit(em, 0, "notifications/tasks/status");
    assert_non_null(note);
    assert_true(json_is_null(json_object_get(note, "rel"))); /* session-wide */
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(note, "msg"), "params"), "status")),
                        "completed");
    /* progress of the task's run is session-wide too (it belongs to no open request) */
    size_t i;
    json_t *rec;
    json_array_foreach(em, i, rec)
    {
        if (!json_is_true(json_object_get(rec, "final")))
            assert_true(json_is_null(json_object_get(rec, "rel")));
    }
    const json_t *fin = find_emit(em, rid, NULL);
    assert_non_null(fin);
    const json_t *res = fakehost_result(json_object_get(fin, "msg"));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(res, "structuredContent"), "ms")), 300);
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(res, "_meta"), "io.modelcontextprotocol/related-task"),
            "taskId")),
        id);
    json_decref(em);
    assert_string_equal(status(e, id), "completed");
    /* and again, now at once */
    r = by_id(e, "tasks/result", id, NULL);
    assert_false(fakehost_is_error(r));
    assert_non_null(json_object_get(fakehost_result(r), "structuredContent"));
    json_decref(r);
    assert_int_equal(mcp_session_task_count(e->s), 1);
    assert_int_equal(mcp_session_pending(e->s), 0);
    free(id);
}

static void test_failed(void **state)
{
    struct fakeenv *e = *state;
    char *id = start(e, "failing_job", "{}", "{}");
    fakehost_advance(&e->fh, 300);
    json_t *r = by_id(e, "tasks/get", id, NULL);
    assert_string_equal(json_string_value(json_object_get(fakehost_result(r), "status")), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(fakehost_result(r), "statusMessage")),
                           "on purpose"));
    json_decref(r);
    r = by_id(e, "tasks/result", id, NULL);
    assert_true(fakehost_is_error(r));
    json_decref(r);
    /* arguments that fail the schema: the task exists and fails, as the call would */
    free(id);
    id = start(e, "slow_compute", "{\"ms\":\"soon\"}", "{}");
    assert_string_equal(status(e, id), "failed");
    free(id);
}

static void test_cancel(void **state)
{
    struct fakeenv *e = *state;
    char *id = start(e, "slow_compute", "{\"ms\":10000}", "{}");
    assert_true(fakehost_live_timers(&e->fh) > 0);
    bool pending = false;
    json_int_t rid = e->next_id;
    json_decref(by_id(e, "tasks/result", id, &pending));
    assert_true(pending);
    json_decref(fakehost_take(&e->fh));
    json_t *r = by_id(e, "tasks/cancel", id, NULL);
    assert_string_equal(json_string_value(json_object_get(fakehost_result(r), "status")),
                        "cancelled");
    json_decref(r);
    assert_int_equal(fakehost_live_timers(&e->fh), 0); /* the tool's run is stopped */
    json_t *em = fakehost_take(&e->fh);
    const json_t *fin = find_emit(em, rid, NULL); /* the waiting tasks/result is answered */
    assert_non_null(fin);
    assert_int_equal(fakehost_error_code(json_object_get(fin, "msg")), MCP_INVALID_PARAMS);
    json_decref(em);
    assert_string_equal(status(e, id), "cancelled");
    r = by_id(e, "tasks/cancel", id, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    assert_int_equal(mcp_session_pending(e->s), 0);
    /* a finished task cannot be cancelled either */
    free(id);
    id = start(e, "slow_compute", "{\"ms\":0}", "{}");
    assert_string_equal(status(e, id), "completed");
    r = by_id(e, "tasks/cancel", id, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    free(id);
}

static void test_errors(void **state)
{
    struct fakeenv *e = *state;
    const char *methods[] = {"tasks/get", "tasks/result", "tasks/cancel"};
    for (size_t i = 0; i < 3; i++) {
        json_t *r = by_id(e, methods[i], "nope", NULL);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        json_decref(r);
        r = req(e, methods[i], "{}", NULL);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        json_decref(r);
        r = req(e, methods[i], "{\"taskId\":7}", NULL);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        json_decref(r);
    }
    const char *bad[] = {
        "{\"name\":\"slow_compute\",\"task\":5}",
        "{\"name\":\"slow_compute\",\"task\":{\"ttl\":-1}}",
        "{\"name\":\"slow_compute\",\"task\":{\"ttl\":\"long\"}}",
        /* echo: taskSupport forbidden */
        "{\"name\":\"echo\",\"arguments\":{\"text\":\"x\"},\"task\":{}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *r = req(e, "tools/call", bad[i], NULL);
        assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
        json_decref(r);
    }
    assert_int_equal(mcp_session_task_count(e->s), 0);
}

static void run_required(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    mcp_call_return_text(c, false, "ran");
}

static void test_required(void **state)
{
    struct fakeenv *e = *state;
    struct mcp_tool_def def = {.name = "must_task",
                               .description = "only as a task",
                               .run = run_required,
                               .task_support = MCP_TASK_REQUIRED};
    char err[200];
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), 0);
    json_t *r = req(e, "tools/call", "{\"name\":\"must_task\"}", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_METHOD_NOT_FOUND);
    json_decref(r);
    char *id = start(e, "must_task", "{}", "{}");
    assert_string_equal(status(e, id), "completed"); /* a synchronous tool: done at once */
    r = by_id(e, "tasks/result", id, NULL);
    assert_string_equal(fakehost_text(r, 0), "ran");
    json_decref(r);
    free(id);
}

static void test_old_protocol(void **state)
{
    struct fakeenv *e = *state;
    json_t *r = by_id(e, "tasks/get", "x", NULL);
    assert_int_equal(fakehost_error_code(r), MCP_METHOD_NOT_FOUND);
    json_decref(r);
    /* the task param means nothing before 2025-11-25: a plain call */
    r = req(e, "tools/call", "{\"name\":\"echo\",\"arguments\":{\"text\":\"hi\"},\"task\":{}}",
            NULL);
    assert_string_equal(fakehost_text(r, 0), "hi");
    json_decref(r);
}

static void test_list(void **state)
{
    struct fakeenv *e = *state;
    char *a = start(e, "slow_compute", "{\"ms\":0}", "{}");
    char *b = start(e, "slow_compute", "{\"ms\":5000}", "{\"ttl\":null}");
    json_t *r = req(e, "tasks/list", NULL, NULL);
    const json_t *tasks = json_object_get(fakehost_result(r), "tasks");
    assert_int_equal(json_array_size(tasks), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(tasks, 0), "taskId")), a);
    /* the internal fields stay in */
    assert_null(json_object_get(json_array_get(tasks, 0), "created_ms"));
    assert_null(json_object_get(json_array_get(tasks, 0), "response"));
    json_decref(r);
    free(a);
    free(b);
}

/* What a restart sees: the state as saved, restored into a new process's session. */
static void test_restore(void **state)
{
    struct fakeenv *e = *state;
    char *done = start(e, "slow_compute", "{\"ms\":100}", "{}");
    fakehost_advance(&e->fh, 200);
    char *running = start(e, "slow_compute", "{\"ms\":60000}", "{}");
    json_t *st = mcp_session_dump(e->s);
    assert_non_null(json_object_get(st, "tasks"));
    mcp_session_free(e->s);
    char err[256];
    e->s = mcp_session_restore(e->srv, st, err, sizeof(err));
    assert_non_null(e->s);
    json_decref(st);
    assert_string_equal(status(e, done), "completed");
    json_t *r = by_id(e, "tasks/result", done, NULL);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(fakehost_result(r), "structuredContent"), "ms")),
                     100);
    json_decref(r);
    r = by_id(e, "tasks/get", running, NULL);
    assert_string_equal(json_string_value(json_object_get(fakehost_result(r), "status")), "failed");
    assert_non_null(strstr(json_string_value(json_object_get(fakehost_result(r), "statusMessage")),
                           "restarted"));
    json_decref(r);
    r = by_id(e, "tasks/result", running, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INTERNAL_ERROR);
    json_decref(r);
    /* a bad task record is refused, not half-restored */
    st = mcp_session_dump(e->s);
    json_object_set_new(st, "tasks", json_pack("{s:{s:s}}", "x", "status", "working"));
    assert_null(mcp_session_restore(e->srv, st, err, sizeof(err)));
    assert_non_null(strstr(err, "task"));
    json_decref(st);
    free(done);
    free(running);
}

static void test_ttl(void **state)
{
    struct fakeenv *e = *state;
    char *shortlived = start(e, "slow_compute", "{\"ms\":60000}", "{\"ttl\":1000}");
    char *kept = start(e, "slow_compute", "{\"ms\":0}", "{\"ttl\":100000}");
    bool pending = false;
    json_int_t rid = e->next_id;
    json_decref(by_id(e, "tasks/result", shortlived, &pending));
    assert_true(pending);
    assert_int_equal(mcp_session_expire_tasks(e->s, clock_ms + 999), 0);
    json_decref(fakehost_take(&e->fh));
    int changed = e->fh.changed;
    assert_int_equal(mcp_session_expire_tasks(e->s, clock_ms + 1000), 1);
    assert_true(e->fh.changed > changed);
    assert_int_equal(fakehost_live_timers(&e->fh), 0); /* its run was stopped */
    json_t *em = fakehost_take(&e->fh);
    const json_t *fin = find_emit(em, rid, NULL);
    assert_non_null(fin);
    assert_int_equal(fakehost_error_code(json_object_get(fin, "msg")), MCP_INVALID_PARAMS);
    json_decref(em);
    json_t *r = by_id(e, "tasks/get", shortlived, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    /* past its ttl by the clock, before any sweep: gone too */
    clock_ms += 200000;
    r = by_id(e, "tasks/get", kept, NULL);
    assert_int_equal(fakehost_error_code(r), MCP_INVALID_PARAMS);
    json_decref(r);
    assert_int_equal(mcp_session_task_count(e->s), 0);
    assert_int_equal(mcp_session_pending(e->s), 0);
    free(shortlived);
    free(kept);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_capabilities, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_complete_and_result, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_failed, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_required, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_old_protocol, setup_old, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_restore, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_ttl, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
