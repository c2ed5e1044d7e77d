/*
 * cmcp-bench connections: connect, session setup, requests and answers over
 * Streamable HTTP (application/json or text/event-stream answers, content
 * length or chunked) and newline-delimited JSON-RPC over TCP; the per-worker
 * side of the phases (see cmcp_bench.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "tools/cmcp_bench.h"

#define MAX_HEAD 65536
#define MAX_BODY (16u << 20)

const char *const err_names[E_KINDS] = {"connect", "setup",   "status", "rpc_error", "tool_error",
                                        "timeout", "closed", "parse",  "overload"};

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static bool in_window(uint64_t t0)
{
    return t0 >= S.t_measure && t0 < S.t_end;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "cmcp-bench: out of memory\n");
        exit(2);
    }
    return q;
}

/* ------------------------------------------------------------------ JSON -- */
/* A one-pass skipper, enough to learn a JSON-RPC message's id, whether it has
 * result or error, and result.isError; it never builds a tree. */

static const char *jws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *jstr(const char *p, const char *e)
{
    if (p >= e || *p != '"')
        return NULL;
    for (p++; p < e; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }
        if (*p == '"')
            return p + 1;
    }
    return NULL;
}

static const char *jval(const char *p, const char *e, int depth)
{
    p = jws(p, e);
    if (p >= e || depth > 64)
        return NULL;
    if (*p == '"')
        return jstr(p, e);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        bool obj = *p == '{';
        p = jws(p + 1, e);
        if (p < e && *p == close)
            return p + 1;
        for (int guard = 0; guard < (1 << 24); guard++) {
            if (obj) {
                p = jstr(jws(p, e), e);
                if (!p)
                    return NULL;
                p = jws(p, e);
                if (p >= e || *p != ':')
                    return NULL;
                p++;
            }
            p = jval(p, e, depth + 1);
            if (!p)
                return NULL;
            p = jws(p, e);
            if (p >= e)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            p++;
        }
        return NULL;
    }
    const char *s = p;
    while (p < e && (strchr("+-.0123456789eE", *p) || (*p >= 'a' && *p <= 'z')))
        p++;
    return p > s ? p : NULL;
}

struct jinfo {
    bool has_id, has_result, has_error, is_error, has_method;
    long long id;
};

static bool key_is(const char *k, const char *kend, const char *name)
{
    size_t n = strlen(name);
    return (size_t)(kend - k) == n + 2 && memcmp(k + 1, name, n) == 0;
}

/* Iterates the object at p; calls on(key, key end, value, value end). NULL if malformed. */
static const char *jobj(const char *p, const char *e, struct jinfo *ji, int level)
{
    p = jws(p, e);
    if (p >= e || *p != '{')
        return NULL;
    p = jws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (int guard = 0; guard < (1 << 20); guard++) {
        const char *k = jws(p, e);
        const char *kend = jstr(k, e);
        if (!kend)
            return NULL;
        p = jws(kend, e);
        if (p >= e || *p != ':')
            return NULL;
        const char *v = jws(p + 1, e);
        const char *vend;
        if (level == 0 && key_is(k, kend, "result") && v < e && *v == '{') {
            ji->has_result = true;
            vend = jobj(v, e, ji, 1);
        } else {
            vend = jval(v, e, 1);
        }
        if (!vend)
            return NULL;
        if (level == 0) {
            if (key_is(k, kend, "id") && v < e && *v != '"' && *v != 'n') {
                ji->has_id = true;
                ji->id = strtoll(v, NULL, 10);
            } else if (key_is(k, kend, "id") && v < e && *v == '"') {
                ji->has_id = true;
                ji->id = strtoll(v + 1, NULL, 10);
            } else if (key_is(k, kend, "result")) {
                ji->has_result = true;
            } else if (key_is(k, kend, "error")) {
                ji->has_error = true;
            } else if (key_is(k, kend, "method")) {
                ji->has_method = true;
            }
        } else if (key_is(k, kend, "isError") && vend - v == 4 && memcmp(v, "true", 4) == 0) {
            ji->is_error = true;
        }
        p = jws(vend, e);
        if (p >= e)
            return NULL;
        if (*p == '}')
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
    return NULL;
}

static bool jwalk(const char *p, size_t n, struct jinfo *ji)
{
    memset(ji, 0, sizeof(*ji));
    return jobj(p, p + n, ji, 0) != NULL;
}

/* ------------------------------------------------------------- requests -- */

static size_t build_body(char *out, size_t cap, int kind, uint64_t id)
{
    int n;
    if (kind == R_INIT)
        n = snprintf(out, cap,
                     "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{"
                     "\"protocolVersion\":\"%s\",\"capabilities\":{},\"clientInfo\":{\"name\":"
                     "\"cmcp-bench\",\"version\":\"1\"}}}",
                     O.protocol_version);
    else if (kind == R_INITIALIZED)
        n = snprintf(out, cap, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    else if (O.params)
        n = snprintf(out, cap, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"%s\",\"params\":%s}",
                     (unsigned long long)id, O.method, O.params);
    else if (strcmp(O.method, "tools/call") == 0)
        n = snprintf(out, cap,
                     "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"tools/call\",\"params\":{"
                     "\"name\":\"%s\",\"arguments\":%s}}",
                     (unsigned long long)id, O.tool, O.args);
    else
        n = snprintf(out, cap, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"%s\"}",
                     (unsigned long long)id, O.method);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}

static void conn_fail(struct conn *c, int kind);
static void conn_complete(struct conn *c, struct inflight *f, int err, uint64_t t_done);
static void conn_ready(struct conn *c);
static void worker_load_maybe_done(struct worker *w);
static void worker_check_maybe_done(struct worker *w);

static void io_set(struct conn *c, bool want_write)
{
    if (c->want_write == want_write)
        return;
    c->want_write = want_write;
    ev_io_stop(c->w->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ | (want_write ? EV_WRITE : 0));
    ev_io_start(c->w->loop, &c->io);
}

static void conn_flush(struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                io_set(c, true);
                return;
            }
            conn_fail(c, E_CLOSED);
            return;
        }
        c->w->st.bytes_out += (uint64_t)n;
        c->woff += (uint32_t)n;
    }
    c->woff = c->wlen = 0;
    io_set(c, false);
}

