/*
 * Role `cluster_monitor`: this node's links to the others (cluster/peer.h)
 * and what it hears over them.
 *
 * It dials the seeds (names re-resolved every dns_refresh_ms: addresses
 * change, and a name may stand for many tasks) and every member the map
 * names, and takes the links others dial. Every heartbeat_ms it sends a beat
 * on one link to each peer, carrying its send time, the peers it suspects
 * and its map's version and hash; a peer echoes the time, which gives the
 * round trip. A peer is healthy when heard within 3 heartbeats, degraded
 * until down_after_ms, then unhealthy: suspected. The view (every peer, how
 * long since it was heard, its round trip, whom it suspects) is published
 * every heartbeat for the failover manager and the split-brain detector.
 *
 * It also relays the failover manager's Raft and control messages to and
 * from the peers (cluster_int.h), so that one port carries everything
 * between two nodes, sealed.
 */
#define _GNU_SOURCE
#include "cluster/cluster_int.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/peer.h"

#include "cluster/resolve.h"
#include "ipc/addr.h"
#include "ipc/auth.h"
#include "ipc/cview.h"
#include "ipc/dlink.h"
#include "ipc/sock.h"
#include "ipc/stats.h"

_Static_assert(MAP_NODE_ID_MAX == PEER_NODE_ID_MAX && MAP_ENDPOINT_MAX == PEER_ENDPOINT_MAX,
               "a node id or endpoint must fit the same buffers in the map and on peer links");

#define MAX_PEERS 128
#define MAX_TARGETS 256

struct peer {
    char id[MAP_NODE_ID_MAX];
    uint64_t inc;
    char endpoint[MAP_ENDPOINT_MAX];
    double heard;      /* when we last heard it (monotonic ms), 0: never */
    double first_seen; /* when it first appeared (map or link), for suspicion of the never-heard */
    double rtt;        /* ms, smoothed */
    json_t *suspects;  /* whom it suspects, as it said last */
    uint64_t map_version;
    char map_hash[17];
    struct peer_link *link; /* the link beats go on (ours if we have one) */
    bool left;              /* it left the cluster: expected no more */
};

struct target {
    char addr[MAP_ENDPOINT_MAX]; /* host:port as resolved */
    char host[128];
    int port;
    bool from_seed, from_map, seen; /* seen: still named by a seed or the map this round */
    bool is_self;
    struct peer_link *link;
    double next_try, backoff;
};

static struct {
    struct proc_args *a;
    struct cluster_conf cc;
    struct ev_loop *loop;
    struct auth_key key;
    struct peer_env env;
    struct peer peers[MAX_PEERS];
    int npeers;
    struct target targets[MAX_TARGETS];
    int ntargets;
    struct peer_link *links[2 * MAX_PEERS]; /* every link that is up */
    int nlinks;
    ev_timer hb_w, dial_w;
    nng_socket view_pub;
    ev_async newsub_w; /* a subscriber connected to view_pub */
    /* the relay to the failover manager */
    int relay_fd;
    char relay_path[512];
    struct sock_acceptor relay_acc;
    struct dlink *relay;
    struct stats_metric *rtt_hist, *heard_peers;
} MON = {.relay_fd = -1};

static struct peer *peer_get(const char *id, bool create)
{
    for (int i = 0; i < MON.npeers; i++)
        if (strcmp(MON.peers[i].id, id) == 0)
            return &MON.peers[i];
    if (!create || MON.npeers == MAX_PEERS || strcmp(id, MON.cc.node_id) == 0)
        return NULL;
    struct peer *p = &MON.peers[MON.npeers++];
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    p->first_seen = cmcp_now_ms();
    return p;
}

static const char *health(const struct peer *p, double now)
{
    if (!p->heard)
        return "unknown";
    double ago = now - p->heard;
    return ago < 3 * MON.cc.heartbeat_ms ? "healthy"
           : ago < MON.cc.down_after_ms  ? "degraded"
                                         : "unhealthy";
}

/* Peers not heard for down_after_ms: the ones this node accuses. A node that hears nobody
 * accuses no one (Lifeguard: it suspects itself first). */
