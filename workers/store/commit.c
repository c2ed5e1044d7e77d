/*
 * Staged writes and the commit that makes them durable.
 *
 * Staging only copies into memory, so a shard can stage while serving and
 * pay for the disk once per commit. The commit applies the staged writes in
 * order in one LMDB write transaction: LMDB's copy-on-write B-tree makes it
 * all-or-nothing across a crash, and its commit (two fdatasyncs: data pages,
 * then the meta page) is the durability point.
 *
 * The size cap: LMDB's map is max_bytes plus headroom. A transaction that
 * stores anything is refused (-ENOSPC) once the pages holding live data
 * would pass max_bytes; one that only deletes may use the headroom, because
 * deleting writes new copies of the pages it touches. Without that split a
 * full store could never be emptied.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "workers/store/store_int.h"

#include "base/jsonw.h"

/* ---- staging ---- */

static int check_sid(struct store *s, const char *sid, size_t *len)
{
    *len = sid ? strlen(sid) : 0;
    if (*len == 0 || *len > STORE_SID_MAX)
        return store__err(s, -EINVAL, "session id %s; ids are 1..%d bytes",
                          *len ? "too long" : "empty", STORE_SID_MAX);
    if (!s->env)
        return store__err(s, -EIO, "closed after a fatal error; restart the shard");
    return 0;
}

int store__stage(struct store *s, enum stage_kind kind, const char *sid, size_t sidlen,
                 const char *payload, size_t len, struct stage_op **opp)
{
    struct stage_op *op = malloc(sizeof(*op) + sidlen + 1 + len + 1);
    if (!op)
        return store__err(s, -ENOMEM, "out of memory staging session %s", sid);
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    op->sidlen = sidlen;
    op->len = len;
    memcpy(op->buf, sid, sidlen); /* sid need not be NUL-terminated (a change's) */
    op->buf[sidlen] = '\0';
    op->payload = op->buf + sidlen + 1;
    if (len)
        memcpy(op->payload, payload, len);
    op->payload[len] = '\0';
    *s->tail = op;
    s->tail = &op->next;
    s->nstaged++;
    if (opp)
        *opp = op;
    return 0;
}

void store__stage_drop(struct store *s)
{
    struct stage_op *op = s->head, *next;
    for (; op; op = next) {
        next = op->next;
        free(op);
    }
    s->head = NULL;
    s->tail = &s->head;
    s->nstaged = 0;
}

void store_discard(struct store *s)
{
    store__stage_drop(s);
    store__pos_forget(s);
}

int store_session_put(struct store *s, const char *sid, const json_t *state)
{
    size_t sidlen;
    int rc = check_sid(s, sid, &sidlen);
    if (rc != 0)
        return rc;
    if (!json_is_object(state))
        return store__err(s, -EINVAL, "session %s: state is not a JSON object", sid);
    /* Dumped now: the caller goes on mutating its session after staging. */
    size_t tlen = 0;
    char *text = jsonw_dumps(state, &tlen);
    if (!text)
        return store__err(s, -ENOMEM, "session %s: cannot serialise its state", sid);
    rc = store__stage(s, STAGE_PUT, sid, sidlen, text, tlen, NULL);
    free(text);
    return rc;
}

int store_session_del(struct store *s, const char *sid)
{
    size_t sidlen;
    int rc = check_sid(s, sid, &sidlen);
    return rc ? rc : store__stage(s, STAGE_DEL, sid, sidlen, NULL, 0, NULL);
}

int store_event_put(struct store *s, const char *sid, int stream, int64_t seq, bool final,
                    const char *text)
{
    size_t sidlen;
    struct stage_op *op = NULL;
    int rc = check_sid(s, sid, &sidlen);
    if (rc == 0)
        rc = store__stage(s, STAGE_EVENT, sid, sidlen, text ? text : "", text ? strlen(text) : 0, &op);
    if (rc == 0) {
        op->stream = stream;
        op->seq = seq;
        op->final = final;
    }
    return rc;
}

