/*
 * The "conformance" pack, part 3: fixtures for the 2025-11-25 client features
 * the official suite has no scenarios for yet -- URL-mode elicitation (and
 * its -32042 error), sampling with tools, and icons -- so that clients, and
 * our own tests, can exercise the engine's API for them end to end. Each tool
 * reports what came back in structuredContent, so a test can assert on it.
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENT_ANSWER_MS 300000.0
#define CONNECT_URL "https://example.com/connect?elicitationId="

/* -------------------------------------------------------------- icons -- */

/* A 1x1 PNG as a data: URI (light theme) and an SVG by URL (dark theme). */
static json_t *fixture_icons(void)
{
    char *png = NULL;
    if (asprintf(&png, "data:image/png;base64,%s", mcpi_test_png_base64) < 0)
        return NULL;
    json_t *icons = json_pack("[{s:s,s:s,s:[s],s:s},{s:s,s:s,s:[s],s:s}]", "src", png, "mimeType",
                              "image/png", "sizes", "1x1", "theme", "light", "src",
                              "https://example.com/icons/cmcp-dark.svg", "mimeType",
                              "image/svg+xml", "sizes", "any", "theme", "dark");
    free(png);
    return icons;
}

static void icons_tool(mcp_call *c, const json_t *args, void *ud)
{
    (void)args;
    (void)ud;
    mcp_call_return_text(c, false, "This tool is listed with icons (a PNG and an SVG).");
}

static json_t *icons_read(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    (void)c;
    (void)ud;
    const char *name = json_string_value(json_object_get(vars, "name"));
    char text[200];
    snprintf(text, sizeof(text), "A resource listed with icons%s%s.", name ? ": " : "",
             name ? name : "");
    return json_pack("[{s:s,s:s,s:s}]", "uri", uri, "mimeType", "text/plain", "text", text);
}

static json_t *icons_prompt(mcp_call *c, const json_t *args, void *ud)
{
    (void)c;
    (void)args;
    (void)ud;
    return json_pack("{s:[{s:s,s:o}]}", "messages", "role", "user", "content",
                     mcpi_text_content("A prompt listed with icons."));
}

/* ------------------------------------------------ URL-mode elicitation -- */

/* The id of the interaction. A stateless request is replayed every round, so its id must
 * not change between rounds: it is derived from the arguments there. */
static void elicitation_id(mcp_call *c, const json_t *args, const char *tool,
                           char id[MCP_ELICITATION_ID_LEN])
{
    const char *given = json_string_value(json_object_get(args, "elicitationId"));
    if (given && *given) {
        snprintf(id, MCP_ELICITATION_ID_LEN, "%s", given);
        return;
    }
    if (!mcp_call_stateless(c)) {
        mcp_elicitation_id_new(id);
        return;
    }
    char *text = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char h[16];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof(h));
    crypto_generichash_update(&st, (const unsigned char *)tool, strlen(tool));
    if (text)
        crypto_generichash_update(&st, (const unsigned char *)text, strlen(text));
    crypto_generichash_final(&st, h, sizeof(h));
    free(text);
    snprintf(id, MCP_ELICITATION_ID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", h[0], h[1],
             h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13], h[14],
             h[15]);
}

static const char *error_message(const json_t *error)
{
    const char *m = json_string_value(json_object_get(error, "message"));
    return m ? m : "unknown error";
}

static void cannot_ask(mcp_call *c, int rv, const char *tool, const char *capability)
{
    if (rv == -ENOTSUP) {
        char text[300];
        snprintf(text, sizeof(text),
                 "%s needs a client that declares the '%s' capability (protocol 2025-11-25 or "
                 "newer)",
                 tool, capability);
        mcp_call_missing_capability(c, capability, text);
    } else {
        mcp_call_return_text(c, true, "%s could not send its request to the client (%d)", tool, rv);
    }
}

/* Reports the ElicitResult; on accept, says the interaction is over (the fixture's URL is
 * not real: it pretends the user finished there at once). arg: the tool's name. */
