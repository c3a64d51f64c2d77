/*
 * The control socket, served by the listener.  The parent created it;
 * the file's mode lets root and the daemon's group connect, and the
 * peer's credentials decide what it may do: anyone who can connect may
 * read (status, stats, metrics), only root may change (reload, flush,
 * log).  One command per connection, a text answer, then close.  No
 * other user can hold every connection or flood the audit trail.
 *
 * With "metrics listen on", a TCP socket serves the metrics text to
 * Prometheus over HTTP the same way: one request per connection, from
 * clients the access list allows, a few at a time, then close.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <errno.h>
#include <event.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "cache.h"
#include "control.h"
#include "dns.h"
#include "dotproxyd.h"
#include "http.h"
#include "imsg.h"
#include "log.h"
#include "stats.h"
#include "tap.h"

#define CTL_MAX_CONNS	16
#define CTL_ROOT_SLOTS	2	/* of those, only root may take */
#define CTL_UID_CONNS	4	/* the most one other user may hold */
#define CTL_CMD_MAX	128
#define CTL_TIMEOUT	5
#define CTL_AUDIT_BURST	10	/* audited a period, of each kind below */
#define CTL_AUDIT_PERIOD 60	/* seconds */
#define HTTP_MAX_CONNS	8	/* metrics connections at a time */
#define HTTP_READ_MAX	512	/* bytes read at once */

/* a command, for its audit: reading, refused or unknown, a change */
enum ctl_kind { K_READ, K_REFUSED, K_CHANGE };

enum ctl_wait { W_NONE, W_UPSTREAM, W_PARENT };

enum ctl_cmd {
	CMD_STATUS,
	CMD_STATS,
	CMD_METRICS,
	CMD_RELOAD,
	CMD_FLUSH,
	CMD_LOG_VERBOSE,
	CMD_LOG_BRIEF,
	CMD_UNKNOWN
};

/* The commands: anyone may read, only root may change. */
static const struct ctl_command {
	const char	*name;
	int		 change;
} ctl_commands[CMD_UNKNOWN] = {
	[CMD_STATUS] =		{ "status",		0 },
	[CMD_STATS] =		{ "stats",		0 },
	[CMD_METRICS] =		{ "metrics",		0 },
	[CMD_RELOAD] =		{ "reload",		1 },
	[CMD_FLUSH] =		{ "flush",		1 },
	[CMD_LOG_VERBOSE] =	{ "log verbose",	1 },
	[CMD_LOG_BRIEF] =	{ "log brief",		1 },
};

struct ctl {
	TAILQ_ENTRY(ctl)	 entry;
	uint32_t		 id;
	int			 fd;
	uid_t			 uid;
	struct event		 ev;
	struct event		 tmo;
	char			 cmd[CTL_CMD_MAX];
	size_t			 cmdlen;
	enum ctl_cmd		 op;		/* of cmd, once read */
	enum ctl_wait		 wait;
	struct upstream_status	*ups;
	int			 nups;
	char			*out;
	size_t			 outlen;
	size_t			 outoff;
	FILE			*f;
	struct http_request	*http;		/* NULL: a control connection */
	int			 status;	/* of the HTTP answer */
};

static void	 ctl_accept(int, short, void *);
static void	 ctl_read(int, short, void *);
static void	 ctl_write(int, short, void *);
static void	 ctl_timeout(int, short, void *);
static void	 ctl_close(struct ctl *);
static void	 ctl_run(struct ctl *);
static void	 ctl_finish(struct ctl *);
static void	 http_accept(int, short, void *);
static void	 http_read(int, short, void *);
static int	 http_wrap(struct ctl *);

static TAILQ_HEAD(, ctl)	 ctls = TAILQ_HEAD_INITIALIZER(ctls);
static struct event		 accept_ev, accept_pause;
static uint32_t			 next_id = 1;
static int			 nctls;

/* the metrics socket, served once the event loop runs */
static struct event		 http_ev;
static struct sockaddr_storage	 http_ss;
static int			 http_fd = -1;
static int			 nhttp;
static int			 control_ready;
static unsigned long long	 http_requests, http_errors, http_refused;

/* the audit of commands that change nothing, per kind, in one period */
static struct event		 audit_period;
static int			 audited[2];
static unsigned long long	 unaudited[2];
static const char		*kind_names[2] = { "read-only", "refused" };

