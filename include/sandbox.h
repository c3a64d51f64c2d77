#ifndef DOTPROXYD_SANDBOX_H
#define DOTPROXYD_SANDBOX_H

#include "dotproxyd.h"

/* Load the process's system call policy (policy/<process>.policy). */
void	 sandbox_filter(enum proc_type);

#endif /* DOTPROXYD_SANDBOX_H */
