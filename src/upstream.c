/*
 * The upstream process: DNS over TLS (RFC 7858) to the configured
 * resolvers.  Persistent, pipelined connections; DNS IDs rewritten per
 * connection; answers matched on ID and question; failover with backoff.
 * It never sees a client address, and has no cleartext path: a query
 * leaves only through an authenticated TLS connection.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tls.h>
#include <unistd.h>

#include <resolv.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "audit.h"
#include "chan.h"
#include "dns.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"
#include "sandbox.h"

#define SLOTS			256	/* in-flight queries per connection */
#define SPREAD_AT		16	/* open another connection beyond */
#define CONNECT_MS		3000	/* TCP connect and TLS handshake */
#define IDLE_MS			30000	/* close an idle connection */
#define MAX_TRIES		3
#define MAX_REQUEUES		8
#define BACKOFF_MAX_MS		60000
#define MAX_QUERIES		65536
#define CA_MAX			(8 * 1024 * 1024)

enum conn_state { C_CLOSED, C_CONNECTING, C_HANDSHAKE, C_READY };
enum fail_kind { F_NETWORK, F_AUTH, F_TIMEOUT, F_CONFIG };

struct upstream;
struct conn;

struct uquery {
	TAILQ_ENTRY(uquery)	 entry;	/* waiting, or sent (in time order) */
	uint32_t		 qid;
	struct conn		*conn;	/* NULL while waiting */
	uint16_t		 id;	/* on conn */
	int			 tries;
	int			 requeues;	/* resent, the server closed */
	struct upstream		*last;	/* tried last */
	struct timespec		 sent;
	struct dns_msg		 qm;
	size_t			 qlen;
	uint8_t			 q[];
};

struct conn {
	struct upstream		*up;
	enum conn_state		 state;
	int			 fd;
	struct tls		*tls;
	struct event		 ev;
	short			 evmask;
	struct event		 tmo;
	struct uquery		*slots[SLOTS];
	uint8_t			 gen[SLOTS];
	int			 ninflight;
	int			 next_slot;
	uint64_t		 answered;	/* since it opened */
	uint8_t			*wbuf;
	size_t			 wlen;
	size_t			 wcap;
	size_t			 rlen;
	uint8_t			 rbuf[2 + DNS_MAX_MSG];
};

struct upstream {
	TAILQ_ENTRY(upstream)	 entry;
	struct upstream_conf	 uc;
	char			 label[300];
	struct conn		 conns[MAX_TLS_CONNS];
	int			 nconns;
	TAILQ_HEAD(, uquery)	 waiting;
	int			 failures;
	struct timespec		 down_until;
	enum fail_kind		 last_fail;
	char			 last_error[96];
	struct upstream_status	 st;	/* counters for status and metrics */
	struct tls_config	*tlscfg;	/* its own, for its session store */
	int			 sessfd;	/* the TLS session store, or -1 */
	int			 announced_down;
	int			 removed;	/* by a reload, going away */
};

static void	 parent_dispatch(int, short, void *);
static void	 listener_dispatch(int, short, void *);
static void	 apply_config(struct dotproxyd_conf *);
static void	 query_dispatch(struct uquery *);
static void	 query_fail(struct uquery *, int, const char *);
static void	 conn_open(struct conn *);
static void	 conn_close(struct conn *, enum fail_kind, const char *);
static void	 conn_event(int, short, void *);
static void	 conn_timeout(int, short, void *);
static void	 conn_update(struct conn *);
static void	 conn_send(struct conn *, struct uquery *);
static int	 take_startup_fd(struct imsg *);
static void	 retry_timer(int, short, void *);
static void	 retry_update(void);
static void	 listener_lost(void);
static void	 flush_conns(void);
static void	 upstream_sigterm(int, short, void *);
static void	 send_status(uint32_t);

static struct dotproxyd_conf	*conf, *pending_conf;
static struct chan		 parent, listener;
static TAILQ_HEAD(, upstream)	 upstreams = TAILQ_HEAD_INITIALIZER(upstreams);
static TAILQ_HEAD(, uquery)	 sentq = TAILQ_HEAD_INITIALIZER(sentq);
static struct event		 rtimer;
static int			 listener_fd = -1, ca_fd = -1, nqueries;
static int			 listener_up, terminating;
static struct event		 ev_sigterm;
static uint8_t			*ca_mem;
static size_t			 ca_len;

