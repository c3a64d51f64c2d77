/*
 * The upstream process: DNS over TLS (RFC 7858) to the configured
 * resolvers.  Persistent, pipelined connections; DNS IDs rewritten per
 * connection; answers matched on ID and question.  Each upstream has a
 * smoothed round-trip time from which a try's timeout follows; a try
 * that runs out of time is hedged on another upstream while it stays
 * valid itself, a connection that goes quiet is probed and closed, and
 * an upstream that fails is probed back with a query of our own before
 * clients use it again.  It never sees a client address, and has no
 * cleartext path: a query leaves only through an authenticated TLS
 * connection.
 *
 * This file is the process, its upstreams, their health and the
 * queries with their tries; upconn.c is the connections.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <errno.h>
#include <event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tls.h>
#include <unistd.h>

#include "anchors.h"
#include "audit.h"
#include "chan.h"
#include "dns.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"
#include "proc.h"
#include "rtt.h"
#include "sandbox.h"
#include "tap.h"
#include "upstream.h"

#define SPREAD_AT		16	/* open another connection beyond */
#define QUERY_DEADLINE_MS	3500	/* the listener gives up at 4 s */
#define PROBE_MS		2000	/* a health query, handshake included */
#define WARM_MS			300000	/* keep a connection after use */
#define MAX_QUIET_CLOSES	3	/* closes before any answer: failure */
#define QUIET_MS		3000	/* ... with no answer for this long */
#define MAX_QUERIES		65536
#define CA_MAX			(8 * 1024 * 1024)

static void	 parent_message(struct chan *, struct imsg *);
static void	 listener_message(struct chan *, struct imsg *);
static void	 apply_config(const struct dotproxyd_conf *);
static void	 conf_applied(void);
static void	 heartbeat(struct heartbeat *);
static void	 query_fail(struct uquery *, int, const char *);
static void	 query_timer(int, short, void *);
static void	 upstream_failed(struct upstream *, enum fail_kind,
		    const char *);
static void	 probe_upstream(int, short, void *);
static void	 probe_start(struct upstream *);
static int	 take_startup_fd(struct imsg *);
static void	 listener_lost(void);
static void	 network_changed(void);
static void	 upstream_sigterm(int, short, void *);
static void	 send_status(uint32_t);

static struct dotproxyd_conf	*conf;
static struct chan		 parent = {
	.dispatch = proc_dispatch, .message = proc_parent_message,
	.peer = "parent", .vital = 1
};
static struct chan		 listener = {
	.dispatch = proc_dispatch, .message = listener_message,
	.done = flush_conns, .peer = "listener process"
};
static TAILQ_HEAD(, upstream)	 upstreams = TAILQ_HEAD_INITIALIZER(upstreams);
static TAILQ_HEAD(, uquery)	 queries = TAILQ_HEAD_INITIALIZER(queries);
static int			 ca_fd = -1, nqueries;
static int			 listener_up, terminating;
static struct proc		 proc = PROC_CHILD(PROC_UPSTREAM, &parent, &listener,
    &listener_up, &conf, listener_lost, upstream_sigterm);

/* ". IN NS", recursion desired: what a health query asks */
static const uint8_t	 probe_query[] = {
	0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
	0, 0, DNS_T_NS, 0, DNS_C_IN
};

/* Arm a timer for a moment of mono_us(). */
void
timer_at(struct event *ev, int64_t when)
{
	struct timeval	tv;
	int64_t		us = when - mono_us();

	if (us < 0)
		us = 0;
	tv.tv_sec = us / 1000000;
	tv.tv_usec = us % 1000000;
	evtimer_add(ev, &tv);
}

/*
 * The CA bundle, read from the file the parent opened, from its start,
 * each time it is wanted (an upstream's first connections, its trust
 * anchors, a handshake that failed under them) rather than held: the
 * system's is 220 KB.  Returns it for free(), NULL after a log line.
 */
static uint8_t *
ca_read(size_t *lenp)
{
	struct stat	 st;
	uint8_t		*buf;
	size_t		 len = 0;
	ssize_t		 n;

	if (fstat(ca_fd, &st) == -1) {
		log_warn("tls ca: fstat");
		return NULL;
	}
	if (st.st_size <= 0 || st.st_size > CA_MAX) {
		log_warnx("tls ca: %lld bytes, not 1 to %d",
		    (long long)st.st_size, CA_MAX);
		return NULL;
	}
	if ((buf = malloc((size_t)st.st_size)) == NULL) {
		log_warn("tls ca");
		return NULL;
	}
	while (len < (size_t)st.st_size) {
		n = pread(ca_fd, buf + len, (size_t)st.st_size - len,
		    (off_t)len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == -1)
				log_warn("tls ca: read");
			else
				log_warnx("tls ca: shorter than it was");
			free(buf);
			return NULL;
		}
		len += (size_t)n;
	}
	*lenp = len;
	return buf;
}

/*
 * Read it once before confinement: a file without a certificate fails
 * here, not at every handshake, and what libcrypto keeps from reading
 * one (its decoders) is set up before the connections' copies come, as
 * anchors_prepare() sets up what it keeps from a handshake.
 */
