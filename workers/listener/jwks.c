/*
 * [auth] jwks_url: the issuer's keys, fetched by the listener without ever blocking
 * its loop (docs/authorization.md, "Keys from jwks_url").
 *
 * libcurl's multi interface runs on the listener's libev loop: curl tells which
 * sockets to watch and when to time out (CURLMOPT_SOCKETFUNCTION,
 * CURLMOPT_TIMERFUNCTION), the loop tells curl what became ready
 * (curl_multi_socket_action), and the name lookup runs in curl's resolver
 * thread. One fetch at a time:
 *   - at start, and every jwks_refresh_s after a fetch that worked;
 *   - after a failure, again in 1, 2, 4 ... s (at most a minute, or jwks_refresh_s);
 *   - soon after a token names a kid the keys lack (the issuer may have rotated):
 *     at most one such fetch every REFETCH_MIN_S, however many tokens ask.
 * A document that is not a usable JWK Set changes nothing: the keys in use stay.
 *
 * The keys that worked are kept in data_dir (auth-jwks-<hash of the URL>.json,
 * written whole then renamed), so a listener that starts while the issuer
 * cannot be reached uses the last keys it had; with neither, requests get 503
 * (OAUTH_NO_KEYS) until a fetch works.
 *
 * libcurl (and the TLS library it brings) is loaded with dlopen when jwks_url is
 * set, as libjose is (workers/oauth/token.c says why): every process of a node
 * is this one binary, and only listeners with jwks_url need it.
 */
#define _GNU_SOURCE
#define CMCP_LAYER_LISTENER 1
#include "workers/listener/listener_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "ipc/stats.h"

#define CURL_SONAME "libcurl.so.4"
#define REFETCH_MIN_S 10.0   /* unknown kids fetch at most this often */
#define RETRY_MAX_S 60.0     /* the longest wait between failed fetches */
#define CONNECT_TIMEOUT_S 5L /* a fetch's connection, then the whole of it */
#define FETCH_TIMEOUT_S 15L
#define BODY_MAX (1 << 20) /* what oauth_set_keys takes at most */

static struct {
    bool tried, ok;
    char err[300];
    __typeof__(&curl_global_init) global_init;
    __typeof__(&curl_multi_init) multi_init;
    __typeof__(&curl_multi_setopt) multi_setopt;
    __typeof__(&curl_multi_add_handle) multi_add;
    __typeof__(&curl_multi_remove_handle) multi_remove;
    __typeof__(&curl_multi_socket_action) socket_action;
    __typeof__(&curl_multi_assign) multi_assign;
    __typeof__(&curl_multi_info_read) info_read;
    __typeof__(&curl_multi_cleanup) multi_cleanup;
    __typeof__(&curl_easy_init) easy_init;
    __typeof__(&curl_easy_setopt) easy_setopt;
    __typeof__(&curl_easy_getinfo) easy_getinfo;
    __typeof__(&curl_easy_cleanup) easy_cleanup;
    __typeof__(&curl_easy_strerror) easy_strerror;
} C;

/* One socket curl asked us to watch. */
struct csock {
    ev_io w;
    curl_socket_t fd;
};

static struct {
    bool on;
    struct ev_loop *loop;
    struct oauth *validator;
    char url[1024];
    char cache[PATH_MAX];
    double refresh_s;
    CURLM *multi;
    CURL *easy;             /* the fetch under way, or NULL */
    char *body;             /* its body so far */
    size_t len;
    bool too_big;
    char curl_err[CURL_ERROR_SIZE];
    ev_timer curl_timer;    /* curl's own timeout */
    ev_timer next;          /* the next fetch */
    ev_tstamp last_start;   /* when the last fetch began (0: never) */
    int failures;           /* in a row */
    struct stats_metric *fetched[3];
} J;

enum { R_CHANGED, R_UNCHANGED, R_FAILED };

