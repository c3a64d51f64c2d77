/*
 * The sandbox and system layer: what confining a process and starting
 * one takes, the same on every system in sandbox.c, and what differs in
 * sandbox-linux.c with sandbox-seccomp.c or in sandbox-openbsd.c.
 */
#ifndef DOTPROXYD_SANDBOX_H
#define DOTPROXYD_SANDBOX_H

#include <stddef.h>

#include "dotproxyd.h"

/* A child confines itself: user, chroot, limits, system call policy. */
void	 sandbox_drop(enum proc_type, const struct dotproxyd_conf *);

/* First thing in main: what setproctitle(3) needs, where it needs any. */
void	 sandbox_title_init(int, char **);

/*
 * In a new child, between fork and exec: the child ends with the parent,
 * where the system can tell it so.
 */
void	 sandbox_child_init(void);

/*
 * The environment a child of a type starts with, NULL-terminated in max
 * entries.
 */
void	 sandbox_child_env(enum proc_type, char **, size_t);

/*
 * The parent, once its children run: it confines itself to what
 * reload, respawn and shutdown need.  Its own binary and the upstream
 * process's (to start children again), the config file and the config's
 * files are what it may still open.
 */
void	 sandbox_parent(const char *, const char *, const char *,
	    const struct dotproxyd_conf *);

/*
 * What the system's sandbox does to a child of this type, as audit
 * fields: key, value, ..., at most SANDBOX_AUDIT_PAIRS pairs, NULL after
 * the last.  The array always has 2 * SANDBOX_AUDIT_PAIRS + 1 entries.
 */
#define SANDBOX_AUDIT_PAIRS	3
const char *const *sandbox_audit_fields(enum proc_type);

/* Load the process's system call policy (policy/<process>.policy). */
void	 sandbox_filter(enum proc_type);

/* The system's steps before and after the user change in sandbox.c. */
void	 sandbox_os_before_ids(void);
void	 sandbox_os_after_ids(void);

/*
 * Who holds a local address we could not bind ("named (pid 812)"), where
 * the system can tell: 0 and the text in buf, or -1.  Root only.
 */
int	 sandbox_port_holder(const struct sockaddr_storage *, int, char *,
	    size_t);

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

#endif /* DOTPROXYD_SANDBOX_H */
