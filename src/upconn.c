/*
 * The upstream process's TLS connections to an upstream: choosing one
 * for a try, opening it (TCP, the TLS handshake, then the SPKI pins),
 * putting each query on it in a TLS record of its own under an ID of
 * the connection's, reading answers and matching them, its deadlines
 * (handshake, an answer stalled halfway, silence, idle), and closing
 * it, its queries moved elsewhere.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tls.h>
#include <unistd.h>

#include <resolv.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dns.h"
#include "dotproxyd.h"
#include "log.h"
#include "proc.h"
#include "rtt.h"
#include "tap.h"
#include "upstream.h"

#define MAX_REQUEUES		64	/* sent again after a server's close */
#define FRAME_MS		2000	/* to finish an answer once begun */
#define PIPELINE_MS		60000	/* a lower pipelining limit lasts */
#define OBUF_MAX		(1024 * 1024)
#define LOG_EVERY_MS		10000	/* resource errors, at most */

static void	 conn_event(int, short, void *);
static void	 conn_io(struct conn *);
static void	 conn_timeout(int, short, void *);
static void	 conn_update(struct conn *);
static void	 conn_open_more(struct upstream *);

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

/* ------------------------------------------------------------------ */
/* Which connection */

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

/*
 * Are the tries waiting on u, and adding more, more than its connections
 * being opened will carry?  Then another opens beside them: after a
 * server's close limits each connection to one query, ten queries are
 * not ten handshakes in a row.
 */
static int
upstream_short(const struct upstream *u, int adding)
{
	const struct utry	*t;
	int			 i, room = 0, want = adding;

	for (i = 0; i < u->nconns; i++)
		if (u->conns[i].state == C_CONNECTING ||
		    u->conns[i].state == C_HANDSHAKE)
			room += conn_room(u);
	TAILQ_FOREACH(t, &u->waiting, wentry)
		if (++want > room)
			break;
	return want > room;
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
 * already, and in *closed a closed one that may be opened: none while
 * one is opening (one handshake at a time).
 */
struct conn *
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
	if (upstream_opening(u) && !upstream_short(u, 1))
		*closed = NULL;
	return best;
}

/* ------------------------------------------------------------------ */
/* Buffers and writing */

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

/*
 * dnstap: a try's query as it went to the upstream (DNS-over-TLS), or
 * the answer that came for it.  No client is in either.
 */
static void
tap_forwarder(const struct conn *c, const struct utry *t,
    enum dnstap_type type, const uint8_t *msg, size_t len)
{
	struct dnstap_event	ev;

	if (!tap_on())
		return;
	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.proto = DNSTAP_DOT;
	ev.peer = (const struct sockaddr *)&c->up->uc.ss;
	tap_realtime(&ev.qtime, t->sent);
	if (type == DNSTAP_FORWARDER_RESPONSE)
		tap_realtime(&ev.rtime, c->heard);
	ev.msg = msg;
	ev.msglen = len;
	tap_log(&ev);
}

/* Put a try on the wire: a slot, an ID, a TLS record of its own. */
void
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
	} else
		tap_forwarder(c, t, DNSTAP_FORWARDER_QUERY, uq->q + 2,
		    uq->qlen - 2);
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
	conn_open_more(c->up);
}

/* Tries still waiting that the connections opening will not carry. */
static void
conn_open_more(struct upstream *u)
{
	int	i;

	if (!upstream_short(u, 0))
		return;
	for (i = 0; i < u->nconns; i++)
		if (u->conns[i].state == C_CLOSED) {
			(void)conn_open(&u->conns[i]);
			return;
		}
}

/*
 * Give a connection the tries waiting for it and write its records.
 * -1 when it failed on the way and has been closed: its queries went
 * elsewhere, perhaps to a connection already written.
 */
int
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

/* ------------------------------------------------------------------ */
/* Opening and closing */

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
void
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
int
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
void
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

/* ------------------------------------------------------------------ */
/* Events and deadlines */

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
void
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

void
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

/*
 * An idle connection closes, but for one kept warm.  One opened before
 * its upstream's trust anchors changed closes even so, and the one kept
 * warm opens again with them (upstream_tls_verified()).
 */
static void
conn_idle(struct conn *c)
{
	struct upstream	*u = c->up;
	int		 warm = keep_warm(u, c);

	if (warm && c->anchors_gen == u->anchors_gen) {
		/* the one kept warm: a query of our own keeps it so */
		probe_conn(c);
		return;
	}
	log_debug("upstream %s: closing an idle connection%s", u->label,
	    warm ? " to open it with the trust anchors" : "");
	conn_close(c, F_CONFIG, "idle");
	if (warm)
		(void)conn_open(c);
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

/* ------------------------------------------------------------------ */
/* The handshake */

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
		int auth = c->io_errno == 0 &&
		    (strstr(e, "certificate") != NULL ||
		    strstr(e, "verif") != NULL);

		/* a certificate or name that does not verify is not a reset */
		if (upstream_tls_store_failed(u, e) ||
		    (auth && upstream_tls_failed(u, c)))
			conn_close(c, F_LOCAL, e);	/* ours, not the upstream's */
		else if (c->io_errno != 0)
			conn_close(c, F_NETWORK, strerror(c->io_errno));
		else
			conn_close(c, auth ? F_AUTH : F_NETWORK, e);
		return;
	}
	if (check_pins(c, why, sizeof(why)) == -1) {
		upstream_tls_forget(u);
		conn_close(c, F_AUTH, why);
		return;
	}
	upstream_tls_verified(u, c->tls);
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
	c->anchors_gen = c->up->anchors_gen;
	c->with_anchors = c->up->anchored == 1;
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

/* ------------------------------------------------------------------ */
/* Reading */

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
	tap_forwarder(c, t, DNSTAP_FORWARDER_RESPONSE, a, alen);
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
