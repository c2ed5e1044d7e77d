/* libraft's I/O over libev and LMDB (raftio.h). */
#define _GNU_SOURCE
#include "cluster/raftio.h"

#include <errno.h>
#include <jansson.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "cluster/raftwire.h"

#define MAP_SIZE (256ul << 20)

/* A completion to run on the loop, after the call that queued it has returned. */
struct done {
    struct done *next;
    int kind;
    void *req;
    void *cb;
    int status;
    struct raft_snapshot *snap;
};
enum { DONE_SEND, DONE_APPEND, DONE_SNAP_PUT, DONE_SNAP_GET, DONE_CLOSE };

struct rio {
    struct raftio_opts o;
    char dir[512];
    MDB_env *env;
    MDB_dbi meta, log;
    raft_id id;
    char address[256];
    raft_index next; /* where the next append goes */
    ev_timer tick_w;
    ev_idle done_w;
    struct done *head, **tail;
    raft_io_tick_cb tick;
    raft_io_recv_cb recv;
    struct raft_io *io;
    bool started;
};

/* ---- completions ---- */

static void run_done(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct rio *x = w->data;
    struct done *d = x->head;
    x->head = NULL;
    x->tail = &x->head;
    ev_idle_stop(loop, w);
    while (d) {
        struct done *next = d->next;
        /* libraft passes no callback for some requests (the TimeoutNow of a leadership
         * transfer): nothing to tell, and the request may be gone already */
        switch (d->cb ? d->kind : -1) {
        case DONE_SEND:
            ((raft_io_send_cb)d->cb)(d->req, d->status);
            break;
        case DONE_APPEND:
            ((raft_io_append_cb)d->cb)(d->req, d->status);
            break;
        case DONE_SNAP_PUT:
            ((raft_io_snapshot_put_cb)d->cb)(d->req, d->status);
            break;
        case DONE_SNAP_GET:
            ((raft_io_snapshot_get_cb)d->cb)(d->req, d->snap, d->status);
            break;
        case DONE_CLOSE:
            ((raft_io_close_cb)d->cb)(d->req);
            break;
        default:
            break;
        }
        free(d);
        d = next;
    }
}

static int later(struct rio *x, int kind, void *req, void *cb, int status,
                 struct raft_snapshot *snap)
{
    struct done *d = calloc(1, sizeof(*d));
    if (!d)
        return RAFT_NOMEM;
    d->kind = kind;
    d->req = req;
    d->cb = cb;
    d->status = status;
    d->snap = snap;
    *x->tail = d;
    x->tail = &d->next;
    ev_idle_start(x->o.loop, &x->done_w);
    return 0;
}

/* ---- storage ---- */

static void key_of(raft_index i, unsigned char k[8])
{
    for (int b = 0; b < 8; b++)
        k[b] = (unsigned char)(i >> (8 * (7 - b))); /* big-endian: LMDB orders them */
}

static raft_index index_of(const MDB_val *k)
{
    const unsigned char *p = k->mv_data;
    raft_index i = 0;
    for (int b = 0; b < 8; b++)
        i = i << 8 | p[b];
    return i;
}

static int meta_put(struct rio *x, MDB_txn *t, const char *name, uint64_t v)
{
    MDB_val k = {strlen(name), (void *)name}, d = {sizeof(v), &v};
    return mdb_put(t, x->meta, &k, &d, 0);
}

static uint64_t meta_get(struct rio *x, MDB_txn *t, const char *name)
{
    MDB_val k = {strlen(name), (void *)name}, d;
    uint64_t v = 0;
    if (mdb_get(t, x->meta, &k, &d) == 0 && d.mv_size == sizeof(v))
        memcpy(&v, d.mv_data, sizeof(v));
    return v;
}

/* Runs fn in a write transaction that is durable when it returns 0. */
static int write_txn(struct rio *x, int (*fn)(struct rio *x, MDB_txn *t, void *arg), void *arg)
{
    MDB_txn *t;
    int rc = mdb_txn_begin(x->env, NULL, 0, &t);
    if (rc == 0)
        rc = fn(x, t, arg);
    if (rc == 0)
        rc = mdb_txn_commit(t);
    else if (t)
        mdb_txn_abort(t);
    if (rc != 0) {
        snprintf(x->io->errmsg, sizeof(x->io->errmsg), "raft log %s: %s", x->dir, mdb_strerror(rc));
        log_error("raft_log_write_failed", "{s:s,s:s}", "dir", x->dir, "error", mdb_strerror(rc));
    }
    return rc == 0 ? 0 : rc == MDB_MAP_FULL ? RAFT_NOSPACE : RAFT_IOERR;
}