static const char *upstream_fail_names[UPSTREAM_FAIL_KINDS] = {
	"unreachable", "network", "other"
};

static const char *rcode_names[16] = {
	"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
	"YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "DSOTYPENI",
	"RCODE12", "RCODE13", "RCODE14", "RCODE15"
};

static void
ctl_resume(int fd, short event, void *arg)
{
	(void)fd;
	(void)event;
	(void)arg;
	event_add(&accept_ev, NULL);
	if (http_fd != -1)
		event_add(&http_ev, NULL);
}

/* Out of descriptors: stop accepting for a second, do not spin. */
static void
ctl_pause(void)
{
	struct timeval	tv = { 1, 0 };

	event_del(&accept_ev);
	if (http_fd != -1)
		event_del(&http_ev);
	evtimer_add(&accept_pause, &tv);
}

/* The end of an audit period: one record of what went unrecorded. */
static void
ctl_audit_period(int fd, short event, void *arg)
{
	(void)fd;
	(void)event;
	(void)arg;
	control_audit_flush();
}

/*
 * Record how many commands were left out of the trail, and start a new
 * period: at the end of one, and for the listener to call at shutdown.
 */
void
control_audit_flush(void)
{
	char	n[24];
	int	k;

	if (event_initialized(&audit_period))
		evtimer_del(&audit_period);
	for (k = 0; k < 2; k++) {
		if (unaudited[k] > 0) {
			snprintf(n, sizeof(n), "%llu", unaudited[k]);
			audit("control-suppressed", "kind", kind_names[k],
			    "commands", n, "period", "60s", NULL);
		}
		audited[k] = 0;
		unaudited[k] = 0;
	}
}

void
control_init(int fd)
{
	event_set(&accept_ev, fd, EV_READ | EV_PERSIST, ctl_accept, NULL);
	event_add(&accept_ev, NULL);
	evtimer_set(&accept_pause, ctl_resume, NULL);
	evtimer_set(&audit_period, ctl_audit_period, NULL);
	control_ready = 1;
	if (http_fd != -1)
		control_http_socket(http_fd, &http_ss);
}

static void
http_stop(void)
{
	if (http_fd == -1)
		return;
	if (control_ready)
		event_del(&http_ev);
	close(http_fd);
	http_fd = -1;
	memset(&http_ss, 0, sizeof(http_ss));
}

/*
 * The metrics socket from the parent, in place of the one before; it is
 * served once the event loop runs.
 */
void
control_http_socket(int fd, const struct sockaddr_storage *ss)
{
	if (fd != http_fd) {
		http_stop();
		http_fd = fd;
		http_ss = *ss;
	}
	if (!control_ready)
		return;
	event_set(&http_ev, http_fd, EV_READ | EV_PERSIST, http_accept, NULL);
	event_add(&http_ev, NULL);
}

/* A new config: close the metrics socket unless it still names it. */
void
control_http_keep(const struct sockaddr_storage *ss)
{
	if (http_fd != -1 && memcmp(ss, &http_ss, sizeof(http_ss)) != 0)
		http_stop();
}

/*
 * May uid have one more connection?  The last CTL_ROOT_SLOTS are root's,
 * and no other user holds more than CTL_UID_CONNS: members of the
 * daemon's group cannot lock root out.
 */
static int
ctl_admit(uid_t uid)
{
	struct ctl	*c;
	int		 n = 0;

	if (nctls >= CTL_MAX_CONNS)
		return 0;
	if (uid == 0)
		return 1;
	if (nctls >= CTL_MAX_CONNS - CTL_ROOT_SLOTS)
		return 0;
	TAILQ_FOREACH(c, &ctls, entry)
		if (c->uid == uid)
			n++;
	return n < CTL_UID_CONNS;
}

