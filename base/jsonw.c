/* Compact JSON text of a jansson value: see jsonw.h. */
#include "base/jsonw.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int grow(struct jsonw *w, size_t more)
{
    if (w->len + more + 1 <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + more + 1) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *b = realloc(w->buf, cap);
    if (!b)
        return -1;
    w->buf = b;
    w->cap = cap;
    return 0;
}

static inline int put(struct jsonw *w, const char *s, size_t n)
{
    if (grow(w, n) != 0)
        return -1;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    return 0;
}

static inline int putc1(struct jsonw *w, char c)
{
    if (w->len + 2 > w->cap && grow(w, 1) != 0)
        return -1;
    w->buf[w->len++] = c;
    return 0;
}

/* Length of the UTF-8 sequence at s (n bytes left), or 0 when it is not one jansson
 * accepts: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, v = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, v = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, v = c & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (len == 3 && v < 0x800) ||
        (len == 4 && v < 0x10000))
        return 0;
    return len;
}

static int put_string(struct jsonw *w, const char *str, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    if (putc1(w, '"') != 0)
        return -1;
    while (s < end) {
        /* the longest run that goes out as it is */
        const unsigned char *run = s;
        while (s < end) {
            unsigned c = *s;
            if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
                s++;
            } else if (c >= 0x80) {
                size_t k = utf8_seq(s, (size_t)(end - s));
                if (!k)
                    return -1;
                s += k;
            } else {
                break;
            }
        }
        if (s > run && put(w, (const char *)run, (size_t)(s - run)) != 0)
            return -1;
        if (s == end)
            break;
        char esc[6] = {'\\', 0};
        size_t k = 2;
        switch (*s) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default: /* another control character: \u00XX, upper-case hex as jansson writes it */
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[*s >> 4];
            esc[5] = hex[*s & 0xF];
            k = 6;
        }
        if (put(w, esc, k) != 0)
            return -1;
        s++;
    }
    return putc1(w, '"');
}

static int put_integer(struct jsonw *w, json_int_t v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    /* through the unsigned magnitude, so that the smallest value has no overflow */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put(w, p, (size_t)(tmp + sizeof(tmp) - p));
}

static int put_value(struct jsonw *w, const json_t *v, int depth)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return put(w, "null", 4);
    case JSON_TRUE: return put(w, "true", 4);
    case JSON_FALSE: return put(w, "false", 5);
    case JSON_INTEGER: return put_integer(w, json_integer_value(v));
    case JSON_STRING: return put_string(w, json_string_value(v), json_string_length(v));
    case JSON_REAL: {
        /* rare on the request path: jansson's own text, so that every real reads the same */
        char tmp[64];
        size_t n = json_dumpb(v, tmp, sizeof(tmp), JSON_ENCODE_ANY | JSON_COMPACT);
        return n && n <= sizeof(tmp) ? put(w, tmp, n) : -1;
    }
    case JSON_ARRAY: {
        if (depth >= JSONW_MAX_DEPTH || putc1(w, '[') != 0)
            return -1;
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++)
            if ((i && putc1(w, ',') != 0) || put_value(w, json_array_get(v, i), depth + 1) != 0)
                return -1;
        return putc1(w, ']');
    }
    case JSON_OBJECT: {
        if (depth >= JSONW_MAX_DEPTH || putc1(w, '{') != 0)
            return -1;
        bool first = true;
        for (void *it = json_object_iter((json_t *)v); it;
             it = json_object_iter_next((json_t *)v, it)) {
            if (!first && putc1(w, ',') != 0)
                return -1;
            first = false;
            if (put_string(w, json_object_iter_key(it), json_object_iter_key_len(it)) != 0 ||
                putc1(w, ':') != 0 || put_value(w, json_object_iter_value(it), depth + 1) != 0)
                return -1;
        }
        return putc1(w, '}');
    }
    }
    return -1;
}

int jsonw_append(struct jsonw *w, const json_t *v)
{
    size_t start = w->len;
    if (!v || put_value(w, v, 0) != 0 || grow(w, 0) != 0) {
        w->len = start;
        if (w->buf)
            w->buf[start] = '\0';
        return -1;
    }
    w->buf[w->len] = '\0';
    return 0;
}

char *jsonw_dumps(const json_t *v, size_t *len)
{
    struct jsonw w = {0};
    if (jsonw_append(&w, v) != 0) {
        jsonw_free(&w);
        return NULL;
    }
    if (len)
        *len = w.len;
    return w.buf;
}

void jsonw_free(struct jsonw *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}
