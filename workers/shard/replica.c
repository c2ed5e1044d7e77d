/*
 * Replication (docs/cluster.md, "Replication"): a shard's partitions on other
 * nodes, when the cluster map's replication factor is above 1.
 *
 * The owner. Every commit (durable.c) numbers what it staged as one change
 * per partition (workers/store: store_changes); once the commit is on disk
 * the changes go to each partition's in-sync replicas, and the commit's
 * replies (a gate batch) wait until every in-sync replica acknowledged them
 * (replication = sync), or go at once (async: the lag is exported). Each
 * replica node is one sealed data link on this shard's own loop (ipc/peer.h:
 * the handshake proves both sides hold the cluster cookie; ipc/dlink.h:
 * every frame sealed and numbered, no thread between the loop and the
 * socket); one request in flight per replica, carrying every change queued
 * for it since the last one, so commits pipeline: a later commit is written
 * and sent while an earlier one waits for its acks, and replies still leave
 * in commit order.
 *
 * A commit's changes leave before the owner's own fsync (repl_send, then
 * store_commit, then repl_round), so the replicas write while the owner
 * does: a sync write waits for the slower of the two disks, not for both in
 * turn. Nothing is acknowledged before both, so this changes no guarantee.
 * If the owner's own commit then fails (a disk error), the replicas may hold
 * a change the owner does not: the writes it carried answer that their
 * outcome is unknown (never "not applied"), and the owner's next change of
 * the partition reuses the sequence number, which the replica refuses (its
 * history differs), so the replica is taken out of the in-sync set and
 * rebuilt from the owner's copy by a catch-up.
 *
 * A replica that does not acknowledge within ack_timeout_ms is reported to
 * the failover manager (isr_drop): the leader takes it out of the in-sync
 * set by a committed map change, and only when this shard's map shows that
 * change do the waiting replies go without it. If this node loses the
 * partition (a newer epoch) or its lease while replies wait, those that
 * changed a session answer that the outcome is unknown: the change is on
 * this node's disk and perhaps on the new owner's.
 *
 * The replica. Shard i of every node listens at the peer endpoint's port
 * + 1 + i (all nodes run the same number of shards). A request's changes
 * are checked against each partition's position and staged
 * (store_change_stage: idempotent by (epoch, seq), older epochs refused),
 * committed to disk, and only then acknowledged. A replica keeps no
 * sessions in memory; when the map makes this node a partition's owner
 * (a promotion), the shard loads that partition's sessions from its store
 * (sessions that it no longer owns leave memory, never the store).
 *
 * Catch-up (docs/cluster.md, "Replication and failover"). An owner whose
 * partition has fewer in-sync replicas than rf - 1 picks an up member that
 * holds no copy (ring order from the owner, shifted by the partition, so
 * the load spreads) and rebuilds it: after a commit (nothing staged), a
 * snapshot of the partition read in one transaction (store_snapshot: every
 * session and stored event, with the partition's position), sent in chunks
 * over the same sealed channel; the replica replaces its copy of the
 * partition in one commit. Every change of the partition committed after
 * the snapshot (its rounds are numbered above the last round before it) is
 * queued for the target apart from the in-sync replicas' traffic and sent
 * once the snapshot is in, so nothing is missed or doubled (a resend applies
 * once, by (epoch, seq)). When the target has acknowledged every change so
 * far, the owner asks the failover manager for isr_add and from that moment
 * waits for the target on every write of the partition (so the map never
 * names a replica that lacks an acknowledged write); the map's change makes
 * it an in-sync replica like the others. A catch-up that fails (refused,
 * the target gone, no isr_add in time) ends, asks isr_drop in case its
 * isr_add still commits, and starts again later. At most
 * [cluster] replica_catchups run at once per shard, one more at most every
 * tick, and snapshot chunks take turns with the in-sync replicas' changes
 * on each link.
 */
#define _GNU_SOURCE
#include "workers/shard/shard_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/jsonw.h"
#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/auth.h"
#include "ipc/cview.h"
#include "ipc/dlink.h"
#include "ipc/peer.h"
#include "ipc/stats.h"

