/*
 * The listener: faces clients over UDP and TCP (RFC 7766), validates
 * queries, applies the access list, and exchanges queries and answers
 * with the upstream process.  It cannot open files or create sockets.
 * Its TCP connections are in tcpclient.c, its query log in querylog.c.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#include <errno.h>
#include <event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "audit.h"
#include "cache.h"
#include "control.h"
#include "chan.h"
#include "dns.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "listener.h"
#include "log.h"
#include "proc.h"
#include "qid.h"
#include "querylog.h"
#include "ratelimit.h"
#include "stats.h"
#include "tap.h"
#include "tcpclient.h"

#define UDP_BATCH		64
#define FD_RESERVE		128	/* besides TCP clients */
#define MAX_REQUESTS		65536
#define REQ_HASH_SIZE		4096	/* power of two; 16 a chain when full */

/* Where shutdown is, in draining: false until it begins. */
enum {
	DRAIN_OFF = 0,		/* serving */
	DRAIN_WAIT,		/* SIGTERM: answering the queries in flight */
	DRAIN_EXIT,		/* failing what is left, then exit */
};

/* Serve-stale (RFC 8767): where a request is. */
enum stale_state {
	STALE_NONE,		/* serve-stale was off when it began */
	STALE_WAIT,		/* in reqs_by_stale until stale_ms */
	STALE_PAST,		/* its clients have waited long enough */
};

/* One query to the upstream process; identical ones share it. */
struct request {
	LIST_ENTRY(request)	 ientry;	/* by qid */
	LIST_ENTRY(request)	 kentry;	/* by key */
	TAILQ_ENTRY(request)	 tentry;	/* deadline order */
	TAILQ_ENTRY(request)	 sentry;	/* stale_ms order */
	TAILQ_HEAD(, cquery)	 waiters;
	uint32_t		 qid;
	uint32_t		 keyhash;
	struct timespec		 deadline;
	int64_t			 stale_ms;	/* serve stale from then on */
	enum stale_state	 stale;
	struct dns_msg		 qm;		/* of q */
	size_t			 qlen;
	uint8_t			 q[];		/* canonical query, ID 0 */
};

struct udp_reply {
	int			 fd;
	struct sockaddr_storage	 to;
	socklen_t		 tolen;
	size_t			 len;
	uint8_t			*buf;		/* in udp_bytes */
};

struct sock {
	TAILQ_ENTRY(sock)	 entry;
	int			 fd;
	int			 type;
	struct sockaddr_storage	 ss;
	struct event		 ev;
	struct event		 pause;		/* out of descriptors */
};

static void	 parent_message(struct chan *, struct imsg *);
static void	 upstream_message(struct chan *, struct imsg *);
static void	 udp_read(int, short, void *);
static void	 sock_accept(int, short, void *);
static void	 reply(struct cquery *, const uint8_t *, size_t, const char *);
static void	 reply_error(struct cquery *, int, int, const char *);
static void	 reply_fail(struct cquery *, const uint8_t *, size_t,
		    uint32_t, int, const char *);
static int	 reply_stale(struct cquery *, const uint8_t *, size_t,
		    uint32_t);
static int	 reply_hit(struct cquery *, const struct cache_hit *);
static int	 answer_stale(struct request *);
static struct cquery *cquery_new(const uint8_t *, const struct dns_msg *,
		    int, struct tcpc *, const struct sockaddr_storage *,
		    socklen_t);
static size_t	 canonical_query(uint8_t *, size_t, const uint8_t *,
		    const struct dns_msg *);
static void	 forward(struct cquery *, const uint8_t *, size_t, uint32_t);
static void	 prefetch(const uint8_t *, size_t, uint32_t);
static void	 answer_request(uint32_t, const uint8_t *, size_t);
static void	 fail_request(uint32_t, int, const char *);
static void	 request_free(struct request *);
static void	 timer_update(void);
static void	 timer_fire(int, short, void *);
static void	 apply_limits(void);
static void	 sock_resume(int, short, void *);
static void	 sock_start(struct sock *);
static void	 fd_limit(void);
static void	 upstream_lost(void);
static void	 conf_applied(void);
static void	 heartbeat(struct heartbeat *);
static void	 take_socket(struct imsg *);
static void	 close_removed_sockets(void);
static void	 drain_start(int, short, void *);
static void	 drain_done(int, short, void *);
static size_t	 client_limit(const struct cquery *);
static int	 take_startup_fd(struct imsg *);
static void	 take_metrics(struct imsg *);
static void	 tap_client_msg(const struct cquery *, enum dnstap_type,
		    const uint8_t *, size_t);

static struct dotproxyd_conf	*conf;
static struct chan		 parent = {
	.dispatch = proc_dispatch, .message = proc_parent_message,
	.done = udp_flush, .peer = "parent", .vital = 1
};
static struct chan		 upstream = {
	.dispatch = proc_dispatch, .message = upstream_message,
	.done = udp_flush, .peer = "upstream process"
};
static TAILQ_HEAD(sock_head, sock) socks = TAILQ_HEAD_INITIALIZER(socks);
static TAILQ_HEAD(, request)	 reqs_by_time =
				    TAILQ_HEAD_INITIALIZER(reqs_by_time);
static TAILQ_HEAD(, request)	 reqs_by_stale =
				    TAILQ_HEAD_INITIALIZER(reqs_by_stale);
