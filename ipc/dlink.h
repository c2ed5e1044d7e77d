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

/*
 * Compact records for the hot path, so that neither side builds or parses a
 * JSON header for a plain client message and its plain answer. A frame's
 * first byte tells them apart from an envelope (which starts with '{'):
 *   DLINK_REC_MSG    tok u64, lid u16, transport (u8 length + bytes), session (u8 + bytes), body
 *   DLINK_REC_REPLY  tok u64, status u16, session (u8 length + bytes), body
 * Integers little-endian. Everything else (events, other operations, answers
 * with more than a status and a session) travels as an envelope.
 */
#define DLINK_REC_MSG 0x01
#define DLINK_REC_REPLY 0x02

struct dlink_msg {
    uint64_t tok;
    int lid;
    char tr[16];
    char sid[64];
    const char *body;
    size_t blen;
};
struct dlink_reply {
    uint64_t tok;
    int st;
    char sid[64];
    const char *body;
    size_t blen;
};
/* A DLINK_REC_MSG frame (prefix included) in a malloc'd buffer; sid may be NULL. */
char *dlink_msg_build(uint64_t tok, int lid, const char *tr, const char *sid, const char *body,
                      size_t blen, size_t *len, size_t *body_off);
int dlink_msg_parse(const char *data, size_t len, struct dlink_msg *m); /* 0 or -1 */
/* Queues a DLINK_REC_REPLY; sid may be NULL. */
int dlink_send_reply(struct dlink *l, uint64_t tok, int st, const char *sid, const char *body,
                     size_t blen);
int dlink_reply_parse(const char *data, size_t len, struct dlink_reply *r); /* 0 or -1 */

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
