/*
 * The listener's shard links: one data link (ipc/dlink.h, a framed AF_UNIX
 * stream) per shard carries this listener's requests to the shard and, in
 * order, the shard's events and responses back. Calls are matched to
 * responses by a token.
 *
 * A call waits in its link's queue until its frame has wholly left for the
 * shard; while the shard is down (restarting) it waits there up to
 * shard_wait_ms, then fails as "not delivered". A call whose frame left
 * fails at once with a clear error when the link drops: the shard may or may
 * not have applied it, and retrying is the client's informed choice (at most
 * once delivery; nothing is resent that may have arrived).
 *
 * Forwarding (docs/cluster.md, "Any node serves any session"): a request
 * for a session whose partition another node owns goes to the same shard
 * index on the owner, over a sealed link made on first use (ipc/peer.h, then
 * a sealed data link): the same frames, the same calls, the same failure
 * rules, and the shard's events come back on it as from a local shard. A
 * shard that does not own the partition (the map moved it) answers 421
 * without applying it; the call then follows the refreshed map once. Calls
 * still waiting for a link whose node lost the partition move to the new
 * owner when the map changes. The local path costs nothing more than the
 * owner check it always made.
 */
#define _GNU_SOURCE
#include "workers/listener/listener_int.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/auth.h"
#include "ipc/control.h"
#include "ipc/cview.h"
#include "ipc/dlink.h"
#include "ipc/peer.h"
#include "ipc/route.h"
#include "ipc/sock.h"
#include "ipc/stats.h"

struct shard_link {
    int index;
    struct dlink *dl; /* NULL while the shard is down */
    char path[512];   /* a local shard's socket */
    bool remote;      /* a shard of another node: requests forwarded */
    char node[PEER_NODE_ID_MAX];
    struct peer_link *pl; /* remote: the handshake under way */
    bool dialing;
    ev_timer retry;
    double retry_s;
    bool ever_up;
    double heard;   /* local: when the shard last sent anything on this link */
    double ping_at; /* local: a heartbeat is out since then (0: none) */
    bool hung;      /* local: it did not answer heartbeats; new work avoids it */
    struct call *qhead, *qtail; /* calls whose frame has not wholly been written */
    struct shard_link *rnext;   /* the list of remote links */
};

static struct shard_link *links;
static struct shard_link *remotes;
static struct {
    bool on; /* a cluster member with a cookie: it may forward */
    struct auth_key key;
    struct peer_env env;
} FW;
static struct call *calls_by_tok;
static uint64_t next_tok = 1;
#define PING_TOK (1ULL << 63) /* heartbeats' tokens; calls' count up from 1 */
static ev_timer heartbeat_w;
static int rr_next;

struct stream_ent {
    UT_hash_handle hh;
    char sid[64];
    struct conn *conn;
};
static struct stream_ent *streams;

char *listener_rpc_error(const json_t *id, int code, const char *msg)
{
    json_t *o = json_pack("{s:s,s:O,s:{s:i,s:s}}", "jsonrpc", "2.0", "id",
                          id ? (json_t *)id : json_null(), "error", "code", code, "message", msg);
    char *t = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return t;
}

/* ---- metrics and drain ---- */

void listener_count_conn(const char *transport, int delta)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "transport=\"%s\"", transport);
    stats_gauge("cmcp_transport_connections", labels)->value += delta;
}

void listener_count_msg(const char *transport, bool received)
{
    /* Transports name themselves with string literals: found again by address. */
    static struct {
        const char *t;
        struct stats_metric *rx, *tx;
    } cache[8];
    for (int i = 0; i < 8; i++) {
        if (cache[i].t && cache[i].t != transport)
            continue;
        if (!cache[i].t) {
            char labels[64];
            snprintf(labels, sizeof(labels), "transport=\"%s\"", transport);
            cache[i].t = transport;
            cache[i].rx = stats_counter("cmcp_transport_messages_received_total", labels);
            cache[i].tx = stats_counter("cmcp_transport_messages_sent_total", labels);
        }
        (received ? cache[i].rx : cache[i].tx)->value += 1;
        return;
    }
    char labels[64];
    snprintf(labels, sizeof(labels), "transport=\"%s\"", transport);
    stats_counter(received ? "cmcp_transport_messages_received_total"
                           : "cmcp_transport_messages_sent_total",
                  labels)
        ->value += 1;
}

bool listener_draining(void)
{
    return control_draining();
}

/* ---- calls ---- */

static void link_name(const struct shard_link *l, char *buf, size_t len)
{
    if (l->remote)
        snprintf(buf, len, "Shard %d of cluster member %s", l->index, l->node);
    else
        snprintf(buf, len, "Shard %d", l->index);
}

static void queue_del(struct call *c)
{
    struct shard_link *l = c->link;
    if (!c->sending)
        return;
    c->sending = false;
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        l->qhead = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        l->qtail = c->qprev;
    c->qnext = c->qprev = NULL;
}

