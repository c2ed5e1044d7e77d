/* The admin socket's configuration keys: [admin] (docs/operations.md); cmcpctl reads them too. */
#include "workers/admin/admin.h"

const struct cfg_key admin_cfg_keys[] = {
    /* The admin socket cmcpctl talks to; an empty endpoint turns it off. */
    {"admin", "endpoint", CFG_STR, NULL, 0, 0},
    {"admin", "cookie_file", CFG_STR, NULL, 0, 0},
    {"admin", "timeout_ms", CFG_INT, NULL, 100, 5000},
    /* On the node's stop, a clustered node drains first, for at most this long. */
    {"admin", "drain_on_stop_ms", CFG_INT, NULL, 0, 600000},
    {NULL, NULL, 0, NULL, 0, 0},
};
