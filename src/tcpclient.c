/*
 * The listener's TCP clients (RFC 7766): connections accepted and
 * bounded, in number for each client and for all, in the answers each
 * and all of them hold, and in time; a whole message read goes to
 * handle_query(), an answer comes back through tcp_send().
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "dns.h"
#include "listener.h"
#include "log.h"
#include "proc.h"
#include "ratelimit.h"
#include "stats.h"
#include "tcpclient.h"

#define TCP_ACCEPT_BATCH	32	/* connections taken at a time */
#define TCP_IDLE_MS		10000
#define TCP_PARTIAL_MS		5000	/* to finish a message once begun */
#define TCP_MAX_PER_CLIENT	64
#define TCP_ANSWER_MAX		(2 + DNS_MAX_MSG)	/* an answer, its length */
#define TCP_CONN_BUDGET		(16 * TCP_ANSWER_MAX)	/* one connection */
#define TCP_OUT_BUDGET		(64 * 1024 * 1024)	/* all of them */
#define TCP_SHED_LOG_MS		60000	/* one line a minute about shedding */

/* An answer queued, with its length in front. */
struct obuf {
	TAILQ_ENTRY(obuf)	 entry;
	size_t			 len;
	size_t			 off;
	uint8_t			 data[];
};

static void	 tcp_read(int, short, void *);
static void	 tcp_write(int, short, void *);
static void	 tcp_timeout(int, short, void *);
static void	 tcp_close(struct tcpc *);
static void	 tcp_update(struct tcpc *);
static int	 tcp_has_message(const struct tcpc *);
static int	 tcp_can_take(const struct tcpc *);
static void	 tcp_resume(int, short, void *);
static void	 tcp_out_free(struct tcpc *);
static void	 tcp_shed(struct tcpc *);
static void	 tcp_shed_heaviest(void);
static struct tcpc *tcp_pick(int);

/* A client's connection. */
struct tcpc {
	TAILQ_ENTRY(tcpc)	 entry;
	int			 fd;
	struct event		 rev;
	struct event		 wev;
	struct event		 tmo;
	struct event		 resume;
	struct sockaddr_storage	 from;
	socklen_t		 fromlen;
	uint8_t			 key[CLIENT_KEY_LEN];	/* client_key() */
	LIST_HEAD(, cquery)	 queries;
	int			 inflight;
	TAILQ_HEAD(, obuf)	 out;
	int			 reading;
	int			 eof;
	int			 shed;		/* answers dropped, to close */
	uint64_t		 seq;		/* accept order */
	int64_t			 partial_ms;	/* a message began arriving */
	int64_t			 write_ms;	/* output last moved */
	size_t			 outbytes;	/* queued in out */
	size_t			 rlen;
	uint8_t			 rbuf[2 + DNS_MAX_MSG];
};

TAILQ_HEAD(tcpc_head, tcpc);
static struct tcpc_head		 tcpcs = TAILQ_HEAD_INITIALIZER(tcpcs);
static int			 ntcpc;
static size_t			 tcp_out_all;	/* answers queued, all TCP */
static uint64_t			 tcp_seq;
static int			 tcp_max_clients = TCP_MAX_CLIENTS;

/* A client, for tcp_pick(): what it holds, and its connection to go. */
#define SHARE_SLOTS	(2 * TCP_MAX_CLIENTS)
static struct tcp_share {
	uint8_t		 key[CLIENT_KEY_LEN];
	uint64_t	 gen;		/* in use in this round */
	uint64_t	 first;		/* seq of its oldest connection */
	size_t		 sum;
	struct tcpc	*pick;
} shares[SHARE_SLOTS];

/* The client of a connection, in this round's table. */
static struct tcp_share *
tcp_share(const struct tcpc *tc, uint64_t gen)
{
	struct tcp_share	*sh;
	uint32_t		 i;

	i = cache_hash(hash_key, tc->key, CLIENT_KEY_LEN) % SHARE_SLOTS;
	for (;; i = (i + 1) % SHARE_SLOTS) {
		sh = &shares[i];
		if (sh->gen != gen) {
			memcpy(sh->key, tc->key, CLIENT_KEY_LEN);
			sh->gen = gen;
			sh->first = tc->seq;
			sh->sum = 0;
			sh->pick = NULL;
			return sh;
		}
		if (memcmp(sh->key, tc->key, CLIENT_KEY_LEN) == 0)
			return sh;
	}
}

/*
 * The connection to let go, of the client holding the most: the most
 * answers waiting (by_bytes), then its connection holding the most; or
 * the most connections, then its oldest one.  Between clients holding
 * as much, the one with the older connection.  NULL if there is none.
 */
