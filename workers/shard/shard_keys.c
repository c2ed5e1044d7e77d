/* The shard's configuration keys: its sessions, the store, tool packs, external tools. */
#include "workers/shard/shard.h"

const struct cfg_key shard_cfg_keys[] = {
    /* Built-in tool packs (docs/tools.md). */
    {"tools", "packs", CFG_LIST, NULL, 0, 0},
    /* Time limits of built-in tools' calls (external tools have [tool.NAME] timeout_ms). */
    {"tools", "call_timeout_ms", CFG_INT, NULL, 0, 86400000},
    {"tools", "call_timeouts", CFG_LIST, NULL, 0, 0},
    {"sessions", "max", CFG_INT, NULL, 1, 100000000},
    /* The durable session store (docs/storage.md). */
    {"sessions", "durability", CFG_ENUM, "fsync|group|none", 0, 0},
    {"sessions", "group_commit_ms", CFG_INT, NULL, 1, 1000},
    {"sessions", "idle_timeout_ms", CFG_INT, NULL, 1000, 31L * 86400000},
    {"sessions", "abandoned_timeout_ms", CFG_INT, NULL, 1000, 31L * 86400000},
    {"sessions", "max_events", CFG_INT, NULL, 1, 100000},
    {"sessions", "store_max_bytes", CFG_INT, NULL, 1L << 20, 1L << 40},
    /* tool.NAME: an external command tool (docs/tools.md). */
    {"tool.", "description", CFG_STR, NULL, 0, 0},
    {"tool.", "title", CFG_STR, NULL, 0, 0},
    {"tool.", "input_schema", CFG_STR, NULL, 0, 0},
    {"tool.", "command", CFG_STR, NULL, 0, 0},
    {"tool.", "timeout_ms", CFG_INT, NULL, 1, 86400000},
    {"tool.", "cwd", CFG_STR, NULL, 0, 0},
    {"tool.", "env", CFG_STR, NULL, 0, 0},
    {"tool.", "max_concurrency", CFG_INT, NULL, 1, 100000},
    {"tool.", "max_output_bytes", CFG_INT, NULL, 1024, 1L << 30},
    {NULL, NULL, 0, NULL, 0, 0},
};