#define REPL_MAGIC "CMCPREPL"
#define SNAP_MAGIC "CMCPSNAP" /* a chunk of a partition's snapshot (a catch-up) */
#define POSQ_MAGIC "CMCPPOSQ" /* a catch-up asks where the target's copy of a partition is */
#define CU_MAX 64
#define CU_TICK_S 0.1
#define REPL_MAX_PEERS 64
#define REPL_MAX_MSG (DLINK_MAX_FRAME - 4096) /* a request's changes: the rest of a frame is its header */

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_add(struct buf *b, const void *d, size_t n)
{
    if (n == 0)
        return 0; /* nothing to copy (d may be the NULL of an empty buffer) */
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

/* A request on its way to a replica, answered in the order sent. */
struct flight {
    int kind;             /* SEND_MAIN (in-sync changes), SEND_CU (a catch-up's), SEND_SNAP */
    struct buf b;         /* SEND_MAIN: the changes, kept to be sent again if the link fails */
    uint32_t n;           /* SEND_MAIN: how many */
    uint64_t upto;        /* SEND_MAIN: the newest round among them */
    struct catchup *cu;   /* SEND_CU, SEND_SNAP (NULL once the catch-up ended) */
    size_t chunk;         /* SEND_SNAP: the chunk's bytes */
    double sent_at;       /* ms */
};

/* In-sync changes in flight to one replica at most: a commit's changes leave while earlier
 * ones wait for their answers, so the replica's commits overlap the owner's. */
#define FLY_MAX 4

/* A replica node, as the owner sees it. */
struct rpeer {
    char id[64];
    char host[128];
    int port;
    struct peer_link *pl; /* phase 1: the handshake runs */
    struct dlink *dl;     /* phase 3: the sealed data link */
    int phase;            /* 0 no link, 1 dialing, 3 up */
    struct flight fly[FLY_MAX]; /* requests in flight, oldest first */
    int nfly;
    bool cu_flying;       /* one of them is a catch-up's (one at a time) */
    struct buf queued;    /* changes waiting to be sent: (u32 length, bytes)... */
    uint32_t nqueued;
    uint64_t queued_upto;
    uint64_t acked_upto; /* the newest round all of whose changes for it this replica has */
    double retry_at;     /* ms: after a failure, the next attempt */
    bool broken;         /* it refused a change (out of sync): no more sends until dropped */
    char last_error[200];
    bool last_main; /* the last request was SEND_MAIN: a catch-up goes next if it can */
    uint64_t sent_round; /* the newest round that queued changes for it */
};

enum { SEND_MAIN, SEND_CU, SEND_SNAP, SEND_POS };

/* A catch-up: partition part's copy on node `node`, rebuilt by a snapshot, then fed the
 * partition's changes until the map names it an in-sync replica again. */
enum cu_state {
    CU_POS,    /* the target's position of the partition is asked: the log may do */
    CU_SNAP,   /* the snapshot is on its way */
    CU_STREAM, /* installed; the changes since follow */
    CU_ASKED,  /* every change so far acknowledged, isr_add asked: writes wait for it */
    CU_MEMBER, /* in the map's in-sync set; changes still queued here go first */
};

struct catchup {
    bool active;
    enum cu_state state;
    int part, node;
    uint64_t epoch; /* the partition's epoch when it started */
    char inc[17];   /* the target's incarnation then (hex, as the map publishes it) */
    uint32_t gen;   /* the in-sync set's generation when isr_add was first asked */
    struct rpeer *peer;
    uint64_t snap_id;
    char *snap;
    size_t snap_len, snap_off;
    uint64_t snap_round; /* rounds up to this one are in the snapshot */
    struct buf q;        /* the partition's changes since: (u32 length, bytes)... */
    uint32_t nq;
    uint64_t q_upto;
    struct buf inflight;
    uint32_t ninflight;
    uint64_t inflight_upto;
    uint64_t acked_upto; /* rounds up to this one: the target has the partition's changes */
    uint64_t last_round; /* the newest round whose change of the partition went this way */
    double started, asked_at, last_ask;
    bool stalled; /* a write waited too long for it while isr_add was pending */
    /* ended, but the map names it (or may, isr_add asked): the slot stays so that writes wait
     * for what it acknowledged until the map drops it, and nothing more goes to it */
    bool dead;
    double dead_at;
    bool pos_asked; /* CU_POS: the position request is on its way */
    bool from_log;  /* it took the log's changes, no snapshot */
};

/* The retained change log: the changes of this shard's partitions committed lately, oldest
 * first, up to [cluster] replica_log_bytes. A catch-up whose target holds a prefix of the
 * partition's history gets the changes after it from here instead of a snapshot. */
struct lentry {
    struct lentry *next;  /* the log's order (commit order) */
    struct lentry *pnext; /* the next of its partition */
    int part;
    uint64_t seq, prev; /* its number, and the partition's chain value before it */
    size_t len;
    char data[];
};

/* One commit's changes on their way. */
struct round {
    struct round *next;
    struct gbatch *b;
    uint64_t id;
    double started, asked_at;
    int nparts;
    int *parts;
    uint64_t *epochs;
    bool open;    /* sent before the owner's own commit, which has not ended yet */
    bool dropped; /* that commit failed: nothing waits for it */
    struct lentry *logged; /* its changes, into the log when its commit succeeds */
};

/* Changes of the commit being made, until it is on disk. */
struct pending_change {
    int part;
    struct lentry *e; /* the change (e->data, e->len): into the log once committed */
};

static struct {
    bool sync;
    double ack_timeout_ms;
    struct auth_key key;
    bool have_key;
    char bind_host[128];
    int base_port; /* the node's peer port: shard i serves replicas at base_port + 1 + i */
    struct rpeer *peers[REPL_MAX_PEERS];
    int npeers;
    struct round *rounds, **rounds_tail;
    uint64_t next_round;
    struct pending_change *pend;
    int npend, pend_cap;
    ev_timer tick_w;
    /* links to replicas (dialed) and from owners (accepted) */
    struct peer_env env;
    bool env_on, listening;
    struct round *open_round; /* sent, its local commit not ended (repl_send) */
    /* the retained change log */
    struct lentry *log_head, *log_tail;
    struct lentry *plog[CVIEW_MAX_PARTITIONS], *plog_tail[CVIEW_MAX_PARTITIONS];
    size_t log_bytes, log_max;
    bool snap_only[CVIEW_MAX_PARTITIONS]; /* a catch-up from the log failed: snapshot next */
    struct stats_metric *from_log, *from_snap, *log_gauge;
    /* partitions this shard holds in memory as their owner */
    bool owned[CVIEW_MAX_PARTITIONS];
    uint64_t owned_epoch[CVIEW_MAX_PARTITIONS];
    /* the failover manager's req socket (isr_drop) */
    nng_socket mgr;
    bool mgr_open;
    struct stats_metric *lag;
    struct store *store;
    /* catch-ups (the owner) */
    struct catchup cu[CU_MAX];
    int cu_max, cu_rr;
    size_t chunk_bytes, snap_max;
    double cu_retry[CVIEW_MAX_PARTITIONS]; /* ms: no new catch-up of the partition before */
    ev_timer cu_w;
    struct stats_metric *under, *snap_bytes;
    /* snapshots coming in (the replica) */
    struct snapin {
        char owner[64];
        int part;
        uint64_t id, total;
        struct buf b;
        bool used, done;
        double at;
    } in[4];
} R = {.rounds_tail = &R.rounds};

bool repl_active(void)
{
    const struct cview *v = cview_get();
    return v->have_map && v->rf > 1;
}

/* ---- the owner: collecting a commit's changes ---- */

static int part_of(const char *sid)
{
    int p = cview_partition_of(sid);
    return p >= 0 && p < cview_get()->npart ? p : -1;
}

static uint64_t epoch_of(int p)
{
    return cview_get()->epoch[p];
}

static int collect_cb(void *ud, int partition, const char *change, size_t len)
{
    (void)ud;
    if (R.npend == R.pend_cap) {
        int cap = R.pend_cap ? R.pend_cap * 2 : 64;
        struct pending_change *n = realloc(R.pend, (size_t)cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        R.pend = n;
        R.pend_cap = cap;
    }
    struct store_change_info info;
    if (store_change_peek(change, len, &info) != 0)
        return -EINVAL;
    struct lentry *e = malloc(sizeof(*e) + len);
    if (!e)
        return -ENOMEM;
    memset(e, 0, sizeof(*e));
    e->part = partition;
    e->seq = info.seq;
    e->prev = info.prev;
    e->len = len;
    memcpy(e->data, change, len);
    R.pend[R.npend++] = (struct pending_change){partition, e};
    return 0;
}

static void pend_clear(void)
{
    for (int i = 0; i < R.npend; i++)
        free(R.pend[i].e);
    R.npend = 0;
}

int repl_collect(struct store *st)
{
    pend_clear();
    int rc = store_changes(st, part_of, epoch_of, collect_cb, NULL);
    if (rc != 0)
        pend_clear();
    return rc;
}

void repl_collect_abort(void)
{
    pend_clear();
}

/* ---- the owner: peers ---- */

static void repl_check(void);
static struct catchup *cu_work(struct rpeer *p);
static void cu_send(struct rpeer *p, struct catchup *c);
static void cu_answer(struct flight *f, json_t *o);
static void cu_failed(struct flight *f);
static struct catchup *cu_of(int part);
static const struct dlink_ops owner_ops;

static struct rpeer *peer_find(const char *id)
{
    for (int i = 0; id && i < R.npeers; i++)
        if (strcmp(R.peers[i]->id, id) == 0)
            return R.peers[i];
    return NULL;
}

static struct rpeer *peer_get(const char *id, const char *endpoint)
{
    struct rpeer *p = peer_find(id);
    if (p)
        return p;
    if (R.npeers == REPL_MAX_PEERS || !endpoint || !R.env_on)
        return NULL;
    const char *colon = strrchr(endpoint, ':');
    if (!colon || (size_t)(colon - endpoint) >= sizeof(p->host))
        return NULL;
    p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->id, sizeof(p->id), "%s", id);
    snprintf(p->host, sizeof(p->host), "%.*s", (int)(colon - endpoint), endpoint);
    p->port = atoi(colon + 1) + 1 + shard_g.index;
    R.peers[R.npeers++] = p;
    log_info("replica_peer", "{s:s,s:s,s:i,s:i}", "node", id, "host", p->host, "port", p->port,
             "shard", shard_g.index);
    return p;
}

/* The link is closed; what was in flight goes back in front of what is queued (requeue), or
 * is dropped (a replica that refused a change: it comes back only through a catch-up). */
static void peer_reset(struct rpeer *p, bool requeue)
{
    if (p->pl) {
        struct peer_link *l = p->pl;
        p->pl = NULL;
        peer_close(l);
    }
    if (p->dl) {
        struct dlink *d = p->dl;
        p->dl = NULL;
        dlink_close(d);
    }
    struct buf back = {0};
    uint32_t nback = 0;
    uint64_t upto = 0;
    bool lost = false;
    for (int i = 0; i < p->nfly; i++) {
        struct flight *f = &p->fly[i];
        if (f->kind != SEND_MAIN) {
            cu_failed(f);
        } else if (requeue && !lost) {
            if (buf_add(&back, f->b.p, f->b.len) == 0) {
                nback += f->n;
                upto = f->upto > upto ? f->upto : upto;
            } else {
                lost = true;
            }
        }
        free(f->b.p);
        memset(f, 0, sizeof(*f));
    }
    p->nfly = 0;
    p->cu_flying = false;
    if (nback && !lost && buf_add(&back, p->queued.p, p->queued.len) == 0) {
        free(p->queued.p);
        p->queued = back;
        p->nqueued += nback;
        if (upto > p->queued_upto)
            p->queued_upto = upto;
    } else {
        free(back.p);
        if (nback || lost) {
            /* out of memory: the changes are gone, so later acks must not count for them;
             * the waiting rounds ask for this replica to leave the in-sync set */
            p->broken = true;
        }
    }
    if (p->broken) {
        free(p->queued.p);
        p->queued = (struct buf){0};
        p->nqueued = 0;
    }
    p->phase = 0;
    p->retry_at = cmcp_now_ms() + 100;
}

/* A request failed (no answer in time, the link broke): its work is sent again on a new link
 * shortly (a replica applies a change once, by (epoch, seq)). */
static void peer_failed(struct rpeer *p, const char *why)
{
    if (strcmp(p->last_error, why) != 0)
        log_warn("replica_unreachable", "{s:s,s:s,s:i}", "node", p->id, "error", why, "shard",
                 shard_g.index);
    snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    peer_reset(p, true);
}

/* A request's frame on p's link: the magic, this node's id, then `extra` bytes the caller
 * writes from *at on and queues with req_sent. NULL when the link cannot take it. */
static char *req_reserve(struct rpeer *p, const char *magic, size_t extra, size_t *at)
{
    const char *self = cview_get()->self_id;
    size_t idl = strlen(self);
    char *m = p->dl ? dlink_reserve(p->dl, 10 + idl + extra) : NULL;
    if (!m)
        return NULL;
    uint16_t n = htons((uint16_t)idl);
    memcpy(m, magic, 8);
    memcpy(m + 8, &n, 2);
    memcpy(m + 10, self, idl);
    *at = 10 + idl;
    return m;
}

/* Queues the reserved frame (len bytes) as the request f describes. */
static void req_sent(struct rpeer *p, size_t len, const struct flight *f)
{
    dlink_commit(p->dl, len);
    struct flight *x = &p->fly[p->nfly++];
    *x = *f;
    x->sent_at = cmcp_now_ms();
    if (x->kind != SEND_MAIN)
        p->cu_flying = true;
    /* now, not at the end of the loop turn: this shard is about to block in its own commit's
     * fsync, and the replica writes meanwhile (the link may close here: peer_failed) */
    dlink_flush(p->dl);
}

/* Starts what p needs next: a link, or a request with everything queued for it. */
static void peer_kick(struct rpeer *p)
{
    double now = cmcp_now_ms();
    if (p->phase == 1 || p->nfly == FLY_MAX || now < p->retry_at)
        return;
    bool main_work = p->nqueued > 0 && !p->broken;
    struct catchup *c = p->cu_flying ? NULL : cu_work(p);
    if (!main_work && !c)
        return; /* link when there is something to send */
    if (p->phase == 0) {
        p->pl = peer_dial(&R.env, p->host, p->port, p);
        if (!p->pl) {
            p->retry_at = now + 100;
            return;
        }
        p->phase = 1; /* the handshake's end (or failure) arrives as env_up / env_down */
        return;
    }
    if (c && (!main_work || p->last_main)) {
        p->last_main = false;
        cu_send(p, c);
        return;
    }
    p->last_main = true;
    if (p->queued.len > REPL_MAX_MSG) {
        /* more than a request carries: it fell too far behind; it leaves the in-sync set (the
         * waiting rounds ask for that) and comes back through a catch-up */
        log_error("replica_too_far_behind", "{s:s,s:I,s:i}", "node", p->id, "bytes",
                  (json_int_t)p->queued.len, "shard", shard_g.index);
        p->broken = true;
        peer_reset(p, false);
        return;
    }
    size_t at;
    char *m = req_reserve(p, REPL_MAGIC, 4 + p->queued.len, &at);
    if (!m) {
        peer_failed(p, "out of memory");
        return;
    }
    uint32_t n = htonl(p->nqueued);
    memcpy(m + at, &n, 4);
    if (p->queued.len)
        memcpy(m + at + 4, p->queued.p, p->queued.len);
    struct flight f = {.kind = SEND_MAIN, .b = p->queued, .n = p->nqueued, .upto = p->queued_upto};
    p->queued = (struct buf){0};
    p->nqueued = 0;
    req_sent(p, at + 4 + f.b.len, &f);
}

/* The answer to p's oldest request in flight (o: its JSON, NULL when it was not JSON). */
static void peer_answer(struct rpeer *p, json_t *o)
{
    if (!o) {
        peer_failed(p, "an answer that is not JSON");
        return;
    }
    struct flight f = p->fly[0];
    memmove(&p->fly[0], &p->fly[1], (size_t)(p->nfly - 1) * sizeof(p->fly[0]));
    p->nfly--;
    memset(&p->fly[p->nfly], 0, sizeof(p->fly[0]));
    if (f.kind != SEND_MAIN)
        p->cu_flying = false;
    if (p->last_error[0])
        log_info("replica_reachable", "{s:s,s:i}", "node", p->id, "shard", shard_g.index);
    p->last_error[0] = '\0';
    if (f.kind != SEND_MAIN) {
        cu_answer(&f, o);
        json_decref(o);
        repl_check();
        peer_kick(p);
        return;
    }
    json_t *rs = json_object_get(o, "r");
    bool all_ok = json_is_array(rs) && json_array_size(rs) == f.n;
    int bad = 0;
    size_t k;
    json_t *v;
    json_array_foreach(rs, k, v)
    {
        json_int_t x = json_integer_value(v);
        if (x != 0 && x != 1) {
            all_ok = false;
            bad = (int)x;
        }
    }
    free(f.b.p);
    if (all_ok) {
        if (!p->broken && f.upto > p->acked_upto)
            p->acked_upto = f.upto;
        json_decref(o);
        repl_check();
        peer_kick(p);
        return;
    }
    const char *why = json_string_value(json_object_get(o, "error"));
    char msg[400];
    snprintf(msg, sizeof(msg), "the replica refused a change (%s): %s",
             strerror(bad ? -bad : EPROTO),
             why                ? why
             : bad == -EAGAIN   ? "it misses earlier changes"
             : bad == -EXDEV    ? "its copy's history differs"
             : bad == -ESTALE   ? "it has seen a newer owner"
                                : "see its log");
    log_error("replica_refused", "{s:s,s:s,s:i}", "node", p->id, "error", msg, "shard",
              shard_g.index);
    json_decref(o);
    /* not in sync: nothing more goes to it until it leaves the in-sync set (the waiting
     * commits ask for that after the ack timeout); what follows on this link is dropped, so
     * that no later answer counts */
    p->broken = true;
    snprintf(p->last_error, sizeof(p->last_error), "%s", msg);
    peer_reset(p, false);
    repl_check();
}

static void owner_frame(struct dlink *l, const char *data, size_t len)
{
    struct rpeer *p = dlink_ud(l);
    if (p->nfly == 0) {
        peer_failed(p, "an answer to no request");
        return;
    }
    peer_answer(p, json_loadb(data, len, 0, NULL));
}

static void owner_closed(struct dlink *l, const char *why)
{
    struct rpeer *p = dlink_ud(l);
    p->dl = NULL;
    char msg[200];
    snprintf(msg, sizeof(msg), "the link broke: %s", why);
    peer_failed(p, msg);
}

static const struct dlink_ops owner_ops = {owner_frame, NULL, owner_closed};

/* Requests without an answer in time: the link goes, and its work is sent again on a new one
 * (a replica applies a change once, by (epoch, seq)). */
static void peer_deadlines(void)
{
    double now = cmcp_now_ms(), limit = R.ack_timeout_ms * 4 + 1000;
    for (int i = 0; i < R.npeers; i++) {
        struct rpeer *p = R.peers[i];
        if (p->nfly && now - p->fly[0].sent_at > limit) {
            char why[120];
            snprintf(why, sizeof(why), "no answer within %.0f ms", limit);
            peer_failed(p, why);
        }
    }
}

/* ---- the owner: the retained change log ---- */

static void lentries_free(struct lentry *e)
{
    while (e) {
        struct lentry *next = e->next;
        free(e);
        e = next;
    }
}

static void log_evict_head(void)
{
    struct lentry *e = R.log_head;
    R.log_head = e->next;
    if (!R.log_head)
        R.log_tail = NULL;
    /* the oldest of the log is the oldest of its partition */
    R.plog[e->part] = e->pnext;
    if (!R.plog[e->part])
        R.plog_tail[e->part] = NULL;
    R.log_bytes -= e->len + sizeof(*e);
    free(e);
}

/* The oldest entry leaves, whether its partition's list still holds it or not. */
static void log_evict_head_any(void)
{
    struct lentry *h = R.log_head;
    if (R.plog[h->part] == h) {
        log_evict_head();
        return;
    }
    R.log_head = h->next;
    if (!R.log_head)
        R.log_tail = NULL;
    R.log_bytes -= h->len + sizeof(*h);
    free(h);
}

/* A committed round's changes join the log; the oldest leave past its bound. */
static void log_add(struct lentry *list)
{
    while (list) {
        struct lentry *e = list;
        list = e->next;
        e->next = e->pnext = NULL;
        if (R.log_max == 0 || e->part < 0 || e->part >= CVIEW_MAX_PARTITIONS) {
            free(e);
            continue;
        }
        struct lentry *t = R.plog_tail[e->part];
        if (t && t->seq + 1 != e->seq) {
            /* not the next of what the log holds (the partition was another node's in
             * between): its older entries are another history, never sent again */
            for (struct lentry *x = R.plog[e->part]; x; x = x->pnext)
                x->seq = 0; /* unusable: lookups need seq > 0 contiguous */
            R.plog[e->part] = NULL;
            t = NULL;
        }
        if (t)
            t->pnext = e;
        else
            R.plog[e->part] = e;
        R.plog_tail[e->part] = e;
        if (R.log_tail)
            R.log_tail->next = e;
        else
            R.log_head = e;
        R.log_tail = e;
        R.log_bytes += e->len + sizeof(*e);
    }
    while (R.log_head && R.log_bytes > R.log_max)
        log_evict_head_any(); /* (entries cut off from their partition's list just leave) */
    if (R.log_gauge)
        R.log_gauge->value = (double)R.log_bytes;
}

/*
 * The changes of part after seq `from` up to seq `upto` as a request body ((u32 length,
 * bytes)...) into *out, when the log holds every one of them and the first was built on
 * `chain` (the target's history is a prefix of this node's). The count, or -1.
 */
static long log_fetch(int part, uint64_t from, uint64_t chain, uint64_t upto, struct buf *out)
{
    struct lentry *e = R.plog[part];
    while (e && e->seq && e->seq <= from)
        e = e->pnext;
    if (!e || e->seq != from + 1 || e->prev != chain)
        return -1;
    long n = 0;
    for (uint64_t want = from + 1; e && want <= upto; e = e->pnext, want++) {
        if (e->seq != want)
            return -1;
        uint32_t len = htonl((uint32_t)e->len);
        if (buf_add(out, &len, 4) != 0 || buf_add(out, e->data, e->len) != 0)
            return -1;
        n++;
    }
    return (uint64_t)n == upto - from ? n : -1;
}

/* ---- the owner: rounds ---- */

void repl_send(void)
{
    struct round *r = calloc(1, sizeof(*r));
    if (r && R.npend) {
        r->parts = calloc((size_t)R.npend, sizeof(int));
        r->epochs = calloc((size_t)R.npend, sizeof(uint64_t));
    }
    if (!r || (R.npend && (!r->parts || !r->epochs))) {
        if (r) {
            free(r->parts);
            free(r->epochs);
            free(r);
        }
        pend_clear();
        R.open_round = NULL; /* repl_round answers that the outcome is unknown */
        return;
    }
    r->id = ++R.next_round;
    r->started = cmcp_now_ms();
    r->open = true;
    const struct cview *v = cview_get();
    for (int i = 0; i < R.npend; i++) {
        int part = R.pend[i].part;
        r->parts[r->nparts] = part;
        r->epochs[r->nparts++] = v->epoch[part];
        const struct lentry *e = R.pend[i].e;
        uint32_t len = htonl((uint32_t)e->len);
        struct catchup *c = cu_of(part);
        /* a catch-up's target gets the partition's changes its own way until all of them are
         * in (after its snapshot, and ahead of what the in-sync traffic carries later) */
        bool via_cu = c && !c->dead && (c->state != CU_MEMBER || c->nq || c->ninflight);
        if (via_cu) {
            size_t mark = c->q.len;
            if (buf_add(&c->q, &len, 4) == 0 && buf_add(&c->q, e->data, e->len) == 0) {
                c->nq++;
                c->q_upto = c->last_round = r->id;
                if (c->q.len > R.snap_max)
                    c->stalled = true; /* it falls further behind than a snapshot: start over */
            } else {
                c->q.len = mark;
                c->stalled = true; /* out of memory: the catch-up ends at the next tick */
            }
        }
        for (int k = 0; k < v->nrep[part]; k++) {
            int node = v->rep[part][k];
            if (c && node == c->node && (via_cu || c->dead))
                continue;
            const char *id = cview_node_id(node);
            struct rpeer *p = id ? peer_get(id, cview_node_endpoint(node)) : NULL;
            if (!p || p->broken)
                continue;
            size_t mark = p->queued.len;
            if (buf_add(&p->queued, &len, 4) == 0 && buf_add(&p->queued, e->data, e->len) == 0) {
                p->nqueued++;
                p->queued_upto = p->sent_round = r->id;
            } else {
                p->queued.len = mark;
                p->broken = true; /* out of memory: as above, never acknowledged for it */
            }
        }
    }
    /* the changes stay with the round: into the log once its commit is on disk */
    struct lentry **lt = &r->logged;
    for (int i = 0; i < R.npend; i++) {
        *lt = R.pend[i].e;
        lt = &R.pend[i].e->next;
        R.pend[i].e = NULL;
    }
    pend_clear();
    *R.rounds_tail = r;
    R.rounds_tail = &r->next;
    R.open_round = r;
    for (int i = 0; i < R.npeers; i++)
        peer_kick(R.peers[i]);
}

void repl_round(struct gbatch *b)
{
    struct round *r = R.open_round;
    R.open_round = NULL;
    if (!r) {
        gate_unknown(b, "The change is saved on this node but could not be sent to its copies "
                        "(out of memory): its outcome is unknown; read it back before retrying");
        gate_ready(b);
        return;
    }
    r->open = false;
    r->b = b;
    log_add(r->logged); /* on disk: these changes may be sent again to a copy behind */
    r->logged = NULL;
    if (!R.sync) {
        gate_ready(b); /* async: acknowledged on the local commit; the round only measures lag */
        r->b = NULL;
    }
    repl_check();
    if (R.rounds && !ev_is_active(&R.tick_w))
        ev_timer_start(shard_g.loop, &R.tick_w);
}

void repl_round_dropped(void)
{
    struct round *r = R.open_round;
    R.open_round = NULL;
    if (!r)
        return;
    r->open = false;
    r->dropped = true; /* its replies already answered; nothing waits for it */
    lentries_free(r->logged); /* not on this node's disk: never sent again */
    r->logged = NULL;
    /* Whoever was sent its changes may hold a change this node does not, under a sequence
     * number this node numbers again with its next change (which a replica takes for a resend
     * and skips): nothing more goes to them, so they leave the in-sync set and come back
     * through a catch-up, rebuilt from this node's copy. */
    for (int i = 0; i < R.npeers; i++) {
        struct rpeer *p = R.peers[i];
        if (p->sent_round != r->id)
            continue;
        log_error("replica_diverged", "{s:s,s:s,s:i}", "node", p->id, "why",
                  "this node's commit failed after its changes were sent", "shard",
                  shard_g.index);
        p->broken = true;
        peer_reset(p, false);
    }
    for (int i = 0; i < CU_MAX; i++)
        if (R.cu[i].active && !R.cu[i].dead && R.cu[i].last_round == r->id)
            R.cu[i].stalled = true; /* the catch-up starts over, from a snapshot */
    repl_check();
}

static void ask_drop(int part, uint64_t epoch, const char *node)
{
    if (!R.mgr_open)
        return;
    json_t *o = json_pack("{s:s,s:i,s:I,s:s}", "op", "isr_drop", "part", part, "epoch",
                          (json_int_t)epoch, "node", node);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (t) {
        /* no answer is awaited (a later request cancels it): the map tells what happened */
        nng_send(R.mgr, t, strlen(t), NNG_FLAG_NONBLOCK);
        free(t);
    }
    log_warn("replica_slow", "{s:i,s:s,s:f,s:s}", "partition", part, "replica", node,
             "waited_ms", R.ack_timeout_ms, "action", "asked to take it out of the in-sync set");
}

static void round_free(struct round *r)
{
    lentries_free(r->logged);
    free(r->parts);
    free(r->epochs);
    free(r);
}

/* Rounds from the oldest: released when every in-sync replica of their partitions (as the
 * map says now) has acknowledged them; failed when this node lost a partition or its lease. */
static void repl_check(void)
{
    const struct cview *v = cview_get();
    double now = cmcp_now_ms();
    while (R.rounds) {
        struct round *r = R.rounds;
        if (r->open)
            break; /* sent ahead of its own commit, which has not ended */
        char why[300];
        const char *fail = NULL;
        if (r->b && !cview_may_write(now, why, sizeof(why)))
            fail = why;
        int waiting = 0;
        for (int i = 0; !fail && !r->dropped && i < r->nparts; i++) {
            int part = r->parts[i];
            if (v->epoch[part] != r->epochs[i] || !cview_owns(part)) {
                snprintf(why, sizeof(why), "partition %d moved to another node", part);
                fail = why;
                break;
            }
            struct catchup *c = cu_of(part);
            bool c_named = false;
            for (int k = 0; k < v->nrep[part]; k++) {
                const char *id = cview_node_id(v->rep[part][k]);
                struct rpeer *p = peer_find(id);
                if (c && c->node == v->rep[part][k]) {
                    c_named = true;
                    if (c->dead || r->id <= c->last_round ? r->id <= c->acked_upto
                                                          : p && p->acked_upto >= r->id)
                        continue;
                } else if (p && p->acked_upto >= r->id)
                    continue;
                waiting++;
                if (r->b && now - r->started > R.ack_timeout_ms && now - r->asked_at > R.ack_timeout_ms)
                    ask_drop(part, r->epochs[i], id ? id : "?");
            }
            /* isr_add asked: the map may name it any moment, so no write goes without it */
            if (c && !c_named && !c->dead && c->state == CU_ASKED && r->id > c->acked_upto) {
                waiting++;
                if (now - r->started > R.ack_timeout_ms)
                    c->stalled = true;
            }
        }
        if (fail && r->b) {
            char msg[500];
            snprintf(msg, sizeof(msg),
                     "The change is saved on this node, but its outcome is unknown: %s before "
                     "its copies acknowledged it. Read the session's state again before retrying",
                     fail);
            gate_unknown(r->b, msg);
            stats_counter("cmcp_replication_unknown_total", "")->value += 1;
        } else if (waiting) {
            if (r->b && now - r->started > R.ack_timeout_ms && now - r->asked_at > R.ack_timeout_ms)
                r->asked_at = now;
            break;
        }
        R.rounds = r->next;
        if (!R.rounds)
            R.rounds_tail = &R.rounds;
        if (r->b)
            gate_ready(r->b);
        round_free(r);
    }
    if (R.lag)
        R.lag->value = R.rounds ? (now - R.rounds->started) / 1000.0 : 0.0;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    peer_deadlines();
    for (int i = 0; i < R.npeers; i++)
        peer_kick(R.peers[i]);
    repl_check();
    if (!R.rounds)
        ev_timer_stop(loop, w);
}

/* ---- the owner: catch-ups ---- */

static struct catchup *cu_of(int part)
{
    for (int i = 0; i < CU_MAX; i++)
        if (R.cu[i].active && R.cu[i].part == part)
            return &R.cu[i];
    return NULL;
}

static bool in_rep(const struct cview *v, int part, int node)
{
    for (int k = 0; k < v->nrep[part]; k++)
        if (v->rep[part][k] == node)
            return true;
    return false;
}

/* A catch-up with something to send to p (round robin among them), or NULL. */
static struct catchup *cu_work(struct rpeer *p)
{
    for (int n = 0; n < CU_MAX; n++) {
        struct catchup *c = &R.cu[(R.cu_rr + n) % CU_MAX];
        if (!c->active || c->dead || c->peer != p)
            continue;
        bool work = c->state == CU_POS    ? !c->pos_asked
                    : c->state == CU_SNAP ? c->snap_off < c->snap_len
                                          : c->nq > 0;
        if (work) {
            R.cu_rr = (R.cu_rr + n + 1) % CU_MAX;
            return c;
        }
    }
    return NULL;
}

static void put_u64(struct buf *b, uint64_t x, int *rc)
{
    uint32_t w[2] = {htonl((uint32_t)(x >> 32)), htonl((uint32_t)x)};
    *rc |= buf_add(b, w, 8);
}

static uint64_t get_u64(const uint8_t *p)
{
    uint32_t w[2];
    memcpy(w, p, 8);
    return (uint64_t)ntohl(w[0]) << 32 | ntohl(w[1]);
}

/* Sends c's next chunk of its snapshot, or the changes queued for it since. */
static void cu_send(struct rpeer *p, struct catchup *c)
{
    size_t chunk = 0, at;
    char *m;
    if (c->state == CU_POS) {
        m = req_reserve(p, POSQ_MAGIC, 4, &at);
        if (m) {
            uint32_t part = htonl((uint32_t)c->part);
            memcpy(m + at, &part, 4);
            at += 4;
        }
    } else if (c->state == CU_SNAP) {
        chunk = c->snap_len - c->snap_off;
        if (chunk > R.chunk_bytes)
            chunk = R.chunk_bytes;
        m = req_reserve(p, SNAP_MAGIC, 36 + chunk, &at);
        if (m) {
            struct buf h = {0};
            uint32_t part = htonl((uint32_t)c->part);
            int rc = buf_add(&h, &part, 4);
            put_u64(&h, c->epoch, &rc);
            put_u64(&h, c->snap_id, &rc);
            put_u64(&h, c->snap_len, &rc);
            put_u64(&h, c->snap_off, &rc);
            if (rc == 0 && h.len == 36) {
                memcpy(m + at, h.p, 36);
                memcpy(m + at + 36, c->snap + c->snap_off, chunk);
            } else {
                m = NULL;
            }
            free(h.p);
            at += 36 + chunk;
        }
    } else if (c->q.len > REPL_MAX_MSG) {
        c->stalled = true; /* too far behind: the catch-up starts over at the next tick */
        return;
    } else {
        m = req_reserve(p, REPL_MAGIC, 4 + c->q.len, &at);
        if (m) {
            uint32_t n = htonl(c->nq);
            memcpy(m + at, &n, 4);
            if (c->q.len)
                memcpy(m + at + 4, c->q.p, c->q.len);
            at += 4 + c->q.len;
        }
    }
    if (!m) {
        /* nothing was queued (a reservation is taken back by the next one) */
        peer_failed(p, "out of memory");
        return;
    }
    struct flight f = {.kind = c->state == CU_POS    ? SEND_POS
                               : c->state == CU_SNAP ? SEND_SNAP
                                                     : SEND_CU,
                       .cu = c,
                       .chunk = chunk};
    if (c->state == CU_POS) {
        c->pos_asked = true;
    } else if (c->state != CU_SNAP) {
        free(c->inflight.p);
        c->inflight = c->q;
        c->ninflight = c->nq;
        c->inflight_upto = c->q_upto;
        c->q = (struct buf){0};
        c->nq = 0;
    }
    req_sent(p, at, &f);
}

static void cu_free(struct catchup *c)
{
    for (int i = 0; c->peer && i < c->peer->nfly; i++)
        if (c->peer->fly[i].cu == c)
            c->peer->fly[i].cu = NULL; /* its answer, when it comes, finds the catch-up ended */
    free(c->snap);
    free(c->q.p);
    free(c->inflight.p);
    memset(c, 0, sizeof(*c));
}

static void ask_mgr(const char *op, int part, uint64_t epoch, const char *node, const char *inc,
                    int64_t gen)
{
    if (!R.mgr_open)
        return;
    json_t *o = json_pack("{s:s,s:i,s:I,s:s}", "op", op, "part", part, "epoch",
                          (json_int_t)epoch, "node", node);
    if (inc && inc[0])
        json_object_set_new(o, "inc", json_string(inc));
    if (gen >= 0) /* isr_add: refused if the set changed since (an isr_drop of ours in between) */
        json_object_set_new(o, "gen", json_integer(gen));
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (t) /* no answer awaited: the map tells what happened (asked again until it does) */
        nng_send(R.mgr, t, strlen(t), NNG_FLAG_NONBLOCK);
    free(t);
}

/* Ends a catch-up; it starts again later (from a new snapshot). */
static void cu_abort(struct catchup *c, const char *why)
{
    const struct cview *v = cview_get();
    bool named = c->part < v->npart && in_rep(v, c->part, c->node) &&
                 v->epoch[c->part] == c->epoch;
    bool maybe = named || c->state == CU_ASKED || c->state == CU_MEMBER;
    log_notice("replica_catchup_aborted", "{s:i,s:s,s:s,s:s,s:i}", "partition", c->part,
               "replica", c->peer ? c->peer->id : "?", "state",
               c->state == CU_SNAP     ? "snapshot"
               : c->state == CU_STREAM ? "stream"
               : c->state == CU_ASKED  ? "asked"
                                       : "member",
               "error", why, "shard", shard_g.index);
    stats_counter("cmcp_replication_catchups_total", "result=\"aborted\"")->value += 1;
    R.cu_retry[c->part] = cmcp_now_ms() + 1000;
    if (maybe && c->peer) /* its isr_add may still commit: have it taken out again */
        ask_mgr("isr_drop", c->part, c->epoch, c->peer->id, NULL, -1);
    if (maybe && !c->dead) {
        c->dead = true;
        c->dead_at = cmcp_now_ms();
        free(c->snap);
        c->snap = NULL;
        free(c->q.p);
        c->q = (struct buf){0};
        c->nq = 0;
        return;
    }
    cu_free(c);
}

/* After an acknowledgement: once the target holds every change so far, isr_add. */
static void cu_progress(struct catchup *c)
{
    if (c->state != CU_STREAM || c->nq || c->ninflight)
        return;
    c->state = CU_ASKED;
    c->asked_at = c->last_ask = cmcp_now_ms();
    log_info("replica_caught_up", "{s:i,s:s,s:I,s:f,s:i}", "partition", c->part, "replica",
             c->peer->id, "round", (json_int_t)c->acked_upto, "ms", c->asked_at - c->started,
             "shard", shard_g.index);
    c->gen = cview_get()->isr_gen[c->part];
    ask_mgr("isr_add", c->part, c->epoch, c->peer->id, c->inc, c->gen);
}

/* f, a catch-up's request, is lost with its link. */
static void cu_failed(struct flight *f)
{
    struct catchup *c = f->cu;
    if (c && f->kind == SEND_POS)
        c->pos_asked = false; /* asked again on the next link */
    if (c && f->kind == SEND_CU && c->ninflight) {
        /* the changes go back in front of those queued since */
        struct buf b = c->inflight;
        if (buf_add(&b, c->q.p, c->q.len) == 0) {
            free(c->q.p);
            c->q = b;
            c->nq += c->ninflight;
            if (c->inflight_upto > c->q_upto)
                c->q_upto = c->inflight_upto;
        } else {
            free(b.p);
            c->stalled = true;
        }
        c->inflight = (struct buf){0};
        c->ninflight = 0;
    }
    /* a chunk is sent again from the same offset; a replica that lost its part says so */
}

/* Takes c's snapshot: a commit boundary, every change committed so far is in it, and the
 * changes queued for the target so far go (they are in it). 0, or -1: the catch-up ends. */
static int cu_snapshot(struct catchup *c, const char *why)
{
    durable_flush();
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "%d-", c->part);
    char *snap = NULL;
    size_t len = 0;
    struct store_snapshot_info info;
    double t0 = cmcp_now_ms();
    int rc = store_has_staged(R.store) ? -EBUSY
                                       : store_snapshot(R.store, c->part, prefix,
                                                        cview_partition_of, R.snap_max, &snap,
                                                        &len, &info);
    if (rc != 0) {
        log_error("replica_snapshot_failed", "{s:i,s:s,s:s}", "partition", c->part, "replica",
                  c->peer->id, "error", rc == -EBUSY ? "a commit is pending" : store_errmsg(R.store));
        R.cu_retry[c->part] = t0 + 5000;
        return -1;
    }
    c->state = CU_SNAP;
    c->snap = snap;
    c->snap_len = len;
    c->snap_off = 0;
    c->snap_id = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ (uint64_t)(t0 * 1000.0);
    c->snap_round = R.next_round;
    if (c->last_round < c->snap_round)
        c->last_round = c->snap_round;
    free(c->q.p);
    c->q = (struct buf){0};
    c->nq = 0;
    R.snap_bytes->value += (double)len;
    R.from_snap->value += 1;
    log_info("replica_catchup_snapshot", "{s:i,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:i}", "partition",
             c->part, "replica", c->peer->id, "why", why, "epoch", (json_int_t)c->epoch, "seq",
             (json_int_t)info.seq, "sessions", (json_int_t)info.sessions, "events",
             (json_int_t)info.events, "bytes", (json_int_t)len, "snapshot_ms",
             cmcp_now_ms() - t0, "shard", shard_g.index);
    return 0;
}