static int curl_load(char *err, size_t errlen)
{
    if (!C.tried) {
        C.tried = true;
        void *h = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            const char *why = dlerror();
            snprintf(C.err, sizeof(C.err),
                     "[auth] jwks_url needs %s (Debian's libcurl4, which tools/install-deps.sh "
                     "installs): %s",
                     CURL_SONAME, why ? why : "not found");
        } else {
#define SYM(f, name) *(void **)&C.f = dlsym(h, name)
            SYM(global_init, "curl_global_init");
            SYM(multi_init, "curl_multi_init");
            SYM(multi_setopt, "curl_multi_setopt");
            SYM(multi_add, "curl_multi_add_handle");
            SYM(multi_remove, "curl_multi_remove_handle");
            SYM(socket_action, "curl_multi_socket_action");
            SYM(multi_assign, "curl_multi_assign");
            SYM(info_read, "curl_multi_info_read");
            SYM(multi_cleanup, "curl_multi_cleanup");
            SYM(easy_init, "curl_easy_init");
            SYM(easy_setopt, "curl_easy_setopt");
            SYM(easy_getinfo, "curl_easy_getinfo");
            SYM(easy_cleanup, "curl_easy_cleanup");
            SYM(easy_strerror, "curl_easy_strerror");
#undef SYM
            C.ok = C.global_init && C.multi_init && C.multi_setopt && C.multi_add &&
                   C.multi_remove && C.socket_action && C.multi_assign && C.info_read &&
                   C.multi_cleanup && C.easy_init && C.easy_setopt && C.easy_getinfo &&
                   C.easy_cleanup && C.easy_strerror;
            if (!C.ok)
                snprintf(C.err, sizeof(C.err),
                         "[auth] jwks_url: %s lacks a function cmcp uses (the multi interface)",
                         CURL_SONAME);
            else if (C.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                C.ok = false;
                snprintf(C.err, sizeof(C.err), "[auth] jwks_url: curl_global_init failed");
            }
            /* never closed: the process fetches for its whole life */
        }
    }
    if (!C.ok)
        snprintf(err, errlen, "%s", C.err);
    return C.ok ? 0 : -1;
}

/* ---------------------------------------------------------------- the cache -- */

