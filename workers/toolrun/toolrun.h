/* Role `toolrun`: one call of an external command tool, under tool_sup (docs/tools.md). */
#ifndef CMCP_TOOLRUN_H
#define CMCP_TOOLRUN_H

#include "base/proc.h"

int toolrun_main(struct proc_args *a);

#endif