/* The target said where its copy is: the changes after it from the log when the log holds all
 * of them and the copy's history is a prefix of this node's, else a snapshot. */
static void cu_position(struct catchup *c, json_t *o)
{
    c->pos_asked = false;
    json_t *js = json_object_get(o, "seq");
    const char *hex = json_string_value(json_object_get(o, "chain"));
    if (!json_is_integer(js) || !hex || strlen(hex) != 16) {
        cu_abort(c, "the replica's position answer is malformed");
        return;
    }
    uint64_t tseq = (uint64_t)json_integer_value(js), tchain = strtoull(hex, NULL, 16);
    /* everything committed is in the log (or was trimmed from it): the comparison is at a
     * commit boundary */
    durable_flush();
    uint64_t epoch = 0, seq = 0, chain = 0;
    if (store_position_chain(R.store, c->part, &epoch, &seq, &chain) != 0) {
        cu_abort(c, store_errmsg(R.store));
        return;
    }
    struct buf b = {0};
    long n = -1;
    const char *why = "the log does not reach back to its position";
    if (tseq == seq && tchain == chain)
        n = 0;
    else if (tseq >= seq)
        why = "its copy holds writes this node does not";
    else if (R.snap_only[c->part])
        why = "a catch-up from the log failed before";
    else
        n = log_fetch(c->part, tseq, tchain, seq, &b);
    if (n < 0) {
        free(b.p);
        if (cu_snapshot(c, why) != 0)
            cu_abort(c, "its snapshot could not be taken");
        return;
    }
    /* the log's changes stand for everything queued for it so far (the log holds those too) */
    free(c->q.p);
    c->q = b;
    c->nq = (uint32_t)n;
    c->q_upto = R.next_round;
    if (c->last_round < c->q_upto)
        c->last_round = c->q_upto;
    if (n == 0 && c->acked_upto < R.next_round)
        c->acked_upto = R.next_round; /* it holds this node's history already */
    c->state = CU_STREAM;
    c->from_log = true;
    R.from_log->value += 1;
    log_info("replica_catchup_from_log", "{s:i,s:s,s:I,s:I,s:I,s:I,s:i}", "partition", c->part,
             "replica", c->peer->id, "from_seq", (json_int_t)tseq, "to_seq", (json_int_t)seq,
             "changes", (json_int_t)n, "bytes", (json_int_t)b.len, "shard", shard_g.index);
    cu_progress(c);
}

