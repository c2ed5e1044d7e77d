/*
 * The MCP Streamable HTTP request policy (spec 2025-03-26 .. 2026-07-28,
 * "Transports"): which requests reach the MCP layer and which are answered
 * here with an HTTP error. Pure functions of the request and the policy, so
 * every verdict is unit-tested; docs/http.md explains each leniency.
 */
#define _GNU_SOURCE
#include "workers/http/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const default_hosts[] = {"localhost", "127.0.0.1", "[::1]"};
static const char *const default_origins[] = {"http://localhost", "https://localhost",
                                              "http://127.0.0.1", "https://127.0.0.1",
                                              "http://[::1]",     "https://[::1]"};
static const char *const default_versions[] = {"2024-11-05", "2025-03-26", "2025-06-18",
                                               "2025-11-25", "2026-07-28"};
/* 2026-07-28 removed the GET stream and sessions (and so DELETE). */
static const char *const default_post_only[] = {"2026-07-28"};

#define LIST(pol, field, dflt, out_n)                                                              \
    ((pol) && (pol)->field ? ((*(out_n) = (pol)->n_##field), (pol)->field)                         \
                           : ((*(out_n) = sizeof(dflt) / sizeof((dflt)[0])), (dflt)))

/* ---- Host and Origin ---------------------------------------------------- */

struct hostport {
    const char *host;
    size_t host_len;
    long port; /* -1: none given */
};

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Parses "name[:port]" or "[v6][:port]" filling all of s[0..n). */
static bool parse_hostport(const char *s, size_t n, struct hostport *hp)
{
    size_t i = 0;
    hp->host = s;
    hp->port = -1;
    if (n && s[0] == '[') {
        while (i < n && s[i] != ']') {
            char ch = s[i];
            if (i > 0 && !is_digit(ch) && !((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') &&
                ch != ':' && ch != '.')
                return false;
            i++;
        }
        if (i == n || i < 2)
            return false;
        i++; /* the ']' */
    } else {
        /* reg-name or IPv4: anything but the delimiters that would make it a URL. */
        while (i < n && s[i] != ':') {
            if (strchr("/?#@[] \t\\", s[i]) || (unsigned char)s[i] < 0x21 ||
                (unsigned char)s[i] > 0x7e)
                return false;
            i++;
        }
        if (i == 0)
            return false;
    }
    hp->host_len = i;
    if (i == n)
        return true;
    if (s[i] != ':')
        return false;
    i++;
    if (i == n) /* "host:" - RFC 3986 allows an empty port */
        return true;
    long port = 0;
    size_t digits = 0;
    for (; i < n; i++, digits++) {
        if (!is_digit(s[i]) || digits >= 5)
            return false;
        port = port * 10 + (s[i] - '0');
    }
    if (port > 65535)
        return false;
    hp->port = port;
    return true;
}

static bool hostport_match(const struct hostport *pat, const struct hostport *hp, long dflt)
{
    if (pat->host_len != hp->host_len || strncasecmp(pat->host, hp->host, hp->host_len) != 0)
        return false;
    if (pat->port < 0)
        return true;
    return pat->port == (hp->port < 0 ? dflt : hp->port);
}

static bool host_valid(const char *host, struct hostport *hp)
{
    return parse_hostport(host, strlen(host), hp);
}

bool mcp_http_host_allowed(const struct mcp_http_policy *pol, const char *host)
{
    struct hostport hp, pat;
    size_t n;
    const char *const *list = LIST(pol, allowed_hosts, default_hosts, &n);
    if (!host || !host_valid(host, &hp))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], "*") == 0)
            return true;
        if (host_valid(list[i], &pat) && hostport_match(&pat, &hp, hp.port))
            return true;
    }
    return false;
}

struct origin {
    const char *scheme;
    size_t scheme_len;
    struct hostport hp;
};

/* RFC 6454 serialized origin: scheme "://" host [":" port], nothing after. */
static bool parse_origin(const char *s, struct origin *o)
{
    const char *sep = strstr(s, "://");
    if (!sep || sep == s)
        return false;
    for (const char *p = s; p < sep; p++) {
        char ch = (char)(*p | 0x20);
        if (!((ch >= 'a' && ch <= 'z') || (p > s && (is_digit(*p) || strchr("+-.", *p)))))
            return false;
    }
    o->scheme = s;
    o->scheme_len = (size_t)(sep - s);
    const char *rest = sep + 3;
    return parse_hostport(rest, strlen(rest), &o->hp);
}

