/*
 * The listener's side of [auth] (docs/authorization.md): one bearer-token
 * validator (workers/oauth) for this process, the JWKS file watched and
 * re-read when it changes, the refusals as HTTP answers a client can act on,
 * their log lines and their counter.
 *
 * Per-tool scopes are checked here, in the listener, not in the shard. The
 * listener does not parse request bodies on the common path, and it still
 * does not: a token's grant carries one bit per [auth] tool_scopes rule it
 * fails, computed once when the token is first validated (and cached with
 * it). Only a request whose token lacks some tool's scopes has its body
 * parsed, to see whether it calls one of those tools. Doing it here keeps the
 * wire contract unchanged (a shard would otherwise need every request's
 * scopes, on the compact hot-path record too, and forwarded requests to
 * carry them), and the refusal is a real 403 with its WWW-Authenticate
 * header, which only the HTTP side can write. A token holding every tool's
 * scopes, and every request with auth off, pays nothing.
 */
#define _GNU_SOURCE
#include "workers/listener/listener_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/stats.h"

#define JWKS_POLL_S 2.0 /* ev_stat's interval where inotify is not available */
/* ev_stat compares whole-second times: a second write within the same second as the
 * first (same size) may go unseen. Each change is read again this much later; a read of
 * the same bytes changes nothing (oauth_reload_keys returns 1). */
#define JWKS_REREAD_S 1.5

static struct oauth *validator;
static char *metadata;
static size_t metadata_len;
static struct stats_metric *refused[OAUTH_REASON_COUNT];
static ev_stat jwks_w;
static ev_timer reread_w;

bool listener_auth_on(void)
{
    return validator != NULL;
}

static bool loopback(const char *addr)
{
    return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "[::1]") ||
           !strcmp(addr, "localhost");
}

static void jwks_reload(void)
{
    char err[400];
    int rc = oauth_reload_keys(validator, err, sizeof(err));
    if (rc == 0)
        log_info("auth_jwks_reloaded", "{s:s,s:i}", "jwks_file",
                 oauth_get_conf(validator)->jwks_file, "keys", oauth_key_count(validator));
    else if (rc < 0)
        log_warn("auth_jwks_reload_failed", "{s:s,s:i,s:s}", "error", err, "keys_kept",
                 oauth_key_count(validator), "what_to_do",
                 "fix the file: the keys read before stay in use until it is valid again");
}

static void jwks_changed(struct ev_loop *loop, ev_stat *w, int revents)
{
    (void)w;
    (void)revents;
    jwks_reload();
    ev_timer_stop(loop, &reread_w);
    ev_timer_set(&reread_w, JWKS_REREAD_S, 0);
    ev_timer_start(loop, &reread_w);
}

static void jwks_reread(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    jwks_reload();
}

int listener_auth_start(void)
{
    struct cfg *c = listener_g.cfg;
    static struct oauth_conf oc; /* (large: not on the stack) */
    char err[600];
    if (oauth_conf_load(c, &oc, err, sizeof(err)) != 0) {
        log_error("listener_start_failed", "{s:s}", "error", err);
        proc_start_error("%s", err);
        return -1;
    }
    long http_port = cfg_get_long(c, "listener", "http_port", 8080);
    const char *http_bind = cfg_get(c, "listener", "http_bind", "127.0.0.1");
    if (!oc.enabled) {
        if (listener_g.index == 0 && http_port > 0 && !loopback(http_bind))
            log_warn("auth_off_on_public_address", "{s:s,s:I,s:s}", "http_bind", http_bind,
                     "http_port", (json_int_t)http_port, "what_to_do",
                     "MCP over HTTP is served beyond this host without authorization: "
                     "configure [auth] (docs/authorization.md) or bind http_bind to 127.0.0.1");
        return 0;
    }
    validator = oauth_new(&oc, err, sizeof(err));
    if (!validator) {
        log_error("listener_start_failed", "{s:s}", "error", err);
        proc_start_error("[auth] jwks_file: %s", err);
        return -1;
    }
    metadata = oauth_metadata_json(validator);
    metadata_len = metadata ? strlen(metadata) : 0;
    for (int r = OAUTH_OK + 1; r < OAUTH_REASON_COUNT; r++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "reason=\"%s\"", oauth_reason_label(r));
        refused[r] = stats_counter("cmcp_auth_refused_total", labels);
    }
    if (oc.jwks_url[0]) {
        if (jwks_start(listener_g.loop, validator, cfg_get(c, "node", "data_dir", "./var/data"),
                       err, sizeof(err)) != 0) {
            log_error("listener_start_failed", "{s:s}", "error", err);
            proc_start_error("%s", err);
            listener_auth_stop();
            return -1;
        }
    } else {
        ev_stat_init(&jwks_w, jwks_changed, oc.jwks_file, JWKS_POLL_S);
        ev_stat_start(listener_g.loop, &jwks_w);
        ev_timer_init(&reread_w, jwks_reread, JWKS_REREAD_S, 0);
    }
    if (listener_g.index == 0)
        log_info("auth_enabled", "{s:s,s:s,s:s,s:i,s:s,s:i}", "issuer", oc.issuer,
                 "audience", oc.audience, oc.jwks_url[0] ? "jwks_url" : "jwks_file",
                 oc.jwks_url[0] ? oc.jwks_url : oc.jwks_file, "keys_at_start",
                 oauth_key_count(validator), "required_scopes", oc.required, "tool_rules",
                 oc.ntools);
    return 0;
}

