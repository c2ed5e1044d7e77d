/*
 * Sampling with tools (2025-11-25): building a sampling/createMessage request
 * that offers the client's model tools, and checking what comes back.
 *
 * The rules are the spec's: tool uses come from the assistant, their results
 * go back in the next user message, which then holds tool results only, one
 * per tool use (matched by id). Checking them here, before anything is sent,
 * turns a tool's bookkeeping slip into a sentence for its author instead of
 * an opaque error from whichever model provider the client forwards to.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdio.h>
#include <string.h>

static bool one_of(const char *s, const char *const *set)
{
    for (; s && *set; set++)
        if (strcmp(s, *set) == 0)
            return true;
    return false;
}

/* Why block is no SamplingMessageContentBlock from role, or NULL. where names it. */
static const char *block_problem(const json_t *b, const char *role, const json_t *tools, char *why,
                                 size_t len, const char *where)
{
    const char *type = json_string_value(json_object_get(b, "type"));
    if (!json_is_object(b) || !type) {
        snprintf(why, len, "%s must be a content block with a \"type\"", where);
        return why;
    }
    if (strcmp(type, "text") == 0) {
        if (!json_is_string(json_object_get(b, "text")))
            snprintf(why, len, "%s: a text block needs \"text\"", where);
        else
            return NULL;
    } else if (strcmp(type, "image") == 0 || strcmp(type, "audio") == 0) {
        if (!json_is_string(json_object_get(b, "data")) ||
            !json_is_string(json_object_get(b, "mimeType")))
            snprintf(why, len, "%s: an %s block needs \"data\" and \"mimeType\"", where, type);
        else
            return NULL;
    } else if (strcmp(type, "tool_use") == 0) {
        const char *name = json_string_value(json_object_get(b, "name"));
        if (!json_is_string(json_object_get(b, "id")) || !name ||
            !json_is_object(json_object_get(b, "input"))) {
            snprintf(why, len,
                     "%s: a tool_use block needs \"id\", \"name\" and an object \"input\"", where);
        } else if (role && strcmp(role, "assistant") != 0) {
            snprintf(why, len, "%s: tool_use comes from the assistant, not the %s", where, role);
        } else if (tools) {
            size_t i;
            const json_t *t;
            json_array_foreach(tools, i, t)
            {
                const char *n = json_string_value(json_object_get(t, "name"));
                if (n && strcmp(n, name) == 0)
                    return NULL;
            }
            snprintf(why, len, "%s: tool_use names '%.64s', which is not among the tools offered",
                     where, name);
        } else {
            return NULL;
        }
    } else if (strcmp(type, "tool_result") == 0) {
        if (!json_is_string(json_object_get(b, "toolUseId")) ||
            !json_is_array(json_object_get(b, "content")))
            snprintf(why, len,
                     "%s: a tool_result block needs \"toolUseId\" and a \"content\" array", where);
        else if (role && strcmp(role, "user") != 0)
            snprintf(why, len, "%s: tool_result goes back from the user, not the %s", where, role);
        else
            return NULL;
    } else {
        snprintf(why, len,
                 "%s: unknown content type '%.32s' (text, image, audio, tool_use or tool_result)",
                 where, type);
    }
    return why;
}

/* Each block of a message's content (one block or an array), through block_problem. */
static const char *content_problem(const json_t *content, const char *role, const json_t *tools,
                                   char *why, size_t len, const char *where)
{
    char at[96];
    if (json_is_object(content))
        return block_problem(content, role, tools, why, len, where);
    if (!json_is_array(content) || json_array_size(content) == 0) {
        snprintf(why, len, "%s: content must be a block or a non-empty array of blocks", where);
        return why;
    }
    size_t i;
    const json_t *b;
    json_array_foreach(content, i, b)
    {
        snprintf(at, sizeof(at), "%s.content[%zu]", where, i);
        if (block_problem(b, role, tools, why, len, at))
            return why;
    }
    return NULL;
}

/* The blocks of content as an array view: content itself, or a one-element array. */
static json_t *blocks(const json_t *content)
{
    if (json_is_array(content))
        return json_incref((json_t *)content);
    return json_pack("[O]", content);
}

static size_t count_type(const json_t *bs, const char *type)
{
    size_t i, n = 0;
    const json_t *b;
    json_array_foreach(bs, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "type"));
        n += t && strcmp(t, type) == 0;
    }
    return n;
}

/* Whether bs holds a tool_result for tool use id. */
static bool answered(const json_t *bs, const char *id)
{
    size_t i;
    const json_t *b;
    json_array_foreach(bs, i, b)
    {
        const char *u = json_string_value(json_object_get(b, "toolUseId"));
        if (u && strcmp(u, id) == 0)
            return true;
    }
    return false;
}

