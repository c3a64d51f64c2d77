/*
 * imsg framing: round trips, batching, reassembly across reads, fd
 * passing, and the receiver's checks on malformed frames.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imsg.h"
#include "tap.h"

static int	pair[2];

static void
open_pair(void)
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == -1) {
		perror("socketpair");
		exit(2);
	}
}

static void
close_pair(void)
{
	if (pair[0] != -1)
		close(pair[0]);
	if (pair[1] != -1)
		close(pair[1]);
	pair[0] = pair[1] = -1;
}

static void
write_all(int fd, const void *p, size_t len)
{
	const unsigned char	*b = p;
	ssize_t			 n;

	while (len > 0) {
		if ((n = write(fd, b, len)) == -1) {
			if (errno == EINTR)
				continue;
			perror("write");
			exit(2);
		}
		b += n;
		len -= (size_t)n;
	}
}

static void
test_round_trip(void)
{
	struct imsgbuf	 w, r;
	struct imsg	 im;
	const char	 payload[] = "hello, listener";
	ssize_t		 n;

	open_pair();
	ok(imsgbuf_init(&w, pair[0]) == 0 && imsgbuf_init(&r, pair[1]) == 0,
	    "round trip: imsgbuf_init");
	is_int(imsg_compose(&w, 7, 42, -1, payload, sizeof(payload)), 0,
	    "round trip: compose");
	ok(imsg_pending(&w), "round trip: frame pending after compose");
	is_int(imsg_flush(&w), 0, "round trip: flush");
	ok(!imsg_pending(&w), "round trip: nothing pending after flush");
	is_int(w.wqlen, 0, "round trip: wqlen back to 0");
	n = imsg_read(&r);
	is_int(n, IMSG_HDR_SIZE + sizeof(payload), "round trip: read the frame");
	n = imsg_get(&r, &im);
	is_int(n, sizeof(payload) + 1, "round trip: get returns len + 1");
	is_int(im.hdr.type, 7, "round trip: type");
	is_int(im.hdr.peerid, 42, "round trip: peerid");
	is_int(im.hdr.pid, (uint32_t)getpid(), "round trip: pid");
	is_int(im.hdr.len, sizeof(payload), "round trip: hdr.len has no flag");
	is_int(im.len, sizeof(payload), "round trip: len");
	is_int(im.fd, -1, "round trip: no fd");
	ok(im.data != NULL && memcmp(im.data, payload, sizeof(payload)) == 0,
	    "round trip: payload");
	imsg_free(&im);
	is_int(imsg_get(&r, &im), 0, "round trip: nothing more");

	/* an empty payload is distinguishable from "nothing yet" */
	imsg_compose(&w, 8, 0, -1, NULL, 0);
	imsg_flush(&w);
	imsg_read(&r);
	is_int(imsg_get(&r, &im), 1, "empty payload: get returns 1");
	ok(im.data == NULL && im.len == 0 && im.hdr.type == 8,
	    "empty payload: no data");
	imsgbuf_clear(&w);
	imsgbuf_clear(&r);
	close_pair();
}

static void
test_many_in_one_read(void)
{
	struct imsgbuf	 w, r;
	struct imsg	 im;
	uint32_t	 i, v, bad = 0;
	ssize_t		 n;
	const uint32_t	 count = 50;

	open_pair();
	imsgbuf_init(&w, pair[0]);
	imsgbuf_init(&r, pair[1]);
	for (i = 0; i < count; i++)
		if (imsg_compose(&w, 100 + i, i, -1, &i, sizeof(i)) == -1)
			bad++;
	is_int(bad, 0, "batch: %u composes", count);
	is_int(w.wqlen, count * (IMSG_HDR_SIZE + sizeof(uint32_t)),
	    "batch: wqlen counts header and payload");
	is_int(imsg_flush(&w), 0, "batch: flush");
	n = imsg_read(&r);
	is_int(n, count * (IMSG_HDR_SIZE + sizeof(uint32_t)),
	    "batch: one read takes every frame");
	for (i = 0; i < count; i++) {
		if (imsg_get(&r, &im) != (ssize_t)sizeof(v) + 1) {
			bad++;
			break;
		}
		memcpy(&v, im.data, sizeof(v));
		if (im.hdr.type != 100 + i || im.hdr.peerid != i || v != i)
			bad++;
		imsg_free(&im);
	}
	is_int(bad, 0, "batch: every frame in order with its payload");
	is_int(imsg_get(&r, &im), 0, "batch: then nothing");
	is_int(r.rlen, 0, "batch: read buffer emptied");
	imsgbuf_clear(&w);
	imsgbuf_clear(&r);
	close_pair();
}