static void conn_write(struct conn *c, const char *data, size_t len)
{
    if (c->wlen == 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            conn_fail(c, E_CLOSED);
            return;
        }
        if (n > 0) {
            c->w->st.bytes_out += (uint64_t)n;
            data += n;
            len -= (size_t)n;
        }
        if (len == 0)
            return;
    }
    if (c->wlen + len > c->wcap) {
        c->wcap = (uint32_t)(c->wlen + len + 1024);
        c->wbuf = xrealloc(c->wbuf, c->wcap);
    }
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += (uint32_t)len;
    io_set(c, true);
}

static struct inflight *slot_free(struct conn *c)
{
    int n = O.transport == T_HTTP ? 1 : O.depth;
    for (int i = 0; i < n; i++)
        if (c->fl[i].kind == 0xff)
            return &c->fl[i];
    return NULL;
}

/* Sends one request of kind on c (a notification when kind is R_INITIALIZED
 * over TCP). t0 is its start for the latency: intended (open loop) or now. */
static void conn_send(struct conn *c, int kind, uint64_t t0)
{
    struct worker *w = c->w;
    bool expect_answer = !(kind == R_INITIALIZED && O.transport == T_TCP);
    struct inflight *f = NULL;
    uint64_t id = kind == R_INIT ? 0 : c->next_id++;
    if (expect_answer) {
        f = slot_free(c);
        if (!f) {
            conn_fail(c, E_PARSE); /* cannot happen: callers check outstanding */
            return;
        }
        f->id = id;
        f->kind = (uint8_t)kind;
        f->t0 = t0;
        f->measured = kind == R_LOAD && in_window(t0);
        if (c->outstanding++ == 0) {
            ev_timer_stop(w->loop, &c->tmo);
            ev_timer_set(&c->tmo, O.request_timeout, 0);
            ev_timer_start(w->loop, &c->tmo);
        }
        if (kind == R_LOAD)
            w->inflight_load++;
    }
    char body[8192];
    size_t blen = build_body(body, sizeof(body), kind, id);
    size_t need = blen + 1024 + (c->sid ? strlen(c->sid) : 0);
    if (need > w->out_cap) {
        w->out_cap = need;
        w->out = xrealloc(w->out, need);
    }
    size_t n;
    if (O.transport == T_HTTP) {
        int h = snprintf(w->out, w->out_cap,
                         "POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: cmcp-bench\r\n"
                         "Accept: %s\r\nContent-Type: application/json\r\n",
                         O.path, O.host, O.port, O.accept);
        if (c->sid)
            h += snprintf(w->out + h, w->out_cap - (size_t)h,
                          "Mcp-Session-Id: %s\r\nMCP-Protocol-Version: %s\r\n", c->sid,
                          O.protocol_version);
        h += snprintf(w->out + h, w->out_cap - (size_t)h, "Content-Length: %zu\r\n\r\n", blen);
        memcpy(w->out + h, body, blen);
        n = (size_t)h + blen;
    } else {
        memcpy(w->out, body, blen);
        w->out[blen] = '\n';
        n = blen + 1;
    }
    conn_write(c, w->out, n);
}

/* ------------------------------------------------------------- answers -- */

static int classify_msg(const char *p, size_t n, int *final_err, bool *final)
{
    struct jinfo ji;
    if (!jwalk(p, n, &ji))
        return -1;
    if (ji.has_result || ji.has_error) {
        *final = true;
        *final_err = ji.has_error ? E_RPC : ji.is_error ? E_TOOL : -1;
    } else {
        *final = false;
    }
    return 0;
}

