/* Response, chunked streaming and Server-Sent Events serialization. */
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

/* ---- a response reader built on http_parser, to check what we wrote ------ */

struct resp {
    int status;
    char body[4096];
    size_t body_len;
    int complete;
    int chunked;
};

static int r_body(http_parser *p, const char *at, size_t n)
{
    struct resp *r = p->data;
    assert_true(r->body_len + n < sizeof(r->body));
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    return 0;
}

static int r_done(http_parser *p)
{
    struct resp *r = p->data;
    r->complete++;
    r->status = (int)p->status_code;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    return 0;
}

static void read_response(const char *data, size_t len, struct resp *r)
{
    static const http_parser_settings s = {.on_body = r_body, .on_message_complete = r_done};
    http_parser p;
    memset(r, 0, sizeof(*r));
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = r;
    size_t n = http_parser_execute(&p, &s, data, len);
    assert_int_equal(HTTP_PARSER_ERRNO(&p), HPE_OK);
    assert_int_equal(n, len);
    r->body[r->body_len] = '\0';
}

/* ---- a WHATWG event-stream reader, to check SSE round trips -------------- */

struct sse_seen {
    int events;
    char data[1024];
    char type[64];
    char last_id[64];
    long retry;
};

static void sse_line(struct sse_seen *s, const char *line, size_t n, char *databuf, size_t *dlen,
                     char *type)
{
    if (n == 0) { /* dispatch */
        if (*dlen == 0) {
            type[0] = '\0';
            return;
        }
        if (databuf[*dlen - 1] == '\n')
            (*dlen)--;
        memcpy(s->data, databuf, *dlen);
        s->data[*dlen] = '\0';
        strcpy(s->type, type[0] ? type : "message");
        s->events++;
        *dlen = 0;
        type[0] = '\0';
        return;
    }
    if (line[0] == ':')
        return;
    const char *colon = memchr(line, ':', n);
    size_t fl = colon ? (size_t)(colon - line) : n;
    const char *v = colon ? colon + 1 : line + n;
    size_t vl = (size_t)(line + n - v);
    if (vl && *v == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && !memcmp(line, "data", 4)) {
        memcpy(databuf + *dlen, v, vl);
        *dlen += vl;
        databuf[(*dlen)++] = '\n';
    } else if (fl == 5 && !memcmp(line, "event", 5)) {
        memcpy(type, v, vl);
        type[vl] = '\0';
    } else if (fl == 2 && !memcmp(line, "id", 2)) {
        memcpy(s->last_id, v, vl);
        s->last_id[vl] = '\0';
    } else if (fl == 5 && !memcmp(line, "retry", 5)) {
        s->retry = strtol(v, NULL, 10);
    }
}

static void sse_read(const char *text, size_t len, struct sse_seen *s)
{
    char databuf[1024], type[64] = "";
    size_t dlen = 0, i = 0;
    memset(s, 0, sizeof(*s));
    while (i < len) {
        size_t j = i;
        while (j < len && text[j] != '\r' && text[j] != '\n')
            j++;
        assert_true(j < len); /* every line we write is terminated */
        sse_line(s, text + i, j - i, databuf, &dlen, type);
        if (text[j] == '\r' && j + 1 < len && text[j + 1] == '\n')
            j++;
        i = j + 1;
    }
}

/* ---- tests --------------------------------------------------------------- */

static void test_buf(void **state)
{
    struct http_buf b;
    http_buf_init(&b);
    assert_int_equal(http_buf_append(&b, "hello ", 6), 0);
    assert_int_equal(http_buf_appendf(&b, "%s %d", "world", 42), 0);
    assert_int_equal(b.len, 14);
    assert_string_equal(b.data, "hello world 42");
    http_buf_consume(&b, 6);
    assert_string_equal(b.data, "world 42");
    http_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    /* Growth well past the first allocation. */
    for (int i = 0; i < 10000; i++)
        assert_int_equal(http_buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 100000);
    assert_false(b.failed);
    http_buf_reset(&b);
    assert_int_equal(b.len, 0);
    http_buf_free(&b);
    /* Zero-initialised is usable. */
    struct http_buf z = {0};
    assert_int_equal(http_buf_append(&z, "x", 1), 0);
    http_buf_free(&z);
}

