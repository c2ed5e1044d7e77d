/*
 * cmcp-bench-hopd: cmcp-bench-echod with cmcp's process hop, done the way
 * docs/benchmarks.md proposes: a front process (like a listener) accepts
 * newline-delimited JSON-RPC over TCP and forwards every line to one of
 * --backends back processes (like shards) over a non-blocking AF_UNIX stream
 * watched by its own libev loop; frames are length + tag + line, all frames of
 * one loop iteration go out in one write; the back answers each line as
 * echod does and the front relays the answer to its client. No threads, no
 * nng, no JSON parsing: the floor of a two-process design on this machine.
 *
 *   cmcp-bench-hopd [--bind 127.0.0.1] [--port 7002] [--backends 2] [--time-limit S]
 *
 * Ends after --time-limit seconds (3600) or on SIGTERM/SIGINT; the back
 * processes end when the front's end of their socket closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LINE (1 << 20)
#define MAX_CLIENTS (1 << 16)

struct buf {
    char *p;
    size_t len, off, cap;
};

static int buf_add(struct buf *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        if (b->off) {
            memmove(b->p, b->p + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = (b->len + n) * 2;
            char *q = realloc(b->p, cap);
            if (!q)
                return -1;
            b->p = q;
            b->cap = cap;
        }
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

/* Writes what it can; 0 ok (maybe pending), -1 error. */
static int buf_flush(struct buf *b, int fd)
{
    while (b->off < b->len) {
        ssize_t n = send(fd, b->p + b->off, b->len - b->off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        b->off += (size_t)n;
    }
    b->off = b->len = 0;
    return 0;
}

static int fcntl_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static struct ev_loop *loop;
static char *scratch;
static const size_t scratch_cap = 256 * 1024;

/* ------------------------------------------------------------- back -- */

static const char ans_head[] = "{\"jsonrpc\":\"2.0\",\"id\":";
static const char ans_tail[] =
    ",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"hello\"}],"
    "\"structuredContent\":{\"text\":\"hello\"}}}\n";

struct frame_hdr {
    uint32_t len; /* of the payload after the header */
    uint32_t tag_client;
    uint32_t tag_gen;
};

static struct {
    ev_io io;
    ev_prepare flush_w;
    struct buf in, out;
} back;

static int back_answer(const struct frame_hdr *h, const char *l, size_t n)
{
    const char *k = memmem(l, n, "\"id\":", 5);
    if (!k)
        return 0; /* a notification: nothing goes back */
    const char *v = k + 5, *e = l + n;
    while (v < e && *v == ' ')
        v++;
    const char *ve = v;
    while (ve < e && *ve != ',' && *ve != '}' && *ve != ' ')
        ve++;
    if (ve == v)
        return 0;
    struct frame_hdr r = {(uint32_t)(sizeof(ans_head) - 1 + (size_t)(ve - v) + sizeof(ans_tail) - 1),
                          h->tag_client, h->tag_gen};
    if (buf_add(&back.out, &r, sizeof(r)) || buf_add(&back.out, ans_head, sizeof(ans_head) - 1) ||
        buf_add(&back.out, v, (size_t)(ve - v)) || buf_add(&back.out, ans_tail, sizeof(ans_tail) - 1))
        return -1;
    return 0;
}

static void back_read_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(w->fd, scratch, scratch_cap, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        if (n < 0)
            break;
        if (buf_add(&back.in, scratch, (size_t)n) != 0) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        if ((size_t)n < scratch_cap)
            break;
    }
    size_t off = back.in.off;
    while (back.in.len - off >= sizeof(struct frame_hdr)) {
        struct frame_hdr h;
        memcpy(&h, back.in.p + off, sizeof(h));
        if (h.len > MAX_LINE) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        if (back.in.len - off < sizeof(h) + h.len)
            break;
        if (back_answer(&h, back.in.p + off + sizeof(h), h.len) != 0) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        off += sizeof(h) + h.len;
    }
    back.in.off = off;
    if (back.in.off == back.in.len)
        back.in.off = back.in.len = 0;
}

/* Once per loop iteration: everything answered in it goes out in one write. */
static void back_flush_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    if (back.out.len && buf_flush(&back.out, back.io.fd) != 0)
        ev_break(l, EVBREAK_ALL);
}

