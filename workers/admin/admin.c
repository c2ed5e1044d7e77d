/*
 * Role `admin`, socket side: authentication (ipc/auth.h), the sealed
 * request/response exchange, and the node-wide state it owns (drain, log
 * level), broadcast on ipc://RUN/control.sock and kept in RUN/control.state.
 *
 * Nothing is executed before a message verifies under an authenticated
 * session's key with a fresh counter. Every refusal is logged with the peer's
 * address and counted (cmcp_admin_auth_failures_total{reason}).
 */
#define _GNU_SOURCE
#include "workers/admin/admin_int.h"

#include <arpa/inet.h>
#include <ev.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/addr.h"
#include "ipc/admin_proto.h"
#include "ipc/auth.h"
#include "base/cmcp.h"
#include "ipc/control.h"
#include "ipc/cview.h"
#include "base/log.h"
#include "ipc/stats.h"

#define RETRY_LISTEN 2.0
#define MAX_REQUEST (1 << 20) /* bytes; larger messages are dropped by nng before we see them */

struct admin_state admin_g;

static struct ev_loop *loop;
static nng_socket rep, pub;
static bool rep_open;
static ev_io rep_w;
static ev_timer retry_w, state_w, shutdown_w;
static ev_signal sigterm_w, sigint_w;
static struct auth_key key;
static struct auth_server authsrv;

const struct auth_key *admin_cookie_key(void)
{
    return &key;
}
static char endpoint[512];
static int listen_failures;
static bool level_set; /* log_level was set by an admin (broadcast it; else leave levels be) */

/* ---- node-wide state ---- */

static void broadcast(json_t *msg)
{
    char *text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    if (text && nng_send(pub, text, strlen(text), NNG_FLAG_NONBLOCK) != 0)
        log_debug("control_broadcast_dropped", NULL);
    free(text);
}

static void broadcast_state(void)
{
    json_t *m = json_pack("{s:s,s:b}", "op", "state", "drain", admin_g.draining);
    json_object_set_new(m, "log_level", level_set ? json_string(admin_g.log_level) : json_null());
    broadcast(m);
}

static void persist(void)
{
    control_state_write(admin_g.a->run_dir, admin_g.draining, level_set ? admin_g.log_level : NULL);
}

void admin_set_drain(bool drain)
{
    if (admin_g.draining != drain)
        log_notice(drain ? "node_draining" : "node_undrained", "{s:s}", "by", "admin");
    admin_g.draining = drain;
    stats_gauge("cmcp_node_draining", "")->value = drain ? 1 : 0;
    persist();
    broadcast(json_pack("{s:s}", "op", drain ? "drain" : "undrain"));
    stats_publish_now(); /* /health says so at once */
}

int admin_set_log_level(const char *level)
{
    enum log_level l;
    if (log_level_parse(level, &l) != 0)
        return -1;
    snprintf(admin_g.log_level, sizeof(admin_g.log_level), "%s", log_level_name(l));
    level_set = true;
    log_set_level(l);
    log_notice("log_level_set", "{s:s,s:s}", "level", admin_g.log_level, "by", "admin");
    persist();
    broadcast(json_pack("{s:s,s:s}", "op", "log_level", "level", admin_g.log_level));
    return 0;
}

static long root_pid(void)
{
    const char *p = getenv("CMCP_ROOT_PID");
    return p ? atol(p) : (long)getppid();
}

static void shutdown_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    long pid = root_pid();
    log_notice("node_shutdown_requested", "{s:s,s:I}", "by", "admin", "root_pid",
               (json_int_t)pid);
    if (pid > 1)
        kill((pid_t)pid, SIGTERM);
}

void admin_request_shutdown(void)
{
    /* The answer leaves first; then the root stops the tree (this process included). */
    admin_g.shutdown_requested = true;
    ev_timer_init(&shutdown_w, shutdown_cb, 0.1, 0);
    ev_timer_start(loop, &shutdown_w);
}

static void state_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    broadcast_state(); /* repairs whatever pub/sub dropped; reaches processes started since */
}

/* ---- the exchange ---- */

static void describe_peer(nng_msg *m, char *buf, size_t len)
{
    nng_sockaddr sa;
    snprintf(buf, len, "unknown");
    if (nng_pipe_get_addr(nng_msg_get_pipe(m), NNG_OPT_REMADDR, &sa) != 0)
        return;
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa.s_family == NNG_AF_INET) {
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(sa.s_in.sa_port));
    } else if (sa.s_family == NNG_AF_INET6) {
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(sa.s_in6.sa_port));
    } else if (sa.s_family == NNG_AF_IPC) {
        snprintf(buf, len, "ipc");
    }
}

