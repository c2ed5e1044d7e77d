/* The wire contract's encodings (wire.h). */
#define _GNU_SOURCE
#include "ipc/wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ipc/dlink.h"

#define REC_MSG 0x01
#define REC_REPLY 0x02
#define REC_HEAD 11 /* kind, tok u64, a u16 (listener or status) */

static const char *const op_names[WIRE_OP_COUNT] = {
    [WIRE_MSG] = "msg",
    [WIRE_STREAM] = "stream",
    [WIRE_DELETE] = "delete",
    [WIRE_OPEN] = "open",
    [WIRE_STATELESS] = "stateless",
    [WIRE_STATELESS_CANCEL] = "stateless_cancel",
    [WIRE_SESSION_LIST] = "session_list",
    [WIRE_SESSION_SHOW] = "session_show",
    [WIRE_SESSION_KILL] = "session_kill",
    [WIRE_TOOL_FETCH] = "tool_fetch",
    [WIRE_TOOL_RESULT] = "tool_result",
    [WIRE_POSITIONS] = "positions",
    [WIRE_PING] = "ping",
};

const char *wire_op_name(enum wire_op op)
{
    return op > WIRE_OP_NONE && op < WIRE_OP_COUNT ? op_names[op] : "none";
}

static enum wire_op op_parse(const char *s)
{
    for (int i = WIRE_OP_NONE + 1; s && i < WIRE_OP_COUNT; i++)
        if (strcmp(op_names[i], s) == 0)
            return (enum wire_op)i;
    return WIRE_OP_NONE;
}

/* ---- method labels ---- */

const char *const wire_methods[] = {
    "", "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel", "server/discover",
    "subscriptions/listen", "notifications/initialized", "notifications/cancelled",
    "notifications/roots/list_changed", "batch", "response", "invalid", "other",
};
const int wire_method_count = (int)(sizeof(wire_methods) / sizeof(wire_methods[0]));

int wire_method_index(const char *label)
{
    for (int i = 1; label && i < wire_method_count; i++)
        if (wire_methods[i] == label)
            return i;
    for (int i = 1; label && i < wire_method_count; i++)
        if (strcmp(wire_methods[i], label) == 0)
            return i;
    return 0;
}

const char *wire_method_label(const json_t *msg)
{
    /* the table's own strings (the last four are batch, response, invalid, other), so
     * that callers may compare labels by address */
    const int other = wire_method_count - 1;
    if (json_is_array(msg))
        return wire_methods[other - 3];
    const char *m = json_string_value(json_object_get(msg, "method"));
    if (!m)
        return wire_methods[json_object_get(msg, "id") ? other - 2 : other - 1];
    int i = wire_method_index(m);
    return wire_methods[i > 0 && i < other - 3 ? i : other];
}

int wire_transports(long http_port, long tcp_port, bool stdio, const char *out[5])
{
    int n = 0;
    if (http_port > 0) {
        out[n++] = "http";
        out[n++] = "sse";
        out[n++] = "websocket";
    }
    if (tcp_port > 0)
        out[n++] = "tcp";
    if (stdio)
        out[n++] = "stdio";
    return n;
}

/* ---- compact records ---- */

static void put_u64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)((v >> (8 * i)) & 0xff);
}

static uint64_t get_u64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | u[i];
    return v;
}

static char *put_head(char *p, char kind, uint64_t tok, int u16)
{
    p[0] = kind;
    put_u64(p + 1, tok);
    p[9] = (char)(u16 & 0xff);
    p[10] = (char)((u16 >> 8) & 0xff);
    return p + REC_HEAD;
}

/* A length-prefixed short string (the caller checked it fits in 255 bytes). */
static char *put_str(char *p, const char *str, size_t n)
{
    *p = (char)n;
    memcpy(p + 1, str, n);
    return p + 1 + n;
}

static int get_str(const char **pp, const char *end, char *out, size_t outlen)
{
    if (*pp >= end)
        return -1;
    size_t n = (unsigned char)**pp;
    if ((size_t)(end - *pp) < 1 + n || n >= outlen)
        return -1;
    memcpy(out, *pp + 1, n);
    out[n] = '\0';
    *pp += 1 + n;
    return 0;
}

static int get_head(const char *data, size_t len, char kind, uint64_t *tok, int *u16)
{
    if (len < REC_HEAD || data[0] != kind)
        return -1;
    *tok = get_u64(data + 1);
    *u16 = (unsigned char)data[9] | (unsigned char)data[10] << 8;
    return 0;
}

/* ---- envelopes ---- */

