/*
 * The audit trail: which events and fields the parent takes from each
 * child, and which files it takes as the audit log.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "dotproxyd.h"
#include "tap.h"

static char	kvbuf[AUDIT_KV_MAX + 16];
static size_t	kvlen;

/* Pack "key", "value", ..., NULL as audit() does, into kvbuf. */
static void
pack(const char *first, ...)
{
	va_list		 ap;
	const char	*s;
	size_t		 l;

	kvlen = 0;
	va_start(ap, first);
	for (s = first; s != NULL; s = va_arg(ap, const char *)) {
		l = strlen(s) + 1;
		if (kvlen + l > sizeof(kvbuf))
			exit(2);
		memcpy(kvbuf + kvlen, s, l);
		kvlen += l;
	}
	va_end(ap);
}

static int
allowed(enum proc_type proc, const char *event)
{
	char	why[128];

	why[0] = '\0';
	if (audit_allowed(proc, event, kvbuf, kvlen, why, sizeof(why)) == 0)
		return 1;
	if (why[0] == '\0')
		diag("rejected without a reason");
	return 0;
}

static void
test_allowed(void)
{
	pack("uid", "0", "command", "reload", NULL);
	ok(allowed(PROC_LISTENER, "control"), "listener: control");
	pack("client", "192.0.2.1", "queries", "5", "period", "60s", NULL);
	ok(allowed(PROC_LISTENER, "access-refused"),
	    "listener: access-refused");
	ok(allowed(PROC_LISTENER, "rate-limited"), "listener: rate-limited");
	pack("kind", "read-only", "commands", "12", "period", "60s", NULL);
	ok(allowed(PROC_LISTENER, "control-suppressed"),
	    "listener: control-suppressed");
	pack("upstream", "192.0.2.53:853 (dns.test)", "reason", "pin", NULL);
	ok(allowed(PROC_UPSTREAM, "upstream-auth-failure"),
	    "upstream: upstream-auth-failure");
	ok(allowed(PROC_UPSTREAM, "upstream-down"), "upstream: upstream-down");
	pack("upstream", "192.0.2.53:853 (dns.test)", NULL);
	ok(allowed(PROC_UPSTREAM, "upstream-up"), "upstream: upstream-up");
	pack("uid", "0", NULL);
	ok(allowed(PROC_LISTENER, "control"), "a field may be left out");
	kvlen = 0;
	ok(allowed(PROC_UPSTREAM, "upstream-up"), "no field at all");
}

static void
test_forged(void)
{
	pack("uid", "0", "command", "reload", NULL);
	ok(!allowed(PROC_UPSTREAM, "control"),
	    "upstream: the listener's event is refused");
	pack("upstream", "x", NULL);
	ok(!allowed(PROC_LISTENER, "upstream-up"),
	    "listener: the upstream's event is refused");
	pack("version", "0.1.0", NULL);
	ok(!allowed(PROC_LISTENER, "start"),
	    "listener: the parent's start is refused");
	pack("child", "listener", "reason", "exit 0", NULL);
	ok(!allowed(PROC_UPSTREAM, "child-died"),
	    "upstream: the parent's child-died is refused");
	pack("uid", "0", NULL);
	ok(!allowed(PROC_LISTENER, "Control"), "event names are exact");

	pack("process", "parent", "uid", "0", "command", "reload", NULL);
	ok(!allowed(PROC_LISTENER, "control"), "a \"process\" field is refused");
	pack("uid", "0", "time", "2020-01-01T00:00:00.000Z", NULL);
	ok(!allowed(PROC_LISTENER, "control"), "a \"time\" field is refused");
	pack("event", "start", NULL);
	ok(!allowed(PROC_UPSTREAM, "upstream-up"),
	    "an \"event\" field is refused");
	pack("uid", "0", "uid", "1000", NULL);
	ok(!allowed(PROC_LISTENER, "control"), "a field twice is refused");
	pack("upstream", "a", "reason", "b", "reason", "c", NULL);
	ok(!allowed(PROC_UPSTREAM, "upstream-down"),
	    "a field twice, not first, is refused");
	pack("uid", "0", "result", "accepted", NULL);
	ok(!allowed(PROC_LISTENER, "control"),
	    "a field of another event is refused");
	pack("upstream", "a", "", "b", NULL);
	ok(!allowed(PROC_UPSTREAM, "upstream-down"),
	    "an empty field name is refused");
}

