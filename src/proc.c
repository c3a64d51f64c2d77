/*
 * What the two children share: the start-up exchange with the parent,
 * run blocking before the child confines itself; confinement and the
 * start of service; the messages of the parent both children take (a
 * new config, a new channel to the other child, a log level); the loss
 * of the other child; and the checks every message goes through.
 */
#include <sys/types.h>

#include <errno.h>
#include <event.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "chan.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"
#include "proc.h"
#include "sandbox.h"
#include "tap.h"

static struct proc	*self;		/* this child, once started */
static struct event	 ev_sigterm;

static void	 proc_conf_message(struct proc *, struct imsg *);
static void	 proc_peer_fd(struct proc *, struct imsg *);
static void	 proc_heartbeat(struct proc *, struct imsg *);

const char *
proc_name(enum proc_type t)
{
	switch (t) {
	case PROC_PARENT:
		return "parent";
	case PROC_LISTENER:
		return "listener";
	case PROC_UPSTREAM:
		return "upstream";
	}
	return "?";
}

/* A message type's name, for every error about one. */
const char *
imsg_type_name(uint32_t type)
{
	static char	unknown[32];

	switch ((enum imsg_type)type) {
	case IMSG_NONE:
		return "IMSG_NONE";
	case IMSG_LOG:
		return "IMSG_LOG";
	case IMSG_CONF_MAIN:
		return "IMSG_CONF_MAIN";
	case IMSG_CONF_LISTEN:
		return "IMSG_CONF_LISTEN";
	case IMSG_CONF_UPSTREAM:
		return "IMSG_CONF_UPSTREAM";
	case IMSG_CONF_ACL:
		return "IMSG_CONF_ACL";
	case IMSG_CONF_END:
		return "IMSG_CONF_END";
	case IMSG_SOCKET_UDP:
		return "IMSG_SOCKET_UDP";
	case IMSG_SOCKET_TCP:
		return "IMSG_SOCKET_TCP";
	case IMSG_SOCKET_CONTROL:
		return "IMSG_SOCKET_CONTROL";
	case IMSG_SOCKET_METRICS:
		return "IMSG_SOCKET_METRICS";
	case IMSG_CA_FD:
		return "IMSG_CA_FD";
	case IMSG_PEER_FD:
		return "IMSG_PEER_FD";
	case IMSG_STARTED:
		return "IMSG_STARTED";
	case IMSG_QUERY:
		return "IMSG_QUERY";
	case IMSG_ANSWER:
		return "IMSG_ANSWER";
	case IMSG_FAIL:
		return "IMSG_FAIL";
	case IMSG_AUDIT:
		return "IMSG_AUDIT";
	case IMSG_CTL_RELOAD:
		return "IMSG_CTL_RELOAD";
	case IMSG_CTL_LOG:
		return "IMSG_CTL_LOG";
	case IMSG_CTL_RESULT:
		return "IMSG_CTL_RESULT";
	case IMSG_CTL_STATUS:
		return "IMSG_CTL_STATUS";
	case IMSG_CTL_UPSTREAM:
		return "IMSG_CTL_UPSTREAM";
	case IMSG_CTL_END:
		return "IMSG_CTL_END";
	case IMSG_NETWORK_CHANGED:
		return "IMSG_NETWORK_CHANGED";
	case IMSG_HEARTBEAT:
		return "IMSG_HEARTBEAT";
	case IMSG_DNSTAP_FD:
		return "IMSG_DNSTAP_FD";
	case IMSG_DNSTAP_NEEDFD:
		return "IMSG_DNSTAP_NEEDFD";
	}
	snprintf(unknown, sizeof(unknown), "message type %u", type);
	return unknown;
}

/*
 * What is wrong with a message, or NULL: its payload must be min to max
 * bytes, and it must carry a descriptor exactly when one is expected.
 */
