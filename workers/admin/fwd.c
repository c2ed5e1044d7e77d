/*
 * The admin worker's calls to the rest of the node. Each is a short blocking
 * exchange with a deadline ([admin] timeout_ms, at most 5 s): the admin
 * worker serves one admin request at a time, and nothing else waits on it.
 */
#define _GNU_SOURCE
#include "workers/admin/admin_int.h"

#include <errno.h>
#include <netdb.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "ipc/addr.h"
#include "ipc/ipc.h"
#include "ipc/dlink.h"
#include "ipc/peer.h"
#include "base/log.h"

/* One request, one reply, on a fresh req socket; *reply is the caller's (nng_msg). */
static int req_once(const char *addr, nng_msg *msg, nng_msg **reply, char *err, size_t errlen,
                    const char *what, bool *absent)
{
    if (absent)
        *absent = false;
    nng_socket s;
    int rv = nng_req0_open(&s);
    if (rv != 0) {
        nng_msg_free(msg);
        snprintf(err, errlen, "cannot open a socket to %s: %s", what, nng_strerror(rv));
        return -1;
    }
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, admin_g.timeout_ms);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, admin_g.timeout_ms);
    /* Never send an order twice: a resent restart_child would act twice. */
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if ((rv = nng_dial(s, addr, NULL, 0)) != 0) {
        nng_msg_free(msg);
        nng_close(s);
        if (absent)
            *absent = rv == NNG_ECONNREFUSED || rv == NNG_ENOENT;
        snprintf(err, errlen, "%s is not reachable at %s (%s): is it running?", what, addr,
                 nng_strerror(rv));
        return -1;
    }
    double t0 = cmcp_now_ms();
    if ((rv = nng_sendmsg(s, msg, 0)) != 0) {
        nng_msg_free(msg);
        nng_close(s);
        snprintf(err, errlen, "cannot send to %s: %s", what, nng_strerror(rv));
        return -1;
    }
    /* One deadline for the whole exchange, not one per step. */
    double left = admin_g.timeout_ms - (cmcp_now_ms() - t0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, left > 50 ? (nng_duration)left : 50);
    if ((rv = nng_recvmsg(s, reply, 0)) != 0) {
        nng_close(s);
        if (rv == NNG_ETIMEDOUT)
            snprintf(err, errlen, "%s did not answer within %d ms", what, admin_g.timeout_ms);
        else
            snprintf(err, errlen, "no answer from %s: %s", what, nng_strerror(rv));
        return -1;
    }
    nng_close(s);
    return 0;
}

/* A JSON request and its JSON object answer. */
static json_t *json_call(const char *addr, const char *what, json_t *req, char *err, size_t errlen,
                         bool *absent)
{
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    nng_msg *m;
    if (!text || nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, text, strlen(text)) != 0) {
        free(text);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    free(text);
    nng_msg *r;
    if (req_once(addr, m, &r, err, errlen, what, absent) != 0)
        return NULL;
    json_error_t jerr;
    json_t *reply = json_loadb(nng_msg_body(r), nng_msg_len(r), 0, &jerr);
    nng_msg_free(r);
    if (!json_is_object(reply)) {
        json_decref(reply);
        snprintf(err, errlen, "%s answered something that is not a JSON object: %s", what,
                 jerr.text);
        return NULL;
    }
    return reply;
}

json_t *admin_sup_call(const char *sup, json_t *req, char *err, size_t errlen, bool *absent)
{
    char addr[512], what[128];
    ipc_addr_sup(addr, sizeof(addr), admin_g.a->run_dir, sup);
    snprintf(what, sizeof(what), "supervisor '%s'", sup);
    return json_call(addr, what, req, err, errlen, absent);
}

json_t *admin_cluster_call(json_t *req, char *err, size_t errlen)
{
    char addr[512];
    ipc_addr_cluster_ctl(addr, sizeof(addr), admin_g.a->run_dir);
    return json_call(addr, "the failover manager", req, err, errlen, NULL);
}

