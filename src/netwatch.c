/*
 * Network changes, watched by the parent.  The routing socket is opened
 * before the parent confines itself and only read afterwards.  A burst
 * of changes (a link that comes up brings its addresses and routes) is
 * one notice, NETWATCH_SETTLE_MS after its first message, and notices
 * are at least NETWATCH_SPACING_MS apart however busy the network is.
 * What counts as a change is netwatch-linux.c's or netwatch-openbsd.c's
 * to say.
 */
#include <sys/types.h>
#include <sys/time.h>

#include <event.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "netwatch.h"

static void		 netwatch_readable(int, short, void *);
static void		 netwatch_settled(int, short, void *);
static long long	 now_ms(void);

static struct event	 ev_read, ev_settle;
static void		(*notify)(void);
static int		 seen;		/* kinds of change since a notice */
static long long	 last_notice = -NETWATCH_SPACING_MS;

/* Watch, if the system lets us; without it dotproxyd runs on. */
void
netwatch_start(void (*changed)(void))
{
	const char	*what = "routing socket";
	int		 fd;

	if ((fd = netwatch_open(&what)) == -1) {
		log_warn("network changes go unnoticed: %s", what);
		return;
	}
	notify = changed;
	evtimer_set(&ev_settle, netwatch_settled, NULL);
	event_set(&ev_read, fd, EV_READ | EV_PERSIST, netwatch_readable, NULL);
	if (event_add(&ev_read, NULL) == -1) {
		log_warn("network changes go unnoticed: event_add");
		close(fd);
	}
}

static long long
now_ms(void)
{
	struct timespec	ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 0;
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
netwatch_readable(int fd, short event, void *arg)
{
	struct timeval	 tv;
	long long	 wait;
	int		 kinds;

	(void)event;
	(void)arg;
	if ((kinds = netwatch_read(fd)) == -1) {
		log_warn("network changes go unnoticed from now on: reading "
		    "the routing socket");
		event_del(&ev_read);
		close(fd);
		return;
	}
	seen |= kinds;
	if (seen == 0 || evtimer_pending(&ev_settle, NULL))
		return;
	wait = last_notice + NETWATCH_SPACING_MS - now_ms();
	if (wait < NETWATCH_SETTLE_MS)
		wait = NETWATCH_SETTLE_MS;
	tv.tv_sec = (time_t)(wait / 1000);
	tv.tv_usec = (suseconds_t)(wait % 1000) * 1000;
	evtimer_add(&ev_settle, &tv);
}

/* The burst is over: say what changed, once, and pass it on. */
static void
netwatch_settled(int fd, short event, void *arg)
{
	char	what[64];

	(void)fd;
	(void)event;
	(void)arg;
	what[0] = '\0';
	if (seen & NETWATCH_LINK)
		strlcat(what, ", link", sizeof(what));
	if (seen & NETWATCH_ADDR)
		strlcat(what, ", address", sizeof(what));
	if (seen & NETWATCH_ROUTE)
		strlcat(what, ", default route", sizeof(what));
	if (seen & NETWATCH_LOST)
		strlcat(what, ", messages lost", sizeof(what));
	log_info("network changed (%s): the upstream process reconnects",
	    what[0] ? what + 2 : "?");
	seen = 0;
	last_notice = now_ms();
	notify();
}
