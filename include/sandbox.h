#ifndef DOTPROXYD_SANDBOX_H
#define DOTPROXYD_SANDBOX_H

#include "dotproxyd.h"

/* Load the process's system call policy (policy/<process>.policy). */
void	 sandbox_filter(enum proc_type);

/* The system's steps before and after the user change in sandbox.c. */
void	 sandbox_os_before_ids(void);
void	 sandbox_os_after_ids(void);

/*
 * An anonymous file, mode 0600, that only this process holds: for state
 * a library keeps in a file descriptor (the TLS session store).  -1 and
 * errno where the system has no such file or the policy forbids it.
 */
int	 sandbox_memfile(const char *);

/*
 * How large the upstream process's session store may grow: its
 * RLIMIT_FSIZE, 0 (no file at all) where there is no store.
 */
#ifdef __OpenBSD__
#define SESSION_STORE_MAX	0
#else
#define SESSION_STORE_MAX	(1024 * 1024)
#endif
#ifdef __OpenBSD__
void	 sandbox_parent_unveil(const char *, const char *,
	    const struct dotproxyd_conf *);
#endif

#endif /* DOTPROXYD_SANDBOX_H */