static void
now(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static int64_t
ms_since(const struct timespec *then)
{
	struct timespec	ts;

	now(&ts);
	return (ts.tv_sec - then->tv_sec) * 1000 +
	    (ts.tv_nsec - then->tv_nsec) / 1000000;
}

static void
chan_kick_parent(void)
{
	chan_update(&parent);
}

static void
read_ca(void)
{
	ssize_t	n;
	size_t	cap = 256 * 1024;

	if ((ca_mem = malloc(cap)) == NULL)
		fatal("malloc");
	for (;;) {
		if (ca_len == cap) {
			uint8_t *p;

			if (cap >= CA_MAX)
				fatalx("tls ca: larger than %d bytes", CA_MAX);
			if ((p = realloc(ca_mem, cap * 2)) == NULL)
				fatal("realloc");
			ca_mem = p;
			cap *= 2;
		}
		n = read(ca_fd, ca_mem + ca_len, cap - ca_len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			fatal("tls ca: read");
		}
		if (n == 0)
			break;
		ca_len += (size_t)n;
	}
	close(ca_fd);
	ca_fd = -1;
}

__attribute__((__noreturn__)) void
upstream_main(int debug, int verbose)
{
	struct sigaction	sa;

	(void)debug;
	log_procinit("upstream");
	log_setverbose(verbose);
	setproctitle("upstream");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigaction(SIGXFSZ, &sa, NULL);	/* a session too large: EFBIG */
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	if (tls_init() == -1)
		fatalx("tls_init");
	if (imsgbuf_init(&parent.ibuf, PARENT_FD) == -1)
		fatal("imsgbuf_init");
	conf = proc_startup(&parent.ibuf, take_startup_fd);
	if (listener_fd == -1 || ca_fd == -1)
		fatalx("start-up is missing the listener channel or the CA");
	if (imsgbuf_init(&listener.ibuf, listener_fd) == -1)
		fatal("imsgbuf_init");
	listener_up = 1;
	read_ca();

	event_init();	/* its epoll descriptor is made before the filter */
	signal_set(&ev_sigterm, SIGTERM, upstream_sigterm, NULL);
	signal_add(&ev_sigterm, NULL);
	/* from here on, even a fatal confinement error, through the parent */
	log_to_parent(&parent.ibuf, chan_kick_parent);
	audit_to_parent(&parent.ibuf, chan_kick_parent);
	sandbox_drop(PROC_UPSTREAM, conf);

	parent.dispatch = parent_dispatch;
	parent.peer = "parent";
	parent.vital = 1;
	listener.dispatch = listener_dispatch;
	listener.peer = "listener process";
	chan_update(&parent);
	chan_update(&listener);
	evtimer_set(&rtimer, retry_timer, NULL);
	apply_config(conf);
	if (imsg_compose(&parent.ibuf, IMSG_STARTED, 0, -1, NULL, 0) == -1)
		fatal("imsg_compose");
	chan_update(&parent);
	parent_dispatch(parent.ibuf.fd, 0, &parent);

	event_dispatch();
	exit(0);
}

static int
take_startup_fd(struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_CA_FD:
		if (imsg->fd == -1 || imsg->len != 0 || ca_fd != -1)
			return -1;
		ca_fd = imsg->fd;
		imsg->fd = -1;
		return 0;
	case IMSG_PEER_FD:
		if (imsg->fd == -1 || imsg->len != 0 || listener_fd != -1)
			return -1;
		listener_fd = imsg->fd;
		imsg->fd = -1;
		return 0;
	}
	return -1;
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
	if ((u->tlscfg = tls_config_new()) == NULL)
		fatalx("tls_config_new");
	if (tls_config_set_ca_mem(u->tlscfg, ca_mem, ca_len) == -1)
		fatalx("tls ca: %s", tls_config_error(u->tlscfg));
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
static void
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
static int
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

	for (i = 0; i < MAX_TLS_CONNS; i++)
		free(u->conns[i].wbuf);
	tls_config_free(u->tlscfg);
	if (u->sessfd != -1)
		close(u->sessfd);
	free(u);
}

/*
 * Take a new config: unchanged upstreams keep their connections, the
 * others are closed (their queries go elsewhere) and new ones start idle.
 */
