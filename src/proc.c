/*
 * What the two children share: the start-up exchange with the parent,
 * run blocking before the child confines itself.
 */
#include <sys/types.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

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
