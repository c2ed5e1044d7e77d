/* Role `testworker` (test-only): a worker told by its arguments to crash, hang, exit or fail to start. */
#ifndef CMCP_TESTWORKER_H
#define CMCP_TESTWORKER_H

#include "base/proc.h"

int testworker_main(struct proc_args *a);

#endif
