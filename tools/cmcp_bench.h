/*
 * cmcp-bench: a load generator for MCP servers (Streamable HTTP with JSON or
 * SSE answers, newline-delimited JSON-RPC over TCP). docs/benchmarks.md shows
 * how the benchmark suite uses it; `cmcp-bench --help` lists the options.
 *
 * One process, --threads worker threads, each with its own libev loop and its
 * own share of the connections and of the request rate; the main thread only
 * moves every worker through the phases:
 *
 *   RAMP   open the connections (at --ramp-rate per second), set up a session
 *          on each (initialize, notifications/initialized, --ramp-calls calls)
 *   LOAD   --warmup then --duration seconds of requests on the first --active
 *          connections: closed loop (--depth requests outstanding on each) or
 *          open loop (--rate requests per second, latency counted from each
 *          request's intended start, so a slow server cannot hide its queue)
 *   HOLD   --hold seconds with every connection open and idle
 *   CHECK  (--hold-check) one request on every connection: are the sessions
 *          still there?
 *
 * Every loop is bounded by a count and by time (--time-limit ends everything).
 */
#ifndef CMCP_BENCH_H
#define CMCP_BENCH_H

#include <ev.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tools/cmcp_bench_hist.h"

enum transport { T_HTTP, T_TCP };

/* Error kinds, reported by name. */
enum err_kind {
    E_CONNECT,    /* connect(2) failed or timed out */
    E_SETUP,      /* initialize / notifications/initialized not answered as expected */
    E_STATUS,     /* HTTP status other than 2xx */
    E_RPC,        /* JSON-RPC error response */
    E_TOOL,       /* tools/call result with isError: true */
    E_TIMEOUT,    /* no answer within --request-timeout */
    E_CLOSED,     /* the server closed or reset the connection with requests outstanding */
    E_PARSE,      /* malformed HTTP or JSON */
    E_OVERLOAD,   /* open loop: the backlog of requests waiting for a connection overflowed */
    E_KINDS
};
extern const char *const err_names[E_KINDS];

enum phase { P_RAMP, P_LOAD, P_HOLD, P_CHECK, P_STOP };

struct opts {
    enum transport transport;
    char url[512];
    char host[256];
    int port;
    char path[256];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int family;

    long connections, active;
    double ramp_rate;
    long ramp_concurrency;
    double ramp_timeout;
    int ramp_calls;
    double warmup, duration, hold;
    bool hold_check;
    double rate; /* open loop when > 0 */
    int depth;
    long max_requests;
    int threads;
    int source_addrs;
    struct in_addr source_base;
    bool source_set; /* --source-base given: bind even to one address */
    const char *hold_until; /* the hold ends early when this file exists */
    bool no_init;
    const char *init_url; /* sessions are made there, then used at url (HTTP) */
    struct sockaddr_storage init_addr;
    socklen_t init_addrlen;
    double request_timeout;
    double time_limit;
    int max_reconnects;
    bool allow_remote;
    bool quiet;

    const char *method;
    const char *tool;
    const char *args;
    const char *params; /* the whole params object, when given */
    const char *accept;
    const char *protocol_version;
    const char *label;
    const char *json_out, *csv_out, *ready_file;
};

extern struct opts O;

/* What the main thread tells the workers. */
struct shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int phase;
    uint64_t t_load_start, t_measure, t_end; /* CLOCK_MONOTONIC ns */
    int ramp_done, load_done, check_done, stopped;
};
extern struct shared S;

struct inflight {
    uint64_t id;
    uint64_t t0;   /* intended start (open loop) or send time, ns */
    uint8_t kind;  /* R_LOAD, R_SETUP_INIT, ... */
    bool measured; /* started inside the measurement window */
};

enum req_kind { R_LOAD, R_INIT, R_INITIALIZED, R_RAMPCALL, R_CHECK };

enum conn_state { C_NEW, C_CONNECTING, C_SETUP, C_READY, C_DEAD };

struct worker;

struct conn {
    ev_io io;
    ev_timer tmo;
    struct worker *w;
    long idx;
    int fd;
    uint8_t state;
    bool in_avail;
    bool want_write;
    bool close_after; /* HTTP: the server said Connection: close */
    bool is_active;   /* carries load */
    uint16_t outstanding;
    uint16_t reconnects;
    uint16_t ramp_calls_left;
    uint32_t gen; /* bumped when the socket goes: handlers check it after callbacks */
    char *sid;
    bool at_init; /* connected to --init-url to make its session */
    char *rbuf;
    uint32_t rlen, rcap;
    char *wbuf;
    uint32_t wlen, woff, wcap;
    uint64_t next_id;
    uint64_t t_setup; /* when its setup started */
    struct inflight *fl; /* O.depth slots (HTTP: 1) */
    struct conn *next_avail;
};

struct stats {
    uint64_t ok, errors[E_KINDS];
    uint64_t warm_ok, warm_err, late; /* outside the measurement window */
    uint64_t setup_err[E_KINDS];
    uint64_t sessions_ok, sessions_failed, reconnects, events, bytes_in, bytes_out;
    uint64_t check_ok, check_err, check_not_ready, check_errk[E_KINDS];
    uint64_t max_backlog;
    uint64_t http_status[600]; /* answers other than 2xx, by status */
    struct hist lat;   /* measured requests, ns */
    struct hist setup; /* connect to session ready, ns */
};

struct worker {
    pthread_t th;
    int id;
    struct ev_loop *loop;
    ev_async wake;
    int seen_phase;

    struct conn *conns;
    long nconns, nactive;

    /* ramp */
    ev_timer ramp_timer, ramp_deadline;
    long ramp_next, ramp_pending, ramp_finished;
    uint64_t ramp_t0;
    bool ramp_reported;

    /* load */
    struct conn *avail;
    long inflight_load;
    uint64_t issued;
    bool load_stopping, load_reported, draining;
    ev_timer end_timer;
    int tfd; /* open loop: timerfd at the next intended start */
    ev_io tfd_w;
    double rate;
    uint64_t ol_next, ol_k;
    uint64_t *bl; /* open loop backlog: intended starts waiting for a connection */
    size_t bl_cap, bl_head, bl_len;

    /* check */
    long check_pending, check_next;
    bool check_reported;

    struct stats st;
    char *scratch; /* recv buffer */
    size_t scratch_cap;
    char *body;    /* decoded HTTP body (chunked/SSE) */
    size_t body_cap;
    char *sse;     /* data of one SSE event */
    size_t sse_cap;
    char *out;     /* the request being written */
    size_t out_cap;
};

uint64_t now_ns(void);

/* cmcp_bench_conn.c */
void worker_phase(struct worker *w, int phase);
void conn_start(struct conn *c);
void conn_kill(struct conn *c);

/* called by workers when a phase is complete for them */
void report_done(int *counter);

#endif