/* An envelope (header text, '\n', body) after `prefix` bytes of room, malloc'd. */
static char *envelope_alloc(const json_t *hdr, const char *body, size_t blen, size_t prefix,
                            size_t *len, size_t *body_off)
{
    char *h = json_dumps(hdr, JSON_COMPACT);
    if (!h)
        return NULL;
    size_t hl = strlen(h), n = hl + 1 + blen;
    char *f = n <= DLINK_MAX_FRAME ? malloc(prefix + n) : NULL;
    if (f) {
        memcpy(f + prefix, h, hl);
        f[prefix + hl] = '\n';
        if (blen)
            memcpy(f + prefix + hl + 1, body, blen);
        *len = prefix + n;
        if (body_off)
            *body_off = prefix + hl + 1;
    }
    free(h);
    return f;
}

static nng_msg *envelope_msg(const json_t *hdr, const char *body, size_t blen)
{
    size_t len;
    char *e = hdr ? envelope_alloc(hdr, body, blen, 0, &len, NULL) : NULL;
    nng_msg *m = NULL;
    if (e && nng_msg_alloc(&m, 0) == 0 && nng_msg_append(m, e, len) != 0) {
        nng_msg_free(m);
        m = NULL;
    }
    free(e);
    return m;
}

/* Queues an envelope on a link, the header dumped straight into its buffer. */
static int envelope_send(struct dlink *l, const json_t *hdr, const char *body, size_t blen)
{
    size_t guess = 256;
    for (int attempt = 0; hdr && attempt < 2; attempt++) {
        char *p = dlink_reserve(l, guess + 1 + blen);
        if (!p)
            return -1;
        size_t hl = json_dumpb(hdr, p, guess, JSON_COMPACT);
        if (hl == 0)
            return -1;
        if (hl > guess) {
            guess = hl;
            continue;
        }
        p[hl] = '\n';
        if (blen)
            memcpy(p + hl + 1, body, blen);
        dlink_commit(l, hl + 1 + blen);
        return 0;
    }
    return -1;
}

/* Splits an envelope: *hdr is new, *body points into data. -1 if malformed. */
static int envelope_split(const char *data, size_t len, json_t **hdr, const char **body,
                          size_t *blen)
{
    const char *nl = memchr(data, '\n', len);
    if (!nl)
        return -1;
    *hdr = json_loadb(data, (size_t)(nl - data), 0, NULL);
    if (!json_is_object(*hdr)) {
        json_decref(*hdr);
        *hdr = NULL;
        return -1;
    }
    *body = nl + 1;
    *blen = len - (size_t)(nl + 1 - data);
    return 0;
}

static void set_str(json_t *o, const char *k, const char *v)
{
    if (v && *v)
        json_object_set_new(o, k, json_string(v));
}

/* An optional string field: absent and null are NULL; another type is malformed. */
static int get_opt_str(const json_t *o, const char *k, const char **out)
{
    json_t *v = json_object_get(o, k);
    *out = json_string_value(v);
    return !v || json_is_null(v) || json_is_string(v) ? 0 : -1;
}

static int get_opt_copy(const json_t *o, const char *k, char *out, size_t outlen)
{
    const char *v;
    if (get_opt_str(o, k, &v) != 0 || (v && strlen(v) >= outlen))
        return -1;
    snprintf(out, outlen, "%s", v ? v : "");
    return 0;
}

static uint64_t get_tok(const json_t *o)
{
    return (uint64_t)json_integer_value(json_object_get(o, "tok"));
}

/* ---- requests ---- */

static json_t *req_header(const struct wire_req *r, bool link)
{
    if (r->op <= WIRE_OP_NONE || r->op >= WIRE_OP_COUNT)
        return NULL;
    json_t *h = json_pack("{s:s}", "op", op_names[r->op]);
    if (link) {
        json_object_set_new(h, "tok", json_integer((json_int_t)r->tok));
        json_object_set_new(h, "lid", json_integer(r->lid));
    }
    set_str(h, "sid", r->sid);
    set_str(h, "tr", r->tr);
    set_str(h, "pv", r->pv);
    if (r->resume)
        json_object_set_new(h, "last", json_pack("[i,I]", r->last_stream, (json_int_t)r->last_seq));
    if (r->resume && r->follow_tok)
        json_object_set_new(h, "follow", json_integer((json_int_t)r->follow_tok));
    if (r->http)
        json_object_set_new(h, "http", json_true());
    set_str(h, "mm", r->mm);
    set_str(h, "mn", r->mn);
    if (r->mp && json_object_size(r->mp))
        json_object_set(h, "mp", (json_t *)r->mp);
    set_str(h, "key", r->key);
    set_str(h, "token", r->token);
    return h;
}