/* The answer to f, a catch-up's request. */
static void cu_answer(struct flight *f, json_t *o)
{
    struct catchup *c = f->cu;
    int kind = f->kind;
    if (!c || !c->active || c->dead)
        return; /* ended meanwhile */
    json_t *rs = json_object_get(o, "r");
    const char *why = json_string_value(json_object_get(o, "error"));
    bool ok = json_is_array(rs) && json_array_size(rs) > 0;
    size_t k;
    json_t *x;
    int bad = 0;
    json_array_foreach(rs, k, x)
    {
        json_int_t r = json_integer_value(x);
        if (r != 0 && r != 1) {
            ok = false;
            bad = (int)r;
        }
    }
    char msg[300];
    if (!ok && c->from_log)
        R.snap_only[c->part] = true; /* its copy is not what the log assumed: a snapshot next */
    if (!ok) {
        snprintf(msg, sizeof(msg), "the replica refused the %s (%s)%s%s",
                 kind == SEND_SNAP ? "snapshot" : "changes after it",
                 bad ? strerror(-bad) : "malformed answer", why ? ": " : "", why ? why : "");
        cu_abort(c, msg);
        return;
    }
    if (kind == SEND_POS) {
        cu_position(c, o);
        return;
    }
    if (kind == SEND_SNAP) {
        c->snap_off += f->chunk;
        bool done = json_is_true(json_object_get(o, "done"));
        if (c->snap_off < c->snap_len && !done)
            return;
        if (!done || c->snap_off != c->snap_len) {
            cu_abort(c, "the replica did not install the snapshot");
            return;
        }
        log_info("replica_snapshot_sent", "{s:i,s:s,s:I,s:f,s:i}", "partition", c->part,
                 "replica", c->peer->id, "bytes", (json_int_t)c->snap_len, "ms",
                 cmcp_now_ms() - c->started, "shard", shard_g.index);
        free(c->snap);
        c->snap = NULL;
        if (c->snap_round > c->acked_upto)
            c->acked_upto = c->snap_round;
        c->state = CU_STREAM;
    } else {
        if (c->inflight_upto > c->acked_upto)
            c->acked_upto = c->inflight_upto;
        free(c->inflight.p);
        c->inflight = (struct buf){0};
        c->ninflight = 0;
    }
    cu_progress(c);
}