static void call_free(struct call *c)
{
    HASH_DEL(calls_by_tok, c);
    json_decref(c->rid);
    free(c->frame);
    free(c);
}

static void call_unlink(struct call *c)
{
    if (!c->conn)
        return;
    struct call **pp = &c->conn->calls;
    for (; *pp; pp = &(*pp)->next_in_conn)
        if (*pp == c) {
            *pp = c->next_in_conn;
            break;
        }
    c->conn = NULL;
}

/*
 * The duration histogram of a call: by its JSON-RPC method, which its reply names
 * (the listener does not parse requests), or by the operation for what is no JSON-RPC
 * message (a GET stream, a DELETE, a legacy SSE open).
 */
static struct stats_metric *duration_of(const struct call *c)
{
    static struct stats_metric *by_method[64], *by_op[WIRE_OP_COUNT];
    char labels[80];
    if (c->op == WIRE_MSG || c->op == WIRE_STATELESS || c->op <= WIRE_OP_NONE ||
        c->op >= WIRE_OP_COUNT) {
        int m = c->method > 0 && c->method < wire_method_count && c->method < 64
                    ? c->method
                    : wire_method_count - 1; /* "other" */
        if (!by_method[m]) {
            snprintf(labels, sizeof(labels), "method=\"%s\"", wire_methods[m]);
            by_method[m] = stats_histogram("cmcp_request_duration_seconds", labels);
        }
        return by_method[m];
    }
    if (!by_op[c->op]) {
        snprintf(labels, sizeof(labels), "method=\"%s\"", wire_op_name(c->op));
        by_op[c->op] = stats_histogram("cmcp_request_duration_seconds", labels);
    }
    return by_op[c->op];
}

/* Ends a call with a reply (real or made here). */
static void call_finish(struct call *c, const struct wire_reply *r)
{
    if (c->finished)
        return;
    c->finished = true;
    ev_timer_stop(listener_g.loop, &c->timer);
    /* A frame still queued on a live link is in the link's buffer already (its answer
     * will find no call); on a link that is down it is never sent. */
    queue_del(c);
    if (c->conn) {
        if (r->method > 0)
            c->method = r->method;
        stats_observe(duration_of(c), (cmcp_now_ms() - c->t0) / 1000.0);
        c->ops->done(c, r);
    }
    call_unlink(c);
    call_free(c);
}

static void call_fail(struct call *c, int st, int code, const char *msg)
{
    /* Answer with the request's own id, so that line clients can match the error. */
    if ((!c->rid || !c->method) && c->body) {
        json_t *req = json_loadb(c->body, c->body_len, 0, NULL);
        json_t *id = json_object_get(req, "id");
        if (id && !c->rid)
            c->rid = json_incref(id);
        if (req)
            c->method = wire_method_index(wire_method_label(req));
        json_decref(req);
    }
    char *body = listener_rpc_error(c->rid, code, msg);
    struct wire_reply r = {.st = st, .body = body, .blen = body ? strlen(body) : 0};
    call_finish(c, &r);
    free(body);
}

/* The shard died with the request inside it: its outcome is unknown. */
static void call_fail_shard_stopped(struct call *c)
{
    char msg[300], who[160];
    link_name(c->link, who, sizeof(who));
    snprintf(msg, sizeof(msg),
             "%s %s while handling this request; it may or may not have been applied. Retry "
             "if that is safe",
             who, c->link->remote ? "became unreachable" : "stopped");
    call_fail(c, 503, -32603, msg);
}

static void call_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct call *c = w->data;
    char msg[300], who[160];
    link_name(c->link, who, sizeof(who));
    if (c->held_back) {
        snprintf(msg, sizeof(msg),
                 "%s is not responding; the request was not delivered. Retry shortly", who);
        call_fail(c, 503, -32603, msg);
        return;
    }
    if (c->sending && c->link->dl && !c->busy_wait) {
        /* The shard is up, only busy: the request waits its turn behind others. It is
         * not lost, so it gets the whole request timeout rather than the restart grace. */
        c->busy_wait = true;
        ev_timer_set(&c->timer, listener_g.request_timeout, 0);
        ev_timer_start(listener_g.loop, &c->timer);
        return;
    }
    if (c->sending && !c->link->dl) {
        snprintf(msg, sizeof(msg),
                 "%s is unavailable (%s); the request was not delivered. Retry shortly", who,
                 c->link->remote ? "unreachable" : "restarting");
        call_fail(c, 503, -32603, msg);
    } else {
        snprintf(msg, sizeof(msg), "Request timed out after %.0f ms in %s",
                 listener_g.request_timeout * 1000, who);
        call_fail(c, 504, -32603, msg);
    }
}

