/*
 * Per-connection request parsing. http_parser does the parsing; this file
 * keeps what it reports (in pieces, split wherever the socket split the
 * bytes), enforces the limits, queues complete requests for pipelining and
 * pauses the parser when the queue is full so one connection cannot make us
 * buffer without bound.
 */
#include "workers/http/http.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/*
 * Bytes kept while paused or after an upgrade. A listener that stops
 * reading when http_conn_wants_input() is false only ever stashes the rest of
 * one read, so this bound only hits peers pipelining without reading answers.
 */
#define BACKLOG_MIN_CAP (256u * 1024u)
#define BODY_PREALLOC (64u * 1024u)

static void set_error(struct http_conn *c, int status, const char *detail)
{
    if (c->err_status == 0) {
        c->err_status = status;
        c->err_detail = detail;
    }
}

static int grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? 2 * *cap : 256;
    if (ncap < need)
        ncap = need;
    char *np = realloc(*p, ncap);
    if (!np)
        return -ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

static int head_append(struct http_request *r, const char *p, size_t n)
{
    if (grow(&r->head_, &r->head_cap_, r->head_len_ + n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(r->head_ + r->head_len_, p, n);
    r->head_len_ += n;
    return 0;
}

void http_request_free(struct http_request *req)
{
    if (!req)
        return;
    free(req->head_);
    free(req->hdr_off_);
    free(req->headers);
    free(req->body);
    free(req);
}

/* ---- callbacks ---------------------------------------------------------- */

static struct http_conn *conn_of(http_parser *p)
{
    return p->data;
}

static int fail(struct http_conn *c, int status, const char *detail)
{
    set_error(c, status, detail);
    return -1;
}

static int count_head(struct http_conn *c, size_t n, int status, const char *detail)
{
    c->head_bytes += n;
    if (c->head_bytes > c->limits.max_header_bytes)
        return fail(c, status, detail);
    return 0;
}

static int on_message_begin(http_parser *p)
{
    struct http_conn *c = conn_of(p);
    c->cur = calloc(1, sizeof(*c->cur));
    if (!c->cur)
        return fail(c, 500, "out of memory");
    c->head_bytes = 0;
    c->continue_sent = false;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = conn_of(p);
    if (count_head(c, n, 414, "request target too long") < 0)
        return -1;
    if (head_append(c->cur, at, n) < 0)
        return fail(c, 500, "out of memory");
    return 0;
}

static int close_url(struct http_request *r)
{
    if (r->url_closed_)
        return 0;
    r->target_len = r->head_len_;
    r->url_closed_ = true;
    return head_append(r, "", 1);
}

/* Ends the value being received: trailing blanks are not part of it (RFC 9110 5.5). */
static int close_value(struct http_request *r)
{
    if (!r->last_was_value_)
        return 0;
    size_t *o = &r->hdr_off_[4 * (r->n_headers - 1)];
    while (r->head_len_ > o[2] &&
           (r->head_[r->head_len_ - 1] == ' ' || r->head_[r->head_len_ - 1] == '\t'))
        r->head_len_--;
    o[3] = r->head_len_ - o[2];
    r->last_was_value_ = false;
    return head_append(r, "", 1);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = conn_of(p);
    struct http_request *r = c->cur;
    if (count_head(c, n, 431, "request header fields too large") < 0)
        return -1;
    if (r->hdrs_done_)
        return 0; /* a trailer field: counted against the limit, then dropped */
    if (close_url(r) < 0 || close_value(r) < 0)
        return fail(c, 500, "out of memory");
    bool starting = r->n_headers == 0 || r->hdr_off_[4 * (r->n_headers - 1) + 3] != SIZE_MAX;
    if (starting) {
        if (r->n_headers >= c->limits.max_headers)
            return fail(c, 431, "too many header fields");
        if (r->n_headers == r->hdr_cap_) {
            size_t ncap = r->hdr_cap_ ? 2 * r->hdr_cap_ : 16;
            size_t *no = realloc(r->hdr_off_, ncap * 4 * sizeof(*no));
            if (!no)
                return fail(c, 500, "out of memory");
            r->hdr_off_ = no;
            r->hdr_cap_ = ncap;
        }
        size_t *o = &r->hdr_off_[4 * r->n_headers++];
        o[0] = r->head_len_;
        o[1] = o[2] = 0;
        o[3] = SIZE_MAX; /* value not started: later field pieces extend the name */
    }
    if (head_append(r, at, n) < 0)
        return fail(c, 500, "out of memory");
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = conn_of(p);
    struct http_request *r = c->cur;
    if (count_head(c, n, 431, "request header fields too large") < 0)
        return -1;
    if (r->hdrs_done_)
        return 0;
    if (!r->last_was_value_) {
        size_t *o = &r->hdr_off_[4 * (r->n_headers - 1)];
        o[1] = r->head_len_ - o[0];
        if (head_append(r, "", 1) < 0)
            return fail(c, 500, "out of memory");
        o[2] = r->head_len_;
        o[3] = 0;
        r->last_was_value_ = true;
        /* The parser skips leading blanks only up to the first value byte it sees. */
        while (n && (*at == ' ' || *at == '\t')) {
            at++;
            n--;
        }
    }
    if (head_append(r, at, n) < 0)
        return fail(c, 500, "out of memory");
    return 0;
}

/* Field values must not carry CR, LF or NUL (obs-fold is refused, RFC 9112 5.2). */
static bool values_clean(const struct http_request *r)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        const size_t *o = &r->hdr_off_[4 * i];
        for (size_t k = 0; k < o[3]; k++) {
            char ch = r->head_[o[2] + k];
            if (ch == '\r' || ch == '\n' || ch == '\0')
                return false;
        }
    }
    return true;
}

