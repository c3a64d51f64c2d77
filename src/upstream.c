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
#include "proc.h"
#include "rtt.h"
#include "sandbox.h"

#define SLOTS			256	/* in-flight queries per connection */
#define SPREAD_AT		16	/* open another connection beyond */
#define CONNECT_MS		3000	/* TCP connect and TLS handshake */
#define MAX_TRIES		3	/* of one query, hedges included */
#define MAX_REQUEUES		64	/* sent again after a server's close */
#define QUERY_DEADLINE_MS	3500	/* the listener gives up at 4 s */
#define FRAME_MS		2000	/* to finish an answer once begun */
#define PROBE_MS		2000	/* a health query, handshake included */
#define WARM_MS			300000	/* keep a connection after use */
#define MAX_QUIET_CLOSES	3	/* closes before any answer: failure */
#define QUIET_MS		3000	/* ... with no answer for this long */
#define PIPELINE_MS		60000	/* a lower pipelining limit lasts */
#define MAX_QUERIES		65536
#define OBUF_MAX		(1024 * 1024)
#define IBUF_SIZE		16384
#define LOG_EVERY_MS		10000	/* resource errors, at most */
#define CA_MAX			(8 * 1024 * 1024)

enum conn_state { C_CLOSED, C_CONNECTING, C_HANDSHAKE, C_READY };
enum up_state { U_UP, U_PROBING, U_DOWN };
enum probe_kind { P_NONE, P_UPSTREAM, P_CONN };

/*
 * Why a connection closes.  F_NETWORK, F_AUTH and F_TIMEOUT are the
 * upstream's failures; F_CLOSED is the server closing a connection that
 * worked (RFC 7766 6.2.3: it may), F_CONFIG and F_LOCAL are ours.
 */
enum fail_kind { F_NETWORK, F_AUTH, F_TIMEOUT, F_CLOSED, F_CONFIG, F_LOCAL };

struct upstream;
struct conn;
struct uquery;

/* One try of a query: on a connection, or waiting for one. */
struct utry {
	TAILQ_ENTRY(utry)	 wentry;	/* in its upstream's waiting */
	struct uquery		*uq;
	struct upstream		*up;		/* NULL: not in use */
	struct conn		*conn;		/* NULL: waiting */
	uint16_t		 id;		/* on conn */
	int			 timedout;
	int			 rto;		/* ms from start */
	int64_t			 start;		/* µs: dispatched */
	int64_t			 sent;		/* µs: written */
};

struct uquery {
	TAILQ_ENTRY(uquery)	 entry;
	uint32_t		 qid;
	enum probe_kind		 probe;	/* a health query of our own */
	int			 ntries;	/* counted, hedges included */
	int			 requeues;	/* sent again, not counted */
	struct upstream		*last;	/* tried last, for the error */
	struct upstream		*closed_on;	/* lost a try to a close */
	int64_t			 born;
	struct event		 tmo;
	struct utry		 tries[MAX_TRIES];
	struct dns_msg		 qm;	/* of the query as sent */
	size_t			 qlen;	/* length prefix included */
	uint8_t			 q[];	/* the framed, padded query */
};

struct conn {
	struct upstream		*up;
	enum conn_state		 state;
	int			 fd;
	int			 io_errno;	/* of the last read or write */
	int			 broken;	/* a write failed: close it */
	int			 close_notify;	/* the server said goodbye */
	struct tls		*tls;
	struct event		 ev;
	short			 evmask;
	struct event		 tmo;
	struct utry		*slots[SLOTS];
	uint8_t			 gen[SLOTS];
	int32_t			 gone[SLOTS];	/* ID given up on, or -1 */
	int			 ninflight;
	int			 next_slot;
	int			 suspect;	/* a try timed out unheard */
	int			 probing;	/* a health query on it */
	uint64_t		 answered;	/* since it opened */
	int64_t			 opened;	/* µs */
	int64_t			 heard;		/* µs: last whole answer */
	int64_t			 used;		/* µs: last query written */
	int64_t			 suspect_since;
	int64_t			 quiet_since;	/* µs: heard nothing since */
	int64_t			 suspect_at_close;
	int64_t			 frame_start;	/* µs: a partial answer */
	uint8_t			*obuf;		/* TLS records to write */
	size_t			 ooff, olen, ocap;
	size_t			 ioff, ilen;
	uint8_t			 ibuf[IBUF_SIZE];
	size_t			 rlen;
	uint8_t			 rbuf[2 + DNS_MAX_MSG];
};

