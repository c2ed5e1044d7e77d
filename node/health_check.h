/* cmcpd --health-check (health_check.c). */
#pragma once

#include "base/config.h"

/* GET path ("/ready" or "/health") from the node that configuration c describes: 0 on
 * 200 (the body on stdout), else an exit status after saying why on stderr. */
int node_health_check(const struct cfg *c, const char *path, int timeout_ms);
