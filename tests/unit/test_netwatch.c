/*
 * What the parent makes of netlink messages: netwatch_parse() on crafted
 * buffers.  Each is parsed from an exactly sized heap copy, so that a
 * read past its end is caught by AddressSanitizer and valgrind, and from
 * an odd address, as the parser must not rely on alignment.
 */
#ifdef __linux__
#include <sys/types.h>
#include <sys/socket.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netwatch.h"
#include "tap.h"

#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP	0x10000
#endif

#define ALL_KINDS	(NETWATCH_LINK | NETWATCH_ADDR | NETWATCH_ROUTE | \
			    NETWATCH_LOST)

struct buf {
	uint8_t	data[4096];
	size_t	len;
};

/* The parser on an exact heap copy and on an unaligned one: both agree. */
static int
parse(const void *data, size_t len)
{
	uint8_t	*exact, *odd;
	int	 r1, r2;

	if ((exact = malloc(len ? len : 1)) == NULL ||
	    (odd = malloc(len + 1)) == NULL)
		exit(2);
	memcpy(exact, data, len);
	memcpy(odd + 1, data, len);
	r1 = netwatch_parse(exact, len);
	r2 = netwatch_parse(odd + 1, len);
	free(exact);
	free(odd);
	return r1 == r2 ? r1 : -2;
}

/* Append a message: header, the fixed part, then padding to 4 bytes. */
static void
put_msg(struct buf *b, uint16_t type, const void *fixed, size_t flen)
{
	struct nlmsghdr	h;

	memset(&h, 0, sizeof(h));
	h.nlmsg_len = (uint32_t)(sizeof(h) + flen);
	h.nlmsg_type = type;
	memcpy(b->data + b->len, &h, sizeof(h));
	memcpy(b->data + b->len + sizeof(h), fixed, flen);
	b->len += NLMSG_ALIGN(h.nlmsg_len);
}

/* Add an attribute to the last message (at offset at) of b. */
static void
put_attr(struct buf *b, size_t at, uint16_t type, const void *v, size_t vlen)
{
	struct nlmsghdr	h;
	struct rtattr	rta;

	rta.rta_len = (unsigned short)(sizeof(rta) + vlen);
	rta.rta_type = type;
	memcpy(b->data + b->len, &rta, sizeof(rta));
	memcpy(b->data + b->len + sizeof(rta), v, vlen);
	b->len += RTA_ALIGN(rta.rta_len);
	memcpy(&h, b->data + at, sizeof(h));
	h.nlmsg_len = (uint32_t)(b->len - at);
	memcpy(b->data + at, &h, sizeof(h));
}

static int
family_link(int af, uint16_t type, unsigned flags, unsigned change)
{
	struct buf		b = { .len = 0 };
	struct ifinfomsg	ifi;

	memset(&ifi, 0, sizeof(ifi));
	ifi.ifi_family = (unsigned char)af;
	ifi.ifi_index = 3;
	ifi.ifi_flags = flags;
	ifi.ifi_change = change;
	put_msg(&b, type, &ifi, sizeof(ifi));
	put_attr(&b, 0, IFLA_IFNAME, "eth0", 5);
	put_attr(&b, 0, IFLA_MTU, "\xdc\x05\0\0", 4);
	return parse(b.data, b.len);
}

static int
one_link(uint16_t type, unsigned flags, unsigned change)
{
	return family_link(AF_UNSPEC, type, flags, change);
}

static int
one_addr(uint16_t type, int af, int scope, int flags)
{
	struct buf		b = { .len = 0 };
	struct ifaddrmsg	ifa;

	memset(&ifa, 0, sizeof(ifa));
	ifa.ifa_family = (uint8_t)af;
	ifa.ifa_prefixlen = af == AF_INET ? 24 : 64;
	ifa.ifa_scope = (uint8_t)scope;
	ifa.ifa_flags = (uint8_t)flags;
	ifa.ifa_index = 3;
	put_msg(&b, type, &ifa, sizeof(ifa));
	put_attr(&b, 0, IFA_ADDRESS, "\xc6\x33\x64\x01", 4);
	return parse(b.data, b.len);
}

