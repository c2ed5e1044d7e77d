/* MCP Streamable HTTP policy verdicts, Accept/Content-Type rules, id syntax. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workers/http/http.h"

#define ACCEPT_BOTH "Accept: application/json, text/event-stream\r\n"
#define JSON_CT "Content-Type: application/json\r\n"

/* Parses one raw request head (body-less unless Content-Length says so). */
static struct http_request *req(const char *fmt, ...)
{
    char raw[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(raw));
    struct http_conn c;
    http_conn_init(&c, NULL);
    if (http_conn_feed(&c, raw, (size_t)n) != 1)
        fail_msg("request did not parse: %s", raw);
    struct http_request *r = http_conn_take(&c);
    http_conn_free(&c);
    return r;
}

/* The verdict for a POST /mcp with the given extra header lines. */
static struct mcp_http_verdict post_with(const struct mcp_http_policy *pol, const char *headers)
{
    struct http_request *r = req("POST /mcp HTTP/1.1\r\n%s\r\n", headers);
    struct mcp_http_verdict v = mcp_http_check(r, pol);
    http_request_free(r);
    return v;
}

static int post_status(const struct mcp_http_policy *pol, const char *headers)
{
    return post_with(pol, headers).status;
}

static void test_ok(void **state)
{
    struct http_request *r =
        req("POST /mcp HTTP/1.1\r\nHost: localhost:3000\r\n" ACCEPT_BOTH JSON_CT
            "Content-Length: 2\r\n\r\n{}");
    struct mcp_http_verdict v = mcp_http_check(r, NULL);
    assert_int_equal(v.reason, MCP_HTTP_OK);
    assert_int_equal(v.status, 0);
    /* No MCP-Protocol-Version: the spec says assume 2025-03-26. */
    assert_string_equal(v.version, "2025-03-26");
    assert_false(v.version_from_header);
    http_request_free(r);

    r = req("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n" ACCEPT_BOTH JSON_CT
            "mcp-protocol-version: 2025-06-18\r\n\r\n");
    v = mcp_http_check(r, NULL);
    assert_int_equal(v.reason, MCP_HTTP_OK);
    assert_string_equal(v.version, "2025-06-18");
    assert_true(v.version_from_header);
    http_request_free(r);

    /* GET needs only SSE; DELETE needs no Accept at all. */
    r = req("GET /mcp HTTP/1.1\r\nHost: [::1]:8080\r\nAccept: text/event-stream\r\n\r\n");
    assert_int_equal(mcp_http_check(r, NULL).reason, MCP_HTTP_OK);
    http_request_free(r);
    r = req("DELETE /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: abc\r\n\r\n");
    assert_int_equal(mcp_http_check(r, NULL).reason, MCP_HTTP_OK);
    http_request_free(r);

    /* A custom default version. */
    struct mcp_http_policy pol = {.default_version = "2025-11-25"};
    r = req("DELETE /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_string_equal(mcp_http_check(r, &pol).version, "2025-11-25");
    http_request_free(r);
}

static void test_host(void **state)
{
    const char *base = ACCEPT_BOTH JSON_CT;
    char h[512];
#define HOST(value) (snprintf(h, sizeof(h), "Host: %s\r\n%s", value, base), h)
    assert_int_equal(post_status(NULL, HOST("localhost")), 0);
    assert_int_equal(post_status(NULL, HOST("LocalHost:65535")), 0);
    assert_int_equal(post_status(NULL, HOST("127.0.0.1:80")), 0);
    assert_int_equal(post_status(NULL, HOST("[::1]")), 0);
    assert_int_equal(post_status(NULL, HOST("[::1]:3000")), 0);
    assert_int_equal(post_status(NULL, HOST("localhost:")), 0);
    /* DNS rebinding: the attacker's name, however it resolves. */
    assert_int_equal(post_status(NULL, HOST("evil.example")), 403);
    assert_int_equal(post_with(NULL, HOST("evil.example")).reason, MCP_HTTP_HOST_FORBIDDEN);
    assert_int_equal(post_status(NULL, HOST("localhost.evil.example")), 403);
    assert_int_equal(post_status(NULL, HOST("127.0.0.1.nip.io:80")), 403);
    assert_int_equal(post_status(NULL, HOST("0.0.0.0")), 403);
    assert_int_equal(post_status(NULL, HOST("[::2]")), 403);
    /* Malformed or missing: 400. */
    assert_int_equal(post_status(NULL, HOST("localhost:99999")), 400);
    assert_int_equal(post_status(NULL, HOST("localhost:80a")), 400);
    assert_int_equal(post_status(NULL, HOST("user@localhost")), 400);
    assert_int_equal(post_status(NULL, HOST("localhost/x")), 400);
    assert_int_equal(post_status(NULL, HOST("[::1")), 400);
    assert_int_equal(post_status(NULL, HOST("[]")), 400);
    assert_int_equal(post_status(NULL, HOST(":80")), 400);
    assert_int_equal(post_with(NULL, base).reason, MCP_HTTP_BAD_HOST); /* HTTP/1.1 needs Host */
    assert_int_equal(
        post_status(NULL, "Host: localhost\r\nHost: localhost\r\n" ACCEPT_BOTH JSON_CT), 400);
    /* HTTP/1.0 may omit Host. */
    struct http_request *r = req("POST /mcp HTTP/1.0\r\n" ACCEPT_BOTH JSON_CT "\r\n");
    assert_int_equal(mcp_http_check(r, NULL).reason, MCP_HTTP_OK);
    http_request_free(r);

    /* Configured lists: an entry without a port allows any port. */
    const char *hosts[] = {"mcp.example.com", "10.0.0.5:8080"};
    struct mcp_http_policy pol = {.allowed_hosts = hosts, .n_allowed_hosts = 2};
    assert_int_equal(post_status(&pol, HOST("MCP.example.com:443")), 0);
    assert_int_equal(post_status(&pol, HOST("10.0.0.5:8080")), 0);
    assert_int_equal(post_status(&pol, HOST("10.0.0.5:8081")), 403);
    assert_int_equal(post_status(&pol, HOST("10.0.0.5")), 403);
    assert_int_equal(post_status(&pol, HOST("localhost")), 403); /* the defaults are replaced */
    const char *any[] = {"*"};
    struct mcp_http_policy open = {.allowed_hosts = any, .n_allowed_hosts = 1};
    assert_int_equal(post_status(&open, HOST("anything.example:1")), 0);
    assert_int_equal(post_status(&open, HOST("bad/host")), 400); /* still well-formed */
    assert_true(mcp_http_host_allowed(NULL, "localhost:1"));
    assert_false(mcp_http_host_allowed(NULL, NULL));
#undef HOST
}

static void test_origin(void **state)
{
    char h[512];
#define ORIGIN(value)                                                                              \
    (snprintf(h, sizeof(h), "Host: localhost\r\nOrigin: %s\r\n" ACCEPT_BOTH JSON_CT, value), h)
    assert_int_equal(post_status(NULL, "Host: localhost\r\n" ACCEPT_BOTH JSON_CT), 0);
    assert_int_equal(post_status(NULL, ORIGIN("http://localhost:5173")), 0);
    assert_int_equal(post_status(NULL, ORIGIN("https://localhost")), 0);
    assert_int_equal(post_status(NULL, ORIGIN("http://127.0.0.1:6274")), 0);
    assert_int_equal(post_status(NULL, ORIGIN("HTTP://[::1]:8080")), 0);
    assert_int_equal(post_status(NULL, ORIGIN("http://evil.example")), 403);
    assert_int_equal(post_with(NULL, ORIGIN("http://evil.example")).reason,
                     MCP_HTTP_ORIGIN_FORBIDDEN);
    assert_int_equal(post_status(NULL, ORIGIN("http://localhost.evil.example")), 403);
    assert_int_equal(post_status(NULL, ORIGIN("null")), 403);
    assert_int_equal(post_status(NULL, ORIGIN("file://")), 403);
    assert_int_equal(post_status(NULL, ORIGIN("ftp://localhost")), 403);
    assert_int_equal(post_status(NULL, ORIGIN("http://localhost/")), 403);
    assert_int_equal(post_status(NULL, ORIGIN("localhost")), 403);
    assert_int_equal(post_status(NULL, ORIGIN("")), 403);
    assert_int_equal(post_status(NULL, "Host: localhost\r\nOrigin: http://localhost\r\n"
                                       "Origin: http://localhost\r\n" ACCEPT_BOTH JSON_CT),
                     400);

    const char *origins[] = {"https://app.example.com", "https://pinned.example.com:443", "null"};
    struct mcp_http_policy pol = {.allowed_origins = origins, .n_allowed_origins = 3};
    assert_int_equal(post_status(&pol, ORIGIN("https://app.example.com")), 0);
    assert_int_equal(post_status(&pol, ORIGIN("https://app.example.com:8443")), 0);
    assert_int_equal(post_status(&pol, ORIGIN("http://app.example.com")), 403);
    /* An explicit port matches the scheme's default when the origin omits it. */
    assert_int_equal(post_status(&pol, ORIGIN("https://pinned.example.com")), 0);
    assert_int_equal(post_status(&pol, ORIGIN("https://pinned.example.com:444")), 403);
    assert_int_equal(post_status(&pol, ORIGIN("null")), 0);
    assert_int_equal(post_status(&pol, ORIGIN("http://localhost")), 403);
    assert_true(mcp_http_origin_allowed(NULL, NULL));
#undef ORIGIN
}

static void test_method(void **state)
{
    static const char *const bad[] = {"PUT", "PATCH", "OPTIONS", "HEAD", "TRACE"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct http_request *r =
            req("%s /mcp HTTP/1.1\r\nHost: localhost\r\n" ACCEPT_BOTH JSON_CT "\r\n", bad[i]);
        struct mcp_http_verdict v = mcp_http_check(r, NULL);
        assert_int_equal(v.status, 405);
        assert_int_equal(v.reason, MCP_HTTP_METHOD);
        assert_string_equal(v.allow, "GET, POST, DELETE");
        http_request_free(r);
    }
    /* Security checks come first: a forbidden Host gets 403 whatever the method. */
    struct http_request *r = req("PUT /mcp HTTP/1.1\r\nHost: evil.example\r\n\r\n");
    assert_int_equal(mcp_http_check(r, NULL).status, 403);
    http_request_free(r);
}

static void test_version(void **state)
{
    const char *base = "Host: localhost\r\n" ACCEPT_BOTH JSON_CT;
    char h[512];
#define VER(value) (snprintf(h, sizeof(h), "%sMCP-Protocol-Version: %s\r\n", base, value), h)
    static const char *const good[] = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25",
                                       "2026-07-28"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(post_status(NULL, VER(good[i])), 0);
    struct mcp_http_verdict v = post_with(NULL, VER("1999-01-01"));
    assert_int_equal(v.status, 400);
    assert_int_equal(v.reason, MCP_HTTP_UNSUPPORTED_VERSION);
    assert_int_equal(v.rpc_code, MCP_RPC_UNSUPPORTED_VERSION);
    assert_int_equal(post_status(NULL, VER("")), 400);
    assert_int_equal(post_status(NULL, VER("2025-06-18x")), 400);
    assert_int_equal(post_status(NULL, VER("2025-06-1")), 400);
    assert_int_equal(post_with(NULL, "Host: localhost\r\n" ACCEPT_BOTH JSON_CT
                                     "MCP-Protocol-Version: 2025-06-18\r\n"
                                     "MCP-Protocol-Version: 2025-06-18\r\n")
                         .reason,
                     MCP_HTTP_BAD_VERSION);

    /* Configured versions replace the defaults. */
    const char *only[] = {"2025-11-25"};
    struct mcp_http_policy pol = {.versions = only, .n_versions = 1};
    assert_int_equal(post_status(&pol, VER("2025-11-25")), 0);
    assert_int_equal(post_status(&pol, VER("2025-06-18")), 400);

    /* 2026-07-28 has no GET stream and no sessions to DELETE. */
    struct http_request *r = req("GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream"
                                 "\r\nMCP-Protocol-Version: 2026-07-28\r\n\r\n");
    v = mcp_http_check(r, NULL);
    assert_int_equal(v.status, 405);
    assert_string_equal(v.allow, "POST");
    http_request_free(r);
    r = req("DELETE /mcp HTTP/1.1\r\nHost: localhost\r\nMCP-Protocol-Version: 2026-07-28\r\n\r\n");
    assert_int_equal(mcp_http_check(r, NULL).status, 405);
    http_request_free(r);
    r = req("GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream"
            "\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n");
    assert_int_equal(mcp_http_check(r, NULL).status, 0);
    http_request_free(r);
#undef VER
}

static void test_unsupported_version_body(void **state)
{
    struct http_request *r = req("POST /mcp HTTP/1.1\r\nHost: localhost\r\n" ACCEPT_BOTH JSON_CT
                                 "MCP-Protocol-Version: v999.0.0\r\n\r\n");
    struct mcp_http_verdict v = mcp_http_check(r, NULL);
    assert_string_equal(v.version, "v999.0.0");
    json_t *id = json_integer(301);
    json_t *j = mcp_http_verdict_json(&v, NULL, id);
    assert_non_null(j);
    json_t *err = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(j, "jsonrpc")), "2.0");
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 301);
    assert_int_equal(json_integer_value(json_object_get(err, "code")), -32022);
    json_t *data = json_object_get(err, "data");
    assert_string_equal(json_string_value(json_object_get(data, "requested")), "v999.0.0");
    json_t *sup = json_object_get(data, "supported");
    assert_int_equal(json_array_size(sup), 5);
    assert_string_equal(json_string_value(json_array_get(sup, 3)), "2025-11-25");
    json_decref(j);

    /* The full HTTP answer, without an id (JSON null). */
    struct http_buf b = {0};
    assert_int_equal(mcp_http_write_verdict(&b, r, &v, NULL, NULL, true), 0);
    assert_non_null(strstr(b.data, "HTTP/1.1 400 Bad Request\r\n"));
    assert_non_null(strstr(b.data, "Content-Type: application/json\r\n"));
    const char *body = strstr(b.data, "\r\n\r\n") + 4;
    json_t *parsed = json_loads(body, 0, NULL);
    assert_non_null(parsed);
    assert_true(json_is_null(json_object_get(parsed, "id")));
    json_decref(parsed);
    json_decref(id);
    http_buf_free(&b);
    http_request_free(r);
}

