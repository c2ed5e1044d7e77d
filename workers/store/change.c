/*
 * Changes for replication (store.h, "Replication"; docs/storage.md).
 *
 * A change is what one commit wrote to one partition, numbered by the
 * partition's position (epoch, seq) and chained to what came before:
 *
 *   header  "CMCH" version(1) flags(1) spare(2) partition u32 epoch u64
 *           seq u64 prev u64 nops u32 crc32c u32 (over the rest)   = 48 bytes
 *   op      kind u8 final u8 spare u16 stream i32 seq i64 sidlen u32
 *           len u32, then sid and payload                          = 24 bytes + data
 *
 * prev is the partition's chain value before the change; the chain after it
 * is mix(prev, the change's bytes). A replica applies a change only when it
 * holds exactly the history the owner built it on (same seq - 1, same
 * chain): a replica that missed changes (a gap) or holds writes the owner
 * never had (a deposed owner's unreplicated tail) is told so, and catches up
 * by fetching or by a snapshot instead of silently diverging.
 *
 * The position of every partition this store has written is kept in the
 * meta database ("rpos" + partition, big-endian) and changes in the same
 * transaction as the data, so a crash never separates the two. Positions of
 * staged but uncommitted changes are held in memory (pos[]) until the commit;
 * a discard or a failed commit forgets them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "workers/store/store_int.h"

#define CH_MAGIC "CMCH"
#define CH_VERSION 1
#define CH_HDR 48
#define OP_HDR 24

struct store_pos {
    bool loaded, staged;
    uint64_t epoch, seq, chain;
};

/* ---- positions ---- */

static size_t pos_key(char *k, int partition)
{
    memcpy(k, "rpos", 4);
    for (int i = 0; i < 4; i++)
        k[4 + i] = (char)((uint32_t)partition >> (24 - 8 * i));
    return 8;
}

static int pos_table(struct store *s)
{
    if (!s->pos) {
        s->pos = calloc(STORE_PARTITIONS_MAX, sizeof(*s->pos));
        if (!s->pos)
            return store__err(s, -ENOMEM, "out of memory for replication positions");
    }
    return 0;
}

/* The partition's position: staged if a change of it is staged, else committed. */
static int pos_get(struct store *s, int partition, struct store_pos **out)
{
    *out = NULL; /* defined on every path, so a caller never reads an unset pointer */
    if (partition < 0 || partition >= STORE_PARTITIONS_MAX)
        return store__err(s, -EINVAL, "partition %d out of range (0..%d)", partition,
                          STORE_PARTITIONS_MAX - 1);
    int rc = pos_table(s);
    if (rc != 0)
        return rc;
    struct store_pos *p = &s->pos[partition];
    if (!p->loaded) {
        if (!s->env)
            return store__err(s, -EIO, "closed after a fatal error; restart the shard");
        char kb[8];
        MDB_val k = {pos_key(kb, partition), kb}, v;
        MDB_txn *txn = NULL;
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (rc == 0)
            rc = mdb_get(txn, s->db.meta, &k, &v);
        if (rc == 0 && store__rec_check(&k, &v, STORE_HDR + 24, NULL) == 0) {
            const char *b = (const char *)v.mv_data + STORE_HDR;
            p->epoch = store__get_u64(b);
            p->seq = store__get_u64(b + 8);
            p->chain = store__get_u64(b + 16);
        } else if (rc == 0) {
            rc = -1; /* a damaged position: unknown history */
        }
        if (txn)
            mdb_txn_abort(txn);
        if (rc == -1)
            return store__err(s, -EIO,
                              "the replication position of partition %d is damaged; this "
                              "node's copy of the partition must be rebuilt from its owner",
                              partition);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return store__err(s, store__rc(rc), "reading the position of partition %d: %s",
                              partition, store__mdb_name(rc));
        if (rc == MDB_NOTFOUND)
            p->epoch = p->seq = p->chain = 0;
        p->loaded = true;
    }
    *out = p;
    return 0;
}

/* Stages the partition's new position (written with the data at commit). */
static int pos_stage(struct store *s, int partition, struct store_pos *p)
{
    char kb[8], val[24];
    size_t kl = pos_key(kb, partition);
    store__put_u64(val, p->epoch);
    store__put_u64(val + 8, p->seq);
    store__put_u64(val + 16, p->chain);
    int rc = store__stage(s, STAGE_POS, kb, kl, val, sizeof(val), NULL);
    if (rc == 0)
        p->staged = true;
    return rc;
}

