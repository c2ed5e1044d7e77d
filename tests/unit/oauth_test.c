#define _GNU_SOURCE
/*
 * workers/oauth: the bearer-token validator and [auth]. Keys are made here, at test time
 * (libjose's jose_jwk_gen for RSA and EC, libsodium for Ed25519): no key is committed.
 * Tokens are signed with libjose (jose_jws_sig) and libsodium, then put in compact form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jose/b64.h>
#include <jose/jwk.h>
#include <jose/jws.h>

#include "base/cmcp.h"
#include "workers/oauth/oauth.h"

#define ISS "https://auth.example.test"
#define AUD "https://mcp.example.test/mcp"

static json_t *rsa, *ec, *ec_other, *hmac_like;
static unsigned char ed_pk[crypto_sign_PUBLICKEYBYTES], ed_sk[crypto_sign_SECRETKEYBYTES];
static char jwks_path[64];
static struct oauth_conf conf;
static struct oauth *val;
static double now;

static json_t *gen(const char *alg, const char *kid)
{
    json_t *k = json_pack("{s:s,s:s}", "alg", alg, "kid", kid);
    assert_true(jose_jwk_gen(NULL, k));
    return k;
}

static json_t *pub(const json_t *k)
{
    json_t *p = json_deep_copy(k);
    assert_true(jose_jwk_pub(NULL, p));
    return p;
}

static void write_jwks(const json_t *keys)
{
    json_t *set = json_pack("{s:O}", "keys", (json_t *)keys);
    assert_int_equal(json_dump_file(set, jwks_path, 0), 0);
    json_decref(set);
}

static char *b64(const void *data, size_t len)
{
    size_t n = jose_b64_enc_buf(data, len, NULL, 0);
    char *s = calloc(1, n + 1);
    jose_b64_enc_buf(data, len, s, n);
    return s;
}

/* A compact JWS of claims with header hdr, signed by a libjose JWK. */
static char *sign_jose(const json_t *hdr, const json_t *claims, const json_t *jwk)
{
    char *ptext = json_dumps(claims, JSON_COMPACT);
    json_t *jws = json_pack("{s:o}", "payload", jose_b64_enc(ptext, strlen(ptext)));
    free(ptext);
    json_t *sig = json_pack("{s:O}", "protected", (json_t *)hdr);
    assert_true(jose_jws_sig(NULL, jws, sig, jwk));
    char *out = NULL;
    assert_true(asprintf(&out, "%s.%s.%s", json_string_value(json_object_get(jws, "protected")),
                         json_string_value(json_object_get(jws, "payload")),
                         json_string_value(json_object_get(jws, "signature"))) > 0);
    json_decref(sig);
    json_decref(jws);
    return out;
}

/* header.payload with no signature yet. */
static char *unsigned_part(const json_t *hdr, const json_t *claims)
{
    char *h = json_dumps(hdr, JSON_COMPACT), *p = json_dumps(claims, JSON_COMPACT);
    char *hb = b64(h, strlen(h)), *pb = b64(p, strlen(p));
    char *out = NULL;
    assert_true(asprintf(&out, "%s.%s", hb, pb) > 0);
    free(h), free(p), free(hb), free(pb);
    return out;
}

static char *sign_ed(const json_t *claims)
{
    json_t *hdr = json_pack("{s:s,s:s,s:s}", "alg", "EdDSA", "kid", "ed1", "typ", "at+jwt");
    char *input = unsigned_part(hdr, claims);
    unsigned char sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const unsigned char *)input, strlen(input), ed_sk);
    char *sb = b64(sig, sizeof(sig)), *out = NULL;
    assert_true(asprintf(&out, "%s.%s", input, sb) > 0);
    free(input), free(sb);
    json_decref(hdr);
    return out;
}

static json_t *claims_ok(void)
{
    return json_pack("{s:s,s:s,s:f,s:f,s:s,s:s}", "iss", ISS, "aud", AUD, "exp", now + 300, "iat",
                     now, "scope", "mcp tools:echo", "sub", "user-1");
}