static int put_entry(struct rio *x, MDB_txn *t, raft_index i, const struct raft_entry *e)
{
    unsigned char k[8];
    key_of(i, k);
    MDB_val kv = {8, k}, dv = {12 + e->buf.len, NULL};
    int rc = mdb_put(t, x->log, &kv, &dv, MDB_RESERVE);
    if (rc != 0)
        return rc;
    unsigned char *p = dv.mv_data;
    for (int b = 0; b < 8; b++)
        p[b] = (unsigned char)(e->term >> (8 * b));
    p[8] = (unsigned char)(e->type & 0xff);
    p[9] = (unsigned char)(e->type >> 8);
    p[10] = p[11] = 0;
    memcpy(p + 12, e->buf.base, e->buf.len);
    return 0;
}

/* Deletes entries with index in [from, to] (to 0: to the end). */
static int del_range(struct rio *x, MDB_txn *t, raft_index from, raft_index to)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, x->log, &c);
    if (rc != 0)
        return rc;
    for (;;) {
        unsigned char k[8];
        key_of(from, k);
        MDB_val kv = {8, k}, dv;
        rc = mdb_cursor_get(c, &kv, &dv, MDB_SET_RANGE);
        if (rc != 0 || (to != 0 && index_of(&kv) > to))
            break;
        if ((rc = mdb_cursor_del(c, 0)) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/* ---- the snapshot ---- */

static int snapshot_write(struct rio *x, MDB_txn *t, const struct raft_snapshot *s)
{
    struct rw_wbuf b = {0};
    rw_put_u64(&b, s->index);
    rw_put_u64(&b, s->term);
    rw_put_conf(&b, &s->configuration);
    rw_put_u64(&b, s->configuration_index);
    size_t total = 0;
    for (unsigned i = 0; i < s->n_bufs; i++)
        total += s->bufs[i].len;
    rw_put_u32(&b, (uint32_t)total);
    for (unsigned i = 0; i < s->n_bufs; i++)
        rw_put(&b, s->bufs[i].base, s->bufs[i].len);
    if (b.failed) {
        free(b.p);
        return ENOMEM;
    }
    MDB_val k = {4, "snap"}, d = {b.len, b.p};
    int rc = mdb_put(t, x->meta, &k, &d, 0);
    free(b.p);
    return rc;
}

/* The stored snapshot, raft_malloc'd as Raft wants it; NULL when none (or unreadable). */
static struct raft_snapshot *snapshot_read(struct rio *x, MDB_txn *t)
{
    MDB_val k = {4, "snap"}, d;
    if (mdb_get(t, x->meta, &k, &d) != 0)
        return NULL;
    struct rw_rbuf r = {d.mv_data, (const unsigned char *)d.mv_data + d.mv_size, false};
    struct raft_snapshot *s = raft_calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->index = rw_get_u64(&r);
    s->term = rw_get_u64(&r);
    if (rw_get_conf(&r, &s->configuration) != 0) {
        raft_free(s);
        return NULL;
    }
    s->configuration_index = rw_get_u64(&r);
    uint32_t len = rw_get_u32(&r);
    const unsigned char *data = rw_get_bytes(&r, len);
    s->bufs = raft_malloc(sizeof(*s->bufs));
    void *copy = raft_malloc(len ? len : 1);
    if (r.bad || !data || !s->bufs || !copy) {
        raft_free(copy);
        raft_free(s->bufs);
        raft_configuration_close(&s->configuration);
        raft_free(s);
        return NULL;
    }
    memcpy(copy, data, len);
    s->bufs[0].base = copy;
    s->bufs[0].len = len;
    s->n_bufs = 1;
    return s;
}

/* ---- raft_io ---- */

static int io_init(struct raft_io *io, raft_id id, const char *address)
{
    struct rio *x = io->impl;
    x->id = id;
    snprintf(x->address, sizeof(x->address), "%s", address ? address : "");
    return 0;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct rio *x = w->data;
    x->tick(x->io);
}

static void io_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct rio *x = io->impl;
    ev_timer_stop(x->o.loop, &x->tick_w);
    x->started = false;
    if (cb)
        later(x, DONE_CLOSE, io, (void *)cb, 0, NULL);
}

static int io_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                   struct raft_snapshot **snapshot, raft_index *start_index,
                   struct raft_entry *entries[], size_t *n_entries)
{
    struct rio *x = io->impl;
    MDB_txn *t;
    if (mdb_txn_begin(x->env, NULL, MDB_RDONLY, &t) != 0)
        return RAFT_IOERR;
    *term = meta_get(x, t, "term");
    *voted_for = meta_get(x, t, "vote");
    *snapshot = snapshot_read(x, t);
    *entries = NULL;
    *n_entries = 0;
    MDB_cursor *c;
    MDB_val k, d;
    size_t n = 0, total = 0;
    raft_index first = 0;
    int rc = mdb_cursor_open(t, x->log, &c);
    for (int op = MDB_FIRST; rc == 0 && mdb_cursor_get(c, &k, &d, (MDB_cursor_op)op) == 0;
         op = MDB_NEXT) {
        if (!first)
            first = index_of(&k);
        n++;
        total += d.mv_size - 12;
    }
    if (n) {
        *entries = raft_calloc(n, sizeof(**entries));
        void *batch = raft_malloc(total ? total : 1);
        if (!*entries || !batch) {
            raft_free(*entries);
            raft_free(batch);
            mdb_cursor_close(c);
            mdb_txn_abort(t);
            return RAFT_NOMEM;
        }
        size_t i = 0, off = 0;
        for (int op = MDB_FIRST; mdb_cursor_get(c, &k, &d, (MDB_cursor_op)op) == 0; op = MDB_NEXT) {
            const unsigned char *p = d.mv_data;
            struct raft_entry *e = &(*entries)[i++];
            e->term = 0;
            for (int b = 7; b >= 0; b--)
                e->term = e->term << 8 | p[b];
            e->type = (unsigned short)(p[8] | p[9] << 8);
            e->buf.len = d.mv_size - 12;
            e->buf.base = (char *)batch + off;
            memcpy(e->buf.base, p + 12, e->buf.len);
            e->batch = batch;
            off += e->buf.len;
        }
        *n_entries = n;
    }
    if (rc == 0)
        mdb_cursor_close(c);
    mdb_txn_abort(t);
    *start_index = first ? first : *snapshot ? (*snapshot)->index + 1 : 1;
    x->next = *start_index + n;
    log_info("raft_log_loaded", "{s:I,s:I,s:I,s:I}", "term", (json_int_t)*term, "first",
             (json_int_t)*start_index, "entries", (json_int_t)n, "snapshot",
             (json_int_t)(*snapshot ? (*snapshot)->index : 0));
    return 0;
}

