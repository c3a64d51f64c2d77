/*
 * Network changes on Linux: a NETLINK_ROUTE socket in the link, address
 * and route groups, and what its messages mean for connections to the
 * upstreams.  What counts as a change:
 *
 * - a link message (new, changed or deleted link) whose change mask
 *   holds IFF_UP, IFF_RUNNING or IFF_LOWER_UP, or is 0: the kernel
 *   reports a carrier change with an empty mask, so an empty mask counts.
 *   Only the generic link messages (family AF_UNSPEC) count, not those
 *   of IPv6 (router advertisement state) or of a bridge (port state).
 *   Wireless events (a link message with IFLA_WIRELESS, scan results
 *   among them) do not count; an association changes the carrier too.
 * - an IPv4 or IPv6 address added or removed, of global or site scope,
 *   not tentative (IPv6 duplicate address detection not done) and not
 *   failed: link-local and loopback addresses do not carry upstream
 *   traffic, and a tentative address is announced again once usable.
 * - an IPv4 or IPv6 route with a prefix length of 0 (a default route,
 *   in any table) added or removed, not a cached clone.
 * - NLMSG_OVERRUN, a datagram cut short, a full receive queue (ENOBUFS)
 *   or a datagram that does not parse: changes may have been missed,
 *   which counts as one.
 *
 * Everything else (neighbours, rules, NLMSG_DONE, NLMSG_ERROR, ...)
 * does not.  The parser copies every header it reads out of the buffer,
 * so the buffer needs no alignment, and checks every length against
 * what is left before it.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <net/if.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "netwatch.h"

#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP	0x10000
#endif

#define NETWATCH_GROUPS	(RTMGRP_LINK | RTMGRP_IPV4_IFADDR | \
			    RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | \
			    RTMGRP_IPV6_ROUTE)
#define NETWATCH_READS	64	/* datagrams per turn of the event loop */
#define NETWATCH_BUFSZ	16384	/* more than a kernel notification */

/* netlink's 4-byte alignment, without overflow for any 32-bit length */
#define NL_ALIGNED(n)	(((size_t)(n) + 3) & ~(size_t)3)

static int	 nl_has_attr(const uint8_t *, size_t, unsigned short);
static int	 nl_link(const uint8_t *, size_t);
static int	 nl_ip(uint16_t, const uint8_t *, size_t);
static int	 nl_message(uint16_t, const uint8_t *, size_t);

int
netwatch_open(const char **what)
{
	struct sockaddr_nl	 snl;
	int			 fd;

	*what = "netlink socket";
	if ((fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    NETLINK_ROUTE)) == -1)
		return -1;
	memset(&snl, 0, sizeof(snl));
	snl.nl_family = AF_NETLINK;
	snl.nl_groups = NETWATCH_GROUPS;
	if (bind(fd, (struct sockaddr *)&snl, sizeof(snl)) == -1) {
		*what = "binding the netlink socket";
		return close_fail(fd);
	}
	return fd;
}

/*
 * Read what is queued, up to NETWATCH_READS datagrams (the event loop
 * calls again for more).  Returns the kinds of change seen, 0 for none,
 * -1 with errno for an error that reading again would not cure.
 */
int
netwatch_read(int fd)
{
	static uint8_t		 buf[NETWATCH_BUFSZ];
	struct sockaddr_nl	 snl;
	struct iovec		 iov;
	struct msghdr		 msg;
	ssize_t			 n;
	int			 i, kinds = 0, k;

	for (i = 0; i < NETWATCH_READS; i++) {
		memset(&msg, 0, sizeof(msg));
		iov.iov_base = buf;
		iov.iov_len = sizeof(buf);
		msg.msg_name = &snl;
		msg.msg_namelen = sizeof(snl);
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		if ((n = recvmsg(fd, &msg, 0)) == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == ENOBUFS)	/* the queue overflowed */
				kinds |= NETWATCH_LOST;
			else if (errno != EINTR)
				return -1;
			continue;
		}
		if (msg.msg_namelen != sizeof(snl) || snl.nl_pid != 0)
			continue;		/* not from the kernel */
		if (msg.msg_flags & MSG_TRUNC) {
			kinds |= NETWATCH_LOST;
			continue;
		}
		k = netwatch_parse(buf, (size_t)n);
		kinds |= k == -1 ? NETWATCH_LOST : k;
	}
	return kinds;
}