static json_t *hdr(const char *alg, const char *kid)
{
    return json_pack("{s:s,s:s}", "alg", alg, "kid", kid);
}

/* The verdict on "Bearer <token>". */
static enum oauth_reason check(const char *token, struct oauth_verdict *out)
{
    char *h = NULL;
    assert_true(asprintf(&h, "Bearer %s", token) > 0);
    struct oauth_verdict v;
    oauth_check(val, h, now, &v);
    free(h);
    if (out)
        *out = v;
    return v.reason;
}

/* Signs claims with the EC key (kid ec1) and checks them. */
static enum oauth_reason check_claims(json_t *claims)
{
    json_t *h = hdr("ES256", "ec1");
    char *t = sign_jose(h, claims, ec);
    enum oauth_reason r = check(t, NULL);
    free(t);
    json_decref(h);
    json_decref(claims);
    return r;
}

static int setup(void **st)
{
    (void)st;
    assert_true(sodium_init() >= 0);
    now = (double)time(NULL);
    rsa = gen("RS256", "rsa1");
    ec = gen("ES256", "ec1");
    ec_other = gen("ES256", "ec1"); /* same kid, another key: a forged signature */
    crypto_sign_keypair(ed_pk, ed_sk);
    char *x = b64(ed_pk, sizeof(ed_pk));
    json_t *ed = json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "OKP", "crv", "Ed25519", "x", x, "kid",
                           "ed1", "use", "sig");
    free(x);
    snprintf(jwks_path, sizeof(jwks_path), "/tmp/cmcp-oauth-test-XXXXXX");
    int fd = mkstemp(jwks_path);
    assert_true(fd >= 0);
    close(fd);
    json_t *keys = json_pack("[o,o,o]", pub(rsa), pub(ec), ed);
    write_jwks(keys);
    json_decref(keys);
    /* The RSA public key's JSON, as an attacker would use it for an HS256 "signature". */
    hmac_like = pub(rsa);

    struct cfg c = {0};
    cfg_schema_add(oauth_cfg_keys);
    char text[512], err[512];
    snprintf(text, sizeof(text),
             "[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\njwks_file = %s\n"
             "required_scopes = mcp\ntool_scopes = echo=tools:echo, kv_set=kv:write kv:admin\n",
             jwks_path);
    assert_int_equal(cfg_load_string(&c, text, "test.conf"), 0);
    assert_int_equal(oauth_conf_load(&c, &conf, err, sizeof(err)), 0);
    cfg_free(&c);
    val = oauth_new(&conf, err, sizeof(err));
    if (!val)
        fail_msg("oauth_new: %s", err);
    assert_int_equal(oauth_key_count(val), 3);
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    oauth_free(val);
    json_decref(rsa), json_decref(ec), json_decref(ec_other), json_decref(hmac_like);
    unlink(jwks_path);
    return 0;
}

static void good_tokens_pass_and_are_cached(void **st)
{
    (void)st;
    json_t *c = claims_ok();
    json_t *h = hdr("RS256", "rsa1");
    char *t = sign_jose(h, c, rsa);
    struct oauth_verdict v;
    assert_int_equal(check(t, &v), OAUTH_OK);
    assert_false(v.cached);
    assert_int_equal(strlen(v.grant.hash), 8);
    assert_null(strstr(t, v.grant.hash)); /* a hash, not a piece of the token */
    assert_int_equal(check(t, &v), OAUTH_OK);
    assert_true(v.cached); /* no second signature verification */
    free(t);
    json_decref(h);
    assert_int_equal(check_claims(claims_ok()), OAUTH_OK); /* ES256 */
    t = sign_ed(c);
    assert_int_equal(check(t, NULL), OAUTH_OK); /* EdDSA */
    free(t);
    json_decref(c);
    /* aud as an array that names us; scopes in scp as an array */
    c = json_pack("{s:s,s:[s,s],s:f,s:[s,s]}", "iss", ISS, "aud", "https://other.test", AUD, "exp",
                  now + 60, "scp", "mcp", "x");
    assert_int_equal(check_claims(c), OAUTH_OK);
    /* exp passed, but within the 60 s skew */
    c = claims_ok();
    json_object_set_new(c, "exp", json_real(now - 30));
    assert_int_equal(check_claims(c), OAUTH_OK);
}

