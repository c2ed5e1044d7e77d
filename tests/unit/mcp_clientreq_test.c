/* MCP engine: server->client requests (sampling, elicitation, roots) tied to tool calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "workers/mcp/mcp_fakehost.h"

/* A tool that asks the client for its roots and reports how many there are. */
static void roots_reply(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    if (error)
        mcp_call_return_text(c, true, "roots failed: %s",
                             json_string_value(json_object_get(error, "message")));
    else
        mcp_call_return_text(c, false, "%zu roots",
                             json_array_size(json_object_get(result, "roots")));
}

static void roots_tool(mcp_call *c, const json_t *args, void *ud)
{
    int rv = mcp_call_request(c, "roots/list", NULL, 1000, roots_reply, NULL);
    if (rv != 0)
        mcp_call_return_text(c, true, "client has no roots (%d)", rv);
}

static int setup_caps(void **state, const char *version, const char *caps)
{
    char err[256];
    struct mcp_server_opts o = {.packs = "conformance"};
    struct fakeenv *e = fakeenv_new(&o, NULL, NULL, NULL, NULL);
    assert_non_null(e);
    struct mcp_tool_def def = {.name = "roots", .description = "count roots", .run = roots_tool};
    assert_int_equal(mcp_server_add_tool(e->srv, &def, err, sizeof(err)), 0);
    e->s = mcp_session_new(e->srv, "s1");
    json_decref(fakehost_initialize(e->srv, e->s, version, caps));
    json_decref(fakehost_take(&e->fh));
    *state = e;
    return 0;
}

static int setup(void **state)
{
    return setup_caps(state, "2025-11-25", "{\"sampling\":{},\"elicitation\":{},\"roots\":{}}");
}

static int setup_nocaps(void **state)
{
    return setup_caps(state, "2025-11-25", "{}");
}

static int setup_0618(void **state)
{
    return setup_caps(state, "2025-06-18", "{\"elicitation\":{}}");
}

/* Starts a tool call that must go pending and emit exactly one request; returns it. */
static json_t *start(struct fakeenv *e, json_int_t id, const char *params)
{
    bool pending = false;
    json_t *r = fakehost_request(e->srv, e->s, id, "tools/call", params, &pending);
    assert_null(r);
    assert_true(pending);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    const json_t *rec = json_array_get(em, 0);
    assert_false(json_is_true(json_object_get(rec, "final")));
    assert_int_equal(json_integer_value(json_object_get(rec, "rel")), id);
    json_t *req = json_incref(json_object_get(rec, "msg"));
    json_decref(em);
    assert_int_equal(mcp_classify(req), MCP_MSG_REQUEST);
    return req;
}

static void answer(struct fakeenv *e, const json_t *req, const char *result, const char *error)
{
    json_t *m = json_pack("{s:s,s:O}", "jsonrpc", "2.0", "id", json_object_get(req, "id"));
    if (result)
        json_object_set_new(m, "result", json_loads(result, 0, NULL));
    else
        json_object_set_new(m, "error", json_loads(error, 0, NULL));
    bool pending = true;
    assert_null(mcp_handle(e->srv, e->s, m, &pending));
    assert_false(pending);
    json_decref(m);
}

/* The single final record emitted since the last take. */
static json_t *final_response(struct fakeenv *e, json_int_t id)
{
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 1);
    const json_t *rec = json_array_get(em, 0);
    assert_true(json_is_true(json_object_get(rec, "final")));
    assert_int_equal(json_integer_value(json_object_get(rec, "rel")), id);
    json_t *msg = json_incref(json_object_get(rec, "msg"));
    json_decref(em);
    return msg;
}

