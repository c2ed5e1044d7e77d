/* Listening sockets and the accept loop (sock.h). */
#define _GNU_SOURCE
#include "ipc/sock.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sock_tcp_listen(const char *bind_addr, int port, bool reuseport, int backlog, char *err,
                    size_t errlen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char ps[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", port);
    int rc = getaddrinfo(bind_addr && bind_addr[0] ? bind_addr : NULL, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve bind address '%s': %s", bind_addr,
                 gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* A non-blocking stream socket and the address of path; -1 with errno. */
static int unix_socket(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

bool sock_peer_hung_up(int fd, int *unread)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLRDHUP | POLLHUP)))
        return false;
    if (ioctl(fd, FIONREAD, unread) != 0)
        *unread = -1;
    return true;
}

int sock_unix_connect(const char *path)
{
    struct sockaddr_un sa;
    int fd = unix_socket(path, &sa);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int sock_unix_listen(const char *path)
{
    struct sockaddr_un sa;
    int fd = unix_socket(path, &sa);
    if (fd < 0)
        return -1;
    unlink(path); /* left by a process that was killed */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sock_acceptor *a = w->data;
    for (int i = 0; i < a->per_turn; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a connection that went away before we took it */
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        a->on_fd(a, fd);
    }
}

void sock_acceptor_start(struct sock_acceptor *a, struct ev_loop *loop, int listen_fd,
                         int per_turn, void (*on_fd)(struct sock_acceptor *a, int fd), void *ud)
{
    a->loop = loop;
    a->per_turn = per_turn;
    a->on_fd = on_fd;
    a->ud = ud;
    ev_io_init(&a->w, accept_cb, listen_fd, EV_READ);
    a->w.data = a;
    ev_io_start(loop, &a->w);
}

void sock_acceptor_stop(struct sock_acceptor *a)
{
    if (a->loop)
        ev_io_stop(a->loop, &a->w);
}