static const char *reason_code(int rc)
{
    switch (rc) {
    case AUTH_E_PROOF:
        return "wrong_cookie";
    case AUTH_E_SESSION:
        return "unknown_session";
    case AUTH_E_REPLAY:
        return "replay";
    case AUTH_E_TAMPERED:
        return "tampered";
    case AUTH_E_STATE:
        return "out_of_sequence";
    default:
        return "malformed";
    }
}

/*
 * Failed proofs (a wrong cookie) are rate-limited per source host: after THROTTLE_FAILS in
 * THROTTLE_WINDOW seconds, that host's handshakes are refused until the window has passed,
 * so the cookie cannot be guessed at the speed of the socket. Other hosts are not affected.
 */
#define THROTTLE_FAILS 10
#define THROTTLE_WINDOW 10.0
#define THROTTLE_HOSTS 32

static struct throttle {
    char host[64];
    double first, until;
    int fails;
} thr[THROTTLE_HOSTS];

static void host_of(const char *peer, char *host, size_t len)
{
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    snprintf(host, len, "%.*s", (int)n, peer);
}

static struct throttle *throttle_find(const char *peer, bool create, double now)
{
    char host[64];
    host_of(peer, host, sizeof(host));
    struct throttle *oldest = &thr[0];
    for (int i = 0; i < THROTTLE_HOSTS; i++) {
        if (thr[i].host[0] && strcmp(thr[i].host, host) == 0)
            return &thr[i];
        if (thr[i].first < oldest->first)
            oldest = &thr[i];
    }
    if (!create)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    snprintf(oldest->host, sizeof(oldest->host), "%s", host);
    oldest->first = now;
    return oldest;
}

static void note_failed_proof(const char *peer, double now)
{
    struct throttle *t = throttle_find(peer, true, now);
    if (now - t->first > THROTTLE_WINDOW) {
        t->first = now;
        t->fails = 0;
    }
    if (++t->fails >= THROTTLE_FAILS && t->until < now) {
        t->until = now + THROTTLE_WINDOW;
        log_warn("admin_auth_throttled", "{s:s,s:i,s:f,s:f}", "host", t->host, "failures",
                 t->fails, "window_s", THROTTLE_WINDOW, "refused_for_s", THROTTLE_WINDOW);
    }
}

/* Seconds this peer's host must still wait, or 0. */
static double throttled_for(const char *peer, double now)
{
    struct throttle *t = throttle_find(peer, false, now);
    return t && t->until > now ? t->until - now : 0;
}

/* Logs and counts a refusal; the answer is a clear ERROR (nothing else can be trusted). */
static void refuse(int rc, const unsigned char *sid, const char *peer, uint8_t **out,
                   size_t *outlen)
{
    if (rc == AUTH_E_PROOF)
        note_failed_proof(peer, ev_now(loop));
    const char *code = reason_code(rc);
    char labels[64];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", code);
    stats_counter("cmcp_admin_auth_failures_total", labels)->value += 1;
    log_warn("admin_refused", "{s:s,s:s,s:s}", "reason", code, "detail", auth_strerror(rc), "peer",
             peer);
    char text[300];
    snprintf(text, sizeof(text), "refused (%s): %s", code, auth_strerror(rc));
    auth_error_msg(sid, text, out, outlen);
}

static void count_command(const char *cmd, bool ok)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "command=\"%s\",outcome=\"%s\"", cmd, ok ? "ok" : "error");
    stats_counter("cmcp_admin_commands_total", labels)->value += 1;
}

/* A verified request: run it, seal the answer. */
static void execute(struct auth_session *s, uint64_t ref, const uint8_t *pt, size_t ptlen,
                    const char *peer, uint8_t **out, size_t *outlen)
{
    json_error_t jerr;
    json_t *req = json_loadb((const char *)pt, ptlen, 0, &jerr);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    json_t *resp;
    if (!cmd) {
        resp = admin_reply_fail("badarg", "a request is {\"cmd\": NAME, \"args\": {...}}");
    } else {
        bool known = admin_cmd_find(cmd) != NULL;
        resp = admin_run(cmd, json_object_get(req, "args"));
        bool ok = json_is_true(json_object_get(resp, "ok"));
        /* Bounded label values: unknown names are counted together. */
        count_command(known ? cmd : "unknown", ok);
        log_info("admin_command", "{s:s,s:O?,s:s,s:b,s:s?}", "cmd", cmd, "args",
                 json_object_get(req, "args"), "peer", peer, "ok", ok, "error",
                 json_string_value(json_object_get(resp, "error")));
    }
    json_decref(req);
    char *text = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    if (!text)
        text = strdup("{\"ok\":false,\"error\":\"nomem\",\"message\":\"out of memory\"}");
    if (text && auth_seal(s, AUTH_RESPONSE, ref, text, strlen(text), out, outlen) < 0)
        *out = NULL;
    free(text);
}

