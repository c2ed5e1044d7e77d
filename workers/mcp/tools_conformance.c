/*
 * The "conformance" pack, part 1: the tools the official MCP conformance
 * suite (@modelcontextprotocol/conformance, server scenarios) calls. Names,
 * arguments, texts, MIME types, log and progress sequences and elicitation
 * schemas are the ones its checks assert; see docs/mcp-engine.md.
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How long a tool waits for the client to answer sampling or elicitation. */
#define CLIENT_ANSWER_MS 300000.0
#define STEP_MS 50.0

static json_t *image_content(void)
{
    return json_pack("{s:s,s:s,s:s}", "type", "image", "data", mcpi_test_png_base64, "mimeType",
                     "image/png");
}

static void simple_text(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return_text(c, false, "This is a simple text response for testing.");
}

/* SEP-2243: its "region" argument is marked "x-mcp-header": a client mirrors it in
 * Mcp-Param-Region, and the engine checks the two agree before this runs. */
static void custom_header(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    mcp_call_return_text(c, false, "region: %s",
                         json_string_value(json_object_get(args, "region")) ?: "(none)");
}

static void image(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return(c, json_pack("{s:[o]}", "content", image_content()));
}

static void audio(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return(c, json_pack("{s:[{s:s,s:s,s:s}]}", "content", "type", "audio", "data",
                                 mcpi_test_wav_base64, "mimeType", "audio/wav"));
}

static void embedded(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return(c, json_pack("{s:[{s:s,s:{s:s,s:s,s:s}}]}", "content", "type", "resource",
                                 "resource", "uri", "test://embedded-resource", "mimeType",
                                 "text/plain", "text", "This is an embedded resource content."));
}

static void multiple(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return(c, json_pack("{s:[o,o,{s:s,s:{s:s,s:s,s:s}}]}", "content",
                                 mcpi_text_content("Multiple content types test:"), image_content(),
                                 "type", "resource", "resource", "uri",
                                 "test://mixed-content-resource", "mimeType", "application/json",
                                 "text", "{\"test\":\"data\",\"value\":123}"));
}

static void error_handling(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return_text(c, true, "This tool intentionally returns an error for testing");
}

/* Logging and progress: three steps ~50 ms apart, as the suite expects. */
static const char *const log_steps[] = {"Tool execution started", "Tool processing data",
                                        "Tool execution completed"};

static void logging_step(mcp_call *c, void *arg)
{
    intptr_t step = (intptr_t)arg;
    mcp_call_log(c, MCP_LOG_INFO, NULL, json_string(log_steps[step]));
    if (step == 2) {
        mcp_call_return_text(c, false, "Tool with logging executed successfully");
    } else if (!mcp_call_timer(c, STEP_MS, logging_step, (void *)(step + 1))) {
        mcp_call_return_text(c, true, "test_tool_with_logging: no timers on this host");
    }
}

static void with_logging(mcp_call *c, const json_t *args, void *ud)
{
    logging_step(c, (void *)(intptr_t)0);
}

static void progress_step(mcp_call *c, void *arg)
{
    intptr_t step = (intptr_t)arg;
    char msg[64];
    snprintf(msg, sizeof(msg), "Completed step %d of 2", (int)step);
    mcp_call_progress(c, (double)step * 50.0, 100.0, msg);
    if (step == 2) {
        mcp_call_return_text(c, false, "Tool with progress executed successfully");
    } else if (!mcp_call_timer(c, STEP_MS, progress_step, (void *)(step + 1))) {
        mcp_call_return_text(c, true, "test_tool_with_progress: no timers on this host");
    }
}

static void with_progress(mcp_call *c, const json_t *args, void *ud)
{
    progress_step(c, (void *)(intptr_t)0);
}

/* -------------------------------------------- server->client requests -- */

