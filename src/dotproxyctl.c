/*
 * dotproxyctl: talk to a running dotproxyd over its control socket.
 * One command per connection; the daemon answers in text and closes.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <err.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"

#define CTL_TIMEOUT_MS	10000

static void	usage(void) __attribute__((__noreturn__));

static void
usage(void)
{
	fprintf(stderr, "usage: dotproxyctl [-s socket] status | stats | "
	    "metrics | reload | flush | log verbose | log brief\n");
	exit(1);
}

static int
known(int argc, char *argv[])
{
	static const char *one[] = { "status", "stats", "metrics", "reload",
	    "flush", NULL };
	int	i;

	if (argc == 1) {
		for (i = 0; one[i] != NULL; i++)
			if (strcmp(argv[0], one[i]) == 0)
				return 1;
		return 0;
	}
	return argc == 2 && strcmp(argv[0], "log") == 0 &&
	    (strcmp(argv[1], "verbose") == 0 || strcmp(argv[1], "brief") == 0);
}

int
main(int argc, char *argv[])
{
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	const char		*path = DOTPROXYD_SOCKET;
	char			 cmd[128], buf[8192];
	ssize_t			 n;
	int			 ch, s, failed = 0, first = 1;

	while ((ch = getopt(argc, argv, "s:")) != -1) {
		switch (ch) {
		case 's':
			path = optarg;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1 || !known(argc, argv))
		usage();
	snprintf(cmd, sizeof(cmd), "%s%s%s\n", argv[0], argc > 1 ? " " : "",
	    argc > 1 ? argv[1] : "");

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path))
		errx(1, "socket path too long: %s", path);
	if ((s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		err(1, "socket");
	if (connect(s, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		err(1, "connect %s", path);
	/* a refused connection is closed at once, its reason left to read */
	signal(SIGPIPE, SIG_IGN);
	if (write(s, cmd, strlen(cmd)) != (ssize_t)strlen(cmd) &&
	    errno != EPIPE)
		err(1, "write");
	pfd.fd = s;
	pfd.events = POLLIN;
	for (;;) {
		if ((n = poll(&pfd, 1, CTL_TIMEOUT_MS)) == -1) {
			if (errno == EINTR)
				continue;
			err(1, "poll");
		}
		if (n == 0)
			errx(1, "no answer from dotproxyd");
		if ((n = read(s, buf, sizeof(buf))) == -1) {
			if (errno == EINTR)
				continue;
			err(1, "read");
		}
		if (n == 0)
			break;
		if (first && strncmp(buf, "error:", 6) == 0)
			failed = 1;
		first = 0;
		if (fwrite(buf, 1, (size_t)n, failed ? stderr : stdout) !=
		    (size_t)n)
			err(1, "write");
	}
	close(s);
	if (first)
		errx(1, "dotproxyd closed the connection without an answer");
	return failed ? 1 : 0;
}
