/*
 * The service manager notifications: datagrams read back, exactly, from
 * a socket bound at a path and at an abstract name; the address lengths
 * at the limits of sun_path; WATCHDOG_USEC and WATCHDOG_PID; unusable
 * values ignored; no blocking on a full queue; a failure logged once.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"
#include "tap.h"

#define SUN_PATH_MAX	sizeof(((struct sockaddr_un *)NULL)->sun_path)

static char	dir[] = "/tmp/test_sdnotify.XXXXXX";
static char	logpath[PATH_MAX];

/* Logs go to stderr: into a file, so that the tests can read them. */
static void
capture_log(void)
{
	int	fd;

	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	if ((fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600)) == -1 ||
	    dup2(fd, STDERR_FILENO) == -1)
		exit(2);
	close(fd);
}

/* How many lines logged since the last call have what in them. */
static int
logged(const char *what)
{
	char	line[1024];
	FILE	*f;
	int	n = 0;

	fflush(stderr);
	if ((f = fopen(logpath, "r")) == NULL)
		exit(2);
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, what) != NULL)
			n++;
	fclose(f);
	if (truncate(logpath, 0) == -1)
		exit(2);
	return n;
}

/* A datagram socket bound at name: a path, or '@' for an abstract one. */
static int
receiver(const char *name)
{
	struct sockaddr_un	sun;
	socklen_t		len;
	size_t			n = strlen(name);
	int			fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (n > sizeof(sun.sun_path))
		exit(2);
	memcpy(sun.sun_path, name, n);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	if (name[0] == '@')
		sun.sun_path[0] = '\0';
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sun, len) == -1) {
		diag("bind %s: %s", name, strerror(errno));
		exit(2);
	}
	return fd;
}

/* The next datagram waiting, NUL-terminated, or "" if none. */
static const char *
next(int fd)
{
	static char	buf[1024];
	ssize_t		n;

	if ((n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) == -1)
		n = 0;
	buf[n] = '\0';
	return buf;
}

static int
is_str(const char *got, const char *want, const char *name)
{
	if (!ok(strcmp(got, want) == 0, "%s", name)) {
		diag("     got: \"%s\"", got);
		diag("expected: \"%s\"", want);
		return 0;
	}
	return 1;
}

static int
open_at(const char *name)
{
	if (setenv("NOTIFY_SOCKET", name, 1) == -1)
		exit(2);
	return sdnotify_open();
}

static void
test_unset(void)
{
	struct timeval	tv;

	(void)unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "1000000", 1);
	is_int(sdnotify_open(), -1, "no NOTIFY_SOCKET: no socket");
	is_int(sdnotify_ready(), 0, "READY: nothing to do");
	is_int(sdnotify_reloading(), 0, "RELOADING: nothing to do");
	is_int(sdnotify_stopping(), 0, "STOPPING: nothing to do");
	is_int(sdnotify_watchdog(), 0, "WATCHDOG: nothing to do");
	is_int(sdnotify_status("x"), 0, "STATUS: nothing to do");
	is_int(sdnotify_watchdog_usec(), 0, "no watchdog without a socket");
	is_int(sdnotify_watchdog_interval(&tv), -1, "and no interval");
	ok(getenv("WATCHDOG_USEC") == NULL, "WATCHDOG_USEC unset all the same");
}

static void
test_messages(int rfd, const char *what)
{
	struct timespec	 a, b;
	unsigned long long us = 0, lo, hi;
	char		 big[SDNOTIFY_STATUS_MAX + 100], want[512];
	const char	*m;
	int		 rc;

	rc = sdnotify_ready();
	is_int(rc, 0, "%s: READY=1 sent", what);
	is_str(next(rfd), "READY=1", "READY=1");
	sdnotify_stopping();
	is_str(next(rfd), "STOPPING=1", "STOPPING=1");
	sdnotify_watchdog();
	is_str(next(rfd), "WATCHDOG=1", "WATCHDOG=1");
	sdnotify_status("serving, %d upstreams up", 2);
	is_str(next(rfd), "STATUS=serving, 2 upstreams up", "STATUS=text");
	sdnotify_status("%s", "bad\nREADY=1\r\t\x7f\xc3\xa9");
	is_str(next(rfd), "STATUS=bad?READY=1?????",
	    "STATUS: a newline and other bytes not printable ASCII are '?'");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	sdnotify_status("%s", big);
	snprintf(want, sizeof(want), "STATUS=%.*s", SDNOTIFY_STATUS_MAX, big);
	is_str(next(rfd), want, "STATUS: cut at SDNOTIFY_STATUS_MAX bytes");

	clock_gettime(CLOCK_MONOTONIC, &a);
	is_int(sdnotify_reloading(), 0, "RELOADING sent");
	clock_gettime(CLOCK_MONOTONIC, &b);
	m = next(rfd);
	lo = (unsigned long long)a.tv_sec * 1000000 + a.tv_nsec / 1000;
	hi = (unsigned long long)b.tv_sec * 1000000 + b.tv_nsec / 1000;
	ok(sscanf(m, "RELOADING=1\nMONOTONIC_USEC=%llu", &us) == 1 &&
	    us >= lo && us <= hi && strchr(m, '\n') == strrchr(m, '\n') &&
	    m[strlen(m) - 1] >= '0' && m[strlen(m) - 1] <= '9',
	    "RELOADING=1 and MONOTONIC_USEC of CLOCK_MONOTONIC, nothing more");
	if (us < lo || us > hi)
		diag("\"%s\", not in %llu..%llu", m, lo, hi);
	is_str(next(rfd), "", "nothing else was sent");
}

