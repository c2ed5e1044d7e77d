/* What the cluster roles share (cluster_int.h). */
#include "cluster/cluster_int.h"

#include <jansson.h>
#include <nng/protocol/pubsub0/pub.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/control.h"
#include "ipc/dlink.h"
#include "ipc/stats.h"

char *relay_frame(int kind, const char *node, const void *payload, size_t len, size_t *flen)
{
    size_t nl = strlen(node);
    if (nl > 63)
        return NULL;
    size_t n = 2 + nl + len;
    char *f = malloc(DLINK_HDR + n);
    if (!f)
        return NULL;
    dlink_frame_prefix(f, n);
    f[DLINK_HDR] = (char)kind;
    f[DLINK_HDR + 1] = (char)nl;
    memcpy(f + DLINK_HDR + 2, node, nl);
    memcpy(f + DLINK_HDR + 2 + nl, payload, len);
    *flen = DLINK_HDR + n;
    return f;
}

int relay_parse(const char *data, size_t len, int *kind, char node[64], const char **payload,
                size_t *plen)
{
    if (len < 2)
        return -1;
    size_t nl = (unsigned char)data[1];
    if (nl > 63 || len < 2 + nl)
        return -1;
    *kind = (unsigned char)data[0];
    memcpy(node, data + 2, nl);
    node[nl] = '\0';
    *payload = data + 2 + nl;
    *plen = len - 2 - nl;
    return 0;
}

int cluster_pub_open(nng_socket *s, const char *addr)
{
    int rv = nng_pub0_open(s);
    if (rv == 0 && (rv = nng_listen(*s, addr, NULL, 0)) != 0)
        nng_close(*s);
    return rv;
}

static void subscriber_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    (void)ev;
    ev_async *w = arg;
    ev_async_send((struct ev_loop *)w->data, w);
}

void cluster_pub_on_subscriber(nng_socket s, struct ev_loop *loop, ev_async *w,
                               void (*republish)(struct ev_loop *, ev_async *, int))
{
    ev_async_init(w, republish);
    w->data = loop;
    ev_async_start(loop, w);
    ev_unref(loop); /* it alone does not keep the loop running */
    nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, subscriber_added, w);
}

void cluster_publish(nng_socket s, const char *topic, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return;
    size_t tl = strlen(topic), bl = strlen(text);
    char *m = malloc(tl + 1 + bl);
    if (m) {
        memcpy(m, topic, tl);
        m[tl] = ' ';
        memcpy(m + tl + 1, text, bl);
        nng_send(s, m, tl + 1 + bl, NNG_FLAG_NONBLOCK);
        free(m);
    }
    free(text);
}

static ev_signal sigterm_w, sigint_w;

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

int cluster_role_start(struct proc_args *a, const char *role, struct cluster_conf *cc,
                       struct ev_loop **loop)
{
    char err[600];
    if (cluster_conf_load(cc, &a->cfg, err, sizeof(err)) != 0) {
        log_error("cluster_start_failed", "{s:s,s:s}", "role", role, "error", err);
        fprintf(stderr, "cmcpd: %s: configuration error: %s\n", role, err);
        return CMCP_EXIT_USAGE;
    }
    *loop = ev_default_loop(EVFLAG_SIGNALFD);
    stats_init(*loop, a->run_dir, role, a->id);
    control_subscribe(*loop, a->run_dir, NULL);
    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(*loop, &sigterm_w);
    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_start(*loop, &sigint_w);
    return 0;
}

void cluster_role_stop(void)
{
    control_unsubscribe();
    stats_shutdown();
}
