/*
 * Requests forwarded from other nodes (docs/cluster.md, "Any node serves any
 * session"). A listener that gets a request for a session whose partition
 * another node owns sends it straight to the owning shard on that node: shard
 * i of every node accepts sealed links at the node's peer port + 1 + shards
 * + i ([cluster] bind). The handshake proves both sides hold the cluster
 * cookie (ipc/peer.h), then the stream is a data link like a local
 * listener's (ipc/dlink.h, sealed): the same wire contract, the same slots,
 * events and replies on the link the request came by. A shard never
 * forwards further: a request for a partition this node does not own is
 * answered 421 (dispatch.c) and the listener refreshes its map and retries
 * once, so a request crosses at most one node boundary.
 */
#define _GNU_SOURCE
#include "workers/shard/shard_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <unistd.h>

#include "base/log.h"
#include "ipc/auth.h"
#include "ipc/dlink.h"
#include "ipc/peer.h"

static struct {
    bool on;
    struct auth_key key;
    struct peer_env env;
} F;

static void fwd_up(struct peer_link *l)
{
    char who[PEER_NODE_ID_MAX + 8];
    snprintf(who, sizeof(who), "%s", peer_remote(l)->node);
    if (links_adopt(l) != 0)
        log_warn("forward_link_refused", "{s:s,s:s}", "peer", who, "why", "out of memory");
    else
        log_info("forward_link_up", "{s:s,s:i}", "peer", who, "shard", shard_g.index);
}

static void fwd_message(struct peer_link *l, int channel, const char *data, size_t len)
{
    (void)l;
    (void)channel;
    (void)data;
    (void)len; /* detached at up: no peer-link frames after the handshake */
}

static void fwd_down(struct peer_link *l, const char *why)
{
    (void)l;
    (void)why; /* a handshake that failed: peer.c logged it with the address */
}

static const struct peer_ops fwd_ops = {fwd_up, fwd_message, fwd_down};

int forward_start(char *err, size_t errlen)
{
    struct cfg *c = &shard_g.a->cfg;
    const char *bind = cfg_get(c, "cluster", "bind", "");
    const char *colon = strrchr(bind, ':');
    if (!bind[0] || !colon)
        return 0; /* no peers: nothing is forwarded here */
    const char *cookie = getenv("CMCP_COOKIE_FILE");
    if (!cookie || !*cookie)
        cookie = cfg_get(c, "admin", "cookie_file", "./var/cookie");
    bool created = false;
    if (auth_cookie_load(cookie, false, &F.key, &created, err, errlen) != 0)
        return -1;
    struct peer_ident me = {0};
    const char *node = cfg_get(c, "cluster", "node_id", "");
    if (!node[0] && gethostname(me.node, sizeof(me.node) - 1) != 0)
        snprintf(me.node, sizeof(me.node), "node");
    else if (node[0])
        snprintf(me.node, sizeof(me.node), "%s", node);
    snprintf(me.endpoint, sizeof(me.endpoint), "shard-%d", shard_g.index);
    peer_env_init(&F.env, shard_g.loop, &F.key, &me, &fwd_ops);
    char host[PEER_ENDPOINT_MAX];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - bind), bind);
    int port = atoi(colon + 1) + 1 + shard_g.nshards + shard_g.index;
    char why[300];
    if (peer_listen(&F.env, host, port, why, sizeof(why)) != 0) {
        snprintf(err, errlen,
                 "cannot take forwarded requests at %s:%d: %s (the node's peer port + 1 + "
                 "shards + shard index must be free; [cluster] bind)",
                 host, port, why);
        return -1;
    }
    F.on = true;
    log_info("forward_serving", "{s:s,s:i,s:i}", "host", host, "port", port, "shard",
             shard_g.index);
    return 0;
}

void forward_stop(void)
{
    if (F.on)
        peer_stop_listening(&F.env);
    F.on = false;
    sodium_memzero(&F.key, sizeof(F.key));
}