static void
ca_check(void)
{
	uint8_t	*ca;
	size_t	 len;
	int	 n;

	if ((ca = ca_read(&len)) == NULL)
		fatalx("tls ca: cannot read it");
	if ((n = anchors_count(ca, len)) == -1)
		fatalx("tls ca: a certificate in the file does not parse");
	if (n == 0)
		fatalx("tls ca: no certificate in the file");
	log_debug("tls ca: %d certificates", n);
	free(ca);
}

__attribute__((__noreturn__)) void
upstream_main(int debug, int verbose)
{
	(void)debug;
	proc_child_init(&proc, verbose);
	if (ca_fd == -1)
		fatalx("start-up is missing the CA");
	if (tls_init() == -1)
		fatalx("tls_init");
	anchors_prepare();
	ca_check();
	proc_child_confine(&proc);
	proc_child_serve(&proc);
}

/* The upstream process's own descriptor at start-up: the CA bundle. */
static int
take_startup_fd(struct imsg *imsg)
{
	if (imsg->hdr.type != IMSG_CA_FD || ca_fd != -1)
		return -1;
	msg_need(&parent, imsg, 0, 0, MSG_FD);
	ca_fd = imsg->fd;
	imsg->fd = -1;
	return 0;
}

static int
same_upstream(const struct upstream_conf *a, const struct upstream_conf *b)
{
	return memcmp(&a->ss, &b->ss, sizeof(a->ss)) == 0 &&
	    strcmp(a->name, b->name) == 0 && a->npins == b->npins &&
	    memcmp(a->pins, b->pins, sizeof(a->pins)) == 0;
}

/*
 * Each upstream has a TLS config of its own for its own session store:
 * an anonymous file libtls reads before each handshake and writes after
 * one, so that a new connection resumes the last session instead of a
 * full handshake.  libtls writes it when the handshake completes, which
 * holds a TLS 1.2 ticket or session ID; a TLS 1.3 ticket comes later and
 * is not kept.  Without the file, connections make full handshakes.
 */
static void
upstream_tls_init(struct upstream *u)
{
	uint8_t	*ca;
	size_t	 len;

	if ((u->tlscfg = tls_config_new()) == NULL)
		fatalx("tls_config_new");
	if ((ca = ca_read(&len)) == NULL)
		fatalx("tls ca: cannot read it");
	if (tls_config_set_ca_mem(u->tlscfg, ca, len) == -1)
		fatalx("tls ca: %s", tls_config_error(u->tlscfg));
	free(ca);
	if (tls_config_set_protocols(u->tlscfg, TLS_PROTOCOL_TLSv1_2 |
	    TLS_PROTOCOL_TLSv1_3) == -1)
		fatalx("tls protocols: %s", tls_config_error(u->tlscfg));
	if ((u->sessfd = sandbox_memfile("tls-session")) == -1) {
		if (errno != EOPNOTSUPP)
			log_warn("upstream %s: no TLS session store",
			    u->label);
	} else if (tls_config_set_session_fd(u->tlscfg, u->sessfd) == -1) {
		log_warnx("upstream %s: TLS session store: %s", u->label,
		    tls_config_error(u->tlscfg));
		close(u->sessfd);
		u->sessfd = -1;
	}
}

/*
 * Trust anchors.  A connection's TLS context parses the CA bundle it is
 * given and keeps it while the connection lasts: some 800 KB for the
 * system's 140 certificates.  Once a connection to an upstream has
 * verified, its later connections are given only the bundle's
 * certificates its chain leads to (anchors_pick()), a few KB: the same
 * verification for that chain.  Connections opened before are replaced
 * when idle (conn_idle()).
 */

/*
 * Give u's connections these CAs.  libtls drops the ones it had before
 * it takes new ones, and with none it would verify against its own
 * default: if it cannot take these, the whole bundle again, or exit.
 */
static int
upstream_tls_ca(struct upstream *u, const uint8_t *mem, size_t len)
{
	uint8_t	*ca;
	size_t	 calen;

	if (tls_config_set_ca_mem(u->tlscfg, mem, len) == 0)
		return 0;
	log_warnx("upstream %s: cannot set its trust anchors", u->label);
	if ((ca = ca_read(&calen)) == NULL ||
	    tls_config_set_ca_mem(u->tlscfg, ca, calen) == -1)
		fatalx("upstream %s: cannot set its CA bundle", u->label);
	free(ca);
	return -1;
}

void
upstream_tls_verified(struct upstream *u, struct tls *ctx)
{
	const uint8_t	*chain;
	uint8_t		*ca, *pem;
	size_t		 chainlen, calen, pemlen;
	int		 n;

	/* a resumed session's chain is its leaf alone */
	if (u->anchored != 0 || tls_conn_session_resumed(ctx) ||
	    (chain = tls_peer_cert_chain_pem(ctx, &chainlen)) == NULL ||
	    (ca = ca_read(&calen)) == NULL)
		return;
	/*
	 * With the anchors picked before: an upstream whose servers have
	 * certificates from two CAs ends up trusting both, not one by turns.
	 */
	n = anchors_pick(ca, calen, chain, chainlen, u->anchors,
	    u->anchors_len, &pem, &pemlen);
	free(ca);
	if (n <= 0) {
		/* not looked for again until a handshake fails */
		u->anchored = -1;
		log_debug("upstream %s: its chain leads to no certificate of "
		    "the bundle by name; connections keep the bundle",
		    u->label);
		return;
	}
	if (upstream_tls_ca(u, pem, pemlen) == -1) {
		free(pem);
		return;
	}
	free(u->anchors);
	u->anchors = pem;
	u->anchors_len = pemlen;
	u->anchored = 1;
	u->anchors_gen++;
	log_info("upstream %s: new connections trust the %d certificate%s "
	    "of the bundle its chain%s led to", u->label, n, n == 1 ? "" : "s",
	    n == 1 ? "" : "s");
}

