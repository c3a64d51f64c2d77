/*
 * dotproxyd: configuration, messages between processes, entry points.
 */
#ifndef DOTPROXYD_H
#define DOTPROXYD_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdint.h>
#include <unistd.h>

#define DOTPROXYD_VERSION	"0.1.0"
#define DOTPROXYD_CONF		"/etc/dotproxyd.conf"
#define DOTPROXYD_USER		"_dotproxyd"
#define DOTPROXYD_CHROOT	"/var/empty"
#define DOTPROXYD_SOCKET	"/run/dotproxyd.sock"
#ifdef __OpenBSD__
#define DOTPROXYD_CA		"/etc/ssl/cert.pem"
#else
#define DOTPROXYD_CA		"/etc/ssl/certs/ca-certificates.crt"
#endif

#define PARENT_FD		3	/* a child's end of its parent channel */
#define CTL_RESULT_MAX		1024	/* IMSG_CTL_RESULT, its NUL included */

#define DEFAULT_DNS_PORT	53
#define DEFAULT_DOT_PORT	853
#define DEFAULT_METRICS_PORT	9153	/* Prometheus' port for DNS servers */
#define DEFAULT_TLS_CONNS	2
#define MAX_TLS_CONNS		64
#define DEFAULT_CACHE_SIZE	10000
#define MAX_CACHE_SIZE		10000000
#define MAX_PINS		8
#define SPKI_HASH_LEN		32
#define MAX_RATELIMIT		1000000
#define QUERY_TIMEOUT_MS	4000	/* listener gives up on upstream */
#define UPSTREAM_TRY_MS		1500	/* the longest a try waits alone */
#define DEFAULT_TLS_IDLE	8	/* seconds: below providers' ~10 s */
#define MAX_TLS_IDLE		3600
#define DEFAULT_STALE_MAX	86400	/* seconds past expiry (RFC 8767) */
#define MAX_STALE_MAX		(7 * 86400)
#define STALE_AFTER_MS		1800	/* serve-stale: client waited this */
#define STALE_TTL		30	/* RFC 8767 4: TTL of a stale answer */
#define DRAIN_MS		2000	/* in-flight queries at shutdown */
#define DNSTAP_RETRY_MS		1000	/* connects to an absent collector */
#define RESPAWN_WINDOW		30	/* seconds: */
#define RESPAWN_MAX		5	/* this many deaths in it is a loop */

enum proc_type {
	PROC_PARENT,
	PROC_LISTENER,
	PROC_UPSTREAM,
};

enum imsg_type {
	IMSG_NONE,
	IMSG_LOG,		/* child -> parent: struct log_msg */
	IMSG_CONF_MAIN,		/* parent -> child: struct dotproxyd_conf */
	IMSG_CONF_LISTEN,	/* struct listen_conf */
	IMSG_CONF_UPSTREAM,	/* struct upstream_conf */
	IMSG_CONF_ACL,		/* struct acl_conf */
	IMSG_CONF_END,		/* empty: apply what came since CONF_MAIN */
	IMSG_SOCKET_UDP,	/* fd: a bound UDP socket */
	IMSG_SOCKET_TCP,	/* fd: a listening TCP socket */
	IMSG_SOCKET_CONTROL,	/* fd: the listening control socket */
	IMSG_SOCKET_METRICS,	/* fd: the metrics TCP socket, its address */
	IMSG_CA_FD,		/* fd: the CA bundle, read once */
	IMSG_PEER_FD,		/* fd: socketpair to the other child */
	IMSG_STARTED,		/* child -> parent: confined, serving */
	IMSG_QUERY,		/* listener -> upstream: peerid, wire query */
	IMSG_ANSWER,		/* upstream -> listener: peerid, wire answer */
	IMSG_FAIL,		/* upstream -> listener: struct query_fail */
	IMSG_AUDIT,		/* child -> parent: struct audit_msg */
	IMSG_CTL_RELOAD,	/* listener -> parent: peerid = control id */
	IMSG_CTL_LOG,		/* listener -> parent -> children: int */
	IMSG_CTL_RESULT,	/* parent -> listener: peerid, text */
	IMSG_CTL_STATUS,	/* listener -> upstream: peerid */
	IMSG_CTL_UPSTREAM,	/* upstream -> listener: upstream_status */
	IMSG_CTL_END,		/* upstream -> listener: peerid */
	IMSG_NETWORK_CHANGED,	/* parent -> upstream: empty */
	IMSG_HEARTBEAT,		/* parent -> child: empty; back: heartbeat */
	IMSG_DNSTAP_FD,		/* parent -> child: fd, the dnstap collector */
	IMSG_DNSTAP_NEEDFD,	/* child -> parent: empty, wants a new one */
};

/* A child's answer to the parent's heartbeat: alive, and how it fares. */
struct heartbeat {
	uint64_t	queries;	/* listener: client queries so far */
	int		upstreams;	/* upstream process: configured, */
	int		upstreams_up;	/* and of those not failing */
};