static int back_main(int fd)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop)
        return 1;
    ev_io_init(&back.io, back_read_cb, fd, EV_READ);
    ev_io_start(loop, &back.io);
    ev_prepare_init(&back.flush_w, back_flush_cb);
    ev_prepare_start(loop, &back.flush_w);
    ev_run(loop, 0);
    return 0;
}

/* ------------------------------------------------------------ front -- */

struct client {
    ev_io io;
    uint32_t idx, gen;
    struct buf in, out;
    bool writing, dirty;
    struct client *next_dirty;
};

struct link {
    ev_io io;
    struct buf in, out;
};

static struct client *clients[MAX_CLIENTS];
static uint32_t gens[MAX_CLIENTS];
static uint32_t next_free_hint;
static struct link *links;
static int nlinks;
static struct client *dirty;
static ev_prepare front_flush_w;

static void client_close(struct client *c)
{
    ev_io_stop(loop, &c->io);
    close(c->io.fd);
    clients[c->idx] = NULL;
    gens[c->idx]++;
    c->idx = UINT32_MAX; /* callers put it on the dirty list: the flush pass frees it */
}

static void mark_dirty(struct client *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = dirty;
        dirty = c;
    }
}

static void client_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    struct client *c = (struct client *)w;
    if (revents & EV_WRITE)
        mark_dirty(c);
    if (!(revents & EV_READ))
        return;
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(w->fd, scratch, scratch_cap, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            client_close(c);
            mark_dirty(c); /* freed by the flush pass */
            return;
        }
        if (n < 0)
            break;
        if (buf_add(&c->in, scratch, (size_t)n) != 0) {
            client_close(c);
            mark_dirty(c);
            return;
        }
        if ((size_t)n < scratch_cap)
            break;
    }
    /* Every complete line becomes a frame to a back process (round robin by client). */
    struct link *k = &links[c->idx % (uint32_t)nlinks];
    size_t off = c->in.off;
    for (;;) {
        char *nl = memchr(c->in.p + off, '\n', c->in.len - off);
        if (!nl)
            break;
        size_t ln = (size_t)(nl - (c->in.p + off));
        struct frame_hdr h = {(uint32_t)ln, c->idx, gens[c->idx]};
        if (buf_add(&k->out, &h, sizeof(h)) || buf_add(&k->out, c->in.p + off, ln)) {
            client_close(c);
            mark_dirty(c);
            return;
        }
        off += ln + 1;
    }
    c->in.off = off;
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0;
    if (c->in.len - c->in.off > MAX_LINE) {
        client_close(c);
        mark_dirty(c);
    }
}

static void link_cb(struct ev_loop *l, ev_io *w, int revents)
{
    struct link *k = (struct link *)w;
    if (revents & EV_WRITE) {
        if (buf_flush(&k->out, w->fd) != 0) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        if (k->out.len == 0) {
            ev_io_stop(l, w);
            ev_io_set(w, w->fd, EV_READ);
            ev_io_start(l, w);
        }
    }
    if (!(revents & EV_READ))
        return;
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(w->fd, scratch, scratch_cap, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        if (n < 0)
            break;
        if (buf_add(&k->in, scratch, (size_t)n) != 0) {
            ev_break(l, EVBREAK_ALL);
            return;
        }
        if ((size_t)n < scratch_cap)
            break;
    }
    size_t off = k->in.off;
    while (k->in.len - off >= sizeof(struct frame_hdr)) {
        struct frame_hdr h;
        memcpy(&h, k->in.p + off, sizeof(h));
        if (k->in.len - off < sizeof(h) + h.len)
            break;
        struct client *c = h.tag_client < MAX_CLIENTS ? clients[h.tag_client] : NULL;
        if (c && gens[h.tag_client] == h.tag_gen) { /* else its client is gone */
            if (buf_add(&c->out, k->in.p + off + sizeof(h), h.len) == 0)
                mark_dirty(c);
        }
        off += sizeof(h) + h.len;
    }
    k->in.off = off;
    if (k->in.off == k->in.len)
        k->in.off = k->in.len = 0;
}