static json_t *my_suspects(double now)
{
    json_t *a = json_array();
    int heard = 0;
    for (int i = 0; i < MON.npeers; i++)
        heard += MON.peers[i].heard && now - MON.peers[i].heard < MON.cc.down_after_ms;
    for (int i = 0; i < MON.npeers && (heard > 0 || MON.npeers == 0); i++) {
        const struct peer *p = &MON.peers[i];
        double since = p->heard ? p->heard : p->first_seen;
        if (!p->left && now - since >= MON.cc.down_after_ms)
            json_array_append_new(a, json_string(p->id));
    }
    return a;
}

/* ---- links ---- */

static char *beat_text(double now);

static struct target *target_of_link(struct peer_link *l)
{
    for (int i = 0; i < MON.ntargets; i++)
        if (MON.targets[i].link == l)
            return &MON.targets[i];
    return NULL;
}

static void link_up(struct peer_link *l)
{
    const struct peer_ident *id = peer_remote(l);
    struct target *t = target_of_link(l);
    if (strcmp(id->node, MON.cc.node_id) == 0) {
        /* a seed that is this node itself: not dialed again */
        if (t)
            t->is_self = true, t->link = NULL;
        peer_close(l);
        return;
    }
    struct peer *p = peer_get(id->node, true);
    if (!p || MON.nlinks == 2 * MAX_PEERS) {
        peer_close(l);
        return;
    }
    MON.links[MON.nlinks++] = l;
    p->left = false;
    p->inc = id->incarnation;
    snprintf(p->endpoint, sizeof(p->endpoint), "%s", id->endpoint);
    /* beats go on a link we dialed when there is one: both ends then agree on little */
    if (!p->link || (peer_dialed(l) && !peer_dialed(p->link)))
        p->link = l;
    /* a first beat now, not at the next period: a new link makes its peer healthy (and a new
     * cluster formable) within a round trip */
    char *txt = beat_text(cmcp_now_ms());
    if (txt)
        peer_send(l, PEER_HEARTBEAT, txt, strlen(txt));
    free(txt);
}

static void link_down(struct peer_link *l, const char *why)
{
    (void)why;
    struct target *t = target_of_link(l);
    if (t) {
        t->link = NULL;
        t->backoff = t->backoff ? (t->backoff * 2 > 1000 ? 1000 : t->backoff * 2) : 50;
        t->next_try = cmcp_now_ms() + t->backoff;
    }
    for (int i = 0; i < MON.nlinks; i++)
        if (MON.links[i] == l) {
            MON.links[i] = MON.links[--MON.nlinks];
            break;
        }
    for (int i = 0; i < MON.npeers; i++) {
        struct peer *p = &MON.peers[i];
        if (p->link != l)
            continue;
        p->link = NULL; /* another link to the same node carries the beats from now on */
        for (int k = 0; k < MON.nlinks && !p->link; k++)
            if (strcmp(peer_remote(MON.links[k])->node, p->id) == 0)
                p->link = MON.links[k];
    }
}

static void relay_to_manager(int kind, const char *from, const char *data, size_t len)
{
    if (!MON.relay)
        return;
    size_t fl;
    char *f = relay_frame(kind, from, data, len, &fl);
    if (f)
        dlink_send_frame(MON.relay, f, fl);
    free(f);
}

static void publish_view(double now);

static void link_message(struct peer_link *l, int channel, const char *data, size_t len)
{
    const struct peer_ident *id = peer_remote(l);
    struct peer *p = peer_get(id->node, true);
    if (!p)
        return;
    double now = cmcp_now_ms();
    if (channel == PEER_RAFT || channel == PEER_CONTROL) {
        relay_to_manager(channel, id->node, data, len);
        return;
    }
    if (channel != PEER_HEARTBEAT)
        return;
    /* a peer that becomes healthy reaches the failover manager now, not a period later */
    bool was_healthy = strcmp(health(p, now), "healthy") == 0;
    json_t *o = json_loadb(data, len, 0, NULL);
    json_t *t = json_object_get(o, "t");
    if (json_is_true(json_object_get(o, "echo"))) {
        double rtt = now - json_number_value(t);
        if (rtt >= 0) {
            p->rtt = p->rtt ? 0.8 * p->rtt + 0.2 * rtt : rtt;
            stats_observe(MON.rtt_hist, rtt / 1000.0);
        }
        p->heard = now;
    } else if (json_is_number(t)) {
        p->heard = now;
        p->inc = id->incarnation;
        json_t *sus = json_object_get(o, "sus");
        /* a peer's new accusation reaches the failover manager now, not a heartbeat later */
        bool news = json_is_array(sus) && json_array_size(sus) > 0 &&
                    !(p->suspects && json_equal(p->suspects, sus));
        json_decref(p->suspects);
        p->suspects = json_incref(sus);
        if (news)
            publish_view(now);
        p->map_version = (uint64_t)json_integer_value(json_object_get(o, "mv"));
        snprintf(p->map_hash, sizeof(p->map_hash), "%s",
                 json_string_value(json_object_get(o, "mh")) ?: "");
        json_t *echo = json_pack("{s:O,s:b}", "t", t, "echo", 1);
        char *txt = json_dumps(echo, JSON_COMPACT);
        if (txt)
            peer_send(l, PEER_HEARTBEAT, txt, strlen(txt));
        free(txt);
        json_decref(echo);
    }
    json_decref(o);
    if (!was_healthy && strcmp(health(p, now), "healthy") == 0)
        publish_view(now);
}

