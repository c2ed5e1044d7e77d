/*
 * cmcpd: the node. Without --role it is the root supervisor of the node's
 * process tree; every child is this same binary, exec'd with --role.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmcp.h"
#include "config.h"
#include "log.h"
#include "proc.h"
#include "spawn.h"
#include "sup.h"
#include "admin.h"
#include "listener.h"
#include "metrics.h"
#include "shard.h"
#include "workers.h"

struct role {
    const char *name;
    int (*main)(struct proc_args *a);
    const char *what;
};

static const struct role roles[] = {
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

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmcpd [-c FILE] [--stdio] [--check-config]\n"
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
            "  -h, --help          this text\n"
            "  -V, --version       print the version\n"
            "\n"
            "Roles (children only):\n"
            "  supervisor  a nested supervisor ([tree.ID])\n");
    for (size_t i = 0; i < CMCP_ARRAY_LEN(roles); i++)
        fprintf(f, "  %-11s %s\n", roles[i].name, roles[i].what);
    fprintf(f, "\nExit status: 0 stopped cleanly, 2 bad usage or configuration, 3 start failed,\n"
               "4 restart intensity exceeded (see docs/supervisor.md).\n");
}

static bool stdio_mode;

static int parse_args(int argc, char **argv, struct proc_args *a, bool *check_config)
{
    memset(a, 0, sizeof(*a));
    a->index = -1;
    a->ready_fd = -1;
    a->argv = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(name) (strcmp(o, name) == 0 && v && (i++, 1))
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(o, "-V") || !strcmp(o, "--version")) {
            printf("cmcpd %s\n", CMCP_VERSION);
            exit(0);
        } else if (!strcmp(o, "--check-config")) {
            *check_config = true;
        } else if (!strcmp(o, "--stdio") && !a->role) {
            stdio_mode = true;
        } else if (TAKE("--role")) {
            a->role = v;
        } else if (TAKE("--id")) {
            a->id = v;
        } else if (TAKE("--sup")) {
            a->sup = v;
        } else if (TAKE("--index")) {
            a->index = atoi(v);
        } else if (TAKE("-c") || TAKE("--config")) {
            a->config = v;
        } else if (TAKE("--ready-fd")) {
            a->ready_fd = atoi(v);
        } else if (a->role) {
            a->argv[a->argc++] = argv[i]; /* the role's own arguments */
        } else {
            fprintf(stderr, "cmcpd: unknown argument '%s' (cmcpd --help lists the options)\n", o);
            return -1;
        }
#undef TAKE
    }
    return 0;
}


/* One root per run directory: a second node there would fight over its sockets. */
static int lock_run_dir(const char *run_dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/cmcpd.pid", run_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "cmcpd: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "?";
        ssize_t n = read(fd, pid, sizeof(pid) - 1);
        if (n > 0)
            pid[n] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        fprintf(stderr,
                "cmcpd: another node (pid %s) is running with run directory %s; stop it, or give "
                "this one its own ([node] run_dir or CMCP_NODE_RUN_DIR)\n",
                pid, run_dir);
        close(fd);
        return -1;
    }
    char line[32];
    int n = snprintf(line, sizeof(line), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, line, (size_t)n) != n)
        fprintf(stderr, "cmcpd: warning: cannot write %s\n", path);
    return fd; /* held open for the life of the root */
}

/*
 * Checks every supervisor of the tree before anything starts, so that an error
 * in a nested section is a configuration error (exit 2, file:line) and not a
 * failed start. A supervisor section may appear once in the tree: it is one
 * process with one control socket (this also rules out cycles).
 * With out != NULL, prints the tree.
 */