static long default_port(const struct origin *o)
{
    if (o->scheme_len == 4 && strncasecmp(o->scheme, "http", 4) == 0)
        return 80;
    if (o->scheme_len == 5 && strncasecmp(o->scheme, "https", 5) == 0)
        return 443;
    return -1;
}

bool mcp_http_origin_allowed(const struct mcp_http_policy *pol, const char *origin)
{
    struct origin o, pat;
    size_t n;
    const char *const *list = LIST(pol, allowed_origins, default_origins, &n);
    if (!origin)
        return true; /* not a browser request: Host validation covers it */
    bool parsed = parse_origin(origin, &o);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], "*") == 0)
            return true;
        /* An opaque origin ("null": sandboxed frames, file:) only if listed verbatim. */
        if (strcmp(list[i], origin) == 0 && strcmp(origin, "null") == 0)
            return true;
        if (!parsed || !parse_origin(list[i], &pat))
            continue;
        if (pat.scheme_len == o.scheme_len &&
            strncasecmp(pat.scheme, o.scheme, o.scheme_len) == 0 &&
            hostport_match(&pat.hp, &o.hp, default_port(&o)))
            return true;
    }
    return false;
}

/* ---- versions ----------------------------------------------------------- */

static bool in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], s) == 0)
            return true;
    }
    return false;
}

bool mcp_http_version_supported(const struct mcp_http_policy *pol, const char *version)
{
    size_t n;
    const char *const *list = LIST(pol, versions, default_versions, &n);
    return version && in_list(list, n, version);
}

static bool version_post_only(const struct mcp_http_policy *pol, const char *version)
{
    size_t n;
    const char *const *list = LIST(pol, post_only_versions, default_post_only, &n);
    return in_list(list, n, version);
}

/* ---- media types -------------------------------------------------------- */

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

static const char *trim_end(const char *start, const char *end)
{
    while (end > start && is_ows(end[-1]))
        end--;
    return end;
}

/* The first ch in [p, end), or NULL. */
static const char *find(const char *p, const char *end, char ch)
{
    for (; p < end; p++) {
        if (*p == ch)
            return p;
    }
    return NULL;
}

static bool span_is(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    return (size_t)(end - p) == n && strncasecmp(p, word, n) == 0;
}