static void
test_path(void)
{
	char	path[PATH_MAX];
	int	rfd, fd, flags, type;
	socklen_t len = sizeof(type);

	snprintf(path, sizeof(path), "%s/notify", dir);
	rfd = receiver(path);
	if ((fd = open("/dev/null", O_RDONLY)) == -1)
		exit(2);
	close(fd);			/* the lowest free descriptor */
	is_int(open_at(path), 0, "a path: connected");
	ok(getenv("NOTIFY_SOCKET") == NULL, "NOTIFY_SOCKET unset");
	flags = fcntl(fd, F_GETFD);
	ok(flags != -1 && (flags & FD_CLOEXEC) && getsockopt(fd, SOL_SOCKET,
	    SO_TYPE, &type, &len) == 0 && type == SOCK_DGRAM,
	    "a datagram socket, close-on-exec");
	test_messages(rfd, "a path");
	sdnotify_close();
	close(rfd);
	unlink(path);
}

static void
test_abstract(void)
{
	char	name[64];
	int	rfd;

	snprintf(name, sizeof(name), "@dotproxyd-test-sdnotify-%ld",
	    (long)getpid());
	rfd = receiver(name);
	is_int(open_at(name), 0, "an abstract name: connected");
	test_messages(rfd, "an abstract name");
	sdnotify_close();
	close(rfd);
}

/* Names as long as sun_path takes and a byte longer. */
static void
test_lengths(void)
{
	char	path[SUN_PATH_MAX + 2], name[SUN_PATH_MAX + 2];
	size_t	n;
	int	rfd;

	n = strlen(dir);
	memset(path, 'p', sizeof(path));
	memcpy(path, dir, n);
	path[n] = '/';
	path[SUN_PATH_MAX - 1] = '\0';	/* the longest, with its NUL */
	rfd = receiver(path);
	is_int(open_at(path), 0, "a path of %zu bytes", strlen(path));
	sdnotify_ready();
	is_str(next(rfd), "READY=1", "it is the right one");
	close(rfd);
	unlink(path);
	path[SUN_PATH_MAX - 1] = 'p';
	path[SUN_PATH_MAX] = '\0';
	is_int(open_at(path), -1, "a path of %zu bytes: refused",
	    strlen(path));

	memset(name, 'a', sizeof(name));
	name[0] = '@';
	snprintf(name + 1, 12, "%010ld", (long)getpid());
	name[11] = 'a';
	name[SUN_PATH_MAX] = '\0';	/* NUL and SUN_PATH_MAX - 1 bytes */
	rfd = receiver(name);
	is_int(open_at(name), 0, "an abstract name filling sun_path");
	sdnotify_ready();
	is_str(next(rfd), "READY=1", "it is the right one");
	close(rfd);
	name[SUN_PATH_MAX] = 'a';
	name[SUN_PATH_MAX + 1] = '\0';
	is_int(open_at(name), -1, "a byte longer: refused");
}

static void
test_bad_socket(void)
{
	char	path[PATH_MAX];

	(void)logged("");
	is_int(open_at("relative/notify"), -1, "a relative path: refused");
	is_int(open_at(""), -1, "an empty value: refused");
	snprintf(path, sizeof(path), "%s/nothing-here", dir);
	is_int(open_at(path), -1, "a path with no socket: refused");
	ok(getenv("NOTIFY_SOCKET") == NULL, "and unset");
	is_int(logged("NOTIFY_SOCKET"), 3, "each logged");
	is_int(sdnotify_ready(), 0, "then sending does nothing");
}