static struct tcpc *
tcp_pick(int by_bytes)
{
	static uint64_t		 gen;
	struct tcp_share	*sh, *best = NULL;
	struct tcpc		*tc;
	size_t			 i;

	gen++;
	TAILQ_FOREACH(tc, &tcpcs, entry) {	/* oldest first */
		if (by_bytes && tc->outbytes == 0)
			continue;
		sh = tcp_share(tc, gen);
		sh->sum += by_bytes ? tc->outbytes : 1;
		if (sh->pick == NULL ||
		    (by_bytes && tc->outbytes > sh->pick->outbytes))
			sh->pick = tc;
	}
	for (i = 0; i < SHARE_SLOTS; i++) {
		sh = &shares[i];
		if (sh->gen == gen && (best == NULL || sh->sum > best->sum ||
		    (sh->sum == best->sum && sh->first < best->first)))
			best = sh;
	}
	return best != NULL ? best->pick : NULL;
}

/*
 * Make room at the connection limit, busy or not: the oldest connection
 * of the client holding the most connections goes.
 */
static int
tcp_evict(void)
{
	struct tcpc	*tc;

	if ((tc = tcp_pick(0)) == NULL)
		return -1;
	listener_counters.tcp_refused++;
	tcp_close(tc);
	return 0;
}

/* Connections of one client: an IPv4 address or an IPv6 /64. */
static int
tcp_per_client(const uint8_t key[CLIENT_KEY_LEN])
{
	struct tcpc	*tc;
	int		 n = 0;

	TAILQ_FOREACH(tc, &tcpcs, entry)
		if (memcmp(tc->key, key, CLIENT_KEY_LEN) == 0)
			n++;
	return n;
}

/*
 * Take the clients waiting on a listening socket, TCP_ACCEPT_BATCH at
 * most.  Returns -1, errno set, if out of descriptors: the caller pauses
 * the socket rather than spin.
 */