/* An SSE body: events separated by blank lines, each JSON-RPC message in data lines. */
static int classify_sse(struct worker *w, const char *b, size_t n, int *err)
{
    const char *e = b + n, *p = b;
    size_t dlen = 0;
    char *data = w->sse;
    size_t dcap = w->sse_cap;
    bool got = false;
    for (int guard = 0; guard < (1 << 20) && p <= e; guard++) {
        const char *nl = p < e ? memchr(p, '\n', (size_t)(e - p)) : NULL;
        const char *le = nl ? nl : e;
        size_t ll = (size_t)(le - p);
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll == 0) { /* end of an event */
            if (dlen) {
                bool fin = false;
                int fe = -1;
                if (classify_msg(data, dlen, &fe, &fin) != 0)
                    return -1;
                if (fin) {
                    got = true;
                    *err = fe;
                } else {
                    w->st.events++;
                }
                dlen = 0;
            }
        } else if (ll >= 5 && memcmp(p, "data:", 5) == 0) {
            const char *d = p + 5;
            size_t dl = ll - 5;
            if (dl && *d == ' ')
                d++, dl--;
            if (dlen + dl + 1 > dcap) {
                dcap = dlen + dl + 4096;
                data = w->sse = xrealloc(data, dcap);
                w->sse_cap = dcap;
            }
            if (dlen)
                data[dlen++] = '\n';
            memcpy(data + dlen, d, dl);
            dlen += dl;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    if (dlen) { /* a last event without its blank line */
        bool fin = false;
        int fe = -1;
        if (classify_msg(data, dlen, &fe, &fin) != 0)
            return -1;
        if (fin) {
            got = true;
            *err = fe;
        }
    }
    return got ? 0 : -1;
}

static bool hdr_is(const char *l, size_t ll, const char *name, const char **val, size_t *vlen)
{
    size_t n = strlen(name);
    if (ll <= n || l[n] != ':' || strncasecmp(l, name, n) != 0)
        return false;
    const char *v = l + n + 1;
    const char *e = l + ll;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return true;
}

/* One HTTP response from buf: bytes used, 0 if incomplete, -1 if malformed. */
static long http_one(struct conn *c, const char *buf, size_t len)
{
    struct worker *w = c->w;
    const char *he = memmem(buf, len, "\r\n\r\n", 4);
    if (!he)
        return len > MAX_HEAD ? -1 : 0;
    size_t hlen = (size_t)(he - buf) + 4;
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    int status = atoi(buf + 9);
    long clen = -1;
    bool chunked = false, sse = false, close_conn = false;
    const char *sid = NULL;
    size_t sidlen = 0;
    const char *p = memchr(buf, '\n', hlen);
    for (int guard = 0; p && p + 1 < he && guard < 256; guard++) {
        const char *l = p + 1;
        const char *nl = memchr(l, '\n', (size_t)(he + 2 - l));
        if (!nl)
            break;
        size_t ll = (size_t)(nl - l);
        if (ll && l[ll - 1] == '\r')
            ll--;
        const char *v;
        size_t vl;
        if (hdr_is(l, ll, "content-length", &v, &vl))
            clen = strtol(v, NULL, 10);
        else if (hdr_is(l, ll, "transfer-encoding", &v, &vl))
            chunked = vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0;
        else if (hdr_is(l, ll, "content-type", &v, &vl))
            sse = vl >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
        else if (hdr_is(l, ll, "mcp-session-id", &v, &vl))
            sid = v, sidlen = vl;
        else if (hdr_is(l, ll, "connection", &v, &vl))
            close_conn = vl == 5 && strncasecmp(v, "close", 5) == 0;
        p = nl;
    }
    const char *body;
    size_t blen, used;
    if (chunked) {
        size_t off = hlen, bl = 0;
        for (int guard = 0;; guard++) {
            if (guard > 100000)
                return -1;
            const char *cl = memmem(buf + off, len - off, "\r\n", 2);
            if (!cl)
                return len - off > 64 ? -1 : 0;
            char *endp;
            unsigned long sz = strtoul(buf + off, &endp, 16);
            if (endp == buf + off || sz > MAX_BODY)
                return -1;
            size_t dstart = (size_t)(cl - buf) + 2;
            if (sz == 0) { /* last chunk; no trailers expected */
                if (len < dstart + 2)
                    return 0;
                used = dstart + 2;
                break;
            }
            if (len < dstart + sz + 2)
                return 0;
            if (bl + sz > MAX_BODY)
                return -1;
            if (bl + sz > w->body_cap) {
                w->body_cap = bl + sz + 4096;
                w->body = xrealloc(w->body, w->body_cap);
            }
            memcpy(w->body + bl, buf + dstart, sz);
            bl += sz;
            off = dstart + sz + 2;
        }
        body = w->body;
        blen = bl;
    } else if (clen >= 0) {
        if (clen > (long)MAX_BODY)
            return -1;
        if (len < hlen + (size_t)clen)
            return 0;
        body = buf + hlen;
        blen = (size_t)clen;
        used = hlen + (size_t)clen;
    } else if (status == 204 || status == 304 || (status >= 100 && status < 200)) {
        body = buf + hlen;
        blen = 0;
        used = hlen;
    } else {
        return -1; /* bodies delimited by the close are not supported */
    }
    if (status >= 100 && status < 200)
        return (long)used;

    struct inflight *f = &c->fl[0];
    if (c->outstanding == 0)
        return -1;
    int err = -1;
    if (status < 200 || status >= 300) {
        err = E_STATUS;
        if (status > 0 && status < 600)
            w->st.http_status[status]++;
    } else if (f->kind == R_INITIALIZED) {
        err = -1;
    } else if (sse) {
        if (classify_sse(w, body, blen, &err) != 0)
            err = E_PARSE;
    } else {
        bool fin = false;
        if (blen == 0 || classify_msg(body, blen, &err, &fin) != 0 || !fin)
            err = E_PARSE;
    }
    if (f->kind == R_INIT && err < 0) {
        if (sid && sidlen && sidlen < 256) {
            free(c->sid);
            c->sid = strndup(sid, sidlen);
        } else if (!O.no_init) {
            err = E_SETUP;
        }
    }
    c->close_after = close_conn;
    w->st.bytes_in += used;
    conn_complete(c, f, err, now_ns());
    return (long)used;
}

/* One line from buf: bytes used, 0 if incomplete, -1 if malformed. */
static long tcp_one(struct conn *c, const char *buf, size_t len)
{
    const char *nl = memchr(buf, '\n', len);
    if (!nl)
        return len > MAX_BODY ? -1 : 0;
    size_t ll = (size_t)(nl - buf);
    size_t used = ll + 1;
    if (ll && buf[ll - 1] == '\r')
        ll--;
    c->w->st.bytes_in += used;
    if (ll == 0)
        return (long)used;
    struct jinfo ji;
    if (!jwalk(buf, ll, &ji))
        return -1;
    if (!(ji.has_result || ji.has_error) || !ji.has_id) {
        c->w->st.events++; /* a notification or a server request */
        return (long)used;
    }
    for (int i = 0; i < O.depth; i++) {
        struct inflight *f = &c->fl[i];
        if (f->kind != 0xff && (long long)f->id == ji.id) {
            int err = ji.has_error ? E_RPC : ji.is_error ? E_TOOL : -1;
            conn_complete(c, f, err, now_ns());
            return (long)used;
        }
    }
    return (long)used; /* an answer to nothing outstanding: ignored */
}

static void conn_input(struct conn *c, const char *data, size_t n)
{
    uint32_t gen = c->gen;
    const char *buf = data;
    size_t len = n;
    if (c->rlen) {
        if (c->rlen + n > c->rcap) {
            c->rcap = (uint32_t)(c->rlen + n + 4096);
            c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        memcpy(c->rbuf + c->rlen, data, n);
        c->rlen += (uint32_t)n;
        buf = c->rbuf;
        len = c->rlen;
    }
    size_t off = 0;
    for (size_t guard = 0; off < len && guard <= len; guard++) {
        long used = O.transport == T_HTTP ? http_one(c, buf + off, len - off)
                                          : tcp_one(c, buf + off, len - off);
        if (c->gen != gen)
            return; /* the connection went while handling an answer */
        if (used < 0) {
            conn_fail(c, E_PARSE);
            return;
        }
        if (used == 0)
            break;
        off += (size_t)used;
        if (c->close_after) {
            c->close_after = false;
            conn_fail(c, E_CLOSED); /* nothing outstanding: just a reconnect */
            return;
        }
    }
    size_t left = len - off;
    if (left == 0) {
        c->rlen = 0;
    } else if (buf == c->rbuf) {
        memmove(c->rbuf, c->rbuf + off, left);
        c->rlen = (uint32_t)left;
    } else {
        if (left > c->rcap) {
            c->rcap = (uint32_t)(left + 4096);
            c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        memcpy(c->rbuf, buf + off, left);
        c->rlen = (uint32_t)left;
    }
}

/* ---------------------------------------------------------- life cycle -- */

static void ramp_fill(struct worker *w);

static void ramp_finish_one(struct conn *c, bool ok)
{
    struct worker *w = c->w;
    if (c->state != C_SETUP && c->state != C_CONNECTING)
        return;
    uint64_t now = now_ns();
    if (ok) {
        w->st.sessions_ok++;
        hist_record(&w->st.setup, now - c->t_setup);
    } else {
        w->st.sessions_failed++;
    }
    if (S.phase == P_RAMP && !w->ramp_reported) {
        w->ramp_pending--;
        w->ramp_finished++;
        if (w->ramp_finished >= w->nconns) {
            w->ramp_reported = true;
            ev_timer_stop(w->loop, &w->ramp_timer);
            ev_timer_stop(w->loop, &w->ramp_deadline);
            report_done(&S.ramp_done);
        } else {
            ramp_fill(w);
        }
    }
}

static void load_next(struct conn *c);

static void conn_ready(struct conn *c)
{
    ramp_finish_one(c, true);
    c->state = C_READY;
    int ph = S.phase;
    if (ph == P_LOAD && c->is_active)
        load_next(c);
    else if (ph == P_STOP)
        conn_kill(c);
}

void conn_kill(struct conn *c)
{
    struct worker *w = c->w;
    c->gen++;
    if (c->fd >= 0) {
        ev_io_stop(w->loop, &c->io);
        close(c->fd);
        c->fd = -1;
    }
    ev_timer_stop(w->loop, &c->tmo);
    c->want_write = false;
    c->rlen = c->wlen = c->woff = 0;
    free(c->rbuf);
    free(c->wbuf);
    c->rbuf = c->wbuf = NULL;
    c->rcap = c->wcap = 0;
    c->outstanding = 0;
    int n = O.transport == T_HTTP ? 1 : O.depth;
    for (int i = 0; i < n; i++)
        c->fl[i].kind = 0xff;
    c->state = C_DEAD;
}

static void count_failed(struct worker *w, struct inflight *f, int kind)
{
    switch (f->kind) {
    case R_LOAD:
        w->inflight_load--;
        if (f->measured)
            w->st.errors[kind]++;
        else
            w->st.warm_err++;
        break;
    case R_CHECK:
        w->st.check_err++;
        w->st.check_errk[kind]++;
        w->check_pending--;
        break;
    default:
        w->st.setup_err[kind]++;
        break;
    }
    f->kind = 0xff;
}

static void conn_fail(struct conn *c, int kind)
{
    struct worker *w = c->w;
    int st = c->state;
    bool had_load = false, had_check = false;
    int n = O.transport == T_HTTP ? 1 : O.depth;
    for (int i = 0; i < n; i++) {
        struct inflight *f = &c->fl[i];
        if (f->kind == 0xff)
            continue;
        had_load |= f->kind == R_LOAD;
        had_check |= f->kind == R_CHECK;
        count_failed(w, f, kind);
    }
    if (st == C_CONNECTING || st == C_SETUP) {
        if (st == C_CONNECTING)
            w->st.setup_err[kind]++;
        ramp_finish_one(c, false);
    }
    conn_kill(c);
    int ph = S.phase;
    /* Keep the load going on another connection: HTTP keeps its session, TCP makes a new one. */
    if (ph == P_LOAD && c->is_active && c->reconnects < O.max_reconnects && !w->load_stopping &&
        (st == C_READY || st == C_SETUP || st == C_CONNECTING)) {
        c->reconnects++;
        w->st.reconnects++;
        conn_start(c);
    }
    if (had_load)
        worker_load_maybe_done(w);
    if (had_check)
        worker_check_maybe_done(w);
}

static void after_setup_step(struct conn *c)
{
    if (c->ramp_calls_left > 0) {
        c->ramp_calls_left--;
        conn_send(c, R_RAMPCALL, now_ns());
        return;
    }
    if (c->at_init && c->sid) {
        /* made at --init-url: the session is used from a connection to the main URL */
        conn_kill(c);
        conn_start(c);
        return;
    }
    conn_ready(c);
}

static void conn_complete(struct conn *c, struct inflight *f, int err, uint64_t t_done)
{
    struct worker *w = c->w;
    int kind = f->kind;
    uint64_t t0 = f->t0;
    bool measured = f->measured;
    f->kind = 0xff;
    if (--c->outstanding > 0) {
        ev_timer_stop(w->loop, &c->tmo);
        ev_timer_set(&c->tmo, O.request_timeout, 0);
        ev_timer_start(w->loop, &c->tmo);
    } else {
        ev_timer_stop(w->loop, &c->tmo);
    }
    switch (kind) {
    case R_LOAD:
        w->inflight_load--;
        if (measured) {
            if (err < 0) {
                w->st.ok++;
                hist_record(&w->st.lat, t_done > t0 ? t_done - t0 : 0);
            } else {
                w->st.errors[err]++;
            }
        } else if (t0 >= S.t_end) {
            w->st.late++;
        } else if (err < 0) {
            w->st.warm_ok++;
        } else {
            w->st.warm_err++;
        }
        if (c->state == C_READY)
            load_next(c);
        worker_load_maybe_done(w);
        return;
    case R_CHECK:
        if (err < 0) {
            w->st.check_ok++;
        } else {
            w->st.check_err++;
            w->st.check_errk[err]++;
        }
        w->check_pending--;
        worker_check_maybe_done(w);
        return;
    case R_INIT:
        if (err >= 0) {
            w->st.setup_err[err == E_STATUS || err == E_PARSE ? err : E_SETUP]++;
            ramp_finish_one(c, false);
            conn_kill(c);
            return;
        }
        conn_send(c, R_INITIALIZED, now_ns());
        if (O.transport == T_TCP && c->state == C_SETUP)
            after_setup_step(c); /* a notification has no answer */
        return;
    case R_INITIALIZED:
    case R_RAMPCALL:
        if (err >= 0) {
            w->st.setup_err[err]++;
            ramp_finish_one(c, false);
            conn_kill(c);
            return;
        }
        after_setup_step(c);
        return;
    }
}

static void conn_connected(struct conn *c)
{
    c->state = C_SETUP;
    ev_timer_stop(c->w->loop, &c->tmo);
    if (O.no_init || (O.transport == T_HTTP && c->sid)) {
        /* No session to make, or an HTTP reconnect: the session outlives the connection. */
        c->ramp_calls_left = (uint16_t)(S.phase == P_RAMP && !c->sid ? O.ramp_calls : 0);
        after_setup_step(c);
        return;
    }
    c->ramp_calls_left = (uint16_t)(S.phase == P_RAMP ? O.ramp_calls : 0);
    conn_send(c, R_INIT, now_ns());
}

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct conn *c = io->data;
    struct worker *w = c->w;
    uint32_t gen = c->gen;
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
            conn_fail(c, E_CONNECT);
            return;
        }
        io_set(c, false);
        conn_connected(c);
        return;
    }
    if (revents & EV_WRITE) {
        conn_flush(c);
        if (c->gen != gen)
            return;
    }
    if (!(revents & EV_READ))
        return;
    for (int i = 0; i < 8; i++) {
        ssize_t n = recv(c->fd, w->scratch, w->scratch_cap, 0);
        if (n == 0) {
            if (c->outstanding == 0 && c->state == C_READY) {
                /* The server closed an idle connection. */
                conn_kill(c);
                return;
            }
            conn_fail(c, E_CLOSED);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_fail(c, E_CLOSED);
            return;
        }
        conn_input(c, w->scratch, (size_t)n);
        if (c->gen != gen || (size_t)n < w->scratch_cap)
            return;
    }
}

