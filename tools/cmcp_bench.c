/*
 * cmcp-bench: options, threads, phases and the report (see cmcp_bench.h).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tools/cmcp_bench.h"

struct opts O;
struct shared S;

static struct worker *workers;
static volatile sig_atomic_t interrupted;

static void usage(FILE *f)
{
    fputs(
        "usage: cmcp-bench [options] URL\n"
        "  URL  http://HOST:PORT/PATH (Streamable HTTP) or tcp://HOST:PORT (NDJSON JSON-RPC);\n"
        "       HOST must be a loopback address unless --allow-remote\n"
        "connections and sessions:\n"
        "  -c, --connections N     connections, each with its own session (1)\n"
        "  -a, --active N          of those, how many carry the load (all)\n"
        "      --ramp-rate R       new connections per second in the ramp (0: no limit)\n"
        "      --ramp-concurrency N  connections being set up (and --hold-check requests) at once (256)\n"
        "      --ramp-timeout S    the ramp ends after S seconds whatever its state (60)\n"
        "      --ramp-calls K      requests each session makes right after its setup (0)\n"
        "      --no-init           no initialize: plain requests (for a static responder)\n"
        "      --init-url URL      make each session at URL (another cluster member), then\n"
        "                          send the load to the main URL (HTTP; forwarding cost)\n"
        "      --source-addrs N    bind connections to N source addresses from\n"
        "                          --source-base (127.0.0.1) on: ~28K connections per address\n"
        "load:\n"
        "  -d, --duration S        measured load, seconds (10; 0: no load phase)\n"
        "  -w, --warmup S          unmeasured load before it (1)\n"
        "  -r, --rate R            open loop: R requests per second in all; latency counts\n"
        "                          from each request's intended start (0: closed loop)\n"
        "      --depth N           closed loop: requests outstanding per connection (1;\n"
        "                          HTTP has no pipelining: always 1)\n"
        "  -n, --max-requests N    stop the load after N requests (0: no limit)\n"
        "  -t, --threads N         worker threads (1)\n"
        "      --hold S            keep every connection open and idle for S seconds (0)\n"
        "      --hold-check        then one request on every connection\n"
        "      --hold-until FILE   end the hold early once FILE exists\n"
        "      --ready-file F      write F (JSON) when the hold starts\n"
        "requests:\n"
        "      --method M          JSON-RPC method (tools/call)\n"
        "      --tool NAME         tools/call name (echo)\n"
        "      --args JSON         tools/call arguments ({\"text\":\"hello\"})\n"
        "      --params JSON       the whole params object (overrides --tool and --args)\n"
        "      --accept VALUE      HTTP Accept (application/json, text/event-stream)\n"
        "      --protocol-version V  (2025-11-25)\n"
        "      --request-timeout S a request without an answer after S seconds fails (10)\n"
        "      --max-reconnects N  per connection during the load (10)\n"
        "      --time-limit S      end everything after S seconds (phases + 60)\n"
        "report:\n"
        "  -l, --label TEXT        names the run in the reports\n"
        "      --json FILE         JSON report to FILE ('-': stdout)\n"
        "      --csv FILE          one CSV row appended to FILE (a header when it is new)\n"
        "  -q, --quiet             no text report\n"
        "      --allow-remote      allow a target that is not a loopback address\n",
        f);
}

static int parse_url(const char *url)
{
    snprintf(O.url, sizeof(O.url), "%s", url);
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        O.transport = T_HTTP;
        rest = url + 7;
    } else if (strncmp(url, "tcp://", 6) == 0) {
        O.transport = T_TCP;
        rest = url + 6;
    } else {
        fprintf(stderr, "cmcp-bench: URL must start with http:// or tcp://\n");
        return -1;
    }
    const char *slash = strchr(rest, '/');
    const char *hp_end = slash ? slash : rest + strlen(rest);
    snprintf(O.path, sizeof(O.path), "%s", slash ? slash : "/");
    const char *colon = memrchr(rest, ':', (size_t)(hp_end - rest));
    if (!colon) {
        fprintf(stderr, "cmcp-bench: URL needs a port\n");
        return -1;
    }
    size_t hl = (size_t)(colon - rest);
    if (hl == 0 || hl >= sizeof(O.host)) {
        fprintf(stderr, "cmcp-bench: bad host in URL\n");
        return -1;
    }
    memcpy(O.host, rest, hl);
    O.host[hl] = 0;
    O.port = atoi(colon + 1);
    if (O.port <= 0 || O.port > 65535) {
        fprintf(stderr, "cmcp-bench: bad port in URL\n");
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC}, *ai;
    char port[16];
    snprintf(port, sizeof(port), "%d", O.port);
    int rv = getaddrinfo(O.host, port, &hints, &ai);
    if (rv != 0) {
        fprintf(stderr, "cmcp-bench: %s: %s\n", O.host, gai_strerror(rv));
        return -1;
    }
    memcpy(&O.addr, ai->ai_addr, ai->ai_addrlen);
    O.addrlen = ai->ai_addrlen;
    O.family = ai->ai_family;
    freeaddrinfo(ai);
    bool loop = false;
    if (O.family == AF_INET)
        loop = (ntohl(((struct sockaddr_in *)&O.addr)->sin_addr.s_addr) >> 24) == 127;
    else if (O.family == AF_INET6)
        loop = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&O.addr)->sin6_addr);
    if (!loop && !O.allow_remote) {
        fprintf(stderr,
                "cmcp-bench: %s is not a loopback address; load tests go to loopback targets "
                "only (--allow-remote to override)\n",
                O.host);
        return -1;
    }
    return 0;
}

void report_done(int *counter)
{
    pthread_mutex_lock(&S.mu);
    (*counter)++;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

/* Waits until *counter reaches n or the deadline (CLOCK_MONOTONIC ns) passes. */
static bool wait_count(int *counter, int n, uint64_t deadline)
{
    pthread_mutex_lock(&S.mu);
    bool ok = true;
    for (int guard = 0; *counter < n && guard < 1000000; guard++) {
        uint64_t now = now_ns();
        if (now >= deadline || interrupted) {
            ok = false;
            break;
        }
        /* The condition variable runs on CLOCK_MONOTONIC (set in main). */
        uint64_t until = now + 100000000ull < deadline ? now + 100000000ull : deadline;
        struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
        pthread_cond_timedwait(&S.cv, &S.mu, &ts);
    }
    pthread_mutex_unlock(&S.mu);
    return ok;
}

