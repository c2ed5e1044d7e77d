/* The [cluster] settings (config.h). */
#define _GNU_SOURCE
#include "cluster/config.h"

#include <ctype.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cluster_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    const char *h = s, *he = colon;
    if (*h == '[') {
        if (he[-1] != ']')
            return -1;
        h++;
        he--;
    }
    if ((size_t)(he - h) >= hostlen)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535)
        return -1;
    memcpy(host, h, (size_t)(he - h));
    host[he - h] = '\0';
    *port = (int)p;
    return 0;
}

uint64_t cluster_raft_id(const char *node_id)
{
    unsigned char h[8];
    crypto_generichash(h, sizeof(h), (const unsigned char *)node_id, strlen(node_id), NULL, 0);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | h[i];
    return v ? v : 1;
}

static bool name_ok(const char *s)
{
    if (!*s || strlen(s) >= MAP_NODE_ID_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_')
            return false;
    return true;
}

/*
 * advertise = auto:PORT: the first address other than loopback that this host's
 * own name resolves to (in a container, the address the engine wrote into
 * /etc/hosts for it: what the other tasks reach it at). 0, or -1 with why.
 */
static int advertise_auto(int port, char *out, size_t outlen, char *why, size_t whylen)
{
    char hn[256] = "";
    if (gethostname(hn, sizeof(hn) - 1) != 0 || !hn[0]) {
        snprintf(why, whylen, "this host has no name to resolve");
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(hn, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(why, whylen, "host name '%s' does not resolve (%s)", hn, gai_strerror(rc));
        return -1;
    }
    int found = -1;
    for (struct addrinfo *ai = res; ai && found != 0; ai = ai->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        if (ai->ai_family == AF_INET) {
            const struct in_addr *a = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            if ((ntohl(a->s_addr) >> 24) == 127)
                continue;
            inet_ntop(AF_INET, a, ip, sizeof(ip));
            snprintf(out, outlen, "%s:%d", ip, port);
            found = 0;
        } else if (ai->ai_family == AF_INET6) {
            const struct in6_addr *a = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_LINKLOCAL(a))
                continue;
            inet_ntop(AF_INET6, a, ip, sizeof(ip));
            snprintf(out, outlen, "[%s]:%d", ip, port);
            found = 0;
        }
    }
    freeaddrinfo(res);
    if (found != 0)
        snprintf(why, whylen, "host name '%s' resolves only to loopback addresses", hn);
    return found;
}

static int bad(struct cfg *c, const char *key, char *err, size_t errlen, const char *fmt,
               const char *v)
{
    char msg[300];
    snprintf(msg, sizeof(msg), fmt, v);
    const struct cfg_entry *e = cfg_find(c, "cluster", key);
    cfg_errorf(c, e, "%s", msg);
    if (!e)
        snprintf(c->err, sizeof(c->err), "[cluster] %s: %s", key, msg);
    snprintf(err, errlen, "%s", c->err);
    return -1;
}

int cluster_conf_load(struct cluster_conf *cc, struct cfg *c, char *err, size_t errlen)
{
    memset(cc, 0, sizeof(*cc));
    char host[256] = "";
    const char *id = cfg_get(c, "cluster", "node_id", "");
    if (!*id) {
        gethostname(host, sizeof(host) - 1);
        id = host;
    }
    if (!name_ok(id))
        return bad(c, "node_id", err, errlen,
                   "'%s' is not a node name (letters, digits, '.', '-', '_'; under 64 bytes)", id);
    snprintf(cc->node_id, sizeof(cc->node_id), "%s", id);
    const char *inc = getenv("CMCP_INCARNATION");
    if (inc && strlen(inc) == 16)
        cc->incarnation = strtoull(inc, NULL, 16);
    if (!cc->incarnation)
        randombytes_buf(&cc->incarnation, sizeof(cc->incarnation));
    const char *bind = cfg_get(c, "cluster", "bind", "");
    if (*bind && cluster_split_hostport(bind, cc->bind_host, sizeof(cc->bind_host),
                                        &cc->bind_port) != 0)
        return bad(c, "bind", err, errlen, "'%s' is not HOST:PORT", bind);
    const char *adv = cfg_get(c, "cluster", "advertise", "");
    char ah[128];
    int ap;
    if (*adv && cluster_split_hostport(adv, ah, sizeof(ah), &ap) != 0)
        return bad(c, "advertise", err, errlen, "'%s' is not HOST:PORT", adv);
    if (*adv && strcmp(ah, "auto") == 0) {
        char why[300], msg[400];
        if (advertise_auto(ap, cc->advertise, sizeof(cc->advertise), why, sizeof(why)) != 0) {
            snprintf(msg, sizeof(msg), "'%%s': %s; give the address the other nodes dial "
                     "(advertise = HOST:PORT)", why);
            return bad(c, "advertise", err, errlen, msg, adv);
        }
    } else if (*adv)
        snprintf(cc->advertise, sizeof(cc->advertise), "%s", adv);
    else if (cc->bind_port && strcmp(cc->bind_host, "0.0.0.0") && strcmp(cc->bind_host, "::") &&
             cc->bind_host[0])
        snprintf(cc->advertise, sizeof(cc->advertise), "%s", bind);
    else if (cc->bind_port) {
        char hn[200] = "localhost";
        gethostname(hn, sizeof(hn) - 1);
        snprintf(cc->advertise, sizeof(cc->advertise), "%s:%d", hn, cc->bind_port);
    }
    char items[CLUSTER_MAX_SEEDS][64];
    const char *seeds = cfg_get(c, "cluster", "seeds", "");
    cc->nseeds = cfg_split_list(seeds, items, CLUSTER_MAX_SEEDS);
    for (int i = 0; i < cc->nseeds; i++) {
        char sh[128];
        int sp;
        if (cluster_split_hostport(items[i], sh, sizeof(sh), &sp) != 0)
            return bad(c, "seeds", err, errlen, "'%s' is not HOST:PORT", items[i]);
        snprintf(cc->seeds[i], sizeof(cc->seeds[i]), "%s", items[i]);
    }
    if (cc->nseeds && !cc->bind_port)
        return bad(c, "seeds", err, errlen, "%s", "seeds need [cluster] bind (this node's own "
                                                  "HOST:PORT for its peers)");
    cc->expect = (int)cfg_get_long(c, "cluster", "bootstrap_expect", 0);
    if (cc->expect == 0)
        cc->expect = cc->bind_port ? 1 + cc->nseeds : 1;
    cc->partitions = (int)cfg_get_long(c, "cluster", "partitions", MAP_DEFAULT_PARTITIONS);
    /* two copies of everything once a cluster has two nodes: a write survives any one loss */
    cc->rf = (int)cfg_get_long(c, "cluster", "replication_factor", 0);
    if (cc->rf == 0)
        cc->rf = cc->bind_port && (cc->nseeds > 0 || cc->expect >= 2) ? 2 : 1;
    if (cc->rf > 1 && !cc->bind_port)
        return bad(c, "replication_factor", err, errlen, "%s",
                   "copies live on other nodes: a replication factor above 1 needs [cluster] "
                   "bind (and peers)");
    /* every member runs as many shards; by default a shard's partitions share their replicas,
     * in two groups at least, so that one node's partitions never all fail over to one member
     * (workers/shard/main.c reads the same default) */
    long shards = cfg_get_long(c, "tree.shard", "count", 1);
    cc->groups = (int)cfg_get_long(c, "cluster", "replica_groups", shards > 2 ? shards : 2);
    cc->voters = (int)cfg_get_long(c, "cluster", "voters", 3);
    const char *st = cfg_get(c, "cluster", "split_brain_strategy", "winner_takes_all");
    cc->strategy = strcmp(st, "oldest_node") == 0         ? SB_OLDEST_NODE
                   : strcmp(st, "configured_master") == 0 ? SB_CONFIGURED_MASTER
                                                          : SB_WINNER_TAKES_ALL;
    snprintf(cc->master, sizeof(cc->master), "%s", cfg_get(c, "cluster", "master", ""));
    if (cc->strategy == SB_CONFIGURED_MASTER && !name_ok(cc->master))
        return bad(c, "master", err, errlen, "%s",
                   "split_brain_strategy = configured_master needs [cluster] master = NODE_ID");
    cc->heartbeat_ms = (double)cfg_get_long(c, "cluster", "heartbeat_ms", 100);
    cc->lease_ms = (double)cfg_get_long(c, "cluster", "lease_ms", 600);
    cc->down_after_ms = (double)cfg_get_long(c, "cluster", "down_after_ms", 700);
    cc->election_ms = (double)cfg_get_long(c, "cluster", "election_ms", 300);
    cc->dns_refresh_ms = (double)cfg_get_long(c, "cluster", "dns_refresh_ms", 2000);
    if (cc->lease_ms < 3 * cc->heartbeat_ms)
        return bad(c, "lease_ms", err, errlen, "%s",
                   "must be at least 3 heartbeats (heartbeat_ms) so that one lost beat does not "
                   "fence the node");
    if (cc->down_after_ms <= cc->lease_ms) {
        /* blame the key that was set, not the default the rule compares it with */
        const struct cfg_entry *d = cfg_find(c, "cluster", "down_after_ms");
        bool dflt = d && d->origin && strcmp(d->origin, "embedded defaults") == 0;
        return bad(c, dflt ? "lease_ms" : "down_after_ms", err, errlen, "%s",
                   dflt ? "must be shorter than down_after_ms: a node is marked down only after "
                          "its lease surely ran out (raise down_after_ms too)"
                        : "must be longer than lease_ms: a node is marked down only after its "
                          "lease surely ran out");
    }
    snprintf(cc->raft_dir, sizeof(cc->raft_dir), "%s/cluster",
             cfg_get(c, "node", "data_dir", "./var/data"));
    snprintf(cc->cookie_file, sizeof(cc->cookie_file), "%s",
             cfg_get(c, "admin", "cookie_file", "./var/cookie"));
    return 0;
}

int cluster_conf_check(struct cfg *c, char *err, size_t errlen)
{
    static struct cluster_conf cc; /* (large: not on the stack) */
    return cluster_conf_load(&cc, c, err, errlen);
}