/* One upstream as the upstream process sees it, for status and metrics. */
struct upstream_status {
	char		label[300];
	int		up;		/* not backing off */
	char		state[12];	/* up, suspect, down, probing */
	int		conns;		/* open, ready */
	int		inflight;
	int		latency_ms;	/* moving average */
	int		srtt_ms;	/* smoothed round trip, 0: none yet */
	int		rttvar_ms;
	int		rto_ms;		/* a try's timeout now */
	char		tls_version[16];
	uint64_t	queries;
	uint64_t	answers;
	uint64_t	handshakes;
	uint64_t	resumed;
	uint64_t	failures;
	uint64_t	auth_failures;
	uint64_t	dropped;	/* unsolicited or mismatched answers */
	uint64_t	retries;
	uint64_t	timeouts;	/* tries unanswered in their time */
	uint64_t	hedged;		/* second tries sent beside a first */
	uint64_t	late;		/* answers to tries already done */
	uint64_t	requeued;	/* sent again after a server's close */
	uint64_t	probes;		/* health queries of our own */
	uint64_t	dead;		/* connections found silent, closed */
	uint64_t	resource_errors; /* no socket for a connection */
	char		last_error[96];
};

/* A process's dnstap records; IMSG_CTL_END carries the upstream's. */
struct tap_counts {
	uint64_t	sent;		/* written to the collector */
	uint64_t	dropped;	/* no collector, no room, cut off */
};

struct log_msg {
	int		priority;
	char		text[1024];
};

struct query_fail {
	int		ede;		/* RFC 8914 code */
	char		text[96];
};

struct listen_conf {
	TAILQ_ENTRY(listen_conf)	 entry;
	struct sockaddr_storage		 ss;
};

struct upstream_conf {
	TAILQ_ENTRY(upstream_conf)	 entry;
	struct sockaddr_storage		 ss;
	char				 name[256];
	uint8_t				 pins[MAX_PINS][SPKI_HASH_LEN];
	int				 npins;
};

struct acl_conf {
	TAILQ_ENTRY(acl_conf)		 entry;
	int				 af;
	uint8_t				 addr[16];
	int				 plen;
};

struct dotproxyd_conf {
	char				 user[64];
	uid_t				 uid;
	gid_t				 gid;
	char				 chroot[PATH_MAX];
	char				 tls_ca[PATH_MAX];
	char				 control_path[sizeof(((struct
					     sockaddr_un *)0)->sun_path)];
	char				 audit_log[PATH_MAX];
	char				 dnstap_path[sizeof(((struct
					     sockaddr_un *)0)->sun_path)];
	int				 dnstap_anonymize;
	int				 tls_connections;
	int				 tls_idle;	/* seconds */
	int				 cache_size;	/* 0: off */
	int				 serve_stale;	/* 0: off */
	int				 stale_max;	/* seconds past expiry */
	int				 prefetch;	/* 0: off */
	int				 ratelimit;	/* 0: off */
	int				 ratelimit_burst;
	int				 log_queries;	/* 0, 1, 2: anon */
	int				 verbose;
	int				 edns_udp_size;	/* UDP answer cap */
	struct sockaddr_storage		 metrics;	/* AF_UNSPEC: none */
	TAILQ_HEAD(, listen_conf)	 listens;
	TAILQ_HEAD(, upstream_conf)	 upstreams;
	TAILQ_HEAD(, acl_conf)		 acls;
};

/* parse.y: the grammar and its lexer */
struct dotproxyd_conf	*parse_config(const char *, int);
void			 parse_errors_to_log(int);

/*
 * config.c: a config's life and built-in defaults, its addresses;
 * sending it over messages, receiving it
 */
struct imsgbuf;
struct imsg;
struct dotproxyd_conf	*config_new(void);
void			 config_free(struct dotproxyd_conf *);
int			 config_set_defaults(struct dotproxyd_conf *);
int			 parse_prefix(const char *, struct acl_conf *);
int			 parse_address(const char *, int, struct
			    sockaddr_storage *);
const void		*sockaddr_addr(const struct sockaddr_storage *, int *);
const char		*sockaddr_text(const struct sockaddr_storage *,
			    char *, size_t);
int	 config_send(struct imsgbuf *, const struct dotproxyd_conf *, int);
int	 config_recv(struct dotproxyd_conf **, struct imsg *);
void	 config_hash(const struct dotproxyd_conf *, char *, size_t);
int	 config_listens(const struct dotproxyd_conf *,
	    const struct sockaddr_storage *);
#define CONFIG_HASH_HEX	16	/* hexadecimal digits of config_hash() */

/* printconf.c: the effective config, in the language parse.y reads */
void	 print_config(FILE *, const struct dotproxyd_conf *);

/* processes */
__attribute__((__noreturn__)) void listener_main(int, int);
__attribute__((__noreturn__)) void upstream_main(int, int);

const char	*proc_name(enum proc_type);

/* close(fd) on a failure's way out, errno still the failure's: -1. */
static inline int
close_fail(int fd)
{
	int	saved = errno;

	(void)close(fd);
	errno = saved;
	return -1;
}

#endif /* DOTPROXYD_H */
