/*
 * The listener: faces clients over UDP and TCP (RFC 7766), validates
 * queries, applies the access list, and exchanges queries and answers
 * with the upstream process.  It cannot open files or create sockets.
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
#include "qid.h"
#include "querylog.h"
#include "ratelimit.h"
#include "stats.h"

#define UDP_BATCH		64
#define TCP_MAX_CLIENTS		1000
#define TCP_IDLE_MS		10000
#define TCP_PARTIAL_MS		5000	/* to finish a message once begun */
#define TCP_MAX_PER_CLIENT	64
#define FD_RESERVE		128	/* besides TCP clients */
#define TCP_ANSWER_MAX		(2 + DNS_MAX_MSG)	/* an answer, its length */
#define TCP_CONN_BUDGET		(16 * TCP_ANSWER_MAX)	/* one connection */
#define TCP_OUT_BUDGET		(64 * 1024 * 1024)	/* all of them */
#define TCP_SHED_LOG_MS		60000	/* one line a minute about shedding */
#define MAX_REQUESTS		65536
#define REQ_HASH_SIZE		16384	/* power of two */

/* Where shutdown is, in draining: false until it begins. */
enum {
	DRAIN_OFF = 0,		/* serving */
	DRAIN_WAIT,		/* SIGTERM: answering the queries in flight */
	DRAIN_EXIT,		/* failing what is left, then exit */
};

struct request;
struct tcpc;

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

struct obuf {
	TAILQ_ENTRY(obuf)	 entry;
	size_t			 len;
	size_t			 off;
	uint8_t			 data[];
};

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

struct udp_reply {
	int			 fd;
	struct sockaddr_storage	 to;
	socklen_t		 tolen;
	size_t			 len;
	uint8_t			 buf[DNS_EDNS_UDP_MAX];
};

struct sock {
	TAILQ_ENTRY(sock)	 entry;
	int			 fd;
	int			 type;
	struct sockaddr_storage	 ss;
	struct event		 ev;
	struct event		 pause;		/* out of descriptors */
};

static void	 parent_dispatch(int, short, void *);
static void	 upstream_dispatch(int, short, void *);
static void	 udp_read(int, short, void *);
static void	 tcp_accept(int, short, void *);
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
static void	 handle_query(const uint8_t *, size_t, int, struct tcpc *,
		    const struct sockaddr_storage *, socklen_t);
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
static void	 answer_request(uint32_t, const uint8_t *, size_t);
static void	 fail_request(uint32_t, int, const char *);
static void	 request_free(struct request *);
static void	 cquery_free(struct cquery *);
static void	 timer_update(void);
static void	 timer_fire(int, short, void *);
static void	 apply_limits(void);
static void	 tcp_accept_resume(int, short, void *);
static void	 sock_start(struct sock *);
static void	 fd_limit(void);
static int64_t	 now_ms(void);
static void	 udp_flush(void);
static void	 upstream_lost(void);
static void	 close_removed_sockets(void);
static void	 drain_start(int, short, void *);
static void	 drain_done(int, short, void *);
static size_t	 client_limit(const struct cquery *);
static int	 take_startup_fd(struct imsg *);
static void	 add_socket(int, int, const struct sockaddr_storage *);

static struct dotproxyd_conf	*conf, *pending_conf;
static struct chan		 parent, upstream;
static TAILQ_HEAD(sock_head, sock) socks = TAILQ_HEAD_INITIALIZER(socks);
static TAILQ_HEAD(, tcpc)	 tcpcs = TAILQ_HEAD_INITIALIZER(tcpcs);
static TAILQ_HEAD(, request)	 reqs_by_time =
				    TAILQ_HEAD_INITIALIZER(reqs_by_time);
static TAILQ_HEAD(, request)	 reqs_by_stale =
				    TAILQ_HEAD_INITIALIZER(reqs_by_stale);
