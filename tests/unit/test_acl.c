/*
 * The access list: prefix parsing and matching of client addresses.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dotproxyd.h"
#include "acl.h"
#include "tap.h"

static struct sockaddr_storage *
sa(const char *text)
{
	static struct sockaddr_storage	 ss;
	struct sockaddr_in		*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6		*sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(5353);
	} else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(5353);
	} else {
		fprintf(stderr, "bad test address %s\n", text);
		exit(2);
	}
	return &ss;
}

static int
allowed(const struct dotproxyd_conf *c, const char *addr)
{
	return acl_allowed(c, (struct sockaddr *)sa(addr));
}

static void
check_prefix(const char *in, int af, const char *addr, int plen)
{
	struct acl_conf	a;
	uint8_t		want[16];
	int		r;

	memset(want, 0, sizeof(want));
	inet_pton(af, addr, want);
	r = parse_prefix(in, &a);
	ok(r == 0 && a.af == af && a.plen == plen &&
	    memcmp(a.addr, want, af == AF_INET ? 4 : 16) == 0,
	    "parse_prefix %s -> %s/%d", in, addr, plen);
}

static void
test_parse_prefix(void)
{
	struct acl_conf	 a;
	const char	*bad[] = {
		"", "/24", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1",
		"10.0.0.0/8x", "10.0.0.0/24/8", "10.0.0/8",
		"10.0.0.256", "example.com", "::/129", "::1/1000",
		"2001:db8::/64x", "2001:db8:::/64", "fe80::1%lo/64",
		"10.0.0.0/0x8",
		"0000000000000000000000000000000000000000000000000000000000000",
	};
	size_t		 i;

	check_prefix("192.0.2.77/24", AF_INET, "192.0.2.0", 24);
	check_prefix("10.1.2.3", AF_INET, "10.1.2.3", 32);
	check_prefix("172.31.255.255/12", AF_INET, "172.16.0.0", 12);
	check_prefix("192.0.2.255/31", AF_INET, "192.0.2.254", 31);
	check_prefix("192.0.2.255/25", AF_INET, "192.0.2.128", 25);
	check_prefix("203.0.113.9/0", AF_INET, "0.0.0.0", 0);
	check_prefix("10.0.0.1/32", AF_INET, "10.0.0.1", 32);
	check_prefix("2001:db8::1/32", AF_INET6, "2001:db8::", 32);
	check_prefix("2001:db8:abcd:ef12::1/61", AF_INET6,
	    "2001:db8:abcd:ef10::", 61);
	check_prefix("::1", AF_INET6, "::1", 128);
	check_prefix("ffff::ffff/0", AF_INET6, "::", 0);
	check_prefix("fe80::ffff/127", AF_INET6, "fe80::fffe", 127);
	check_prefix("::ffff:192.0.2.1/120", AF_INET6, "::ffff:192.0.2.0", 120);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_int(parse_prefix(bad[i], &a), -1, "parse_prefix rejects \"%s\"",
		    bad[i]);
}

static struct dotproxyd_conf *
conf_with(const char **prefixes)
{
	struct dotproxyd_conf	*c;
	struct acl_conf		*a;

	if ((c = config_new()) == NULL)
		exit(2);
	for (; *prefixes; prefixes++) {
		if ((a = calloc(1, sizeof(*a))) == NULL ||
		    parse_prefix(*prefixes, a) == -1) {
			fprintf(stderr, "bad prefix %s\n", *prefixes);
			exit(2);
		}
		TAILQ_INSERT_TAIL(&c->acls, a, entry);
	}
	return c;
}

static void
test_allowed(void)
{
	struct dotproxyd_conf	*c;
	const char		*lan[] = { "192.0.2.0/24", "2001:db8::/32",
				    "198.51.100.7", NULL };
	const char		*odd[] = { "10.0.0.128/25", "fd00::/7", NULL };
	const char		*any4[] = { "0.0.0.0/0", NULL };
	const char		*any6[] = { "::/0", NULL };
	const char		*none[] = { NULL };
	struct sockaddr_un	 sun;

	c = conf_with(lan);
	ok(allowed(c, "192.0.2.1"), "acl: 192.0.2.1 in 192.0.2.0/24");
	ok(allowed(c, "192.0.2.255"), "acl: 192.0.2.255 in 192.0.2.0/24");
	ok(!allowed(c, "192.0.3.1"), "acl: 192.0.3.1 refused");
	ok(!allowed(c, "192.0.1.255"), "acl: 192.0.1.255 refused");
	ok(allowed(c, "198.51.100.7"), "acl: host prefix matches");
	ok(!allowed(c, "198.51.100.8"), "acl: next host refused");
	ok(allowed(c, "2001:db8::1"), "acl: 2001:db8::1 in 2001:db8::/32");
	ok(allowed(c, "2001:db8:ffff:ffff::1"), "acl: end of 2001:db8::/32");
	ok(!allowed(c, "2001:db9::1"), "acl: 2001:db9::1 refused");
	ok(allowed(c, "::ffff:192.0.2.9"),
	    "acl: v4-mapped 192.0.2.9 matched as IPv4");
	ok(!allowed(c, "::ffff:192.0.3.9"), "acl: v4-mapped outside refused");
	ok(!allowed(c, "::192.0.2.9"),
	    "acl: v4-compatible (not mapped) is not IPv4");
	ok(!allowed(c, "127.0.0.1"), "acl: loopback not in an explicit list");
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ok(!acl_allowed(c, (struct sockaddr *)&sun), "acl: AF_UNIX refused");
	config_free(c);

	c = conf_with(odd);
	ok(allowed(c, "10.0.0.128") && allowed(c, "10.0.0.255"),
	    "acl /25: upper half allowed");
	ok(!allowed(c, "10.0.0.127"), "acl /25: lower half refused");
	ok(allowed(c, "fd12:3456::1") && allowed(c, "fc00::1"),
	    "acl /7: fc00::/7 allowed");
	ok(!allowed(c, "fe00::1"), "acl /7: fe00::1 refused");
	config_free(c);

	c = conf_with(any4);
	ok(allowed(c, "1.2.3.4") && allowed(c, "255.255.255.255") &&
	    allowed(c, "0.0.0.0"), "acl 0.0.0.0/0: every IPv4");
	ok(allowed(c, "::ffff:8.8.8.8"), "acl 0.0.0.0/0: v4-mapped too");
	ok(!allowed(c, "2001:db8::1"), "acl 0.0.0.0/0: not IPv6");
	config_free(c);

	c = conf_with(any6);
	ok(allowed(c, "2001:db8::1") && allowed(c, "::"),
	    "acl ::/0: every IPv6");
	ok(!allowed(c, "8.8.8.8"), "acl ::/0: not IPv4");
	config_free(c);

	c = conf_with(none);
	ok(!allowed(c, "127.0.0.1"), "acl: empty list refuses everyone");
	is_int(config_set_defaults(c), 0, "acl: built-in defaults");
	ok(allowed(c, "127.0.0.1"), "default: 127.0.0.1 allowed");
	ok(allowed(c, "127.1.2.3"), "default: 127.1.2.3 allowed");
	ok(allowed(c, "::1"), "default: ::1 allowed");
	ok(allowed(c, "::ffff:127.0.0.1"), "default: v4-mapped loopback");
	ok(!allowed(c, "10.0.0.1"), "default: 10.0.0.1 refused");
	ok(!allowed(c, "192.168.1.1"), "default: 192.168.1.1 refused");
	ok(!allowed(c, "::2"), "default: ::2 refused");
	ok(!allowed(c, "2001:db8::1"), "default: 2001:db8::1 refused");
	ok(!allowed(c, "128.0.0.1"), "default: 128.0.0.1 refused");
	config_free(c);

	ok(acl_is_loopback((struct sockaddr *)sa("127.0.0.53")),
	    "loopback: 127.0.0.53");
	ok(acl_is_loopback((struct sockaddr *)sa("::1")), "loopback: ::1");
	ok(acl_is_loopback((struct sockaddr *)sa("::ffff:127.0.0.1")),
	    "loopback: v4-mapped");
	ok(!acl_is_loopback((struct sockaddr *)sa("10.0.0.1")),
	    "loopback: not 10.0.0.1");
	ok(!acl_is_loopback((struct sockaddr *)sa("::")), "loopback: not ::");
}

int
main(void)
{
	test_parse_prefix();
	test_allowed();
	return done();
}
