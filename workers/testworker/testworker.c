/*
 * Role `testworker`: a worker whose behaviour the tests choose, so that
 * they can drive every supervisor path with real processes.
 *
 *   --ready-delay MS   report ready after MS (default 0)
 *   --no-ready         never report ready (start timeout path)
 *   --fail-start       exit 1 before reporting ready
 *   --crash-after MS   abort() (SIGABRT) MS after ready
 *   --exit-after MS    exit with --exit-code (default 0) MS after ready
 *   --hang-after MS    block its loop for good MS after ready (a deadlock: the process
 *                      lives and sleeps, but answers nothing; the watchdog path)
 *   --ignore-term      ignore SIGTERM (shutdown timeout path)
 *   --stop-delay MS    on SIGTERM, exit 0 only after MS
 *   --marker FILE      append "start PID\n" / "stop PID\n" lines to FILE
 * SIGUSR1 makes it exit 0; SIGUSR2 makes it exit 1.
 */
#include "workers/testworker/testworker.h"

#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cmcp.h"
#include "base/log.h"

static struct {
    double ready_delay, crash_after, exit_after, stop_delay, hang_after;
    int exit_code;
    int no_ready, fail_start, ignore_term;
    const char *marker;
    struct proc_args *a;
} tw = {0, -1, -1, -1, -1, 0, 0, 0, 0, NULL, NULL};

static void mark(const char *what)
{
    if (!tw.marker)
        return;
    char line[128];
    int n = snprintf(line, sizeof(line), "%s %s %d\n", what, tw.a->id ? tw.a->id : "-",
                     (int)getpid());
    int fd = open(tw.marker, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, line, (size_t)n);
        (void)w;
        close(fd);
    }
}

__attribute__((noreturn)) static void exit_now(int code)
{
    mark("stop");
    exit(code);
}

static void sig_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    if (w->signum == SIGUSR1)
        exit_now(0);
    if (w->signum == SIGUSR2)
        exit_now(1);
    if (w->signum == SIGTERM || w->signum == SIGINT) {
        if (tw.ignore_term) {
            log_info("sigterm_ignored", NULL);
            return;
        }
        /* A slow shutdown; blocking is fine in a test worker. */
        if (tw.stop_delay > 0)
            usleep((useconds_t)(tw.stop_delay * 1000));
        (void)loop;
        exit_now(0);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    switch ((intptr_t)w->data) {
    case 0: /* ready */
        mark("ready"); /* before the newline: the supervisor starts the next sibling on it */
        proc_notify_ready(tw.a);
        if (tw.crash_after >= 0) {
            static ev_timer c;
            ev_timer_init(&c, timer_cb, tw.crash_after / 1000.0, 0);
            c.data = (void *)1;
            ev_timer_start(loop, &c);
        }
        if (tw.hang_after >= 0) {
            static ev_timer h;
            ev_timer_init(&h, timer_cb, tw.hang_after / 1000.0, 0);
            h.data = (void *)3;
            ev_timer_start(loop, &h);
        }
        if (tw.exit_after >= 0) {
            static ev_timer e;
            ev_timer_init(&e, timer_cb, tw.exit_after / 1000.0, 0);
            e.data = (void *)2;
            ev_timer_start(loop, &e);
        }
        break;
    case 1:
        mark("crash");
        abort();
    case 2:
        exit_now(tw.exit_code);
    case 3:
        mark("hang");
        for (;;)
            pause(); /* every signal it handles is blocked: only SIGKILL ends this */
    }
}

int testworker_main(struct proc_args *a)
{
    tw.a = a;
    for (int i = 0; i < a->argc; i++) {
        const char *o = a->argv[i];
        const char *v = i + 1 < a->argc ? a->argv[i + 1] : NULL;
        if (!strcmp(o, "--no-ready"))
            tw.no_ready = 1;
        else if (!strcmp(o, "--fail-start"))
            tw.fail_start = 1;
        else if (!strcmp(o, "--ignore-term"))
            tw.ignore_term = 1;
        else if (v && !strcmp(o, "--ready-delay"))
            tw.ready_delay = atof(v), i++;
        else if (v && !strcmp(o, "--crash-after"))
            tw.crash_after = atof(v), i++;
        else if (v && !strcmp(o, "--exit-after"))
            tw.exit_after = atof(v), i++;
        else if (v && !strcmp(o, "--hang-after"))
            tw.hang_after = atof(v), i++;
        else if (v && !strcmp(o, "--exit-code"))
            tw.exit_code = atoi(v), i++;
        else if (v && !strcmp(o, "--stop-delay"))
            tw.stop_delay = atof(v), i++;
        else if (v && !strcmp(o, "--marker"))
            tw.marker = v, i++;
        else {
            fprintf(stderr, "cmcpd: testworker: unknown argument '%s'\n", o);
            return CMCP_EXIT_USAGE;
        }
    }
    mark("start");
    if (tw.fail_start) {
        log_error("start_failed", "{s:s}", "reason", "told to fail (--fail-start)");
        return 1;
    }
    struct ev_loop *loop = ev_default_loop(EVFLAG_SIGNALFD);
    static ev_signal sigs[4];
    int nums[] = {SIGTERM, SIGINT, SIGUSR1, SIGUSR2};
    for (int i = 0; i < 4; i++) {
        ev_signal_init(&sigs[i], sig_cb, nums[i]);
        ev_signal_start(loop, &sigs[i]);
    }
    static ev_timer ready;
    if (!tw.no_ready) {
        ev_timer_init(&ready, timer_cb, tw.ready_delay / 1000.0, 0);
        ready.data = (void *)0;
        ev_timer_start(loop, &ready);
    }
    ev_run(loop, 0);
    return 0;
}
