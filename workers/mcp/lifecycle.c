/*
 * initialize (version and capability negotiation), ping and logging/setLevel.
 */
#include "workers/mcp/mcp_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* Revisions are named by date. A well-formed date we do not know is a
 * revision newer (or older) than ours: the spec says answer with the latest
 * we support and let the client decide. Anything else ("1.0.0", 7) is not a
 * revision at all and gets the spec's "Unsupported protocol version" error. */
bool mcpi_date_shaped(const char *v)
{
    if (!v || strlen(v) != 10)
        return false;
    for (int i = 0; i < 10; i++) {
        bool dash = i == 4 || i == 7;
        if (dash ? v[i] != '-' : !isdigit((unsigned char)v[i]))
            return false;
    }
    return true;
}

json_t *mcpi_server_capabilities(const char *protocol)
{
    json_t *caps =
        json_pack("{s:{s:b},s:{s:b,s:b},s:{s:b},s:{}}", "tools", "listChanged", 1, "resources",
                  "subscribe", 1, "listChanged", 1, "prompts", "listChanged", 1, "logging");
    /* completion/complete exists since 2024-11-05, its capability since 2025-03-26. */
    if (mcpi_proto_at_least(protocol, "2025-03-26"))
        json_object_set_new(caps, "completions", json_object());
    /* Tasks (tasks.c): tools/call may be task-augmented; tasks/list and tasks/cancel work. */
    if (mcpi_proto_at_least(protocol, "2025-11-25"))
        json_object_set_new(
            caps, "tasks",
            json_pack("{s:{},s:{},s:{s:{s:{}}}}", "list", "cancel", "requests", "tools", "call"));
    return caps;
}

void mcpi_initialize(mcp_call *c, const json_t *params)
{
    mcp_session *s = c->s;
    if (s->initialized) {
        mcp_call_error(c, MCP_INVALID_REQUEST,
                       "Invalid Request: session already initialized; start a new session to "
                       "initialize again",
                       NULL);
        return;
    }
    const json_t *pv = json_object_get(params, "protocolVersion");
    const char *requested = json_string_value(pv);
    if (!requested || (!mcp_protocol_supported(requested) && !mcpi_date_shaped(requested))) {
        json_t *data = json_pack("{s:o,s:o}", "supported", mcpi_supported_versions(), "requested",
                                 pv ? json_deep_copy(pv) : json_null());
        mcp_call_error(c, MCP_INVALID_PARAMS, "Unsupported protocol version", data);
        return;
    }
    const json_t *caps = json_object_get(params, "capabilities");
    const json_t *info = json_object_get(params, "clientInfo");
    if ((caps && !json_is_object(caps)) || (info && !json_is_object(info))) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: capabilities and clientInfo must be objects", NULL);
        return;
    }
    const char *version = mcpi_protocol_static(requested);
    if (!version || mcpi_stateless_version(version))
        version = MCP_PROTOCOL_LATEST;
    s->protocol = version;
    mcpi_shared_put(s->srv, s->client_caps);
    json_t *none = caps ? NULL : json_object(); /* no capabilities: the empty object */
    s->client_caps = mcpi_shared_get(s->srv, caps ? caps : none);
    json_decref(none);
    mcpi_shared_put(s->srv, s->client_info);
    s->client_info = mcpi_shared_get(s->srv, info);
    s->initialized = true;
    c->protocol = s->protocol;
    c->caps = mcpi_shared_value(s->client_caps);
    mcpi_session_changed(s);

    mcp_server *srv = c->srv;
    json_t *result = json_pack("{s:s,s:o,s:o}", "protocolVersion", version, "capabilities",
                               mcpi_server_capabilities(version), "serverInfo",
                               mcpi_server_implementation(srv, version));
    if (srv->instructions && *srv->instructions)
        json_object_set_new(result, "instructions", json_string(srv->instructions));
    mcp_call_return(c, result);
}

void mcpi_ping(mcp_call *c, const json_t *params)
{
    mcp_call_return(c, json_object());
}

void mcpi_set_level(mcp_call *c, const json_t *params)
{
    int level = mcp_log_level_parse(json_string_value(json_object_get(params, "level")));
    if (level < 0) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: level must be one of debug, info, notice, warning, "
                       "error, critical, alert, emergency",
                       NULL);
        return;
    }
    if (c->s->log_level != level) {
        c->s->log_level = (signed char)level;
        mcpi_session_changed(c->s);
    }
    mcp_call_return(c, json_object());
}