static const struct peer_ops link_ops = {link_up, link_message, link_down};

/* ---- targets: seeds and members ---- */

static struct target *target_add(const char *host, int port)
{
    char addr[MAP_ENDPOINT_MAX];
    snprintf(addr, sizeof(addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    for (int i = 0; i < MON.ntargets; i++)
        if (strcmp(MON.targets[i].addr, addr) == 0)
            return &MON.targets[i];
    struct target *t = NULL;
    if (MON.ntargets < MAX_TARGETS)
        t = &MON.targets[MON.ntargets++];
    /* addresses come and go (tasks of a swarm): once full, a slot no seed or member names and
     * with no link is taken again */
    for (int i = 0; i < MON.ntargets && !t; i++)
        if (!MON.targets[i].from_seed && !MON.targets[i].from_map && !MON.targets[i].link)
            t = &MON.targets[i];
    if (!t)
        return NULL;
    memset(t, 0, sizeof(*t));
    snprintf(t->addr, sizeof(t->addr), "%s", addr);
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->port = port;
    return t;
}

/* Seeds are names: each stands for every address it resolves to now (cluster/resolve.h). */
static void resolve_seeds(void)
{
    for (int i = 0; i < MON.ntargets; i++)
        MON.targets[i].from_seed = false;
    for (int s = 0; s < MON.cc.nseeds; s++) {
        char host[128], addrs[RESOLVE_MAX_ADDRS][RESOLVE_ADDR_MAX];
        int port;
        if (cluster_split_hostport(MON.cc.seeds[s], host, sizeof(host), &port) != 0)
            continue;
        int n = resolve_lookup(host, addrs, RESOLVE_MAX_ADDRS);
        for (int k = 0; k < n; k++) {
            struct target *t = target_add(addrs[k], port);
            if (t)
                t->from_seed = true;
        }
    }
}

static void map_members(void)
{
    const struct cview *v = cview_get();
    for (int i = 0; i < MON.ntargets; i++)
        MON.targets[i].from_map = false;
    size_t i;
    json_t *n;
    json_array_foreach(v->nodes, i, n)
    {
        const char *id = json_string_value(json_object_get(n, "id"));
        const char *ep = json_string_value(json_object_get(n, "endpoint"));
        const char *state = json_string_value(json_object_get(n, "state"));
        if (!id || !ep || strcmp(id, MON.cc.node_id) == 0 || !state || strcmp(state, "left") == 0 ||
            !ep[0])
            continue;
        struct peer *p = peer_get(id, true); /* a member we never heard is suspected in time */
        if (p && !p->endpoint[0])
            snprintf(p->endpoint, sizeof(p->endpoint), "%s", ep);
        char host[128], addrs[RESOLVE_MAX_ADDRS][RESOLVE_ADDR_MAX];
        int port;
        if (cluster_split_hostport(ep, host, sizeof(host), &port) != 0)
            continue;
        /* a member advertises one address: its name's first answer */
        if (resolve_lookup(host, addrs, RESOLVE_MAX_ADDRS) < 1)
            continue;
        struct target *t = target_add(addrs[0], port);
        if (t)
            t->from_map = true;
    }
    /* members that left are no longer expected */
    json_array_foreach(v->nodes, i, n)
    {
        const char *state = json_string_value(json_object_get(n, "state"));
        struct peer *p = peer_get(json_string_value(json_object_get(n, "id")) ?: "", false);
        if (p && state)
            p->left = strcmp(state, "left") == 0;
    }
}

static void dial_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    double now = cmcp_now_ms();
    for (int i = 0; i < MON.ntargets; i++) {
        struct target *t = &MON.targets[i];
        if (t->link || t->is_self || (!t->from_seed && !t->from_map) || now < t->next_try)
            continue;
        /* a member already linked through another address needs no second link */
        bool linked = false;
        for (int k = 0; k < MON.npeers && !linked; k++)
            linked = MON.peers[k].link && strcmp(MON.peers[k].endpoint, t->addr) == 0;
        if (linked)
            continue;
        t->link = peer_dial(&MON.env, t->host, t->port, NULL);
        t->next_try = now + (t->backoff ? t->backoff : 50);
    }
}

static void names_resolved(void)
{
    resolve_seeds();
    map_members();
}

/* ---- beats and the view ---- */

/* The view for the failover manager and the split-brain detector. */
static void publish_view(double now)
{
    json_t *sus = my_suspects(now);
    json_t *peers = json_array();
    int heard = 0;
    for (int i = 0; i < MON.npeers; i++) {
        struct peer *p = &MON.peers[i];
        const char *h = health(p, now);
        heard += strcmp(h, "healthy") == 0;
        char inc[17];
        snprintf(inc, sizeof(inc), "%016llx", (unsigned long long)p->inc);
        json_array_append_new(
            peers, json_pack("{s:s,s:s,s:s,s:s,s:f,s:f,s:o,s:I,s:s,s:b}", "id", p->id, "inc", inc,
                             "endpoint", p->endpoint, "health", h, "heard_ago_ms",
                             p->heard ? now - p->heard : -1.0, "rtt_ms", p->rtt, "suspects",
                             p->suspects ? json_incref(p->suspects) : json_array(), "map_version",
                             (json_int_t)p->map_version, "map_hash", p->map_hash, "linked",
                             p->link != NULL));
    }
    MON.heard_peers->value = heard;
    cluster_publish(MON.view_pub, "view",
                    json_pack("{s:s,s:f,s:o,s:o,s:i}", "self", MON.cc.node_id, "at", now, "peers",
                              peers, "suspects", sus, "refused", (int)MON.env.refused));
}

/* A liveness beat: its send time, whom this node suspects, the map it holds (malloc'd). */
static char *beat_text(double now)
{
    const struct cview *v = cview_get();
    json_t *beat = json_pack("{s:f,s:o,s:I,s:s}", "t", now, "sus", my_suspects(now), "mv",
                             (json_int_t)v->version, "mh", v->hash);
    char *txt = json_dumps(beat, JSON_COMPACT);
    json_decref(beat);
    return txt;
}

static void hb_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    double now = cmcp_now_ms();
    char *txt = beat_text(now);
    for (int i = 0; i < MON.npeers; i++) {
        struct peer *p = &MON.peers[i];
        if (p->link && txt)
            peer_send(p->link, PEER_HEARTBEAT, txt, strlen(txt));
    }
    free(txt);
    /* Alone (no peer known: a one-node cluster, or a first node waiting for the others), the
     * view says the same every beat: it goes again after a second, or at once when something
     * in it changed (a peer appears or is refused), not every heartbeat. With peers it goes
     * every beat, as their health and accusations are what the failover manager acts on. */
    static double alone_at;
    static unsigned long alone_refused;
    if (MON.npeers == 0 && MON.env.refused == alone_refused && now - alone_at < 1000.0)
        return;
    alone_at = MON.npeers == 0 ? now : 0;
    alone_refused = MON.env.refused;
    publish_view(now);
}