static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv)
{
    struct rio *x = io->impl;
    x->tick = tick;
    x->recv = recv;
    ev_timer_init(&x->tick_w, tick_cb, msecs / 1000.0, msecs / 1000.0);
    x->tick_w.data = x;
    ev_timer_start(x->o.loop, &x->tick_w);
    x->started = true;
    return 0;
}

struct boot {
    const struct raft_configuration *conf;
    bool recover;
};

static int do_boot(struct rio *x, MDB_txn *t, void *arg)
{
    struct boot *b = arg;
    struct raft_buffer buf;
    int rc = raft_configuration_encode(b->conf, &buf);
    if (rc != 0)
        return ENOMEM;
    raft_term term = meta_get(x, t, "term");
    struct raft_entry e = {b->recover ? (term ? term : 1) : 1, RAFT_CHANGE, buf, NULL};
    rc = put_entry(x, t, b->recover ? x->next : 1, &e);
    if (rc == 0 && !b->recover) {
        rc = meta_put(x, t, "term", 1);
        if (rc == 0)
            rc = meta_put(x, t, "vote", 0);
    }
    raft_free(buf.base);
    return rc;
}

static int io_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rio *x = io->impl;
    MDB_txn *t;
    MDB_stat ms;
    MDB_val k = {4, "snap"}, d;
    if (mdb_txn_begin(x->env, NULL, MDB_RDONLY, &t) != 0)
        return RAFT_IOERR;
    bool has = meta_get(x, t, "term") != 0 || mdb_get(t, x->meta, &k, &d) == 0 ||
               (mdb_stat(t, x->log, &ms) == 0 && ms.ms_entries > 0);
    mdb_txn_abort(t);
    if (has)
        return RAFT_CANTBOOTSTRAP;
    struct boot b = {conf, false};
    int rc = write_txn(x, do_boot, &b);
    if (rc == 0)
        x->next = 2;
    return rc;
}