/* Splits the target into path and query and turns offsets into pointers. */
static int finalize_head(struct http_request *r, bool is_connect)
{
    size_t path_off = 0, path_len = r->target_len, q_off = 0, q_len = 0;
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (r->target_len <= UINT16_MAX &&
        http_parser_parse_url(r->head_, r->target_len, is_connect, &u) == 0) {
        path_len = 0;
        if (u.field_set & (1 << UF_PATH)) {
            path_off = u.field_data[UF_PATH].off;
            path_len = u.field_data[UF_PATH].len;
        }
        if (u.field_set & (1 << UF_QUERY)) {
            q_off = u.field_data[UF_QUERY].off;
            q_len = u.field_data[UF_QUERY].len;
        }
    }
    /* Copies of the two spans, NUL-terminated; grown first because they come from head_. */
    if (grow(&r->head_, &r->head_cap_, r->head_len_ + path_len + q_len + 2) < 0)
        return -ENOMEM;
    size_t path_at = r->head_len_;
    memcpy(r->head_ + path_at, r->head_ + path_off, path_len);
    r->head_[path_at + path_len] = '\0';
    size_t q_at = path_at + path_len + 1;
    memcpy(r->head_ + q_at, r->head_ + q_off, q_len);
    r->head_[q_at + q_len] = '\0';
    r->head_len_ = q_at + q_len + 1;

    if (r->n_headers) {
        r->headers = calloc(r->n_headers, sizeof(*r->headers));
        if (!r->headers)
            return -ENOMEM;
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const size_t *o = &r->hdr_off_[4 * i];
        r->headers[i].name = r->head_ + o[0];
        r->headers[i].name_len = o[1];
        r->headers[i].value = r->head_ + o[2];
        r->headers[i].value_len = o[3];
    }
    free(r->hdr_off_);
    r->hdr_off_ = NULL;
    r->target = r->head_;
    r->path = r->head_ + path_at;
    r->path_len = path_len;
    r->query = r->head_ + q_at;
    r->query_len = q_len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct http_conn *c = conn_of(p);
    struct http_request *r = c->cur;
    if (close_url(r) < 0 || close_value(r) < 0)
        return fail(c, 500, "out of memory");
    /* A value that never started (cannot happen with http_parser 2.9, but cheap to guard). */
    if (r->n_headers && r->hdr_off_[4 * (r->n_headers - 1) + 3] == SIZE_MAX)
        return fail(c, 400, "header field without value");
    if (!values_clean(r))
        return fail(c, 400, "invalid character in header field value");
    if (p->http_major != 1)
        return fail(c, 505, "only HTTP/1.x is served");
    if (r->target_len > UINT16_MAX)
        return fail(c, 414, "request target too long");
    if (finalize_head(r, p->method == HTTP_CONNECT) < 0)
        return fail(c, 500, "out of memory");
    r->hdrs_done_ = true;
    r->method = (enum http_method)p->method;
    r->method_name = http_method_str(r->method);
    r->version_major = p->http_major;
    r->version_minor = p->http_minor;
    r->keep_alive = http_should_keep_alive(p) != 0;
    r->upgrade = p->upgrade != 0;
    r->chunked = (p->flags & F_CHUNKED) != 0;
    /* RFC 9110 10.1.1: a server ignores 100-continue from an HTTP/1.0 client. */
    r->expect_continue =
        (p->http_minor >= 1) && http_request_header_has_token(r, "Expect", "100-continue");
    /*
     * Refuse an announced oversize body before the client sends it. Otherwise
     * size the buffer for it, but only up to BODY_PREALLOC: a header alone
     * must not make every idle connection hold megabytes.
     */
    if (!r->chunked && p->content_length != ULLONG_MAX) {
        if (p->content_length > c->limits.max_body_bytes)
            return fail(c, 413, "request body too large");
        size_t want = (size_t)p->content_length + 1;
        if (grow(&r->body, &r->body_cap_, want < BODY_PREALLOC ? want : BODY_PREALLOC) < 0)
            return fail(c, 500, "out of memory");
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_conn *c = conn_of(p);
    struct http_request *r = c->cur;
    if (n > c->limits.max_body_bytes - r->body_len)
        return fail(c, 413, "request body too large");
    if (grow(&r->body, &r->body_cap_, r->body_len + n + 1) < 0)
        return fail(c, 500, "out of memory");
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = conn_of(p);
    struct http_request *r = c->cur;
    if (grow(&r->body, &r->body_cap_, r->body_len + 1) < 0)
        return fail(c, 500, "out of memory");
    r->body[r->body_len] = '\0';
    r->keep_alive = http_should_keep_alive(p) != 0;
    if (c->q_tail)
        c->q_tail->next_ = r;
    else
        c->q_head = r;
    c->q_tail = r;
    c->cur = NULL;
    c->n_ready++;
    if (r->upgrade) {
        /* The parser returns right after this; what follows is not HTTP. */
        c->upgraded = true;
    } else if (c->n_ready >= c->limits.max_pipeline) {
        http_parser_pause(p, 1);
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- driving the parser ------------------------------------------------- */

static int stash(struct http_conn *c, const char *p, size_t n)
{
    size_t cap = c->limits.max_header_bytes * 2;
    if (cap < BACKLOG_MIN_CAP)
        cap = BACKLOG_MIN_CAP;
    if (c->backlog_off && c->backlog_off == c->backlog_len)
        c->backlog_off = c->backlog_len = 0;
    if (c->backlog_len - c->backlog_off + n > cap) {
        set_error(c, 503, "too many pipelined requests");
        return -1;
    }
    if (c->backlog_off && c->backlog_len + n > c->backlog_cap) {
        memmove(c->backlog, c->backlog + c->backlog_off, c->backlog_len - c->backlog_off);
        c->backlog_len -= c->backlog_off;
        c->backlog_off = 0;
    }
    if (grow(&c->backlog, &c->backlog_cap, c->backlog_len + n) < 0) {
        set_error(c, 500, "out of memory");
        return -1;
    }
    memcpy(c->backlog + c->backlog_len, p, n);
    c->backlog_len += n;
    return 0;
}

static int status_for(enum http_errno e)
{
    switch (e) {
    case HPE_HEADER_OVERFLOW:
        return 431;
    default:
        return 400;
    }
}

/* Runs the parser over data; returns how many bytes it consumed. */
static size_t run(struct http_conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        c->paused = true;
    } else if (e != HPE_OK) {
        set_error(c, status_for(e), http_errno_description(e));
        http_request_free(c->cur);
        c->cur = NULL;
        return len;
    }
    return n;
}

void http_conn_init(struct http_conn *c, const struct http_limits *limits)
{
    memset(c, 0, sizeof(*c));
    if (limits)
        c->limits = *limits;
    if (!c->limits.max_header_bytes)
        c->limits.max_header_bytes = HTTP_DEFAULT_MAX_HEADER_BYTES;
    if (!c->limits.max_body_bytes)
        c->limits.max_body_bytes = HTTP_DEFAULT_MAX_BODY_BYTES;
    if (!c->limits.max_headers)
        c->limits.max_headers = HTTP_DEFAULT_MAX_HEADERS;
    if (!c->limits.max_pipeline)
        c->limits.max_pipeline = HTTP_DEFAULT_MAX_PIPELINE;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
}

void http_conn_free(struct http_conn *c)
{
    struct http_request *r = c->q_head;
    while (r) {
        struct http_request *next = r->next_;
        http_request_free(r);
        r = next;
    }
    http_request_free(c->cur);
    free(c->backlog);
    memset(c, 0, sizeof(*c));
}

int http_conn_feed(struct http_conn *c, const char *buf, size_t len)
{
    if (c->err_status)
        return -1;
    if (len == 0) /* http_parser would read it as end of stream */
        return (int)c->n_ready;
    if (c->paused || c->upgraded) {
        if (stash(c, buf, len) < 0)
            return -1;
        return (int)c->n_ready;
    }
    size_t n = run(c, buf, len);
    if (!c->err_status && n < len && stash(c, buf + n, len - n) < 0)
        return -1;
    return c->err_status ? -1 : (int)c->n_ready;
}

struct http_request *http_conn_take(struct http_conn *c)
{
    struct http_request *r = c->q_head;
    if (!r)
        return NULL;
    c->q_head = r->next_;
    if (!c->q_head)
        c->q_tail = NULL;
    r->next_ = NULL;
    c->n_ready--;
    if (c->paused && !c->err_status && !c->upgraded && c->n_ready < c->limits.max_pipeline) {
        c->paused = false;
        http_parser_pause(&c->parser, 0);
        size_t avail = c->backlog_len - c->backlog_off;
        if (avail) {
            size_t n = run(c, c->backlog + c->backlog_off, avail);
            c->backlog_off += n;
            if (c->backlog_off == c->backlog_len)
                c->backlog_off = c->backlog_len = 0;
        }
    }
    return r;
}

size_t http_conn_ready(const struct http_conn *c)
{
    return c->n_ready;
}

int http_conn_error(const struct http_conn *c, const char **detail)
{
    if (detail)
        *detail = c->err_status ? c->err_detail : NULL;
    return c->err_status;
}

bool http_conn_wants_input(const struct http_conn *c)
{
    return !c->err_status && !c->paused && !c->upgraded;
}

bool http_conn_idle(const struct http_conn *c)
{
    return !c->cur && c->backlog_len == c->backlog_off;
}

const struct http_request *http_conn_expecting_continue(const struct http_conn *c)
{
    const struct http_request *r = c->cur;
    if (c->err_status || !r || !r->hdrs_done_ || !r->expect_continue || c->continue_sent)
        return NULL;
    return r;
}

void http_conn_continue_sent(struct http_conn *c)
{
    c->continue_sent = true;
}

bool http_conn_upgraded(const struct http_conn *c)
{
    return c->upgraded;
}

const char *http_conn_upgrade_data(const struct http_conn *c, size_t *len)
{
    *len = c->upgraded ? c->backlog_len - c->backlog_off : 0;
    return *len ? c->backlog + c->backlog_off : NULL;
}
