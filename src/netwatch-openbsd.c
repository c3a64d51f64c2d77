/*
 * Network changes on OpenBSD: a routing socket (route(4)) filtered to
 * interface, address and route messages, of the routing table the
 * parent runs in (the socket's default).  What counts as a change, kept
 * simple: every RTM_IFINFO (an interface's flags or link state changed),
 * every RTM_NEWADDR and RTM_DELADDR, an RTM_ADD, RTM_DELETE or
 * RTM_CHANGE that succeeded for a route through a gateway (the default
 * route among them; not ARP or neighbour entries, not clones), and
 * RTM_DESYNC (the socket overflowed, messages were lost).
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <net/if.h>
#include <net/route.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "netwatch.h"

#define NETWATCH_READS	64	/* messages per turn of the event loop */
#define NETWATCH_BUFSZ	8192	/* more than a routing message */

/* the fields every routing message starts with */
#define RT_COMMON_LEN	(offsetof(struct rt_msghdr, rtm_type) + 1)

static int	 rt_message(int, const uint8_t *, size_t);

int
netwatch_open(const char **what)
{
	unsigned int	filter;
	int		fd;

	*what = "routing socket";
	if ((fd = socket(AF_ROUTE, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    AF_UNSPEC)) == -1)
		return -1;
	filter = ROUTE_FILTER(RTM_IFINFO) | ROUTE_FILTER(RTM_NEWADDR) |
	    ROUTE_FILTER(RTM_DELADDR) | ROUTE_FILTER(RTM_ADD) |
	    ROUTE_FILTER(RTM_DELETE) | ROUTE_FILTER(RTM_CHANGE) |
	    ROUTE_FILTER(RTM_DESYNC);
	if (setsockopt(fd, AF_ROUTE, ROUTE_MSGFILTER, &filter,
	    sizeof(filter)) == -1) {
		*what = "routing socket filter";
		return close_fail(fd);
	}
	return fd;
}

/* As on Linux: the kinds of change read, or -1 for a lasting error. */
int
netwatch_read(int fd)
{
	static uint8_t	buf[NETWATCH_BUFSZ];
	ssize_t		n;
	int		i, kinds = 0, k;

	for (i = 0; i < NETWATCH_READS; i++) {
		if ((n = read(fd, buf, sizeof(buf))) == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno != EINTR)
				return -1;
			continue;
		}
		if (n == 0)
			break;
		k = netwatch_parse(buf, (size_t)n);
		kinds |= k == -1 ? NETWATCH_LOST : k;
	}
	return kinds;
}

int
netwatch_parse(const void *buf, size_t len)
{
	const uint8_t	*p = buf;
	u_short		 msglen;
	int		 kinds = 0, k;

	while (len > 0) {
		if (len < RT_COMMON_LEN)
			return -1;
		memcpy(&msglen, p + offsetof(struct rt_msghdr, rtm_msglen),
		    sizeof(msglen));
		if (msglen < RT_COMMON_LEN || msglen > len)
			return -1;
		if (p[offsetof(struct rt_msghdr, rtm_version)] == RTM_VERSION) {
			k = rt_message(p[offsetof(struct rt_msghdr, rtm_type)],
			    p, msglen);
			if (k == -1)
				return -1;
			kinds |= k;
		}
		p += msglen;
		len -= msglen;
	}
	return kinds;
}

static int
rt_message(int type, const uint8_t *p, size_t len)
{
	struct rt_msghdr	rtm;

	switch (type) {
	case RTM_IFINFO:
		return NETWATCH_LINK;
	case RTM_NEWADDR:
	case RTM_DELADDR:
		return NETWATCH_ADDR;
	case RTM_ADD:
	case RTM_DELETE:
	case RTM_CHANGE:
		if (len < sizeof(rtm))
			return -1;
		memcpy(&rtm, p, sizeof(rtm));
		if (rtm.rtm_errno != 0 || !(rtm.rtm_flags & RTF_GATEWAY) ||
		    (rtm.rtm_flags & (RTF_LLINFO | RTF_CLONED)))
			return 0;
		return NETWATCH_ROUTE;
	case RTM_DESYNC:
		return NETWATCH_LOST;
	}
	return 0;
}