static void
fill_route(struct rtmsg *rtm, int af, int dst_len, unsigned flags)
{
	memset(rtm, 0, sizeof(*rtm));
	rtm->rtm_family = (uint8_t)af;
	rtm->rtm_dst_len = (uint8_t)dst_len;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	rtm->rtm_type = RTN_UNICAST;
	rtm->rtm_flags = flags;
}

static int
one_route(uint16_t type, int af, int dst_len, unsigned flags)
{
	struct buf	b = { .len = 0 };
	struct rtmsg	rtm;

	fill_route(&rtm, af, dst_len, flags);
	put_msg(&b, type, &rtm, sizeof(rtm));
	put_attr(&b, 0, RTA_GATEWAY, "\xc6\x33\x64\xfe", 4);
	return parse(b.data, b.len);
}

static int
one_bare(uint16_t type, size_t payload)
{
	struct buf	b = { .len = 0 };
	uint8_t		zero[64];

	memset(zero, 0, sizeof(zero));
	put_msg(&b, type, zero, payload);
	return parse(b.data, b.len);
}

/* A header whose length field says len, followed by what fits. */
static int
bad_len(uint32_t len, size_t have)
{
	struct buf	b = { .len = 0 };
	struct nlmsghdr	h;

	memset(&b.data, 0, sizeof(b.data));
	memset(&h, 0, sizeof(h));
	h.nlmsg_len = len;
	h.nlmsg_type = RTM_NEWADDR;
	memcpy(b.data, &h, sizeof(h));
	b.len = have;
	return parse(b.data, b.len);
}

static void
test_links(void)
{
	struct buf		b = { .len = 0 };
	struct ifinfomsg	ifi;

	is_int(one_link(RTM_NEWLINK, IFF_UP, IFF_UP), NETWATCH_LINK,
	    "link set up");
	is_int(one_link(RTM_NEWLINK, 0, IFF_UP), NETWATCH_LINK,
	    "link set down");
	is_int(one_link(RTM_NEWLINK, IFF_UP | IFF_RUNNING | IFF_LOWER_UP, 0),
	    NETWATCH_LINK, "carrier change (the kernel sends no mask)");
	is_int(one_link(RTM_NEWLINK, IFF_UP, IFF_LOWER_UP), NETWATCH_LINK,
	    "lower layer down");
	is_int(one_link(RTM_NEWLINK, IFF_UP | IFF_PROMISC, IFF_PROMISC), 0,
	    "promiscuous mode only: no change");
	is_int(one_link(RTM_NEWLINK, IFF_UP, IFF_ALLMULTI | IFF_NOARP), 0,
	    "other flags only: no change");
	is_int(one_link(RTM_DELLINK, 0, ~0U), NETWATCH_LINK, "link deleted");
	is_int(one_link(RTM_NEWLINK, 0, ~0U), NETWATCH_LINK, "new link");
	is_int(family_link(AF_INET6, RTM_NEWLINK, IFF_UP, 0), 0,
	    "IPv6 state of a link (router advertisement): no change");
	is_int(family_link(AF_BRIDGE, RTM_NEWLINK, IFF_UP, 0), 0,
	    "bridge port state: no change");

	memset(&ifi, 0, sizeof(ifi));
	ifi.ifi_flags = IFF_UP | IFF_RUNNING;
	put_msg(&b, RTM_NEWLINK, &ifi, sizeof(ifi));
	put_attr(&b, 0, IFLA_IFNAME, "wlan0", 6);
	put_attr(&b, 0, IFLA_WIRELESS, "\x14\0\x19\x8b", 4);
	is_int(parse(b.data, b.len), 0, "wireless event: no change");
	is_int(one_bare(RTM_NEWLINK, sizeof(ifi)), NETWATCH_LINK,
	    "link message without attributes");
	is_int(one_bare(RTM_NEWLINK, sizeof(ifi) - 1), -1,
	    "link message shorter than ifinfomsg: malformed");
}