/* a failover manager or detector (re)started: the view now, not at the next beat */
static void view_subscribed(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    publish_view(cmcp_now_ms());
}

/* ---- the relay ---- */

static void relay_frame_in(struct dlink *dl, const char *data, size_t len)
{
    (void)dl;
    int kind;
    char node[64];
    const char *payload;
    size_t plen;
    if (relay_parse(data, len, &kind, node, &payload, &plen) != 0)
        return;
    struct peer *p = peer_get(node, false);
    if (p && p->link)
        peer_send(p->link, kind, payload, plen); /* no link: dropped, as a lost message */
}

static void relay_closed(struct dlink *dl, const char *why)
{
    (void)why;
    if (MON.relay == dl)
        MON.relay = NULL;
}

static const struct dlink_ops relay_ops = {relay_frame_in, NULL, relay_closed};

static void relay_accepted(struct sock_acceptor *a, int fd)
{
    (void)a;
    if (MON.relay)
        dlink_close(MON.relay); /* a restarted manager replaces the old link */
    MON.relay = dlink_new(fd, &relay_ops, NULL);
}

static void on_map(void)
{
    map_members();
}

int cluster_monitor_main(struct proc_args *a)
{
    MON.a = a;
    int rc = cluster_role_start(a, "cluster_monitor", &MON.cc, &MON.loop);
    if (rc != 0)
        return rc;
    dlink_init(MON.loop);
    MON.rtt_hist = stats_histogram("cmcp_cluster_heartbeat_rtt_seconds", "");
    MON.heard_peers = stats_gauge("cmcp_cluster_peers_healthy", "");
    char addr[512], err[300];
    ipc_addr_cluster_view(addr, sizeof(addr), a->run_dir);
    int rv = cluster_pub_open(&MON.view_pub, addr);
    if (rv == 0)
        cluster_pub_on_subscriber(MON.view_pub, MON.loop, &MON.newsub_w, view_subscribed);
    ipc_addr_cluster_relay(MON.relay_path, sizeof(MON.relay_path), a->run_dir);
    MON.relay_fd = rv == 0 ? sock_unix_listen(MON.relay_path) : -1;
    if (rv != 0 || MON.relay_fd < 0) {
        log_error("cluster_start_failed", "{s:s,s:s}", "role", "cluster_monitor", "error",
                  rv ? nng_strerror(rv) : strerror(errno));
        return CMCP_EXIT_FAILURE;
    }
    sock_acceptor_start(&MON.relay_acc, MON.loop, MON.relay_fd, 4, relay_accepted, NULL);
    cview_subscribe(MON.loop, a->run_dir, on_map);
    if (MON.cc.bind_port) {
        bool created = false;
        if (auth_cookie_load(MON.cc.cookie_file, true, &MON.key, &created, err, sizeof(err)) != 0) {
            log_error("cluster_start_failed", "{s:s,s:s}", "role", "cluster_monitor", "error", err);
            fprintf(stderr, "cmcpd: cluster_monitor: %s\n", err);
            return CMCP_EXIT_USAGE;
        }
        if (created)
            log_warn("cluster_cookie_created", "{s:s,s:s}", "path", MON.cc.cookie_file, "effect",
                     "a new cookie: other nodes join this one only if they share this file");
        struct peer_ident self = {{0}, MON.cc.incarnation, {0}};
        snprintf(self.node, sizeof(self.node), "%s", MON.cc.node_id);
        snprintf(self.endpoint, sizeof(self.endpoint), "%s", MON.cc.advertise);
        peer_env_init(&MON.env, MON.loop, &MON.key, &self, &link_ops);
        if (peer_listen(&MON.env, MON.cc.bind_host, MON.cc.bind_port, err, sizeof(err)) != 0) {
            log_error("cluster_listen_failed", "{s:s,s:i,s:s,s:s}", "bind", MON.cc.bind_host,
                      "port", MON.cc.bind_port, "error", err, "hint",
                      "another program holds the port: free it or set [cluster] bind");
            fprintf(stderr, "cmcpd: cluster_monitor: cannot listen for peers on %s:%d: %s\n",
                    MON.cc.bind_host, MON.cc.bind_port, err);
            return CMCP_EXIT_FAILURE;
        }
        resolve_init(MON.loop, MON.cc.dns_refresh_ms / 1000.0, names_resolved);
        resolve_seeds();
        ev_timer_init(&MON.dial_w, dial_cb, 0, 0.05);
        ev_timer_start(MON.loop, &MON.dial_w);
    }
    ev_timer_init(&MON.hb_w, hb_cb, 0, MON.cc.heartbeat_ms / 1000.0);
    ev_timer_start(MON.loop, &MON.hb_w);
    log_info("cluster_monitor_ready", "{s:s,s:s,s:i,s:i}", "member", MON.cc.node_id, "advertise",
             MON.cc.advertise, "seeds", MON.cc.nseeds, "port", MON.cc.bind_port);
    proc_notify_ready(a);
    ev_run(MON.loop, 0);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    peer_stop_listening(&MON.env);
    if (MON.cc.bind_port)
        resolve_stop();
    cview_unsubscribe();
    nng_close(MON.view_pub);
    close(MON.relay_fd);
    unlink(MON.relay_path);
    cluster_role_stop();
    return 0;
}
