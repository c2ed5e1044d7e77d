/* [auth]: reading and checking the resource server's configuration (oauth.h). */
#define _GNU_SOURCE
#include "workers/oauth/oauth.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"

const struct cfg_key oauth_cfg_keys[] = {
    {"auth", "enabled", CFG_BOOL, NULL, 0, 0},
    {"auth", "issuer", CFG_STR, NULL, 0, 0},
    {"auth", "audience", CFG_STR, NULL, 0, 0},
    {"auth", "jwks_file", CFG_STR, NULL, 0, 0},
    {"auth", "jwks_url", CFG_STR, NULL, 0, 0},
    /* seconds between fetches of jwks_url (an unknown kid fetches sooner) */
    {"auth", "jwks_refresh_s", CFG_INT, NULL, 30, 86400},
    /* blank-separated: a scope may hold any printable character but blanks and '"' */
    {"auth", "required_scopes", CFG_STR, NULL, 0, 0},
    /* NAME=scope scope, NAME2=scope: commas between tools, blanks between scopes */
    {"auth", "tool_scopes", CFG_STR, NULL, 0, 0},
    {NULL, NULL, 0, NULL, 0, 0},
};

/* "origin:line: " of a key, or "" when it is not set (err names the key itself). */
static void where(const struct cfg *c, const char *key, char *out, size_t n)
{
    const struct cfg_entry *e = cfg_find(c, "auth", key);
    if (!e) {
        out[0] = '\0';
    } else if (e->line > 0) {
        snprintf(out, n, "%s:%d: ", e->origin, e->line);
    } else {
        char up[64];
        size_t i = 0;
        for (; key[i] && i < sizeof(up) - 1; i++)
            up[i] = (char)toupper((unsigned char)key[i]);
        up[i] = '\0';
        snprintf(out, n, "%s (CMCP_AUTH_%s): ", e->origin, up);
    }
}

/* Scope tokens (RFC 6749 3.3): printable ASCII but blank, '"' and '\'. */
static bool scope_list_ok(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\'))
            return false;
    return true;
}

/* Copies s with its blanks squeezed to single spaces and trimmed; false when too long. */
static bool squeeze(char *out, size_t n, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (isspace((unsigned char)s[i])) {
            if (o > 0 && out[o - 1] != ' ') {
                if (o + 1 >= n)
                    return false;
                out[o++] = ' ';
            }
            continue;
        }
        if (o + 1 >= n)
            return false;
        out[o++] = s[i];
    }
    if (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    return true;
}