static char *read_small(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(BODY_MAX + 1);
    size_t n = buf ? fread(buf, 1, BODY_MAX + 1, f) : 0;
    bool bad = !buf || ferror(f) || n > BODY_MAX;
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void cache_write(const char *text, size_t len)
{
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", J.cache, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(text, 1, len, f) == len;
    if (f && fclose(f) != 0)
        ok = false;
    if (ok && rename(tmp, J.cache) == 0)
        return;
    log_warn("auth_jwks_cache_not_written", "{s:s,s:s,s:s}", "file", J.cache, "error",
             strerror(errno), "what_to_do",
             "make [node] data_dir writable: without the copy, a listener that starts while "
             "the issuer cannot be reached has no keys");
    unlink(tmp);
}

static void cache_load(void)
{
    size_t len = 0;
    char *text = read_small(J.cache, &len);
    if (!text)
        return;
    char err[400];
    struct stat st;
    long age = stat(J.cache, &st) == 0 ? (long)(time(NULL) - st.st_mtime) : -1;
    if (oauth_set_keys(J.validator, text, len, J.cache, err, sizeof(err)) < 0)
        log_warn("auth_jwks_cache_refused", "{s:s,s:s}", "file", J.cache, "error", err);
    else
        log_info("auth_jwks_from_cache", "{s:s,s:i,s:I}", "file", J.cache, "keys",
                 oauth_key_count(J.validator), "age_s", (json_int_t)age);
    free(text);
}

/* ----------------------------------------------------------- the fetching -- */

static void schedule(double after)
{
    ev_timer_stop(J.loop, &J.next);
    ev_timer_set(&J.next, after < 0 ? 0 : after, 0);
    ev_timer_start(J.loop, &J.next);
}

static void finish(CURLcode rc)
{
    long code = 0;
    C.easy_getinfo(J.easy, CURLINFO_RESPONSE_CODE, &code);
    char err[600];
    int result = R_FAILED;
    if (rc == CURLE_OK && code == 200) {
        char source[1100];
        snprintf(source, sizeof(source), "the document at %s", J.url);
        int k = oauth_set_keys(J.validator, J.body ? J.body : "", J.len, source, err,
                               sizeof(err));
        if (k == 0) {
            result = R_CHANGED;
            log_info("auth_jwks_fetched", "{s:s,s:i,s:b}", "jwks_url", J.url, "keys",
                     oauth_key_count(J.validator), "changed", 1);
            cache_write(J.body, J.len);
        } else if (k == 1) {
            result = R_UNCHANGED;
            log_debug("auth_jwks_fetched", "{s:s,s:i,s:b}", "jwks_url", J.url, "keys",
                      oauth_key_count(J.validator), "changed", 0);
        }
    } else if (J.too_big) {
        snprintf(err, sizeof(err), "the document is larger than 1 MiB");
    } else if (rc != CURLE_OK) {
        snprintf(err, sizeof(err), "%s%s%s", C.easy_strerror(rc), J.curl_err[0] ? ": " : "",
                 J.curl_err);
    } else {
        snprintf(err, sizeof(err), "HTTP status %ld (expected 200)", code);
    }
    J.fetched[result]->value += 1;
    double after = J.refresh_s;
    if (result == R_FAILED) {
        J.failures++;
        after = 1.0;
        for (int i = 1; i < J.failures && after < RETRY_MAX_S; i++)
            after *= 2;
        if (after > RETRY_MAX_S)
            after = RETRY_MAX_S;
        if (after > J.refresh_s)
            after = J.refresh_s;
        log_warn("auth_jwks_fetch_failed", "{s:s,s:s,s:i,s:i,s:f,s:s}", "jwks_url", J.url,
                 "error", err, "failures", J.failures, "keys_kept",
                 oauth_key_count(J.validator), "retry_in_s", after, "what_to_do",
                 oauth_key_count(J.validator)
                     ? "check that the issuer's jwks_uri answers from this host; the keys "
                       "fetched before stay in use"
                     : "check that the issuer's jwks_uri answers from this host; until a "
                       "fetch works, requests are answered 503");
    } else {
        J.failures = 0;
    }
    C.multi_remove(J.multi, J.easy);
    C.easy_cleanup(J.easy);
    J.easy = NULL;
    free(J.body);
    J.body = NULL;
    J.len = 0;
    schedule(after);
}

static void check_done(void)
{
    CURLMsg *m;
    int left;
    while ((m = C.info_read(J.multi, &left)))
        if (m->msg == CURLMSG_DONE && m->easy_handle == J.easy)
            finish(m->data.result);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ud;
    size_t n = size * nmemb;
    if (J.len + n > BODY_MAX) {
        J.too_big = true;
        return 0; /* curl stops the transfer */
    }
    char *b = realloc(J.body, J.len + n + 1);
    if (!b)
        return 0;
    memcpy(b + J.len, ptr, n);
    J.len += n;
    b[J.len] = '\0';
    J.body = b;
    return n;
}

static void on_sock_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct csock *cs = w->data;
    int flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
                (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    C.socket_action(J.multi, cs->fd, flags, &running);
    check_done();
}

/* CURLMOPT_SOCKETFUNCTION: what to watch on one of curl's sockets. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp)
{
    (void)e;
    (void)ud;
    struct csock *cs = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            ev_io_stop(J.loop, &cs->w);
            C.multi_assign(J.multi, fd, NULL);
            free(cs);
        }
        return 0;
    }
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return -1;
        cs->fd = fd;
        cs->w.data = cs;
        C.multi_assign(J.multi, fd, cs);
    } else {
        ev_io_stop(J.loop, &cs->w);
    }
    int ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    ev_io_init(&cs->w, on_sock_ready, fd, ev);
    cs->w.data = cs;
    ev_io_start(J.loop, &cs->w);
    return 0;
}

static void on_curl_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    int running;
    C.socket_action(J.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done();
}

/* CURLMOPT_TIMERFUNCTION: when curl wants to be called without socket activity. */
static int on_timer(CURLM *m, long timeout_ms, void *ud)
{
    (void)m;
    (void)ud;
    ev_timer_stop(J.loop, &J.curl_timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&J.curl_timer, (double)timeout_ms / 1000.0, 0);
        ev_timer_start(J.loop, &J.curl_timer);
    }
    return 0;
}

