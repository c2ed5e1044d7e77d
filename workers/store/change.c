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
    struct store_pos *p;
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

static int put_op(struct buf *b, const struct stage_op *op)
{
    if (buf_room(b, OP_HDR + op->sidlen + op->len) != 0)
        return -ENOMEM;
    unsigned char *h = (unsigned char *)b->p + b->len;
    memset(h, 0, OP_HDR);
    h[0] = (unsigned char)op->kind;
    h[1] = op->final;
    store__put_u32(h + 4, (uint32_t)op->stream);
    store__put_u64(h + 8, (uint64_t)op->seq);
    store__put_u32(h + 16, (uint32_t)op->sidlen);
    store__put_u32(h + 20, (uint32_t)op->len);
    memcpy(h + OP_HDR, op->buf, op->sidlen);
    memcpy(h + OP_HDR + op->sidlen, op->payload, op->len);
    b->len += OP_HDR + op->sidlen + op->len;
    return 0;
}

static void seal_header(char *c, size_t len, int partition, uint64_t epoch, uint64_t seq,
                        uint64_t prev, uint32_t nops)
{
    unsigned char *h = (unsigned char *)c;
    memcpy(h, CH_MAGIC, 4);
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

int store_change_peek(const char *c, size_t len, struct store_change_info *info)
{
    const unsigned char *h = (const unsigned char *)c;
    if (len < CH_HDR || memcmp(h, CH_MAGIC, 4) != 0 || h[4] != CH_VERSION)
        return -EINVAL;
    uint32_t crc = store__crc32c(0, c + 44, len - 44) ^ store__crc32c(0, c, 40);
    if (store__get_u32(h + 40) != crc)
        return -EINVAL;
    uint32_t part = store__get_u32(h + 8);
    if (part >= STORE_PARTITIONS_MAX)
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
    size_t off = CH_HDR;
    for (uint32_t i = 0; i < in.nops; i++) {
        const unsigned char *h = (const unsigned char *)c + off;
        if (len - off < OP_HDR)
            return store__err(s, -EINVAL, "partition %d: change %llu is truncated",
                              in.partition, (unsigned long long)in.seq);
        uint32_t sl = store__get_u32(h + 16), pl = store__get_u32(h + 20);
        if (h[0] > STAGE_EVENT || sl == 0 || sl > STORE_SID_MAX || pl > len ||
            len - off - OP_HDR < (size_t)sl + pl)
            return store__err(s, -EINVAL, "partition %d: change %llu holds a damaged write",
                              in.partition, (unsigned long long)in.seq);
        off += OP_HDR + sl + pl;
    }
    if (off != len)
        return store__err(s, -EINVAL, "partition %d: change %llu has trailing bytes",
                          in.partition, (unsigned long long)in.seq);
    off = CH_HDR;
    for (uint32_t i = 0; rc == 0 && i < in.nops; i++) {
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
    if (rc != 0)
        return rc; /* the caller discards what was staged */
    p->epoch = in.epoch;
    p->seq = in.seq;
    p->chain = mix(p->chain, c, len);
    return pos_stage(s, in.partition, p);
}
