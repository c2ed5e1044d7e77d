/*
 * cmcpctl: the remote admin shell. Internal header of cmcpctl.c (options,
 * connection, authentication), cmcpctl_cmds.c (command lines -> requests,
 * answers -> text) and cmcpctl_repl.c (the interactive shell).
 */
#ifndef CMCP_CMCPCTL_H
#define CMCP_CMCPCTL_H

#include <jansson.h>
#include <stdbool.h>

/* Exit statuses (cmcpctl --help). */
enum {
    CTL_OK = 0,
    CTL_FAILED = 1,  /* the command failed on the node */
    CTL_USAGE = 2,   /* bad command line, cookie file missing or unusable */
    CTL_CONNECT = 3, /* cannot connect, no answer in time, not a cmcp admin socket */
    CTL_AUTH = 4,    /* authentication refused (either way) or a refused message */
};

struct ctl_opts {
    const char *endpoint;
    const char *cookie_file;
    bool json;
    double timeout_s;
    bool in_shell; /* running lines of `cmcpctl shell`: errors point to `help` */
};
extern struct ctl_opts O;

/* cmcpctl.c: one authenticated session with the node. */
int ctl_connect(void);                      /* CTL_OK or an exit status, after saying why */
int ctl_call(const char *cmd, json_t *args, json_t **resp); /* args stolen; *resp new */
void ctl_disconnect(void);
const char *ctl_node_name(void);

/* cmcpctl_cmds.c */
/* Runs one command line (argv after the global options). Returns an exit status. */
int ctl_run(int argc, char **argv);
void ctl_usage_commands(FILE *f);
/* Command words for completion (the admin protocol's, and help), NULL-terminated. */
const char *const *ctl_command_names(void);
/* Supervisor names known from the last status/which_children (completion). */
int ctl_known_supervisors(const char ***names);

/* cmcpctl_repl.c */
int ctl_shell(void);

#endif
