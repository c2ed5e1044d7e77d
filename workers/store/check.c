/*
 * The open-time check and the salvage of a damaged store.
 *
 * LMDB trusts its file. A truncated file makes the first touch of a missing
 * page fault (SIGBUS), and garbage in a page can send a cursor to a page
 * number past the end of the file; LMDB checks record checksums never,
 * because it has none. So open() walks every record once, under a guard
 * that turns SIGBUS/SIGSEGV inside the walk into "damaged" instead of a
 * dead shard, and checks each record's CRC (record.c). Cost: one read of the
 * file (docs/storage.md has the numbers).
 *
 * Salvage copies every record that reads back intact into a fresh store,
 * walking each database forward until the damage and then backward from
 * its end, so a broken subtree in the middle costs only that subtree. The
 * damaged directory is kept as <dir>.corrupt-<time> for the operator.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "workers/store/store_int.h"

/* ---- the fault guard ---- */

static sigjmp_buf *guard_jb;

static void guard_fault(int sig)
{
    siglongjmp(*guard_jb, sig);
}

/* Runs fn(arg); a SIGBUS or SIGSEGV inside it returns STORE__FAULT instead. The
 * process is single-threaded while a store opens (the shard opens its
 * store before starting anything else), so swapping the handlers is safe. */
static int guarded(int (*fn)(void *), void *arg)
{
    struct sigaction sa, obus, osegv;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = guard_fault;
    sigemptyset(&sa.sa_mask);
    sigjmp_buf jb;
    guard_jb = &jb;
    sigaction(SIGBUS, &sa, &obus);
    sigaction(SIGSEGV, &sa, &osegv);
    volatile int rc;
    if (sigsetjmp(jb, 1) == 0)
        rc = fn(arg);
    else
        rc = STORE__FAULT;
    sigaction(SIGBUS, &obus, NULL);
    sigaction(SIGSEGV, &osegv, NULL);
    guard_jb = NULL;
    return rc;
}

/* ---- record checks shared by verify and salvage ---- */

struct span {
    const char *lo, *hi; /* the mapped bytes that exist in the file */
    long max_records;    /* more than fit in the file: the walk is looping */
};

static bool in_file(const struct span *f, const MDB_val *v)
{
    const char *p = v->mv_data;
    return p >= f->lo && p <= f->hi && v->mv_size <= (size_t)(f->hi - p);
}

enum which { W_SESS, W_EV, W_EVMETA, W_META };

/* NULL if the record is intact, else what is wrong with it. */
static const char *rec_bad(const struct span *f, enum which w, const MDB_val *k, const MDB_val *v)
{
    if (!in_file(f, k) || !in_file(f, v))
        return "points past the end of the file";
    if (w == W_META)
        return NULL;
    if (k->mv_size == 0 || k->mv_size > (w == W_EV ? STORE_SID_MAX + 9 : STORE_SID_MAX) ||
        (w == W_EV && (k->mv_size < 10 || ((const char *)k->mv_data)[k->mv_size - 9] != '\0')))
        return "has a malformed key";
    size_t min = w == W_SESS ? STORE_HDR + 1 : w == W_EV ? STORE_EV_HDR + 1 : STORE_EVMETA_LEN;
    if (store__rec_check(k, v, min, NULL) != 0)
        return "fails its checksum";
    if (w != W_EVMETA && ((const char *)v->mv_data)[v->mv_size - 1] != '\0')
        return "is not terminated";
    return NULL;
}

/*
 * Where the data file's bytes are mapped. LMDB does not say (me_mapaddr is
 * only set for MDB_FIXEDMAP), so find its mapping by inode in
 * /proc/self/maps. Without it every pointer is taken as in the file and the
 * fault guard alone catches reads past its end.
 */
static struct span file_span(struct store *s)
{
    struct span f = {NULL, (const char *)UINTPTR_MAX, LONG_MAX};
    struct stat st;
    if (fstat(s->fd, &st) != 0)
        return f;
    /* A record takes at least a node header, a pointer and a key byte. */
    f.max_records = (long)(st.st_size / 11) + 16;
    FILE *fp = fopen("/proc/self/maps", "r");
    if (!fp)
        return f;
    char line[4096];
    while (fgets(line, sizeof(line), fp)) {
        unsigned long lo, hi, off, ino;
        if (sscanf(line, "%lx-%lx %*s %lx %*s %lu", &lo, &hi, &off, &ino) == 4 &&
            ino == (unsigned long)st.st_ino && off == 0 && strstr(line, "/data.mdb")) {
            size_t n = hi - lo < (unsigned long)st.st_size ? hi - lo : (size_t)st.st_size;
            f.lo = (const char *)lo;
            f.hi = f.lo + n;
            break;
        }
    }
    fclose(fp);
    return f;
}

