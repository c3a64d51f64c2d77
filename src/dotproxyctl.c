/*
 * dotproxyctl: talk to a running dotproxyd over its control socket.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "dotproxyd.h"

static void	usage(void) __attribute__((__noreturn__));

static void
usage(void)
{
	fprintf(stderr, "usage: dotproxyctl [-s socket] status | stats | "
	    "metrics | reload | flush | log verbose | log brief\n");
	exit(1);
}

int
main(int argc, char *argv[])
{
	int	ch;

	while ((ch = getopt(argc, argv, "s:")) != -1) {
		switch (ch) {
		case 's':
			break;
		default:
			usage();
		}
	}
	usage();
}
