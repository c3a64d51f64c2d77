/*
 * The listener's query log and its audit of clients.  With "log queries",
 * one line for each query answered; refused and rate-limited clients are
 * counted and audited once a minute, not per packet.  With "dnstap
 * socket", each client's query and answer as dnstap records, made
 * anonymous as the query log does it.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "chan.h"
#include "dns.h"
#include "dnstap.h"
#include "dotproxyd.h"
#include "listener.h"
#include "log.h"
#include "proc.h"
#include "querylog.h"
#include "sip.h"
#include "tap.h"

/* The clients counted this minute, by event; past AUDIT_CLIENTS, a sum. */
#define AUDIT_CLIENTS	256
static struct audit_client {
	struct sockaddr_storage	 ss;
	uint64_t		 count;
} audit_cl[CLIENT_EVENTS][AUDIT_CLIENTS];
static int			 n_audit_cl[CLIENT_EVENTS];
static uint64_t			 audit_others[CLIENT_EVENTS];

static struct event		 audit_timer;
static uint8_t			 anon_key[SIP_KEY_LEN];

static int
same_client(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr,
		    &((const struct sockaddr_in *)b)->sin_addr, 4) == 0;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
	    &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
}

/* Count a refusal or a rate-limit trip for the audit. */
void
note_client(enum client_event kind, const struct sockaddr_storage *ss)
{
	struct timeval	 tv = { 60, 0 };
	int		 i;

	for (i = 0; i < n_audit_cl[kind]; i++)
		if (same_client(&audit_cl[kind][i].ss, ss)) {
			audit_cl[kind][i].count++;
			return;
		}
	if (n_audit_cl[kind] == AUDIT_CLIENTS) {
		audit_others[kind]++;
		return;
	}
	audit_cl[kind][n_audit_cl[kind]].ss = *ss;
	audit_cl[kind][n_audit_cl[kind]++].count = 1;
	if (!evtimer_pending(&audit_timer, NULL))
		evtimer_add(&audit_timer, &tv);
}

static void
client_text(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	const void	*a;

	if (ss->ss_family == AF_INET)
		a = &((const struct sockaddr_in *)ss)->sin_addr;
	else
		a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	if (inet_ntop(ss->ss_family, a, buf, (socklen_t)len) == NULL)
		strlcpy(buf, "?", len);
}

/*
 * The first event of a minute starts it; at its end, one record each.
 * Called at shutdown too, for what the minute has counted so far.
 */
void
audit_clients(int fd, short event, void *arg)
{
	static const char	*ev[CLIENT_EVENTS] = {
		[CLIENT_REFUSED] = "access-refused",
		[CLIENT_RATELIMITED] = "rate-limited"
	};
	char			 addr[INET6_ADDRSTRLEN], n[24];
	int			 k, i;

	(void)fd;
	(void)event;
	(void)arg;
	for (k = 0; k < CLIENT_EVENTS; k++) {
		for (i = 0; i < n_audit_cl[k]; i++) {
			client_text(&audit_cl[k][i].ss, addr, sizeof(addr));
			snprintf(n, sizeof(n), "%llu",
			    (unsigned long long)audit_cl[k][i].count);
			audit(ev[k], "client", addr, "queries", n,
			    "period", "60s", NULL);
		}
		if (audit_others[k]) {
			snprintf(n, sizeof(n), "%llu",
			    (unsigned long long)audit_others[k]);
			audit(ev[k], "client", "others", "queries", n,
			    "period", "60s", NULL);
		}
		n_audit_cl[k] = 0;
		audit_others[k] = 0;
	}
}

/*
 * A client's address made anonymous, in place: its /24 (IPv4) or /56
 * (IPv6), without the port.  Returns SipHash-2-4 of its whole address
 * under a 128-bit key chosen at each start.  A keyed PRF: without the
 * key, which never leaves this process, no output says anything of its
 * input, nor of any other; the key is too long to search for from
 * records of known clients.
 */
static uint64_t
anon_addr(struct sockaddr_storage *ss)
{
	uint8_t		 in[17], *a;
	size_t		 alen, keep;

	if (ss->ss_family == AF_INET) {
		a = (uint8_t *)&((struct sockaddr_in *)ss)->sin_addr;
		((struct sockaddr_in *)ss)->sin_port = 0;
		alen = 4;
		keep = 3;
	} else {
		a = (uint8_t *)&((struct sockaddr_in6 *)ss)->sin6_addr;
		((struct sockaddr_in6 *)ss)->sin6_port = 0;
		alen = 16;
		keep = 7;
	}
	in[0] = ss->ss_family == AF_INET ? 4 : 6;
	memcpy(in + 1, a, alen);
	memset(a + keep, 0, alen - keep);
	return sip24(anon_key, in, alen + 1);
}