/*
 * A handshake failed to verify.  One started with the anchors alone may
 * have met a certificate from another CA of the bundle: the next ones
 * have the whole bundle again, until one verifies, and the failure is
 * not the upstream's (1).  0 for one that had the whole bundle.
 */
int
upstream_tls_failed(struct upstream *u, const struct conn *c)
{
	uint8_t	*ca;
	size_t	 len;
	int	 r;

	if (!c->with_anchors) {
		if (u->anchored == -1)
			u->anchored = 0;	/* look again after the next */
		return 0;
	}
	if (u->anchored != 1)
		return 1;		/* the bundle is back already */
	if ((ca = ca_read(&len)) == NULL)
		return 0;
	r = upstream_tls_ca(u, ca, len);
	free(ca);
	if (r == -1)
		return 0;
	u->anchored = 0;
	u->anchors_gen++;
	log_info("upstream %s: a certificate did not verify under its trust "
	    "anchors alone; new connections have the whole bundle", u->label);
	return 1;
}

/* Without its store, an upstream's connections make full handshakes. */
static void
upstream_tls_no_store(struct upstream *u, const char *why)
{
	log_warnx("upstream %s: %s; TLS sessions are no longer kept",
	    u->label, why);
	(void)tls_config_set_session_fd(u->tlscfg, -1);
	close(u->sessfd);
	u->sessfd = -1;
}

/* A session from a handshake that failed our checks is not kept. */
void
upstream_tls_forget(struct upstream *u)
{
	char	why[128];

	if (u->sessfd == -1 || ftruncate(u->sessfd, 0) == 0)
		return;
	snprintf(why, sizeof(why), "clearing the TLS session: %s",
	    strerror(errno));
	upstream_tls_no_store(u, why);
}

/*
 * Did libtls fail on the store itself (a session larger than the file
 * size limit, say)?  That would fail every handshake: the store is given
 * up, and the failure is not the upstream's.
 */
int
upstream_tls_store_failed(struct upstream *u, const char *err)
{
	if (u->sessfd == -1 || (strstr(err, "session file") == NULL &&
	    strstr(err, "parse session") == NULL &&
	    strstr(err, "set session") == NULL))
		return 0;
	upstream_tls_no_store(u, err);
	return 1;
}

static void
upstream_free(struct upstream *u)
{
	int	i;

	for (i = 0; i < u->ninit; i++)
		free(u->conns[i].obuf);
	evtimer_del(&u->probe_ev);
	tls_config_free(u->tlscfg);
	free(u->anchors);
	if (u->sessfd != -1)
		close(u->sessfd);
	free(u);
}

static struct upstream *
upstream_new(const struct upstream_conf *uc)
{
	struct upstream	*u;
	char		 addr[64];

	if ((u = calloc(1, sizeof(*u))) == NULL)
		fatal("calloc");
	u->uc = *uc;
	TAILQ_INIT(&u->waiting);
	snprintf(u->label, sizeof(u->label), "%s (%s)",
	    sockaddr_text(&uc->ss, addr, sizeof(addr)), uc->name);
	evtimer_set(&u->probe_ev, probe_upstream, u);
	upstream_tls_init(u);
	return u;
}

/*
 * Tries still waiting on u go elsewhere, or wait again for a connection
 * this opens; they were no try.
 */
void
upstream_unwait(struct upstream *u)
{
	TAILQ_HEAD(, utry)	 moving;
	struct utry		*t;
	struct uquery		*uq;
	int			 i, live;

	TAILQ_INIT(&moving);
	TAILQ_CONCAT(&moving, &u->waiting, wentry);
	while ((t = TAILQ_FIRST(&moving)) != NULL) {
		TAILQ_REMOVE(&moving, t, wentry);
		uq = t->uq;
		t->up = NULL;
		uq->ntries--;
		if (uq->probe != P_NONE) {
			query_free(uq);
			continue;
		}
		for (i = 0, live = 0; i < MAX_TRIES; i++)
			live += uq->tries[i].up != NULL;
		if (!live)
			(void)query_dispatch(uq);
	}
}

/*
 * Take a new config: unchanged upstreams keep their connections, the
 * others are closed (their queries go elsewhere) and new ones start idle.
 */
