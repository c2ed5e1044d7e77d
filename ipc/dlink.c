/* Length-prefixed frames over a non-blocking stream, sealed or not (dlink.h). */
#define _GNU_SOURCE
#include "ipc/dlink.h"
#include "ipc/sock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (64u << 10)
#define READS_PER_TURN 16 /* then other watchers get their turn */

struct dlink {
    int fd;
    ev_io rw, ww;
    const struct dlink_ops *ops;
    void *ud;
    /* out: bytes [ooff, olen) of obuf are queued and not yet written */
    char *obuf;
    size_t ooff, olen, ocap;
    uint64_t queued, sent;
    /* in: bytes [ioff, ilen) of ibuf are read and not yet parsed */
    char *ibuf;
    size_t ioff, ilen, icap;
    bool paused, dirty, dead;
    struct dlink_keys *seal; /* sealed: every frame from here on, both ways */
    int depth; /* >0 while the link's own callbacks run: freeing waits */
    double drop_after_stall; /* > 0: see dlink_drop_unread_after_stall */
    struct dlink *dnext, *dprev; /* the flush list */
};

/* A sealed link's keys and counters (XChaCha20-Poly1305; the nonce is the frame's number in
 * its direction, never sent: a stream keeps order, so a frame replayed, dropped, reordered or
 * moved from another link does not open). */
struct dlink_keys {
    unsigned char ks[DLINK_KEY_BYTES], kr[DLINK_KEY_BYTES];
    uint64_t sctr, rctr;
};

static struct ev_loop *dl_loop;
static ev_prepare flush_w;
static double prepared_at; /* when the loop last went to wait (ev_time) */
/* The last long gap between two waits, and when it ended: a wait that a stop signal
 * interrupted (EINTR) shows its stall here, one turn before the data is read. */
static double gap_s, gap_end;
static struct dlink *dirty_head;

static void dirty_add(struct dlink *l)
{
    if (l->dirty)
        return;
    l->dirty = true;
    l->dprev = NULL;
    l->dnext = dirty_head;
    if (dirty_head)
        dirty_head->dprev = l;
    dirty_head = l;
}

static void dirty_del(struct dlink *l)
{
    if (!l->dirty)
        return;
    l->dirty = false;
    if (l->dprev)
        l->dprev->dnext = l->dnext;
    else
        dirty_head = l->dnext;
    if (l->dnext)
        l->dnext->dprev = l->dprev;
    l->dnext = l->dprev = NULL;
}

static void link_free(struct dlink *l)
{
    dirty_del(l);
    ev_io_stop(dl_loop, &l->rw);
    ev_io_stop(dl_loop, &l->ww);
    if (l->fd >= 0)
        close(l->fd);
    free(l->obuf);
    free(l->ibuf);
    if (l->seal) {
        sodium_memzero(l->seal, sizeof(*l->seal));
        free(l->seal);
    }
    free(l);
}

/* The stream broke: tell the owner, then free (now, or when the outermost callback returns). */
static void link_fail(struct dlink *l, const char *why)
{
    if (l->dead)
        return;
    l->dead = true;
    dirty_del(l);
    ev_io_stop(dl_loop, &l->rw);
    ev_io_stop(dl_loop, &l->ww);
    l->depth++;
    l->ops->closed(l, why);
    l->depth--;
    if (l->depth == 0)
        link_free(l);
}

void dlink_close(struct dlink *l)
{
    if (!l || l->dead)
        return;
    l->dead = true;
    dirty_del(l);
    ev_io_stop(dl_loop, &l->rw);
    ev_io_stop(dl_loop, &l->ww);
    if (l->depth == 0)
        link_free(l);
}

