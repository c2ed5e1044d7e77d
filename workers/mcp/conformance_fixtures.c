/*
 * The "conformance" pack, part 2: the resources, resource template and
 * prompts the conformance suite's server scenarios read, with the texts
 * and MIME types its checks expect.
 */
#include "workers/mcp/mcp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A 1x1 red RGBA PNG and a 4-sample 8 kHz mono 16-bit silent WAV. */
const char mcpi_test_png_base64[] = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8"
                                    "DwHwAFAAH/VscvDQAAAABJRU5ErkJggg==";
const char mcpi_test_wav_base64[] =
    "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQgAAAAAAAAAAAAAAA==";

/* ---------------------------------------------------------- resources -- */

static json_t *text_contents(const char *uri, const char *mime, const char *text)
{
    return json_pack("[{s:s,s:s,s:s}]", "uri", uri, "mimeType", mime, "text", text);
}

static json_t *read_static_text(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    return text_contents(uri, "text/plain", "This is the content of the static text resource.");
}

static json_t *read_static_binary(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    return json_pack("[{s:s,s:s,s:s}]", "uri", uri, "mimeType", "image/png", "blob",
                     mcpi_test_png_base64);
}

/* Bumped by the test_update_watched_resource tool. One engine per shard process: the
 * counter is this shard's (the update notification reaches every shard's clients). */
static unsigned watched_version;

unsigned mcpi_watched_touch(mcp_server *srv)
{
    watched_version++;
    mcp_server_resource_updated(srv, "test://watched-resource");
    return watched_version;
}

static json_t *read_watched(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    if (watched_version == 0)
        return text_contents(uri, "text/plain", "Watched resource content");
    char text[80];
    snprintf(text, sizeof(text), "Watched resource content (version %u)", watched_version);
    return text_contents(uri, "text/plain", text);
}

static json_t *read_template(mcp_call *c, const char *uri, const json_t *vars, void *ud)
{
    const char *id = json_string_value(json_object_get(vars, "id"));
    char data[300];
    snprintf(data, sizeof(data), "Data for ID: %.256s", id);
    json_t *doc = json_pack("{s:s,s:b,s:s}", "id", id, "templateTest", 1, "data", data);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_t *contents = text_contents(uri, "application/json", text);
    free(text);
    json_decref(doc);
    return contents;
}

static json_t *complete_template(mcp_call *c, const char *arg, const char *prefix,
                                 const json_t *ctx, void *ud)
{
    static const char *const ids[] = {"1", "2", "3", "42", "123", NULL};
    return strcmp(arg, "id") == 0 ? mcpi_complete_filter(ids, prefix) : json_array();
}

static const struct mcp_resource_def resources[] = {
    {.uri = "test://static-text",
     .name = "static-text",
     .title = "Static Text Resource",
     .description = "A static text resource for testing",
     .mime_type = "text/plain",
     .read = read_static_text},
    {.uri = "test://static-binary",
     .name = "static-binary",
     .title = "Static Binary Resource",
     .description = "A static binary resource (image) for testing",
     .mime_type = "image/png",
     .read = read_static_binary},
    {.uri = "test://watched-resource",
     .name = "watched-resource",
     .title = "Watched Resource",
     .description = "A resource clients can subscribe to",
     .mime_type = "text/plain",
     .read = read_watched},
};

/* ------------------------------------------------------------ prompts -- */

static json_t *user_message(json_t *content)
{
    return json_pack("{s:s,s:o}", "role", "user", "content", content);
}

static json_t *get_simple(mcp_call *c, const json_t *args, void *ud)
{
    return json_pack("{s:[o]}", "messages",
                     user_message(mcpi_text_content("This is a simple prompt for testing.")));
}

static json_t *get_with_arguments(mcp_call *c, const json_t *args, void *ud)
{
    char *text = NULL;
    if (asprintf(&text, "Prompt with arguments: arg1='%s', arg2='%s'",
                 json_string_value(json_object_get(args, "arg1")),
                 json_string_value(json_object_get(args, "arg2"))) < 0)
        return NULL;
    json_t *r = json_pack("{s:[o]}", "messages", user_message(mcpi_text_content(text)));
    free(text);
    return r;
}

static json_t *complete_arguments(mcp_call *c, const char *arg, const char *prefix,
                                  const json_t *ctx, void *ud)
{
    static const char *const words[] = {"hello", "paris", "park", "party", "test", "world", NULL};
    return mcpi_complete_filter(words, prefix);
}

