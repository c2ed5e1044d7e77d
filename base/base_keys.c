/* The base layer's configuration keys: [node]. */
#include "base/config.h"

const struct cfg_key base_cfg_keys[] = {
    {"node", "name", CFG_STR, NULL, 0, 0},
    {"node", "run_dir", CFG_STR, NULL, 0, 0},
    {"node", "data_dir", CFG_STR, NULL, 0, 0},
    {"node", "log_level", CFG_ENUM, "debug|info|notice|warning|error", 0, 0},
    {"node", "log_format", CFG_ENUM, "auto|json|text", 0, 0},
    {NULL, NULL, 0, NULL, 0, 0},
};