static void wrong_signature_issuer_audience(void **st)
{
    (void)st;
    json_t *c = claims_ok(), *h = hdr("ES256", "ec1");
    char *t = sign_jose(h, c, ec_other);
    assert_int_equal(check(t, NULL), OAUTH_BAD_SIGNATURE);
    free(t);
    /* a valid token's signature over other claims (more scopes) */
    t = sign_jose(h, c, ec);
    json_t *more = claims_ok();
    json_object_set_new(more, "scope", json_string("mcp tools:echo kv:write kv:admin"));
    char *forged = unsigned_part(h, more), *f2 = NULL;
    assert_true(asprintf(&f2, "%s%s", forged, strrchr(t, '.')) > 0);
    assert_int_equal(check(f2, NULL), OAUTH_BAD_SIGNATURE);
    free(t), free(forged), free(f2);
    json_decref(more);
    json_decref(h);
    json_decref(c);
    c = claims_ok();
    json_object_set_new(c, "iss", json_string("https://evil.test"));
    assert_int_equal(check_claims(c), OAUTH_WRONG_ISSUER);
    c = claims_ok();
    json_object_del(c, "iss");
    assert_int_equal(check_claims(c), OAUTH_WRONG_ISSUER);
    c = claims_ok();
    json_object_set_new(c, "aud", json_string("https://mcp.example.test/other"));
    assert_int_equal(check_claims(c), OAUTH_WRONG_AUDIENCE);
    c = claims_ok();
    json_object_del(c, "aud");
    assert_int_equal(check_claims(c), OAUTH_WRONG_AUDIENCE);
}

static void times(void **st)
{
    (void)st;
    json_t *c = claims_ok();
    json_object_set_new(c, "exp", json_real(now - 120));
    assert_int_equal(check_claims(c), OAUTH_EXPIRED);
    c = claims_ok();
    json_object_del(c, "exp");
    assert_int_equal(check_claims(c), OAUTH_EXPIRED); /* an access token must expire */
    c = claims_ok();
    json_object_set_new(c, "nbf", json_real(now + 600));
    assert_int_equal(check_claims(c), OAUTH_NOT_YET_VALID);
    c = claims_ok();
    json_object_set_new(c, "nbf", json_real(now + 30)); /* within the skew */
    assert_int_equal(check_claims(c), OAUTH_OK);
    /* A cached token expires with the clock, not with the cache. */
    c = claims_ok();
    json_object_set_new(c, "exp", json_real(now + 10));
    json_t *h = hdr("ES256", "ec1");
    char *t = sign_jose(h, c, ec);
    assert_int_equal(check(t, NULL), OAUTH_OK);
    double saved = now;
    now += 10 + OAUTH_SKEW_S + 1;
    struct oauth_verdict v;
    assert_int_equal(check(t, &v), OAUTH_EXPIRED);
    assert_true(v.cached);
    now = saved;
    free(t);
    json_decref(h);
    json_decref(c);
}

