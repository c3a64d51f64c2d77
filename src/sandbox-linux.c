/*
 * Confinement on Linux: chroot, an unprivileged user, no capabilities,
 * no_new_privs, rlimits, then the process's seccomp policy.  Any step
 * that fails is fatal: a child never runs half-confined.
 */
#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cap-ng.h>
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "log.h"
#include "sandbox.h"

static void
set_limit(int resource, rlim_t value, const char *what)
{
	struct rlimit	rl;

	rl.rlim_cur = rl.rlim_max = value;
	if (setrlimit(resource, &rl) == -1)
		fatal("sandbox: setrlimit %s", what);
}

/* Ask the kernel itself: is every capability gone from the bounding set? */
static int
bounding_set_empty(void)
{
	int	cap, r;

	for (cap = 0; cap < 64; cap++) {
		r = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (r == -1 && errno == EINVAL)
			break;		/* past the last capability */
		if (r != 0)
			return 0;
	}
	return 1;
}

void
sandbox_drop(enum proc_type type, const struct dotproxyd_conf *c)
{
	uid_t	ruid, euid, suid;
	gid_t	rgid, egid, sgid;

	if (chroot(c->chroot) == -1)
		fatal("sandbox: chroot %s", c->chroot);
	if (chdir("/") == -1)
		fatal("sandbox: chdir /");
	/* the bounding set needs CAP_SETPCAP, so it goes while still root */
	capng_clear(CAPNG_SELECT_ALL);
	if (capng_apply(CAPNG_SELECT_BOUNDS) == -1 || !bounding_set_empty())
		fatalx("sandbox: clearing the capability bounding set "
		    "(does the parent hold CAP_SETPCAP?)");
	if (setgroups(1, &c->gid) == -1)
		fatal("sandbox: setgroups");
	if (setresgid(c->gid, c->gid, c->gid) == -1)
		fatal("sandbox: setresgid");
	if (setresuid(c->uid, c->uid, c->uid) == -1)
		fatal("sandbox: setresuid");
	if (getresuid(&ruid, &euid, &suid) == -1 ||
	    getresgid(&rgid, &egid, &sgid) == -1)
		fatal("sandbox: getresuid");
	if (ruid != c->uid || euid != c->uid || suid != c->uid ||
	    rgid != c->gid || egid != c->gid || sgid != c->gid)
		fatalx("sandbox: ids did not change");
	if (setuid(0) != -1 || seteuid(0) != -1)
		fatalx("sandbox: could regain root");

	/* none effective, permitted or inheritable either */
	capng_clear(CAPNG_SELECT_BOTH);
	if (capng_apply(CAPNG_SELECT_BOTH) == -1)
		fatalx("sandbox: capng_apply");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 &&
	    errno != EINVAL)
		fatal("sandbox: clear ambient capabilities");
	if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE)
		fatalx("sandbox: capabilities remain");

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_NO_NEW_PRIVS");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_DUMPABLE");

	set_limit(RLIMIT_NPROC, 0, "NPROC");
	set_limit(RLIMIT_FSIZE, 0, "FSIZE");
	set_limit(RLIMIT_CORE, 0, "CORE");

	sandbox_filter(type);
}
