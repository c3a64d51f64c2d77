/*
 * Confinement on OpenBSD: after the chroot and user change of sandbox.c,
 * pledge(2); the parent unveils what reload and respawn need.  The same
 * interface as sandbox-linux.c and sandbox-seccomp.c, built only there.
 * setproctitle(3) needs no set-up here, and a child started by the
 * parent has no parent-death signal to set.
 */
#include <sys/types.h>

#include <err.h>
#include <errno.h>
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
sandbox_title_init(int argc, char **argv)
{
	(void)argc;
	(void)argv;
}

void
sandbox_child_init(void)
{
}

/* fstat(1) could tell; a start that fails names the address alone. */
int
sandbox_port_holder(const struct sockaddr_storage *ss, int type, char *buf,
    size_t len)
{
	(void)ss;
	(void)type;
	(void)buf;
	(void)len;
	return -1;
}

/*
 * What sandbox_filter() pledges, for the audit.  A child unveils
 * nothing: without a path promise it can open no file at all.
 */
const char *const *
sandbox_audit_fields(enum proc_type type)
{
	static const char	*fields[2 * SANDBOX_AUDIT_PAIRS + 1];

	fields[0] = "pledge";
	fields[1] = promises(type);
	fields[2] = NULL;
	return fields;
}

void
sandbox_filter(enum proc_type type)
{
	if (pledge(promises(type), NULL) == -1)
		fatal("sandbox: pledge %s", proc_name(type));
}

/* No capabilities here: the user change in sandbox.c is the drop. */
void
sandbox_os_before_ids(void)
{
}

void
sandbox_os_after_ids(void)
{
}

/* No anonymous files under pledge("stdio inet"): no session store. */
int
sandbox_memfile(const char *name)
{
	(void)name;
	errno = EOPNOTSUPP;
	return -1;
}

/*
 * The parent sees only what it opens after start-up: its own binary and
 * dotproxyd-upstream to start a child again, the config directory, the CA bundle, the audit
 * log and the dnstap socket.  unveil() hides the rest of the file system.
 */
static void
parent_unveil(const char *self, const char *upstream_prog,
    const char *conffile, const struct dotproxyd_conf *c)
{
	char	dir[PATH_MAX], *slash;

	if (unveil(self, "x") == -1)
		fatal("unveil %s", self);
	if (unveil(upstream_prog, "x") == -1)
		fatal("unveil %s", upstream_prog);
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
	/* connect(2) to a Unix socket needs "w" */
	if (c->dnstap_path[0] && unveil(c->dnstap_path, "w") == -1)
		fatal("unveil %s", c->dnstap_path);
	if (unveil(NULL, NULL) == -1)
		fatal("unveil");
}

void
sandbox_parent(const char *self, const char *upstream_prog,
    const char *conffile, const struct dotproxyd_conf *c)
{
	parent_unveil(self, upstream_prog, conffile, c);
	sandbox_filter(PROC_PARENT);
}