static json_t *get_embedded(mcp_call *c, const json_t *args, void *ud)
{
    const char *uri = json_string_value(json_object_get(args, "resourceUri"));
    json_t *res =
        json_pack("{s:s,s:{s:s,s:s,s:s}}", "type", "resource", "resource", "uri", uri, "mimeType",
                  "text/plain", "text", "Embedded resource content for testing.");
    return json_pack(
        "{s:[o,o]}", "messages", user_message(res),
        user_message(mcpi_text_content("Please process the embedded resource above.")));
}

static json_t *get_image(mcp_call *c, const json_t *args, void *ud)
{
    json_t *img = json_pack("{s:s,s:s,s:s}", "type", "image", "data", mcpi_test_png_base64,
                            "mimeType", "image/png");
    return json_pack("{s:[o,o]}", "messages", user_message(img),
                     user_message(mcpi_text_content("Please analyze the image above.")));
}

/* prompts/get that asks the user first (2026-07-28 input_required; on 2025
 * sessions an elicitation/create request). */
static void prompt_context_reply(mcp_call *c, const json_t *result, const json_t *error, void *arg)
{
    const char *ctx =
        json_string_value(json_object_get(json_object_get(result, "content"), "context"));
    if (error || !ctx) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: test_input_required_result_prompt needs a context", NULL);
        return;
    }
    char *text = NULL;
    if (asprintf(&text, "Answer using this context: %s", ctx) < 0) {
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: out of memory", NULL);
        return;
    }
    mcp_call_return(c, json_pack("{s:s,s:[o]}", "description", "A prompt built from your context",
                                 "messages", user_message(mcpi_text_content(text))));
    free(text);
}

static json_t *get_input_required(mcp_call *c, const json_t *args, void *ud)
{
    json_t *p =
        json_pack("{s:s,s:{s:s,s:{s:{s:s}},s:[s]}}", "message",
                  "What context should the prompt use?", "requestedSchema", "type", "object",
                  "properties", "context", "type", "string", "required", "context");
    int rv = mcp_call_request_keyed(c, "user_context", "elicitation/create", p, 300000.0,
                                    prompt_context_reply, NULL);
    if (rv == -ENOTSUP)
        mcp_call_missing_capability(c, "elicitation",
                                    "test_input_required_result_prompt needs the elicitation "
                                    "capability");
    else if (rv != 0)
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: could not ask the client", NULL);
    return NULL; /* the answer finishes the call */
}

int mcpi_pack_conformance_fixtures(mcp_server *srv, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(resources) / sizeof(resources[0]); i++)
        if (mcp_server_add_resource(srv, &resources[i], err, errlen) != 0)
            return -1;
    struct mcp_resource_def tmpl = {.uri = "test://template/{id}/data",
                                    .name = "template",
                                    .title = "Resource Template",
                                    .description =
                                        "A resource template with parameter substitution",
                                    .mime_type = "application/json",
                                    .read = read_template,
                                    .complete = complete_template};
    if (mcp_server_add_template(srv, &tmpl, err, errlen) != 0)
        return -1;

    json_t *two = json_pack("[{s:s,s:s,s:b},{s:s,s:s,s:b}]", "name", "arg1", "description",
                            "First test argument", "required", 1, "name", "arg2", "description",
                            "Second test argument", "required", 1);
    json_t *uri = json_pack("[{s:s,s:s,s:b}]", "name", "resourceUri", "description",
                            "URI of the resource to embed", "required", 1);
    struct mcp_prompt_def prompts[] = {
        {.name = "test_simple_prompt",
         .title = "Simple Test Prompt",
         .description = "A simple prompt without arguments",
         .get = get_simple},
        {.name = "test_prompt_with_arguments",
         .title = "Prompt With Arguments",
         .description = "A prompt with required arguments",
         .arguments = two,
         .get = get_with_arguments,
         .complete = complete_arguments},
        {.name = "test_prompt_with_embedded_resource",
         .title = "Prompt With Embedded Resource",
         .description = "A prompt that includes an embedded resource",
         .arguments = uri,
         .get = get_embedded},
        {.name = "test_prompt_with_image",
         .title = "Prompt With Image",
         .description = "A prompt that includes image content",
         .get = get_image},
        {.name = "test_input_required_result_prompt",
         .title = "Prompt That Asks First",
         .description = "Asks the user for context (elicitation, key user_context), then builds "
                        "the prompt",
         .get = get_input_required},
    };
    int rv = 0;
    for (size_t i = 0; i < sizeof(prompts) / sizeof(prompts[0]) && rv == 0; i++)
        rv = mcp_server_add_prompt(srv, &prompts[i], err, errlen);
    json_decref(two);
    json_decref(uri);
    return rv;
}
