/*
 * nng in a libev process: the bridge that moves nng's completions onto the
 * loop, socket tuning, and dials that stay connected. Where each socket
 * lives is ipc/addr.h; what travels on the serving path is ipc/wire.h.
 */
#ifndef CMCP_IPC_H
#define CMCP_IPC_H

#include <ev.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

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

/*
 * A dial that stays connected. nng redials a dropped pipe by itself, but the
 * nng 1.5.2 Debian ships was seen (about one restart in 25 of the metrics
 * worker, docs/operations.md) to leave a dialer with no pipe and no further
 * attempt after its peer was killed: that process's snapshots, or its control
 * orders, then stopped for good. ipc_keep counts the socket's pipes and, when
 * it has had none for IPC_KEEP_REDIAL_S, closes the dialer and dials anew.
 * It owns the socket's ADD_POST and REM_POST pipe notifications; on_up (may be
 * NULL) runs on the loop after a pipe comes up.
 */
#define IPC_KEEP_REDIAL_S 2.0
struct ipc_keep {
    struct ev_loop *loop;
    nng_socket sock;
    nng_dialer dialer;
    char addr[512];
    int pipes;         /* atomic: changed on nng's threads */
    double down_since; /* loop time since which there was no pipe; 0 while connected */
    double next_redial;
    bool warned;       /* this outage was logged */
    bool ever_up;      /* a connection was seen at least once */
    unsigned long redials;
    ev_timer check;
    ev_async up;
    void (*on_up)(void *arg);
    void *arg;
    bool open;
};
/* Dials addr without blocking and keeps it dialled. 0, or an nng error code. */
int ipc_keep_dial(struct ipc_keep *k, struct ev_loop *loop, nng_socket s, const char *addr,
                  void (*on_up)(void *arg), void *arg);
/* Stops watching (before the caller closes the socket). */
void ipc_keep_stop(struct ipc_keep *k);

#endif