/* ---- applying one op in the write transaction ---- */

struct evmeta {
    uint32_t count;
    int64_t last;
};

/* Counts a session's events the slow way, when its counter is damaged. */
static int ev_count(MDB_txn *txn, const struct store_dbs *db, const MDB_val *sk, struct evmeta *m)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, db->ev, &c);
    if (rc != 0)
        return rc;
    char kb[STORE_SID_MAX + 9];
    MDB_val k = {store__ev_key(kb, sk->mv_data, sk->mv_size, INT64_MIN), kb}, v;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         rc == 0 && store__ev_key_of(&k, sk->mv_data, sk->mv_size);
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        m->count++;
        m->last = store__ev_key_seq(&k);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int evmeta_get(MDB_txn *txn, const struct store_dbs *db, MDB_val *k, struct evmeta *m)
{
    MDB_val v;
    int rc = mdb_get(txn, db->evmeta, k, &v);
    m->count = 0;
    m->last = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (store__rec_check(k, &v, STORE_EVMETA_LEN, NULL) != 0)
        return ev_count(txn, db, k, m);
    const char *p = (const char *)v.mv_data + STORE_HDR;
    m->count = store__get_u32(p);
    m->last = (int64_t)store__get_u64(p + 4);
    return 0;
}

static int evmeta_put(MDB_txn *txn, const struct store_dbs *db, MDB_val *k, const struct evmeta *m)
{
    MDB_val v = {STORE_EVMETA_LEN, NULL};
    int rc = mdb_put(txn, db->evmeta, k, &v, MDB_RESERVE);
    if (rc == 0) {
        char *p = v.mv_data;
        store__put_u32(p + STORE_HDR, m->count);
        store__put_u64(p + STORE_HDR + 4, (uint64_t)m->last);
        store__rec_seal(p, v.mv_size, 0, k->mv_data, k->mv_size);
    }
    return rc;
}

/* Deletes the session's events from the oldest on: all of them (keep = 0)
 * or until `keep` remain out of `count`. Seeks afresh for each delete
 * rather than trusting a cursor's position after mdb_cursor_del. */
