/*
 * The metrics endpoint's HTTP request parser on arbitrary bytes, fed
 * whole and in pieces of 1 to 64 bytes (byte 0 seeds their sizes): the
 * same answer both ways, one of the statuses it may give, a
 * NUL-terminated path, /metrics and GET or HEAD for a 200; then the
 * answer built into an exactly sized buffer, complete and within
 * HTTP_RESPONSE_MAX.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* In pieces of 1 to 64 bytes, each size drawn from seed. */
static int
feed_pieces(struct http_request *r, const uint8_t *p, size_t n,
    uint32_t seed)
{
	size_t	k;
	int	rc = HTTP_MORE;

	http_request_init(r);
	while (n > 0 && rc == HTTP_MORE) {
		seed = seed * 1103515245U + 12345U;
		if ((k = (seed >> 16) % 64 + 1) > n)
			k = n;
		rc = http_request_feed(r, p, k);
		p += k;
		n -= k;
	}
	return rc;
}

static void
check_request(const struct http_request *r, int rc, size_t size)
{
	switch (rc) {
	case HTTP_MORE:
		if (size > HTTP_HEAD_MAX)
			abort();
		break;
	case 200:
		if (strcmp(r->path, HTTP_METRICS_PATH) != 0 ||
		    (r->method != HTTP_M_GET && r->method != HTTP_M_HEAD))
			abort();
		break;
	case 400: case 404: case 405: case 414: case 431: case 505:
		break;
	default:
		abort();
	}
	if (r->len > HTTP_HEAD_MAX ||
	    memchr(r->path, '\0', sizeof(r->path)) == NULL)
		abort();
}

/* The answer, first to learn its length, then into exactly that. */
static void
check_response(const struct http_request *r, int rc, time_t now)
{
	char	buf[HTTP_RESPONSE_MAX], *exact;
	int	n, n2;

	if (rc == 200)
		n = http_response_ok(buf, sizeof(buf), 12345, now);
	else
		n = http_response_error(buf, sizeof(buf), rc, r->method, now);
	if (n <= 0 || (size_t)n >= sizeof(buf) || strlen(buf) != (size_t)n)
		abort();
	if ((exact = malloc((size_t)n + 1)) == NULL)
		return;
	if (rc == 200)
		n2 = http_response_ok(exact, (size_t)n + 1, 12345, now);
	else
		n2 = http_response_error(exact, (size_t)n + 1, rc, r->method,
		    now);
	if (n2 != n || memcmp(exact, buf, (size_t)n + 1) != 0 ||
	    strstr(exact, "\r\n\r\n") == NULL)
		abort();
	free(exact);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_request	r;
	size_t				i;
	uint64_t			t = 0;
	uint8_t				seed;
	int				rc, rc2;

	if (size < 1)
		return 0;
	seed = data[0];
	data++;
	size--;

	http_request_init(&r);
	rc = http_request_feed(&r, data, size);
	check_request(&r, rc, size);
	rc2 = feed_pieces(&r, data, size, seed);
	if (rc2 != rc)
		abort();
	check_request(&r, rc2, size);
	if (rc == HTTP_MORE)
		return 0;
	for (i = 0; i < size && i < 8; i++)
		t = t << 8 | data[i];
	check_response(&r, rc, (time_t)(t % 253402300800ULL));
	return 0;
}
