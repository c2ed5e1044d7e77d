/*
 * libFuzzer target for the HTTP layer: arbitrary bytes go through http_conn
 * fed whole, split at an input-chosen point, and (for short inputs) byte by
 * byte; every request is run through the MCP policy and the writers. The
 * three feedings must agree (same requests, an error or not, same upgrade
 * bytes): parsing may not depend on where the socket split the stream.
 *
 * Seeds are plain requests (tests/fuzz/corpus/http/); the split point and
 * the limits come from a hash of the input so seeds need no control bytes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workers/http/http.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ULL; /* FNV-1a */
    return h;
}

static uint64_t mix_str(uint64_t h, const char *s)
{
    return mix(h, s ? s : "\xff(null)", s ? strlen(s) + 1 : 8);
}

static void exercise_policy(const struct http_request *r, struct http_buf *out)
{
    static const char *const any[] = {"*"};
    static const char *const origins[] = {"https://app.example.com", "null", "http://x:1"};
    struct mcp_http_policy open = {.allowed_hosts = any,
                                   .n_allowed_hosts = 1,
                                   .allowed_origins = origins,
                                   .n_allowed_origins = 3};
    const struct mcp_http_policy *pols[] = {NULL, &open};
    for (size_t i = 0; i < 2; i++) {
        struct mcp_http_verdict v = mcp_http_check(r, pols[i]);
        CHECK((v.reason == MCP_HTTP_OK) == (v.status == 0));
        CHECK(v.reason == MCP_HTTP_OK || v.message);
        if (v.reason != MCP_HTTP_OK) {
            json_t *id = json_integer(7);
            CHECK(mcp_http_write_verdict(out, r, &v, pols[i], id, r->keep_alive) == 0);
            json_decref(id);
        } else {
            CHECK(v.version != NULL);
        }
    }
    (void)mcp_http_accepts_json(r);
    (void)mcp_http_accepts_sse(r);
    (void)mcp_http_content_is_json(r);
    (void)mcp_http_session_id_valid(http_request_header(r, "Mcp-Session-Id"));
    uint64_t a, b;
    const char *last = http_request_header(r, "Last-Event-ID");
    if (last && mcp_sse_id_parse(last, &a, &b) == 0) {
        char again[MCP_SSE_ID_MAX];
        CHECK(mcp_sse_id_format(again, sizeof(again), a, b) > 0);
        CHECK(strcmp(again, last) == 0); /* the codec is canonical */
    }
    char qv[64];
    (void)http_request_query_param(r, "session", qv, sizeof(qv));
    (void)http_request_header_has_token(r, "Connection", "close");
}

static void exercise_writers(const struct http_request *r, struct http_buf *out)
{
    /* The body as SSE data and as a response: any bytes must serialize. */
    struct http_sse_event ev = {
        .id = "1-1", .event = "message", .data = r->body, .data_len = r->body_len, .retry_ms = 100};
    CHECK(http_sse_write(out, &ev, http_request_can_chunk(r)) == 0);
    CHECK(http_write_simple(out, r, 200, r->keep_alive, "application/json", r->body, r->body_len) ==
          0);
    /* Header values as header values: parsed ones never hold CR/LF. */
    for (size_t i = 0; i < r->n_headers && i < 4; i++)
        CHECK(http_write_header(out, "X-Echo", r->headers[i].value) == 0);
    http_buf_reset(out);
}

