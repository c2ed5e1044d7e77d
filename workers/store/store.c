/*
 * Opening and closing a shard's store, its error messages, the disk reserve.
 *
 * The layout is one LMDB environment per directory (data.mdb, lock.mdb) with
 * four named databases; docs/storage.md describes the records. open() checks
 * the files before the shard trusts them (check.c) because LMDB itself
 * assumes an intact file: a truncated one faults on first touch (SIGBUS) and
 * would make the shard crash-loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "workers/store/store_int.h"

#define MiB ((size_t)1 << 20)

int store_durability_parse(const char *str, enum store_durability *out)
{
    static const char *names[] = {"fsync", "group", "none"};
    for (int i = 0; str && i < 3; i++) {
        if (strcmp(str, names[i]) == 0) {
            *out = (enum store_durability)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *store_durability_name(enum store_durability d)
{
    return d == STORE_GROUP ? "group" : d == STORE_NONE ? "none" : "fsync";
}

const char *store_errmsg(const struct store *s)
{
    return s ? s->errmsg : "";
}

int store__err(struct store *s, int rc, const char *fmt, ...)
{
    int n = snprintf(s->errmsg, sizeof(s->errmsg), "store %s: ", s->dir);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(s->errmsg))
        vsnprintf(s->errmsg + n, sizeof(s->errmsg) - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

int store__rc(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_MAP_FULL:
        return -ENOSPC;
    case MDB_READERS_FULL:
        return -EAGAIN;
    case MDB_TXN_FULL:
        return -E2BIG;
    case MDB_BAD_VALSIZE:
        return -EINVAL;
    case MDB_NOTFOUND:
        return -ENOENT;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

const char *store__mdb_name(int rc)
{
    switch (rc) {
    case ENOSPC:
    case MDB_MAP_FULL:
        return "disk full (ENOSPC)";
    case EIO:
        return "I/O error (EIO)";
    case EACCES:
        return "permission denied (EACCES)";
    default:
        return mdb_strerror(rc);
    }
}


static size_t round_up(size_t v, size_t to)
{
    return (v + to - 1) / to * to;
}

/*
 * Opens the LMDB environment and checks that the file is long enough for
 * the pages its meta page names. 0, STORE__DAMAGED (+why; s->env stays open
 * when LMDB could read the meta pages, for salvage) or -errno.
 */
/*
 * Where LMDB mapped data.mdb: the read-only shared mapping of that file
 * (device and inode) from offset 0. mdb_env_info's me_mapaddr is only set
 * with MDB_FIXEDMAP. Not found (no /proc): the store just never trims.
 */
static void find_map(struct store *s, const struct stat *st)
{
    s->map = NULL;
    s->map_len = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi, off, ino;
        unsigned dmaj, dmin;
        char perms[8];
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &lo, &hi, perms, &off, &dmaj, &dmin,
                   &ino) != 7)
            continue;
        if (ino != (unsigned long)st->st_ino || off != 0 || major(st->st_dev) != dmaj ||
            minor(st->st_dev) != dmin || perms[3] != 's' || perms[1] == 'w')
            continue;
        s->map = (char *)lo;
        s->map_len = hi - lo;
        break;
    }
    fclose(f);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void store_trim(struct store *s)
{
    if (!s || !s->env || !s->map || !s->touched)
        return; /* nothing can have been mapped since the last trim: nothing to walk */
    s->touched = false;
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    size_t len = (info.me_last_pgno + 1) * (size_t)s->psize;
    if (len > s->map_len)
        len = s->map_len;
    /* A shared file mapping: DONTNEED only unmaps; the file and its page cache are untouched. */
    madvise(s->map, len, MADV_DONTNEED);
    s->last_trim = mono_ms();
}

void store__trim_maybe(struct store *s)
{
    if (mono_ms() - s->last_trim >= STORE_TRIM_MS)
        store_trim(s);
}