/*
 * A burst of short frames is read IMSG_READ_SIZE at a time, so the read
 * buffer is touched no further than that and one frame.
 */
static void
test_read_size(void)
{
	struct imsgbuf	 w, r;
	struct imsg	 im;
	unsigned char	 payload[100];
	uint32_t	 i, got = 0, bad = 0;
	size_t		 most = 0;
	ssize_t		 n;
	const uint32_t	 count = 600;	/* 69,600 bytes */
	int		 guard = 0;

	open_pair();
	imsgbuf_init(&w, pair[0]);
	imsgbuf_init(&r, pair[1]);
	for (i = 0; i < count; i++) {
		memset(payload, (int)(i & 0xff), sizeof(payload));
		if (imsg_compose(&w, 1, i, -1, payload, sizeof(payload)) == -1)
			bad++;
	}
	is_int(imsg_flush(&w), 0, "read size: flush %u frames", count);
	is_int(imsg_read(&r), IMSG_READ_SIZE,
	    "read size: the first read takes IMSG_READ_SIZE bytes");
	do {
		if (r.rlen > most)
			most = r.rlen;
		while ((n = imsg_get(&r, &im)) > 0) {
			if (im.hdr.peerid != got || n != sizeof(payload) + 1 ||
			    ((unsigned char *)im.data)[0] != (got & 0xff) ||
			    ((unsigned char *)im.data)[sizeof(payload) - 1] !=
			    (got & 0xff))
				bad++;
			got++;
			imsg_free(&im);
		}
	} while (got < count && guard++ < 100 && imsg_read(&r) > 0);
	is_int(got, count, "read size: every frame read");
	is_int(bad, 0, "read size: in order, each with its payload");
	ok(most <= IMSG_READ_SIZE + IMSG_HDR_SIZE + sizeof(payload),
	    "read size: the buffer filled to %zu bytes at most", most);
	imsgbuf_clear(&w);
	imsgbuf_clear(&r);
	close_pair();
}

/* Write a frame by hand in pieces; imsg_get must wait for the whole. */
static void
test_split_frame(void)
{
	struct imsgbuf	 r;
	struct imsg	 im;
	struct imsg_hdr	 hdr;
	unsigned char	 frame[IMSG_HDR_SIZE + 300];
	size_t		 cuts[] = { 1, 7, IMSG_HDR_SIZE, IMSG_HDR_SIZE + 1,
			    IMSG_HDR_SIZE + 150, sizeof(frame) - 1 };
	size_t		 i, prev = 0;
	int		 early = 0;

	open_pair();
	imsgbuf_init(&r, pair[1]);
	hdr.type = 9;
	hdr.len = 300;
	hdr.peerid = 77;
	hdr.pid = 1234;
	memcpy(frame, &hdr, sizeof(hdr));
	for (i = 0; i < 300; i++)
		frame[IMSG_HDR_SIZE + i] = (unsigned char)i;

	for (i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		write_all(pair[0], frame + prev, cuts[i] - prev);
		if (imsg_read(&r) != (ssize_t)(cuts[i] - prev))
			early++;
		if (imsg_get(&r, &im) != 0)
			early++;
		prev = cuts[i];
	}
	is_int(early, 0, "split: get returns 0 for each of %zu partial reads",
	    sizeof(cuts) / sizeof(cuts[0]));
	write_all(pair[0], frame + prev, sizeof(frame) - prev);
	is_int(imsg_read(&r), 1, "split: read the last byte");
	is_int(imsg_get(&r, &im), 301, "split: complete frame returned");
	ok(im.hdr.type == 9 && im.hdr.peerid == 77 && im.hdr.pid == 1234,
	    "split: header intact");
	ok(im.len == 300 && memcmp(im.data, frame + IMSG_HDR_SIZE, 300) == 0,
	    "split: payload intact");
	imsg_free(&im);

	/* two frames, the boundary in the middle of the second header */
	write_all(pair[0], frame, sizeof(frame));
	write_all(pair[0], frame, 5);
	imsg_read(&r);
	is_int(imsg_get(&r, &im), 301, "split: first of two frames");
	is_int(imsg_get(&r, &im), 0, "split: second not yet complete");
	write_all(pair[0], frame + 5, sizeof(frame) - 5);
	imsg_read(&r);
	is_int(imsg_get(&r, &im), 301, "split: second completes after read");
	ok(memcmp(im.data, frame + IMSG_HDR_SIZE, 300) == 0,
	    "split: second payload intact after the buffer moved");
	imsgbuf_clear(&r);
	close_pair();
}

