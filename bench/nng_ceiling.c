/*
 * The ceiling nng puts on a listener <-> shard hop: request/reply round trips
 * per second over ipc:// between two processes, with raw req/rep sockets
 * polled on their RECVFD (no contexts, no aio callbacks: the cheapest way to
 * drive nng), `inflight` requests outstanding. cmcp's request path makes one
 * such round trip per client request, so this bounds its throughput.
 *
 *   cc -O2 bench/nng_ceiling.c -o /tmp/nng_ceiling -lnng -lpthread
 *   /tmp/nng_ceiling server /tmp/nngc.sock & /tmp/nng_ceiling client /tmp/nngc.sock 64
 */
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: nng_ceiling server PATH | client PATH INFLIGHT [TOTAL]\n");
        return 2;
    }
    char addr[256];
    snprintf(addr, sizeof(addr), "ipc://%s", argv[2]);
    nng_socket s;
    int fd;
    if (strcmp(argv[1], "server") == 0) {
        if (nng_rep0_open_raw(&s) || nng_listen(s, addr, NULL, 0) ||
            nng_socket_get_int(s, NNG_OPT_RECVFD, &fd))
            return 1;
        for (;;) { /* echo every request back; runs until killed */
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, -1);
            nng_msg *m;
            while (nng_recvmsg(s, &m, NNG_FLAG_NONBLOCK) == 0)
                nng_sendmsg(s, m, 0);
        }
    }
    int inflight = argc > 3 ? atoi(argv[3]) : 64;
    long total = argc > 4 ? atol(argv[4]) : 200000, sent = 0, got = 0;
    if (nng_req0_open_raw(&s) || nng_dial(s, addr, NULL, 0) ||
        nng_socket_get_int(s, NNG_OPT_RECVFD, &fd))
        return 1;
    char body[200];
    memset(body, 'x', sizeof(body));
    uint32_t id = 1;
    double t0 = now();
    while (got < total && now() - t0 < 60) {
        while (sent < total && sent - got < inflight) {
            nng_msg *m;
            nng_msg_alloc(&m, 0);
            nng_msg_header_append_u32(m, 0x80000000u | id++);
            nng_msg_append(m, body, sizeof(body));
            nng_sendmsg(s, m, 0);
            sent++;
        }
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 1000);
        nng_msg *m;
        while (nng_recvmsg(s, &m, NNG_FLAG_NONBLOCK) == 0) {
            nng_msg_free(m);
            got++;
        }
    }
    printf("inflight %d: %.0f round trips/s\n", inflight, (double)got / (now() - t0));
    return 0;
}
