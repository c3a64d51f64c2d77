/*
 * dnstap output.  A DNS message and its surroundings become a dnstap
 * record (dnstap.proto, packed with protobuf-c); records go out as
 * Frame Streams data frames over a stream socket someone else connected.
 *
 * Frame Streams, bidirectional: we send READY with our content type,
 * the collector answers ACCEPT, we send START, then data frames (a
 * 4-byte big-endian length and the record), and STOP at the end.
 * Control frames are an escape (a zero length), their own length and
 * their payload; libfstrm's fstrm_control_* encode and decode those
 * payloads.  Reading, writing and the queue are ours: no threads, no
 * connect(2), nothing but read, write, writev and close on the
 * descriptor, which must be non-blocking, with SIGPIPE ignored.
 *
 * The queue is a ring of whole frames, bounded in bytes.  A record that
 * does not fit is dropped and counted.  A frame is sent once its last
 * byte is written; one half written when the connection dies is dropped,
 * the rest wait for the next connection.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstrm.h>
#include <protobuf-c/protobuf-c.h>

#include "dnstap.pb-c.h"
#include "dnstap.h"

#define DNSTAP_QUEUE_MAX	(64 * 1024 * 1024)
#define FS_HDR_LEN		4	/* a frame's length */
#define FS_CTL_HDR_LEN		8	/* escape and control frame length */
#define FS_CTL_MAX	(FS_CTL_HDR_LEN + FSTRM_CONTROL_FRAME_LENGTH_MAX)
#define ANON_KEEP_INET		3	/* bytes of a client address kept */
#define ANON_KEEP_INET6		7
#define ANON_KEEP_MAPPED	15	/* ::ffff:a.b.c.0 */

/* One end of an exchange, as the record holds it. */
struct tap_end {
	int		 family;	/* AF_INET, AF_INET6; 0: none */
	uint8_t		 addr[16];
	size_t		 alen;
	uint16_t	 port;		/* 0: left out */
};

/* A record being built; the fields point into it and into the event. */
struct tap {
	Dnstap__Dnstap	 d;
	Dnstap__Message	 m;
	struct tap_end	 qend;		/* the initiator */
	struct tap_end	 rend;		/* the responder */
};

enum writer_state {
	W_NOFD,			/* no descriptor: needs one */
	W_READY,		/* writing READY */
	W_ACCEPT,		/* reading the collector's ACCEPT */
	W_START,		/* writing START */
	W_DATA,			/* writing data frames */
	W_STOP,			/* writing STOP */
	W_FINISH		/* reading the collector's FINISH */
};

struct dnstap_writer {
	char			*identity;
	char			*version;
	struct dnstap_opts	 opts;		/* pointing at the copies */

	int			 fd;
	enum writer_state	 state;
	int			 ending;	/* STOP once the queue is out */
	char			 error[128];	/* why the last one was lost */

	/* the control frame being written: READY or START */
	const uint8_t		*cbuf;
	size_t			 clen;
	size_t			 coff;
	uint8_t			 ready[FS_CTL_MAX];
	size_t			 readylen;
	uint8_t			 start[FS_CTL_MAX];
	size_t			 startlen;
	uint8_t			 stop[FS_CTL_MAX];
	size_t			 stoplen;

	/* the collector's control frame being read */
	uint8_t			 rbuf[FS_CTL_MAX];
	size_t			 rlen;
	struct fstrm_control	*ctl;

	/* the queue of data frames */
	uint8_t			*q;
	size_t			 qmax;
	size_t			 qhead;
	size_t			 qused;
	size_t			 headleft;	/* of the first, when begun */

	uint64_t		 sent;
	uint64_t		 dropped;
};

/* The event types and protocols are dnstap's own numbers. */
#define SAME(a, b)	((int)(a) == (int)(b))
_Static_assert(SAME(DNSTAP_CLIENT_QUERY, DNSTAP__MESSAGE__TYPE__CLIENT_QUERY) &&
    SAME(DNSTAP_CLIENT_RESPONSE, DNSTAP__MESSAGE__TYPE__CLIENT_RESPONSE) &&
    SAME(DNSTAP_FORWARDER_QUERY, DNSTAP__MESSAGE__TYPE__FORWARDER_QUERY) &&
    SAME(DNSTAP_FORWARDER_RESPONSE,
    DNSTAP__MESSAGE__TYPE__FORWARDER_RESPONSE), "dnstap message types");
