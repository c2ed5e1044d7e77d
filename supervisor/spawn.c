#define _GNU_SOURCE
#include "supervisor/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static char self_exe[4096];

const char *spawn_self_exe(void)
{
    if (!self_exe[0]) {
        ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
        if (n <= 0)
            snprintf(self_exe, sizeof(self_exe), "cmcpd");
        else
            self_exe[n] = '\0';
    }
    return self_exe;
}

/* Only async-signal-safe calls between fork and exec. */
static void child_after_fork(char *const argv[], int ready_w, int exec_w, pid_t parent,
                             const int *keep, int nkeep)
{
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        signal(s, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Die with the parent. The check after it closes the race with a parent
     * that died before the prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    /* Own process group, so that a terminal's Ctrl-C reaches only the root,
     * which then stops the tree in order. */
    setpgid(0, 0);
    if (ready_w >= 0 && ready_w != SPAWN_READY_FD) {
        if (exec_w == SPAWN_READY_FD) {
            int e = dup(exec_w);
            exec_w = e;
        }
        dup2(ready_w, SPAWN_READY_FD); /* dup2 clears CLOEXEC on fd 3 */
        close(ready_w);
    } else if (ready_w == SPAWN_READY_FD) {
        int fl = fcntl(ready_w, F_GETFD);
        fcntl(ready_w, F_SETFD, fl & ~FD_CLOEXEC);
    }
    /* Nothing else the parent holds (sockets, pipes, loop fds) crosses the exec. */
    unsigned first = (ready_w >= 0 ? SPAWN_READY_FD : 2) + 1;
    if (syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        for (int fd = (int)first; fd < 1024; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    for (int i = 0; i < nkeep; i++)
        if (keep[i] != exec_w)
            fcntl(keep[i], F_SETFD, 0);
    execv(argv[0], argv);
    int err = errno;
    ssize_t w = write(exec_w, &err, sizeof(err));
    (void)w;
    _exit(127);
}

int spawn_child(char *const argv[], int with_ready, const int *keep, int nkeep,
                struct spawn_result *out)
{
    int rp[2] = {-1, -1}, ep[2];
    if (with_ready && pipe2(rp, O_CLOEXEC) != 0)
        return -errno;
    if (pipe2(ep, O_CLOEXEC) != 0) {
        int e = errno;
        if (with_ready) {
            close(rp[0]);
            close(rp[1]);
        }
        return -e;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(ep[0]);
        close(ep[1]);
        if (with_ready) {
            close(rp[0]);
            close(rp[1]);
        }
        return -e;
    }
    if (pid == 0)
        child_after_fork(argv, with_ready ? rp[1] : -1, ep[1], parent, keep, nkeep);
    /* Same process group on both sides of the race (see child_after_fork). */
    setpgid(pid, pid);
    close(ep[1]);
    fcntl(ep[0], F_SETFL, fcntl(ep[0], F_GETFL) | O_NONBLOCK);
    out->exec_fd = ep[0];
    out->ready_fd = -1;
    if (with_ready) {
        close(rp[1]);
        fcntl(rp[0], F_SETFL, fcntl(rp[0], F_GETFL) | O_NONBLOCK);
        out->ready_fd = rp[0];
    }
    out->pid = pid;
    return 0;
}

int spawn_exec_status(int exec_fd)
{
    int err;
    ssize_t n = read(exec_fd, &err, sizeof(err));
    if (n == 0)
        return 1;
    if (n == (ssize_t)sizeof(err))
        return -err;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    return -EIO;
}

void spawn_describe_status(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, len, "status 0x%x", st);
}
