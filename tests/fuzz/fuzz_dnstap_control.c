/*
 * A dnstap collector's bytes, in chunks over a socketpair, into the
 * Frame Streams writer of src/dnstap.c: the control frame reassembly
 * (escape, length, payload) done there and the decoding libfstrm does
 * for it, after READY (ACCEPT expected) and after STOP (FINISH).  Any
 * input must end in a running stream or a lost descriptor, never a
 * crash; and the writer must go on to START exactly when the input
 * begins with a whole ACCEPT frame of at most 512 bytes for our content
 * type.
 *
 * Input: byte 0 picks the chunk size; the rest is the collector's byte
 * stream.  Once START is out, a record is logged and the stream ended,
 * so the rest of the input is read as the answer to STOP.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstrm.h>

#include "dnstap.h"

#define CT		DNSTAP_CONTENT_TYPE
#define CT_LEN		(sizeof(DNSTAP_CONTENT_TYPE) - 1)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* The oracle: the input starts with a whole ACCEPT for our content type. */
static int
starts_with_accept(const uint8_t *p, size_t len)
{
	struct fstrm_control	*c;
	fstrm_control_type	 type;
	uint32_t		 clen;
	int			 yes;

	if (len < 8 || be32(p) != 0)
		return 0;
	clen = be32(p + 4);
	if (clen > FSTRM_CONTROL_FRAME_LENGTH_MAX || clen > len - 8)
		return 0;
	if ((c = fstrm_control_init()) == NULL)
		abort();
	yes = fstrm_control_decode(c, p + 8, clen, 0) == fstrm_res_success &&
	    fstrm_control_get_type(c, &type) == fstrm_res_success &&
	    type == FSTRM_CONTROL_ACCEPT &&
	    fstrm_control_match_field_content_type(c, (const uint8_t *)CT,
	    CT_LEN) == fstrm_res_success;
	fstrm_control_destroy(&c);
	return yes;
}

/*
 * Read what the writer sent so far: 1 once there is more than READY,
 * which is then whole and well framed.
 */
static int
sent_past_ready(int fd)
{
	static uint8_t	buf[65536];
	static size_t	len;
	ssize_t		n;

	if (fd == -1) {
		len = 0;
		return 0;
	}
	while (len < sizeof(buf) &&
	    (n = read(fd, buf + len, sizeof(buf) - len)) > 0)
		len += n;
	if (len < 8 || be32(buf) != 0 || be32(buf + 4) > len - 8)
		abort();
	return len > 8 + be32(buf + 4);
}

static void
log_one(struct dnstap_writer *w)
{
	static const uint8_t	 q[] = { 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
				    0, 0, 1, 0, 1 };
	struct sockaddr_in	 sin;
	struct dnstap_event	 ev;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(53);
	memset(&ev, 0, sizeof(ev));
	ev.type = DNSTAP_CLIENT_QUERY;
	ev.proto = DNSTAP_UDP;
	ev.peer = (struct sockaddr *)&sin;
	ev.msg = q;
	ev.msglen = sizeof(q);
	(void)dnstap_log(w, &ev);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dnstap_writer	*w;
	size_t			 chunk, off, n;
	int			 sp[2], lost = 0, ending = 0, r;

	if (size < 1)
		return 0;
	signal(SIGPIPE, SIG_IGN);
	chunk = (data[0] & 0x3f) + 1;
	data++;
	size--;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == -1 ||
	    fcntl(sp[0], F_SETFL, O_NONBLOCK) == -1 ||
	    fcntl(sp[1], F_SETFL, O_NONBLOCK) == -1)
		abort();
	if ((w = dnstap_writer_new(NULL, DNSTAP_QUEUE_MIN)) == NULL)
		abort();
	dnstap_writer_set_fd(w, sp[0]);
	if (dnstap_writer_io(w, DNSTAP_IO_WRITE) != 0)
		abort();

	(void)sent_past_ready(-1);
	for (off = 0; off < size && !lost; off += n) {
		n = size - off < chunk ? size - off : chunk;
		if (write(sp[1], data + off, n) != (ssize_t)n)
			abort();
		r = dnstap_writer_io(w, DNSTAP_IO_READ | DNSTAP_IO_WRITE);
		if (r != 0 && r != -1)
			abort();
		lost = r == -1;
		if (lost != dnstap_writer_needfd(w))
			abort();
		if (!lost && !ending && sent_past_ready(sp[1])) {
			/* START is out: a record, then STOP */
			ending = 1;
			log_one(w);
			if (dnstap_writer_close(w) != 0 ||
			    dnstap_writer_io(w, DNSTAP_IO_WRITE) != 0)
				abort();
		}
	}
	if (ending != starts_with_accept(data, size))
		abort();
	dnstap_writer_free(w);
	close(sp[1]);
	return 0;
}