static void conn_tmo_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = t->data;
    conn_fail(c, c->state == C_CONNECTING ? E_CONNECT : E_TIMEOUT);
}

void conn_start(struct conn *c)
{
    struct worker *w = c->w;
    c->t_setup = now_ns();
    int fd = socket(O.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->state = C_CONNECTING;
    if (fd < 0) {
        w->st.setup_err[E_CONNECT]++;
        ramp_finish_one(c, false);
        c->state = C_DEAD;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if ((O.source_addrs > 1 || O.source_set) && O.family == AF_INET) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr =
            htonl(ntohl(O.source_base.s_addr) + (uint32_t)(c->idx % O.source_addrs));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            close(fd);
            w->st.setup_err[E_CONNECT]++;
            ramp_finish_one(c, false);
            c->state = C_DEAD;
            return;
        }
    }
    c->fd = fd;
    c->gen++;
    ev_io_init(&c->io, conn_io_cb, fd, EV_READ | EV_WRITE);
    c->io.data = c;
    c->want_write = true;
    ev_init(&c->tmo, conn_tmo_cb);
    c->tmo.data = c;
    c->at_init = O.init_url && !c->sid;
    const struct sockaddr *to = (const struct sockaddr *)(c->at_init ? &O.init_addr : &O.addr);
    if (connect(fd, to, c->at_init ? O.init_addrlen : O.addrlen) != 0 && errno != EINPROGRESS) {
        conn_fail(c, E_CONNECT);
        return;
    }
    ev_io_start(w->loop, &c->io);
    ev_timer_set(&c->tmo, O.request_timeout, 0);
    ev_timer_start(w->loop, &c->tmo);
}

