/*
 * Confinement on OpenBSD: chroot, an unprivileged user, then pledge(2);
 * the parent unveils what reload and respawn need.  The same interface
 * as sandbox-linux.c and sandbox-seccomp.c, built only on OpenBSD.
 */
#include <sys/types.h>
#include <sys/resource.h>

#include <err.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "log.h"
#include "sandbox.h"

static const char *
promises(enum proc_type type)
{
	switch (type) {
	case PROC_LISTENER:
		/* a new upstream channel or listening socket may arrive */
		return "stdio recvfd";
	case PROC_UPSTREAM:
		return "stdio inet recvfd";
	case PROC_PARENT:
		/* reload, respawn (fork + exec), logging, shutdown */
		return "stdio rpath wpath cpath inet unix sendfd proc exec "
		    "id chown";
	}
	return "";
}

void
sandbox_filter(enum proc_type type)
{
	if (pledge(promises(type), NULL) == -1)
		fatal("sandbox: pledge %s", proc_name(type));
}

static void
set_limit(int resource, rlim_t value, const char *what)
{
	struct rlimit	rl;

	rl.rlim_cur = rl.rlim_max = value;
	if (setrlimit(resource, &rl) == -1)
		fatal("sandbox: setrlimit %s", what);
}

void
sandbox_drop(enum proc_type type, const struct dotproxyd_conf *c)
{
	if (chroot(c->chroot) == -1)
		fatal("sandbox: chroot %s", c->chroot);
	if (chdir("/") == -1)
		fatal("sandbox: chdir /");
	if (setgroups(1, &c->gid) == -1)
		fatal("sandbox: setgroups");
	if (setresgid(c->gid, c->gid, c->gid) == -1)
		fatal("sandbox: setresgid");
	if (setresuid(c->uid, c->uid, c->uid) == -1)
		fatal("sandbox: setresuid");
	if (setuid(0) != -1 || seteuid(0) != -1)
		fatalx("sandbox: could regain root");
	set_limit(RLIMIT_NPROC, 0, "NPROC");
	set_limit(RLIMIT_FSIZE, 0, "FSIZE");
	set_limit(RLIMIT_CORE, 0, "CORE");
	sandbox_filter(type);
}

/*
 * The parent sees only what it opens after start-up: its own binary to
 * start a child again, the config directory, the CA bundle and the audit
 * log.  unveil() hides the rest of the file system.
 */
void
sandbox_parent_unveil(const char *self, const char *conffile,
    const struct dotproxyd_conf *c)
{
	char	dir[PATH_MAX], *slash;

	if (unveil(self, "x") == -1)
		fatal("unveil %s", self);
	if (strlcpy(dir, conffile, sizeof(dir)) < sizeof(dir) &&
	    (slash = strrchr(dir, '/')) != NULL) {
		*slash = '\0';
		if (unveil(dir[0] ? dir : "/", "r") == -1)
			fatal("unveil %s", dir);
	} else if (unveil(".", "r") == -1)
		fatal("unveil .");
	if (unveil(c->tls_ca, "r") == -1)
		fatal("unveil %s", c->tls_ca);
	if (c->audit_log[0] && unveil(c->audit_log, "rwc") == -1)
		fatal("unveil %s", c->audit_log);
	if (unveil(NULL, NULL) == -1)
		fatal("unveil");
}

void
sandbox_parent(void)
{
	sandbox_filter(PROC_PARENT);
}
