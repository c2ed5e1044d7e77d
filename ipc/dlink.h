/*
 * The data plane between a node's listeners and its shards: one
 * non-blocking AF_UNIX stream per listener-shard pair (the shard listens on
 * RUN/shard-i.data), carrying envelopes (ipc.h) in length-prefixed frames
 * both ways: requests in; responses and server->client events out, in the
 * order the shard made them.
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
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DLINK_HDR 4
#define DLINK_MAX_FRAME (64u << 20) /* larger frames are refused: the peer is broken */

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
void *dlink_ud(const struct dlink *l);
void dlink_set_ud(struct dlink *l, void *ud);
/* Closes the stream now; `closed` is not called. Safe from inside the link's callbacks. */
void dlink_close(struct dlink *l);

/* Queues an envelope: header (not stolen), '\n', body. 0, or -1 (out of memory, too large). */
int dlink_send(struct dlink *l, const json_t *hdr, const char *body, size_t blen);
/* Queues a frame made by dlink_frame_build (prefix included). */
int dlink_send_frame(struct dlink *l, const char *frame, size_t len);
/* A complete frame (prefix + envelope) in a malloc'd buffer; *body_off says where the body starts. */
char *dlink_frame_build(const json_t *hdr, const char *body, size_t blen, size_t *len,
                        size_t *body_off);

uint64_t dlink_queued(const struct dlink *l); /* bytes queued since the link was made */
uint64_t dlink_sent(const struct dlink *l);   /* bytes of those written to the socket */
size_t dlink_backlog(const struct dlink *l);  /* queued and not yet written */
/* Stops or resumes reading (a sender that floods a peer which does not read its answers). */
void dlink_pause_reading(struct dlink *l, bool pause);

/* Splits an envelope: *hdr is new (caller decrefs), *body points into data. -1 if malformed. */
int dlink_envelope_split(const char *data, size_t len, json_t **hdr, const char **body,
                         size_t *blen);

/* The path of shard i's data socket: RUN/shard-i.data. */
void dlink_shard_path(char *buf, size_t len, const char *run_dir, int shard);
/* Connects to a shard's data socket without blocking: the fd, or -1 with errno. */
int dlink_connect(const char *path);
/* A listening socket at path (a stale file is replaced): the fd, or -1 with errno. */
int dlink_listen(const char *path);

#endif