static void test_sampling_round_trip(void **state)
{
    struct fakeenv *e = *state;
    json_t *req = start(e, 5, "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"Hi?\"}}");
    assert_string_equal(json_string_value(json_object_get(req, "method")),
                        "sampling/createMessage");
    const char *rid = json_string_value(json_object_get(req, "id"));
    assert_non_null(rid);
    assert_int_equal(strncmp(rid, "srv-", 4), 0);
    const json_t *p = json_object_get(req, "params");
    assert_int_equal(json_integer_value(json_object_get(p, "maxTokens")), 100);
    const json_t *m0 = json_array_get(json_object_get(p, "messages"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "role")), "user");
    assert_string_equal(json_string_value(json_object_get(json_object_get(m0, "content"), "text")),
                        "Hi?");
    answer(e, req,
           "{\"role\":\"assistant\",\"content\":{\"type\":\"text\",\"text\":\"Hello!\"},"
           "\"model\":\"m\",\"stopReason\":\"endTurn\"}",
           NULL);
    json_t *resp = final_response(e, 5);
    assert_int_equal(json_integer_value(json_object_get(resp, "id")), 5);
    assert_false(fakehost_is_error(resp));
    assert_string_equal(fakehost_text(resp, 0), "LLM response: Hello!");
    /* A second answer to the same request is ignored. */
    answer(e, req, "{}", NULL);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    json_decref(resp);
    json_decref(req);
    assert_int_equal(mcp_session_pending(e->s), 0);
}

static void test_ids_are_unique(void **state)
{
    struct fakeenv *e = *state;
    json_t *a = start(e, 1, "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"a\"}}");
    json_t *b = start(e, 2, "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"b\"}}");
    assert_string_not_equal(json_string_value(json_object_get(a, "id")),
                            json_string_value(json_object_get(b, "id")));
    /* Answers route to their own call, in any order. */
    answer(e, b, "{\"role\":\"assistant\",\"content\":{\"type\":\"text\",\"text\":\"B\"}}", NULL);
    json_t *rb = final_response(e, 2);
    assert_string_equal(fakehost_text(rb, 0), "LLM response: B");
    answer(e, a,
           "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"A\"}],"
           "\"model\":\"m\"}",
           NULL);
    json_t *ra = final_response(e, 1);
    assert_string_equal(fakehost_text(ra, 0), "LLM response: A");
    json_decref(ra);
    json_decref(rb);
    json_decref(a);
    json_decref(b);
}

static void test_client_error(void **state)
{
    struct fakeenv *e = *state;
    json_t *req = start(e, 3, "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"x\"}}");
    answer(e, req, NULL, "{\"code\":-1,\"message\":\"User rejected sampling request\"}");
    json_t *resp = final_response(e, 3);
    assert_true(fakehost_is_error(resp));
    assert_string_equal(fakehost_text(resp, 0), "Sampling failed: User rejected sampling request");
    json_decref(resp);
    json_decref(req);
}

static void test_elicitation_round_trip(void **state)
{
    struct fakeenv *e = *state;
    json_t *req =
        start(e, 4, "{\"name\":\"test_elicitation\",\"arguments\":{\"message\":\"Who?\"}}");
    assert_string_equal(json_string_value(json_object_get(req, "method")), "elicitation/create");
    const json_t *p = json_object_get(req, "params");
    assert_string_equal(json_string_value(json_object_get(p, "message")), "Who?");
    assert_string_equal(json_string_value(json_object_get(p, "mode")), "form");
    const json_t *schema = json_object_get(p, "requestedSchema");
    assert_string_equal(json_string_value(json_object_get(schema, "type")), "object");
    assert_int_equal(json_array_size(json_object_get(schema, "required")), 2);
    answer(e, req, "{\"action\":\"accept\",\"content\":{\"username\":\"u\",\"email\":\"e@x\"}}",
           NULL);
    json_t *resp = final_response(e, 4);
    assert_string_equal(fakehost_text(resp, 0),
                        "User response: action=accept, content={\"username\":\"u\",\"email\":"
                        "\"e@x\"}");
    json_decref(resp);
    json_decref(req);
    req = start(e, 5, "{\"name\":\"test_elicitation\",\"arguments\":{\"message\":\"Who?\"}}");
    answer(e, req, "{\"action\":\"decline\"}", NULL);
    resp = final_response(e, 5);
    assert_string_equal(fakehost_text(resp, 0), "User response: action=decline, content={}");
    json_decref(resp);
    json_decref(req);
}

static void test_elicitation_0618_has_no_mode(void **state)
{
    struct fakeenv *e = *state;
    json_t *req = start(e, 4, "{\"name\":\"test_elicitation_sep1034_defaults\",\"arguments\":{}}");
    assert_null(json_object_get(json_object_get(req, "params"), "mode"));
    json_decref(req);
    /* sampling was not declared by this client */
    bool pending = true;
    json_t *r =
        fakehost_request(e->srv, e->s, 6, "tools/call",
                         "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"x\"}}", &pending);
    assert_false(pending);
    assert_true(fakehost_is_error(r));
    json_decref(r);
}