void listener_auth_stop(void)
{
    if (!validator)
        return;
    jwks_stop();
    ev_stat_stop(listener_g.loop, &jwks_w);
    ev_timer_stop(listener_g.loop, &reread_w);
    oauth_free(validator);
    validator = NULL;
    free(metadata);
    metadata = NULL;
}

static bool path_is(const char *path, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(path, want, len) == 0;
}

const char *listener_auth_metadata(const char *path, size_t len, size_t *out_len)
{
    if (!validator || !metadata)
        return NULL;
    if (path_is(path, len, "/.well-known/oauth-protected-resource") ||
        path_is(path, len, "/.well-known/oauth-protected-resource/mcp") ||
        path_is(path, len, oauth_get_conf(validator)->metadata_path)) {
        *out_len = metadata_len;
        return metadata;
    }
    return NULL;
}

/* A text fit for a quoted-string in WWW-Authenticate: no quote, backslash or control. */
static void header_safe(char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
            *s = '\'';
}

static void refusal_make(struct auth_refusal *ref, enum oauth_reason reason, const char *detail,
                         const char *scope, const json_t *id, const char *msg)
{
    const struct oauth_conf *oc = oauth_get_conf(validator);
    char desc[200];
    cmcp_strlcpy(desc, sizeof(desc), detail);
    header_safe(desc);
    memset(ref, 0, sizeof(*ref));
    if (reason == OAUTH_MISSING) {
        ref->status = 401;
        snprintf(ref->www, sizeof(ref->www), "Bearer resource_metadata=\"%s\"%s%s%s",
                 oc->metadata_url, oc->required[0] ? ", scope=\"" : "", oc->required,
                 oc->required[0] ? "\"" : "");
    } else if (reason == OAUTH_NO_KEYS) {
        ref->status = 503;
        ref->retry_after = 2;
    } else if (reason == OAUTH_INSUFFICIENT_SCOPE || reason == OAUTH_TOOL_SCOPE) {
        ref->status = 403;
        snprintf(ref->www, sizeof(ref->www),
                 "Bearer error=\"insufficient_scope\", scope=\"%s\", resource_metadata=\"%s\", "
                 "error_description=\"%s\"",
                 scope, oc->metadata_url, desc);
    } else {
        ref->status = 401;
        snprintf(ref->www, sizeof(ref->www),
                 "Bearer error=\"invalid_token\", error_description=\"%s\", "
                 "resource_metadata=\"%s\"",
                 desc, oc->metadata_url);
    }
    json_t *o =
        json_pack("{s:s,s:O,s:{s:i,s:s,s:{s:s,s:s}}}", "jsonrpc", "2.0", "id",
                  id ? (json_t *)id : json_null(), "error", "code", -32000, "message", msg, "data",
                  "reason", oauth_reason_label(reason), "resource_metadata", oc->metadata_url);
    ref->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
}