/* The frame left for the shard: from now on only the request timeout applies. */
static void call_delivered(struct call *c)
{
    queue_del(c);
    if (c->endless) {
        /* it ends when the client leaves; the connection's keep-alives hold it */
        ev_timer_stop(listener_g.loop, &c->timer);
        return;
    }
    if (!c->busy_wait) {
        ev_timer_stop(listener_g.loop, &c->timer);
        ev_timer_set(&c->timer, listener_g.request_timeout, 0);
        ev_timer_start(listener_g.loop, &c->timer);
    }
}

static void link_progress(struct dlink *dl)
{
    struct shard_link *l = dlink_ud(dl);
    uint64_t sent = dlink_sent(dl);
    while (l->qhead && l->qhead->frame_end <= sent)
        call_delivered(l->qhead);
}

/* Puts a call at the end of l's queue, and on the wire when l is up. 0, or -1 (no memory). */
static int link_enqueue(struct shard_link *l, struct call *c);
static void link_connect(struct shard_link *l);
static struct shard_link *link_for(const char *sid, int shard);
static void ping_send(struct shard_link *l);
static void link_responsive(struct shard_link *l);

static int link_push(struct shard_link *l, struct call *c)
{
    if (dlink_send_frame(l->dl, c->frame, c->frame_len) != 0)
        return -1;
    c->frame_end = dlink_queued(l->dl);
    return 0;
}

static int link_enqueue(struct shard_link *l, struct call *c)
{
    c->link = l;
    c->sending = true;
    c->qnext = NULL;
    c->qprev = l->qtail;
    if (l->qtail)
        l->qtail->qnext = c;
    else
        l->qhead = c;
    l->qtail = c;
    if (l->dl)
        return link_push(l, c);
    if (l->remote && !l->pl && !ev_is_active(&l->retry))
        link_connect(l); /* a remote link is made on first use */
    return 0;
}

/*
 * A call the shard refused with 421 (not applied: the partition is not its
 * node's) follows the refreshed map once; a call waiting for a link whose
 * node no longer owns its partition moves to the owner. true when it moved.
 */
static struct shard_link *new_session_target(int *shard);

static bool call_reroute(struct call *c)
{
    struct shard_link *nl;
    if (!c->rsid[0] && c->op == WIRE_MSG) {
        /* a new session the shard could not place (it owns no partition now): wherever
         * the refreshed map says new sessions go */
        int shard = -1;
        nl = new_session_target(&shard);
        if (!nl)
            nl = &links[shard];
        c->shard = shard;
    } else {
        nl = link_for(c->rsid, c->shard);
    }
    if (nl == c->link)
        return false;
    queue_del(c);
    c->frame_end = 0;
    if (link_enqueue(nl, c) != 0) {
        queue_del(c);
        return false;
    }
    log_debug("call_rerouted", "{s:s,s:s}", "sid", c->rsid, "to", nl->remote ? nl->node : "local");
    return true;
}

static void call_not_owner(struct call *c, const struct wire_reply *r)
{
    if (!c->rerouted) {
        c->rerouted = true;
        /* the map may be newer than ours: ask for it now (at most every 50 ms: a failover
         * refuses many calls at once, and the answer is the same for all of them) */
        static double last_fetch;
        double now = ev_now(listener_g.loop);
        if (now - last_fetch > 0.05) {
            last_fetch = now;
            cview_fetch_map(listener_g.run_dir, 200);
        }
        if (call_reroute(c)) {
            ev_timer_stop(listener_g.loop, &c->timer);
            ev_timer_set(&c->timer, listener_g.shard_wait, 0);
            ev_timer_start(listener_g.loop, &c->timer);
            return;
        }
    }
    /* Still not the owner's: the partition is moving. Nothing was applied. */
    (void)r;
    if (!c->rsid[0])
        call_fail(c, 503, -32000,
                  "No cluster member can make a new session right now (this node owns no "
                  "partition and the map names no other owner yet); retry shortly");
    else
        call_fail(c, 503, -32001,
                  "This session's partition is moving between cluster members; the request "
                  "was not applied. Retry shortly");
}

/* The map changed: calls waiting for a link whose node lost their partition move on. */
void listener_map_changed(void)
{
    if (!links)
        return; /* the first map arrives before the links are made */
    for (struct shard_link *l = remotes; l; l = l->rnext) {
        struct call *c = l->qhead;
        while (c) {
            struct call *next = c->qnext;
            if (c->frame_end == 0 || !l->dl)
                call_reroute(c);
            c = next;
        }
    }
    /* and calls waiting for a local shard whose partition went elsewhere */
    for (int i = 0; i < listener_g.nshards; i++) {
        if (links[i].dl)
            continue;
        struct call *c = links[i].qhead;
        while (c) {
            struct call *next = c->qnext;
            if (c->rsid[0])
                call_reroute(c);
            c = next;
        }
    }
}

