/*
 * The rate limiter: token buckets per IPv4 address and IPv6 /64.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"
#include "tap.h"

static struct sockaddr *
sa(const char *text)
{
	static struct sockaddr_storage	ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, text,
	    &((struct sockaddr_in *)&ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, text,
	    &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	else
		exit(2);
	return (struct sockaddr *)&ss;
}

static int
burst(struct ratelimit *rl, const char *addr, int n, int64_t now)
{
	int	i, allowed = 0;

	for (i = 0; i < n; i++)
		allowed += ratelimit_allow(rl, sa(addr), now);
	return allowed;
}

static int
same_key(const char *a, const char *b)
{
	uint8_t	ka[CLIENT_KEY_LEN], kb[CLIENT_KEY_LEN];

	if (client_key(sa(a), ka) == -1 || client_key(sa(b), kb) == -1)
		return 0;
	return memcmp(ka, kb, sizeof(ka)) == 0;
}

int
main(void)
{
	struct ratelimit	*rl;
	int			 i, n;

	plan(15);

	rl = ratelimit_new(10, 20, 1024);
	ok(rl != NULL, "ratelimit_new");
	is_int(burst(rl, "192.0.2.1", 50, 1000), 20, "a burst of 20 passes");
	is_int(burst(rl, "192.0.2.1", 5, 1000), 0, "then nothing");
	is_int(burst(rl, "192.0.2.1", 50, 1500), 5, "half a second: 5 more");
	is_int(burst(rl, "192.0.2.1", 50, 100000), 20,
	    "refill stops at the burst");
	is_int(burst(rl, "192.0.2.2", 50, 1000), 20,
	    "another address has its own bucket");
	is_int(burst(rl, "2001:db8:1:2::1", 15, 1000) +
	    burst(rl, "2001:db8:1:2::ffff", 15, 1000), 20,
	    "IPv6 addresses in one /64 share a bucket");
	is_int(burst(rl, "2001:db8:1:3::1", 30, 1000), 20,
	    "another /64 does not");
	is_int(burst(rl, "::ffff:192.0.2.2", 5, 1000), 0,
	    "a v4-mapped address counts as its IPv4 address");
	ratelimit_free(rl);

	/* memory stays bounded: many clients reuse the fixed table */
	rl = ratelimit_new(1, 1, 64);
	for (i = 0, n = 0; i < 10000; i++) {
		char a[32];

		snprintf(a, sizeof(a), "10.%d.%d.%d", i >> 16, (i >> 8) & 255,
		    i & 255);
		n += ratelimit_allow(rl, sa(a), 5000);
	}
	is_int(n, 10000, "10000 new clients each get their first query");
	ratelimit_free(rl);

	ok(ratelimit_allow(NULL, sa("192.0.2.1"), 0) == 1,
	    "no limiter: everything passes");

	/* client_key, shared with the listener's TCP connection limit */
	ok(same_key("2001:db8:1:2::1", "2001:db8:1:2:ffff::7"),
	    "client_key: one /64 is one client");
	ok(!same_key("2001:db8:1:2::1", "2001:db8:1:3::1"),
	    "client_key: another /64 is another client");
	ok(same_key("::ffff:192.0.2.7", "192.0.2.7"),
	    "client_key: a v4-mapped address is its IPv4 address");
	ok(!same_key("192.0.2.7", "192.0.2.8"),
	    "client_key: each IPv4 address is a client");
	return done();
}