static void unsupported(mcp_call *c, int rv, const char *tool, const char *capability)
{
    char text[300];
    if (rv == -ENOTSUP) {
        snprintf(text, sizeof(text),
                 "%s needs a client that supports %s: declare the '%s' capability (in "
                 "initialize, protocol 2025-06-18 or newer for elicitation; or in _meta "
                 "io.modelcontextprotocol/clientCapabilities with protocol 2026-07-28)",
                 tool, capability, capability);
        mcp_call_missing_capability(c, capability, text);
    } else {
        mcp_call_return_text(c, true, "%s could not send its request to the client (%d)", tool, rv);
    }
}

static const char *error_message(const json_t *error)
{
    const char *m = json_string_value(json_object_get(error, "message"));
    return m ? m : "unknown error";
}

/* CreateMessageResult.content is one block, or (2025-11-25) an array of them. */
static const char *sampled_text(const json_t *result)
{
    const json_t *content = json_object_get(result, "content");
    if (json_is_array(content)) {
        size_t i;
        json_t *b;
        json_array_foreach(content, i, b)
        {
            const char *t = json_string_value(json_object_get(b, "text"));
            if (t)
                return t;
        }
        return NULL;
    }
    return json_string_value(json_object_get(content, "text"));
}

static void sampling_reply(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    if (error) {
        mcp_call_return_text(c, true, "Sampling failed: %s", error_message(error));
        return;
    }
    const char *text = sampled_text(result);
    mcp_call_return_text(c, false, "LLM response: %s", text ? text : "(no text in the answer)");
}

static void sampling(mcp_call *c, const json_t *args, void *ud)
{
    const char *prompt = json_string_value(json_object_get(args, "prompt"));
    json_t *params = json_pack("{s:[{s:s,s:{s:s,s:s}}],s:i}", "messages", "role", "user", "content",
                               "type", "text", "text", prompt, "maxTokens", 100);
    int rv = mcp_call_request(c, "sampling/createMessage", params, CLIENT_ANSWER_MS, sampling_reply,
                              NULL);
    if (rv != 0)
        unsupported(c, rv, "test_sampling", "sampling");
}

