/*
 * The conformance pack's task fixtures (docs/tasks.md): tools that run as tasks, for the
 * 2025-11-25 tasks (tasks.c, a "task" param on tools/call) and for the 2026-07-28 tasks
 * extension (tasks26.c, the server decides), with the names and behaviour the official
 * conformance suite's task scenarios expect:
 *
 *   greet {name}                 never a task: "Hello, {name}!"
 *   slow_compute {ms | seconds}  optional: computes that long (progress with a token)
 *   failing_job                  required: an isError result after 200 ms
 *   protocol_error_job           optional: a JSON-RPC error (-32603) after 200 ms
 *   confirm_delete {filename}    optional: asks the user to confirm (elicitation)
 *   multi_input                  optional: asks two questions at once
 *   test_tool_with_task          required, deferred: asks the user's name (input_required
 *                                rounds), then becomes a task that greets them
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEP_MS 100.0
#define ANSWER_MS 600000.0 /* how long a question waits on a 2025 session */

/* The client cannot be asked: say why (-32021 statelessly, an error result on sessions). */
static void cannot_ask(mcp_call *c, int rv, const char *tool)
{
    if (rv == -ENOTSUP)
        mcp_call_missing_capability(c, "elicitation", NULL);
    else
        mcp_call_return_text(c, true, "%s could not ask the client (error %d)", tool, rv);
}

static json_t *elicit(const char *message, const char *field, const char *type)
{
    return json_pack("{s:s,s:{s:s,s:{s:{s:s}},s:[s]}}", "message", message, "requestedSchema",
                     "type", "object", "properties", field, "type", type, "required", field);
}

/* An accepted elicitation's content, or NULL after finishing c with why not. */
static const json_t *accepted(mcp_call *c, const json_t *r, const json_t *e, const char *tool)
{
    if (e) {
        mcp_call_return_text(c, true, "%s: the client could not answer: %s", tool,
                             json_string_value(json_object_get(e, "message")));
        return NULL;
    }
    const char *action = json_string_value(json_object_get(r, "action"));
    if (!action || strcmp(action, "accept") != 0) {
        mcp_call_return_text(c, false, "%s: the user did not accept (%s)", tool,
                             action ? action : "no action");
        return NULL;
    }
    const json_t *content = json_object_get(r, "content");
    return json_is_object(content) ? content : r; /* (no fields: the defaults) */
}

/* ------------------------------------------------------- greet, slow, failing -- */

static void greet(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    const char *name = json_string_value(json_object_get(args, "name"));
    mcp_call_return_text(c, false, "Hello, %s!", name ? name : "World");
}

static void slow_step(mcp_call *c, void *arg)
{
    long left = (long)(intptr_t)arg;
    long ms = (long)(intptr_t)mcp_call_state(c);
    if (left <= 0) {
        mcp_call_return(c, json_pack("{s:[{s:s,s:s}],s:{s:I}}", "content", "type", "text", "text",
                                     "computed", "structuredContent", "ms", (json_int_t)ms));
        return;
    }
    mcp_call_progress(c, (double)(ms - left), (double)ms, NULL);
    long step = left < (long)STEP_MS ? left : (long)STEP_MS;
    if (!mcp_call_timer(c, (double)step, slow_step, (void *)(intptr_t)(left - step)))
        mcp_call_return_text(c, true, "slow_compute needs timers, and this host has none");
}

static void slow_compute(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    const json_t *ms_v = json_object_get(args, "ms");
    const json_t *s_v = json_object_get(args, "seconds");
    long ms = 1000;
    if (json_is_integer(ms_v))
        ms = (long)json_integer_value(ms_v);
    else if (json_is_number(s_v))
        ms = (long)(json_number_value(s_v) * 1000.0);
    mcp_call_set_state(c, (void *)(intptr_t)ms, NULL);
    slow_step(c, (void *)(intptr_t)ms);
}

