/*
 * Bearer-token validation (oauth.h): a JWT access token in compact JWS form,
 * its signature checked against the issuer's JWKS, then its claims (RFC 9068
 * shapes: iss, aud, exp, nbf, scope or scp).
 *
 * What is refused before any signature is checked: anything but three
 * base64url parts, a header that is not JSON, `alg` none or HS* (a resource
 * server holds public keys only, so a token "signed" with one of them as an
 * HMAC secret must never pass), `crit` extensions, a kid the JWKS lacks.
 * A key is only ever used with the algorithm family of its kty (and its own
 * `alg` when the JWKS names one).
 *
 * The cache: a direct-mapped table of CACHE_SLOTS entries keyed by the
 * token's SHA-256. A client sends the same token with every request; its
 * signature is verified once, then the entry answers (exp and nbf are
 * compared with the clock each time). A slot taken by another token is
 * simply replaced: the memory is fixed, and a flood of distinct tokens costs
 * them their own verifications, not anyone else's correctness. The token's
 * text is never stored.
 */
#define _GNU_SOURCE
#include "workers/oauth/oauth.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jwk.h>
#include <jose/jws.h>

#include "base/cmcp.h"

/*
 * libjose, and the OpenSSL it brings, are loaded when [auth] first needs them, not linked:
 * every process of a node is this one binary, and linking them cost each process about
 * 0.9 MiB of private memory (libcrypto's relocated data: 12.6 MiB PSS for an idle node of
 * 14 processes, 15.7 -> 28.3 MiB) whether auth was on or not. Only the listeners (and a
 * configuration check) load them now. The headers give the prototypes.
 */
static struct {
    bool tried, ok;
    char err[300];
    __typeof__(&jose_b64_dec) b64_dec;
    __typeof__(&jose_b64_dec_buf) b64_dec_buf;
    __typeof__(&jose_b64_dec_load) b64_dec_load;
    __typeof__(&jose_jwk_pub) jwk_pub;
    __typeof__(&jose_jws_ver) jws_ver;
} J;

#define JOSE_SONAME "libjose.so.0"

static int jose_load(char *err, size_t errlen)
{
    if (!J.tried) {
        J.tried = true;
        void *h = dlopen(JOSE_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *why = dlerror();
            snprintf(J.err, sizeof(J.err),
                     "[auth] needs %s (Debian's libjose0, which tools/install-deps.sh installs): %s",
                     JOSE_SONAME, why ? why : "not found");
        } else {
            *(void **)&J.b64_dec = dlsym(h, "jose_b64_dec");
            *(void **)&J.b64_dec_buf = dlsym(h, "jose_b64_dec_buf");
            *(void **)&J.b64_dec_load = dlsym(h, "jose_b64_dec_load");
            *(void **)&J.jwk_pub = dlsym(h, "jose_jwk_pub");
            *(void **)&J.jws_ver = dlsym(h, "jose_jws_ver");
            J.ok = J.b64_dec && J.b64_dec_buf && J.b64_dec_load && J.jwk_pub && J.jws_ver;
            if (!J.ok)
                snprintf(J.err, sizeof(J.err), "[auth]: %s lacks a function cmcp uses (%s)",
                         JOSE_SONAME, "jose_b64_dec, jose_b64_dec_buf, jose_b64_dec_load, "
                                      "jose_jwk_pub, jose_jws_ver");
            /* never closed: the keys and tokens use it for the process's life */
        }
    }
    if (!J.ok)
        snprintf(err, errlen, "%s", J.err);
    return J.ok ? 0 : -1;
}

#define CACHE_SLOTS 1024
#define MAX_KEYS 64

enum kind { K_NONE, K_RSA, K_EC256, K_EC384, K_EC521, K_ED25519 };

struct okey {
    json_t *jwk; /* the public JWK (RSA, EC); NULL for Ed25519 */
    enum kind kind;
    char kid[128];
    bool has_kid;
    char alg[16]; /* the key's own alg, or "" */
    unsigned char ed[crypto_sign_PUBLICKEYBYTES];
};