static const char *messages_problem(const json_t *messages, const json_t *tools, char *why,
                                    size_t len)
{
    static const char *const roles[] = {"user", "assistant", NULL};
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        snprintf(why, len, "messages must be a non-empty array of {role, content}");
        return why;
    }
    size_t i;
    const json_t *m;
    json_array_foreach(messages, i, m)
    {
        char where[48];
        snprintf(where, sizeof(where), "messages[%zu]", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !one_of(role, roles)) {
            snprintf(why, len, "%s needs a role of \"user\" or \"assistant\"", where);
            return why;
        }
        if (content_problem(json_object_get(m, "content"), role, tools, why, len, where))
            return why;
        json_t *bs = blocks(json_object_get(m, "content"));
        size_t results = count_type(bs, "tool_result");
        size_t uses = count_type(bs, "tool_use");
        if (results > 0 && results != json_array_size(bs)) {
            json_decref(bs);
            snprintf(why, len,
                     "%s mixes tool_result with other content: it must hold only "
                     "tool results",
                     where);
            return why;
        }
        if (uses > 0) { /* the next message must answer every one of them */
            const json_t *next = json_array_get(messages, i + 1);
            json_t *nb = next ? blocks(json_object_get(next, "content")) : json_array();
            size_t j;
            const json_t *b;
            json_array_foreach(bs, j, b)
            {
                const char *id = json_string_value(json_object_get(b, "id"));
                if (id && !answered(nb, id)) {
                    snprintf(why, len,
                             "%s: tool_use '%.64s' has no tool_result with that toolUseId in the "
                             "next message",
                             where, id);
                    json_decref(nb);
                    json_decref(bs);
                    return why;
                }
            }
            json_decref(nb);
        }
        json_decref(bs);
    }
    return NULL;
}

static const char *tools_problem(const json_t *tools, char *why, size_t len)
{
    if (!json_is_array(tools) || json_array_size(tools) == 0) {
        snprintf(why, len, "tools must be a non-empty array of {name, inputSchema}");
        return why;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (!json_is_object(t) || !name || !*name ||
            !json_is_object(json_object_get(t, "inputSchema"))) {
            snprintf(why, len, "tools[%zu] needs a \"name\" and an object \"inputSchema\"", i);
            return why;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(json_string_value(json_object_get(json_array_get(tools, j), "name")),
                       name) == 0) {
                snprintf(why, len, "tools[%zu]: the name '%.64s' is offered twice", i, name);
                return why;
            }
    }
    return NULL;
}

json_t *mcp_sampling_params(const json_t *messages, int max_tokens, const json_t *tools,
                            const char *tool_choice, char *err, size_t errlen)
{
    static const char *const modes[] = {"auto", "required", "none", NULL};
    char why[256];
    if (max_tokens <= 0) {
        snprintf(err, errlen, "sampling: maxTokens must be at least 1");
        return NULL;
    }
    if (tools && tools_problem(tools, why, sizeof(why))) {
        snprintf(err, errlen, "sampling: %s", why);
        return NULL;
    }
    if (tool_choice && !one_of(tool_choice, modes)) {
        snprintf(err, errlen, "sampling: toolChoice mode '%s' is none of auto, required, none",
                 tool_choice);
        return NULL;
    }
    if (messages_problem(messages, NULL, why, sizeof(why))) {
        snprintf(err, errlen, "sampling: %s", why);
        return NULL;
    }
    json_t *p =
        json_pack("{s:o,s:i}", "messages", json_deep_copy(messages), "maxTokens", max_tokens);
    if (tools)
        json_object_set_new(p, "tools", json_deep_copy(tools));
    if (tool_choice)
        json_object_set_new(p, "toolChoice", json_pack("{s:s}", "mode", tool_choice));
    return p;
}

int mcp_sampling_result_check(const json_t *result, const json_t *tools, char *err, size_t errlen)
{
    static const char *const roles[] = {"user", "assistant", NULL};
    char why[256];
    if (!json_is_object(result)) {
        snprintf(err, errlen, "the sampling result is not an object");
        return -1;
    }
    const char *role = json_string_value(json_object_get(result, "role"));
    if (!one_of(role, roles) || !json_is_string(json_object_get(result, "model"))) {
        snprintf(err, errlen,
                 "a CreateMessageResult needs \"role\" (user or assistant) and \"model\"");
        return -1;
    }
    const json_t *sr = json_object_get(result, "stopReason");
    if (sr && !json_is_string(sr)) {
        snprintf(err, errlen, "CreateMessageResult.stopReason must be a string");
        return -1;
    }
    if (content_problem(json_object_get(result, "content"), role, tools, why, sizeof(why),
                        "result")) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    return 0;
}

json_t *mcp_sampling_tool_uses(const json_t *result)
{
    json_t *out = json_array();
    json_t *bs = blocks(json_object_get(result, "content"));
    size_t i;
    json_t *b;
    json_array_foreach(bs, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (t && strcmp(t, "tool_use") == 0)
            json_array_append(out, b);
    }
    json_decref(bs);
    return out;
}

json_t *mcp_sampling_tool_result(const char *tool_use_id, json_t *content, bool is_error)
{
    json_t *b =
        json_pack("{s:s,s:s,s:o}", "type", "tool_result", "toolUseId",
                  tool_use_id ? tool_use_id : "", "content", content ? content : json_array());
    if (is_error)
        json_object_set_new(b, "isError", json_true());
    return b;
}