int
tcp_accept(int fd)
{
	struct tcpc	*tc;
	struct timeval	 tv;
	int		 s, i;

	for (i = 0; i < TCP_ACCEPT_BATCH; i++) {
		if ((tc = calloc(1, sizeof(*tc))) == NULL) {
			log_warn("calloc");
			return 0;
		}
		tc->fromlen = sizeof(tc->from);
		s = accept4(fd, (struct sockaddr *)&tc->from, &tc->fromlen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (s == -1) {
			free(tc);
			if (errno == EMFILE || errno == ENFILE)
				return -1;
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("accept");
			return 0;
		}
		listener_counters.tcp_accepted++;
		(void)client_key((struct sockaddr *)&tc->from, tc->key);
		if (tcp_per_client(tc->key) >= TCP_MAX_PER_CLIENT ||
		    (ntcpc >= tcp_max_clients && tcp_evict() == -1)) {
			listener_counters.tcp_refused++;
			close(s);
			free(tc);
			continue;
		}
		tc->fd = s;
		tc->seq = tcp_seq++;
		LIST_INIT(&tc->queries);
		TAILQ_INIT(&tc->out);
		event_set(&tc->rev, s, EV_READ | EV_PERSIST, tcp_read, tc);
		event_set(&tc->wev, s, EV_WRITE | EV_PERSIST, tcp_write, tc);
		evtimer_set(&tc->tmo, tcp_timeout, tc);
		evtimer_set(&tc->resume, tcp_resume, tc);
		TAILQ_INSERT_TAIL(&tcpcs, tc, entry);
		ntcpc++;
		tc->reading = 0;
		tcp_update(tc);
		tv.tv_sec = TCP_IDLE_MS / 1000;
		tv.tv_usec = (TCP_IDLE_MS % 1000) * 1000;
		evtimer_add(&tc->tmo, &tv);
	}
	return 0;
}

/*
 * May this connection take another query?  Only while the answers it has
 * waiting, and an answer of the largest size for each query in flight
 * and for this one, fit in its budget: what a connection can make the
 * listener hold is bounded before the answers come.
 */
static int
tcp_can_take(const struct tcpc *tc)
{
	return !tc->shed && tc->outbytes + ((size_t)tc->inflight + 1) *
	    TCP_ANSWER_MAX <= TCP_CONN_BUDGET;
}

/* Read while there is room for more queries, write while there is output. */
static void
tcp_update(struct tcpc *tc)
{
	int	want_read = !tc->eof && tcp_can_take(tc);

	if (want_read && !tc->reading)
		event_add(&tc->rev, NULL);
	else if (!want_read && tc->reading)
		event_del(&tc->rev);
	tc->reading = want_read;
	if (!TAILQ_EMPTY(&tc->out))
		event_add(&tc->wev, NULL);
	else
		event_del(&tc->wev);
}

/* Is a whole message waiting at the front of the read buffer? */
static int
tcp_has_message(const struct tcpc *tc)
{
	size_t	mlen;

	return dns_tcp_frame(tc->rbuf, tc->rlen, &mlen) != 0;
}

/* Nothing more will come in and nothing is left to send: close. */
static int
tcp_done(struct tcpc *tc)
{
	if (tc->eof && TAILQ_EMPTY(&tc->out) && tc->inflight == 0 &&
	    !tcp_has_message(tc)) {
		tcp_close(tc);
		return 1;
	}
	return 0;
}

/*
 * Take the whole messages buffered, as many as the budget allows,
 * and arm the right timer: a message begun must be finished within
 * TCP_PARTIAL_MS (slow loris), a quiet connection goes after TCP_IDLE_MS.
 * Returns -1 if the connection was closed.
 */
static int
tcp_process(struct tcpc *tc)
{
	struct timeval	 tv;
	size_t		 mlen, off = 0;
	int64_t		 left;
	int		 r;

	while (tcp_can_take(tc) &&
	    (r = dns_tcp_frame(tc->rbuf + off, tc->rlen - off, &mlen)) != 0) {
		if (r == -1) {
			tcp_close(tc);	/* RFC 7766 has no empty message */
			return -1;
		}
		handle_query(tc->rbuf + off + 2, mlen, -1, tc, &tc->from,
		    tc->fromlen);
		off += 2 + mlen;
	}
	if (off > 0) {
		memmove(tc->rbuf, tc->rbuf + off, tc->rlen - off);
		tc->rlen -= off;
		tc->partial_ms = 0;
	}
	if (tc->rlen > 0 && !tcp_has_message(tc)) {
		if (tc->partial_ms == 0)
			tc->partial_ms = mono_ms();
		left = TCP_PARTIAL_MS - (mono_ms() - tc->partial_ms);
		if (left <= 0) {
			tcp_close(tc);
			return -1;
		}
	} else
		left = TCP_IDLE_MS;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	evtimer_add(&tc->tmo, &tv);
	if (tcp_done(tc))
		return -1;
	tcp_update(tc);
	return 0;
}

/*
 * There is room under the budget again (answers went out, or a query was
 * answered or dropped): take the queries that waited.  Or the connection
 * was shed: close it, now that nothing walks its queries.
 */
static void
tcp_resume(int fd, short event, void *arg)
{
	struct tcpc	*tc = arg;

	(void)fd;
	(void)event;
	if (tc->shed) {
		tcp_close(tc);
		return;
	}
	if (tcp_process(tc) == 0)
		udp_flush();
	upstream_kick();
}

static void
tcp_read(int fd, short event, void *arg)
{
	struct tcpc	*tc = arg;
	ssize_t		 n;

	(void)event;
	if (tc->rlen == sizeof(tc->rbuf))
		return;		/* full of a whole message: tcp_process */
	n = read(fd, tc->rbuf + tc->rlen, sizeof(tc->rbuf) - tc->rlen);
	if (n == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		tcp_close(tc);
		return;
	}
	if (n == 0)
		tc->eof = 1;
	tc->rlen += (size_t)n;
	if (tcp_process(tc) == -1)
		return;
	upstream_kick();
}

/* Send what is queued; the listener calls it too, at shutdown. */
static void
tcp_write(int fd, short event, void *arg)
{
	struct tcpc	*tc = arg;
	struct iovec	 iov[64];
	struct obuf	*o;
	ssize_t		 n;
	size_t		 left;
	int		 i = 0;

	(void)event;
	TAILQ_FOREACH(o, &tc->out, entry) {
		if (i == 64)
			break;
		iov[i].iov_base = o->data + o->off;
		iov[i].iov_len = o->len - o->off;
		i++;
	}
	if ((n = writev(fd, iov, i)) == -1) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		tcp_close(tc);
		return;
	}
	left = (size_t)n;
	tc->outbytes -= left;
	tcp_out_all -= left;
	tc->write_ms = mono_ms();
	while (left > 0 && (o = TAILQ_FIRST(&tc->out)) != NULL) {
		if (left < o->len - o->off) {
			o->off += left;
			break;
		}
		left -= o->len - o->off;
		TAILQ_REMOVE(&tc->out, o, entry);
		free(o);
	}
	if (tcp_done(tc))
		return;
	if (tcp_can_take(tc) && tcp_has_message(tc))
		event_active(&tc->resume, EV_TIMEOUT, 1);
	tcp_update(tc);
}

static void
tcp_timeout(int fd, short event, void *arg)
{
	struct tcpc	*tc = arg;
	struct timeval	 tv;

	(void)fd;
	(void)event;
	if (!TAILQ_EMPTY(&tc->out) && mono_ms() - tc->write_ms >= TCP_IDLE_MS) {
		tcp_close(tc);	/* a client that does not read its answers */
		return;
	}
	if ((tc->rlen == 0 || tcp_has_message(tc)) &&
	    (tc->inflight > 0 || !TAILQ_EMPTY(&tc->out))) {
		/* busy, not idle: look again later */
		tv.tv_sec = TCP_IDLE_MS / 1000;
		tv.tv_usec = 0;
		evtimer_add(&tc->tmo, &tv);
		return;
	}
	tcp_close(tc);
}

