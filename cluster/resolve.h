/*
 * Host names of seeds and members, resolved without blocking the event loop
 * and re-resolved periodically: in a swarm `tasks.cmcp` stands for whichever
 * tasks run now, and a DNS server may be slow or wrong for a while.
 */
#ifndef CMCP_CLUSTER_RESOLVE_H
#define CMCP_CLUSTER_RESOLVE_H

#include <ev.h>
#include <stdbool.h>

#define RESOLVE_HOST_MAX 128
#define RESOLVE_ADDR_MAX 64
#define RESOLVE_MAX_ADDRS 16

/* Re-resolves every name it was asked for every refresh_s; changed runs after each round. */
void resolve_init(struct ev_loop *loop, double refresh_s, void (*changed)(void));
/*
 * The numeric addresses host stands for as last resolved (a numeric host is its own answer),
 * at most max. An unknown name is resolved from now on: 0 until its first answer (changed
 * runs then).
 */
int resolve_lookup(const char *host, char out[][RESOLVE_ADDR_MAX], int max);
void resolve_stop(void);

#endif