static LIST_HEAD(req_list, request) reqs_by_id[REQ_HASH_SIZE];
static LIST_HEAD(, request)	 reqs_by_key[REQ_HASH_SIZE];
static struct event		 timer;
static uint32_t			 next_qid = 1, hash_seed;
static int			 nrequests, ntcpc;
static size_t			 tcp_out_all;	/* answers queued, all TCP */
static uint64_t			 tcp_seq;
static int			 tcp_max_clients = TCP_MAX_CLIENTS;
static int			 upstream_fd = -1, control_fd = -1;
static int			 upstream_up, draining;
static struct event		 ev_sigterm, drain_timer;

static struct cache		*cache;
static size_t			 udp_max = DNS_EDNS_UDP;	/* edns udp size */
static struct ratelimit		*ratelimit;
struct listener_stats		 listener_counters;
static uint8_t			 outbuf[DNS_MAX_MSG + 2];
static struct udp_reply		 udp_out[UDP_BATCH];
static int			 n_udp_out;

static void
now(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static void
chan_kick_parent(void)
{
	chan_update(&parent);
}

__attribute__((__noreturn__)) void
listener_main(int debug, int verbose)
{
	struct sigaction	 sa;
	struct sock		*s;
	int			 i;

	(void)debug;
	log_procinit("listener");
	log_setverbose(verbose);
	setproctitle("listener");
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	if (imsgbuf_init(&parent.ibuf, PARENT_FD) == -1)
		fatal("imsgbuf_init");
	conf = proc_startup(&parent.ibuf, take_startup_fd);
	if (upstream_fd == -1 || control_fd == -1)
		fatalx("start-up is missing the upstream channel or the "
		    "control socket");
	if (imsgbuf_init(&upstream.ibuf, upstream_fd) == -1)
		fatal("imsgbuf_init");
	upstream_up = 1;
	hash_seed = arc4random();
	for (i = 0; i < REQ_HASH_SIZE; i++) {
		LIST_INIT(&reqs_by_id[i]);
		LIST_INIT(&reqs_by_key[i]);
	}

	event_init();	/* its epoll descriptor is made before the filter */
	signal_set(&ev_sigterm, SIGTERM, drain_start, NULL);
	signal_add(&ev_sigterm, NULL);
	apply_limits();
	fd_limit();
	/* from here on, even a fatal confinement error, through the parent */
	log_to_parent(&parent.ibuf, chan_kick_parent);
	audit_to_parent(&parent.ibuf, chan_kick_parent);
	sandbox_drop(PROC_LISTENER, conf);

	control_init(control_fd);
	parent.dispatch = parent_dispatch;
	parent.peer = "parent";
	parent.vital = 1;
	upstream.dispatch = upstream_dispatch;
	upstream.peer = "upstream process";
	chan_update(&parent);
	chan_update(&upstream);
	evtimer_set(&timer, timer_fire, NULL);
	evtimer_set(&audit_timer, audit_clients, NULL);
	arc4random_buf(anon_key, sizeof(anon_key));
	TAILQ_FOREACH(s, &socks, entry)
		sock_start(s);
	if (imsg_compose(&parent.ibuf, IMSG_STARTED, 0, -1, NULL, 0) == -1)
		fatal("imsg_compose");
	chan_update(&parent);
	/* messages that arrived behind the config */
	parent_dispatch(parent.ibuf.fd, 0, &parent);

	event_dispatch();
	exit(0);
}

static int64_t
now_ms(void)
{
	struct timespec	ts;

	now(&ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		fatal("getrlimit");
	if (rl.rlim_cur < want) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			fatal("setrlimit");
	}
	if (rl.rlim_cur < want)
		tcp_max_clients = rl.rlim_cur > 2 * FD_RESERVE ?
		    (int)(rl.rlim_cur - FD_RESERVE) : FD_RESERVE / 2;
	if (tcp_max_clients < TCP_MAX_CLIENTS)
		log_warnx("only %d TCP clients at a time: the descriptor limit "
		    "is %llu", tcp_max_clients,
		    (unsigned long long)rl.rlim_cur);
}

/* Serve a listening socket (once the event loop exists). */
static void
sock_start(struct sock *s)
{
	event_set(&s->ev, s->fd, EV_READ | EV_PERSIST,
	    s->type == SOCK_DGRAM ? udp_read : tcp_accept, s);
	event_add(&s->ev, NULL);
	evtimer_set(&s->pause, tcp_accept_resume, s);
}

static void
add_socket(int fd, int type, const struct sockaddr_storage *ss)
{
	struct sock	*s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		fatal("calloc");
	s->fd = fd;
	s->type = type;
	s->ss = *ss;
	TAILQ_INSERT_TAIL(&socks, s, entry);
}

static int
take_startup_fd(struct imsg *imsg)
{
	struct sockaddr_storage	ss;

	switch (imsg->hdr.type) {
	case IMSG_SOCKET_UDP:
	case IMSG_SOCKET_TCP:
		if (imsg->fd == -1 || imsg->len != sizeof(ss))
			return -1;
		memcpy(&ss, imsg->data, sizeof(ss));
		add_socket(imsg->fd, imsg->hdr.type == IMSG_SOCKET_UDP ?
		    SOCK_DGRAM : SOCK_STREAM, &ss);
		imsg->fd = -1;
		return 0;
	case IMSG_SOCKET_CONTROL:
		if (imsg->fd == -1 || imsg->len != 0 || control_fd != -1)
			return -1;
		control_fd = imsg->fd;
		imsg->fd = -1;
		return 0;
	case IMSG_PEER_FD:
		if (imsg->fd == -1 || imsg->len != 0 || upstream_fd != -1)
			return -1;
		upstream_fd = imsg->fd;
		imsg->fd = -1;
		return 0;
	}
	return -1;
}

static void
parent_dispatch(int fd, short event, void *arg)
{
	struct chan		*c = arg;
	struct imsg		 imsg;
	struct sockaddr_storage	 ss;
	ssize_t			 n;
	int			 r;

	(void)fd;
	chan_io(c, event);	/* the parent gone, we exit */
	while ((n = imsg_get(&c->ibuf, &imsg)) != 0) {
		if (n == -1)
			fatalx("malformed message from the parent");
		r = proc_parent_message(&imsg, conf, &pending_conf, &upstream,
		    &upstream_up, upstream_lost);
		if (r == 2) {
			config_free(conf);
			conf = pending_conf;
			pending_conf = NULL;
			log_setverbose(conf->verbose);
			apply_limits();
			close_removed_sockets();
			log_info("new configuration applied");
		}
		if (r != 0) {
			imsg_free(&imsg);
			continue;
		}
		switch (imsg.hdr.type) {
		case IMSG_CTL_RESULT:
			if (imsg.len == 0 || imsg.len > CTL_RESULT_MAX ||
			    ((char *)imsg.data)[imsg.len - 1] != '\0')
				fatalx("bad control result from the parent");
			control_result(imsg.hdr.peerid, imsg.data);
			break;
		case IMSG_SOCKET_UDP:
		case IMSG_SOCKET_TCP:
			if (imsg.fd == -1 || imsg.len != sizeof(ss))
				fatalx("bad socket message from the parent");
			memcpy(&ss, imsg.data, sizeof(ss));
			add_socket(imsg.fd, imsg.hdr.type == IMSG_SOCKET_UDP ?
			    SOCK_DGRAM : SOCK_STREAM, &ss);
			if (!draining)
				sock_start(TAILQ_LAST(&socks, sock_head));
			imsg.fd = -1;
			break;
		default:
			fatalx("unexpected message %u from the parent",
			    imsg.hdr.type);
		}
		imsg_free(&imsg);
	}
	udp_flush();
	chan_update(c);
}

static void
upstream_dispatch(int fd, short event, void *arg)
{
	struct chan		*c = arg;
	struct imsg		 imsg;
	struct query_fail	 qf;
	struct upstream_status	 us;
	ssize_t			 n;

	(void)fd;
	if (!chan_io(c, event)) {
		upstream_lost();
		udp_flush();
		return;
	}
	while ((n = imsg_get(&c->ibuf, &imsg)) != 0) {
		if (n == -1)
			fatalx("malformed message from the upstream process");
		switch (imsg.hdr.type) {
		case IMSG_ANSWER:
			if (imsg.len < DNS_HDR_LEN || imsg.len > DNS_MAX_MSG ||
			    imsg.fd != -1)
				fatalx("bad answer from the upstream process");
			answer_request(imsg.hdr.peerid, imsg.data, imsg.len);
			break;
		case IMSG_FAIL:
			if (imsg.len != sizeof(qf) || imsg.fd != -1)
				fatalx("bad failure from the upstream process");
			memcpy(&qf, imsg.data, sizeof(qf));
			qf.text[sizeof(qf.text) - 1] = '\0';
			fail_request(imsg.hdr.peerid, qf.ede, qf.text);
			break;
		case IMSG_CTL_UPSTREAM:
			if (imsg.len != sizeof(us) || imsg.fd != -1)
				fatalx("bad status from the upstream process");
			memcpy(&us, imsg.data, sizeof(us));
			us.label[sizeof(us.label) - 1] = '\0';
			us.tls_version[sizeof(us.tls_version) - 1] = '\0';
			us.last_error[sizeof(us.last_error) - 1] = '\0';
			control_upstream(imsg.hdr.peerid, &us);
			break;
		case IMSG_CTL_END:
			if (imsg.len != 0 || imsg.fd != -1)
				fatalx("bad status from the upstream process");
			control_upstream_end(imsg.hdr.peerid);
			break;
		default:
			fatalx("unexpected message %u from the upstream "
			    "process", imsg.hdr.type);
		}
		imsg_free(&imsg);
	}
	udp_flush();
	chan_update(c);
	chan_update(&upstream);
}

/* UDP */

static void
udp_read(int fd, short event, void *arg)
{
	struct mmsghdr		 msgs[UDP_BATCH];
	struct iovec		 iov[UDP_BATCH];
	struct sockaddr_storage	 from[UDP_BATCH];
	static uint8_t		 bufs[UDP_BATCH][DNS_MAX_MSG];
	int			 n, i;

	(void)event;
	(void)arg;
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < UDP_BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &from[i];
		msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	if ((n = recvmmsg(fd, msgs, UDP_BATCH, MSG_DONTWAIT, NULL)) == -1) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("recvmmsg");
		return;
	}
	for (i = 0; i < n; i++)
		handle_query(bufs[i], msgs[i].msg_len, fd, NULL, &from[i],
		    msgs[i].msg_hdr.msg_namelen);
	udp_flush();
	chan_update(&upstream);
}