static void
tcp_close(struct tcpc *tc)
{
	struct cquery	*cq;

	while ((cq = LIST_FIRST(&tc->queries)) != NULL)
		cquery_free(cq);
	tcp_out_free(tc);
	event_del(&tc->rev);
	event_del(&tc->wev);
	evtimer_del(&tc->tmo);
	event_del(&tc->resume);
	close(tc->fd);
	TAILQ_REMOVE(&tcpcs, tc, entry);
	ntcpc--;
	free(tc);
}

static void
tcp_out_free(struct tcpc *tc)
{
	struct obuf	*o;

	while ((o = TAILQ_FIRST(&tc->out)) != NULL) {
		TAILQ_REMOVE(&tc->out, o, entry);
		free(o);
	}
	tcp_out_all -= tc->outbytes;
	tc->outbytes = 0;
}

/*
 * Drop a connection's answers now and close it from the event loop: the
 * caller may be walking the queries of this connection or of another.
 */
static void
tcp_shed(struct tcpc *tc)
{
	if (tc->shed)
		return;
	tc->shed = 1;
	tcp_out_free(tc);
	tcp_update(tc);		/* neither reads nor writes */
	event_active(&tc->resume, EV_TIMEOUT, 1);
}

/*
 * The answers waiting on all TCP connections are over TCP_OUT_BUDGET:
 * shed the connections of the clients holding the most until under it.
 */
static void
tcp_shed_heaviest(void)
{
	static int64_t	 logged_ms = -TCP_SHED_LOG_MS;
	static int	 unlogged;
	struct tcpc	*tc;

	while (tcp_out_all > TCP_OUT_BUDGET && (tc = tcp_pick(1)) != NULL) {
		tcp_shed(tc);
		unlogged++;
	}
	if (mono_ms() - logged_ms >= TCP_SHED_LOG_MS) {
		log_warnx("TCP answers waiting over %d MiB: closed %d "
		    "connections of the clients holding the most",
		    TCP_OUT_BUDGET >> 20, unlogged);
		logged_ms = mono_ms();
		unlogged = 0;
	}
}

/*
 * Queue an answer.  A connection never holds more than its budget (the
 * room was kept when its query was taken), and all connections together
 * no more than TCP_OUT_BUDGET.
 */
void
tcp_send(struct tcpc *tc, const uint8_t *msg, size_t len)
{
	struct obuf	*o;

	if (tc->shed)
		return;
	if (tc->outbytes + 2 + len > TCP_CONN_BUDGET) {
		log_warnx("TCP client over its budget: closed");
		tcp_shed(tc);
		return;
	}
	if ((o = malloc(sizeof(*o) + 2 + len)) == NULL) {
		log_warn("malloc");
		return;
	}
	o->len = 2 + len;
	o->off = 0;
	dns_put16(o->data, (uint16_t)len);
	memcpy(o->data + 2, msg, len);
	if (TAILQ_EMPTY(&tc->out))
		tc->write_ms = mono_ms();
	TAILQ_INSERT_TAIL(&tc->out, o, entry);
	tc->outbytes += o->len;
	tcp_out_all += o->len;
	tcp_update(tc);
	if (tcp_out_all > TCP_OUT_BUDGET)
		tcp_shed_heaviest();
}

/* A query read from this connection waits for its answer. */
void
tcp_query_add(struct tcpc *tc, struct cquery *cq)
{
	LIST_INSERT_HEAD(&tc->queries, cq, centry);
	tc->inflight++;
}

/* One of its queries is answered or dropped: room for the next, maybe. */
void
tcp_query_remove(struct tcpc *tc, struct cquery *cq)
{
	LIST_REMOVE(cq, centry);
	tc->inflight--;
	if (tcp_can_take(tc) && tcp_has_message(tc))
		event_active(&tc->resume, EV_TIMEOUT, 1);
}

/* As many connections as the descriptors allow, TCP_MAX_CLIENTS at most. */
void
tcp_set_max_clients(int n)
{
	tcp_max_clients = n;
}

/* The connections open now. */
int
tcp_clients(void)
{
	return ntcpc;
}

/* Shutting down: what each connection has queued, written if it can be. */
void
tcp_flush_all(void)
{
	struct tcpc	*tc, *next;

	for (tc = TAILQ_FIRST(&tcpcs); tc != NULL; tc = next) {
		next = TAILQ_NEXT(tc, entry);	/* tcp_write may free tc */
		if (!TAILQ_EMPTY(&tc->out))
			tcp_write(tc->fd, EV_WRITE, tc);
	}
}
