#include "ipc.h"

#include "dlink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ipc_shard_req_address(char *buf, size_t len, const char *run_dir, int shard)
{
    snprintf(buf, len, "ipc://%s/shard-%d.sock", run_dir, shard);
}

nng_msg *ipc_envelope(const json_t *header, const char *body, size_t body_len)
{
    char *h = json_dumps(header, JSON_COMPACT);
    if (!h)
        return NULL;
    size_t hl = strlen(h);
    nng_msg *m;
    if (nng_msg_alloc(&m, hl + 1 + body_len) != 0) {
        free(h);
        return NULL;
    }
    char *p = nng_msg_body(m);
    memcpy(p, h, hl);
    p[hl] = '\n';
    if (body_len)
        memcpy(p + hl + 1, body, body_len);
    free(h);
    return m;
}

int ipc_envelope_parse(nng_msg *msg, json_t **header, const char **body, size_t *body_len)
{
    return dlink_envelope_split(nng_msg_body(msg), nng_msg_len(msg), header, body, body_len);
}

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
