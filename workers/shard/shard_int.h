/*
 * Inside the shard role. One job a file:
 *   main.c      start and stop
 *   links.c     where requests come from and replies go: the listeners' data links and the
 *               control socket (nng), both speaking the wire contract (ipc/wire.h)
 *   dispatch.c  one handler a wire operation; request metrics
 *   host.c      the MCP engine's host: its messages become events and replies
 *   sessions.c  the session table and its cap
 *   gate.c      the ack gate: a reply leaves only once what it acknowledges is durable (and
 *               replicated): commits' replies leave in batches, in commit order
 *   durable.c   the sessions in the store (workers/store): commits, recovery, expiry
 *   replica.c   in a cluster with replicas: a commit's changes to the partitions' in-sync
 *               replicas (their acks release its gate batch), changes from owners into the
 *               store, and sessions in memory following the map's owners
 *   siblings.c  server-wide change notifications (list_changed, resources/updated) passed
 *               to and from the node's other shards
 *   tools.c     external command tools, run under tool_sup
 * The arrows run down that list: nothing below calls back up into what
 * serves a request; the store reports a commit to the gate through the
 * callback the gate gave it, or, with replicas, hands the commit's batch to
 * replica.c, which releases it to the gate once the replicas have it.
 */
#ifndef CMCP_SHARD_INT_H
#define CMCP_SHARD_INT_H

#if !defined(CMCP_LAYER_SHARD)
#error "workers/shard/shard_int.h is internal to the shard role"
#endif

#include <ev.h>
#include <jansson.h>
#include <nng/nng.h>
#include <stdbool.h>
#include <uthash.h>

#include "base/proc.h"
#include "ipc/ipc.h"
#include "ipc/wire.h"
#include "workers/mcp/mcp.h"
#include "workers/shard/shard.h"
#include "workers/store/store.h"

/* Control requests (admin shell, tool runs) a shard serves at once over nng; more wait in
 * nng's queue. Client traffic comes over the listeners' data links, one slot per request. */
#define SHARD_SLOTS 32

struct sess;
struct dlink;

/* A listener's data link (ipc/dlink.h). Freed when closed and no slot refers to it. */
struct dpeer {
    struct dlink *dl; /* NULL once closed */
    int refs;
    bool paused;
    bool remote; /* a listener of another node (forward.c) */
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
    json_t *rid;   /* the request's JSON-RPC id */
    uint64_t dtok; /* the listener's token for it (data slots) */
    int stream;    /* 0 until the request first emits */
    int nev;
    int64_t last_seq; /* the last event it published */
    struct slot *next_pending;
    bool stateless;     /* a 2026-07-28 request: no session, emits find the slot directly */
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
    /* Standalone (stream 0) events up to this number were offered to a GET stream: a GET
     * without Last-Event-ID replays only what comes after, so no message is delivered on
     * two standalone streams (a client that lost one resumes it with Last-Event-ID). */
    int64_t std_offered;
    bool std_open; /* a GET stream was opened: new standalone events go to it live */
    struct slot *pending; /* requests in progress */
    double last_active;   /* CLOCK_MONOTONIC ms */
    unsigned used;        /* requests after initialize (0 for a session nobody used) */
    bool dirty;           /* changed since it was last written to the store */
    bool in_batch;        /* written in the commit being made */
    bool stored;          /* the store holds a committed version */
    struct sess *next_dirty;
};

struct shard_state {
    struct proc_args *a;
    int index, nshards;
    int replica_groups; /* [cluster] replica_groups: partitions p, p + groups, ... share replicas */
    struct ev_loop *loop;
    struct ipc_bridge bridge;
    mcp_server *srv;
    struct sess *sessions;
    long nsessions, max_sessions;
    long created, expired, abandoned, deleted, recovered;
};
extern struct shard_state shard_g;

/* links.c */
int links_start(char *err, size_t errlen);
void links_stop(void);
struct peer_link;
/* Serves a listener of another node on an up peer link (forward.c); 0, or -1 (closed). */
int links_adopt(struct peer_link *pl);

/* forward.c: sealed links from other nodes' listeners ([cluster] bind) */
int forward_start(char *err, size_t errlen);
void forward_stop(void);

/* siblings.c: server-wide change notifications to and from the node's other shards. */
int siblings_start(char *err, size_t errlen);
void siblings_stop(void);
void siblings_announce(const char *method, const char *uri);

/* Sends a reply now, on the link or the control socket the request came by; a data slot
 * ends with it. */
void links_reply(struct slot *sl, const struct wire_reply *r);
/* A request resumed on another link (a Last-Event-ID resume at another listener or node):
 * run's events and reply go by the link `to` came by, under tok, from now on; the link it
 * came by is told (a reply with `followed`, no response). False if either is no data link. */
bool links_move(struct slot *run, const struct slot *to, uint64_t tok);
/* An event: on the link of the request sl serves, or on every link when sl is NULL. */
void links_event(struct slot *sl, struct wire_event *e);

