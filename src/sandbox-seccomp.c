/*
 * The seccomp filters, built from the declarative policies in policy/
 * (compiled into build/policy.h by policy/policy2c.awk, each call by its
 * number: a name that is no system call here fails the build).  A call
 * that no rule allows kills the process; a debug build (SANDBOX_DEBUG)
 * traps instead and names the call, so a policy can be tuned honestly.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <cap-ng.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "log.h"
#include "sandbox.h"

#ifndef SOCK_TYPE_MASK
#define SOCK_TYPE_MASK	0xf
#endif

/*
 * open(2) flags for the parent's policy: a file is opened to read, or to
 * append (and maybe create), with any of OPEN_OPTS and nothing else.
 * Masks of 32 bits: the upper half of the argument is not the flags'.
 */
#define OPEN_OPTS	(O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | \
			    O_LARGEFILE)
#define OPEN_READ_MASK	(~(unsigned int)(OPEN_OPTS | O_DIRECTORY))
#define OPEN_APPEND	(O_WRONLY | O_APPEND)
#define OPEN_APPEND_MASK (~(unsigned int)(OPEN_OPTS | O_CREAT))

enum rule_action { RULE_ALLOW, RULE_ERRNO };

struct sandbox_rule {
	int			 nr;
	const char		*syscall;
	enum rule_action	 action;
	int			 err;
	unsigned int		 ncmp;
	struct scmp_arg_cmp	 cmp[3];
};

#define CMP(a, op, x, y)	{ (a), (op), (scmp_datum_t)(x), (scmp_datum_t)(y) }
#define NOCMP			{ 0, 0, 0, 0 }

#include "policy.h"

#ifdef SANDBOX_DEBUG
static void
sigsys_handler(int sig, siginfo_t *info, void *ctx)
{
	char	 buf[128];
	char	*name;
	int	 len;

	(void)sig;
	(void)ctx;
	name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE,
	    info->si_syscall);
	len = snprintf(buf, sizeof(buf), "dotproxyd[%d]: sandbox: "
	    "system call %s (%d) not allowed\n", (int)getpid(),
	    name ? name : "?", info->si_syscall);
	if (len > 0 && write(STDERR_FILENO, buf, (size_t)len) == -1)
		_exit(2);
	_exit(1);
}
#endif

static const struct sandbox_rule *
rules_for(enum proc_type type)
{
	switch (type) {
	case PROC_LISTENER:
		return listener_rules;
	case PROC_UPSTREAM:
		return upstream_rules;
	case PROC_PARENT:
		return parent_rules;
	}
	return NULL;
}

/*
 * Build the filter for a process.  Exposed to the tests, which load
 * each process's real policy in a forked child.
 */
void
sandbox_filter(enum proc_type type)
{
	const struct sandbox_rule	*r;
	scmp_filter_ctx			 ctx;
	uint32_t			 deflt = SCMP_ACT_KILL_PROCESS;
	int				 rc;

#ifdef SANDBOX_DEBUG
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sigsys_handler;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSYS, &sa, NULL) == -1)
		fatal("sandbox: sigaction");
	deflt = SCMP_ACT_TRAP;
#endif
	if ((ctx = seccomp_init(deflt)) == NULL)
		fatalx("sandbox: seccomp_init");
	/* a call made with another architecture's numbers kills */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
	    SCMP_ACT_KILL_PROCESS) != 0)
		fatalx("sandbox: seccomp architecture check");
	for (r = rules_for(type); r->syscall != NULL; r++) {
		rc = seccomp_rule_add_array(ctx, r->action == RULE_ALLOW ?
		    SCMP_ACT_ALLOW : SCMP_ACT_ERRNO((uint32_t)r->err), r->nr,
		    r->ncmp, r->ncmp ? r->cmp : NULL);
		if (rc != 0)
			fatalx("sandbox: %s policy rule for %s: %s",
			    proc_name(type), r->syscall, strerror(-rc));
	}
	if ((rc = seccomp_load(ctx)) != 0)
		fatalx("sandbox: loading the %s policy: %s", proc_name(type),
		    strerror(-rc));
	seccomp_release(ctx);
}

/*
 * The parent, once its children run: capabilities cut to what reload,
 * respawn and shutdown need (also in the bounding set, so a new child
 * never gets more), no_new_privs, then its policy.  A filter sees no
 * path: the files the parent may open are not narrowed here.
 */
void
sandbox_parent(const char *self, const char *upstream_prog,
    const char *conffile, const struct dotproxyd_conf *c)
{
	static const int keep[] = { CAP_NET_BIND_SERVICE, CAP_SETUID,
	    CAP_SETGID, CAP_SYS_CHROOT, CAP_SETPCAP, CAP_KILL };
	size_t	i;

	(void)self;
	(void)upstream_prog;
	(void)conffile;
	(void)c;

	capng_clear(CAPNG_SELECT_BOTH);
	for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
		if (capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED |
		    CAPNG_BOUNDING_SET, (unsigned int)keep[i]) == -1)
			fatalx("sandbox: capng_update");
	if (capng_apply(CAPNG_SELECT_BOTH) == -1)
		fatalx("sandbox: cutting the parent's capabilities");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 &&
	    errno != EINVAL)
		fatal("sandbox: clear ambient capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
	sandbox_filter(PROC_PARENT);
}
