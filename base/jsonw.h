/*
 * Compact JSON text of a jansson value, for the request path.
 *
 * The text is exactly json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY)'s: keys in
 * insertion order, the same escapes, the same numbers (tests/unit/jsonw_test.c
 * and the jsonw_fuzz target compare the two). What it leaves out is jansson's
 * cost around the text: a hash table of the containers being written (a
 * snprintf of each one's address, a malloc and a free), a buffer grown from 16
 * bytes and then copied once more. The shard writes every reply through it
 * (docs/benchmarks.md, "A reply's text").
 */
#ifndef CMCP_BASE_JSONW_H
#define CMCP_BASE_JSONW_H

#include <jansson.h>
#include <stddef.h>

struct jsonw {
    char *buf; /* NUL-terminated when len > 0 */
    size_t len, cap;
};

/* Deeper than this is refused (as the parser refuses it): also what stops a cycle. */
#define JSONW_MAX_DEPTH 2048

/*
 * Appends v's text to w. 0, or -1 (w unchanged in length) when memory runs out
 * or v holds what jansson would not write either: a string that is not UTF-8,
 * a real it cannot print, nesting deeper than JSONW_MAX_DEPTH.
 */
int jsonw_append(struct jsonw *w, const json_t *v);

/* v's text in a new malloc'd string (the caller frees it), its length in *len
 * when len is not NULL; NULL on failure, as jsonw_append. */
char *jsonw_dumps(const json_t *v, size_t *len);

/* Empties w, keeping its memory for the next text. */
static inline void jsonw_reset(struct jsonw *w)
{
    w->len = 0;
    if (w->buf)
        w->buf[0] = '\0';
}

void jsonw_free(struct jsonw *w);

#endif
