/* Role `metrics`: every process's numbers, served as /metrics /health /ready /status. */
#ifndef CMCP_METRICS_H
#define CMCP_METRICS_H

#include "base/config.h"
#include "base/proc.h"

int metrics_main(struct proc_args *a);
/* Its configuration keys: [metrics]. */
extern const struct cfg_key metrics_cfg_keys[];

#endif