int listener_route(const char *sid)
{
    int p = cview_partition_of(sid);
    const struct cview *v = cview_get();
    if (p < 0 || (v->have_map && p >= v->npart))
        return -1;
    return p % listener_g.nshards;
}

/* The map's index of the member that owns sid's partition when it is not this node, or -1. */
static int owner_elsewhere(const char *sid)
{
    int p = cview_partition_of(sid);
    const struct cview *v = cview_get();
    if (p < 0 || !v->have_map || p >= v->npart || v->self < 0 || v->owner[p] == v->self ||
        v->owner[p] < 0)
        return -1;
    return v->owner[p];
}

const char *listener_owner_elsewhere(const char *sid)
{
    int o = owner_elsewhere(sid);
    return o < 0 ? NULL : cview_node_id(o);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* The link to shard `shard` of member `node` (made on first use); NULL when out of memory. */
static struct shard_link *remote_link(const char *node, int shard)
{
    struct shard_link *l;
    for (l = remotes; l; l = l->rnext)
        if (l->index == shard && strcmp(l->node, node) == 0)
            return l;
    if (!(l = calloc(1, sizeof(*l))))
        return NULL;
    l->index = shard;
    l->remote = true;
    snprintf(l->node, sizeof(l->node), "%s", node);
    ev_timer_init(&l->retry, retry_cb, 0, 0);
    l->retry.data = l;
    l->retry_s = 0.005;
    l->rnext = remotes;
    remotes = l;
    return l;
}

/* Where a call for sid (hosted by shard index `shard`) goes now: the owner's shard. */
static struct shard_link *link_for(const char *sid, int shard)
{
    int o = sid && sid[0] && FW.on ? owner_elsewhere(sid) : -1;
    const char *node = o >= 0 ? cview_node_id(o) : NULL;
    struct shard_link *l = node ? remote_link(node, shard) : NULL;
    return l ? l : &links[shard];
}

/* Shards that host a partition this node owns: where new sessions go (all, without a map). */
static bool shard_hosts_owned(int shard)
{
    const struct cview *v = cview_get();
    if (!v->have_map || v->self < 0)
        return true;
    for (int p = shard; p < v->npart; p += listener_g.nshards)
        if (v->owner[p] == v->self)
            return true;
    return false;
}

/*
 * A new session when this node owns no partition at all (it has just rejoined and
 * owns nothing until a rebalance, or it is draining): the member that owns the next
 * partition in turn makes it, in that partition's shard. NULL without a map or
 * forwarding, or when no other member owns one.
 */
static struct shard_link *new_session_elsewhere(int *shard)
{
    static int rr_part;
    const struct cview *v = cview_get();
    if (!FW.on || !v->have_map || v->self < 0 || v->npart <= 0)
        return NULL;
    for (int k = 0; k < v->npart; k++) {
        int p = rr_part;
        rr_part = (rr_part + 1) % v->npart;
        int o = v->owner[p];
        const char *node = o >= 0 && o != v->self ? cview_node_id(o) : NULL;
        struct shard_link *l = node ? remote_link(node, p % listener_g.nshards) : NULL;
        if (l) {
            *shard = p % listener_g.nshards;
            return l;
        }
    }
    return NULL;
}

/*
 * Where a new session (or a stateless request) goes: round robin over the shards that
 * host an owned partition and answer their heartbeats; then over those that only host
 * one; then another member. *shard gets the shard; the link is NULL for a local shard.
 */
static struct shard_link *new_session_target(int *shard)
{
    bool owned = false;
    for (int pass = 0; pass < 2 && !owned; pass++)
        for (int k = 0; k < listener_g.nshards && !owned; k++) {
            *shard = rr_next;
            rr_next = (rr_next + 1) % listener_g.nshards;
            owned = shard_hosts_owned(*shard) && (pass == 1 || !links[*shard].hung);
        }
    return owned ? NULL : new_session_elsewhere(shard);
}

/* A new call joins the table by token and its connection's calls, its timer set to `first`. */
static void call_register(struct call *c, struct conn *conn, double first)
{
    HASH_ADD(hh, calls_by_tok, tok, sizeof(c->tok), c);
    if (conn) {
        c->next_in_conn = conn->calls;
        conn->calls = c;
    }
    ev_timer_init(&c->timer, call_timer_cb, first, 0);
    c->timer.data = c;
    ev_timer_start(listener_g.loop, &c->timer);
}

struct call *listener_call(struct conn *conn, int shard, struct wire_req *req,
                           const struct call_ops *ops, void *tdata)
{
    struct shard_link *target = NULL;
    if (shard < 0)
        target = new_session_target(&shard);
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->tok = next_tok++;
    c->t0 = cmcp_now_ms();
    c->op = req->op;
    c->shard = shard;
    c->ops = ops;
    c->conn = conn;
    c->tdata = tdata;
    req->tok = c->tok;
    req->lid = listener_g.index;
    size_t body_off = 0;
    c->frame = wire_req_frame(req, &c->frame_len, &body_off);
    if (!c->frame) {
        free(c);
        return NULL;
    }
    c->body = c->frame + body_off;
    c->body_len = req->blen;
    call_register(c, conn, listener_g.shard_wait);
    cmcp_strlcpy(c->rsid, sizeof(c->rsid), req->sid);
    /* Queued until the frame has left; sent now when the shard is up. */
    struct shard_link *l = target ? target : link_for(req->sid, shard);
    if (!l->remote && l->hung) {
        /* Its shard does not answer heartbeats: not sent (were it sent, a shard that wakes
         * up would run it after its client was told it failed). Failed on the next turn. */
        c->link = l;
        c->held_back = true;
        ev_timer_stop(listener_g.loop, &c->timer);
        ev_timer_set(&c->timer, 0, 0);
        ev_timer_start(listener_g.loop, &c->timer);
        return c;
    }
    if (l->remote) {
        static struct stats_metric *fwd;
        if (!fwd)
            fwd = stats_counter("cmcp_forwarded_requests_total", "");
        fwd->value += 1;
    }
    if (link_enqueue(l, c) != 0) {
        /* Out of memory for the link's buffer: this request is not sent. */
        call_unlink(c);
        queue_del(c);
        ev_timer_stop(listener_g.loop, &c->timer);
        call_free(c);
        return NULL;
    }
    return c;
}

struct call *listener_call_expect(struct conn *conn, int shard, const char *sid, int stream,
                                  const struct call_ops *ops)
{
    struct call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->tok = next_tok++;
    c->t0 = cmcp_now_ms();
    c->op = WIRE_STREAM;
    c->shard = shard;
    c->ops = ops;
    c->conn = conn;
    c->stream = stream;
    c->link = link_for(sid, shard); /* where the STREAM request that names it goes */
    cmcp_strlcpy(c->sid, sizeof(c->sid), sid);
    cmcp_strlcpy(c->rsid, sizeof(c->rsid), sid);
    /* nothing to send: "delivered" at once; a link that goes down fails it like a sent call */
    call_register(c, conn, listener_g.request_timeout);
    return c;
}

void listener_call_forget(uint64_t tok)
{
    struct call *c = NULL;
    HASH_FIND(hh, calls_by_tok, &tok, sizeof(tok), c);
    if (!c || c->finished)
        return;
    call_unlink(c); /* out of its connection's calls: no answer to anyone */
    call_finish(c, &(struct wire_reply){.st = 200});
}

struct call *listener_call_by_stream(const char *sid, int stream)
{
    struct call *c, *tmp;
    HASH_ITER(hh, calls_by_tok, c, tmp)
    {
        if (!c->finished && c->stream == stream && strcmp(c->sid, sid) == 0)
            return c;
    }
    return NULL;
}

void listener_call_detach(struct call *c)
{
    call_unlink(c);
}

void listener_call_attach(struct call *c, struct conn *conn, const struct call_ops *ops)
{
    call_unlink(c);
    c->conn = conn;
    c->ops = ops;
    c->next_in_conn = conn->calls;
    conn->calls = c;
}

void listener_detach_calls(struct conn *conn)
{
    struct call **head = &conn->calls;
    while (*head) {
        struct call *c = *head;
        *head = c->next_in_conn;
        c->conn = NULL;
        c->orphaned = true;
        c->next_in_conn = NULL;
    }
}

static const struct call_ops end_ops;
static void end_done(struct call *c, const struct wire_reply *r)
{
    (void)c;
    (void)r;
}
static const struct call_ops end_ops = {NULL, end_done};

void listener_stateless_cancel(struct call *c)
{
    if (!c->stateless || c->finished)
        return;
    char key[64];
    snprintf(key, sizeof(key), "%d-%llu", listener_g.index, (unsigned long long)c->tok);
    struct wire_req req = {.op = WIRE_STATELESS_CANCEL, .key = key};
    listener_call(NULL, c->shard, &req, &end_ops, NULL);
}

void listener_session_end(const char *sid)
{
    int shard = listener_route(sid);
    if (shard < 0)
        return;
    struct wire_req req = {.op = WIRE_DELETE};
    snprintf(req.sid, sizeof(req.sid), "%s", sid);
    listener_call(NULL, shard, &req, &end_ops, NULL);
}

/* ---- what the shards send: events and responses ---- */

static void link_frame(struct dlink *dl, const char *data, size_t len)
{
    struct shard_link *l = dlink_ud(dl);
    if (!l->remote) {
        l->heard = ev_now(listener_g.loop);
        if (l->hung)
            link_responsive(l);
    }
    struct wire_reply r;
    struct wire_event e;
    json_t *keep;
    int kind = wire_from_shard_parse(data, len, &r, &e, &keep);
    struct call *c = NULL;
    if (kind == WIRE_REPLY && (r.tok & PING_TOK)) {
        l->ping_at = 0; /* its heartbeat: the loop turns */
    } else if (kind == WIRE_REPLY) {
        HASH_FIND(hh, calls_by_tok, &r.tok, sizeof(r.tok), c);
        if (c && !c->finished && r.st == 421)
            call_not_owner(c, &r);
        else if (c && !c->finished)
            call_finish(c, &r); /* answered, so it arrived: out of the queue */
    } else if (kind == WIRE_EVENT && e.tok) {
        /* An event of a request, before its response (the link keeps order). */
        HASH_FIND(hh, calls_by_tok, &e.tok, sizeof(e.tok), c);
        if (c && !c->finished) {
            c->stream = e.stream;
            if (c->conn && c->ops->event)
                c->ops->event(c, &e);
        }
    } else if (kind == WIRE_EVENT) {
        /* An event of a session that belongs to no request: its standalone stream's. */
        struct stream_ent *se = NULL;
        HASH_FIND_STR(streams, e.sid, se);
        if (se && se->conn->ops->stream_event)
            se->conn->ops->stream_event(se->conn, &e);
    } else {
        log_warn("shard_frame_malformed", "{s:i}", "bytes", (int)len);
    }
    json_decref(keep);
}

/* ---- shard liveness ---- */

static void link_connect(struct shard_link *l);

static void link_closed(struct dlink *dl, const char *why)
{
    struct shard_link *l = dlink_ud(dl);
    link_progress(dl); /* frames written just before the break left */
    l->dl = NULL;
    /* Every call whose frame left is lost with the shard; the rest wait for its return. */
    struct call *c, *tmp;
    int failed = 0;
    HASH_ITER(hh, calls_by_tok, c, tmp)
    {
        if (c->link != l || c->finished || c->sending)
            continue;
        call_fail_shard_stopped(c);
        failed++;
    }
    for (c = l->qhead; c; c = c->qnext)
        c->frame_end = 0;
    if (l->remote) {
        log_warn("forward_link_down", "{s:s,s:i,s:s,s:i}", "node", l->node, "shard", l->index,
                 "why", why, "calls_failed", failed);
        /* made again on next use, or now for the calls that wait */
        l->retry_s = 0.05;
        listener_map_changed();
        if (l->qhead) {
            ev_timer_set(&l->retry, l->retry_s, 0);
            ev_timer_start(listener_g.loop, &l->retry);
        }
        return;
    }
    log_warn("shard_link_down", "{s:i,s:s,s:i}", "shard", l->index, "why", why, "calls_failed",
             failed);
    stats_gauge("cmcp_shard_links_up", "")->value -= 1;
    stats_counter("cmcp_shard_link_drops_total", "")->value += 1;
    l->retry_s = 0.005;
    ev_timer_set(&l->retry, l->retry_s, 0);
    ev_timer_start(listener_g.loop, &l->retry);
}

static const struct dlink_ops link_ops = {link_frame, link_progress, link_closed};

/*
 * Heartbeats on the links to this node's shards. A shard whose loop stopped turning (a
 * deadlock, a stalled fsync, SIGSTOP) keeps its socket: nothing breaks, nothing answers.
 * A link that was silent for a third of [listener] shard_unresponsive_ms carries a ping,
 * which the shard answers from its loop; a ping unanswered for the whole bound gives the
 * shard up until it answers again (or its supervisor's watchdog replaces it):
 *   - calls already sent fail "not responding; may or may not have been applied";
 *   - calls not yet sent fail "not delivered", and so do new ones for its sessions;
 *   - new sessions go to the other shards;
 *   - the link is closed, so that a shard that wakes up drops what it had not read
 *     (its listener answered for it) instead of running it late.
 */
static void ping_send(struct shard_link *l)
{
    static uint64_t seq;
    struct wire_req req = {.op = WIRE_PING, .tok = PING_TOK | ++seq, .lid = listener_g.index};
    size_t len, body_off;
    char *f = wire_req_frame(&req, &len, &body_off);
    if (f && l->dl && dlink_send_frame(l->dl, f, len) == 0)
        l->ping_at = ev_now(listener_g.loop);
    free(f);
}

static void link_responsive(struct shard_link *l)
{
    l->hung = false;
    log_notice("shard_responsive", "{s:i}", "shard", l->index);
    stats_gauge("cmcp_shards_unresponsive", "")->value -= 1;
}

static void link_give_up(struct shard_link *l, double silent)
{
    l->hung = true;
    stats_gauge("cmcp_shards_unresponsive", "")->value += 1;
    stats_counter("cmcp_shard_unresponsive_total", "")->value += 1;
    char who[160], msg[400];
    link_name(l, who, sizeof(who));
    int sent = 0, queued = 0;
    struct call *c, *tmp;
    HASH_ITER(hh, calls_by_tok, c, tmp)
    {
        if (c->link != l || c->finished)
            continue;
        if (c->sending) {
            snprintf(msg, sizeof(msg),
                     "%s is not responding; the request was not delivered. Retry shortly", who);
            queued++;
        } else {
            snprintf(msg, sizeof(msg),
                     "%s is not responding (silent for %.0f ms); this request may or may not "
                     "have been applied. Retry if that is safe",
                     who, silent * 1000);
            sent++;
        }
        call_fail(c, 503, -32603, msg);
    }
    log_warn("shard_unresponsive", "{s:i,s:f,s:i,s:i,s:s}", "shard", l->index, "silent_ms",
             silent * 1000, "calls_failed", sent, "calls_not_delivered", queued, "action",
             "new sessions go to other shards until it answers or is replaced");
    dlink_close(l->dl);
    l->dl = NULL;
    l->ping_at = 0;
    stats_gauge("cmcp_shard_links_up", "")->value -= 1;
    l->retry_s = 0.2;
    ev_timer_set(&l->retry, l->retry_s, 0);
    ev_timer_start(listener_g.loop, &l->retry);
}

static void heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    double now = ev_now(loop), bound = listener_g.shard_unresponsive;
    for (int i = 0; i < listener_g.nshards; i++) {
        struct shard_link *l = &links[i];
        if (!l->dl)
            continue;
        if (l->ping_at > 0 && now - l->ping_at >= bound)
            link_give_up(l, now - l->heard);
        else if (l->ping_at == 0 && now - l->heard >= bound / 3)
            ping_send(l);
    }
}

