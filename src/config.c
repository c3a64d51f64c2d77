/*
 * The config's life outside the grammar: a new one with the fixed
 * defaults, the built-in lists for what a file left empty, freeing it,
 * and the addresses and prefixes it holds, read and printed.
 *
 * A config travels to a child as CONF_MAIN (the fixed part), one message
 * per list element, then CONF_END; the child merges it only on END.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <arpa/inet.h>

#include <errno.h>
#include <sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "dns.h"
#include "dotproxyd.h"
#include "imsg.h"

#define TERMINATE(s)	((s)[sizeof(s) - 1] = '\0')

struct dotproxyd_conf *
config_new(void)
{
	struct dotproxyd_conf	*c;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	TAILQ_INIT(&c->listens);
	TAILQ_INIT(&c->upstreams);
	TAILQ_INIT(&c->acls);
	strlcpy(c->user, DOTPROXYD_USER, sizeof(c->user));
	strlcpy(c->chroot, DOTPROXYD_CHROOT, sizeof(c->chroot));
	strlcpy(c->tls_ca, DOTPROXYD_CA, sizeof(c->tls_ca));
	strlcpy(c->control_path, DOTPROXYD_SOCKET, sizeof(c->control_path));
	c->tls_connections = DEFAULT_TLS_CONNS;
	c->tls_idle = DEFAULT_TLS_IDLE;
	c->cache_size = DEFAULT_CACHE_SIZE;
	c->stale_max = DEFAULT_STALE_MAX;
	c->prefetch = 1;
	c->edns_udp_size = DNS_EDNS_UDP;
	return c;
}

void
config_free(struct dotproxyd_conf *c)
{
	struct listen_conf	*l;
	struct upstream_conf	*u;
	struct acl_conf		*a;

	if (c == NULL)
		return;
	while ((l = TAILQ_FIRST(&c->listens)) != NULL) {
		TAILQ_REMOVE(&c->listens, l, entry);
		free(l);
	}
	while ((u = TAILQ_FIRST(&c->upstreams)) != NULL) {
		TAILQ_REMOVE(&c->upstreams, u, entry);
		free(u);
	}
	while ((a = TAILQ_FIRST(&c->acls)) != NULL) {
		TAILQ_REMOVE(&c->acls, a, entry);
		free(a);
	}
	free(c);
}

static int
add_default_upstream(struct dotproxyd_conf *c, const char *addr,
    const char *name)
{
	struct upstream_conf	*u;

	if ((u = calloc(1, sizeof(*u))) == NULL)
		return -1;
	if (parse_address(addr, DEFAULT_DOT_PORT, &u->ss) == -1) {
		free(u);
		return -1;
	}
	strlcpy(u->name, name, sizeof(u->name));
	TAILQ_INSERT_TAIL(&c->upstreams, u, entry);
	return 0;
}

static int
add_default_prefix(struct dotproxyd_conf *c, const char *prefix)
{
	struct acl_conf	*a;

	if ((a = calloc(1, sizeof(*a))) == NULL)
		return -1;
	if (parse_prefix(prefix, a) == -1) {
		free(a);
		return -1;
	}
	TAILQ_INSERT_TAIL(&c->acls, a, entry);
	return 0;
}

static int
add_default_listen(struct dotproxyd_conf *c, const char *addr)
{
	struct listen_conf	*l;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return -1;
	if (parse_address(addr, DEFAULT_DNS_PORT, &l->ss) == -1) {
		free(l);
		return -1;
	}
	TAILQ_INSERT_TAIL(&c->listens, l, entry);
	return 0;
}

/* Fill in the built-in defaults for every list the file left empty. */
int
config_set_defaults(struct dotproxyd_conf *c)
{
	if (TAILQ_EMPTY(&c->listens) &&
	    (add_default_listen(c, "127.0.0.1") == -1 ||
	    add_default_listen(c, "::1") == -1))
		return -1;
	if (TAILQ_EMPTY(&c->upstreams) &&
	    (add_default_upstream(c, "1.1.1.1", "cloudflare-dns.com") == -1 ||
	    add_default_upstream(c, "1.0.0.1", "cloudflare-dns.com") == -1 ||
	    add_default_upstream(c, "9.9.9.9", "dns.quad9.net") == -1))
		return -1;
	if (TAILQ_EMPTY(&c->acls) &&
	    (add_default_prefix(c, "127.0.0.0/8") == -1 ||
	    add_default_prefix(c, "::1/128") == -1))
		return -1;
	return 0;
}