struct upstream {
	TAILQ_ENTRY(upstream)	 entry;
	struct upstream_conf	 uc;
	char			 label[300];
	struct conn		 conns[MAX_TLS_CONNS];
	int			 nconns;
	TAILQ_HEAD(, utry)	 waiting;
	enum up_state		 state;
	int			 nsuspect;	/* connections suspect now */
	int			 failures;	/* in a row */
	int			 quiet_closes;	/* in a row */
	int64_t			 down_until;
	struct event		 probe_ev;
	struct uquery		*probe;
	struct rtt		 rtt;
	int64_t			 last_client;	/* µs: answered a client */
	int64_t			 last_answer;	/* µs: answered anything */
	int			 pipeline_max;	/* on a connection; 0: SLOTS */
	int64_t			 pipeline_until;
	enum fail_kind		 last_fail;
	char			 last_error[96];
	struct upstream_status	 st;	/* counters for status and metrics */
	struct tls_config	*tlscfg;	/* its own, for its session store */
	int			 sessfd;	/* the TLS session store, or -1 */
	int			 announced_down;
	int			 removed;	/* by a reload, going away */
};

static void	 parent_message(struct chan *, struct imsg *);
static void	 listener_message(struct chan *, struct imsg *);
static void	 apply_config(const struct dotproxyd_conf *);
static void	 conf_applied(void);
static int	 query_dispatch(struct uquery *);
static void	 query_fail(struct uquery *, int, const char *);
static void	 query_free(struct uquery *);
static void	 query_arm(struct uquery *);
static void	 query_timer(int, short, void *);
static int	 conn_open(struct conn *);
static void	 conn_close(struct conn *, enum fail_kind, const char *);
static void	 conn_event(int, short, void *);
static void	 conn_io(struct conn *);
static void	 conn_timeout(int, short, void *);
static void	 conn_init(struct conn *, struct upstream *);
static void	 conn_update(struct conn *);
static void	 conn_arm(struct conn *);
static void	 conn_send(struct conn *, struct utry *);
static void	 probe_conn(struct conn *);
static void	 probe_upstream(int, short, void *);
static void	 probe_start(struct upstream *);
static int	 take_startup_fd(struct imsg *);
static void	 listener_lost(void);
static void	 flush_conns(void);
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
static struct proc		 proc = {
	.type = PROC_UPSTREAM,
	.parent = &parent,
	.peer = &listener,
	.peer_up = &listener_up,
	.conf = &conf,
	.take_fd = take_startup_fd,
	.conf_applied = conf_applied,
	.peer_lost = listener_lost,
	.parent_message = parent_message,
	.sigterm = upstream_sigterm,
};
static uint8_t			*ca_mem;
static size_t			 ca_len;

/* ". IN NS", recursion desired: what a health query asks */
static const uint8_t	 probe_query[] = {
	0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
	0, 0, DNS_T_NS, 0, DNS_C_IN
};

/* Arm a timer for a moment of mono_us(). */
static void
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

/* A resource error of ours (no descriptor, say): logged now and then. */
static void
log_resource(const char *what, int err)
{
	static int64_t	 last;
	static unsigned	 quiet;
	int64_t		 t = mono_us();

	if (last != 0 && t - last < LOG_EVERY_MS * 1000LL) {
		quiet++;
		return;
	}
	if (quiet > 0)
		log_warnx("%s: %s (and %u more since the last report)", what,
		    strerror(err), quiet);
	else
		log_warnx("%s: %s", what, strerror(err));
	last = t;
	quiet = 0;
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
	(void)debug;
	proc_child_init(&proc, verbose);
	if (ca_fd == -1)
		fatalx("start-up is missing the CA");
	if (tls_init() == -1)
		fatalx("tls_init");
	read_ca();
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
		free(u->conns[i].obuf);
	evtimer_del(&u->probe_ev);
	tls_config_free(u->tlscfg);
	if (u->sessfd != -1)
		close(u->sessfd);
	free(u);
}