static void scopes(void **st)
{
    (void)st;
    json_t *c = claims_ok();
    json_object_set_new(c, "scope", json_string("tools:echo"));
    assert_int_equal(check_claims(c), OAUTH_INSUFFICIENT_SCOPE);
    c = claims_ok();
    json_object_del(c, "scope");
    assert_int_equal(check_claims(c), OAUTH_INSUFFICIENT_SCOPE);
    c = claims_ok();
    json_object_set_new(c, "scope", json_string("mcpx tools:echo")); /* no prefix matches */
    assert_int_equal(check_claims(c), OAUTH_INSUFFICIENT_SCOPE);
    /* per tool: echo is allowed (tools:echo), kv_set is not (needs kv:write and kv:admin) */
    c = claims_ok();
    json_object_set_new(c, "scope", json_string("mcp tools:echo kv:write"));
    json_t *h = hdr("ES256", "ec1");
    char *t = sign_jose(h, c, ec);
    struct oauth_verdict v;
    assert_int_equal(check(t, &v), OAUTH_OK);
    assert_int_equal(v.grant.denied, 2); /* rule 1: kv_set */
    const char *call_kv = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":"
                          "{\"name\":\"kv_set\",\"arguments\":{}}}";
    const char *call_echo = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":"
                            "{\"name\":\"echo\"}}";
    const char *list = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/list\"}";
    json_t *id = NULL;
    assert_int_equal(oauth_tool_denied(val, &v.grant, call_kv, strlen(call_kv), &id), 1);
    assert_int_equal(json_integer_value(id), 9);
    json_decref(id);
    assert_int_equal(oauth_tool_denied(val, &v.grant, call_echo, strlen(call_echo), NULL), -1);
    assert_int_equal(oauth_tool_denied(val, &v.grant, list, strlen(list), NULL), -1);
    char batch[600];
    snprintf(batch, sizeof(batch), "[%s,%s]", list, call_kv);
    assert_int_equal(oauth_tool_denied(val, &v.grant, batch, strlen(batch), NULL), 1);
    free(t);
    json_decref(c);
    /* a token with every tool's scopes is denied nothing: its bodies are never parsed */
    c = claims_ok();
    json_object_set_new(c, "scope", json_string("kv:admin mcp tools:echo kv:write"));
    t = sign_jose(h, c, ec);
    assert_int_equal(check(t, &v), OAUTH_OK);
    assert_int_equal(v.grant.denied, 0);
    assert_int_equal(oauth_tool_denied(val, &v.grant, call_kv, strlen(call_kv), NULL), -1);
    free(t);
    json_decref(c);
    json_decref(h);
}

