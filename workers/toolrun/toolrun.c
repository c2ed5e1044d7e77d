/*
 * Role `toolrun`: one call of an external command tool ([tool.NAME] in the
 * configuration), started by tool_sup (simple_one_for_one, temporary) at its
 * shard's request. It fetches the call's arguments from the shard, runs the
 * command in a process group of its own with the arguments as JSON on stdin,
 * collects stdout (the result) and stderr (into the log), enforces the
 * timeout, and sends the result back. Every failure becomes an isError
 * result that says what happened; a cancelled call is killed (SIGTERM from
 * tool_sup) and reports nothing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "ipc/addr.h"
#include "ipc/wire.h"
#include "base/log.h"
#include "workers/toolrun/toolrun.h"

#define TOOLRUN_MAX_ARGS 32 /* words of a tool's command line, and of its env */
#define STDERR_LINE_MAX 2000
#define STDERR_TAIL 600

static struct {
    struct proc_args *a;
    const char *tool, *token;
    int shard;
    long timeout_ms, max_out;
    pid_t pid;
    int in_fd, out_fd, err_fd;
    ev_io in_w, out_w, err_w;
    ev_child child_w;
    ev_timer timeout_w;
    ev_signal term_w;
    char *args;
    size_t args_len, args_off;
    char *out;
    size_t out_len, out_cap;
    char err_line[STDERR_LINE_MAX];
    size_t err_len;
    char err_tail[STDERR_TAIL];
    size_t tail_len;
    bool timed_out, too_big, exited;
    int status;
} t;

/* One exchange with the run's shard: *st is its status; *reply_body (may be NULL) its body. */
static int shard_call(enum wire_op op, const char *body, size_t len, int *st, char **reply_body)
{
    char addr[512];
    nng_socket s;
    int rv;
    *st = 0;
    ipc_addr_shard_ctl(addr, sizeof(addr), t.a->run_dir, t.shard);
    if ((rv = nng_req0_open(&s)) != 0)
        return rv;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    if ((rv = nng_dial(s, addr, NULL, 0)) != 0) {
        nng_close(s);
        return rv;
    }
    struct wire_req req = {.op = op, .token = t.token, .body = body, .blen = len};
    nng_msg *m = wire_req_msg(&req);
    if (!m || (rv = nng_sendmsg(s, m, 0)) != 0) {
        if (m)
            nng_msg_free(m);
        nng_close(s);
        return rv ? rv : NNG_ENOMEM;
    }
    nng_msg *r;
    if ((rv = nng_recvmsg(s, &r, 0)) != 0) {
        nng_close(s);
        return rv;
    }
    struct wire_reply rep;
    json_t *keep;
    if (wire_from_shard_parse(nng_msg_body(r), nng_msg_len(r), &rep, NULL, &keep) == WIRE_REPLY) {
        *st = rep.st;
        if (reply_body)
            *reply_body = strndup(rep.body, rep.blen);
    }
    json_decref(keep);
    nng_msg_free(r);
    nng_close(s);
    return 0;
}

static json_t *error_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static json_t *error_result(const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (t.tail_len && n > 0 && (size_t)n < sizeof(msg))
        snprintf(msg + n, sizeof(msg) - (size_t)n, "; stderr ends with: %.*s", (int)t.tail_len,
                 t.err_tail);
    return json_pack("{s:[{s:s,s:s}],s:b}", "content", "type", "text", "text", msg, "isError", 1);
}

/* What the command's outcome means for the client. */
static json_t *build_result(void)
{
    if (t.timed_out)
        return error_result("tool %s timed out after %ld ms and was killed", t.tool, t.timeout_ms);
    if (t.too_big)
        return error_result("tool %s printed more than %ld bytes and was killed", t.tool,
                            t.max_out);
    if (WIFSIGNALED(t.status))
        return error_result("tool %s crashed: killed by signal %d (%s)", t.tool,
                            WTERMSIG(t.status), strsignal(WTERMSIG(t.status)));
    if (WEXITSTATUS(t.status) != 0)
        return error_result("tool %s failed: it exited with status %d", t.tool,
                            WEXITSTATUS(t.status));
    json_error_t jerr;
    json_t *v = json_loadb(t.out ? t.out : "", t.out_len, JSON_DECODE_ANY, &jerr);
    if (!v)
        return error_result("tool %s printed output that is not JSON (%s): %.200s", t.tool,
                            jerr.text, t.out ? t.out : "");
    if (json_is_object(v) && json_is_array(json_object_get(v, "content")))
        return v; /* a CallToolResult as the command wrote it */
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *r = json_pack("{s:[{s:s,s:s}]}", "content", "type", "text", "text", text ? text : "");
    free(text);
    if (json_is_object(v))
        json_object_set(r, "structuredContent", v);
    json_decref(v);
    return r;
}

