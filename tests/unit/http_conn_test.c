/* http_conn: incremental parsing, pipelining, keep-alive, limits, 100-continue, upgrade. */
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

static const char POST_CL[] = "POST /mcp?session=a%20b&x=1 HTTP/1.1\r\n"
                              "Host: localhost:8080\r\n"
                              "Content-Type: application/json\r\n"
                              "X-Trailing:   spaced value  \t\r\n"
                              "Content-Length: 17\r\n"
                              "\r\n"
                              "{\"jsonrpc\":\"2.0\"}";

static const char POST_CHUNKED[] = "POST /mcp HTTP/1.1\r\n"
                                   "Host: localhost\r\n"
                                   "Transfer-Encoding: chunked\r\n"
                                   "\r\n"
                                   "5\r\nhello\r\n"
                                   "7;ext=1\r\n, world\r\n"
                                   "0\r\n"
                                   "X-Trailer: t\r\n"
                                   "\r\n";

/* Feeds all of s, then takes exactly one request (asserting no error). */
static struct http_request *parse_one(struct http_conn *c, const char *s, size_t len)
{
    int n = http_conn_feed(c, s, len);
    assert_int_equal(n, 1);
    assert_int_equal(http_conn_error(c, NULL), 0);
    struct http_request *r = http_conn_take(c);
    assert_non_null(r);
    assert_null(http_conn_take(c));
    return r;
}

static void check_post_cl(const struct http_request *r)
{
    assert_int_equal(r->method, HTTP_POST);
    assert_string_equal(r->method_name, "POST");
    assert_string_equal(r->target, "/mcp?session=a%20b&x=1");
    assert_string_equal(r->path, "/mcp");
    assert_int_equal(r->path_len, 4);
    assert_string_equal(r->query, "session=a%20b&x=1");
    assert_int_equal(r->version_major, 1);
    assert_int_equal(r->version_minor, 1);
    assert_true(r->keep_alive);
    assert_false(r->upgrade);
    assert_false(r->chunked);
    assert_int_equal(r->n_headers, 4);
    assert_string_equal(http_request_header(r, "host"), "localhost:8080");
    assert_string_equal(http_request_header(r, "CONTENT-TYPE"), "application/json");
    assert_string_equal(http_request_header(r, "x-trailing"), "spaced value");
    assert_int_equal(r->body_len, 17);
    assert_memory_equal(r->body, "{\"jsonrpc\":\"2.0\"}", 17);
    assert_int_equal(r->body[17], '\0');
}

static void check_chunked(const struct http_request *r)
{
    assert_true(r->chunked);
    assert_int_equal(r->body_len, 12);
    assert_string_equal(r->body, "hello, world");
    /* Trailer fields are not request headers. */
    assert_null(http_request_header(r, "X-Trailer"));
    assert_int_equal(r->n_headers, 2);
}

static void test_simple_post(void **state)
{
    struct http_conn c;
    http_conn_init(&c, NULL);
    assert_true(http_conn_idle(&c));
    struct http_request *r = parse_one(&c, POST_CL, sizeof(POST_CL) - 1);
    check_post_cl(r);
    assert_true(http_conn_idle(&c));
    assert_true(http_conn_wants_input(&c));
    http_request_free(r);
    http_conn_free(&c);
}

/* Every split point and byte-at-a-time feeding give the same request. */
static void split_everywhere(const char *msg, size_t len,
                             void (*check)(const struct http_request *))
{
    for (size_t cut = 0; cut <= len; cut++) {
        struct http_conn c;
        http_conn_init(&c, NULL);
        int n1 = http_conn_feed(&c, msg, cut);
        assert_int_equal(n1, cut == len ? 1 : 0);
        if (cut > 0 && cut < len)
            assert_false(http_conn_idle(&c));
        int n2 = http_conn_feed(&c, msg + cut, len - cut);
        assert_int_equal(n2, 1);
        struct http_request *r = http_conn_take(&c);
        assert_non_null(r);
        check(r);
        http_request_free(r);
        http_conn_free(&c);
    }
    struct http_conn c;
    http_conn_init(&c, NULL);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(http_conn_feed(&c, msg + i, 1), i + 1 == len ? 1 : 0);
    struct http_request *r = http_conn_take(&c);
    assert_non_null(r);
    check(r);
    http_request_free(r);
    http_conn_free(&c);
}

