/*
 * cmcpctl: the remote admin shell of a cmcp node. It speaks nng req/rep to
 * the node's admin socket; every exchange is authenticated with the cluster
 * cookie and sealed (ipc/auth.h). docs/operations.md shows it in use.
 */
#define _GNU_SOURCE
#include "tools/cmcpctl.h"

#include <errno.h>
#include <netdb.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc/auth.h"
#include "base/cmcp.h"
#include "base/config.h"
#include "node/schema.h"

struct ctl_opts O = {NULL, NULL, false, 30.0, false};

static nng_socket sock;
static bool sock_open;
static struct auth_key key;
static bool key_loaded;
static struct auth_client client;
static char node_name[128] = "?";

const char *ctl_node_name(void)
{
    return node_name;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmcpctl [OPTIONS] COMMAND [ARGS...]\n"
            "       cmcpctl [OPTIONS] shell        an interactive shell (history, tab completion)\n"
            "\n"
            "Speaks to a cmcp node's admin socket, authenticated with the node's cookie.\n"
            "\n"
            "Options:\n"
            "  -n, --node ENDPOINT   the admin socket (default: the configuration's [admin]\n"
            "                        endpoint, tcp://127.0.0.1:9300)\n"
            "      --cookie-file F   the cookie file (default: $CMCP_COOKIE_FILE, else the\n"
            "                        configuration's [admin] cookie_file, ./var/cookie)\n"
            "  -c, --config FILE     read endpoint and cookie file from a node's configuration\n"
            "      --json            print answers as JSON\n"
            "      --timeout SECONDS how long to wait for the node (default 30)\n"
            "  -h, --help            this text\n"
            "  -V, --version         print the version\n"
            "\n");
    ctl_usage_commands(f);
    fprintf(f, "\nExit status: 0 success, 1 the command failed on the node, 2 usage,\n"
               "3 cannot connect, 4 authentication refused.\n");
}

/* ---- connection ---- */

/*
 * nng's blocking dial waits as long as the kernel's connect does (minutes for
 * a host that drops packets): try the TCP connection ourselves first, with
 * our timeout, so that the error says what happened.
 */