_Static_assert(SAME(DNSTAP_UDP, DNSTAP__SOCKET_PROTOCOL__UDP) &&
    SAME(DNSTAP_TCP, DNSTAP__SOCKET_PROTOCOL__TCP) &&
    SAME(DNSTAP_DOT, DNSTAP__SOCKET_PROTOCOL__DOT), "dnstap protocols");
#undef SAME

/* protobuf-c's output callback, appending to the queue */
struct ring_append {
	ProtobufCBuffer		 base;
	struct dnstap_writer	*w;
	size_t			 room;
	int			 overflow;
};

/* a frame or control length: 32 bits, big-endian, maybe unaligned */
static uint32_t
get_len(const uint8_t *p)
{
	uint32_t	v;

	memcpy(&v, p, sizeof(v));
	return ntohl(v);
}

/* ---- records ---- */

static int
end_set(struct tap_end *e, const struct sockaddr *sa)
{
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)sa;

	memset(e, 0, sizeof(*e));
	if (sa == NULL)
		return 0;
	if (sa->sa_family == AF_INET) {
		e->alen = sizeof(sin->sin_addr);
		memcpy(e->addr, &sin->sin_addr, e->alen);
		e->port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		e->alen = sizeof(sin6->sin6_addr);
		memcpy(e->addr, &sin6->sin6_addr, e->alen);
		e->port = ntohs(sin6->sin6_port);
	} else
		return -1;
	e->family = sa->sa_family;
	return 0;
}

/* The first 24 bits of an IPv4 address (also when v4-mapped), 56 of IPv6. */
static void
end_truncate(struct tap_end *e)
{
	size_t	keep;

	if (e->family == AF_INET)
		keep = ANON_KEEP_INET;
	else if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)e->addr))
		keep = ANON_KEEP_MAPPED;
	else
		keep = ANON_KEEP_INET6;
	memset(e->addr + keep, 0, e->alen - keep);
	e->port = 0;
}

/* The client's end: as given, truncated, or as the caller's hook has it. */
static int
end_client(struct tap_end *e, const struct sockaddr *sa,
    const struct dnstap_opts *o)
{
	struct sockaddr_storage	ss;
	size_t			len;

	if (sa == NULL || !o->anonymize)
		return end_set(e, sa);
	if (o->anon == NULL) {
		if (end_set(e, sa) == -1)
			return -1;
		end_truncate(e);
		return 0;
	}
	if (sa->sa_family == AF_INET)
		len = sizeof(struct sockaddr_in);
	else if (sa->sa_family == AF_INET6)
		len = sizeof(struct sockaddr_in6);
	else
		return -1;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, sa, len);
	o->anon(o->anon_arg, &ss);
	return end_set(e, (struct sockaddr *)&ss);
}

static void
tap_ends(Dnstap__Message *m, struct tap_end *q, struct tap_end *r)
{
	int	family = q->family != 0 ? q->family : r->family;

	if (family == 0)
		return;
	m->has_socket_family = 1;
	m->socket_family = family == AF_INET ? DNSTAP__SOCKET_FAMILY__INET :
	    DNSTAP__SOCKET_FAMILY__INET6;
	if (q->family != 0) {
		m->has_query_address = 1;
		m->query_address.data = q->addr;
		m->query_address.len = q->alen;
		m->has_query_port = q->port != 0;
		m->query_port = q->port;
	}
	if (r->family != 0) {
		m->has_response_address = 1;
		m->response_address.data = r->addr;
		m->response_address.len = r->alen;
		m->has_response_port = r->port != 0;
		m->response_port = r->port;
	}
}

static int
tap_time_ok(const struct timespec *ts)
{
	return ts->tv_sec >= 0 && ts->tv_nsec >= 0 && ts->tv_nsec < 1000000000;
}