static const char *node_inc(int i)
{
    const struct cview *v = cview_get();
    json_t *n = v->nodes ? json_array_get(v->nodes, (size_t)i) : NULL;
    const char *inc = json_string_value(json_object_get(n, "incarnation"));
    return inc ? inc : "";
}

#define CU_MAX_NODES 64 /* the map's MAP_MAX_NODES */

/* A member to rebuild a copy of part on: up, not the owner, not in sync yet. The members up
 * after this one in the map's order, from the partition's replica group on, as the map places
 * a new partition's replicas (cluster/map.h, map_plan_replicated): the partitions of one
 * group keep their copies together, so a commit of theirs goes to one shard elsewhere.
 * -1: none. */
static int cu_target(const struct cview *v, int part)
{
    int nn = v->nodes ? (int)json_array_size(v->nodes) : 0, others[CU_MAX_NODES], n = 0;
    for (int k = 1; k < nn && n < CU_MAX_NODES; k++)
        if (cview_node_up((v->self + k) % nn))
            others[n++] = (v->self + k) % nn;
    int g = shard_g.replica_groups > 0 ? part % shard_g.replica_groups : part / shard_g.nshards;
    for (int k = 0; k < n; k++) {
        int j = others[(g + k) % n];
        if (j == v->owner[part] || in_rep(v, part, j) || !cview_node_id(j) ||
            !cview_node_endpoint(j))
            continue;
        return j;
    }
    return -1;
}