/* An absolute http(s) URI with a host and without query or fragment; *path_at its path. */
static bool uri_ok(const char *u, const char **path_at)
{
    const char *rest = NULL;
    if (strncmp(u, "https://", 8) == 0)
        rest = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        rest = u + 7;
    if (!rest || !*rest || *rest == '/' || strpbrk(u, "?# \"\\"))
        return false;
    for (const char *p = u; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return false;
    const char *slash = strchr(rest, '/');
    *path_at = slash ? slash : rest + strlen(rest);
    return true;
}

/* A URL to fetch from: http(s), a host, printable without blanks, quotes or a fragment (a
 * query is fine); *loopback: its host is 127.x, ::1 or localhost. */
static bool fetch_url_ok(const char *u, bool *loopback)
{
    const char *h = NULL;
    if (strncmp(u, "https://", 8) == 0)
        h = u + 8;
    else if (strncmp(u, "http://", 7) == 0)
        h = u + 7;
    if (!h || !*h || strchr("/?:", *h) || strpbrk(u, "# \"\\"))
        return false;
    for (const char *p = u; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return false;
    size_t hl = strcspn(h, "/?");
    char host[256];
    if (hl >= sizeof(host))
        return false;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (host[0] == '[') {
        char *e = strchr(host, ']');
        if (!e)
            return false;
        e[1] = '\0';
    } else {
        char *colon = strchr(host, ':');
        if (colon)
            *colon = '\0';
    }
    struct in_addr a4;
    *loopback = (inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127) ||
                !strcmp(host, "[::1]") || !strcmp(host, "localhost");
    return host[0] != '\0';
}

static int tool_rules(const struct cfg *c, struct oauth_conf *oc, char *err, size_t errlen)
{
    const char *v = cfg_get(c, "auth", "tool_scopes", "");
    char at[300];
    where(c, "tool_scopes", at, sizeof(at));
    oc->ntools = 0;
    for (const char *p = v; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[400];
        if (!squeeze(item, sizeof(item), p, len)) {
            snprintf(err, errlen, "%s[auth] tool_scopes: an entry is longer than 400 bytes", at);
            return -1;
        }
        p += len + (end ? 1 : 0);
        if (!item[0])
            continue;
        char *eq = strchr(item, '=');
        char name[64];
        if (eq) {
            *eq = '\0';
            squeeze(name, sizeof(name), item, strlen(item) < 63 ? strlen(item) : 63);
        }
        const char *scopes = eq ? eq + 1 : "";
        while (*scopes == ' ')
            scopes++;
        if (!eq || !name[0] || strchr(name, ' ') || strlen(item) > 63 || !*scopes ||
            strlen(scopes) >= sizeof(oc->tools[0].scopes) || !scope_list_ok(scopes)) {
            snprintf(err, errlen,
                     "%s[auth] tool_scopes: '%s%s%s' is not NAME=SCOPE [SCOPE...] (entries "
                     "separated by commas, scopes by blanks, e.g. tool_scopes = kv_set=kv:write, "
                     "echo=tools:echo tools:basic)",
                     at, item, eq ? "=" : "", eq ? scopes : "");
            return -1;
        }
        for (int i = 0; i < oc->ntools; i++)
            if (strcmp(oc->tools[i].name, name) == 0) {
                snprintf(err, errlen,
                         "%s[auth] tool_scopes names '%s' twice: give each tool one "
                         "entry with all its scopes",
                         at, name);
                return -1;
            }
        if (oc->ntools == OAUTH_MAX_TOOL_RULES) {
            snprintf(err, errlen, "%s[auth] tool_scopes: at most %d tools", at,
                     OAUTH_MAX_TOOL_RULES);
            return -1;
        }
        cmcp_strlcpy(oc->tools[oc->ntools].name, sizeof(oc->tools[0].name), name);
        cmcp_strlcpy(oc->tools[oc->ntools].scopes, sizeof(oc->tools[0].scopes), scopes);
        oc->ntools++;
    }
    return 0;
}

int oauth_conf_load(const struct cfg *c, struct oauth_conf *oc, char *err, size_t errlen)
{
    memset(oc, 0, sizeof(*oc));
    oc->enabled = cfg_get_bool(c, "auth", "enabled", false);
    if (!oc->enabled)
        return 0;
    char at[300];
    const char *iss = cfg_get(c, "auth", "issuer", "");
    const char *aud = cfg_get(c, "auth", "audience", "");
    const char *jwks = cfg_get(c, "auth", "jwks_file", "");
    const char *url = cfg_get(c, "auth", "jwks_url", "");
    const char *path = NULL;
    if (!*aud) {
        snprintf(err, errlen,
                 "[auth] is enabled but has no audience: set audience to this MCP "
                 "server's canonical URI as clients reach it (e.g. "
                 "https://mcp.example.com/mcp); tokens must name it in aud");
        return -1;
    }
    if (strlen(aud) >= sizeof(oc->audience) || !uri_ok(aud, &path)) {
        where(c, "audience", at, sizeof(at));
        snprintf(err, errlen,
                 "%s[auth] audience '%.200s' is not an absolute http(s) URI without "
                 "query or fragment (e.g. https://mcp.example.com/mcp)",
                 at, aud);
        return -1;
    }
    const char *ipath = NULL;
    if (!*iss || strlen(iss) >= sizeof(oc->issuer) || !uri_ok(iss, &ipath)) {
        where(c, "issuer", at, sizeof(at));
        snprintf(err, errlen,
                 "%s[auth] issuer %s%.200s%s: set it to the authorization server's "
                 "issuer identifier, an http(s) URL exactly as its tokens carry it "
                 "in iss",
                 at, *iss ? "'" : "is not set", iss, *iss ? "' is not an http(s) URL" : "");
        return -1;
    }
    if (*url && *jwks) {
        where(c, "jwks_url", at, sizeof(at));
        snprintf(err, errlen,
                 "%s[auth] sets both jwks_url and jwks_file: keep one (jwks_url: the node "
                 "fetches the issuer's keys and refreshes them; jwks_file: a file you keep "
                 "current)",
                 at);
        return -1;
    }
    if (*url) {
        bool loop = false;
        if (strlen(url) >= sizeof(oc->jwks_url) || !fetch_url_ok(url, &loop) ||
            (strncmp(url, "https://", 8) != 0 && !loop)) {
            where(c, "jwks_url", at, sizeof(at));
            snprintf(err, errlen,
                     "%s[auth] jwks_url '%.200s' is not an https URL (the issuer's jwks_uri, "
                     "e.g. https://auth.example.com/.well-known/jwks.json; plain http only "
                     "to a loopback address)",
                     at, url);
            return -1;
        }
    } else if (!*jwks || strlen(jwks) >= sizeof(oc->jwks_file)) {
        snprintf(err, errlen,
                 "[auth] is enabled but has neither jwks_url nor jwks_file: set jwks_url to "
                 "the issuer's jwks_uri, or jwks_file to a file holding its JSON Web Key Set");
        return -1;
    }
    oc->jwks_refresh_s = cfg_get_long(c, "auth", "jwks_refresh_s", 300);
    const char *req = cfg_get(c, "auth", "required_scopes", "");
    if (!squeeze(oc->required, sizeof(oc->required), req, strlen(req)) ||
        !scope_list_ok(oc->required)) {
        where(c, "required_scopes", at, sizeof(at));
        snprintf(err, errlen,
                 "%s[auth] required_scopes: scopes are separated by blanks and made "
                 "of printable ASCII but '\"' and '\\' (at most 511 bytes)",
                 at);
        return -1;
    }
    if (tool_rules(c, oc, err, errlen) != 0)
        return -1;
    cmcp_strlcpy(oc->issuer, sizeof(oc->issuer), iss);
    cmcp_strlcpy(oc->audience, sizeof(oc->audience), aud);
    cmcp_strlcpy(oc->jwks_file, sizeof(oc->jwks_file), jwks);
    cmcp_strlcpy(oc->jwks_url, sizeof(oc->jwks_url), url);
    /* RFC 9728 3.1: the well-known segment goes between the host and the resource's path. */
    const char *wk = "/.well-known/oauth-protected-resource";
    if (!strcmp(path, "/"))
        path = "";
    snprintf(oc->metadata_url, sizeof(oc->metadata_url), "%.*s%s%s", (int)(path - aud), aud, wk,
             path);
    snprintf(oc->metadata_path, sizeof(oc->metadata_path), "%s%s", wk, path);
    return 0;
}

static bool loopback(const char *addr)
{
    return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "[::1]") ||
           !strcmp(addr, "localhost");
}

int oauth_conf_check(struct cfg *c, char *err, size_t errlen)
{
    static struct oauth_conf oc; /* (large: not on the stack) */
    if (oauth_conf_load(c, &oc, err, errlen) != 0)
        return -1;
    if (!oc.enabled)
        return 0;
    const char *tcp_bind = cfg_get(c, "listener", "tcp_bind", "127.0.0.1");
    if (cfg_get_long(c, "listener", "tcp_port", 8081) > 0 && !loopback(tcp_bind)) {
        snprintf(err, errlen,
                 "[auth] is enabled but [listener] tcp_bind = %s serves MCP over "
                 "plain TCP, which carries no token, beyond this host: set tcp_bind "
                 "to 127.0.0.1 or tcp_port = 0",
                 tcp_bind);
        return -1;
    }
    char kerr[400];
    struct oauth *o = oauth_new(&oc, kerr, sizeof(kerr));
    if (!o) {
        snprintf(err, errlen, "[auth] jwks_file: %s", kerr);
        return -1;
    }
    oauth_free(o);
    return 0;
}
