#ifndef DOTPROXYD_SANDBOX_H
#define DOTPROXYD_SANDBOX_H

#include "dotproxyd.h"

/* Load the process's system call policy (policy/<process>.policy). */
void	 sandbox_filter(enum proc_type);

/* The system's steps before and after the user change in sandbox.c. */
void	 sandbox_os_before_ids(void);
void	 sandbox_os_after_ids(void);
#ifdef __OpenBSD__
void	 sandbox_parent_unveil(const char *, const char *,
	    const struct dotproxyd_conf *);
#endif

#endif /* DOTPROXYD_SANDBOX_H */
