/*
 * The root supervisor's start-up: what only the first process of a node
 * does before it supervises anything. It resolves the run and data
 * directories (children inherit absolute paths), makes the node's state key,
 * checks the whole tree's configuration, takes the run directory's lock (one
 * node per run directory), and runs the root; a --stdio node's private run
 * directory goes with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"
#include "base/proc.h"
#include "ipc/sock.h"
#include "supervisor/sup.h"
#include "supervisor/sup_internal.h"

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


static bool tree_has_role(struct cfg *c, const char *name, const char *role,
                          sup_role_known_fn role_known, int depth);
static int bind_listen_sockets(struct cfg *c, sup_role_known_fn role_known);

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

/* dir as an absolute path without creating it, for --check-config (which writes nothing):
 * realpath when it exists, else dir joined to the working directory. 0, or -1. */
static int abs_path_of(const char *dir, char out[PATH_MAX])
{
    if (realpath(dir, out))
        return 0;
    if (dir[0] == '/') {
        snprintf(out, PATH_MAX, "%s", dir);
        return 0;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)))
        return -1;
    snprintf(out, PATH_MAX, "%s/%s", cwd, strncmp(dir, "./", 2) == 0 ? dir + 2 : dir);
    return 0;
}

int sup_root_main(struct proc_args *a, sup_role_known_fn role_known, sup_config_check_fn check)
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
    if (a->stdio) {
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
    char cerr[512];
    if (check && check(&a->cfg, cerr, sizeof(cerr)) != 0) {
        fprintf(stderr, "cmcpd: configuration error: %s\n", cerr);
        return CMCP_EXIT_USAGE;
    }
    char rootpid[16];
    snprintf(rootpid, sizeof(rootpid), "%d", (int)getpid());
    setenv("CMCP_ROOT_PID", rootpid, 1);
    /* This start of the node: its cluster identity is (node id, incarnation), and a restarted
     * node comes back with a new one (docs/cluster.md). */
    uint64_t inc;
    randombytes_buf(&inc, sizeof(inc));
    char incs[17];
    snprintf(incs, sizeof(incs), "%016llx", (unsigned long long)(inc ? inc : 1));
    setenv("CMCP_INCARNATION", incs, 1);
    const char *node = cfg_get(&a->cfg, "node", "name", "cmcp");
    const char *run_dir = cfg_get(&a->cfg, "node", "run_dir", "./var/run");
    if (!a->check_config && cmcp_mkdir_p(run_dir, 0755) != 0) {
        fprintf(stderr, "cmcpd: cannot create run directory %s: %s\n", run_dir, strerror(errno));
        return CMCP_EXIT_FAILURE;
    }
    char abs_run[PATH_MAX];
    if (a->check_config ? abs_path_of(run_dir, abs_run) != 0 : !realpath(run_dir, abs_run)) {
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
    if (!a->check_config &&
        prepare_data_dir(cfg_get(&a->cfg, "node", "data_dir", "./var/data")) != 0)
        return CMCP_EXIT_FAILURE;
    log_init(node, "supervisor", "root");
    proc_apply_log_level(&a->cfg);

    struct sup_run_opts o = {"root", true, -1, abs_run, a->config, role_known};
    if (sup_tree_check(&a->cfg, a->check_config ? stdout : NULL, role_known) != 0) {
        fprintf(stderr, "cmcpd: configuration error: %s\n", a->cfg.err);
        return CMCP_EXIT_USAGE;
    }
    if (a->check_config) {
        printf("configuration OK\n");
        return 0;
    }
    int lock = lock_run_dir(abs_run);
    if (lock < 0)
        return CMCP_EXIT_START; /* the start failed: exit 3, as --help says */
    log_info("node_starting", "{s:s,s:s,s:s}", "version", CMCP_VERSION, "run_dir", abs_run,
             "config", a->config ? a->config : "embedded defaults");
    proc_start_error_clear(abs_run);
    int bound = bind_listen_sockets(&a->cfg, role_known);
    if (bound != 0) {
        close(lock);
        return bound;
    }
    int code = sup_run(&a->cfg, &o);
    if (code == CMCP_EXIT_START) {
        /* The cause, as the last line a person sees, not somewhere above. */
        char why[600];
        if (*proc_start_error_read(abs_run, why, sizeof(why)))
            fprintf(stderr, "cmcpd: the node did not start: %s\n", why);
        else
            fprintf(stderr, "cmcpd: the node did not start: a process failed to start (its error "
                            "is above; docs/operations.md lists the exit statuses)\n");
    }
    proc_start_error_clear(abs_run);
    close(lock);
    if (a->stdio && strncmp(abs_run, "/tmp/cmcp-stdio-", 16) == 0)
        remove_private_run_dir(abs_run);
    return code;
}

/* Whether a worker of role `role` runs in the tree under supervisor `name`. */
static bool tree_has_role(struct cfg *c, const char *name, const char *role,
                          sup_role_known_fn role_known, int depth)
{
    struct sup_spec *spec = calloc(1, sizeof(*spec));
    if (!spec || depth > 16 || sup_spec_from_cfg(c, name, spec, role_known) != 0) {
        free(spec);
        return false;
    }
    bool found = false;
    for (int i = 0; i < spec->nchildren && !found; i++) {
        const struct child_spec *cs = &spec->children[i];
        if (cs->type == SUP_SUPERVISOR)
            found = tree_has_role(c, cs->id, role, role_known, depth + 1);
        else
            found = strcmp(cs->role, role) == 0;
    }
    if (!found && spec->has_template)
        found = spec->tmpl.type == SUP_WORKER && strcmp(spec->tmpl.role, role) == 0;
    sup_spec_free(spec);
    free(spec);
    return found;
}

/*
 * The listeners' ports, bound once here (0, or the exit status after saying why) and held for the node's life: listeners
 * (and the supervisors between) inherit them at fixed descriptors (base/proc.h).
 * A restarting listener's port keeps queueing connections, K listeners share one
 * accept queue (a stopped one takes none), and a port someone else holds -- another
 * cmcp node included: no SO_REUSEPORT any more -- stops the node here, with one line.
 */
static int bind_listen_sockets(struct cfg *c, sup_role_known_fn role_known)
{
    char err_keep[sizeof(c->err)];
    memcpy(err_keep, c->err, sizeof(err_keep));
    bool has = tree_has_role(c, "root", "listener", role_known, 0);
    memcpy(c->err, err_keep, sizeof(err_keep));
    if (!has)
        return 0;
    static const struct {
        const char *name, *label, *env;
        long dflt;
    } ports[] = {{"http", "HTTP", "HTTP", 8080}, {"tcp", "TCP", "TCP", 8081}};
    long http = cfg_get_long(c, "listener", "http_port", 8080);
    if (http > 0 && http == cfg_get_long(c, "listener", "tcp_port", 8081)) {
        fprintf(stderr, "cmcpd: [listener] http_port and tcp_port are both %ld; give each its "
                        "own port\n",
                http);
        return CMCP_EXIT_USAGE;
    }
    char env[128] = "";
    size_t used = 0;
    int next_fd = PROC_LISTEN_FD_FIRST;
    for (size_t i = 0; i < CMCP_ARRAY_LEN(ports); i++) {
        char key[32], bkey[32];
        snprintf(key, sizeof(key), "%s_port", ports[i].name);
        snprintf(bkey, sizeof(bkey), "%s_bind", ports[i].name);
        long port = cfg_get_long(c, "listener", key, ports[i].dflt);
        const char *bind_addr = cfg_get(c, "listener", bkey, "127.0.0.1");
        if (port <= 0)
            continue;
        char err[300];
        int fd = sock_tcp_listen(bind_addr, (int)port, false, 4096, err, sizeof(err));
        if (fd < 0) {
            log_error("listen_failed", "{s:s,s:s,s:I,s:s}", "transport", ports[i].name, "bind",
                      bind_addr, "port", (json_int_t)port, "error", err);
            fprintf(stderr,
                    "cmcpd: the node did not start: cannot serve MCP over %s on %s:%ld: %s; "
                    "another program holds the port, another cmcp node perhaps (`ss -ltnp "
                    "'sport = :%ld'` names it). Stop it, or give this node another port: "
                    "[listener] %s or CMCP_LISTENER_%s_PORT\n",
                    ports[i].label, bind_addr, port, err, port, key, ports[i].env);
            return CMCP_EXIT_START;
        }
        if (dup2(fd, next_fd) < 0) {
            fprintf(stderr, "cmcpd: cannot keep the %s listening socket: %s\n", ports[i].label,
                    strerror(errno));
            close(fd);
            return CMCP_EXIT_START;
        }
        close(fd);
        fcntl(next_fd, F_SETFD, FD_CLOEXEC); /* crosses an exec only where spawn says so */
        used += (size_t)snprintf(env + used, sizeof(env) - used, "%s%s=%d", used ? "," : "",
                                 ports[i].name, next_fd);
        next_fd++;
    }
    if (used)
        setenv("CMCP_LISTEN_FDS", env, 1);
    return 0;
}

/* HOST:PORT, with an IPv6 address in brackets. */
static void host_port(char *out, size_t len, const char *host, long port)
{
    snprintf(out, len, strchr(host, ':') ? "[%s]:%ld" : "%s:%ld", host, port);
}

void sup_root_ready_summary(struct cfg *c, sup_role_known_fn role_known, char *buf, size_t len)
{
    char err_keep[sizeof(c->err)];
    memcpy(err_keep, c->err, sizeof(err_keep)); /* the walk must not change what c says */
    size_t j = (size_t)snprintf(buf, len, "cmcp ready:");
    const char *sep = " ";
    char hp[300];
#define ADD(...)                                                                               \
    do {                                                                                       \
        if (j < len) {                                                                         \
            int n_ = snprintf(buf + j, len - j, __VA_ARGS__);                                  \
            j += n_ > 0 ? (size_t)n_ : 0;                                                      \
        }                                                                                      \
    } while (0)
    if (tree_has_role(c, "root", "listener", role_known, 0)) {
        long http = cfg_get_long(c, "listener", "http_port", 8080);
        long tcp = cfg_get_long(c, "listener", "tcp_port", 8081);
        if (http > 0) {
            host_port(hp, sizeof(hp), cfg_get(c, "listener", "http_bind", "127.0.0.1"), http);
            ADD("%sMCP on http://%s/mcp (also WebSocket /mcp/ws, HTTP+SSE /sse)", sep, hp);
            sep = ", ";
        }
        if (tcp > 0) {
            host_port(hp, sizeof(hp), cfg_get(c, "listener", "tcp_bind", "127.0.0.1"), tcp);
            ADD("%sMCP over TCP %s", sep, hp);
            sep = ", ";
        }
        if (getenv("CMCP_STDIO")) {
            ADD("%sMCP on stdin/stdout", sep);
            sep = ", ";
        }
    }
    if (tree_has_role(c, "root", "metrics", role_known, 0)) {
        long port = cfg_get_long(c, "metrics", "port", 9090);
        if (port > 0) {
            host_port(hp, sizeof(hp), cfg_get(c, "metrics", "bind", "127.0.0.1"), port);
            ADD("%smetrics http://%s/metrics", sep, hp);
            sep = ", ";
        }
    }
    if (tree_has_role(c, "root", "admin", role_known, 0)) {
        const char *ep = cfg_get(c, "admin", "endpoint", "");
        if (*ep) {
            ADD("%sadmin %s (cmcpctl)", sep, ep);
            sep = ", ";
        }
    }
    const char *peers = cfg_get(c, "cluster", "bind", "");
    if (*peers) {
        ADD("%scluster links %s", sep, peers);
        sep = ", ";
    }
    if (strcmp(sep, " ") == 0)
        ADD(" no endpoints (the tree runs no listener, metrics or admin worker)");
#undef ADD
    memcpy(c->err, err_keep, sizeof(err_keep));
}