static void test_reason_phrases(void **state)
{
    assert_string_equal(http_reason_phrase(200), "OK");
    assert_string_equal(http_reason_phrase(202), "Accepted");
    assert_string_equal(http_reason_phrase(405), "Method Not Allowed");
    assert_string_equal(http_reason_phrase(406), "Not Acceptable");
    assert_string_equal(http_reason_phrase(413), "Content Too Large");
    assert_string_equal(http_reason_phrase(415), "Unsupported Media Type");
    assert_string_equal(http_reason_phrase(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason_phrase(599), "Unknown");
    struct http_buf b = {0};
    assert_int_equal(http_write_status(&b, 404), 0);
    assert_string_equal(b.data, "HTTP/1.1 404 Not Found\r\n");
    assert_int_equal(http_write_status(&b, 42), -EINVAL);
    http_buf_free(&b);
}

static void test_header_injection(void **state)
{
    struct http_buf b = {0};
    assert_int_equal(http_write_header(&b, "X-Ok", "fine value"), 0);
    assert_string_equal(b.data, "X-Ok: fine value\r\n");
    assert_int_equal(http_write_header(&b, "X-Bad", "a\r\nSet-Cookie: x"), -EINVAL);
    assert_true(b.failed);
    http_buf_free(&b);
    assert_int_equal(http_write_header(&b, "Bad Name", "v"), -EINVAL);
    http_buf_free(&b);
    assert_int_equal(http_write_header(&b, "", "v"), -EINVAL);
    http_buf_free(&b);
    assert_int_equal(http_write_headerf(&b, "Mcp-Session-Id", "%s-%d", "abc", 7), 0);
    assert_string_equal(b.data, "Mcp-Session-Id: abc-7\r\n");
    assert_int_equal(http_write_headerf(&b, "X", "%s", "a\nb"), -EINVAL);
    http_buf_free(&b);
}

static void test_date(void **state)
{
    struct http_buf b = {0};
    assert_int_equal(http_write_date(&b, (time_t)784111777), 0);
    assert_string_equal(b.data, "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    http_buf_free(&b);
}

static void test_simple_response(void **state)
{
    struct http_request r11 = {.version_major = 1, .version_minor = 1};
    struct http_request r10 = {.version_major = 1, .version_minor = 0};
    struct http_buf b = {0};
    const char *body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    assert_int_equal(http_write_simple(&b, &r11, 200, true, "application/json", body, strlen(body)),
                     0);
    char want[256];
    snprintf(want, sizeof(want),
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    assert_string_equal(b.data, want);
    struct resp rp;
    read_response(b.data, b.len, &rp);
    assert_int_equal(rp.status, 200);
    assert_string_equal(rp.body, body);
    http_buf_reset(&b);

    assert_int_equal(http_write_simple(&b, &r11, 202, false, NULL, NULL, 0), 0);
    assert_string_equal(b.data,
                        "HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    http_buf_reset(&b);
    /* A persistent HTTP/1.0 connection must be confirmed. */
    assert_int_equal(http_write_simple(&b, &r10, 202, true, NULL, NULL, 0), 0);
    assert_string_equal(
        b.data, "HTTP/1.1 202 Accepted\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    http_buf_reset(&b);
    assert_int_equal(http_write_continue(&b), 0);
    assert_string_equal(b.data, "HTTP/1.1 100 Continue\r\n\r\n");
    http_buf_free(&b);
}

static void test_chunked_stream(void **state)
{
    struct http_request r11 = {.version_major = 1, .version_minor = 1};
    struct http_request r10 = {.version_major = 1, .version_minor = 0};
    assert_true(http_request_can_chunk(&r11));
    assert_false(http_request_can_chunk(&r10));

    struct http_buf b = {0};
    assert_int_equal(http_write_status(&b, 200), 0);
    assert_int_equal(http_write_stream_start(&b, "text/plain", true), 0);
    assert_int_equal(http_write_chunk(&b, "hello", 5, true), 0);
    assert_int_equal(http_write_chunk(&b, "", 0, true), 0); /* must not end the body */
    char big[300];
    memset(big, 'x', sizeof(big));
    assert_int_equal(http_write_chunk(&b, big, sizeof(big), true), 0);
    assert_int_equal(http_write_stream_end(&b, true), 0);
    assert_non_null(strstr(b.data, "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n12c\r\n"));
    struct resp rp;
    read_response(b.data, b.len, &rp);
    assert_int_equal(rp.complete, 1);
    assert_true(rp.chunked);
    assert_int_equal(rp.body_len, 305);
    assert_memory_equal(rp.body, "hello", 5);
    http_buf_reset(&b);

    /* Unchunked (HTTP/1.0): raw bytes, the body ends at close. */
    assert_int_equal(http_write_stream_start(&b, "text/plain", false), 0);
    assert_int_equal(http_write_chunk(&b, "hi", 2, false), 0);
    assert_int_equal(http_write_stream_end(&b, false), 0);
    assert_string_equal(b.data, "Content-Type: text/plain\r\n\r\nhi");
    http_buf_free(&b);
}

static void test_sse_format(void **state)
{
    struct http_buf b = {0};
    struct http_sse_event ev = {
        .id = "3-7", .event = "message", .data = "{\"a\":1}", .data_len = 7, .retry_ms = 0};
    assert_int_equal(http_sse_write(&b, &ev, false), 0);
    assert_string_equal(b.data, "event: message\nid: 3-7\ndata: {\"a\":1}\n\n");
    http_buf_reset(&b);

    /* Multi-line data splits at LF, CRLF and lone CR; empty lines survive. */
    const char *ml = "one\ntwo\r\nthree\rfour\n\nsix\n";
    struct http_sse_event m = {.data = ml, .data_len = strlen(ml)};
    assert_int_equal(http_sse_write(&b, &m, false), 0);
    assert_string_equal(b.data, "data: one\ndata: two\ndata: three\ndata: four\ndata:\n"
                                "data: six\ndata:\n\n");
    http_buf_reset(&b);

    /* The priming event: an id and an empty data field. retry for polling. */
    struct http_sse_event prime = {.id = "0-0", .data = "", .data_len = 0, .retry_ms = 1500};
    assert_int_equal(http_sse_write(&b, &prime, false), 0);
    assert_string_equal(b.data, "id: 0-0\nretry: 1500\ndata:\n\n");
    http_buf_reset(&b);

    /* No data at all: only an id (moves Last-Event-ID, dispatches nothing). */
    struct http_sse_event idonly = {.id = "1-2"};
    assert_int_equal(http_sse_write(&b, &idonly, false), 0);
    assert_string_equal(b.data, "id: 1-2\n\n");
    http_buf_reset(&b);

    /* Leading spaces in data are kept: exactly one space is the separator. */
    struct http_sse_event sp = {.data = "  x", .data_len = 3};
    assert_int_equal(http_sse_write(&b, &sp, false), 0);
    assert_string_equal(b.data, "data:   x\n\n");
    http_buf_reset(&b);

    assert_int_equal(http_sse_comment(&b, "keep-alive", false), 0);
    assert_string_equal(b.data, ": keep-alive\n");
    http_buf_reset(&b);
    assert_int_equal(http_sse_comment(&b, NULL, false), 0);
    assert_string_equal(b.data, ":\n");
    http_buf_reset(&b);

    /* Line breaks in id or event would forge fields. */
    struct http_sse_event bad = {.id = "1\ndata: forged"};
    assert_int_equal(http_sse_write(&b, &bad, false), -EINVAL);
    http_buf_free(&b);
    struct http_sse_event bad2 = {.event = "x\ry"};
    assert_int_equal(http_sse_write(&b, &bad2, false), -EINVAL);
    http_buf_free(&b);
}

static void test_sse_roundtrip(void **state)
{
    /* Whatever the data, a spec reader gets it back (CR/CRLF normalised to LF). */
    static const char *const cases[] = {"",
                                        "x",
                                        "\n",
                                        "\r\n",
                                        "a\r\n\r\nb",
                                        " lead",
                                        "trail \n",
                                        "multi\nline\njson",
                                        "{\"k\":\"v\"}",
                                        "\r",
                                        "a\rb\nc"};
    static const char *const want[] = {"",
                                       "x",
                                       "\n",
                                       "\n",
                                       "a\n\nb",
                                       " lead",
                                       "trail \n",
                                       "multi\nline\njson",
                                       "{\"k\":\"v\"}",
                                       "\n",
                                       "a\nb\nc"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_buf b = {0};
        struct http_sse_event ev = {.id = "9-1",
                                    .event = "note",
                                    .data = cases[i],
                                    .data_len = strlen(cases[i]),
                                    .retry_ms = 10};
        assert_int_equal(http_sse_write(&b, &ev, false), 0);
        assert_int_equal(http_sse_comment(&b, "keep-alive", false), 0);
        struct sse_seen s;
        sse_read(b.data, b.len, &s);
        assert_int_equal(s.events, 1);
        assert_string_equal(s.data, want[i]);
        assert_string_equal(s.type, "note");
        assert_string_equal(s.last_id, "9-1");
        assert_int_equal(s.retry, 10);
        http_buf_free(&b);
    }
}

static void test_sse_chunked(void **state)
{
    struct http_buf b = {0};
    assert_int_equal(http_write_status(&b, 200), 0);
    assert_int_equal(http_write_header(&b, "Mcp-Session-Id", "s1"), 0);
    assert_int_equal(http_write_sse_start(&b, true), 0);
    assert_non_null(strstr(b.data, "Content-Type: text/event-stream\r\n"));
    assert_non_null(strstr(b.data, "Cache-Control: no-cache\r\n"));
    assert_non_null(strstr(b.data, "X-Accel-Buffering: no\r\n"));
    size_t head = b.len;
    struct http_sse_event prime = {.id = "1-0", .data = "", .data_len = 0};
    assert_int_equal(http_sse_write(&b, &prime, true), 0);
    /* One event is one chunk: "id: 1-0\ndata:\n\n" is 15 bytes = 0xf. */
    assert_memory_equal(b.data + head, "f\r\nid: 1-0\ndata:\n\n\r\n", 20);
    const char *msg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    struct http_sse_event ev = {
        .id = "1-1", .event = "message", .data = msg, .data_len = strlen(msg)};
    assert_int_equal(http_sse_write(&b, &ev, true), 0);
    assert_int_equal(http_sse_comment(&b, "keep-alive", true), 0);
    assert_int_equal(http_write_stream_end(&b, true), 0);

    struct resp rp;
    read_response(b.data, b.len, &rp);
    assert_int_equal(rp.complete, 1);
    assert_true(rp.chunked);
    struct sse_seen s;
    sse_read(rp.body, rp.body_len, &s);
    assert_int_equal(s.events, 2);
    assert_string_equal(s.data, msg);
    assert_string_equal(s.last_id, "1-1");
    http_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_reason_phrases),
        cmocka_unit_test(test_header_injection),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_simple_response),
        cmocka_unit_test(test_chunked_stream),
        cmocka_unit_test(test_sse_format),
        cmocka_unit_test(test_sse_roundtrip),
        cmocka_unit_test(test_sse_chunked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
