/*
 * systemd's service notification protocol (sd_notify(3)) without libsystemd:
 * a datagram of "KEY=VALUE" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET ('@' for the abstract namespace). The root supervisor uses
 * it for Type=notify units: READY=1 once the whole tree is up, STOPPING=1 on
 * shutdown, WATCHDOG=1 every half of $WATCHDOG_USEC while its loop runs.
 * Nothing happens when the node does not run under systemd.
 */
#ifndef CMCP_BASE_NOTIFY_H
#define CMCP_BASE_NOTIFY_H

/*
 * Takes $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID out of the
 * environment (the node's children must not talk to systemd) and keeps them.
 * Returns the watchdog interval in microseconds asked of this process, or 0.
 */
long long notify_init(void);
/*
 * Sends state (e.g. "READY=1\nSTATUS=serving"); no-op without a socket. 0, or -1. It
 * never holds the caller long: WATCHDOG=1 is dropped when the receiver's queue is full
 * (the next one follows), anything else waits at most a second for room.
 */
int notify_send(const char *state);

#endif