static struct upstream *
upstream_new(const struct upstream_conf *uc)
{
	struct upstream	*u;
	char		 addr[64];
	int		 i;

	if ((u = calloc(1, sizeof(*u))) == NULL)
		fatal("calloc");
	u->uc = *uc;
	TAILQ_INIT(&u->waiting);
	snprintf(u->label, sizeof(u->label), "%s (%s)",
	    sockaddr_text(&uc->ss, addr, sizeof(addr)), uc->name);
	for (i = 0; i < MAX_TLS_CONNS; i++)
		conn_init(&u->conns[i], u);
	evtimer_set(&u->probe_ev, probe_upstream, u);
	upstream_tls_init(u);
	return u;
}

/*
 * Tries still waiting on u go elsewhere, or wait again for a connection
 * this opens; they were no try.
 */
static void
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
		if (u->probe != NULL)
			query_free(u->probe);
		for (i = 0; i < MAX_TLS_CONNS; i++)
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

static void
conf_applied(void)
{
	apply_config(conf);
}

/* How long a connection may go unused: tls idle timeout, in µs. */
static int64_t
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
static void
listener_flush(void)
{
	chan_update(&listener);
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

static int
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

static void
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
static void
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

static int
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
 * How many queries a connection of u may carry at once: SLOTS, or fewer
 * for a while after the server cut a connection off with queries unread
 * and unanswered.  (A server that reads one query and closes resets the
 * connection when more were sent, and its answer can be lost with it;
 * sent one at a time, each is answered before the close.)
 */
static int
conn_room(const struct upstream *u)
{
	if (u->pipeline_max > 0 && mono_us() < u->pipeline_until)
		return u->pipeline_max;
	return SLOTS;
}

static int
conn_has_try(const struct uquery *uq, const struct conn *c)
{
	int	i;

	for (i = 0; i < MAX_TRIES; i++)
		if (uq->tries[i].up != NULL && uq->tries[i].conn == c)
			return 1;
	return 0;
}

static int
upstream_opening(const struct upstream *u)
{
	int	i;

	for (i = 0; i < u->nconns; i++)
		if (u->conns[i].state == C_CONNECTING ||
		    u->conns[i].state == C_HANDSHAKE)
			return 1;
	return 0;
}

/*
 * The least loaded healthy ready connection of u this query is not on
 * already; beyond SPREAD_AT queries, another connection is opened (one
 * handshake at a time).
 */
static struct conn *
pick_conn(struct upstream *u, const struct uquery *uq, struct conn **closed)
{
	struct conn	*c, *best = NULL;
	int		 i;

	*closed = NULL;
	for (i = 0; i < u->nconns; i++) {
		c = &u->conns[i];
		if (c->state == C_READY && !c->suspect && !c->broken &&
		    c->ninflight < conn_room(u) && !conn_has_try(uq, c) &&
		    (best == NULL || c->ninflight < best->ninflight))
			best = c;
		else if (c->state == C_CLOSED && *closed == NULL)
			*closed = c;
	}
	if (upstream_opening(u))
		*closed = NULL;
	return best;
}

/*
 * Start a try of uq on u: on a ready connection, or waiting for one.
 * Returns -1 when the query could not be tried and has been failed
 * (and freed).
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
static int
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
conn_suspect(struct conn *c, int64_t quiet_since)
{
	if (c->suspect || c->state != C_READY)
		return;
	c->suspect = 1;
	c->suspect_since = mono_us();
	c->quiet_since = quiet_since;
	c->up->nsuspect++;
	log_debug("upstream %s: a connection went quiet, probing it",
	    c->up->label);
	probe_conn(c);
	conn_arm(c);
}

static void
conn_heard(struct conn *c)
{
	c->heard = mono_us();
	if (c->suspect) {
		c->suspect = 0;
		c->up->nsuspect--;
		conn_arm(c);
	}
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
	/* nothing at all heard on its connection since it left? */
	if (t->conn->heard < t->sent)
		conn_suspect(t->conn, t->sent);
}

static void upstream_failed(struct upstream *, enum fail_kind, const char *);

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

static void
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
/* Connections */

/*
 * libtls reads and writes through these: reads come from a buffer
 * filled by one read(2) at a time, and the TLS records written pile up
 * in obuf, which flush_conns() writes once per event loop turn.  Each
 * query is a TLS record of its own (servers that read one query per
 * record work), yet all of a turn's records leave in one write(2).
 */
