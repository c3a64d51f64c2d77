/*
 * Confining a child, the same on every system: chroot, an unprivileged
 * user that cannot become root again, rlimits, then the process's own
 * policy.  What differs (capabilities, the system call filter) is in
 * sandbox-linux.c and sandbox-openbsd.c.  Any step that fails is fatal:
 * a child never runs half-confined.  Also the environment a child is
 * started with.
 */
#include <sys/types.h>
#include <sys/resource.h>

#include <fcntl.h>
#include <grp.h>
#include <paths.h>
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

/*
 * A child's standard descriptors become /dev/null: it logs through the
 * parent, and a log file it inherited is not its to write (the upstream
 * process may grow files, for its session store).  Sanitizer and sandbox
 * debug builds keep standard error for their reports.  Opened to read,
 * and to append: a child the confined parent starts anew runs under the
 * parent's policy, which opens nothing read-write.
 */
static void
null_to(int target, int flags)
{
	int	fd;

	if ((fd = open(_PATH_DEVNULL, flags)) == -1)
		fatal("sandbox: %s", _PATH_DEVNULL);
	if (fd != target) {
		if (dup2(fd, target) == -1)
			fatal("sandbox: dup2 %s", _PATH_DEVNULL);
		close(fd);
	}
}

static void
null_stdio(void)
{
	null_to(STDIN_FILENO, O_RDONLY);
	null_to(STDOUT_FILENO, O_WRONLY | O_APPEND);
#if !defined(SANITIZE) && !defined(SANDBOX_DEBUG)
	null_to(STDERR_FILENO, O_WRONLY | O_APPEND);
#endif
}

void
sandbox_drop(enum proc_type type, const struct dotproxyd_conf *c)
{
	uid_t	ruid, euid, suid;
	gid_t	rgid, egid, sgid;
	pid_t	ppid = getppid();

	null_stdio();
	if (chroot(c->chroot) == -1)
		fatal("sandbox: chroot %s", c->chroot);
	if (chdir("/") == -1)
		fatal("sandbox: chdir /");
	sandbox_os_before_ids();
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
	sandbox_os_after_ids();
	/* a parent that died before the death signal was set again */
	if (getppid() != ppid)
		fatalx("sandbox: the parent is gone");

	set_limit(RLIMIT_NPROC, 0, "NPROC");
	/* the upstream process's TLS session store is its only file */
	set_limit(RLIMIT_FSIZE, type == PROC_UPSTREAM ? SESSION_STORE_MAX : 0,
	    "FSIZE");
	set_limit(RLIMIT_CORE, 0, "CORE");

	sandbox_filter(type);
}

/*
 * The environment of a child: nothing of the starter's (a child reads
 * no variable, and libraries would: OPENSSL_CONF, say), but for the
 * sanitizer runtime's options in a sanitizer build, and with glibc,
 * for the upstream process, malloc's thread cache turned off.  That
 * cache keeps up to seven free chunks of each size apart, never merged
 * with their free neighbours, so malloc_trim(3) cannot give back the
 * pages they lie in; in the upstream process, where each TLS connection
 * allocates and frees thousands of small chunks for libcrypto, it held
 * half a megabyte of them after a burst of queries.
 */
void
sandbox_child_env(enum proc_type type, char **envp, size_t max)
{
	size_t	n = 0;
#ifdef SANITIZE
	static const char *keep[] = { "ASAN_OPTIONS", "UBSAN_OPTIONS", NULL };
	char	**e;
	size_t	 i, l;

	for (e = environ; *e != NULL; e++)
		for (i = 0; keep[i] != NULL && n + 1 < max; i++) {
			l = strlen(keep[i]);
			if (strncmp(*e, keep[i], l) == 0 && (*e)[l] == '=')
				envp[n++] = *e;
		}
#endif
#ifdef __GLIBC__
	if (type == PROC_UPSTREAM && n + 1 < max)
		envp[n++] = "GLIBC_TUNABLES=glibc.malloc.tcache_count=0";
#else
	(void)type;
#endif
	(void)max;
	envp[n] = NULL;
}