static void url_reply(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    const char *tool = arg;
    const char *id = mcp_call_state(c);
    if (error) {
        mcp_call_return_text(c, true, "%s: the client answered with an error: %s", tool,
                             error_message(error));
        return;
    }
    const char *action = json_string_value(json_object_get(result, "action"));
    bool accepted = action && strcmp(action, "accept") == 0;
    bool notified = accepted && mcp_call_elicitation_complete(c, id) == 0;
    json_t *r = json_pack("{s:[o],s:{s:s,s:s,s:b}}", "content",
                          mcpi_text_content(accepted ? "The user went to the URL; the interaction "
                                                       "is complete."
                                                     : "The user did not go to the URL."),
                          "structuredContent", "action", action ? action : "(none)",
                          "elicitationId", id, "completeNotified", notified);
    mcp_call_return(c, r);
}

static void url_ask(mcp_call *c, const char *key, const char *tool, const char *message)
{
    const char *id = mcp_call_state(c);
    char url[160];
    snprintf(url, sizeof(url), CONNECT_URL "%s", id);
    struct mcp_url_elicitation e = {.message = message, .url = url, .elicitation_id = id};
    int rv = mcp_call_elicit_url(c, key, &e, CLIENT_ANSWER_MS, url_reply, (void *)tool);
    if (rv != 0)
        cannot_ask(c, rv, tool, "elicitation.url");
}

static void url_elicitation(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    char id[MCP_ELICITATION_ID_LEN];
    elicitation_id(c, args, "test_url_elicitation", id);
    mcp_call_set_state(c, strdup(id), free);
    url_ask(c, "url_elicitation", "test_url_elicitation",
            "Please open the link to connect your Example Co account");
}

/* A tool that cannot run before the user has been to a URL: on 2025-11-25 sessions the first
 * call ends with -32042; a retry that names the elicitationId counts as "done there" (the
 * fixture has no real page). 2026-07-28 has no -32042: the URL is asked as an input
 * request instead. */
static void url_required(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    const char *tool = "test_url_elicitation_required";
    const char *done = json_string_value(json_object_get(args, "elicitationId"));
    if (done && *done && !mcp_call_stateless(c)) {
        bool notified = mcp_call_elicitation_complete(c, done) == 0;
        mcp_call_return(c, json_pack("{s:[o],s:{s:b,s:s,s:b}}", "content",
                                     mcpi_text_content("Connected: the authorization is done."),
                                     "structuredContent", "connected", 1, "elicitationId", done,
                                     "completeNotified", notified));
        return;
    }
    char id[MCP_ELICITATION_ID_LEN];
    elicitation_id(c, args, tool, id);
    char url[160];
    snprintf(url, sizeof(url), CONNECT_URL "%s", id);
    struct mcp_url_elicitation e = {.message = "Authorization is required to access your "
                                               "Example Co files.",
                                    .url = url,
                                    .elicitation_id = id};
    int rv = mcp_call_url_elicitation_required(c, "This request requires more information.", &e, 1);
    if (rv == 0)
        return;
    if (rv != -ENOTSUP) {
        mcp_call_return_text(c, true, "%s: cannot build the -32042 error (%d)", tool, rv);
        return;
    }
    mcp_call_set_state(c, strdup(id), free);
    url_ask(c, "connect", tool, e.message);
}

/* ------------------------------------------------- sampling with tools -- */

struct sample_state {
    char *prompt;
    json_t *uses; /* [{name, input}] the model asked for in round 1 */
};

static void sample_state_free(void *p)
{
    struct sample_state *st = p;
    free(st->prompt);
    json_decref(st->uses);
    free(st);
}

static json_t *weather_tools(void)
{
    return json_pack("[{s:s,s:s,s:{s:s,s:{s:{s:s}},s:[s]}}]", "name", "get_weather", "description",
                     "The current weather of a city", "inputSchema", "type", "object", "properties",
                     "city", "type", "string", "required", "city");
}

/* The first text of a result's content, or "". */
static const char *first_text(const json_t *result)
{
    const json_t *content = json_object_get(result, "content");
    if (json_is_object(content))
        return json_string_value(json_object_get(content, "text")) ?: "";
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "text"));
        if (t)
            return t;
    }
    return "";
}

