/*
 * Links between nodes: TCP streams in length-prefixed frames (ipc/dlink.h),
 * every byte after the handshake sealed with keys derived from the cluster
 * cookie (ipc/auth.h).
 *
 * The dialer proves it holds the cookie first (HELLO, CHALLENGE, AUTH), the
 * acceptor proves it back (WELCOME, which carries the acceptor's identity,
 * sealed); the dialer's first sealed frame carries its own identity. A node
 * with another cookie is refused and logged, never linked. Each connection
 * has keys of its own (fresh nonces from both sides), and every sealed frame
 * a counter that must grow: a frame replayed, reordered, moved from another
 * connection or altered does not open, and the link closes saying why.
 *
 * A sealed frame's plaintext is one channel byte and the channel's bytes.
 * Identity is (node id, incarnation), never an address: DNS answers change.
 */
#ifndef CMCP_IPC_PEER_H
#define CMCP_IPC_PEER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ipc/auth.h"

#define PEER_NODE_ID_MAX 64   /* a node id's bytes, NUL included (cluster/map.h agrees) */
#define PEER_ENDPOINT_MAX 128 /* host:port */

enum peer_channel {
    PEER_HEARTBEAT = 1, /* liveness between monitors: beats and their echoes */
    PEER_RAFT,          /* Raft's messages between failover managers */
    PEER_CONTROL,       /* a node's requests to the leader (join, beats), and the answers */
};

struct peer_ident {
    char node[PEER_NODE_ID_MAX];
    uint64_t incarnation;
    char endpoint[PEER_ENDPOINT_MAX]; /* where it listens for peers, as it advertises it */
};

struct peer_link;
struct dlink;
struct dlink_ops;

struct peer_ops {
    /* The handshake ended: peer_remote() is known. The link may be closed from here. */
    void (*up)(struct peer_link *l);
    /* A sealed frame opened. */
    void (*message)(struct peer_link *l, int channel, const char *data, size_t len);
    /* The link ended (also a handshake that failed); it is freed when this returns. */
    void (*down)(struct peer_link *l, const char *why);
};

struct peer_env {
    struct ev_loop *loop;
    const struct auth_key *key;
    struct peer_ident self;
    const struct peer_ops *ops;
    int listen_fd;
    ev_io accept_w;
    unsigned long refused; /* handshakes refused (wrong cookie, garbage, a timeout) */
};

/* Once per process; dlink_init(loop) must have run. */
void peer_env_init(struct peer_env *env, struct ev_loop *loop, const struct auth_key *key,
                   const struct peer_ident *self, const struct peer_ops *ops);
/* Accepts links on bind_addr:port. 0, or -1 with err. */
int peer_listen(struct peer_env *env, const char *bind_addr, int port, char *err, size_t errlen);
void peer_stop_listening(struct peer_env *env);
/* Dials host:port without blocking; the outcome arrives as up or down. NULL when out of memory. */
struct peer_link *peer_dial(struct peer_env *env, const char *host, int port, void *ud);
/* Queues one sealed frame. 0, or -1 (not up yet, closed, out of memory). */
int peer_send(struct peer_link *l, int channel, const void *data, size_t len);
/* Closes now; `down` is not called. Safe from the link's own callbacks. */
void peer_close(struct peer_link *l);

const struct peer_ident *peer_remote(const struct peer_link *l); /* valid once up */
bool peer_is_up(const struct peer_link *l);
bool peer_dialed(const struct peer_link *l); /* we dialed it (else it dialed us) */
const char *peer_address(const struct peer_link *l); /* host:port as dialed or accepted from */
void *peer_ud(const struct peer_link *l);
/*
 * Hands an up link's stream over as a sealed data link (dlink_seal) with
 * keys derived for it alone from this link's session keys: frames go to ops
 * with ud from now on, and the peer link is freed (`down` is not called).
 * Both sides detach in their `up` callback, before sending anything more,
 * so the first frame after the handshake is the first sealed by the data
 * link (request forwarding uses this: ipc/dlink.h). NULL when not up.
 */
struct dlink *peer_detach(struct peer_link *l, const struct dlink_ops *ops, void *ud);

/*
 * One blocking call to an acceptor that detaches its links (a shard's
 * forward port, workers/shard/forward.c), for processes without a loop of
 * their own to spare (the admin worker): dials host:port, does the
 * handshake as `self`, sends req as the first sealed frame, then hands each
 * sealed frame that comes back to on_frame until it returns non-zero.
 * Everything within timeout_ms. 0, or -1 with a sentence in err.
 */
int peer_call(const struct auth_key *key, const struct peer_ident *self, const char *host,
              int port, const void *req, size_t reqlen,
              int (*on_frame)(void *ud, const char *data, size_t len), void *ud,
              int timeout_ms, char *err, size_t errlen);
void peer_set_ud(struct peer_link *l, void *ud);

#endif