void store__pos_forget(struct store *s)
{
    if (!s->pos)
        return;
    for (int i = 0; i < STORE_PARTITIONS_MAX; i++)
        if (s->pos[i].staged)
            s->pos[i].loaded = s->pos[i].staged = false;
}

void store__pos_committed(struct store *s)
{
    if (!s->pos)
        return;
    for (int i = 0; i < STORE_PARTITIONS_MAX; i++)
        s->pos[i].staged = false;
}

int store_position_chain(struct store *s, int partition, uint64_t *epoch, uint64_t *seq,
                         uint64_t *chain)
{
    struct store_pos *p = NULL;
    int rc = pos_get(s, partition, &p);
    if (rc == 0) {
        *epoch = p->epoch;
        *seq = p->seq;
        *chain = p->chain;
    }
    return rc;
}

int store_position(struct store *s, int partition, uint64_t *epoch, uint64_t *seq)
{
    uint64_t chain;
    return store_position_chain(s, partition, epoch, seq, &chain);
}

/* ---- the chain ---- */

static uint64_t mix(uint64_t prev, const void *p, size_t n)
{
    uint32_t lo = store__crc32c((uint32_t)prev, p, n);
    uint32_t hi = store__crc32c((uint32_t)(prev >> 32) ^ 0x9e3779b9u, p, n);
    return ((uint64_t)hi << 32 | lo) ^ (prev * 0x100000001b3ull);
}

/* ---- encoding (the owner) ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_room(struct buf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int put_raw(struct buf *b, enum stage_kind kind, bool final, int stream, int64_t seq,
                   const char *sid, size_t sidlen, const char *payload, size_t len)
{
    if (buf_room(b, OP_HDR + sidlen + len) != 0)
        return -ENOMEM;
    unsigned char *h = (unsigned char *)b->p + b->len;
    memset(h, 0, OP_HDR);
    h[0] = (unsigned char)kind;
    h[1] = final;
    store__put_u32(h + 4, (uint32_t)stream);
    store__put_u64(h + 8, (uint64_t)seq);
    store__put_u32(h + 16, (uint32_t)sidlen);
    store__put_u32(h + 20, (uint32_t)len);
    memcpy(h + OP_HDR, sid, sidlen);
    if (len)
        memcpy(h + OP_HDR + sidlen, payload, len);
    b->len += OP_HDR + sidlen + len;
    return 0;
}

static int put_op(struct buf *b, const struct stage_op *op)
{
    return put_raw(b, op->kind, op->final, op->stream, op->seq, op->buf, op->sidlen, op->payload,
                   op->len);
}

static void seal_as(const char *magic, char *c, size_t len, int partition, uint64_t epoch,
                    uint64_t seq, uint64_t prev, uint32_t nops)
{
    unsigned char *h = (unsigned char *)c;
    memcpy(h, magic, 4);
    h[4] = CH_VERSION;
    h[5] = h[6] = h[7] = 0;
    store__put_u32(h + 8, (uint32_t)partition);
    store__put_u64(h + 12, epoch);
    store__put_u64(h + 20, seq);
    store__put_u64(h + 28, prev);
    store__put_u32(h + 36, nops);
    store__put_u32(h + 40, 0);
    store__put_u32(h + 44, 0);
    store__put_u32(h + 40, store__crc32c(0, c + 44, len - 44) ^ store__crc32c(0, c, 40));
}

static void seal_header(char *c, size_t len, int partition, uint64_t epoch, uint64_t seq,
                        uint64_t prev, uint32_t nops)
{
    seal_as(CH_MAGIC, c, len, partition, epoch, seq, prev, nops);
}

int store_changes(struct store *s, int (*part_of)(const char *sid), uint64_t (*epoch_of)(int),
                  int (*cb)(void *ud, int partition, const char *change, size_t len), void *ud)
{
    /* the partitions touched, in the order first staged */
    int touched[64], nt = 0, rc = 0;
    int *parts = touched;
    size_t cap = 64;
    for (struct stage_op *op = s->head; op; op = op->next) {
        if (op->kind == STAGE_POS)
            continue;
        op->part = part_of(op->buf);
        if (op->part < 0)
            continue; /* not a partition's session: not replicated */
        bool seen = false;
        for (int i = 0; i < nt && !seen; i++)
            seen = parts[i] == op->part;
        if (seen)
            continue;
        if ((size_t)nt == cap) {
            int *np = malloc(2 * cap * sizeof(*np));
            if (!np) {
                rc = store__err(s, -ENOMEM, "out of memory encoding changes");
                break;
            }
            memcpy(np, parts, (size_t)nt * sizeof(*np));
            if (parts != touched)
                free(parts);
            parts = np;
            cap *= 2;
        }
        parts[nt++] = op->part;
    }
    struct buf b = {0};
    for (int i = 0; rc == 0 && i < nt; i++) {
        int part = parts[i];
        struct store_pos *p;
        if ((rc = pos_get(s, part, &p)) != 0)
            break;
        uint64_t epoch = epoch_of(part);
        if (epoch < p->epoch) {
            rc = store__err(s, -ESTALE,
                            "partition %d: epoch %llu is older than the %llu this store already "
                            "wrote; this node no longer owns it",
                            part, (unsigned long long)epoch, (unsigned long long)p->epoch);
            break;
        }
        b.len = 0;
        if ((rc = buf_room(&b, CH_HDR)) != 0)
            break;
        b.len = CH_HDR;
        uint32_t nops = 0;
        for (struct stage_op *op = s->head; rc == 0 && op; op = op->next) {
            if (op->kind == STAGE_POS || op->part != part)
                continue;
            rc = put_op(&b, op);
            nops++;
        }
        if (rc != 0) {
            rc = store__err(s, rc, "out of memory encoding changes");
            break;
        }
        seal_header(b.p, b.len, part, epoch, p->seq + 1, p->chain, nops);
        struct store_pos next = *p;
        next.epoch = epoch;
        next.seq = p->seq + 1;
        next.chain = mix(p->chain, b.p, b.len);
        if ((rc = cb(ud, part, b.p, b.len)) != 0)
            break;
        *p = next;
        if ((rc = pos_stage(s, part, p)) != 0)
            break;
    }
    free(b.p);
    if (parts != touched)
        free(parts);
    return rc;
}