static void
tap_times(Dnstap__Message *m, const struct dnstap_event *ev, int response)
{
	if (ev->qtime.tv_sec != 0 || ev->qtime.tv_nsec != 0) {
		m->has_query_time_sec = m->has_query_time_nsec = 1;
		m->query_time_sec = ev->qtime.tv_sec;
		m->query_time_nsec = ev->qtime.tv_nsec;
	}
	if (response && (ev->rtime.tv_sec != 0 || ev->rtime.tv_nsec != 0)) {
		m->has_response_time_sec = m->has_response_time_nsec = 1;
		m->response_time_sec = ev->rtime.tv_sec;
		m->response_time_nsec = ev->rtime.tv_nsec;
	}
}

static int
tap_event_ok(const struct dnstap_event *ev)
{
	switch (ev->type) {
	case DNSTAP_CLIENT_QUERY:
	case DNSTAP_CLIENT_RESPONSE:
	case DNSTAP_FORWARDER_QUERY:
	case DNSTAP_FORWARDER_RESPONSE:
		break;
	default:
		return 0;
	}
	switch (ev->proto) {
	case DNSTAP_UDP:
	case DNSTAP_TCP:
	case DNSTAP_DOT:
		break;
	default:
		return 0;
	}
	return ev->msg != NULL && ev->msglen > 0 &&
	    ev->msglen <= DNSTAP_MSG_MAX && tap_time_ok(&ev->qtime) &&
	    tap_time_ok(&ev->rtime);
}

static int
tap_fill(struct tap *t, const struct dnstap_opts *o,
    const struct dnstap_event *ev)
{
	struct tap_end	 peer, local;
	int		 client, response;

	if (!tap_event_ok(ev))
		return -1;
	client = ev->type == DNSTAP_CLIENT_QUERY ||
	    ev->type == DNSTAP_CLIENT_RESPONSE;
	response = ev->type == DNSTAP_CLIENT_RESPONSE ||
	    ev->type == DNSTAP_FORWARDER_RESPONSE;
	if ((client ? end_client(&peer, ev->peer, o) :
	    end_set(&peer, ev->peer)) == -1 || end_set(&local, ev->local) == -1)
		return -1;
	if (peer.family != 0 && local.family != peer.family)
		memset(&local, 0, sizeof(local));

	dnstap__dnstap__init(&t->d);
	dnstap__message__init(&t->m);
	t->d.type = DNSTAP__DNSTAP__TYPE__MESSAGE;
	t->d.message = &t->m;
	if (o->identity != NULL) {
		t->d.has_identity = 1;
		t->d.identity.data = (uint8_t *)o->identity;
		t->d.identity.len = strnlen(o->identity, DNSTAP_ID_MAX);
	}
	if (o->version != NULL) {
		t->d.has_version = 1;
		t->d.version.data = (uint8_t *)o->version;
		t->d.version.len = strnlen(o->version, DNSTAP_ID_MAX);
	}

	t->m.type = (Dnstap__Message__Type)ev->type;
	t->m.has_socket_protocol = 1;
	t->m.socket_protocol = (Dnstap__SocketProtocol)ev->proto;
	/* the client asks us; we ask the upstream */
	t->qend = client ? peer : local;
	t->rend = client ? local : peer;
	tap_ends(&t->m, &t->qend, &t->rend);
	tap_times(&t->m, ev, response);
	if (response) {
		t->m.has_response_message = 1;
		t->m.response_message.data = (uint8_t *)ev->msg;
		t->m.response_message.len = ev->msglen;
	} else {
		t->m.has_query_message = 1;
		t->m.query_message.data = (uint8_t *)ev->msg;
		t->m.query_message.len = ev->msglen;
	}
	return 0;
}

/*
 * The record of an event into buf: its length, or -1 with errno EINVAL
 * for an event that cannot be recorded, EMSGSIZE when buf is too small.
 */