struct centry {
    unsigned char digest[crypto_hash_sha256_BYTES];
    bool used;
    bool timed; /* signature, iss and aud passed: exp/nbf are compared on each use */
    bool has_nbf;
    enum oauth_reason reason; /* the verdict that does not depend on the clock */
    double exp, nbf;
    uint64_t denied;
    char detail[160];
};

struct oauth {
    struct oauth_conf conf;
    unsigned char jwks_digest[crypto_hash_sha256_BYTES]; /* of the file the keys came from */
    struct okey keys[MAX_KEYS];
    int nkeys;
    struct centry cache[CACHE_SLOTS];
};

static const char *const reason_labels[OAUTH_REASON_COUNT] = {
    [OAUTH_OK] = "ok",
    [OAUTH_MISSING] = "missing_token",
    [OAUTH_MALFORMED] = "malformed",
    [OAUTH_UNSUPPORTED_ALG] = "unsupported_alg",
    [OAUTH_UNKNOWN_KEY] = "unknown_key",
    [OAUTH_BAD_SIGNATURE] = "bad_signature",
    [OAUTH_WRONG_ISSUER] = "wrong_issuer",
    [OAUTH_WRONG_AUDIENCE] = "wrong_audience",
    [OAUTH_EXPIRED] = "expired",
    [OAUTH_NOT_YET_VALID] = "not_yet_valid",
    [OAUTH_INSUFFICIENT_SCOPE] = "insufficient_scope",
    [OAUTH_TOOL_SCOPE] = "tool_scope",
    [OAUTH_NO_KEYS] = "keys_unavailable",
};

const char *oauth_reason_label(enum oauth_reason r)
{
    return r >= 0 && r < OAUTH_REASON_COUNT ? reason_labels[r] : "unknown";
}

/* ---- algorithms and keys ---- */

static enum kind alg_kind(const char *alg)
{
    static const struct {
        const char *alg;
        enum kind kind;
    } t[] = {{"RS256", K_RSA},   {"RS384", K_RSA},    {"RS512", K_RSA},   {"PS256", K_RSA},
             {"PS384", K_RSA},   {"PS512", K_RSA},    {"ES256", K_EC256}, {"ES384", K_EC384},
             {"ES512", K_EC521}, {"EdDSA", K_ED25519}};
    for (size_t i = 0; alg && i < CMCP_ARRAY_LEN(t); i++)
        if (strcmp(t[i].alg, alg) == 0)
            return t[i].kind;
    return K_NONE;
}

static void keys_free(struct okey *keys, int n)
{
    for (int i = 0; i < n; i++)
        json_decref(keys[i].jwk);
}