/* arg: the prefix of the result text ("User response" or "Elicitation completed"). */
static void elicit_reply(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    if (error) {
        mcp_call_return_text(c, true, "Elicitation failed: %s", error_message(error));
        return;
    }
    const char *action = json_string_value(json_object_get(result, "action"));
    const json_t *content = json_object_get(result, "content");
    char *text = content ? json_dumps(content, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("{}");
    mcp_call_return_text(c, false, "%s: action=%s, content=%s", (const char *)arg,
                         action ? action : "(none)", text ? text : "{}");
    free(text);
}

static void elicit(mcp_call *c, const char *tool, const char *message, const char *schema,
                   const char *prefix)
{
    json_t *params =
        json_pack("{s:s,s:o}", "message", message, "requestedSchema", json_loads(schema, 0, NULL));
    /* "mode" arrived with 2025-11-25; older clients would reject the field. */
    if (mcp_call_protocol_at_least(c, "2025-11-25"))
        json_object_set_new(params, "mode", json_string("form"));
    int rv = mcp_call_request(c, "elicitation/create", params, CLIENT_ANSWER_MS, elicit_reply,
                              (void *)prefix);
    if (rv != 0)
        unsupported(c, rv, tool, "elicitation");
}

static void elicitation(mcp_call *c, const json_t *args, void *ud)
{
    elicit(c, "test_elicitation", json_string_value(json_object_get(args, "message")),
           "{\"type\":\"object\",\"properties\":{\"username\":{\"type\":\"string\","
           "\"description\":\"User's response\"},\"email\":{\"type\":\"string\","
           "\"description\":\"User's email address\"}},\"required\":[\"username\",\"email\"]}",
           "User response");
}

static void elicitation_defaults(mcp_call *c, const json_t *args, void *ud)
{
    elicit(c, "test_elicitation_sep1034_defaults",
           "Please review and update the form fields with defaults",
           "{\"type\":\"object\",\"properties\":{"
           "\"name\":{\"type\":\"string\",\"description\":\"User name\",\"default\":\"John Doe\"},"
           "\"age\":{\"type\":\"integer\",\"description\":\"User age\",\"default\":30},"
           "\"score\":{\"type\":\"number\",\"description\":\"User score\",\"default\":95.5},"
           "\"status\":{\"type\":\"string\",\"description\":\"User status\",\"enum\":[\"active\","
           "\"inactive\",\"pending\"],\"default\":\"active\"},"
           "\"verified\":{\"type\":\"boolean\",\"description\":\"Verification status\","
           "\"default\":true}},\"required\":[]}",
           "Elicitation completed");
}

static void elicitation_enums(mcp_call *c, const json_t *args, void *ud)
{
    elicit(c, "test_elicitation_sep1330_enums", "Please select options from the enum fields",
           "{\"type\":\"object\",\"properties\":{"
           "\"untitledSingle\":{\"type\":\"string\",\"description\":\"Select one option\","
           "\"enum\":[\"option1\",\"option2\",\"option3\"]},"
           "\"titledSingle\":{\"type\":\"string\",\"description\":\"Select one option with "
           "titles\",\"oneOf\":[{\"const\":\"value1\",\"title\":\"First Option\"},{\"const\":"
           "\"value2\",\"title\":\"Second Option\"},{\"const\":\"value3\",\"title\":\"Third "
           "Option\"}]},"
           "\"legacyEnum\":{\"type\":\"string\",\"description\":\"Select one option (legacy)\","
           "\"enum\":[\"opt1\",\"opt2\",\"opt3\"],\"enumNames\":[\"Option One\",\"Option Two\","
           "\"Option Three\"]},"
           "\"untitledMulti\":{\"type\":\"array\",\"description\":\"Select multiple options\","
           "\"minItems\":1,\"maxItems\":3,\"items\":{\"type\":\"string\",\"enum\":[\"option1\","
           "\"option2\",\"option3\"]}},"
           "\"titledMulti\":{\"type\":\"array\",\"description\":\"Select multiple options with "
           "titles\",\"minItems\":1,\"maxItems\":3,\"items\":{\"anyOf\":[{\"const\":\"value1\","
           "\"title\":\"First Choice\"},{\"const\":\"value2\",\"title\":\"Second Choice\"},"
           "{\"const\":\"value3\",\"title\":\"Third Choice\"}]}}},\"required\":[]}",
           "Elicitation completed");
}

static void json_schema_tool(mcp_call *c, const json_t *args, void *ud)
{
    char *text = json_dumps(args, JSON_COMPACT);
    mcp_call_return_text(c, false, "JSON Schema 2020-12 tool called with: %s", text ? text : "{}");
    free(text);
}

static void reconnection_done(mcp_call *c, void *arg)
{
    mcp_call_return_text(c, false,
                         "Reconnection test finished: this result reached you after the server "
                         "closed the stream mid-call.");
}

/* SEP-1699: ask the transport to drop the request's SSE stream, then answer
 * 100 ms later, on the stream the client resumes with Last-Event-ID. */
static void reconnection(mcp_call *c, const json_t *args, void *ud)
{
    mcp_server *srv = mcp_call_server(c);
    if (srv->ops.close_stream)
        srv->ops.close_stream(srv->host, mcp_call_session(c), mcp_call_id(c));
    if (!mcp_call_timer(c, 100.0, reconnection_done, NULL))
        reconnection_done(c, NULL);
}

/* ------------------------------------------------ change notifications -- */

/* Real changes for list_changed and resources/updated to announce, on both
 * eras: 2025 sessions hear them unsolicited, 2026-07-28 clients on a
 * subscriptions/listen stream. The registry is the serving engine's (one
 * shard); the notifications reach every shard's clients (host op announce). */

#define DYNAMIC_TOOL "test_dynamic_tool"

static void dynamic_tool(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_return_text(c, false, "The dynamic tool is registered.");
}

static void toggle_dynamic_tool(mcp_call *c, const json_t *args, void *ud)
{
    mcp_server *srv = mcp_call_server(c);
    if (mcp_server_remove_tool(srv, DYNAMIC_TOOL) == 0) {
        mcp_call_return_text(c, false, "removed tool %s", DYNAMIC_TOOL);
        return;
    }
    struct mcp_tool_def def = {.name = DYNAMIC_TOOL,
                               .description = "Registered and removed by test_toggle_dynamic_tool",
                               .run = dynamic_tool};
    char err[200];
    if (mcp_server_add_tool(srv, &def, err, sizeof(err)) != 0) {
        mcp_call_return_text(c, true, "cannot register %s: %s", DYNAMIC_TOOL, err);
        return;
    }
    mcp_call_return_text(c, false, "added tool %s", DYNAMIC_TOOL);
}

static void update_watched(mcp_call *c, const json_t *args, void *ud)
{
    unsigned v = mcpi_watched_touch(mcp_call_server(c));
    mcp_call_return_text(c, false, "test://watched-resource is now at version %u", v);
}

/* ------------------------------------ 2026-07-28 fixtures (SEP-2322/2575) -- */

/* The suite's 2026-07-28 scenarios (conformance 0.2.0): multi round-trip
 * requests through mcp_call_request_keyed(), which on 2025 sessions are
 * ordinary server->client requests. Keys and texts are the suite's. */

static json_t *elicit_params(const char *message, const char *field, const char *type)
{
    json_t *p = json_pack("{s:s,s:{s:s,s:{s:{s:s}},s:[s]}}", "message", message, "requestedSchema",
                          "type", "object", "properties", field, "type", type, "required", field);
    return p;
}

static json_t *sampling_params(const char *text, int max_tokens)
{
    return json_pack("{s:[{s:s,s:{s:s,s:s}}],s:i}", "messages", "role", "user", "content", "type",
                     "text", "text", text, "maxTokens", max_tokens);
}

/* "name" of an accepted elicitation, or a placeholder. */
static const char *answer_field(const json_t *result, const char *field)
{
    const char *v = json_string_value(json_object_get(json_object_get(result, "content"), field));
    return v ? v : "(none)";
}

static bool reply_failed(mcp_call *c, const json_t *error)
{
    if (!error)
        return false;
    mcp_call_return_text(c, true, "The client could not answer: %s", error_message(error));
    return true;
}

static void ask(mcp_call *c, const char *key, const char *method, json_t *params,
                mcp_reply_fn reply, void *arg, const char *tool)
{
    int rv = mcp_call_request_keyed(c, key, method, params, CLIENT_ANSWER_MS, reply, arg);
    if (rv != 0)
        unsupported(c, rv, tool,
                    strncmp(method, "sampling", 8) == 0 ? "sampling"
                    : strncmp(method, "roots", 5) == 0  ? "roots"
                                                        : "elicitation");
}

static void ir_elicitation_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (!reply_failed(c, e))
        mcp_call_return_text(c, false, "Hello, %s!", answer_field(r, "name"));
}