static void
apply_config(struct dotproxyd_conf *nc)
{
	struct upstream_conf	*uc;
	struct upstream		*u, *next;
	struct uquery		*uq;
	TAILQ_HEAD(, upstream)	 old;
	char			 addr[64];
	int			 i;

	TAILQ_INIT(&old);
	TAILQ_CONCAT(&old, &upstreams, entry);
	TAILQ_FOREACH(uc, &nc->upstreams, entry) {
		TAILQ_FOREACH(u, &old, entry)
			if (same_upstream(&u->uc, uc))
				break;
		if (u != NULL)
			TAILQ_REMOVE(&old, u, entry);
		else {
			if ((u = calloc(1, sizeof(*u))) == NULL)
				fatal("calloc");
			u->uc = *uc;
			TAILQ_INIT(&u->waiting);
			snprintf(u->label, sizeof(u->label), "%s (%s)",
			    sockaddr_text(&uc->ss, addr, sizeof(addr)),
			    uc->name);
			for (i = 0; i < MAX_TLS_CONNS; i++) {
				u->conns[i].up = u;
				u->conns[i].fd = -1;
			}
			upstream_tls_init(u);
		}
		u->nconns = nc->tls_connections;
		TAILQ_INSERT_TAIL(&upstreams, u, entry);
	}
	TAILQ_FOREACH(u, &old, entry)
		u->removed = 1;

	/* the new list complete, what it no longer has can go */
	TAILQ_FOREACH(u, &upstreams, entry)
		for (i = u->nconns; i < MAX_TLS_CONNS; i++)
			if (u->conns[i].state != C_CLOSED)
				conn_close(&u->conns[i], F_CONFIG,
				    "fewer connections configured");
	for (u = TAILQ_FIRST(&old); u != NULL; u = next) {
		next = TAILQ_NEXT(u, entry);
		for (i = 0; i < MAX_TLS_CONNS; i++)
			if (u->conns[i].state != C_CLOSED)
				conn_close(&u->conns[i], F_CONFIG,
				    "upstream removed from the config");
		while ((uq = TAILQ_FIRST(&u->waiting)) != NULL) {
			TAILQ_REMOVE(&u->waiting, uq, entry);
			uq->tries--;	/* waiting was no try */
			uq->last = NULL;
			query_dispatch(uq);
		}
		upstream_free(u);
	}
	flush_conns();
}

static void
parent_dispatch(int fd, short event, void *arg)
{
	struct chan	*c = arg;
	struct imsg	 imsg;
	ssize_t		 n;
	int		 r;

	(void)fd;
	chan_io(c, event);	/* the parent gone, we exit */
	while ((n = imsg_get(&c->ibuf, &imsg)) != 0) {
		if (n == -1)
			fatalx("malformed message from the parent");
		r = proc_parent_message(&imsg, conf, &pending_conf, &listener,
		    &listener_up, listener_lost);
		if (r == 2) {
			apply_config(pending_conf);
			config_free(conf);
			conf = pending_conf;
			pending_conf = NULL;
			log_setverbose(conf->verbose);
			log_info("new configuration applied");
		}
		if (r == 0)
			fatalx("unexpected message %u from the parent",
			    imsg.hdr.type);
		imsg_free(&imsg);
	}
	chan_update(c);
}

static void
listener_dispatch(int fd, short event, void *arg)
{
	struct chan	*c = arg;
	struct imsg	 imsg;
	struct uquery	*uq;
	ssize_t		 n;

	(void)fd;
	if (!chan_io(c, event)) {
		listener_lost();
		return;
	}
	while ((n = imsg_get(&c->ibuf, &imsg)) != 0) {
		if (n == -1)
			fatalx("malformed message from the listener");
		if (imsg.hdr.type == IMSG_CTL_STATUS && imsg.len == 0 &&
		    imsg.fd == -1) {
			send_status(imsg.hdr.peerid);
			imsg_free(&imsg);
			continue;
		}
		if (imsg.hdr.type != IMSG_QUERY || imsg.fd != -1)
			fatalx("unexpected message %u from the listener",
			    imsg.hdr.type);
		if (imsg.len < DNS_HDR_LEN || imsg.len > DNS_MAX_MSG)
			fatalx("bad query length from the listener");
		if ((uq = calloc(1, sizeof(*uq) + imsg.len)) == NULL)
			fatal("calloc");
		memcpy(uq->q, imsg.data, imsg.len);
		uq->qlen = imsg.len;
		uq->qid = imsg.hdr.peerid;
		nqueries++;
		if (dns_parse(uq->q, uq->qlen, &uq->qm) == -1 ||
		    (uq->qm.flags & DNS_F_QR))
			query_fail(uq, EDE_OTHER, "malformed query");
		else if (nqueries > MAX_QUERIES)
			query_fail(uq, EDE_OTHER, "too many queries");
		else
			query_dispatch(uq);
		imsg_free(&imsg);
	}
	flush_conns();
	chan_update(c);
}

static void
query_done(struct uquery *uq)
{
	if (uq->conn != NULL) {
		uq->conn->slots[uq->id & (SLOTS - 1)] = NULL;
		uq->conn->ninflight--;
		TAILQ_REMOVE(&sentq, uq, entry);
		uq->conn = NULL;
	}
	nqueries--;
	free(uq);
}

static void
query_fail(struct uquery *uq, int ede, const char *text)
{
	struct query_fail	qf;

	memset(&qf, 0, sizeof(qf));
	qf.ede = ede;
	strlcpy(qf.text, text, sizeof(qf.text));
	if (imsg_compose(&listener.ibuf, IMSG_FAIL, uq->qid, -1, &qf,
	    sizeof(qf)) == -1)
		log_warn("imsg_compose");
	chan_update(&listener);
	query_done(uq);
}