ssize_t
dnstap_encode(const struct dnstap_opts *o, const struct dnstap_event *ev,
    uint8_t *buf, size_t len)
{
	struct tap	t;
	size_t		n;

	if (tap_fill(&t, o, ev) == -1) {
		errno = EINVAL;
		return -1;
	}
	n = dnstap__dnstap__get_packed_size(&t.d);
	if (n > len || n > SSIZE_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	if (dnstap__dnstap__pack(&t.d, buf) != n) {
		errno = EINVAL;
		return -1;
	}
	return (ssize_t)n;
}

/* ---- the queue ---- */

static void
ring_put(struct dnstap_writer *w, const void *p, size_t len)
{
	size_t	tail = (w->qhead + w->qused) % w->qmax;
	size_t	n = len < w->qmax - tail ? len : w->qmax - tail;

	memcpy(w->q + tail, p, n);
	memcpy(w->q, (const uint8_t *)p + n, len - n);
	w->qused += len;
}

static void
ring_peek(const struct dnstap_writer *w, void *p, size_t len)
{
	size_t	n = len < w->qmax - w->qhead ? len : w->qmax - w->qhead;

	memcpy(p, w->q + w->qhead, n);
	memcpy((uint8_t *)p + n, w->q, len - n);
}

static void
ring_skip(struct dnstap_writer *w, size_t len)
{
	w->qhead = (w->qhead + len) % w->qmax;
	w->qused -= len;
	if (w->qused == 0)
		w->qhead = 0;
}

static void
ring_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
	struct ring_append	*ra = (struct ring_append *)b;

	if (ra->overflow || len > ra->room) {
		ra->overflow = 1;
		return;
	}
	ra->room -= len;
	ring_put(ra->w, data, len);
}

/* n bytes from the front were written: whole frames among them are sent */
static void
queue_written(struct dnstap_writer *w, size_t n)
{
	uint8_t	hdr[FS_HDR_LEN];
	size_t	k;

	while (n > 0) {
		if (w->headleft == 0) {
			ring_peek(w, hdr, sizeof(hdr));
			w->headleft = FS_HDR_LEN + get_len(hdr);
		}
		k = n < w->headleft ? n : w->headleft;
		ring_skip(w, k);
		w->headleft -= k;
		n -= k;
		if (w->headleft == 0)
			w->sent++;
	}
}

/* ---- the writer ---- */

static int
control_encode(fstrm_control_type type, int with_ctype, uint8_t *buf,
    size_t *len)
{
	struct fstrm_control	*c;
	fstrm_res		 res;

	*len = FS_CTL_MAX;
	if ((c = fstrm_control_init()) == NULL)
		return -1;
	res = fstrm_control_set_type(c, type);
	if (res == fstrm_res_success && with_ctype)
		res = fstrm_control_add_field_content_type(c,
		    (const uint8_t *)DNSTAP_CONTENT_TYPE,
		    sizeof(DNSTAP_CONTENT_TYPE) - 1);
	if (res == fstrm_res_success)
		res = fstrm_control_encode(c, buf, len,
		    FSTRM_CONTROL_FLAG_WITH_HEADER);
	fstrm_control_destroy(&c);
	return res == fstrm_res_success ? 0 : -1;
}

static int
writer_copy_opts(struct dnstap_writer *w, const struct dnstap_opts *o)
{
	if (o == NULL)
		return 0;
	if ((o->identity != NULL && strlen(o->identity) > DNSTAP_ID_MAX) ||
	    (o->version != NULL && strlen(o->version) > DNSTAP_ID_MAX)) {
		errno = EINVAL;
		return -1;
	}
	if ((o->identity != NULL &&
	    (w->identity = strdup(o->identity)) == NULL) ||
	    (o->version != NULL && (w->version = strdup(o->version)) == NULL))
		return -1;
	w->opts = *o;
	w->opts.identity = w->identity;
	w->opts.version = w->version;
	return 0;
}

/*
 * A writer without a descriptor, its queue qmax bytes (0: the default).
 * NULL with errno set on failure.
 */