const char *
msg_problem(const struct imsg *imsg, size_t min, size_t max, enum msg_fd fd,
    char *buf, size_t len)
{
	const char	*name = imsg_type_name(imsg->hdr.type);

	if (imsg->len < min || imsg->len > max) {
		if (min == max)
			snprintf(buf, len, "%s of %zu bytes, not %zu", name,
			    imsg->len, min);
		else
			snprintf(buf, len, "%s of %zu bytes, not %zu to %zu",
			    name, imsg->len, min, max);
		return buf;
	}
	if (fd == MSG_FD && imsg->fd == -1) {
		snprintf(buf, len, "%s without its descriptor", name);
		return buf;
	}
	if (fd == MSG_NO_FD && imsg->fd != -1) {
		snprintf(buf, len, "%s with a stray descriptor", name);
		return buf;
	}
	return NULL;
}

/* In a child: a message not as it must be ends this process. */
void
msg_need(const struct chan *from, const struct imsg *imsg, size_t min,
    size_t max, enum msg_fd fd)
{
	char		 buf[128];
	const char	*why;

	if ((why = msg_problem(imsg, min, max, fd, buf, sizeof(buf))) != NULL)
		fatalx("bad message from the %s: %s", from->peer, why);
}

void
proc_unexpected(const struct chan *from, const struct imsg *imsg)
{
	fatalx("unexpected %s from the %s", imsg_type_name(imsg->hdr.type),
	    from->peer);
}

static void
peer_attach(struct proc *p, struct imsg *imsg)
{
	if (imsgbuf_init(&p->peer->ibuf, imsg->fd) == -1)
		fatal("imsgbuf_init");
	imsg->fd = -1;
	*p->peer_up = 1;
	p->peer->events = 0;
}

/*
 * Read from the parent until the first config is complete: the channel
 * to the other child, then the child's own descriptors, then the config.
 */
static struct dotproxyd_conf *
proc_startup(struct proc *p)
{
	struct imsgbuf	*ibuf = &p->parent->ibuf;
	struct imsg	 imsg;
	struct pollfd	 pfd;
	ssize_t		 n;
	int		 r;

	for (;;) {
		while ((n = imsg_get(ibuf, &imsg)) != 0) {
			if (n == -1)
				fatalx("malformed message from the parent");
			switch (imsg.hdr.type) {
			case IMSG_CONF_MAIN:
			case IMSG_CONF_LISTEN:
			case IMSG_CONF_UPSTREAM:
			case IMSG_CONF_ACL:
			case IMSG_CONF_END:
				if ((r = config_recv(&p->pending, &imsg)) == -1)
					fatalx("bad %s from the parent",
					    imsg_type_name(imsg.hdr.type));
				imsg_free(&imsg);
				if (r == 1)
					return p->pending;
				continue;
			case IMSG_PEER_FD:
				msg_need(p->parent, &imsg, 0, 0, MSG_FD);
				if (*p->peer_up)
					proc_unexpected(p->parent, &imsg);
				peer_attach(p, &imsg);
				break;
			default:
				if (p->take_fd(&imsg) == -1)
					fatalx("unexpected %s during start-up",
					    imsg_type_name(imsg.hdr.type));
			}
			imsg_free(&imsg);
		}
		pfd.fd = ibuf->fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, -1) == -1) {
			if (errno == EINTR)
				continue;
			fatal("poll");
		}
		n = imsg_read(ibuf);
		if (n == 0)
			fatalx("parent closed the channel during start-up");
		if (n == -1 && errno != EAGAIN)
			fatal("imsg_read");
	}
}

static void
kick_parent(void)
{
	chan_update(self->parent);
}

/*
 * A child's life begins: name, signals, the start-up exchange with the
 * parent, the event loop, and logs and audit records to the parent.
 * The child's channels name their dispatchers before this.
 */
