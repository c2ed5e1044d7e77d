/* Sealed links between nodes (peer.h). */
#define _GNU_SOURCE
#include "ipc/peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "ipc/dlink.h"
#include "ipc/sock.h"

#define HANDSHAKE_TIMEOUT 5.0
#define MAX_SEALED (16u << 20) /* a peer's frame larger than this is refused */

enum hs { HS_CONNECTING, HS_HELLO_SENT, HS_AUTH_SENT, HS_WAIT_HELLO, HS_WAIT_AUTH, HS_WAIT_IDENT,
          HS_UP, HS_DEAD };

struct peer_link {
    struct peer_env *env;
    struct dlink *dl;
    int fd; /* while connecting */
    ev_io conn_w;
    ev_timer timer; /* the handshake's deadline; then the deferred free */
    enum hs state;
    bool dialed;
    struct auth_client client;
    struct auth_server *server;
    struct auth_session sess;
    struct peer_ident remote;
    char addr[160];
    void *ud;
};

static const struct dlink_ops link_ops;

void peer_env_init(struct peer_env *env, struct ev_loop *loop, const struct auth_key *key,
                   const struct peer_ident *self, const struct peer_ops *ops)
{
    memset(env, 0, sizeof(*env));
    env->loop = loop;
    env->key = key;
    env->self = *self;
    env->ops = ops;
    env->listen_fd = -1;
}

/* ---- the end of a link ---- */

static void free_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct peer_link *l = w->data;
    if (l->dl)
        dlink_close(l->dl);
    if (l->server) {
        sodium_memzero(l->server, sizeof(*l->server));
        free(l->server);
    }
    sodium_memzero(&l->sess, sizeof(l->sess));
    sodium_memzero(&l->client, sizeof(l->client));
    free(l);
}

/* Ends the link; tells the owner unless it asked for it. Closed and freed on the next loop
 * turn: callers up the stack may still hold it, and a refusal queued for the peer leaves with
 * the flush at the end of this turn. */
static void finish(struct peer_link *l, const char *why, bool tell)
{
    if (l->state == HS_DEAD)
        return;
    bool was_up = l->state == HS_UP;
    l->state = HS_DEAD;
    ev_io_stop(l->env->loop, &l->conn_w);
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
    if (l->dl)
        dlink_pause_reading(l->dl, true);
    if (tell) {
        if (was_up)
            log_info("peer_link_down", "{s:s,s:s,s:s}", "peer", l->remote.node, "address", l->addr,
                     "why", why);
        l->env->ops->down(l, why);
    }
    ev_timer_stop(l->env->loop, &l->timer);
    ev_timer_init(&l->timer, free_cb, 0, 0);
    l->timer.data = l;
    ev_timer_start(l->env->loop, &l->timer);
}

/* The keys of the sealed data link a peer link becomes (peer_detach, peer_call). */
static void dlink_keys(const struct auth_session *s, unsigned char ks[DLINK_KEY_BYTES],
                       unsigned char kr[DLINK_KEY_BYTES])
{
    crypto_kdf_derive_from_key(ks, DLINK_KEY_BYTES, 3, "cmcpdlnk", s->k_send);
    crypto_kdf_derive_from_key(kr, DLINK_KEY_BYTES, 3, "cmcpdlnk", s->k_recv);
}

struct dlink *peer_detach(struct peer_link *l, const struct dlink_ops *ops, void *ud)
{
    if (!l || l->state != HS_UP || !l->dl)
        return NULL;
    unsigned char ks[DLINK_KEY_BYTES], kr[DLINK_KEY_BYTES];
    dlink_keys(&l->sess, ks, kr);
    struct dlink *dl = l->dl;
    int rc = dlink_seal(dl, ks, kr);
    sodium_memzero(ks, sizeof(ks));
    sodium_memzero(kr, sizeof(kr));
    if (rc != 0)
        return NULL;
    l->dl = NULL; /* not ours to close any more */
    dlink_set_ops(dl, ops, ud);
    finish(l, "detached", false);
    return dl;
}

void peer_close(struct peer_link *l)
{
    if (l)
        finish(l, "closed", false);
}

/* A handshake that failed: counted and logged with the address, never silently. */
static void refuse(struct peer_link *l, const char *why)
{
    l->env->refused++;
    log_warn("peer_refused", "{s:s,s:s,s:b}", "address", l->addr, "why", why, "dialed", l->dialed);
    finish(l, why, true);
}

/* ---- frames ---- */

