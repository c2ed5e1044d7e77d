/*
 * tools/list and tools/call.
 *
 * The line between protocol errors and tool errors follows the spec: a
 * request the server cannot route (no name, unknown tool, arguments that are
 * not an object) is a JSON-RPC error; arguments that fail the tool's
 * inputSchema are the tool's business and come back as an isError result
 * the model can read and correct.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdint.h>
#include <stdio.h>

static json_t *tool_json(const struct mcpi_tool *t, const char *protocol)
{
    json_t *o = json_pack("{s:s}", "name", t->name);
    bool modern = mcpi_proto_at_least(protocol, "2025-06-18");
    if (t->title && modern)
        json_object_set_new(o, "title", json_string(t->title));
    json_object_set_new(o, "description", json_string(t->description));
    json_object_set_new(o, "inputSchema", json_deep_copy(t->input_schema));
    if (t->output_schema && modern)
        json_object_set_new(o, "outputSchema", json_deep_copy(t->output_schema));
    mcpi_icons_put(o, t->icons, protocol);
    if (t->annotations && mcpi_proto_at_least(protocol, "2025-03-26"))
        json_object_set_new(o, "annotations", json_deep_copy(t->annotations));
    if (t->task_support != MCP_TASK_FORBIDDEN && mcpi_proto_at_least(protocol, "2025-11-25"))
        json_object_set_new(
            o, "execution",
            json_pack("{s:s}", "taskSupport",
                      t->task_support == MCP_TASK_REQUIRED ? "required" : "optional"));
    return o;
}

void mcpi_tools_list(mcp_call *c, const json_t *params)
{
    size_t offset;
    if (mcpi_page_begin(c, params, "tools", &offset) != 0)
        return;
    json_t *all = json_array();
    struct mcpi_tool *t, *tmp;
    HASH_ITER(hh, c->srv->tools, t, tmp)
    {
        json_array_append_new(all, tool_json(t, c->protocol));
    }
    mcpi_page_finish(c, json_object(), "tools", all, "tools", offset);
}

void mcp_server_check_all_outputs(mcp_server *srv, bool on)
{
    srv->check_all_outputs = on;
}

int mcp_server_set_tool_time_limit(mcp_server *srv, const char *tool, long ms)
{
    if (!tool) {
        srv->tool_limit_ms = ms > 0 ? ms : 0;
        return 0;
    }
    struct mcpi_tool *t = mcpi_tool_find(srv, tool);
    if (!t)
        return -1;
    t->limit_ms = ms > 0 ? ms : 0;
    return 0;
}

bool mcp_server_has_tool(mcp_server *srv, const char *name)
{
    return name && mcpi_tool_find(srv, name) != NULL;
}

/* The tool ran past its limit: it is stopped (its cancel hook) and the client is told. */
static void tool_time_limit(mcp_call *c, void *arg)
{
    long ms = (long)(intptr_t)arg;
    void (*stop)(mcp_call *) = c->on_cancel;
    c->on_cancel = NULL;
    if (stop)
        stop(c);
    if (c->done)
        return;
    const char *name = c->tool ? c->tool->name : "?";
    mcp_call_return_text(c, true,
                         "Tool %s did not finish within its time limit of %ld ms and was "
                         "stopped; its effects so far may remain. The limit is [tools] "
                         "call_timeout_ms, or %s=MS in [tools] call_timeouts",
                         name, ms, name);
}

void mcpi_tools_call(mcp_call *c, const json_t *params)
{
    const char *name = json_string_value(json_object_get(params, "name"));
    if (!name) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: tools/call needs \"name\", the tool to call (see "
                       "tools/list)",
                       NULL);
        return;
    }
    const json_t *args = json_object_get(params, "arguments");
    if (args && !json_is_object(args) && !json_is_null(args)) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: tool \"arguments\" must be an object", NULL);
        return;
    }
    struct mcpi_tool *t = mcpi_tool_find(c->srv, name);
    if (!t) {
        char text[256];
        snprintf(text, sizeof(text), "Unknown tool: %.128s", name);
        mcp_call_error(c, MCP_INVALID_PARAMS, text,
                       json_pack("{s:s}", "hint", "call tools/list for the tools this server has"));
        return;
    }
    json_t *empty = NULL;
    if (!json_is_object(args))
        args = empty = json_object();
    /* Tasks exist from 2025-11-25 on, for sessions; 2026-07-28 has the tasks extension. */
    bool tasks = c->s && !c->stateless && mcp_call_protocol_at_least(c, "2025-11-25");
    if (c->stateless && (t->task_support != MCP_TASK_FORBIDDEN || t->task_deferred)) {
        mcpi_tasks26_call(c, t, params, args); /* the 2026 tasks extension (tasks26.c) */
    } else if (tasks && json_object_get(params, "task")) {
        mcpi_task_create(c, t, params, args);
    } else if (tasks && t->task_support == MCP_TASK_REQUIRED) {
        char text[300];
        snprintf(text, sizeof(text),
                 "Method not found: tool %.128s only runs as a task (execution.taskSupport is "
                 "required); call it with a \"task\" param, e.g. {\"ttl\": 60000}",
                 t->name);
        mcp_call_error(c, MCP_METHOD_NOT_FOUND, text, NULL);
    } else {
        mcpi_tool_run(c, t, args);
    }
    json_decref(empty);
}

void mcpi_tool_run(mcp_call *c, struct mcpi_tool *t, const json_t *args)
{
    char why[300];
    if (!mcpi_schema_check(t->input_schema, args, "arguments", why, sizeof(why))) {
        mcp_call_return_text(c, true, "Invalid arguments for tool %s: %s", t->name, why);
        return;
    }
    mcpi_call_set_tool(c, t);
    t->run(c, args, t->ud);
    long limit = t->limit_ms >= 0 ? t->limit_ms : c->srv->tool_limit_ms;
    if (!c->done && !c->cancelling && limit > 0)
        mcp_call_timer(c, (double)limit, tool_time_limit, (void *)(intptr_t)limit);
}