static bool cu_start(const struct cview *v, int part, int node)
{
    struct catchup *c = NULL;
    for (int i = 0; i < R.cu_max && !c; i++)
        if (!R.cu[i].active)
            c = &R.cu[i];
    struct rpeer *p = c ? peer_get(cview_node_id(node), cview_node_endpoint(node)) : NULL;
    if (!p)
        return false;
    /* a commit boundary: everything committed so far has a round numbered up to next_round;
     * every later change is queued for the target too, and goes after what brings it there */
    durable_flush();
    if (store_has_staged(R.store))
        return false;
    memset(c, 0, sizeof(*c));
    c->active = true;
    c->part = part;
    c->node = node;
    c->epoch = v->epoch[part];
    snprintf(c->inc, sizeof(c->inc), "%s", node_inc(node));
    c->peer = p;
    c->snap_round = c->last_round = R.next_round;
    c->started = cmcp_now_ms();
    /* with the partition's recent changes in the log, ask where the target's copy is first:
     * a copy a little behind takes them instead of the whole partition */
    bool ask = R.log_max > 0 && !R.snap_only[part] && R.plog[part];
    log_info("replica_catchup_started", "{s:i,s:s,s:I,s:s,s:i}", "partition", part, "replica",
             p->id, "epoch", (json_int_t)c->epoch, "first", ask ? "position" : "snapshot",
             "shard", shard_g.index);
    if (ask) {
        c->state = CU_POS;
    } else if (cu_snapshot(c, R.log_max ? "the log holds no change of it" : "the log is off") != 0) {
        memset(c, 0, sizeof(*c));
        return false;
    }
    peer_kick(p);
    return true;
}

/* Catch-ups against the map held: end those it overtook, note those it took in, start one
 * more where a partition of this shard lacks copies. */
static void cu_tick(void)
{
    const struct cview *v = cview_get();
    if (!R.store || !R.have_key || !v->have_map || v->rf <= 1 || v->self < 0)
        return;
    double now = cmcp_now_ms();
    double ask_window = R.ack_timeout_ms * 10 > 3000 ? R.ack_timeout_ms * 10 : 3000;
    for (int i = 0; i < CU_MAX; i++) {
        struct catchup *c = &R.cu[i];
        if (!c->active)
            continue;
        int part = c->part;
        bool named = part < v->npart && in_rep(v, part, c->node);
        if (c->dead) {
            /* kept while the map names it, or its isr_add may still come, or writes from before
             * its end wait */
            if (!named && now - c->dead_at > ask_window &&
                (!R.rounds || R.rounds->id > c->last_round))
                cu_free(c);
            continue;
        }
        if (part >= v->npart || !cview_owns(part) || v->epoch[part] != c->epoch) {
            cu_abort(c, "the partition moved");
            continue;
        }
        if (!cview_node_up(c->node) || strcmp(node_inc(c->node), c->inc) != 0) {
            cu_abort(c, "the replica went down or restarted");
            continue;
        }
        if (c->stalled) {
            cu_abort(c, "a write waited too long for it");
            continue;
        }
        if (named && c->state != CU_MEMBER) {
            c->state = CU_MEMBER;
            stats_counter("cmcp_replication_catchups_total", "result=\"rejoined\"")->value += 1;
            R.snap_only[part] = false;
            log_notice("replica_rejoined", "{s:i,s:s,s:I,s:f,s:i}", "partition", part,
                       "replica", c->peer->id, "epoch", (json_int_t)c->epoch, "ms",
                       now - c->started, "shard", shard_g.index);
        } else if (!named && c->state == CU_MEMBER) {
            cu_abort(c, "taken out of the in-sync set again");
            continue;
        }
        if (c->state == CU_ASKED && now - c->asked_at > ask_window) {
            cu_abort(c, "isr_add did not commit in time");
            continue;
        }
        if (c->state == CU_ASKED && now - c->last_ask > 500) {
            c->last_ask = now; /* a request the manager may have missed (the socket keeps one) */
            ask_mgr("isr_add", part, c->epoch, c->peer->id, c->inc, c->gen);
        }
        if (c->state == CU_MEMBER && !c->nq && !c->ninflight &&
            (!R.rounds || R.rounds->id > c->last_round))
            cu_free(c); /* a replica like the others now */
    }
    /* partitions of this shard that lack copies; one new catch-up per tick at most */
    int under = 0, running = 0;
    for (int i = 0; i < CU_MAX; i++)
        running += R.cu[i].active && !R.cu[i].dead;
    bool started = false;
    char why[200];
    bool may = cview_may_write(now, why, sizeof(why));
    for (int part = shard_g.index; part < v->npart; part += shard_g.nshards) {
        if (v->owner[part] != v->self || v->nrep[part] >= v->rf - 1)
            continue;
        under++;
        if (started || !may || running >= R.cu_max || cu_of(part) || now < R.cu_retry[part])
            continue;
        int node = cu_target(v, part);
        if (node < 0)
            continue;
        if (cu_start(v, part, node)) {
            started = true;
            running++;
        } else if (now >= R.cu_retry[part]) {
            R.cu_retry[part] = now + 1000;
        }
    }
    if (R.under)
        R.under->value = under;
}

static void cu_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    peer_deadlines();
    cu_tick();
    repl_check();
    for (int i = 0; i < R.npeers; i++)
        peer_kick(R.peers[i]);
}

/* ---- the replica: serving an owner's changes ---- */

/* Stages a request's changes (committed with the others of the loop turn: repl_apply_now);
 * the answer, whose results become -EIO if that commit fails. *staged: something was. */
static json_t *apply_changes(const uint8_t *pt, size_t len, const char *peer, bool *staged_out)
{
    *staged_out = false;
    if (len < 14 || memcmp(pt, REPL_MAGIC, 8) != 0)
        return json_pack("{s:[],s:s}", "r", "error", "not a replication request");
    uint16_t idlen;
    memcpy(&idlen, pt + 8, 2);
    idlen = ntohs(idlen);
    if (10u + idlen + 4 > len)
        return json_pack("{s:[],s:s}", "r", "error", "truncated");
    char owner[64];
    snprintf(owner, sizeof(owner), "%.*s", (int)(idlen < 63 ? idlen : 63), (const char *)pt + 10);
    uint32_t n;
    memcpy(&n, pt + 10 + idlen, 4);
    n = ntohl(n);
    size_t off = 14u + idlen;
    json_t *rs = json_array();
    const struct cview *v = cview_get();
    bool staged = false;
    const char *error = NULL;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cl;
        if (off + 4 > len) {
            error = "truncated";
            break;
        }
        memcpy(&cl, pt + off, 4);
        cl = ntohl(cl);
        off += 4;
        if (off + cl > len) {
            error = "truncated";
            break;
        }
        const char *c = (const char *)pt + off;
        off += cl;
        struct store_change_info info = {0};
        int rc = store_change_peek(c, cl, &info);
        if (rc == 0 && info.partition % shard_g.nshards != shard_g.index) {
            rc = -EREMOTE;
            error = "this node runs another number of shards ([tree.shard] count must be the "
                    "same on every node)";
        } else if (rc == 0 && v->have_map && info.partition < v->npart &&
                   (v->epoch[info.partition] > info.epoch ||
                    (cview_owns(info.partition) && v->epoch[info.partition] >= info.epoch))) {
            rc = -ESTALE; /* the map moved on: the sender is no longer the owner */
        } else if (rc == 0) {
            rc = store_change_stage(R.store, c, cl);
            staged |= rc == 0;
        }
        if (rc < 0 && rc != -ESTALE)
            log_warn("replica_change_refused", "{s:s,s:s,s:i,s:I,s:I,s:s}", "owner", owner, "peer",
                     peer, "partition", info.partition, "epoch", (json_int_t)info.epoch, "seq",
                     (json_int_t)info.seq, "error", strerror(-rc));
        json_array_append_new(rs, json_integer(rc));
    }
    *staged_out = staged;
    stats_counter("cmcp_replication_changes_applied_total", "")->value += (double)n;
    json_t *o = json_pack("{s:o}", "r", rs);
    if (error)
        json_object_set_new(o, "error", json_string(error));
    return o;
}

/* ---- the replica: a snapshot coming in ---- */

static json_t *snap_reply(int rc, bool done, const char *error)
{
    json_t *o = json_pack("{s:[i],s:b}", "r", rc, "done", done);
    if (error)
        json_object_set_new(o, "error", json_string(error));
    return o;
}