/* ---- verify ---- */

struct verify {
    struct store *s;
    struct span f;
    MDB_txn *txn;
    MDB_cursor *c;
    char *why;
    size_t whylen;
};

static int verify_walk(void *arg)
{
    struct verify *w = arg;
    struct store *s = w->s;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &w->txn);
    if (rc != 0) {
        snprintf(w->why, w->whylen, "cannot start a reader (%s)", mdb_strerror(rc));
        return rc > 0 ? -rc : STORE__DAMAGED;
    }
    static const char *names[] = {"sessions", "events", "evmeta", "meta"};
    MDB_dbi *dbis[] = {&s->db.sess, &s->db.ev, &s->db.evmeta, &s->db.meta};
    for (int i = 0; i < 4; i++) {
        if ((rc = mdb_dbi_open(w->txn, names[i], 0, dbis[i])) != 0) {
            snprintf(w->why, w->whylen, "database '%s' cannot be opened (%s)", names[i],
                     mdb_strerror(rc));
            return STORE__DAMAGED;
        }
    }
    MDB_val k = {6, "format"}, v;
    if ((rc = mdb_get(w->txn, s->db.meta, &k, &v)) != 0 || !in_file(&w->f, &v)) {
        snprintf(w->why, w->whylen, "its format record is missing");
        return STORE__DAMAGED;
    }
    char fb[9] = "";
    memcpy(fb, v.mv_data, v.mv_size < 8 ? v.mv_size : 8);
    int fmt = atoi(fb);
    if (fmt < 1) {
        snprintf(w->why, w->whylen, "its format record is damaged");
        return STORE__DAMAGED;
    }
    if (fmt > STORE_FORMAT) {
        store__err(s, -EPROTONOSUPPORT,
                   "written by a newer cmcp (store format %d, this one reads %d); run that "
                   "version, or move the directory away to start empty",
                   fmt, STORE_FORMAT);
        return -EPROTONOSUPPORT;
    }
    for (int i = 0; i < 4; i++) {
        if ((rc = mdb_cursor_open(w->txn, *dbis[i], &w->c)) != 0)
            return STORE__DAMAGED;
        long seen = 0;
        for (rc = mdb_cursor_get(w->c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(w->c, &k, &v, MDB_NEXT)) {
            const char *bad = ++seen > w->f.max_records ? "is one of more than the file can hold "
                                                          "(the tree loops)"
                                                        : rec_bad(&w->f, (enum which)i, &k, &v);
            if (bad) {
                snprintf(w->why, w->whylen, "a record in '%s' %s", names[i], bad);
                return STORE__DAMAGED;
            }
        }
        mdb_cursor_close(w->c);
        w->c = NULL;
        if (rc != MDB_NOTFOUND) {
            snprintf(w->why, w->whylen, "walking '%s' failed (%s)", names[i], mdb_strerror(rc));
            return STORE__DAMAGED;
        }
    }
    /* Committing a read transaction keeps the database handles it opened. */
    rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    return rc == 0 ? 0 : STORE__DAMAGED;
}

int store__verify(struct store *s, char *why, size_t whylen)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    if (info.me_last_txnid == 0) { /* brand new: nothing to check */
        int rc = store__open_dbs(s->env, &s->db, true);
        if (rc == 0) { /* the new files' names must survive a power loss too */
            store__fsync_dir(s->dir);
            store__fsync_parent(s->dir);
        }
        if (rc != 0) {
            store__env_close(s);
            return store__err(s, store__rc(rc),
                              "%s creating the database; free space or fix "
                              "permissions under [node] data_dir",
                              store__mdb_name(rc));
        }
        return 0;
    }
    struct verify w = {s, file_span(s), NULL, NULL, why, whylen};
    int rc = guarded(verify_walk, &w);
    if (rc == STORE__FAULT)
        snprintf(why, whylen, "reading it faulted (a page or record points outside the file)");
    if (w.c)
        mdb_cursor_close(w.c);
    if (w.txn)
        mdb_txn_abort(w.txn);
    if (rc == STORE__FAULT)
        return STORE__DAMAGED;
    if (rc < 0)
        store__env_close(s);
    return rc;
}

/* ---- salvage ---- */