/* One JWK of the set: 0 (filled), or -1 with why it is not usable. */
static int key_load(const json_t *k, struct okey *out, char *why, size_t wlen)
{
    memset(out, 0, sizeof(*out));
    const char *kty = json_string_value(json_object_get(k, "kty"));
    const char *crv = json_string_value(json_object_get(k, "crv"));
    const char *use = json_string_value(json_object_get(k, "use"));
    const char *alg = json_string_value(json_object_get(k, "alg"));
    const char *kid = json_string_value(json_object_get(k, "kid"));
    json_t *ops = json_object_get(k, "key_ops");
    if (!json_is_object(k) || !kty) {
        snprintf(why, wlen, "not a JWK (no kty)");
        return -1;
    }
    if (use && strcmp(use, "sig") != 0) {
        snprintf(why, wlen, "use is '%.20s', not sig", use);
        return -1;
    }
    if (ops) {
        bool verify = false;
        size_t i;
        json_t *op;
        json_array_foreach(ops, i, op) verify |=
            json_is_string(op) && !strcmp(json_string_value(op), "verify");
        if (!verify) {
            snprintf(why, wlen, "its key_ops do not include verify");
            return -1;
        }
    }
    if (!strcmp(kty, "RSA") && json_is_string(json_object_get(k, "n")) &&
        json_is_string(json_object_get(k, "e"))) {
        out->kind = K_RSA;
    } else if (!strcmp(kty, "EC") && crv && json_is_string(json_object_get(k, "x")) &&
               json_is_string(json_object_get(k, "y"))) {
        out->kind = !strcmp(crv, "P-256")   ? K_EC256
                    : !strcmp(crv, "P-384") ? K_EC384
                    : !strcmp(crv, "P-521") ? K_EC521
                                            : K_NONE;
        if (out->kind == K_NONE) {
            snprintf(why, wlen, "EC curve '%.20s' is not P-256, P-384 or P-521", crv);
            return -1;
        }
    } else if (!strcmp(kty, "OKP") && crv && !strcmp(crv, "Ed25519")) {
        json_t *x = json_object_get(k, "x");
        if (!json_is_string(x) || J.b64_dec(x, NULL, 0) != sizeof(out->ed) ||
            J.b64_dec(x, out->ed, sizeof(out->ed)) != sizeof(out->ed)) {
            snprintf(why, wlen, "Ed25519 key without a 32-byte x");
            return -1;
        }
        out->kind = K_ED25519;
    } else if (!strcmp(kty, "oct")) {
        snprintf(why, wlen,
                 "a symmetric (oct) key: a resource server verifies with the issuer's "
                 "public keys only");
        return -1;
    } else {
        snprintf(why, wlen,
                 "kty '%.10s'%s%.12s is not RSA, EC or OKP Ed25519, or lacks its "
                 "public parameters",
                 kty, crv ? " crv " : "", crv ? crv : "");
        return -1;
    }
    if (alg && alg_kind(alg) != out->kind) {
        snprintf(why, wlen, "its alg '%.16s' is not a signature algorithm for its kty", alg);
        return -1;
    }
    if (alg)
        cmcp_strlcpy(out->alg, sizeof(out->alg), alg);
    if (kid) {
        cmcp_strlcpy(out->kid, sizeof(out->kid), kid);
        out->has_kid = true;
    }
    if (out->kind != K_ED25519) {
        /* Only the public part is kept (a JWKS file may hold more than it should). */
        out->jwk = json_deep_copy(k);
        if (!out->jwk || !J.jwk_pub(NULL, out->jwk)) {
            json_decref(out->jwk);
            out->jwk = NULL;
            snprintf(why, wlen, "libjose cannot use it as a public key");
            return -1;
        }
    }
    return 0;
}

#define JWKS_MAX_BYTES (1 << 20)

/* The file's bytes (malloc'd, *len) or NULL with err. */
static char *file_read(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(JWKS_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, JWKS_MAX_BYTES + 1, f) : 0;
    bool bad = !buf || ferror(f) || n > JWKS_MAX_BYTES;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "cannot read %s: %s", path,
                 !buf                 ? "out of memory"
                 : n > JWKS_MAX_BYTES ? "larger than 1 MiB"
                                      : "read error");
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Parses a JWKS document into keys; *digest gets the SHA-256 of its bytes. source names it
 * in err. */
static int keys_parse(const char *text, size_t flen, const char *source, struct okey *keys, int *n,
                      unsigned char *digest, char *err, size_t errlen)
{
    crypto_hash_sha256(digest, (const unsigned char *)text, flen);
    json_error_t jerr;
    json_t *set = json_loadb(text, flen, JSON_REJECT_DUPLICATES, &jerr);
    if (!set) {
        snprintf(err, errlen, "%s is not JSON (line %d: %s)", source, jerr.line, jerr.text);
        return -1;
    }
    json_t *arr = json_object_get(set, "keys");
    if (!json_is_array(arr)) {
        snprintf(err, errlen,
                 "%s is not a JWK Set: expected {\"keys\": [...]} as an issuer's "
                 "jwks_uri serves it",
                 source);
        json_decref(set);
        return -1;
    }
    char whys[300] = "";
    *n = 0;
    size_t i;
    json_t *k;
    json_array_foreach(arr, i, k)
    {
        char why[160];
        if (*n < MAX_KEYS && key_load(k, &keys[*n], why, sizeof(why)) == 0) {
            (*n)++;
            continue;
        }
        if (*n >= MAX_KEYS)
            snprintf(why, sizeof(why), "more than %d keys", MAX_KEYS);
        size_t l = strlen(whys);
        snprintf(whys + l, sizeof(whys) - l, "%skey %zu: %s", l ? "; " : "", i + 1, why);
    }
    json_decref(set);
    if (*n == 0) {
        snprintf(err, errlen,
                 "%s has no usable signature key (%s): it needs RSA, EC (P-256/384/"
                 "521) or Ed25519 public keys",
                 source, whys[0] ? whys : "its keys array is empty");
        return -1;
    }
    return 0;
}