static json_t *apply_snapshot_chunk(const uint8_t *pt, size_t len)
{
    if (len < 10)
        return snap_reply(-EINVAL, false, "truncated");
    uint16_t idlen;
    memcpy(&idlen, pt + 8, 2);
    idlen = ntohs(idlen);
    size_t off = 10u + idlen;
    if (off + 4 + 32 > len)
        return snap_reply(-EINVAL, false, "truncated");
    char owner[64];
    snprintf(owner, sizeof(owner), "%.*s", (int)(idlen < 63 ? idlen : 63), (const char *)pt + 10);
    uint32_t part;
    memcpy(&part, pt + off, 4);
    part = ntohl(part);
    uint64_t epoch = get_u64(pt + off + 4), id = get_u64(pt + off + 12),
             total = get_u64(pt + off + 20), at = get_u64(pt + off + 28);
    const uint8_t *chunk = pt + off + 36;
    size_t clen = len - off - 36;
    const struct cview *v = cview_get();
    if (part >= CVIEW_MAX_PARTITIONS || (int)(part % (uint32_t)shard_g.nshards) != shard_g.index)
        return snap_reply(-EREMOTE, false,
                          "this node runs another number of shards ([tree.shard] count must be "
                          "the same on every node)");
    if (v->have_map && (int)part < v->npart &&
        (v->epoch[part] > epoch || (cview_owns((int)part) && v->epoch[part] >= epoch)))
        return snap_reply(-ESTALE, false, "the map moved on: the sender no longer owns it");
    if (total > R.snap_max || at + clen > total)
        return snap_reply(-EFBIG, false, "larger than [cluster] replica_snapshot_max_bytes here");
    double now = cmcp_now_ms();
    struct snapin *e = NULL, *lru = &R.in[0];
    for (size_t i = 0; i < sizeof(R.in) / sizeof(R.in[0]); i++) {
        struct snapin *x = &R.in[i];
        if (x->used && x->id == id && x->part == (int)part && strcmp(x->owner, owner) == 0)
            e = x;
        if (!x->used || (lru->used && x->at < lru->at))
            lru = x;
    }
    if (e && e->done) /* a resend after it was installed */
        return snap_reply(0, at + clen == total, NULL);
    if (!e && at != 0)
        return snap_reply(-ESRCH, false, "an unknown snapshot (this node restarted?)");
    if (!e) {
        e = lru;
        free(e->b.p);
        memset(e, 0, sizeof(*e));
        e->used = true;
        snprintf(e->owner, sizeof(e->owner), "%s", owner);
        e->part = (int)part;
        e->id = id;
        e->total = total;
    }
    e->at = now;
    if (at + clen <= e->b.len) /* a resend of a chunk it has */
        return snap_reply(0, false, NULL);
    if (at != e->b.len || total != e->total)
        return snap_reply(-ESRCH, false, "a chunk out of order");
    if (buf_add(&e->b, chunk, clen) != 0) {
        free(e->b.p);
        memset(e, 0, sizeof(*e));
        return snap_reply(-ENOMEM, false, "out of memory");
    }
    if (e->b.len < total)
        return snap_reply(0, false, NULL);
    /* all of it: the partition's copy is replaced in one commit */
    struct store_snapshot_info info;
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "%u-", part);
    durable_flush(); /* this node's own staged writes go in their own commit */
    int rc = store_snapshot_peek(e->b.p, e->b.len, &info);
    if (rc == 0 && info.partition != (int)part)
        rc = -EINVAL;
    if (rc == 0)
        rc = store_snapshot_stage(R.store, e->b.p, e->b.len, prefix, cview_partition_of);
    if (rc == 0)
        rc = store_commit(R.store);
    else
        store_discard(R.store);
    free(e->b.p);
    e->b = (struct buf){0};
    if (rc != 0) {
        const char *why = store_errmsg(R.store);
        log_error("replica_snapshot_refused", "{s:s,s:i,s:s}", "owner", owner, "partition",
                  (int)part, "error", why && *why ? why : strerror(-rc));
        memset(e, 0, sizeof(*e));
        return snap_reply(rc, false, why && *why ? why : strerror(-rc));
    }
    e->done = true;
    stats_counter("cmcp_replication_snapshots_installed_total", "")->value += 1;
    log_info("replica_snapshot_installed", "{s:s,s:i,s:I,s:I,s:I,s:i}", "owner", owner,
             "partition", (int)part, "seq", (json_int_t)info.seq, "records",
             (json_int_t)info.nops, "bytes", (json_int_t)total, "shard", shard_g.index);
    return snap_reply(0, true, NULL);
}

/* An owner's link to this shard (accepted): its node's id, for the log. */
struct olink {
    struct olink *next, *prev;
    struct dlink *dl;
    bool broken; /* an answer could not be queued: closed and freed from the loop (reap) */
    char node[PEER_NODE_ID_MAX];
};

static struct olink *olinks;
static ev_timer reap_w;

static void pans_forget(struct olink *o);

static void olink_free(struct olink *o)
{
    pans_forget(o);
    if (o->prev)
        o->prev->next = o->next;
    else
        olinks = o->next;
    if (o->next)
        o->next->prev = o->prev;
    free(o);
}

/* Links whose answers could not be queued end here, where no frame of theirs is being handled:
 * the owner sees its link end and sends again on a new one (a change applies once). */
static void reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    struct olink *o = olinks;
    while (o) {
        struct olink *next = o->next;
        if (o->broken) {
            struct dlink *d = o->dl;
            olink_free(o);
            dlink_close(d);
        }
        o = next;
    }
}

/* Answers waiting for the loop turn's commit of the changes they acknowledge, in the order
 * the requests came (a link's answers leave in its requests' order). */
static struct {
    struct pans {
        struct olink *ol; /* NULL: the link ended meanwhile */
        json_t *o;
        int pos_part; /* >= 0: a position request, answered after the commit */
    } *v;
    int n, cap;
    bool staged; /* the store's staged writes are these requests' changes, nothing else */
} G;

static void answer(struct olink *ol, json_t *o)
{
    if (ol->broken)
        return;
    size_t tl = 0;
    char *t = o ? jsonw_dumps(o, &tl) : NULL;
    char *m = t ? dlink_reserve(ol->dl, tl) : NULL;
    if (!m) {
        log_warn("replica_answer_lost", "{s:s,s:s}", "owner", ol->node, "error", "out of memory");
        free(t);
        ol->broken = true;
        if (!ev_is_active(&reap_w)) {
            ev_timer_set(&reap_w, 0, 0);
            ev_timer_start(shard_g.loop, &reap_w);
        }
        return;
    }
    memcpy(m, t, tl);
    dlink_commit(ol->dl, tl);
    free(t);
}

/* Where this node's copy of a partition is: its committed position and chain value. */
static json_t *position_of(int part)
{
    uint64_t epoch = 0, seq = 0, chain = 0;
    if (part < 0 || part >= CVIEW_MAX_PARTITIONS ||
        store_position_chain(R.store, part, &epoch, &seq, &chain) != 0)
        return json_pack("{s:[i],s:s}", "r", -EINVAL, "error", "no such partition here");
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)chain);
    return json_pack("{s:[i],s:I,s:I,s:s}", "r", 0, "epoch", (json_int_t)epoch, "seq",
                     (json_int_t)seq, "chain", hex);
}

void repl_apply_now(void)
{
    if (!G.n)
        return;
    const char *error = NULL;
    if (G.staged) {
        G.staged = false;
        int rc = store_commit_copy(R.store);
        if (rc == 0)
            stats_counter("cmcp_store_commits_total", "of=\"copies\"")->value += 1;
        if (rc != 0) {
            error = store_errmsg(R.store);
            log_error("replica_commit_failed", "{s:s}", "error", error ? error : strerror(-rc));
        }
    }
    int n = G.n;
    G.n = 0;
    for (int i = 0; i < n; i++) {
        struct pans *a = &G.v[i];
        if (a->pos_part >= 0) {
            a->o = position_of(a->pos_part);
        } else if (error && a->o) {
            /* nothing of it is durable: refuse every change the commit carried */
            json_t *rs = json_object_get(a->o, "r"), *x;
            size_t k;
            json_array_foreach(rs, k, x)
            {
                if (json_integer_value(x) == 0)
                    json_array_set_new(rs, k, json_integer(-EIO));
            }
            json_object_set_new(a->o, "error", json_string(error));
        }
        if (a->ol)
            answer(a->ol, a->o);
        json_decref(a->o);
    }
}

/* An owner's request: a snapshot's chunk, installed and answered now, or changes, staged and
 * answered once the loop turn's commit has them (one fsync for every owner's requests that
 * arrived together), or a position request, answered after that commit. */
static void replica_frame(struct dlink *l, const char *data, size_t len)
{
    struct olink *ol = dlink_ud(l);
    const uint8_t *pt = (const uint8_t *)data;
    if (ol->broken)
        return;
    if (len >= 8 && memcmp(pt, SNAP_MAGIC, 8) == 0) {
        durable_flush(); /* commits what is staged first: the changes answered before it too */
        json_t *o = apply_snapshot_chunk(pt, len);
        answer(ol, o);
        json_decref(o);
        return;
    }
    if (!G.staged && store_has_staged(R.store))
        durable_flush(); /* this node's own staged writes go in a commit of their own */
    if (G.n == G.cap) {
        int cap = G.cap ? G.cap * 2 : 16;
        struct pans *v = realloc(G.v, (size_t)cap * sizeof(*v));
        if (!v) {
            log_warn("replica_request_dropped", "{s:s,s:s}", "owner", ol->node, "error",
                     "out of memory");
            olink_free(ol);
            dlink_close(l); /* the owner sends it again on a new link */
            return;
        }
        G.v = v;
        G.cap = cap;
    }
    if (len >= 8 && memcmp(pt, POSQ_MAGIC, 8) == 0) {
        uint16_t idlen = 0;
        uint32_t part = UINT32_MAX;
        if (len >= 10)
            memcpy(&idlen, pt + 8, 2);
        idlen = ntohs(idlen);
        if (len >= 10u + idlen + 4) {
            memcpy(&part, pt + 10 + idlen, 4);
            part = ntohl(part);
        }
        G.v[G.n++] = (struct pans){ol, NULL, part > INT32_MAX ? CVIEW_MAX_PARTITIONS : (int)part};
        durable_commit_soon();
        return;
    }
    bool staged = false;
    json_t *o = apply_changes(pt, len, ol->node, &staged);
    G.staged |= staged;
    G.v[G.n++] = (struct pans){ol, o, -1};
    durable_commit_soon(); /* its commit runs repl_apply_now first */
}

static void pans_forget(struct olink *o)
{
    for (int i = 0; i < G.n; i++)
        if (G.v[i].ol == o)
            G.v[i].ol = NULL;
}

static void replica_closed(struct dlink *l, const char *why)
{
    struct olink *ol = dlink_ud(l);
    log_info("replica_link_down", "{s:s,s:s,s:i}", "owner", ol->node, "why", why, "shard",
             shard_g.index);
    olink_free(ol);
}

static const struct dlink_ops replica_ops = {replica_frame, NULL, replica_closed};

/* ---- links between nodes' shards ---- */

static void env_up(struct peer_link *l)
{
    const struct peer_ident *who = peer_remote(l);
    if (!peer_dialed(l)) {
        struct olink *ol = calloc(1, sizeof(*ol));
        if (ol)
            snprintf(ol->node, sizeof(ol->node), "%s", who->node);
        struct dlink *d = ol ? peer_detach(l, &replica_ops, ol) : NULL;
        if (!d) {
            free(ol);
            peer_close(l);
            log_warn("replica_link_refused", "{s:s,s:s}", "owner", who->node, "why",
                     "out of memory");
            return;
        }
        ol->dl = d;
        ol->next = olinks;
        if (olinks)
            olinks->prev = ol;
        olinks = ol;
        log_info("replica_link_up", "{s:s,s:i}", "owner", who->node, "shard", shard_g.index);
        return;
    }
    struct rpeer *p = peer_ud(l);
    p->pl = NULL;
    if (strcmp(who->node, p->id) != 0) {
        char why[300];
        snprintf(why, sizeof(why), "%s:%d is node %s, not %s (the map will say where it is now)",
                 p->host, p->port, who->node, p->id);
        peer_close(l);
        peer_failed(p, why);
        return;
    }
    p->dl = peer_detach(l, &owner_ops, p);
    if (!p->dl) {
        peer_close(l);
        peer_failed(p, "out of memory");
        return;
    }
    p->phase = 3;
    peer_kick(p);
}

