/*
 * The effective config printed in the language parse.y reads: what
 * dotproxyd -nv shows, and what config_hash() digests.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <net/if.h>
#include <arpa/inet.h>

#include <resolv.h>
#include <stdio.h>
#include <string.h>

#include "dotproxyd.h"

static void
print_quoted(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void
print_addr_port(FILE *f, const struct sockaddr_storage *ss, int defport)
{
	char		 host[INET6_ADDRSTRLEN];
	const void	*addr;
	int		 port = defport;

	if ((addr = sockaddr_addr(ss, &port)) == NULL ||
	    inet_ntop(ss->ss_family, addr, host, sizeof(host)) == NULL)
		strlcpy(host, "?", sizeof(host));
	fprintf(f, "%s", host);
	if (ss->ss_family == AF_INET6 &&
	    ((const struct sockaddr_in6 *)ss)->sin6_scope_id != 0) {
		char ifname[IF_NAMESIZE];

		if (if_indextoname(((const struct sockaddr_in6 *)ss)->
		    sin6_scope_id, ifname) != NULL)
			fprintf(f, "%%%s", ifname);
	}
	if (port != defport)
		fprintf(f, " port %d", port);
}

/* The effective config, in the language parse_config() reads. */
void
print_config(FILE *f, const struct dotproxyd_conf *c)
{
	const struct listen_conf	*l;
	const struct upstream_conf	*u;
	const struct acl_conf		*a;
	char				 host[INET6_ADDRSTRLEN], b64[64];
	int				 i;

	TAILQ_FOREACH(l, &c->listens, entry) {
		fprintf(f, "listen on ");
		print_addr_port(f, &l->ss, DEFAULT_DNS_PORT);
		fprintf(f, "\n");
	}
	TAILQ_FOREACH(u, &c->upstreams, entry) {
		fprintf(f, "upstream ");
		print_addr_port(f, &u->ss, DEFAULT_DOT_PORT);
		fprintf(f, " name ");
		print_quoted(f, u->name);
		for (i = 0; i < u->npins; i++) {
			b64_ntop(u->pins[i], SPKI_HASH_LEN, b64, sizeof(b64));
			fprintf(f, " pin sha256 \"%s\"", b64);
		}
		fprintf(f, "\n");
	}
	fprintf(f, "tls ca ");
	print_quoted(f, c->tls_ca);
	fprintf(f, "\ntls connections %d\n", c->tls_connections);
	fprintf(f, "tls idle timeout %d\n", c->tls_idle);
	TAILQ_FOREACH(a, &c->acls, entry) {
		inet_ntop(a->af, a->addr, host, sizeof(host));
		fprintf(f, "allow from %s/%d\n", host, a->plen);
	}
	fprintf(f, "user ");
	print_quoted(f, c->user);
	fprintf(f, "\nchroot ");
	print_quoted(f, c->chroot);
	fprintf(f, "\n");
	if (c->cache_size)
		fprintf(f, "cache size %d\n", c->cache_size);
	else
		fprintf(f, "cache off\n");
	if (c->serve_stale)
		fprintf(f, "cache serve-stale yes max-age %d\n", c->stale_max);
	else
		fprintf(f, "cache serve-stale no\n");
	fprintf(f, "cache prefetch %s\n", c->prefetch ? "yes" : "no");
	if (c->ratelimit)
		fprintf(f, "ratelimit %d per second burst %d\n", c->ratelimit,
		    c->ratelimit_burst);
	fprintf(f, "edns udp size %d\n", c->edns_udp_size);
	if (c->metrics.ss_family != AF_UNSPEC) {
		fprintf(f, "metrics listen on ");
		print_addr_port(f, &c->metrics, DEFAULT_METRICS_PORT);
		fprintf(f, "\n");
	}
	fprintf(f, "control socket ");
	print_quoted(f, c->control_path);
	fprintf(f, "\n");
	if (c->audit_log[0]) {
		fprintf(f, "audit log ");
		print_quoted(f, c->audit_log);
		fprintf(f, "\n");
	}
	if (c->log_queries)
		fprintf(f, "log queries%s\n", c->log_queries == 2 ?
		    " anonymize" : "");
	if (c->dnstap_path[0]) {
		fprintf(f, "dnstap socket ");
		print_quoted(f, c->dnstap_path);
		fprintf(f, "\n");
	}
	if (c->dnstap_anonymize)
		fprintf(f, "dnstap anonymize\n");
}