/* Reads the JWKS at path into keys. */
static int keys_load(const char *path, struct okey *keys, int *n, unsigned char *digest, char *err,
                     size_t errlen)
{
    size_t flen = 0;
    char *text = file_read(path, &flen, err, errlen);
    if (!text)
        return -1;
    int rc = keys_parse(text, flen, path, keys, n, digest, err, errlen);
    free(text);
    return rc;
}

struct oauth *oauth_new(const struct oauth_conf *oc, char *err, size_t errlen)
{
    struct oauth *o = calloc(1, sizeof(*o));
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    o->conf = *oc;
    if (jose_load(err, errlen) != 0) {
        free(o);
        return NULL;
    }
    if (!oc->jwks_url[0] &&
        keys_load(oc->jwks_file, o->keys, &o->nkeys, o->jwks_digest, err, errlen) != 0) {
        free(o);
        return NULL;
    }
    return o;
}

void oauth_free(struct oauth *o)
{
    if (!o)
        return;
    keys_free(o->keys, o->nkeys);
    free(o);
}

const struct oauth_conf *oauth_get_conf(const struct oauth *o)
{
    return &o->conf;
}

int oauth_key_count(const struct oauth *o)
{
    return o->nkeys;
}

/* Takes fresh keys (n of them, digest of their document) in place of the ones in use. */
static int keys_take(struct oauth *o, struct okey *fresh, int n, const unsigned char *digest)
{
    if (o->nkeys > 0 && memcmp(digest, o->jwks_digest, crypto_hash_sha256_BYTES) == 0) {
        keys_free(fresh, n);
        return 1; /* the same bytes: the keys and the cache stay */
    }
    memcpy(o->jwks_digest, digest, crypto_hash_sha256_BYTES);
    keys_free(o->keys, o->nkeys);
    memcpy(o->keys, fresh, sizeof(fresh[0]) * (size_t)n);
    o->nkeys = n;
    memset(o->cache, 0, sizeof(o->cache));
    return 0;
}

int oauth_reload_keys(struct oauth *o, char *err, size_t errlen)
{
    static struct okey fresh[MAX_KEYS];
    int n = 0;
    unsigned char digest[crypto_hash_sha256_BYTES];
    if (keys_load(o->conf.jwks_file, fresh, &n, digest, err, errlen) != 0)
        return -1;
    return keys_take(o, fresh, n, digest);
}

int oauth_set_keys(struct oauth *o, const char *text, size_t len, const char *source, char *err,
                   size_t errlen)
{
    static struct okey fresh[MAX_KEYS];
    int n = 0;
    unsigned char digest[crypto_hash_sha256_BYTES];
    if (len > JWKS_MAX_BYTES) {
        snprintf(err, errlen, "%s is larger than 1 MiB", source);
        return -1;
    }
    if (keys_parse(text, len, source, fresh, &n, digest, err, errlen) != 0)
        return -1;
    return keys_take(o, fresh, n, digest);
}

/* ---- the token ---- */

void oauth_token_hash(const char *token, size_t len, char out[9])
{
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const unsigned char *)token, len);
    sodium_bin2hex(out, 9, d, 4);
}

static bool b64url_part(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_')
            return false;
    return true;
}