void
proc_child_init(struct proc *p, int verbose)
{
	struct sigaction	sa;
	const char		*name = proc_name(p->type);

	self = p;
	log_procinit(name);
	log_setverbose(verbose);
	setproctitle("%s", name);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sigaction(SIGXFSZ, &sa, NULL);	/* a file too large: EFBIG */
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	if (imsgbuf_init(&p->parent->ibuf, PARENT_FD) == -1)
		fatal("imsgbuf_init");
	p->pending = NULL;
	*p->conf = proc_startup(p);
	p->pending = NULL;
	if (!*p->peer_up)
		fatalx("start-up is missing the channel to the %s",
		    p->peer->peer);

	event_init();	/* its epoll descriptor is made before the filter */
	signal_set(&ev_sigterm, SIGTERM, p->sigterm, NULL);
	signal_add(&ev_sigterm, NULL);
	/* from here on, even a fatal confinement error, through the parent */
	log_to_parent(&p->parent->ibuf, kick_parent);
}

/* Confine the child; its channels then go on the event loop. */
void
proc_child_confine(struct proc *p)
{
	sandbox_drop(p->type, *p->conf);
	chan_update(p->parent);
	chan_update(p->peer);
}

#ifdef __GLIBC__
#define TRIM_CHECK_S	10		/* how often a child looks */

static struct event	trim_ev;
static struct proc_heap	trim_last;	/* the heap after the last trim */

static void
heap_now(struct proc_heap *h)
{
	struct mallinfo2	mi = mallinfo2();

	h->inuse = mi.uordblks;
	h->free = mi.fordblks;
}
#endif

/*
 * Give the free memory at the top of the heap, and the free pages within
 * it, back to the kernel: after start-up, a new config or a cache flush,
 * which leave much freed, and after a burst (proc_trim_check()).
 * glibc's malloc keeps it otherwise.  It takes brk and madvise, which
 * every policy allows.
 */
void
proc_mem_trim(void)
{
#ifdef __GLIBC__
	(void)malloc_trim(0);
	heap_now(&trim_last);
#endif
}

/*
 * Trim now, the heap being as now is?  When PROC_TRIM_FREED bytes or
 * more of it are free and it has changed since the last trim (last): a
 * burst of queries or TCP clients took pages and gave them back, however
 * short it was and whenever it fell between two looks.  A trim gives
 * back the pages of free chunks, which malloc still counts as free: a
 * heap unchanged since is not trimmed again.
 */
int
proc_trim_due(const struct proc_heap *now, const struct proc_heap *last)
{
	return now->free >= PROC_TRIM_FREED &&
	    (now->inuse != last->inuse || now->free != last->free);
}

#ifdef __GLIBC__
/* Every TRIM_CHECK_S: malloc's counters, and a trim if one is due. */
static void
proc_trim_check(int fd, short event, void *arg)
{
	struct timeval		tv = { TRIM_CHECK_S, 0 };
	struct proc_heap	now;

	(void)fd;
	(void)event;
	(void)arg;
	heap_now(&now);
	if (proc_trim_due(&now, &trim_last))
		proc_mem_trim();
	evtimer_add(&trim_ev, &tv);
}
#endif

/*
 * Take the first config, tell the parent we serve, handle what it sent
 * behind the config, and run.
 */
void
proc_child_serve(struct proc *p)
{
	p->conf_applied();
	proc_mem_trim();
#ifdef __GLIBC__
	evtimer_set(&trim_ev, proc_trim_check, NULL);
	proc_trim_check(-1, 0, NULL);
#endif
	if (imsg_compose(&p->parent->ibuf, IMSG_STARTED, 0, -1, NULL, 0) == -1)
		fatal("imsg_compose");
	chan_update(p->parent);
	proc_dispatch(p->parent->ibuf.fd, 0, p->parent);

	event_dispatch();
	exit(0);
}

/*
 * The dispatcher of a child's channels: do the I/O, hand each message to
 * the channel's handler, then let the child send what that made.  A
 * channel to the other child that is gone is closed; without its parent
 * the child has exited in chan_io().
 */