static void
apply_config(const struct dotproxyd_conf *nc)
{
	struct upstream_conf	*uc;
	struct upstream		*u, *next;
	TAILQ_HEAD(, upstream)	 old;
	int			 i, fresh = 0;

	TAILQ_INIT(&old);
	TAILQ_CONCAT(&old, &upstreams, entry);
	TAILQ_FOREACH(uc, &nc->upstreams, entry) {
		TAILQ_FOREACH(u, &old, entry)
			if (same_upstream(&u->uc, uc))
				break;
		if (u != NULL)
			TAILQ_REMOVE(&old, u, entry);
		else {
			u = upstream_new(uc);
			fresh = 1;
		}
		for (; u->ninit < nc->tls_connections; u->ninit++)
			conn_init(&u->conns[u->ninit], u);
		u->nconns = nc->tls_connections;
		TAILQ_INSERT_TAIL(&upstreams, u, entry);
	}
	TAILQ_FOREACH(u, &old, entry)
		u->removed = 1;

	/* the new list complete, what it no longer has can go */
	TAILQ_FOREACH(u, &upstreams, entry)
		for (i = u->nconns; i < u->ninit; i++)
			if (u->conns[i].state != C_CLOSED)
				conn_close(&u->conns[i], F_CONFIG,
				    "fewer connections configured");
	for (u = TAILQ_FIRST(&old); u != NULL; u = next) {
		next = TAILQ_NEXT(u, entry);
		if (u->probe != NULL)
			query_free(u->probe);
		for (i = 0; i < u->ninit; i++)
			if (u->conns[i].state != C_CLOSED)
				conn_close(&u->conns[i], F_CONFIG,
				    "upstream removed from the config");
		upstream_unwait(u);
		upstream_free(u);
	}
	/*
	 * New upstreams are asked a health query at once: the first
	 * clients go to one known to answer, on a connection already open.
	 */
	if (fresh)
		TAILQ_FOREACH(u, &upstreams, entry)
			if (u->state == U_UP && u->last_answer == 0 &&
			    u->st.handshakes == 0)
				probe_start(u);
	flush_conns();
}

/* What the upstream process tells the parent's heartbeat. */
static void
heartbeat(struct heartbeat *hb)
{
	struct upstream	*u;

	TAILQ_FOREACH(u, &upstreams, entry) {
		hb->upstreams++;
		if (u->state != U_DOWN)
			hb->upstreams_up++;
	}
}

static void
conf_applied(void)
{
	apply_config(conf);
	tap_configure(&parent, conf, NULL, NULL);
}

/* How long a connection may go unused: tls idle timeout, in µs. */
int64_t
idle_timeout_us(void)
{
	return conf->tls_idle * 1000000LL;
}

/* The parent's messages for the upstream process alone. */
static void
parent_message(struct chan *c, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_NETWORK_CHANGED:
		msg_need(c, imsg, 0, 0, MSG_NO_FD);
		network_changed();
		break;
	default:
		proc_unexpected(c, imsg);
	}
}

/* What has been composed for the listener goes out. */
void
listener_flush(void)
{
	chan_update(&listener);
}

/*
 * Write every connection's records, and close the ones that failed on
 * the way (their queries go elsewhere, which may queue on others: go
 * again, a bounded number of times).
 */
void
flush_conns(void)
{
	static int	 busy;
	struct upstream	*u;
	int		 i, pass, again;

	if (busy)
		return;
	busy = 1;
	for (pass = 0, again = 1; again && pass < 16; pass++) {
		again = 0;
		TAILQ_FOREACH(u, &upstreams, entry)
			for (i = 0; i < u->nconns; i++)
				if (conn_flush(&u->conns[i]) == -1)
					again = 1;
	}
	busy = 0;
}

static void
send_fail(uint32_t qid, int ede, const char *text)
{
	struct query_fail	qf;

	log_debug("query %u failed: %s", qid, text);
	memset(&qf, 0, sizeof(qf));
	qf.ede = ede;
	strlcpy(qf.text, text, sizeof(qf.text));
	if (imsg_compose(&listener.ibuf, IMSG_FAIL, qid, -1, &qf,
	    sizeof(qf)) == -1)
		log_warn("imsg_compose");
	chan_update(&listener);
}

/*
 * A new query: framed and padded once, as every try sends it; only the
 * ID changes from try to try.  Probes (qid 0) are queries of our own.
 */
static struct uquery *
query_new(uint32_t qid, const uint8_t *q, size_t qlen, enum probe_kind pk)
{
	uint8_t		 buf[2 + DNS_MAX_MSG];
	struct dns_msg	 qm;
	struct uquery	*uq;
	size_t		 len;

	if (dns_parse(q, qlen, &qm) == -1 || (qm.flags & DNS_F_QR)) {
		send_fail(qid, EDE_OTHER, "malformed query");
		return NULL;
	}
	len = dns_make_query(buf + 2, sizeof(buf) - 2, q, &qm, 0,
	    DNS_PAD_BLOCK);
	if (len == 0 || dns_parse(buf + 2, len, &qm) == -1) {
		send_fail(qid, EDE_OTHER, "query too large");
		return NULL;
	}
	dns_put16(buf, (uint16_t)len);
	if ((uq = calloc(1, sizeof(*uq) + 2 + len)) == NULL)
		fatal("calloc");
	memcpy(uq->q, buf, 2 + len);
	uq->qlen = 2 + len;
	uq->qm = qm;
	uq->qid = qid;
	uq->probe = pk;
	uq->born = mono_us();
	evtimer_set(&uq->tmo, query_timer, uq);
	TAILQ_INSERT_TAIL(&queries, uq, entry);
	nqueries++;
	return uq;
}

