/*
 * What the two children share: the start-up exchange with the parent,
 * run blocking before the child confines itself.
 */
#include <sys/types.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"

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

/*
 * Read from the parent until the first config is complete.  Descriptor
 * messages before it go to take_fd, which returns -1 for a message it
 * does not expect.
 */
struct dotproxyd_conf *
proc_startup(struct imsgbuf *ibuf, int (*take_fd)(struct imsg *))
{
	struct dotproxyd_conf	*pending = NULL;
	struct imsg		 imsg;
	struct pollfd		 pfd;
	ssize_t			 n;
	int			 r;

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
				if ((r = config_recv(&pending, &imsg)) == -1)
					fatalx("bad config message %u",
					    imsg.hdr.type);
				imsg_free(&imsg);
				if (r == 1)
					return pending;
				break;
			default:
				if (take_fd(&imsg) == -1)
					fatalx("unexpected message %u during "
					    "start-up", imsg.hdr.type);
				imsg_free(&imsg);
			}
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

/*
 * What both children do with their parent's messages once running: a
 * new config (returned in *pending when complete, for the caller to
 * apply: the return value is then 2), a new channel to the other child
 * (after peer_lost() has dropped the old one), a log level.  Returns 1
 * for a message handled here, 0 for one the caller handles.
 */
int
proc_parent_message(struct imsg *imsg, struct dotproxyd_conf *conf,
    struct dotproxyd_conf **pending, struct chan *peer, int *peer_up,
    void (*peer_lost)(void))
{
	int	r, v;

	switch (imsg->hdr.type) {
	case IMSG_CONF_MAIN:
	case IMSG_CONF_LISTEN:
	case IMSG_CONF_UPSTREAM:
	case IMSG_CONF_ACL:
	case IMSG_CONF_END:
		if ((r = config_recv(pending, imsg)) == -1)
			fatalx("bad config message from the parent");
		return r == 1 ? 2 : 1;
	case IMSG_PEER_FD:
		if (imsg->fd == -1 || imsg->len != 0)
			fatalx("bad peer message from the parent");
		if (*peer_up)
			peer_lost();
		if (imsgbuf_init(&peer->ibuf, imsg->fd) == -1)
			fatal("imsgbuf_init");
		imsg->fd = -1;
		*peer_up = 1;
		peer->events = 0;
		chan_update(peer);
		log_info("connected to the new %s", peer->peer);
		return 1;
	case IMSG_CTL_LOG:
		if (imsg->len != sizeof(v))
			fatalx("bad log message from the parent");
		memcpy(&v, imsg->data, sizeof(v));
		conf->verbose = v;
		log_setverbose(v);
		return 1;
	}
	return 0;
}