/* TCP, RFC 7766 */

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

	i = cache_hash(hash_seed, tc->key, CLIENT_KEY_LEN) % SHARE_SLOTS;
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

static void
tcp_accept_resume(int fd, short event, void *arg)
{
	struct sock	*s = arg;

	(void)fd;
	(void)event;
	if (draining == DRAIN_OFF)
		event_add(&s->ev, NULL);
}

static void
tcp_accept(int fd, short event, void *arg)
{
	struct sock	*ls = arg;
	struct tcpc	*tc;
	struct timeval	 tv;
	int		 s, i;

	(void)event;
	for (i = 0; i < 32; i++) {
		if ((tc = calloc(1, sizeof(*tc))) == NULL) {
			log_warn("calloc");
			return;
		}
		tc->fromlen = sizeof(tc->from);
		s = accept4(fd, (struct sockaddr *)&tc->from, &tc->fromlen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (s == -1) {
			free(tc);
			if (errno == EMFILE || errno == ENFILE) {
				/* out of descriptors: pause, do not spin */
				log_warnx("accept: %s; pausing for a second",
				    strerror(errno));
				event_del(&ls->ev);
				tv.tv_sec = 1;
				tv.tv_usec = 0;
				evtimer_add(&ls->pause, &tv);
			} else if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				log_warn("accept");
			return;
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
			tc->partial_ms = now_ms();
		left = TCP_PARTIAL_MS - (now_ms() - tc->partial_ms);
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
 * Answers went out under the budget: take the queries that waited.  Or
 * the connection was shed: close it, now that nothing walks its queries.
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
	chan_update(&upstream);
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
	chan_update(&upstream);
}

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
	tc->write_ms = now_ms();
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
	if (!TAILQ_EMPTY(&tc->out) && now_ms() - tc->write_ms >= TCP_IDLE_MS) {
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
	if (now_ms() - logged_ms >= TCP_SHED_LOG_MS) {
		log_warnx("TCP answers waiting over %d MiB: closed %d "
		    "connections of the clients holding the most",
		    TCP_OUT_BUDGET >> 20, unlogged);
		logged_ms = now_ms();
		unlogged = 0;
	}
}

/*
 * Queue an answer.  A connection never holds more than its budget (the
 * room was kept when its query was taken), and all connections together
 * no more than TCP_OUT_BUDGET.
 */
static void
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
		tc->write_ms = now_ms();
	TAILQ_INSERT_TAIL(&tc->out, o, entry);
	tc->outbytes += o->len;
	tcp_out_all += o->len;
	tcp_update(tc);
	if (tcp_out_all > TCP_OUT_BUDGET)
		tcp_shed_heaviest();
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

/* For qid_pick(): has a request in the table by ID this one? */
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
	now(&r->deadline);
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
		r->stale_ms = now_ms() + STALE_AFTER_MS;
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

static void
cquery_free(struct cquery *cq)
{
	if (cq->req != NULL)
		TAILQ_REMOVE(&cq->req->waiters, cq, rentry);
	if (cq->tc != NULL) {
		LIST_REMOVE(cq, centry);
		cq->tc->inflight--;
		if (tcp_can_take(cq->tc) && tcp_has_message(cq->tc))
			event_active(&cq->tc->resume, EV_TIMEOUT, 1);
	}
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
	if (conf->log_queries)
		now(&cq->t0);
	cq->qm = *qm;
	cq->fd = fd;
	cq->from = *from;
	cq->fromlen = fromlen;
	if (tc != NULL) {
		cq->tc = tc;
		LIST_INSERT_HEAD(&tc->queries, cq, centry);
		tc->inflight++;
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
	if (ratelimit != NULL && !ratelimit_allow(ratelimit,
	    (const struct sockaddr *)from, now_ms())) {
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

/* Answer a query from the cache, by its canonical form key.  0: sent. */
static int
answer_from_cache(struct cquery *cq, const uint8_t *key, size_t keylen,
    uint32_t h)
{
	struct cache_hit	hit;

	if (cache == NULL || !cache_lookup(cache, key, keylen, h,
	    now_ms() / 1000, &hit))
		return -1;
	return reply_hit(cq, &hit);	/* a fresh one: cache_lookup() */
}

/*
 * A client's message: check it, answer it from the cache if it can be,
 * and send the rest upstream, sharing a request with identical queries.
 */
static void
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
	h = cache_hash(hash_seed, key, keylen);
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
static void
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
	if (cq->tc != NULL)
		tcp_send(cq->tc, msg, len);
	else if (len > sizeof(u->buf)) {
		if (sendto(cq->fd, msg, len, 0, (struct sockaddr *)&cq->from,
		    cq->fromlen) == -1)
			log_debug("sendto: %s", strerror(errno));
	} else {
		if (n_udp_out == UDP_BATCH)
			udp_flush();
		u = &udp_out[n_udp_out++];
		u->fd = cq->fd;
		u->to = cq->from;
		u->tolen = cq->fromlen;
		u->len = len;
		memcpy(u->buf, msg, len);
	}
	cquery_free(cq);
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
	    cache_lookup_stale(cache, key, keylen, h, now_ms() / 1000, hit);
}

/* Answer a client from a cache entry, fresh or stale.  Returns 0 if sent. */
static int
reply_hit(struct cquery *cq, const struct cache_hit *hit)
{
	size_t	len;

	if (!hit->stale) {
		len = dns_client_answer(outbuf, sizeof(outbuf), hit->answer,
		    hit->len, hit->msg, cq->q, &cq->qm, hit->age,
		    client_limit(cq));
		if (len == 0)
			return -1;
		reply(cq, outbuf, len, "cache");
		return 0;
	}
	len = dns_stale_answer(outbuf, sizeof(outbuf), hit->answer, hit->len,
	    hit->msg, cq->q, &cq->qm, STALE_TTL, client_limit(cq));
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
	    now_ms() / 1000);
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
	/* serve-stale: an upstream's SERVFAIL gives way to a kept answer */
	if (DNS_F_RCODE(am.flags) == DNS_RCODE_SERVFAIL && answer_stale(r))
		log_debug("query %u: SERVFAIL upstream, stale answer kept",
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
	now(&ts);
	ms = (r->deadline.tv_sec - ts.tv_sec) * 1000 +
	    (r->deadline.tv_nsec - ts.tv_nsec) / 1000000;
	if ((sr = TAILQ_FIRST(&reqs_by_stale)) != NULL &&
	    (sms = sr->stale_ms - now_ms()) < ms)
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
	ms = now_ms();
	while ((r = TAILQ_FIRST(&reqs_by_stale)) != NULL &&
	    r->stale_ms <= ms) {
		TAILQ_REMOVE(&reqs_by_stale, r, sentry);
		r->stale = STALE_PAST;
		(void)answer_stale(r);
	}
	now(&ts);
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
static void
upstream_lost(void)
{
	struct request	*r;

	log_warnx("lost the upstream process");
	upstream_up = 0;
	if (event_initialized(&upstream.ev))
		event_del(&upstream.ev);
	upstream.events = 0;
	imsgbuf_clear(&upstream.ibuf);
	close(upstream.ibuf.fd);
	while ((r = TAILQ_FIRST(&reqs_by_time)) != NULL)
		fail_request(r->qid, EDE_NETWORK_ERROR,
		    "upstream process restarting");
}

/* After a reload: stop serving addresses the config no longer lists. */
static void
close_removed_sockets(void)
{
	struct sock		*s, *next;
	struct listen_conf	*l;
	int			 found;

	for (s = TAILQ_FIRST(&socks); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		found = 0;
		TAILQ_FOREACH(l, &conf->listens, entry)
			if (memcmp(&l->ss, &s->ss, sizeof(s->ss)) == 0)
				found = 1;
		if (found)
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
	struct tcpc	*tc, *next;

	(void)fd;
	(void)event;
	(void)arg;
	draining = DRAIN_EXIT;	/* request_free must not come back here */
	while ((r = TAILQ_FIRST(&reqs_by_time)) != NULL)
		fail_request(r->qid, EDE_NOT_READY, "shutting down");
	udp_flush();
	audit_clients(-1, 0, NULL);	/* what this minute has counted */
	control_audit_flush();		/* and the commands not audited */
	for (tc = TAILQ_FIRST(&tcpcs); tc != NULL; tc = next) {
		next = TAILQ_NEXT(tc, entry);	/* tcp_write may free tc */
		if (!TAILQ_EMPTY(&tc->out))
			tcp_write(tc->fd, EV_WRITE, tc);
	}
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

void
listener_gauges(int *tcp, int *inflight)
{
	*tcp = ntcpc;
	*inflight = nrequests;
}