static void
test_addrs(void)
{
	is_int(one_addr(RTM_NEWADDR, AF_INET, RT_SCOPE_UNIVERSE, 0),
	    NETWATCH_ADDR, "IPv4 address added");
	is_int(one_addr(RTM_DELADDR, AF_INET, RT_SCOPE_UNIVERSE, 0),
	    NETWATCH_ADDR, "IPv4 address removed");
	is_int(one_addr(RTM_NEWADDR, AF_INET6, RT_SCOPE_UNIVERSE, 0),
	    NETWATCH_ADDR, "IPv6 address added");
	is_int(one_addr(RTM_DELADDR, AF_INET6, RT_SCOPE_SITE, 0),
	    NETWATCH_ADDR, "IPv6 site-scope address removed");
	is_int(one_addr(RTM_NEWADDR, AF_INET6, RT_SCOPE_LINK, 0), 0,
	    "IPv6 link-local address: no change");
	is_int(one_addr(RTM_NEWADDR, AF_INET, RT_SCOPE_HOST, 0), 0,
	    "loopback address: no change");
	is_int(one_addr(RTM_NEWADDR, AF_INET6, RT_SCOPE_UNIVERSE,
	    IFA_F_TENTATIVE), 0, "tentative IPv6 address: not yet");
	is_int(one_addr(RTM_DELADDR, AF_INET6, RT_SCOPE_UNIVERSE,
	    IFA_F_DADFAILED | IFA_F_TENTATIVE), 0,
	    "IPv6 address that failed DAD: no change");
	is_int(one_addr(RTM_NEWADDR, AF_PACKET, RT_SCOPE_UNIVERSE, 0), 0,
	    "address of another family: no change");
	is_int(one_bare(RTM_NEWADDR, sizeof(struct ifaddrmsg) - 1), -1,
	    "address message shorter than ifaddrmsg: malformed");
}

static void
test_routes(void)
{
	is_int(one_route(RTM_NEWROUTE, AF_INET, 0, 0), NETWATCH_ROUTE,
	    "IPv4 default route added");
	is_int(one_route(RTM_DELROUTE, AF_INET6, 0, 0), NETWATCH_ROUTE,
	    "IPv6 default route removed");
	is_int(one_route(RTM_NEWROUTE, AF_INET, 24, 0), 0,
	    "a /24 route: no change");
	is_int(one_route(RTM_NEWROUTE, AF_INET6, 64, 0), 0,
	    "an IPv6 /64 route: no change");
	is_int(one_route(RTM_NEWROUTE, AF_INET6, 0, RTM_F_CLONED), 0,
	    "a cached clone: no change");
	is_int(one_route(RTM_NEWROUTE, AF_MPLS, 0, 0), 0,
	    "an MPLS route: no change");
	is_int(one_bare(RTM_NEWROUTE, sizeof(struct rtmsg) - 1), -1,
	    "route message shorter than rtmsg: malformed");
}

static void
test_others(void)
{
	struct nlmsgerr	e;

	is_int(one_bare(RTM_NEWNEIGH, sizeof(struct ndmsg)), 0,
	    "RTM_NEWNEIGH: no change");
	is_int(one_bare(RTM_DELNEIGH, sizeof(struct ndmsg)), 0,
	    "RTM_DELNEIGH: no change");
	is_int(one_bare(RTM_NEWRULE, 12), 0, "RTM_NEWRULE: no change");
	is_int(one_bare(RTM_NEWNETCONF, 0), 0, "RTM_NEWNETCONF: no change");
	is_int(one_bare(NLMSG_NOOP, 0), 0, "NLMSG_NOOP: no change");
	is_int(one_bare(NLMSG_DONE, 4), 0, "NLMSG_DONE: no change");
	memset(&e, 0, sizeof(e));
	e.error = -1;
	is_int(one_bare(NLMSG_ERROR, sizeof(e)), 0, "NLMSG_ERROR: no change");
	is_int(one_bare(NLMSG_OVERRUN, 0), NETWATCH_LOST,
	    "NLMSG_OVERRUN: messages lost");
	is_int(one_bare(0x7fff, 3), 0, "an unknown type: no change");
}