static void ir_elicitation(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, "user_name", "elicitation/create", elicit_params("What is your name?", "name", "string"),
        ir_elicitation_reply, NULL, "test_input_required_result_elicitation");
}

static void ir_sampling_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (reply_failed(c, e))
        return;
    const char *text = sampled_text(r);
    mcp_call_return_text(c, false, "LLM response: %s", text ? text : "(no text in the answer)");
}

static void ir_sampling(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, "capital_question", "sampling/createMessage",
        sampling_params("What is the capital of France?", 100), ir_sampling_reply, NULL,
        "test_input_required_result_sampling");
}

static char *roots_text(const json_t *r)
{
    size_t i, len = 0;
    json_t *root;
    char *out = strdup("");
    json_array_foreach(json_object_get(r, "roots"), i, root)
    {
        const char *uri = json_string_value(json_object_get(root, "uri"));
        char *next = NULL;
        if (asprintf(&next, "%s%s%s", out, len ? ", " : "", uri ? uri : "?") < 0)
            break;
        free(out);
        out = next;
        len++;
    }
    return out;
}

static void ir_roots_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (reply_failed(c, e))
        return;
    char *text = roots_text(r);
    mcp_call_return_text(c, false, "Client roots: %s", text && *text ? text : "(none)");
    free(text);
}