static void
test_fd_passing(void)
{
	struct imsgbuf	 w, r;
	struct imsg	 im;
	int		 p[2], fd;
	char		 buf[16] = "";
	const char	 tag[] = "fd";

	open_pair();
	imsgbuf_init(&w, pair[0]);
	imsgbuf_init(&r, pair[1]);
	if (pipe(p) == -1) {
		perror("pipe");
		exit(2);
	}
	is_int(imsg_compose(&w, 11, 0, p[1], tag, sizeof(tag)), 0,
	    "fd: compose with a pipe's write end");
	/* a frame without fd behind it: must not steal the fd */
	imsg_compose(&w, 12, 0, -1, NULL, 0);
	is_int(imsg_flush(&w), 0, "fd: flush");
	ok(fcntl(p[1], F_GETFD) == -1 && errno == EBADF,
	    "fd: sender's copy closed once sent");
	ok(imsg_read(&r) > 0, "fd: read");
	is_int(imsg_get(&r, &im), sizeof(tag) + 1, "fd: get");
	ok(im.fd >= 0, "fd: frame carries a descriptor (%d)", im.fd);
	fd = im.fd;
	im.fd = -1;		/* claimed */
	imsg_free(&im);
	ok(fd >= 0 && write(fd, "through", 7) == 7,
	    "fd: write through the received descriptor");
	ok(read(p[0], buf, sizeof(buf)) == 7 && memcmp(buf, "through", 7) == 0,
	    "fd: bytes come out of the pipe");
	ok(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC),
	    "fd: received with close-on-exec");
	if (fd >= 0)
		close(fd);
	is_int(imsg_get(&r, &im), 1, "fd: second frame");
	is_int(im.fd, -1, "fd: second frame has no descriptor");
	is_int(r.nfds, 0, "fd: no descriptor left over");
	close(p[0]);
	imsgbuf_clear(&w);
	imsgbuf_clear(&r);
	close_pair();
}

static void
test_bad_frames(void)
{
	struct imsgbuf	 r;
	struct imsg	 im;
	struct imsg_hdr	 hdr;
	unsigned char	 junk[64];

	/* length above the cap */
	open_pair();
	imsgbuf_init(&r, pair[1]);
	memset(&hdr, 0, sizeof(hdr));
	hdr.type = 1;
	hdr.len = IMSG_MAX_PAYLOAD + 1;
	write_all(pair[0], &hdr, sizeof(hdr));
	imsg_read(&r);
	errno = 0;
	is_int(imsg_get(&r, &im), -1, "oversize header: get fails");
	is_int(errno, EBADMSG, "oversize header: EBADMSG");
	imsgbuf_clear(&r);
	close_pair();

	/* the biggest length that is not above the cap still waits */
	open_pair();
	imsgbuf_init(&r, pair[1]);
	hdr.len = IMSG_MAX_PAYLOAD;
	write_all(pair[0], &hdr, sizeof(hdr));
	imsg_read(&r);
	is_int(imsg_get(&r, &im), 0, "max-size header: waits for payload");
	imsgbuf_clear(&r);
	close_pair();

	/* length 0x7fffffff, with and without the fd flag */
	open_pair();
	imsgbuf_init(&r, pair[1]);
	hdr.len = IMSG_LEN_MASK | IMSG_FLAG_FD;
	write_all(pair[0], &hdr, sizeof(hdr));
	imsg_read(&r);
	is_int(imsg_get(&r, &im), -1, "huge length with fd flag: rejected");
	imsgbuf_clear(&r);
	close_pair();

	/* fd flag but no descriptor travelled */
	open_pair();
	imsgbuf_init(&r, pair[1]);
	memset(junk, 'x', sizeof(junk));
	hdr.type = 2;
	hdr.len = 4 | IMSG_FLAG_FD;
	write_all(pair[0], &hdr, sizeof(hdr));
	write_all(pair[0], junk, 4);
	imsg_read(&r);
	errno = 0;
	is_int(imsg_get(&r, &im), -1, "fd flag without fd: get fails");
	is_int(errno, EBADMSG, "fd flag without fd: EBADMSG");
	imsgbuf_clear(&r);
	close_pair();

	/* a truncated frame, then end of file */
	open_pair();
	imsgbuf_init(&r, pair[1]);
	hdr.type = 3;
	hdr.len = 40;
	write_all(pair[0], &hdr, sizeof(hdr));
	write_all(pair[0], junk, 10);
	close(pair[0]);
	pair[0] = -1;
	is_int(imsg_read(&r), IMSG_HDR_SIZE + 10, "truncated: read the part");
	is_int(imsg_get(&r, &im), 0, "truncated: no message yet");
	is_int(imsg_read(&r), 0, "truncated: then end of file");
	is_int(imsg_get(&r, &im), 0, "truncated: still no message after EOF");
	imsgbuf_clear(&r);
	close_pair();

	/* a header cut short, then end of file */
	open_pair();
	imsgbuf_init(&r, pair[1]);
	write_all(pair[0], &hdr, 3);
	close(pair[0]);
	pair[0] = -1;
	imsg_read(&r);
	is_int(imsg_get(&r, &im), 0, "short header: no message");
	is_int(imsg_read(&r), 0, "short header: EOF");
	imsgbuf_clear(&r);
	close_pair();
}