static void set_phase(int phase)
{
    S.phase = phase;
    for (int i = 0; i < O.threads; i++)
        ev_async_send(workers[i].loop, &workers[i].wake);
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = a->data;
    int ph = S.phase;
    /* Phases only move forward; a worker that missed one still runs each in order. */
    for (int p = w->seen_phase + 1; p <= ph; p++) {
        w->seen_phase = p;
        if ((p == P_LOAD && O.duration <= 0) || (p == P_CHECK && !O.hold_check))
            continue;
        worker_phase(w, p);
        if (p == P_STOP)
            break;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    ev_run(w->loop, 0);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void sleep_until(uint64_t deadline, const char *until_file)
{
    for (int guard = 0; guard < 10000000 && !interrupted; guard++) {
        uint64_t now = now_ns();
        if (now >= deadline || (until_file && access(until_file, F_OK) == 0))
            return;
        uint64_t d = deadline - now;
        if (d > 50000000ull)
            d = 50000000ull; /* 50 ms: signals and --hold-until are seen promptly */
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

struct result {
    struct stats st;
    double measured_s, ramp_s, rps;
    uint64_t err_total, setup_err_total;
    bool ramp_complete, load_complete;
    double load1;
};

static void write_json(FILE *f, const struct result *r)
{
    const struct stats *st = &r->st;
    fputs("{", f);
    fputs("\"label\":", f);
    json_str(f, O.label);
    fputs(",\"target\":", f);
    json_str(f, O.url);
    fprintf(f, ",\"transport\":\"%s\",\"mode\":\"%s\"", O.transport == T_HTTP ? "http" : "tcp",
            O.rate > 0 ? "open" : "closed");
    fprintf(f,
            ",\"connections\":%ld,\"active\":%ld,\"depth\":%d,\"threads\":%d,\"rate\":%.1f,"
            "\"warmup_s\":%.3f,\"duration_s\":%.3f,\"measured_s\":%.3f",
            O.connections, O.active, O.transport == T_HTTP ? 1 : O.depth, O.threads, O.rate,
            O.warmup, O.duration, r->measured_s);
    fprintf(f, ",\"method\":");
    json_str(f, O.method);
    fprintf(f, ",\"tool\":");
    json_str(f, O.tool);
    fprintf(f,
            ",\"requests\":%llu,\"ok\":%llu,\"errors\":%llu,\"rps\":%.1f",
            (unsigned long long)(st->ok + r->err_total), (unsigned long long)st->ok,
            (unsigned long long)r->err_total, r->rps);
    fputs(",\"errors_by_kind\":{", f);
    for (int k = 0; k < E_KINDS; k++)
        fprintf(f, "%s\"%s\":%llu", k ? "," : "", err_names[k], (unsigned long long)st->errors[k]);
    fputs("}", f);
    fprintf(f,
            ",\"latency_ms\":{\"count\":%llu,\"min\":%.3f,\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,"
            "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
            (unsigned long long)st->lat.count, st->lat.count ? ms(st->lat.min) : 0.0,
            hist_mean(&st->lat) / 1e6, ms(hist_percentile(&st->lat, 50)),
            ms(hist_percentile(&st->lat, 90)), ms(hist_percentile(&st->lat, 99)),
            ms(hist_percentile(&st->lat, 99.9)), ms(st->lat.max));
    fprintf(f,
            ",\"ramp\":{\"sessions_ok\":%llu,\"sessions_failed\":%llu,\"seconds\":%.3f,"
            "\"complete\":%s,\"setup_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
            "\"errors_by_kind\":{",
            (unsigned long long)st->sessions_ok, (unsigned long long)st->sessions_failed, r->ramp_s,
            r->ramp_complete ? "true" : "false", ms(hist_percentile(&st->setup, 50)),
            ms(hist_percentile(&st->setup, 99)), ms(st->setup.max));
    for (int k = 0; k < E_KINDS; k++)
        fprintf(f, "%s\"%s\":%llu", k ? "," : "", err_names[k],
                (unsigned long long)st->setup_err[k]);
    fputs("}}", f);
    fprintf(f,
            ",\"warmup\":{\"ok\":%llu,\"errors\":%llu},\"late\":%llu,\"reconnects\":%llu,"
            "\"events\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,\"max_backlog\":%llu,"
            "\"load_complete\":%s",
            (unsigned long long)st->warm_ok, (unsigned long long)st->warm_err,
            (unsigned long long)st->late, (unsigned long long)st->reconnects,
            (unsigned long long)st->events, (unsigned long long)st->bytes_in,
            (unsigned long long)st->bytes_out, (unsigned long long)st->max_backlog,
            r->load_complete ? "true" : "false");
    if (O.hold_check) {
        fprintf(f, ",\"check\":{\"ok\":%llu,\"errors\":%llu,\"not_ready\":%llu,\"errors_by_kind\":{",
                (unsigned long long)st->check_ok, (unsigned long long)st->check_err,
                (unsigned long long)st->check_not_ready);
        for (int k = 0; k < E_KINDS; k++)
            fprintf(f, "%s\"%s\":%llu", k ? "," : "", err_names[k],
                    (unsigned long long)st->check_errk[k]);
        fputs("}}", f);
    }
    fputs(",\"http_status_errors\":{", f);
    for (int k = 0, first = 1; k < 600; k++)
        if (st->http_status[k]) {
            fprintf(f, "%s\"%d\":%llu", first ? "" : ",", k, (unsigned long long)st->http_status[k]);
            first = 0;
        }
    fputs("}", f);
    fprintf(f, ",\"loadavg_1m\":%.2f}\n", r->load1);
}

static const char *csv_header =
    "label,target,transport,mode,connections,active,depth,threads,rate,duration_s,measured_s,ok,"
    "errors,rps,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,mean_ms,sessions_ok,sessions_failed,ramp_s,"
    "errors_by_kind,loadavg_1m\n";

static void write_csv(FILE *f, const struct result *r)
{
    const struct stats *st = &r->st;
    char kinds[512] = "";
    size_t off = 0;
    for (int k = 0; k < E_KINDS; k++)
        if (st->errors[k])
            off += (size_t)snprintf(kinds + off, sizeof(kinds) - off, "%s%s=%llu", off ? ";" : "",
                                    err_names[k], (unsigned long long)st->errors[k]);
    fprintf(f,
            "%s,%s,%s,%s,%ld,%ld,%d,%d,%.1f,%.3f,%.3f,%llu,%llu,%.1f,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,"
            "%llu,%llu,%.3f,%s,%.2f\n",
            O.label, O.url, O.transport == T_HTTP ? "http" : "tcp", O.rate > 0 ? "open" : "closed",
            O.connections, O.active, O.transport == T_HTTP ? 1 : O.depth, O.threads, O.rate,
            O.duration, r->measured_s, (unsigned long long)st->ok,
            (unsigned long long)r->err_total, r->rps, ms(hist_percentile(&st->lat, 50)),
            ms(hist_percentile(&st->lat, 90)), ms(hist_percentile(&st->lat, 99)),
            ms(hist_percentile(&st->lat, 99.9)), ms(st->lat.max), hist_mean(&st->lat) / 1e6,
            (unsigned long long)st->sessions_ok, (unsigned long long)st->sessions_failed,
            r->ramp_s, kinds, r->load1);
}

static void write_text(FILE *f, const struct result *r)
{
    const struct stats *st = &r->st;
    fprintf(f, "cmcp-bench %s%s%s: %s, %s loop, %ld connections (%ld active), %d thread(s)\n",
            O.url, *O.label ? " " : "", O.label, O.transport == T_HTTP ? "http" : "tcp",
            O.rate > 0 ? "open" : "closed", O.connections, O.active, O.threads);
    fprintf(f, "  ramp: %llu sessions in %.3f s, %llu failed; setup p50 %.3f ms p99 %.3f ms\n",
            (unsigned long long)st->sessions_ok, r->ramp_s, (unsigned long long)st->sessions_failed,
            ms(hist_percentile(&st->setup, 50)), ms(hist_percentile(&st->setup, 99)));
    if (O.duration > 0) {
        fprintf(f, "  load: %llu ok, %llu errors in %.3f s: %.1f requests/s\n",
                (unsigned long long)st->ok, (unsigned long long)r->err_total, r->measured_s,
                r->rps);
        for (int k = 0; k < E_KINDS; k++)
            if (st->errors[k])
                fprintf(f, "    %s: %llu\n", err_names[k], (unsigned long long)st->errors[k]);
        fprintf(f,
                "  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f\n",
                ms(hist_percentile(&st->lat, 50)), ms(hist_percentile(&st->lat, 90)),
                ms(hist_percentile(&st->lat, 99)), ms(hist_percentile(&st->lat, 99.9)),
                ms(st->lat.max), hist_mean(&st->lat) / 1e6);
    }
    if (O.hold_check) {
        fprintf(f, "  check: %llu ok, %llu errors (%llu connections not ready)\n",
                (unsigned long long)st->check_ok, (unsigned long long)st->check_err,
                (unsigned long long)st->check_not_ready);
        for (int k = 0; k < E_KINDS; k++)
            if (st->check_errk[k])
                fprintf(f, "    %s: %llu\n", err_names[k], (unsigned long long)st->check_errk[k]);
    }
    fprintf(f, "  load average (1 min): %.2f\n", r->load1);
}

static double loadavg1(void)
{
    double l[3] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1.0;
}

static int raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    if ((long)rl.rlim_cur >= need)
        return 0;
    rlim_t want = (rlim_t)need;
    if (rl.rlim_max < want) {
        struct rlimit hard = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &hard) == 0)
            return 0;
        want = rl.rlim_max;
    }
    rl.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur >= need ? 0 : -1;
}

enum {
    OPT_RAMP_RATE = 256, OPT_RAMP_CONC, OPT_RAMP_TIMEOUT, OPT_RAMP_CALLS, OPT_NO_INIT, OPT_INIT_URL,
    OPT_SOURCE_ADDRS, OPT_SOURCE_BASE, OPT_DEPTH, OPT_HOLD, OPT_HOLD_CHECK, OPT_HOLD_UNTIL, OPT_READY_FILE,
    OPT_METHOD, OPT_TOOL, OPT_ARGS, OPT_PARAMS, OPT_ACCEPT, OPT_PV, OPT_REQ_TIMEOUT, OPT_MAX_RECONNECTS,
    OPT_TIME_LIMIT, OPT_JSON, OPT_CSV, OPT_ALLOW_REMOTE, OPT_HELP
};

static double num(const char *name, const char *s, double lo, double hi)
{
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (errno || e == s || *e || !(v >= lo && v <= hi)) {
        fprintf(stderr, "cmcp-bench: --%s wants a number in [%g, %g], not '%s'\n", name, lo, hi, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    O.connections = 1;
    O.active = -1;
    O.ramp_concurrency = 256;
    O.ramp_timeout = 60;
    O.duration = 10;
    O.warmup = 1;
    O.depth = 1;
    O.threads = 1;
    O.source_addrs = 1;
    inet_pton(AF_INET, "127.0.0.1", &O.source_base);
    O.request_timeout = 10;
    O.max_reconnects = 10;
    O.method = "tools/call";
    O.tool = "echo";
    O.args = "{\"text\":\"hello\"}";
    O.accept = "application/json, text/event-stream";
    O.protocol_version = "2025-11-25";
    O.label = "";

    static const struct option lo[] = {
        {"connections", 1, 0, 'c'}, {"active", 1, 0, 'a'},
        {"ramp-rate", 1, 0, OPT_RAMP_RATE}, {"ramp-concurrency", 1, 0, OPT_RAMP_CONC},
        {"ramp-timeout", 1, 0, OPT_RAMP_TIMEOUT}, {"ramp-calls", 1, 0, OPT_RAMP_CALLS},
        {"no-init", 0, 0, OPT_NO_INIT}, {"init-url", 1, 0, OPT_INIT_URL}, {"source-addrs", 1, 0, OPT_SOURCE_ADDRS},
        {"source-base", 1, 0, OPT_SOURCE_BASE}, {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'w'},
        {"rate", 1, 0, 'r'}, {"depth", 1, 0, OPT_DEPTH}, {"max-requests", 1, 0, 'n'},
        {"threads", 1, 0, 't'}, {"hold", 1, 0, OPT_HOLD}, {"hold-check", 0, 0, OPT_HOLD_CHECK}, {"hold-until", 1, 0, OPT_HOLD_UNTIL},
        {"ready-file", 1, 0, OPT_READY_FILE}, {"method", 1, 0, OPT_METHOD},
        {"tool", 1, 0, OPT_TOOL}, {"args", 1, 0, OPT_ARGS}, {"params", 1, 0, OPT_PARAMS}, {"accept", 1, 0, OPT_ACCEPT},
        {"protocol-version", 1, 0, OPT_PV}, {"request-timeout", 1, 0, OPT_REQ_TIMEOUT},
        {"max-reconnects", 1, 0, OPT_MAX_RECONNECTS}, {"time-limit", 1, 0, OPT_TIME_LIMIT},
        {"label", 1, 0, 'l'}, {"json", 1, 0, OPT_JSON}, {"csv", 1, 0, OPT_CSV},
        {"quiet", 0, 0, 'q'}, {"allow-remote", 0, 0, OPT_ALLOW_REMOTE}, {"help", 0, 0, OPT_HELP},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:a:d:w:r:n:t:l:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': O.connections = (long)num("connections", optarg, 1, 2000000); break;
        case 'a': O.active = (long)num("active", optarg, 0, 2000000); break;
        case OPT_RAMP_RATE: O.ramp_rate = num("ramp-rate", optarg, 0, 1e7); break;
        case OPT_RAMP_CONC: O.ramp_concurrency = (long)num("ramp-concurrency", optarg, 1, 1e6); break;
        case OPT_RAMP_TIMEOUT: O.ramp_timeout = num("ramp-timeout", optarg, 0.1, 86400); break;
        case OPT_RAMP_CALLS: O.ramp_calls = (int)num("ramp-calls", optarg, 0, 1000); break;
        case OPT_NO_INIT: O.no_init = true; break;
        case OPT_INIT_URL: O.init_url = optarg; break;
        case OPT_SOURCE_ADDRS: O.source_addrs = (int)num("source-addrs", optarg, 1, 250); break;
        case OPT_SOURCE_BASE:
            if (inet_pton(AF_INET, optarg, &O.source_base) != 1) {
                fprintf(stderr, "cmcp-bench: --source-base wants an IPv4 address\n");
                return 2;
            }
            O.source_set = true;
            break;
        case 'd': O.duration = num("duration", optarg, 0, 86400); break;
        case 'w': O.warmup = num("warmup", optarg, 0, 3600); break;
        case 'r': O.rate = num("rate", optarg, 0, 1e8); break;
        case OPT_DEPTH: O.depth = (int)num("depth", optarg, 1, 1024); break;
        case 'n': O.max_requests = (long)num("max-requests", optarg, 0, 1e12); break;
        case 't': O.threads = (int)num("threads", optarg, 1, 64); break;
        case OPT_HOLD: O.hold = num("hold", optarg, 0, 86400); break;
        case OPT_HOLD_CHECK: O.hold_check = true; break;
        case OPT_HOLD_UNTIL: O.hold_until = optarg; break;
        case OPT_READY_FILE: O.ready_file = optarg; break;
        case OPT_METHOD: O.method = optarg; break;
        case OPT_TOOL: O.tool = optarg; break;
        case OPT_ARGS: O.args = optarg; break;
        case OPT_PARAMS: O.params = optarg; break;
        case OPT_ACCEPT: O.accept = optarg; break;
        case OPT_PV: O.protocol_version = optarg; break;
        case OPT_REQ_TIMEOUT: O.request_timeout = num("request-timeout", optarg, 0.001, 3600); break;
        case OPT_MAX_RECONNECTS: O.max_reconnects = (int)num("max-reconnects", optarg, 0, 10000); break;
        case OPT_TIME_LIMIT: O.time_limit = num("time-limit", optarg, 1, 7 * 86400); break;
        case 'l': O.label = optarg; break;
        case OPT_JSON: O.json_out = optarg; break;
        case OPT_CSV: O.csv_out = optarg; break;
        case 'q': O.quiet = true; break;
        case OPT_ALLOW_REMOTE: O.allow_remote = true; break;
        case OPT_HELP: case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    if (O.init_url) {
        if (parse_url(O.init_url) != 0)
            return 2;
        if (O.transport != T_HTTP) {
            fprintf(stderr, "cmcp-bench: --init-url needs HTTP URLs (a TCP session is its "
                            "connection)\n");
            return 2;
        }
        memcpy(&O.init_addr, &O.addr, sizeof(O.addr));
        O.init_addrlen = O.addrlen;
    }
    if (parse_url(argv[optind]) != 0)
        return 2;
    if (O.init_url && O.transport != T_HTTP) {
        fprintf(stderr, "cmcp-bench: --init-url needs HTTP URLs\n");
        return 2;
    }
    if (O.source_addrs > 1) {
        uint32_t last = ntohl(O.source_base.s_addr) + (uint32_t)O.source_addrs - 1;
        if ((ntohl(O.source_base.s_addr) >> 24) != 127 || (last >> 24) != 127) {
            fprintf(stderr, "cmcp-bench: source addresses must be in 127.0.0.0/8\n");
            return 2;
        }
    }
    if (strlen(O.args) > 4000 || (O.params && strlen(O.params) > 4000) || strlen(O.tool) > 200 || strlen(O.method) > 200) {
        fprintf(stderr, "cmcp-bench: --args, --tool or --method too long\n");
        return 2;
    }
    if (O.active < 0 || O.active > O.connections)
        O.active = O.connections;
    if (O.transport == T_HTTP)
        O.depth = 1;
    if (O.threads > O.connections)
        O.threads = (int)O.connections;
    if (O.time_limit <= 0)
        O.time_limit = O.ramp_timeout + O.warmup + O.duration + O.request_timeout + O.hold +
                       (O.hold_check ? O.request_timeout : 0) + 60;
    if (raise_nofile(O.connections + 64) != 0) {
        fprintf(stderr, "cmcp-bench: cannot have %ld open files (RLIMIT_NOFILE)\n",
                O.connections + 64);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&S.cv, &ca);
    pthread_mutex_init(&S.mu, NULL);
    S.phase = P_RAMP;
    uint64_t t_begin = now_ns();
    uint64_t hard_end = t_begin + (uint64_t)(O.time_limit * 1e9);

    workers = calloc((size_t)O.threads, sizeof(*workers));
    if (!workers)
        return 2;
    for (int i = 0; i < O.threads; i++) {
        struct worker *w = &workers[i];
        w->id = i;
        w->tfd = -1;
        w->seen_phase = P_RAMP;
        w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
        w->nconns = O.connections / O.threads + (i < O.connections % O.threads ? 1 : 0);
        w->conns = calloc((size_t)w->nconns, sizeof(struct conn));
        w->scratch_cap = 256 * 1024;
        w->scratch = malloc(w->scratch_cap);
        if (!w->loop || !w->conns || !w->scratch) {
            fprintf(stderr, "cmcp-bench: out of memory\n");
            return 2;
        }
        hist_init(&w->st.lat);
        hist_init(&w->st.setup);
        int fl_n = O.transport == T_HTTP ? 1 : O.depth;
        struct inflight *fl = calloc((size_t)w->nconns * (size_t)fl_n, sizeof(*fl));
        if (!fl) {
            fprintf(stderr, "cmcp-bench: out of memory\n");
            return 2;
        }
        for (long j = 0; j < w->nconns; j++) {
            struct conn *c = &w->conns[j];
            c->w = w;
            c->idx = j * O.threads + i; /* global index: spreads actives and sources over threads */
            c->fd = -1;
            c->next_id = 1;
            c->fl = fl + j * fl_n;
            for (int k = 0; k < fl_n; k++)
                c->fl[k].kind = 0xff;
        }
        ev_async_init(&w->wake, wake_cb);
        w->wake.data = w;
        ev_async_start(w->loop, &w->wake);
        worker_phase(w, P_RAMP);
    }
    for (int i = 0; i < O.threads; i++)
        if (pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) != 0) {
            perror("cmcp-bench: pthread_create");
            return 2;
        }

    struct result r;
    memset(&r, 0, sizeof(r));
    uint64_t ramp_deadline = t_begin + (uint64_t)((O.ramp_timeout + 1) * 1e9);
    r.ramp_complete = wait_count(&S.ramp_done, O.threads, ramp_deadline < hard_end ? ramp_deadline : hard_end);
    r.ramp_s = (double)(now_ns() - t_begin) / 1e9;
    uint64_t t_load_end = 0;
    if (O.duration > 0 && !interrupted) {
        uint64_t t = now_ns();
        S.t_load_start = t;
        S.t_measure = t + (uint64_t)(O.warmup * 1e9);
        S.t_end = S.t_measure + (uint64_t)(O.duration * 1e9);
        set_phase(P_LOAD);
        uint64_t dl = S.t_end + (uint64_t)((O.request_timeout + 3) * 1e9);
        r.load_complete = wait_count(&S.load_done, O.threads, dl < hard_end ? dl : hard_end);
        t_load_end = now_ns();
    }
    if (!interrupted && (O.hold > 0 || O.hold_check)) {
        set_phase(P_HOLD);
        if (O.ready_file) {
            uint64_t ok = 0;
            for (int i = 0; i < O.threads; i++)
                for (long j = 0; j < workers[i].nconns; j++)
                    ok += workers[i].conns[j].state == C_READY; /* racy read, a count for scripts */
            char tmp[4096];
            snprintf(tmp, sizeof(tmp), "%s.tmp", O.ready_file);
            FILE *f = fopen(tmp, "w");
            if (f) {
                fprintf(f, "{\"phase\":\"hold\",\"connections_ready\":%llu,\"pid\":%d}\n",
                        (unsigned long long)ok, (int)getpid());
                fclose(f);
                rename(tmp, O.ready_file);
            }
        }
        if (!O.quiet)
            fprintf(stderr, "cmcp-bench: holding %ld connections for %.1f s\n", O.connections, O.hold);
        uint64_t until = now_ns() + (uint64_t)(O.hold * 1e9);
        sleep_until(until < hard_end ? until : hard_end, O.hold_until);
        if (O.hold_check && !interrupted) {
            set_phase(P_CHECK);
            uint64_t dl = now_ns() + (uint64_t)((O.request_timeout + 2) * 1e9);
            wait_count(&S.check_done, O.threads, dl < hard_end ? dl : hard_end);
        }
    }
    set_phase(P_STOP);
    for (int i = 0; i < O.threads; i++)
        pthread_join(workers[i].th, NULL);

    hist_init(&r.st.lat);
    hist_init(&r.st.setup);
    for (int i = 0; i < O.threads; i++) {
        struct stats *s = &workers[i].st;
        r.st.ok += s->ok;
        for (int k = 0; k < E_KINDS; k++) {
            r.st.errors[k] += s->errors[k];
            r.st.setup_err[k] += s->setup_err[k];
        }
        r.st.warm_ok += s->warm_ok;
        r.st.warm_err += s->warm_err;
        r.st.late += s->late;
        r.st.sessions_ok += s->sessions_ok;
        r.st.sessions_failed += s->sessions_failed;
        r.st.reconnects += s->reconnects;
        r.st.events += s->events;
        r.st.bytes_in += s->bytes_in;
        r.st.bytes_out += s->bytes_out;
        r.st.check_ok += s->check_ok;
        r.st.check_err += s->check_err;
        r.st.check_not_ready += s->check_not_ready;
        for (int k = 0; k < E_KINDS; k++)
            r.st.check_errk[k] += s->check_errk[k];
        for (int k = 0; k < 600; k++)
            r.st.http_status[k] += s->http_status[k];
        if (s->max_backlog > r.st.max_backlog)
            r.st.max_backlog = s->max_backlog;
        hist_add(&r.st.lat, &s->lat);
        hist_add(&r.st.setup, &s->setup);
    }
    for (int k = 0; k < E_KINDS; k++) {
        r.err_total += r.st.errors[k];
        r.setup_err_total += r.st.setup_err[k];
    }
    if (O.duration > 0 && t_load_end) {
        /* The window closes at its end, or earlier when --max-requests ran out. */
        uint64_t end = t_load_end < S.t_end ? t_load_end : S.t_end;
        r.measured_s = end > S.t_measure ? (double)(end - S.t_measure) / 1e9 : 0;
        r.rps = r.measured_s > 0 ? (double)r.st.ok / r.measured_s : 0;
    }
    r.load1 = loadavg1();

    bool json_stdout = O.json_out && strcmp(O.json_out, "-") == 0;
    if (!O.quiet)
        write_text(json_stdout ? stderr : stdout, &r);
    if (O.json_out) {
        FILE *f = strcmp(O.json_out, "-") == 0 ? stdout : fopen(O.json_out, "w");
        if (!f) {
            perror(O.json_out);
            return 2;
        }
        write_json(f, &r);
        if (f != stdout)
            fclose(f);
    }
    if (O.csv_out) {
        struct stat sb;
        bool fresh = stat(O.csv_out, &sb) != 0 || sb.st_size == 0;
        FILE *f = fopen(O.csv_out, "a");
        if (!f) {
            perror(O.csv_out);
            return 2;
        }
        if (fresh)
            fputs(csv_header, f);
        write_csv(f, &r);
        fclose(f);
    }
    for (int i = 0; i < O.threads; i++) {
        ev_loop_destroy(workers[i].loop);
        free(workers[i].conns[0].fl);
        for (long j = 0; j < workers[i].nconns; j++)
            free(workers[i].conns[j].sid);
        free(workers[i].conns);
        free(workers[i].scratch);
        free(workers[i].body);
        free(workers[i].sse);
        free(workers[i].out);
        free(workers[i].bl);
    }
    free(workers);
    if (interrupted)
        return 130;
    return r.err_total || !r.ramp_complete ? 1 : 0;
}
