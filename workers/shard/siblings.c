/*
 * Server-wide change notifications between the shards of a node.
 *
 * Every shard runs its own engine, so a change one of them makes (a tool that
 * updates a resource, a registry change) reaches only the sessions and
 * subscriptions/listen streams of that shard by itself. A node is one server
 * to its clients: a 2026 client's listen stream lands on any shard, and a 2025
 * session subscribed to a resource sits on the shard that holds it. So each
 * shard publishes the changes its engine announces (host op `announce`) on an
 * nng pub bound at ipc://RUN/shard-I-changes.sock, and subscribes to every
 * sibling's; what arrives is delivered with mcp_server_deliver(), which does
 * not announce again (no echo, no loops).
 *
 * A message is "METHOD\nURI" (URI empty for the list_changed methods). pub/sub
 * may drop a message to a sibling that is restarting; a notification is a hint
 * to re-read, and a restarted shard's streams are new streams anyway.
 */
#define CMCP_LAYER_SHARD 1
#include "workers/shard/shard_int.h"

#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "ipc/addr.h"
#include "ipc/stats.h"

#define MAX_URI 2048

struct sib {
    nng_socket sub;
    struct ipc_keep keep;
    ev_io w;
    bool open;
};

static struct {
    bool pub_open;
    nng_socket pub;
    struct sib *subs; /* one per shard index; this shard's own slot stays closed */
    int n;
} B;

static void count(const char *dir, const char *method)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "direction=\"%s\",method=\"%s\"", dir, method);
    stats_counter("cmcp_shard_changes_relayed_total", labels)->value += 1;
}

static void recv_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sib *sb = w->data;
    for (int k = 0; k < 64 && sb->open; k++) {
        char *buf = NULL;
        size_t len = 0;
        if (nng_recv(sb->sub, &buf, &len, NNG_FLAG_ALLOC | NNG_FLAG_NONBLOCK) != 0)
            return;
        char *nl = memchr(buf, '\n', len);
        size_t mlen = nl ? (size_t)(nl - buf) : 0;
        size_t ulen = nl ? len - mlen - 1 : 0;
        char method[64], uri[MAX_URI + 1];
        if (nl && mlen > 0 && mlen < sizeof(method) && ulen <= MAX_URI) {
            memcpy(method, buf, mlen);
            method[mlen] = '\0';
            memcpy(uri, nl + 1, ulen);
            uri[ulen] = '\0';
            if (mcp_server_deliver(shard_g.srv, method, ulen ? uri : NULL) == 0)
                count("in", method);
            else
                log_warn("shard_change_refused", "{s:s,s:s}", "method", method, "reason",
                         "not a server-wide change notification");
        } else {
            log_warn("shard_change_refused", "{s:I,s:s}", "bytes", (json_int_t)len, "reason",
                     "malformed message from a sibling shard");
        }
        nng_free(buf, len);
    }
}

void siblings_announce(const char *method, const char *uri)
{
    if (!B.pub_open || !method)
        return;
    size_t mlen = strlen(method), ulen = uri ? strlen(uri) : 0;
    if (ulen > MAX_URI) {
        log_warn("shard_change_not_relayed", "{s:s,s:I,s:s}", "method", method, "uri_bytes",
                 (json_int_t)ulen, "reason", "URI longer than 2048 bytes");
        return;
    }
    nng_msg *m;
    if (nng_msg_alloc(&m, 0) != 0)
        return;
    if (nng_msg_append(m, method, mlen) != 0 || nng_msg_append(m, "\n", 1) != 0 ||
        (ulen && nng_msg_append(m, uri, ulen) != 0) ||
        nng_sendmsg(B.pub, m, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(m);
        return;
    }
    count("out", method);
}

int siblings_start(char *err, size_t errlen)
{
    if (shard_g.nshards < 2)
        return 0; /* nothing to tell */
    char addr[512];
    int rv;
    ipc_addr_shard_changes(addr, sizeof(addr), shard_g.a->run_dir, shard_g.index);
    if ((rv = nng_pub0_open(&B.pub)) != 0 || (rv = nng_listen(B.pub, addr, NULL, 0)) != 0) {
        snprintf(err, errlen,
                 "shard %d cannot publish its changes at %s: %s (another process holds the run "
                 "directory's socket: is a second node running on the same run_dir?)",
                 shard_g.index, addr, nng_strerror(rv));
        nng_close(B.pub);
        return -1;
    }
    B.pub_open = true;
    B.n = shard_g.nshards;
    B.subs = calloc((size_t)B.n, sizeof(*B.subs));
    if (!B.subs) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < B.n; i++) {
        if (i == shard_g.index)
            continue;
        struct sib *sb = &B.subs[i];
        int fd;
        ipc_addr_shard_changes(addr, sizeof(addr), shard_g.a->run_dir, i);
        if ((rv = nng_sub0_open(&sb->sub)) != 0) {
            snprintf(err, errlen, "shard %d cannot subscribe to shard %d's changes: %s",
                     shard_g.index, i, nng_strerror(rv));
            return -1;
        }
        nng_socket_set(sb->sub, NNG_OPT_SUB_SUBSCRIBE, "", 0);
        ipc_socket_tune(sb->sub);
        if ((rv = nng_socket_get_int(sb->sub, NNG_OPT_RECVFD, &fd)) != 0 ||
            (rv = ipc_keep_dial(&sb->keep, shard_g.loop, sb->sub, addr, NULL, NULL)) != 0) {
            snprintf(err, errlen, "shard %d cannot subscribe to shard %d's changes at %s: %s",
                     shard_g.index, i, addr, nng_strerror(rv));
            nng_close(sb->sub);
            return -1;
        }
        sb->open = true;
        ev_io_init(&sb->w, recv_cb, fd, EV_READ);
        sb->w.data = sb;
        ev_io_start(shard_g.loop, &sb->w);
        ev_unref(shard_g.loop); /* a subscription alone does not keep the loop running */
    }
    return 0;
}

void siblings_stop(void)
{
    for (int i = 0; i < B.n; i++) {
        struct sib *sb = &B.subs[i];
        if (!sb->open)
            continue;
        sb->open = false;
        ev_ref(shard_g.loop);
        ev_io_stop(shard_g.loop, &sb->w);
        ipc_keep_stop(&sb->keep);
        nng_close(sb->sub);
    }
    free(B.subs);
    B.subs = NULL;
    B.n = 0;
    if (B.pub_open) {
        B.pub_open = false;
        nng_close(B.pub);
    }
}
