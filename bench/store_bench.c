/*
 * store_bench: the shard's storage workload through LMDB (the real store,
 * workers/store) and through SQLite in WAL mode (a minimal implementation of
 * the same operations, here only), so that the choice in docs/storage.md
 * rests on numbers from this machine.
 *
 *   store_bench [--dir PARENT] [--quick] [--sessions N] [--repeat R (3)] [--parts abcde]
 *
 * Workload: sessions of ~0.8 KB JSON (what mcp_session_dump() produces for a
 * client with capabilities, subscriptions and a small kv map) in a pool of
 * 10K; each op puts one session and 0..3 events of ~0.2 KB (1.5 on average).
 *   a  one op per commit, fsync
 *   b  group commit of 1, 10, 100 ops per commit, fsync
 *   c  no fsync (LMDB MDB_NOSYNC; SQLite synchronous=NORMAL and OFF)
 *   d  recovery of N sessions: open, load all (eager), or open and get
 *      random ones (lazy); page cache warm, and cold (fadvise DONTNEED)
 *   e  file size for N sessions (two events each)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "workers/store/store.h"

#define POOL 10000
#define MAX_EVENTS 256

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "store_bench: %s: %s\n", what, msg);
    exit(1);
}

/* ---- the workload's data ---- */

static void sid_of(char *buf, size_t len, int i)
{
    /* 26 base32 characters after the shard, like shard_session_id_new(). */
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
    int n = snprintf(buf, len, "1-");
    for (int k = 0; k < 26; k++) {
        buf[n++] = b32[x & 31];
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        x ^= x >> 29;
    }
    buf[n] = '\0';
}

static json_t *session_state(int i, long seq)
{
    char sid[40];
    sid_of(sid, sizeof(sid), i);
    return json_pack("{s:i,s:s,s:i,s:I,s:b,s:s,s:{s:{s:s,s:s},s:{s:{s:b},s:{},s:{}}},s:s,s:[s,s],"
                     "s:{s:s,s:s,s:i},s:I}",
                     "v", 1, "id", sid, "epoch", 1, "seq", (json_int_t)seq, "initialized", 1,
                     "protocol", "2025-06-18", "client", "info", "name", "example-agent-client",
                     "version", "1.4.2", "capabilities", "roots", "listChanged", 1, "sampling",
                     "elicitation", "log_level", "info", "subscriptions",
                     "file:///workspace/project/README.md", "file:///workspace/project/src/main.c",
                     "kv", "cwd", "/workspace/project/src/worker", "note",
                     "a value the client stored with the kv tool, some tens of bytes long", "count",
                     i, "last_active", (json_int_t)1763700000000 + seq);
}

static const char *event_text(void)
{
    return "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{"
           "\"progressToken\":\"tok-4821\",\"progress\":3,\"total\":10,\"message\":\"step 3 "
           "of 10: reading the files under /workspace/project/src\"}}";
}

/* ---- two backends behind one interface ---- */

struct backend {
    const char *name;
    void *(*open)(const char *dir, int mode);
    void (*put)(void *h, const char *sid, json_t *state);
    void (*ev)(void *h, const char *sid, int stream, int64_t seq, const char *text);
    int (*commit)(void *h);
    json_t *(*get)(void *h, const char *sid);
    long (*load_all)(void *h);
    void (*close)(void *h);
};

/* mode: 0 = fsync, 1 = no fsync, 2 = SQLite's synchronous=OFF (LMDB: same as 1) */

static void *lm_open(const char *dir, int mode)
{
    struct store_opts o = {.dir = dir,
                           .durability = mode ? STORE_NONE : STORE_FSYNC,
                           .max_bytes = (size_t)4 << 30,
                           .max_events = MAX_EVENTS};
    struct store *s;
    char err[512], *report = NULL;
    if (store_open(&s, &o, &report, err, sizeof(err)) != 0)
        die("lmdb open", err);
    if (report)
        die("lmdb open reported", report);
    return s;
}

static void lm_put(void *h, const char *sid, json_t *state)
{
    if (store_session_put(h, sid, state) != 0)
        die("lmdb put", store_errmsg(h));
}

static void lm_ev(void *h, const char *sid, int stream, int64_t seq, const char *text)
{
    if (store_event_put(h, sid, stream, seq, false, text) != 0)
        die("lmdb event", store_errmsg(h));
}

static int lm_commit(void *h)
{
    int rc = store_commit(h);
    if (rc != 0)
        die("lmdb commit", store_errmsg(h));
    return rc;
}

static json_t *lm_get(void *h, const char *sid)
{
    return store_session_get(h, sid);
}

static int lm_count_cb(void *ud, const char *sid, json_t *state)
{
    (*(long *)ud)++;
    return 0;
}