static void handle(const uint8_t *in, size_t len, const char *peer, uint8_t **out,
                   size_t *outlen)
{
    double now = ev_now(loop);
    struct auth_header h;
    int rc = auth_header_parse(in, len, &h);
    if (rc != AUTH_OK) {
        refuse(rc, NULL, peer, out, outlen);
        return;
    }
    double wait = (h.type == AUTH_HELLO || h.type == AUTH_AUTH) ? throttled_for(peer, now) : 0;
    if (wait > 0) {
        stats_counter("cmcp_admin_auth_throttled_total", "")->value += 1;
        char text[300];
        snprintf(text, sizeof(text),
                 "refused: too many failed authentications from this host (at least %d in "
                 "%.0f s); wait %.0f s, and check the cookie file",
                 THROTTLE_FAILS, THROTTLE_WINDOW, wait + 0.5);
        auth_error_msg(h.sid, text, out, outlen);
        return;
    }
    switch (h.type) {
    case AUTH_HELLO:
        rc = auth_server_hello(&authsrv, in, len, now, out, outlen);
        break;
    case AUTH_AUTH: {
        char welcome[300];
        snprintf(welcome, sizeof(welcome), "{\"node\":\"%s\",\"version\":\"%s\",\"pid\":%ld}",
                 admin_g.a->node, CMCP_VERSION, root_pid());
        rc = auth_server_auth(&authsrv, in, len, now, welcome, out, outlen);
        if (rc == AUTH_OK)
            log_info("admin_authenticated", "{s:s}", "peer", peer);
        break;
    }
    case AUTH_REQUEST: {
        struct auth_session *s = auth_server_session(&authsrv, in, len, now);
        uint8_t *pt = NULL;
        size_t ptlen = 0;
        rc = s ? auth_open(s, AUTH_REQUEST, in, len, &h, &pt, &ptlen) : AUTH_E_SESSION;
        if (rc == AUTH_OK) {
            s->last_used = now;
            execute(s, h.ctr, pt, ptlen, peer, out, outlen);
            free(pt);
        }
        break;
    }
    default:
        rc = AUTH_E_MALFORMED;
    }
    if (rc != AUTH_OK)
        refuse(rc, h.sid, peer, out, outlen);
}

static void rep_cb(struct ev_loop *l, ev_io *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
    for (int n = 0; n < 16 && !admin_g.shutdown_requested; n++) {
        nng_msg *m;
        if (nng_recvmsg(rep, &m, NNG_FLAG_NONBLOCK) != 0)
            return;
        char peer[80];
        describe_peer(m, peer, sizeof(peer));
        uint8_t *out = NULL;
        size_t outlen = 0;
        handle(nng_msg_body(m), nng_msg_len(m), peer, &out, &outlen);
        nng_msg_free(m);
        if (!out) {
            static const char oom[] = "CMCP out of memory";
            nng_send(rep, (void *)oom, sizeof(oom) - 1, 0);
            continue;
        }
        /* Not NNG_FLAG_NONBLOCK: rep0 drops a reply outright when the pipe is still busy
         * with the previous one (cmcpctl's handshake is three exchanges in a row), and the
         * client would wait for nothing. The wait is short; SENDTIMEO bounds it. */
        int rv = nng_send(rep, out, outlen, 0);
        if (rv != 0)
            log_warn("admin_reply_failed", "{s:s,s:s}", "peer", peer, "error", nng_strerror(rv));
        free(out);
    }
}

/* ---- setup ---- */

/* tcp://127.0.0.1:9300, tcp://localhost:9300, tcp://[::1]:9300 and ipc:// stay on this host. */
static bool endpoint_is_local(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0)
        return true;
    const char *h = strstr(ep, "://");
    if (!h)
        return false;
    h += 3;
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
           strncmp(h, "[::1]:", 6) == 0;
}