char *wire_req_frame(const struct wire_req *r, size_t *len, size_t *body_off)
{
    if (r->op == WIRE_MSG) {
        /* the hot path: a compact record */
        size_t trl = strnlen(r->tr, WIRE_TR_MAX), sl = strnlen(r->sid, WIRE_SID_MAX);
        size_t n = REC_HEAD + 1 + trl + 1 + sl + r->blen;
        if (trl >= WIRE_TR_MAX || sl >= WIRE_SID_MAX || n > DLINK_MAX_FRAME)
            return NULL;
        char *f = malloc(DLINK_HDR + n);
        if (!f)
            return NULL;
        dlink_frame_prefix(f, n);
        char *p = put_head(f + DLINK_HDR, REC_MSG, r->tok, r->lid);
        p = put_str(p, r->tr, trl);
        p = put_str(p, r->sid, sl);
        *body_off = (size_t)(p - f);
        if (r->blen)
            memcpy(p, r->body, r->blen);
        *len = DLINK_HDR + n;
        return f;
    }
    json_t *h = req_header(r, true);
    char *f = h ? envelope_alloc(h, r->body, r->blen, DLINK_HDR, len, body_off) : NULL;
    json_decref(h);
    if (f)
        dlink_frame_prefix(f, *len - DLINK_HDR);
    return f;
}

nng_msg *wire_req_msg(const struct wire_req *r)
{
    json_t *h = req_header(r, false);
    nng_msg *m = envelope_msg(h, r->body, r->blen);
    json_decref(h);
    return m;
}

int wire_req_parse(const char *data, size_t len, struct wire_req *r, json_t **keep)
{
    memset(r, 0, sizeof(*r));
    *keep = NULL;
    if (len > 0 && data[0] == REC_MSG) {
        const char *p = data + REC_HEAD, *end = data + len;
        if (get_head(data, len, REC_MSG, &r->tok, &r->lid) != 0 ||
            get_str(&p, end, r->tr, sizeof(r->tr)) != 0 ||
            get_str(&p, end, r->sid, sizeof(r->sid)) != 0)
            return -1;
        r->op = WIRE_MSG;
        r->body = p;
        r->blen = (size_t)(end - p);
        return 0;
    }
    json_t *h;
    if (envelope_split(data, len, &h, &r->body, &r->blen) != 0)
        return -1;
    *keep = h;
    r->op = op_parse(json_string_value(json_object_get(h, "op")));
    r->tok = get_tok(h);
    r->lid = (int)json_integer_value(json_object_get(h, "lid"));
    json_t *last = json_object_get(h, "last");
    if (json_is_array(last)) {
        r->resume = true;
        r->last_stream = (int)json_integer_value(json_array_get(last, 0));
        r->last_seq = (int64_t)json_integer_value(json_array_get(last, 1));
        json_int_t ft = json_integer_value(json_object_get(h, "follow"));
        r->follow_tok = ft > 0 ? (uint64_t)ft : 0;
    }
    r->http = json_is_true(json_object_get(h, "http"));
    if (get_opt_copy(h, "sid", r->sid, sizeof(r->sid)) != 0 ||
        get_opt_copy(h, "tr", r->tr, sizeof(r->tr)) != 0 || get_opt_str(h, "pv", &r->pv) != 0 ||
        get_opt_str(h, "mm", &r->mm) != 0 || get_opt_str(h, "mn", &r->mn) != 0 ||
        get_opt_str(h, "key", &r->key) != 0 || get_opt_str(h, "token", &r->token) != 0)
        return -1;
    json_t *mp = json_object_get(h, "mp");
    if (mp && !json_is_object(mp))
        return -1;
    r->mp = mp;
    return 0;
}

/* ---- replies and events ---- */

static bool reply_is_plain(const struct wire_reply *r)
{
    return r->stream == 0 && r->seq == 0 && !r->cancelled && !r->done && !r->followed &&
           !r->data;
}

static json_t *reply_header(const struct wire_reply *r, bool link)
{
    json_t *h = json_pack("{s:i}", "st", r->st);
    if (r->method > 0 && r->method < wire_method_count)
        json_object_set_new(h, "mi", json_integer(r->method));
    if (link)
        json_object_set_new(h, "tok", json_integer((json_int_t)r->tok));
    set_str(h, "sid", r->sid);
    if (r->stream)
        json_object_set_new(h, "stream", json_integer(r->stream));
    if (r->seq)
        json_object_set_new(h, "seq", json_integer((json_int_t)r->seq));
    if (r->cancelled)
        json_object_set_new(h, "cancelled", json_true());
    if (r->done)
        json_object_set_new(h, "done", json_true());
    if (r->followed)
        json_object_set_new(h, "followed", json_true());
    if (r->data)
        json_object_set(h, "data", r->data);
    return h;
}