struct dnstap_writer *
dnstap_writer_new(const struct dnstap_opts *o, size_t qmax)
{
	struct dnstap_writer	*w;

	if (qmax == 0)
		qmax = DNSTAP_QUEUE_DEFAULT;
	if (qmax < DNSTAP_QUEUE_MIN || qmax > DNSTAP_QUEUE_MAX) {
		errno = EINVAL;
		return NULL;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->fd = -1;
	w->state = W_NOFD;
	w->qmax = qmax;
	if (writer_copy_opts(w, o) == -1 || (w->q = malloc(qmax)) == NULL)
		goto fail;
	if ((w->ctl = fstrm_control_init()) == NULL ||
	    control_encode(FSTRM_CONTROL_READY, 1, w->ready,
	    &w->readylen) == -1 ||
	    control_encode(FSTRM_CONTROL_START, 1, w->start,
	    &w->startlen) == -1 ||
	    control_encode(FSTRM_CONTROL_STOP, 0, w->stop,
	    &w->stoplen) == -1) {
		errno = ENOMEM;
		goto fail;
	}
	return w;
fail:
	dnstap_writer_free(w);
	return NULL;
}

/* Close the descriptor; a frame half written is lost, the rest wait. */
static void
writer_lose(struct dnstap_writer *w, const char *why, int err)
{
	if (err != 0)
		(void)snprintf(w->error, sizeof(w->error), "%s: %s", why,
		    strerror(err));
	else
		(void)snprintf(w->error, sizeof(w->error), "%s", why);
	if (w->fd != -1)
		(void)close(w->fd);
	w->fd = -1;
	w->state = W_NOFD;
	w->ending = 0;
	w->cbuf = NULL;
	w->clen = w->coff = 0;
	w->rlen = 0;
	if (w->headleft > 0) {
		ring_skip(w, w->headleft);
		w->headleft = 0;
		w->dropped++;
	}
}

static void
writer_control(struct dnstap_writer *w, enum writer_state state,
    const uint8_t *buf, size_t len)
{
	w->state = state;
	w->cbuf = buf;
	w->clen = len;
	w->coff = 0;
}

/*
 * Take fd, connected to a collector and non-blocking, and begin the
 * handshake on it.  A descriptor held before is closed.  -1: only close.
 */
void
dnstap_writer_set_fd(struct dnstap_writer *w, int fd)
{
	if (w->fd != -1)
		writer_lose(w, "descriptor replaced", 0);
	if (fd < 0)
		return;
	w->fd = fd;
	w->error[0] = '\0';
	writer_control(w, W_READY, w->ready, w->readylen);
}

int
dnstap_writer_fd(const struct dnstap_writer *w)
{
	return w->fd;
}

/* No descriptor: the last one was lost (or none was given). */
int
dnstap_writer_needfd(const struct dnstap_writer *w)
{
	return w->fd == -1;
}

int
dnstap_writer_want_write(const struct dnstap_writer *w)
{
	switch (w->state) {
	case W_READY:
	case W_START:
	case W_STOP:
		return 1;
	case W_DATA:
		return w->qused > 0 || w->ending;
	default:
		return 0;
	}
}

/* Why the last descriptor was lost, or NULL. */
const char *
dnstap_writer_error(const struct dnstap_writer *w)
{
	return w->error[0] != '\0' ? w->error : NULL;
}

/* Records sent whole, and dropped (no room, bad, or lost half written). */
void
dnstap_writer_stats(const struct dnstap_writer *w, uint64_t *sent,
    uint64_t *dropped)
{
	if (sent != NULL)
		*sent = w->sent;
	if (dropped != NULL)
		*dropped = w->dropped;
}

#define IO_WRITE	0
#define IO_READ		1

/*
 * What write(2), writev(2) or read(2) returned: n > 0 bytes, 0 to try
 * again when the descriptor is ready, -1 when it is lost (and closed).
 */
static ssize_t
io_result(struct dnstap_writer *w, ssize_t n, int reading)
{
	if (n > 0)
		return n;
	if (n == 0 && reading) {
		writer_lose(w, "collector closed the connection", 0);
		return -1;
	}
	if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR)
		return 0;
	writer_lose(w, reading ? "read" : "write", errno);
	return -1;
}