static int try_listen(void)
{
    int rv, fd;
    if ((rv = nng_listen(rep, endpoint, NULL, 0)) != 0) {
        listen_failures++;
        if (listen_failures == 1 || listen_failures % 30 == 0)
            log_error("admin_listen_failed", "{s:s,s:s,s:i,s:s}", "endpoint", endpoint, "error",
                      nng_strerror(rv), "attempts", listen_failures, "hint",
                      "another program holds the address: free it or set [admin] endpoint "
                      "(empty turns the admin socket off); retrying every 2 s");
        return -1;
    }
    nng_socket_get_int(rep, NNG_OPT_RECVFD, &fd);
    ev_io_init(&rep_w, rep_cb, fd, EV_READ);
    ev_io_start(loop, &rep_w);
    log_info("admin_listening", "{s:s,s:i}", "endpoint", endpoint, "attempts",
             listen_failures + 1);
    return 0;
}

static void retry_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)revents;
    if (try_listen() == 0)
        ev_timer_stop(l, w);
}

static void on_signal(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ALL);
}

/*
 * The node is stopping (its root supervisor says it is shutting down, and stops the admin
 * worker first): with [admin] drain_on_stop_ms, a clustered node first stops taking new
 * sessions (/health 503, so load balancers stop sending) and hands its partitions to
 * members holding copies, for at most that long, while its listeners and shards still
 * serve. A stop of the admin worker alone (restart_child) does not drain.
 */
static void drain_on_stop(void)
{
    long max_ms = cfg_get_long(&admin_g.a->cfg, "admin", "drain_on_stop_ms", 0);
    if (max_ms <= 0)
        return;
    char err[300];
    json_t *r = admin_sup_call("root", json_pack("{s:s}", "op", "status"), err, sizeof(err),
                               NULL);
    bool stopping = json_is_true(json_object_get(r, "stopping"));
    json_decref(r);
    if (!stopping)
        return;
    admin_set_drain(true);
    double t0 = cmcp_now_ms();
    json_t *fail = NULL, *d = admin_cluster_drain((double)max_ms, &fail);
    if (!d) {
        log_info("node_drain_on_stop", "{s:s,s:O?}", "result", "not in a cluster", "why",
                 json_object_get(fail, "message"));
        json_decref(fail);
        return;
    }
    json_int_t left = json_integer_value(json_object_get(d, "owned_left"));
    if (left > 0 && json_real_value(json_object_get(d, "waited_ms")) == 0.0) {
        log_info("node_drain_on_stop", "{s:s}", "result", "no other member is up");
        json_decref(d);
        return;
    }
    /* A load balancer checking /health (HAProxy: every second, out after two 503s) takes
     * the node out before it stops listening: requests keep reaching a node that serves. */
    double linger = max_ms < 3000 ? (double)max_ms : 3000.0;
    while (cmcp_now_ms() - t0 < linger)
        usleep(50000);
    log_event(left == 0 ? LOG_NOTICE : LOG_WARNING, "node_drain_on_stop", "{s:I,s:O,s:s}",
              "owned_left", left, "waited_ms", json_object_get(d, "waited_ms"), "result",
              left == 0 ? "every partition handed over" : "stopping with partitions still owned");
    json_decref(d);
}

/* Restores drain and log level of this run of the node (a restarted admin worker). */
static void restore_state(void)
{
    json_t *st = control_state_read(admin_g.a->run_dir);
    if (!st)
        return;
    admin_g.draining = json_is_true(json_object_get(st, "drain"));
    const char *lv = json_string_value(json_object_get(st, "log_level"));
    enum log_level l;
    if (lv && log_level_parse(lv, &l) == 0) {
        snprintf(admin_g.log_level, sizeof(admin_g.log_level), "%s", log_level_name(l));
        level_set = true;
        log_set_level(l);
    }
    json_decref(st);
    log_info("admin_state_restored", "{s:b,s:s}", "draining", admin_g.draining, "log_level",
             admin_g.log_level);
}