/* dispatch.c */
void shard_dispatch(struct slot *sl, const struct wire_req *req);
/*
 * Every reply goes through here: counted, then held by the gate until what
 * it acknowledges is durable. r->data and body are stolen; s is the session
 * the request changed, or NULL.
 */
void shard_reply(struct slot *sl, struct wire_reply *r, json_t *body, struct sess *s);
json_t *shard_rpc_error(const json_t *id, int code, const char *msg);

/* host.c */
extern const struct mcp_host_ops shard_host_ops;
/* A request's bookkeeping in its session (pending list, its stream). */
void pending_add(struct sess *s, struct slot *sl, const json_t *rid);
void pending_remove(struct slot *sl);
/* A request is over: its stream's final event and its reply's stream fields. */
void request_end(struct sess *s, struct slot *sl, struct wire_reply *r, const json_t *resp);

/* sessions.c */
struct sess *sess_find(const char *id);
struct sess *sess_find_client(const char *id); /* NULL for a task's home too */
struct sess *sess_insert(const char *id, mcp_session *ms);
/* A new session for an initialize (or OPEN), or NULL after answering why not (the cap). */
struct sess *sess_create(struct slot *sl, const json_t *rid);
mcp_session *sess_task_home(void); /* a durable session for one 2026 task (sessions.c) */
/* Ends a session: its requests in flight end without an answer. */
void sess_remove(struct sess *s, const char *why);
void sess_drop_all(void);
/* Out of memory only (this node no longer owns its partition; the store keeps it). */
void sess_unload(struct sess *s);

/* gate.c: the ack gate */
struct gbatch;
/* The replies held so far belong to the commit being made: a batch, released in order. NULL
 * when out of memory (gate_ready(NULL) then lets what is held go once nothing is ahead). */
struct gbatch *gate_seal(void);
/* The commit failed: replies whose request changed a session in it become errors saying why. */
void gate_fail(struct gbatch *b, const char *why);
/* Its outcome is unknown (saved here, perhaps not on the copies): every reply of a request
 * that changed a session says so. */
void gate_unknown(struct gbatch *b, const char *why);
/* b may go: it leaves once every batch sealed before it has. */
void gate_ready(struct gbatch *b);
void gate_reply(struct slot *sl, struct wire_reply *r, json_t *body, struct sess *s);
/* A commit ended (rc 0, or -errno with the sentence a client reads: what failed, that it was
 * not applied, what to do); held replies go. */
void gate_committed(int rc, const char *why);
/* A session ends: replies held for it no longer refer to it. */
void gate_forget(struct sess *s);
bool gate_holding(void);

/* durable.c */
int durable_open(void (*committed)(int rc, const char *why), char *err, size_t errlen);
void durable_close(void);
/* True while changes wait for a commit (a reply sent now would run ahead of them). */
bool durable_pending(void);
/* Commits soon: at the end of this loop turn, or after the group window. */
void durable_commit_soon(void);
void durable_changed(struct sess *s);
void durable_event(struct sess *s, int stream, int64_t seq, bool final, const char *text);
void durable_forget(struct sess *s);
/* Off the list of sessions waiting for a commit (it leaves memory, not the store). */
void durable_unlist(struct sess *s);
void durable_flush(void);
/* Events of one stream after `after` as [[stream, seq, text], ...]; *done when it has ended. */
json_t *durable_replay(struct sess *s, int stream, int64_t after, bool *done);
/* [[partition, epoch, seq, "chain"], ...] of every partition this shard's store holds. */
json_t *durable_positions(void);
void durable_touch(struct sess *s, const json_t *msg);
/* A stored session back into memory (recovery, a promotion). */
void durable_restore(const char *sid, json_t *rec);

/* replica.c */
int repl_start(struct store *st, char *err, size_t errlen);
void repl_stop(void);
/* Whether commits are replicated (the map's replication factor is above 1). */
bool repl_active(void);
/* Before store_commit: the staged writes as changes (kept until repl_send or abort). 0, or
 * -ESTALE when this node lost a partition it wrote. */
int repl_collect(struct store *st);
void repl_collect_abort(void);
/* Still before store_commit: the collected changes leave for the replicas now, so that they
 * write while this node does. Then exactly one of: */
void repl_send(void);
/* the commit succeeded: b goes once the in-sync replicas have its changes (sync); */
void repl_round(struct gbatch *b);
/* the commit failed: the replicas may have the changes; its writes' outcome is unknown. */
void repl_round_dropped(void);
/* Commits the changes replicas of this node staged this loop turn and answers their owners:
 * before this node stages anything of its own (durable.c), so a commit is one or the other. */
void repl_apply_now(void);
/* The map changed: sessions in memory follow ownership; waiting commits are checked again. */
void repl_map_changed(void);

#endif
