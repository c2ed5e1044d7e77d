/*
 * OAuth 2.1 resource server: the [auth] configuration, the bearer-token
 * validator and its cache (docs/authorization.md). MCP's authorization
 * (2025-11-25, "Authorization") makes an HTTP MCP server a resource server:
 * every request carries `Authorization: Bearer <JWT>` issued by an
 * authorization server the server names in its RFC 9728 metadata.
 *
 * This library is pure, like the engine: no sockets, no loop, no logging.
 * The listener owns one validator, calls oauth_check() for each request,
 * re-reads the JWKS when its file changes, and speaks HTTP around the
 * verdicts; the node's --check-config calls oauth_conf_check().
 *
 * Signatures are verified by packaged libraries, never here: RS256/384/512,
 * PS256/384/512 and ES256/384/512 by libjose (latchset jose, on OpenSSL),
 * EdDSA (Ed25519) by libsodium, which libjose 11 does not offer.
 */
#ifndef CMCP_OAUTH_H
#define CMCP_OAUTH_H

#if !defined(CMCP_LAYER_OAUTH) && !defined(CMCP_LAYER_LISTENER) && !defined(CMCP_LAYER_NODE)
#error "workers/oauth/oauth.h is for the listener (and the node's configuration check)"
#endif

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/config.h"

#define OAUTH_SKEW_S 60         /* clock skew allowed on exp and nbf */
#define OAUTH_MAX_TOOL_RULES 64 /* [auth] tool_scopes entries (one bit each in a grant) */
#define OAUTH_MAX_TOKEN 8192    /* a longer Authorization value is refused unread */

/* One entry of [auth] tool_scopes: a tool and the scopes a token needs to call it. */
struct oauth_tool_rule {
    char name[64];
    char scopes[256]; /* space-separated */
};

/* [auth], parsed and checked (oauth_conf_load). */
struct oauth_conf {
    bool enabled;
    char issuer[512];
    char audience[512]; /* this resource's canonical URI: RFC 9728 "resource" */
    char jwks_file[1024]; /* the keys from a file (or from jwks_url: one of the two) */
    char jwks_url[1024];  /* the keys fetched by the listener (jwks.c) */
    long jwks_refresh_s;  /* seconds between fetches of jwks_url */
    char required[512]; /* scopes every request needs, space-separated ("" none) */
    struct oauth_tool_rule tools[OAUTH_MAX_TOOL_RULES];
    int ntools;
    /* Derived from audience (RFC 9728 section 3.1): the metadata's absolute URL, and the
     * path this server answers it on besides the root form. */
    char metadata_url[1100];
    char metadata_path[600];
};

/*
 * Reads and checks [auth] (not the JWKS: oauth_new reads it). 0 (auth off is fine), or -1
 * with err saying what is wrong and what to do.
 */
int oauth_conf_load(const struct cfg *c, struct oauth_conf *oc, char *err, size_t errlen);
/* --check-config and the root's start: the section, the JWKS file, and the transports a
 * token cannot protect. 0 or -1 with err. */
int oauth_conf_check(struct cfg *c, char *err, size_t errlen);
/* Its configuration keys: [auth]. */
extern const struct cfg_key oauth_cfg_keys[];

/* Why a request was refused; also the label of cmcp_auth_refused_total{reason}. */
enum oauth_reason {
    OAUTH_OK = 0,
    OAUTH_MISSING,         /* no Authorization: Bearer header */
    OAUTH_MALFORMED,       /* not a compact JWS, bad base64 or JSON, too long */
    OAUTH_UNSUPPORTED_ALG, /* alg none, HS*, anything not asymmetric and supported */
    OAUTH_UNKNOWN_KEY,     /* no key in the JWKS with its kid (or for its alg) */
    OAUTH_BAD_SIGNATURE,
    OAUTH_WRONG_ISSUER,
    OAUTH_WRONG_AUDIENCE,
    OAUTH_EXPIRED,            /* or without exp */
    OAUTH_NOT_YET_VALID,      /* nbf in the future */
    OAUTH_INSUFFICIENT_SCOPE, /* lacks [auth] required_scopes */
    OAUTH_TOOL_SCOPE,         /* lacks the scopes of a tool it calls ([auth] tool_scopes) */
    OAUTH_NO_KEYS,            /* jwks_url: no key fetched yet (503: try again shortly) */
    OAUTH_REASON_COUNT,
};
const char *oauth_reason_label(enum oauth_reason r);

/* What a valid token may do, kept by a connection that outlives the request (WebSocket). */
struct oauth_grant {
    uint64_t denied; /* bit i: the token lacks a scope of tool_scopes rule i */
    char hash[9];    /* the first 8 hex of the token's SHA-256: all a log may show of it */
};

struct oauth_verdict {
    enum oauth_reason reason;
    struct oauth_grant grant; /* hash set whenever a token was given */
    bool cached;              /* answered from the cache, no signature checked */
    char detail[200];         /* what failed, for the client and the log (never the token) */
};

struct oauth;

/* A validator over oc (copied) with the keys of its jwks_file; with jwks_url, with no keys
 * until oauth_set_keys gives it some (tokens get OAUTH_NO_KEYS). NULL with err. */
struct oauth *oauth_new(const struct oauth_conf *oc, char *err, size_t errlen);
void oauth_free(struct oauth *o);
const struct oauth_conf *oauth_get_conf(const struct oauth *o);
/* How many usable keys the JWKS gave. */
int oauth_key_count(const struct oauth *o);
/*
 * Re-reads the JWKS file. When its bytes changed the cache is emptied (a key taken away
 * must stop its tokens at once): 0; the same bytes: 1, nothing changes; on failure the
 * keys in use stay and err says why: -1.
 */
int oauth_reload_keys(struct oauth *o, char *err, size_t errlen);
/* The same from a JWKS document in memory (what jwks_url served; source names it in err):
 * 0 the keys changed (cache emptied), 1 the same bytes, -1 refused (the keys stay). */
int oauth_set_keys(struct oauth *o, const char *text, size_t len, const char *source, char *err,
                   size_t errlen);

/*
 * Checks an Authorization header value (NULL when absent) at time `now` (seconds since
 * the epoch). A token seen before is answered from a bounded cache keyed by its SHA-256
 * (the token itself is not kept): the signature is verified once per token, exp and nbf
 * are compared on every request.
 */
void oauth_check(struct oauth *o, const char *authorization, double now, struct oauth_verdict *v);

/*
 * The tools/call rule a message breaks: the index of the tool_scopes rule of a tool the
 * message (or a member of a batch) calls while g->denied has its bit, else -1. The body
 * is parsed only when g->denied is not 0. *id_out (if not NULL) gets a new reference to
 * the offending message's id, or NULL.
 */
int oauth_tool_denied(const struct oauth *o, const struct oauth_grant *g, const char *body,
                      size_t blen, json_t **id_out);

/* The RFC 9728 protected-resource metadata document (malloc'd JSON text). */
char *oauth_metadata_json(const struct oauth *o);

/* The first 8 hex of a text's SHA-256 (libsodium) into out[9]. */
void oauth_token_hash(const char *token, size_t len, char out[9]);

#endif
