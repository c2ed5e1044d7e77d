/*
 * cmcpd: the node. Without --role it is the root supervisor of the node's
 * process tree; every child is this same binary, exec'd with --role. This
 * file is the only one that knows every role: the supervisor starts them by
 * name, and the roles know nothing of each other's code.
 */
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "base/cmcp.h"
#include "base/proc.h"
#include "cluster/cluster.h"
#include "node/health_check.h"
#include "node/schema.h"
#include "supervisor/spawn.h"
#include "supervisor/sup.h"
#include "workers/admin/admin.h"
#include "workers/listener/listener.h"
#include "workers/metrics/metrics.h"
#include "workers/oauth/oauth.h"
#include "workers/shard/shard.h"
#include "workers/testworker/testworker.h"
#include "workers/toolrun/toolrun.h"

struct role {
    const char *name;
    int (*main)(struct proc_args *a);
    const char *what;
};

static const struct role roles[] = {
    {"cluster_monitor", cluster_monitor_main, "links to the other nodes, heartbeats, the local view"},
    {"failover_manager", failover_manager_main, "the Raft member and the cluster map; failovers"},
    {"split_brain_detector", split_brain_detector_main, "lease and quorum -> fence this node or not"},
    {"shard", shard_main, "owns the MCP sessions whose ids name it"},
    {"listener", listener_main, "Streamable HTTP, TCP and stdio; routes messages to shards"},
    {"toolrun", toolrun_main, "one call of an external command tool, under tool_sup"},
    {"metrics", metrics_main, "collects every process's metrics; /metrics /health /ready /status"},
    {"admin", admin_main, "the admin socket cmcpctl speaks to (authenticated, sealed)"},
    {"testworker", testworker_main, "a worker the tests tell to crash, hang or exit"},
};

static bool role_known(const char *name)
{
    for (size_t i = 0; i < CMCP_ARRAY_LEN(roles); i++)
        if (strcmp(roles[i].name, name) == 0)
            return true;
    return false;
}

/* What the root checks in a configuration beyond its schema, before it starts anything (and
 * for --check-config): the cluster's settings, then [auth] with its JWKS file. */
static int conf_check(struct cfg *c, char *err, size_t errlen)
{
    if (cluster_conf_check(c, err, errlen) != 0)
        return -1;
    return oauth_conf_check(c, err, errlen);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmcpd [-c FILE] [--stdio] [--check-config | --health-check[=serving]]\n"
            "       cmcpd --config-keys               (every setting, its type and range)\n"
            "       cmcpd --config-env                (the CMCP_ variables that are not settings)\n"
            "       cmcpd --role ROLE --id ID [...]   (how supervisors start children)\n"
            "\n"
            "Runs a cmcp node: the root supervisor of a tree of processes described by the\n"
            "[tree.*] sections of the configuration (embedded defaults: configs/default.conf).\n"
            "\n"
            "  -c, --config FILE   INI file layered over the embedded defaults; every key can\n"
            "                      also be set as CMCP_<SECTION>_<KEY> in the environment\n"
            "      --stdio         serve MCP on stdin/stdout (for clients that launch a command);\n"
            "                      logs stay on stderr; network listeners are off unless\n"
            "                      configured; stops when stdin closes\n"
            "      --check-config  load and validate the configuration, print the tree, exit\n"
            "      --health-check  ask the running node configured so for GET /ready on its\n"
            "                      metrics port (its processes are up): exit 0 on 200, 1\n"
            "                      otherwise; a container's HEALTHCHECK, no shell or curl needed\n"
            "      --health-check=serving\n"
            "                      the same with GET /health (it serves: not fenced, forming,\n"
            "                      draining or restarting a child), what load balancers check\n"
            "      --config-keys   list every setting the configuration may hold (with its\n"
            "                      type and range; docs/configuration.md explains each)\n"
            "      --config-env    list the CMCP_ environment variables that are not settings\n"
            "                      (any other CMCP_ variable that names no setting is refused)\n"
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n"
            "\n"
            "Roles (children only):\n"
            "  supervisor            a nested supervisor ([tree.ID])\n");
    for (size_t i = 0; i < CMCP_ARRAY_LEN(roles); i++)
        fprintf(f, "  %-21s %s\n", roles[i].name, roles[i].what);
    fprintf(f, "\nExit status: 0 stopped cleanly, 2 bad usage or configuration, 3 start failed,\n"
               "4 restart intensity exceeded (see docs/supervisor.md).\n");
}

int main(int argc, char **argv)
{
    /* Static: the arguments and the configuration live as long as the process
     * (a role may exit() from its loop while still using them). */
    static struct proc_args a;
    /* Before nng or libev start threads or watchers. */
    proc_init_signals();
    /* Every connection is a file descriptor: take the hard limit the system allows
     * (children inherit it), not the 1,024 a default shell gives. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "cmcpd: libsodium failed to initialise\n");
        return CMCP_EXIT_FAILURE;
    }
    spawn_self_exe();
    node_schema_add();
    if (argc == 2 && strcmp(argv[1], "--config-keys") == 0) {
        cfg_schema_print(stdout);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--config-env") == 0) {
        for (const char *const *x = cfg_env_extra; *x; x++)
            printf("%s\n", *x);
        return 0;
    }
    switch (proc_parse_args(argc, argv, &a)) {
    case PROC_ARGS_HELP:
        usage(stdout);
        return 0;
    case PROC_ARGS_VERSION:
        printf("cmcpd %s\n", CMCP_VERSION);
        return 0;
    case PROC_ARGS_BAD:
        return CMCP_EXIT_USAGE;
    case PROC_ARGS_OK:
        break;
    }
    if (a.health_check && !a.role) {
        if (cfg_load(&a.cfg, a.config) != 0) {
            fprintf(stderr, "cmcpd: configuration error: %s\n", a.cfg.err);
            return CMCP_EXIT_USAGE;
        }
        return node_health_check(&a.cfg, a.health_check, 2500);
    }
    if (!a.role)
        return sup_root_main(&a, role_known, conf_check);
    int rc = proc_child_setup(&a);
    if (rc != 0)
        return rc;
    if (strcmp(a.role, "supervisor") == 0) {
        struct sup_run_opts o = {a.id, false, a.ready_fd, a.run_dir, a.config, role_known};
        return sup_run(&a.cfg, &o);
    }
    for (size_t i = 0; i < CMCP_ARRAY_LEN(roles); i++)
        if (strcmp(roles[i].name, a.role) == 0)
            return roles[i].main(&a);
    fprintf(stderr, "cmcpd: unknown role '%s' (cmcpd --help lists the roles)\n", a.role);
    return CMCP_EXIT_USAGE;
}
