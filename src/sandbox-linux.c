/*
 * Confinement on Linux, around the user change in sandbox.c: the
 * capability bounding set goes first (that needs CAP_SETPCAP, so while
 * still root), then the parent-death signal again, every other
 * capability, no_new_privs, and the process is not dumpable.  The
 * seccomp filter and the parent's confinement are sandbox-seccomp.c.
 * Also the system's part of starting: libbsd's setproctitle(3) and the
 * parent-death signal of a new child.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include <cap-ng.h>
#include <errno.h>
#include <signal.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "log.h"
#include "sandbox.h"

void
sandbox_title_init(int argc, char **argv)
{
	setproctitle_init(argc, argv, environ);
}

/* Until the child changes its ids, which clears it: sandbox_drop(). */
void
sandbox_child_init(void)
{
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1)
		fatal("prctl PR_SET_PDEATHSIG");
}

/* What sandbox_os_after_ids() and sandbox_filter() do, for the audit. */
const char *const *
sandbox_audit_fields(enum proc_type type)
{
	static const char *const fields[2 * SANDBOX_AUDIT_PAIRS + 1] = {
		"seccomp", "filter", "capabilities", "none", "no_new_privs",
		"1", NULL
	};

	(void)type;
	return fields;
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
sandbox_os_before_ids(void)
{
	capng_clear(CAPNG_SELECT_ALL);
	if (capng_apply(CAPNG_SELECT_BOUNDS) == -1 || !bounding_set_empty())
		fatalx("sandbox: clearing the capability bounding set "
		    "(does the parent hold CAP_SETPCAP?)");
}

void
sandbox_os_after_ids(void)
{
	/*
	 * The user change cleared the parent-death signal set before exec:
	 * set it again, so that the child still ends with its parent.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0) == -1)
		fatal("sandbox: PR_SET_PDEATHSIG");
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
}

int
sandbox_memfile(const char *name)
{
	int	fd;

	if ((fd = memfd_create(name, MFD_CLOEXEC)) == -1)
		return -1;
	if (fchmod(fd, S_IRUSR | S_IWUSR) == -1)
		return close_fail(fd);
	return fd;
}
