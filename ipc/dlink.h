/*
 * The data plane between a node's listeners and its shards: one
 * non-blocking AF_UNIX stream per listener-shard pair (the shard listens on
 * RUN/shard-i.data, ipc/addr.h), and a sealed TCP stream from a listener to
 * a shard of another node (request forwarding), carrying length-prefixed
 * frames both ways:
 * requests in; responses and server->client events out, in the order the
 * shard made them. This file is the framing only; what a frame says is the
 * wire contract's (ipc/wire.h).
 *
 * Why not nng here: every nng message crosses nng's worker threads on both
 * sides, and a round trip costs thread wake-ups that cap a listener-shard
 * pair at ~13-15K requests/s on a 2-core machine (docs/benchmarks.md). A
 * stream watched by the process's own libev loop, with everything a loop
 * turn produced written by one write(), costs a few microseconds a message.
 * nng keeps the control plane: supervisors, metrics, admin, tool runs.
 *
 * A frame is a 4-byte little-endian length, then that many bytes. Frames
 * queued during a loop turn leave in one write() just before the loop next
 * waits (an ev_prepare watcher). A link counts the bytes queued and written
 * since it was made, so a sender can tell which frames left the process.
 */
#ifndef CMCP_DLINK_H
#define CMCP_DLINK_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DLINK_HDR 4
#define DLINK_MAX_FRAME (64u << 20) /* larger frames are refused: the peer is broken */
#define DLINK_KEY_BYTES 32
#define DLINK_SEAL_TAG 16 /* bytes a sealed frame carries beyond its payload */

struct dlink;

struct dlink_ops {
    /* One frame's payload; valid only during the call. The link may be closed from here. */
    void (*frame)(struct dlink *l, const char *data, size_t len);
    /* Queued bytes were written (dlink_sent() grew). Optional. */
    void (*progress)(struct dlink *l);
    /* The stream ended or broke (`why` says how); the link is freed when this returns. */
    void (*closed)(struct dlink *l, const char *why);
};

/* Once per process, before any link: the loop and its end-of-turn flush. */
void dlink_init(struct ev_loop *loop);

/* Takes a connected non-blocking stream socket. NULL (fd closed) when out of memory. */
struct dlink *dlink_new(int fd, const struct dlink_ops *ops, void *ud);
/*
 * Seals the link from now on (between nodes, ipc/peer.h: peer_detach): every
 * frame queued after this call leaves encrypted and authenticated with
 * k_send (XChaCha20-Poly1305, 16 bytes more per frame), and every frame read
 * after this call must open with k_recv, or the link closes saying so. The
 * n-th frame of a direction is sealed with nonce n, which is never sent:
 * a frame replayed, dropped, reordered, altered or taken from another link
 * does not open. Both keys must be fresh for this link. 0, or -1.
 */
int dlink_seal(struct dlink *l, const unsigned char k_send[DLINK_KEY_BYTES],
               const unsigned char k_recv[DLINK_KEY_BYTES]);
bool dlink_sealed(const struct dlink *l);
/* A sealed link's n-th payload of a direction, sealed in place (buf holds len + DLINK_SEAL_TAG
 * bytes; returns the sealed length) or opened in place (0, or -1: it does not open): for a
 * blocking client of a sealed link (ipc/peer.h: peer_call). */
size_t dlink_seal_payload(const unsigned char key[DLINK_KEY_BYTES], uint64_t n,
                          unsigned char *buf, size_t len);
int dlink_open_payload(const unsigned char key[DLINK_KEY_BYTES], uint64_t n, unsigned char *buf,
                       size_t len, size_t *outlen);
/*
 * For a receiver whose sender may give up on it (a listener whose heartbeats went
 * unanswered): when this process's loop comes back from a stall longer than stall_s (it
 * did not run: SIGSTOP, a blocking call) and finds the peer has closed its end, the data
 * still unread is dropped and the link ends as closed, instead of being run late for a
 * peer that already answered its clients. stall_s must exceed the longest wait of the loop
 * when idle (its shortest periodic timer), so that idleness is never taken for a stall.
 */
void dlink_drop_unread_after_stall(struct dlink *l, double stall_s);
/*
 * How long this process's loop just stalled (did not run: SIGSTOP, a blocking call), in
 * seconds, when it has come back from a stall of more than a second within the last half
 * second; else 0. For any socket's reader (dlink_init's watcher measures it).
 */
double dlink_loop_stall(struct ev_loop *loop);

/* Hands the link to another owner: its frames and end go to ops with ud from now on. */
void dlink_set_ops(struct dlink *l, const struct dlink_ops *ops, void *ud);
void *dlink_ud(const struct dlink *l);
void dlink_set_ud(struct dlink *l, void *ud);
/* Closes the stream now; `closed` is not called. Safe from inside the link's callbacks. */
void dlink_close(struct dlink *l);

/* Queues a whole frame (length prefix included, as dlink_frame_prefix writes it). */
int dlink_send_frame(struct dlink *l, const char *frame, size_t len);
/* Writes a frame's 4-byte length prefix for a payload of n bytes at p. */
void dlink_frame_prefix(char *p, size_t n);
/*
 * Builds a frame in place: dlink_reserve returns where up to max_payload
 * bytes of payload go (NULL: the link is closed, out of memory, or the frame
 * would be too large); dlink_commit queues the first payload_len of them.
 * Nothing else may be queued on the link between the two calls.
 */
char *dlink_reserve(struct dlink *l, size_t max_payload);
void dlink_commit(struct dlink *l, size_t payload_len);

/*
 * Writes what is queued now instead of at the end of the loop turn (what the socket does not
 * take is written when it can): for a sender about to block the loop (a commit's fsync) whose
 * peer can work meanwhile. A write that fails closes the link (its `closed` runs, and the
 * link is freed before this returns): the caller must not use l afterwards.
 */
void dlink_flush(struct dlink *l);
uint64_t dlink_queued(const struct dlink *l); /* bytes queued since the link was made */
uint64_t dlink_sent(const struct dlink *l);   /* bytes of those written to the socket */
size_t dlink_backlog(const struct dlink *l);  /* queued and not yet written */
/* Stops or resumes reading (a sender that floods a peer which does not read its answers). */
void dlink_pause_reading(struct dlink *l, bool pause);

#endif