static LIST_HEAD(req_list, request) reqs_by_id[REQ_HASH_SIZE];
static LIST_HEAD(, request)	 reqs_by_key[REQ_HASH_SIZE];
static struct event		 timer;
static uint32_t			 next_qid = 1;
uint8_t			 hash_key[SIP_KEY_LEN];
static int			 nrequests;
static int			 control_fd = -1;
static int			 upstream_up, draining;
static struct event		 drain_timer;
static struct cache		*cache;
static size_t			 udp_max = DNS_EDNS_UDP;	/* edns udp size */
static struct ratelimit		*ratelimit;
struct listener_stats		 listener_counters;
static uint8_t			 outbuf[DNS_MAX_MSG + 2];
static struct udp_reply		 udp_out[UDP_BATCH];
static int			 n_udp_out;
/* the answers of udp_out, one after the other: pages touched as used */
static uint8_t			 udp_bytes[UDP_BATCH * DNS_EDNS_UDP_MAX];
static size_t			 udp_bytes_used;
static struct proc		 proc = PROC_CHILD(PROC_LISTENER, &parent, &upstream,
    &upstream_up, &conf, upstream_lost, drain_start);

__attribute__((__noreturn__)) void
listener_main(int debug, int verbose)
{
	struct sock	*s;
	int		 i;

	(void)debug;
	proc_child_init(&proc, verbose);
	if (control_fd == -1)
		fatalx("start-up is missing the control socket");
	arc4random_buf(hash_key, sizeof(hash_key));
	for (i = 0; i < REQ_HASH_SIZE; i++) {
		LIST_INIT(&reqs_by_id[i]);
		LIST_INIT(&reqs_by_key[i]);
	}
	fd_limit();
	proc_child_confine(&proc);

	control_init(control_fd);
	evtimer_set(&timer, timer_fire, NULL);
	querylog_init();
	TAILQ_FOREACH(s, &socks, entry)
		sock_start(s);
	proc_child_serve(&proc);
}

/* What the listener tells the parent's heartbeat. */
static void
heartbeat(struct heartbeat *hb)
{
	hb->queries = listener_counters.queries_udp +
	    listener_counters.queries_tcp;
}

/* The first config, or a new one: what follows it here. */
static void
conf_applied(void)
{
	apply_limits();
	close_removed_sockets();
	control_http_keep(&conf->metrics);
	querylog_tap_configure(&parent, conf);
}

/*
 * Cache and rate limits and the UDP answer size follow the config; a
 * resize keeps what fits.
 */
static void
apply_limits(void)
{
	size_t	entries = (size_t)conf->cache_size;

	udp_max = DNS_EDNS_UDP;
	if (conf->edns_udp_size >= DNS_MIN_UDP &&
	    conf->edns_udp_size <= DNS_EDNS_UDP_MAX)
		udp_max = (size_t)conf->edns_udp_size;
	dns_set_udp_size((uint16_t)udp_max);

	if (entries == 0) {
		cache_free(cache);
		cache = NULL;
	} else if (cache == NULL) {
		if ((cache = cache_new(entries, entries *
		    CACHE_BYTES_PER_ENTRY)) == NULL)
			fatal("cache_new");
	} else
		cache_resize(cache, entries, entries * CACHE_BYTES_PER_ENTRY);
	if (cache != NULL)
		cache_set_stale(cache, conf->serve_stale ?
		    (uint32_t)conf->stale_max : 0);

	if (conf->ratelimit == 0) {
		ratelimit_free(ratelimit);
		ratelimit = NULL;
	} else if (ratelimit == NULL) {
		if ((ratelimit = ratelimit_new(conf->ratelimit,
		    conf->ratelimit_burst, RATELIMIT_CLIENTS)) == NULL)
			fatal("ratelimit_new");
	} else
		ratelimit_set(ratelimit, conf->ratelimit,
		    conf->ratelimit_burst);
}

/*
 * Descriptors: raise the soft limit as far as the hard one allows, and
 * keep enough below it for the TCP client limit that accept never fails
 * for want of one (listening sockets, channels, control connections).
 */
static void
fd_limit(void)
{
	struct rlimit	rl;
	rlim_t		want = TCP_MAX_CLIENTS + FD_RESERVE;
	int		max = TCP_MAX_CLIENTS;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		fatal("getrlimit");
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			fatal("setrlimit");
	}
	if (rl.rlim_cur < want)
		max = rl.rlim_cur > 2 * FD_RESERVE ?
		    (int)(rl.rlim_cur - FD_RESERVE) : FD_RESERVE / 2;
	tcp_set_max_clients(max);
	if (max < TCP_MAX_CLIENTS)
		log_warnx("only %d TCP clients at a time: the descriptor limit "
		    "is %llu", max, (unsigned long long)rl.rlim_cur);
}

/* Serve a listening socket (once the event loop exists). */
static void
sock_start(struct sock *s)
{
	event_set(&s->ev, s->fd, EV_READ | EV_PERSIST,
	    s->type == SOCK_DGRAM ? udp_read : sock_accept, s);
	event_add(&s->ev, NULL);
	evtimer_set(&s->pause, sock_resume, s);
}

/*
 * A TCP listening socket has clients waiting.  Out of descriptors, it
 * pauses for a second rather than spin.
 */
static void
sock_accept(int fd, short event, void *arg)
{
	struct sock	*s = arg;
	struct timeval	 tv = { 1, 0 };

	(void)event;
	if (tcp_accept(fd) == 0)
		return;
	log_warnx("accept: %s; pausing for a second", strerror(errno));
	event_del(&s->ev);
	evtimer_add(&s->pause, &tv);
}

