/*
 * udpecho: the benchmark's floor for UDP cache hits.  It answers each
 * datagram sent to 127.0.0.1 PORT with the same bytes and the DNS QR bit
 * set, reading and writing in batches of 64 from an epoll loop, as
 * dotproxyd's listener does, and doing nothing else.  What it costs per
 * query is what the kernel's UDP path costs on this machine, in the same
 * run and with the same load generator as the forwarders.
 *
 *	usage: udpecho port
 */

#define _GNU_SOURCE
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <err.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BATCH	64
#define MAXMSG	4096

int
main(int argc, char *argv[])
{
	static uint8_t		 bufs[BATCH][MAXMSG];
	struct mmsghdr		 msgs[BATCH];
	struct iovec		 iov[BATCH];
	struct sockaddr_storage	 from[BATCH];
	struct sockaddr_in	 sin;
	struct epoll_event	 ev;
	char			*end;
	long			 port;
	int			 fd, ep, n, i, r, sent, bufsz = 1 << 20;

	if (argc != 2)
		errx(2, "usage: udpecho port");
	errno = 0;
	port = strtol(argv[1], &end, 10);
	if (errno != 0 || *argv[1] == '\0' || *end != '\0' || port < 1 ||
	    port > 65535)
		errx(2, "port %s: not a port number", argv[1]);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0)) == -1)
		err(1, "socket");
	/* the buffers dotproxyd asks for on its UDP sockets */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		err(1, "bind");
	if ((ep = epoll_create1(0)) == -1)
		err(1, "epoll_create1");
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
		err(1, "epoll_ctl");
	memset(msgs, 0, sizeof(msgs));
	for (i = 0; i < BATCH; i++) {
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &from[i];
	}
	for (;;) {
		if (epoll_wait(ep, &ev, 1, -1) == -1) {
			if (errno == EINTR)
				continue;
			err(1, "epoll_wait");
		}
		for (i = 0; i < BATCH; i++) {
			iov[i].iov_base = bufs[i];
			iov[i].iov_len = sizeof(bufs[i]);
			msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
		}
		if ((n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL)) == -1) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			err(1, "recvmmsg");
		}
		for (i = 0; i < n; i++) {
			if (msgs[i].msg_len > 2)
				bufs[i][2] |= 0x80;	/* QR: a response */
			iov[i].iov_len = msgs[i].msg_len;
		}
		/* as dotproxyd: all of them, but one the socket refuses */
		for (sent = 0; sent < n; sent += r)
			if ((r = sendmmsg(fd, msgs + sent,
			    (unsigned int)(n - sent), 0)) <= 0)
				r = (r == -1 && errno == EINTR) ? 0 : 1;
	}
}
