/* The supervision tree's configuration keys: [tree.NAME] (docs/supervisor.md). */
#include "supervisor/spec.h"

const struct cfg_key sup_cfg_keys[] = {
    {"tree.", "type", CFG_ENUM, "worker|supervisor", 0, 0},
    {"tree.", "role", CFG_STR, NULL, 0, 0},
    {"tree.", "exec", CFG_STR, NULL, 0, 0},
    {"tree.", "args", CFG_STR, NULL, 0, 0},
    {"tree.", "count", CFG_INT, NULL, 1, 4096}, /* 0 would start none: leave it out of children instead */
    {"tree.", "restart", CFG_ENUM, "permanent|transient|temporary", 0, 0},
    {"tree.", "shutdown", CFG_MS, "brutal_kill|infinity", 0, 86400000},
    {"tree.", "start_timeout", CFG_MS, "infinity", 1, 86400000},
    {"tree.", "watchdog", CFG_MS, "off", 100, 86400000},
    {"tree.", "ready", CFG_ENUM, "fd|exec", 0, 0},
    {"tree.", "significant", CFG_BOOL, NULL, 0, 0},
    {"tree.", "strategy", CFG_ENUM, "one_for_one|one_for_all|rest_for_one|simple_one_for_one", 0,
     0},
    {"tree.", "intensity", CFG_INT, NULL, 0, 1000000},
    {"tree.", "period", CFG_INT, NULL, 1, 86400},
    {"tree.", "children", CFG_LIST, NULL, 0, 0},
    {"tree.", "auto_shutdown", CFG_ENUM, "never|any_significant|all_significant", 0, 0},
    {"tree.", "backoff_min", CFG_INT, NULL, 0, 3600000},
    {"tree.", "backoff_max", CFG_INT, NULL, 0, 3600000},
    {"tree.", "backoff_stable", CFG_INT, NULL, 0, 86400000},
    {"tree.", "max_children", CFG_INT, NULL, 1, 100000},
    {NULL, NULL, 0, NULL, 0, 0},
};