/*
 * The messages in a buffer, one after the other, each header copied
 * out and its length checked against what is left.
 */
int
netwatch_parse(const void *buf, size_t len)
{
	const uint8_t	*p = buf;
	struct nlmsghdr	 h;
	size_t		 step;
	int		 kinds = 0, k;

	while (len > 0) {
		if (len < sizeof(h))
			return -1;		/* a header cut short */
		memcpy(&h, p, sizeof(h));
		if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > len)
			return -1;
		k = nl_message(h.nlmsg_type, p + sizeof(h),
		    h.nlmsg_len - sizeof(h));
		if (k == -1)
			return -1;
		kinds |= k;
		step = NL_ALIGNED(h.nlmsg_len);
		if (step >= len)
			break;
		p += step;
		len -= step;
	}
	return kinds;
}

/* What one message, its payload p of len bytes, means. */
static int
nl_message(uint16_t type, const uint8_t *p, size_t len)
{
	switch (type) {
	case RTM_NEWLINK:
	case RTM_DELLINK:
		return nl_link(p, len);
	case RTM_NEWADDR:
	case RTM_DELADDR:
	case RTM_NEWROUTE:
	case RTM_DELROUTE:
		return nl_ip(type, p, len);
	case NLMSG_OVERRUN:
		return NETWATCH_LOST;
	default:
		/* NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, neighbours, ... */
		return 0;
	}
}

static int
nl_link(const uint8_t *p, size_t len)
{
	struct ifinfomsg	ifi;
	size_t			off = NL_ALIGNED(sizeof(ifi));
	int			wireless = 0;

	if (len < sizeof(ifi))
		return -1;
	memcpy(&ifi, p, sizeof(ifi));
	if (ifi.ifi_family != AF_UNSPEC)
		return 0;
	if (ifi.ifi_change != 0 &&
	    (ifi.ifi_change & (IFF_UP | IFF_RUNNING | IFF_LOWER_UP)) == 0)
		return 0;
	if (len > off &&
	    (wireless = nl_has_attr(p + off, len - off, IFLA_WIRELESS)) == -1)
		return -1;
	return wireless ? 0 : NETWATCH_LINK;
}

/*
 * An IPv4 or IPv6 address or route (both messages begin with the
 * family).  Link-local, host and tentative addresses and routes but
 * the default one are no change of where queries can go.
 */
static int
nl_ip(uint16_t type, const uint8_t *p, size_t len)
{
	struct ifaddrmsg	ifa;
	struct rtmsg		rtm;
	int			addr = type == RTM_NEWADDR ||
				    type == RTM_DELADDR;

	if (len < (addr ? sizeof(ifa) : sizeof(rtm)))
		return -1;
	if (p[0] != AF_INET && p[0] != AF_INET6)
		return 0;
	if (addr) {
		memcpy(&ifa, p, sizeof(ifa));
		if (ifa.ifa_scope >= RT_SCOPE_LINK ||
		    (ifa.ifa_flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)))
			return 0;
		return NETWATCH_ADDR;
	}
	memcpy(&rtm, p, sizeof(rtm));
	if (rtm.rtm_dst_len != 0 || (rtm.rtm_flags & RTM_F_CLONED))
		return 0;
	return NETWATCH_ROUTE;
}

/*
 * Whether the attributes in p, len bytes, hold one of this type: 1 or
 * 0, or -1 if one runs past the end or a header is cut short.
 */
static int
nl_has_attr(const uint8_t *p, size_t len, unsigned short type)
{
	struct rtattr	rta;
	size_t		step;

	while (len > 0) {
		if (len < sizeof(rta))
			return -1;
		memcpy(&rta, p, sizeof(rta));
		if (rta.rta_len < sizeof(rta) || rta.rta_len > len)
			return -1;
		if ((rta.rta_type & NLA_TYPE_MASK) == type)
			return 1;
		step = NL_ALIGNED(rta.rta_len);
		if (step >= len)
			break;
		p += step;
		len -= step;
	}
	return 0;
}
