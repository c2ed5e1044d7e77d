/*
 * The wiring between a node's processes (architecture.md, "Wiring"):
 *
 *   listener <-> shard i  data link RUN/shard-i.data           client messages in; events, then
 *                                                                responses out (dlink.h)
 *   admin, toolrun -> shard i  req/rep  ipc://RUN/shard-i.sock  control requests
 *
 * Every message is an envelope: a small JSON header, a newline, then the raw
 * body (a JSON-RPC message, possibly empty). The body is passed through
 * untouched, so only its final consumer parses it.
 */
#ifndef CMCP_IPC_H
#define CMCP_IPC_H

#include <ev.h>
#include <jansson.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

void ipc_shard_req_address(char *buf, size_t len, const char *run_dir, int shard);

/* Builds an envelope message: header (not stolen) + '\n' + body. NULL on allocation failure. */
nng_msg *ipc_envelope(const json_t *header, const char *body, size_t body_len);
/* Splits a received envelope. *header is new (caller decrefs); body points into msg. -1 if malformed. */
int ipc_envelope_parse(nng_msg *msg, json_t **header, const char **body, size_t *body_len);

/*
 * nng completes aios on its own threads; a process's state lives in its libev
 * loop. An ipc_bridge moves completions onto the loop: an aio callback calls
 * ipc_bridge_post(), and the loop later runs the item's handler.
 */
struct ipc_item {
    struct ipc_item *next;
    void (*run)(struct ipc_item *it);
};

struct ipc_bridge {
    struct ev_loop *loop;
    ev_async async;
    pthread_mutex_t mu;
    struct ipc_item *head, *tail;
};

void ipc_bridge_init(struct ipc_bridge *b, struct ev_loop *loop);
void ipc_bridge_post(struct ipc_bridge *b, struct ipc_item *it); /* any thread */

/* Short reconnect times: a restarted peer process is found again in milliseconds. */
void ipc_socket_tune(nng_socket s);

#endif