/* The link is up: what waited for it goes now, in the order it came. */
static void link_up(struct shard_link *l)
{
    int waiting = 0, dropped = 0;
    l->heard = ev_now(listener_g.loop);
    l->ping_at = 0;
    if (l->hung && !l->remote)
        ping_send(l); /* a new shard answers at once; the stopped one still does not */
    for (struct call *c = l->qhead, *next; c; c = next) {
        next = c->qnext;
        if (c->orphaned) {
            /* Its client went away while it waited: it is not run later (a retrying client
             * would have it applied twice). */
            call_finish(c, &(struct wire_reply){.st = 503});
            dropped++;
            continue;
        }
        waiting++;
        if (link_push(l, c) != 0)
            break;
    }
    if (dropped)
        log_info("calls_dropped", "{s:i,s:i,s:s}", "shard", l->index, "calls", dropped, "why",
                 "their clients went away while the shard was down");
    if (l->remote)
        log_info("forward_link_up", "{s:s,s:i,s:i}", "node", l->node, "shard", l->index,
                 "waiting", waiting);
    else if (waiting || l->ever_up)
        log_info("shard_link_up", "{s:i,s:i}", "shard", l->index, "waiting", waiting);
    l->ever_up = true;
}

/* A remote link: dials the owner's forward port (peer port + 1 + shards + index). */
static void remote_connect(struct shard_link *l)
{
    const struct cview *v = cview_get();
    const char *ep = NULL;
    for (size_t i = 0; v->nodes && i < json_array_size(v->nodes); i++) {
        const char *id = cview_node_id((int)i);
        if (id && strcmp(id, l->node) == 0)
            ep = cview_node_endpoint((int)i);
    }
    const char *colon = ep ? strrchr(ep, ':') : NULL;
    if (!colon || !l->qhead) {
        if (l->qhead) { /* not in the map (any more): the calls move or wait */
            ev_timer_set(&l->retry, 0.2, 0);
            ev_timer_start(listener_g.loop, &l->retry);
        }
        return;
    }
    char host[PEER_ENDPOINT_MAX];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - ep), ep);
    int port = atoi(colon + 1) + 1 + listener_g.nshards + l->index;
    l->dialing = true;
    struct peer_link *pl = peer_dial(&FW.env, host, port, l);
    if (l->dialing)
        l->pl = pl; /* else it failed at once, and fw_down ran */
}

