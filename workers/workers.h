/* The worker roles of cmcpd. Each runs as its own process, started by a supervisor. */
#ifndef CMCP_WORKERS_H
#define CMCP_WORKERS_H

#include "proc.h"

/* Test-only: a worker told by its arguments to crash, hang, exit or fail to start. */
int testworker_main(struct proc_args *a);
void testworker_usage(void);

/* One call of an external command tool, under tool_sup. */
int toolrun_main(struct proc_args *a);

#endif