static void failing_step(mcp_call *c, void *arg)
{
    (void)arg;
    mcp_call_return_text(c, true, "failing_job failed on purpose: the job could not be done");
}

static void failing_job(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    if (!mcp_call_timer(c, 200.0, failing_step, NULL))
        failing_step(c, NULL);
}

static void protocol_error_step(mcp_call *c, void *arg)
{
    (void)arg;
    mcp_call_error(c, MCP_INTERNAL_ERROR,
                   "Internal error: protocol_error_job failed on purpose (a protocol-level "
                   "failure, not a tool error)",
                   NULL);
}

static void protocol_error_job(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    if (!mcp_call_timer(c, 200.0, protocol_error_step, NULL))
        protocol_error_step(c, NULL);
}

/* ------------------------------------------------------------- questions -- */

static void confirm_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    (void)arg;
    const json_t *content = accepted(c, r, e, "confirm_delete");
    if (!content)
        return;
    const char *file = mcp_call_state(c);
    if (json_is_true(json_object_get(content, "confirm")))
        mcp_call_return_text(c, false, "Deleted %s", file ? file : "the file");
    else
        mcp_call_return_text(c, false, "Kept %s (not confirmed)", file ? file : "the file");
}

static void confirm_delete(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    const char *file = json_string_value(json_object_get(args, "filename"));
    char msg[300];
    snprintf(msg, sizeof(msg), "Delete %.200s?", file ? file : "the file");
    mcp_call_set_state(c, mcpi_strdup0(file), free);
    int rv =
        mcp_call_request_keyed(c, "confirm", "elicitation/create",
                               elicit(msg, "confirm", "boolean"), ANSWER_MS, confirm_reply, NULL);
    if (rv != 0)
        cannot_ask(c, rv, "confirm_delete");
}

struct multi {
    int left;
    char name[128];
    bool confirm;
};

static void multi_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    const json_t *content = accepted(c, r, e, "multi_input");
    if (!content)
        return;
    struct multi *m = mcp_call_state(c);
    if (arg) {
        const char *name = json_string_value(json_object_get(content, "name"));
        snprintf(m->name, sizeof(m->name), "%s", name ? name : "(none)");
    } else {
        m->confirm = json_is_true(json_object_get(content, "confirm"));
    }
    if (--m->left == 0)
        mcp_call_return_text(c, false, "Got both answers: name %s, confirm %s", m->name,
                             m->confirm ? "yes" : "no");
}

static void multi_input(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    struct multi *m = calloc(1, sizeof(*m));
    if (!m) {
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return;
    }
    m->left = 2;
    mcp_call_set_state(c, m, free);
    /* Both questions go out before either is answered: two inputRequests at once. */
    int rv = mcp_call_request_keyed(c, "name", "elicitation/create",
                                    elicit("What is your name?", "name", "string"), ANSWER_MS,
                                    multi_reply, (void *)1);
    if (rv == 0)
        rv = mcp_call_request_keyed(c, "confirm", "elicitation/create",
                                    elicit("Shall I go on?", "confirm", "boolean"), ANSWER_MS,
                                    multi_reply, NULL);
    if (rv != 0)
        cannot_ask(c, rv, "multi_input");
}

/* ------------------------------------------------ input, then a task -- */

static void task_greet_step(mcp_call *c, void *arg)
{
    (void)arg;
    const char *name = mcp_call_state(c);
    mcp_call_return_text(c, false, "Hello, %s! (greeted by a task)", name ? name : "(none)");
}

/* The task part of test_tool_with_task: greets the name gathered before it became a task. */
static void task_greet(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    mcp_call_set_state(c, mcpi_strdup0(json_string_value(json_object_get(args, "name"))), free);
    if (!mcp_call_timer(c, 200.0, task_greet_step, NULL))
        task_greet_step(c, NULL);
}