static void test_missing_capabilities(void **state)
{
    struct fakeenv *e = *state;
    static const char *const calls[] = {
        "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"x\"}}",
        "{\"name\":\"test_elicitation\",\"arguments\":{\"message\":\"x\"}}",
        "{\"name\":\"roots\",\"arguments\":{}}",
    };
    static const char *const words[] = {"sampling", "elicitation", "roots"};
    for (int i = 0; i < 3; i++) {
        bool pending = true;
        json_t *r = fakehost_request(e->srv, e->s, 10 + i, "tools/call", calls[i], &pending);
        assert_false(pending);
        assert_true(fakehost_is_error(r));
        assert_non_null(strstr(fakehost_text(r, 0), words[i]));
        json_decref(r);
    }
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0); /* nothing was sent to the client */
    json_decref(em);
}

static void test_timeout(void **state)
{
    struct fakeenv *e = *state;
    json_t *req = start(e, 8, "{\"name\":\"roots\",\"arguments\":{}}");
    assert_string_equal(json_string_value(json_object_get(req, "method")), "roots/list");
    assert_null(json_object_get(req, "params"));
    fakehost_advance(&e->fh, 999);
    json_t *em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    fakehost_advance(&e->fh, 1);
    em = fakehost_take(&e->fh);
    /* notifications/cancelled for our request, then the tool's error result. */
    assert_int_equal(json_array_size(em), 2);
    const json_t *n = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(json_string_value(json_object_get(n, "method")), "notifications/cancelled");
    assert_true(json_equal(json_object_get(json_object_get(n, "params"), "requestId"),
                           json_object_get(req, "id")));
    const json_t *resp = json_object_get(json_array_get(em, 1), "msg");
    assert_true(fakehost_is_error(resp));
    assert_non_null(strstr(fakehost_text(resp, 0), "in time"));
    json_decref(em);
    /* The late answer is ignored. */
    answer(e, req, "{\"roots\":[]}", NULL);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    json_decref(req);
}

static void test_roots_round_trip(void **state)
{
    struct fakeenv *e = *state;
    json_t *req = start(e, 9, "{\"name\":\"roots\",\"arguments\":{}}");
    answer(e, req, "{\"roots\":[{\"uri\":\"file:///a\"},{\"uri\":\"file:///b\"}]}", NULL);
    json_t *resp = final_response(e, 9);
    assert_string_equal(fakehost_text(resp, 0), "2 roots");
    json_decref(resp);
    json_decref(req);
    /* The round trip left no timer behind. */
    assert_int_equal(fakehost_live_timers(&e->fh), 0);
}

static void test_cancel_while_waiting(void **state)
{
    struct fakeenv *e = *state;
    json_t *req = start(e, 12, "{\"name\":\"test_sampling\",\"arguments\":{\"prompt\":\"x\"}}");
    fakehost_notify(e->srv, e->s, "notifications/cancelled", "{\"requestId\":12}");
    json_t *em = fakehost_take(&e->fh);
    /* We withdraw our own request, then end the call without a response. */
    assert_int_equal(json_array_size(em), 2);
    const json_t *n = json_object_get(json_array_get(em, 0), "msg");
    assert_string_equal(json_string_value(json_object_get(n, "method")), "notifications/cancelled");
    assert_true(json_equal(json_object_get(json_object_get(n, "params"), "requestId"),
                           json_object_get(req, "id")));
    assert_true(json_is_true(json_object_get(json_array_get(em, 1), "final")));
    assert_true(json_is_null(json_object_get(json_array_get(em, 1), "msg")));
    json_decref(em);
    answer(e, req, "{\"role\":\"assistant\",\"content\":{\"type\":\"text\",\"text\":\"late\"}}",
           NULL);
    em = fakehost_take(&e->fh);
    assert_int_equal(json_array_size(em), 0);
    json_decref(em);
    json_decref(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sampling_round_trip, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_ids_are_unique, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_client_error, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_elicitation_round_trip, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_elicitation_0618_has_no_mode, setup_0618, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_missing_capabilities, setup_nocaps, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_timeout, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_roots_round_trip, setup, fakeenv_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_while_waiting, setup, fakeenv_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