/* ---- decoding and applying (a replica) ---- */

/* Whether the ops after the header are well formed: NULL, or what is wrong. */
static const char *ops_check(const char *c, size_t len, uint32_t nops)
{
    size_t off = CH_HDR;
    for (uint32_t i = 0; i < nops; i++) {
        const unsigned char *h = (const unsigned char *)c + off;
        if (len - off < OP_HDR)
            return "is truncated";
        uint32_t sl = store__get_u32(h + 16), pl = store__get_u32(h + 20);
        if (h[0] > STAGE_EVENT || sl == 0 || sl > STORE_SID_MAX || pl > len ||
            len - off - OP_HDR < (size_t)sl + pl)
            return "holds a damaged write";
        off += OP_HDR + sl + pl;
    }
    return off != len ? "has trailing bytes" : NULL;
}

/* Stages the ops (checked by ops_check). */
static int ops_stage(struct store *s, const char *c, size_t len, uint32_t nops)
{
    (void)len;
    size_t off = CH_HDR;
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < nops; i++) {
        const unsigned char *h = (const unsigned char *)c + off;
        uint32_t sl = store__get_u32(h + 16), pl = store__get_u32(h + 20);
        struct stage_op *op = NULL;
        rc = store__stage(s, (enum stage_kind)h[0], (const char *)h + OP_HDR, sl,
                          (const char *)h + OP_HDR + sl, pl, &op);
        if (rc == 0) {
            op->final = h[1] != 0;
            op->stream = (int32_t)store__get_u32(h + 4);
            op->seq = (int64_t)store__get_u64(h + 8);
        }
        off += OP_HDR + sl + pl;
    }
    return rc;
}

/* The 48-byte header shared by changes and snapshots: magic, version, checksum, partition. */
static int header_check(const char *c, size_t len, const char *magic, uint32_t *part)
{
    const unsigned char *h = (const unsigned char *)c;
    if (len < CH_HDR || memcmp(h, magic, 4) != 0 || h[4] != CH_VERSION)
        return -EINVAL;
    uint32_t crc = store__crc32c(0, c + 44, len - 44) ^ store__crc32c(0, c, 40);
    if (store__get_u32(h + 40) != crc)
        return -EINVAL;
    *part = store__get_u32(h + 8);
    return *part >= STORE_PARTITIONS_MAX ? -EINVAL : 0;
}

