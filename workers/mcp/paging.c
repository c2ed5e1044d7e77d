/*
 * Pagination of the list methods with opaque cursors.
 *
 * A cursor is base64url("cmcp1:<kind>:<offset>"): opaque to clients as the
 * spec requires, self-describing for us, and tied to its list so a
 * tools/list cursor handed to prompts/list is refused (-32602) rather than
 * silently misread. An offset past the end (the list shrank) gives an empty
 * last page, not an error: the cursor was valid when we issued it.
 */
#include "workers/mcp/mcp_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OFFSET 100000000UL

int mcpi_page_begin(mcp_call *c, const json_t *params, const char *kind, size_t *offset)
{
    *offset = 0;
    const json_t *cur = json_object_get(params, "cursor");
    if (!cur || json_is_null(cur))
        return 0;
    const char *text = json_string_value(cur);
    unsigned char raw[96];
    size_t rawlen = 0;
    char want[64];
    int n = snprintf(want, sizeof(want), "cmcp1:%s:", kind);
    bool ok = text && strlen(text) < 120 &&
              sodium_base642bin(raw, sizeof(raw) - 1, text, strlen(text), NULL, &rawlen, NULL,
                                sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0;
    if (ok) {
        raw[rawlen] = '\0';
        ok = rawlen > (size_t)n && memcmp(raw, want, (size_t)n) == 0;
    }
    if (ok) {
        char *end = NULL;
        const char *num = (const char *)raw + n;
        unsigned long v = strtoul(num, &end, 10);
        ok = *num >= '0' && *num <= '9' && end && *end == '\0' && v <= MAX_OFFSET;
        *offset = v;
    }
    if (!ok) {
        mcp_call_error(c, MCP_INVALID_PARAMS,
                       "Invalid params: invalid cursor; pass a nextCursor from this list's "
                       "previous page, or no cursor to start over",
                       json_pack("{s:o}", "cursor", json_deep_copy(cur)));
        return -1;
    }
    return 0;
}

static json_t *make_cursor(const char *kind, size_t offset)
{
    char raw[64];
    int n = snprintf(raw, sizeof(raw), "cmcp1:%s:%zu", kind, offset);
    char b64[128];
    sodium_bin2base64(b64, sizeof(b64), (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return json_string(b64);
}

void mcpi_page_finish(mcp_call *c, json_t *result, const char *key, json_t *all, const char *kind,
                      size_t offset)
{
    size_t total = json_array_size(all);
    size_t page = (size_t)c->srv->page_size;
    json_t *items = json_array();
    for (size_t i = offset; i < total && i < offset + page; i++)
        json_array_append(items, json_array_get(all, i));
    json_object_set_new(result, key, items);
    if (offset + page < total)
        json_object_set_new(result, "nextCursor", make_cursor(kind, offset + page));
    json_decref(all);
    mcp_call_return(c, result);
}