/* ---------------------------------------------------------------- ramp -- */

static void ramp_fill(struct worker *w)
{
    double per_worker = O.ramp_rate / O.threads;
    uint64_t now = now_ns();
    long allowed = w->nconns;
    if (per_worker > 0)
        allowed = (long)((double)(now - w->ramp_t0) / 1e9 * per_worker) + 1;
    long conc = O.ramp_concurrency > 0 ? O.ramp_concurrency : 1;
    while (w->ramp_next < w->nconns && w->ramp_next < allowed && w->ramp_pending < conc) {
        struct conn *c = &w->conns[w->ramp_next++];
        w->ramp_pending++;
        conn_start(c);
    }
}

static void ramp_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    ramp_fill(w);
    if (w->ramp_next >= w->nconns)
        ev_timer_stop(w->loop, &w->ramp_timer);
}

static void ramp_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    ev_timer_stop(w->loop, &w->ramp_timer);
    for (long i = 0; i < w->nconns && !w->ramp_reported; i++) {
        struct conn *c = &w->conns[i];
        if (c->state == C_CONNECTING || c->state == C_SETUP)
            conn_fail(c, E_TIMEOUT);
    }
    if (!w->ramp_reported) {
        /* never started within the ramp's time */
        w->st.sessions_failed += (uint64_t)(w->nconns - w->ramp_next);
        w->ramp_reported = true;
        report_done(&S.ramp_done);
    }
}