static void kill_group(int sig)
{
    if (t.pid > 0)
        kill(-t.pid, sig);
}

static void maybe_finish(struct ev_loop *loop)
{
    if (!t.exited || t.out_fd >= 0 || t.err_fd >= 0)
        return;
    json_t *r = build_result();
    char *text = json_dumps(r, JSON_COMPACT);
    json_decref(r);
    int st;
    int rv = shard_call(WIRE_TOOL_RESULT, text, strlen(text), &st, NULL);
    if (rv != 0)
        log_error("tool_result_lost", "{s:s,s:s}", "tool", t.tool, "error", nng_strerror(rv));
    free(text);
    ev_break(loop, EVBREAK_ALL);
}

static void child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    ev_child_stop(loop, w);
    t.exited = true;
    t.status = w->rstatus;
    ev_timer_stop(loop, &t.timeout_w);
    /* Anything the command left behind in its group goes with it. */
    kill_group(SIGKILL);
    maybe_finish(loop);
}

static void close_fd(struct ev_loop *loop, ev_io *w, int *fd)
{
    if (*fd >= 0) {
        ev_io_stop(loop, w);
        close(*fd);
        *fd = -1;
    }
}

static void out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    (void)w;
    if (t.out_cap - t.out_len < 65536) {
        t.out_cap = t.out_cap ? t.out_cap * 2 : 65536;
        t.out = realloc(t.out, t.out_cap + 1);
    }
    ssize_t n = read(t.out_fd, t.out + t.out_len, t.out_cap - t.out_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        t.out[t.out_len] = '\0';
        close_fd(loop, &t.out_w, &t.out_fd);
        maybe_finish(loop);
        return;
    }
    t.out_len += (size_t)n;
    t.out[t.out_len] = '\0';
    if ((long)t.out_len > t.max_out && !t.too_big) {
        t.too_big = true;
        kill_group(SIGKILL);
    }
}

static void err_line_done(void)
{
    if (t.err_len == 0)
        return;
    t.err_line[t.err_len] = '\0';
    log_info("tool_stderr", "{s:s,s:s}", "tool", t.tool, "line", t.err_line);
    size_t n = t.err_len < STDERR_TAIL ? t.err_len : STDERR_TAIL;
    memcpy(t.err_tail, t.err_line + t.err_len - n, n);
    t.tail_len = n;
    t.err_len = 0;
}

static void err_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    (void)w;
    char buf[4096];
    ssize_t n = read(t.err_fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        err_line_done();
        close_fd(loop, &t.err_w, &t.err_fd);
        maybe_finish(loop);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || t.err_len == STDERR_LINE_MAX - 1)
            err_line_done();
        if (buf[i] != '\n')
            t.err_line[t.err_len++] = buf[i];
    }
}

static void in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    (void)w;
    ssize_t n = write(t.in_fd, t.args + t.args_off, t.args_len - t.args_off);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        t.args_off += (size_t)n;
    /* Done, or the command closed its stdin without reading: it sees EOF either way. */
    if (n <= 0 || t.args_off == t.args_len)
        close_fd(loop, &t.in_w, &t.in_fd);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    t.timed_out = true;
    log_warn("tool_timeout", "{s:s,s:I}", "tool", t.tool, "timeout_ms", (json_int_t)t.timeout_ms);
    kill_group(SIGKILL);
}

static void term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    /* Cancelled, or the node stops: the command and its group go, and nothing is reported. */
    log_info("tool_cancelled", "{s:s}", "tool", t.tool);
    kill_group(SIGKILL);
    ev_break(loop, EVBREAK_ALL);
}

/* What cfg_split_args made (a NULL-terminated list of malloc'd strings). */
static void free_args(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
}

