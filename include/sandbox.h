#ifndef DOTPROXYD_SANDBOX_H
#define DOTPROXYD_SANDBOX_H

#include "dotproxyd.h"

/* Load the process's system call policy (policy/<process>.policy). */
void	 sandbox_filter(enum proc_type);
#ifdef __OpenBSD__
void	 sandbox_parent_unveil(const char *, const char *,
	    const struct dotproxyd_conf *);
#endif

#endif /* DOTPROXYD_SANDBOX_H */