/* A client's query from the listener. */
static void
take_query(uint32_t qid, const uint8_t *q, size_t qlen)
{
	struct uquery	*uq;

	if (nqueries >= MAX_QUERIES)
		send_fail(qid, EDE_OTHER, "too many queries");
	else if ((uq = query_new(qid, q, qlen, P_NONE)) != NULL)
		(void)query_dispatch(uq);
}

static void
listener_message(struct chan *c, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_QUERY:
		msg_need(c, imsg, DNS_HDR_LEN, DNS_MAX_MSG, MSG_NO_FD);
		take_query(imsg->hdr.peerid, imsg->data, imsg->len);
		break;
	case IMSG_CTL_STATUS:
		msg_need(c, imsg, 0, 0, MSG_NO_FD);
		send_status(imsg->hdr.peerid);
		break;
	default:
		proc_unexpected(c, imsg);
	}
}

/* ------------------------------------------------------------------ */
/* Tries */

int
live_tries(const struct uquery *uq)
{
	int	i, n = 0;

	for (i = 0; i < MAX_TRIES; i++)
		n += uq->tries[i].up != NULL;
	return n;
}

/* The try started last of those still running, or NULL. */
static struct utry *
newest_try(struct uquery *uq)
{
	struct utry	*t, *best = NULL;
	int		 i;

	for (i = 0; i < MAX_TRIES; i++) {
		t = &uq->tries[i];
		if (t->up != NULL && (best == NULL || t->start > best->start))
			best = t;
	}
	return best;
}

/* Take a try off its connection or waiting list. */
static void
try_end(struct utry *t)
{
	struct conn	*c = t->conn;
	int		 slot;

	if (t->up == NULL)
		return;
	if (c != NULL) {
		slot = t->id & (SLOTS - 1);
		c->slots[slot] = NULL;
		c->gone[slot] = t->id;	/* a late answer is no surprise */
		c->ninflight--;
		if (c->ninflight == 0)
			conn_arm(c);
		t->conn = NULL;
	} else
		TAILQ_REMOVE(&t->up->waiting, t, wentry);
	t->up = NULL;
}

void
query_free(struct uquery *uq)
{
	struct upstream	*u;
	int		 i;

	if (uq->probe == P_CONN && uq->tries[0].conn != NULL)
		uq->tries[0].conn->probing = 0;
	for (i = 0; i < MAX_TRIES; i++)
		try_end(&uq->tries[i]);
	evtimer_del(&uq->tmo);
	if (uq->probe == P_UPSTREAM)
		TAILQ_FOREACH(u, &upstreams, entry)
			if (u->probe == uq) {
				/* ended unanswered: another one soon */
				u->probe = NULL;
				if (u->state == U_PROBING)
					timer_at(&u->probe_ev, mono_us() +
					    RTT_INIT_MS * 1000LL);
			}
	TAILQ_REMOVE(&queries, uq, entry);
	nqueries--;
	free(uq);
}

/* A client's query answered: the answer goes to the listener. */
void
query_answer(struct uquery *uq, const uint8_t *a, size_t alen)
{
	if (imsg_compose(&listener.ibuf, IMSG_ANSWER, uq->qid, -1, a,
	    alen) == -1) {
		log_warn("imsg_compose");
		return;
	}
	query_free(uq);
}

static void
query_fail(struct uquery *uq, int ede, const char *text)
{
	if (uq->probe == P_NONE)
		send_fail(uq->qid, ede, text);
	query_free(uq);
}

/* The failure answer for a query nobody could take, saying why. */
static void
query_fail_last(struct uquery *uq)
{
	struct upstream	*u = uq->last;
	char		 text[256];

	if (u == NULL)
		TAILQ_FOREACH(u, &upstreams, entry)
			if (u->last_error[0] != '\0')
				break;
	if (u == NULL) {
		query_fail(uq, EDE_NO_REACHABLE, "no upstream is reachable");
		return;
	}
	switch (u->last_fail) {
	case F_AUTH:
		snprintf(text, sizeof(text), "upstream authentication "
		    "failed: %s", u->last_error);
		query_fail(uq, EDE_NETWORK_ERROR, text);
		break;
	case F_TIMEOUT:
		snprintf(text, sizeof(text), "upstream timed out: %s",
		    u->last_error);
		query_fail(uq, EDE_NO_REACHABLE, text);
		break;
	default:
		snprintf(text, sizeof(text), "upstream network error: %s",
		    u->last_error[0] ? u->last_error : "connection lost");
		query_fail(uq, EDE_NETWORK_ERROR, text);
	}
}

int
upstream_rto(const struct upstream *u)
{
	return rtt_timeout(&u->rtt, UPSTREAM_TRY_MS);
}

/* ------------------------------------------------------------------ */
/* Where a try goes */

/* 0: use it; 1: only if nothing better; -1: not now. */
static int
upstream_tier(const struct upstream *u)
{
	if (u->removed || u->state == U_DOWN)
		return -1;
	return u->state == U_PROBING || u->nsuspect > 0;
}