/* A base64url part holding a JSON object, or NULL. */
static json_t *part_json(const char *s, size_t n)
{
    json_t *str = json_stringn(s, n);
    json_t *v = str ? J.b64_dec_load(str) : NULL;
    json_decref(str);
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* Whether " scope " is in the padded, blank-separated list. */
static bool granted(const char *padded, const char *scope, size_t len)
{
    for (const char *p = padded; (p = strstr(p, " ")) != NULL; p++)
        if (strncmp(p + 1, scope, len) == 0 && p[1 + len] == ' ')
            return true;
    return false;
}

/* The scopes of a rule ("a b c") the padded grant lacks, into out (blank-separated). */
static bool lacks(const char *padded, const char *rule, char *out, size_t olen)
{
    bool any = false;
    if (out && olen)
        out[0] = '\0';
    for (const char *p = rule; *p;) {
        size_t len = strcspn(p, " ");
        if (len && !granted(padded, p, len)) {
            any = true;
            if (out) {
                size_t l = strlen(out);
                snprintf(out + l, olen - l, "%s%.*s", l ? " " : "", (int)len, p);
            }
        }
        p += len;
        while (*p == ' ')
            p++;
    }
    return any;
}

/* Appends a claim's scopes (a blank-separated string, or an array of strings) to buf. */
static void add_scopes(const json_t *claim, char *buf, size_t len)
{
    size_t i;
    json_t *s;
    if (json_is_string(claim)) {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s ", json_string_value(claim));
    }
    json_array_foreach(claim, i, s) if (json_is_string(s))
    {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s ", json_string_value(s));
    }
}

static bool key_fits(const struct okey *k, enum kind kind, const char *alg)
{
    return k->kind == kind && (!k->alg[0] || strcmp(k->alg, alg) == 0);
}

/* The signature over "header.payload" (parts p[0..2], lengths n[0..2]) with one key. */
static bool verify_with(const struct okey *k, const char *tok, const char *p[3], const size_t n[3])
{
    if (k->kind == K_ED25519) {
        unsigned char sig[crypto_sign_BYTES];
        if (J.b64_dec_buf(p[2], n[2], NULL, 0) != sizeof(sig) ||
            J.b64_dec_buf(p[2], n[2], sig, sizeof(sig)) != sizeof(sig))
            return false;
        return crypto_sign_verify_detached(sig, (const unsigned char *)tok, n[0] + 1 + n[1],
                                           k->ed) == 0;
    }
    json_t *jws = json_pack("{s:s%,s:s%,s:s%}", "protected", p[0], n[0], "payload", p[1], n[1],
                            "signature", p[2], n[2]);
    bool ok = jws && J.jws_ver(NULL, jws, NULL, k->jwk, false);
    json_decref(jws);
    return ok;
}

/* Everything about a token that does not depend on the clock, into e. */
static void evaluate(struct oauth *o, const char *tok, size_t len, struct centry *e)
{
#define FAIL(r, ...)                                                                               \
    do {                                                                                           \
        e->reason = (r);                                                                           \
        snprintf(e->detail, sizeof(e->detail), __VA_ARGS__);                                       \
        goto out;                                                                                  \
    } while (0)
    json_t *hdr = NULL, *claims = NULL;
    const char *p[3];
    size_t n[3];
    const char *dot1 = memchr(tok, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - tok)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - tok)))
        FAIL(OAUTH_MALFORMED, "the token is not a JWT in compact form (three base64url parts "
                              "separated by dots; encrypted tokens are not accepted)");
    p[0] = tok, n[0] = (size_t)(dot1 - tok);
    p[1] = dot1 + 1, n[1] = (size_t)(dot2 - p[1]);
    p[2] = dot2 + 1, n[2] = len - (size_t)(p[2] - tok);
    for (int i = 0; i < 3; i++)
        if (!b64url_part(p[i], n[i]))
            FAIL(OAUTH_MALFORMED, "the token has characters outside base64url");
    if (!n[0] || !n[1] || !(hdr = part_json(p[0], n[0])))
        FAIL(OAUTH_MALFORMED, "the token's header is not base64url-encoded JSON");
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    enum kind kind = alg_kind(alg);
    if (!alg)
        FAIL(OAUTH_MALFORMED, "the token's header has no alg");
    if (kind == K_NONE)
        FAIL(OAUTH_UNSUPPORTED_ALG,
             "alg '%.16s' is refused: tokens must be signed with an asymmetric key (RS256, "
             "PS256, ES256, EdDSA and their larger variants)",
             alg);
    if (json_object_get(hdr, "crit"))
        FAIL(OAUTH_UNSUPPORTED_ALG, "the token's header has crit extensions this server does "
                                    "not understand");
    if (!n[2])
        FAIL(OAUTH_MALFORMED, "the token has no signature");
    if (!(claims = part_json(p[1], n[1])))
        FAIL(OAUTH_MALFORMED, "the token's payload is not base64url-encoded JSON");
    if (o->nkeys == 0)
        FAIL(OAUTH_NO_KEYS, "this server has not obtained the issuer's keys from its jwks_url "
                            "yet: retry shortly");
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    bool candidates = false, ok = false;
    for (int i = 0; i < o->nkeys && !ok; i++) {
        const struct okey *k = &o->keys[i];
        if ((kid && (!k->has_kid || strcmp(k->kid, kid) != 0)) || !key_fits(k, kind, alg))
            continue;
        candidates = true;
        ok = verify_with(k, tok, p, n);
    }
    if (!candidates && kid)
        FAIL(OAUTH_UNKNOWN_KEY,
             "no %.16s key with kid '%.40s' in this server's JWKS (%s)", alg, kid,
             o->conf.jwks_url[0] ? "fetched again from the issuer: retry shortly if it rotated "
                                   "its keys"
                                 : "if the issuer rotated its keys, the JWKS file needs "
                                   "refreshing");
    if (!candidates)
        FAIL(OAUTH_UNKNOWN_KEY, "no %.16s key in this server's JWKS", alg);
    if (!ok)
        FAIL(OAUTH_BAD_SIGNATURE, "the token's signature does not verify with the issuer's keys");
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || strcmp(iss, o->conf.issuer) != 0)
        FAIL(OAUTH_WRONG_ISSUER, "the token's iss is %s%.60s%s, not this server's issuer",
             iss ? "'" : "missing", iss ? iss : "", iss ? "'" : "");
    json_t *aud = json_object_get(claims, "aud");
    bool aud_ok = json_is_string(aud) && !strcmp(json_string_value(aud), o->conf.audience);
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a) aud_ok |=
        json_is_string(a) && !strcmp(json_string_value(a), o->conf.audience);
    if (!aud_ok)
        FAIL(OAUTH_WRONG_AUDIENCE,
             "the token's aud does not name this resource: request the "
             "token with resource=%.100s",
             o->conf.audience);
    json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    if (!json_is_number(exp))
        FAIL(OAUTH_EXPIRED, "the token has no exp claim (access tokens must expire)");
    if (nbf && !json_is_number(nbf))
        FAIL(OAUTH_MALFORMED, "the token's nbf is not a number");
    e->timed = true;
    e->exp = json_number_value(exp);
    e->has_nbf = nbf != NULL;
    e->nbf = json_number_value(nbf);
    char padded[2048] = " ";
    add_scopes(json_object_get(claims, "scope"), padded, sizeof(padded));
    add_scopes(json_object_get(claims, "scp"), padded, sizeof(padded));
    for (int t = 0; t < o->conf.ntools; t++)
        if (lacks(padded, o->conf.tools[t].scopes, NULL, 0))
            e->denied |= (uint64_t)1 << t;
    char missing[sizeof(o->conf.required)];
    if (lacks(padded, o->conf.required, missing, sizeof(missing)))
        FAIL(OAUTH_INSUFFICIENT_SCOPE, "the token lacks scope '%.100s'", missing);
    e->reason = OAUTH_OK;