/* The pause is over: accept again, unless shutting down. */
static void
sock_resume(int fd, short event, void *arg)
{
	struct sock	*s = arg;

	(void)fd;
	(void)event;
	if (draining == DRAIN_OFF)
		event_add(&s->ev, NULL);
}

/* A listening socket from the parent, served once the loop runs. */
static void
take_socket(struct imsg *imsg)
{
	struct sock	*s;

	msg_need(&parent, imsg, sizeof(s->ss), sizeof(s->ss), MSG_FD);
	if ((s = calloc(1, sizeof(*s))) == NULL)
		fatal("calloc");
	s->fd = imsg->fd;
	imsg->fd = -1;
	s->type = imsg->hdr.type == IMSG_SOCKET_UDP ? SOCK_DGRAM : SOCK_STREAM;
	memcpy(&s->ss, imsg->data, sizeof(s->ss));
	TAILQ_INSERT_TAIL(&socks, s, entry);
}

/* The listener's own descriptors at start-up. */
static int
take_startup_fd(struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_SOCKET_UDP:
	case IMSG_SOCKET_TCP:
		take_socket(imsg);
		return 0;
	case IMSG_SOCKET_METRICS:
		take_metrics(imsg);
		return 0;
	case IMSG_SOCKET_CONTROL:
		msg_need(&parent, imsg, 0, 0, MSG_FD);
		if (control_fd != -1)
			return -1;
		control_fd = imsg->fd;
		imsg->fd = -1;
		return 0;
	}
	return -1;
}

/* The metrics socket, new or in place of the one before. */
static void
take_metrics(struct imsg *imsg)
{
	struct sockaddr_storage	ss;

	msg_need(&parent, imsg, sizeof(ss), sizeof(ss), MSG_FD);
	memcpy(&ss, imsg->data, sizeof(ss));
	control_http_socket(imsg->fd, &ss);
	imsg->fd = -1;
}

/* The parent's messages for the listener alone. */
static void
parent_message(struct chan *c, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_CTL_RESULT:
		msg_need(c, imsg, 1, CTL_RESULT_MAX, MSG_NO_FD);
		if (((char *)imsg->data)[imsg->len - 1] != '\0')
			fatalx("bad message from the parent: %s without its "
			    "NUL", imsg_type_name(imsg->hdr.type));
		control_result(imsg->hdr.peerid, imsg->data);
		break;
	case IMSG_SOCKET_UDP:
	case IMSG_SOCKET_TCP:
		take_socket(imsg);
		if (!draining)
			sock_start(TAILQ_LAST(&socks, sock_head));
		break;
	case IMSG_SOCKET_METRICS:
		take_metrics(imsg);
		break;
	default:
		proc_unexpected(c, imsg);
	}
}

static void
upstream_message(struct chan *c, struct imsg *imsg)
{
	struct query_fail	 qf;
	struct upstream_status	 us;
	struct tap_counts	 tc;

	switch (imsg->hdr.type) {
	case IMSG_CTL_END:
		msg_need(c, imsg, sizeof(tc), sizeof(tc), MSG_NO_FD);
		memcpy(&tc, imsg->data, sizeof(tc));
		control_upstream_end(imsg->hdr.peerid, &tc);
		break;
	case IMSG_ANSWER:
		msg_need(c, imsg, DNS_HDR_LEN, DNS_MAX_MSG, MSG_NO_FD);
		answer_request(imsg->hdr.peerid, imsg->data, imsg->len);
		break;
	case IMSG_FAIL:
		msg_need(c, imsg, sizeof(qf), sizeof(qf), MSG_NO_FD);
		memcpy(&qf, imsg->data, sizeof(qf));
		qf.text[sizeof(qf.text) - 1] = '\0';
		fail_request(imsg->hdr.peerid, qf.ede, qf.text);
		break;
	case IMSG_CTL_UPSTREAM:
		msg_need(c, imsg, sizeof(us), sizeof(us), MSG_NO_FD);
		memcpy(&us, imsg->data, sizeof(us));
		us.label[sizeof(us.label) - 1] = '\0';
		us.tls_version[sizeof(us.tls_version) - 1] = '\0';
		us.last_error[sizeof(us.last_error) - 1] = '\0';
		control_upstream(imsg->hdr.peerid, &us);
		break;
	default:
		proc_unexpected(c, imsg);
	}
}

/* UDP */

/*
 * Each query is read into a slot of UDP_SLOT bytes, the slots packed
 * together, so that a batch of the usual short queries touches a few
 * pages, not one for each query.  A longer one runs on into a buffer of
 * its own, the slot's bytes are copied in front of it, and it is read
 * from there: those pages are touched by long queries alone.
 */
#define UDP_SLOT	512

