/*
 * dotproxyd.conf text from anywhere: written to a temp file and parsed
 * with parse_config(); the result is printed and freed.  Parse errors go
 * to a stderr stream opened on /dev/null (libFuzzer keeps its own).
 */
#include <sys/types.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"

int		 LLVMFuzzerInitialize(int *, char ***);
int		 LLVMFuzzerTestOneInput(const uint8_t *, size_t);
const char	*__lsan_default_suppressions(void);

static char	 path[] = "/tmp/dotproxyd-fuzz-config.XXXXXX";
static int	 fd = -1;
static FILE	*devnull;

static void
cleanup(void)
{
	if (fd != -1)
		unlink(path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int	null;

	(void)argc;
	(void)argv;
	if ((fd = mkstemp(path)) == -1)
		abort();
	atexit(cleanup);
	if ((devnull = fopen("/dev/null", "w")) == NULL)
		abort();
	/* an "include /dev/stdin" must not block */
	if ((null = open("/dev/null", O_RDONLY)) != -1) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dotproxyd_conf	*c;
	FILE			*saved = stderr;

	if (ftruncate(fd, 0) == -1 || pwrite(fd, data, size, 0) !=
	    (ssize_t)size)
		return 0;
	stderr = devnull;
	c = parse_config(path, 0);
	if (c != NULL)
		print_config(devnull, c);
	stderr = saved;
	config_free(c);
	return 0;
}