int
parse_address(const char *s, int port, struct sockaddr_storage *ss)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;
	char			 buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	char			*pct;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		return 0;
	}
	if (strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	if ((pct = strchr(buf, '%')) != NULL)
		*pct++ = '\0';
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		if (pct != NULL &&
		    (sin6->sin6_scope_id = if_nametoindex(pct)) == 0)
			return -1;
		return 0;
	}
	return -1;
}

int
parse_prefix(const char *s, struct acl_conf *a)
{
	char		 buf[INET6_ADDRSTRLEN + 5];
	char		*slash;
	const char	*errstr;
	int		 max, i;

	memset(a, 0, sizeof(*a));
	if (strlcpy(buf, s, sizeof(buf)) >= sizeof(buf))
		return -1;
	if ((slash = strchr(buf, '/')) != NULL)
		*slash++ = '\0';
	if (inet_pton(AF_INET, buf, a->addr) == 1) {
		a->af = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, a->addr) == 1) {
		a->af = AF_INET6;
		max = 128;
	} else
		return -1;
	a->plen = max;
	if (slash != NULL) {
		a->plen = (int)strtonum(slash, 0, max, &errstr);
		if (errstr != NULL)
			return -1;
	}
	/* clear host bits so printing and matching agree */
	for (i = 0; i < max / 8; i++) {
		int bits = a->plen - i * 8;

		if (bits >= 8)
			continue;
		a->addr[i] &= bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
	}
	return 0;
}

/* The address of an IPv4 or IPv6 socket address and its port; else NULL. */
const void *
sockaddr_addr(const struct sockaddr_storage *ss, int *port)
{
	if (ss->ss_family == AF_INET) {
		*port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
		return &((const struct sockaddr_in *)ss)->sin_addr;
	}
	if (ss->ss_family == AF_INET6) {
		*port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
		return &((const struct sockaddr_in6 *)ss)->sin6_addr;
	}
	return NULL;
}

const char *
sockaddr_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char		 host[INET6_ADDRSTRLEN];
	const void	*addr;
	int		 port;

	if ((addr = sockaddr_addr(ss, &port)) == NULL) {
		strlcpy(buf, "?", len);
		return buf;
	}
	if (inet_ntop(ss->ss_family, addr, host, sizeof(host)) == NULL)
		strlcpy(host, "?", sizeof(host));
	snprintf(buf, len, ss->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
	    host, port);
	return buf;
}

int
config_send(struct imsgbuf *ibuf, const struct dotproxyd_conf *c,
    int proc)
{
	const struct upstream_conf	*u;
	const struct acl_conf		*a;
	const struct listen_conf	*l;

	if (imsg_compose(ibuf, IMSG_CONF_MAIN, 0, -1, c, sizeof(*c)) == -1)
		return -1;
	if (proc == PROC_UPSTREAM)
		TAILQ_FOREACH(u, &c->upstreams, entry)
			if (imsg_compose(ibuf, IMSG_CONF_UPSTREAM, 0, -1, u,
			    sizeof(*u)) == -1)
				return -1;
	if (proc == PROC_LISTENER) {
		TAILQ_FOREACH(a, &c->acls, entry)
			if (imsg_compose(ibuf, IMSG_CONF_ACL, 0, -1, a,
			    sizeof(*a)) == -1)
				return -1;
		TAILQ_FOREACH(l, &c->listens, entry)
			if (imsg_compose(ibuf, IMSG_CONF_LISTEN, 0, -1, l,
			    sizeof(*l)) == -1)
				return -1;
	}
	return imsg_compose(ibuf, IMSG_CONF_END, 0, -1, NULL, 0);
}

