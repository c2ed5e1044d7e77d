/* What every cmcpd process shares: start-up hygiene and its command line. */
#ifndef CMCP_PROC_H
#define CMCP_PROC_H

#include <stdbool.h>

#include "base/config.h"

struct proc_args {
    const char *role;   /* NULL for the root */
    const char *id;
    const char *sup;    /* the supervisor that started us */
    int index;          /* replica index, or -1 */
    const char *config; /* config file, or NULL for the embedded defaults */
    int ready_fd;       /* -1 when nobody waits for readiness */
    long watchdog_ms;   /* > 0: beat on the readiness fd from the loop (--watchdog MS) */
    int argc;           /* role-specific arguments left over */
    char **argv;
    struct cfg cfg;     /* loaded configuration */
    const char *run_dir;
    const char *node;
    bool stdio;        /* root: --stdio */
    bool check_config; /* root: --check-config */
    const char *health_check; /* root: --health-check[=serving]: "/ready" or "/health" */
};

/* What proc_parse_args found. */
enum proc_parse { PROC_ARGS_OK, PROC_ARGS_HELP, PROC_ARGS_VERSION, PROC_ARGS_BAD };
/* Parses cmcpd's command line into a (PROC_ARGS_BAD after saying why on stderr). */
enum proc_parse proc_parse_args(int argc, char **argv, struct proc_args *a);

/*
 * A child's start-up after its arguments: loads the configuration (which the
 * root already validated), names the process in its logs and applies the
 * log level. 0, or an exit status after saying why.
 */
int proc_child_setup(struct proc_args *a);
/* The [node] log_level of c, unless CMCP_LOG_LEVEL overrides it (log.c reads that), and
 * its log_format. */
void proc_apply_log_level(const struct cfg *c);

/*
 * Blocks the signals the loop handles (so nng's threads never take them),
 * ignores SIGPIPE, and initialises libsodium. Call before any nng call.
 */
void proc_init_signals(void);

/*
 * Why this process cannot start, for a person: prints "cmcpd: MSG" on stderr and
 * keeps MSG in the run directory (start-error, the first one only) for the root
 * supervisor, which repeats it as the last line when the node did not start.
 */
void proc_start_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The first start error kept in run_dir since the last clear, or "" (buf). */
const char *proc_start_error_read(const char *run_dir, char *buf, size_t len);
void proc_start_error_clear(const char *run_dir);

/*
 * Listening sockets the root bound once for the node's listeners, inherited at
 * fixed descriptors (CMCP_LISTEN_FDS="http=200,tcp=201"), so that a port keeps
 * queueing connections while a listener restarts, and a second node on the
 * same port fails at start instead of sharing it.
 */
#define PROC_LISTEN_FD_FIRST 200
#define PROC_LISTEN_FD_MAX 4
/* The inherited socket for `name` ("http", "tcp"), or -1. */
int proc_listen_fd(const char *name);
/* Every inherited socket's descriptor into fds; returns how many. */
int proc_listen_fds(int fds[PROC_LISTEN_FD_MAX]);

/*
 * A stop that cannot hang: from now on the process has `ms` to finish its clean-up
 * (closing nng sockets, which in Debian's nng 1.5.2 was seen to wait for good on a peer,
 * 1 stop in ~50), after which it logs stop_cleanup_stuck and exits with `code` without
 * the rest of it. Call it once the state that matters is on disk, just before the
 * sockets close.
 */
#define PROC_STOP_DEADLINE_MS 300
void proc_stop_deadline(long ms, int code);

/*
 * Tells the supervisor we are ready: a newline on the readiness fd, once. With
 * --watchdog MS the fd stays open and a timer on the default libev loop (the
 * loop every role runs) writes a beat on it several times per MS: a loop that
 * stops turning (a deadlock, a stalled fsync, SIGSTOP) stops beating, and the
 * supervisor kills and restarts the process (docs/supervisor.md, "Watchdog").
 */
void proc_notify_ready(struct proc_args *a);

#endif