/* ---------------------------------------------------------------- load -- */

static bool conn_can_take(struct conn *c)
{
    int depth = O.transport == T_HTTP ? 1 : O.depth;
    return c->state == C_READY && c->outstanding < depth;
}

static bool budget_left(struct worker *w)
{
    if (O.max_requests <= 0)
        return true;
    long share = O.max_requests / O.threads + (w->id < O.max_requests % O.threads ? 1 : 0);
    return (long)w->issued < share;
}

static void avail_push(struct conn *c)
{
    if (c->in_avail)
        return;
    c->in_avail = true;
    c->next_avail = c->w->avail;
    c->w->avail = c;
}

static struct conn *avail_pop(struct worker *w)
{
    for (int guard = 0; w->avail && guard < (1 << 22); guard++) {
        struct conn *c = w->avail;
        if (conn_can_take(c))
            return c; /* stays on the list while it can take more */
        w->avail = c->next_avail;
        c->in_avail = false;
    }
    return NULL;
}

static void send_load(struct conn *c, uint64_t t0, bool counted)
{
    if (!counted)
        c->w->issued++;
    conn_send(c, R_LOAD, t0);
}

/* c can take another request (closed loop), or is free (open loop). */
static void load_next(struct conn *c)
{
    struct worker *w = c->w;
    if (O.rate > 0) {
        if (w->bl_len && conn_can_take(c)) {
            uint64_t t0 = w->bl[w->bl_head];
            w->bl_head = (w->bl_head + 1) % w->bl_cap;
            w->bl_len--;
            uint32_t gen = c->gen;
            send_load(c, t0, true);
            if (c->gen == gen && conn_can_take(c))
                avail_push(c);
            return;
        }
        if (conn_can_take(c) && !w->load_stopping)
            avail_push(c);
        return;
    }
    if (w->load_stopping)
        return;
    uint64_t now = now_ns();
    for (int guard = 0; guard < 1024 && conn_can_take(c); guard++) {
        if (now >= S.t_end)
            return;
        if (!budget_left(w)) {
            w->load_stopping = true;
            worker_load_maybe_done(w);
            return;
        }
        uint32_t gen = c->gen;
        send_load(c, now, false);
        if (c->gen != gen)
            return;
    }
}