static int
is_down(const struct upstream *u)
{
	struct timespec	ts;

	if (u->removed)
		return 1;
	if (u->failures == 0)
		return 0;
	now(&ts);
	return ts.tv_sec < u->down_until.tv_sec ||
	    (ts.tv_sec == u->down_until.tv_sec &&
	    ts.tv_nsec < u->down_until.tv_nsec);
}

/* The failure answer for a query nobody could take. */
static void
query_fail_last(struct uquery *uq)
{
	struct upstream	*u = uq->last;
	char		 text[256];

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
		query_fail(uq, EDE_NO_REACHABLE, "upstream timed out");
		break;
	default:
		snprintf(text, sizeof(text), "upstream network error: %s",
		    u->last_error);
		query_fail(uq, EDE_NETWORK_ERROR, text);
	}
}

/*
 * Send a query to the first usable upstream in config order, other than
 * the one it last failed on, on its least loaded ready connection; or
 * queue it for a connection being opened.
 */
static void
query_dispatch(struct uquery *uq)
{
	struct upstream	*u, *pick = NULL;
	struct conn	*c, *best = NULL, *closed = NULL;
	int		 i, opening = 0;

	if (uq->tries >= MAX_TRIES) {
		query_fail_last(uq);
		return;
	}
	/* another upstream than the one that just failed it, if any is up */
	TAILQ_FOREACH(u, &upstreams, entry)
		if (!is_down(u) && u != uq->last) {
			pick = u;
			break;
		}
	if (pick == NULL && uq->last != NULL && !is_down(uq->last))
		pick = uq->last;
	if (pick == NULL) {
		/* everything is down: try the one that failed longest ago? */
		if (uq->last == NULL)
			uq->last = TAILQ_FIRST(&upstreams);
		query_fail_last(uq);
		return;
	}
	for (i = 0; i < pick->nconns; i++) {
		c = &pick->conns[i];
		if (c->state == C_READY && c->ninflight < SLOTS &&
		    (best == NULL || c->ninflight < best->ninflight))
			best = c;
		else if (c->state == C_CLOSED && closed == NULL)
			closed = c;
		else if (c->state == C_CONNECTING || c->state == C_HANDSHAKE)
			opening = 1;
	}
	if (best != NULL && (best->ninflight < SPREAD_AT || closed == NULL ||
	    opening)) {
		conn_send(best, uq);
		return;
	}
	if (closed != NULL && !opening) {	/* one handshake at a time */
		conn_open(closed);
		if (closed->state == C_CLOSED && best == NULL) {
			/* it failed at once and pick is down now: elsewhere */
			query_dispatch(uq);
			return;
		}
	}
	if (best != NULL) {
		conn_send(best, uq);
		return;
	}
	uq->tries++;
	uq->last = pick;
	TAILQ_INSERT_TAIL(&pick->waiting, uq, entry);
}

static void
conn_send(struct conn *c, struct uquery *uq)
{
	uint8_t		 buf[2 + DNS_MAX_MSG];
	size_t		 len;
	int		 slot;

	for (slot = c->next_slot; c->slots[slot] != NULL;
	    slot = (slot + 1) % SLOTS)
		;
	c->next_slot = (slot + 1) % SLOTS;
	c->gen[slot]++;
	uq->id = (uint16_t)(c->gen[slot] << 8 | slot);
	len = dns_make_query(buf + 2, sizeof(buf) - 2, uq->q, &uq->qm, uq->id,
	    DNS_PAD_BLOCK);
	if (len == 0) {
		query_fail(uq, EDE_OTHER, "query too large");
		return;
	}
	dns_put16(buf, (uint16_t)len);
	len += 2;
	if (c->wlen + len > c->wcap) {
		size_t	 ncap = c->wcap ? c->wcap : 4096;
		uint8_t	*p;

		while (ncap < c->wlen + len)
			ncap *= 2;
		if ((p = realloc(c->wbuf, ncap)) == NULL) {
			query_fail(uq, EDE_OTHER, "out of memory");
			return;
		}
		c->wbuf = p;
		c->wcap = ncap;
	}
	memcpy(c->wbuf + c->wlen, buf, len);
	c->wlen += len;
	c->slots[slot] = uq;
	c->ninflight++;
	uq->conn = c;
	uq->tries++;
	uq->last = c->up;
	c->up->st.queries++;
	if (uq->tries > 1)
		c->up->st.retries++;
	now(&uq->sent);
	TAILQ_INSERT_TAIL(&sentq, uq, entry);
	if (TAILQ_FIRST(&sentq) == uq)
		retry_update();
	/* written by flush_conns(), with whatever else this turn queues */
}