static void fw_up(struct peer_link *pl)
{
    struct shard_link *l = peer_ud(pl);
    l->pl = NULL;
    l->dialing = false;
    l->dl = peer_detach(pl, &link_ops, l);
    if (!l->dl) {
        ev_timer_set(&l->retry, 0.2, 0);
        ev_timer_start(listener_g.loop, &l->retry);
        return;
    }
    l->retry_s = 0.005;
    link_up(l);
}

static void fw_message(struct peer_link *pl, int channel, const char *data, size_t len)
{
    (void)pl;
    (void)channel;
    (void)data;
    (void)len; /* detached at up */
}

static void fw_down(struct peer_link *pl, const char *why)
{
    struct shard_link *l = peer_ud(pl);
    l->pl = NULL;
    l->dialing = false;
    log_debug("forward_dial_failed", "{s:s,s:i,s:s}", "node", l->node, "shard", l->index, "why",
              why);
    if (!l->qhead)
        return; /* made again on next use */
    l->retry_s = l->retry_s < 0.5 ? l->retry_s * 2 : 1.0;
    ev_timer_set(&l->retry, l->retry_s, 0);
    ev_timer_start(listener_g.loop, &l->retry);
}

static const struct peer_ops fw_ops = {fw_up, fw_message, fw_down};