static long lm_load_all(void *h)
{
    long n = 0;
    store_session_foreach(h, lm_count_cb, &n);
    return n;
}

static void lm_close(void *h)
{
    store_close(h);
}

struct sq {
    sqlite3 *db;
    sqlite3_stmt *put, *ev, *trim, *get, *all;
    bool in_txn;
};

static void sq_exec(struct sq *q, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &err) != SQLITE_OK)
        die(sql, err ? err : "?");
}

static sqlite3_stmt *sq_prep(struct sq *q, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        die(sql, sqlite3_errmsg(q->db));
    return st;
}

static void *sq_open(const char *dir, int mode)
{
    struct sq *q = calloc(1, sizeof(*q));
    char path[512];
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/store.db", dir);
    if (sqlite3_open(path, &q->db) != SQLITE_OK)
        die("sqlite open", sqlite3_errmsg(q->db));
    sq_exec(q, "PRAGMA journal_mode=WAL");
    /* Tuned as a fair opponent: a 64 MiB page cache holds the whole pool
     * (the default 2 MiB makes every put a read syscall); mmap for reads,
     * as LMDB reads through its map. */
    sq_exec(q, "PRAGMA cache_size=-65536");
    sq_exec(q, "PRAGMA mmap_size=1073741824");
    sq_exec(q, mode == 0   ? "PRAGMA synchronous=FULL"
               : mode == 1 ? "PRAGMA synchronous=NORMAL"
                           : "PRAGMA synchronous=OFF");
    sq_exec(q, "CREATE TABLE IF NOT EXISTS sessions(sid TEXT PRIMARY KEY, state TEXT NOT NULL) "
               "WITHOUT ROWID");
    sq_exec(q, "CREATE TABLE IF NOT EXISTS events(sid TEXT, seq INTEGER, stream INTEGER, "
               "final INTEGER, text TEXT, PRIMARY KEY(sid, seq)) WITHOUT ROWID");
    q->put = sq_prep(q, "INSERT OR REPLACE INTO sessions(sid, state) VALUES(?1, ?2)");
    q->ev = sq_prep(q, "INSERT OR REPLACE INTO events VALUES(?1, ?2, ?3, 0, ?4)");
    q->trim = sq_prep(q, "DELETE FROM events WHERE sid = ?1 AND seq <= (SELECT seq FROM events "
                         "WHERE sid = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)");
    q->get = sq_prep(q, "SELECT state FROM sessions WHERE sid = ?1");
    q->all = sq_prep(q, "SELECT sid, state FROM sessions");
    return q;
}

static void sq_begin(struct sq *q)
{
    if (!q->in_txn)
        sq_exec(q, "BEGIN");
    q->in_txn = true;
}

static void sq_step(struct sq *q, sqlite3_stmt *st)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        die("sqlite step", sqlite3_errmsg(q->db));
    sqlite3_reset(st);
}

static void sq_put(void *h, const char *sid, json_t *state)
{
    struct sq *q = h;
    char *text = json_dumps(state, JSON_COMPACT);
    sq_begin(q);
    sqlite3_bind_text(q->put, 1, sid, -1, SQLITE_STATIC);
    sqlite3_bind_text(q->put, 2, text, -1, SQLITE_STATIC);
    sq_step(q, q->put);
    free(text);
}

static void sq_ev(void *h, const char *sid, int stream, int64_t seq, const char *text)
{
    struct sq *q = h;
    sq_begin(q);
    sqlite3_bind_text(q->ev, 1, sid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q->ev, 2, seq);
    sqlite3_bind_int(q->ev, 3, stream);
    sqlite3_bind_text(q->ev, 4, text, -1, SQLITE_STATIC);
    sq_step(q, q->ev);
    sqlite3_bind_text(q->trim, 1, sid, -1, SQLITE_STATIC);
    sqlite3_bind_int(q->trim, 2, MAX_EVENTS);
    sq_step(q, q->trim);
}

static int sq_commit(void *h)
{
    struct sq *q = h;
    if (q->in_txn)
        sq_exec(q, "COMMIT");
    q->in_txn = false;
    return 0;
}

static json_t *sq_get(void *h, const char *sid)
{
    struct sq *q = h;
    json_t *j = NULL;
    sqlite3_bind_text(q->get, 1, sid, -1, SQLITE_STATIC);
    if (sqlite3_step(q->get) == SQLITE_ROW)
        j = json_loads((const char *)sqlite3_column_text(q->get, 0), 0, NULL);
    sqlite3_reset(q->get);
    return j;
}

static long sq_load_all(void *h)
{
    struct sq *q = h;
    long n = 0;
    while (sqlite3_step(q->all) == SQLITE_ROW) {
        json_t *j = json_loads((const char *)sqlite3_column_text(q->all, 1), 0, NULL);
        n += j != NULL;
        json_decref(j);
    }
    sqlite3_reset(q->all);
    return n;
}