static int send_raw(struct peer_link *l, const uint8_t *msg, size_t len)
{
    char *p = l->dl ? dlink_reserve(l->dl, len) : NULL;
    if (!p)
        return -1;
    memcpy(p, msg, len);
    dlink_commit(l->dl, len);
    return 0;
}

static int send_sealed(struct peer_link *l, const void *pt, size_t len)
{
    uint8_t *m = NULL;
    size_t ml;
    if (auth_seal(&l->sess, l->dialed ? AUTH_REQUEST : AUTH_RESPONSE, 0, pt, len, &m, &ml) < 0)
        return -1;
    int rc = send_raw(l, m, ml);
    free(m);
    return rc;
}

int peer_send(struct peer_link *l, int channel, const void *data, size_t len)
{
    if (!l || l->state != HS_UP || len + 1 > MAX_SEALED)
        return -1;
    uint8_t *pt = malloc(len + 1);
    if (!pt)
        return -1;
    pt[0] = (uint8_t)channel;
    memcpy(pt + 1, data, len);
    int rc = send_sealed(l, pt, len + 1);
    free(pt);
    return rc;
}

static char *ident_json(const struct peer_ident *id)
{
    char inc[17];
    snprintf(inc, sizeof(inc), "%016" PRIx64, id->incarnation);
    json_t *o = json_pack("{s:s,s:s,s:s}", "node", id->node, "inc", inc, "ep", id->endpoint);
    char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return t;
}

static int ident_parse(const char *text, size_t len, struct peer_ident *id)
{
    json_t *o = json_loadb(text, len, 0, NULL);
    const char *node = json_string_value(json_object_get(o, "node"));
    const char *inc = json_string_value(json_object_get(o, "inc"));
    const char *ep = json_string_value(json_object_get(o, "ep"));
    int rc = -1;
    if (node && inc && ep && node[0] && strlen(node) < sizeof(id->node) &&
        strlen(ep) < sizeof(id->endpoint) && strlen(inc) == 16) {
        char *end;
        id->incarnation = strtoull(inc, &end, 16);
        if (*end == '\0') {
            snprintf(id->node, sizeof(id->node), "%s", node);
            snprintf(id->endpoint, sizeof(id->endpoint), "%s", ep);
            rc = 0;
        }
    }
    json_decref(o);
    return rc;
}

static void become_up(struct peer_link *l)
{
    l->state = HS_UP;
    ev_timer_stop(l->env->loop, &l->timer);
    log_info("peer_link_up", "{s:s,s:s,s:b}", "peer", l->remote.node, "address", l->addr,
             "dialed", l->dialed);
    l->env->ops->up(l);
}

/* The text of a peer's refusal (an unauthenticated ERROR message), for the log. */
static bool refusal_text(const uint8_t *msg, size_t len, char *buf, size_t buflen)
{
    struct auth_header h;
    if (auth_header_parse(msg, len, &h) != AUTH_OK || h.type != AUTH_ERROR)
        return false;
    size_t n = len - AUTH_HEADER_BYTES < buflen - 1 ? len - AUTH_HEADER_BYTES : buflen - 1;
    memcpy(buf, msg + AUTH_HEADER_BYTES, n);
    buf[n] = '\0';
    return true;
}

/* The dialer's side of the handshake. */
static void dialer_step(struct peer_link *l, const uint8_t *in, size_t len)
{
    char text[300], why[400];
    if (refusal_text(in, len, text, sizeof(text))) {
        snprintf(why, sizeof(why), "the peer refused us: %s", text);
        refuse(l, why);
        return;
    }
    uint8_t *out = NULL;
    size_t outlen;
    if (l->state == HS_HELLO_SENT) {
        int rc = auth_client_auth(&l->client, in, len, &out, &outlen);
        if (rc != AUTH_OK || send_raw(l, out, outlen) != 0) {
            free(out);
            snprintf(why, sizeof(why), "bad challenge: %s", auth_strerror(rc));
            refuse(l, why);
            return;
        }
        free(out);
        l->state = HS_AUTH_SENT;
        return;
    }
    uint8_t *body = NULL;
    size_t blen;
    int rc = auth_client_welcome(&l->client, in, len, &body, &blen);
    if (rc != AUTH_OK || ident_parse((const char *)body, blen, &l->remote) != 0) {
        free(body);
        snprintf(why, sizeof(why), "%s",
                 rc == AUTH_E_PROOF ? "the peer does not hold our cookie"
                 : rc != AUTH_OK    ? auth_strerror(rc)
                                    : "the peer sent no identity");
        refuse(l, why);
        return;
    }
    free(body);
    l->sess = l->client.s;
    char *me = ident_json(&l->env->self);
    rc = me ? send_sealed(l, me, strlen(me)) : -1;
    free(me);
    if (rc != 0) {
        refuse(l, "out of memory");
        return;
    }
    become_up(l);
}