int store_change_peek(const char *c, size_t len, struct store_change_info *info)
{
    const unsigned char *h = (const unsigned char *)c;
    uint32_t part;
    if (header_check(c, len, CH_MAGIC, &part) != 0)
        return -EINVAL;
    info->partition = (int)part;
    info->epoch = store__get_u64(h + 12);
    info->seq = store__get_u64(h + 20);
    info->prev = store__get_u64(h + 28);
    info->nops = store__get_u32(h + 36);
    return 0;
}

int store_change_stage(struct store *s, const char *c, size_t len)
{
    struct store_change_info in;
    if (store_change_peek(c, len, &in) != 0)
        return store__err(s, -EINVAL, "a change that is not one (damaged or of another version)");
    struct store_pos *p;
    int rc = pos_get(s, in.partition, &p);
    if (rc != 0)
        return rc;
    if (in.epoch < p->epoch)
        return store__err(s, -ESTALE,
                          "partition %d: a change of epoch %llu, older than the %llu held: "
                          "from a deposed owner; refused",
                          in.partition, (unsigned long long)in.epoch,
                          (unsigned long long)p->epoch);
    if (in.seq <= p->seq) {
        /* The owner sends a change before its own commit ends (workers/shard/replica.c), so
         * the last change a copy holds may be one its owner lost (it died, or its commit
         * failed) and numbered again with other content: a resend of the last one must be
         * that very change. Earlier ones cannot differ: the owner had committed them before it
         * sent the next. */
        if (in.epoch == p->epoch && in.seq == p->seq && mix(in.prev, c, len) != p->chain)
            return store__err(s, -EXDEV,
                              "partition %d: change %llu differs from the one this copy holds "
                              "under that number (its owner lost that one); rebuild this copy "
                              "from a snapshot",
                              in.partition, (unsigned long long)in.seq);
        if (in.epoch == p->epoch)
            return 1; /* applied already (a resend) */
        return store__err(s, -EXDEV,
                          "partition %d: the owner of epoch %llu goes on from seq %llu but this "
                          "copy holds up to %llu: it has writes the owner never had; rebuild it "
                          "from a snapshot",
                          in.partition, (unsigned long long)in.epoch,
                          (unsigned long long)in.seq - 1, (unsigned long long)p->seq);
    }
    if (in.seq > p->seq + 1)
        return store__err(s, -EAGAIN,
                          "partition %d: change %llu arrived but this copy holds up to %llu: "
                          "fetch the changes between",
                          in.partition, (unsigned long long)in.seq, (unsigned long long)p->seq);
    if (in.prev != p->chain)
        return store__err(s, -EXDEV,
                          "partition %d: change %llu was built on another history than this "
                          "copy's; rebuild it from a snapshot",
                          in.partition, (unsigned long long)in.seq);
    /* decode every op before staging any: all or nothing */
    const char *bad = ops_check(c, len, in.nops);
    if (bad)
        return store__err(s, -EINVAL, "partition %d: change %llu %s", in.partition,
                          (unsigned long long)in.seq, bad);
    if ((rc = ops_stage(s, c, len, in.nops)) != 0)
        return rc; /* the caller discards what was staged */
    p->epoch = in.epoch;
    p->seq = in.seq;
    p->chain = mix(p->chain, c, len);
    return pos_stage(s, in.partition, p);
}

/* ---- snapshots (a replica's catch-up) ---- */

#define SN_MAGIC "CMSN"

/* Whether the first keylen bytes of k are the id of a session of the partition. */
static bool sid_of(const MDB_val *k, size_t sidlen, const char *prefix, size_t plen,
                   int partition, int (*part_of)(const char *sid), char *sid)
{
    if (sidlen < plen || sidlen == 0 || sidlen > STORE_SID_MAX ||
        memcmp(k->mv_data, prefix, plen) != 0)
        return false;
    memcpy(sid, k->mv_data, sidlen);
    sid[sidlen] = '\0';
    return part_of(sid) == partition;
}

/* Starts a cursor at the first key >= prefix; MDB rc. */
static int seek(MDB_cursor *c, const char *prefix, size_t plen, MDB_val *k, MDB_val *v)
{
    k->mv_size = plen;
    k->mv_data = (void *)prefix;
    return mdb_cursor_get(c, k, v, MDB_SET_RANGE);
}

static bool has_prefix(const MDB_val *k, const char *prefix, size_t plen)
{
    return k->mv_size >= plen && memcmp(k->mv_data, prefix, plen) == 0;
}

