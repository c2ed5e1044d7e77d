/*
 * Where a shard's requests come from and its answers go. Listeners send
 * client messages over their data links (ipc/dlink.h); the admin shell and
 * tool runs send control requests over nng req/rep (ipc://RUN/shard-I.sock).
 * Both speak the wire contract (ipc/wire.h), and each request becomes a
 * slot that dispatch.c serves; its events and its reply leave here, on the
 * link it came by, in the order they were made.
 */
#define _GNU_SOURCE
#include "workers/shard/shard_int.h"

#include <errno.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/dlink.h"
#include "ipc/peer.h"
#include "ipc/sock.h"

#define PEER_PAUSE_BYTES (8u << 20)  /* a listener this far behind reading its answers... */
#define PEER_RESUME_BYTES (1u << 20) /* ...is not read from until it caught up to this */

static struct {
    nng_socket rep; /* control: admin shell, tool runs */
    struct slot slots[SHARD_SLOTS];
    int data_fd; /* the listeners' data links connect here */
    char data_path[512];
    struct sock_acceptor acceptor;
    struct dpeer *peers;
} K = {.data_fd = -1};

static void slot_recv(struct slot *sl)
{
    nng_ctx_recv(sl->ctx, sl->aio);
}

static void peer_unref(struct dpeer *p)
{
    if (--p->refs == 0 && !p->dl)
        free(p);
}

/* After queueing on a link: a listener that does not read its answers is not read from. */
static void peer_check_backlog(struct dpeer *p)
{
    if (p->dl && !p->paused && dlink_backlog(p->dl) > PEER_PAUSE_BYTES) {
        p->paused = true;
        dlink_pause_reading(p->dl, true);
    }
}

/* A data slot's life ends with its answer. */
static void slot_release(struct slot *sl)
{
    if (sl->sess)
        pending_remove(sl);
    json_decref(sl->rid);
    json_decref(sl->batch);
    json_decref(sl->batch_ids);
    peer_unref(sl->peer);
    free(sl);
}

void links_reply(struct slot *sl, const struct wire_reply *r)
{
    if (sl->peer) {
        struct dpeer *p = sl->peer;
        struct wire_reply rr = *r;
        rr.tok = sl->dtok;
        /* A listener that went away waits for nothing. */
        if (p->dl && wire_reply_send(p->dl, &rr) != 0)
            log_error("reply_failed", "{s:s}", "error", "out of memory or message too large");
        peer_check_backlog(p);
        slot_release(sl);
        return;
    }
    nng_msg *m = wire_reply_msg(r);
    if (!m) {
        log_error("reply_failed", "{s:s}", "error", "out of memory");
        slot_recv(sl);
        return;
    }
    sl->sending = true;
    nng_aio_set_msg(sl->aio, m);
    nng_ctx_send(sl->ctx, sl->aio);
}

bool links_move(struct slot *run, const struct slot *to, uint64_t tok)
{
    if (!run->peer || !to->peer)
        return false;
    struct dpeer *old = run->peer;
    if (old->dl) {
        /* the listener that carried it ends its call there, with no response */
        struct wire_reply m = {.tok = run->dtok, .st = 200, .followed = true};
        if (wire_reply_send(old->dl, &m) != 0)
            log_error("reply_failed", "{s:s}", "error", "out of memory or message too large");
        peer_check_backlog(old);
    }
    run->peer = to->peer;
    run->peer->refs++;
    run->dtok = tok;
    peer_unref(old);
    return true;
}

static void peer_event(struct dpeer *p, const struct wire_event *e)
{
    if (!p || !p->dl)
        return;
    if (wire_event_send(p->dl, e) != 0)
        log_error("event_failed", "{s:s}", "error", "out of memory or message too large");
    peer_check_backlog(p);
}

void links_event(struct slot *sl, struct wire_event *e)
{
    if (sl) {
        e->tok = sl->dtok;
        peer_event(sl->peer, e);
        return;
    }
    e->tok = 0;
    for (struct dpeer *p = K.peers; p; p = p->next)
        peer_event(p, e);
}

/* ---- control requests (nng) ---- */

static void slot_run(struct ipc_item *it)
{
    struct slot *sl = (struct slot *)it;
    int rv = nng_aio_result(sl->aio);
    if (sl->sending) {
        sl->sending = false;
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(sl->aio));
            if (rv == NNG_ECLOSED)
                return;
        }
        slot_recv(sl);
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED)
            slot_recv(sl);
        return;
    }
    nng_msg *m = nng_aio_get_msg(sl->aio);
    struct wire_req req;
    json_t *keep;
    if (wire_req_parse(nng_msg_body(m), nng_msg_len(m), &req, &keep) != 0) {
        json_decref(keep);
        nng_msg_free(m);
        struct wire_reply r = {.st = 400};
        shard_reply(sl, &r, NULL, NULL);
        return;
    }
    shard_dispatch(sl, &req);
    json_decref(keep);
    nng_msg_free(m);
}

static void slot_aio_cb(void *arg)
{
    struct slot *sl = arg;
    ipc_bridge_post(&shard_g.bridge, &sl->item);
}

/* ---- data links from the listeners ---- */