static ssize_t
conn_tls_read(struct tls *ctx, void *buf, size_t len, void *arg)
{
	struct conn	*c = arg;
	ssize_t		 n;

	(void)ctx;
	if (c->ilen == 0) {
		c->ioff = 0;
		n = read(c->fd, c->ibuf, sizeof(c->ibuf));
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK ||
			    errno == EINTR)
				return TLS_WANT_POLLIN;
			c->io_errno = errno;
			return -1;
		}
		if (n == 0)
			return 0;
		c->ilen = (size_t)n;
	}
	if (len > c->ilen)
		len = c->ilen;
	memcpy(buf, c->ibuf + c->ioff, len);
	c->ioff += len;
	c->ilen -= len;
	return (ssize_t)len;
}

static ssize_t
conn_tls_write(struct tls *ctx, const void *buf, size_t len, void *arg)
{
	struct conn	*c = arg;
	uint8_t		*p;
	size_t		 ncap;

	(void)ctx;
	if (c->ooff > 0 && c->olen + len > c->ocap) {
		memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
		c->olen -= c->ooff;
		c->ooff = 0;
	}
	if (len > OBUF_MAX - c->olen) {
		c->io_errno = ENOBUFS;
		return -1;
	}
	if (c->olen + len > c->ocap) {
		for (ncap = c->ocap ? c->ocap : 4096; ncap < c->olen + len;)
			ncap *= 2;
		if ((p = realloc(c->obuf, ncap)) == NULL) {
			c->io_errno = ENOMEM;
			return -1;
		}
		c->obuf = p;
		c->ocap = ncap;
	}
	memcpy(c->obuf + c->olen, buf, len);
	c->olen += len;
	return (ssize_t)len;
}

/* Write what libtls left in obuf; -1 on an error. */
static int
conn_write_out(struct conn *c)
{
	ssize_t	n;

	while (c->ooff < c->olen) {
		n = write(c->fd, c->obuf + c->ooff, c->olen - c->ooff);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			c->io_errno = errno;
			return -1;
		}
		c->ooff += (size_t)n;
	}
	c->ooff = c->olen = 0;
	return 0;
}

/* Put a try on the wire: a slot, an ID, a TLS record of its own. */
static void
conn_send(struct conn *c, struct utry *t)
{
	struct uquery	*uq = t->uq;
	ssize_t		 n;
	int		 slot;

	for (slot = c->next_slot; c->slots[slot] != NULL;
	    slot = (slot + 1) % SLOTS)
		;
	c->next_slot = (slot + 1) % SLOTS;
	c->gen[slot]++;
	t->id = (uint16_t)(c->gen[slot] << 8 | slot);
	c->slots[slot] = t;
	c->gone[slot] = -1;
	c->ninflight++;
	t->conn = c;
	t->sent = c->used = mono_us();
	c->up->st.queries++;
	dns_put16(uq->q + 2, t->id);
	n = tls_write(c->tls, uq->q, uq->qlen);
	if (n != (ssize_t)uq->qlen) {
		/* closed by flush_conns(), which moves the query on */
		c->broken = 1;
		if (c->io_errno == 0)
			c->io_errno = EIO;
	}
	if (c->ninflight == 1)
		conn_arm(c);
}

/* Tries waiting on an upstream go out on its ready connections. */
static void
conn_take_waiting(struct conn *c)
{
	struct utry	*t, *next;

	for (t = TAILQ_FIRST(&c->up->waiting); t != NULL; t = next) {
		next = TAILQ_NEXT(t, wentry);
		if (c->ninflight >= conn_room(c->up) || c->suspect ||
		    c->broken)
			break;
		if (conn_has_try(t->uq, c))
			continue;	/* one try of a query a connection */
		TAILQ_REMOVE(&c->up->waiting, t, wentry);
		/* its time runs from now: the handshake was not its own */
		t->start = mono_us();
		t->timedout = 0;
		if (t->uq->probe != P_UPSTREAM)
			t->rto = upstream_rto(c->up);
		conn_send(c, t);
		query_arm(t->uq);
	}
}

/*
 * Give a connection the tries waiting for it and write its records.
 * -1 when it failed on the way and has been closed: its queries went
 * elsewhere, perhaps to a connection already written.
 */
