/* The listener's configuration keys: [listener] (docs/operations.md). */
#include "workers/listener/listener.h"

const struct cfg_key listener_cfg_keys[] = {
    {"listener", "http_bind", CFG_STR, NULL, 0, 0},
    {"listener", "http_port", CFG_INT, NULL, 0, 65535},
    {"listener", "tcp_bind", CFG_STR, NULL, 0, 0},
    {"listener", "tcp_port", CFG_INT, NULL, 0, 65535},
    /* at most 60 MiB: a request travels to its shard in one data-link frame (ipc/dlink.h) */
    {"listener", "max_message_bytes", CFG_INT, NULL, 1024, 60L << 20},
    {"listener", "allowed_origins", CFG_LIST, NULL, 0, 0},
    {"listener", "allowed_hosts", CFG_LIST, NULL, 0, 0},
    {"listener", "idle_timeout_ms", CFG_INT, NULL, 100, 86400000},
    {"listener", "request_timeout_ms", CFG_INT, NULL, 100, 86400000},
    {"listener", "shard_wait_ms", CFG_INT, NULL, 10, 600000},
    {"listener", "shard_unresponsive_ms", CFG_INT, NULL, 100, 600000},
    {"listener", "keepalive_ms", CFG_INT, NULL, 100, 3600000},
    {NULL, NULL, 0, NULL, 0, 0},
};
