/*
 * Host names resolved off the event loop (cluster/resolve.h).
 *
 * glibc's getaddrinfo_a runs the lookups on its own threads; a short timer
 * collects the answers while a round is in flight. A slow or dead DNS server
 * therefore never delays a heartbeat. A failed lookup keeps the name's last
 * good answer (a resolver that times out once does not make the cluster
 * forget its seeds); a successful one replaces it (tasks come and go).
 */
#define _GNU_SOURCE
#include "cluster/resolve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"

#define MAX_NAMES 32

struct name {
    char host[RESOLVE_HOST_MAX];
    char addrs[RESOLVE_MAX_ADDRS][RESOLVE_ADDR_MAX];
    int naddrs;
    bool ever;
    struct gaicb cb;
};

static struct {
    struct ev_loop *loop;
    void (*changed)(void);
    struct name names[MAX_NAMES];
    int n;
    bool busy, again;
    struct gaicb *list[MAX_NAMES];
    struct addrinfo hints;
    ev_timer refresh_w, poll_w;
} R;

static bool numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void start_round(void)
{
    if (R.busy) {
        R.again = true; /* a name added meanwhile: one more round right after */
        return;
    }
    if (R.n == 0)
        return;
    R.hints.ai_socktype = SOCK_STREAM;
    for (int i = 0; i < R.n; i++) {
        memset(&R.names[i].cb, 0, sizeof(R.names[i].cb));
        R.names[i].cb.ar_name = R.names[i].host;
        R.names[i].cb.ar_request = &R.hints;
        R.list[i] = &R.names[i].cb;
    }
    int rc = getaddrinfo_a(GAI_NOWAIT, R.list, R.n, NULL);
    if (rc != 0) {
        log_warn("dns_lookup_failed", "{s:s}", "error", gai_strerror(rc));
        return;
    }
    R.busy = true;
    ev_timer_start(R.loop, &R.poll_w);
}

static void collect(struct name *nm)
{
    int rc = gai_error(&nm->cb);
    struct addrinfo *ai = nm->cb.ar_result;
    if (rc != 0) {
        log_debug("dns_unresolved", "{s:s,s:s,s:i}", "name", nm->host, "error", gai_strerror(rc),
                  "kept", nm->naddrs);
        return;
    }
    int n = 0;
    for (struct addrinfo *p = ai; p && n < RESOLVE_MAX_ADDRS; p = p->ai_next) {
        char ip[NI_MAXHOST];
        if (getnameinfo(p->ai_addr, p->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST) != 0 ||
            strlen(ip) >= RESOLVE_ADDR_MAX)
            continue;
        bool dup = false;
        for (int k = 0; k < n && !dup; k++)
            dup = strcmp(nm->addrs[k], ip) == 0;
        if (!dup)
            snprintf(nm->addrs[n++], RESOLVE_ADDR_MAX, "%s", ip);
    }
    freeaddrinfo(ai);
    nm->cb.ar_result = NULL;
    if (n != nm->naddrs || !nm->ever)
        log_info("dns_resolved", "{s:s,s:i}", "name", nm->host, "addresses", n);
    nm->naddrs = n;
    nm->ever = true;
}

static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    for (int i = 0; i < R.n; i++)
        if (gai_error(&R.names[i].cb) == EAI_INPROGRESS)
            return;
    ev_timer_stop(loop, w);
    for (int i = 0; i < R.n; i++)
        collect(&R.names[i]);
    R.busy = false;
    bool again = R.again;
    R.again = false;
    if (R.changed)
        R.changed(); /* may add names, and so start a round itself */
    if (again && !R.busy)
        start_round();
}

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    start_round();
}

void resolve_init(struct ev_loop *loop, double refresh_s, void (*changed)(void))
{
    memset(&R, 0, sizeof(R));
    R.loop = loop;
    R.changed = changed;
    ev_timer_init(&R.poll_w, poll_cb, 0.01, 0.02);
    ev_timer_init(&R.refresh_w, refresh_cb, refresh_s, refresh_s);
    ev_timer_start(loop, &R.refresh_w);
}

int resolve_lookup(const char *host, char out[][RESOLVE_ADDR_MAX], int max)
{
    if (!host[0] || max < 1)
        return 0;
    if (numeric(host)) {
        snprintf(out[0], RESOLVE_ADDR_MAX, "%s", host);
        return 1;
    }
    for (int i = 0; i < R.n; i++) {
        if (strcmp(R.names[i].host, host) != 0)
            continue;
        int n = R.names[i].naddrs < max ? R.names[i].naddrs : max;
        for (int k = 0; k < n; k++)
            memcpy(out[k], R.names[i].addrs[k], RESOLVE_ADDR_MAX);
        return n;
    }
    if (R.n == MAX_NAMES || strlen(host) >= RESOLVE_HOST_MAX) {
        log_warn("dns_name_ignored", "{s:s,s:s}", "name", host, "why",
                 "too many names or too long a name to resolve");
        return 0;
    }
    if (R.busy) {
        R.again = true; /* the list of a round in flight must not move: add it after */
        return 0;
    }
    snprintf(R.names[R.n++].host, RESOLVE_HOST_MAX, "%s", host);
    start_round();
    return 0;
}

void resolve_stop(void)
{
    for (int i = 0; R.busy && i < R.n; i++)
        gai_cancel(&R.names[i].cb); /* a lookup already running ends on its own */
    ev_timer_stop(R.loop, &R.poll_w);
    ev_timer_stop(R.loop, &R.refresh_w);
}