static int
conn_flush(struct conn *c)
{
	if (c->state == C_CLOSED)
		return 0;
	if (c->state == C_READY)
		conn_take_waiting(c);
	if (c->broken || conn_write_out(c) == -1) {
		conn_close(c, c->state == C_READY ? F_CLOSED : F_NETWORK,
		    strerror(c->io_errno));
		return -1;
	}
	conn_update(c);
	return 0;
}

/*
 * Write every connection's records, and close the ones that failed on
 * the way (their queries go elsewhere, which may queue on others: go
 * again, a bounded number of times).
 */
static void
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
set_sockopts(int fd)
{
	int	on = 1, utmo = 5000;
#ifdef TCP_KEEPIDLE
	int	kidle = 15, kintvl = 5, kcnt = 3;
#endif

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
#ifdef TCP_USER_TIMEOUT
	/* unacknowledged data fails a connection in seconds, not minutes */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &utmo,
	    sizeof(utmo));
#else
	(void)utmo;
#endif
#ifdef TCP_KEEPIDLE
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kidle,
	    sizeof(kidle));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kintvl,
	    sizeof(kintvl));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kcnt, sizeof(kcnt));
#endif
}

/* A connection of u, closed, as an upstream's are made. */
static void
conn_init(struct conn *c, struct upstream *u)
{
	c->up = u;
	c->fd = -1;
	memset(c->gone, 0xff, sizeof(c->gone));
	evtimer_set(&c->tmo, conn_timeout, c);
}

/*
 * Start connecting.  -1 (errno set) when no socket could be had, which
 * is ours to bear, not the upstream's; every other failure, even an
 * immediate one, is reported later through the connection's timer, so
 * that callers never see queries move under them.
 */