static void sq_close(void *h)
{
    struct sq *q = h;
    sqlite3_stmt *sts[] = {q->put, q->ev, q->trim, q->get, q->all};
    for (size_t i = 0; i < sizeof(sts) / sizeof(sts[0]); i++)
        sqlite3_finalize(sts[i]);
    sqlite3_close(q->db);
    free(q);
}

static const struct backend backends[] = {
    {"lmdb", lm_open, lm_put, lm_ev, lm_commit, lm_get, lm_load_all, lm_close},
    {"sqlite-wal", sq_open, sq_put, sq_ev, sq_commit, sq_get, sq_load_all, sq_close},
};

/* ---- helpers ---- */

static char parent[256] = "/tmp";

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    return remove(p);
}

static void fresh_dir(char *dir, size_t len, const char *tag)
{
    snprintf(dir, len, "%s/store-bench-%s-%d", parent, tag, (int)getpid());
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static size_t dir_bytes(const char *dir, const char *skip)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "du -sb --apparent-size --exclude=%s %s", skip, dir);
    FILE *p = popen(cmd, "r");
    size_t n = 0;
    if (p && fscanf(p, "%zu", &n) != 1)
        n = 0;
    if (p)
        pclose(p);
    return n;
}

/* Drops the store's files from the page cache: a cold start (reboot). */
static void drop_cache(const char *dir)
{
    static const char *files[] = {"data.mdb", "lock.mdb", "store.db", "store.db-wal",
                                  "store.db-shm"};
    char p[512];
    sync();
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        int fd = open(p, O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fills the pool, so the measured puts update a tree of realistic depth. */
static void populate(const struct backend *b, void *h, int n, int events)
{
    char sid[40];
    for (int i = 0; i < n; i++) {
        json_t *st = session_state(i, 1);
        sid_of(sid, sizeof(sid), i);
        b->put(h, sid, st);
        for (int e = 1; e <= events; e++)
            b->ev(h, sid, 1, e, event_text());
        json_decref(st);
        if (i % 1000 == 999)
            b->commit(h);
    }
    b->commit(h);
}

/* ---- scenarios ---- */

struct result {
    double ops_s, us_op, p50, p99;
};

static struct result run_writes(const struct backend *b, int mode, int group, int ops)
{
    char dir[512];
    fresh_dir(dir, sizeof(dir), b->name);
    void *h = b->open(dir, mode);
    populate(b, h, POOL, 0);
    int ncommits = ops / group;
    double *lat = malloc(sizeof(double) * (size_t)ncommits);
    long seq = 2, evseq = 1;
    char sid[40];
    unsigned r = 12345;
    double t0 = now_us();
    for (int c = 0; c < ncommits; c++) {
        double c0 = now_us();
        for (int k = 0; k < group; k++) {
            r = r * 1103515245u + 12345u;
            int i = (int)((r >> 8) % POOL);
            int op = c * group + k;
            sid_of(sid, sizeof(sid), i);
            json_t *st = session_state(i, seq++);
            b->put(h, sid, st);
            json_decref(st);
            for (int e = 0; e < op % 4; e++) /* 0..3 events, 1.5 on average */
                b->ev(h, sid, 1 + op % 3, evseq++, event_text());
        }
        b->commit(h);
        lat[c] = now_us() - c0;
    }
    double el = now_us() - t0;
    qsort(lat, (size_t)ncommits, sizeof(double), cmp_d);
    struct result res = {ncommits * group / (el / 1e6), el / (ncommits * group), lat[ncommits / 2],
                         lat[(int)(ncommits * 0.99)]};
    free(lat);
    b->close(h);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return res;
}

static int cmp_r(const void *a, const void *b)
{
    double x = ((const struct result *)a)->ops_s, y = ((const struct result *)b)->ops_s;
    return x < y ? -1 : x > y;
}

/* Runs a scenario `reps` times, the backends taking turns (so that drift in
 * the disk's speed hits both alike), and prints each backend's median run. */
static void scenario(int mode_lmdb, int mode_sqlite, int group, int ops, int reps,
                     const char *label_lmdb, const char *label_sqlite)
{
    struct result r[2][16];
    int modes[2] = {mode_lmdb, mode_sqlite};
    const char *labels[2] = {label_lmdb, label_sqlite};
    for (int i = 0; i < reps; i++)
        for (int k = 0; k < 2; k++)
            if (modes[k] >= 0)
                r[k][i] = run_writes(&backends[k], modes[k], group, ops);
    for (int k = 0; k < 2; k++) {
        if (modes[k] < 0)
            continue;
        qsort(r[k], (size_t)reps, sizeof(r[k][0]), cmp_r);
        struct result m = r[k][reps / 2];
        printf("%-11s %-27s %8.0f ops/s %8.1f us/op  commit p50 %8.1f us  p99 %8.1f us  "
               "(runs: %.0f..%.0f ops/s)\n",
               backends[k].name, labels[k], m.ops_s, m.us_op, m.p50, m.p99, r[k][0].ops_s,
               r[k][reps - 1].ops_s);
        fflush(stdout);
    }
}

static void run_recovery(const struct backend *b, int n)
{
    char dir[512], sid[40];
    fresh_dir(dir, sizeof(dir), b->name);
    void *h = b->open(dir, 1);
    populate(b, h, n, 2);
    b->close(h);
    if (strcmp(b->name, "sqlite-wal") == 0) { /* checkpoint, as a clean stop would */
        h = b->open(dir, 0);
        sq_exec(h, "PRAGMA wal_checkpoint(TRUNCATE)");
        b->close(h);
    }
    printf("%-11s %d sessions (+2 events each): files %.1f MB (%.0f bytes/session)\n", b->name, n,
           dir_bytes(dir, "lock.mdb") / 1e6, (double)dir_bytes(dir, "lock.mdb") / n);

    for (int cold = 0; cold < 2; cold++) {
        const char *tag = cold ? "cold" : "warm";
        if (cold)
            drop_cache(dir);
        double t0 = now_us();
        h = b->open(dir, 0);
        double t_open = now_us() - t0;
        long got = b->load_all(h);
        double t_all = now_us() - t0;
        b->close(h);
        if (got != n)
            die("load all", "wrong count");

        if (cold)
            drop_cache(dir);
        t0 = now_us();
        h = b->open(dir, 0);
        double t_open2 = now_us() - t0;
        unsigned r = 777;
        int gets = 1000;
        double g0 = now_us();
        for (int k = 0; k < gets; k++) {
            r = r * 1103515245u + 12345u;
            sid_of(sid, sizeof(sid), (int)((r >> 8) % (unsigned)n));
            json_t *j = b->get(h, sid);
            if (!j)
                die("lazy get", sid);
            json_decref(j);
        }
        double t_get = (now_us() - g0) / gets;
        b->close(h);
        printf("%-11s recovery %s: open %7.1f ms, open+load all %7.1f ms (%.2f us/session); "
               "lazy: open %7.1f ms + %6.1f us/get\n",
               b->name, tag, t_open / 1e3, t_all / 1e3, t_all / n, t_open2 / 1e3, t_get);
        fflush(stdout);
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv)
{
    int n = 100000, reps = 3;
    bool quick = false;
    const char *parts = "abcde";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            snprintf(parent, sizeof(parent), "%s", argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--sessions") == 0 && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (strcmp(argv[i], "--parts") == 0 && i + 1 < argc)
            parts = argv[++i];
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]) < 1 ? 1 : atoi(argv[i]) > 16 ? 16 : atoi(argv[i]);
        else {
            fprintf(stderr, "usage: store_bench [--dir PARENT] [--quick] [--sessions N] "
                            "[--repeat R] [--parts abcde]\n");
            return 2;
        }
    }
    int fs_ops = quick ? 300 : 2000, none_ops = quick ? 5000 : 50000;
    printf("store_bench: dir %s, %d-session pool, sqlite %s, lmdb via cmcp_store, median of %d "
           "runs\n",
           parent, POOL, sqlite3_libversion(), reps);
    if (strchr(parts, 'a'))
        scenario(0, 0, 1, fs_ops, reps, "a: fsync, 1 op/commit", "a: fsync, 1 op/commit");
    if (strchr(parts, 'b')) {
        scenario(0, 0, 10, fs_ops * 5, reps, "b: fsync, 10 ops/commit", "b: fsync, 10 ops/commit");
        scenario(0, 0, 100, fs_ops * 10, reps, "b: fsync, 100 ops/commit",
                 "b: fsync, 100 ops/commit");
    }
    if (strchr(parts, 'c')) {
        scenario(1, 1, 1, none_ops, reps, "c: nosync, 1 op/commit", "c: normal, 1 op/commit");
        scenario(1, 1, 100, none_ops, reps, "c: nosync, 100 ops/commit",
                 "c: normal, 100 ops/commit");
        scenario(-1, 2, 1, none_ops, reps, "", "c: off, 1 op/commit");
        scenario(-1, 2, 100, none_ops, reps, "", "c: off, 100 ops/commit");
    }
    if (strchr(parts, 'd') || strchr(parts, 'e'))
        for (size_t k = 0; k < 2; k++)
            run_recovery(&backends[k], quick ? n / 10 : n);
    return 0;
}