static void refused_before_any_signature(void **st)
{
    (void)st;
    struct oauth_verdict v;
    oauth_check(val, NULL, now, &v);
    assert_int_equal(v.reason, OAUTH_MISSING);
    assert_string_equal(v.grant.hash, "");
    oauth_check(val, "Basic dXNlcjpwdw==", now, &v);
    assert_int_equal(v.reason, OAUTH_MISSING);
    oauth_check(val, "Bearer   ", now, &v);
    assert_int_equal(v.reason, OAUTH_MISSING);
    assert_int_equal(check("garbage", NULL), OAUTH_MALFORMED);
    assert_int_equal(check("a.b.c", NULL), OAUTH_MALFORMED);
    assert_int_equal(check("a.b.c.d.e", NULL), OAUTH_MALFORMED); /* JWE */
    assert_int_equal(check("eyJ!.e30.e30", NULL), OAUTH_MALFORMED);
    char *big = malloc(OAUTH_MAX_TOKEN + 10);
    memset(big, 'A', OAUTH_MAX_TOKEN + 9);
    big[OAUTH_MAX_TOKEN + 9] = '\0';
    assert_int_equal(check(big, NULL), OAUTH_MALFORMED);
    free(big);
    json_t *c = claims_ok();
    /* unknown kid */
    json_t *h = hdr("ES256", "no-such-kid");
    char *t = sign_jose(h, c, ec);
    assert_int_equal(check(t, &v), OAUTH_UNKNOWN_KEY);
    assert_non_null(strstr(v.detail, "no-such-kid"));
    free(t);
    json_decref(h);
    /* alg none: no signature at all */
    h = json_pack("{s:s}", "alg", "none");
    char *part = unsigned_part(h, c);
    assert_true(asprintf(&t, "%s.", part) > 0);
    assert_int_equal(check(t, NULL), OAUTH_UNSUPPORTED_ALG);
    free(t);
    free(part);
    json_decref(h);
    /* HS256 "signed" with the RSA public key's text as the HMAC secret */
    h = hdr("HS256", "rsa1");
    part = unsigned_part(h, c);
    char *secret = json_dumps(hmac_like, JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state hs;
    crypto_auth_hmacsha256_init(&hs, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&hs, (const unsigned char *)part, strlen(part));
    crypto_auth_hmacsha256_final(&hs, mac);
    char *mb = b64(mac, sizeof(mac));
    assert_true(asprintf(&t, "%s.%s", part, mb) > 0);
    assert_int_equal(check(t, NULL), OAUTH_UNSUPPORTED_ALG);
    free(t), free(mb), free(part), free(secret);
    json_decref(h);
    /* the right key type under the wrong family: an RSA kid named with ES256 */
    h = hdr("ES256", "rsa1");
    t = sign_jose(h, c, ec);
    assert_int_equal(check(t, NULL), OAUTH_UNKNOWN_KEY);
    free(t);
    json_decref(h);
    /* crit extensions are not understood, so refused */
    h = json_pack("{s:s,s:s,s:[s],s:b}", "alg", "ES256", "kid", "ec1", "crit", "x-ext", "x-ext", 1);
    t = sign_jose(h, c, ec);
    assert_int_equal(check(t, NULL), OAUTH_UNSUPPORTED_ALG);
    free(t);
    json_decref(h);
    json_decref(c);
}

static void reload_takes_keys_away(void **st)
{
    (void)st;
    json_t *c = claims_ok(), *h = hdr("RS256", "rsa1");
    char *t = sign_jose(h, c, rsa);
    struct oauth_verdict v;
    assert_int_equal(check(t, &v), OAUTH_OK);
    char err[400];
    /* the same bytes again (a second change event): nothing changes, the cache stays */
    assert_int_equal(oauth_reload_keys(val, err, sizeof(err)), 1);
    assert_int_equal(check(t, &v), OAUTH_OK);
    assert_true(v.cached);
    /* a broken file: the keys in use stay */
    FILE *f = fopen(jwks_path, "w");
    fputs("{\"keys\": [", f);
    fclose(f);
    assert_int_equal(oauth_reload_keys(val, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not JSON"));
    assert_int_equal(check(t, &v), OAUTH_OK);
    /* the RSA key removed: its token stops at once, the cache notwithstanding */
    json_t *keys = json_pack("[o]", pub(ec));
    write_jwks(keys);
    json_decref(keys);
    assert_int_equal(oauth_reload_keys(val, err, sizeof(err)), 0);
    assert_int_equal(oauth_key_count(val), 1);
    assert_int_equal(check(t, &v), OAUTH_UNKNOWN_KEY);
    assert_false(v.cached);
    free(t);
    json_decref(h);
    json_decref(c);
    keys = json_pack("[o,o]", pub(rsa), pub(ec));
    write_jwks(keys);
    json_decref(keys);
    assert_int_equal(oauth_reload_keys(val, err, sizeof(err)), 0);
}

/* jwks_url: a validator starts with no keys (503-worthy), then takes documents from memory. */
static void keys_from_a_fetched_document(void **st)
{
    (void)st;
    static struct oauth_conf oc;
    oc = conf;
    oc.jwks_file[0] = '\0';
    snprintf(oc.jwks_url, sizeof(oc.jwks_url), "https://auth.example.test/jwks");
    char err[400];
    struct oauth *o = oauth_new(&oc, err, sizeof(err));
    assert_non_null(o);
    assert_int_equal(oauth_key_count(o), 0);
    json_t *c = claims_ok(), *h = hdr("RS256", "rsa1");
    char *t = sign_jose(h, c, rsa), *auth = NULL;
    assert_true(asprintf(&auth, "Bearer %s", t) > 0);
    struct oauth_verdict v;
    oauth_check(o, auth, now, &v);
    assert_int_equal(v.reason, OAUTH_NO_KEYS);
    assert_string_equal(oauth_reason_label(OAUTH_NO_KEYS), "keys_unavailable");
    /* what is no JWK Set changes nothing */
    assert_int_equal(oauth_set_keys(o, "<html>", 6, "the document at X", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "the document at X is not JSON"));
    assert_int_equal(oauth_set_keys(o, "{\"keys\":[]}", 11, "D", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no usable signature key"));
    oauth_check(o, auth, now, &v);
    assert_int_equal(v.reason, OAUTH_NO_KEYS);
    /* a set with the EC key only: the RSA token's kid is unknown, and says it is refetched */
    json_t *set = json_pack("{s:[o]}", "keys", pub(ec));
    char *text = json_dumps(set, JSON_COMPACT);
    assert_int_equal(oauth_set_keys(o, text, strlen(text), "D", err, sizeof(err)), 0);
    assert_int_equal(oauth_set_keys(o, text, strlen(text), "D", err, sizeof(err)), 1);
    free(text);
    json_decref(set);
    oauth_check(o, auth, now, &v);
    assert_int_equal(v.reason, OAUTH_UNKNOWN_KEY);
    assert_non_null(strstr(v.detail, "fetched again"));
    /* the rotated set: the same token passes at once (the cache was emptied) */
    set = json_pack("{s:[o,o]}", "keys", pub(ec), pub(rsa));
    text = json_dumps(set, JSON_COMPACT);
    assert_int_equal(oauth_set_keys(o, text, strlen(text), "D", err, sizeof(err)), 0);
    free(text);
    json_decref(set);
    assert_int_equal(oauth_key_count(o), 2);
    oauth_check(o, auth, now, &v);
    assert_int_equal(v.reason, OAUTH_OK);
    free(auth);
    free(t);
    json_decref(h);
    json_decref(c);
    oauth_free(o);
}

/* oauth_conf_load on a text: 0 or -1, err filled. */
static int conf_of(const char *text, struct oauth_conf *oc, char *err, size_t errlen)
{
    struct cfg c = {0};
    assert_int_equal(cfg_load_string(&c, text, "t.conf"), 0);
    int rc = oauth_conf_load(&c, oc, err, errlen);
    cfg_free(&c);
    return rc;
}

static void configuration(void **st)
{
    (void)st;
    static struct oauth_conf oc;
    char err[512];
    assert_int_equal(conf_of("[auth]\nenabled = false\n", &oc, err, sizeof(err)), 0);
    assert_false(oc.enabled);
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\njwks_file = /x\n", &oc, err,
                             sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "no audience"));
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = mcp\n"
                             "jwks_file = /x\n",
                             &oc, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "t.conf:4: [auth] audience"));
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\n", &oc,
                             err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "neither jwks_url nor jwks_file"));
    /* jwks_url: https, or http to loopback only; not beside jwks_file */
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\n"
                             "jwks_url = https://auth.example.test/jwks?v=2\n",
                             &oc, err, sizeof(err)),
                     0);
    assert_string_equal(oc.jwks_url, "https://auth.example.test/jwks?v=2");
    assert_string_equal(oc.jwks_file, "");
    assert_int_equal(oc.jwks_refresh_s, 300);
    static const char *const good[] = {"http://127.0.0.1:8443/jwks", "http://localhost/k",
                                       "http://[::1]:9/jwks", "https://idp.example:8443"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[300];
        snprintf(text, sizeof(text),
                 "[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD
                 "\njwks_url = %s\njwks_refresh_s = 60\n",
                 good[i]);
        if (conf_of(text, &oc, err, sizeof(err)) != 0)
            fail_msg("%s refused: %s", good[i], err);
        assert_int_equal(oc.jwks_refresh_s, 60);
    }
    static const char *const bad[] = {"http://auth.example.test/jwks", "ftp://127.0.0.1/jwks",
                                      "https:///jwks", "https://a b/jwks", "https://x/jwks#k",
                                      "/etc/jwks.json", "http://127.0.0.1.evil.example/jwks"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[300];
        snprintf(text, sizeof(text),
                 "[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\njwks_url = %s\n",
                 bad[i]);
        if (conf_of(text, &oc, err, sizeof(err)) != -1)
            fail_msg("%s accepted", bad[i]);
        assert_non_null(strstr(err, "not an https URL"));
    }
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\n"
                             "jwks_url = https://auth.example.test/jwks\njwks_file = /x\n",
                             &oc, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "both jwks_url and jwks_file"));
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\n"
                             "jwks_file = /x\ntool_scopes = echo\n",
                             &oc, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "is not NAME=SCOPE"));
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\n"
                             "jwks_file = /x\ntool_scopes = echo=a, echo=b\n",
                             &oc, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "twice"));
    /* RFC 9728 3.1: the metadata URL puts the well-known segment before the resource path */
    assert_int_equal(conf_of("[auth]\nenabled = true\nissuer = " ISS "\naudience = " AUD "\n"
                             "jwks_file = /x\ntool_scopes = a=s1  s2 ,b=s3\n",
                             &oc, err, sizeof(err)),
                     0);
    assert_string_equal(oc.metadata_url,
                        "https://mcp.example.test/.well-known/oauth-protected-resource/mcp");
    assert_string_equal(oc.metadata_path, "/.well-known/oauth-protected-resource/mcp");
    assert_int_equal(oc.ntools, 2);
    assert_string_equal(oc.tools[0].scopes, "s1 s2");
    /* JWKS files a validator cannot use */
    oc = conf;
    snprintf(oc.jwks_file, sizeof(oc.jwks_file), "/nonexistent/jwks.json");
    assert_null(oauth_new(&oc, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot read /nonexistent/jwks.json"));
    char path[64];
    snprintf(path, sizeof(path), "/tmp/cmcp-oauth-test-XXXXXX");
    int fd = mkstemp(path);
    close(fd);
    snprintf(oc.jwks_file, sizeof(oc.jwks_file), "%s", path);
    FILE *f = fopen(path, "w");
    fputs("{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}, {\"kty\": \"RSA\", \"n\": \"AQAB\","
          " \"e\": \"AQAB\", \"use\": \"enc\"}]}",
          f);
    fclose(f);
    assert_null(oauth_new(&oc, err, sizeof(err)));
    assert_non_null(strstr(err, "no usable signature key"));
    assert_non_null(strstr(err, "symmetric"));
    assert_non_null(strstr(err, "use is 'enc'"));
    f = fopen(path, "w");
    fputs("[1, 2]", f);
    fclose(f);
    assert_null(oauth_new(&oc, err, sizeof(err)));
    assert_non_null(strstr(err, "not a JWK Set"));
    unlink(path);
}

static void metadata_document(void **st)
{
    (void)st;
    char *m = oauth_metadata_json(val);
    json_t *doc = json_loads(m, 0, NULL);
    free(m);
    assert_string_equal(json_string_value(json_object_get(doc, "resource")), AUD);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(doc, "authorization_servers"), 0)), ISS);
    assert_int_equal(json_array_size(json_object_get(doc, "scopes_supported")), 4);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(doc, "bearer_methods_supported"), 0)),
        "header");
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_tokens_pass_and_are_cached),
        cmocka_unit_test(wrong_signature_issuer_audience),
        cmocka_unit_test(times),
        cmocka_unit_test(scopes),
        cmocka_unit_test(refused_before_any_signature),
        cmocka_unit_test(reload_takes_keys_away),
        cmocka_unit_test(configuration),
        cmocka_unit_test(keys_from_a_fetched_document),
        cmocka_unit_test(metadata_document),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
