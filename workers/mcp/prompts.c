/*
 * prompts/list and prompts/get. Arguments are checked here (all strings,
 * every required one present) so a prompt's get() only builds messages.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdio.h>
#include <string.h>

struct mcpi_prompt *mcpi_prompt_find(mcp_server *srv, const char *name)
{
    struct mcpi_prompt *p = NULL;
    if (name)
        HASH_FIND_STR(srv->prompts, name, p);
    return p;
}

static json_t *prompt_json(const struct mcpi_prompt *p, const char *protocol)
{
    json_t *o = json_pack("{s:s}", "name", p->name);
    if (p->title && mcpi_proto_at_least(protocol, "2025-06-18"))
        json_object_set_new(o, "title", json_string(p->title));
    if (p->description)
        json_object_set_new(o, "description", json_string(p->description));
    if (json_array_size(p->arguments) > 0)
        json_object_set_new(o, "arguments", json_deep_copy(p->arguments));
    mcpi_icons_put(o, p->icons, protocol);
    return o;
}

void mcpi_prompts_list(mcp_call *c, const json_t *params)
{
    size_t offset;
    if (mcpi_page_begin(c, params, "prompts", &offset) != 0)
        return;
    json_t *all = json_array();
    struct mcpi_prompt *p, *tmp;
    HASH_ITER(hh, c->srv->prompts, p, tmp)
    {
        json_array_append_new(all, prompt_json(p, c->protocol));
    }
    mcpi_page_finish(c, json_object(), "prompts", all, "prompts", offset);
}

void mcpi_prompts_get(mcp_call *c, const json_t *params)
{
    char text[300];
    const char *name = json_string_value(json_object_get(params, "name"));
    struct mcpi_prompt *p = mcpi_prompt_find(c->srv, name);
    if (!p) {
        snprintf(text, sizeof(text), "Invalid params: unknown prompt '%.128s' (see prompts/list)",
                 name ? name : "");
        mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
        return;
    }
    const json_t *args = json_object_get(params, "arguments");
    if (args && !json_is_object(args) && !json_is_null(args)) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: prompt \"arguments\" must be an object of strings", NULL);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)args, k, v)
    {
        if (!json_is_string(v)) {
            snprintf(text, sizeof(text),
                     "Invalid params: prompt argument '%.100s' must be a string", k);
            mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
            return;
        }
    }
    size_t i;
    json_t *def;
    json_array_foreach(p->arguments, i, def)
    {
        const char *an = json_string_value(json_object_get(def, "name"));
        if (an && json_is_true(json_object_get(def, "required")) && !json_object_get(args, an)) {
            snprintf(text, sizeof(text),
                     "Invalid params: missing required argument '%.100s' of prompt '%.100s'", an,
                     p->name);
            mcp_call_error(c, MCP_INVALID_PARAMS, text, json_pack("{s:s}", "argument", an));
            return;
        }
    }
    json_t *empty = NULL;
    if (!json_is_object(args))
        args = empty = json_object();
    json_t *result = p->get(c, args, p->ud);
    json_decref(empty);
    if (result)
        mcp_call_return(c, result);
    else if (!c->done && !mcpi_call_waiting(c)) /* (a prompt that asked the client waits) */
        mcp_call_error(c, MCP_INTERNAL_ERROR, "Internal error: the prompt produced no messages",
                       NULL);
}
