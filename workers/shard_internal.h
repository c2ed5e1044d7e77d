/* Internal to the shard role: its state, shared by shard.c and shard_durable.c. */
#ifndef CMCP_SHARD_INTERNAL_H
#define CMCP_SHARD_INTERNAL_H

#include <ev.h>
#include <jansson.h>
#include <nng/nng.h>
#include <stdbool.h>
#include <uthash.h>

#include "dlink.h"
#include "ipc.h"
#include "mcp.h"
#include "proc.h"
#include "store.h"

/* Control requests (admin shell, tool runs) a shard serves at once over nng; more wait in
 * nng's queue. Client traffic comes over the listeners' data links, one slot per request. */
#define SHARD_SLOTS 32

struct sess;

/* A listener's data link (ipc/dlink.h). Freed when closed and no slot refers to it. */
struct dpeer {
    struct dlink *dl; /* NULL once closed */
    int refs;
    bool paused;
    struct dpeer *next, *prev;
};

/* A request being served: an nng rep context (control), or a frame from a data link. */
struct slot {
    struct ipc_item item;
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
    struct dpeer *peer; /* the data link it came by; NULL for an nng slot */
    /* while a request is pending (asynchronous) */
    struct sess *sess;
    json_t *rid; /* the request's JSON-RPC id */
    uint64_t dtok; /* the listener's token for it (data slots) */
    int stream; /* 0 until the request first emits */
    int nev;
    int64_t last_seq; /* the last event it published */
    struct slot *next_pending;
    bool stateless; /* a 2026-07-28 request: no session, emits find the slot directly */
    const char *method; /* metric label of the request being served (a static string) */
    /* a 2025-03-26 batch whose asynchronous members are still running */
    json_t *batch;     /* responses so far */
    json_t *batch_ids; /* ids still to answer */
};

struct sess {
    UT_hash_handle hh;
    char id[64];
    mcp_session *ms;
    int next_stream;      /* request streams handed out so far (stream 0 is the GET stream) */
    int64_t seq;          /* the last event's number */
    struct slot *pending; /* requests in progress */
    double last_active;   /* CLOCK_MONOTONIC ms */
    unsigned used;        /* requests after initialize (0 for a session nobody used) */
    bool dirty;           /* changed since it was last written to the store */
    bool in_batch;        /* written in the commit being made */
    bool stored;          /* the store holds a committed version */
    struct sess *next_dirty;
};

/* A reply held until the commit of the changes it acknowledges. */
struct held_reply {
    struct held_reply *next;
    struct slot *sl;
    json_t *hdr, *body;
    struct sess *sess;
    bool mutated; /* its request changed the session */
};

struct shard {
    struct proc_args *a;
    int index;
    struct ev_loop *loop;
    nng_socket rep; /* control: admin shell, tool runs */
    struct ipc_bridge bridge;
    struct slot slots[SHARD_SLOTS];
    int data_fd; /* the listeners' data links connect here */
    ev_io data_w;
    struct dpeer *peers;
    mcp_server *srv;
    struct sess *sessions;
    long nsessions, max_sessions;
    ev_signal sigterm, sigint;
    /* durability */
    struct store *store;
    enum store_durability durability;
    double group_ms, idle_ms, abandoned_ms;
    ev_timer commit_w, sweep_w;
    struct sess *dirty;
    struct held_reply *held, **held_tail;
    long created, expired, abandoned, deleted, recovered, commit_failures;
};

extern struct shard g;

/* shard.c */
struct sess *sess_find(const char *id);
struct sess *sess_insert(const char *id, mcp_session *ms);
void sess_remove(struct sess *s, const char *why);
void slot_send(struct slot *sl, json_t *hdr, json_t *body);
json_t *rpc_error(const json_t *id, int code, const char *msg);

/* shard_durable.c */
int durable_open(char *err, size_t errlen);
void durable_close(void);
/* Sends a reply once the changes before it are committed (hdr and body are stolen). */
void durable_reply(struct slot *sl, json_t *hdr, json_t *body, struct sess *s);
void durable_changed(struct sess *s);
void durable_event(struct sess *s, int stream, int64_t seq, bool final, const char *text);
void durable_forget(struct sess *s);
void durable_flush(void);
/* Events of one stream after `after` as [[stream, seq, text], ...]; *done when it has ended. */
json_t *durable_replay(struct sess *s, int stream, int64_t after, bool *done);
void durable_touch(struct sess *s, const json_t *msg);

#endif
