/*
 * dotproxyd-upstream: the upstream process's program.  It is a program
 * of its own so that only this process maps libtls and libcrypto: the
 * parent and the client-facing listener never load them.  The parent
 * starts it as it starts the listener ("-P upstream", with -d and -v
 * as it was given them); it is no command for a user to run.
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dotproxyd.h"
#include "log.h"
#include "sandbox.h"

static __attribute__((__noreturn__)) void
usage(void)
{
	fprintf(stderr, "usage: dotproxyd-upstream -P upstream [-dv]\n"
	    "(started by dotproxyd(8), never by hand)\n");
	exit(1);
}

int
main(int argc, char *argv[])
{
	int	i, named = 0, debug = 0, verbose = 0;

	sandbox_title_init(argc, argv);
	/* exactly what the parent passes: -P upstream, then -d, -v */
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-P") == 0 && i + 1 < argc &&
		    strcmp(argv[i + 1], "upstream") == 0 && !named)
			named = ++i;
		else if (strcmp(argv[i], "-d") == 0)
			debug = 1;
		else if (strcmp(argv[i], "-v") == 0)
			verbose++;
		else
			usage();
	}
	if (!named)
		usage();
	log_init(1, LOG_DAEMON);	/* stderr until the parent has us */
	log_setverbose(verbose);
	upstream_main(debug, verbose);
}
