/*
 * Response serialization into a growable buffer: status line, headers,
 * fixed-length and chunked bodies, and Server-Sent Events. The listener
 * writes the buffer to the socket and consumes what write(2) took.
 */
#include "workers/http/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void http_buf_init(struct http_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void http_buf_free(struct http_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void http_buf_reset(struct http_buf *b)
{
    b->len = 0;
    b->failed = false;
}

static int reserve(struct http_buf *b, size_t extra)
{
    if (b->failed)
        return -ENOMEM;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return -ENOMEM;
    }
    size_t need = b->len + extra + 1; /* room for a NUL keeps data printable */
    if (need <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 512;
    while (ncap < need)
        ncap *= 2;
    char *nd = realloc(b->data, ncap);
    if (!nd) {
        b->failed = true;
        return -ENOMEM;
    }
    b->data = nd;
    b->cap = ncap;
    return 0;
}

int http_buf_append(struct http_buf *b, const void *p, size_t n)
{
    if (reserve(b, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int vappendf(struct http_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->failed = true;
        return -EINVAL;
    }
    if (reserve(b, (size_t)n) < 0)
        return -ENOMEM;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int http_buf_appendf(struct http_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rv = vappendf(b, fmt, ap);
    va_end(ap);
    return rv;
}

void http_buf_consume(struct http_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

static int append_str(struct http_buf *b, const char *s)
{
    return http_buf_append(b, s, strlen(s));
}

/* A non-negative number in decimal: every response's status and Content-Length, without
 * the two vsnprintf passes of appendf (measured on the listener's profile). */
static int append_uint(struct http_buf *b, unsigned long long v)
{
    char d[24];
    size_t n = sizeof(d);
    do {
        d[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return http_buf_append(b, d + n, sizeof(d) - n);
}

/* ---- status and headers ------------------------------------------------- */

/* One line per code: it reads as the table it is. */
// clang-format off
const char *http_reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
// clang-format on

int http_write_status(struct http_buf *b, int status)
{
    if (status < 100 || status > 999) {
        b->failed = true;
        return -EINVAL;
    }
    if (append_str(b, "HTTP/1.1 ") < 0 || append_uint(b, (unsigned)status) < 0 ||
        http_buf_append(b, " ", 1) < 0 || append_str(b, http_reason_phrase(status)) < 0)
        return -ENOMEM;
    return http_buf_append(b, "\r\n", 2);
}

/* RFC 9110 5.6.2 tchar. */
static bool is_tchar(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return true;
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')
        return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static bool token_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        if (!is_tchar((unsigned char)*s))
            return false;
    }
    return true;
}

/* CR and LF in a value would let a caller's data split the response. */
static bool value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    }
    return true;
}

int http_write_header(struct http_buf *b, const char *name, const char *value)
{
    size_t vn = strlen(value);
    if (!token_ok(name) || !value_ok(value, vn)) {
        b->failed = true;
        return -EINVAL;
    }
    if (append_str(b, name) < 0 || http_buf_append(b, ": ", 2) < 0 ||
        http_buf_append(b, value, vn) < 0)
        return -ENOMEM;
    return http_buf_append(b, "\r\n", 2);
}

int http_write_headerf(struct http_buf *b, const char *name, const char *fmt, ...)
{
    struct http_buf tmp = {0};
    va_list ap;
    va_start(ap, fmt);
    int rv = vappendf(&tmp, fmt, ap);
    va_end(ap);
    if (rv == 0)
        rv = http_write_header(b, name, tmp.data ? tmp.data : "");
    else
        b->failed = true;
    http_buf_free(&tmp);
    return rv;
}

int http_write_date(struct http_buf *b, time_t t)
{
    /* Fixed English names: strftime's %a/%b would follow the locale. */
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11) {
        b->failed = true;
        return -EINVAL;
    }
    return http_buf_appendf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n", days[tm.tm_wday],
                            tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                            tm.tm_sec);
}

int http_write_connection(struct http_buf *b, const struct http_request *req, bool keep_alive)
{
    if (!keep_alive)
        return append_str(b, "Connection: close\r\n");
    /* HTTP/1.0 connections are persistent only when both sides say so. */
    if (req && req->version_major == 1 && req->version_minor == 0)
        return append_str(b, "Connection: keep-alive\r\n");
    return 0;
}

int http_write_body(struct http_buf *b, const char *ctype, const void *body, size_t len)
{
    if (ctype && http_write_header(b, "Content-Type", ctype) < 0)
        return -EINVAL;
    if (append_str(b, "Content-Length: ") < 0 || append_uint(b, len) < 0 ||
        http_buf_append(b, "\r\n\r\n", 4) < 0)
        return -ENOMEM;
    return http_buf_append(b, body, len);
}

int http_write_simple(struct http_buf *b, const struct http_request *req, int status,
                      bool keep_alive, const char *ctype, const void *body, size_t len)
{
    int rv;
    if ((rv = http_write_status(b, status)) < 0 ||
        (rv = http_write_connection(b, req, keep_alive)) < 0)
        return rv;
    return http_write_body(b, ctype, body, len);
}

int http_write_continue(struct http_buf *b)
{
    return append_str(b, "HTTP/1.1 100 Continue\r\n\r\n");
}

/* ---- streaming ---------------------------------------------------------- */

bool http_request_can_chunk(const struct http_request *req)
{
    /* Chunked transfer coding is HTTP/1.1 (RFC 9112 7.1); 1.0 ends bodies by closing. */
    return req->version_major > 1 || (req->version_major == 1 && req->version_minor >= 1);
}

int http_write_stream_start(struct http_buf *b, const char *ctype, bool chunked)
{
    if (ctype && http_write_header(b, "Content-Type", ctype) < 0)
        return -EINVAL;
    if (chunked && append_str(b, "Transfer-Encoding: chunked\r\n") < 0)
        return -ENOMEM;
    return append_str(b, "\r\n");
}

int http_write_sse_start(struct http_buf *b, bool chunked)
{
    /* no-cache: events must not be stored; X-Accel-Buffering: nginx must not hold them. */
    if (append_str(b, "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n") < 0)
        return -ENOMEM;
    return http_write_stream_start(b, "text/event-stream", chunked);
}

int http_write_chunk(struct http_buf *b, const void *data, size_t len, bool chunked)
{
    if (len == 0)
        return 0;
    if (chunked && http_buf_appendf(b, "%zx\r\n", len) < 0)
        return -ENOMEM;
    if (http_buf_append(b, data, len) < 0)
        return -ENOMEM;
    return chunked ? append_str(b, "\r\n") : 0;
}

int http_write_stream_end(struct http_buf *b, bool chunked)
{
    return chunked ? append_str(b, "0\r\n\r\n") : 0;
}

/* ---- Server-Sent Events ------------------------------------------------- */

/*
 * Frames the bytes appended since `start` as one chunk. The size line goes
 * in front, so the event is written once and moved once rather than
 * measured in a separate pass.
 */
static int frame_chunk(struct http_buf *b, size_t start)
{
    size_t n = b->len - start;
    if (n == 0)
        return 0;
    char line[24];
    int hl = snprintf(line, sizeof(line), "%zx\r\n", n);
    if (reserve(b, (size_t)hl + 2) < 0)
        return -ENOMEM;
    memmove(b->data + start + hl, b->data + start, n);
    memcpy(b->data + start, line, (size_t)hl);
    b->len += (size_t)hl;
    return append_str(b, "\r\n");
}

/* Writes `field: line` for each line of s, splitting at CRLF, LF or CR. */
static int write_lines(struct http_buf *b, const char *field, const char *s, size_t n)
{
    size_t i = 0;
    do {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n')
            j++;
        if (append_str(b, field) < 0)
            return -ENOMEM;
        /* One space after the colon: the reader strips exactly one. */
        if (j > i && (http_buf_append(b, " ", 1) < 0 || http_buf_append(b, s + i, j - i) < 0))
            return -ENOMEM;
        if (http_buf_append(b, "\n", 1) < 0)
            return -ENOMEM;
        if (j < n && s[j] == '\r' && j + 1 < n && s[j + 1] == '\n')
            j++;
        i = j + 1;
    } while (i <= n);
    return 0;
}

int http_sse_write(struct http_buf *b, const struct http_sse_event *ev, bool chunked)
{
    /* A line break in id or event would end the field early and forge others. */
    if ((ev->id && !value_ok(ev->id, strlen(ev->id))) ||
        (ev->event && !value_ok(ev->event, strlen(ev->event)))) {
        b->failed = true;
        return -EINVAL;
    }
    size_t start = b->len;
    if (ev->event && http_buf_appendf(b, "event: %s\n", ev->event) < 0)
        return -ENOMEM;
    if (ev->id && http_buf_appendf(b, "id: %s\n", ev->id) < 0)
        return -ENOMEM;
    if (ev->retry_ms && http_buf_appendf(b, "retry: %u\n", ev->retry_ms) < 0)
        return -ENOMEM;
    if (ev->data && write_lines(b, "data:", ev->data, ev->data_len) < 0)
        return -ENOMEM;
    if (http_buf_append(b, "\n", 1) < 0)
        return -ENOMEM;
    return chunked ? frame_chunk(b, start) : 0;
}

int http_sse_comment(struct http_buf *b, const char *text, bool chunked)
{
    size_t start = b->len;
    if (write_lines(b, ":", text ? text : "", text ? strlen(text) : 0) < 0)
        return -ENOMEM;
    return chunked ? frame_chunk(b, start) : 0;
}
