/* External command tools ([tool.NAME]): the shard's half (tools.c). */
#ifndef CMCP_SHARD_TOOLS_H
#define CMCP_SHARD_TOOLS_H

#if !defined(CMCP_LAYER_SHARD)
#error "workers/shard/tools.h is internal to the shard role"
#endif

#include <stddef.h>

#include "base/config.h"
#include "ipc/ipc.h"
#include "workers/mcp/mcp.h"

/* Registers every [tool.NAME] with the engine. -1 with err naming file:line. */
int shard_tools_init(mcp_server *srv, struct cfg *cfg, const char *run_dir, int shard,
                     struct ipc_bridge *bridge, char *err, size_t errlen);
void shard_tools_shutdown(void);
/* The arguments of a run (malloc'd JSON text), or NULL if the call is over. */
char *shard_tools_fetch(const char *token);
/* A run's result arrived: answers its call. -1 if the run is unknown. */
int shard_tools_result(const char *token, const char *body, size_t len);
/* Asks tool_sup to stop a run. */
void shard_tools_terminate(int pid);

#endif