static void env_message(struct peer_link *l, int channel, const char *data, size_t len)
{
    (void)l;
    (void)channel;
    (void)data;
    (void)len; /* both sides detach at up: no peer-link frames after the handshake */
}

static void env_down(struct peer_link *l, const char *why)
{
    if (!peer_dialed(l))
        return; /* a handshake that failed: peer.c logged it with the address */
    struct rpeer *p = peer_ud(l);
    p->pl = NULL;
    peer_failed(p, why);
}

static const struct peer_ops env_ops = {env_up, env_message, env_down};

/* ---- ownership: sessions in memory follow the map ---- */

static int load_cb(void *ud, const char *sid, json_t *rec)
{
    const bool *want = ud;
    int p = cview_partition_of(sid);
    if (p < 0 || p >= CVIEW_MAX_PARTITIONS || !want[p] || sess_find(sid))
        return 0;
    durable_restore(sid, rec);
    return 0;
}

void repl_map_changed(void)
{
    const struct cview *v = cview_get();
    if (!R.store || !v->have_map || v->rf <= 1 || v->self < 0)
        return;
    static bool gain[CVIEW_MAX_PARTITIONS], loss[CVIEW_MAX_PARTITIONS];
    bool any_gain = false, any_loss = false;
    for (int p = 0; p < v->npart; p++) {
        gain[p] = loss[p] = false;
        if (p % shard_g.nshards != shard_g.index)
            continue;
        bool own = v->owner[p] == v->self;
        if (own && R.owned[p] && R.owned_epoch[p] && R.owned_epoch[p] != v->epoch[p])
            loss[p] = gain[p] = any_loss = any_gain = true; /* owned again since: memory is old */
        else if (own && !R.owned[p])
            gain[p] = any_gain = true;
        else if (!own && R.owned[p])
            loss[p] = any_loss = true;
        R.owned[p] = own;
        R.owned_epoch[p] = own ? v->epoch[p] : 0;
    }
    /* a replica that refused changes is sent to again once no in-sync set names it (it
     * comes back only through a catch-up, which starts it from a known position) */
    for (int i = 0; i < R.npeers; i++) {
        struct rpeer *pr = R.peers[i];
        bool named = false;
        for (int p = 0; pr->broken && !named && p < v->npart; p++)
            for (int k = 0; k < v->nrep[p] && !named; k++)
                named = strcmp(cview_node_id(v->rep[p][k]) ?: "", pr->id) == 0;
        if (pr->broken && !named)
            pr->broken = false;
    }
    if (any_loss) {
        long n = 0;
        struct sess *s, *tmp;
        HASH_ITER(hh, shard_g.sessions, s, tmp)
        {
            int p = cview_partition_of(s->id);
            if (p >= 0 && p < v->npart && loss[p]) {
                sess_unload(s);
                n++;
            }
        }
        if (n)
            log_info("sessions_unloaded", "{s:I,s:s}", "sessions", (json_int_t)n, "why",
                     "this node no longer owns their partitions (its store keeps them)");
    }
    if (any_gain) {
        durable_flush();
        long before = shard_g.nsessions;
        double t0 = cmcp_now_ms();
        store_session_foreach(R.store, load_cb, gain);
        int np = 0;
        for (int p = 0; p < v->npart; p++)
            np += gain[p];
        log_notice("partitions_taken", "{s:i,s:i,s:I,s:f}", "shard", shard_g.index,
                   "partitions", np, "sessions", (json_int_t)(shard_g.nsessions - before), "ms",
                   cmcp_now_ms() - t0);
    }
    cu_tick();
    repl_check();
}

/* ---- start and stop ---- */

int repl_start(struct store *st, char *err, size_t errlen)
{
    struct cfg *c = &shard_g.a->cfg;
    R.store = st;
    R.sync = strcmp(cfg_get(c, "cluster", "replication", "sync"), "async") != 0;
    R.ack_timeout_ms = (double)cfg_get_long(c, "cluster", "replica_ack_timeout_ms", 300);
    R.lag = stats_gauge("cmcp_session_replication_lag_seconds", "");
    R.under = stats_gauge("cmcp_partitions_under_replicated", "");
    R.snap_bytes = stats_counter("cmcp_replication_snapshot_bytes_total", "");
    R.cu_max = (int)cfg_get_long(c, "cluster", "replica_catchups", 4);
    if (R.cu_max < 1)
        R.cu_max = 1;
    if (R.cu_max > CU_MAX)
        R.cu_max = CU_MAX;
    R.chunk_bytes = (size_t)cfg_get_long(c, "cluster", "replica_snapshot_chunk_bytes", 1 << 20);
    R.snap_max = (size_t)cfg_get_long(c, "cluster", "replica_snapshot_max_bytes", 256L << 20);
    long log_max = cfg_get_long(c, "cluster", "replica_log_bytes", 32L << 20);
    R.log_max = log_max > 0 ? (size_t)log_max : 0;
    R.from_log = stats_counter("cmcp_replication_catchups_started_total", "from=\"log\"");
    R.from_snap = stats_counter("cmcp_replication_catchups_started_total", "from=\"snapshot\"");
    R.log_gauge = stats_gauge("cmcp_replication_log_bytes", "");
    ev_timer_init(&reap_w, reap_cb, 0, 0);
    ev_timer_init(&R.tick_w, tick_cb, 0.02, 0.02);
    ev_timer_init(&R.cu_w, cu_cb, CU_TICK_S, CU_TICK_S);
    /* the sessions loaded at open count as this node's until the map says otherwise */
    for (int p = 0; p < CVIEW_MAX_PARTITIONS; p++)
        R.owned[p] = true;
    repl_map_changed();
    const char *bind = cfg_get(c, "cluster", "bind", "");
    const char *colon = strrchr(bind, ':');
    if (!bind[0] || !colon)
        return 0; /* no peers: nothing to serve */
    /* a member serves copies whatever its own configuration says: the cluster map's
     * replication factor (fixed when the cluster formed) decides who holds them */
    snprintf(R.bind_host, sizeof(R.bind_host), "%.*s", (int)(colon - bind), bind);
    R.base_port = atoi(colon + 1);
    const char *cookie = getenv("CMCP_COOKIE_FILE");
    if (!cookie || !*cookie)
        cookie = cfg_get(c, "admin", "cookie_file", "./var/cookie");
    bool created = false;
    if (auth_cookie_load(cookie, false, &R.key, &created, err, errlen) != 0)
        return -1;
    R.have_key = true;
    struct peer_ident me = {0};
    snprintf(me.node, sizeof(me.node), "%s", cfg_get(c, "cluster", "node_id", ""));
    if (!me.node[0] && gethostname(me.node, sizeof(me.node) - 1) != 0)
        snprintf(me.node, sizeof(me.node), "node");
    snprintf(me.endpoint, sizeof(me.endpoint), "replica-shard-%d", shard_g.index);
    peer_env_init(&R.env, shard_g.loop, &R.key, &me, &env_ops);
    R.env_on = true;
    int port = R.base_port + 1 + shard_g.index;
    char why[300];
    if (peer_listen(&R.env, R.bind_host, port, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "cannot serve replicas at %s:%d: %s (the node's peer port + 1 + "
                              "shard index must be free; [cluster] bind)",
                 R.bind_host, port, why);
        return -1;
    }
    R.listening = true;
    char addr[512];
    ipc_addr_cluster_ctl(addr, sizeof(addr), shard_g.a->run_dir);
    if (nng_req0_open(&R.mgr) == 0) {
        nng_socket_set_ms(R.mgr, NNG_OPT_SENDTIMEO, 200);
        nng_dial(R.mgr, addr, NULL, NNG_FLAG_NONBLOCK);
        R.mgr_open = true;
    }
    ev_timer_start(shard_g.loop, &R.cu_w);
    log_info("replica_serving", "{s:s,s:i,s:i,s:s}", "host", R.bind_host, "port", port, "shard",
             shard_g.index, "mode", R.sync ? "sync" : "async");
    return 0;
}

void repl_stop(void)
{
    ev_timer_stop(shard_g.loop, &R.tick_w);
    ev_timer_stop(shard_g.loop, &R.cu_w);
    for (int i = 0; i < CU_MAX; i++)
        if (R.cu[i].active)
            cu_free(&R.cu[i]);
    for (size_t i = 0; i < sizeof(R.in) / sizeof(R.in[0]); i++) {
        free(R.in[i].b.p);
        memset(&R.in[i], 0, sizeof(R.in[i]));
    }
    for (int i = 0; i < R.npeers; i++) {
        struct rpeer *p = R.peers[i];
        if (p->pl)
            peer_close(p->pl);
        if (p->dl)
            dlink_close(p->dl);
        for (int k = 0; k < p->nfly; k++)
            free(p->fly[k].b.p);
        free(p->queued.p);
        free(p);
        R.peers[i] = NULL;
    }
    R.npeers = 0;
    repl_apply_now();
    ev_timer_stop(shard_g.loop, &reap_w);
    free(G.v);
    G.v = NULL;
    G.cap = 0;
    while (olinks) {
        struct dlink *d = olinks->dl;
        olink_free(olinks);
        dlink_close(d);
    }
    if (R.listening)
        peer_stop_listening(&R.env);
    R.listening = R.env_on = false;
    while (R.log_head)
        log_evict_head_any();
    while (R.rounds) {
        struct round *r = R.rounds;
        R.rounds = r->next;
        round_free(r);
    }
    R.rounds_tail = &R.rounds;
    pend_clear();
    free(R.pend);
    R.pend = NULL;
    R.pend_cap = 0;
    if (R.mgr_open) {
        R.mgr_open = false;
        nng_close(R.mgr);
    }
}