static void link_connect(struct shard_link *l)
{
    if (l->remote) {
        remote_connect(l);
        return;
    }
    int fd = sock_unix_connect(l->path);
    if (fd < 0) {
        /* Not up yet (restarting, or still loading its sessions): try again shortly. */
        l->retry_s = l->retry_s < 0.2 ? l->retry_s * 2 : 0.2;
        ev_timer_set(&l->retry, l->retry_s, 0);
        ev_timer_start(listener_g.loop, &l->retry);
        return;
    }
    l->dl = dlink_new(fd, &link_ops, l);
    if (!l->dl) {
        ev_timer_set(&l->retry, 0.2, 0);
        ev_timer_start(listener_g.loop, &l->retry);
        return;
    }
    stats_gauge("cmcp_shard_links_up", "")->value += 1;
    link_up(l);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct shard_link *l = w->data;
    if (l->remote)
        listener_map_changed(); /* its calls may belong elsewhere by now */
    if (!l->dl && !l->pl)
        link_connect(l);
}

/* ---- standalone streams ---- */

void listener_stream_set(const char *sid, struct conn *conn)
{
    struct stream_ent *e = NULL;
    HASH_FIND_STR(streams, sid, e);
    if (!e) {
        e = calloc(1, sizeof(*e));
        snprintf(e->sid, sizeof(e->sid), "%s", sid);
        HASH_ADD_STR(streams, sid, e);
    }
    e->conn = conn;
}