/*
 * Write every connection's queued queries: all queries of one event
 * loop turn leave in as few TLS writes as possible, and a connection
 * waits for writability only when the socket is full.
 */
static void
flush_conns(void)
{
	static int	 busy;
	struct upstream	*u;
	struct uquery	*uq;
	struct conn	*c;
	ssize_t		 n;
	int		 i, pass, closed;

	if (busy)
		return;
	busy = 1;
	/*
	 * A connection closed in one pass may have queued on another: go
	 * again.  This ends: connections opened meanwhile are not ready.
	 */
	for (pass = 0, closed = 1; closed && pass < 64; pass++) {
		closed = 0;
		TAILQ_FOREACH(u, &upstreams, entry) {
			for (i = 0; i < u->nconns; i++) {
				c = &u->conns[i];
				if (c->state != C_READY)
					continue;
				/* queries that waited for a free slot */
				while (c->ninflight < SLOTS &&
				    (uq = TAILQ_FIRST(&u->waiting)) != NULL) {
					TAILQ_REMOVE(&u->waiting, uq, entry);
					uq->tries--;	/* waiting was no try */
					conn_send(c, uq);
				}
				if (c->wlen == 0)
					continue;
				n = tls_write(c->tls, c->wbuf, c->wlen);
				if (n == -1) {
					conn_close(c, F_NETWORK,
					    tls_error(c->tls) ?
					    tls_error(c->tls) : "write failed");
					closed = 1;
					continue;
				}
				if (n > 0) {
					memmove(c->wbuf, c->wbuf + n,
					    c->wlen - (size_t)n);
					c->wlen -= (size_t)n;
				}
				conn_update(c);
			}
		}
	}
	TAILQ_FOREACH(u, &upstreams, entry)
		for (i = 0; i < u->nconns; i++)
			if (u->conns[i].state == C_READY &&
			    u->conns[i].wlen > 0)
				conn_update(&u->conns[i]);
	busy = 0;
}

static void
set_timeout(struct conn *c, int ms)
{
	struct timeval	tv;

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(&c->tmo, &tv);
}

static void
conn_open(struct conn *c)
{
	struct upstream	*u = c->up;
	socklen_t	 len;
	int		 on = 1, utmo = 5000, i;
#ifdef TCP_KEEPIDLE
	int		 kidle = 15, kintvl = 5, kcnt = 3;
#endif

	len = u->uc.ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
	c->fd = socket(u->uc.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		for (i = 0; i < u->nconns; i++)
			if (u->conns[i].state == C_READY) {
				/* out of descriptors: the others go on */
				log_warn("socket");
				return;
			}
		conn_close(c, F_NETWORK, strerror(errno));
		return;
	}
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	(void)setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_USER_TIMEOUT
	/* a half-open connection fails in seconds, not minutes */
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &utmo,
	    sizeof(utmo));
#else
	(void)utmo;
#endif
#ifdef TCP_KEEPIDLE
	/* and an idle one is probed after 15 s (the user timeout ends it) */
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &kidle,
	    sizeof(kidle));
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &kintvl,
	    sizeof(kintvl));
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &kcnt, sizeof(kcnt));
#endif
	c->state = C_CONNECTING;
	c->rlen = 0;
	c->answered = 0;
	c->evmask = 0;
	evtimer_set(&c->tmo, conn_timeout, c);
	set_timeout(c, CONNECT_MS);
	if (connect(c->fd, (struct sockaddr *)&u->uc.ss, len) == -1 &&
	    errno != EINPROGRESS) {
		conn_close(c, F_NETWORK, strerror(errno));
		return;
	}
	log_debug("connecting to %s", u->label);
	conn_update(c);
}