static int ev_trim(MDB_txn *txn, const struct store_dbs *db, const char *sid, size_t sidlen,
                   uint32_t count, uint32_t keep, uint32_t *left)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, db->ev, &c);
    if (rc != 0)
        return rc;
    char kb[STORE_SID_MAX + 9];
    size_t klen = store__ev_key(kb, sid, sidlen, INT64_MIN);
    while (keep == 0 || count > keep) {
        MDB_val k = {klen, kb}, v;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc != 0 || !store__ev_key_of(&k, sid, sidlen))
            break;
        if ((rc = mdb_cursor_del(c, 0)) != 0)
            break;
        count = count ? count - 1 : 0;
    }
    mdb_cursor_close(c);
    if (left)
        *left = count;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int apply_event(struct store *s, MDB_txn *txn, const struct stage_op *op)
{
    char kb[STORE_SID_MAX + 9];
    MDB_val k = {store__ev_key(kb, op->buf, op->sidlen, op->seq), kb};
    MDB_val v = {STORE_EV_HDR + op->len + 1, NULL};
    MDB_val sk = {op->sidlen, (void *)op->buf};
    struct evmeta m;
    int rc = evmeta_get(txn, &s->db, &sk, &m);
    if (rc != 0)
        return rc;
    rc = mdb_put(txn, s->db.ev, &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    bool added = rc == 0;
    if (rc == MDB_KEYEXIST) { /* the same (sid, seq) again: replace, count unchanged */
        v.mv_size = STORE_EV_HDR + op->len + 1; /* KEYEXIST set v to the old value */
        rc = mdb_put(txn, s->db.ev, &k, &v, MDB_RESERVE);
    }
    if (rc != 0)
        return rc;
    char *p = v.mv_data;
    store__put_u32(p + STORE_HDR, (uint32_t)op->stream);
    memcpy(p + STORE_EV_HDR, op->payload, op->len + 1); /* with its NUL: read in place */
    store__rec_seal(p, v.mv_size, op->final ? STORE_REC_FINAL : 0, k.mv_data, k.mv_size);
    if (added)
        m.count++;
    if (m.count == 1 || op->seq > m.last)
        m.last = op->seq;
    if (m.count > (uint32_t)s->max_events) {
        rc = ev_trim(txn, &s->db, op->buf, op->sidlen, m.count, (uint32_t)s->max_events, &m.count);
        if (rc != 0)
            return rc;
    }
    return evmeta_put(txn, &s->db, &sk, &m);
}

static int apply(struct store *s, MDB_txn *txn, const struct stage_op *op)
{
    MDB_val k = {op->sidlen, (void *)op->buf};
    if (op->kind == STAGE_EVENT)
        return apply_event(s, txn, op);
    if (op->kind == STAGE_POS) {
        MDB_val v = {STORE_HDR + op->len, NULL};
        int rc = mdb_put(txn, s->db.meta, &k, &v, MDB_RESERVE);
        if (rc == 0) {
            memcpy((char *)v.mv_data + STORE_HDR, op->payload, op->len);
            store__rec_seal(v.mv_data, v.mv_size, 0, k.mv_data, k.mv_size);
        }
        return rc;
    }
    if (op->kind == STAGE_DEL) {
        int rc = mdb_del(txn, s->db.sess, &k, NULL);
        if (rc == 0 || rc == MDB_NOTFOUND)
            rc = mdb_del(txn, s->db.evmeta, &k, NULL);
        if (rc == 0 || rc == MDB_NOTFOUND)
            rc = ev_trim(txn, &s->db, op->buf, op->sidlen, 0, 0, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    MDB_val v = {STORE_HDR + op->len + 1, NULL};
    int rc = mdb_put(txn, s->db.sess, &k, &v, MDB_RESERVE);
    if (rc == 0) {
        memcpy((char *)v.mv_data + STORE_HDR, op->payload, op->len + 1);
        store__rec_seal(v.mv_data, v.mv_size, 0, k.mv_data, k.mv_size);
    }
    return rc;
}

/* Pages holding live data in txn: every tree's pages plus the two metas. */
static size_t used_pages(MDB_txn *txn, const struct store_dbs *db)
{
    MDB_dbi dbis[] = {0, 1, db->sess, db->ev, db->evmeta, db->meta};
    size_t pages = 2;
    for (size_t i = 0; i < sizeof(dbis) / sizeof(dbis[0]); i++) {
        MDB_stat ms;
        if (mdb_stat(txn, dbis[i], &ms) == 0)
            pages += ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages;
    }
    return pages;
}

/* How many pages a transaction that stores something may leave in use. */
static size_t page_limit(struct store *s)
{
    size_t limit = s->cap / s->psize;
    if (s->disk_low) {
        store__reserve(s); /* space may have come back */
        if (s->disk_low) {
            /* Keep the blocks still reserved for deletes. */
            size_t owned = (size_t)s->reserved_end / s->psize, keep = s->reserve / s->psize;
            size_t disk = owned > keep ? owned - keep : 0;
            if (disk < limit)
                limit = disk;
        }
    }
    return limit;
}

static int reopen_after_panic(struct store *s)
{
    store__env_close(s);
    char why[256] = "";
    int rc = store__env_open(s, why, sizeof(why));
    if (rc == 0)
        rc = store__open_dbs(s->env, &s->db, false);
    if (rc == 0)
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->rtxn);
    if (rc == 0) {
        mdb_txn_reset(s->rtxn);
        return 0;
    }
    store__env_close(s);
    return -1;
}

int store_commit(struct store *s)
{
    if (!s->head)
        return 0;
    if (!s->env) {
        store__stage_drop(s);
        store__pos_forget(s);
        return store__err(s, -EIO, "closed after a fatal error; restart the shard");
    }
    char first[STORE_SID_MAX + 1];
    snprintf(first, sizeof(first), "%s", s->head->buf);
    long n = s->nstaged;
    bool grows = false;
    s->touched = true;
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    for (struct stage_op *op = s->head; rc == 0 && op; op = op->next) {
        grows |= op->kind != STAGE_DEL;
        rc = apply(s, txn, op);
        if (rc != 0)
            snprintf(first, sizeof(first), "%s", op->buf);
    }
    if (rc == 0 && grows && used_pages(txn, &s->db) > page_limit(s)) {
        rc = s->disk_low ? ENOSPC : MDB_MAP_FULL;
    }
    if (rc == 0) {
        rc = mdb_txn_commit(txn); /* frees txn, even on failure */
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    store__stage_drop(s);
    if (rc == 0)
        store__pos_committed(s);
    else
        store__pos_forget(s);
    if (rc == 0) {
        store__reserve(s);
        store__trim_maybe(s);
        return 0;
    }

    int err = store__rc(rc);
    bool cap_hit = rc == MDB_MAP_FULL;
    if (rc == ENOSPC)
        s->disk_low = true;
    if (cap_hit)
        return store__err(
            s, -ENOSPC,
            "full: max_bytes (%zu KiB) reached (ENOSPC) committing %ld writes (session "
            "%s among them); nothing of them was stored. Delete sessions "
            "or raise the store's max_bytes",
            s->cap >> 10, n, first);
    if (err == -ENOSPC)
        return store__err(s, -ENOSPC,
                          "disk full (ENOSPC) committing %ld writes (session %s among them); "
                          "nothing of them was stored. Free space under [node] data_dir or "
                          "delete sessions",
                          n, first);
    if (rc == MDB_PANIC || rc == EIO || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) {
        bool ok = reopen_after_panic(s) == 0;
        return store__err(s, -EIO,
                          "%s committing %ld writes (session %s among them); nothing of them "
                          "was stored. "
                          "%s",
                          store__mdb_name(rc), n, first,
                          ok ? "Reopened the database; check the disk (dmesg)"
                             : "The store is closed: check the disk (dmesg) and restart the "
                               "shard");
    }
    return store__err(s, err,
                      "%s committing %ld writes (session %s among them); nothing of them was "
                      "stored",
                      store__mdb_name(rc), n, first);
}

/* Recounts every session's events: salvage copies events, not counters. */
int store__evmeta_rebuild(MDB_txn *txn, const struct store_dbs *db)
{
    MDB_cursor *c;
    int rc = mdb_drop(txn, db->evmeta, 0);
    if (rc == 0)
        rc = mdb_cursor_open(txn, db->ev, &c);
    if (rc != 0)
        return rc;
    MDB_val k, v;
    char sid[STORE_SID_MAX + 1] = "";
    size_t sidlen = 0;
    struct evmeta m = {0, 0};
    int get = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (;; get = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        bool same = get == 0 && sidlen && store__ev_key_of(&k, sid, sidlen);
        if (!same && sidlen) {
            MDB_val sk = {sidlen, sid};
            if ((rc = evmeta_put(txn, db, &sk, &m)) != 0)
                break;
            sidlen = 0;
        }
        if (get != 0)
            break;
        if (!same) {
            if (k.mv_size < 10 || k.mv_size - 9 > STORE_SID_MAX)
                continue; /* not an event key: salvage skipped it already */
            sidlen = k.mv_size - 9;
            memcpy(sid, k.mv_data, sidlen);
            m.count = 0;
        }
        m.count++;
        m.last = store__ev_key_seq(&k); /* keys are in seq order */
    }
    mdb_cursor_close(c);
    return rc != 0 ? rc : get == MDB_NOTFOUND ? 0 : get;
}

int store_commit_copy(struct store *s)
{
    bool relax = s->env && s->dur != STORE_NONE;
    if (relax)
        mdb_env_set_flags(s->env, MDB_NOMETASYNC, 1);
    int rc = store_commit(s);
    if (relax && s->env)
        mdb_env_set_flags(s->env, MDB_NOMETASYNC, 0);
    return rc;
}
