/*
 * Per-client rate limiting: a token bucket for each IPv4 address and
 * each IPv6 /64, refilled at "rate" tokens a second up to "burst".
 * Memory is fixed: a table of buckets, where a new client takes the
 * least recently seen bucket of its short probe window.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "ratelimit.h"

#define PROBE		8
#define MILLI		1000	/* tokens are counted in thousandths */

struct bucket {
	uint8_t		key[CLIENT_KEY_LEN];	/* client_key() */
	int64_t		last_ms;
	int64_t		tokens;	/* milli-tokens */
};

struct ratelimit {
	struct bucket	*b;
	size_t		 n;	/* power of two */
	int64_t		 rate;
	int64_t		 burst;
	uint8_t		 key[SIP_KEY_LEN];
};

struct ratelimit *
ratelimit_new(int rate, int burst, size_t clients)
{
	struct ratelimit	*rl;

	if ((rl = calloc(1, sizeof(*rl))) == NULL)
		return NULL;
	rl->n = 64;
	while (rl->n < clients)
		rl->n <<= 1;
	if ((rl->b = calloc(rl->n, sizeof(*rl->b))) == NULL) {
		free(rl);
		return NULL;
	}
	arc4random_buf(rl->key, sizeof(rl->key));
	ratelimit_set(rl, rate, burst);
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (rl == NULL)
		return;
	free(rl->b);
	free(rl);
}

void
ratelimit_set(struct ratelimit *rl, int rate, int burst)
{
	rl->rate = rate;
	rl->burst = burst < rate ? rate : burst;
}

/*
 * What tells clients apart: an IPv4 address (a v4-mapped IPv6 address
 * counts as its IPv4 address) or an IPv6 /64, since one host holds a
 * whole /64.  Returns -1 for another family.
 */
int
client_key(const struct sockaddr *sa, uint8_t key[CLIENT_KEY_LEN])
{
	const struct sockaddr_in6	*sin6;
	static const uint8_t		 mapped[12] = { [10] = 0xff,
					    [11] = 0xff };

	memset(key, 0, CLIENT_KEY_LEN);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr,
		    4);
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	sin6 = (const struct sockaddr_in6 *)sa;
	if (memcmp(sin6->sin6_addr.s6_addr, mapped, 12) == 0) {
		key[0] = 4;
		memcpy(key + 1, sin6->sin6_addr.s6_addr + 12, 4);
		return 0;
	}
	key[0] = 6;
	memcpy(key + 1, sin6->sin6_addr.s6_addr, 8);	/* the /64 */
	return 0;
}

/* May this client send one more query now?  Returns 1 if so. */
int
ratelimit_allow(struct ratelimit *rl, const struct sockaddr *sa,
    int64_t now_ms)
{
	struct bucket	*b, *oldest = NULL;
	uint8_t		 key[CLIENT_KEY_LEN];
	size_t		 i, start;
	int64_t		 elapsed;

	if (rl == NULL || rl->rate <= 0 || client_key(sa, key) == -1)
		return 1;
	start = cache_hash(rl->key, key, sizeof(key)) & (rl->n - 1);
	for (i = 0; i < PROBE; i++) {
		b = &rl->b[(start + i) & (rl->n - 1)];
		if (b->key[0] != 0 && memcmp(b->key, key, sizeof(key)) == 0)
			break;
		if (oldest == NULL || b->key[0] == 0 ||
		    (oldest->key[0] != 0 && b->last_ms < oldest->last_ms))
			oldest = b;
		b = NULL;
	}
	if (b == NULL) {
		b = oldest;
		memcpy(b->key, key, sizeof(key));
		b->tokens = rl->burst * MILLI;
		b->last_ms = now_ms;
	}
	elapsed = now_ms - b->last_ms;
	if (elapsed > 0) {
		b->tokens += elapsed * rl->rate;	/* rate/s = rate/ms*1000 */
		if (b->tokens > rl->burst * MILLI)
			b->tokens = rl->burst * MILLI;
		b->last_ms = now_ms;
	}
	if (b->tokens < MILLI)
		return 0;
	b->tokens -= MILLI;
	return 1;
}
