/*
 * Every endpoint a node's processes reach each other at, formatted in one
 * place. All of them live in the node's run directory (RUN):
 *
 *   ipc://RUN/sup-NAME.sock     a supervisor's control socket (nng req/rep)
 *   ipc://RUN/shard-I.sock      shard I's control socket: admin shell, tool runs
 *   RUN/shard-I.data            shard I's data link socket (listeners, ipc/dlink.h)
 *   ipc://RUN/metrics.sock      the metrics worker's snapshot sub (ipc/stats.h)
 *   ipc://RUN/control.sock      the admin worker's control broadcast (ipc/control.h)
 */
#ifndef CMCP_IPC_ADDR_H
#define CMCP_IPC_ADDR_H

#include <stddef.h>

void ipc_addr_sup(char *buf, size_t len, const char *run_dir, const char *sup);
void ipc_addr_shard_ctl(char *buf, size_t len, const char *run_dir, int shard);
void ipc_addr_shard_data(char *buf, size_t len, const char *run_dir, int shard);
void ipc_addr_stats(char *buf, size_t len, const char *run_dir);
void ipc_addr_control(char *buf, size_t len, const char *run_dir);

#endif