static void test_split_every_byte(void **state)
{
    split_everywhere(POST_CL, sizeof(POST_CL) - 1, check_post_cl);
    split_everywhere(POST_CHUNKED, sizeof(POST_CHUNKED) - 1, check_chunked);
}

static void test_pipelining(void **state)
{
    char buf[2048];
    int len = snprintf(buf, sizeof(buf), "%s%sGET /b HTTP/1.1\r\nHost: x\r\n\r\n%s", POST_CL,
                       POST_CHUNKED, POST_CL);
    /* Pipelined and split mid-way through the third request. */
    for (int cut = 0; cut <= len; cut += 7) {
        struct http_conn c;
        http_conn_init(&c, NULL);
        http_conn_feed(&c, buf, (size_t)cut);
        assert_int_equal(http_conn_feed(&c, buf + cut, (size_t)(len - cut)), 4);
        struct http_request *r = http_conn_take(&c);
        check_post_cl(r);
        http_request_free(r);
        r = http_conn_take(&c);
        check_chunked(r);
        http_request_free(r);
        r = http_conn_take(&c);
        assert_int_equal(r->method, HTTP_GET);
        assert_string_equal(r->path, "/b");
        assert_int_equal(r->body_len, 0);
        assert_non_null(r->body);
        http_request_free(r);
        r = http_conn_take(&c);
        check_post_cl(r);
        http_request_free(r);
        assert_null(http_conn_take(&c));
        assert_int_equal(http_conn_ready(&c), 0);
        http_conn_free(&c);
    }
}

static bool keep_alive_of(const char *req)
{
    struct http_conn c;
    http_conn_init(&c, NULL);
    struct http_request *r = parse_one(&c, req, strlen(req));
    bool ka = r->keep_alive;
    http_request_free(r);
    http_conn_free(&c);
    return ka;
}