static void with_task_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    (void)arg;
    const json_t *content = accepted(c, r, e, "test_tool_with_task");
    if (!content)
        return;
    const char *name = json_string_value(json_object_get(content, "name"));
    json_t *args = json_pack("{s:s}", "name", name ? name : "(none)");
    mcp_call_run_as_task(c, task_greet, args);
    json_decref(args);
}

static void tool_with_task(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    int rv = mcp_call_request_keyed(c, "user_name", "elicitation/create",
                                    elicit("What is your name?", "name", "string"), ANSWER_MS,
                                    with_task_reply, NULL);
    if (rv != 0)
        cannot_ask(c, rv, "test_tool_with_task");
}

/* ---------------------------------------------------------- registration -- */

int mcpi_pack_conformance_tasks(mcp_server *srv, char *err, size_t errlen)
{
    json_t *slow_in = json_pack(
        "{s:s,s:{s:{s:s,s:i,s:i,s:s},s:{s:s,s:i,s:i,s:s},s:{s:s,s:s}}}", "type", "object",
        "properties", "ms", "type", "integer", "minimum", 0, "maximum", 600000, "description",
        "how long to compute, in ms (default 1000)", "seconds", "type", "number", "minimum", 0,
        "maximum", 600, "description", "how long to compute, in seconds (when ms is not given)",
        "label", "type", "string", "description", "a label for the run (unused)");
    json_t *slow_out = json_pack("{s:s,s:{s:{s:s}},s:[s]}", "type", "object", "properties", "ms",
                                 "type", "integer", "required", "ms");
    json_t *none = json_pack("{s:s,s:{}}", "type", "object", "properties");
    json_t *name_in =
        json_pack("{s:s,s:{s:{s:s}}}", "type", "object", "properties", "name", "type", "string");
    json_t *file_in = json_pack("{s:s,s:{s:{s:s}}}", "type", "object", "properties", "filename",
                                "type", "string");
    const struct mcp_tool_def defs[] = {
        {.name = "greet",
         .description = "Says Hello, {name}! at once; never runs as a task",
         .input_schema = name_in,
         .run = greet},
        {.name = "slow_compute",
         .description = "Computes for `ms` milliseconds, or `seconds` (default 1 s), reporting "
                        "progress; may run as a task",
         .input_schema = slow_in,
         .output_schema = slow_out,
         .run = slow_compute,
         .task_support = MCP_TASK_OPTIONAL},
        {.name = "failing_job",
         .description = "Fails after 200 ms with an error result; runs only as a task",
         .input_schema = none,
         .run = failing_job,
         .task_support = MCP_TASK_REQUIRED},
        {.name = "protocol_error_job",
         .description = "Fails after 200 ms with a JSON-RPC error (-32603); may run as a task",
         .input_schema = none,
         .run = protocol_error_job,
         .task_support = MCP_TASK_OPTIONAL},
        {.name = "confirm_delete",
         .description = "Asks the user to confirm deleting `filename` (elicitation), then says "
                        "what it did; may run as a task",
         .input_schema = file_in,
         .run = confirm_delete,
         .task_support = MCP_TASK_OPTIONAL},
        {.name = "multi_input",
         .description = "Asks two questions at once (a name and a confirmation); may run as a "
                        "task",
         .input_schema = none,
         .run = multi_input,
         .task_support = MCP_TASK_OPTIONAL},
        {.name = "test_tool_with_task",
         .description = "Asks the user's name (input_required), then becomes a task that greets "
                        "them; runs only as a task",
         .input_schema = none,
         .run = tool_with_task,
         .task_support = MCP_TASK_REQUIRED,
         .task_deferred = true},
    };
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < sizeof(defs) / sizeof(defs[0]); i++)
        rv = mcp_server_add_tool(srv, &defs[i], err, errlen);
    json_decref(slow_in);
    json_decref(slow_out);
    json_decref(none);
    json_decref(name_in);
    json_decref(file_in);
    return rv;
}
