/*
 * Icons (2025-11-25, SEP-973): an optional `icons` array on the server's
 * Implementation (initialize's serverInfo, the stateless serverInfo _meta)
 * and on tools, prompts, resources and resource templates in their lists.
 *
 * Definitions are checked when they are registered, so that a typo ("size"
 * for "sizes", a theme of "Dark") fails at startup with a sentence naming
 * the entry instead of reaching clients that would reject the whole list.
 */
#include "workers/mcp/mcp_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* "48x48" or "any". */
static bool size_ok(const char *s)
{
    if (strcmp(s, "any") == 0)
        return true;
    const char *x = strchr(s, 'x');
    if (!x || x == s || !x[1])
        return false;
    for (const char *p = s; *p; p++)
        if (p != x && !isdigit((unsigned char)*p))
            return false;
    return true;
}

/* The spec allows an http(s) URL or a data: URI. */
static bool src_ok(const char *src)
{
    if (strncmp(src, "https://", 8) == 0)
        return src[8] != '\0';
    if (strncmp(src, "http://", 7) == 0)
        return src[7] != '\0';
    if (strncmp(src, "data:", 5) == 0)
        return strchr(src + 5, ',') != NULL;
    return false;
}

int mcpi_icons_check(const json_t *icons, const char *owner, char *err, size_t errlen)
{
    if (!icons)
        return 0;
    if (!json_is_array(icons)) {
        snprintf(err, errlen, "%s: icons must be an array of {src, mimeType?, sizes?, theme?}",
                 owner);
        return -1;
    }
    size_t i;
    const json_t *icon;
    json_array_foreach(icons, i, icon)
    {
        if (!json_is_object(icon)) {
            snprintf(err, errlen, "%s: icon %zu must be an object {src, mimeType?, sizes?, theme?}",
                     owner, i);
            return -1;
        }
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)icon, k, v)
        {
            bool ok;
            if (strcmp(k, "src") == 0) {
                ok = json_is_string(v) && src_ok(json_string_value(v));
                if (!ok) {
                    snprintf(err, errlen,
                             "%s: icon %zu: src must be an https:// or http:// URL or a data: URI",
                             owner, i);
                    return -1;
                }
            } else if (strcmp(k, "mimeType") == 0) {
                if (!json_is_string(v) || !strchr(json_string_value(v), '/')) {
                    snprintf(err, errlen, "%s: icon %zu: mimeType must be a MIME type string",
                             owner, i);
                    return -1;
                }
            } else if (strcmp(k, "sizes") == 0) {
                size_t j;
                const json_t *sz;
                ok = json_is_array(v);
                json_array_foreach(v, j, sz)
                {
                    ok = ok && json_is_string(sz) && size_ok(json_string_value(sz));
                }
                if (!ok) {
                    snprintf(err, errlen,
                             "%s: icon %zu: sizes must be an array of \"WxH\" or \"any\" strings",
                             owner, i);
                    return -1;
                }
            } else if (strcmp(k, "theme") == 0) {
                const char *t = json_string_value(v);
                if (!t || (strcmp(t, "light") != 0 && strcmp(t, "dark") != 0)) {
                    snprintf(err, errlen, "%s: icon %zu: theme must be \"light\" or \"dark\"",
                             owner, i);
                    return -1;
                }
            } else {
                snprintf(err, errlen,
                         "%s: icon %zu has an unknown field '%s' (an icon has src, mimeType, "
                         "sizes and theme)",
                         owner, i, k);
                return -1;
            }
        }
        if (!json_object_get(icon, "src")) {
            snprintf(err, errlen, "%s: icon %zu needs a src", owner, i);
            return -1;
        }
    }
    return 0;
}

json_t *mcpi_icons_copy(const json_t *icons)
{
    return json_array_size(icons) > 0 ? json_deep_copy(icons) : NULL;
}

void mcpi_icons_put(json_t *o, const json_t *icons, const char *protocol)
{
    /* Older clients validate strictly enough to reject fields they do not know. */
    if (icons && mcpi_proto_at_least(protocol, "2025-11-25"))
        json_object_set_new(o, "icons", json_deep_copy(icons));
}

json_t *mcpi_server_implementation(const mcp_server *srv, const char *protocol)
{
    json_t *o = json_pack("{s:s,s:s}", "name", srv->name, "version", srv->version);
    mcpi_icons_put(o, srv->icons, protocol);
    return o;
}

int mcp_server_set_icons(mcp_server *srv, const json_t *icons, char *err, size_t errlen)
{
    if (mcpi_icons_check(icons, "server", err, errlen) != 0)
        return -1;
    json_decref(srv->icons);
    srv->icons = mcpi_icons_copy(icons);
    return 0;
}
