/*
 * Lookups on a parsed request: headers (names compared without case, as
 * RFC 9110 5.1 requires; repeats kept in arrival order) and query parameters.
 */
#include "workers/http/http.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

static bool name_is(const struct http_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

const char *http_request_header_nth(const struct http_request *req, const char *name, size_t idx)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        if (name_is(&req->headers[i], name, len) && idx-- == 0)
            return req->headers[i].value;
    }
    return NULL;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    return http_request_header_nth(req, name, 0);
}

size_t http_request_header_count(const struct http_request *req, const char *name)
{
    size_t len = strlen(name), n = 0;
    for (size_t i = 0; i < req->n_headers; i++)
        n += name_is(&req->headers[i], name, len);
    return n;
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Whether the comma-separated list v has an element equal to token (parameters ignored). */
static bool list_has(const char *v, const char *token)
{
    size_t tlen = strlen(token);
    while (*v) {
        while (is_ows(*v) || *v == ',')
            v++;
        const char *start = v;
        while (*v && *v != ',' && *v != ';')
            v++;
        const char *end = v;
        while (end > start && is_ows(end[-1]))
            end--;
        if ((size_t)(end - start) == tlen && strncasecmp(start, token, tlen) == 0)
            return true;
        while (*v && *v != ',')
            v++;
    }
    return false;
}

bool http_request_header_has_token(const struct http_request *req, const char *name,
                                   const char *token)
{
    const char *v;
    for (size_t i = 0; (v = http_request_header_nth(req, name, i)); i++) {
        if (list_has(v, token))
            return true;
    }
    return false;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Decodes the form-encoded byte at s[*i] and advances *i; -1 for a bad escape. */
static int decode_at(const char *s, size_t n, size_t *i)
{
    char ch = s[(*i)++];
    if (ch == '+')
        return ' ';
    if (ch != '%')
        return (unsigned char)ch;
    if (*i + 2 > n)
        return -1;
    int hi = hexval(s[*i]), lo = hexval(s[*i + 1]);
    if (hi < 0 || lo < 0)
        return -1;
    *i += 2;
    return hi * 16 + lo;
}

/* Whether the encoded key s[0..n) decodes to name (a malformed key never matches). */
static bool key_is(const char *s, size_t n, const char *name)
{
    size_t i = 0;
    while (i < n) {
        int ch = decode_at(s, n, &i);
        if (ch < 0 || *name == '\0' || (unsigned char)*name != ch)
            return false;
        name++;
    }
    return *name == '\0';
}

int http_query_param(const char *query, size_t query_len, const char *name, char *out,
                     size_t out_len)
{
    size_t pos = 0;
    while (pos < query_len) {
        size_t end = pos;
        while (end < query_len && query[end] != '&')
            end++;
        size_t eq = pos;
        while (eq < end && query[eq] != '=')
            eq++;
        if (end > pos && key_is(query + pos, eq - pos, name)) {
            const char *v = query + (eq < end ? eq + 1 : end);
            size_t vlen = eq < end ? end - eq - 1 : 0, i = 0, o = 0;
            while (i < vlen) {
                int ch = decode_at(v, vlen, &i);
                if (ch < 0)
                    return -EINVAL;
                if (o + 1 >= out_len)
                    return -ENOSPC;
                out[o++] = (char)ch;
            }
            if (out_len == 0)
                return -ENOSPC;
            out[o] = '\0';
            return (int)o;
        }
        pos = end + 1;
    }
    return -ENOENT;
}

int http_request_query_param(const struct http_request *req, const char *name, char *out,
                             size_t out_len)
{
    return http_query_param(req->query, req->query_len, name, out, out_len);
}