int store__env_open(struct store *s, char *why, size_t whylen)
{
    char path[4096];
    struct stat st;
    long pg = sysconf(_SC_PAGESIZE);
    snprintf(path, sizeof(path), "%s/data.mdb", s->dir);
    bool existed = stat(path, &st) == 0;
    /* LMDB takes a zero-length file for a new one; anything shorter than its
     * two meta pages lost them. */
    if (existed && st.st_size < 2 * pg) {
        snprintf(why, whylen,
                 "data file is %lld bytes, shorter than its two meta pages (truncated)",
                 (long long)st.st_size);
        return STORE__DAMAGED;
    }
    int rc = mdb_env_create(&s->env);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(s->env, 4);
    if (rc == 0)
        rc = mdb_env_set_mapsize(s->env, round_up(s->cap + s->headroom, (size_t)pg));
    if (rc != 0)
        goto env_fail;
    /* NOTLS: readers belong to txn objects, not threads, so a foreach
     * callback may commit. NOSYNC is the whole of STORE_NONE. */
    unsigned flags = MDB_NOTLS | (s->dur == STORE_NONE ? MDB_NOSYNC : 0);
    rc = mdb_env_open(s->env, s->dir, flags, 0600);
    if (rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH || rc == MDB_CORRUPTED ||
        rc == MDB_PAGE_NOTFOUND) {
        snprintf(why, whylen, "LMDB cannot read its meta pages (%s)", mdb_strerror(rc));
        store__env_close(s);
        return STORE__DAMAGED;
    }
    if (rc != 0)
        goto env_fail;

    MDB_envinfo info;
    MDB_stat ms;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &ms);
    s->psize = ms.ms_psize;
    if (stat(path, &st) != 0)
        goto env_fail_errno;
    size_t hwm = (info.me_last_pgno + 1) * (size_t)s->psize;
    if ((size_t)st.st_size < hwm) {
        snprintf(why, whylen, "data file is %lld bytes but its pages reach %zu (truncated)",
                 (long long)st.st_size, hwm);
        return STORE__DAMAGED;
    }
    /* A lowered max_bytes must still leave room to delete. */
    if (info.me_mapsize < hwm + s->headroom) {
        rc = mdb_env_set_mapsize(s->env, round_up(hwm + s->headroom, (size_t)pg));
        if (rc != 0)
            goto env_fail;
    }
    mdb_env_get_fd(s->env, &s->fd);
    s->reserved_end = st.st_size;
    find_map(s, &st);
    return 0;

env_fail_errno:
    rc = errno;
env_fail:
    store__env_close(s);
    if (rc == ENOSPC)
        return store__err(s, -ENOSPC,
                          "disk full (ENOSPC) creating the database; free space under [node] "
                          "data_dir");
    if (rc == EACCES || rc == EROFS)
        return store__err(s, -rc,
                          "cannot open the database (%s); give the cmcpd user write access to "
                          "this directory",
                          strerror(rc));
    return store__err(s, store__rc(rc), "cannot open the database (%s); check [node] data_dir",
                      mdb_strerror(rc));
}

void store__env_close(struct store *s)
{
    s->map = NULL; /* LMDB unmaps it: never madvise that range again */
    s->map_len = 0;
    if (s->rtxn)
        mdb_txn_abort(s->rtxn);
    s->rtxn = NULL;
    if (s->env)
        mdb_env_close(s->env);
    s->env = NULL;
    s->fd = -1;
}

int store__open_dbs(MDB_env *env, struct store_dbs *db, bool create)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(env, NULL, create ? 0 : MDB_RDONLY, &txn);
    if (rc != 0)
        return rc;
    unsigned f = create ? MDB_CREATE : 0;
    if ((rc = mdb_dbi_open(txn, "sessions", f, &db->sess)) == 0 &&
        (rc = mdb_dbi_open(txn, "events", f, &db->ev)) == 0 &&
        (rc = mdb_dbi_open(txn, "evmeta", f, &db->evmeta)) == 0 &&
        (rc = mdb_dbi_open(txn, "meta", f, &db->meta)) == 0 && create) {
        char v[16];
        MDB_val k = {6, "format"}, d = {(size_t)snprintf(v, sizeof(v), "%d", STORE_FORMAT), v};
        rc = mdb_put(txn, db->meta, &k, &d, 0);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/*
 * Keeps `reserve` bytes of disk blocks allocated past the data (fallocate
 * with KEEP_SIZE: the file length LMDB sees does not change). When the file
 * system fills up, those blocks are what a commit of deletes writes its
 * copy-on-write pages into, so a full disk can always be emptied again.
 */
void store__reserve(struct store *s)
{
    if (!s->reserve_ok || !s->env)
        return;
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    off_t want = (off_t)((info.me_last_pgno + 1) * (size_t)s->psize + s->reserve);
    if (want > (off_t)info.me_mapsize)
        want = (off_t)info.me_mapsize;
    if (want <= s->reserved_end) {
        s->disk_low = false;
        return;
    }
    /* Allocate a reserve ahead, so that this runs once per `reserve` bytes
     * of growth rather than at every commit that adds a page. */
    off_t ahead = want + (off_t)s->reserve;
    if (ahead > (off_t)info.me_mapsize)
        ahead = (off_t)info.me_mapsize;
    if (fallocate(s->fd, FALLOC_FL_KEEP_SIZE, s->reserved_end, ahead - s->reserved_end) == 0) {
        s->reserved_end = ahead;
        s->disk_low = false;
    } else if (errno == ENOSPC && ahead > want &&
               fallocate(s->fd, FALLOC_FL_KEEP_SIZE, s->reserved_end, want - s->reserved_end) ==
                   0) {
        s->reserved_end = want; /* tight on space, but the reserve is whole */
        s->disk_low = false;
    } else if (errno == ENOSPC) {
        s->disk_low = true;
    } else {
        s->reserve_ok = false; /* EOPNOTSUPP: this file system cannot reserve */
    }
}

/* Makes a directory's entries durable (a new file, a rename in it). */
void store__fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

void store__fsync_parent(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", dir);
    char *slash = strrchr(p, '/');
    if (slash == p)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(p, sizeof(p), ".");
    store__fsync_dir(p);
}

static int finish_open(struct store *s)
{
    int dead = 0;
    /* Reader slots of a killed process would pin old pages and grow the
     * file; LMDB clears them when the lock file is reset, this covers the
     * case where another process kept it open. */
    mdb_reader_check(s->env, &dead);
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc != 0)
        return store__err(s, store__rc(rc), "cannot start a reader (%s); restart the shard",
                          mdb_strerror(rc));
    mdb_txn_reset(s->rtxn);
    s->reserve_ok = true;
    store__reserve(s);
    return 0;
}

