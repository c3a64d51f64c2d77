/*
 * Framed messages over a socketpair, with file descriptor passing.
 * See include/imsg.h for the frame layout.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imsg.h"

#define IMSG_IOV_MAX	64

int
imsgbuf_init(struct imsgbuf *ibuf, int fd)
{
	memset(ibuf, 0, sizeof(*ibuf));
	if ((ibuf->rbuf = malloc(IMSG_RBUF_SIZE)) == NULL)
		return -1;
	ibuf->fd = fd;
	ibuf->pid = (uint32_t)getpid();
	TAILQ_INIT(&ibuf->wq);
	return 0;
}

void
imsgbuf_clear(struct imsgbuf *ibuf)
{
	struct imsg_wbuf	*w;
	int			 i;

	while ((w = TAILQ_FIRST(&ibuf->wq)) != NULL) {
		TAILQ_REMOVE(&ibuf->wq, w, entry);
		if (w->fd != -1)
			close(w->fd);
		free(w);
	}
	for (i = 0; i < ibuf->nfds; i++)
		close(ibuf->fds[i]);
	ibuf->nfds = 0;
	ibuf->wqlen = 0;
	free(ibuf->rbuf);
	ibuf->rbuf = NULL;
	ibuf->rlen = ibuf->roff = 0;
}

/*
 * How much the next read may take: IMSG_READ_SIZE, or what the frame at
 * the front still lacks if that is more.  The buffer's pages are then
 * touched only as far as its longest frame reaches, not by every burst
 * of short ones, and the buffer has room for any frame (IMSG_RBUF_SIZE).
 */
static size_t
read_size(const struct imsgbuf *ibuf)
{
	struct imsg_hdr	hdr;
	size_t		want = IMSG_READ_SIZE, frame;

	if (ibuf->rlen >= IMSG_HDR_SIZE) {
		memcpy(&hdr, ibuf->rbuf, IMSG_HDR_SIZE);
		frame = IMSG_HDR_SIZE + (hdr.len & IMSG_LEN_MASK);
		if (frame > ibuf->rlen && frame - ibuf->rlen > want)
			want = frame - ibuf->rlen;
	}
	if (want > IMSG_RBUF_SIZE - ibuf->rlen)
		want = IMSG_RBUF_SIZE - ibuf->rlen;
	return want;
}

/*
 * Read what the socket has.  Returns the number of bytes read, 0 at end of
 * file, -1 on error (EAGAIN included, for the caller to ignore).  Frames
 * returned by earlier imsg_get() calls are invalid afterwards.
 */
ssize_t
imsg_read(struct imsgbuf *ibuf)
{
	struct msghdr	 msg;
	struct iovec	 iov;
	struct cmsghdr	*cmsg;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int) * IMSG_MAX_FDS)];
	} cmsgbuf;
	ssize_t		 n;
	size_t		 i, nfd;
	int		*fdp, bad = 0;

	if (ibuf->roff > 0) {
		memmove(ibuf->rbuf, ibuf->rbuf + ibuf->roff,
		    ibuf->rlen - ibuf->roff);
		ibuf->rlen -= ibuf->roff;
		ibuf->roff = 0;
	}
	if (ibuf->rlen == IMSG_RBUF_SIZE) {
		errno = ENOBUFS;
		return -1;
	}

	memset(&msg, 0, sizeof(msg));
	memset(&cmsgbuf, 0, sizeof(cmsgbuf));
	iov.iov_base = ibuf->rbuf + ibuf->rlen;
	iov.iov_len = read_size(ibuf);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cmsgbuf.buf;
	msg.msg_controllen = sizeof(cmsgbuf.buf);

	do {
		n = recvmsg(ibuf->fd, &msg, MSG_CMSG_CLOEXEC);
	} while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;

	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg != NULL;
	    cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level != SOL_SOCKET ||
		    cmsg->cmsg_type != SCM_RIGHTS ||
		    cmsg->cmsg_len < CMSG_LEN(0))
			continue;
		nfd = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		fdp = (int *)CMSG_DATA(cmsg);
		for (i = 0; i < nfd; i++) {
			int fd;

			memcpy(&fd, fdp + i, sizeof(fd));
			if (ibuf->nfds < IMSG_MAX_FDS)
				ibuf->fds[ibuf->nfds++] = fd;
			else {
				close(fd);
				bad = 1;
			}
		}
	}
	if (bad || (msg.msg_flags & MSG_CTRUNC)) {
		errno = EBADMSG;
		return -1;
	}
	ibuf->rlen += (size_t)n;
	return n;
}

/*
 * Take the next complete frame.  Returns its payload length plus one (so
 * an empty payload is distinguishable from "nothing yet"), 0 when no
 * complete frame is buffered, -1 with errno EBADMSG on a malformed one.
 * The payload is not aligned: copy it out before reading a struct.
 */
ssize_t
imsg_get(struct imsgbuf *ibuf, struct imsg *imsg)
{
	size_t	 avail, len;

	avail = ibuf->rlen - ibuf->roff;
	if (avail < IMSG_HDR_SIZE)
		return 0;
	memcpy(&imsg->hdr, ibuf->rbuf + ibuf->roff, IMSG_HDR_SIZE);
	len = imsg->hdr.len & IMSG_LEN_MASK;
	if (len > IMSG_MAX_PAYLOAD) {
		errno = EBADMSG;
		return -1;
	}
	if (avail - IMSG_HDR_SIZE < len)
		return 0;
	imsg->fd = -1;
	if (imsg->hdr.len & IMSG_FLAG_FD) {
		if (ibuf->nfds == 0) {
			errno = EBADMSG;
			return -1;
		}
		imsg->fd = ibuf->fds[0];
		memmove(ibuf->fds, ibuf->fds + 1,
		    (size_t)(ibuf->nfds - 1) * sizeof(int));
		ibuf->nfds--;
	}
	imsg->hdr.len = (uint32_t)len;
	imsg->len = len;
	imsg->data = len ? ibuf->rbuf + ibuf->roff + IMSG_HDR_SIZE : NULL;
	ibuf->roff += IMSG_HDR_SIZE + len;
	if (ibuf->roff == ibuf->rlen)
		ibuf->roff = ibuf->rlen = 0;
	return (ssize_t)len + 1;
}

