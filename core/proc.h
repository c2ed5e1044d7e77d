/* What every cmcpd process shares: start-up hygiene and its command line. */
#ifndef CMCP_PROC_H
#define CMCP_PROC_H

#include "config.h"

struct proc_args {
    const char *role;   /* NULL for the root */
    const char *id;
    const char *sup;    /* the supervisor that started us */
    int index;          /* replica index, or -1 */
    const char *config; /* config file, or NULL for the embedded defaults */
    int ready_fd;       /* -1 when nobody waits for readiness */
    int argc;           /* role-specific arguments left over */
    char **argv;
    struct cfg cfg;     /* loaded configuration */
    const char *run_dir;
    const char *node;
};

/*
 * Blocks the signals the loop handles (so nng's threads never take them),
 * ignores SIGPIPE, and initialises libsodium. Call before any nng call.
 */
void proc_init_signals(void);

/* Tells the supervisor we are ready: a newline on the readiness fd, once. */
void proc_notify_ready(struct proc_args *a);

#endif
