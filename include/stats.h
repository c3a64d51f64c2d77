#ifndef DOTPROXYD_STATS_H
#define DOTPROXYD_STATS_H

#include <stdint.h>

/* Queries answered SERVFAIL because of the upstreams, by the EDE given. */
enum upstream_fail {
	UPSTREAM_FAIL_UNREACHABLE,	/* EDE_NO_REACHABLE */
	UPSTREAM_FAIL_NETWORK,		/* EDE_NETWORK_ERROR */
	UPSTREAM_FAIL_OTHER,		/* any other */
	UPSTREAM_FAIL_KINDS
};

/* The listener's counters, shown by dotproxyctl stats and metrics. */
struct listener_stats {
	uint64_t	queries_udp;
	uint64_t	queries_tcp;
	uint64_t	rcode[16];		/* answers sent, by rcode */
	uint64_t	dropped;		/* not DNS queries */
	uint64_t	refused_acl;
	uint64_t	ratelimited;
	uint64_t	coalesced;
	uint64_t	stale;			/* answers served stale */
	uint64_t	prefetches;		/* cached answers refreshed */
	uint64_t	upstream_fail[UPSTREAM_FAIL_KINDS];
	uint64_t	tcp_accepted;
	uint64_t	tcp_refused;		/* over the connection limit */
};

extern struct listener_stats	listener_counters;

#endif /* DOTPROXYD_STATS_H */