/* 1: done, 0: would block, -1: the descriptor is lost */
static int
write_control(struct dnstap_writer *w)
{
	ssize_t	n;

	while (w->coff < w->clen) {
		n = io_result(w, write(w->fd, w->cbuf + w->coff,
		    w->clen - w->coff), IO_WRITE);
		if (n <= 0)
			return n;
		w->coff += n;
	}
	return 1;
}

/* 0: written or would block, -1: the descriptor is lost */
static int
write_data(struct dnstap_writer *w)
{
	struct iovec	iov[2];
	ssize_t		n;
	size_t		first;
	int		cnt;

	while (w->qused > 0) {
		first = w->qmax - w->qhead;
		if (first > w->qused)
			first = w->qused;
		iov[0].iov_base = w->q + w->qhead;
		iov[0].iov_len = first;
		iov[1].iov_base = w->q;
		iov[1].iov_len = w->qused - first;
		cnt = iov[1].iov_len > 0 ? 2 : 1;
		if ((n = io_result(w, writev(w->fd, iov, cnt), IO_WRITE)) <= 0)
			return n;
		queue_written(w, (size_t)n);
	}
	return 0;
}

static int
writer_write(struct dnstap_writer *w)
{
	int	r;

	switch (w->state) {
	case W_READY:
		if ((r = write_control(w)) != 1)
			return r;
		w->state = W_ACCEPT;
		w->rlen = 0;
		return 0;
	case W_START:
		if ((r = write_control(w)) != 1)
			return r;
		w->state = W_DATA;
		/* FALLTHROUGH */
	case W_DATA:
		if (write_data(w) == -1)
			return -1;
		if (!w->ending || w->qused > 0)
			return 0;
		writer_control(w, W_STOP, w->stop, w->stoplen);
		/* FALLTHROUGH */
	case W_STOP:
		if ((r = write_control(w)) != 1)
			return r;
		w->state = W_FINISH;
		w->rlen = 0;
		return 0;
	default:
		return 0;
	}
}

/*
 * A whole control frame from the collector: ACCEPT of our content type
 * after READY, FINISH after STOP.
 */
static int
read_done(struct dnstap_writer *w)
{
	fstrm_control_type	type;

	if (fstrm_control_decode(w->ctl, w->rbuf, w->rlen,
	    FSTRM_CONTROL_FLAG_WITH_HEADER) != fstrm_res_success ||
	    fstrm_control_get_type(w->ctl, &type) != fstrm_res_success) {
		writer_lose(w, "collector sent a malformed control frame", 0);
		return -1;
	}
	if (w->state == W_FINISH) {
		writer_lose(w, type == FSTRM_CONTROL_FINISH ?
		    "stream ended" : "collector answered STOP with other "
		    "than FINISH", 0);
		return -1;
	}
	if (type != FSTRM_CONTROL_ACCEPT) {
		writer_lose(w, "collector answered READY with other than "
		    "ACCEPT", 0);
		return -1;
	}
	if (fstrm_control_match_field_content_type(w->ctl,
	    (const uint8_t *)DNSTAP_CONTENT_TYPE,
	    sizeof(DNSTAP_CONTENT_TYPE) - 1) != fstrm_res_success) {
		writer_lose(w, "collector does not accept "
		    DNSTAP_CONTENT_TYPE, 0);
		return -1;
	}
	writer_control(w, W_START, w->start, w->startlen);
	w->rlen = 0;
	return 0;
}

/*
 * How many bytes of the collector's control frame are still to come:
 * the header first, then as many as it says.  -1: not a control frame,
 * or too long.
 */
static ssize_t
control_need(const struct dnstap_writer *w)
{
	uint32_t	len;

	if (w->rlen < FS_CTL_HDR_LEN)
		return FS_CTL_HDR_LEN - w->rlen;
	if (get_len(w->rbuf) != 0)
		return -1;
	len = get_len(w->rbuf + FS_HDR_LEN);
	if (len > FSTRM_CONTROL_FRAME_LENGTH_MAX)
		return -1;
	return FS_CTL_HDR_LEN + len - w->rlen;
}