static void test_405_response(void **state)
{
    struct http_request *r = req("PUT /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n");
    struct mcp_http_verdict v = mcp_http_check(r, NULL);
    struct http_buf b = {0};
    assert_int_equal(mcp_http_write_verdict(&b, r, &v, NULL, NULL, false), 0);
    assert_non_null(strstr(b.data, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(b.data, "Allow: GET, POST, DELETE\r\n"));
    assert_non_null(strstr(b.data, "Connection: close\r\n"));
    assert_non_null(strstr(b.data, "\"code\":-32000"));
    assert_null(strstr(b.data, "\"data\""));
    http_buf_free(&b);
    http_request_free(r);
}

/* Verdict status for POST with the given Accept value (or none). */
static int post_accept(const char *accept)
{
    char h[512];
    if (accept)
        snprintf(h, sizeof(h), "Host: localhost\r\nAccept: %s\r\n" JSON_CT, accept);
    else
        snprintf(h, sizeof(h), "Host: localhost\r\n" JSON_CT);
    return post_status(NULL, h);
}

static void test_post_accept(void **state)
{
    assert_int_equal(post_accept("application/json, text/event-stream"), 0);
    assert_int_equal(post_accept("text/event-stream,application/json"), 0);
    assert_int_equal(post_accept("Application/JSON, Text/Event-Stream"), 0);
    assert_int_equal(post_accept("application/json;charset=utf-8 , text/event-stream; q=1.0"), 0);
    assert_int_equal(post_accept("application/json, text/event-stream;q=0.001"), 0);
    /* Wildcards are honoured (curl sends *\/ * by default). */
    assert_int_equal(post_accept("*/*"), 0);
    assert_int_equal(post_accept("*/*;q=0.1"), 0);
    assert_int_equal(post_accept("application/*, text/*"), 0);
    assert_int_equal(post_accept("application/json, text/*"), 0);
    /* One of the two missing. */
    assert_int_equal(post_accept("application/json"), 406);
    assert_int_equal(post_accept("text/event-stream"), 406);
    assert_int_equal(post_accept("text/html"), 406);
    assert_int_equal(post_accept(""), 406);
    assert_int_equal(post_accept(NULL), 406);
    /* Substrings are not matches. */
    assert_int_equal(post_accept("application/jsonx, text/event-streams"), 406);
    assert_int_equal(post_accept("application/json-seq, text/event-stream"), 406);
    /* q=0 refuses, and the most specific range decides. */
    assert_int_equal(post_accept("application/json;q=0, text/event-stream"), 406);
    assert_int_equal(post_accept("*/*, text/event-stream;q=0"), 406);
    assert_int_equal(post_accept("text/event-stream;q=0.0, */*"), 406);
    assert_int_equal(post_accept("application/*;q=0, application/json, text/event-stream"), 0);
    /* Malformed elements are skipped. */
    assert_int_equal(post_accept("application/json;q=2, text/event-stream"), 406);
    assert_int_equal(post_accept("application/json;q=0.5555, text/event-stream"), 406);
    assert_int_equal(post_accept("application/json;q, text/event-stream"), 406);
    assert_int_equal(post_accept("*/json, text/event-stream"), 406);
    assert_int_equal(post_accept(",,application/json,, text/event-stream;,"), 0);
    /* Split over two Accept lines is one list. */
    assert_int_equal(post_status(NULL, "Host: localhost\r\nAccept: application/json\r\n"
                                       "Accept: text/event-stream\r\n" JSON_CT),
                     0);
    assert_int_equal(
        post_with(NULL, "Host: localhost\r\nAccept: text/event-stream\r\n" JSON_CT).reason,
        MCP_HTTP_NOT_ACCEPTABLE);
}

static void test_get_accept(void **state)
{
    static const struct {
        const char *accept;
        int status;
    } cases[] = {
        {"text/event-stream", 0},  {"*/*", 0}, {"text/*", 0},
        {"application/json", 406}, {"", 406},  {"text/event-stream;q=0", 406},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_request *r =
            req("GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: %s\r\n\r\n", cases[i].accept);
        assert_int_equal(mcp_http_check(r, NULL).status, cases[i].status);
        assert_int_equal(mcp_http_accepts_sse(r), cases[i].status == 0);
        http_request_free(r);
    }
    struct http_request *r = req("GET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_int_equal(mcp_http_check(r, NULL).status, 406);
    assert_false(mcp_http_accepts_json(r));
    http_request_free(r);
}

/* Verdict status for POST with the given Content-Type value (or none). */
static int post_ct(const char *ct)
{
    char h[512];
    if (ct)
        snprintf(h, sizeof(h), "Host: localhost\r\n" ACCEPT_BOTH "Content-Type: %s\r\n", ct);
    else
        snprintf(h, sizeof(h), "Host: localhost\r\n" ACCEPT_BOTH);
    return post_status(NULL, h);
}

static void test_content_type(void **state)
{
    assert_int_equal(post_ct("application/json"), 0);
    assert_int_equal(post_ct("Application/JSON"), 0);
    assert_int_equal(post_ct("application/json; charset=utf-8"), 0);
    assert_int_equal(post_ct("application/json;charset=\"UTF-8\""), 0);
    assert_int_equal(post_ct("application/json; foo=bar"), 0);
    assert_int_equal(post_ct("application/json; charset=latin1"), 415);
    assert_int_equal(post_ct("application/jsonp"), 415);
    assert_int_equal(post_ct("application/json-seq"), 415);
    assert_int_equal(post_ct("text/plain"), 415);
    assert_int_equal(post_ct("application/x-www-form-urlencoded"), 415);
    assert_int_equal(post_ct(""), 415);
    assert_int_equal(post_ct(NULL), 415);
    assert_int_equal(
        post_with(NULL, "Host: localhost\r\n" ACCEPT_BOTH "Content-Type: text/plain\r\n").reason,
        MCP_HTTP_UNSUPPORTED_MEDIA);
    /* Two Content-Type lines are ambiguous. */
    assert_int_equal(post_status(NULL, "Host: localhost\r\n" ACCEPT_BOTH JSON_CT JSON_CT), 415);
    /* Accept is checked before Content-Type. */
    assert_int_equal(post_status(NULL, "Host: localhost\r\nAccept: text/html\r\n"), 406);
}

static void test_session_id(void **state)
{
    char s[MCP_SESSION_ID_MAX + 2];
    memset(s, 'a', sizeof(s));
    s[MCP_SESSION_ID_MAX] = '\0';
    assert_true(mcp_http_session_id_valid(s));
    s[MCP_SESSION_ID_MAX] = 'a';
    s[MCP_SESSION_ID_MAX + 1] = '\0';
    assert_false(mcp_http_session_id_valid(s));
    assert_true(mcp_http_session_id_valid("1868a90c-!~"));
    assert_true(mcp_http_session_id_valid("x"));
    assert_false(mcp_http_session_id_valid(""));
    assert_false(mcp_http_session_id_valid(NULL));
    assert_false(mcp_http_session_id_valid("a b"));
    assert_false(mcp_http_session_id_valid("a\tb"));
    assert_false(mcp_http_session_id_valid("a\x7f"));
    assert_false(mcp_http_session_id_valid("caf\xc3\xa9"));
}

static void test_sse_id_codec(void **state)
{
    char buf[MCP_SSE_ID_MAX];
    uint64_t a, b;
    assert_int_equal(mcp_sse_id_format(buf, sizeof(buf), 3, 17), 4);
    assert_string_equal(buf, "3-17");
    assert_int_equal(mcp_sse_id_parse(buf, &a, &b), 0);
    assert_true(a == 3 && b == 17);
    int n = mcp_sse_id_format(buf, sizeof(buf), UINT64_MAX, UINT64_MAX);
    assert_int_equal(n, 41);
    assert_int_equal(mcp_sse_id_parse(buf, &a, &b), 0);
    assert_true(a == UINT64_MAX && b == UINT64_MAX);
    assert_int_equal(mcp_sse_id_format(buf, 4, 3, 17), -ENOSPC);
    assert_int_equal(mcp_sse_id_parse("0-0", &a, &b), 0);
    assert_true(a == 0 && b == 0);

    static const char *const bad[] = {"",
                                      "-",
                                      "1-",
                                      "-1",
                                      "01-1",
                                      "1-01",
                                      "1-2-3",
                                      "a-1",
                                      " 1-1",
                                      "1-1 ",
                                      "1 -1",
                                      "+1-1",
                                      "1-+1",
                                      "1_1",
                                      "11",
                                      "18446744073709551616-0",
                                      "0-18446744073709551616",
                                      "99999999999999999999-1",
                                      "1-1\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = b = 42;
        if (mcp_sse_id_parse(bad[i], &a, &b) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(a == 42 && b == 42); /* outputs untouched on failure */
    }
    assert_int_equal(mcp_sse_id_parse(NULL, &a, &b), -EINVAL);
    /* Distinct (stream, seq) pairs give distinct ids. */
    char x[MCP_SSE_ID_MAX], y[MCP_SSE_ID_MAX];
    mcp_sse_id_format(x, sizeof(x), 1, 23);
    mcp_sse_id_format(y, sizeof(y), 12, 3);
    assert_string_not_equal(x, y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok),           cmocka_unit_test(test_host),
        cmocka_unit_test(test_origin),       cmocka_unit_test(test_method),
        cmocka_unit_test(test_version),      cmocka_unit_test(test_unsupported_version_body),
        cmocka_unit_test(test_405_response), cmocka_unit_test(test_post_accept),
        cmocka_unit_test(test_get_accept),   cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_session_id),   cmocka_unit_test(test_sse_id_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