static int
tried_on(const struct uquery *uq, const struct upstream *u)
{
	int	i;

	for (i = 0; i < MAX_TRIES; i++)
		if (uq->tries[i].up == u)
			return 1;
	return 0;
}

/*
 * The upstream for a query's next try: a healthy one before a suspect
 * one, one it is not on now before one it is, one that did not just
 * close a connection under it before one that did, config order after
 * that.
 */
static struct upstream *
pick_upstream(const struct uquery *uq)
{
	struct upstream	*u, *best = NULL;
	int		 score, best_score = 8;

	TAILQ_FOREACH(u, &upstreams, entry) {
		if ((score = upstream_tier(u)) == -1)
			continue;
		score = 4 * score + 2 * tried_on(uq, u) +
		    (u == uq->closed_on);
		if (score < best_score) {
			best = u;
			best_score = score;
		}
	}
	return best;
}

/*
 * Start a try of uq on u: on a ready connection, or waiting for one;
 * beyond SPREAD_AT queries on that connection, another one is opened
 * (one handshake at a time).  Returns -1 when the query could not be
 * tried and has been failed (and freed).
 */
static int
try_start(struct uquery *uq, struct upstream *u)
{
	struct utry	*t;
	struct conn	*c, *closed;
	int		 i, err;

	for (i = 0; i < MAX_TRIES && uq->tries[i].up != NULL; i++)
		;
	if (i == MAX_TRIES)
		fatalx("%s: no free try", __func__);
	t = &uq->tries[i];
	memset(t, 0, sizeof(*t));
	t->uq = uq;
	t->up = u;
	t->start = mono_us();
	t->rto = uq->probe == P_UPSTREAM ? PROBE_MS : upstream_rto(u);
	uq->ntries++;
	uq->last = u;
	if (uq->ntries > 1)
		u->st.retries++;
	c = pick_conn(u, uq, &closed);
	if (c != NULL && (c->ninflight < SPREAD_AT || closed == NULL)) {
		conn_send(c, t);
		query_arm(uq);
		return 0;
	}
	if (c != NULL) {
		conn_send(c, t);
		query_arm(uq);
		(void)conn_open(closed);	/* for the next ones */
		return 0;
	}
	TAILQ_INSERT_TAIL(&u->waiting, t, wentry);
	query_arm(uq);
	if (closed == NULL || conn_open(closed) == 0)
		return 0;
	/* out of descriptors, say: wait if a connection of u may come */
	err = errno;
	for (i = 0; i < u->nconns; i++)
		if (u->conns[i].state != C_CLOSED)
			return 0;
	try_end(t);
	uq->ntries--;
	if (live_tries(uq) > 0)
		return 0;
	query_fail(uq, EDE_OTHER, err == EMFILE || err == ENFILE ?
	    "out of descriptors for upstream connections" :
	    "cannot open an upstream connection");
	return -1;
}

/* A query's first try, or its next one after all others ended. */
int
query_dispatch(struct uquery *uq)
{
	struct upstream	*u;

	if (uq->ntries >= MAX_TRIES) {
		query_fail(uq, EDE_NO_REACHABLE, "no answer from the "
		    "upstreams in time");
		return -1;
	}
	if ((u = pick_upstream(uq)) == NULL) {
		query_fail_last(uq);
		return -1;
	}
	return try_start(uq, u);
}

/*
 * A try ran out of its time: ask another upstream beside it, the first
 * answer wins.  The same upstream again only on another connection, and
 * only if the first try's connection has gone quiet: a resolver slow to
 * answer one question is not asked it twice, and a try waiting for a
 * connection has no twin waiting beside it.
 */
static int
query_hedge(struct uquery *uq)
{
	struct upstream	*u;
	int		 i;

	if (uq->probe != P_NONE || uq->ntries >= MAX_TRIES ||
	    (u = pick_upstream(uq)) == NULL)
		return 0;
	for (i = 0; i < MAX_TRIES; i++)
		if (uq->tries[i].up == u && (uq->tries[i].conn == NULL ||
		    !uq->tries[i].conn->suspect))
			return 0;
	u->st.hedged++;
	return try_start(uq, u);
}

static void
try_timedout(struct utry *t)
{
	struct upstream	*u = t->up;

	t->timedout = 1;
	if (t->conn == NULL)
		return;		/* still waiting for a connection */
	u->st.timeouts++;
	rtt_timedout(&u->rtt);
	/*
	 * Nothing at all heard on its connection since it left, or for as
	 * long as a try waits?  A connection that answered others just
	 * before it went silent is suspect too.
	 */
	if (t->conn->heard < t->sent)
		conn_suspect(t->conn, t->sent);
	else if (mono_us() - t->conn->heard >= 1000LL * t->rto)
		conn_suspect(t->conn, t->conn->heard);
}

/* A query's deadline passed: it has failed. */
static void
query_expired(struct uquery *uq)
{
	struct upstream	*u = uq->last;

	switch (uq->probe) {
	case P_UPSTREAM:
		if (u != NULL && u->probe == uq) {
			u->probe = NULL;
			upstream_failed(u, F_TIMEOUT,
			    "no answer to a health query");
		}
		query_free(uq);
		break;
	case P_CONN:
		query_free(uq);
		break;
	default:
		if (u != NULL) {
			u->last_fail = F_TIMEOUT;
			if (u->last_error[0] == '\0')
				strlcpy(u->last_error, "no answer",
				    sizeof(u->last_error));
		}
		query_fail(uq, EDE_NO_REACHABLE,
		    "no answer from the upstreams in time");
	}
}