static void fetch(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    if (J.easy)
        return; /* one at a time */
    J.easy = C.easy_init();
    if (!J.easy) {
        J.fetched[R_FAILED]->value += 1;
        schedule(RETRY_MAX_S);
        return;
    }
    J.last_start = ev_now(loop);
    J.too_big = false;
    J.curl_err[0] = '\0';
    bool https = strncmp(J.url, "https://", 8) == 0;
    C.easy_setopt(J.easy, CURLOPT_URL, J.url);
    C.easy_setopt(J.easy, CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
    C.easy_setopt(J.easy, CURLOPT_FOLLOWLOCATION, 1L);
    C.easy_setopt(J.easy, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http");
    C.easy_setopt(J.easy, CURLOPT_MAXREDIRS, 3L);
    C.easy_setopt(J.easy, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    C.easy_setopt(J.easy, CURLOPT_TIMEOUT, FETCH_TIMEOUT_S);
    C.easy_setopt(J.easy, CURLOPT_NOSIGNAL, 1L);
    C.easy_setopt(J.easy, CURLOPT_USERAGENT, "cmcp/" CMCP_VERSION " (jwks)");
    C.easy_setopt(J.easy, CURLOPT_ACCEPT_ENCODING, "");
    C.easy_setopt(J.easy, CURLOPT_WRITEFUNCTION, on_body);
    C.easy_setopt(J.easy, CURLOPT_ERRORBUFFER, J.curl_err);
    C.easy_setopt(J.easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)BODY_MAX);
    if (C.multi_add(J.multi, J.easy) != CURLM_OK) {
        C.easy_cleanup(J.easy);
        J.easy = NULL;
        J.fetched[R_FAILED]->value += 1;
        schedule(RETRY_MAX_S);
    }
}

/* ------------------------------------------------------------- interface -- */

int jwks_start(struct ev_loop *loop, struct oauth *validator, const char *data_dir, char *err,
               size_t errlen)
{
    const struct oauth_conf *oc = oauth_get_conf(validator);
    if (!oc->jwks_url[0])
        return 0;
    if (curl_load(err, errlen) != 0)
        return -1;
    memset(&J, 0, sizeof(J));
    J.loop = loop;
    J.validator = validator;
    cmcp_strlcpy(J.url, sizeof(J.url), oc->jwks_url);
    J.refresh_s = (double)oc->jwks_refresh_s;
    unsigned char d[crypto_hash_sha256_BYTES];
    char hex[17];
    crypto_hash_sha256(d, (const unsigned char *)J.url, strlen(J.url));
    sodium_bin2hex(hex, sizeof(hex), d, 8);
    if (cmcp_mkdir_p(data_dir, 0755) != 0)
        log_warn("auth_jwks_cache_not_written", "{s:s,s:s}", "file", data_dir, "error",
                 strerror(errno));
    snprintf(J.cache, sizeof(J.cache), "%s/auth-jwks-%s.json", data_dir, hex);
    static const char *results[3] = {"changed", "unchanged", "failed"};
    for (int i = 0; i < 3; i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "result=\"%s\"", results[i]);
        J.fetched[i] = stats_counter("cmcp_auth_jwks_fetches_total", labels);
    }
    J.multi = C.multi_init();
    if (!J.multi) {
        snprintf(err, errlen, "[auth] jwks_url: curl_multi_init failed");
        return -1;
    }
    C.multi_setopt(J.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    C.multi_setopt(J.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    ev_timer_init(&J.curl_timer, on_curl_timeout, 0, 0);
    ev_timer_init(&J.next, fetch, 0, 0);
    J.on = true;
    cache_load();
    schedule(0);
    return 0;
}

void jwks_unknown_key(void)
{
    if (!J.on || J.easy)
        return;
    ev_tstamp now = ev_now(J.loop);
    double at = J.last_start ? J.last_start + REFETCH_MIN_S : now;
    double due = ev_timer_remaining(J.loop, &J.next);
    if (!ev_is_active(&J.next) || at - now < due)
        schedule(at - now);
}

void jwks_stop(void)
{
    if (!J.on)
        return;
    J.on = false;
    ev_timer_stop(J.loop, &J.next);
    if (J.easy) {
        C.multi_remove(J.multi, J.easy); /* its sockets are removed through on_socket */
        C.easy_cleanup(J.easy);
        J.easy = NULL;
    }
    C.multi_cleanup(J.multi);
    ev_timer_stop(J.loop, &J.curl_timer);
    free(J.body);
    J.body = NULL;
}