static int tcp_precheck(const char *ep, char *err, size_t errlen)
{
    const char *h = NULL;
    if (strncmp(ep, "tcp://", 6) == 0)
        h = ep + 6;
    else if (strncmp(ep, "tcp4://", 7) == 0 || strncmp(ep, "tcp6://", 7) == 0)
        h = ep + 7;
    if (!h)
        return 0;
    char host[256];
    const char *colon = strrchr(h, ':');
    if (!colon || (size_t)(colon - h) >= sizeof(host)) {
        snprintf(err, errlen, "endpoint %s has no port (tcp://HOST:PORT)", ep);
        return -1;
    }
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    char *hp = host;
    if (hp[0] == '[') {
        hp++;
        hp[strcspn(hp, "]")] = '\0';
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(hp[0] ? hp : NULL, colon + 1, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", hp, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int e = 0;
    if (fd < 0) {
        e = errno;
    } else if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        e = errno;
        if (e == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int n = poll(&p, 1, (int)(O.timeout_s * 1000));
            socklen_t l = sizeof(e);
            if (n == 0)
                e = ETIMEDOUT;
            else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0)
                e = errno;
        }
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    if (e) {
        snprintf(err, errlen, "cannot connect to %s: %s%s", ep, strerror(e),
                 e == ECONNREFUSED ? " (is the node running, with this [admin] endpoint?)" : "");
        return -1;
    }
    return 0;
}

/* One exchange. -1 after saying why (no reply in time, connection lost). */
static int exchange(const uint8_t *out, size_t outlen, uint8_t **in, size_t *inlen)
{
    int rv = nng_send(sock, (void *)out, outlen, 0);
    if (rv == 0)
        rv = nng_recv(sock, in, inlen, NNG_FLAG_ALLOC);
    if (rv != 0) {
        fprintf(stderr, "cmcpctl: no answer from %s: %s\n", O.endpoint,
                rv == NNG_ETIMEDOUT ? "timed out (--timeout sets how long to wait)"
                                    : nng_strerror(rv));
        return -1;
    }
    return 0;
}

/* The text of a clear ERROR message (the node's refusal), into buf. */
static bool error_text(const uint8_t *msg, size_t len, char *buf, size_t buflen)
{
    struct auth_header h;
    if (auth_header_parse(msg, len, &h) != AUTH_OK || h.type != AUTH_ERROR)
        return false;
    size_t n = len - AUTH_HEADER_BYTES;
    if (n >= buflen)
        n = buflen - 1;
    memcpy(buf, msg + AUTH_HEADER_BYTES, n);
    buf[n] = '\0';
    return true;
}

static int handshake(void)
{
    uint8_t *m = NULL, *r = NULL;
    size_t ml, rl;
    char text[400];
    auth_client_init(&client, &key);
    auth_client_hello(&client, &m, &ml);
    int rc = exchange(m, ml, &r, &rl);
    free(m);
    if (rc != 0)
        return CTL_CONNECT;
    m = NULL;
    rc = auth_client_auth(&client, r, rl, &m, &ml);
    if (rc != AUTH_OK) {
        bool refused = error_text(r, rl, text, sizeof(text));
        nng_free(r, rl);
        if (refused) {
            fprintf(stderr, "cmcpctl: the node refused the handshake: %s\n", text);
            return CTL_AUTH;
        }
        fprintf(stderr, "cmcpctl: %s does not speak the cmcp admin protocol (%s)\n", O.endpoint,
                auth_strerror(rc));
        return CTL_CONNECT;
    }
    nng_free(r, rl);
    rc = exchange(m, ml, &r, &rl);
    free(m);
    if (rc != 0)
        return CTL_CONNECT;
    uint8_t *body = NULL;
    size_t bl;
    rc = auth_client_welcome(&client, r, rl, &body, &bl);
    bool refused = rc != AUTH_OK && error_text(r, rl, text, sizeof(text));
    nng_free(r, rl);
    if (rc != AUTH_OK) {
        if (refused)
            fprintf(stderr,
                    "cmcpctl: authentication refused by the node (%s): is %s the node's cookie "
                    "file?\n",
                    text, O.cookie_file);
        else if (rc == AUTH_E_PROOF)
            fprintf(stderr,
                    "cmcpctl: authentication failed: the node at %s could not prove it holds "
                    "our cookie (%s); not connecting\n",
                    O.endpoint, O.cookie_file);
        else
            fprintf(stderr, "cmcpctl: authentication failed: %s\n", auth_strerror(rc));
        return CTL_AUTH;
    }
    json_t *w = json_loadb((const char *)body, bl, 0, NULL);
    const char *nn = json_string_value(json_object_get(w, "node"));
    if (nn)
        snprintf(node_name, sizeof(node_name), "%s", nn);
    json_decref(w);
    free(body);
    return CTL_OK;
}

int ctl_connect(void)
{
    char err[600];
    if (sock_open && client.state == 3)
        return CTL_OK; /* one authenticated session serves every command of a shell */
    if (!key_loaded) {
        if (auth_cookie_load(O.cookie_file, false, &key, NULL, err, sizeof(err)) != 0) {
            fprintf(stderr, "cmcpctl: %s\n", err);
            return CTL_USAGE;
        }
        key_loaded = true;
    }
    if (!sock_open) {
        if (tcp_precheck(O.endpoint, err, sizeof(err)) != 0) {
            fprintf(stderr, "cmcpctl: %s\n", err);
            return CTL_CONNECT;
        }
        int rv = nng_req0_open(&sock);
        if (rv != 0) {
            fprintf(stderr, "cmcpctl: cannot open a socket: %s\n", nng_strerror(rv));
            return CTL_CONNECT;
        }
        int ms = (int)(O.timeout_s * 1000);
        nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, ms);
        nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, ms);
        /* A resent request would be a replay, which the node refuses: never resend. */
        nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, 256u << 20);
        if ((rv = nng_dial(sock, O.endpoint, NULL, 0)) != 0) {
            fprintf(stderr, "cmcpctl: cannot connect to %s: %s\n", O.endpoint, nng_strerror(rv));
            nng_close(sock);
            return CTL_CONNECT;
        }
        sock_open = true;
    }
    return handshake();
}

void ctl_disconnect(void)
{
    if (sock_open)
        nng_close(sock);
    sock_open = false;
    sodium_memzero(&client, sizeof(client));
}

/* One sealed request; *resp is the node's {"ok":...} answer. */
static int call_once(const char *cmd, json_t *args, json_t **resp, bool *stale)
{
    *stale = false;
    json_t *req = json_pack("{s:s,s:O}", "cmd", cmd, "args", args);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    uint8_t *m, *r;
    size_t ml, rl;
    int64_t ctr = text ? auth_seal(&client.s, AUTH_REQUEST, 0, text, strlen(text), &m, &ml) : -1;
    free(text);
    if (ctr < 0) {
        fprintf(stderr, "cmcpctl: out of memory\n");
        return CTL_FAILED;
    }
    int rc = exchange(m, ml, &r, &rl);
    free(m);
    if (rc != 0)
        return CTL_CONNECT;
    struct auth_header h;
    uint8_t *pt = NULL;
    size_t pl;
    char etext[400];
    rc = auth_open(&client.s, AUTH_RESPONSE, r, rl, &h, &pt, &pl);
    bool refused = rc != AUTH_OK && error_text(r, rl, etext, sizeof(etext));
    nng_free(r, rl);
    if (rc == AUTH_OK && h.ref != (uint64_t)ctr) {
        free(pt);
        fprintf(stderr, "cmcpctl: the answer does not belong to our request (ref %llu, sent "
                        "%lld); refusing it\n",
                (unsigned long long)h.ref, (long long)ctr);
        return CTL_AUTH;
    }
    if (rc != AUTH_OK) {
        if (refused && strstr(etext, "unknown_session")) {
            *stale = true; /* the node restarted or forgot us: authenticate again */
            return CTL_AUTH;
        }
        fprintf(stderr, "cmcpctl: %s: %s\n", refused ? "the node refused the request" : "bad answer",
                refused ? etext : auth_strerror(rc));
        return CTL_AUTH;
    }
    *resp = json_loadb((const char *)pt, pl, 0, NULL);
    free(pt);
    if (!json_is_object(*resp)) {
        json_decref(*resp);
        *resp = NULL;
        fprintf(stderr, "cmcpctl: the node's answer is not a JSON object\n");
        return CTL_FAILED;
    }
    return CTL_OK;
}