struct conn *listener_stream_get(const char *sid)
{
    struct stream_ent *e = NULL;
    HASH_FIND_STR(streams, sid, e);
    return e ? e->conn : NULL;
}

void listener_stream_clear(const char *sid, struct conn *conn)
{
    struct stream_ent *e = NULL;
    HASH_FIND_STR(streams, sid, e);
    if (e && e->conn == conn) {
        HASH_DEL(streams, e);
        free(e);
    }
}

/* ---- start and stop ---- */

/* A cluster member forwards requests for other members' sessions: its cookie seals them. */
static int forward_init(void)
{
    struct cfg *c = listener_g.cfg;
    const char *bind = cfg_get(c, "cluster", "bind", "");
    if (!bind[0])
        return 0;
    const char *cookie = getenv("CMCP_COOKIE_FILE");
    if (!cookie || !*cookie)
        cookie = cfg_get(c, "admin", "cookie_file", "./var/cookie");
    bool created = false;
    char err[300];
    if (auth_cookie_load(cookie, false, &FW.key, &created, err, sizeof(err)) != 0) {
        log_error("listener_start_failed", "{s:s}", "error", err);
        return -1;
    }
    struct peer_ident me = {0};
    const char *node = cfg_get(c, "cluster", "node_id", "");
    if (node[0])
        snprintf(me.node, sizeof(me.node), "%s", node);
    else if (gethostname(me.node, sizeof(me.node) - 1) != 0)
        snprintf(me.node, sizeof(me.node), "node");
    snprintf(me.endpoint, sizeof(me.endpoint), "listener-%d", listener_g.index);
    peer_env_init(&FW.env, listener_g.loop, &FW.key, &me, &fw_ops);
    FW.on = true;
    return 0;
}

int listener_links_start(void)
{
    links = calloc((size_t)listener_g.nshards, sizeof(*links));
    if (!links) {
        log_error("listener_start_failed", "{s:s}", "error", "out of memory");
        return -1;
    }
    for (int i = 0; i < listener_g.nshards; i++) {
        struct shard_link *l = &links[i];
        l->index = i;
        ipc_addr_shard_data(l->path, sizeof(l->path), listener_g.run_dir, i);
        ev_timer_init(&l->retry, retry_cb, 0, 0);
        l->retry.data = l;
        l->retry_s = 0.005;
        link_connect(l);
    }
    double every = listener_g.shard_unresponsive / 6;
    ev_timer_init(&heartbeat_w, heartbeat_cb, every, every);
    ev_timer_start(listener_g.loop, &heartbeat_w);
    stats_gauge("cmcp_shards_unresponsive", "");
    stats_counter("cmcp_shard_unresponsive_total", "");
    return forward_init();
}

void listener_links_stop(void)
{
    for (int i = 0; i < listener_g.nshards; i++)
        dlink_close(links[i].dl);
    while (remotes) {
        struct shard_link *l = remotes;
        remotes = l->rnext;
        ev_timer_stop(listener_g.loop, &l->retry);
        peer_close(l->pl);
        dlink_close(l->dl);
        free(l);
    }
    sodium_memzero(&FW.key, sizeof(FW.key));
}