static int
conn_open(struct conn *c)
{
	struct upstream	*u = c->up;
	socklen_t	 len;
	int		 err;

	len = u->uc.ss.ss_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
	c->fd = socket(u->uc.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (c->fd == -1) {
		err = errno;
		u->st.resource_errors++;
		log_resource("upstream connection: socket", err);
		errno = err;
		return -1;
	}
	set_sockopts(c->fd);
	c->state = C_CONNECTING;
	c->rlen = c->ilen = c->ioff = c->olen = c->ooff = 0;
	c->answered = 0;
	c->evmask = 0;
	c->io_errno = 0;
	c->broken = 0;
	c->close_notify = 0;
	c->heard = 0;
	c->opened = c->used = mono_us();
	if (connect(c->fd, (struct sockaddr *)&u->uc.ss, len) == -1 &&
	    errno != EINPROGRESS)
		c->io_errno = errno;	/* conn_timeout() says so */
	log_debug("connecting to %s", u->label);
	conn_arm(c);
	conn_update(c);
	return 0;
}

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

static void
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
static int
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

static void
conn_teardown(struct conn *c, int had_state)
{
	if (event_initialized(&c->ev))
		event_del(&c->ev);
	evtimer_del(&c->tmo);
	if (c->tls != NULL) {
		if (had_state == C_READY && tls_close(c->tls) == 0)
			(void)conn_write_out(c);	/* close_notify */
		tls_free(c->tls);
		c->tls = NULL;
	}
	if (c->fd != -1)
		close(c->fd);
	c->fd = -1;
	c->state = C_CLOSED;
	c->evmask = 0;
	c->ninflight = 0;
	c->rlen = c->ilen = c->ioff = 0;
	free(c->obuf);
	c->obuf = NULL;
	c->olen = c->ooff = c->ocap = 0;
	c->broken = 0;
	c->probing = 0;
	if (c->suspect) {
		c->suspect = 0;
		c->up->nsuspect--;
	}
	memset(c->gone, 0xff, sizeof(c->gone));
}

/* Is u in use lately, with no connection open but except? */
static int
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

/* Take the tries off a closing connection; health queries end here. */
static int
conn_take_tries(struct conn *c, struct utry **tries)
{
	struct utry	*t;
	struct uquery	*uq;
	int		 i, n = 0;

	for (i = 0; i < SLOTS; i++) {
		if ((t = c->slots[i]) == NULL)
			continue;
		c->slots[i] = NULL;
		t->conn = NULL;
		t->up = NULL;
		uq = t->uq;
		if (uq->probe == P_NONE) {
			tries[n++] = t;
			continue;
		}
		query_free(uq);
	}
	c->ninflight = 0;
	return n;
}

static void
upstream_limit_pipeline(struct upstream *u, int answered)
{
	int	max = answered > 1 ? answered : 1;

	if (u->pipeline_max == 0 || max < u->pipeline_max ||
	    mono_us() >= u->pipeline_until) {
		if (max < SLOTS)
			log_info("upstream %s: it closed a connection with "
			    "queries unanswered; at most %d a connection for "
			    "a while", u->label, max);
		u->pipeline_max = max < SLOTS ? max : 0;
	}
	u->pipeline_until = mono_us() + PIPELINE_MS * 1000LL;
}

/*
 * Close a connection.  Its queries go to another connection or
 * upstream: a try the server dropped without an answer (a close, a
 * reset) or that we moved (a reload) is sent again at once and costs
 * no try; one that had already run out of time did count.
 */
static void
conn_close(struct conn *c, enum fail_kind kind, const char *why)
{
	struct upstream	*u = c->up;
	struct utry	*tries[SLOTS], *t;
	struct uquery	*uq;
	char		 reason[96];
	int		 i, j, n, had_state = c->state;
	int		 answered = c->answered > 0;
	int		 clean = c->close_notify, nanswered = (int)c->answered;
	int		 inflight = c->ninflight;

	/* why may be the TLS context's error text, which goes with it */
	strlcpy(reason, why, sizeof(reason));
	why = reason;
	/* since when it has been quiet, for a close that finds it dead */
	c->suspect_at_close = c->suspect ? c->quiet_since : c->rlen > 0 ?
	    c->frame_start : mono_us();
	n = conn_take_tries(c, tries);
	conn_teardown(c, had_state);
	/* a query twice here is moved once: moving may end it */
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (tries[j] != NULL && tries[i] != NULL &&
			    tries[j]->uq == tries[i]->uq) {
				tries[j]->uq->ntries--;
				tries[j] = NULL;
			}
	/* a health query lost here is asked again (query_free() did) */
	if (!conn_close_counts(u, kind, why, had_state, answered, inflight,
	    c->suspect_at_close))
		log_debug("upstream %s: connection closed: %s", u->label, why);
	if (kind == F_CLOSED && !clean && n > 0)
		upstream_limit_pipeline(u, nanswered);
	for (i = 0; i < n; i++) {
		if ((t = tries[i]) == NULL)
			continue;
		uq = t->uq;
		uq->closed_on = u;
		if ((!t->timedout || kind == F_CLOSED || kind == F_CONFIG ||
		    kind == F_LOCAL) && kind != F_AUTH &&
		    uq->requeues < MAX_REQUEUES) {
			uq->ntries--;
			uq->requeues++;
			u->st.requeued++;
		}
		if (live_tries(uq) == 0)
			(void)query_dispatch(uq);
	}
	/* waiting queries: elsewhere, unless another connection is coming */
	for (i = 0; i < u->nconns; i++)
		if (u->conns[i].state != C_CLOSED)
			return;
	upstream_unwait(u);
	if (kind == F_CLOSED && answered && keep_warm(u, NULL))
		(void)conn_open(c);
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
	case C_READY:
		mask = EV_READ | (c->olen > c->ooff ? EV_WRITE : 0);
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

static int64_t
min_due(int64_t a, int64_t b)
{
	return a == 0 || (b != 0 && b < a) ? b : a;
}

/* The connection's next deadline: handshake, stalled answer, silence, idle. */
static void
conn_arm(struct conn *c)
{
	int64_t	due = 0;

	switch (c->state) {
	case C_CONNECTING:
	case C_HANDSHAKE:
		due = c->io_errno ? mono_us() : c->opened + CONNECT_MS * 1000LL;
		break;
	case C_READY:
		if (c->rlen > 0)
			due = c->frame_start + FRAME_MS * 1000LL;
		if (c->suspect)
			due = min_due(due, c->suspect_since +
			    rtt_dead(&c->up->rtt, UPSTREAM_TRY_MS) * 1000LL);
		if (c->ninflight == 0)
			due = min_due(due, c->used + idle_timeout_us());
		break;
	default:
		return;
	}
	if (due == 0)
		evtimer_del(&c->tmo);
	else
		timer_at(&c->tmo, due);
}

static void
conn_idle(struct conn *c)
{
	struct upstream	*u = c->up;

	if (keep_warm(u, c)) {
		/* the one kept warm: a query of our own keeps it so */
		probe_conn(c);
		return;
	}
	log_debug("upstream %s: closing an idle connection", u->label);
	conn_close(c, F_CONFIG, "idle");
}

static void
conn_timeout(int fd, short event, void *arg)
{
	struct conn	*c = arg;
	int64_t		 now = mono_us();
	char		 why[96];

	(void)fd;
	(void)event;
	if (c->state == C_CONNECTING || c->state == C_HANDSHAKE) {
		if (c->io_errno != 0)
			conn_close(c, F_NETWORK, strerror(c->io_errno));
		else
			conn_close(c, F_TIMEOUT,
			    "connect or handshake timed out");
	} else if (c->state == C_READY) {
		if (c->rlen > 0 &&
		    now >= c->frame_start + FRAME_MS * 1000LL)
			conn_close(c, F_TIMEOUT, "an answer stalled halfway");
		else if (c->suspect &&
		    now >= c->suspect_since + rtt_dead(&c->up->rtt, UPSTREAM_TRY_MS) * 1000LL) {
			snprintf(why, sizeof(why), "no answer on a connection "
			    "for %lld ms", (long long)(now - c->quiet_since) /
			    1000);
			conn_close(c, F_TIMEOUT, why);
		} else if (c->ninflight == 0 &&
		    now >= c->used + idle_timeout_us())
			conn_idle(c);
		else
			conn_arm(c);
	}
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
	char		 why[96];
	int		 r;

	r = tls_handshake(c->tls);
	if (r == TLS_WANT_POLLIN || r == TLS_WANT_POLLOUT)
		return;		/* flush_conns() writes, conn_update() waits */
	if (r == -1) {
		const char *e = tls_error(c->tls) ? tls_error(c->tls) :
		    "TLS handshake failed";

		/* a certificate or name that does not verify is not a reset */
		if (upstream_tls_store_failed(u, e))
			conn_close(c, F_LOCAL, e);
		else if (c->io_errno != 0)
			conn_close(c, F_NETWORK, strerror(c->io_errno));
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
	c->used = mono_us();
	u->st.handshakes++;
	if (tls_conn_session_resumed(c->tls))
		u->st.resumed++;
	strlcpy(u->st.tls_version, tls_conn_version(c->tls),
	    sizeof(u->st.tls_version));
	log_info("upstream %s: connected, %s, %s%s", u->label,
	    tls_conn_version(c->tls), tls_conn_cipher(c->tls),
	    tls_conn_session_resumed(c->tls) ? ", resumed" : "");
	conn_take_waiting(c);
	conn_arm(c);
	if (c->ilen > 0)
		conn_io(c);	/* records that came with the handshake */
}

/* A health query answered: whatever the rcode, the upstream speaks. */
static void
probe_answered(struct uquery *uq)
{
	struct upstream	*u = uq->last;

	if (uq->probe == P_UPSTREAM && u != NULL && u->probe == uq)
		upstream_up(u);
	query_free(uq);
}

/* One answer off the wire: match it, pass it on, or drop it. */
static void
conn_answer(struct conn *c, const uint8_t *a, size_t alen)
{
	struct upstream	*u = c->up;
	struct utry	*t;
	struct uquery	*uq;
	struct dns_msg	 am;
	uint16_t	 id;
	int		 slot;

	if (alen < DNS_HDR_LEN)
		return;
	id = dns_get16(a);
	slot = id & (SLOTS - 1);
	t = c->slots[slot];
	if (t == NULL || t->id != id) {
		if (c->gone[slot] == id) {
			/* a try given up on, answered after all */
			c->gone[slot] = -1;
			u->st.late++;
			conn_heard(c);
			return;
		}
		log_debug("upstream %s: dropped an unsolicited answer",
		    u->label);
		u->st.dropped++;
		return;
	}
	uq = t->uq;
	if (dns_parse(a, alen, &am) == -1 ||
	    !dns_answers_question(a, alen, &am, uq->q + 2, uq->qlen - 2,
	    &uq->qm)) {
		log_warnx("upstream %s: dropped an answer that does not "
		    "match its question", u->label);
		u->st.dropped++;
		return;
	}
	conn_heard(c);
	c->answered++;
	u->quiet_closes = 0;
	u->last_answer = c->heard;
	if (u->state == U_PROBING)
		upstream_up(u);	/* it answers: as good as a health query */
	u->st.answers++;
	rtt_sample(&u->rtt, c->heard - t->sent);
	u->st.latency_ms = (int)(u->rtt.srtt / 1000);
	if (uq->probe != P_NONE) {
		if (uq->probe == P_CONN)
			c->probing = 0;
		probe_answered(uq);
		return;
	}
	u->last_client = c->heard;
	query_answer(uq, a, am.end);
}

/*
 * Acknowledge the answers just read at once when more are due.  A
 * server with Nagle's algorithm on (unbound has) holds a small answer
 * until its previous one is acknowledged, and Linux, seeing a
 * request-response peer, delays the acknowledgement until the next query
 * or for 40 ms: every answer would wait for the next query.
 */
static void
conn_quickack(struct conn *c)
{
#ifdef TCP_QUICKACK
	int	on = 1;

	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof(on));
#else
	(void)c;
#endif
}

/* Read what there is; whole answers are taken as they complete. */
static void
conn_io(struct conn *c)
{
	ssize_t	 n;
	size_t	 off, mlen;
	int	 r, spins = 0, got = 0;

	for (;;) {
		n = tls_read(c->tls, c->rbuf + c->rlen,
		    sizeof(c->rbuf) - c->rlen);
		if (n == TLS_WANT_POLLIN || n == TLS_WANT_POLLOUT) {
			/*
			 * Records already read (a session ticket took this
			 * call) would wait for an event that never comes.
			 */
			if (c->ilen > 0 && ++spins < 64)
				continue;
			break;
		}
		if (n == -1) {
			/* a reset, an end without close_notify: a close */
			conn_close(c, F_CLOSED, c->io_errno ?
			    strerror(c->io_errno) : tls_error(c->tls) ?
			    tls_error(c->tls) : "read failed");
			return;
		}
		if (n == 0) {
			c->close_notify = 1;
			conn_close(c, F_CLOSED, "closed by the server");
			return;
		}
		if (c->rlen == 0)
			c->frame_start = mono_us();
		c->rlen += (size_t)n;
		got = 1;
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
		if (off > 0) {
			memmove(c->rbuf, c->rbuf + off, c->rlen - off);
			c->rlen -= off;
			c->frame_start = mono_us();
		}
	}
	if (got && c->ninflight > 0)
		conn_quickack(c);
	conn_arm(c);
}

static void
conn_start_tls(struct conn *c)
{
	const char	*e;
	socklen_t	 len = sizeof(int);
	int		 err = 0;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		conn_close(c, F_NETWORK, strerror(err));
		return;
	}
	if ((c->tls = tls_client()) == NULL ||
	    tls_configure(c->tls, c->up->tlscfg) == -1 ||
	    tls_connect_cbs(c->tls, conn_tls_read, conn_tls_write, c,
	    c->up->uc.name) == -1) {
		e = c->tls && tls_error(c->tls) ? tls_error(c->tls) :
		    "tls setup failed";
		conn_close(c, upstream_tls_store_failed(c->up, e) ?
		    F_LOCAL : F_NETWORK, e);
		return;
	}
	c->state = C_HANDSHAKE;
	handshake(c);
}

static void
conn_event(int fd, short event, void *arg)
{
	struct conn	*c = arg;

	(void)fd;
	switch (c->state) {
	case C_CONNECTING:
		conn_start_tls(c);
		break;
	case C_HANDSHAKE:
		handshake(c);
		break;
	case C_READY:
		if (event & EV_READ)
			conn_io(c);
		break;
	default:
		break;
	}
	listener_flush();	/* answers read, even if it closed */
	flush_conns();
}

/* ------------------------------------------------------------------ */
/* Health queries */

/* Ask a quiet connection, or one kept warm, something it must answer. */
static void
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
		for (i = 0; i < MAX_TLS_CONNS; i++)
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
	struct upstream	*u;
	int		 i;

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