out:
    json_decref(hdr);
    json_decref(claims);
#undef FAIL
}

void oauth_check(struct oauth *o, const char *authorization, double now, struct oauth_verdict *v)
{
    memset(v, 0, sizeof(*v));
    const char *s = authorization;
    while (s && (*s == ' ' || *s == '\t'))
        s++;
    if (!s || strncasecmp(s, "Bearer", 6) != 0 || (s[6] != ' ' && s[6] != '\t')) {
        v->reason = OAUTH_MISSING;
        snprintf(v->detail, sizeof(v->detail), "%s",
                 s ? "the Authorization header is not a Bearer token" : "no Authorization header");
        return;
    }
    s += 7;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (!len) {
        v->reason = OAUTH_MISSING;
        snprintf(v->detail, sizeof(v->detail), "the Bearer token is empty");
        return;
    }
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const unsigned char *)s, len);
    sodium_bin2hex(v->grant.hash, sizeof(v->grant.hash), d, 4);
    if (len > OAUTH_MAX_TOKEN) {
        v->reason = OAUTH_MALFORMED;
        snprintf(v->detail, sizeof(v->detail), "the token is longer than %d bytes",
                 OAUTH_MAX_TOKEN);
        return;
    }
    uint32_t h;
    memcpy(&h, d, sizeof(h));
    struct centry *e = &o->cache[h % CACHE_SLOTS];
    if (e->used && memcmp(e->digest, d, sizeof(d)) == 0) {
        v->cached = true;
    } else {
        memset(e, 0, sizeof(*e));
        evaluate(o, s, len, e);
        memcpy(e->digest, d, sizeof(d));
        e->used = true;
    }
    v->reason = e->reason;
    v->grant.denied = e->denied;
    cmcp_strlcpy(v->detail, sizeof(v->detail), e->detail);
    /* The clock comes first: an expired token is expired, whatever its scopes. */
    if (e->timed && now >= e->exp + OAUTH_SKEW_S) {
        v->reason = OAUTH_EXPIRED;
        snprintf(v->detail, sizeof(v->detail), "the token expired %.0f s ago", now - e->exp);
    } else if (e->timed && e->has_nbf && now + OAUTH_SKEW_S < e->nbf) {
        v->reason = OAUTH_NOT_YET_VALID;
        snprintf(v->detail, sizeof(v->detail), "the token is not valid before %.0f s from now",
                 e->nbf - now);
    }
}