void listener_auth_refusal_free(struct auth_refusal *ref)
{
    free(ref->body);
    ref->body = NULL;
}

static void count_and_log(enum oauth_reason reason, const char *hash, const char *transport,
                          const char *detail, const char *tool)
{
    if (refused[reason])
        refused[reason]->value += 1;
    /* A client's first request without a token is how it discovers the authorization
     * server: routine, so info; a token that fails is worth a warning. Only a hash of
     * the token is ever logged. */
    log_event(reason == OAUTH_MISSING ? LOG_INFO : LOG_WARNING, "auth_refused",
              "{s:s,s:s,s:s,s:s,s:s?}", "reason", oauth_reason_label(reason), "token_sha256",
              hash[0] ? hash : "-", "transport", transport, "detail", detail, "tool", tool);
}

bool listener_auth_request(const char *authorization, const char *transport,
                           struct oauth_grant *grant, struct auth_refusal *ref)
{
    struct oauth_verdict v;
    oauth_check(validator, authorization, (double)time(NULL), &v);
    *grant = v.grant;
    if (v.reason == OAUTH_OK)
        return true;
    count_and_log(v.reason, v.grant.hash, transport, v.detail, NULL);
    const struct oauth_conf *oc = oauth_get_conf(validator);
    if (oc->jwks_url[0] && (v.reason == OAUTH_UNKNOWN_KEY || v.reason == OAUTH_NO_KEYS))
        jwks_unknown_key(); /* the issuer may have rotated its keys */
    char msg[900];
    if (v.reason == OAUTH_MISSING)
        snprintf(msg, sizeof(msg),
                 "Unauthorized: this MCP server needs an OAuth access token (%s). Send "
                 "'Authorization: Bearer <token>'; the protected-resource metadata at %s names "
                 "the authorization server that issues them",
                 v.detail, oc->metadata_url);
    else if (v.reason == OAUTH_NO_KEYS)
        snprintf(msg, sizeof(msg),
                 "Service unavailable: this server has not obtained the signing keys of the "
                 "authorization server %s from %s yet; retry in a few seconds",
                 oc->issuer, oc->jwks_url);
    else if (v.reason == OAUTH_INSUFFICIENT_SCOPE)
        snprintf(msg, sizeof(msg),
                 "Forbidden: %s. Request a token with scope \"%s\" from the authorization "
                 "server %s",
                 v.detail, oc->required, oc->issuer);
    else
        snprintf(msg, sizeof(msg),
                 "Unauthorized: the access token was refused: %s. Get a new token from the "
                 "authorization server %s for resource %s and retry",
                 v.detail, oc->issuer, oc->audience);
    refusal_make(ref, v.reason, v.detail, oc->required, NULL, msg);
    return false;
}

bool listener_auth_tools(const struct oauth_grant *grant, const char *body, size_t blen,
                         const char *transport, struct auth_refusal *ref)
{
    if (!validator || !grant->denied)
        return true;
    json_t *id = NULL;
    int rule = oauth_tool_denied(validator, grant, body, blen, &id);
    if (rule < 0)
        return true;
    const struct oauth_conf *oc = oauth_get_conf(validator);
    const struct oauth_tool_rule *t = &oc->tools[rule];
    char scope[sizeof(oc->required) + sizeof(t->scopes) + 2];
    snprintf(scope, sizeof(scope), "%s%s%s", oc->required, oc->required[0] ? " " : "", t->scopes);
    char detail[200], msg[700];
    snprintf(detail, sizeof(detail), "tool '%s' needs scope '%s', which the token lacks", t->name,
             t->scopes);
    count_and_log(OAUTH_TOOL_SCOPE, grant->hash, transport, detail, t->name);
    snprintf(msg, sizeof(msg),
             "Forbidden: calling tool '%s' needs scope \"%s\", which this access token lacks. "
             "Request a token with scope \"%s\" from the authorization server %s",
             t->name, t->scopes, scope, oc->issuer);
    refusal_make(ref, OAUTH_TOOL_SCOPE, detail, scope, id, msg);
    json_decref(id);
    return false;
}
