/*
 * A child's dnstap output: the writer, its descriptor on the event loop,
 * and the requests for a new descriptor to the parent (tap.h).
 */
#include <sys/types.h>

#include <errno.h>
#include <event.h>
#include <string.h>
#include <unistd.h>

#include "chan.h"
#include "dnstap.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"
#include "proc.h"
#include "tap.h"

static struct dnstap_writer	*writer;
static struct chan		*parent;
static struct event		 ev_read, ev_write;
static int			 ev_fd = -1;	/* the events', or -1 */
static int			 asked;		/* for a descriptor */
static uint64_t			 nofd_dropped;	/* while without one */
static uint64_t			 old_sent, old_dropped;	/* writers before */
static char			 cur_path[sizeof(((struct dotproxyd_conf *)
				    0)->dnstap_path)];
static int			 cur_anon;

static void	 tap_io(int, short, void *);
static void	 tap_update(void);

/* The events leave the descriptor before the writer closes it. */
static void
events_del(void)
{
	if (ev_fd == -1)
		return;
	event_del(&ev_read);
	event_del(&ev_write);
	ev_fd = -1;
}

static void
writer_end(void)
{
	uint64_t	s, d;

	events_del();
	dnstap_writer_stats(writer, &s, &d);
	old_sent += s;
	old_dropped += d;
	dnstap_writer_free(writer);
	writer = NULL;
	asked = 0;
}

/*
 * A new config: the writer as it says, a new one (and a new descriptor)
 * when the socket or the anonymizing changed.  The parent connects to
 * the path in its own config, the one we have now.
 */
void
tap_configure(struct chan *p, const struct dotproxyd_conf *c,
    dnstap_anon_fn anon, void *anon_arg)
{
	struct dnstap_opts	o;

	parent = p;
	if (writer != NULL && strcmp(cur_path, c->dnstap_path) == 0 &&
	    cur_anon == c->dnstap_anonymize)
		return;
	if (writer != NULL)
		writer_end();
	strlcpy(cur_path, c->dnstap_path, sizeof(cur_path));
	cur_anon = c->dnstap_anonymize;
	if (cur_path[0] == '\0')
		return;
	memset(&o, 0, sizeof(o));
	o.version = "dotproxyd " DOTPROXYD_VERSION;
	o.anonymize = c->dnstap_anonymize;
	o.anon = anon;
	o.anon_arg = anon_arg;
	if ((writer = dnstap_writer_new(&o, 0)) == NULL) {
		log_warn("dnstap");
		return;
	}
	tap_update();
}

/* IMSG_DNSTAP_FD: a descriptor connected to the collector. */
void
tap_take_fd(struct chan *c, struct imsg *imsg)
{
	msg_need(c, imsg, 0, 0, MSG_FD);
	if (writer == NULL) {
		/* dnstap was turned off since it was asked for */
		close(imsg->fd);
		imsg->fd = -1;
		return;
	}
	events_del();
	dnstap_writer_set_fd(writer, imsg->fd);
	imsg->fd = -1;
	asked = 0;
	log_debug("dnstap: connected to the collector");
	tap_update();
}

/*
 * After anything the writer did: its events as it wants them, or the
 * parent asked for a descriptor when it has none.
 */
static void
tap_update(void)
{
	int	fd;

	if (writer == NULL)
		return;
	if ((fd = dnstap_writer_fd(writer)) == -1) {
		events_del();
		if (asked)
			return;
		if (imsg_compose(&parent->ibuf, IMSG_DNSTAP_NEEDFD, 0, -1,
		    NULL, 0) == -1)
			fatal("imsg_compose");
		chan_update(parent);
		asked = 1;
		return;
	}
	if (ev_fd != fd) {
		events_del();
		event_set(&ev_read, fd, EV_READ | EV_PERSIST, tap_io, NULL);
		event_set(&ev_write, fd, EV_WRITE, tap_io, NULL);
		event_add(&ev_read, NULL);
		ev_fd = fd;
	}
	if (dnstap_writer_want_write(writer)) {
		if (!event_pending(&ev_write, EV_WRITE, NULL))
			event_add(&ev_write, NULL);
	} else
		event_del(&ev_write);
}

static void
tap_io(int fd, short event, void *arg)
{
	struct tap_counts	 tc;
	const char		*why;
	int			 io = 0;

	(void)fd;
	(void)arg;
	if (event & EV_READ)
		io |= DNSTAP_IO_READ;
	if (event & EV_WRITE)
		io |= DNSTAP_IO_WRITE;
	if (dnstap_writer_io(writer, io) == -1) {
		ev_fd = -1;	/* the writer closed it: its events are gone */
		event_del(&ev_read);
		event_del(&ev_write);
		why = dnstap_writer_error(writer);
		tap_stats(&tc);
		log_info("dnstap: lost the collector (%s); records sent %llu, "
		    "dropped %llu", why != NULL ? why : "closed",
		    (unsigned long long)tc.sent,
		    (unsigned long long)tc.dropped);
	}
	tap_update();
}

int
tap_on(void)
{
	return writer != NULL;
}

/* One record; without a collector, dropped and counted. */
void
tap_log(const struct dnstap_event *ev)
{
	if (writer == NULL)
		return;
	if (dnstap_writer_needfd(writer)) {
		nofd_dropped++;
		return;
	}
	(void)dnstap_log(writer, ev);
	tap_update();
}

/* Records sent, and dropped: no room, no collector, or cut off. */
void
tap_stats(struct tap_counts *tc)
{
	tc->sent = old_sent;
	tc->dropped = old_dropped + nofd_dropped;
	if (writer != NULL) {
		uint64_t	s, d;

		dnstap_writer_stats(writer, &s, &d);
		tc->sent += s;
		tc->dropped += d;
	}
}

/* The wall clock time of a mono_us() time. */
void
tap_realtime(struct timespec *ts, int64_t mono)
{
	int64_t	us;

	clock_gettime(CLOCK_REALTIME, ts);
	us = (int64_t)ts->tv_sec * 1000000 + ts->tv_nsec / 1000 -
	    (mono_us() - mono);
	ts->tv_sec = us / 1000000;
	ts->tv_nsec = (us % 1000000) * 1000;
}