/* ---- per-tool scopes ---- */

static int message_denied(const struct oauth *o, const struct oauth_grant *g, const json_t *m)
{
    const char *method = json_string_value(json_object_get(m, "method"));
    if (!method || strcmp(method, "tools/call") != 0)
        return -1;
    const char *name = json_string_value(json_object_get(json_object_get(m, "params"), "name"));
    for (int i = 0; name && i < o->conf.ntools; i++)
        if ((g->denied >> i & 1) && strcmp(o->conf.tools[i].name, name) == 0)
            return i;
    return -1;
}

int oauth_tool_denied(const struct oauth *o, const struct oauth_grant *g, const char *body,
                      size_t blen, json_t **id_out)
{
    if (id_out)
        *id_out = NULL;
    if (!g->denied || !body || !blen)
        return -1;
    json_t *msg = json_loadb(body, blen, 0, NULL);
    int rule = -1;
    const json_t *hit = NULL;
    if (json_is_array(msg)) {
        size_t i;
        json_t *m;
        json_array_foreach(msg, i, m) if (rule < 0 && (rule = message_denied(o, g, m)) >= 0) hit =
            m;
    } else if (msg && (rule = message_denied(o, g, msg)) >= 0) {
        hit = msg;
    }
    if (id_out && hit && !json_is_array(msg))
        *id_out = json_incref(json_object_get(hit, "id"));
    json_decref(msg);
    return rule;
}

/* ---- RFC 9728 metadata ---- */

static void add_unique(json_t *arr, const char *list)
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, " ");
        bool seen = false;
        size_t i;
        json_t *s;
        json_array_foreach(arr, i, s) seen |=
            strlen(json_string_value(s)) == len && !strncmp(json_string_value(s), p, len);
        if (len && !seen)
            json_array_append_new(arr, json_stringn(p, len));
        p += len;
        while (*p == ' ')
            p++;
    }
}

char *oauth_metadata_json(const struct oauth *o)
{
    json_t *scopes = json_array();
    add_unique(scopes, o->conf.required);
    for (int i = 0; i < o->conf.ntools; i++)
        add_unique(scopes, o->conf.tools[i].scopes);
    json_t *doc =
        json_pack("{s:s,s:[s],s:o,s:[s]}", "resource", o->conf.audience, "authorization_servers",
                  o->conf.issuer, "scopes_supported", scopes, "bearer_methods_supported", "header");
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}