static void *
copy_element(struct imsg *imsg, size_t size)
{
	void	*p;

	if (imsg->len != size) {
		errno = EBADMSG;
		return NULL;
	}
	if ((p = malloc(size)) == NULL)
		return NULL;
	memcpy(p, imsg->data, size);
	return p;
}

/*
 * Take one config message.  Returns 1 when *pending is complete (END),
 * 0 when more is expected, -1 when the message is malformed or out of
 * order (fatal for the peer that sent it).
 */
int
config_recv(struct dotproxyd_conf **pending, struct imsg *imsg)
{
	struct dotproxyd_conf	*c = *pending;
	struct upstream_conf	*u;
	struct acl_conf		*a;
	struct listen_conf	*l;

	switch (imsg->hdr.type) {
	case IMSG_CONF_MAIN:
		if (c != NULL || imsg->len != sizeof(*c))
			return -1;
		if ((c = malloc(sizeof(*c))) == NULL)
			return -1;
		memcpy(c, imsg->data, sizeof(*c));
		TAILQ_INIT(&c->listens);
		TAILQ_INIT(&c->upstreams);
		TAILQ_INIT(&c->acls);
		TERMINATE(c->user);
		TERMINATE(c->chroot);
		TERMINATE(c->tls_ca);
		TERMINATE(c->control_path);
		TERMINATE(c->audit_log);
		TERMINATE(c->dnstap_path);
		*pending = c;
		if (c->metrics.ss_family != AF_UNSPEC &&
		    c->metrics.ss_family != AF_INET &&
		    c->metrics.ss_family != AF_INET6)
			return -1;
		return 0;
	case IMSG_CONF_UPSTREAM:
		if (c == NULL || (u = copy_element(imsg, sizeof(*u))) == NULL)
			return -1;
		TERMINATE(u->name);
		if (u->npins < 0 || u->npins > MAX_PINS) {
			free(u);
			return -1;
		}
		TAILQ_INSERT_TAIL(&c->upstreams, u, entry);
		return 0;
	case IMSG_CONF_ACL:
		if (c == NULL || (a = copy_element(imsg, sizeof(*a))) == NULL)
			return -1;
		TAILQ_INSERT_TAIL(&c->acls, a, entry);
		if ((a->af != AF_INET && a->af != AF_INET6) || a->plen < 0 ||
		    a->plen > (a->af == AF_INET ? 32 : 128))
			return -1;
		return 0;
	case IMSG_CONF_LISTEN:
		if (c == NULL || (l = copy_element(imsg, sizeof(*l))) == NULL)
			return -1;
		TAILQ_INSERT_TAIL(&c->listens, l, entry);
		return 0;
	case IMSG_CONF_END:
		if (c == NULL || imsg->len != 0)
			return -1;
		return 1;
	}
	return -1;
}

/*
 * A short hash of the effective config, for the audit trail: the first
 * CONFIG_HASH_HEX hexadecimal digits of the SHA-256 digest of what -nv
 * prints, fewer only if buf is too small for them (whole bytes only).
 */
void
config_hash(const struct dotproxyd_conf *c, char *buf, size_t len)
{
	char		 hex[SHA256_DIGEST_STRING_LENGTH];
	char		*text = NULL;
	size_t		 textlen = 0, n;
	FILE		*f;

	strlcpy(buf, "?", len);
	if ((f = open_memstream(&text, &textlen)) == NULL)
		return;
	print_config(f, c);
	fclose(f);
	if (SHA256Data((const uint8_t *)text, textlen, hex) != NULL) {
		n = len > 0 ? (len - 1) & ~(size_t)1 : 0;	/* whole bytes */
		if (n > CONFIG_HASH_HEX)
			n = CONFIG_HASH_HEX;
		if (n > 0)
			snprintf(buf, len, "%.*s", (int)n, hex);
	}
	free(text);
}

/* Does the config have a `listen on' statement for this address? */
int
config_listens(const struct dotproxyd_conf *c,
    const struct sockaddr_storage *ss)
{
	const struct listen_conf	*l;

	TAILQ_FOREACH(l, &c->listens, entry)
		if (memcmp(&l->ss, ss, sizeof(*ss)) == 0)
			return 1;
	return 0;
}
