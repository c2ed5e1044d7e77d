/*
 * Internals of the session store shared by its files. Not for other modules:
 * names are store__ (double underscore), everything else is in store.h.
 */
#ifndef CMCP_STORE_INT_H
#define CMCP_STORE_INT_H

#if !defined(CMCP_LAYER_STORE)
#error "workers/store/store_int.h is internal to the store (../shared/design/layers.md)"
#endif

#include <lmdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "workers/store/store.h"

#define STORE_FORMAT 1    /* of the records below; kept in meta "format" */
#define STORE_SID_MAX 255 /* LMDB keys are <= 511 bytes; ids are ~30 */
#define STORE_HDR 8       /* record header: version, flags, 2 spare, crc32c */
#define STORE_EV_HDR (STORE_HDR + 4)
#define STORE_EVMETA_LEN (STORE_HDR + 12)
#define STORE_REC_FINAL 0x01 /* event flag */

/* Internal result of the open-time check: the files are damaged (not an
 * environmental error), so salvage and move aside. */
#define STORE__DAMAGED 1
#define STORE__FAULT 2 /* a SIGBUS/SIGSEGV inside the check: damaged too */

/* STAGE_POS (a partition's replication position, into meta) is last: a change's ops are
 * never one. */
enum stage_kind { STAGE_PUT, STAGE_DEL, STAGE_EVENT, STAGE_POS };

/* One staged write; sid and payload live in the same allocation. */
struct stage_op {
    struct stage_op *next;
    enum stage_kind kind;
    int stream;
    int part; /* its partition, while store_changes() runs */
    bool final;
    int64_t seq;
    size_t sidlen, len; /* len: payload bytes, without its NUL */
    char *payload;      /* points into buf after the sid */
    char buf[];
};

struct store_dbs {
    MDB_dbi sess, ev, evmeta, meta;
};

struct store {
    char *dir;
    enum store_durability dur;
    size_t cap;      /* max_bytes */
    size_t headroom; /* map space beyond cap, for commits of deletes only */
    size_t reserve;  /* disk blocks kept allocated past the data, ditto */
    int max_events;
    unsigned psize;

    MDB_env *env;
    struct store_dbs db;
    MDB_txn *rtxn; /* reusable reader, reset between calls */

    struct stage_op *head, **tail;
    long nstaged;
    struct store_pos *pos; /* replication positions by partition (change.c), or NULL */

    /* LMDB's read-only map of data.mdb (found in /proc/self/maps: LMDB does
     * not tell), whose pages store_trim() drops from the page tables. */
    char *map;
    size_t map_len;
    double last_trim; /* CLOCK_MONOTONIC ms */
    bool touched;     /* read or committed since the last trim: something may be mapped */

    int fd;             /* the data file, for the disk reserve */
    off_t reserved_end; /* blocks are allocated up to here */
    bool reserve_ok;    /* fallocate works on this file system */
    bool disk_low;      /* the last reserve attempt met ENOSPC */

    char errmsg[512];
};

/* store.c */
int store__err(struct store *s, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int store__rc(int mdb_rc); /* LMDB code -> -errno */
const char *store__mdb_name(int mdb_rc);
int store__env_open(struct store *s, char *why, size_t whylen);
void store__env_close(struct store *s);
int store__open_dbs(MDB_env *env, struct store_dbs *db, bool create);
void store__reserve(struct store *s);
void store__fsync_dir(const char *dir);
void store__fsync_parent(const char *dir);
void store__trim_maybe(struct store *s); /* store_trim at most once per STORE_TRIM_MS */
#define STORE_TRIM_MS 1000

/* record.c */
uint32_t store__crc32c(uint32_t crc, const void *p, size_t n);
void store__rec_seal(void *rec, size_t len, uint8_t flags, const void *key, size_t klen);
/* 0 if the record is intact; its flags into *flags (may be NULL). */
int store__rec_check(const MDB_val *k, const MDB_val *v, size_t minlen, uint8_t *flags);
size_t store__ev_key(char *buf, const char *sid, size_t sidlen, int64_t seq);
int64_t store__ev_key_seq(const MDB_val *k);
bool store__ev_key_of(const MDB_val *k, const char *sid, size_t sidlen);
void store__put_u32(void *p, uint32_t v);
uint32_t store__get_u32(const void *p);
void store__put_u64(void *p, uint64_t v);
uint64_t store__get_u64(const void *p);

/* commit.c */
void store__stage_drop(struct store *s);
int store__stage(struct store *s, enum stage_kind kind, const char *key, size_t keylen,
                 const char *payload, size_t len, struct stage_op **opp);

/* change.c: staged positions made the committed ones, or forgotten (reread from disk). */
void store__pos_committed(struct store *s);
void store__pos_forget(struct store *s);
int store__evmeta_rebuild(MDB_txn *txn, const struct store_dbs *db);

/* check.c: on a freshly opened env, STORE__DAMAGED + why, 0, or -errno. */
int store__verify(struct store *s, char *why, size_t whylen);
/* Copies what is intact from s->env (may be NULL: nothing readable) into a
 * fresh store in s->dir, moving the damaged files aside. Appends to report. */
int store__salvage(struct store *s, const char *why, char **report);

#endif