static void ir_list_roots(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, "client_roots", "roots/list", json_object(), ir_roots_reply, NULL,
        "test_input_required_result_list_roots");
}

static void ir_state_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (reply_failed(c, e))
        return;
    bool ok = json_is_true(json_object_get(json_object_get(r, "content"), "ok"));
    if (mcp_call_resumed(c) || !mcp_call_stateless(c))
        mcp_call_return_text(c, false, "state-ok: requestState verified, confirmed=%s",
                             ok ? "true" : "false");
    else
        mcp_call_return_text(c, false, "answer received without a requestState, confirmed=%s",
                             ok ? "true" : "false");
}

static void ir_request_state(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, "confirm", "elicitation/create", elicit_params("Please confirm", "ok", "boolean"),
        ir_state_reply, NULL, "test_input_required_result_request_state");
}

static void ir_tampered(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, "confirm", "elicitation/create", elicit_params("Please confirm", "ok", "boolean"),
        ir_state_reply, NULL, "test_input_required_result_tampered_state");
}

/* Several questions at once: the answers are gathered in the call's state. */
struct gather {
    int want, got;
    char *name, *greeting, *roots;
};

static void gather_free(void *p)
{
    struct gather *g = p;
    free(g->name);
    free(g->greeting);
    free(g->roots);
    free(g);
}

static void gather_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    struct gather *g = mcp_call_state(c);
    if (reply_failed(c, e))
        return;
    const char *what = arg;
    if (strcmp(what, "name") == 0) {
        g->name = strdup(answer_field(r, "name"));
    } else if (strcmp(what, "greeting") == 0) {
        const char *t = sampled_text(r);
        g->greeting = strdup(t ? t : "(none)");
    } else {
        g->roots = roots_text(r);
    }
    if (++g->got < g->want)
        return;
    mcp_call_return_text(c, false, "All inputs received: name=%s, greeting=%s, roots=%s",
                         g->name ? g->name : "-", g->greeting ? g->greeting : "-",
                         g->roots ? g->roots : "-");
}

static void gather_ask(mcp_call *c, bool only_supported, const char *tool)
{
    struct gather *g = calloc(1, sizeof(*g));
    mcp_call_set_state(c, g, gather_free);
    json_t *ep = elicit_params("What is your name?", "name", "string");
    json_t *sp = sampling_params("Generate a greeting", 50);
    json_t *rp = json_object();
    struct {
        const char *key, *method;
        json_t *params;
        const char *what;
    } q[] = {{"user_name", "elicitation/create", ep, "name"},
             {"greeting", "sampling/createMessage", sp, "greeting"},
             {"client_roots", "roots/list", rp, "roots"}};
    for (size_t i = 0; i < 3; i++) {
        if (only_supported && !mcp_call_client_supports(c, q[i].method, q[i].params)) {
            json_decref(q[i].params);
            q[i].params = NULL;
            continue;
        }
        g->want++;
    }
    if (g->want == 0) {
        mcp_call_missing_capability(c, "elicitation",
                                    "test_input_required_result_capabilities needs at least one of "
                                    "the elicitation, sampling or roots capabilities");
        return;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!q[i].params)
            continue;
        if (mcp_call_done(c)) /* an earlier question failed: the rest are not asked */
            json_decref(q[i].params);
        else
            ask(c, q[i].key, q[i].method, q[i].params, gather_reply, (void *)q[i].what, tool);
    }
}

