/*
 * Bytes from a peer over a socketpair, in chunks, into imsg_read() and
 * imsg_get().  A malformed frame must give -1 (fatal for that peer),
 * never a crash.  The first input byte picks the chunk size and whether
 * a descriptor travels with the first chunk.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imsg.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int
send_chunk(int s, const uint8_t *p, size_t len, int fd)
{
	struct msghdr	 msg;
	struct iovec	 iov;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int))];
	} cmsgbuf;
	struct cmsghdr	*cmsg;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = (void *)p;
	iov.iov_len = len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (fd != -1) {
		memset(&cmsgbuf, 0, sizeof(cmsgbuf));
		msg.msg_control = cmsgbuf.buf;
		msg.msg_controllen = sizeof(cmsgbuf.buf);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_len = CMSG_LEN(sizeof(int));
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	}
	return sendmsg(s, &msg, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Take every complete frame; -1 once the peer is to be dropped. */
static int
drain(struct imsgbuf *ibuf)
{
	struct imsg	im;
	ssize_t		n;
	volatile uint8_t sink = 0;

	while ((n = imsg_get(ibuf, &im)) > 0) {
		if (im.len != (size_t)n - 1 || im.len > IMSG_MAX_PAYLOAD)
			abort();
		if (im.len > 0)
			sink ^= ((uint8_t *)im.data)[0] ^
			    ((uint8_t *)im.data)[im.len - 1];
		imsg_free(&im);
	}
	(void)sink;
	return n == -1 ? -1 : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imsgbuf	 ibuf;
	size_t		 chunk, off;
	int		 sp[2], fd = -1, dead = 0;
	ssize_t		 n;

	if (size < 1)
		return 0;
	chunk = (data[0] & 0x3f) + 1;
	if (data[0] & 0x40)
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	data++;
	size--;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp) == -1) {
		if (fd != -1)
			close(fd);
		return 0;
	}
	if (imsgbuf_init(&ibuf, sp[1]) == -1)
		abort();
	for (off = 0; off < size && !dead; off += chunk) {
		size_t len = size - off < chunk ? size - off : chunk;

		if (send_chunk(sp[0], data + off, len, fd) == -1)
			break;
		if (fd != -1) {
			close(fd);
			fd = -1;
		}
		if ((n = imsg_read(&ibuf)) == -1) {
			if (errno != EAGAIN)
				dead = 1;
			continue;
		}
		if (drain(&ibuf) == -1)
			dead = 1;
	}
	if (fd != -1)
		close(fd);
	close(sp[0]);
	/* end of file: whatever is left is a truncated frame */
	while (!dead && (n = imsg_read(&ibuf)) > 0)
		if (drain(&ibuf) == -1)
			dead = 1;
	if (!dead && drain(&ibuf) == -1)
		dead = 1;
	imsgbuf_clear(&ibuf);
	close(sp[1]);
	return 0;
}
