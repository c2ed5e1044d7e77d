/* Role `admin`: the node's admin socket, which cmcpctl speaks to (authenticated, sealed). */
#ifndef CMCP_ADMIN_H
#define CMCP_ADMIN_H

#include "base/config.h"
#include "base/proc.h"

int admin_main(struct proc_args *a);
/* Its configuration keys: [admin]. */
extern const struct cfg_key admin_cfg_keys[];

#endif