static int io_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rio *x = io->impl;
    if (x->next == 0) {
        /* recover runs before load: find where the log ends */
        MDB_txn *t;
        MDB_cursor *c;
        MDB_val k, d;
        x->next = 1;
        if (mdb_txn_begin(x->env, NULL, MDB_RDONLY, &t) == 0) {
            if (mdb_cursor_open(t, x->log, &c) == 0) {
                if (mdb_cursor_get(c, &k, &d, MDB_LAST) == 0)
                    x->next = index_of(&k) + 1;
                mdb_cursor_close(c);
            }
            mdb_txn_abort(t);
        }
    }
    struct boot b = {conf, true};
    int rc = write_txn(x, do_boot, &b);
    if (rc == 0)
        x->next++;
    return rc;
}

struct kv {
    const char *a, *b;
    uint64_t va, vb;
};

static int do_meta(struct rio *x, MDB_txn *t, void *arg)
{
    struct kv *kv = arg;
    int rc = meta_put(x, t, kv->a, kv->va);
    if (rc == 0 && kv->b)
        rc = meta_put(x, t, kv->b, kv->vb);
    return rc;
}

static int io_set_term(struct raft_io *io, raft_term term)
{
    struct kv kv = {"term", "vote", term, 0};
    return write_txn(io->impl, do_meta, &kv);
}

static int io_set_vote(struct raft_io *io, raft_id server_id)
{
    struct kv kv = {"vote", NULL, server_id, 0};
    return write_txn(io->impl, do_meta, &kv);
}

static int io_send(struct raft_io *io, struct raft_io_send *req, const struct raft_message *m,
                   raft_io_send_cb cb)
{
    struct rio *x = io->impl;
    struct rw_wbuf b = {0};
    int status = 0;
    if (raftwire_encode(m, &b) != 0 ||
        x->o.send(x->o.ud, m->server_id, m->server_address, b.p, b.len) != 0)
        status = RAFT_NOCONNECTION;
    free(b.p);
    return later(x, DONE_SEND, req, (void *)cb, status, NULL);
}

struct app {
    const struct raft_entry *e;
    unsigned n;
};

static int do_append(struct rio *x, MDB_txn *t, void *arg)
{
    struct app *a = arg;
    int rc = 0;
    for (unsigned i = 0; i < a->n && rc == 0; i++)
        rc = put_entry(x, t, x->next + i, &a->e[i]);
    return rc;
}

static int io_append(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    struct rio *x = io->impl;
    struct app a = {entries, n};
    int rc = write_txn(x, do_append, &a);
    if (rc == 0)
        x->next += n;
    return later(x, DONE_APPEND, req, (void *)cb, rc, NULL);
}

static int do_truncate(struct rio *x, MDB_txn *t, void *arg)
{
    return del_range(x, t, *(raft_index *)arg, 0);
}

static int io_truncate(struct raft_io *io, raft_index index)
{
    struct rio *x = io->impl;
    int rc = write_txn(x, do_truncate, &index);
    if (rc == 0)
        x->next = index;
    return rc;
}

struct snap_put {
    unsigned trailing;
    const struct raft_snapshot *s;
};

static int do_snap_put(struct rio *x, MDB_txn *t, void *arg)
{
    struct snap_put *sp = arg;
    int rc = snapshot_write(x, t, sp->s);
    if (rc != 0)
        return rc;
    if (sp->trailing == 0)
        return del_range(x, t, 1, 0); /* a snapshot from the leader replaces the whole log */
    if (sp->s->index > sp->trailing)
        return del_range(x, t, 1, sp->s->index - sp->trailing);
    return 0;
}

static int io_snapshot_put(struct raft_io *io, unsigned trailing, struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot, raft_io_snapshot_put_cb cb)
{
    struct rio *x = io->impl;
    struct snap_put sp = {trailing, snapshot};
    int rc = write_txn(x, do_snap_put, &sp);
    if (rc == 0 && trailing == 0)
        x->next = snapshot->index + 1;
    if (trailing == 0 || rc != 0) /* a snapshot installed from the leader is worth a line */
        log_info("raft_snapshot_stored", "{s:I,s:I,s:i,s:i}", "index", (json_int_t)snapshot->index,
                 "term", (json_int_t)snapshot->term, "trailing", (int)trailing, "rc", rc);
    return later(x, DONE_SNAP_PUT, req, (void *)cb, rc, NULL);
}

static int io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb)
{
    struct rio *x = io->impl;
    MDB_txn *t;
    struct raft_snapshot *s = NULL;
    if (mdb_txn_begin(x->env, NULL, MDB_RDONLY, &t) == 0) {
        s = snapshot_read(x, t);
        mdb_txn_abort(t);
    }
    return later(x, DONE_SNAP_GET, req, (void *)cb, s ? 0 : RAFT_NOTFOUND, s);
}

