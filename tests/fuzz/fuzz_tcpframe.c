/*
 * DNS over TCP (RFC 7766): 2-byte length-prefixed messages arriving in
 * arbitrary pieces.  The framing is dns_tcp_frame(), which both the
 * listener and the upstream process use; this target drives it the way
 * tcp_process() in src/tcpclient.c does (buffer of 2 + 65535 bytes, stop
 * at TCP_MAX_INFLIGHT queries in flight, which is where the listener's
 * byte budget stops a connection with no answers waiting, close on a
 * zero length, move the unread rest to the front) and runs every
 * extracted frame through dns_check_query() and the answer builders, as
 * handle_query() does.
 *
 * Input: byte 0 picks the read size, byte 1 how many queries get
 * answered between reads; the rest is the client's byte stream.
 *
 * It aborts when a whole query is left unread in the buffer while the
 * in-flight cap allows it, as a client would then wait forever.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

/* src/tcpclient.c: TCP_CONN_BUDGET / TCP_ANSWER_MAX, answers not queued */
#define TCP_MAX_INFLIGHT	16

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

struct conn {
	size_t	 rlen;
	int	 inflight;
	int	 closed;
	size_t	 handled;
	uint8_t	 rbuf[2 + DNS_MAX_MSG];
};

static void
handle_query(struct conn *c, const uint8_t *frame, size_t len)
{
	static uint8_t	 out[DNS_MAX_MSG];
	struct dns_msg	 qm;
	uint8_t		*q;
	int		 rc;

	/* an exactly sized copy, so ASan sees any read past the frame */
	if ((q = malloc(len)) == NULL)
		return;
	memcpy(q, frame, len);
	c->handled++;
	rc = dns_check_query(q, len, &qm);
	if (rc == DNS_RCODE_NOERROR) {
		if (dns_make_query(out, sizeof(out), q, &qm, 1,
		    DNS_PAD_BLOCK) == 0)
			abort();
		c->inflight++;
	} else if (rc != -1)
		(void)dns_make_error(out, sizeof(out), q, len, &qm, rc, -1,
		    NULL, 1);
	free(q);
}

/* The listener's tcp_process(): take whole messages while below the cap. */
static void
tcp_process(struct conn *c)
{
	size_t	mlen, off = 0;
	int	r;

	while (c->inflight < TCP_MAX_INFLIGHT &&
	    (r = dns_tcp_frame(c->rbuf + off, c->rlen - off, &mlen)) != 0) {
		if (r == -1) {
			c->closed = 1;
			return;
		}
		handle_query(c, c->rbuf + off + 2, mlen);
		off += 2 + mlen;
	}
	if (off > 0) {
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	}
	if (c->rlen > sizeof(c->rbuf))
		abort();
}

/* One read event of the listener's tcp_read(). */
static void
tcp_read(struct conn *c, const uint8_t *p, size_t n)
{
	memcpy(c->rbuf + c->rlen, p, n);
	c->rlen += n;
	tcp_process(c);
}

/* Answers went out: the listener's tcp_resume() takes what waited. */
static void
answered(struct conn *c, size_t answers)
{
	c->inflight -= c->inflight < (int)answers ? c->inflight :
	    (int)answers;
	tcp_process(c);
}

/* A complete message waiting at the front of the buffer? */
static int
complete_frame_buffered(const struct conn *c)
{
	size_t	mlen;

	return dns_tcp_frame(c->rbuf, c->rlen, &mlen) == 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conn	 c;
	size_t			 chunk, answers, off, n, room;

	if (size < 2)
		return 0;
	chunk = (size_t)(data[0] % 64) + 1;
	if (data[0] & 0x80)
		chunk *= 97;		/* some big reads too */
	answers = data[1];
	data += 2;
	size -= 2;

	memset(&c, 0, offsetof(struct conn, rbuf));
	for (off = 0; off < size && !c.closed; off += n) {
		/* the listener reads only while below the in-flight cap */
		if (c.inflight >= TCP_MAX_INFLIGHT) {
			if (answers == 0)
				break;
			answered(&c, answers);
			if (c.closed)
				break;
		}
		room = sizeof(c.rbuf) - c.rlen;
		n = size - off < chunk ? size - off : chunk;
		if (n > room)
			n = room;
		if (n > 0)
			tcp_read(&c, data + off, n);
		else if (c.inflight < TCP_MAX_INFLIGHT)
			abort();	/* full of a message it will not take */
		/* answers arriving between reads */
		if (!c.closed)
			answered(&c, answers);
	}
	/* with answers coming back, no whole query stays unread */
	if (!c.closed && answers > 0 && c.inflight < TCP_MAX_INFLIGHT &&
	    complete_frame_buffered(&c))
		abort();
	return 0;
}
