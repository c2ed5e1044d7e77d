/* The metrics worker's configuration keys: [metrics] (docs/operations.md). */
#include "workers/metrics/metrics.h"

const struct cfg_key metrics_cfg_keys[] = {
    /* The metrics worker's HTTP server; port 0 turns HTTP off. */
    {"metrics", "bind", CFG_STR, NULL, 0, 0},
    {"metrics", "port", CFG_INT, NULL, 0, 65535},
    {"metrics", "stale_ms", CFG_INT, NULL, 1000, 600000},
    {NULL, NULL, 0, NULL, 0, 0},
};