/* "log queries anonymize": the prefix, then '#' and the keyed hash. */
static void
client_anon(const struct sockaddr_storage *from, char *buf, size_t len)
{
	struct sockaddr_storage	 ss = *from;
	uint64_t		 h;
	size_t			 o;

	h = anon_addr(&ss);
	client_text(&ss, buf, len);
	o = strlen(buf);
	(void)snprintf(buf + o, len - o, "/%d#%016llx",
	    ss.ss_family == AF_INET ? 24 : 56, (unsigned long long)h);
}

/*
 * "dnstap anonymize": the same prefix, and for a port the low 16 bits
 * of the same hash (the last four digits of the query log's), so that
 * records of one client go together and agree with the query log.
 */
static void
tap_anon(void *arg, struct sockaddr_storage *ss)
{
	uint16_t	port;

	(void)arg;
	port = htons((uint16_t)anon_addr(ss));
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = port;
	else
		((struct sockaddr_in6 *)ss)->sin6_port = port;
}

/* The listener's dnstap writer, as the config says. */
void
querylog_tap_configure(struct chan *parent, const struct dotproxyd_conf *c)
{
	tap_configure(parent, c, tap_anon, NULL);
}

/*
 * A client's query as it came, or the answer as it left, for dnstap;
 * local is the address it came to, or NULL.
 */
void
tap_client(const struct cquery *cq, enum dnstap_type type,
    const uint8_t *msg, size_t len, const struct sockaddr_storage *local)
{
	struct dnstap_event	ev;
	int64_t			t0;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.proto = cq->tc != NULL ? DNSTAP_TCP : DNSTAP_UDP;
	ev.peer = (const struct sockaddr *)&cq->from;
	if (local != NULL && local->ss_family == cq->from.ss_family)
		ev.local = (const struct sockaddr *)local;
	t0 = (int64_t)cq->t0.tv_sec * 1000000 + cq->t0.tv_nsec / 1000;
	tap_realtime(&ev.qtime, t0);
	if (type == DNSTAP_CLIENT_RESPONSE)
		tap_realtime(&ev.rtime, mono_us());
	ev.msg = msg;
	ev.msglen = len;
	tap_log(&ev);
}

#define LOG_NAME_MAX	768	/* of a name in a query log line, with NUL */

/*
 * A name as dns_name_to_text() writes it, cut to at most max - 1 bytes
 * with "..." at the end when longer; never inside a \DDD escape.
 */
static void
bound_name(char *name, size_t max)
{
	size_t	cut, i;

	if (max < 8 || strlen(name) < max)
		return;
	cut = max - 4;
	for (i = cut - 3; i < cut; i++)
		if (name[i] == '\\')
			cut = i;
	strlcpy(name + cut, "...", max - cut);
}

/*
 * One line per answered query, when "log queries" is set: the client
 * (with "anonymize": its /24 or /56 and a keyed hash of the address),
 * the transport, type, rcode, where the answer came from, how long it
 * took, and last the name, cut to LOG_NAME_MAX so that the line keeps
 * every field.  The name is in DNS presentation format: the line needs
 * no other escape.
 */
void
log_query(const struct cquery *cq, const uint8_t *msg, size_t len,
    const char *how, int anonymize)
{
	static const char	*rcodes[] = { "NOERROR", "FORMERR", "SERVFAIL",
	    "NXDOMAIN", "NOTIMP", "REFUSED" };
	struct timespec		 t1;
	char			 addr[INET6_ADDRSTRLEN + 24], name[1024];
	int			 rcode;
	long long		 us;

	if (cq->qm.qend == 0 || dns_name_to_text(cq->q + cq->qm.qname_off,
	    cq->qm.qname_len, name, sizeof(name)) == -1)
		strlcpy(name, "-", sizeof(name));
	bound_name(name, LOG_NAME_MAX);
	if (anonymize)
		client_anon(&cq->from, addr, sizeof(addr));
	else
		client_text(&cq->from, addr, sizeof(addr));
	rcode = len >= DNS_HDR_LEN ? DNS_F_RCODE(dns_get16(msg + 2)) : -1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	us = (long long)(t1.tv_sec - cq->t0.tv_sec) * 1000000 +
	    (t1.tv_nsec - cq->t0.tv_nsec) / 1000;
	log_info("query %s %s type %u %s %s %lldus %s", addr,
	    cq->tc ? "tcp" : "udp", cq->qm.qtype,
	    rcode >= 0 && rcode <= 5 ? rcodes[rcode] : "other", how, us, name);
}

/* Once the event loop runs: the audit's timer, a new anonymizing key. */
void
querylog_init(void)
{
	evtimer_set(&audit_timer, audit_clients, NULL);
	arc4random_buf(anon_key, sizeof(anon_key));
}