void
proc_dispatch(int fd, short event, void *arg)
{
	struct chan	*c = arg;
	struct imsg	 imsg;
	ssize_t		 n;

	(void)fd;
	if (!chan_io(c, event))
		proc_peer_lost(self);
	else {
		while ((n = imsg_get(&c->ibuf, &imsg)) != 0) {
			if (n == -1)
				fatalx("malformed message from the %s",
				    c->peer);
			c->message(c, &imsg);
			imsg_free(&imsg);
		}
		chan_update(c);
	}
	if (c->done != NULL)
		c->done();
}

/* The parent's messages both children take; the rest are the child's. */
void
proc_parent_message(struct chan *c, struct imsg *imsg)
{
	int	v;

	switch (imsg->hdr.type) {
	case IMSG_CONF_MAIN:
	case IMSG_CONF_LISTEN:
	case IMSG_CONF_UPSTREAM:
	case IMSG_CONF_ACL:
	case IMSG_CONF_END:
		proc_conf_message(self, imsg);
		break;
	case IMSG_PEER_FD:
		proc_peer_fd(self, imsg);
		break;
	case IMSG_DNSTAP_FD:
		tap_take_fd(c, imsg);
		break;
	case IMSG_CTL_LOG:		/* dotproxyctl log verbose|brief */
		msg_need(c, imsg, sizeof(v), sizeof(v), MSG_NO_FD);
		memcpy(&v, imsg->data, sizeof(v));
		(*self->conf)->verbose = v;
		log_setverbose(v);
		break;
	case IMSG_HEARTBEAT:
		proc_heartbeat(self, imsg);
		break;
	default:
		self->parent_message(c, imsg);
	}
}

/* A part of a new config; the last one makes it the running config. */
static void
proc_conf_message(struct proc *p, struct imsg *imsg)
{
	int	r;

	if ((r = config_recv(&p->pending, imsg)) == -1)
		fatalx("bad %s from the parent",
		    imsg_type_name(imsg->hdr.type));
	if (r == 0)
		return;
	config_free(*p->conf);
	*p->conf = p->pending;
	p->pending = NULL;
	log_setverbose((*p->conf)->verbose);
	p->conf_applied();
	proc_mem_trim();
	log_info("new configuration applied");
}

/* A channel to a new other child, after the last one was lost. */
static void
proc_peer_fd(struct proc *p, struct imsg *imsg)
{
	msg_need(p->parent, imsg, 0, 0, MSG_FD);
	if (*p->peer_up)
		proc_peer_lost(p);
	peer_attach(p, imsg);
	chan_update(p->peer);
	log_info("connected to the new %s", p->peer->peer);
}

/*
 * The parent asks whether we are alive (for the service manager's
 * watchdog): the answer, from the event loop, says so and how we fare.
 */
static void
proc_heartbeat(struct proc *p, struct imsg *imsg)
{
	struct heartbeat	hb;

	msg_need(p->parent, imsg, 0, 0, MSG_NO_FD);
	memset(&hb, 0, sizeof(hb));
	if (p->heartbeat != NULL)
		p->heartbeat(&hb);
	if (imsg_compose(&p->parent->ibuf, IMSG_HEARTBEAT, 0, -1, &hb,
	    sizeof(hb)) == -1)
		fatal("imsg_compose");
}

/*
 * The other child is gone (it died, or the parent gave us a channel to
 * its successor): the child lets go of what it had sent there (or, if
 * it was ending anyway, exits), then the channel is closed.
 */
void
proc_peer_lost(struct proc *p)
{
	struct chan	*c = p->peer;

	*p->peer_up = 0;
	p->peer_lost();
	log_warnx("lost the %s", c->peer);
	chan_close(c);
}

void
mono_time(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

int64_t
mono_ms(void)
{
	struct timespec	ts;

	mono_time(&ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
mono_us(void)
{
	struct timespec	ts;

	mono_time(&ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