/* A connection we will not serve: say so, if it listens, and close it. */
static void
ctl_refuse(int s, uid_t uid)
{
	static const char	msg[] = "error: too many control connections\n";

	log_debug("control: refused a connection of uid %u", (unsigned)uid);
	(void)send(s, msg, sizeof(msg) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(s);
}

static struct ctl *
ctl_find(uint32_t id)
{
	struct ctl	*c;

	TAILQ_FOREACH(c, &ctls, entry)
		if (c->id == id)
			return c;
	return NULL;
}

/*
 * A connection to serve, for CTL_TIMEOUT seconds at most: a control
 * connection of uid, or an HTTP one.  Closes s if it cannot.
 */
static struct ctl *
ctl_new(int s, uid_t uid, int http)
{
	struct ctl	*c;
	struct timeval	 tv = { CTL_TIMEOUT, 0 };

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		close(s);
		return NULL;
	}
	if (http && (c->http = malloc(sizeof(*c->http))) == NULL) {
		free(c);
		close(s);
		return NULL;
	}
	if (http)
		http_request_init(c->http);
	c->id = next_id++;
	c->fd = s;
	c->uid = uid;
	event_set(&c->ev, s, EV_READ | EV_PERSIST, http ? http_read : ctl_read,
	    c);
	event_add(&c->ev, NULL);
	evtimer_set(&c->tmo, ctl_timeout, c);
	evtimer_add(&c->tmo, &tv);
	TAILQ_INSERT_TAIL(&ctls, c, entry);
	if (http)
		nhttp++;
	else
		nctls++;
	return c;
}

