/*
 * Role `listener`: terminates the client transports (Streamable HTTP, the
 * legacy HTTP+SSE transport, WebSocket, TCP, stdio) and routes every message
 * to the shard that owns its session, over the wire contract (ipc/wire.h).
 * It runs no MCP: it forwards bytes.
 */
#ifndef CMCP_LISTENER_H
#define CMCP_LISTENER_H

#include "base/config.h"
#include "base/proc.h"

int listener_main(struct proc_args *a);
/* Its configuration keys: [listener]. */
extern const struct cfg_key listener_cfg_keys[];

#endif