static void worker_load_maybe_done(struct worker *w)
{
    if (!w->load_stopping || w->load_reported || S.phase != P_LOAD)
        return;
    if (w->inflight_load > 0 || w->bl_len > 0)
        return;
    w->load_reported = true;
    report_done(&S.load_done);
}

static void arm_tfd(struct worker *w)
{
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(w->ol_next / 1000000000ull);
    its.it_value.tv_nsec = (long)(w->ol_next % 1000000000ull);
    timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static uint64_t intended(struct worker *w, uint64_t k)
{
    return S.t_load_start + (uint64_t)((double)k * 1e9 / w->rate);
}

static void tfd_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = io->data;
    uint64_t exp;
    if (read(w->tfd, &exp, sizeof(exp)) < 0 && errno == EAGAIN)
        return;
    uint64_t now = now_ns();
    for (long guard = 0; guard < 10000000 && !w->load_stopping; guard++) {
        uint64_t t = w->ol_next;
        if (t > now)
            break;
        if (t >= S.t_end || !budget_left(w)) {
            w->load_stopping = true;
            break;
        }
        w->ol_k++;
        w->ol_next = intended(w, w->ol_k);
        struct conn *c = avail_pop(w);
        if (c) {
            uint32_t gen = c->gen;
            send_load(c, t, false);
            if (c->gen == gen && !conn_can_take(c) && w->avail == c) {
                w->avail = c->next_avail;
                c->in_avail = false;
            }
        } else if (w->bl_len < w->bl_cap) {
            w->issued++; /* counted now; sent when a connection frees */
            w->bl[(w->bl_head + w->bl_len) % w->bl_cap] = t;
            w->bl_len++;
            if (w->bl_len > w->st.max_backlog)
                w->st.max_backlog = w->bl_len;
        } else if (in_window(t)) {
            w->issued++;
            w->st.errors[E_OVERLOAD]++;
        } else {
            w->issued++;
            w->st.warm_err++;
        }
    }
    if (!w->load_stopping)
        arm_tfd(w);
    else
        worker_load_maybe_done(w);
}

