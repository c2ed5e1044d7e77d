/* cmcp: definitions shared by every module. */
#ifndef CMCP_H
#define CMCP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CMCP_VERSION "0.1.0"
/* The source revision of this build (a git commit, or "unknown"). */
extern const char cmcp_revision[];

/*
 * Exit statuses of cmcpd processes. A supervisor reads them to tell a
 * normal end from a failure (see docs/supervisor.md).
 */
enum {
    CMCP_EXIT_OK = 0,       /* normal end: transient children stay down */
    CMCP_EXIT_FAILURE = 1,  /* a runtime failure */
    CMCP_EXIT_USAGE = 2,    /* bad command line or configuration: never retried blindly */
    CMCP_EXIT_START = 3,    /* a supervisor whose own start failed */
    CMCP_EXIT_SHUTDOWN = 4, /* OTP's `shutdown`: restart intensity exceeded */
    CMCP_EXIT_EXEC = 127,   /* exec of the child failed */
};

/* Monotonic clock in milliseconds (CLOCK_MONOTONIC). */
double cmcp_now_ms(void);

/* Wall clock as an RFC 3339 UTC string with milliseconds, into buf (>= 32 bytes). */
void cmcp_wallclock(char *buf, size_t len);

/* mkdir -p with this mode for the directories it makes. 0 or -errno. */
int cmcp_mkdir_p(const char *path, unsigned mode);

#define CMCP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Copies src into dst[n], cut to fit and always terminated: snprintf("%s") without the
 * formatting machinery, for the per-request copies of session ids. */
static inline void cmcp_strlcpy(char *dst, size_t n, const char *src)
{
    size_t k = strnlen(src, n - 1);
    memcpy(dst, src, k);
    dst[k] = '\0';
}

#endif
