/*
 * libFuzzer target for the bearer-token validator (workers/oauth): the
 * Authorization header is the first thing an unauthenticated client controls,
 * and with [auth] jwks_url the key set comes off the network.
 *
 * An input that starts with '{' and names "keys" is a JWK Set document for
 * oauth_set_keys(); one that starts with '{' or '[' otherwise is a message
 * body for oauth_tool_denied() under a grant that lacks every tool scope;
 * anything else is a token, checked as "Bearer <input>" and then again (the
 * second verdict must be the first, from the cache). The validator holds a real Ed25519 key made at start; a token signed
 * with it is checked once at start so that the happy path is known to work.
 *
 * Seeds: tests/fuzz/corpus/oauth/ (tokens and key sets; no control bytes).
 */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workers/oauth/oauth.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define ISS "https://auth.example.test"
#define AUD "https://mcp.example.test/mcp"

static struct oauth *val;
static char good_jwks[512];
static double now;

static void b64(const void *in, size_t n, char *out, size_t cap)
{
    sodium_bin2base64(out, cap, in, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static int init(void)
{
    if (sodium_init() < 0)
        return -1;
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    char x[64];
    b64(pk, sizeof(pk), x, sizeof(x));
    snprintf(good_jwks, sizeof(good_jwks),
             "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"k1\",\"x\":\"%s\"}]}", x);
    static struct oauth_conf oc;
    oc.enabled = true;
    snprintf(oc.issuer, sizeof(oc.issuer), ISS);
    snprintf(oc.audience, sizeof(oc.audience), AUD);
    snprintf(oc.jwks_url, sizeof(oc.jwks_url), "https://auth.example.test/jwks");
    oc.jwks_refresh_s = 300;
    snprintf(oc.required, sizeof(oc.required), "mcp");
    snprintf(oc.tools[0].name, sizeof(oc.tools[0].name), "kv_set");
    snprintf(oc.tools[0].scopes, sizeof(oc.tools[0].scopes), "kv:write");
    oc.ntools = 1;
    char err[400];
    val = oauth_new(&oc, err, sizeof(err));
    CHECK(val);
    CHECK(oauth_set_keys(val, good_jwks, strlen(good_jwks), "init", err, sizeof(err)) == 0);
    /* the happy path, once */
    now = 1800000000.0;
    char hdr[128], claims[256], input[512], sig64[128], tok[700];
    const char *h = "{\"alg\":\"EdDSA\",\"kid\":\"k1\"}";
    b64(h, strlen(h), hdr, sizeof(hdr));
    char cl[200];
    int cn = snprintf(cl, sizeof(cl),
                      "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%.0f,\"scope\":\"mcp\"}",
                      now + 300);
    b64(cl, (size_t)cn, claims, sizeof(claims));
    snprintf(input, sizeof(input), "%s.%s", hdr, claims);
    unsigned char sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const unsigned char *)input, strlen(input), sk);
    b64(sig, sizeof(sig), sig64, sizeof(sig64));
    snprintf(tok, sizeof(tok), "Bearer %s.%s", input, sig64);
    struct oauth_verdict v;
    oauth_check(val, tok, now, &v);
    if (v.reason != OAUTH_OK)
        fprintf(stderr, "the happy path: %s: %s\n", oauth_reason_label(v.reason), v.detail);
    CHECK(v.reason == OAUTH_OK);
    CHECK(v.grant.denied == 1); /* it lacks kv:write */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        if (init() != 0)
            abort();
        ready = true;
    }
    char err[400];
    bool object = size > 0 && data[0] == '{';
    if (object && memmem(data, size, "\"keys\"", 6)) {
        int rc = oauth_set_keys(val, (const char *)data, size, "input", err, sizeof(err));
        CHECK(rc == -1 || rc == 0 || rc == 1);
        CHECK(oauth_key_count(val) >= 1); /* a refused set never empties the keys */
        if (rc == 0) /* back to the real key for the next input */
            CHECK(oauth_set_keys(val, good_jwks, strlen(good_jwks), "reset", err, sizeof(err)) ==
                  0);
        return 0;
    }
    if (object || (size > 0 && data[0] == '[')) {
        struct oauth_grant g = {.denied = ~0ULL};
        json_t *id = NULL;
        int rule = oauth_tool_denied(val, &g, (const char *)data, size, &id);
        CHECK(rule >= -1 && rule < 1);
        json_decref(id);
        return 0;
    }
    if (size > OAUTH_MAX_TOKEN + 64)
        return 0;
    char *h = malloc(size + 8);
    if (!h)
        return 0;
    memcpy(h, "Bearer ", 7);
    memcpy(h + 7, data, size);
    h[7 + size] = '\0'; /* (a NUL inside the input ends the header early, as in HTTP) */
    struct oauth_verdict v1, v2;
    oauth_check(val, h, now, &v1);
    CHECK(v1.reason >= OAUTH_OK && v1.reason < OAUTH_REASON_COUNT);
    CHECK(memchr(v1.detail, '\0', sizeof(v1.detail)));
    oauth_check(val, h, now, &v2);
    CHECK(v2.reason == v1.reason);
    free(h);
    return 0;
}
