/*
 * Reads. They see committed data only (staged writes live in the store's
 * memory, not in LMDB). Single reads reuse one reset reader transaction,
 * which saves the reader-slot setup per call; the foreach calls start their
 * own, so that a callback may read or commit.
 */
#include <errno.h>
#include <string.h>

#include "workers/store/store_int.h"

static int begin(struct store *s, MDB_txn **txn, bool own)
{
    if (!s->env)
        return store__err(s, -EIO, "closed after a fatal error; restart the shard");
    int rc = own ? mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn) : mdb_txn_renew(s->rtxn);
    if (rc != 0)
        return store__err(s, store__rc(rc), "cannot start a read (%s); restart the shard",
                          mdb_strerror(rc));
    if (!own)
        *txn = s->rtxn;
    s->touched = true;
    return 0;
}

static json_t *session_parse(struct store *s, const MDB_val *k, const MDB_val *v)
{
    if (store__rec_check(k, v, STORE_HDR + 1, NULL) != 0) {
        store__err(s, -EIO,
                   "session %.*s fails its checksum and is treated as lost; check the "
                   "disk (dmesg)",
                   (int)k->mv_size, (const char *)k->mv_data);
        return NULL;
    }
    json_error_t je;
    json_t *j =
        json_loadb((const char *)v->mv_data + STORE_HDR, v->mv_size - STORE_HDR - 1, 0, &je);
    if (!j)
        store__err(s, -EIO, "session %.*s holds bad JSON (%s)", (int)k->mv_size,
                   (const char *)k->mv_data, je.text);
    return j;
}

json_t *store_session_get(struct store *s, const char *sid)
{
    MDB_txn *txn = NULL;
    size_t len = sid ? strlen(sid) : 0;
    if (len == 0 || len > STORE_SID_MAX || begin(s, &txn, false) != 0)
        return NULL;
    MDB_val k = {len, (void *)sid}, v;
    json_t *j = NULL;
    int rc = mdb_get(txn, s->db.sess, &k, &v);
    if (rc == 0)
        j = session_parse(s, &k, &v);
    else if (rc != MDB_NOTFOUND)
        store__err(s, store__rc(rc), "reading session %s: %s", sid, mdb_strerror(rc));
    mdb_txn_reset(txn);
    return j;
}

long store_session_count(struct store *s)
{
    MDB_txn *txn = NULL;
    MDB_stat ms;
    if (begin(s, &txn, false) != 0)
        return -EIO;
    int rc = mdb_stat(txn, s->db.sess, &ms);
    mdb_txn_reset(txn);
    return rc == 0 ? (long)ms.ms_entries : store__rc(rc);
}

int store_session_foreach(struct store *s, int (*cb)(void *ud, const char *sid, json_t *state),
                          void *ud)
{
    MDB_txn *txn = NULL;
    MDB_cursor *c;
    int rc = begin(s, &txn, true);
    if (rc != 0)
        return rc;
    if ((rc = mdb_cursor_open(txn, s->db.sess, &c)) != 0) {
        mdb_txn_abort(txn);
        return store__err(s, store__rc(rc), "reading sessions: %s", mdb_strerror(rc));
    }
    MDB_val k, v;
    int stop = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !stop;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        char sid[STORE_SID_MAX + 1];
        if (k.mv_size > STORE_SID_MAX)
            continue;
        memcpy(sid, k.mv_data, k.mv_size);
        sid[k.mv_size] = '\0';
        json_t *j = session_parse(s, &k, &v);
        if (!j)
            continue; /* damaged since open: skip it, the rest is good */
        stop = cb(ud, sid, j);
        json_decref(j);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    store_trim(s); /* a walk over every session (recovery) mapped the whole file */
    if (stop)
        return stop;
    return rc == MDB_NOTFOUND
               ? 0
               : store__err(s, store__rc(rc), "reading sessions: %s", mdb_strerror(rc));
}

int store_events_foreach(struct store *s, const char *sid, int stream, int64_t after,
                         int (*cb)(void *ud, int stream, int64_t seq, bool final, const char *text),
                         void *ud)
{
    size_t len = sid ? strlen(sid) : 0;
    if (len == 0 || len > STORE_SID_MAX)
        return store__err(s, -EINVAL, "session id %s; ids are 1..%d bytes",
                          len ? "too long" : "empty", STORE_SID_MAX);
    if (after == INT64_MAX)
        return 0;
    MDB_txn *txn = NULL;
    MDB_cursor *c;
    int rc = begin(s, &txn, true);
    if (rc != 0)
        return rc;
    if ((rc = mdb_cursor_open(txn, s->db.ev, &c)) != 0) {
        mdb_txn_abort(txn);
        return store__err(s, store__rc(rc), "reading events of %s: %s", sid, mdb_strerror(rc));
    }
    char kb[STORE_SID_MAX + 9];
    MDB_val k = {store__ev_key(kb, sid, len, after + 1), kb}, v;
    int stop = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
         rc == 0 && !stop && store__ev_key_of(&k, sid, len);
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint8_t flags;
        if (store__rec_check(&k, &v, STORE_EV_HDR + 1, &flags) != 0) {
            store__err(s, -EIO,
                       "an event of session %s fails its checksum and is skipped; "
                       "check the disk (dmesg)",
                       sid);
            continue;
        }
        const char *p = v.mv_data;
        int st = (int)store__get_u32(p + STORE_HDR);
        if (stream >= 0 && st != stream)
            continue;
        /* Stored with its NUL, so the text is passed in place. */
        stop = cb(ud, st, store__ev_key_seq(&k), flags & STORE_REC_FINAL, p + STORE_EV_HDR);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (stop)
        return stop;
    return rc == 0 || rc == MDB_NOTFOUND
               ? 0
               : store__err(s, store__rc(rc), "reading events of %s: %s", sid, mdb_strerror(rc));
}

int64_t store_last_seq(struct store *s, const char *sid)
{
    MDB_txn *txn = NULL;
    size_t len = sid ? strlen(sid) : 0;
    if (len == 0 || len > STORE_SID_MAX || begin(s, &txn, false) != 0)
        return 0;
    MDB_val k = {len, (void *)sid}, v;
    int64_t last = 0;
    if (mdb_get(txn, s->db.evmeta, &k, &v) == 0 &&
        store__rec_check(&k, &v, STORE_EVMETA_LEN, NULL) == 0)
        last = (int64_t)store__get_u64((const char *)v.mv_data + STORE_HDR + 4);
    mdb_txn_reset(txn);
    return last;
}