static raft_time io_time(struct raft_io *io)
{
    (void)io;
    return (raft_time)cmcp_now_ms();
}

static int io_random(struct raft_io *io, int min, int max)
{
    (void)io;
    if (max <= min)
        return min;
    return min + (int)randombytes_uniform((uint32_t)(max - min));
}

void raftio_recv(struct raft_io *io, raft_id from, const char *from_address, const void *bytes,
                 size_t len)
{
    struct rio *x = io->impl;
    struct raft_message m;
    if (!x->started || raftwire_decode(bytes, len, &m) != 0) {
        if (x->started)
            log_warn("raft_message_malformed", "{s:I,s:i}", "from", (json_int_t)from, "bytes",
                     (int)len);
        return;
    }
    m.server_id = from;
    m.server_address = from_address;
    x->recv(io, &m);
}

int raftio_has_state(const char *dir)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/data.mdb", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi log;
    MDB_stat ms;
    int has = -1;
    if (mdb_env_create(&env) == 0) {
        mdb_env_set_maxdbs(env, 4);
        if (mdb_env_open(env, dir, MDB_RDONLY, 0600) == 0 &&
            mdb_txn_begin(env, NULL, MDB_RDONLY, &t) == 0) {
            has = 0;
            if (mdb_dbi_open(t, "log", 0, &log) == 0 && mdb_stat(t, log, &ms) == 0 &&
                ms.ms_entries > 0)
                has = 1;
            MDB_dbi meta;
            MDB_val k = {4, "snap"}, d;
            if (mdb_dbi_open(t, "meta", 0, &meta) == 0 && mdb_get(t, meta, &k, &d) == 0)
                has = 1;
            mdb_txn_abort(t);
        }
        mdb_env_close(env);
    }
    return has;
}

int raftio_init(struct raft_io *io, const struct raftio_opts *o, char *err, size_t errlen)
{
    memset(io, 0, sizeof(*io));
    struct rio *x = calloc(1, sizeof(*x));
    if (!x) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    x->o = *o;
    x->io = io;
    x->tail = &x->head;
    snprintf(x->dir, sizeof(x->dir), "%s", o->dir);
    ev_idle_init(&x->done_w, run_done);
    x->done_w.data = x;
    int rc;
    MDB_txn *t = NULL;
    if (cmcp_mkdir_p(o->dir, 0700) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", o->dir, strerror(errno));
        free(x);
        return -1;
    }
    if ((rc = mdb_env_create(&x->env)) != 0 || (rc = mdb_env_set_maxdbs(x->env, 4)) != 0 ||
        (rc = mdb_env_set_mapsize(x->env, MAP_SIZE)) != 0 ||
        (rc = mdb_env_open(x->env, o->dir, 0, 0600)) != 0 ||
        (rc = mdb_txn_begin(x->env, NULL, 0, &t)) != 0 ||
        (rc = mdb_dbi_open(t, "meta", MDB_CREATE, &x->meta)) != 0 ||
        (rc = mdb_dbi_open(t, "log", MDB_CREATE, &x->log)) != 0 || (rc = mdb_txn_commit(t)) != 0) {
        snprintf(err, errlen, "cannot open the raft log in %s: %s", o->dir, mdb_strerror(rc));
        if (x->env)
            mdb_env_close(x->env);
        free(x);
        return -1;
    }
    io->version = 1;
    io->impl = x;
    io->init = io_init;
    io->close = io_close;
    io->load = io_load;
    io->start = io_start;
    io->bootstrap = io_bootstrap;
    io->recover = io_recover;
    io->set_term = io_set_term;
    io->set_vote = io_set_vote;
    io->send = io_send;
    io->append = io_append;
    io->truncate = io_truncate;
    io->snapshot_put = io_snapshot_put;
    io->snapshot_get = io_snapshot_get;
    io->time = io_time;
    io->random = io_random;
    return 0;
}

void raftio_free(struct raft_io *io)
{
    struct rio *x = io->impl;
    if (!x)
        return;
    ev_timer_stop(x->o.loop, &x->tick_w);
    ev_idle_stop(x->o.loop, &x->done_w);
    while (x->head) {
        struct done *d = x->head;
        x->head = d->next;
        free(d);
    }
    mdb_env_close(x->env);
    free(x);
    io->impl = NULL;
}