/* The acceptor's side. */
static void acceptor_step(struct peer_link *l, const uint8_t *in, size_t len)
{
    double now = ev_now(l->env->loop);
    uint8_t *out = NULL;
    size_t outlen;
    int rc;
    if (l->state == HS_WAIT_HELLO) {
        rc = auth_server_hello(l->server, in, len, now, &out, &outlen);
        if (rc != AUTH_OK || send_raw(l, out, outlen) != 0) {
            free(out);
            refuse(l, "not a cmcp node (bad hello)");
            return;
        }
        free(out);
        l->state = HS_WAIT_AUTH;
        return;
    }
    if (l->state == HS_WAIT_AUTH) {
        char *me = ident_json(&l->env->self);
        rc = me ? auth_server_auth(l->server, in, len, now, me, &out, &outlen) : AUTH_E_NOMEM;
        free(me);
        if (rc != AUTH_OK) {
            struct auth_header h;
            uint8_t *err = NULL;
            size_t el;
            char msg[200];
            snprintf(msg, sizeof(msg), "refused (%s)", auth_strerror(rc));
            if (auth_header_parse(in, len, &h) == AUTH_OK &&
                auth_error_msg(h.sid, msg, &err, &el) == AUTH_OK) {
                send_raw(l, err, el); /* best effort: it leaves with the flush before close */
                free(err);
            }
            refuse(l, rc == AUTH_E_PROOF ? "the peer does not hold our cookie" : auth_strerror(rc));
            return;
        }
        int sent = send_raw(l, out, outlen);
        free(out);
        for (int i = 0; i < AUTH_MAX_SESSIONS; i++)
            if (l->server->sessions[i].used)
                l->sess = l->server->sessions[i];
        sodium_memzero(l->server, sizeof(*l->server));
        free(l->server);
        l->server = NULL;
        if (sent != 0) {
            refuse(l, "out of memory");
            return;
        }
        l->state = HS_WAIT_IDENT;
        return;
    }
    /* HS_WAIT_IDENT: the dialer's first sealed frame names it */
    struct auth_header h;
    uint8_t *pt = NULL;
    size_t pl;
    rc = auth_open(&l->sess, AUTH_REQUEST, in, len, &h, &pt, &pl);
    if (rc != AUTH_OK || ident_parse((const char *)pt, pl, &l->remote) != 0) {
        free(pt);
        refuse(l, rc != AUTH_OK ? auth_strerror(rc) : "the peer sent no identity");
        return;
    }
    free(pt);
    become_up(l);
}

static void link_frame(struct dlink *dl, const char *data, size_t len)
{
    struct peer_link *l = dlink_ud(dl);
    const uint8_t *in = (const uint8_t *)data;
    if (l->state == HS_DEAD)
        return;
    if (l->state == HS_HELLO_SENT || l->state == HS_AUTH_SENT) {
        dialer_step(l, in, len);
        return;
    }
    if (l->state != HS_UP) {
        acceptor_step(l, in, len);
        return;
    }
    struct auth_header h;
    uint8_t *pt = NULL;
    size_t pl;
    int rc = auth_open(&l->sess, l->dialed ? AUTH_RESPONSE : AUTH_REQUEST, in, len, &h, &pt, &pl);
    if (rc != AUTH_OK || pl < 1) {
        free(pt);
        char why[200];
        snprintf(why, sizeof(why), "a frame was refused: %s",
                 rc != AUTH_OK ? auth_strerror(rc) : "empty");
        log_warn("peer_frame_refused", "{s:s,s:s,s:s}", "peer", l->remote.node, "address",
                 l->addr, "why", rc != AUTH_OK ? auth_strerror(rc) : "empty");
        finish(l, why, true);
        return;
    }
    l->env->ops->message(l, pt[0], (const char *)pt + 1, pl - 1);
    free(pt);
}

static void link_closed(struct dlink *dl, const char *why)
{
    struct peer_link *l = dlink_ud(dl);
    l->dl = NULL; /* dlink frees itself */
    if (l->state == HS_DEAD)
        return;
    if (l->state == HS_UP)
        finish(l, why, true);
    else {
        char w[300];
        snprintf(w, sizeof(w), "handshake cut short: %s", why);
        refuse(l, w);
    }
}