static void peer_frame(struct dlink *dl, const char *data, size_t len)
{
    struct dpeer *p = dlink_ud(dl);
    struct wire_req req;
    json_t *keep;
    if (wire_req_parse(data, len, &req, &keep) != 0 || req.tok == 0) {
        /* Without its token nobody can be answered: a listener of another build? */
        log_warn("frame_malformed", "{s:i}", "bytes", (int)len);
        json_decref(keep);
        return;
    }
    if (req.op == WIRE_PING) {
        /* A heartbeat: this loop turns. Answered at once, not behind the ack gate. */
        struct wire_reply r = {.tok = req.tok, .st = 200};
        if (wire_reply_send(dl, &r) == 0)
            peer_check_backlog(p);
        json_decref(keep);
        return;
    }
    struct slot *sl = calloc(1, sizeof(*sl));
    if (!sl) {
        static const char e[] = "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,"
                                "\"message\":\"Out of memory in the shard; retry later\"}}";
        struct wire_reply r = {.tok = req.tok, .st = 503, .body = e, .blen = sizeof(e) - 1};
        if (wire_reply_send(dl, &r) == 0)
            peer_check_backlog(p);
        json_decref(keep);
        return;
    }
    sl->peer = p;
    p->refs++;
    sl->dtok = req.tok;
    shard_dispatch(sl, &req);
    json_decref(keep);
}

static void peer_progress(struct dlink *dl)
{
    struct dpeer *p = dlink_ud(dl);
    if (p->paused && dlink_backlog(dl) < PEER_RESUME_BYTES) {
        p->paused = false;
        dlink_pause_reading(dl, false);
    }
}

static void peer_closed(struct dlink *dl, const char *why)
{
    struct dpeer *p = dlink_ud(dl);
    log_info(p->remote ? "forward_link_closed" : "listener_link_closed", "{s:i,s:s}", "shard",
             shard_g.index, "why", why);
    p->dl = NULL;
    if (p->prev)
        p->prev->next = p->next;
    else
        K.peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    /* Requests still being served keep it until they end (their answers go nowhere). */
    p->refs++;
    peer_unref(p);
}

static const struct dlink_ops peer_ops = {peer_frame, peer_progress, peer_closed};

static void peer_add(struct dpeer *p)
{
    p->next = K.peers;
    if (K.peers)
        K.peers->prev = p;
    K.peers = p;
}

static void peer_accepted(struct sock_acceptor *a, int fd)
{
    (void)a;
    struct dpeer *p = calloc(1, sizeof(*p));
    if (!p) {
        close(fd);
        return;
    }
    p->dl = dlink_new(fd, &peer_ops, p);
    if (!p->dl) {
        free(p);
        return;
    }
    /* A listener gives this shard up after [listener] shard_unresponsive_ms without an
     * answer to its heartbeats, answers the calls it had sent, and closes the link: after a
     * stall that long, what waits unread is dropped, not run late. The loop never idles
     * longer than its metrics tick (1 s), so 1.5 s is the shortest stall told from rest. */
    double bound = cfg_get_long(&shard_g.a->cfg, "listener", "shard_unresponsive_ms", 3000) / 1000.0;
    dlink_drop_unread_after_stall(p->dl, bound * 0.75 > 1.5 ? bound * 0.75 : 1.5);
    peer_add(p);
}

int links_adopt(struct peer_link *pl)
{
    struct dpeer *p = calloc(1, sizeof(*p));
    if (!p) {
        peer_close(pl);
        return -1;
    }
    p->dl = peer_detach(pl, &peer_ops, p);
    if (!p->dl) {
        peer_close(pl);
        free(p);
        return -1;
    }
    p->remote = true;
    peer_add(p);
    return 0;
}

/* ---- start and stop ---- */

int links_start(char *err, size_t errlen)
{
    char addr[512];
    int rv;
    ipc_addr_shard_ctl(addr, sizeof(addr), shard_g.a->run_dir, shard_g.index);
    if ((rv = nng_rep0_open(&K.rep)) != 0 || (rv = nng_listen(K.rep, addr, NULL, 0)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, nng_strerror(rv));
        return -1;
    }
    ipc_addr_shard_data(K.data_path, sizeof(K.data_path), shard_g.a->run_dir, shard_g.index);
    if ((K.data_fd = sock_unix_listen(K.data_path)) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", K.data_path, strerror(errno));
        return -1;
    }
    dlink_init(shard_g.loop);
    sock_acceptor_start(&K.acceptor, shard_g.loop, K.data_fd, 64, peer_accepted, NULL);
    for (int i = 0; i < SHARD_SLOTS; i++) {
        struct slot *sl = &K.slots[i];
        sl->item.run = slot_run;
        if ((rv = nng_ctx_open(&sl->ctx, K.rep)) != 0 ||
            (rv = nng_aio_alloc(&sl->aio, slot_aio_cb, sl)) != 0) {
            snprintf(err, errlen, "cannot make the control socket's contexts: %s",
                     nng_strerror(rv));
            return -1;
        }
        slot_recv(sl);
    }
    return 0;
}

/* Closes the sockets first, so that no aio callback runs into freed state. */
void links_stop(void)
{
    nng_close(K.rep);
    sock_acceptor_stop(&K.acceptor);
    if (K.data_fd >= 0) {
        close(K.data_fd);
        unlink(K.data_path);
    }
    while (K.peers) {
        struct dpeer *p = K.peers;
        K.peers = p->next;
        dlink_close(p->dl);
        p->dl = NULL;
        if (p->refs == 0)
            free(p); /* one that slots still refer to stays: the process ends */
    }
    for (int i = 0; i < SHARD_SLOTS; i++)
        nng_aio_free(K.slots[i].aio);
}