static void ir_multiple(mcp_call *c, const json_t *args, void *ud)
{
    gather_ask(c, false, "test_input_required_result_multiple_inputs");
}

static void ir_capabilities(mcp_call *c, const json_t *args, void *ud)
{
    gather_ask(c, true, "test_input_required_result_capabilities");
}

/* Two rounds in a row: step2 is asked only once step1 is answered. */
static void multi_step2(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (reply_failed(c, e))
        return;
    const char *name = mcp_call_state(c);
    mcp_call_return_text(c, false, "Hello %s, your favorite color is %s.", name ? name : "(none)",
                         answer_field(r, "color"));
}

static void multi_step1(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (reply_failed(c, e))
        return;
    mcp_call_set_state(c, strdup(answer_field(r, "name")), free);
    ask(c, "step2", "elicitation/create",
        elicit_params("Step 2: What is your favorite color?", "color", "string"), multi_step2, NULL,
        "test_input_required_result_multi_round");
}

static void ir_multi_round(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, "step1", "elicitation/create",
        elicit_params("Step 1: What is your name?", "name", "string"), multi_step1, NULL,
        "test_input_required_result_multi_round");
}

static void missing_capability_reply(mcp_call *c, const json_t *r, const json_t *e, void *arg)
{
    if (reply_failed(c, e))
        return;
    const char *text = sampled_text(r);
    mcp_call_return_text(c, false, "Sampled: %s", text ? text : "(no text)");
}

/* Needs sampling: a 2026-07-28 client without it gets -32021. */
static void missing_capability(mcp_call *c, const json_t *args, void *ud)
{
    ask(c, NULL, "sampling/createMessage", sampling_params("Say hello", 20),
        missing_capability_reply, NULL, "test_missing_capability");
}

static void streaming_elicitation(mcp_call *c, const json_t *args, void *ud)
{
    mcp_call_progress(c, 0, 1, "asking the user");
    ask(c, "user_name", "elicitation/create", elicit_params("What is your name?", "name", "string"),
        ir_elicitation_reply, NULL, "test_streaming_elicitation");
}

static void logging_tool(mcp_call *c, const json_t *args, void *ud)
{
    for (int i = 0; i < 3; i++)
        mcp_call_log(c, MCP_LOG_INFO, NULL, json_string(log_steps[i]));
    mcp_call_return_text(c, false, "Logged 3 messages (only sent when the request asks for them)");
}

/* ------------------------------------------------------- registration -- */

#define NO_ARGS "{\"type\":\"object\",\"properties\":{}}"

