/*
 * resources/list, resources/read, resources/templates/list and
 * (un)subscribe, with RFC 6570 level-1 templates ("test://x/{id}/data").
 */
#include "workers/mcp/mcp_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static json_t *describe(const struct mcpi_resource *r, const char *uri_key, const char *protocol)
{
    json_t *o = json_pack("{s:s,s:s}", uri_key, r->uri, "name", r->name);
    if (r->title && mcpi_proto_at_least(protocol, "2025-06-18"))
        json_object_set_new(o, "title", json_string(r->title));
    if (r->description)
        json_object_set_new(o, "description", json_string(r->description));
    if (r->mime_type)
        json_object_set_new(o, "mimeType", json_string(r->mime_type));
    mcpi_icons_put(o, r->icons, protocol);
    return o;
}

void mcpi_resources_list(mcp_call *c, const json_t *params)
{
    size_t offset;
    if (mcpi_page_begin(c, params, "resources", &offset) != 0)
        return;
    json_t *all = json_array();
    struct mcpi_resource *r, *tmp;
    HASH_ITER(hh, c->srv->resources, r, tmp)
    {
        json_array_append_new(all, describe(r, "uri", c->protocol));
    }
    /* Templates may name concrete resources (the core pack's kv entries). */
    HASH_ITER(hh, c->srv->templates, r, tmp)
    {
        if (!r->list || !c->s)
            continue;
        json_t *more = r->list(c->s, r->ud);
        if (json_is_array(more))
            json_array_extend(all, more);
        json_decref(more);
    }
    mcpi_page_finish(c, json_object(), "resources", all, "resources", offset);
}

void mcpi_templates_list(mcp_call *c, const json_t *params)
{
    size_t offset;
    if (mcpi_page_begin(c, params, "templates", &offset) != 0)
        return;
    json_t *all = json_array();
    struct mcpi_resource *r, *tmp;
    HASH_ITER(hh, c->srv->templates, r, tmp)
    {
        json_array_append_new(all, describe(r, "uriTemplate", c->protocol));
    }
    mcpi_page_finish(c, json_object(), "resourceTemplates", all, "templates", offset);
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes [p, p+n); NULL when malformed. */
static json_t *decoded(const char *p, size_t n)
{
    char *out = malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            int a = hexval((unsigned char)p[i + 1]), b = hexval((unsigned char)p[i + 2]);
            if (a < 0 || b < 0) {
                free(out);
                return NULL;
            }
            out[k++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[k++] = p[i];
        }
    }
    out[k] = '\0';
    /* NUL bytes and invalid UTF-8 cannot be a variable's value. */
    json_t *v = memchr(out, '\0', k) ? NULL : json_stringn(out, k);
    free(out);
    return v;
}

bool mcpi_uri_template_match(const char *tmpl, const char *uri, json_t **vars_out)
{
    json_t *vars = json_object();
    const char *t = tmpl, *u = uri;
    while (*t) {
        if (*t != '{') {
            if (*t++ != *u++)
                goto no;
            continue;
        }
        const char *close = strchr(t, '}');
        if (!close || close == t + 1)
            goto no;
        char name[64];
        size_t nlen = (size_t)(close - t - 1);
        if (nlen >= sizeof(name))
            goto no;
        memcpy(name, t + 1, nlen);
        name[nlen] = '\0';
        t = close + 1;
        /* A simple expansion never contains '/', and ends where the next
         * literal character of the template begins. */
        const char *end = u;
        while (*end && *end != '/' && (*t == '\0' || *end != *t))
            end++;
        if (end == u)
            goto no;
        json_t *val = decoded(u, (size_t)(end - u));
        if (!val)
            goto no;
        json_object_set_new(vars, name, val);
        u = end;
    }
    if (*u)
        goto no;
    if (vars_out)
        *vars_out = vars;
    else
        json_decref(vars);
    return true;
no:
    json_decref(vars);
    return false;
}

struct mcpi_resource *mcpi_template_find(mcp_server *srv, const char *uri_template)
{
    struct mcpi_resource *r = NULL;
    HASH_FIND_STR(srv->templates, uri_template, r);
    return r;
}

void mcpi_resources_read(mcp_call *c, const json_t *params)
{
    const char *uri = json_string_value(json_object_get(params, "uri"));
    if (!uri) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: resources/read needs \"uri\" (see resources/list)", NULL);
        return;
    }
    json_t *contents = NULL;
    struct mcpi_resource *r = NULL, *tmp;
    HASH_FIND_STR(c->srv->resources, uri, r);
    if (r) {
        contents = r->read(c, uri, NULL, r->ud);
    } else {
        HASH_ITER(hh, c->srv->templates, r, tmp)
        {
            json_t *vars = NULL;
            if (!mcpi_uri_template_match(r->uri, uri, &vars))
                continue;
            contents = r->read(c, uri, vars, r->ud);
            json_decref(vars);
            if (contents || c->done || mcpi_call_waiting(c))
                break;
        }
    }
    if (contents) {
        mcp_call_return(c, json_pack("{s:o}", "contents", contents));
        return;
    }
    if (!c->done && !mcpi_call_waiting(c)) /* (a read that asked the client waits) */
        mcp_call_error(c, MCP_RESOURCE_NOT_FOUND, "Resource not found",
                       json_pack("{s:s}", "uri", uri));
}

static void subscription(mcp_call *c, const json_t *params, bool on)
{
    const char *uri = json_string_value(json_object_get(params, "uri"));
    if (!uri || !*uri) {
        mcp_call_error(c, MCP_INVALID_PARAMS, "Invalid params: \"uri\" must be a non-empty string",
                       NULL);
        return;
    }
    if (mcpi_session_subscribe(c->s, uri, on) != 0) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: too many resource subscriptions in this session; "
                       "unsubscribe from some first",
                       json_pack("{s:i}", "limit", MCPI_MAX_SUBSCRIPTIONS));
        return;
    }
    mcp_call_return(c, json_object());
}

void mcpi_resources_subscribe(mcp_call *c, const json_t *params)
{
    subscription(c, params, true);
}

void mcpi_resources_unsubscribe(mcp_call *c, const json_t *params)
{
    subscription(c, params, false);
}