/* RFC 9110 12.4.2 qvalue in thousandths, -1 if malformed. */
static int parse_q(const char *p, const char *end)
{
    if (p >= end || (*p != '0' && *p != '1'))
        return -1;
    int q = (*p - '0') * 1000, scale = 100;
    p++;
    if (p == end)
        return q;
    if (*p++ != '.')
        return -1;
    for (int digits = 0; p < end; p++, digits++, scale /= 10) {
        if (digits == 3 || !is_digit(*p))
            return -1;
        q += (*p - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/*
 * Media type "type/sub" then ";"-separated parameters, in [p, end).
 * Reports the type/subtype span, the q parameter and the charset parameter.
 */
struct media {
    const char *type, *type_end, *sub, *sub_end, *charset, *charset_end;
    int q;
};

static bool parse_media(const char *p, const char *end, struct media *m)
{
    memset(m, 0, sizeof(*m));
    m->q = 1000;
    p = skip_ows(p, end);
    const char *semi = find(p, end, ';');
    const char *mt_end = trim_end(p, semi ? semi : end);
    const char *slash = find(p, mt_end, '/');
    if (!slash || slash == p || slash + 1 == mt_end)
        return false;
    m->type = p;
    m->type_end = slash;
    m->sub = slash + 1;
    m->sub_end = mt_end;
    for (const char *c = p; c < mt_end; c++) {
        if (c != slash && (is_ows(*c) || *c == '/' || *c == ',' || *c == '"'))
            return false;
    }
    while (semi) {
        const char *name = skip_ows(semi + 1, end);
        semi = find(name, end, ';');
        const char *pend = trim_end(name, semi ? semi : end);
        if (pend == name)
            continue; /* "a/b;" or "a/b;;q=1": an empty parameter says nothing */
        const char *eq = find(name, pend, '=');
        if (!eq)
            return false;
        const char *nend = trim_end(name, eq), *val = skip_ows(eq + 1, pend);
        if (pend - val >= 2 && *val == '"' && pend[-1] == '"') {
            val++;
            pend--;
        }
        if (span_is(name, nend, "q")) {
            if ((m->q = parse_q(val, pend)) < 0)
                return false;
        } else if (span_is(name, nend, "charset")) {
            m->charset = val;
            m->charset_end = pend;
        }
    }
    return true;
}

/*
 * The q the Accept header(s) give type/sub: the most specific matching range
 * decides (RFC 9110 12.5.1), so "*\/ *, text/event-stream;q=0" refuses SSE.
 * Malformed elements are skipped. -1 when nothing matches.
 */
static int accept_q(const struct http_request *req, const char *type, const char *sub)
{
    int best_spec = 0, best_q = -1;
    const char *v;
    for (size_t i = 0; (v = http_request_header_nth(req, "Accept", i)); i++) {
        const char *end = v + strlen(v);
        while (v < end) {
            const char *comma = find(v, end, ',');
            const char *el_end = comma ? comma : end;
            struct media m;
            if (skip_ows(v, el_end) < el_end && parse_media(v, el_end, &m)) {
                int spec = 0;
                bool type_any = span_is(m.type, m.type_end, "*");
                bool sub_any = span_is(m.sub, m.sub_end, "*");
                if (type_any && sub_any)
                    spec = 1;
                else if (span_is(m.type, m.type_end, type) && sub_any)
                    spec = 2;
                else if (span_is(m.type, m.type_end, type) && span_is(m.sub, m.sub_end, sub))
                    spec = 3;
                if (spec > best_spec || (spec && spec == best_spec && m.q > best_q)) {
                    best_spec = spec;
                    best_q = m.q;
                }
            }
            v = comma ? comma + 1 : end;
        }
    }
    return best_q;
}

bool mcp_http_accepts_json(const struct http_request *req)
{
    return accept_q(req, "application", "json") > 0;
}

bool mcp_http_accepts_sse(const struct http_request *req)
{
    return accept_q(req, "text", "event-stream") > 0;
}

bool mcp_http_content_is_json(const struct http_request *req)
{
    struct media m;
    if (http_request_header_count(req, "Content-Type") != 1)
        return false;
    const char *v = http_request_header(req, "Content-Type");
    if (!parse_media(v, v + strlen(v), &m))
        return false;
    if (!span_is(m.type, m.type_end, "application") || !span_is(m.sub, m.sub_end, "json"))
        return false;
    /* JSON-RPC messages MUST be UTF-8; any other declared charset is refused. */
    return !m.charset || span_is(m.charset, m.charset_end, "utf-8");
}

/* ---- the verdict -------------------------------------------------------- */

static struct mcp_http_verdict refuse(enum mcp_http_reason reason, int status, int code,
                                      const char *msg)
{
    struct mcp_http_verdict v = {
        .reason = reason, .status = status, .rpc_code = code, .message = msg};
    return v;
}

struct mcp_http_verdict mcp_http_check(const struct http_request *req,
                                       const struct mcp_http_policy *pol)
{
    struct mcp_http_verdict v;
    struct hostport hp;

    /* DNS rebinding: a browser always sends the name it resolved as Host. */
    size_t n = http_request_header_count(req, "Host");
    const char *host = http_request_header(req, "Host");
    bool http11 = req->version_major == 1 && req->version_minor >= 1;
    if (n > 1 || (n == 0 && http11) || (host && !host_valid(host, &hp)))
        return refuse(MCP_HTTP_BAD_HOST, 400, MCP_RPC_TRANSPORT_ERROR,
                      "Bad Request: missing, repeated or malformed Host header");
    if (host && !mcp_http_host_allowed(pol, host))
        return refuse(MCP_HTTP_HOST_FORBIDDEN, 403, MCP_RPC_TRANSPORT_ERROR,
                      "Forbidden: Host header not allowed");

    if (http_request_header_count(req, "Origin") > 1)
        return refuse(MCP_HTTP_BAD_ORIGIN, 400, MCP_RPC_TRANSPORT_ERROR,
                      "Bad Request: repeated Origin header");
    if (!mcp_http_origin_allowed(pol, http_request_header(req, "Origin")))
        return refuse(MCP_HTTP_ORIGIN_FORBIDDEN, 403, MCP_RPC_TRANSPORT_ERROR,
                      "Forbidden: Origin not allowed");

    if (req->method != HTTP_POST && req->method != HTTP_GET && req->method != HTTP_DELETE) {
        v = refuse(MCP_HTTP_METHOD, 405, MCP_RPC_TRANSPORT_ERROR, "Method not allowed.");
        v.allow = MCP_HTTP_ALLOW;
        return v;
    }

    n = http_request_header_count(req, "MCP-Protocol-Version");
    const char *version = http_request_header(req, "MCP-Protocol-Version");
    if (n > 1)
        return refuse(MCP_HTTP_BAD_VERSION, 400, MCP_RPC_HEADER_MISMATCH,
                      "Bad Request: repeated MCP-Protocol-Version header");
    if (version && !mcp_http_version_supported(pol, version)) {
        v = refuse(MCP_HTTP_UNSUPPORTED_VERSION, 400, MCP_RPC_UNSUPPORTED_VERSION,
                   "Bad Request: Unsupported protocol version");
        v.version = version;
        v.version_from_header = true;
        return v;
    }
    if (version && req->method != HTTP_POST && version_post_only(pol, version)) {
        v = refuse(MCP_HTTP_METHOD, 405, MCP_RPC_TRANSPORT_ERROR,
                   "Method not allowed: this protocol version has no GET stream and no sessions");
        v.allow = "POST";
        return v;
    }

    if (req->method == HTTP_POST) {
        if (!mcp_http_accepts_json(req) || !mcp_http_accepts_sse(req))
            return refuse(MCP_HTTP_NOT_ACCEPTABLE, 406, MCP_RPC_TRANSPORT_ERROR,
                          "Not Acceptable: Client must accept both application/json and "
                          "text/event-stream");
        if (!mcp_http_content_is_json(req))
            return refuse(MCP_HTTP_UNSUPPORTED_MEDIA, 415, MCP_RPC_TRANSPORT_ERROR,
                          "Unsupported Media Type: Content-Type must be application/json");
    } else if (req->method == HTTP_GET && !mcp_http_accepts_sse(req)) {
        return refuse(MCP_HTTP_NOT_ACCEPTABLE, 406, MCP_RPC_TRANSPORT_ERROR,
                      "Not Acceptable: Client must accept text/event-stream");
    }

    memset(&v, 0, sizeof(v));
    v.version_from_header = version != NULL;
    v.version =
        version ? version
                : (pol && pol->default_version ? pol->default_version : MCP_HTTP_DEFAULT_VERSION);
    return v;
}

json_t *mcp_http_verdict_json(const struct mcp_http_verdict *v, const struct mcp_http_policy *pol,
                              json_t *id)
{
    json_t *err =
        json_pack("{s:i,s:s}", "code", v->rpc_code, "message", v->message ? v->message : "error");
    if (!err)
        return NULL;
    if (v->reason == MCP_HTTP_UNSUPPORTED_VERSION) {
        size_t n;
        const char *const *list = LIST(pol, versions, default_versions, &n);
        json_t *sup = json_array();
        for (size_t i = 0; sup && i < n; i++) {
            if (json_array_append_new(sup, json_string(list[i])) < 0) {
                json_decref(sup);
                sup = NULL;
            }
        }
        /* A header value need not be UTF-8; such a value is echoed as null. */
        json_t *req = v->version ? json_string(v->version) : NULL;
        if (!sup || json_object_set_new(err, "data",
                                        json_pack("{s:o,s:o}", "supported", sup, "requested",
                                                  req ? req : json_null())) < 0) {
            json_decref(err);
            return NULL;
        }
    }
    return json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", err);
}

int mcp_http_write_verdict(struct http_buf *b, const struct http_request *req,
                           const struct mcp_http_verdict *v, const struct mcp_http_policy *pol,
                           json_t *id, bool keep_alive)
{
    json_t *body = mcp_http_verdict_json(v, pol, id);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        b->failed = true;
        return -ENOMEM;
    }
    int rv;
    if ((rv = http_write_status(b, v->status)) == 0 &&
        (rv = http_write_connection(b, req, keep_alive)) == 0 &&
        (!v->allow || (rv = http_write_header(b, "Allow", v->allow)) == 0))
        rv = http_write_body(b, "application/json", text, strlen(text));
    free(text);
    return rv;
}

/* A version the revision scheme could name: YYYY-MM-DD. */
static bool version_is_date(const char *v)
{
    static const char shape[] = "0000-00-00";
    if (!v || strlen(v) != sizeof(shape) - 1)
        return false;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == '-' ? v[i] != '-' : !is_digit(v[i]))
            return false;
    return true;
}

bool mcp_http_is_stateless(const struct http_request *req)
{
    const char *pv = http_request_header(req, "MCP-Protocol-Version");
    if (version_is_date(pv) && strcmp(pv, MCP_HTTP_STATELESS_VERSION) >= 0)
        return true;
    static const char meta_key[] = "io.modelcontextprotocol/protocolVersion";
    if (!memmem(req->body, req->body_len, meta_key, sizeof(meta_key) - 1))
        return false;
    json_t *msg = json_loadb(req->body, req->body_len, 0, NULL);
    json_t *meta = json_object_get(json_object_get(msg, "params"), "_meta");
    bool yes = json_is_string(json_object_get(msg, "method")) && json_object_get(meta, meta_key);
    json_decref(msg);
    return yes;
}