/* Close a descriptor the receiver did not claim (set imsg->fd to -1). */
void
imsg_free(struct imsg *imsg)
{
	if (imsg->fd != -1)
		close(imsg->fd);
	imsg->fd = -1;
	imsg->data = NULL;
	imsg->len = 0;
}

static int
imsg_enqueue(struct imsgbuf *ibuf, uint32_t type, uint32_t peerid, int fd,
    const void *d1, size_t l1, const void *d2, size_t l2)
{
	struct imsg_wbuf	*w;
	struct imsg_hdr		 hdr;
	size_t			 len;

	if (l1 > IMSG_MAX_PAYLOAD || l2 > IMSG_MAX_PAYLOAD - l1) {
		errno = EMSGSIZE;
		return -1;
	}
	len = IMSG_HDR_SIZE + l1 + l2;
	if (ibuf->wqlen + len > IMSG_MAX_QUEUED) {
		errno = ENOBUFS;
		return -1;
	}
	if ((w = malloc(sizeof(*w) + len)) == NULL)
		return -1;
	hdr.type = type;
	hdr.len = (uint32_t)(l1 + l2) | (fd != -1 ? IMSG_FLAG_FD : 0);
	hdr.peerid = peerid;
	hdr.pid = ibuf->pid;
	memcpy(w->data, &hdr, IMSG_HDR_SIZE);
	if (l1)
		memcpy(w->data + IMSG_HDR_SIZE, d1, l1);
	if (l2)
		memcpy(w->data + IMSG_HDR_SIZE + l1, d2, l2);
	w->len = len;
	w->off = 0;
	w->fd = fd;
	TAILQ_INSERT_TAIL(&ibuf->wq, w, entry);
	ibuf->wqlen += len;
	return 0;
}

/*
 * Queue a frame.  A descriptor given here belongs to the queue from now
 * on and is closed once sent, or on error.
 */
int
imsg_compose(struct imsgbuf *ibuf, uint32_t type, uint32_t peerid, int fd,
    const void *data, size_t len)
{
	if (imsg_enqueue(ibuf, type, peerid, fd, data, len, NULL, 0) == -1) {
		if (fd != -1)
			close(fd);
		return -1;
	}
	return 0;
}

/* Queue a frame whose payload is two pieces, e.g. a struct then bytes. */
int
imsg_composev2(struct imsgbuf *ibuf, uint32_t type, uint32_t peerid,
    const void *d1, size_t l1, const void *d2, size_t l2)
{
	return imsg_enqueue(ibuf, type, peerid, -1, d1, l1, d2, l2);
}

int
imsg_pending(const struct imsgbuf *ibuf)
{
	return !TAILQ_EMPTY(&ibuf->wq);
}

/*
 * Write as much of the queue as the socket takes, many frames per call.
 * Returns 0 (perhaps with frames still queued) or -1 on a hard error.
 */
int
imsg_write(struct imsgbuf *ibuf)
{
	struct iovec		 iov[IMSG_IOV_MAX];
	struct msghdr		 msg;
	struct imsg_wbuf	*w, *first;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int))];
	} cmsgbuf;
	struct cmsghdr		*cmsg;
	ssize_t			 n;
	size_t			 left;
	int			 i;

	while ((first = TAILQ_FIRST(&ibuf->wq)) != NULL) {
		memset(&msg, 0, sizeof(msg));
		i = 0;
		TAILQ_FOREACH(w, &ibuf->wq, entry) {
			if (i == IMSG_IOV_MAX || (w != first && w->fd != -1))
				break;
			iov[i].iov_base = w->data + w->off;
			iov[i].iov_len = w->len - w->off;
			i++;
		}
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)i;
		if (first->fd != -1) {
			memset(&cmsgbuf, 0, sizeof(cmsgbuf));
			msg.msg_control = cmsgbuf.buf;
			msg.msg_controllen = sizeof(cmsgbuf.buf);
			cmsg = CMSG_FIRSTHDR(&msg);
			cmsg->cmsg_len = CMSG_LEN(sizeof(int));
			cmsg->cmsg_level = SOL_SOCKET;
			cmsg->cmsg_type = SCM_RIGHTS;
			memcpy(CMSG_DATA(cmsg), &first->fd, sizeof(int));
		}
		n = sendmsg(ibuf->fd, &msg, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -1;
		}
		if (first->fd != -1) {
			close(first->fd);
			first->fd = -1;
		}
		left = (size_t)n;
		while (left > 0 && (w = TAILQ_FIRST(&ibuf->wq)) != NULL) {
			size_t chunk = w->len - w->off;

			if (left < chunk) {
				w->off += left;
				ibuf->wqlen -= left;
				break;
			}
			left -= chunk;
			ibuf->wqlen -= chunk;
			TAILQ_REMOVE(&ibuf->wq, w, entry);
			free(w);
		}
	}
	return 0;
}

/* Write the whole queue, waiting for the socket as needed. */
int
imsg_flush(struct imsgbuf *ibuf)
{
	struct pollfd	pfd;

	while (imsg_pending(ibuf)) {
		if (imsg_write(ibuf) == -1)
			return -1;
		if (!imsg_pending(ibuf))
			break;
		pfd.fd = ibuf->fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR)
			return -1;
	}
	return 0;
}
