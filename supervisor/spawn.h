/*
 * Starting a child process: fork, then exec at once (nng is not fork-safe),
 * with the signal mask and dispositions reset, PR_SET_PDEATHSIG so that no
 * child outlives its parent, a readiness pipe on fd 3 and exec failure
 * reported over a close-on-exec pipe (libuv's spawn pattern).
 */
#ifndef CMCP_SUP_SPAWN_H
#define CMCP_SUP_SPAWN_H

#if !defined(CMCP_LAYER_SUPERVISOR) && !defined(CMCP_LAYER_NODE)
#error "supervisor headers are for the supervisor and the node binary: workers reach supervisors over IPC (../shared/design/layers.md)"
#endif

#include <sys/types.h>

#define SPAWN_READY_FD 3

struct spawn_result {
    pid_t pid;
    int ready_fd; /* read end: the child writes "\n" when ready; -1 if not asked */
    int exec_fd;  /* read end: EOF on successful exec, or an int errno */
};

/*
 * argv[0] is the program to exec (a path). with_ready: give the child fd 3. The nkeep
 * descriptors in keep (the node's inherited listening sockets, base/proc.h) cross the exec
 * at their numbers; nothing else does. 0 or -errno.
 */
int spawn_child(char *const argv[], int with_ready, const int *keep, int nkeep,
                struct spawn_result *out);

/* Reads the exec pipe without blocking: 1 exec ok (EOF), 0 not yet, -errno exec failed. */
int spawn_exec_status(int exec_fd);

/* Describes a wait status: "exit 3", "signal 9 (Killed)". */
void spawn_describe_status(int status, char *buf, size_t len);

/* The absolute path of the running executable, for re-exec. */
const char *spawn_self_exe(void);

#endif
