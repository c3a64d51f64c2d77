/*
 * Framed messages between dotproxyd's processes, in the shape of
 * OpenBSD's imsg(3): compose, read, get, free, flush.
 *
 * A frame is a fixed header (type, payload length, peer id, pid; 32 bits
 * each, host byte order since both ends are the same binary on the same
 * host) followed by the payload.  The top bit of the length word says that
 * a file descriptor travelled beside the frame with SCM_RIGHTS.
 */
#ifndef DOTPROXYD_IMSG_H
#define DOTPROXYD_IMSG_H

#include <sys/types.h>
#include <sys/queue.h>
#include <stddef.h>
#include <stdint.h>

#define IMSG_HDR_SIZE		sizeof(struct imsg_hdr)
#define IMSG_MAX_PAYLOAD	(65535 + 64)
#define IMSG_FLAG_FD		0x80000000U
#define IMSG_LEN_MASK		0x7fffffffU
#define IMSG_RBUF_SIZE		(2 * (IMSG_HDR_SIZE + IMSG_MAX_PAYLOAD))
#define IMSG_READ_SIZE		16384	/* a read, unless a frame needs more */
#define IMSG_MAX_FDS		16	/* received but not yet claimed */
#define IMSG_MAX_QUEUED		(64 * 1024 * 1024) /* bytes waiting to go */

struct imsg_hdr {
	uint32_t	type;
	uint32_t	len;	/* payload length | IMSG_FLAG_FD */
	uint32_t	peerid;
	uint32_t	pid;
};

struct imsg {
	struct imsg_hdr	 hdr;
	int		 fd;	/* -1 unless the frame carried one */
	void		*data;	/* points into the read buffer */
	size_t		 len;	/* payload length */
};

struct imsg_wbuf {
	TAILQ_ENTRY(imsg_wbuf)	 entry;
	size_t			 len;
	size_t			 off;
	int			 fd;	/* sent with the first byte */
	unsigned char		 data[];
};

struct imsgbuf {
	int			 fd;
	uint32_t		 pid;
	unsigned char		*rbuf;
	size_t			 rlen;	/* bytes in rbuf */
	size_t			 roff;	/* start of the unread frame */
	int			 fds[IMSG_MAX_FDS];
	int			 nfds;
	TAILQ_HEAD(, imsg_wbuf)	 wq;
	size_t			 wqlen;	/* bytes queued */
};

int	 imsgbuf_init(struct imsgbuf *, int);
void	 imsgbuf_clear(struct imsgbuf *);
ssize_t	 imsg_read(struct imsgbuf *);
ssize_t	 imsg_get(struct imsgbuf *, struct imsg *);
void	 imsg_free(struct imsg *);
int	 imsg_compose(struct imsgbuf *, uint32_t, uint32_t, int,
	    const void *, size_t);
int	 imsg_composev2(struct imsgbuf *, uint32_t, uint32_t,
	    const void *, size_t, const void *, size_t);
int	 imsg_write(struct imsgbuf *);
int	 imsg_flush(struct imsgbuf *);
int	 imsg_pending(const struct imsgbuf *);

#endif /* DOTPROXYD_IMSG_H */