static void
upstream_failed(struct upstream *u, enum fail_kind kind, const char *why)
{
	struct timespec	ts;
	int64_t		ms;

	u->failures++;
	u->last_fail = kind;
	strlcpy(u->last_error, why, sizeof(u->last_error));
	u->st.failures++;
	if (kind == F_AUTH) {
		u->st.auth_failures++;
		audit("upstream-auth-failure", "upstream", u->label,
		    "reason", why, NULL);
	}
	if (!u->announced_down) {
		u->announced_down = 1;
		audit("upstream-down", "upstream", u->label, "reason", why,
		    NULL);
	}
	ms = 500LL << (u->failures > 8 ? 8 : u->failures - 1);
	if (ms > BACKOFF_MAX_MS)
		ms = BACKOFF_MAX_MS;
	ms = ms / 2 + arc4random_uniform((uint32_t)ms / 2 + 1);
	now(&ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	u->down_until = ts;
	log_warnx("upstream %s: %s; backing off %lld ms", u->label, why,
	    (long long)ms);
}

/*
 * Close a connection; its queries, sent or waiting, go to another
 * connection or upstream, or fail if they have been tried enough.
 */
static void
conn_close(struct conn *c, enum fail_kind kind, const char *why)
{
	struct upstream	*u = c->up;
	struct uquery	*uq, *requeue[SLOTS];
	int		 i, n = 0, had_state = c->state;

	if (kind != F_CONFIG &&
	    (c->state != C_READY || kind == F_AUTH || kind == F_TIMEOUT))
		upstream_failed(u, kind, why);
	else
		log_debug("upstream %s: connection closed: %s", u->label, why);
	if (event_initialized(&c->ev))
		event_del(&c->ev);
	if (event_initialized(&c->tmo))
		evtimer_del(&c->tmo);
	if (c->tls != NULL) {
		if (had_state == C_READY)
			(void)tls_close(c->tls);
		tls_free(c->tls);
		c->tls = NULL;
	}
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	c->state = C_CLOSED;
	c->evmask = 0;
	c->wlen = 0;
	c->rlen = 0;
	for (i = 0; i < SLOTS; i++) {
		if ((uq = c->slots[i]) == NULL)
			continue;
		c->slots[i] = NULL;
		c->ninflight--;
		TAILQ_REMOVE(&sentq, uq, entry);
		uq->conn = NULL;
		/*
		 * A server may close a connection that has been answering
		 * with queries still on it (RFC 7766 6.2.3): those are sent
		 * again without counting a try, a few times at most.
		 */
		if (kind == F_CONFIG) {
			uq->tries--;	/* a reload moved it, no failure */
			uq->last = NULL;
		} else if (had_state == C_READY && c->answered > 0 &&
		    uq->requeues < MAX_REQUEUES) {
			uq->requeues++;
			uq->tries--;
		}
		requeue[n++] = uq;
	}
	for (i = 0; i < n; i++)
		query_dispatch(requeue[i]);
	/* waiting queries: elsewhere, unless another connection is coming */
	for (i = 0; i < u->nconns; i++)
		if (u->conns[i].state != C_CLOSED)
			return;
	while ((uq = TAILQ_FIRST(&u->waiting)) != NULL) {
		TAILQ_REMOVE(&u->waiting, uq, entry);
		if (kind == F_CONFIG) {
			uq->tries--;
			uq->last = NULL;
		}
		query_dispatch(uq);
	}
}

static void
conn_update(struct conn *c)
{
	short	mask;

	switch (c->state) {
	case C_CONNECTING:
		mask = EV_WRITE;
		break;
	case C_HANDSHAKE:
		mask = c->evmask ? c->evmask : EV_READ | EV_WRITE;
		break;
	case C_READY:
		mask = EV_READ | (c->wlen > 0 ? EV_WRITE : 0);
		break;
	default:
		return;
	}
	if (mask == c->evmask && event_pending(&c->ev, EV_READ | EV_WRITE,
	    NULL))
		return;
	if (event_initialized(&c->ev))
		event_del(&c->ev);
	c->evmask = mask;
	event_set(&c->ev, c->fd, mask | EV_PERSIST, conn_event, c);
	event_add(&c->ev, NULL);
}

static void
conn_timeout(int fd, short event, void *arg)
{
	struct conn	*c = arg;

	(void)fd;
	(void)event;
	if (c->state == C_READY) {
		if (c->ninflight == 0 && c->wlen == 0) {
			log_debug("upstream %s: closing idle connection",
			    c->up->label);
			conn_close(c, F_NETWORK, "idle");
			flush_conns();
		} else
			set_timeout(c, IDLE_MS);
		return;
	}
	conn_close(c, F_TIMEOUT, "connect or handshake timed out");
	flush_conns();
}

/* Check the server's public key against the pins, if there are any. */
static int
check_pins(struct conn *c, char *why, size_t whylen)
{
	struct upstream	*u = c->up;
	const uint8_t	*pem;
	size_t		 pemlen;
	BIO		*bio;
	X509		*x;
	unsigned char	*der = NULL, hash[EVP_MAX_MD_SIZE];
	unsigned int	 hlen;
	int		 derlen, i, ok = 0;
	char		 b64[64];

	if (u->uc.npins == 0)
		return 0;
	if ((pem = tls_peer_cert_chain_pem(c->tls, &pemlen)) == NULL ||
	    (bio = BIO_new_mem_buf(pem, (int)pemlen)) == NULL) {
		strlcpy(why, "no peer certificate", whylen);
		return -1;
	}
	x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (x == NULL) {
		strlcpy(why, "unreadable peer certificate", whylen);
		return -1;
	}
	derlen = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
	X509_free(x);
	if (derlen <= 0 || EVP_Digest(der, (size_t)derlen, hash, &hlen,
	    EVP_sha256(), NULL) != 1 || hlen != SPKI_HASH_LEN) {
		OPENSSL_free(der);
		strlcpy(why, "cannot hash the peer's public key", whylen);
		return -1;
	}
	OPENSSL_free(der);
	for (i = 0; i < u->uc.npins; i++)
		if (memcmp(hash, u->uc.pins[i], SPKI_HASH_LEN) == 0)
			ok = 1;
	if (ok)
		return 0;
	b64_ntop(hash, SPKI_HASH_LEN, b64, sizeof(b64));
	snprintf(why, whylen, "SPKI pin mismatch (server has %s)", b64);
	return -1;
}

static void
handshake(struct conn *c)
{
	struct upstream	*u = c->up;
	struct uquery	*uq;
	char		 why[96];
	int		 r;

	r = tls_handshake(c->tls);
	if (r == TLS_WANT_POLLIN || r == TLS_WANT_POLLOUT) {
		c->evmask = r == TLS_WANT_POLLIN ? EV_READ : EV_WRITE;
		if (event_initialized(&c->ev))
			event_del(&c->ev);
		event_set(&c->ev, c->fd, c->evmask | EV_PERSIST, conn_event,
		    c);
		event_add(&c->ev, NULL);
		return;
	}
	if (r == -1) {
		const char *e = tls_error(c->tls) ? tls_error(c->tls) :
		    "TLS handshake failed";

		/* a certificate or name that does not verify is not a reset */
		if (upstream_tls_store_failed(u, e))
			conn_close(c, F_CONFIG, e);
		else
			conn_close(c, strstr(e, "certificate") != NULL ||
			    strstr(e, "verif") != NULL ? F_AUTH : F_NETWORK, e);
		return;
	}
	if (check_pins(c, why, sizeof(why)) == -1) {
		upstream_tls_forget(u);
		conn_close(c, F_AUTH, why);
		return;
	}
	c->state = C_READY;
	u->failures = 0;
	u->st.handshakes++;
	if (tls_conn_session_resumed(c->tls))
		u->st.resumed++;
	strlcpy(u->st.tls_version, tls_conn_version(c->tls),
	    sizeof(u->st.tls_version));
	if (u->announced_down) {
		u->announced_down = 0;
		audit("upstream-up", "upstream", u->label, NULL);
	}
	log_info("upstream %s: connected, %s, %s%s", u->label,
	    tls_conn_version(c->tls), tls_conn_cipher(c->tls),
	    tls_conn_session_resumed(c->tls) ? ", resumed" : "");
	set_timeout(c, IDLE_MS);
	while ((uq = TAILQ_FIRST(&u->waiting)) != NULL &&
	    c->ninflight < SLOTS) {
		TAILQ_REMOVE(&u->waiting, uq, entry);
		uq->tries--;	/* waiting was not a try */
		conn_send(c, uq);
	}
	c->evmask = 0;
	conn_update(c);
}

/* One answer off the wire: match it, pass it on, or drop it. */
static void
conn_answer(struct conn *c, const uint8_t *a, size_t alen)
{
	struct uquery	*uq;
	struct dns_msg	 am;
	uint16_t	 id;

	if (alen < DNS_HDR_LEN)
		return;
	id = dns_get16(a);
	uq = c->slots[id & (SLOTS - 1)];
	if (uq == NULL || uq->id != id) {
		log_debug("upstream %s: dropped an unsolicited answer",
		    c->up->label);
		c->up->st.dropped++;
		return;
	}
	if (dns_parse(a, alen, &am) == -1 ||
	    !dns_answers_question(a, alen, &am, uq->q, uq->qlen, &uq->qm)) {
		log_warnx("upstream %s: dropped an answer that does not "
		    "match its question", c->up->label);
		c->up->st.dropped++;
		return;
	}
	c->up->st.answers++;
	c->answered++;
	c->up->st.latency_ms = (int)((c->up->st.latency_ms * 7 +
	    ms_since(&uq->sent)) / 8);
	if (imsg_compose(&listener.ibuf, IMSG_ANSWER, uq->qid, -1, a,
	    am.end) == -1) {
		log_warn("imsg_compose");
		return;
	}
	query_done(uq);
}

static void
conn_io(struct conn *c)
{
	ssize_t	 n;
	size_t	 off, mlen;
	int	 r;

	while (c->wlen > 0) {
		n = tls_write(c->tls, c->wbuf, c->wlen);
		if (n == TLS_WANT_POLLIN || n == TLS_WANT_POLLOUT)
			break;
		if (n == -1) {
			conn_close(c, F_NETWORK, tls_error(c->tls) ?
			    tls_error(c->tls) : "write failed");
			return;
		}
		memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
		c->wlen -= (size_t)n;
	}
	for (;;) {
		n = tls_read(c->tls, c->rbuf + c->rlen,
		    sizeof(c->rbuf) - c->rlen);
		if (n == TLS_WANT_POLLIN || n == TLS_WANT_POLLOUT)
			break;
		if (n == -1) {
			conn_close(c, F_NETWORK, tls_error(c->tls) ?
			    tls_error(c->tls) : "read failed");
			return;
		}
		if (n == 0) {
			conn_close(c, F_NETWORK, "closed by the server");
			return;
		}
		c->rlen += (size_t)n;
		off = 0;
		while ((r = dns_tcp_frame(c->rbuf + off, c->rlen - off,
		    &mlen)) != 0) {
			if (r == -1) {
				conn_close(c, F_NETWORK, "an empty message");
				return;
			}
			conn_answer(c, c->rbuf + off + 2, mlen);
			off += 2 + mlen;
		}
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	chan_update(&listener);
	set_timeout(c, IDLE_MS);
	conn_update(c);
}

static void
conn_event(int fd, short event, void *arg)
{
	struct conn	*c = arg;
	const char	*e;
	socklen_t	 len = sizeof(int);
	int		 err = 0;

	(void)event;
	switch (c->state) {
	case C_CONNECTING:
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
			err = errno;
		if (err != 0) {
			conn_close(c, F_NETWORK, strerror(err));
			break;
		}
		if ((c->tls = tls_client()) == NULL ||
		    tls_configure(c->tls, c->up->tlscfg) == -1 ||
		    tls_connect_socket(c->tls, c->fd, c->up->uc.name) == -1) {
			e = c->tls && tls_error(c->tls) ? tls_error(c->tls) :
			    "tls setup failed";
			conn_close(c, upstream_tls_store_failed(c->up, e) ?
			    F_CONFIG : F_NETWORK, e);
			break;
		}
		c->state = C_HANDSHAKE;
		handshake(c);
		break;
	case C_HANDSHAKE:
		handshake(c);
		break;
	case C_READY:
		conn_io(c);
		break;
	default:
		break;
	}
	chan_update(&listener);	/* answers read, even if it closed */
	flush_conns();
}

/* A query without an answer for a while is tried again elsewhere. */
static void
retry_update(void)
{
	struct uquery	*uq;
	struct timeval	 tv;
	int64_t		 ms;

	if ((uq = TAILQ_FIRST(&sentq)) == NULL) {
		evtimer_del(&rtimer);
		return;
	}
	ms = UPSTREAM_TRY_MS - ms_since(&uq->sent);
	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(&rtimer, &tv);
}

static void
retry_timer(int fd, short event, void *arg)
{
	struct uquery	*uq;
	struct conn	*c;

	(void)fd;
	(void)event;
	(void)arg;
	while ((uq = TAILQ_FIRST(&sentq)) != NULL &&
	    ms_since(&uq->sent) >= UPSTREAM_TRY_MS) {
		c = uq->conn;
		c->slots[uq->id & (SLOTS - 1)] = NULL;
		c->ninflight--;
		TAILQ_REMOVE(&sentq, uq, entry);
		uq->conn = NULL;
		log_debug("upstream %s: query %u unanswered, trying again",
		    c->up->label, uq->qid);
		if (uq->tries >= MAX_TRIES) {
			c->up->last_fail = F_TIMEOUT;
			query_fail(uq, EDE_NO_REACHABLE,
			    "no answer from the upstream in time");
		} else
			query_dispatch(uq);
	}
	flush_conns();
	retry_update();
}

/* The listener died: nobody waits for what is in flight any more. */
static void
listener_lost(void)
{
	struct upstream	*u;
	struct uquery	*uq;

	if (terminating)
		exit(0);	/* the listener has drained: done */
	log_warnx("lost the listener process");
	listener_up = 0;
	if (event_initialized(&listener.ev))
		event_del(&listener.ev);
	listener.events = 0;
	imsgbuf_clear(&listener.ibuf);
	close(listener.ibuf.fd);
	while ((uq = TAILQ_FIRST(&sentq)) != NULL)
		query_done(uq);
	TAILQ_FOREACH(u, &upstreams, entry)
		while ((uq = TAILQ_FIRST(&u->waiting)) != NULL) {
			TAILQ_REMOVE(&u->waiting, uq, entry);
			query_done(uq);
		}
}

static void
send_status(uint32_t id)
{
	struct upstream	*u;
	int		 i;

	TAILQ_FOREACH(u, &upstreams, entry) {
		strlcpy(u->st.label, u->label, sizeof(u->st.label));
		strlcpy(u->st.last_error, u->last_error,
		    sizeof(u->st.last_error));
		u->st.up = !is_down(u);
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
	if (imsg_compose(&listener.ibuf, IMSG_CTL_END, id, -1, NULL, 0) == -1)
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