static int check_tree(struct cfg *c, FILE *out)
{
    struct sup_spec *sp = calloc(1, sizeof(*sp));
    static char names[SUP_MAX_CHILDREN][64], parents[SUP_MAX_CHILDREN][64];
    int n = 0, done = 0, rc = 0;
    if (!sp) {
        snprintf(c->err, sizeof(c->err), "out of memory");
        return -1;
    }
    snprintf(names[n], sizeof(names[n]), "root");
    parents[n++][0] = '\0';
    while (done < n && rc == 0) {
        if (sup_spec_from_cfg(c, names[done], sp, role_known) != 0) {
            rc = -1;
            break;
        }
        if (out)
            fprintf(out, "%s: %s, intensity %d in %d s\n", names[done],
                    sup_strategy_name(sp->strategy), sp->intensity, sp->period_s);
        for (int i = 0; i < sp->nchildren && rc == 0; i++) {
            struct child_spec *cs = &sp->children[i];
            if (out)
                fprintf(out, "  %s (%s, %s)\n", cs->id,
                        cs->type == SUP_SUPERVISOR ? "supervisor"
                        : cs->is_exec              ? cs->argv[0]
                                                   : cs->role,
                        sup_restart_name(cs->restart));
            if (cs->type != SUP_SUPERVISOR)
                continue;
            for (int k = 0; k < n; k++)
                if (strcmp(names[k], cs->section) == 0) {
                    char sec[80];
                    snprintf(sec, sizeof(sec), "tree.%s", names[done]);
                    rc = cfg_errorf(c, cfg_find(c, sec, "children"),
                                    "supervisor '%s' is already in the tree%s%s%s; a supervisor "
                                    "section starts one process, so it may appear only once",
                                    cs->section, parents[k][0] ? " (under '" : "",
                                    parents[k][0] ? parents[k] : "",
                                    parents[k][0] ? "')" : " (it is the root)");
                    break;
                }
            if (rc == 0 && n == SUP_MAX_CHILDREN) {
                snprintf(c->err, sizeof(c->err), "more than %d supervisors in the tree",
                         SUP_MAX_CHILDREN);
                rc = -1;
            }
            if (rc == 0) {
                snprintf(names[n], sizeof(names[n]), "%s", cs->section);
                snprintf(parents[n], sizeof(parents[n]), "%s", names[done]);
                n++;
            }
        }
        if (out && sp->has_template)
            fprintf(out, "  template %s (%s, %s)\n", sp->tmpl.id,
                    sp->tmpl.is_exec ? sp->tmpl.argv[0] : sp->tmpl.role,
                    sup_restart_name(sp->tmpl.restart));
        sup_spec_free(sp);
        done++;
    }
    free(sp);
    return rc;
}

/* A --stdio node's private run directory goes with it; what is left there is ours. */
static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: keep going */
    return 0;
}

