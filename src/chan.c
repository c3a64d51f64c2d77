/*
 * A child's channels to the parent and to the other child, on the event
 * loop: what is queued is written at once, many messages per call, and
 * the loop waits for writability only when the socket is full.
 */
#include <sys/types.h>

#include <errno.h>
#include <event.h>
#include <stdlib.h>
#include <unistd.h>

#include "chan.h"
#include "log.h"

void
chan_update(struct chan *c)
{
	short	events;

	if (c->dispatch == NULL || c->ibuf.rbuf == NULL)
		return;		/* not set up yet, or the peer is gone */
	if (imsg_pending(&c->ibuf) && imsg_write(&c->ibuf) == -1 &&
	    errno != EPIPE && errno != ECONNRESET)
		log_warn("write to the %s", c->peer);
	events = EV_READ | (imsg_pending(&c->ibuf) ? EV_WRITE : 0);
	if (c->events == events && event_initialized(&c->ev))
		return;
	if (event_initialized(&c->ev))
		event_del(&c->ev);
	c->events = events;
	event_set(&c->ev, c->ibuf.fd, events | EV_PERSIST, c->dispatch, c);
	event_add(&c->ev, NULL);
}

/*
 * Do the I/O an event asks for.  Returns 1, or 0 when the peer is gone
 * (end of file or a broken socket); for a vital channel this process
 * exits instead: a child without its parent has no reason to run.
 */
int
chan_io(struct chan *c, short event)
{
	ssize_t	n = 1;

	if (event & EV_WRITE && imsg_write(&c->ibuf) == -1)
		n = 0;
	else if (event & EV_READ) {
		n = imsg_read(&c->ibuf);
		if (n == -1 && errno == EAGAIN)
			n = 1;
		else if (n == -1) {
			log_warn("read from the %s", c->peer);
			n = 0;
		}
	}
	if (n == 0 && c->vital)
		exit(0);
	return n != 0;
}

/* Close a channel whose peer is gone; chan_update() skips it after. */
void
chan_close(struct chan *c)
{
	if (event_initialized(&c->ev))
		event_del(&c->ev);
	c->events = 0;
	if (c->ibuf.rbuf == NULL)
		return;
	imsgbuf_clear(&c->ibuf);
	close(c->ibuf.fd);
}
