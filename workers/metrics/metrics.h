/* Role `metrics`: every process's numbers, served as /metrics /health /ready /status. */
#ifndef CMCP_METRICS_H
#define CMCP_METRICS_H

#if !defined(CMCP_LAYER_METRICS) && !defined(CMCP_LAYER_NODE)
#error "workers/metrics/metrics.h: only the node binary starts roles"
#endif

#include "base/config.h"
#include "base/proc.h"

int metrics_main(struct proc_args *a);
/* Its configuration keys: [metrics]. */
extern const struct cfg_key metrics_cfg_keys[];

#endif