static void
test_compose_limits(void)
{
	struct imsgbuf	 w, r;
	struct imsg	 im;
	unsigned char	*big;
	int		 p[2];
	const char	 a[] = "struct-part:", b[] = "bytes-part";
	char		 want[sizeof(a) + sizeof(b)];

	open_pair();
	imsgbuf_init(&w, pair[0]);
	imsgbuf_init(&r, pair[1]);
	if ((big = calloc(1, IMSG_MAX_PAYLOAD + 2)) == NULL)
		exit(2);

	errno = 0;
	is_int(imsg_compose(&w, 1, 0, -1, big, IMSG_MAX_PAYLOAD + 1), -1,
	    "compose: payload above the cap refused");
	is_int(errno, EMSGSIZE, "compose: EMSGSIZE");
	ok(!imsg_pending(&w) && w.wqlen == 0, "compose: nothing queued");
	is_int(imsg_compose(&w, 1, 0, -1, big, IMSG_MAX_PAYLOAD), 0,
	    "compose: payload at the cap accepted");

	if (pipe(p) == -1)
		exit(2);
	is_int(imsg_compose(&w, 1, 0, p[1], big, IMSG_MAX_PAYLOAD + 1), -1,
	    "compose: oversize with fd refused");
	ok(fcntl(p[1], F_GETFD) == -1 && errno == EBADF,
	    "compose: the fd is closed on error");
	close(p[0]);

	errno = 0;
	is_int(imsg_composev2(&w, 1, 0, big, IMSG_MAX_PAYLOAD, big, 1), -1,
	    "composev2: sum above the cap refused");
	is_int(errno, EMSGSIZE, "composev2: EMSGSIZE");
	errno = 0;
	is_int(imsg_composev2(&w, 1, 0, big, (size_t)-1, big, 2), -1,
	    "composev2: wrapping sizes refused");

	is_int(imsg_flush(&w), 0, "compose: flush the max frame");
	/* the max frame may need several reads */
	{
		ssize_t	n;
		int	guard = 0;

		while ((n = imsg_get(&r, &im)) == 0 && guard++ < 1000)
			if (imsg_read(&r) <= 0)
				break;
		is_int(n, IMSG_MAX_PAYLOAD + 1, "compose: max frame received");
	}

	memcpy(want, a, sizeof(a));
	memcpy(want + sizeof(a), b, sizeof(b));
	is_int(imsg_composev2(&w, 5, 6, a, sizeof(a), b, sizeof(b)), 0,
	    "composev2: two pieces");
	is_int(imsg_composev2(&w, 5, 6, NULL, 0, b, sizeof(b)), 0,
	    "composev2: empty first piece");
	imsg_flush(&w);
	imsg_read(&r);
	is_int(imsg_get(&r, &im), sizeof(want) + 1, "composev2: length is the sum");
	is_mem(im.data, want, sizeof(want), "composev2: pieces concatenated");
	is_int(imsg_get(&r, &im), sizeof(b) + 1, "composev2: second frame");
	is_mem(im.data, b, sizeof(b), "composev2: second piece only");

	free(big);
	imsgbuf_clear(&w);
	imsgbuf_clear(&r);
	close_pair();
}