static void
ctl_accept(int fd, short event, void *arg)
{
	uid_t		 uid;
	gid_t		 gid;
	int		 s;

	(void)event;
	(void)arg;
	if ((s = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1) {
		if (errno == EMFILE || errno == ENFILE)
			ctl_pause();
		return;
	}
	if (getpeereid(s, &uid, &gid) == -1) {
		close(s);
		return;
	}
	if (!ctl_admit(uid)) {
		ctl_refuse(s, uid);
		return;
	}
	(void)ctl_new(s, uid, 0);
}

/* An HTTP error answer to a client we will not read from, if it listens. */
static void
http_say(int s, int status)
{
	char	buf[HTTP_RESPONSE_MAX];
	int	n;

	if ((n = http_response_error(buf, sizeof(buf), status, HTTP_M_NONE,
	    time(NULL))) > 0)
		(void)send(s, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/*
 * A client of the metrics socket.  One outside the access list is
 * closed at once; one over the limit is told 503 if it listens.
 */
static void
http_accept(int fd, short event, void *arg)
{
	struct sockaddr_storage	 ss;
	socklen_t		 sslen = sizeof(ss);
	int			 s;

	(void)event;
	(void)arg;
	if ((s = accept4(fd, (struct sockaddr *)&ss, &sslen,
	    SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1) {
		if (errno == EMFILE || errno == ENFILE)
			ctl_pause();
		return;
	}
	if (!listener_acl_allowed((struct sockaddr *)&ss)) {
		http_refused++;
		close(s);
		return;
	}
	if (nhttp >= HTTP_MAX_CONNS) {
		http_refused++;
		http_say(s, 503);
		close(s);
		return;
	}
	(void)ctl_new(s, (uid_t)-1, 1);
}

static void
ctl_close(struct ctl *c)
{
	event_del(&c->ev);
	evtimer_del(&c->tmo);
	if (c->http != NULL) {
		(void)shutdown(c->fd, SHUT_WR);
		nhttp--;
	} else
		nctls--;
	close(c->fd);
	if (c->f != NULL)
		fclose(c->f);
	free(c->out);
	free(c->ups);
	free(c->http);
	TAILQ_REMOVE(&ctls, c, entry);
	free(c);
}

/*
 * Time is up.  An HTTP client that has not sent its whole request yet
 * is told 408, if it listens.
 */
static void
ctl_timeout(int fd, short event, void *arg)
{
	struct ctl	*c = arg;

	(void)fd;
	(void)event;
	if (c->http != NULL && c->http->status == HTTP_MORE) {
		http_errors++;
		http_say(c->fd, 408);
	}
	ctl_close(c);
}

static void
ctl_read(int fd, short event, void *arg)
{
	struct ctl	*c = arg;
	ssize_t		 n;
	char		*nl;

	(void)event;
	n = read(fd, c->cmd + c->cmdlen, sizeof(c->cmd) - 1 - c->cmdlen);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0 && c->cmdlen == 0) {
		ctl_close(c);
		return;
	}
	if (n > 0)
		c->cmdlen += (size_t)n;
	c->cmd[c->cmdlen] = '\0';
	if ((nl = strchr(c->cmd, '\n')) == NULL && n > 0 &&
	    c->cmdlen < sizeof(c->cmd) - 1)
		return;		/* more to come */
	if (nl != NULL)
		*nl = '\0';
	event_del(&c->ev);
	if ((c->f = open_memstream(&c->out, &c->outlen)) == NULL) {
		ctl_close(c);
		return;
	}
	ctl_run(c);
}

static int
is_root(struct ctl *c)
{
	if (c->uid == 0)
		return 1;
	fprintf(c->f, "error: permission denied: \"%s\" needs root\n",
	    c->cmd);
	return 0;
}

/* The listener's dnstap records, with "dnstap socket". */
static void
print_tap_stats(FILE *f)
{
	struct tap_counts	tc;

	if (!tap_on())
		return;
	tap_stats(&tc);
	fprintf(f, "%-28s %12llu\n", "dnstap sent",
	    (unsigned long long)tc.sent);
	fprintf(f, "%-28s %12llu\n", "dnstap dropped",
	    (unsigned long long)tc.dropped);
}

static void
print_stats(FILE *f)
{
	const struct listener_stats	*st = &listener_counters;
	struct cache_stats		 cs;
	int				 i, tcp, inflight;

	listener_gauges(&tcp, &inflight);
	fprintf(f, "%-28s %12s\n", "queries", "count");
	fprintf(f, "%-28s %12llu\n", "  udp",
	    (unsigned long long)st->queries_udp);
	fprintf(f, "%-28s %12llu\n", "  tcp",
	    (unsigned long long)st->queries_tcp);
	fprintf(f, "%-28s %12s\n", "answers by rcode", "");
	for (i = 0; i < 16; i++)
		if (st->rcode[i])
			fprintf(f, "  %-26s %12llu\n", rcode_names[i],
			    (unsigned long long)st->rcode[i]);
	if (listener_cache_stats(&cs) == 0) {
		fprintf(f, "%-28s %12llu\n", "cache hits",
		    (unsigned long long)cs.hits);
		fprintf(f, "%-28s %12llu\n", "cache misses",
		    (unsigned long long)cs.misses);
		fprintf(f, "%-28s %12zu\n", "cache entries", cs.entries);
		fprintf(f, "%-28s %12zu\n", "cache bytes", cs.bytes);
		fprintf(f, "%-28s %12zu\n", "cache bytes per entry",
		    cs.entries ? cs.bytes / cs.entries : 0);
		fprintf(f, "%-28s %12zu\n", "cache memory", cs.mapped);
		fprintf(f, "%-28s %12llu\n", "cache evictions",
		    (unsigned long long)cs.evictions);
		fprintf(f, "%-28s %12llu\n", "cache stale",
		    (unsigned long long)st->stale);
		fprintf(f, "%-28s %12llu\n", "cache prefetches",
		    (unsigned long long)st->prefetches);
	} else
		fprintf(f, "%-28s %12s\n", "cache", "off");
	fprintf(f, "%-28s %12llu\n", "coalesced",
	    (unsigned long long)st->coalesced);
	fprintf(f, "%-28s %12llu\n", "refused (access list)",
	    (unsigned long long)st->refused_acl);
	fprintf(f, "%-28s %12llu\n", "rate-limited",
	    (unsigned long long)st->ratelimited);
	fprintf(f, "%-28s %12llu\n", "dropped (not queries)",
	    (unsigned long long)st->dropped);
	for (i = 0; i < UPSTREAM_FAIL_KINDS; i++)
		fprintf(f, "upstream errors: %-11s %12llu\n",
		    upstream_fail_names[i],
		    (unsigned long long)st->upstream_fail[i]);
	fprintf(f, "%-28s %12d\n", "tcp clients now", tcp);
	fprintf(f, "%-28s %12d\n", "queries in flight now", inflight);
	print_tap_stats(f);
}

static void
print_status(FILE *f, const struct upstream_status *u, int n,
    const struct tap_counts *tc)
{
	int	i;

	fprintf(f, "%-40s %-7s %5s %8s %7s %-8s %8s %8s %8s %6s %6s %8s\n",
	    "upstream", "state", "conns", "inflight", "latency", "tls",
	    "resumed", "handshk", "failures", "srtt", "rto", "timeouts");
	for (i = 0; i < n; i++)
		fprintf(f, "%-40.40s %-7s %5d %8d %5dms %-8s %8llu %8llu "
		    "%8llu %4dms %4dms %8llu\n", u[i].label,
		    u[i].state[0] ? u[i].state : u[i].up ? "up" : "down",
		    u[i].conns, u[i].inflight, u[i].latency_ms,
		    u[i].tls_version[0] ? u[i].tls_version : "-",
		    (unsigned long long)u[i].resumed,
		    (unsigned long long)u[i].handshakes,
		    (unsigned long long)u[i].failures, u[i].srtt_ms,
		    u[i].rto_ms, (unsigned long long)u[i].timeouts);
	for (i = 0; i < n; i++) {
		fprintf(f, "%s: hedged %llu, late %llu, requeued %llu, "
		    "probes %llu, dead connections %llu, resource errors "
		    "%llu\n", u[i].label, (unsigned long long)u[i].hedged,
		    (unsigned long long)u[i].late,
		    (unsigned long long)u[i].requeued,
		    (unsigned long long)u[i].probes,
		    (unsigned long long)u[i].dead,
		    (unsigned long long)u[i].resource_errors);
		if (u[i].last_error[0])
			fprintf(f, "%s: last error: %s\n", u[i].label,
			    u[i].last_error);
	}
	if (tap_on())
		fprintf(f, "upstream process dnstap: sent %llu, dropped %llu\n",
		    (unsigned long long)tc->sent,
		    (unsigned long long)tc->dropped);
}

/* A Prometheus label value: backslash, quote and newline escaped. */
static void
label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void
metric(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A metric with a single, unlabelled sample. */
static void
metric_value(FILE *f, const char *name, const char *type, const char *help,
    unsigned long long v)
{
	metric(f, name, type, help);
	fprintf(f, "%s %llu\n", name, v);
}

/*
 * The per-upstream metrics: each a sample per upstream, labelled with
 * its name, read from a field of struct upstream_status (an int for the
 * gauges, a uint64_t for the counters).
 */
#define U_INT(f)	offsetof(struct upstream_status, f), 1
#define U_U64(f)	offsetof(struct upstream_status, f), 0
static const struct upstream_metric {
	const char	*name;
	const char	*type;
	const char	*help;
	size_t		 off;
	int		 is_int;
} upstream_metrics[] = {
	{ "dotproxyd_upstream_up", "gauge",
	    "1 if the upstream is in use, 0 while it backs off.", U_INT(up) },
	{ "dotproxyd_upstream_queries_total", "counter",
	    "Queries sent to the upstream.", U_U64(queries) },
	{ "dotproxyd_upstream_failures_total", "counter",
	    "Failed connections, handshakes and health queries, dead "
	    "connections.", U_U64(failures) },
	{ "dotproxyd_upstream_handshakes_total", "counter",
	    "TLS handshakes completed.", U_U64(handshakes) },
	{ "dotproxyd_upstream_resumed_total", "counter",
	    "TLS handshakes that resumed a session.", U_U64(resumed) },
	{ "dotproxyd_upstream_latency_milliseconds", "gauge",
	    "Smoothed answer time of the upstream.", U_INT(latency_ms) },
	{ "dotproxyd_upstream_srtt_milliseconds", "gauge",
	    "Smoothed round-trip time (RFC 6298) of the upstream.",
	    U_INT(srtt_ms) },
	{ "dotproxyd_upstream_timeouts_total", "counter",
	    "Tries the upstream did not answer in their time.",
	    U_U64(timeouts) },
	{ "dotproxyd_upstream_hedged_total", "counter",
	    "Tries sent to the upstream beside an unanswered one.",
	    U_U64(hedged) },
	{ "dotproxyd_upstream_late_total", "counter",
	    "Answers to tries already given up on.", U_U64(late) },
	{ "dotproxyd_upstream_requeued_total", "counter",
	    "Queries sent again after the server closed a connection.",
	    U_U64(requeued) },
	{ "dotproxyd_upstream_probes_total", "counter",
	    "Health queries of dotproxyd's own.", U_U64(probes) },
	{ "dotproxyd_upstream_dead_connections_total", "counter",
	    "Connections closed for going quiet.", U_U64(dead) },
};

static void
upstream_metric(FILE *f, const struct upstream_metric *m,
    const struct upstream_status *u, int n)
{
	unsigned long long	 v;
	const char		*p;
	uint64_t		 v64;
	int			 i, vi;

	metric(f, m->name, m->type, m->help);
	for (i = 0; i < n; i++) {
		p = (const char *)&u[i] + m->off;
		if (m->is_int) {
			memcpy(&vi, p, sizeof(vi));
			v = (unsigned long long)vi;
		} else {
			memcpy(&v64, p, sizeof(v64));
			v = (unsigned long long)v64;
		}
		fprintf(f, "%s{upstream=\"", m->name);
		label(f, u[i].label);
		fprintf(f, "\"} %llu\n", v);
	}
}

/* The metrics socket's own counters. */
static void
print_http_metrics(FILE *f)
{
	metric_value(f, "dotproxyd_http_requests_total", "counter",
	    "HTTP requests read on the metrics socket.", http_requests);
	metric_value(f, "dotproxyd_http_errors_total", "counter",
	    "HTTP requests answered with an error, or cut off.", http_errors);
	metric_value(f, "dotproxyd_http_refused_total", "counter",
	    "Metrics connections refused: access list, or too many.",
	    http_refused);
}

static void
tap_metric(FILE *f, const char *what, const char *process,
    unsigned long long v)
{
	fprintf(f, "dotproxyd_dnstap_%s_total{process=\"%s\"} %llu\n", what,
	    process, v);
}

/* u, n and up_tap: what the upstream process said, or NULL, 0, NULL. */
static void
print_metrics(FILE *f, const struct upstream_status *u, int n,
    const struct tap_counts *up_tap)
{
	const struct listener_stats	*st = &listener_counters;
	struct cache_stats		 cs;
	struct tap_counts		 tc;
	int				 i, tcp, inflight;

	listener_gauges(&tcp, &inflight);
	metric(f, "dotproxyd_queries_total", "counter",
	    "Client queries received.");
	fprintf(f, "dotproxyd_queries_total{protocol=\"udp\"} %llu\n",
	    (unsigned long long)st->queries_udp);
	fprintf(f, "dotproxyd_queries_total{protocol=\"tcp\"} %llu\n",
	    (unsigned long long)st->queries_tcp);
	metric(f, "dotproxyd_answers_total", "counter",
	    "Answers sent to clients, by rcode.");
	for (i = 0; i < 16; i++)
		if (st->rcode[i] || i <= DNS_RCODE_REFUSED)
			fprintf(f, "dotproxyd_answers_total{rcode=\"%s\"} "
			    "%llu\n", rcode_names[i],
			    (unsigned long long)st->rcode[i]);
	if (listener_cache_stats(&cs) == 0) {
		metric_value(f, "dotproxyd_cache_hits_total", "counter",
		    "Answers served from the cache.", cs.hits);
		metric_value(f, "dotproxyd_cache_misses_total", "counter",
		    "Cache lookups that found nothing.", cs.misses);
		metric_value(f, "dotproxyd_cache_stale_total", "counter",
		    "Answers served stale from the cache (RFC 8767).",
		    st->stale);
		metric_value(f, "dotproxyd_cache_prefetches_total", "counter",
		    "Cached answers fetched again near the end of their TTL.",
		    st->prefetches);
		metric_value(f, "dotproxyd_cache_entries", "gauge",
		    "Answers in the cache.", cs.entries);
		metric_value(f, "dotproxyd_cache_bytes", "gauge",
		    "Bytes of answers and their keys in the cache.", cs.bytes);
		metric_value(f, "dotproxyd_cache_memory_bytes", "gauge",
		    "Memory the cache keeps its answers in.", cs.mapped);
	}
	metric_value(f, "dotproxyd_refused_total", "counter",
	    "Queries refused by the access list.", st->refused_acl);
	metric_value(f, "dotproxyd_ratelimited_total", "counter",
	    "Queries over a client's rate limit.", st->ratelimited);
	metric(f, "dotproxyd_upstream_errors_total", "counter",
	    "Queries answered SERVFAIL because of the upstreams, by kind.");
	for (i = 0; i < UPSTREAM_FAIL_KINDS; i++)
		fprintf(f, "dotproxyd_upstream_errors_total{kind=\"%s\"} "
		    "%llu\n", upstream_fail_names[i],
		    (unsigned long long)st->upstream_fail[i]);
	metric_value(f, "dotproxyd_tcp_clients", "gauge",
	    "Open client TCP connections.", (unsigned long long)tcp);
	metric_value(f, "dotproxyd_inflight", "gauge",
	    "Queries waiting for an upstream answer.",
	    (unsigned long long)inflight);
	tap_stats(&tc);
	metric(f, "dotproxyd_dnstap_sent_total", "counter",
	    "dnstap records sent to the collector, by process.");
	tap_metric(f, "sent", "listener", tc.sent);
	if (up_tap != NULL)
		tap_metric(f, "sent", "upstream", up_tap->sent);
	metric(f, "dotproxyd_dnstap_dropped_total", "counter",
	    "dnstap records dropped (no collector, no room), by process.");
	tap_metric(f, "dropped", "listener", tc.dropped);
	if (up_tap != NULL)
		tap_metric(f, "dropped", "upstream", up_tap->dropped);
	for (i = 0; i < (int)(sizeof(upstream_metrics) /
	    sizeof(upstream_metrics[0])); i++)
		upstream_metric(f, &upstream_metrics[i], u, n);
	print_http_metrics(f);
}

static enum ctl_cmd
ctl_command(const char *cmd)
{
	int	i;

	for (i = 0; i < CMD_UNKNOWN; i++)
		if (strcmp(cmd, ctl_commands[i].name) == 0)
			return i;
	return CMD_UNKNOWN;
}

static enum ctl_kind
ctl_kind(const struct ctl *c)
{
	if (c->op == CMD_UNKNOWN)
		return K_REFUSED;
	if (!ctl_commands[c->op].change)
		return K_READ;
	return c->uid == 0 ? K_CHANGE : K_REFUSED;
}

/*
 * Every command that changes something is audited.  Of those that
 * change nothing (reading, refused, unknown), CTL_AUDIT_BURST of each
 * kind a period are; the rest are counted, and the count recorded at
 * the end of the period, so that no user can flood the trail.
 */
static void
ctl_audit(const struct ctl *c)
{
	struct timeval	 tv = { CTL_AUDIT_PERIOD, 0 };
	enum ctl_kind	 k = ctl_kind(c);
	char		 uid[16];

	if (k != K_CHANGE) {
		if (!evtimer_pending(&audit_period, NULL))
			evtimer_add(&audit_period, &tv);
		if (audited[k] >= CTL_AUDIT_BURST) {
			unaudited[k]++;
			return;
		}
		audited[k]++;
	}
	snprintf(uid, sizeof(uid), "%u", (unsigned)c->uid);
	audit("control", "uid", uid, "command", c->cmd, NULL);
}

static void
ctl_run(struct ctl *c)
{
	int	 v;

	c->op = ctl_command(c->cmd);
	ctl_audit(c);
	switch (c->op) {
	case CMD_STATS:
		print_stats(c->f);
		break;
	case CMD_STATUS:
	case CMD_METRICS:
		if (listener_upstream_ok() &&
		    listener_to_upstream(IMSG_CTL_STATUS, c->id) == 0) {
			c->wait = W_UPSTREAM;
			return;
		}
		if (c->op == CMD_STATUS)
			fprintf(c->f, "error: the upstream process is not "
			    "running\n");
		else
			print_metrics(c->f, NULL, 0, NULL);
		break;
	case CMD_RELOAD:
		if (!is_root(c))
			break;
		if (listener_to_parent(IMSG_CTL_RELOAD, c->id, NULL, 0) == 0) {
			c->wait = W_PARENT;
			return;
		}
		fprintf(c->f, "error: cannot reach the parent\n");
		break;
	case CMD_FLUSH:
		if (!is_root(c))
			break;
		listener_cache_flush();
		fprintf(c->f, "cache flushed\n");
		break;
	case CMD_LOG_VERBOSE:
	case CMD_LOG_BRIEF:
		if (!is_root(c))
			break;
		v = c->op == CMD_LOG_VERBOSE;
		if (listener_to_parent(IMSG_CTL_LOG, 0, &v, sizeof(v)) == 0)
			fprintf(c->f, "logging %s\n", v ? "verbose" : "brief");
		else
			fprintf(c->f, "error: cannot reach the parent\n");
		break;
	case CMD_UNKNOWN:
		fprintf(c->f, "error: unknown command \"%s\"\n", c->cmd);
		break;
	}
	ctl_finish(c);
}

static void
ctl_finish(struct ctl *c)
{
	c->wait = W_NONE;
	fclose(c->f);
	c->f = NULL;
	c->outoff = 0;
	if (c->http != NULL && http_wrap(c) == -1) {
		ctl_close(c);
		return;
	}
	event_set(&c->ev, c->fd, EV_WRITE | EV_PERSIST, ctl_write, c);
	event_add(&c->ev, NULL);
}

static void
ctl_write(int fd, short event, void *arg)
{
	struct ctl	*c = arg;
	ssize_t		 n;

	(void)event;
	n = write(fd, c->out + c->outoff, c->outlen - c->outoff);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		ctl_close(c);
		return;
	}
	c->outoff += (size_t)n;
	if (c->outoff == c->outlen)
		ctl_close(c);
}

/*
 * An HTTP request, read until its head is complete or found wrong.  A
 * good one for the metrics waits for the upstream process's status as
 * "dotproxyctl metrics" does; any other is answered with its error.
 */
static void
http_read(int fd, short event, void *arg)
{
	struct ctl	*c = arg;
	char		 buf[HTTP_READ_MAX];
	ssize_t		 n;

	(void)event;
	n = read(fd, buf, sizeof(buf));
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {		/* gone, or broken, before its request */
		ctl_close(c);
		return;
	}
	if ((c->status = http_request_feed(c->http, buf, (size_t)n)) ==
	    HTTP_MORE)
		return;
	event_del(&c->ev);
	if ((c->f = open_memstream(&c->out, &c->outlen)) == NULL) {
		ctl_close(c);
		return;
	}
	http_requests++;
	if (c->status != 200) {
		http_errors++;
		ctl_finish(c);
		return;
	}
	c->op = CMD_METRICS;
	if (listener_upstream_ok() &&
	    listener_to_upstream(IMSG_CTL_STATUS, c->id) == 0) {
		c->wait = W_UPSTREAM;
		return;
	}
	print_metrics(c->f, NULL, 0, NULL);
	ctl_finish(c);
}

/*
 * The HTTP answer around what was written to c->out: the head of a 200
 * before the metrics (the head alone for HEAD), or the whole error.
 */
static int
http_wrap(struct ctl *c)
{
	char	 head[HTTP_RESPONSE_MAX];
	char	*out;
	size_t	 body = c->outlen;
	int	 n;

	if (c->out == NULL)
		return -1;
	if (c->status == 200)
		n = http_response_ok(head, sizeof(head), body, time(NULL));
	else
		n = http_response_error(head, sizeof(head), c->status,
		    c->http->method, time(NULL));
	if (n <= 0)
		return -1;
	if (c->status != 200 || c->http->method == HTTP_M_HEAD)
		body = 0;
	if ((out = malloc((size_t)n + body)) == NULL)
		return -1;
	memcpy(out, head, (size_t)n);
	memcpy(out + n, c->out, body);
	free(c->out);
	c->out = out;
	c->outlen = (size_t)n + body;
	return 0;
}

void
control_upstream(uint32_t id, const struct upstream_status *u)
{
	struct ctl		*c;
	struct upstream_status	*p;

	if ((c = ctl_find(id)) == NULL || c->wait != W_UPSTREAM ||
	    c->nups >= 256)
		return;
	if ((p = reallocarray(c->ups, (size_t)c->nups + 1, sizeof(*p))) ==
	    NULL)
		return;
	c->ups = p;
	c->ups[c->nups++] = *u;
}

void
control_upstream_end(uint32_t id, const struct tap_counts *tc)
{
	struct ctl	*c;

	if ((c = ctl_find(id)) == NULL || c->wait != W_UPSTREAM)
		return;
	if (c->op == CMD_STATUS)
		print_status(c->f, c->ups, c->nups, tc);
	else
		print_metrics(c->f, c->ups, c->nups, tc);
	ctl_finish(c);
}

void
control_result(uint32_t id, const char *text)
{
	struct ctl	*c;

	if ((c = ctl_find(id)) == NULL || c->wait != W_PARENT)
		return;
	fprintf(c->f, "%s\n", text);
	ctl_finish(c);
}