static void end_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    if (!w->draining) {
        w->draining = true;
        w->load_stopping = true;
        ev_timer_set(&w->end_timer, O.request_timeout + 1.0, 0);
        ev_timer_start(w->loop, &w->end_timer);
        worker_load_maybe_done(w);
        return;
    }
    /* The drain is over: what still waits for a connection did not run. */
    for (; w->bl_len; w->bl_len--) {
        uint64_t t0 = w->bl[w->bl_head];
        w->bl_head = (w->bl_head + 1) % w->bl_cap;
        if (in_window(t0))
            w->st.errors[E_TIMEOUT]++;
    }
    for (long i = 0; i < w->nconns && !w->load_reported; i++)
        if (w->conns[i].outstanding)
            conn_fail(&w->conns[i], E_TIMEOUT);
    if (!w->load_reported) {
        w->inflight_load = 0;
        w->load_reported = true;
        report_done(&S.load_done);
    }
}

static void load_start(struct worker *w)
{
    uint64_t now = now_ns();
    if (O.rate > 0) {
        w->rate = O.rate / O.threads;
        w->bl_cap = (size_t)(w->rate * 2.0) + 1024; /* two seconds of requests */
        w->bl = calloc(w->bl_cap, sizeof(uint64_t));
        if (!w->bl) {
            fprintf(stderr, "cmcp-bench: out of memory\n");
            exit(2);
        }
    }
    for (long i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        c->is_active = c->idx < O.active;
        if (c->is_active)
            w->nactive++;
    }
    double left = (double)(S.t_end > now ? S.t_end - now : 0) / 1e9;
    ev_timer_init(&w->end_timer, end_timer_cb, left, 0);
    w->end_timer.data = w;
    ev_timer_start(w->loop, &w->end_timer);
    if (O.rate > 0) {
        for (long i = w->nconns - 1; i >= 0; i--) {
            struct conn *c = &w->conns[i];
            if (c->is_active && c->state == C_READY)
                avail_push(c);
        }
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->tfd < 0) {
            perror("cmcp-bench: timerfd_create");
            exit(2);
        }
        w->ol_next = intended(w, 0);
        ev_io_init(&w->tfd_w, tfd_cb, w->tfd, EV_READ);
        w->tfd_w.data = w;
        ev_io_start(w->loop, &w->tfd_w);
        arm_tfd(w);
    } else {
        for (long i = 0; i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            if (c->is_active && c->state == C_READY)
                load_next(c);
        }
    }
}

/* ------------------------------------------------------------- phases -- */

static void check_fill(struct worker *w);

static void worker_check_maybe_done(struct worker *w)
{
    if (S.phase != P_CHECK || w->check_reported)
        return;
    if (w->check_next < w->nconns)
        check_fill(w);
    if (w->check_pending > 0 || w->check_next < w->nconns)
        return;
    w->check_reported = true;
    report_done(&S.check_done);
}

/* One request on every connection, at most --ramp-concurrency at once: is every session
 * still there? (A burst of one request per held connection would measure something else.) */
static void check_fill(struct worker *w)
{
    long conc = O.ramp_concurrency > 0 ? O.ramp_concurrency : 1;
    while (w->check_next < w->nconns && w->check_pending < conc) {
        struct conn *c = &w->conns[w->check_next++];
        if (c->state == C_READY && c->outstanding == 0) {
            w->check_pending++;
            conn_send(c, R_CHECK, now_ns());
        } else {
            w->st.check_err++;
            w->st.check_not_ready++;
        }
    }
}

static void check_start(struct worker *w)
{
    w->check_next = 0;
    check_fill(w);
    worker_check_maybe_done(w);
}

void worker_phase(struct worker *w, int phase)
{
    switch (phase) {
    case P_RAMP:
        w->ramp_t0 = now_ns();
        if (w->nconns == 0) {
            w->ramp_reported = true;
            report_done(&S.ramp_done);
            return;
        }
        ev_timer_init(&w->ramp_timer, ramp_timer_cb, 0.001, 0.002);
        w->ramp_timer.data = w;
        ev_timer_start(w->loop, &w->ramp_timer);
        ev_timer_init(&w->ramp_deadline, ramp_deadline_cb, O.ramp_timeout, 0);
        w->ramp_deadline.data = w;
        ev_timer_start(w->loop, &w->ramp_deadline);
        ramp_fill(w);
        break;
    case P_LOAD:
        load_start(w);
        break;
    case P_HOLD:
        ev_timer_stop(w->loop, &w->end_timer);
        if (w->tfd > 0) {
            ev_io_stop(w->loop, &w->tfd_w);
            close(w->tfd);
            w->tfd = -1;
        }
        break;
    case P_CHECK:
        check_start(w);
        break;
    case P_STOP:
        ev_timer_stop(w->loop, &w->ramp_timer);
        ev_timer_stop(w->loop, &w->ramp_deadline);
        ev_timer_stop(w->loop, &w->end_timer);
        if (w->tfd > 0) {
            ev_io_stop(w->loop, &w->tfd_w);
            close(w->tfd);
            w->tfd = -1;
        }
        for (long i = 0; i < w->nconns; i++)
            conn_kill(&w->conns[i]);
        ev_async_stop(w->loop, &w->wake);
        ev_break(w->loop, EVBREAK_ALL);
        break;
    }
}
