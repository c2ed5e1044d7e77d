/*
 * A supervisor process: OTP's supervisor behaviour over OS processes.
 * Runs its own libev loop until the supervisor ends; returns the exit status.
 */
#ifndef CMCP_SUP_H
#define CMCP_SUP_H

#if !defined(CMCP_LAYER_SUPERVISOR) && !defined(CMCP_LAYER_NODE)
#error "supervisor headers are for the supervisor and the node binary: workers reach supervisors over IPC (../shared/design/layers.md)"
#endif

#include <stdbool.h>

#include "base/config.h"
#include "base/proc.h"
#include "supervisor/spec.h"

struct sup_run_opts {
    const char *name;      /* the [tree.NAME] section of this supervisor */
    bool is_root;          /* the node's root: SIGTERM/SIGINT stop the node */
    int ready_fd;          /* our own readiness fd, or -1 */
    const char *run_dir;   /* control sockets live here */
    const char *config_path; /* passed on to children, or NULL */
    sup_role_known_fn role_known;
};

int sup_run(struct cfg *c, const struct sup_run_opts *o);

/*
 * The node's root: prepares the run and data directories, checks the tree
 * and (check, may be NULL) the rest of the configuration (a->check_config:
 * prints it and returns), then supervises until the node stops. Returns
 * cmcpd's exit status.
 */
/* Checks of the loaded configuration beyond the schema (the roles' rules between keys): 0, or
 * -1 with err. */
typedef int (*sup_config_check_fn)(struct cfg *c, char *err, size_t errlen);
int sup_root_main(struct proc_args *a, sup_role_known_fn role_known, sup_config_check_fn check);

#endif