/* Once per loop iteration: one write per back link and per client with output. */
static void front_flush_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    for (int i = 0; i < nlinks; i++) {
        struct link *k = &links[i];
        if (k->out.len && k->out.off < k->out.len) {
            if (buf_flush(&k->out, k->io.fd) != 0) {
                ev_break(l, EVBREAK_ALL);
                return;
            }
            if (k->out.len) {
                ev_io_stop(l, &k->io);
                ev_io_set(&k->io, k->io.fd, EV_READ | EV_WRITE);
                ev_io_start(l, &k->io);
            }
        }
    }
    struct client *c = dirty, *next;
    dirty = NULL;
    for (; c; c = next) {
        next = c->next_dirty;
        if (c->idx == UINT32_MAX) { /* closed meanwhile */
            free(c->in.p);
            free(c->out.p);
            free(c);
            continue;
        }
        c->dirty = false;
        if (buf_flush(&c->out, c->io.fd) != 0) {
            client_close(c);
            free(c->in.p);
            free(c->out.p);
            free(c);
            continue;
        }
        bool pending = c->out.len > 0;
        if (pending != c->writing) {
            c->writing = pending;
            ev_io_stop(l, &c->io);
            ev_io_set(&c->io, c->io.fd, EV_READ | (pending ? EV_WRITE : 0));
            ev_io_start(l, &c->io);
        }
    }
}

static void accept_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    for (int i = 0; i < 256; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        uint32_t idx = UINT32_MAX;
        for (uint32_t j = 0; j < MAX_CLIENTS; j++) {
            uint32_t k = (next_free_hint + j) % MAX_CLIENTS;
            if (!clients[k]) {
                idx = k;
                break;
            }
        }
        struct client *c = idx == UINT32_MAX ? NULL : calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        next_free_hint = idx + 1;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->idx = idx;
        clients[idx] = c;
        ev_io_init(&c->io, client_cb, fd, EV_READ);
        ev_io_start(l, &c->io);
    }
}

static void stop_cb(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ALL);
}

static void limit_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    const char *bind_addr = "127.0.0.1";
    int port = 7002;
    double time_limit = 3600;
    nlinks = 2;
    static const struct option lo[] = {{"bind", 1, 0, 'b'},       {"port", 1, 0, 'p'},
                                       {"backends", 1, 0, 'n'},   {"time-limit", 1, 0, 't'},
                                       {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "b:p:n:t:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'b': bind_addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'n': nlinks = atoi(optarg); break;
        case 't': time_limit = atof(optarg); break;
        case 'h':
            printf("usage: cmcp-bench-hopd [--bind ADDR] [--port P] [--backends N] [--time-limit S]\n");
            return 0;
        default: return 2;
        }
    }
    if (port <= 0 || port > 65535 || nlinks < 1 || nlinks > 64 || time_limit <= 0) {
        fprintf(stderr, "cmcp-bench-hopd: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    scratch = malloc(scratch_cap);
    links = calloc((size_t)nlinks, sizeof(*links));
    pid_t kids[64];
    if (!scratch || !links)
        return 1;
    for (int i = 0; i < nlinks; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            perror("cmcp-bench-hopd: socketpair");
            return 1;
        }
        pid_t p = fork();
        if (p < 0) {
            perror("cmcp-bench-hopd: fork");
            return 1;
        }
        if (p == 0) {
            close(sv[0]);
            for (int j = 0; j < i; j++)
                close(links[j].io.fd);
            if (fcntl_nonblock(sv[1]) != 0)
                _exit(1);
            _exit(back_main(sv[1]));
        }
        kids[i] = p;
        close(sv[1]);
        if (fcntl_nonblock(sv[0]) != 0)
            return 1;
        ev_io_init(&links[i].io, link_cb, sv[0], EV_READ);
    }
    loop = ev_default_loop(EVFLAG_AUTO);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (lfd < 0 || inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 4096) != 0) {
        perror("cmcp-bench-hopd: listen");
        return 1;
    }
    for (int i = 0; i < nlinks; i++)
        ev_io_start(loop, &links[i].io);
    ev_io aw;
    ev_io_init(&aw, accept_cb, lfd, EV_READ);
    ev_io_start(loop, &aw);
    ev_prepare_init(&front_flush_w, front_flush_cb);
    ev_prepare_start(loop, &front_flush_w);
    ev_signal s1, s2;
    ev_signal_init(&s1, stop_cb, SIGTERM);
    ev_signal_init(&s2, stop_cb, SIGINT);
    ev_signal_start(loop, &s1);
    ev_signal_start(loop, &s2);
    ev_timer lt;
    ev_timer_init(&lt, limit_cb, time_limit, 0);
    ev_timer_start(loop, &lt);
    ev_run(loop, 0);
    for (int i = 0; i < nlinks; i++)
        close(links[i].io.fd); /* the back processes see EOF and end */
    for (int i = 0; i < nlinks; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}
