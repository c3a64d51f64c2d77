/*
 * The parent's netlink parser on arbitrary bytes: it returns -1 or
 * known kinds of change, gives the same answer from an odd address, and
 * reads nothing past the input (libFuzzer's copy is exactly sized).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netwatch.h"

#define ALL_KINDS	(NETWATCH_LINK | NETWATCH_ADDR | NETWATCH_ROUTE | \
			    NETWATCH_LOST)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t	*odd;
	int	 r, r2;

	r = netwatch_parse(data, size);
	if (r != -1 && (r & ~ALL_KINDS) != 0)
		abort();
	if ((odd = malloc(size + 1)) == NULL)
		return 0;
	memcpy(odd + 1, data, size);
	r2 = netwatch_parse(odd + 1, size);
	free(odd);
	if (r2 != r)
		abort();
	return 0;
}
