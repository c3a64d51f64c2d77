/*
 * Inside the upstream process: what upstream.c (the process, its
 * upstreams, the queries and their tries, health) and upconn.c (the
 * TLS connections to an upstream) share.  Nothing else includes it.
 */
#ifndef DOTPROXYD_UPSTREAM_H
#define DOTPROXYD_UPSTREAM_H

#include <sys/types.h>
#include <sys/queue.h>

#include <event.h>
#include <stdint.h>
#include <tls.h>

#include "dns.h"
#include "dotproxyd.h"
#include "rtt.h"

#define SLOTS			256	/* in-flight queries per connection */
#define CONNECT_MS		3000	/* TCP connect and TLS handshake */
#define MAX_TRIES		3	/* of one query, hedges included */
#define IBUF_SIZE		16384

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
	int			 anchors_gen;	/* its upstream's, at its start */
	int			 with_anchors;	/* started with them alone */
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
	int			 nconns;	/* configured */
	int			 ninit;		/* set up: the most ever configured */
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
	int			 anchored;	/* 1: tlscfg has its anchors only;
						   -1: none found */
	int			 anchors_gen;	/* changes of tlscfg's CAs */
	uint8_t			*anchors;	/* PEM, the last picked */
	size_t			 anchors_len;
	int			 sessfd;	/* the TLS session store, or -1 */
	int			 announced_down;
	int			 removed;	/* by a reload, going away */
};

/*
 * upstream.c: the process, its upstreams and its queries.  The config,
 * the lists of upstreams and of queries and the listener's channel are
 * its own; a connection reaches them only through these.
 */
void		 timer_at(struct event *, int64_t);	/* at a mono_us() */
int64_t		 idle_timeout_us(void);
void		 listener_flush(void);	/* answers composed go out */
void		 flush_conns(void);	/* every connection's records */
/* an upstream's TLS session store, its waiting tries, its health */
void		 upstream_tls_forget(struct upstream *);
void		 upstream_tls_verified(struct upstream *, struct tls *);
int		 upstream_tls_failed(struct upstream *, const struct conn *);
int		 upstream_tls_store_failed(struct upstream *, const char *);
void		 upstream_unwait(struct upstream *);
int		 upstream_rto(const struct upstream *);
void		 upstream_up(struct upstream *);
int		 conn_close_counts(struct upstream *, enum fail_kind,
		    const char *, int, int, int, int64_t);
int		 keep_warm(const struct upstream *, const struct conn *);
/* a query: its tries, its deadline, its answer, its end */
int		 live_tries(const struct uquery *);
int		 query_dispatch(struct uquery *);
void		 query_arm(struct uquery *);
void		 query_answer(struct uquery *, const uint8_t *, size_t);
void		 query_free(struct uquery *);
/* health queries */
void		 probe_answered(struct uquery *);
void		 probe_conn(struct conn *);

/* upconn.c: a connection, from its choice for a try to its close */
void		 conn_init(struct conn *, struct upstream *);
struct conn	*pick_conn(struct upstream *, const struct uquery *,
		    struct conn **);
int		 conn_open(struct conn *);
void		 conn_send(struct conn *, struct utry *);
int		 conn_flush(struct conn *);
void		 conn_arm(struct conn *);
void		 conn_suspect(struct conn *, int64_t);
void		 conn_close(struct conn *, enum fail_kind, const char *);

#endif /* DOTPROXYD_UPSTREAM_H */
