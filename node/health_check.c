/*
 * cmcpd --health-check: asks this node's metrics worker for GET /ready (or /health
 * with =serving), at the address the same configuration gives it, and exits 0
 * only on 200. For a container's HEALTHCHECK, where the image has no shell and
 * no curl.
 */
#include "node/health_check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/cmcp.h"

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Waits for fd to be ready for ev until the deadline: 1 ready, 0 timed out. */
static int wait_fd(int fd, short ev, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = ev};
        int n = poll(&p, 1, (int)left);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return 0;
    }
}

int node_health_check(const struct cfg *c, const char *path, int timeout_ms)
{
    int port = (int)cfg_get_long(c, "metrics", "port", 9090);
    const char *bind = cfg_get(c, "metrics", "bind", "127.0.0.1");
    if (port <= 0) {
        fprintf(stderr, "cmcpd: health check: [metrics] port is 0, so the node serves no "
                        "%s; set it (CMCP_METRICS_PORT) to check the node\n", path);
        return CMCP_EXIT_USAGE;
    }
    /* A wildcard bind is reached on loopback from inside the same host or container. */
    const char *host = bind;
    if (!*bind || strcmp(bind, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(bind, "::") == 0)
        host = "::1";
    char ports[8];
    snprintf(ports, sizeof(ports), "%d", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "cmcpd: health check: cannot resolve %s: %s\n", host, gai_strerror(rc));
        return CMCP_EXIT_FAILURE;
    }
    long long deadline = now_ms() + timeout_ms;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS)) {
        fprintf(stderr, "cmcpd: health check: cannot connect to %s:%d: %s (is the node "
                        "running?)\n", host, port, strerror(errno));
        freeaddrinfo(res);
        if (fd >= 0)
            close(fd);
        return CMCP_EXIT_FAILURE;
    }
    freeaddrinfo(res);
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (!wait_fd(fd, POLLOUT, deadline) || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 ||
        soerr) {
        fprintf(stderr, "cmcpd: health check: cannot connect to %s:%d: %s (is the node "
                        "running?)\n", host, port, soerr ? strerror(soerr) : "timed out");
        close(fd);
        return CMCP_EXIT_FAILURE;
    }
    char req[160];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        fprintf(stderr, "cmcpd: health check: cannot send to %s:%d: %s\n", host, port,
                strerror(errno));
        close(fd);
        return CMCP_EXIT_FAILURE;
    }
    /* The answer is a status line and a small JSON body; HTTP/1.0 ends it with the close. */
    char buf[16384];
    size_t got = 0;
    while (got < sizeof(buf) - 1 && wait_fd(fd, POLLIN, deadline)) {
        ssize_t r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        fprintf(stderr, "cmcpd: health check: no HTTP answer from %s:%d within %d ms\n", host,
                port, timeout_ms);
        return CMCP_EXIT_FAILURE;
    }
    const char *body = strstr(buf, "\r\n\r\n");
    body = body ? body + 4 : "";
    fputs(body, stdout);
    if (*body && body[strlen(body) - 1] != '\n')
        fputc('\n', stdout);
    if (status != 200) {
        fprintf(stderr, "cmcpd: health check: %s:%d%s answered %d: %s (the reasons are in the "
                        "body)\n", host, port, path, status,
                strcmp(path, "/ready") == 0 ? "the node's processes are not all up"
                                            : "the node does not serve");
        return CMCP_EXIT_FAILURE;
    }
    return 0;
}
