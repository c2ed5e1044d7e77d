/*
 * A supervisor process: OTP's supervisor behaviour over OS processes.
 * Runs its own libev loop until the supervisor ends; returns the exit status.
 */
#ifndef CMCP_SUP_H
#define CMCP_SUP_H

#include <stdbool.h>

#include "config.h"
#include "spec.h"

struct sup_run_opts {
    const char *name;      /* the [tree.NAME] section of this supervisor */
    bool is_root;          /* the node's root: SIGTERM/SIGINT stop the node */
    int ready_fd;          /* our own readiness fd, or -1 */
    const char *run_dir;   /* control sockets live here */
    const char *config_path; /* passed on to children, or NULL */
    sup_role_known_fn role_known;
};

int sup_run(struct cfg *c, const struct sup_run_opts *o);

/* The control socket address of supervisor `name` under run_dir. */
void sup_ctl_address(char *buf, size_t len, const char *run_dir, const char *name);

#endif
