/*
 * JSON-RPC 2.0 as MCP uses it: classifying messages, building responses,
 * and the protocol revisions we negotiate.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdlib.h>
#include <string.h>

#include "base/jsonw.h"

const char *const mcp_protocol_versions[] = {
    "2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", NULL,
};

const char *const mcp_protocol_versions_stateless[] = {
    MCP_PROTOCOL_STATELESS,
    NULL,
};

bool mcpi_stateless_version(const char *version)
{
    if (!version)
        return false;
    for (int i = 0; mcp_protocol_versions_stateless[i]; i++)
        if (strcmp(mcp_protocol_versions_stateless[i], version) == 0)
            return true;
    return false;
}

bool mcp_protocol_supported(const char *version)
{
    if (!version)
        return false;
    for (int i = 0; mcp_protocol_versions[i]; i++)
        if (strcmp(mcp_protocol_versions[i], version) == 0)
            return true;
    return false;
}

const char *mcpi_protocol_static(const char *version)
{
    if (!version)
        return NULL;
    for (int i = 0; mcp_protocol_versions[i]; i++)
        if (strcmp(mcp_protocol_versions[i], version) == 0)
            return mcp_protocol_versions[i];
    for (int i = 0; mcp_protocol_versions_stateless[i]; i++)
        if (strcmp(mcp_protocol_versions_stateless[i], version) == 0)
            return mcp_protocol_versions_stateless[i];
    return NULL;
}

json_t *mcpi_supported_versions(void)
{
    json_t *a = json_array();
    for (int i = 0; mcp_protocol_versions[i]; i++)
        json_array_append_new(a, json_string(mcp_protocol_versions[i]));
    return a;
}

/* Revisions are dates, so text order is time order. NULL means "no session
 * negotiated one", which we serve as the newest revision. */
bool mcpi_proto_at_least(const char *have, const char *want)
{
    if (!have)
        have = MCP_PROTOCOL_LATEST;
    return strcmp(have, want) >= 0;
}

/* MCP forbids null ids and JSON-RPC discourages fractional ones. */
bool mcpi_valid_id(const json_t *id)
{
    return id && (json_is_string(id) || json_is_integer(id));
}

/* "abc" and 5 must not collide with 5 and "5": the JSON text keeps them apart. */
char *mcpi_id_key(const json_t *id)
{
    return jsonw_dumps(id, NULL);
}

static bool valid_version_field(const json_t *msg)
{
    const json_t *v = json_object_get(msg, "jsonrpc");
    return json_is_string(v) && strcmp(json_string_value(v), "2.0") == 0;
}

enum mcp_msg_kind mcp_classify(const json_t *msg)
{
    if (json_is_array(msg))
        return MCP_MSG_BATCH;
    if (!json_is_object(msg) || !valid_version_field(msg))
        return MCP_MSG_INVALID;
    const json_t *method = json_object_get(msg, "method");
    const json_t *id = json_object_get(msg, "id");
    if (method) {
        if (!json_is_string(method))
            return MCP_MSG_INVALID;
        if (json_object_get(msg, "result") || json_object_get(msg, "error"))
            return MCP_MSG_INVALID;
        if (!id)
            return MCP_MSG_NOTIFICATION;
        return mcpi_valid_id(id) ? MCP_MSG_REQUEST : MCP_MSG_INVALID;
    }
    const json_t *result = json_object_get(msg, "result");
    const json_t *error = json_object_get(msg, "error");
    if ((result != NULL) == (error != NULL))
        return MCP_MSG_INVALID;
    if (error && (!json_is_object(error) || !json_is_integer(json_object_get(error, "code"))))
        return MCP_MSG_INVALID;
    /* An error answer may carry a null id when the client could not read our
     * request; it is still a response (that we cannot route). */
    if (!mcpi_valid_id(id) && !(error && json_is_null(id)))
        return MCP_MSG_INVALID;
    return MCP_MSG_RESPONSE;
}

bool mcp_is_initialize(const json_t *msg)
{
    if (mcp_classify(msg) != MCP_MSG_REQUEST)
        return false;
    return strcmp(json_string_value(json_object_get(msg, "method")), "initialize") == 0;
}

json_t *mcp_error_response(const json_t *id, int code, const char *message, json_t *data)
{
    json_t *err = json_pack("{s:i,s:s}", "code", code, "message", message ? message : "error");
    if (data)
        json_object_set_new(err, "data", data);
    json_t *idv = mcpi_valid_id(id) ? json_deep_copy(id) : json_null();
    return json_pack("{s:s,s:o,s:o}", "jsonrpc", "2.0", "id", idv, "error", err);
}

/*
 * Every reply goes through these two: built by hand rather than by json_pack, whose format
 * parsing made an echo's reply take 1.8x as long to build (docs/benchmarks.md, "A reply's
 * text").
 * json_object_set_new_nocheck takes its value on failure too, so nothing leaks; the
 * keys go in json_pack's order, so the text is the same.
 */
static json_t *obj2(const char *k1, json_t *v1, const char *k2, json_t *v2)
{
    json_t *o = json_object();
    if (json_object_set_new_nocheck(o, k1, v1) | json_object_set_new_nocheck(o, k2, v2)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *mcpi_result_response(const json_t *id, json_t *result)
{
    json_t *o = obj2("jsonrpc", json_string_nocheck("2.0"), "id", json_deep_copy(id));
    if (json_object_set_new_nocheck(o, "result", result ? result : json_object()) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *mcpi_notification(const char *method, json_t *params)
{
    json_t *n = json_pack("{s:s,s:s}", "jsonrpc", "2.0", "method", method);
    if (params)
        json_object_set_new(n, "params", params);
    return n;
}

json_t *mcpi_text_content(const char *text)
{
    return obj2("type", json_string_nocheck("text"), "text", json_string(text ? text : ""));
}

static const char *const level_names[] = {
    "debug", "info", "notice", "warning", "error", "critical", "alert", "emergency",
};
#define N_LEVELS (sizeof(level_names) / sizeof(level_names[0]))

const char *mcp_log_level_name(enum mcp_log_level l)
{
    if ((int)l < 0 || (size_t)l >= N_LEVELS)
        return "info";
    return level_names[l];
}

int mcp_log_level_parse(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < N_LEVELS; i++)
        if (strcmp(level_names[i], name) == 0)
            return (int)i;
    return -1;
}