struct salvage {
    struct store *s;
    struct span f;
    MDB_txn *otxn; /* the damaged store, read */
    MDB_cursor *oc;
    MDB_txn *ntxn; /* the fresh store, written */
    struct store_dbs ndb;
    enum which w;
    bool backward;
    char fwd_last[STORE_SID_MAX + 10]; /* where the forward pass stopped */
    size_t fwd_len;
    bool fwd_any, fwd_done;
    long kept[2], bad;
    bool lost; /* a part of the tree could not be read */
    int wrc;   /* failure writing the fresh store */
};

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : alen < blen ? -1 : alen > blen;
}

/* One pass over one database of the damaged store (run guarded: every read
 * of its map may fault). Writes go to the fresh store from copies only, so
 * a fault never interrupts a write. */
static int salvage_pass(void *arg)
{
    struct salvage *w = arg;
    static const char *names[] = {"sessions", "events"};
    MDB_dbi odbi;
    int rc = 0;
    if (!w->otxn)
        rc = mdb_txn_begin(w->s->env, NULL, MDB_RDONLY, &w->otxn);
    if (rc == 0)
        rc = mdb_dbi_open(w->otxn, names[w->w], 0, &odbi);
    if (rc == 0)
        rc = mdb_cursor_open(w->otxn, odbi, &w->oc);
    if (rc != 0) {
        w->lost = true;
        return 0;
    }
    MDB_cursor_op op = w->backward ? MDB_LAST : MDB_FIRST;
    MDB_val k, v;
    long seen = 0;
    while ((rc = mdb_cursor_get(w->oc, &k, &v, op)) == 0) {
        op = w->backward ? MDB_PREV : MDB_NEXT;
        if (++seen > w->f.max_records) { /* the damaged tree loops */
            w->lost = true;
            return 0;
        }
        if (w->backward && w->fwd_any &&
            key_cmp(k.mv_data, k.mv_size, w->fwd_last, w->fwd_len) <= 0)
            return 0; /* met the forward pass */
        if (rec_bad(&w->f, w->w, &k, &v)) {
            w->bad++;
            continue;
        }
        char kb[STORE_SID_MAX + 10];
        memcpy(kb, k.mv_data, k.mv_size);
        MDB_val nk = {k.mv_size, kb}, nv = {v.mv_size, malloc(v.mv_size)};
        if (!nv.mv_data) {
            w->wrc = ENOMEM;
            return 0;
        }
        memcpy(nv.mv_data, v.mv_data, v.mv_size);
        if (!w->backward) {
            memcpy(w->fwd_last, kb, nk.mv_size);
            w->fwd_len = nk.mv_size;
            w->fwd_any = true;
        }
        MDB_val sk = {w->w == W_EV ? nk.mv_size - 9 : 0, kb}, sv;
        /* Events are worth keeping only with their session. */
        if (w->w == W_SESS || mdb_get(w->ntxn, w->ndb.sess, &sk, &sv) == 0) {
            w->wrc = mdb_put(w->ntxn, w->w == W_SESS ? w->ndb.sess : w->ndb.ev, &nk, &nv, 0);
            w->kept[w->w] += w->wrc == 0;
        }
        free(nv.mv_data);
        if (w->wrc != 0)
            return 0;
    }
    if (rc == MDB_NOTFOUND && !w->backward)
        w->fwd_done = true;
    else if (rc != MDB_NOTFOUND)
        w->lost = true;
    return 0;
}

static void salvage_read(struct salvage *w)
{
    for (int which = W_SESS; which <= W_EV && w->wrc == 0; which++) {
        w->w = (enum which)which;
        w->fwd_any = w->fwd_done = false;
        for (int back = 0; back < 2 && !w->fwd_done && w->wrc == 0; back++) {
            w->backward = back;
            if (guarded(salvage_pass, w) != 0)
                w->lost = true;
            if (w->oc)
                mdb_cursor_close(w->oc);
            w->oc = NULL;
        }
    }
    if (w->otxn)
        mdb_txn_abort(w->otxn);
    w->otxn = NULL;
}

