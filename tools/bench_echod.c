/*
 * cmcp-bench-echod: the smallest newline-delimited JSON-RPC server on libev,
 * the limit against which the benchmark suite measures cmcp's TCP transport.
 *
 * For every line that carries an "id" it answers one line shaped like cmcp's
 * answer to tools/call echo {"text":"hello"}, with that id; lines without an
 * id (notifications) get nothing. No JSON parsing, no sessions, no routing:
 * read, scan for the id, write. The answers to everything one read brought
 * go out in one write.
 *
 *   cmcp-bench-echod [--bind 127.0.0.1] [--port 7001] [--workers N] [--time-limit S]
 *
 * --workers N forks N processes sharing the port (SO_REUSEPORT). The process
 * ends by itself after --time-limit seconds (3600), or on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LINE (1 << 20)

struct client {
    ev_io io;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    bool writing;
};

static struct ev_loop *loop;
static char *scratch;
static const size_t scratch_cap = 256 * 1024;

static const char ans_head[] = "{\"jsonrpc\":\"2.0\",\"id\":";
static const char ans_tail[] =
    ",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"hello\"}],"
    "\"structuredContent\":{\"text\":\"hello\"}}}\n";

static void client_free(struct client *c)
{
    ev_io_stop(loop, &c->io);
    close(c->io.fd);
    free(c->in);
    free(c->out);
    free(c);
}

static int out_reserve(struct client *c, size_t n)
{
    if (c->out_len + n <= c->out_cap)
        return 0;
    size_t cap = (c->out_len + n) * 2;
    char *p = realloc(c->out, cap);
    if (!p)
        return -1;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

/* Appends the answer to one line (if it has an id). */
static int answer(struct client *c, const char *l, size_t n)
{
    const char *k = memmem(l, n, "\"id\":", 5);
    if (!k)
        return 0;
    const char *v = k + 5, *e = l + n;
    while (v < e && *v == ' ')
        v++;
    const char *ve = v;
    if (ve < e && *ve == '"') {
        for (ve++; ve < e && *ve != '"'; ve++)
            if (*ve == '\\')
                ve++;
        ve++;
    } else {
        while (ve < e && *ve != ',' && *ve != '}' && *ve != ' ')
            ve++;
    }
    if (ve > e || ve == v)
        return 0;
    size_t need = sizeof(ans_head) - 1 + (size_t)(ve - v) + sizeof(ans_tail) - 1;
    if (out_reserve(c, need) != 0)
        return -1;
    memcpy(c->out + c->out_len, ans_head, sizeof(ans_head) - 1);
    c->out_len += sizeof(ans_head) - 1;
    memcpy(c->out + c->out_len, v, (size_t)(ve - v));
    c->out_len += (size_t)(ve - v);
    memcpy(c->out + c->out_len, ans_tail, sizeof(ans_tail) - 1);
    c->out_len += sizeof(ans_tail) - 1;
    return 0;
}

static int flush(struct client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->io.fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    bool pending = c->out_off < c->out_len;
    if (!pending)
        c->out_off = c->out_len = 0;
    if (pending != c->writing) {
        c->writing = pending;
        ev_io_stop(loop, &c->io);
        ev_io_set(&c->io, c->io.fd, EV_READ | (pending ? EV_WRITE : 0));
        ev_io_start(loop, &c->io);
    }
    return 0;
}

/* Answers every complete line of data (after what was kept from before). */
static int consume(struct client *c, const char *data, size_t n)
{
    const char *buf = data;
    size_t len = n;
    if (c->in_len) {
        if (c->in_len + n > c->in_cap) {
            size_t cap = (c->in_len + n) * 2;
            char *p = realloc(c->in, cap);
            if (!p)
                return -1;
            c->in = p;
            c->in_cap = cap;
        }
        memcpy(c->in + c->in_len, data, n);
        c->in_len += n;
        buf = c->in;
        len = c->in_len;
    }
    size_t off = 0;
    while (off < len) {
        const char *nl = memchr(buf + off, '\n', len - off);
        if (!nl)
            break;
        if (answer(c, buf + off, (size_t)(nl - (buf + off))) != 0)
            return -1;
        off = (size_t)(nl - buf) + 1;
    }
    size_t left = len - off;
    if (left > MAX_LINE)
        return -1;
    if (left && buf != c->in) {
        if (left > c->in_cap) {
            char *p = realloc(c->in, left * 2);
            if (!p)
                return -1;
            c->in = p;
            c->in_cap = left * 2;
        }
        memcpy(c->in, buf + off, left);
    } else if (left) {
        memmove(c->in, c->in + off, left);
    }
    c->in_len = left;
    return 0;
}