static int64_t
query_deadline(const struct uquery *uq)
{
	return uq->born + 1000LL * (uq->probe == P_NONE ? QUERY_DEADLINE_MS :
	    CONNECT_MS + PROBE_MS);
}

void
query_arm(struct uquery *uq)
{
	struct utry	*t = newest_try(uq);
	int64_t		 due = query_deadline(uq);

	if (t != NULL && !t->timedout && t->start + 1000LL * t->rto < due)
		due = t->start + 1000LL * t->rto;
	timer_at(&uq->tmo, due);
}

static void
query_timer(int fd, short event, void *arg)
{
	struct uquery	*uq = arg;
	struct utry	*t;
	int64_t		 now = mono_us();

	(void)fd;
	(void)event;
	if (now >= query_deadline(uq)) {
		query_expired(uq);
		flush_conns();
		return;
	}
	t = newest_try(uq);
	if (t != NULL && !t->timedout && now >= t->start + 1000LL * t->rto) {
		log_debug("upstream %s: query %u unanswered in %d ms",
		    t->up->label, uq->qid, t->rto);
		if (uq->probe == P_UPSTREAM) {
			query_expired(uq);
			flush_conns();
			return;
		}
		try_timedout(t);
		if (query_hedge(uq) == -1) {
			flush_conns();
			return;
		}
	}
	query_arm(uq);
	flush_conns();
}

/* ------------------------------------------------------------------ */
/* An upstream's state */

static void
upstream_backoff(struct upstream *u)
{
	int64_t	ms = rtt_backoff(u->failures, arc4random_uniform);

	u->down_until = mono_us() + ms * 1000;
	u->state = U_DOWN;
	timer_at(&u->probe_ev, u->down_until);
	log_warnx("upstream %s: %s; backing off %lld ms", u->label,
	    u->last_error, (long long)ms);
}

static void
upstream_note_failure(struct upstream *u, enum fail_kind kind,
    const char *why)
{
	u->failures++;
	u->last_fail = kind;
	strlcpy(u->last_error, why, sizeof(u->last_error));
	u->st.failures++;
	if (kind == F_AUTH) {
		u->st.auth_failures++;
		audit("upstream-auth-failure", "upstream", u->label,
		    "reason", why, NULL);
	}
}

/* u failed: no client query goes there until a health query answers. */
static void
upstream_failed(struct upstream *u, enum fail_kind kind, const char *why)
{
	upstream_note_failure(u, kind, why);
	if (!u->announced_down) {
		u->announced_down = 1;
		audit("upstream-down", "upstream", u->label, "reason", why,
		    NULL);
	}
	if (u->probe != NULL)
		query_free(u->probe);
	upstream_backoff(u);
}

/*
 * A connection that had been answering went quiet: the upstream is
 * asked at once, on a new connection, whether it still answers; clients
 * go elsewhere meanwhile if they can.
 */
static void
upstream_doubt(struct upstream *u, const char *why)
{
	upstream_note_failure(u, F_TIMEOUT, why);
	log_warnx("upstream %s: %s; checking it", u->label, why);
	u->state = U_PROBING;
	probe_start(u);
}

void
upstream_up(struct upstream *u)
{
	if (u->state != U_UP)
		log_info("upstream %s: answering again", u->label);
	u->state = U_UP;
	u->failures = 0;
	u->rtt.shift = 0;
	evtimer_del(&u->probe_ev);
	if (u->announced_down) {
		u->announced_down = 0;
		audit("upstream-up", "upstream", u->label, NULL);
	}
}

/* Count a close as the upstream's failure, as kind and state say. */
int
conn_close_counts(struct upstream *u, enum fail_kind kind, const char *why,
    int had_state, int answered, int inflight, int64_t quiet_since)
{
	switch (kind) {
	case F_CONFIG:
	case F_LOCAL:
		return 0;
	case F_CLOSED:
		/*
		 * A server closing connections before any answer, again and
		 * again, and answering nothing else meanwhile.  (A server
		 * that answers one query and closes may reset a connection
		 * with queries unread, and its answer may be lost with it.)
		 */
		if (answered || inflight == 0 || (u->last_answer != 0 &&
		    mono_us() - u->last_answer < QUIET_MS * 1000LL) ||
		    ++u->quiet_closes < MAX_QUIET_CLOSES)
			return 0;
		u->quiet_closes = 0;
		upstream_failed(u, F_NETWORK, "closed by the server before "
		    "answering");
		return 1;
	case F_TIMEOUT:
		if (had_state == C_READY) {
			u->st.dead++;
			if (u->last_answer >= quiet_since) {
				/* its other connections answer meanwhile */
				log_warnx("upstream %s: %s; closed it", u->label,
				    why);
				return 1;
			}
			if (answered && u->state == U_UP) {
				upstream_doubt(u, why);
				return 1;
			}
		}
		/* FALLTHROUGH */
	default:
		upstream_failed(u, kind, why);
		return 1;
	}
}

