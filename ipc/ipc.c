#include "ipc/ipc.h"

#include "base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bridge_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct ipc_bridge *b = w->data;
    pthread_mutex_lock(&b->mu);
    struct ipc_item *it = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->mu);
    while (it) {
        struct ipc_item *next = it->next;
        it->run(it);
        it = next;
    }
}

void ipc_bridge_init(struct ipc_bridge *b, struct ev_loop *loop)
{
    b->loop = loop;
    b->head = b->tail = NULL;
    pthread_mutex_init(&b->mu, NULL);
    ev_async_init(&b->async, bridge_cb);
    b->async.data = b;
    ev_async_start(loop, &b->async);
}

void ipc_bridge_post(struct ipc_bridge *b, struct ipc_item *it)
{
    it->next = NULL;
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    pthread_mutex_unlock(&b->mu);
    ev_async_send(b->loop, &b->async);
}

void ipc_socket_tune(nng_socket s)
{
    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 10);
    nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, 200);
}

static void keep_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    struct ipc_keep *k = arg;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        __atomic_add_fetch(&k->pipes, 1, __ATOMIC_SEQ_CST);
        ev_async_send(k->loop, &k->up);
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        __atomic_sub_fetch(&k->pipes, 1, __ATOMIC_SEQ_CST);
    }
}

static void keep_up_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct ipc_keep *k = w->data;
    k->ever_up = true;
    if (k->on_up)
        k->on_up(k->arg);
}

static void keep_check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct ipc_keep *k = w->data;
    double now = ev_now(loop);
    if (__atomic_load_n(&k->pipes, __ATOMIC_SEQ_CST) > 0) {
        if (k->warned)
            log_info("ipc_dial_restored", "{s:s,s:f}", "address", k->addr, "down_s",
                     now - k->down_since);
        k->down_since = 0;
        k->warned = false;
        return;
    }
    if (k->down_since == 0) {
        k->down_since = now;
        k->next_redial = now + IPC_KEEP_REDIAL_S;
        return;
    }
    if (now < k->next_redial)
        return;
    k->next_redial = now + IPC_KEEP_REDIAL_S;
    /* Either the peer is still down (a new dialer fails like the old one would) or nng's
     * dialer stopped trying: a fresh one costs a socket() and a connect(). */
    nng_dialer_close(k->dialer);
    int rv = nng_dial(k->sock, k->addr, &k->dialer, NNG_FLAG_NONBLOCK);
    k->redials++;
    if (!k->warned || rv != 0) {
        /* A peer that has not come up yet (the metrics worker starts after shards that may
         * spend seconds recovering) is routine; losing a connection we had is worth a warning. */
        if (k->ever_up || rv != 0)
            log_warn("ipc_redial", "{s:s,s:f,s:s,s:s}", "address", k->addr, "down_s",
                     now - k->down_since, "result", rv == 0 ? "dialling" : nng_strerror(rv),
                     "effect", "no connection to this peer yet; dialling again with a fresh dialer");
        else
            log_info("ipc_redial", "{s:s,s:f,s:s}", "address", k->addr, "down_s",
                     now - k->down_since, "result", "dialling; the peer has not been reached yet");
    }
    k->warned = true;
}

int ipc_keep_dial(struct ipc_keep *k, struct ev_loop *loop, nng_socket s, const char *addr,
                  void (*on_up)(void *arg), void *arg)
{
    memset(k, 0, sizeof(*k));
    k->loop = loop;
    k->sock = s;
    snprintf(k->addr, sizeof(k->addr), "%s", addr);
    k->on_up = on_up;
    k->arg = arg;
    ev_async_init(&k->up, keep_up_cb);
    k->up.data = k;
    ev_async_start(loop, &k->up);
    ev_timer_init(&k->check, keep_check_cb, 0.5, 0.5);
    k->check.data = k;
    ev_timer_start(loop, &k->check);
    /* Watching a connection does not keep a loop alive. */
    ev_unref(loop);
    ev_unref(loop);
    k->open = true;
    nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, keep_pipe_cb, k);
    nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, keep_pipe_cb, k);
    int rv = nng_dial(s, addr, &k->dialer, NNG_FLAG_NONBLOCK);
    if (rv != 0)
        ipc_keep_stop(k);
    return rv;
}

void ipc_keep_stop(struct ipc_keep *k)
{
    if (!k->open)
        return;
    k->open = false;
    nng_pipe_notify(k->sock, NNG_PIPE_EV_ADD_POST, NULL, NULL);
    nng_pipe_notify(k->sock, NNG_PIPE_EV_REM_POST, NULL, NULL);
    ev_ref(k->loop);
    ev_ref(k->loop);
    ev_timer_stop(k->loop, &k->check);
    ev_async_stop(k->loop, &k->up);
}