static int
read_control(struct dnstap_writer *w)
{
	ssize_t	need, n;

	for (;;) {
		if ((need = control_need(w)) == -1) {
			writer_lose(w, "collector sent other than a control "
			    "frame of at most 512 bytes", 0);
			return -1;
		}
		if (need == 0)
			return read_done(w);
		n = io_result(w, read(w->fd, w->rbuf + w->rlen,
		    (size_t)need), IO_READ);
		if (n <= 0)
			return n;
		w->rlen += n;
	}
}

/* Outside the handshake the collector has nothing to say but EOF. */
static int
read_other(struct dnstap_writer *w)
{
	uint8_t	buf[64];
	ssize_t	n;

	if ((n = io_result(w, read(w->fd, buf, sizeof(buf)), IO_READ)) <= 0)
		return n;
	writer_lose(w, "collector sent data out of turn", 0);
	return -1;
}

/*
 * Read and write as events (DNSTAP_IO_READ, DNSTAP_IO_WRITE) allow.
 * 0, or -1 when the descriptor was lost: closed, a new one wanted.
 */
int
dnstap_writer_io(struct dnstap_writer *w, int events)
{
	if (w->fd == -1)
		return -1;
	if (events & DNSTAP_IO_READ) {
		if ((w->state == W_ACCEPT || w->state == W_FINISH ?
		    read_control(w) : read_other(w)) == -1)
			return -1;
	}
	/* START goes out at once after ACCEPT */
	if ((events & DNSTAP_IO_WRITE) || w->state == W_START)
		return writer_write(w);
	return 0;
}

/*
 * End the stream: what is queued goes out, then STOP, then the writer
 * waits for the collector's FINISH and closes the descriptor.  Go on
 * calling dnstap_writer_io() until it returns -1: ended, or lost.  -1
 * here when there is no stream to end (the descriptor, if any, closed).
 */
int
dnstap_writer_close(struct dnstap_writer *w)
{
	switch (w->state) {
	case W_START:
	case W_DATA:
		w->ending = 1;
		return 0;
	case W_STOP:
	case W_FINISH:
		return 0;
	default:
		if (w->fd != -1)
			writer_lose(w, "stream ended", 0);
		return -1;
	}
}

/*
 * Queue the record of an event.  0, or -1 when it was dropped: no room
 * (errno ENOBUFS), or an event that cannot be recorded (EINVAL).
 */
int
dnstap_log(struct dnstap_writer *w, const struct dnstap_event *ev)
{
	struct ring_append	ra;
	struct tap		t;
	uint32_t		hdr;
	size_t			n, used;

	if (tap_fill(&t, &w->opts, ev) == -1) {
		w->dropped++;
		errno = EINVAL;
		return -1;
	}
	n = dnstap__dnstap__get_packed_size(&t.d);
	if (n == 0 || n > w->qmax - w->qused ||
	    FS_HDR_LEN > w->qmax - w->qused - n) {
		w->dropped++;
		errno = ENOBUFS;
		return -1;
	}
	used = w->qused;
	hdr = htonl((uint32_t)n);
	ring_put(w, &hdr, sizeof(hdr));
	memset(&ra, 0, sizeof(ra));
	ra.base.append = ring_append;
	ra.w = w;
	ra.room = n;
	if (protobuf_c_message_pack_to_buffer(&t.d.base, &ra.base) != n ||
	    ra.overflow || ra.room != 0) {
		w->qused = used;
		w->dropped++;
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/*
 * Write what can go without waiting, STOP when the stream is then at a
 * frame's end, close, and free.  What is left is lost.
 */
void
dnstap_writer_free(struct dnstap_writer *w)
{
	if (w == NULL)
		return;
	if (w->fd != -1 && (w->state == W_START || w->state == W_DATA)) {
		w->ending = 1;
		if (writer_write(w) == 0 && w->state == W_DATA &&
		    w->headleft == 0) {
			writer_control(w, W_STOP, w->stop, w->stoplen);
			(void)write_control(w);
		}
	}
	if (w->fd != -1)
		(void)close(w->fd);
	if (w->ctl != NULL)
		fstrm_control_destroy(&w->ctl);
	free(w->q);
	free(w->identity);
	free(w->version);
	free(w);
}