/* Several messages in one datagram, as the kernel may send them. */
static void
test_several(struct buf *b)
{
	struct ndmsg		nd;
	struct ifaddrmsg	ifa;
	struct rtmsg		rtm;
	size_t			at;

	memset(&nd, 0, sizeof(nd));
	put_msg(b, RTM_NEWNEIGH, &nd, sizeof(nd));
	memset(&ifa, 0, sizeof(ifa));
	ifa.ifa_family = AF_INET;
	at = b->len;
	put_msg(b, RTM_NEWADDR, &ifa, sizeof(ifa));
	put_attr(b, at, IFA_LOCAL, "\xc6\x33\x64\x01", 4);
	fill_route(&rtm, AF_INET6, 0, 0);
	at = b->len;
	put_msg(b, RTM_DELROUTE, &rtm, sizeof(rtm));
	put_attr(b, at, RTA_OIF, "\3\0\0\0", 4);
	is_int(parse(b->data, b->len), NETWATCH_ADDR | NETWATCH_ROUTE,
	    "neighbour, address and route in one datagram");
	is_int(parse(b->data, 0), 0, "an empty datagram: no change");
}

static void
test_malformed(const struct buf *several)
{
	struct buf		b = { .len = 0 };
	struct ifinfomsg	ifi;
	size_t			n, bad = 0;
	int			r;

	is_int(bad_len(0, 16), -1, "nlmsg_len 0: malformed, no endless loop");
	is_int(bad_len(8, 16), -1, "nlmsg_len shorter than its header");
	is_int(bad_len(64, 40), -1, "nlmsg_len past the end of the buffer");
	is_int(bad_len(0xffffffff, 32), -1, "nlmsg_len 0xffffffff");
	is_int(bad_len(24, 10), -1, "a header cut short");
	is_int(bad_len(24, 1), -1, "one byte");

	memset(&ifi, 0, sizeof(ifi));
	put_msg(&b, RTM_NEWLINK, &ifi, sizeof(ifi));
	put_attr(&b, 0, IFLA_IFNAME, "eth0", 5);
	b.data[sizeof(struct nlmsghdr) + sizeof(ifi)] = 200;	/* rta_len */
	is_int(parse(b.data, b.len), -1, "attribute running past its message");
	b.data[sizeof(struct nlmsghdr) + sizeof(ifi)] = 0;
	is_int(parse(b.data, b.len), -1, "attribute of length 0");
	b.data[sizeof(struct nlmsghdr) + sizeof(ifi)] = 9;
	b.len += 6;
	is_int(parse(b.data, b.len), -1,
	    "a good message, then six bytes of no header");

	/* every prefix of a good datagram: malformed, or a subset */
	for (n = 0; n <= several->len; n++) {
		r = parse(several->data, n);
		if (r == -2 || (r != -1 && (r & ~ALL_KINDS) != 0))
			bad++;
	}
	ok(bad == 0, "each of %zu prefixes parses the same aligned or not, "
	    "to -1 or known kinds", several->len + 1);
}

int
main(void)
{
	struct buf	several = { .len = 0 };

	plan(51);
	test_links();
	test_addrs();
	test_routes();
	test_others();
	test_several(&several);
	test_malformed(&several);
	return done();
}
#else /* !__linux__ */
#include <stdio.h>

int
main(void)
{
	printf("1..0 # SKIP the netlink parser is Linux's\n");
	return 0;
}
#endif