static int open_admin_socket(void)
{
    const char *cookie = getenv("CMCP_COOKIE_FILE");
    if (!cookie || !*cookie)
        cookie = cfg_get(&admin_g.a->cfg, "admin", "cookie_file", "./var/cookie");
    bool local = endpoint_is_local(endpoint);
    char err[600];
    bool created = false;
    /* Off this host, a cookie nobody has seen yet would lock everyone out or, worse, be
     * one an attacker raced us to: demand a file the operator put there. */
    if (auth_cookie_load(cookie, local, &key, &created, err, sizeof(err)) != 0) {
        log_error("admin_cookie_error", "{s:s,s:s,s:s}", "cookie_file", cookie, "error", err,
                  "endpoint", endpoint);
        fprintf(stderr, "cmcpd: admin: %s%s\n", err,
                local ? "" : " (an admin endpoint off loopback needs an existing cookie file)");
        return CMCP_EXIT_USAGE;
    }
    if (created)
        log_notice("admin_cookie_created", "{s:s,s:s}", "cookie_file", cookie, "mode", "0600");
    auth_server_init(&authsrv, &key);
    int rv;
    if ((rv = nng_rep0_open(&rep)) != 0) {
        log_error("admin_start_failed", "{s:s}", "error", nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    nng_socket_set_size(rep, NNG_OPT_RECVMAXSZ, MAX_REQUEST);
    nng_socket_set_ms(rep, NNG_OPT_SENDTIMEO, 2000); /* a client that does not read its answer */
    rep_open = true;
    if (try_listen() != 0) {
        /* The node serves without its admin socket rather than restart-looping for it. */
        ev_timer_init(&retry_w, retry_cb, RETRY_LISTEN, RETRY_LISTEN);
        ev_timer_start(loop, &retry_w);
    }
    return 0;
}

int admin_main(struct proc_args *a)
{
    memset(&admin_g, 0, sizeof(admin_g));
    admin_g.a = a;
    admin_g.timeout_ms = (int)cfg_get_long(&a->cfg, "admin", "timeout_ms", 5000);
    admin_g.nshards = (int)cfg_get_long(&a->cfg, "tree.shard", "count", 1);
    snprintf(admin_g.log_level, sizeof(admin_g.log_level), "%s",
             cfg_get(&a->cfg, "node", "log_level", "info"));
    snprintf(endpoint, sizeof(endpoint), "%s", cfg_get(&a->cfg, "admin", "endpoint", ""));
    loop = ev_default_loop(EVFLAG_SIGNALFD);
    restore_state();

    char addr[512];
    ipc_addr_control(addr, sizeof(addr), a->run_dir);
    int rv;
    if ((rv = nng_pub0_open(&pub)) != 0 || (rv = nng_listen(pub, addr, NULL, 0)) != 0) {
        log_error("admin_start_failed", "{s:s,s:s,s:s}", "address", addr, "error",
                  nng_strerror(rv), "hint",
                  "another node may be using this run directory; give each node its own");
        fprintf(stderr, "cmcpd: admin: cannot listen on %s: %s\n", addr, nng_strerror(rv));
        return CMCP_EXIT_FAILURE;
    }
    if (endpoint[0]) {
        int code = open_admin_socket();
        if (code != 0)
            return code;
    } else {
        log_notice("admin_socket_off", "{s:s}", "hint", "set [admin] endpoint to use cmcpctl");
    }
    stats_init(loop, a->run_dir, "admin", a->id);
    /* counters an alert reads are there at 0 from the start */
    static const char *const reasons[] = {"wrong_cookie", "unknown_session", "replay",
                                          "tampered", "out_of_sequence", "malformed"};
    for (size_t i = 0; i < CMCP_ARRAY_LEN(reasons); i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "reason=\"%s\"", reasons[i]);
        stats_counter("cmcp_admin_auth_failures_total", labels);
    }
    stats_counter("cmcp_admin_auth_throttled_total", "");
    cview_subscribe(loop, a->run_dir, NULL); /* the fence, for cluster status */
    stats_gauge("cmcp_node_draining", "")->value = admin_g.draining ? 1 : 0;
    ev_timer_init(&state_w, state_cb, 1.0, 1.0);
    ev_timer_start(loop, &state_w);
    ev_signal_init(&sigterm_w, on_signal, SIGTERM);
    ev_signal_start(loop, &sigterm_w);
    ev_signal_init(&sigint_w, on_signal, SIGINT);
    ev_signal_start(loop, &sigint_w);
    log_info("admin_ready", "{s:s,s:b,s:s}", "endpoint", endpoint, "draining", admin_g.draining,
             "control", addr);
    proc_notify_ready(a);
    stats_publish_now();
    ev_run(loop, 0);

    drain_on_stop();
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    ev_timer_stop(loop, &retry_w);
    stats_shutdown();
    if (rep_open)
        nng_close(rep);
    nng_close(pub);
    unlink(addr + strlen("ipc://"));
    sodium_memzero(&key, sizeof(key));
    log_info("admin_stopped", NULL);
    return 0;
}