static void remove_private_run_dir(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*
 * The data directory, absolute for the children, and the node's state key in
 * it: 32 random bytes (mode 0600) that seal the multi-round state of stateless
 * requests, shared by every shard and kept across restarts.
 */
static int prepare_data_dir(const char *dir)
{
    char abs[PATH_MAX], key[PATH_MAX + 16];
    if (cmcp_mkdir_p(dir, 0755) != 0 || !realpath(dir, abs)) {
        fprintf(stderr, "cmcpd: cannot create data directory %s: %s ([node] data_dir)\n", dir,
                strerror(errno));
        return -1;
    }
    setenv("CMCP_NODE_DATA_DIR", abs, 1);
    snprintf(key, sizeof(key), "%s/state.key", abs);
    int fd = open(key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return 0;
    unsigned char bytes[32];
    randombytes_buf(bytes, sizeof(bytes));
    if (fd < 0 || write(fd, bytes, sizeof(bytes)) != (ssize_t)sizeof(bytes)) {
        fprintf(stderr, "cmcpd: cannot write %s: %s\n", key, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    sodium_memzero(bytes, sizeof(bytes));
    close(fd);
    return 0;
}

static int run_root(struct proc_args *a, bool check_config)
{
    char cfgpath[PATH_MAX];
    if (a->config) {
        if (!realpath(a->config, cfgpath)) {
            fprintf(stderr, "cmcpd: cannot read config file %s: %s\n", a->config,
                    strerror(errno));
            return CMCP_EXIT_USAGE;
        }
        a->config = cfgpath;
    }
    if (stdio_mode) {
        /* A client may launch several of us at once: no fixed ports, a private run
         * directory, unless the configuration or the environment says otherwise. */
        char dir[64];
        snprintf(dir, sizeof(dir), "/tmp/cmcp-stdio-%d", (int)getpid());
        setenv("CMCP_NODE_RUN_DIR", dir, 0);
        /* Its one session lives and dies with the pipe: nothing to keep across runs. */
        char data[80];
        snprintf(data, sizeof(data), "%s/data", dir);
        setenv("CMCP_NODE_DATA_DIR", data, 0);
        setenv("CMCP_LISTENER_HTTP_PORT", "0", 0);
        setenv("CMCP_LISTENER_TCP_PORT", "0", 0);
        /* Nor metrics HTTP or an admin socket (which would also leave a cookie file in the
         * client's working directory). */
        setenv("CMCP_METRICS_PORT", "0", 0);
        setenv("CMCP_ADMIN_ENDPOINT", "", 0);
        setenv("CMCP_STDIO", "1", 1);
    }
    if (cfg_load(&a->cfg, a->config) != 0) {
        fprintf(stderr, "cmcpd: configuration error: %s\n", a->cfg.err);
        return CMCP_EXIT_USAGE;
    }
    char rootpid[16];
    snprintf(rootpid, sizeof(rootpid), "%d", (int)getpid());
    setenv("CMCP_ROOT_PID", rootpid, 1);
    const char *node = cfg_get(&a->cfg, "node", "name", "cmcp");
    const char *run_dir = cfg_get(&a->cfg, "node", "run_dir", "./var/run");
    if (cmcp_mkdir_p(run_dir, 0755) != 0) {
        fprintf(stderr, "cmcpd: cannot create run directory %s: %s\n", run_dir, strerror(errno));
        return CMCP_EXIT_FAILURE;
    }
    char abs_run[PATH_MAX];
    if (!realpath(run_dir, abs_run)) {
        fprintf(stderr, "cmcpd: cannot resolve run directory %s: %s\n", run_dir, strerror(errno));
        return CMCP_EXIT_FAILURE;
    }
    if (strlen(abs_run) > 80) {
        fprintf(stderr, "cmcpd: run directory %s is too long for unix socket paths (at most 80 "
                        "bytes); choose a shorter [node] run_dir\n",
                abs_run);
        return CMCP_EXIT_USAGE;
    }
    /* Children inherit the resolved directory, whatever their working directory. */
    setenv("CMCP_NODE_RUN_DIR", abs_run, 1);
    if (prepare_data_dir(cfg_get(&a->cfg, "node", "data_dir", "./var/data")) != 0)
        return CMCP_EXIT_FAILURE;
    log_init(node, "supervisor", "root");
    enum log_level lvl;
    const char *lv = cfg_get(&a->cfg, "node", "log_level", NULL);
    if (lv && log_level_parse(lv, &lvl) == 0 && !getenv("CMCP_LOG_LEVEL"))
        log_set_level(lvl);

    struct sup_run_opts o = {"root", true, -1, abs_run, a->config, role_known};
    if (check_tree(&a->cfg, check_config ? stdout : NULL) != 0) {
        fprintf(stderr, "cmcpd: configuration error: %s\n", a->cfg.err);
        return CMCP_EXIT_USAGE;
    }
    if (check_config) {
        printf("configuration OK\n");
        return 0;
    }
    int lock = lock_run_dir(abs_run);
    if (lock < 0)
        return CMCP_EXIT_FAILURE;
    log_info("node_starting", "{s:s,s:s,s:s}", "version", CMCP_VERSION, "run_dir", abs_run,
             "config", a->config ? a->config : "embedded defaults");
    int code = sup_run(&a->cfg, &o);
    close(lock);
    if (stdio_mode && strncmp(abs_run, "/tmp/cmcp-stdio-", 16) == 0)
        remove_private_run_dir(abs_run);
    return code;
}

int main(int argc, char **argv)
{
    /* Static: the arguments and the configuration live as long as the process
     * (a role may exit() from its loop while still using them). */
    static struct proc_args a;
    bool check_config = false;
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
    if (parse_args(argc, argv, &a, &check_config) != 0)
        return CMCP_EXIT_USAGE;
    if (!a.role)
        return run_root(&a, check_config);

    /* A child: the root already validated the configuration we load again. */
    if (cfg_load(&a.cfg, a.config) != 0) {
        fprintf(stderr, "cmcpd: configuration error: %s\n", a.cfg.err);
        return CMCP_EXIT_USAGE;
    }
    a.node = cfg_get(&a.cfg, "node", "name", "cmcp");
    a.run_dir = cfg_get(&a.cfg, "node", "run_dir", "./var/run");
    log_init(a.node, a.role, a.id);
    enum log_level lvl;
    const char *lv = cfg_get(&a.cfg, "node", "log_level", NULL);
    if (lv && log_level_parse(lv, &lvl) == 0 && !getenv("CMCP_LOG_LEVEL"))
        log_set_level(lvl);
    if (!a.id) {
        fprintf(stderr, "cmcpd: --role needs --id\n");
        return CMCP_EXIT_USAGE;
    }
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