int wire_reply_send(struct dlink *l, const struct wire_reply *r)
{
    if (!reply_is_plain(r)) {
        json_t *h = reply_header(r, true);
        int rc = envelope_send(l, h, r->body, r->blen);
        json_decref(h);
        return rc;
    }
    size_t sl = strnlen(r->sid, WIRE_SID_MAX);
    if (sl >= WIRE_SID_MAX)
        return -1;
    char *p = dlink_reserve(l, REC_HEAD + 2 + sl + r->blen);
    if (!p)
        return -1;
    char *q = put_head(p, REC_REPLY, r->tok, r->st);
    *q++ = (char)(r->method > 0 && r->method < wire_method_count ? r->method : 0);
    q = put_str(q, r->sid, sl);
    if (r->blen)
        memcpy(q, r->body, r->blen);
    dlink_commit(l, (size_t)(q - p) + r->blen);
    return 0;
}

nng_msg *wire_reply_msg(const struct wire_reply *r)
{
    json_t *h = reply_header(r, false);
    nng_msg *m = envelope_msg(h, r->body, r->blen);
    json_decref(h);
    return m;
}

int wire_event_send(struct dlink *l, const struct wire_event *e)
{
    json_t *h = json_pack("{s:b,s:s,s:i,s:I}", "ev", 1, "sid", e->sid, "stream", e->stream,
                          "seq", (json_int_t)e->seq);
    if (e->tok)
        json_object_set_new(h, "tok", json_integer((json_int_t)e->tok));
    if (e->close)
        json_object_set_new(h, "close", json_true());
    int rc = envelope_send(l, h, e->body, e->blen);
    json_decref(h);
    return rc;
}

int wire_from_shard_parse(const char *data, size_t len, struct wire_reply *r,
                          struct wire_event *e, json_t **keep)
{
    *keep = NULL;
    if (len > 0 && data[0] == REC_REPLY) {
        memset(r, 0, sizeof(*r));
        const char *p = data + REC_HEAD, *end = data + len;
        if (get_head(data, len, REC_REPLY, &r->tok, &r->st) != 0 || p >= end)
            return -1;
        r->method = (unsigned char)*p++;
        if (r->method >= wire_method_count || get_str(&p, end, r->sid, sizeof(r->sid)) != 0)
            return -1;
        r->body = p;
        r->blen = (size_t)(end - p);
        return WIRE_REPLY;
    }
    json_t *h;
    const char *body;
    size_t blen;
    if (envelope_split(data, len, &h, &body, &blen) != 0)
        return -1;
    *keep = h;
    if (json_is_true(json_object_get(h, "ev"))) {
        if (!e)
            return -1;
        memset(e, 0, sizeof(*e));
        e->tok = get_tok(h);
        e->stream = (int)json_integer_value(json_object_get(h, "stream"));
        e->seq = (int64_t)json_integer_value(json_object_get(h, "seq"));
        e->close = json_is_true(json_object_get(h, "close"));
        e->body = body;
        e->blen = blen;
        return get_opt_copy(h, "sid", e->sid, sizeof(e->sid)) == 0 ? WIRE_EVENT : -1;
    }
    memset(r, 0, sizeof(*r));
    json_t *st = json_object_get(h, "st");
    if (!json_is_integer(st))
        return -1;
    r->tok = get_tok(h);
    r->st = (int)json_integer_value(st);
    json_int_t mi = json_integer_value(json_object_get(h, "mi"));
    r->method = mi > 0 && mi < wire_method_count ? (int)mi : 0;
    r->stream = (int)json_integer_value(json_object_get(h, "stream"));
    r->seq = (int64_t)json_integer_value(json_object_get(h, "seq"));
    r->cancelled = json_is_true(json_object_get(h, "cancelled"));
    r->done = json_is_true(json_object_get(h, "done"));
    r->followed = json_is_true(json_object_get(h, "followed"));
    r->data = json_object_get(h, "data");
    r->body = body;
    r->blen = blen;
    return get_opt_copy(h, "sid", r->sid, sizeof(r->sid)) == 0 ? WIRE_REPLY : -1;
}