static const struct dlink_ops link_ops = {link_frame, NULL, link_closed};

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    refuse(w->data, "handshake timed out");
}

static struct peer_link *link_new(struct peer_env *env, bool dialed, void *ud)
{
    struct peer_link *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->env = env;
    l->dialed = dialed;
    l->fd = -1;
    l->ud = ud;
    ev_timer_init(&l->timer, deadline_cb, HANDSHAKE_TIMEOUT, 0);
    l->timer.data = l;
    ev_timer_start(env->loop, &l->timer);
    return l;
}

/* The connection is made: the link speaks first. */
static void start_dialer(struct peer_link *l)
{
    int fd = l->fd;
    l->fd = -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    l->dl = dlink_new(fd, &link_ops, l);
    if (!l->dl) {
        refuse(l, "out of memory");
        return;
    }
    auth_client_init(&l->client, l->env->key);
    uint8_t *out = NULL;
    size_t outlen;
    if (auth_client_hello(&l->client, &out, &outlen) != AUTH_OK || send_raw(l, out, outlen) != 0) {
        free(out);
        refuse(l, "out of memory");
        return;
    }
    free(out);
    l->state = HS_HELLO_SENT;
}

static void connect_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct peer_link *l = w->data;
    ev_io_stop(loop, w);
    int err = 0;
    socklen_t el = sizeof(err);
    if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        err = errno;
    if (err) {
        char why[200];
        snprintf(why, sizeof(why), "cannot connect: %s", strerror(err));
        finish(l, why, true); /* routine while a peer is down: not a refusal */
        return;
    }
    start_dialer(l);
}

/* Resolves host:port and starts a non-blocking connect: the socket, or -1 with why. */
static int connect_start(const char *host, int port, char *why, size_t whylen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(why, whylen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS)) {
        snprintf(why, whylen, "cannot connect: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

struct peer_link *peer_dial(struct peer_env *env, const char *host, int port, void *ud)
{
    struct peer_link *l = link_new(env, true, ud);
    if (!l)
        return NULL;
    snprintf(l->addr, sizeof(l->addr), "%s:%d", host, port);
    char why[300];
    if ((l->fd = connect_start(host, port, why, sizeof(why))) < 0) {
        finish(l, why, true);
        return l;
    }
    l->state = HS_CONNECTING;
    ev_io_init(&l->conn_w, connect_cb, l->fd, EV_WRITE);
    l->conn_w.data = l;
    ev_io_start(env->loop, &l->conn_w);
    return l;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct peer_env *env = w->data;
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct peer_link *l = link_new(env, false, NULL);
        if (!l) {
            close(fd);
            continue;
        }
        char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
        getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(l->addr, sizeof(l->addr), "%s:%s", host, serv);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        l->server = calloc(1, sizeof(*l->server));
        l->dl = l->server ? dlink_new(fd, &link_ops, l) : NULL;
        if (!l->dl) {
            if (!l->server)
                close(fd);
            refuse(l, "out of memory");
            continue;
        }
        auth_server_init(l->server, env->key);
        l->state = HS_WAIT_HELLO;
    }
}

int peer_listen(struct peer_env *env, const char *bind_addr, int port, char *err, size_t errlen)
{
    env->listen_fd = sock_tcp_listen(bind_addr, port, false, 128, err, errlen);
    if (env->listen_fd < 0)
        return -1;
    ev_io_init(&env->accept_w, accept_cb, env->listen_fd, EV_READ);
    env->accept_w.data = env;
    ev_io_start(env->loop, &env->accept_w);
    return 0;
}

void peer_stop_listening(struct peer_env *env)
{
    if (env->listen_fd < 0)
        return;
    ev_io_stop(env->loop, &env->accept_w);
    close(env->listen_fd);
    env->listen_fd = -1;
}

const struct peer_ident *peer_remote(const struct peer_link *l)
{
    return &l->remote;
}

bool peer_is_up(const struct peer_link *l)
{
    return l && l->state == HS_UP;
}

bool peer_dialed(const struct peer_link *l)
{
    return l->dialed;
}

const char *peer_address(const struct peer_link *l)
{
    return l->addr;
}

void *peer_ud(const struct peer_link *l)
{
    return l->ud;
}

void peer_set_ud(struct peer_link *l, void *ud)
{
    l->ud = ud;
}

/* ---- one blocking call over a sealed data link (peer_call) ---- */

static int wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        double left = deadline - ev_time();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = fd, .events = ev};
        int rc = poll(&p, 1, (int)(left * 1000) + 1);
        if (rc > 0)
            return 0;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

