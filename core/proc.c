#include "proc.h"

#include <signal.h>
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

void proc_notify_ready(struct proc_args *a)
{
    if (a->ready_fd < 0)
        return;
    ssize_t w = write(a->ready_fd, "\n", 1);
    (void)w;
    close(a->ready_fd);
    a->ready_fd = -1;
}