/* Is u in use lately, with no connection open but except? */
int
keep_warm(const struct upstream *u, const struct conn *except)
{
	int	i;

	if (terminating || u->removed || u->state != U_UP ||
	    u->last_client == 0 ||
	    mono_us() - u->last_client > WARM_MS * 1000LL)
		return 0;
	for (i = 0; i < u->nconns; i++)
		if (&u->conns[i] != except && u->conns[i].state != C_CLOSED)
			return 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Health queries */

/* A health query answered: whatever the rcode, the upstream speaks. */
void
probe_answered(struct uquery *uq)
{
	struct upstream	*u = uq->last;

	if (uq->probe == P_UPSTREAM && u != NULL && u->probe == uq)
		upstream_up(u);
	query_free(uq);
}

/* Ask a quiet connection, or one kept warm, something it must answer. */
void
probe_conn(struct conn *c)
{
	struct uquery	*uq;
	struct utry	*t;

	if (c->probing || c->ninflight >= SLOTS || c->state != C_READY ||
	    (uq = query_new(0, probe_query, sizeof(probe_query), P_CONN)) ==
	    NULL)
		return;
	c->probing = 1;
	c->up->st.probes++;
	t = &uq->tries[0];
	t->uq = uq;
	t->up = c->up;
	t->start = mono_us();
	t->rto = upstream_rto(c->up);
	uq->ntries = 1;
	uq->last = c->up;
	conn_send(c, t);
	query_arm(uq);
}

/* The back-off is over, or the upstream is in doubt: is it back? */
static void
probe_start(struct upstream *u)
{
	struct uquery	*uq;

	if (u->probe != NULL || u->removed)
		return;
	u->state = U_PROBING;
	if ((uq = query_new(0, probe_query, sizeof(probe_query),
	    P_UPSTREAM)) == NULL)
		return;
	u->probe = uq;
	u->st.probes++;
	log_debug("upstream %s: health query", u->label);
	(void)try_start(uq, u);
}

static void
probe_upstream(int fd, short event, void *arg)
{
	(void)fd;
	(void)event;
	probe_start(arg);
	flush_conns();
}

/*
 * The host's network changed (a link, an address, a route): connections
 * may be dead without knowing it, and back-offs are out of date.  Start
 * afresh; queries in flight go out again on new connections.
 */
static void
network_changed(void)
{
	struct upstream	*u;
	int		 i;

	log_info("network changed: reconnecting to the upstreams");
	TAILQ_FOREACH(u, &upstreams, entry) {
		if (u->probe != NULL)
			query_free(u->probe);
		upstream_up(u);
		u->quiet_closes = 0;
		for (i = 0; i < u->ninit; i++)
			if (u->conns[i].state != C_CLOSED)
				conn_close(&u->conns[i], F_CONFIG,
				    "network changed");
	}
	flush_conns();
}

/* The listener is gone: its queries are dropped, our probes go on. */
static void
listener_lost(void)
{
	struct uquery	*uq, *next;

	if (terminating)
		exit(0);	/* the listener has drained: done */
	for (uq = TAILQ_FIRST(&queries); uq != NULL; uq = next) {
		next = TAILQ_NEXT(uq, entry);
		if (uq->probe == P_NONE)
			query_free(uq);
	}
}

static const char *
upstream_state(const struct upstream *u)
{
	switch (u->state) {
	case U_DOWN:
		return "down";
	case U_PROBING:
		return "probing";
	default:
		return u->nsuspect > 0 ? "suspect" : "up";
	}
}

static void
send_status(uint32_t id)
{
	struct tap_counts	 tc;
	struct upstream		*u;
	int			 i;

	TAILQ_FOREACH(u, &upstreams, entry) {
		strlcpy(u->st.label, u->label, sizeof(u->st.label));
		strlcpy(u->st.last_error, u->last_error,
		    sizeof(u->st.last_error));
		strlcpy(u->st.state, upstream_state(u), sizeof(u->st.state));
		u->st.up = u->state != U_DOWN;
		u->st.srtt_ms = (int)(u->rtt.srtt / 1000);
		u->st.rttvar_ms = (int)(u->rtt.rttvar / 1000);
		u->st.rto_ms = upstream_rto(u);
		u->st.conns = 0;
		u->st.inflight = 0;
		for (i = 0; i < u->nconns; i++) {
			if (u->conns[i].state == C_READY)
				u->st.conns++;
			u->st.inflight += u->conns[i].ninflight;
		}
		if (imsg_compose(&listener.ibuf, IMSG_CTL_UPSTREAM, id, -1,
		    &u->st, sizeof(u->st)) == -1)
			log_warn("imsg_compose");
	}
	tap_stats(&tc);
	if (imsg_compose(&listener.ibuf, IMSG_CTL_END, id, -1, &tc,
	    sizeof(tc)) == -1)
		log_warn("imsg_compose");
	chan_update(&listener);
}

/*
 * SIGTERM: keep answering what the listener still waits for while it
 * drains; exit once it has gone (or the parent has).
 */
static void
upstream_sigterm(int sig, short event, void *arg)
{
	(void)sig;
	(void)event;
	(void)arg;
	terminating = 1;
	if (!listener_up)
		exit(0);
}
