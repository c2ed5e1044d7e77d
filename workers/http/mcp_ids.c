/*
 * Identifier syntax for the Streamable HTTP transport: session ids (what the
 * spec allows in MCP-Session-Id) and SSE event ids. An event id carries its
 * stream number so a Last-Event-ID names the one stream to replay (spec
 * 2025-11-25 "Resumability and Redelivery").
 */
#include "workers/http/http.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

bool mcp_http_session_id_valid(const char *s)
{
    if (!s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (ch < 0x21 || ch > 0x7e || n >= MCP_SESSION_ID_MAX)
            return false;
    }
    return n > 0;
}

int mcp_sse_id_format(char *buf, size_t len, uint64_t stream_no, uint64_t seq)
{
    int n = snprintf(buf, len, "%" PRIu64 "-%" PRIu64, stream_no, seq);
    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    return n;
}

/* Canonical decimal (no sign, no leading zeros, no overflow) up to `stop`. */
static const char *parse_u64(const char *s, char stop, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    if (p == s || *p != stop || (*s == '0' && p - s > 1))
        return NULL;
    *out = v;
    return p;
}

int mcp_sse_id_parse(const char *s, uint64_t *stream_no, uint64_t *seq)
{
    uint64_t a, b;
    const char *p;
    if (!s || !(p = parse_u64(s, '-', &a)) || !parse_u64(p + 1, '\0', &b))
        return -EINVAL;
    *stream_no = a;
    *seq = b;
    return 0;
}