/* Checks a sampling answer; false after finishing the call when it is unusable. */
static bool sample_ok(mcp_call *c, const json_t *result, const json_t *error, const json_t *tools)
{
    char why[300];
    if (error) {
        mcp_call_return_text(c, true, "test_sampling_tools: the client answered with an error: %s",
                             error_message(error));
        return false;
    }
    if (mcp_sampling_result_check(result, tools, why, sizeof(why)) != 0) {
        mcp_call_return_text(c, true,
                             "test_sampling_tools: the client's answer is not a valid "
                             "CreateMessageResult: %s",
                             why);
        return false;
    }
    return true;
}

static void sample_report(mcp_call *c, const json_t *result, int rounds)
{
    struct sample_state *st = mcp_call_state(c);
    const char *stop = json_string_value(json_object_get(result, "stopReason"));
    const char *answer = first_text(result);
    char *text = NULL;
    if (asprintf(&text, "Sampling with tools: %d round(s), %zu tool use(s); answer: %s", rounds,
                 json_array_size(st->uses), answer) < 0)
        text = NULL;
    mcp_call_return(c, json_pack("{s:[o],s:{s:i,s:O,s:s,s:s}}", "content",
                                 mcpi_text_content(text ? text : "Sampling with tools: done"),
                                 "structuredContent", "rounds", rounds, "toolUses", st->uses,
                                 "answer", answer, "stopReason", stop ? stop : "(none)"));
    free(text);
}

static void sample_round2(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    (void)arg;
    json_t *tools = weather_tools();
    if (sample_ok(c, result, error, tools))
        sample_report(c, result, 2);
    json_decref(tools);
}

/* Round 1 answered: run the tools the model asked for and send their results back. */
static void sample_round1(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    (void)arg;
    struct sample_state *st = mcp_call_state(c);
    json_t *tools = weather_tools();
    if (!sample_ok(c, result, error, tools)) {
        json_decref(tools);
        return;
    }
    json_t *uses = mcp_sampling_tool_uses(result);
    json_decref(st->uses);
    st->uses = json_array();
    if (json_array_size(uses) == 0) {
        json_decref(uses);
        json_decref(tools);
        sample_report(c, result, 1);
        return;
    }
    json_t *results = json_array();
    size_t i;
    json_t *u;
    json_array_foreach(uses, i, u)
    {
        const json_t *input = json_object_get(u, "input");
        const char *city = json_string_value(json_object_get(input, "city"));
        char text[200];
        snprintf(text, sizeof(text), "Weather in %s: sunny, 22 C", city ? city : "(no city)");
        json_array_append_new(
            st->uses, json_pack("{s:O,s:O}", "name", json_object_get(u, "name"), "input", input));
        json_array_append_new(
            results, mcp_sampling_tool_result(json_string_value(json_object_get(u, "id")),
                                              json_pack("[o]", mcpi_text_content(text)), !city));
    }
    const json_t *content = json_object_get(result, "content");
    json_t *messages =
        json_pack("[{s:s,s:o},{s:s,s:o},{s:s,s:o}]", "role", "user", "content",
                  mcpi_text_content(st->prompt), "role", "assistant", "content",
                  json_is_array(content) ? json_deep_copy(content) : json_pack("[O]", content),
                  "role", "user", "content", results);
    char why[300];
    /* toolChoice none: the model must answer in words now, so the loop ends here. */
    json_t *params = mcp_sampling_params(messages, 200, tools, "none", why, sizeof(why));
    json_decref(messages);
    json_decref(uses);
    json_decref(tools);
    if (!params) {
        mcp_call_return_text(c, true, "test_sampling_tools: cannot build the follow-up: %s", why);
        return;
    }
    int rv = mcp_call_request_keyed(c, "sampling_followup", "sampling/createMessage", params,
                                    CLIENT_ANSWER_MS, sample_round2, NULL);
    if (rv != 0)
        cannot_ask(c, rv, "test_sampling_tools", "sampling.tools");
}