int store_snapshot(struct store *s, int partition, const char *prefix,
                   int (*part_of)(const char *sid), size_t max_bytes, char **out, size_t *outlen,
                   struct store_snapshot_info *info)
{
    *out = NULL;
    *outlen = 0;
    memset(info, 0, sizeof(*info));
    if (partition < 0 || partition >= STORE_PARTITIONS_MAX || !prefix || !*prefix)
        return store__err(s, -EINVAL, "snapshot of partition %d: out of range", partition);
    if (!s->env)
        return store__err(s, -EIO, "closed after a fatal error; restart the shard");
    if (s->pos && s->pos[partition].staged)
        return store__err(s, -EBUSY,
                          "snapshot of partition %d: a change of it is staged; commit first",
                          partition);
    size_t plen = strlen(prefix);
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return store__err(s, store__rc(rc), "snapshot: cannot start a read (%s)",
                          mdb_strerror(rc));
    s->touched = true;
    /* the position, in the same transaction as the data: the snapshot is one commit's state */
    uint64_t epoch = 0, seq = 0, chain = 0;
    char kb[8];
    MDB_val k = {pos_key(kb, partition), kb}, v;
    rc = mdb_get(txn, s->db.meta, &k, &v);
    if (rc == 0 && store__rec_check(&k, &v, STORE_HDR + 24, NULL) == 0) {
        const char *b = (const char *)v.mv_data + STORE_HDR;
        epoch = store__get_u64(b);
        seq = store__get_u64(b + 8);
        chain = store__get_u64(b + 16);
    } else if (rc == 0) {
        mdb_txn_abort(txn);
        return store__err(s, -EIO, "snapshot: the position of partition %d is damaged",
                          partition);
    } else if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return store__err(s, store__rc(rc), "snapshot: reading the position of partition %d: %s",
                          partition, store__mdb_name(rc));
    }
    struct buf b = {0};
    uint32_t nops = 0;
    char sid[STORE_SID_MAX + 1];
    rc = buf_room(&b, CH_HDR) ? ENOMEM : 0;
    b.len = CH_HDR;
    /* sessions, then their events */
    MDB_dbi dbis[2] = {s->db.sess, s->db.ev};
    for (int d = 0; rc == 0 && d < 2; d++) {
        if ((rc = mdb_cursor_open(txn, dbis[d], &c)) != 0)
            break;
        int get;
        for (get = seek(c, prefix, plen, &k, &v); get == 0 && has_prefix(&k, prefix, plen);
             get = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            uint8_t flags = 0;
            if (d == 0) {
                if (!sid_of(&k, k.mv_size, prefix, plen, partition, part_of, sid) ||
                    store__rec_check(&k, &v, STORE_HDR + 1, NULL) != 0)
                    continue; /* another partition's, or damaged: the owner has it no more */
                rc = put_raw(&b, STAGE_PUT, false, 0, 0, sid, k.mv_size,
                             (const char *)v.mv_data + STORE_HDR, v.mv_size - STORE_HDR - 1);
                info->sessions++;
            } else {
                if (k.mv_size < 10 || !sid_of(&k, k.mv_size - 9, prefix, plen, partition, part_of, sid) ||
                    store__rec_check(&k, &v, STORE_EV_HDR + 1, &flags) != 0)
                    continue;
                const char *p = v.mv_data;
                rc = put_raw(&b, STAGE_EVENT, (flags & STORE_REC_FINAL) != 0,
                             (int)store__get_u32(p + STORE_HDR), store__ev_key_seq(&k), sid,
                             k.mv_size - 9, p + STORE_EV_HDR, v.mv_size - STORE_EV_HDR - 1);
                info->events++;
            }
            if (rc != 0)
                break;
            nops++;
            if (max_bytes && b.len > max_bytes) {
                rc = EFBIG;
                break;
            }
        }
        mdb_cursor_close(c);
        if (rc == 0 && get != 0 && get != MDB_NOTFOUND)
            rc = get;
    }
    mdb_txn_abort(txn);
    if (rc != 0) {
        free(b.p);
        if (rc == EFBIG)
            return store__err(s, -EFBIG,
                              "snapshot of partition %d: more than %zu bytes; raise the limit",
                              partition, max_bytes);
        if (rc == ENOMEM || rc == -ENOMEM)
            return store__err(s, -ENOMEM, "snapshot of partition %d: out of memory", partition);
        return store__err(s, store__rc(rc), "snapshot of partition %d: %s", partition,
                          store__mdb_name(rc));
    }
    seal_as(SN_MAGIC, b.p, b.len, partition, epoch, seq, chain, nops);
    info->partition = partition;
    info->epoch = epoch;
    info->seq = seq;
    info->nops = nops;
    *out = b.p;
    *outlen = b.len;
    store_trim(s);
    return 0;
}

