/*
 * Role `shard`: owns the MCP sessions whose ids name it. Listeners, the
 * admin worker and tool runs reach it through the wire contract
 * (ipc/wire.h), never through its code.
 */
#ifndef CMCP_SHARD_H
#define CMCP_SHARD_H

#include "base/config.h"
#include "base/proc.h"

int shard_main(struct proc_args *a);
/* Its configuration keys: [sessions], [tools], [tool.NAME]. */
extern const struct cfg_key shard_cfg_keys[];

#endif
