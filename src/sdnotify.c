/*
 * systemd's notification protocol, written out (sd_notify(3), "Protocol
 * details"): each message is one datagram of newline-separated
 * assignments, sent to the AF_UNIX socket NOTIFY_SOCKET names, a path
 * or, beginning with '@', a name in Linux's abstract namespace (the '@'
 * stands for a leading NUL byte, and the address length counts no
 * trailing one).  The socket is made and connected once, at start, and
 * later only written to, without waiting.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"

static int	 notify_connect(const char *);
static uint64_t	 watchdog_parse(const char *, const char *);
static int	 decimal(const char *, long long, long long *);
static int	 notify_send(const char *, size_t);

static int	 notify_fd = -1;
static uint64_t	 watchdog_usec;
static int	 warned;

int
sdnotify_open(void)
{
	const char	*path;
	int		 rc = -1;

	sdnotify_close();
	warned = 0;
	if ((path = getenv("NOTIFY_SOCKET")) != NULL &&
	    (notify_fd = notify_connect(path)) != -1) {
		watchdog_usec = watchdog_parse(getenv("WATCHDOG_USEC"),
		    getenv("WATCHDOG_PID"));
		rc = 0;
	}
	(void)unsetenv("NOTIFY_SOCKET");
	(void)unsetenv("WATCHDOG_USEC");
	(void)unsetenv("WATCHDOG_PID");
	return rc;
}

void
sdnotify_close(void)
{
	if (notify_fd != -1)
		close(notify_fd);
	notify_fd = -1;
	watchdog_usec = 0;
}

/* A datagram socket connected to the address NOTIFY_SOCKET gives. */
static int
notify_connect(const char *path)
{
	struct sockaddr_un	 sun;
	socklen_t		 len;
	size_t			 n = strlen(path);
	int			 fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (path[0] == '@' && n <= sizeof(sun.sun_path)) {
		memcpy(sun.sun_path + 1, path + 1, n - 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else if (path[0] == '/' && n < sizeof(sun.sun_path)) {
		memcpy(sun.sun_path, path, n);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
		    1);
	} else {
		log_warnx("NOTIFY_SOCKET \"%s\": not an absolute path or "
		    "an abstract name of at most %zu bytes", path,
		    sizeof(sun.sun_path) - 1);
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1) {
		log_warn("NOTIFY_SOCKET: socket");
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, len) == -1) {
		log_warn("NOTIFY_SOCKET \"%s\"", path);
		close(fd);
		return -1;
	}
	return fd;
}

/* WATCHDOG_USEC, if a positive number and WATCHDOG_PID unset or ours. */
static uint64_t
watchdog_parse(const char *usec, const char *pid)
{
	long long	v, p;

	if (usec == NULL)
		return 0;
	if (decimal(usec, LLONG_MAX, &v) == -1 || v == 0) {
		log_warnx("WATCHDOG_USEC \"%s\" is not a positive number of "
		    "microseconds: no watchdog", usec);
		return 0;
	}
	if (pid == NULL)
		return (uint64_t)v;
	if (decimal(pid, INT_MAX, &p) == -1) {
		log_warnx("WATCHDOG_PID \"%s\" is not a process ID: no "
		    "watchdog", pid);
		return 0;
	}
	if (p != (long long)getpid()) {
		log_debug("WATCHDOG_PID %lld is not this process: no watchdog",
		    p);
		return 0;
	}
	return (uint64_t)v;
}

/* Decimal digits only, no sign or space, at most max. */
static int
decimal(const char *s, long long max, long long *v)
{
	const char	*errstr;

	if (s[0] == '\0' || strspn(s, "0123456789") != strlen(s))
		return -1;
	*v = strtonum(s, 0, max, &errstr);
	return errstr == NULL ? 0 : -1;
}

static int
notify_send(const char *msg, size_t len)
{
	ssize_t	n;

	if (notify_fd == -1)
		return 0;
	do {
		n = send(notify_fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	} while (n == -1 && errno == EINTR);
	if (n != -1)
		return 0;
	if (!warned)
		log_warn("service manager notification");
	else
		log_debug("service manager notification: %s",
		    strerror(errno));
	warned = 1;
	return -1;
}

int
sdnotify_ready(void)
{
	return notify_send("READY=1", 7);
}

int
sdnotify_stopping(void)
{
	return notify_send("STOPPING=1", 10);
}

int
sdnotify_watchdog(void)
{
	return notify_send("WATCHDOG=1", 10);
}

/* RELOADING=1 and the time the reload began, as Type=notify-reload has */
int
sdnotify_reloading(void)
{
	struct timespec	 ts;
	char		 msg[64];
	int		 n;

	if (notify_fd == -1)
		return 0;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1) {
		log_warn("clock_gettime");
		return -1;
	}
	n = snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return -1;
	return notify_send(msg, (size_t)n);
}

/* STATUS=text, printable ASCII only: a newline would begin another. */
int
sdnotify_status(const char *fmt, ...)
{
	char	msg[7 + SDNOTIFY_STATUS_MAX + 1], *p;
	va_list	ap;
	int	n;

	if (notify_fd == -1)
		return 0;
	memcpy(msg, "STATUS=", 7);
	va_start(ap, fmt);
	n = vsnprintf(msg + 7, sizeof(msg) - 7, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	for (p = msg + 7; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return notify_send(msg, (size_t)(p - msg));
}

uint64_t
sdnotify_watchdog_usec(void)
{
	return watchdog_usec;
}

int
sdnotify_watchdog_interval(struct timeval *tv)
{
	uint64_t	half;

	if (watchdog_usec == 0)
		return -1;
	half = watchdog_usec / 2 > 0 ? watchdog_usec / 2 : 1;
	tv->tv_sec = (time_t)(half / 1000000);
	tv->tv_usec = (suseconds_t)(half % 1000000);
	return 0;
}