static void rm_store_dir(const char *dir)
{
    static const char *files[] = {"data.mdb", "lock.mdb"};
    char p[4096];
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int rc = in < 0 || out < 0 ? -errno : 0;
    char buf[65536];
    ssize_t n;
    while (rc == 0 && (n = read(in, buf, sizeof(buf))) != 0) {
        if (n < 0 || write(out, buf, (size_t)n) != n)
            rc = -(errno ? errno : EIO);
    }
    if (rc == 0 && fsync(out) != 0)
        rc = -errno;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

/* Moves the damaged files to aside and puts the salvaged store (tmp, or
 * nothing) in their place. A directory that cannot be renamed (a mount
 * point) keeps its place and has its files moved into a subdirectory. */
static int move_aside(struct store *s, const char *tmp, char *aside, size_t len)
{
    char ts[32], p[4096], q[4096];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm);
    struct stat st;
    snprintf(aside, len, "%s.corrupt-%s", s->dir, ts);
    for (int i = 2; stat(aside, &st) == 0 && i < 100; i++)
        snprintf(aside, len, "%s.corrupt-%s-%d", s->dir, ts, i);
    if (rename(s->dir, aside) == 0) {
        int rc = tmp ? rename(tmp, s->dir) : mkdir(s->dir, 0700);
        store__fsync_parent(s->dir);
        return rc == 0 ? 0 : -errno;
    }
    snprintf(aside, len, "%s/corrupt-%s", s->dir, ts);
    if (mkdir(aside, 0700) != 0 && errno != EEXIST)
        return -errno;
    static const char *files[] = {"data.mdb", "lock.mdb"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", s->dir, files[i]);
        snprintf(q, sizeof(q), "%s/%s", aside, files[i]);
        if (rename(p, q) != 0 && errno != ENOENT)
            return -errno;
    }
    int rc = 0;
    if (tmp) {
        snprintf(p, sizeof(p), "%s/data.mdb", tmp);
        snprintf(q, sizeof(q), "%s/data.mdb", s->dir);
        rc = rename(p, q) == 0 ? 0 : errno == EXDEV ? copy_file(p, q) : -errno;
        rm_store_dir(tmp);
    }
    store__fsync_dir(s->dir);
    return rc;
}

/* Writes the salvage into a fresh store in tmp; 0 or an LMDB/errno code. */
static int salvage_into(struct salvage *w, const char *tmp)
{
    MDB_env *nenv;
    MDB_envinfo info;
    mdb_env_info(w->s->env, &info);
    int rc = mdb_env_create(&nenv);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(nenv, 4);
    if (rc == 0)
        rc = mdb_env_set_mapsize(nenv, info.me_mapsize);
    if (rc == 0 && mkdir(tmp, 0700) != 0)
        rc = errno;
    if (rc == 0)
        rc = mdb_env_open(nenv, tmp, MDB_NOTLS, 0600);
    if (rc == 0)
        rc = store__open_dbs(nenv, &w->ndb, true);
    if (rc == 0)
        rc = mdb_txn_begin(nenv, NULL, 0, &w->ntxn);
    if (rc == 0) {
        salvage_read(w);
        rc = w->wrc;
        if (rc == 0)
            rc = store__evmeta_rebuild(w->ntxn, &w->ndb);
        if (rc == 0)
            rc = mdb_txn_commit(w->ntxn); /* synchronous: the salvage is durable */
        else
            mdb_txn_abort(w->ntxn);
    }
    mdb_env_close(nenv);
    return rc;
}

int store__salvage(struct store *s, const char *why, char **report)
{
    char tmp[4096], aside[4096];
    struct salvage w;
    memset(&w, 0, sizeof(w));
    w.s = s;
    snprintf(tmp, sizeof(tmp), "%s.salvage-%d", s->dir, (int)getpid());
    rm_store_dir(tmp); /* left by a salvage that was itself killed */
    int rc = 0;
    bool salvaged = false;
    if (s->env) {
        w.f = file_span(s);
        rc = salvage_into(&w, tmp);
        salvaged = rc == 0;
        if (!salvaged)
            rm_store_dir(tmp);
    }
    store__env_close(s);
    int mrc = move_aside(s, salvaged ? tmp : NULL, aside, sizeof(aside));
    char *r = NULL;
    int n;
    if (salvaged)
        n = asprintf(&r,
                     "store %s: %s. Salvaged %ld sessions and %ld events into a fresh store%s%s; "
                     "the damaged files are in %s (keep them to investigate, then delete them)",
                     s->dir, why, w.kept[0], w.kept[1], w.bad ? ", skipping damaged records" : "",
                     w.lost ? "; part of the file could not be read and the sessions in it are "
                              "lost"
                            : "",
                     aside);
    else
        n = asprintf(&r,
                     "store %s: %s. Nothing could be salvaged%s%s%s; started empty; the damaged "
                     "files are in %s (keep them to investigate, then delete them)",
                     s->dir, why, rc ? " (" : "", rc ? store__mdb_name(rc) : "", rc ? ")" : "",
                     aside);
    if (n < 0)
        r = NULL;
    *report = r;
    if (mrc != 0)
        return store__err(s, mrc,
                          "%s, and moving the damaged files aside failed (%s); move "
                          "the directory away by hand",
                          why, strerror(-mrc));
    return 0;
}