int ctl_call(const char *cmd, json_t *args, json_t **resp)
{
    *resp = NULL;
    if (!args)
        args = json_object();
    bool stale;
    int rc = call_once(cmd, args, resp, &stale);
    if (stale) {
        /* Nothing ran (the node did not know the session): safe to authenticate and resend. */
        rc = handshake();
        if (rc == CTL_OK)
            rc = call_once(cmd, args, resp, &stale);
    }
    json_decref(args);
    return rc;
}

/* ---- options ---- */

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        fprintf(stderr, "cmcpctl: libsodium failed to initialise\n");
        return CTL_FAILED;
    }
    const char *config = NULL;
    static char *rest[256];
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        /* Global options may come anywhere before a start_child's argument list. */
        bool in_args = nrest > 0 && strcmp(rest[0], "start_child") == 0 && nrest >= 2;
        if (in_args && o[0] == '-' && strcmp(o, "--json") && strncmp(o, "--timeout", 9)) {
            rest[nrest++] = argv[i];
        } else if (!strcmp(o, "-h") || !strcmp(o, "--help") || (!nrest && !strcmp(o, "help"))) {
            usage(stdout);
            return CTL_OK;
        } else if (!strcmp(o, "-V") || !strcmp(o, "--version")) {
            printf("cmcpctl %s\n", CMCP_VERSION);
            return CTL_OK;
        } else if (!strcmp(o, "--json")) {
            O.json = true;
        } else if ((!strcmp(o, "-n") || !strcmp(o, "--node")) && v) {
            O.endpoint = v, i++;
        } else if (!strcmp(o, "--cookie-file") && v) {
            O.cookie_file = v, i++;
        } else if ((!strcmp(o, "-c") || !strcmp(o, "--config")) && v) {
            config = v, i++;
        } else if (!strcmp(o, "--timeout") && v) {
            char *end;
            O.timeout_s = strtod(v, &end);
            if (*end || O.timeout_s <= 0 || O.timeout_s > 3600) {
                fprintf(stderr, "cmcpctl: --timeout wants seconds (0 < s <= 3600), not '%s'\n",
                        v);
                return CTL_USAGE;
            }
            i++;
        } else if (o[0] == '-' && o[1] && nrest == 0) {
            fprintf(stderr, "cmcpctl: unknown option '%s' (cmcpctl --help lists them)\n", o);
            return CTL_USAGE;
        } else if (nrest < (int)CMCP_ARRAY_LEN(rest) - 1) {
            rest[nrest++] = argv[i];
        }
    }
    if (nrest == 0) {
        usage(stderr);
        return CTL_USAGE;
    }
    /* The node's configuration (embedded defaults, -c FILE, CMCP_* environment) supplies
     * what the options did not. */
    static struct cfg cfg;
    node_schema_add();
    if (cfg_load(&cfg, config) != 0) {
        fprintf(stderr, "cmcpctl: configuration error: %s\n", cfg.err);
        return CTL_USAGE;
    }
    if (!O.endpoint)
        O.endpoint = cfg_get(&cfg, "admin", "endpoint", "tcp://127.0.0.1:9300");
    if (!O.cookie_file)
        O.cookie_file = getenv("CMCP_COOKIE_FILE");
    if (!O.cookie_file || !*O.cookie_file)
        O.cookie_file = cfg_get(&cfg, "admin", "cookie_file", "./var/cookie");
    if (!O.endpoint[0]) {
        fprintf(stderr, "cmcpctl: no admin endpoint (give -n tcp://HOST:PORT)\n");
        return CTL_USAGE;
    }
    int rc;
    if (strcmp(rest[0], "shell") == 0 && nrest == 1)
        rc = ctl_shell();
    else
        rc = ctl_run(nrest, rest);
    ctl_disconnect();
    cfg_free(&cfg);
    return rc;
}
