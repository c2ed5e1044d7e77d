#include "base/proc.h"

#include "base/cmcp.h"
#include "base/log.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <time.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void proc_init_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Walks CMCP_LISTEN_FDS ("name=fd,name=fd"): the fd of `name`, or with name NULL every fd
 * into fds. */
static int listen_fds_walk(const char *name, int *fds, int max)
{
    const char *env = getenv("CMCP_LISTEN_FDS");
    int n = 0;
    for (const char *p = env; p && *p && n < max;) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        if (eq && eq < end) {
            int fd = atoi(eq + 1);
            if (fd >= PROC_LISTEN_FD_FIRST && fd < PROC_LISTEN_FD_FIRST + PROC_LISTEN_FD_MAX) {
                if (name && (size_t)(eq - p) == strlen(name) && strncmp(p, name, strlen(name)) == 0)
                    return fd;
                if (!name)
                    fds[n++] = fd;
            }
        }
        p = *end ? end + 1 : end;
    }
    return name ? -1 : n;
}

int proc_listen_fd(const char *name)
{
    return listen_fds_walk(name, NULL, 1);
}

int proc_listen_fds(int fds[PROC_LISTEN_FD_MAX])
{
    return listen_fds_walk(NULL, fds, PROC_LISTEN_FD_MAX);
}

static long stop_ms;
static int stop_code;

static void *stop_deadline_thread(void *arg)
{
    (void)arg;
    struct timespec ts = {stop_ms / 1000, (stop_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
    log_warn("stop_cleanup_stuck", "{s:I,s:s}", "deadline_ms", (json_int_t)stop_ms, "action",
             "exit without the rest of the clean-up (the state that matters is on disk)");
    fflush(NULL);
    _exit(stop_code);
    return NULL;
}

void proc_stop_deadline(long ms, int code)
{
    static bool armed;
    if (armed || ms <= 0)
        return;
    armed = true;
    stop_ms = ms;
    stop_code = code;
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &at, stop_deadline_thread, NULL) != 0)
        armed = false; /* no thread: the supervisor's shutdown timeout still bounds it */
    pthread_attr_destroy(&at);
}

static int beat_fd = -1;
static ev_timer beat_w;

static void beat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    /* Never blocks: a full pipe (the supervisor itself is stuck) skips a beat. */
    if (write(beat_fd, ".", 1) < 0 && errno != EAGAIN && errno != EINTR) {
        ev_ref(loop); /* it was unref'd when started */
        ev_timer_stop(loop, w); /* the supervisor is gone */
        close(beat_fd);
        beat_fd = -1;
    }
}

void proc_notify_ready(struct proc_args *a)
{
    if (a->ready_fd < 0)
        return;
    ssize_t w = write(a->ready_fd, "\n", 1);
    (void)w;
    if (a->watchdog_ms > 0 && beat_fd < 0) {
        beat_fd = a->ready_fd;
        a->ready_fd = -1;
        fcntl(beat_fd, F_SETFL, fcntl(beat_fd, F_GETFL) | O_NONBLOCK);
        fcntl(beat_fd, F_SETFD, FD_CLOEXEC);
        /* Five beats per limit: one late timer or a busy turn is not a miss. */
        double every = (double)a->watchdog_ms / 5000.0;
        if (every < 0.02)
            every = 0.02;
        struct ev_loop *loop = ev_default_loop(0);
        ev_timer_init(&beat_w, beat_cb, every, every);
        ev_timer_start(loop, &beat_w);
        ev_unref(loop); /* the beat alone does not keep a loop running */
        return;
    }
    close(a->ready_fd);
    a->ready_fd = -1;
}

enum proc_parse proc_parse_args(int argc, char **argv, struct proc_args *a)
{
    memset(a, 0, sizeof(*a));
    a->index = -1;
    a->ready_fd = -1;
    a->argv = calloc((size_t)argc + 1, sizeof(char *));
    if (!a->argv) {
        fprintf(stderr, "cmcpd: out of memory\n");
        return PROC_ARGS_BAD;
    }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE(name) (strcmp(o, name) == 0 && v && (i++, 1))
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            return PROC_ARGS_HELP;
        } else if (!strcmp(o, "-V") || !strcmp(o, "--version")) {
            return PROC_ARGS_VERSION;
        } else if (!strcmp(o, "--check-config")) {
            a->check_config = true;
        } else if ((!strcmp(o, "--health-check") || !strcmp(o, "--health-check=ready")) &&
                   !a->role) {
            a->health_check = "/ready";
        } else if (!strcmp(o, "--health-check=serving") && !a->role) {
            a->health_check = "/health";
        } else if (!strcmp(o, "--stdio") && !a->role) {
            a->stdio = true;
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
        } else if (TAKE("--watchdog")) {
            a->watchdog_ms = atol(v);
        } else if (a->role) {
            a->argv[a->argc++] = argv[i]; /* the role's own arguments */
        } else {
            fprintf(stderr, "cmcpd: unknown argument '%s' (cmcpd --help lists the options)\n", o);
            return PROC_ARGS_BAD;
        }
#undef TAKE
    }
    return PROC_ARGS_OK;
}

void proc_apply_log_level(const struct cfg *c)
{
    enum log_level lvl;
    const char *lv = cfg_get(c, "node", "log_level", NULL);
    if (lv && log_level_parse(lv, &lvl) == 0 && !getenv("CMCP_LOG_LEVEL"))
        log_set_level(lvl);
    enum log_format fmt;
    if (log_format_parse(cfg_get(c, "node", "log_format", "auto"), &fmt) == 0)
        log_set_format(fmt);
}

int proc_child_setup(struct proc_args *a)
{
    if (cfg_load(&a->cfg, a->config) != 0) {
        fprintf(stderr, "cmcpd: configuration error: %s\n", a->cfg.err);
        return CMCP_EXIT_USAGE;
    }
    a->node = cfg_get(&a->cfg, "node", "name", "cmcp");
    a->run_dir = cfg_get(&a->cfg, "node", "run_dir", "./var/run");
    log_init(a->node, a->role, a->id);
    proc_apply_log_level(&a->cfg);
    if (!a->id) {
        fprintf(stderr, "cmcpd: --role needs --id\n");
        return CMCP_EXIT_USAGE;
    }
    return 0;
}

static void start_error_path(char *out, size_t len, const char *run_dir)
{
    snprintf(out, len, "%s/start-error", run_dir);
}

void proc_start_error(const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "cmcpd: %s\n", msg);
    const char *run_dir = getenv("CMCP_NODE_RUN_DIR");
    if (!run_dir || !*run_dir)
        return;
    char path[4096];
    start_error_path(path, sizeof(path), run_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return; /* another process's came first: that one is the cause */
    ssize_t w = write(fd, msg, strlen(msg));
    (void)w;
    close(fd);
}

const char *proc_start_error_read(const char *run_dir, char *buf, size_t len)
{
    char path[4096];
    start_error_path(path, sizeof(path), run_dir);
    buf[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return buf;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

void proc_start_error_clear(const char *run_dir)
{
    char path[4096];
    start_error_path(path, sizeof(path), run_dir);
    unlink(path);
}