static int spawn_command(const char *sec)
{
    char *argv[TOOLRUN_MAX_ARGS + 1];
    const char *cmd = cfg_get(&t.a->cfg, sec, "command", NULL);
    int nargs = cmd ? cfg_split_args(cmd, argv, TOOLRUN_MAX_ARGS) : -1;
    if (nargs <= 0) {
        log_error("tool_misconfigured", "{s:s}", "tool", t.tool);
        return -1;
    }
    char *envv[TOOLRUN_MAX_ARGS + 1];
    const char *env = cfg_get(&t.a->cfg, sec, "env", NULL);
    int nenv = env ? cfg_split_args(env, envv, TOOLRUN_MAX_ARGS) : 0;
    if (nenv < 0)
        nenv = 0;
    const char *cwd = cfg_get(&t.a->cfg, sec, "cwd", NULL);
    int in[2], out[2], err[2];
    pid_t pid = -1;
    if (pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0 && pipe2(err, O_CLOEXEC) == 0)
        pid = fork();
    if (pid < 0) {
        free_args(argv, nargs);
        free_args(envv, nenv);
        return -1;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the runner */
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        if (cwd && chdir(cwd) != 0) {
            dprintf(2, "cannot enter working directory %s: %s\n", cwd, strerror(errno));
            _exit(126);
        }
        for (int i = 0; i < nenv; i++)
            putenv(envv[i]);
        execvp(argv[0], argv);
        dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    t.pid = pid;
    t.in_fd = in[1];
    t.out_fd = out[0];
    t.err_fd = err[0];
    fcntl(t.in_fd, F_SETFL, O_NONBLOCK);
    fcntl(t.out_fd, F_SETFL, O_NONBLOCK);
    fcntl(t.err_fd, F_SETFL, O_NONBLOCK);
    free_args(argv, nargs);
    free_args(envv, nenv); /* the child had its copies */
    return 0;
}

int toolrun_main(struct proc_args *a)
{
    memset(&t, 0, sizeof(t));
    t.a = a;
    t.in_fd = t.out_fd = t.err_fd = -1;
    for (int i = 0; i + 1 < a->argc; i += 2) {
        if (!strcmp(a->argv[i], "--tool"))
            t.tool = a->argv[i + 1];
        else if (!strcmp(a->argv[i], "--shard"))
            t.shard = atoi(a->argv[i + 1]);
        else if (!strcmp(a->argv[i], "--token"))
            t.token = a->argv[i + 1];
    }
    if (!t.tool || !t.token) {
        fprintf(stderr, "cmcpd: toolrun needs --tool NAME --shard N --token T\n");
        return CMCP_EXIT_USAGE;
    }
    char sec[160];
    snprintf(sec, sizeof(sec), "tool.%s", t.tool);
    t.timeout_ms = cfg_get_long(&a->cfg, sec, "timeout_ms", 30000);
    t.max_out = cfg_get_long(&a->cfg, sec, "max_output_bytes", 1L << 20);
    struct ev_loop *loop = ev_default_loop(EVFLAG_SIGNALFD);
    ev_signal_init(&t.term_w, term_cb, SIGTERM);
    ev_signal_start(loop, &t.term_w);
    proc_notify_ready(a);

    int st;
    int rv = shard_call(WIRE_TOOL_FETCH, "", 0, &st, &t.args);
    if (rv != 0 || st != 200 || !t.args) {
        /* The call ended (cancelled, or its shard restarted) before we got here. */
        log_info("tool_call_gone", "{s:s,s:s}", "tool", t.tool, "error",
                 rv ? nng_strerror(rv) : "no such call");
        return 0;
    }
    t.args_len = strlen(t.args);
    if (spawn_command(sec) != 0) {
        t.exited = true;
        t.status = 127 << 8;
        snprintf(t.err_tail, sizeof(t.err_tail), "could not start the command");
        t.tail_len = strlen(t.err_tail);
        maybe_finish(loop);
        return 0;
    }
    log_info("tool_started", "{s:s,s:i}", "tool", t.tool, "command_pid", (int)t.pid);
    ev_child_init(&t.child_w, child_cb, t.pid, 0);
    ev_child_start(loop, &t.child_w);
    ev_io_init(&t.in_w, in_cb, t.in_fd, EV_WRITE);
    ev_io_start(loop, &t.in_w);
    ev_io_init(&t.out_w, out_cb, t.out_fd, EV_READ);
    ev_io_start(loop, &t.out_w);
    ev_io_init(&t.err_w, err_cb, t.err_fd, EV_READ);
    ev_io_start(loop, &t.err_w);
    ev_timer_init(&t.timeout_w, timeout_cb, (double)t.timeout_ms / 1000.0, 0);
    ev_timer_start(loop, &t.timeout_w);
    ev_run(loop, 0);
    proc_stop_deadline(PROC_STOP_DEADLINE_MS, 0); /* nothing below may hang the stop */
    free(t.args);
    free(t.out);
    return 0;
}