static const struct {
    const char *name, *description, *input;
    mcp_tool_fn run;
} tools[] = {
    {"test_simple_text", "Tests simple text content response", NO_ARGS, simple_text},
    {"test_image_content", "Tests image content response", NO_ARGS, image},
    {"test_audio_content", "Tests audio content response", NO_ARGS, audio},
    {"test_embedded_resource", "Tests embedded resource content response", NO_ARGS, embedded},
    {"test_multiple_content_types",
     "Tests response with multiple content types (text, image, resource)", NO_ARGS, multiple},
    {"test_tool_with_logging", "Tests tool that emits log messages during execution", NO_ARGS,
     with_logging},
    {"test_tool_with_progress", "Tests tool that reports progress notifications", NO_ARGS,
     with_progress},
    {"test_error_handling", "Tests error response handling", NO_ARGS, error_handling},
    {"test_sampling", "Tests server-initiated sampling (LLM completion request)",
     "{\"type\":\"object\",\"properties\":{\"prompt\":{\"type\":\"string\",\"description\":"
     "\"The prompt to send to the LLM\"}},\"required\":[\"prompt\"]}",
     sampling},
    {"test_elicitation", "Tests server-initiated elicitation (user input request)",
     "{\"type\":\"object\",\"properties\":{\"message\":{\"type\":\"string\",\"description\":"
     "\"The message to show the user\"}},\"required\":[\"message\"]}",
     elicitation},
    {"test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034",
     NO_ARGS, elicitation_defaults},
    {"test_elicitation_sep1330_enums",
     "Tests elicitation with enum schema improvements per SEP-1330", NO_ARGS, elicitation_enums},
    {"json_schema_2020_12_tool",
     "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
     "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"type\":\"object\","
     "\"$defs\":{\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":"
     "\"string\"},\"city\":{\"type\":\"string\"}}}},\"properties\":{\"name\":{\"type\":"
     "\"string\"},\"address\":{\"$ref\":\"#/$defs/address\"}},\"additionalProperties\":false}",
     json_schema_tool},
    {"test_input_required_result_elicitation",
     "Asks the user's name (elicitation, key user_name) and greets them", NO_ARGS, ir_elicitation},
    {"test_input_required_result_sampling",
     "Asks the client's LLM a question (sampling, key capital_question)", NO_ARGS, ir_sampling},
    {"test_input_required_result_list_roots", "Asks the client's roots (key client_roots)", NO_ARGS,
     ir_list_roots},
    {"test_input_required_result_request_state",
     "Asks for a confirmation and checks the requestState echoed back (says state-ok)", NO_ARGS,
     ir_request_state},
    {"test_input_required_result_multiple_inputs",
     "Asks an elicitation, a sampling and the roots at once", NO_ARGS, ir_multiple},
    {"test_input_required_result_multi_round",
     "Asks two questions in two rounds (step1, then step2)", NO_ARGS, ir_multi_round},
    {"test_input_required_result_tampered_state",
     "Asks for a confirmation; a tampered requestState is refused", NO_ARGS, ir_tampered},
    {"test_input_required_result_capabilities",
     "Asks only what the client declared it supports (elicitation, sampling, roots)", NO_ARGS,
     ir_capabilities},
    {"test_missing_capability", "Needs the sampling capability (-32021 without it)", NO_ARGS,
     missing_capability},
    {"test_streaming_elicitation", "Reports progress, then asks the user's name", NO_ARGS,
     streaming_elicitation},
    {"test_logging_tool", "Logs three messages (sent only when the request sets a log level)",
     NO_ARGS, logging_tool},
    {"test_toggle_dynamic_tool",
     "Registers " DYNAMIC_TOOL " when it is absent and removes it when present (the tool list "
     "changes: clients get notifications/tools/list_changed)",
     NO_ARGS, toggle_dynamic_tool},
    {"test_update_watched_resource",
     "Changes test://watched-resource (its subscribers get notifications/resources/updated)",
     NO_ARGS, update_watched},
    {"test_reconnection",
     "Tests SSE stream disconnection and client reconnection (SEP-1699): the server closes the "
     "stream mid-call and answers after the client reconnects.",
     NO_ARGS, reconnection},
    {"test_custom_header",
     "Echoes its region, which clients mirror in the Mcp-Param-Region header (SEP-2243)",
     "{\"type\":\"object\",\"properties\":{\"region\":{\"type\":\"string\",\"x-mcp-header\":"
     "\"Region\",\"description\":\"Where to run; routed on by intermediaries\"}},"
     "\"required\":[\"region\"]}",
     custom_header},
};

int mcpi_pack_conformance_tools(mcp_server *srv, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
        json_t *in = json_loads(tools[i].input, 0, NULL);
        struct mcp_tool_def def = {.name = tools[i].name,
                                   .description = tools[i].description,
                                   .input_schema = in,
                                   .run = tools[i].run};
        int rv = in ? mcp_server_add_tool(srv, &def, err, errlen) : -1;
        if (!in)
            snprintf(err, errlen, "conformance pack: bad schema for tool %s", tools[i].name);
        json_decref(in);
        if (rv != 0)
            return -1;
    }
    return mcpi_pack_conformance_tasks(srv, err, errlen);
}