/* Writes what is queued; false when the link failed (and may be freed). */
static bool link_write(struct dlink *l)
{
    uint64_t before = l->sent;
    while (l->ooff < l->olen) {
        ssize_t n = write(l->fd, l->obuf + l->ooff, l->olen - l->ooff);
        if (n > 0) {
            l->ooff += (size_t)n;
            l->sent += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        link_fail(l, n < 0 ? strerror(errno) : "write returned 0");
        return false;
    }
    if (l->ooff == l->olen) {
        l->ooff = l->olen = 0;
        if (l->ocap > (4u << 20)) { /* a burst grew it: give the memory back */
            free(l->obuf);
            l->obuf = NULL;
            l->ocap = 0;
        }
        ev_io_stop(dl_loop, &l->ww);
    } else if (!ev_is_active(&l->ww)) {
        ev_io_start(dl_loop, &l->ww);
    }
    if (l->sent != before && l->ops->progress) {
        l->depth++;
        l->ops->progress(l);
        l->depth--;
        if (l->dead) {
            if (l->depth == 0)
                link_free(l);
            return false;
        }
    }
    return true;
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    double now = ev_time();
    if (prepared_at > 0 && now - prepared_at > 1.0) {
        gap_s = now - prepared_at;
        gap_end = now;
    }
    prepared_at = now;
    /* One at a time from the list's head: a callback may free or re-queue any link. */
    for (int guard = 0; dirty_head && guard < 1000000; guard++) {
        struct dlink *l = dirty_head;
        dirty_del(l);
        if (!l->dead && !ev_is_active(&l->ww))
            link_write(l);
    }
}

void dlink_flush(struct dlink *l)
{
    if (!l || l->dead || ev_is_active(&l->ww))
        return; /* the write watcher sends the rest when the socket takes it */
    dirty_del(l);
    link_write(l);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    link_write(w->data);
}

static int reserve_out(struct dlink *l, size_t need)
{
    if (l->ooff > 0 && (l->ooff >= l->olen / 2 || l->olen + need > l->ocap)) {
        memmove(l->obuf, l->obuf + l->ooff, l->olen - l->ooff);
        l->olen -= l->ooff;
        l->ooff = 0;
    }
    if (l->olen + need <= l->ocap)
        return 0;
    size_t cap = l->ocap ? l->ocap : 16384;
    while (cap < l->olen + need)
        cap *= 2;
    char *nb = realloc(l->obuf, cap);
    if (!nb)
        return -1;
    l->obuf = nb;
    l->ocap = cap;
    return 0;
}

void dlink_frame_prefix(char *p, size_t len)
{
    uint32_t n = (uint32_t)len;
    p[0] = (char)(n & 0xff);
    p[1] = (char)((n >> 8) & 0xff);
    p[2] = (char)((n >> 16) & 0xff);
    p[3] = (char)((n >> 24) & 0xff);
}

static uint32_t get_len(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

int dlink_send_frame(struct dlink *l, const char *frame, size_t len)
{
    if (!l || l->dead || len < DLINK_HDR)
        return -1;
    if (l->seal) {
        char *p = dlink_reserve(l, len - DLINK_HDR);
        if (!p)
            return -1;
        memcpy(p, frame + DLINK_HDR, len - DLINK_HDR);
        dlink_commit(l, len - DLINK_HDR);
        return 0;
    }
    if (reserve_out(l, len) != 0)
        return -1;
    memcpy(l->obuf + l->olen, frame, len);
    l->olen += len;
    l->queued += len;
    dirty_add(l);
    return 0;
}

char *dlink_reserve(struct dlink *l, size_t max_payload)
{
    size_t tag = l && l->seal ? DLINK_SEAL_TAG : 0;
    if (!l || l->dead || max_payload + tag > DLINK_MAX_FRAME ||
        reserve_out(l, DLINK_HDR + max_payload + tag) != 0)
        return NULL;
    return l->obuf + l->olen + DLINK_HDR;
}

static void nonce_of(unsigned char n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES], uint64_t ctr)
{
    memset(n, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    for (int i = 0; i < 8; i++)
        n[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES - 8 + i] = (unsigned char)(ctr >> (8 * i));
}

size_t dlink_seal_payload(const unsigned char key[DLINK_KEY_BYTES], uint64_t n,
                          unsigned char *buf, size_t len)
{
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    unsigned long long clen;
    nonce_of(nonce, n);
    crypto_aead_xchacha20poly1305_ietf_encrypt(buf, &clen, buf, len, NULL, 0, NULL, nonce, key);
    return (size_t)clen;
}

int dlink_open_payload(const unsigned char key[DLINK_KEY_BYTES], uint64_t n, unsigned char *buf,
                       size_t len, size_t *outlen)
{
    unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    unsigned long long mlen;
    nonce_of(nonce, n);
    if (len < DLINK_SEAL_TAG || crypto_aead_xchacha20poly1305_ietf_decrypt(
                                    buf, &mlen, NULL, buf, len, NULL, 0, nonce, key) != 0)
        return -1;
    *outlen = (size_t)mlen;
    return 0;
}

void dlink_commit(struct dlink *l, size_t payload_len)
{
    if (l->seal) /* in place: the ciphertext over the payload, the tag after it (reserved) */
        payload_len = dlink_seal_payload(l->seal->ks, ++l->seal->sctr,
                                         (unsigned char *)l->obuf + l->olen + DLINK_HDR,
                                         payload_len);
    dlink_frame_prefix(l->obuf + l->olen, payload_len);
    l->olen += DLINK_HDR + payload_len;
    l->queued += DLINK_HDR + payload_len;
    dirty_add(l);
}

/* Hands every complete frame in the buffer to the owner. */
static void deliver(struct dlink *l)
{
    while (!l->dead && l->ilen - l->ioff >= DLINK_HDR) {
        uint32_t n = get_len(l->ibuf + l->ioff);
        if (n > DLINK_MAX_FRAME) {
            link_fail(l, "frame too large (the peer is not a cmcp process of this build)");
            return;
        }
        if (l->ilen - l->ioff < DLINK_HDR + (size_t)n)
            break;
        char *p = l->ibuf + l->ioff + DLINK_HDR;
        l->ioff += DLINK_HDR + (size_t)n;
        if (l->seal) {
            size_t m;
            if (dlink_open_payload(l->seal->kr, l->seal->rctr + 1, (unsigned char *)p, n, &m) !=
                0) {
                link_fail(l, "a sealed frame did not open (altered, replayed, out of order, or "
                             "sealed with other keys)");
                return;
            }
            l->seal->rctr++;
            n = (uint32_t)m;
        }
        l->ops->frame(l, p, n);
    }
    if (l->ioff == l->ilen)
        l->ioff = l->ilen = 0;
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct dlink *l = w->data;
    int unread = 0;
    double stall = dlink_loop_stall(loop);
    if (l->drop_after_stall > 0 && stall > l->drop_after_stall &&
        sock_peer_hung_up(l->fd, &unread)) {
        /* This process stalled, and meanwhile the sender gave up and closed: what waits
         * unread was answered for by the sender (as failed). Not run late. */
        char why[160];
        snprintf(why, sizeof(why),
                 "closed by the peer while this process stalled for %.1f s; %d unread bytes "
                 "dropped (the peer answered for them)",
                 stall, unread);
        l->depth++;
        link_fail(l, why);
        l->depth--;
        if (l->depth == 0)
            link_free(l);
        return;
    }
    l->depth++;
    for (int i = 0; i < READS_PER_TURN && !l->dead && !l->paused; i++) {
        /* room for a chunk, or for the rest of a frame that is larger */
        if (l->ioff > 0 && (l->icap - l->ilen < READ_CHUNK)) {
            memmove(l->ibuf, l->ibuf + l->ioff, l->ilen - l->ioff);
            l->ilen -= l->ioff;
            l->ioff = 0;
        }
        size_t want = READ_CHUNK;
        if (l->ilen >= DLINK_HDR) {
            size_t fl = DLINK_HDR + (size_t)get_len(l->ibuf);
            if (fl > l->ilen && fl - l->ilen > want && fl <= DLINK_HDR + DLINK_MAX_FRAME)
                want = fl - l->ilen;
        }
        if (l->icap - l->ilen < want) {
            size_t cap = l->icap ? l->icap : READ_CHUNK;
            while (cap - l->ilen < want)
                cap *= 2;
            char *nb = realloc(l->ibuf, cap);
            if (!nb) {
                link_fail(l, "out of memory");
                break;
            }
            l->ibuf = nb;
            l->icap = cap;
        }
        ssize_t n = read(l->fd, l->ibuf + l->ilen, l->icap - l->ilen);
        if (n > 0) {
            l->ilen += (size_t)n;
            deliver(l);
            if ((size_t)n < want)
                break; /* drained */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        link_fail(l, n == 0 ? "closed by the peer" : strerror(errno));
        break;
    }
    if (!l->dead && l->ilen == 0 && l->icap > READ_CHUNK) {
        free(l->ibuf); /* a large frame passed: shrink back */
        l->ibuf = NULL;
        l->icap = 0;
    }
    l->depth--;
    if (l->dead && l->depth == 0)
        link_free(l);
}

double dlink_loop_stall(struct ev_loop *loop)
{
    double stall = ev_now(loop) - prepared_at;
    if (ev_now(loop) - gap_end < 0.5 && gap_s > stall)
        stall = gap_s;
    return prepared_at > 0 && stall > 1.0 ? stall : 0;
}

void dlink_drop_unread_after_stall(struct dlink *l, double stall_s)
{
    l->drop_after_stall = stall_s;
}

void dlink_init(struct ev_loop *loop)
{
    dl_loop = loop;
    ev_prepare_init(&flush_w, flush_cb);
    ev_prepare_start(loop, &flush_w);
    ev_unref(loop); /* the flush watcher alone does not keep the loop running */
}

struct dlink *dlink_new(int fd, const struct dlink_ops *ops, void *ud)
{
    struct dlink *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return NULL;
    }
    l->fd = fd;
    l->ops = ops;
    l->ud = ud;
    ev_io_init(&l->rw, read_cb, fd, EV_READ);
    l->rw.data = l;
    ev_io_init(&l->ww, write_cb, fd, EV_WRITE);
    l->ww.data = l;
    ev_io_start(dl_loop, &l->rw);
    return l;
}

int dlink_seal(struct dlink *l, const unsigned char k_send[DLINK_KEY_BYTES],
               const unsigned char k_recv[DLINK_KEY_BYTES])
{
    if (!l || l->dead || l->seal)
        return -1;
    struct dlink_keys *k = calloc(1, sizeof(*k));
    if (!k)
        return -1;
    memcpy(k->ks, k_send, DLINK_KEY_BYTES);
    memcpy(k->kr, k_recv, DLINK_KEY_BYTES);
    l->seal = k;
    return 0;
}

bool dlink_sealed(const struct dlink *l)
{
    return l && l->seal;
}

void dlink_set_ops(struct dlink *l, const struct dlink_ops *ops, void *ud)
{
    l->ops = ops;
    l->ud = ud;
}

void *dlink_ud(const struct dlink *l)
{
    return l->ud;
}

void dlink_set_ud(struct dlink *l, void *ud)
{
    l->ud = ud;
}

uint64_t dlink_queued(const struct dlink *l)
{
    return l->queued;
}

uint64_t dlink_sent(const struct dlink *l)
{
    return l->sent;
}

size_t dlink_backlog(const struct dlink *l)
{
    return l->olen - l->ooff;
}

void dlink_pause_reading(struct dlink *l, bool pause)
{
    if (l->dead || l->paused == pause)
        return;
    l->paused = pause;
    if (pause)
        ev_io_stop(dl_loop, &l->rw);
    else
        ev_io_start(dl_loop, &l->rw);
}
