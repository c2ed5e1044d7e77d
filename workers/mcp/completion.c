/*
 * completion/complete: suggestions for a prompt argument or a resource
 * template variable, from the prompt's or template's complete() hook.
 */
#include "workers/mcp/mcp_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

json_t *mcpi_complete_filter(const char *const *choices, const char *prefix)
{
    json_t *out = json_array();
    size_t n = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; choices[i]; i++)
        if (strncasecmp(choices[i], prefix ? prefix : "", n) == 0)
            json_array_append_new(out, json_string(choices[i]));
    return out;
}

void mcpi_complete(mcp_call *c, const json_t *params)
{
    const json_t *ref = json_object_get(params, "ref");
    const json_t *arg = json_object_get(params, "argument");
    const char *type = json_string_value(json_object_get(ref, "type"));
    const char *arg_name = json_string_value(json_object_get(arg, "name"));
    const json_t *value = json_object_get(arg, "value");
    if (!type || !arg_name || (value && !json_is_string(value))) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: completion/complete needs ref {type, name|uri} and "
                       "argument {name, value}",
                       NULL);
        return;
    }
    const json_t *ctx = json_object_get(json_object_get(params, "context"), "arguments");
    if (!json_is_object(ctx))
        ctx = NULL;
    mcp_complete_fn fn = NULL;
    void *ud = NULL;
    char text[300];
    if (strcmp(type, "ref/prompt") == 0) {
        const char *name = json_string_value(json_object_get(ref, "name"));
        struct mcpi_prompt *p = mcpi_prompt_find(c->srv, name);
        if (!p) {
            snprintf(text, sizeof(text), "Invalid params: unknown prompt '%.128s'",
                     name ? name : "");
            mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
            return;
        }
        fn = p->complete;
        ud = p->ud;
    } else if (strcmp(type, "ref/resource") == 0) {
        const char *uri = json_string_value(json_object_get(ref, "uri"));
        struct mcpi_resource *r = uri ? mcpi_template_find(c->srv, uri) : NULL;
        if (!r) {
            snprintf(text, sizeof(text),
                     "Invalid params: unknown resource template '%.128s' (see "
                     "resources/templates/list)",
                     uri ? uri : "");
            mcp_call_error(c, MCP_INVALID_PARAMS, text, NULL);
            return;
        }
        fn = r->complete;
        ud = r->ud;
    } else {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: ref.type must be \"ref/prompt\" or \"ref/resource\"", NULL);
        return;
    }
    const char *prefix = value ? json_string_value(value) : "";
    json_t *values = fn ? fn(c, arg_name, prefix, ctx, ud) : NULL;
    if (c->done) {
        json_decref(values);
        return;
    }
    if (!json_is_array(values)) {
        json_decref(values);
        values = json_array();
    }
    size_t total = json_array_size(values);
    /* The spec caps one answer at 100 values; total and hasMore tell the rest. */
    while (json_array_size(values) > MCPI_MAX_COMPLETIONS)
        json_array_remove(values, json_array_size(values) - 1);
    mcp_call_return(c, json_pack("{s:{s:o,s:I,s:b}}", "completion", "values", values, "total",
                                 (json_int_t)total, "hasMore", total > MCPI_MAX_COMPLETIONS));
}