static int write_all(int fd, const void *buf, size_t len, double deadline)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) != 0)
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

static int write_frame(int fd, const void *payload, size_t len, double deadline)
{
    char hdr[DLINK_HDR];
    dlink_frame_prefix(hdr, len);
    return write_all(fd, hdr, sizeof(hdr), deadline) || write_all(fd, payload, len, deadline)
               ? -1
               : 0;
}

static int read_all(int fd, void *buf, size_t len, double deadline)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLIN, deadline) != 0)
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* One frame (malloc'd, with room for a NUL), or NULL. */
static unsigned char *read_frame(int fd, size_t *len, double deadline)
{
    unsigned char hdr[DLINK_HDR];
    if (read_all(fd, hdr, sizeof(hdr), deadline) != 0)
        return NULL;
    uint32_t n = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
                 (uint32_t)hdr[3] << 24;
    if (n > MAX_SEALED)
        return NULL;
    unsigned char *b = malloc((size_t)n + 1);
    if (!b || read_all(fd, b, n, deadline) != 0) {
        free(b);
        return NULL;
    }
    *len = n;
    return b;
}

int peer_call(const struct auth_key *key, const struct peer_ident *self, const char *host,
              int port, const void *req, size_t reqlen,
              int (*on_frame)(void *ud, const char *data, size_t len), void *ud,
              int timeout_ms, char *err, size_t errlen)
{
    double deadline = ev_time() + timeout_ms / 1000.0;
    int fd = -1, rc = -1;
    unsigned char *in = NULL, *out = NULL, *body = NULL, *sealed = NULL;
    size_t inlen = 0, outlen = 0, blen = 0;
    struct auth_client ac;
    unsigned char ks[DLINK_KEY_BYTES], kr[DLINK_KEY_BYTES];
    const char *why = "out of memory";
    char *me = NULL;
    char cwhy[300];
    auth_client_init(&ac, key);
    if ((fd = connect_start(host, port, cwhy, sizeof(cwhy))) < 0) {
        why = cwhy;
        goto out;
    }
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (wait_fd(fd, POLLOUT, deadline) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        why = "cannot connect";
        goto out;
    }
    why = "the handshake failed (another cookie, or not a cmcp node)";
    if (auth_client_hello(&ac, &out, &outlen) != AUTH_OK ||
        write_frame(fd, out, outlen, deadline) != 0)
        goto out;
    free(out);
    out = NULL;
    if (!(in = read_frame(fd, &inlen, deadline)) ||
        auth_client_auth(&ac, in, inlen, &out, &outlen) != AUTH_OK ||
        write_frame(fd, out, outlen, deadline) != 0)
        goto out;
    free(in);
    free(out);
    in = out = NULL;
    if (!(in = read_frame(fd, &inlen, deadline)) ||
        auth_client_welcome(&ac, in, inlen, &body, &blen) != AUTH_OK)
        goto out;
    free(in);
    in = NULL;
    /* our identity, sealed as peer links do; then the link is a sealed data link */
    me = ident_json(self);
    if (!me || auth_seal(&ac.s, AUTH_REQUEST, 0, me, strlen(me), &out, &outlen) < 0 ||
        write_frame(fd, out, outlen, deadline) != 0)
        goto out;
    dlink_keys(&ac.s, ks, kr);
    why = "out of memory";
    if (!(sealed = malloc(reqlen + DLINK_SEAL_TAG)))
        goto out;
    memcpy(sealed, req, reqlen);
    size_t sn = dlink_seal_payload(ks, 1, sealed, reqlen);
    why = "the connection broke";
    if (write_frame(fd, sealed, sn, deadline) != 0)
        goto out;
    for (uint64_t n = 1; n < 1000000; n++) {
        why = "no answer in time";
        if (!(in = read_frame(fd, &inlen, deadline)))
            goto out;
        size_t m;
        why = "a sealed frame did not open";
        if (dlink_open_payload(kr, n, in, inlen, &m) != 0)
            goto out;
        in[m] = '\0';
        int done = on_frame(ud, (const char *)in, m);
        free(in);
        in = NULL;
        if (done) {
            rc = 0;
            break;
        }
    }
out:
    if (rc != 0 && err)
        snprintf(err, errlen, "%s:%d: %s", host, port, why);
    if (fd >= 0)
        close(fd);
    free(in);
    free(out);
    free(body);
    free(sealed);
    free(me);
    sodium_memzero(&ac, sizeof(ac));
    sodium_memzero(ks, sizeof(ks));
    sodium_memzero(kr, sizeof(kr));
    return rc;
}