int store_open(struct store **out, const struct store_opts *o, char **report, char *err,
               size_t errlen)
{
    *out = NULL;
    if (report)
        *report = NULL;
    if (!o || !o->dir || !*o->dir) {
        snprintf(err, errlen, "store: no directory given; set [node] data_dir");
        return -EINVAL;
    }
    struct store *s = calloc(1, sizeof(*s));
    if (!s || !(s->dir = strdup(o->dir))) {
        free(s);
        snprintf(err, errlen, "store %s: out of memory", o->dir);
        return -ENOMEM;
    }
    size_t len = strlen(s->dir);
    while (len > 1 && s->dir[len - 1] == '/')
        s->dir[--len] = '\0';
    s->fd = -1;
    s->tail = &s->head;
    s->dur = o->durability;
    s->cap = o->max_bytes ? o->max_bytes : 1024 * MiB;
    /* Deletes need fresh pages too (copy-on-write), so a full store keeps
     * some map space and some disk blocks for commits that only delete. */
    s->headroom = s->cap / 16;
    s->headroom = s->headroom < MiB / 4 ? MiB / 4 : s->headroom > 16 * MiB ? 16 * MiB : s->headroom;
    s->reserve = s->headroom < MiB ? s->headroom : MiB;
    s->max_events = o->max_events > 0 ? o->max_events : 256;

    char why[512] = "";
    char *rep = NULL;
    int rc = cmcp_mkdir_p(s->dir, 0700);
    if (rc != 0) {
        store__err(s, rc,
                   "cannot create the directory (%s); check [node] data_dir and its "
                   "permissions",
                   strerror(-rc));
        goto fail;
    }
    rc = store__env_open(s, why, sizeof(why));
    if (rc == 0)
        rc = store__verify(s, why, sizeof(why));
    if (rc == STORE__DAMAGED) {
        rc = store__salvage(s, why, &rep);
        if (rc == 0)
            rc = store__env_open(s, why, sizeof(why));
        if (rc == STORE__DAMAGED) /* the fresh store itself: not expected */
            rc = store__err(s, -EIO,
                            "the salvaged store does not open (%s); move the "
                            "directory away by hand",
                            why);
        if (rc == 0)
            rc = store__verify(s, why, sizeof(why));
        if (rc == STORE__DAMAGED)
            rc = store__err(s, -EIO,
                            "the salvaged store fails its check (%s); move the "
                            "directory away by hand",
                            why);
    }
    if (rc == 0)
        rc = finish_open(s);
    if (rc != 0)
        goto fail;
    if (report)
        *report = rep;
    else
        free(rep);
    s->touched = true; /* the check walked every page */
    store_trim(s);
    *out = s;
    return 0;

fail:
    snprintf(err, errlen, "%s", s->errmsg[0] ? s->errmsg : "store: cannot open");
    free(rep);
    store_close(s);
    return rc < 0 ? rc : -EIO;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    store__stage_drop(s);
    if (s->env && s->dur == STORE_NONE)
        mdb_env_sync(s->env, 1);
    store__env_close(s);
    free(s->dir);
    free(s->pos);
    free(s);
}

bool store_has_staged(const struct store *s)
{
    return s && s->head != NULL;
}

int store_stats(struct store *s, struct store_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->cap_bytes = s->cap;
    if (!s->env)
        return store__err(s, -EIO, "closed after a fatal error; restart the shard");
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    struct stat fst;
    if (fstat(s->fd, &fst) == 0)
        st->file_bytes = (size_t)fst.st_size;
    int rc = mdb_txn_renew(s->rtxn);
    if (rc != 0)
        return store__err(s, store__rc(rc), "cannot read (%s)", mdb_strerror(rc));
    s->touched = true;
    MDB_dbi dbis[] = {0, 1, s->db.sess, s->db.ev, s->db.evmeta, s->db.meta};
    size_t pages = 2;
    for (size_t i = 0; i < sizeof(dbis) / sizeof(dbis[0]); i++) {
        MDB_stat ms;
        if (mdb_stat(s->rtxn, dbis[i], &ms) != 0)
            continue;
        pages += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
        if (dbis[i] == s->db.sess)
            st->sessions = (long)ms.ms_entries;
        if (dbis[i] == s->db.ev)
            st->events = (long)ms.ms_entries;
    }
    mdb_txn_reset(s->rtxn);
    st->used_bytes = pages * s->psize;
    return 0;
}