int admin_shard_call(int shard, const struct wire_req *req, struct wire_reply *r, json_t **keep,
                     char *err, size_t errlen)
{
    char addr[512], what[64];
    *keep = NULL;
    ipc_addr_shard_ctl(addr, sizeof(addr), admin_g.a->run_dir, shard);
    snprintf(what, sizeof(what), "shard %d", shard);
    nng_msg *m = wire_req_msg(req);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    nng_msg *rm;
    if (req_once(addr, m, &rm, err, errlen, what, NULL) != 0)
        return -1;
    int kind = wire_from_shard_parse(nng_msg_body(rm), nng_msg_len(rm), r, NULL, keep);
    nng_msg_free(rm);
    r->body = NULL; /* it was in the message */
    r->blen = 0;
    if (kind != WIRE_REPLY) {
        json_decref(*keep);
        *keep = NULL;
        snprintf(err, errlen, "%s answered a malformed reply", what);
        return -1;
    }
    return 0;
}

struct remote_reply {
    struct wire_reply *r;
    json_t **keep;
    bool got;
};

/* A frame from the remote shard: its reply to our token 1 ends the call; events (its
 * sessions' notifications go to every link) are skipped. */
static int remote_frame(void *ud, const char *data, size_t len)
{
    struct remote_reply *rr = ud;
    struct wire_reply r;
    struct wire_event e;
    json_t *keep = NULL;
    int kind = wire_from_shard_parse(data, len, &r, &e, &keep);
    if (kind == WIRE_REPLY && r.tok == 1) {
        *rr->r = r;
        rr->r->body = NULL; /* it was in the frame */
        rr->r->blen = 0;
        *rr->keep = keep;
        rr->got = true;
        return 1;
    }
    json_decref(keep);
    return 0;
}

int admin_remote_shard_call(const char *endpoint, int shard, const struct wire_req *req,
                            struct wire_reply *r, json_t **keep, char *err, size_t errlen)
{
    *keep = NULL;
    const char *colon = endpoint ? strrchr(endpoint, ':') : NULL;
    if (!colon) {
        snprintf(err, errlen, "no peer endpoint");
        return -1;
    }
    char host[PEER_ENDPOINT_MAX];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - endpoint), endpoint);
    int port = atoi(colon + 1) + 1 + admin_g.nshards + shard;
    struct wire_req q = *req;
    q.tok = 1;
    size_t len, body_off;
    char *frame = wire_req_frame(&q, &len, &body_off);
    if (!frame) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct peer_ident me = {0};
    snprintf(me.node, sizeof(me.node), "%s", admin_g.a->node);
    snprintf(me.endpoint, sizeof(me.endpoint), "admin");
    struct remote_reply rr = {r, keep, false};
    int rc = peer_call(admin_cookie_key(), &me, host, port, frame + DLINK_HDR, len - DLINK_HDR,
                       remote_frame, &rr, admin_g.timeout_ms, err, errlen);
    free(frame);
    return rc == 0 && rr.got ? 0 : -1;
}

char *admin_metrics_get(const char *path, int *status, char *err, size_t errlen)
{
    long port = cfg_get_long(&admin_g.a->cfg, "metrics", "port", 9090);
    const char *host = cfg_get(&admin_g.a->cfg, "metrics", "bind", "127.0.0.1");
    if (port <= 0) {
        snprintf(err, errlen, "the metrics HTTP server is off ([metrics] port = 0)");
        return NULL;
    }
    /* A wildcard bind is reached on loopback. */
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    struct addrinfo hints = {0}, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%ld", port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve the metrics address %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {admin_g.timeout_ms / 1000, (admin_g.timeout_ms % 1000) * 1000};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        snprintf(err, errlen, "the metrics worker is not reachable at %s:%ld: %s", host, port,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return NULL;
    }
    freeaddrinfo(ai);
    char req[512];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%ld\r\nConnection: close\r\n\r\n",
                     path, host, port);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        snprintf(err, errlen, "cannot send to the metrics worker: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            close(fd);
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        if (len == cap) {
            if (cap >= (64u << 20)) {
                free(buf);
                close(fd);
                snprintf(err, errlen, "the metrics page is larger than 64 MiB");
                return NULL;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb)
                free(buf);
            buf = nb;
            continue;
        }
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            snprintf(err, errlen, "the metrics worker did not answer within %d ms: %s",
                     admin_g.timeout_ms, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (k == 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !sep) {
        free(buf);
        snprintf(err, errlen, "the metrics worker answered something that is not HTTP");
        return NULL;
    }
    *status = atoi(buf + 9);
    /* Connection: close, not chunked: the body is everything after the head. */
    char *body = strdup(sep + 4);
    free(buf);
    if (!body)
        snprintf(err, errlen, "out of memory");
    return body;
}
