/*
 * Sockets every role opens the same way: a listening TCP socket, the
 * AF_UNIX streams of the data links, and one accept loop on a libev loop
 * for all of them (client transports, the metrics server, a shard's data
 * links).
 */
#ifndef CMCP_IPC_SOCK_H
#define CMCP_IPC_SOCK_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * A non-blocking listening TCP socket on bind_addr:port (a numeric address or
 * a name; empty: every address). reuseport lets the node's K listeners share
 * the port. The fd, or -1 with err saying what failed.
 */
int sock_tcp_listen(const char *bind_addr, int port, bool reuseport, int backlog, char *err,
                    size_t errlen);

/* A non-blocking AF_UNIX stream connected to path: the fd, or -1 with errno. */
int sock_unix_connect(const char *path);
/*
 * Whether the peer of a stream socket closed its end (POLLRDHUP: unix and TCP streams
 * say so even while unread data waits); *unread gets the bytes still to read (-1: unknown).
 */
bool sock_peer_hung_up(int fd, int *unread);
/* A listening AF_UNIX stream socket at path (a stale file is replaced): the fd, or -1 with errno. */
int sock_unix_listen(const char *path);

/*
 * Accepts connections on a listening socket from the loop: each new
 * connection (non-blocking, close-on-exec) goes to on_fd, at most per_turn
 * a loop turn so that accepting never starves the connections already there.
 * TCP connections get TCP_NODELAY.
 */
struct sock_acceptor {
    ev_io w;
    struct ev_loop *loop;
    int per_turn;
    void (*on_fd)(struct sock_acceptor *a, int fd);
    void *ud;
};
void sock_acceptor_start(struct sock_acceptor *a, struct ev_loop *loop, int listen_fd,
                         int per_turn, void (*on_fd)(struct sock_acceptor *a, int fd), void *ud);
/* Stops accepting; the listening socket stays open (the caller closes it). */
void sock_acceptor_stop(struct sock_acceptor *a);

#endif