int store_snapshot_peek(const char *c, size_t len, struct store_snapshot_info *info)
{
    const unsigned char *h = (const unsigned char *)c;
    uint32_t part;
    if (header_check(c, len, SN_MAGIC, &part) != 0)
        return -EINVAL;
    memset(info, 0, sizeof(*info));
    info->partition = (int)part;
    info->epoch = store__get_u64(h + 12);
    info->seq = store__get_u64(h + 20);
    info->nops = store__get_u32(h + 36);
    return 0;
}

int store_snapshot_stage(struct store *s, const char *c, size_t len, const char *prefix,
                         int (*part_of)(const char *sid))
{
    struct store_snapshot_info in;
    if (store_snapshot_peek(c, len, &in) != 0)
        return store__err(s, -EINVAL, "a snapshot that is not one (damaged or of another version)");
    const char *bad = ops_check(c, len, in.nops);
    if (bad)
        return store__err(s, -EINVAL, "the snapshot of partition %d %s", in.partition, bad);
    size_t plen = prefix ? strlen(prefix) : 0;
    if (!plen)
        return store__err(s, -EINVAL, "snapshot: no prefix");
    /* every record must be the partition's: a snapshot replaces that partition, nothing else */
    char sid[STORE_SID_MAX + 1];
    size_t off = CH_HDR;
    for (uint32_t i = 0; i < in.nops; i++) {
        const unsigned char *h = (const unsigned char *)c + off;
        uint32_t sl = store__get_u32(h + 16), pl = store__get_u32(h + 20);
        MDB_val k = {sl, (void *)(h + OP_HDR)};
        if ((h[0] != STAGE_PUT && h[0] != STAGE_EVENT) ||
            !sid_of(&k, sl, prefix, plen, in.partition, part_of, sid))
            return store__err(s, -EINVAL,
                              "the snapshot of partition %d holds a record of another partition",
                              in.partition);
        off += OP_HDR + sl + pl;
    }
    struct store_pos *p;
    int rc = pos_get(s, in.partition, &p);
    if (rc != 0)
        return rc;
    if (p->staged)
        return store__err(s, -EBUSY,
                          "snapshot of partition %d: a change of it is staged; commit first",
                          in.partition);
    /* what this copy holds of the partition goes, in the same commit */
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    if (!s->env)
        return store__err(s, -EIO, "closed after a fatal error; restart the shard");
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn)) != 0)
        return store__err(s, store__rc(rc), "snapshot: cannot start a read (%s)",
                          mdb_strerror(rc));
    s->touched = true;
    MDB_dbi dbis[2] = {s->db.sess, s->db.evmeta};
    for (int d = 0; rc == 0 && d < 2; d++) {
        if ((rc = mdb_cursor_open(txn, dbis[d], &cur)) != 0)
            break;
        MDB_val k, v;
        int get;
        for (get = seek(cur, prefix, plen, &k, &v); rc == 0 && get == 0 && has_prefix(&k, prefix, plen);
             get = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (!sid_of(&k, k.mv_size, prefix, plen, in.partition, part_of, sid))
                continue;
            MDB_val sv;
            if (d == 1 && mdb_get(txn, s->db.sess, &k, &sv) == 0)
                continue; /* deleted with its session already */
            rc = store__stage(s, STAGE_DEL, sid, k.mv_size, NULL, 0, NULL);
        }
        mdb_cursor_close(cur);
        if (rc == 0 && get != 0 && get != MDB_NOTFOUND)
            rc = store__err(s, store__rc(get), "snapshot: reading partition %d: %s",
                            in.partition, store__mdb_name(get));
    }
    mdb_txn_abort(txn);
    if (rc == 0)
        rc = ops_stage(s, c, len, in.nops);
    if (rc != 0)
        return rc; /* the caller discards what was staged */
    p->epoch = in.epoch;
    p->seq = in.seq;
    p->chain = store__get_u64(c + 28);
    return pos_stage(s, in.partition, p);
}