static void client_cb(struct ev_loop *l, ev_io *io, int revents)
{
    (void)l;
    struct client *c = (struct client *)io;
    if ((revents & EV_WRITE) && flush(c) != 0) {
        client_free(c);
        return;
    }
    if (!(revents & EV_READ))
        return;
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(io->fd, scratch, scratch_cap, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            client_free(c);
            return;
        }
        if (n < 0)
            break;
        if (consume(c, scratch, (size_t)n) != 0) {
            client_free(c);
            return;
        }
        if ((size_t)n < scratch_cap)
            break;
    }
    if (c->out_len && flush(c) != 0)
        client_free(c);
}

static void accept_cb(struct ev_loop *l, ev_io *io, int revents)
{
    (void)revents;
    for (int i = 0; i < 256; i++) {
        int fd = accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct client *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
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

static int serve(int lfd, double time_limit)
{
    loop = ev_default_loop(EVFLAG_AUTO);
    scratch = malloc(scratch_cap);
    if (!loop || !scratch)
        return 1;
    ev_io aw;
    ev_io_init(&aw, accept_cb, lfd, EV_READ);
    ev_io_start(loop, &aw);
    ev_signal s1, s2;
    ev_signal_init(&s1, stop_cb, SIGTERM);
    ev_signal_init(&s2, stop_cb, SIGINT);
    ev_signal_start(loop, &s1);
    ev_signal_start(loop, &s2);
    ev_timer lt;
    ev_timer_init(&lt, limit_cb, time_limit, 0);
    ev_timer_start(loop, &lt);
    ev_run(loop, 0);
    return 0;
}

static int listen_on(const char *bind_addr, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *bind_addr = "127.0.0.1";
    int port = 7001, nworkers = 1;
    double time_limit = 3600;
    static const struct option lo[] = {{"bind", 1, 0, 'b'},       {"port", 1, 0, 'p'},
                                       {"workers", 1, 0, 'w'},    {"time-limit", 1, 0, 't'},
                                       {"help", 0, 0, 'h'},       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "b:p:w:t:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'b': bind_addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'w': nworkers = atoi(optarg); break;
        case 't': time_limit = atof(optarg); break;
        case 'h':
            printf("usage: cmcp-bench-echod [--bind ADDR] [--port P] [--workers N] [--time-limit S]\n");
            return 0;
        default: return 2;
        }
    }
    if (port <= 0 || port > 65535 || nworkers < 1 || nworkers > 64 || time_limit <= 0) {
        fprintf(stderr, "cmcp-bench-echod: bad arguments\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (nworkers == 1) {
        int fd = listen_on(bind_addr, port);
        if (fd < 0) {
            perror("cmcp-bench-echod: listen");
            return 1;
        }
        return serve(fd, time_limit);
    }
    pid_t kids[64];
    int started = 0;
    for (int i = 0; i < nworkers; i++) {
        int fd = listen_on(bind_addr, port);
        if (fd < 0) {
            perror("cmcp-bench-echod: listen");
            break;
        }
        pid_t p = fork();
        if (p == 0)
            _exit(serve(fd, time_limit));
        close(fd);
        if (p > 0)
            kids[started++] = p;
    }
    /* The parent passes SIGTERM/SIGINT on to its own children and waits for them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct timespec ts = {(time_t)time_limit + 5, 0};
    sigtimedwait(&set, NULL, &ts);
    for (int i = 0; i < started; i++)
        kill(kids[i], SIGTERM);
    for (int i = 0; i < started; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}