/*
 * Queue far more than a socket buffer holds, flush it while a child reads
 * and checks every frame.
 */
static void
test_write_queue(void)
{
	struct imsgbuf	 w;
	unsigned char	 payload[4000];
	uint32_t	 i;
	const uint32_t	 count = 2000;
	pid_t		 pid;
	int		 status, bad = 0;

	open_pair();
	pid = fork();
	if (pid == -1)
		exit(2);
	if (pid == 0) {
		struct imsgbuf	r;
		struct imsg	im;
		uint32_t	next = 0, v;
		ssize_t		n;

		close(pair[0]);
		imsgbuf_init(&r, pair[1]);
		while (next < count) {
			while ((n = imsg_get(&r, &im)) > 0) {
				memcpy(&v, im.data, sizeof(v));
				if (im.hdr.type != 1 || im.hdr.peerid != next ||
				    v != next || im.len != sizeof(payload))
					_exit(3);
				next++;
			}
			if (n == -1)
				_exit(4);
			if (next < count && imsg_read(&r) <= 0)
				_exit(5);
		}
		_exit(0);
	}
	close(pair[1]);
	pair[1] = -1;
	imsgbuf_init(&w, pair[0]);
	memset(payload, 0xab, sizeof(payload));
	for (i = 0; i < count; i++) {
		memcpy(payload, &i, sizeof(i));
		if (imsg_compose(&w, 1, i, -1, payload, sizeof(payload)) == -1)
			bad++;
	}
	is_int(bad, 0, "queue: %u frames of %zu bytes queued", count,
	    sizeof(payload));
	is_int(w.wqlen, count * (IMSG_HDR_SIZE + sizeof(payload)),
	    "queue: wqlen is the total");
	is_int(imsg_flush(&w), 0, "queue: flush drains it");
	ok(!imsg_pending(&w) && w.wqlen == 0, "queue: empty after flush");
	close(pair[0]);
	pair[0] = -1;
	w.fd = -1;
	waitpid(pid, &status, 0);
	ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "queue: reader got every frame in order (status %d)", status);
	imsgbuf_clear(&w);
	close_pair();
}

/* A nonblocking writer keeps what the socket did not take. */
static void
test_partial_write(void)
{
	struct imsgbuf	 w, r;
	struct imsg	 im;
	unsigned char	*payload;
	int		 i, got = 0, guard = 0;
	ssize_t		 n;

	open_pair();
	fcntl(pair[0], F_SETFL, O_NONBLOCK);
	imsgbuf_init(&w, pair[0]);
	imsgbuf_init(&r, pair[1]);
	if ((payload = calloc(1, 60000)) == NULL)
		exit(2);
	for (i = 0; i < 20; i++) {
		payload[0] = (unsigned char)i;
		imsg_compose(&w, 2, (uint32_t)i, -1, payload, 60000);
	}
	is_int(imsg_write(&w), 0, "partial: write returns 0 on EAGAIN");
	ok(imsg_pending(&w), "partial: frames still queued");
	while (got < 20 && guard++ < 100000) {
		if (imsg_pending(&w) && imsg_write(&w) == -1)
			break;
		if (imsg_read(&r) <= 0)
			break;
		while ((n = imsg_get(&r, &im)) > 0) {
			if (im.hdr.peerid != (uint32_t)got ||
			    ((unsigned char *)im.data)[0] != got)
				break;
			got++;
		}
		if (n == -1)
			break;
	}
	is_int(got, 20, "partial: every frame arrives whole and in order");
	is_int(w.wqlen, 0, "partial: wqlen back to 0");
	free(payload);
	imsgbuf_clear(&w);
	imsgbuf_clear(&r);
	close_pair();
}

int
main(void)
{
	pair[0] = pair[1] = -1;
	test_round_trip();
	test_many_in_one_read();
	test_read_size();
	test_split_frame();
	test_fd_passing();
	test_bad_frames();
	test_compose_limits();
	test_write_queue();
	test_partial_write();
	return done();
}