static void
udp_read(int fd, short event, void *arg)
{
	static struct mmsghdr		 msgs[UDP_BATCH];
	static struct iovec		 iov[UDP_BATCH][2];
	static struct sockaddr_storage	 from[UDP_BATCH];
	static uint8_t			 slots[UDP_BATCH][UDP_SLOT];
	static uint8_t			 longer[UDP_BATCH][DNS_MAX_MSG];
	static int			 ready;
	uint8_t				*q;
	int				 n, i;

	(void)event;
	(void)arg;
	if (!ready) {
		for (i = 0; i < UDP_BATCH; i++) {
			iov[i][0].iov_base = slots[i];
			iov[i][0].iov_len = UDP_SLOT;
			iov[i][1].iov_base = longer[i] + UDP_SLOT;
			iov[i][1].iov_len = DNS_MAX_MSG - UDP_SLOT;
			msgs[i].msg_hdr.msg_iov = iov[i];
			msgs[i].msg_hdr.msg_iovlen = 2;
			msgs[i].msg_hdr.msg_name = &from[i];
			msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
		ready = 1;
	}
	if ((n = recvmmsg(fd, msgs, UDP_BATCH, MSG_DONTWAIT, NULL)) == -1) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("recvmmsg");
		return;
	}
	/* only the address lengths of the messages read have changed */
	for (i = 0; i < n; i++) {
		q = slots[i];
		if (msgs[i].msg_len > UDP_SLOT) {
			memcpy(longer[i], slots[i], UDP_SLOT);
			q = longer[i];
		}
		handle_query(q, msgs[i].msg_len, fd, NULL, &from[i],
		    msgs[i].msg_hdr.msg_namelen);
		msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	udp_flush();
	chan_update(&upstream);
}

/* Queries */

static struct request *
request_find_key(const uint8_t *q, size_t qlen, uint32_t h)
{
	struct request	*r;

	LIST_FOREACH(r, &reqs_by_key[h & (REQ_HASH_SIZE - 1)], kentry)
		if (r->keyhash == h && r->qlen == qlen &&
		    memcmp(r->q, q, qlen) == 0)
			return r;
	return NULL;
}

static struct request *
request_find_id(const struct req_list *by_id, uint32_t qid)
{
	struct request	*r;

	LIST_FOREACH(r, &by_id[qid & (REQ_HASH_SIZE - 1)], ientry)
		if (r->qid == qid)
			return r;
	return NULL;
}

/* For qid_pick(): does a request in the table by ID have this ID? */
static int
qid_taken(const void *by_id, uint32_t qid)
{
	return request_find_id(by_id, qid) != NULL;
}

static struct request *
request_new(const uint8_t *q, size_t qlen, uint32_t h)
{
	struct request	*r;
	int64_t		 ms;

	if (nrequests >= MAX_REQUESTS)
		return NULL;
	if ((r = malloc(sizeof(*r) + qlen)) == NULL)
		return NULL;
	memcpy(r->q, q, qlen);
	r->qlen = qlen;
	if (dns_parse(r->q, qlen, &r->qm) == -1) {
		free(r);
		return NULL;
	}
	r->qid = qid_pick(next_qid, qid_taken, reqs_by_id);
	next_qid = r->qid + 1;
	r->keyhash = h;
	TAILQ_INIT(&r->waiters);
	mono_time(&r->deadline);
	ms = QUERY_TIMEOUT_MS;
	r->deadline.tv_sec += ms / 1000;
	r->deadline.tv_nsec += (ms % 1000) * 1000000;
	if (r->deadline.tv_nsec >= 1000000000) {
		r->deadline.tv_sec++;
		r->deadline.tv_nsec -= 1000000000;
	}
	LIST_INSERT_HEAD(&reqs_by_id[r->qid & (REQ_HASH_SIZE - 1)], r,
	    ientry);
	LIST_INSERT_HEAD(&reqs_by_key[h & (REQ_HASH_SIZE - 1)], r, kentry);
	TAILQ_INSERT_TAIL(&reqs_by_time, r, tentry);
	nrequests++;
	r->stale = STALE_NONE;
	if (conf->serve_stale && cache != NULL) {
		r->stale = STALE_WAIT;
		r->stale_ms = mono_ms() + STALE_AFTER_MS;
		TAILQ_INSERT_TAIL(&reqs_by_stale, r, sentry);
	}
	if (TAILQ_FIRST(&reqs_by_time) == r ||
	    TAILQ_FIRST(&reqs_by_stale) == r)
		timer_update();
	return r;
}

static void
request_free(struct request *r)
{
	struct cquery	*cq;

	while ((cq = TAILQ_FIRST(&r->waiters)) != NULL)
		cquery_free(cq);
	LIST_REMOVE(r, ientry);
	LIST_REMOVE(r, kentry);
	TAILQ_REMOVE(&reqs_by_time, r, tentry);
	if (r->stale == STALE_WAIT)
		TAILQ_REMOVE(&reqs_by_stale, r, sentry);
	nrequests--;
	free(r);
	if (draining == DRAIN_WAIT && nrequests == 0)
		drain_done(-1, 0, NULL);
}

void
cquery_free(struct cquery *cq)
{
	if (cq->req != NULL)
		TAILQ_REMOVE(&cq->req->waiters, cq, rentry);
	if (cq->tc != NULL)
		tcp_query_remove(cq->tc, cq);
	free(cq);
}

/* A client's query, remembered until it is answered. */
static struct cquery *
cquery_new(const uint8_t *q, const struct dns_msg *qm, int fd,
    struct tcpc *tc, const struct sockaddr_storage *from, socklen_t fromlen)
{
	struct cquery	*cq;
	size_t		 keep;

	/* what an answer needs of the query: header, question */
	keep = qm->qend > 0 ? qm->qend : DNS_HDR_LEN;
	if ((cq = calloc(1, sizeof(*cq) + keep)) == NULL) {
		log_warn("calloc");
		return NULL;
	}
	memcpy(cq->q, q, keep);
	cq->qlen = keep;
	if (conf->log_queries || tap_on())
		mono_time(&cq->t0);
	cq->qm = *qm;
	cq->fd = fd;
	cq->from = *from;
	cq->fromlen = fromlen;
	if (tc != NULL) {
		cq->tc = tc;
		tcp_query_add(tc, cq);
	}
	return cq;
}

/*
 * The query as it goes upstream and as the cache and the requests in
 * flight know it: ID 0, the name in lower case.  Returns its length, 0
 * on failure.
 */
static size_t
canonical_query(uint8_t *out, size_t outlen, const uint8_t *q,
    const struct dns_msg *qm)
{
	size_t	len;

	if ((len = dns_make_query(out, outlen, q, qm, 0, 0)) == 0 ||
	    dns_qname_lower(out, len, qm) == -1)
		return 0;
	return len;
}

/*
 * Check a client's message.  One that is not a DNS query is dropped; a
 * client over its rate limit or outside the access list is refused (over
 * UDP, a client over its rate limit gets nothing); a query this proxy
 * does not take gets its error.  Returns the query to answer, NULL if
 * that is done.
 */
static struct cquery *
query_validate(const uint8_t *q, size_t qlen, int fd, struct tcpc *tc,
    const struct sockaddr_storage *from, socklen_t fromlen)
{
	struct cquery	*cq;
	struct dns_msg	 qm;
	int		 rcode;

	if (tc != NULL)
		listener_counters.queries_tcp++;
	else
		listener_counters.queries_udp++;
	if ((rcode = dns_check_query(q, qlen, &qm)) == -1) {
		listener_counters.dropped++;
		return NULL;
	}
	if ((cq = cquery_new(q, &qm, fd, tc, from, fromlen)) == NULL)
		return NULL;
	tap_client_msg(cq, DNSTAP_CLIENT_QUERY, q, qlen);
	if (ratelimit != NULL && !ratelimit_allow(ratelimit,
	    (const struct sockaddr *)from, mono_ms())) {
		listener_counters.ratelimited++;
		note_client(CLIENT_RATELIMITED, from);
		if (tc == NULL)
			cquery_free(cq);	/* UDP: drop, nothing to reflect */
		else
			reply_error(cq, DNS_RCODE_REFUSED, EDE_PROHIBITED,
			    "rate limit exceeded");
		return NULL;
	}
	if (!acl_allowed(conf, (const struct sockaddr *)from)) {
		listener_counters.refused_acl++;
		note_client(CLIENT_REFUSED, from);
		reply_error(cq, DNS_RCODE_REFUSED, EDE_PROHIBITED,
		    "client not in the access list");
		return NULL;
	}
	if (rcode != DNS_RCODE_NOERROR) {
		reply_error(cq, rcode, -1, NULL);
		return NULL;
	}
	return cq;
}

/*
 * Answer a query from the cache, by its canonical form key, and refresh
 * an answer in the last tenth of its TTL.  0: sent.
 */
static int
answer_from_cache(struct cquery *cq, const uint8_t *key, size_t keylen,
    uint32_t h)
{
	struct cache_hit	hit;
	int			due;

	if (cache == NULL || !cache_lookup(cache, key, keylen, h,
	    mono_ms() / 1000, &hit))
		return -1;
	due = conf->prefetch && cache_prefetch_due(hit.ttl, hit.age);
	if (reply_hit(cq, &hit) == -1)	/* a fresh one: cache_lookup() */
		return -1;
	if (due)
		prefetch(key, keylen, h);
	return 0;
}

/*
 * A client's message: check it, answer it from the cache if it can be,
 * and send the rest upstream, sharing a request with identical queries.
 */
void
handle_query(const uint8_t *q, size_t qlen, int fd, struct tcpc *tc,
    const struct sockaddr_storage *from, socklen_t fromlen)
{
	struct cquery	*cq;
	uint8_t		 key[DNS_MAX_MSG];
	size_t		 keylen;
	uint32_t	 h;

	if ((cq = query_validate(q, qlen, fd, tc, from, fromlen)) == NULL)
		return;
	if ((keylen = canonical_query(key, sizeof(key), q, &cq->qm)) == 0) {
		reply_error(cq, DNS_RCODE_SERVFAIL, EDE_OTHER,
		    "internal error");
		return;
	}
	h = cache_hash(hash_key, key, keylen);
	if (answer_from_cache(cq, key, keylen, h) == 0)
		return;
	forward(cq, key, keylen, h);
}

/*
 * Send a client's query on to the upstream process, or let it join an
 * identical one in flight.  One that cannot go gets a stale answer if
 * there is one, SERVFAIL if not.
 */
static void
forward(struct cquery *cq, const uint8_t *key, size_t keylen, uint32_t h)
{
	struct request	*r;

	if (!upstream_up || draining != DRAIN_OFF) {
		reply_fail(cq, key, keylen, h, EDE_NOT_READY,
		    draining != DRAIN_OFF ? "shutting down" :
		    "upstream process restarting");
		return;
	}
	if ((r = request_find_key(key, keylen, h)) != NULL) {
		/* its clients were answered stale: so is this one */
		if (r->stale == STALE_PAST &&
		    reply_stale(cq, key, keylen, h) == 0)
			return;
		listener_counters.coalesced++;
	} else {
		if ((r = request_new(key, keylen, h)) == NULL) {
			reply_fail(cq, key, keylen, h, EDE_OTHER,
			    "too many queries in flight");
			return;
		}
		if (imsg_compose(&upstream.ibuf, IMSG_QUERY, r->qid, -1,
		    key, keylen) == -1) {
			request_free(r);
			reply_fail(cq, key, keylen, h, EDE_OTHER,
			    "upstream process busy");
			return;
		}
	}
	cq->req = r;
	TAILQ_INSERT_TAIL(&r->waiters, cq, rentry);
}

/*
 * Prefetch: ask the upstreams again for a cached answer near the end of
 * its TTL, with no client waiting; the answer replaces the one cached.
 * Not if the question is in flight already: one refresh at a time.
 */
static void
prefetch(const uint8_t *key, size_t keylen, uint32_t h)
{
	struct request	*r;

	if (!upstream_up || draining != DRAIN_OFF ||
	    request_find_key(key, keylen, h) != NULL)
		return;
	if ((r = request_new(key, keylen, h)) == NULL)
		return;
	if (imsg_compose(&upstream.ibuf, IMSG_QUERY, r->qid, -1, key,
	    keylen) == -1) {
		request_free(r);
		return;
	}
	listener_counters.prefetches++;
}

static size_t
client_limit(const struct cquery *cq)
{
	size_t	lim;

	if (cq->tc != NULL)
		return DNS_MAX_MSG;
	if (!cq->qm.edns)
		return DNS_MIN_UDP;
	lim = cq->qm.udpsize < DNS_MIN_UDP ? DNS_MIN_UDP : cq->qm.udpsize;
	return lim > udp_max ? udp_max : lim;
}

/*
 * UDP answers wait here until the end of the event callback that made
 * them, then leave in one sendmmsg() per socket.
 */
void
udp_flush(void)
{
	struct mmsghdr	 msgs[UDP_BATCH];
	struct iovec	 iov[UDP_BATCH];
	int		 i = 0, j, k, n, sent;

	while (i < n_udp_out) {
		for (j = i; j < n_udp_out && udp_out[j].fd == udp_out[i].fd;
		    j++) {
			k = j - i;
			memset(&msgs[k], 0, sizeof(msgs[k]));
			iov[k].iov_base = udp_out[j].buf;
			iov[k].iov_len = udp_out[j].len;
			msgs[k].msg_hdr.msg_iov = &iov[k];
			msgs[k].msg_hdr.msg_iovlen = 1;
			msgs[k].msg_hdr.msg_name = &udp_out[j].to;
			msgs[k].msg_hdr.msg_namelen = udp_out[j].tolen;
		}
		for (sent = 0; sent < j - i; sent += n) {
			n = sendmmsg(udp_out[i].fd, msgs + sent, j - i - sent,
			    0);
			if (n == -1 && errno == EINTR) {
				n = 0;
				continue;
			}
			if (n <= 0) {
				/* UDP: what the socket will not take is lost */
				log_debug("sendmmsg: %s", strerror(errno));
				sent++;
				n = 0;
			}
		}
		i = j;
	}
	n_udp_out = 0;
	udp_bytes_used = 0;
}

/* Send a finished answer and forget the client's query. */
static void
reply(struct cquery *cq, const uint8_t *msg, size_t len, const char *how)
{
	struct udp_reply	*u;

	if (len >= DNS_HDR_LEN)
		listener_counters.rcode[DNS_F_RCODE(dns_get16(msg + 2))]++;
	if (conf->log_queries)
		log_query(cq, msg, len, how, conf->log_queries == 2);
	tap_client_msg(cq, DNSTAP_CLIENT_RESPONSE, msg, len);
	if (cq->tc != NULL)
		tcp_send(cq->tc, msg, len);
	else if (len > DNS_EDNS_UDP_MAX) {
		if (sendto(cq->fd, msg, len, 0, (struct sockaddr *)&cq->from,
		    cq->fromlen) == -1)
			log_debug("sendto: %s", strerror(errno));
	} else {
		if (n_udp_out == UDP_BATCH ||
		    sizeof(udp_bytes) - udp_bytes_used < len)
			udp_flush();
		u = &udp_out[n_udp_out++];
		u->fd = cq->fd;
		u->to = cq->from;
		u->tolen = cq->fromlen;
		u->len = len;
		u->buf = udp_bytes + udp_bytes_used;
		memcpy(u->buf, msg, len);
		udp_bytes_used += len;
	}
	cquery_free(cq);
}

/* dnstap: a client's message, with our address when it came over UDP. */
static void
tap_client_msg(const struct cquery *cq, enum dnstap_type type,
    const uint8_t *msg, size_t len)
{
	const struct sockaddr_storage	*local = NULL;
	struct sock			*s;

	if (!tap_on())
		return;
	if (cq->tc == NULL)
		TAILQ_FOREACH(s, &socks, entry)
			if (s->fd == cq->fd) {
				local = &s->ss;
				break;
			}
	tap_client(cq, type, msg, len, local);
}

/*
 * An answer of our own.  RA says recursion is available, as it is to
 * every client in the access list, and only to those.
 */
static void
reply_error(struct cquery *cq, int rcode, int ede, const char *text)
{
	size_t	len;
	int	ra;

	ra = acl_allowed(conf, (const struct sockaddr *)&cq->from);
	len = dns_make_error(outbuf, sizeof(outbuf), cq->q, cq->qlen, &cq->qm,
	    rcode, ede, text, ra);
	if (len == 0) {
		cquery_free(cq);
		return;
	}
	reply(cq, outbuf, len, "local");
}

/*
 * Serve-stale (RFC 8767): the cache entry for key, expired but kept, if
 * serve-stale is on.  It may also be one still fresh.
 */
static int
stale_lookup(const uint8_t *key, size_t keylen, uint32_t h,
    struct cache_hit *hit)
{
	return conf->serve_stale && cache != NULL &&
	    cache_lookup_stale(cache, key, keylen, h, mono_ms() / 1000, hit);
}

/* Answer a client from a cache entry, fresh or stale.  Returns 0 if sent. */
static int
reply_hit(struct cquery *cq, const struct cache_hit *hit)
{
	size_t	len;

	if (!hit->stale) {
		len = dns_client_answer(outbuf, sizeof(outbuf), hit->answer,
		    hit->len, &hit->msg, cq->q, &cq->qm, hit->age,
		    client_limit(cq));
		if (len == 0)
			return -1;
		reply(cq, outbuf, len, "cache");
		return 0;
	}
	len = dns_stale_answer(outbuf, sizeof(outbuf), hit->answer, hit->len,
	    &hit->msg, cq->q, &cq->qm, STALE_TTL, client_limit(cq));
	if (len == 0)
		return -1;
	listener_counters.stale++;
	reply(cq, outbuf, len, "stale");
	return 0;
}

/* Answer a client stale, if the cache has an answer for key.  0: sent. */
static int
reply_stale(struct cquery *cq, const uint8_t *key, size_t keylen, uint32_t h)
{
	struct cache_hit	hit;

	if (!stale_lookup(key, keylen, h, &hit))
		return -1;
	return reply_hit(cq, &hit);
}

/* A query that cannot be forwarded: stale if it can be, else SERVFAIL. */
static void
reply_fail(struct cquery *cq, const uint8_t *key, size_t keylen, uint32_t h,
    int ede, const char *text)
{
	if (reply_stale(cq, key, keylen, h) == 0)
		return;
	reply_error(cq, DNS_RCODE_SERVFAIL, ede, text);
}

/*
 * Answer a request's waiting clients stale.  Returns 1 if the cache has
 * an answer to serve stale (whether or not clients were waiting), 0 if
 * not.  The request stays: its answer, if it comes, refreshes the cache.
 */
static int
answer_stale(struct request *r)
{
	struct cache_hit	 hit;
	struct cquery		*cq, *next;

	if (!stale_lookup(r->q, r->qlen, r->keyhash, &hit))
		return 0;
	for (cq = TAILQ_FIRST(&r->waiters); cq != NULL; cq = next) {
		next = TAILQ_NEXT(cq, rentry);
		(void)reply_hit(cq, &hit);	/* if not, it waits on */
	}
	return 1;
}

/*
 * Is the cached answer to r still fresh?  Then a prefetch's SERVFAIL
 * does not replace it.
 */
static int
fresh_kept(const struct request *r)
{
	struct cache_hit	hit;

	return cache != NULL && cache_lookup_stale(cache, r->q, r->qlen,
	    r->keyhash, mono_ms() / 1000, &hit) && !hit.stale;
}

/* Keep an upstream answer in the cache, without its padding. */
static void
store_answer(const struct request *r, const uint8_t *a,
    const struct dns_msg *am)
{
	struct dns_msg	cm;
	size_t		len;

	if ((len = dns_cache_form(outbuf, sizeof(outbuf), a, am)) == 0 ||
	    dns_parse(outbuf, len, &cm) == -1)
		return;
	(void)cache_store(cache, r->q, r->qlen, r->keyhash, outbuf, len, &cm,
	    mono_ms() / 1000);
}

static void
answer_request(uint32_t qid, const uint8_t *a, size_t alen)
{
	struct request	*r;
	struct cquery	*cq;
	struct dns_msg	 am;
	size_t		 len;

	if ((r = request_find_id(reqs_by_id, qid)) == NULL)
		return;		/* timed out meanwhile */
	if (dns_parse(a, alen, &am) == -1 ||
	    !dns_answers_question(a, alen, &am, r->q, r->qlen, &r->qm)) {
		log_warnx("upstream answer for query %u does not parse or "
		    "does not match", qid);
		fail_request(qid, EDE_OTHER, "invalid upstream answer");
		return;
	}
	/* an upstream's SERVFAIL gives way to a stale or fresh cached one */
	if (DNS_F_RCODE(am.flags) == DNS_RCODE_SERVFAIL &&
	    (answer_stale(r) || fresh_kept(r)))
		log_debug("query %u: SERVFAIL upstream, cached answer kept",
		    qid);
	else if (cache != NULL)
		store_answer(r, a, &am);
	while ((cq = TAILQ_FIRST(&r->waiters)) != NULL) {
		len = dns_client_answer(outbuf, sizeof(outbuf), a, alen, &am,
		    cq->q, &cq->qm, 0, client_limit(cq));
		if (len == 0)
			reply_error(cq, DNS_RCODE_SERVFAIL, EDE_OTHER,
			    "answer too large");
		else
			reply(cq, outbuf, len, "upstream");
	}
	request_free(r);
}

/* The counter of a failure from the upstreams. */
static enum upstream_fail
upstream_fail_kind(int ede)
{
	if (ede == EDE_NO_REACHABLE)
		return UPSTREAM_FAIL_UNREACHABLE;
	if (ede == EDE_NETWORK_ERROR)
		return UPSTREAM_FAIL_NETWORK;
	return UPSTREAM_FAIL_OTHER;
}

static void
fail_request(uint32_t qid, int ede, const char *text)
{
	struct request	*r;
	struct cquery	*cq;

	if ((r = request_find_id(reqs_by_id, qid)) == NULL)
		return;
	listener_counters.upstream_fail[upstream_fail_kind(ede)]++;
	(void)answer_stale(r);
	while ((cq = TAILQ_FIRST(&r->waiters)) != NULL)
		reply_error(cq, DNS_RCODE_SERVFAIL, ede, text);
	request_free(r);
}

/* The timer: at the first deadline or serve-stale time, whichever is first. */
static void
timer_update(void)
{
	struct request	*r, *sr;
	struct timespec	 ts;
	struct timeval	 tv;
	int64_t		 ms, sms;

	if ((r = TAILQ_FIRST(&reqs_by_time)) == NULL) {
		evtimer_del(&timer);
		return;
	}
	mono_time(&ts);
	ms = (r->deadline.tv_sec - ts.tv_sec) * 1000 +
	    (r->deadline.tv_nsec - ts.tv_nsec) / 1000000;
	if ((sr = TAILQ_FIRST(&reqs_by_stale)) != NULL &&
	    (sms = sr->stale_ms - mono_ms()) < ms)
		ms = sms;
	if (ms < 0)
		ms = 0;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(&timer, &tv);
}

static void
timer_fire(int fd, short event, void *arg)
{
	struct request	*r;
	struct timespec	 ts;
	int64_t		 ms;

	(void)fd;
	(void)event;
	(void)arg;
	ms = mono_ms();
	while ((r = TAILQ_FIRST(&reqs_by_stale)) != NULL &&
	    r->stale_ms <= ms) {
		TAILQ_REMOVE(&reqs_by_stale, r, sentry);
		r->stale = STALE_PAST;
		(void)answer_stale(r);
	}
	mono_time(&ts);
	while ((r = TAILQ_FIRST(&reqs_by_time)) != NULL) {
		if (r->deadline.tv_sec > ts.tv_sec ||
		    (r->deadline.tv_sec == ts.tv_sec &&
		    r->deadline.tv_nsec > ts.tv_nsec))
			break;
		fail_request(r->qid, EDE_NO_REACHABLE,
		    "no answer from any upstream in time");
	}
	udp_flush();
	timer_update();
}

/* The upstream process died: its queries fail now, not at the deadline. */
/* The upstream process is gone: what it had to answer fails now. */
static void
upstream_lost(void)
{
	struct request	*r;

	while ((r = TAILQ_FIRST(&reqs_by_time)) != NULL)
		fail_request(r->qid, EDE_NETWORK_ERROR,
		    "upstream process restarting");
}

/* After a reload: stop serving addresses the config no longer lists. */
static void
close_removed_sockets(void)
{
	struct sock	*s, *next;

	for (s = TAILQ_FIRST(&socks); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		if (config_listens(conf, &s->ss))
			continue;
		event_del(&s->ev);
		evtimer_del(&s->pause);
		close(s->fd);
		TAILQ_REMOVE(&socks, s, entry);
		free(s);
	}
}

/*
 * SIGTERM: take no new queries, answer those in flight, then exit;
 * after DRAIN_MS whatever is left gets SERVFAIL.
 */
static void
drain_start(int sig, short event, void *arg)
{
	struct sock	*s;
	struct timeval	 tv;

	(void)sig;
	(void)event;
	(void)arg;
	if (draining)
		return;
	draining = DRAIN_WAIT;
	TAILQ_FOREACH(s, &socks, entry) {
		event_del(&s->ev);
		evtimer_del(&s->pause);
	}
	if (nrequests == 0) {
		drain_done(-1, 0, NULL);
		return;
	}
	log_info("draining %d queries in flight", nrequests);
	tv.tv_sec = DRAIN_MS / 1000;
	tv.tv_usec = (DRAIN_MS % 1000) * 1000;
	evtimer_set(&drain_timer, drain_done, NULL);
	evtimer_add(&drain_timer, &tv);
}

static void
drain_done(int fd, short event, void *arg)
{
	struct request	*r;

	(void)fd;
	(void)event;
	(void)arg;
	draining = DRAIN_EXIT;	/* request_free must not come back here */
	while ((r = TAILQ_FIRST(&reqs_by_time)) != NULL)
		fail_request(r->qid, EDE_NOT_READY, "shutting down");
	udp_flush();
	audit_clients(-1, 0, NULL);	/* what this minute has counted */
	control_audit_flush();		/* and the commands not audited */
	tcp_flush_all();
	(void)imsg_flush(&parent.ibuf);
	exit(0);
}

int
listener_to_parent(uint32_t type, uint32_t id, const void *data, size_t len)
{
	if (imsg_compose(&parent.ibuf, type, id, -1, data, len) == -1)
		return -1;
	chan_update(&parent);
	return 0;
}

/* Queries were composed for the upstream process: have them sent. */
void
upstream_kick(void)
{
	chan_update(&upstream);
}

int
listener_to_upstream(uint32_t type, uint32_t id)
{
	if (!upstream_up ||
	    imsg_compose(&upstream.ibuf, type, id, -1, NULL, 0) == -1)
		return -1;
	chan_update(&upstream);
	return 0;
}

int
listener_upstream_ok(void)
{
	return upstream_up;
}

void
listener_cache_flush(void)
{
	if (cache != NULL)
		cache_flush(cache);
	proc_mem_trim();
	log_info("cache flushed");
}

int
listener_cache_stats(struct cache_stats *cs)
{
	if (cache == NULL)
		return -1;
	cache_get_stats(cache, cs);
	return 0;
}

int
listener_acl_allowed(const struct sockaddr *sa)
{
	return acl_allowed(conf, sa);
}

void
listener_gauges(int *tcp, int *inflight)
{
	*tcp = tcp_clients();
	*inflight = nrequests;
}
