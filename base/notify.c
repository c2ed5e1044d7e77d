/* sd_notify(3)'s protocol, spoken directly (notify.h). */
#define _GNU_SOURCE
#include "base/notify.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

long long notify_init(void)
{
    const char *p = getenv("NOTIFY_SOCKET");
    if (p && (p[0] == '/' || p[0] == '@') && strlen(p) < sizeof(sock_path))
        snprintf(sock_path, sizeof(sock_path), "%s", p);
    long long usec = 0;
    const char *w = getenv("WATCHDOG_USEC"), *wp = getenv("WATCHDOG_PID");
    if (w && (!wp || atoll(wp) == (long long)getpid()))
        usec = atoll(w);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    return sock_path[0] && usec > 0 ? usec : 0;
}

int notify_send(const char *state)
{
    if (!sock_path[0])
        return 0;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(sock_path);
    memcpy(sa.sun_path, sock_path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* A receiver that does not read (its queue holds ~10 datagrams) must not stop the
     * root's loop: a watchdog beat is dropped (the next one follows), the rest wait a
     * bounded time. */
    bool beat = strcmp(state, "WATCHDOG=1") == 0;
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL | (beat ? MSG_DONTWAIT : 0),
                       (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
    return w < 0 ? -1 : 0;
}