/* Checks a request's invariants and folds it into the digest. */
static uint64_t digest_request(uint64_t h, const struct http_request *r)
{
    CHECK(strlen(r->path) == r->path_len);
    CHECK(strlen(r->query) == r->query_len);
    CHECK(strlen(r->target) == r->target_len);
    CHECK(r->body && r->body[r->body_len] == '\0');
    for (size_t i = 0; i < r->n_headers; i++) {
        const struct http_header *hd = &r->headers[i];
        CHECK(strlen(hd->name) == hd->name_len && hd->name_len > 0);
        CHECK(strlen(hd->value) == hd->value_len);
        CHECK(!strpbrk(hd->value, "\r\n"));
        CHECK(http_request_header(r, hd->name) != NULL);
        h = mix_str(mix_str(h, hd->name), hd->value);
    }
    h = mix_str(h, r->method_name);
    h = mix_str(mix_str(mix_str(h, r->target), r->path), r->query);
    unsigned flags = r->version_major << 8 | r->version_minor << 4 | r->keep_alive << 3 |
                     r->upgrade << 2 | r->expect_continue << 1 | r->chunked;
    h = mix(h, &flags, sizeof(flags));
    return mix(h, r->body, r->body_len);
}

/* Feeds data in pieces of at most `step` bytes after a first piece of `first`. */
static uint64_t run(const uint8_t *data, size_t size, const struct http_limits *lim, size_t first,
                    size_t step)
{
    struct http_conn c;
    struct http_buf out = {0};
    uint64_t h = 14695981039346656037ULL;
    size_t pos = 0, nreq = 0;
    bool started = false;
    http_conn_init(&c, lim);
    while (pos < size) {
        size_t n = started ? step : first;
        started = true;
        if (n > size - pos)
            n = size - pos;
        int rv = http_conn_feed(&c, (const char *)data + pos, n);
        CHECK(rv == -1 || (size_t)rv == http_conn_ready(&c));
        CHECK(rv != -1 || http_conn_error(&c, NULL) != 0);
        pos += n;
        const struct http_request *head = http_conn_expecting_continue(&c);
        if (head) {
            CHECK(head->expect_continue);
            exercise_policy(head, &out);
            http_buf_reset(&out);
            http_conn_continue_sent(&c);
            CHECK(http_conn_expecting_continue(&c) == NULL);
        }
        /* Take at most one per feed so pauses and resumes get exercised. */
        struct http_request *r = http_conn_take(&c);
        if (r) {
            nreq++;
            h = digest_request(h, r);
            exercise_policy(r, &out);
            exercise_writers(r, &out);
            http_request_free(r);
        }
    }
    struct http_request *r;
    while ((r = http_conn_take(&c))) {
        nreq++;
        h = digest_request(h, r);
        exercise_policy(r, &out);
        exercise_writers(r, &out);
        http_request_free(r);
    }
    const char *detail = NULL;
    int err = http_conn_error(&c, &detail);
    CHECK(err == 0 || (err >= 400 && err < 600 && detail));
    CHECK(!err || !http_conn_wants_input(&c));
    size_t ulen;
    const char *up = http_conn_upgrade_data(&c, &ulen);
    CHECK(http_conn_upgraded(&c) || ulen == 0);
    /*
     * Whether there was an error must not depend on the split, but which one
     * may: limits are checked when http_parser reports a piece, so a request
     * both too big and malformed can meet either check first.
     */
    bool failed = err != 0;
    h = mix(h, &failed, sizeof(failed));
    h = mix(h, &nreq, sizeof(nreq));
    if (up)
        h = mix(h, up, ulen);
    http_conn_free(&c);
    http_buf_free(&out);
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t seed = mix(14695981039346656037ULL, data, size);
    struct http_limits lim = {0};
    if (seed & 1)
        lim.max_pipeline = 1 + (size_t)((seed >> 1) & 3);
    if (seed & 8)
        lim.max_header_bytes = 64 + (size_t)((seed >> 4) & 255);
    if (seed & 0x1000)
        lim.max_body_bytes = (size_t)((seed >> 13) & 127) + 1;
    if (seed & 0x100000)
        lim.max_headers = 1 + (size_t)((seed >> 21) & 7);
    size_t split = size ? (size_t)((seed >> 32) % (size + 1)) : 0;

    uint64_t whole = run(data, size, &lim, size, size);
    uint64_t two = run(data, size, &lim, split, size);
    CHECK(whole == two);
    if (size <= 512) {
        uint64_t bytes = run(data, size, &lim, 1, 1);
        CHECK(whole == bytes);
    }
    return 0;
}
