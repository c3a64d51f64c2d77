/*
 * The access list: clients whose address falls in an "allow from"
 * prefix are served, everyone else is refused.  IPv4-mapped IPv6
 * addresses are matched as the IPv4 address they carry.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <string.h>

#include "acl.h"
#include "dotproxyd.h"

static const uint8_t v4mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };

/* The family and address bytes of sa, unwrapping v4-mapped v6. */
static int
client_addr(const struct sockaddr *sa, const uint8_t **addr)
{
	const struct sockaddr_in6	*sin6;

	if (sa->sa_family == AF_INET) {
		*addr = (const uint8_t *)
		    &((const struct sockaddr_in *)sa)->sin_addr;
		return AF_INET;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	sin6 = (const struct sockaddr_in6 *)sa;
	if (memcmp(sin6->sin6_addr.s6_addr, v4mapped, 12) == 0) {
		*addr = sin6->sin6_addr.s6_addr + 12;
		return AF_INET;
	}
	*addr = sin6->sin6_addr.s6_addr;
	return AF_INET6;
}

static int
prefix_match(const uint8_t *net, const uint8_t *addr, int plen)
{
	int	full = plen / 8, rest = plen % 8;

	if (memcmp(net, addr, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((net[full] ^ addr[full]) & (0xff << (8 - rest))) == 0;
}

int
acl_match_one(const struct acl_conf *a, const struct sockaddr *sa)
{
	const uint8_t	*addr;
	int		 af;

	if ((af = client_addr(sa, &addr)) == -1 || af != a->af)
		return 0;
	return prefix_match(a->addr, addr, a->plen);
}

int
acl_allowed(const struct dotproxyd_conf *c, const struct sockaddr *sa)
{
	const struct acl_conf	*a;

	TAILQ_FOREACH(a, &c->acls, entry)
		if (acl_match_one(a, sa))
			return 1;
	return 0;
}

int
acl_is_loopback(const struct sockaddr *sa)
{
	static const uint8_t	 lo6[16] = { [15] = 1 };
	const uint8_t		*addr;
	int			 af;

	if ((af = client_addr(sa, &addr)) == AF_INET)
		return addr[0] == 127;
	return af == AF_INET6 && memcmp(addr, lo6, 16) == 0;
}