static void sampling_tools(mcp_call *c, const json_t *args, void *ud)
{
    (void)ud;
    const char *prompt = json_string_value(json_object_get(args, "prompt"));
    struct sample_state *st = calloc(1, sizeof(*st));
    if (!st) {
        mcp_call_return_text(c, true, "test_sampling_tools: out of memory");
        return;
    }
    st->prompt = strdup(prompt && *prompt ? prompt : "What is the weather in Paris?");
    st->uses = json_array();
    mcp_call_set_state(c, st, sample_state_free);
    json_t *messages =
        json_pack("[{s:s,s:o}]", "role", "user", "content", mcpi_text_content(st->prompt));
    json_t *tools = weather_tools();
    char why[300];
    json_t *params = mcp_sampling_params(messages, 200, tools, "auto", why, sizeof(why));
    json_decref(messages);
    json_decref(tools);
    if (!params) {
        mcp_call_return_text(c, true, "test_sampling_tools: %s", why);
        return;
    }
    int rv = mcp_call_request_keyed(c, "sampling_tools", "sampling/createMessage", params,
                                    CLIENT_ANSWER_MS, sample_round1, NULL);
    if (rv != 0)
        cannot_ask(c, rv, "test_sampling_tools", "sampling.tools");
}

/* ------------------------------------------------------- registration -- */

#define ID_ARG                                                                                     \
    "{\"type\":\"object\",\"properties\":{\"elicitationId\":{\"type\":\"string\","                 \
    "\"description\":\"The id to use (default: a new one)\"}}}"

int mcpi_pack_conformance_client(mcp_server *srv, char *err, size_t errlen)
{
    json_t *icons = fixture_icons();
    json_t *id_arg = json_loads(ID_ARG, 0, NULL);
    json_t *prompt_arg =
        json_pack("{s:s,s:{s:{s:s,s:s}}}", "type", "object", "properties", "prompt", "type",
                  "string", "description", "What to ask the model (default: the weather in Paris)");
    json_t *none = json_pack("{s:s,s:{}}", "type", "object", "properties");
    const struct mcp_tool_def tools[] = {
        {.name = "test_url_elicitation",
         .description = "Sends the user to a URL (URL-mode elicitation, key url_elicitation); "
                        "on accept, sends notifications/elicitation/complete",
         .input_schema = id_arg,
         .run = url_elicitation},
        {.name = "test_url_elicitation_required",
         .description = "Needs a URL-mode elicitation first: -32042 until retried with the "
                        "elicitationId of the error",
         .input_schema = id_arg,
         .run = url_required},
        {.name = "test_sampling_tools",
         .description = "Offers the client's model a get_weather tool (sampling with tools), "
                        "answers its tool uses and reports the final answer",
         .input_schema = prompt_arg,
         .run = sampling_tools},
        {.name = "test_icons",
         .title = "Tool With Icons",
         .description = "Listed with icons (SEP-973)",
         .input_schema = none,
         .icons = icons,
         .run = icons_tool},
    };
    int rv = icons && id_arg ? 0 : -1;
    if (rv != 0)
        snprintf(err, errlen, "conformance pack: cannot build the client-feature fixtures");
    for (size_t i = 0; rv == 0 && i < sizeof(tools) / sizeof(tools[0]); i++)
        rv = mcp_server_add_tool(srv, &tools[i], err, errlen);
    struct mcp_resource_def res = {.uri = "test://icons/static",
                                   .name = "icons_resource",
                                   .title = "Resource With Icons",
                                   .description = "Listed with icons (SEP-973)",
                                   .mime_type = "text/plain",
                                   .icons = icons,
                                   .read = icons_read};
    struct mcp_resource_def tmpl = {.uri = "test://icons/{name}",
                                    .name = "icons_template",
                                    .title = "Template With Icons",
                                    .description = "Listed with icons (SEP-973)",
                                    .mime_type = "text/plain",
                                    .icons = icons,
                                    .read = icons_read};
    struct mcp_prompt_def prompt = {.name = "test_prompt_with_icons",
                                    .title = "Prompt With Icons",
                                    .description = "Listed with icons (SEP-973)",
                                    .icons = icons,
                                    .get = icons_prompt};
    if (rv == 0)
        rv = mcp_server_add_resource(srv, &res, err, errlen);
    if (rv == 0)
        rv = mcp_server_add_template(srv, &tmpl, err, errlen);
    if (rv == 0)
        rv = mcp_server_add_prompt(srv, &prompt, err, errlen);
    /* The server's own icons, unless the host set some. */
    if (rv == 0 && !srv->icons)
        rv = mcp_server_set_icons(srv, icons, err, errlen);
    json_decref(icons);
    json_decref(id_arg);
    json_decref(prompt_arg);
    json_decref(none);
    return rv;
}