static void test_keep_alive_rules(void **state)
{
    assert_true(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert_false(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    assert_false(keep_alive_of("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"));
    assert_false(keep_alive_of("GET / HTTP/1.0\r\n\r\n"));
    assert_true(keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert_true(keep_alive_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

/* Feeds s and expects the connection error `status` with no request before it. */
static void expect_error(const struct http_limits *lim, const char *s, size_t len, int status)
{
    struct http_conn c;
    http_conn_init(&c, lim);
    assert_int_equal(http_conn_feed(&c, s, len), -1);
    const char *detail = NULL;
    assert_int_equal(http_conn_error(&c, &detail), status);
    assert_non_null(detail);
    assert_false(http_conn_wants_input(&c));
    assert_null(http_conn_take(&c));
    /* Nothing more is parsed after an error. */
    assert_int_equal(http_conn_feed(&c, "GET / HTTP/1.1\r\n\r\n", 18), -1);
    assert_int_equal(http_conn_ready(&c), 0);
    http_conn_free(&c);
}

static void test_limits(void **state)
{
    struct http_limits lim = {.max_header_bytes = 256, .max_body_bytes = 16, .max_headers = 4};
    char big[1024];

    /* Header bytes over the limit: 431. */
    int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-A: %0300d\r\n\r\n", 0);
    expect_error(&lim, big, (size_t)n, 431);
    /* A target over the limit: 414. */
    n = snprintf(big, sizeof(big), "GET /%0300d HTTP/1.1\r\n\r\n", 0);
    expect_error(&lim, big, (size_t)n, 414);
    /* Too many header lines: 431. */
    const char *many = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    expect_error(&lim, many, strlen(many), 431);
    /* Exactly at the limits is fine. */
    const char *four = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    struct http_conn c;
    http_conn_init(&c, &lim);
    struct http_request *r = parse_one(&c, four, strlen(four));
    http_request_free(r);
    const char *body16 = "POST / HTTP/1.1\r\nContent-Length: 16\r\n\r\n0123456789abcdef";
    r = parse_one(&c, body16, strlen(body16));
    assert_int_equal(r->body_len, 16);
    http_request_free(r);
    http_conn_free(&c);

    /* An announced oversize body is refused at the headers, before any body byte. */
    const char *cl = "POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n";
    expect_error(&lim, cl, strlen(cl), 413);
    /* A chunked body is counted as it arrives. */
    const char *ch = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n";
    expect_error(&lim, ch, strlen(ch), 413);
    /* Default body limit is 4 MiB. */
    n = snprintf(big, sizeof(big), "POST / HTTP/1.1\r\nContent-Length: %u\r\n\r\n",
                 HTTP_DEFAULT_MAX_BODY_BYTES + 1);
    expect_error(NULL, big, (size_t)n, 413);
    /* Trailers count against the header limit too. */
    n = snprintf(big, sizeof(big),
                 "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: %0300d\r\n\r\n",
                 0);
    expect_error(&lim, big, (size_t)n, 431);
}

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        /* Request smuggling shapes. */
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct http_conn c;
        http_conn_init(&c, NULL);
        int n = http_conn_feed(&c, bad[i], strlen(bad[i]));
        if (n != -1 || http_conn_error(&c, NULL) != 400)
            fail_msg("case %zu (%s): feed %d status %d", i, bad[i], n, http_conn_error(&c, NULL));
        http_conn_free(&c);
    }
    /* Obsolete line folding becomes one space (RFC 9112 5.2), never a CRLF in a value. */
    struct http_conn c;
    http_conn_init(&c, NULL);
    const char *fold = "GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\nY: 1\r\n\r\n";
    struct http_request *r = parse_one(&c, fold, strlen(fold));
    assert_string_equal(http_request_header(r, "x-folded"), "a b");
    assert_string_equal(http_request_header(r, "y"), "1");
    http_request_free(r);
    http_conn_free(&c);
    /* Only HTTP/1.x is served. */
    const char *h2 = "GET / HTTP/2.0\r\nHost: a\r\n\r\n";
    expect_error(NULL, h2, strlen(h2), 505);
}

static void test_error_after_good_requests(void **state)
{
    const char *s =
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nBAD\r\n\r\n";
    struct http_conn c;
    http_conn_init(&c, NULL);
    assert_int_equal(http_conn_feed(&c, s, strlen(s)), -1);
    assert_int_equal(http_conn_error(&c, NULL), 400);
    /* The requests before the error are answered first. */
    assert_int_equal(http_conn_ready(&c), 2);
    struct http_request *r = http_conn_take(&c);
    assert_string_equal(r->path, "/1");
    http_request_free(r);
    r = http_conn_take(&c);
    assert_string_equal(r->path, "/2");
    http_request_free(r);
    assert_null(http_conn_take(&c));
    http_conn_free(&c);
}

static void test_repeated_headers(void **state)
{
    const char *s = "GET / HTTP/1.1\r\nAccept: a/b\r\nX-Empty:\r\nACCEPT: c/d, e/f\r\n"
                    "Connection: keep-alive, Upgrade-Insecure\r\n\r\n";
    struct http_conn c;
    http_conn_init(&c, NULL);
    struct http_request *r = parse_one(&c, s, strlen(s));
    assert_int_equal(r->n_headers, 4);
    assert_int_equal(http_request_header_count(r, "accept"), 2);
    assert_string_equal(http_request_header(r, "Accept"), "a/b");
    assert_string_equal(http_request_header_nth(r, "accept", 1), "c/d, e/f");
    assert_null(http_request_header_nth(r, "accept", 2));
    assert_string_equal(http_request_header(r, "X-Empty"), "");
    assert_int_equal(r->headers[1].value_len, 0);
    assert_string_equal(r->headers[2].name, "ACCEPT");
    assert_null(http_request_header(r, "Missing"));
    assert_int_equal(http_request_header_count(r, "Missing"), 0);
    assert_true(http_request_header_has_token(r, "accept", "E/F"));
    assert_true(http_request_header_has_token(r, "connection", "upgrade-insecure"));
    assert_false(http_request_header_has_token(r, "connection", "upgrade"));
    assert_false(http_request_header_has_token(r, "connection", "keep"));
    http_request_free(r);
    http_conn_free(&c);
}

static void test_query_params(void **state)
{
    const char *s =
        "GET /p?a=1&b=x%2Fy+z&empty=&flag&c%41t=v&bad=%4&a=2 HTTP/1.1\r\nHost: h\r\n\r\n";
    struct http_conn c;
    http_conn_init(&c, NULL);
    struct http_request *r = parse_one(&c, s, strlen(s));
    char out[16];
    assert_int_equal(http_request_query_param(r, "a", out, sizeof(out)), 1);
    assert_string_equal(out, "1"); /* the first of repeats */
    assert_int_equal(http_request_query_param(r, "b", out, sizeof(out)), 5);
    assert_string_equal(out, "x/y z");
    assert_int_equal(http_request_query_param(r, "empty", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_request_query_param(r, "flag", out, sizeof(out)), 0);
    assert_int_equal(http_request_query_param(r, "cAt", out, sizeof(out)), 1);
    assert_int_equal(http_request_query_param(r, "bad", out, sizeof(out)), -EINVAL);
    assert_int_equal(http_request_query_param(r, "nope", out, sizeof(out)), -ENOENT);
    assert_int_equal(http_request_query_param(r, "b", out, 5), -ENOSPC);
    assert_int_equal(http_request_query_param(r, "b", out, 6), 5);
    http_request_free(r);
    /* No query at all. */
    r = parse_one(&c, "GET /p HTTP/1.1\r\n\r\n", 19);
    assert_string_equal(r->query, "");
    assert_int_equal(http_request_query_param(r, "a", out, sizeof(out)), -ENOENT);
    http_request_free(r);
    http_conn_free(&c);
}

static void test_expect_continue(void **state)
{
    const char *head = "POST /mcp HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                       "Content-Length: 4\r\n\r\n";
    struct http_conn c;
    http_conn_init(&c, NULL);
    assert_null(http_conn_expecting_continue(&c));
    assert_int_equal(http_conn_feed(&c, head, strlen(head)), 0);
    const struct http_request *h = http_conn_expecting_continue(&c);
    assert_non_null(h);
    assert_string_equal(h->path, "/mcp");
    assert_true(h->expect_continue);
    assert_string_equal(http_request_header(h, "host"), "a");
    http_conn_continue_sent(&c);
    assert_null(http_conn_expecting_continue(&c));
    assert_int_equal(http_conn_feed(&c, "body", 4), 1);
    struct http_request *r = http_conn_take(&c);
    assert_true(r->expect_continue);
    assert_string_equal(r->body, "body");
    http_request_free(r);
    /* The next request on the same connection starts afresh. */
    assert_int_equal(http_conn_feed(&c, head, strlen(head)), 0);
    assert_non_null(http_conn_expecting_continue(&c));
    http_conn_free(&c);

    /* HTTP/1.0 clients do not get a 100 (RFC 9110 10.1.1). */
    const char *old = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    http_conn_init(&c, NULL);
    assert_int_equal(http_conn_feed(&c, old, strlen(old)), 0);
    assert_null(http_conn_expecting_continue(&c));
    http_conn_free(&c);
}

static void test_upgrade(void **state)
{
    const char *s = "GET /mcp/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                    "Upgrade: websocket\r\n\r\n\x81\x05hello";
    size_t len = strlen(s);
    for (size_t cut = 0; cut <= len; cut++) {
        struct http_conn c;
        http_conn_init(&c, NULL);
        http_conn_feed(&c, s, cut);
        assert_int_equal(http_conn_feed(&c, s + cut, len - cut), 1);
        assert_true(http_conn_upgraded(&c));
        assert_false(http_conn_wants_input(&c));
        struct http_request *r = http_conn_take(&c);
        assert_true(r->upgrade);
        assert_string_equal(r->path, "/mcp/ws");
        http_request_free(r);
        size_t n;
        const char *rest = http_conn_upgrade_data(&c, &n);
        assert_int_equal(n, 7);
        assert_memory_equal(rest, "\x81\x05hello", 7);
        /* Later bytes are kept for the new protocol, not parsed as HTTP. */
        assert_int_equal(http_conn_feed(&c, "GET / HTTP/1.1\r\n\r\n", 18), 0);
        rest = http_conn_upgrade_data(&c, &n);
        assert_int_equal(n, 25);
        http_conn_free(&c);
    }
    /* Not an upgrade: a plain request is not marked. */
    struct http_conn c;
    http_conn_init(&c, NULL);
    struct http_request *r = parse_one(&c, "GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", 32);
    assert_false(r->upgrade);
    assert_false(http_conn_upgraded(&c));
    size_t n;
    assert_null(http_conn_upgrade_data(&c, &n));
    assert_int_equal(n, 0);
    http_request_free(r);
    http_conn_free(&c);
}

static void test_pipeline_pause(void **state)
{
    struct http_limits lim = {.max_pipeline = 2};
    char buf[1024];
    size_t len = 0;
    for (int i = 0; i < 5; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len,
                                "POST /%d HTTP/1.1\r\nContent-Length: 1\r\n\r\n%d", i, i);
    struct http_conn c;
    http_conn_init(&c, &lim);
    assert_int_equal(http_conn_feed(&c, buf, len), 2);
    assert_false(http_conn_wants_input(&c));
    assert_false(http_conn_idle(&c));
    /* Bytes fed while paused are kept, not lost. */
    const char *more = "GET /5 HTTP/1.1\r\n\r\n";
    assert_int_equal(http_conn_feed(&c, more, strlen(more)), 2);
    for (int i = 0; i < 6; i++) {
        struct http_request *r = http_conn_take(&c);
        assert_non_null(r);
        char want[8];
        snprintf(want, sizeof(want), "/%d", i);
        assert_string_equal(r->path, want);
        if (i < 5)
            assert_int_equal(r->body[0], '0' + i);
        http_request_free(r);
    }
    assert_null(http_conn_take(&c));
    assert_true(http_conn_wants_input(&c));
    assert_true(http_conn_idle(&c));
    http_conn_free(&c);
}

static void test_pipeline_overflow(void **state)
{
    struct http_limits lim = {.max_pipeline = 1};
    struct http_conn c;
    http_conn_init(&c, &lim);
    const char *one = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(http_conn_feed(&c, one, strlen(one)), 1);
    assert_false(http_conn_wants_input(&c));
    char *junk = calloc(1, 1024 * 1024);
    assert_int_equal(http_conn_feed(&c, junk, 1024 * 1024), -1);
    assert_int_equal(http_conn_error(&c, NULL), 503);
    /* The request before the overflow is still answered. */
    struct http_request *r = http_conn_take(&c);
    assert_non_null(r);
    http_request_free(r);
    free(junk);
    http_conn_free(&c);
}

static void test_absolute_and_odd_targets(void **state)
{
    struct http_conn c;
    http_conn_init(&c, NULL);
    const char *abs = "GET http://localhost:3000/mcp?x=y HTTP/1.1\r\nHost: localhost\r\n\r\n";
    struct http_request *r = parse_one(&c, abs, strlen(abs));
    assert_string_equal(r->path, "/mcp");
    assert_string_equal(r->query, "x=y");
    http_request_free(r);
    const char *star = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    r = parse_one(&c, star, strlen(star));
    assert_int_equal(r->method, HTTP_OPTIONS);
    assert_string_equal(r->target, "*");
    http_request_free(r);
    http_conn_free(&c);
}

/*
 * Heads of every size around the buffer's growth steps: path and query are
 * copied out of the same buffer that grows (found by the fuzzer).
 */
static void test_head_growth_boundaries(void **state)
{
    char buf[2400], pad[1100];
    for (size_t n = 0; n < 1090; n++) {
        memset(pad, 'p', n);
        pad[n] = '\0';
        int len =
            snprintf(buf, sizeof(buf), "GET /path?query=%s HTTP/1.1\r\nX: %s\r\n\r\n", pad, pad);
        struct http_conn c;
        http_conn_init(&c, NULL);
        struct http_request *r = parse_one(&c, buf, (size_t)len);
        assert_string_equal(r->path, "/path");
        assert_int_equal(r->query_len, 6 + n);
        assert_memory_equal(r->query, "query=", 6);
        assert_int_equal(strlen(r->query), 6 + n);
        assert_string_equal(http_request_header(r, "x"), pad);
        http_request_free(r);
        http_conn_free(&c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_post),
        cmocka_unit_test(test_split_every_byte),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_keep_alive_rules),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_error_after_good_requests),
        cmocka_unit_test(test_repeated_headers),
        cmocka_unit_test(test_query_params),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_pipeline_pause),
        cmocka_unit_test(test_pipeline_overflow),
        cmocka_unit_test(test_absolute_and_odd_targets),
        cmocka_unit_test(test_head_growth_boundaries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