static uint64_t
watchdog_with(const char *usec, const char *pid)
{
	char	path[PATH_MAX];
	uint64_t v;
	int	rfd;

	snprintf(path, sizeof(path), "%s/wd", dir);
	rfd = receiver(path);
	if (usec != NULL)
		setenv("WATCHDOG_USEC", usec, 1);
	else
		unsetenv("WATCHDOG_USEC");
	if (pid != NULL)
		setenv("WATCHDOG_PID", pid, 1);
	else
		unsetenv("WATCHDOG_PID");
	if (open_at(path) == -1)
		exit(2);
	v = sdnotify_watchdog_usec();
	if (getenv("WATCHDOG_USEC") != NULL || getenv("WATCHDOG_PID") != NULL)
		v = UINT64_MAX;
	sdnotify_close();
	close(rfd);
	unlink(path);
	return v;
}

static void
test_watchdog(void)
{
	static const char	*bad[] = { "0", "-1", "+5", " 5", "5 ", "12x",
				    "", "0x10", "99999999999999999999" };
	struct timeval		 tv;
	char			 pid[32], path[PATH_MAX];
	size_t			 i;
	int			 rfd, bads = 0;

	is_int(watchdog_with(NULL, NULL), 0, "no WATCHDOG_USEC: none");
	is_int(watchdog_with("30000000", NULL), 30000000,
	    "WATCHDOG_USEC=30000000 (both variables unset after)");
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	is_int(watchdog_with("30000000", pid), 30000000,
	    "and WATCHDOG_PID ours");
	snprintf(pid, sizeof(pid), "%ld", (long)getpid() + 1);
	is_int(watchdog_with("30000000", pid), 0, "WATCHDOG_PID another's");
	is_int(watchdog_with("30000000", "me"), 0, "WATCHDOG_PID not a number");
	is_int(watchdog_with("30000000", ""), 0, "WATCHDOG_PID empty");
	is_int(watchdog_with("9223372036854775807", NULL),
	    9223372036854775807LL, "the largest WATCHDOG_USEC");
	(void)logged("");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (watchdog_with(bad[i], NULL) != 0) {
			diag("WATCHDOG_USEC=\"%s\" taken", bad[i]);
			bads++;
		}
	is_int(bads, 0, "0, signs, spaces, junk, hex, overflow: none");
	is_int(logged("WATCHDOG_USEC"), sizeof(bad) / sizeof(bad[0]),
	    "each logged");

	snprintf(path, sizeof(path), "%s/wd", dir);
	rfd = receiver(path);
	setenv("WATCHDOG_USEC", "2500001", 1);
	open_at(path);
	ok(sdnotify_watchdog_interval(&tv) == 0 && tv.tv_sec == 1 &&
	    tv.tv_usec == 250000, "the interval is half the timeout");
	sdnotify_close();
	setenv("WATCHDOG_USEC", "1", 1);
	open_at(path);
	ok(sdnotify_watchdog_interval(&tv) == 0 && tv.tv_sec == 0 &&
	    tv.tv_usec == 1, "never zero");
	sdnotify_close();
	is_int(sdnotify_watchdog_usec(), 0, "closed: no watchdog");
	close(rfd);
	unlink(path);
}

/* A full queue: the send fails at once; the receiver gone: it fails. */
static void
test_failures(void)
{
	char	path[PATH_MAX];
	int	rfd, i, rc = 0;

	snprintf(path, sizeof(path), "%s/full", dir);
	rfd = receiver(path);
	open_at(path);
	(void)logged("");
	alarm(20);			/* a blocking send would hang here */
	for (i = 0; i < 100000 && rc == 0; i++)
		rc = sdnotify_watchdog();
	is_int(rc, -1, "a full queue: the send fails, without waiting");
	diag("%d datagrams queued", i - 1);
	is_int(sdnotify_watchdog(), -1, "and again");
	while (next(rfd)[0] != '\0')
		;
	is_int(sdnotify_ready(), 0, "read: it works again");
	is_str(next(rfd), "READY=1", "READY=1");
	close(rfd);
	unlink(path);
	is_int(sdnotify_stopping(), -1, "the receiver gone: it fails");
	alarm(0);
	is_int(logged("notification"), 1, "three failures, one line logged");
	sdnotify_close();
}

int
main(void)
{
	log_init(1, LOG_DAEMON);
	if (mkdtemp(dir) == NULL)
		return 2;
	capture_log();
	test_unset();
	test_path();
	test_abstract();
	test_lengths();
	test_bad_socket();
	test_watchdog();
	test_failures();
	unlink(logpath);
	rmdir(dir);
	return done();
}
