/* Raft's messages and snapshots as bytes (raftwire.h). */
#include "cluster/raftwire.h"

#include <stdlib.h>
#include <string.h>



void rw_put(struct rw_wbuf *b, const void *data, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void rw_put_u64(struct rw_wbuf *b, uint64_t v)
{
    unsigned char x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    rw_put(b, x, 8);
}

void rw_put_u32(struct rw_wbuf *b, uint32_t v)
{
    unsigned char x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (unsigned char)(v >> (8 * i));
    rw_put(b, x, 4);
}

void rw_put_str(struct rw_wbuf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    rw_put_u32(b, (uint32_t)n);
    rw_put(b, s, n);
}


uint64_t rw_get_u64(struct rw_rbuf *r)
{
    if (r->bad || r->end - r->p < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | r->p[i];
    r->p += 8;
    return v;
}

uint32_t rw_get_u32(struct rw_rbuf *r)
{
    if (r->bad || r->end - r->p < 4) {
        r->bad = true;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

const unsigned char *rw_get_bytes(struct rw_rbuf *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return NULL;
    }
    const unsigned char *at = r->p;
    r->p += n;
    return at;
}

/* A string as a NUL-terminated raft_malloc'd copy. */
char *rw_get_str(struct rw_rbuf *r)
{
    uint32_t n = rw_get_u32(r);
    const unsigned char *s = n < 4096 ? rw_get_bytes(r, n) : (r->bad = true, NULL);
    char *out = s ? raft_malloc(n + 1) : NULL;
    if (!out) {
        r->bad = true;
        return NULL;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

void rw_put_conf(struct rw_wbuf *b, const struct raft_configuration *c)
{
    rw_put_u32(b, c->n);
    for (unsigned i = 0; i < c->n; i++) {
        rw_put_u64(b, c->servers[i].id);
        rw_put_u32(b, (uint32_t)c->servers[i].role);
        rw_put_str(b, c->servers[i].address);
    }
}

int rw_get_conf(struct rw_rbuf *r, struct raft_configuration *c)
{
    raft_configuration_init(c);
    uint32_t n = rw_get_u32(r);
    for (uint32_t i = 0; i < n && !r->bad && n < 1024; i++) {
        raft_id id = rw_get_u64(r);
        int role = (int)rw_get_u32(r);
        char *addr = rw_get_str(r);
        if (r->bad || raft_configuration_add(c, id, addr, role) != 0)
            r->bad = true;
        raft_free(addr);
    }
    if (r->bad || n >= 1024) {
        raft_configuration_close(c);
        raft_configuration_init(c);
        return -1;
    }
    return 0;
}

/* Entries' data in one raft_malloc'd batch that every entry points into. */
static int rw_get_entries(struct rw_rbuf *r, struct raft_entry **out, unsigned *n_out)
{
    uint32_t n = rw_get_u32(r);
    *out = NULL;
    *n_out = 0;
    if (r->bad || n > 1u << 20)
        return -1;
    if (n == 0)
        return 0;
    const unsigned char *start = r->p;
    size_t total = 0;
    for (uint32_t i = 0; i < n && !r->bad; i++) {
        rw_get_u64(r);
        rw_get_u32(r);
        uint32_t len = rw_get_u32(r);
        rw_get_bytes(r, len);
        total += len;
    }
    if (r->bad)
        return -1;
    struct raft_entry *e = raft_calloc(n, sizeof(*e));
    void *batch = raft_malloc(total ? total : 1);
    if (!e || !batch) {
        raft_free(e);
        raft_free(batch);
        return -1;
    }
    struct rw_rbuf again = {start, r->end, false};
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        e[i].term = rw_get_u64(&again);
        e[i].type = (unsigned short)rw_get_u32(&again);
        uint32_t len = rw_get_u32(&again);
        memcpy((char *)batch + off, rw_get_bytes(&again, len), len);
        e[i].buf.base = (char *)batch + off;
        e[i].buf.len = len;
        e[i].batch = batch;
        off += len;
    }
    *out = e;
    *n_out = n;
    return 0;
}

static void rw_put_entries(struct rw_wbuf *b, const struct raft_entry *e, unsigned n)
{
    rw_put_u32(b, n);
    for (unsigned i = 0; i < n; i++) {
        rw_put_u64(b, e[i].term);
        rw_put_u32(b, e[i].type);
        rw_put_u32(b, (uint32_t)e[i].buf.len);
        rw_put(b, e[i].buf.base, e[i].buf.len);
    }
}

int raftwire_encode(const struct raft_message *m, struct rw_wbuf *b)
{
    unsigned char head[2] = {RAFTWIRE_VERSION, (unsigned char)m->type};
    rw_put(b, head, 2);
    switch (m->type) {
    case RAFT_IO_REQUEST_VOTE: {
        const struct raft_request_vote *v = &m->request_vote;
        rw_put_u64(b, v->term);
        rw_put_u64(b, v->candidate_id);
        rw_put_u64(b, v->last_log_index);
        rw_put_u64(b, v->last_log_term);
        rw_put_u32(b, (uint32_t)v->disrupt_leader | (uint32_t)v->pre_vote << 1);
        break;
    }
    case RAFT_IO_REQUEST_VOTE_RESULT: {
        const struct raft_request_vote_result *v = &m->request_vote_result;
        rw_put_u64(b, v->term);
        rw_put_u32(b, (uint32_t)v->vote_granted | (uint32_t)v->pre_vote << 1);
        break;
    }
    case RAFT_IO_APPEND_ENTRIES: {
        const struct raft_append_entries *a = &m->append_entries;
        rw_put_u64(b, a->term);
        rw_put_u64(b, a->prev_log_index);
        rw_put_u64(b, a->prev_log_term);
        rw_put_u64(b, a->leader_commit);
        rw_put_entries(b, a->entries, a->n_entries);
        break;
    }
    case RAFT_IO_APPEND_ENTRIES_RESULT: {
        const struct raft_append_entries_result *a = &m->append_entries_result;
        rw_put_u64(b, a->term);
        rw_put_u64(b, a->rejected);
        rw_put_u64(b, a->last_log_index);
        break;
    }
    case RAFT_IO_INSTALL_SNAPSHOT: {
        const struct raft_install_snapshot *s = &m->install_snapshot;
        rw_put_u64(b, s->term);
        rw_put_u64(b, s->last_index);
        rw_put_u64(b, s->last_term);
        rw_put_conf(b, &s->conf);
        rw_put_u64(b, s->conf_index);
        rw_put_u32(b, (uint32_t)s->data.len);
        rw_put(b, s->data.base, s->data.len);
        break;
    }
    case RAFT_IO_TIMEOUT_NOW: {
        const struct raft_timeout_now *t = &m->timeout_now;
        rw_put_u64(b, t->term);
        rw_put_u64(b, t->last_log_index);
        rw_put_u64(b, t->last_log_term);
        break;
    }
    default:
        return -1;
    }
    return b->failed ? -1 : 0;
}

/* Decodes into m; what it allocates Raft takes over once recv is called. -1 when malformed. */
int raftwire_decode(const void *bytes, size_t len, struct raft_message *m)
{
    struct rw_rbuf r = {bytes, (const unsigned char *)bytes + len, false};
    const unsigned char *head = rw_get_bytes(&r, 2);
    if (!head || head[0] != RAFTWIRE_VERSION)
        return -1;
    memset(m, 0, sizeof(*m));
    m->type = head[1];
    uint32_t flags;
    switch (m->type) {
    case RAFT_IO_REQUEST_VOTE:
        m->request_vote.term = rw_get_u64(&r);
        m->request_vote.candidate_id = rw_get_u64(&r);
        m->request_vote.last_log_index = rw_get_u64(&r);
        m->request_vote.last_log_term = rw_get_u64(&r);
        flags = rw_get_u32(&r);
        m->request_vote.disrupt_leader = flags & 1;
        m->request_vote.pre_vote = (flags >> 1) & 1;
        break;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        m->request_vote_result.term = rw_get_u64(&r);
        flags = rw_get_u32(&r);
        m->request_vote_result.vote_granted = flags & 1;
        m->request_vote_result.pre_vote = (raft_tribool)((flags >> 1) & 3);
        break;
    case RAFT_IO_APPEND_ENTRIES:
        m->append_entries.term = rw_get_u64(&r);
        m->append_entries.prev_log_index = rw_get_u64(&r);
        m->append_entries.prev_log_term = rw_get_u64(&r);
        m->append_entries.leader_commit = rw_get_u64(&r);
        if (r.bad || rw_get_entries(&r, &m->append_entries.entries, &m->append_entries.n_entries))
            return -1;
        break;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        m->append_entries_result.term = rw_get_u64(&r);
        m->append_entries_result.rejected = rw_get_u64(&r);
        m->append_entries_result.last_log_index = rw_get_u64(&r);
        break;
    case RAFT_IO_INSTALL_SNAPSHOT: {
        struct raft_install_snapshot *s = &m->install_snapshot;
        s->term = rw_get_u64(&r);
        s->last_index = rw_get_u64(&r);
        s->last_term = rw_get_u64(&r);
        if (r.bad || rw_get_conf(&r, &s->conf) != 0)
            return -1;
        s->conf_index = rw_get_u64(&r);
        uint32_t dl = rw_get_u32(&r);
        const unsigned char *d = rw_get_bytes(&r, dl);
        s->data.base = d ? raft_malloc(dl ? dl : 1) : NULL;
        if (!s->data.base) {
            raft_configuration_close(&s->conf);
            return -1;
        }
        memcpy(s->data.base, d, dl);
        s->data.len = dl;
        break;
    }
    case RAFT_IO_TIMEOUT_NOW:
        m->timeout_now.term = rw_get_u64(&r);
        m->timeout_now.last_log_index = rw_get_u64(&r);
        m->timeout_now.last_log_term = rw_get_u64(&r);
        break;
    default:
        return -1;
    }
    if (r.bad) {
        raftwire_release(m);
        return -1;
    }
    return 0;
}

void raftwire_release(struct raft_message *m)
{
    switch (m->type) {
    case RAFT_IO_APPEND_ENTRIES:
        if (m->append_entries.n_entries)
            raft_free(m->append_entries.entries[0].batch);
        raft_free(m->append_entries.entries);
        break;
    case RAFT_IO_INSTALL_SNAPSHOT:
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        break;
    default:
        break;
    }
}