static void
test_malformed(void)
{
	char	why[128];

	pack("uid", "0", "command", NULL);
	ok(!allowed(PROC_LISTENER, "control"), "a field without a value");
	pack("uid", "0", NULL);
	kvlen--;	/* the value's NUL cut off */
	ok(!allowed(PROC_LISTENER, "control"), "a value without its NUL");
	pack("uid", NULL);
	kvlen--;
	ok(!allowed(PROC_LISTENER, "control"), "a name without its NUL");
	pack("uid", "0", NULL);
	ok(audit_allowed(PROC_LISTENER, "control", kvbuf, AUDIT_KV_MAX + 1,
	    why, sizeof(why)) == -1, "fields longer than AUDIT_KV_MAX");
}

/* How many of our descriptors are open on path. */
static int
fds_on(const char *path)
{
	DIR		*d;
	struct dirent	*e;
	char		 p[300], target[PATH_MAX];
	ssize_t		 n;
	int		 count = 0;

	if ((d = opendir("/proc/self/fd")) == NULL)
		return -1;
	while ((e = readdir(d)) != NULL) {
		snprintf(p, sizeof(p), "/proc/self/fd/%s", e->d_name);
		if ((n = readlink(p, target, sizeof(target) - 1)) == -1)
			continue;
		target[n] = '\0';
		if (strcmp(target, path) == 0)
			count++;
	}
	closedir(d);
	return count;
}

static void
test_open(void)
{
	char	dir[] = "/tmp/test_audit.XXXXXX", file[PATH_MAX];
	char	fifo[PATH_MAX], link[PATH_MAX], why[128];
	int	rd;

	if (mkdtemp(dir) == NULL)
		exit(2);
	snprintf(file, sizeof(file), "%s/audit.log", dir);
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	snprintf(link, sizeof(link), "%s/link", dir);
	if (mkfifo(fifo, 0600) == -1 || symlink(file, link) == -1)
		exit(2);
	alarm(10);	/* a FIFO must not block us: fail, do not hang */

	ok(audit_open(file, why, sizeof(why)) == 0,
	    "a new file is created and opened");
	ok(fds_on(file) == 1, "the file is open once");
	ok(audit_open(file, why, sizeof(why)) == 0,
	    "the same file opened anew (rotation)");
	ok(fds_on(file) == 1, "the file is still open once, not twice");
	why[0] = '\0';
	ok(audit_open(fifo, why, sizeof(why)) == -1,
	    "a FIFO without a reader is refused at once");
	diag("FIFO without a reader: %s", why);
	if ((rd = open(fifo, O_RDONLY | O_NONBLOCK)) == -1)
		exit(2);
	why[0] = '\0';
	ok(audit_open(fifo, why, sizeof(why)) == -1 &&
	    strcmp(why, "not a regular file") == 0,
	    "a FIFO with a reader is refused: not a regular file");
	close(rd);
	ok(audit_open(link, why, sizeof(why)) == -1,
	    "a symbolic link is refused");
	ok(audit_open(dir, why, sizeof(why)) == -1, "a directory is refused");
	ok(audit_open("/dev/null", why, sizeof(why)) == -1,
	    "a device is refused");
	ok(fds_on(file) == 1, "after the refusals, the file open before "
	    "stays open");
	ok(audit_open("", why, sizeof(why)) == 0 && fds_on(file) == 0,
	    "no audit log: the file is closed");
	alarm(0);

	unlink(link);
	unlink(fifo);
	unlink(file);
	rmdir(dir);
}

int
main(void)
{
	plan(36);
	test_allowed();
	test_forged();
	test_malformed();
	test_open();
	return done();
}
