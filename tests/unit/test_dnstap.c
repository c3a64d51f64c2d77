/*
 * dnstap output: each kind of record decoded back with the generated
 * protobuf-c code; client addresses made anonymous; events refused; the
 * Frame Streams writer against a collector played over a socketpair
 * (handshake, data frames, STOP), one that never reads (records dropped
 * and counted, nothing blocks), one that closes or answers wrongly (the
 * descriptor lost and reported), a new descriptor after a loss, and the
 * end of a stream (STOP, FINISH).
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fstrm.h>

#include "dnstap.pb-c.h"
#include "dnstap.h"
#include "tap.h"

#define CT		DNSTAP_CONTENT_TYPE
#define CT_LEN		(sizeof(DNSTAP_CONTENT_TYPE) - 1)
#define FRAME_MAX	(128 * 1024)

static uint8_t	 query[] = {
	0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0,
	0x00, 0x01, 0x00, 0x01
};
static uint8_t	 answer[] = {
	0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'o', 'r', 'g', 0,
	0x00, 0x01, 0x00, 0x01,
	0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x04,
	192, 0, 2, 80
};

static struct sockaddr_storage
sa4(const char *addr, uint16_t port)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
		abort();
	return ss;
}

static struct sockaddr_storage
sa6(const char *addr, uint16_t port)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
		abort();
	return ss;
}

static int
is_addr(const ProtobufCBinaryData *b, int has, int af, const char *want)
{
	uint8_t	a[16];

	if (!has || inet_pton(af, want, a) != 1)
		return 0;
	return b->len == (af == AF_INET ? 4U : 16U) &&
	    memcmp(b->data, a, b->len) == 0;
}

static int
is_bytes(const ProtobufCBinaryData *b, int has, const void *want, size_t len)
{
	return has && b->len == len && memcmp(b->data, want, len) == 0;
}

static Dnstap__Dnstap *
round_trip(const struct dnstap_opts *o, const struct dnstap_event *ev)
{
	static uint8_t	buf[FRAME_MAX];
	ssize_t		n;

	if ((n = dnstap_encode(o, ev, buf, sizeof(buf))) <= 0)
		return NULL;
	return dnstap__dnstap__unpack(NULL, n, buf);
}

/* ---- records ---- */

static void
test_client_query(void)
{
	struct dnstap_opts	 o = { .identity = "ns1.example", .version =
				    "dotproxyd 0.1" };
	struct sockaddr_storage	 client = sa4("192.0.2.10", 53000);
	struct sockaddr_storage	 local = sa4("192.0.2.1", 53);
	struct dnstap_event	 ev;
	Dnstap__Dnstap		*d;
	Dnstap__Message		*m;

	memset(&ev, 0, sizeof(ev));
	ev.type = DNSTAP_CLIENT_QUERY;
	ev.proto = DNSTAP_UDP;
	ev.peer = (struct sockaddr *)&client;
	ev.local = (struct sockaddr *)&local;
	ev.qtime.tv_sec = 1700000000;
	ev.qtime.tv_nsec = 123456789;
	ev.rtime.tv_sec = 1700000001;	/* not for a query */
	ev.msg = query;
	ev.msglen = sizeof(query);
	if ((d = round_trip(&o, &ev)) == NULL) {
		ok(0, "client query: encoded and decoded");
		return;
	}
	m = d->message;
	ok(d->type == DNSTAP__DNSTAP__TYPE__MESSAGE && m != NULL,
	    "client query: a MESSAGE record");
	ok(is_bytes(&d->identity, d->has_identity, "ns1.example", 11) &&
	    is_bytes(&d->version, d->has_version, "dotproxyd 0.1", 13),
	    "client query: identity and version");
	ok(!d->has_extra, "client query: no extra");
	if (m == NULL)
		goto out;
	is_int(m->type, DNSTAP__MESSAGE__TYPE__CLIENT_QUERY,
	    "client query: type");
	ok(m->has_socket_family && m->socket_family ==
	    DNSTAP__SOCKET_FAMILY__INET, "client query: INET");
	ok(m->has_socket_protocol && m->socket_protocol ==
	    DNSTAP__SOCKET_PROTOCOL__UDP, "client query: UDP");
	ok(is_addr(&m->query_address, m->has_query_address, AF_INET,
	    "192.0.2.10") && m->has_query_port && m->query_port == 53000,
	    "client query: the client is the query address and port");
	ok(is_addr(&m->response_address, m->has_response_address, AF_INET,
	    "192.0.2.1") && m->has_response_port && m->response_port == 53,
	    "client query: we are the response address and port");
	ok(m->has_query_time_sec && m->query_time_sec == 1700000000 &&
	    m->has_query_time_nsec && m->query_time_nsec == 123456789,
	    "client query: query time");
	ok(!m->has_response_time_sec && !m->has_response_time_nsec,
	    "client query: no response time");
	ok(is_bytes(&m->query_message, m->has_query_message, query,
	    sizeof(query)) && !m->has_response_message,
	    "client query: the query message, verbatim");
	ok(!m->has_query_zone && m->base.n_unknown_fields == 0,
	    "client query: no zone, no field outside the schema");
out:
	dnstap__dnstap__free_unpacked(d, NULL);
}

static void
test_client_response(void)
{
	struct dnstap_opts	 o = { 0 };
	struct sockaddr_storage	 client = sa6("2001:db8:1:2:3:4:5:6", 40000);
	struct sockaddr_storage	 local = sa6("2001:db8::53", 53);
	struct dnstap_event	 ev;
	Dnstap__Dnstap		*d;
	Dnstap__Message		*m;

	memset(&ev, 0, sizeof(ev));
	ev.type = DNSTAP_CLIENT_RESPONSE;
	ev.proto = DNSTAP_TCP;
	ev.peer = (struct sockaddr *)&client;
	ev.local = (struct sockaddr *)&local;
	ev.qtime.tv_sec = 1700000000;
	ev.qtime.tv_nsec = 5;
	ev.rtime.tv_sec = 1700000000;
	ev.rtime.tv_nsec = 999999999;
	ev.msg = answer;
	ev.msglen = sizeof(answer);
	if ((d = round_trip(&o, &ev)) == NULL || d->message == NULL) {
		ok(0, "client response: encoded and decoded");
		if (d != NULL)
			dnstap__dnstap__free_unpacked(d, NULL);
		return;
	}
	m = d->message;
	ok(!d->has_identity && !d->has_version,
	    "client response: no identity or version when not given");
	is_int(m->type, DNSTAP__MESSAGE__TYPE__CLIENT_RESPONSE,
	    "client response: type");
	ok(m->socket_family == DNSTAP__SOCKET_FAMILY__INET6 &&
	    m->socket_protocol == DNSTAP__SOCKET_PROTOCOL__TCP,
	    "client response: INET6, TCP");
	ok(is_addr(&m->query_address, m->has_query_address, AF_INET6,
	    "2001:db8:1:2:3:4:5:6") && m->query_port == 40000 &&
	    is_addr(&m->response_address, m->has_response_address, AF_INET6,
	    "2001:db8::53") && m->response_port == 53,
	    "client response: client and our addresses and ports");
	ok(m->has_query_time_sec && m->query_time_nsec == 5 &&
	    m->has_response_time_sec && m->response_time_sec == 1700000000 &&
	    m->response_time_nsec == 999999999,
	    "client response: query and response times");
	ok(is_bytes(&m->response_message, m->has_response_message, answer,
	    sizeof(answer)) && !m->has_query_message,
	    "client response: the response message, verbatim");
	dnstap__dnstap__free_unpacked(d, NULL);
}

static void
test_forwarder(void)
{
	struct dnstap_opts	 o = { .identity = "id", .anonymize = 1 };
	struct sockaddr_storage	 up = sa6("2606:4700:4700::1111", 853);
	struct sockaddr_storage	 up4 = sa4("9.9.9.9", 853);
	struct sockaddr_storage	 local = sa4("10.0.0.2", 41234);
	struct dnstap_event	 ev;
	Dnstap__Dnstap		*d;
	Dnstap__Message		*m;

	memset(&ev, 0, sizeof(ev));
	ev.type = DNSTAP_FORWARDER_QUERY;
	ev.proto = DNSTAP_DOT;
	ev.peer = (struct sockaddr *)&up;
	ev.qtime.tv_sec = 1700000002;
	ev.msg = query;
	ev.msglen = sizeof(query);
	if ((d = round_trip(&o, &ev)) == NULL || d->message == NULL) {
		ok(0, "forwarder query: encoded and decoded");
		if (d != NULL)
			dnstap__dnstap__free_unpacked(d, NULL);
		return;
	}
	m = d->message;
	is_int(m->type, DNSTAP__MESSAGE__TYPE__FORWARDER_QUERY,
	    "forwarder query: type");
	ok(m->socket_family == DNSTAP__SOCKET_FAMILY__INET6 &&
	    m->has_socket_protocol &&
	    m->socket_protocol == DNSTAP__SOCKET_PROTOCOL__DOT,
	    "forwarder query: INET6, DOT");
	ok(is_addr(&m->response_address, m->has_response_address, AF_INET6,
	    "2606:4700:4700::1111") && m->has_response_port &&
	    m->response_port == 853,
	    "forwarder query: the upstream is the response address, "
	    "not made anonymous");
	ok(!m->has_query_address && !m->has_query_port,
	    "forwarder query: no query address (no client, no local)");
	ok(m->query_time_sec == 1700000002 && m->has_query_time_nsec &&
	    m->query_time_nsec == 0, "forwarder query: query time");
	ok(is_bytes(&m->query_message, m->has_query_message, query,
	    sizeof(query)), "forwarder query: the query message");
	dnstap__dnstap__free_unpacked(d, NULL);

	ev.type = DNSTAP_FORWARDER_RESPONSE;
	ev.peer = (struct sockaddr *)&up4;
	ev.local = (struct sockaddr *)&local;
	ev.rtime.tv_sec = 1700000002;
	ev.rtime.tv_nsec = 40000000;
	ev.msg = answer;
	ev.msglen = sizeof(answer);
	if ((d = round_trip(&o, &ev)) == NULL || d->message == NULL) {
		ok(0, "forwarder response: encoded and decoded");
		if (d != NULL)
			dnstap__dnstap__free_unpacked(d, NULL);
		return;
	}
	m = d->message;
	is_int(m->type, DNSTAP__MESSAGE__TYPE__FORWARDER_RESPONSE,
	    "forwarder response: type");
	ok(m->socket_family == DNSTAP__SOCKET_FAMILY__INET &&
	    is_addr(&m->response_address, m->has_response_address, AF_INET,
	    "9.9.9.9") && m->response_port == 853 &&
	    is_addr(&m->query_address, m->has_query_address, AF_INET,
	    "10.0.0.2") && m->query_port == 41234,
	    "forwarder response: upstream responds, our end initiates");
	ok(m->has_response_time_sec && m->response_time_nsec == 40000000 &&
	    is_bytes(&m->response_message, m->has_response_message, answer,
	    sizeof(answer)) && !m->has_query_message,
	    "forwarder response: response time and message");
	dnstap__dnstap__free_unpacked(d, NULL);

	/* a local end of the other family is left out */
	ev.local = (struct sockaddr *)&local;
	ev.peer = (struct sockaddr *)&up;
	if ((d = round_trip(&o, &ev)) == NULL || d->message == NULL) {
		ok(0, "mixed families: encoded");
		if (d != NULL)
			dnstap__dnstap__free_unpacked(d, NULL);
		return;
	}
	m = d->message;
	ok(m->socket_family == DNSTAP__SOCKET_FAMILY__INET6 &&
	    !m->has_query_address && m->has_response_address,
	    "mixed families: the local end of the other family left out");
	dnstap__dnstap__free_unpacked(d, NULL);
}

/* the caller's anonymizer: 2001:db8::/32, a fixed host part, port 7 */
static void
anon_hook(void *arg, struct sockaddr_storage *ss)
{
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;
	int			*calls = arg;

	(*calls)++;
	if (ss->ss_family != AF_INET6)
		return;
	memset((uint8_t *)&sin6->sin6_addr + 4, 0xab, 12);
	sin6->sin6_port = htons(7);
}

static Dnstap__Message *
client_record(Dnstap__Dnstap **dp, const struct dnstap_opts *o,
    struct sockaddr_storage *client, struct sockaddr_storage *local)
{
	struct dnstap_event	ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = DNSTAP_CLIENT_QUERY;
	ev.proto = DNSTAP_UDP;
	ev.peer = (struct sockaddr *)client;
	ev.local = (struct sockaddr *)local;
	ev.msg = query;
	ev.msglen = sizeof(query);
	if ((*dp = round_trip(o, &ev)) == NULL)
		return NULL;
	return (*dp)->message;
}

static void
test_anonymize(void)
{
	struct dnstap_opts	 o = { .anonymize = 1 };
	struct sockaddr_storage	 c4 = sa4("198.51.100.77", 4444);
	struct sockaddr_storage	 c6 = sa6("2001:db8:aaaa:bbbb:cccc::1", 5555);
	struct sockaddr_storage	 cm = sa6("::ffff:198.51.100.77", 6666);
	struct sockaddr_storage	 l4 = sa4("198.51.100.1", 53);
	struct sockaddr_storage	 l6 = sa6("2001:db8::53", 53);
	Dnstap__Dnstap		*d;
	Dnstap__Message		*m;
	int			 calls = 0;

	m = client_record(&d, &o, &c4, &l4);
	ok(m != NULL && is_addr(&m->query_address, m->has_query_address,
	    AF_INET, "198.51.100.0") && !m->has_query_port,
	    "anonymize: IPv4 client cut to /24, port left out");
	ok(m != NULL && is_addr(&m->response_address, m->has_response_address,
	    AF_INET, "198.51.100.1") && m->response_port == 53,
	    "anonymize: our own address stays");
	if (d != NULL)
		dnstap__dnstap__free_unpacked(d, NULL);

	m = client_record(&d, &o, &c6, &l6);
	ok(m != NULL && is_addr(&m->query_address, m->has_query_address,
	    AF_INET6, "2001:db8:aaaa:bb00::") && !m->has_query_port,
	    "anonymize: IPv6 client cut to /56, port left out");
	if (d != NULL)
		dnstap__dnstap__free_unpacked(d, NULL);

	m = client_record(&d, &o, &cm, NULL);
	ok(m != NULL && is_addr(&m->query_address, m->has_query_address,
	    AF_INET6, "::ffff:198.51.100.0"),
	    "anonymize: a v4-mapped client cut to its IPv4 /24");
	if (d != NULL)
		dnstap__dnstap__free_unpacked(d, NULL);

	o.anon = anon_hook;
	o.anon_arg = &calls;
	m = client_record(&d, &o, &c6, &l6);
	ok(m != NULL && is_addr(&m->query_address, m->has_query_address,
	    AF_INET6, "2001:db8:abab:abab:abab:abab:abab:abab") &&
	    m->has_query_port && m->query_port == 7 && calls == 1,
	    "anonymize: the caller's hook rewrites the client's address");
	ok(m != NULL && is_addr(&m->response_address, m->has_response_address,
	    AF_INET6, "2001:db8::53"), "anonymize: the hook leaves ours");
	if (d != NULL)
		dnstap__dnstap__free_unpacked(d, NULL);

	o.anonymize = 0;
	m = client_record(&d, &o, &c4, NULL);
	ok(m != NULL && is_addr(&m->query_address, m->has_query_address,
	    AF_INET, "198.51.100.77") && m->query_port == 4444 && calls == 1,
	    "not anonymized: the address as given, the hook not called");
	if (d != NULL)
		dnstap__dnstap__free_unpacked(d, NULL);
}

static void
test_refused(void)
{
	struct dnstap_opts	 o = { 0 };
	struct sockaddr_storage	 client = sa4("192.0.2.10", 53000);
	struct sockaddr_storage	 unix_sa;
	struct dnstap_event	 ev, good;
	static uint8_t		 big[DNSTAP_MSG_MAX + 1], buf[FRAME_MAX];

	memset(&good, 0, sizeof(good));
	good.type = DNSTAP_CLIENT_QUERY;
	good.proto = DNSTAP_UDP;
	good.peer = (struct sockaddr *)&client;
	good.msg = query;
	good.msglen = sizeof(query);
	ok(dnstap_encode(&o, &good, buf, sizeof(buf)) > 0, "a good event");

	ev = good;
	ev.type = 1;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1 && errno == EINVAL,
	    "refused: a type we do not log");
	ev = good;
	ev.proto = 4;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1 && errno == EINVAL,
	    "refused: an unknown protocol");
	ev = good;
	ev.msglen = 0;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1,
	    "refused: an empty message");
	ev = good;
	ev.msg = NULL;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1,
	    "refused: no message");
	ev = good;
	ev.msg = big;
	ev.msglen = sizeof(big);
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1,
	    "refused: a message over 65535 bytes");
	ev.msglen = DNSTAP_MSG_MAX;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) > DNSTAP_MSG_MAX,
	    "a message of 65535 bytes is recorded");
	ev = good;
	ev.qtime.tv_nsec = 1000000000;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1,
	    "refused: nanoseconds out of range");
	ev = good;
	ev.rtime.tv_sec = -1;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1,
	    "refused: a negative time");
	memset(&unix_sa, 0, sizeof(unix_sa));
	unix_sa.ss_family = AF_UNIX;
	ev = good;
	ev.peer = (struct sockaddr *)&unix_sa;
	ok(dnstap_encode(&o, &ev, buf, sizeof(buf)) == -1,
	    "refused: an address neither IPv4 nor IPv6");
	ok(dnstap_encode(&o, &good, buf, 10) == -1 && errno == EMSGSIZE,
	    "a buffer too small: EMSGSIZE");
}

/* ---- the collector's end ---- */

/* n bytes, waiting at most 2 s: 0, or -1 on EOF, error or time out */
static int
readn(int fd, void *p, size_t n)
{
	struct pollfd	pfd = { .fd = fd, .events = POLLIN };
	uint8_t		*b = p;
	ssize_t		r;

	while (n > 0) {
		if (poll(&pfd, 1, 2000) != 1)
			return -1;
		if ((r = read(fd, b, n)) == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		b += r;
		n -= r;
	}
	return 0;
}

static uint32_t
be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/* exactly one content type, ours */
static int
has_ctype(const struct fstrm_control *c)
{
	const uint8_t	*ct;
	size_t		 n, len;

	return fstrm_control_get_num_field_content_type(c, &n) ==
	    fstrm_res_success && n == 1 &&
	    fstrm_control_get_field_content_type(c, 0, &ct, &len) ==
	    fstrm_res_success && len == CT_LEN && memcmp(ct, CT, len) == 0;
}

/*
 * The next frame: a data frame's length, or 0 for a control frame whose
 * type goes to *type.  -1 on EOF or garbage.
 */
static long
read_frame(int fd, uint8_t *buf, size_t cap, fstrm_control_type *type,
    int *ctype_ok)
{
	struct fstrm_control	*c;
	uint8_t			 hdr[4];
	uint32_t		 len;
	fstrm_res		 res;

	if (readn(fd, hdr, 4) == -1)
		return -1;
	if ((len = be32(hdr)) != 0) {
		if (len > cap || readn(fd, buf, len) == -1)
			return -1;
		return len;
	}
	if (readn(fd, hdr, 4) == -1 || (len = be32(hdr)) > cap ||
	    readn(fd, buf, len) == -1)
		return -1;
	c = fstrm_control_init();
	res = fstrm_control_decode(c, buf, len, 0);
	if (res == fstrm_res_success)
		res = fstrm_control_get_type(c, type);
	if (ctype_ok != NULL)
		*ctype_ok = has_ctype(c);
	fstrm_control_destroy(&c);
	return res == fstrm_res_success ? 0 : -1;
}

static int
expect_control(int fd, fstrm_control_type want)
{
	static uint8_t		buf[FRAME_MAX];
	fstrm_control_type	type = 0;
	int			ctype_ok = 0;

	if (read_frame(fd, buf, sizeof(buf), &type, &ctype_ok) != 0)
		return 0;
	if (want == FSTRM_CONTROL_STOP)
		return type == want;
	return type == want && ctype_ok;
}

static size_t
control(fstrm_control_type type, const char *ctype, uint8_t *buf)
{
	struct fstrm_control	*c;
	size_t			 len = FSTRM_CONTROL_FRAME_LENGTH_MAX + 8;

	c = fstrm_control_init();
	fstrm_control_set_type(c, type);
	if (ctype != NULL)
		fstrm_control_add_field_content_type(c, (const uint8_t *)ctype,
		    strlen(ctype));
	if (fstrm_control_encode(c, buf, &len,
	    FSTRM_CONTROL_FLAG_WITH_HEADER) != fstrm_res_success)
		abort();
	fstrm_control_destroy(&c);
	return len;
}

static void
send_control(int fd, fstrm_control_type type, const char *ctype)
{
	uint8_t	buf[FSTRM_CONTROL_FRAME_LENGTH_MAX + 8];
	size_t	len = control(type, ctype, buf);

	if (write(fd, buf, len) != (ssize_t)len)
		abort();
}

/* a socketpair: [0] non-blocking, for the writer; [1] the collector */
static void
open_pair(int p[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) == -1 ||
	    fcntl(p[0], F_SETFL, O_NONBLOCK) == -1) {
		perror("socketpair");
		exit(2);
	}
}

/* a client query whose DNS ID is seq and whose message is len bytes */
static int
log_seq(struct dnstap_writer *w, uint16_t seq, size_t len)
{
	static uint8_t		 msg[DNSTAP_MSG_MAX];
	struct sockaddr_storage	 client = sa4("192.0.2.10", 53000);
	struct dnstap_event	 ev;

	if (len < sizeof(query))
		len = sizeof(query);
	memcpy(msg, query, sizeof(query));
	msg[0] = seq >> 8;
	msg[1] = seq;
	memset(&ev, 0, sizeof(ev));
	ev.type = DNSTAP_CLIENT_QUERY;
	ev.proto = DNSTAP_UDP;
	ev.peer = (struct sockaddr *)&client;
	clock_gettime(CLOCK_REALTIME, &ev.qtime);
	ev.msg = msg;
	ev.msglen = len;
	return dnstap_log(w, &ev);
}

/* a record's query's DNS ID, or -1 */
static long
record_seq(const uint8_t *buf, size_t len)
{
	Dnstap__Dnstap	*d;
	long		 seq = -1;

	if ((d = dnstap__dnstap__unpack(NULL, len, buf)) == NULL)
		return -1;
	if (d->message != NULL && d->message->has_query_message &&
	    d->message->query_message.len >= 2)
		seq = d->message->query_message.data[0] << 8 |
		    d->message->query_message.data[1];
	dnstap__dnstap__free_unpacked(d, NULL);
	return seq;
}

/* the next data frame as a record: its query's DNS ID, or -1 */
static long
read_seq(int fd)
{
	static uint8_t		 buf[FRAME_MAX];
	fstrm_control_type	 type;
	long			 n;

	if ((n = read_frame(fd, buf, sizeof(buf), &type, NULL)) <= 0)
		return -1;
	return record_seq(buf, n);
}

/*
 * Let the writer write and the collector read until the writer has
 * nothing left: the bytes read.
 */
static size_t
pump(struct dnstap_writer *w, int fd, uint8_t *buf, size_t cap)
{
	struct pollfd	pfd = { .fd = fd, .events = POLLIN };
	size_t		len = 0;
	ssize_t		n;

	for (;;) {
		if (dnstap_writer_want_write(w) &&
		    dnstap_writer_io(w, DNSTAP_IO_WRITE) == -1)
			break;
		if (poll(&pfd, 1, dnstap_writer_want_write(w) ? 100 : 0) != 1)
			break;
		if ((n = read(fd, buf + len, cap - len)) <= 0)
			break;
		len += n;
	}
	return len;
}

/* the DNS ID of the data frame at *off in buf, or -1 */
static long
parse_seq(const uint8_t *buf, size_t len, size_t *off)
{
	uint32_t	flen;

	if (len - *off < 4 || (flen = be32(buf + *off)) == 0 ||
	    flen > len - *off - 4)
		return -1;
	*off += 4 + flen;
	return record_seq(buf + *off - flen, flen);
}

/* READY read, ACCEPT sent, START read: 1 when all went as it should */
static int
handshake(struct dnstap_writer *w, int coll)
{
	if (!dnstap_writer_want_write(w) ||
	    dnstap_writer_io(w, DNSTAP_IO_WRITE) == -1 ||
	    !expect_control(coll, FSTRM_CONTROL_READY) ||
	    dnstap_writer_want_write(w))
		return 0;
	send_control(coll, FSTRM_CONTROL_ACCEPT, CT);
	if (dnstap_writer_io(w, DNSTAP_IO_READ) == -1)
		return 0;
	return expect_control(coll, FSTRM_CONTROL_START);
}

/* ---- the writer ---- */

static void
test_writer_new(void)
{
	struct dnstap_opts	 o = { 0 };
	struct dnstap_writer	*w;
	char			 id[DNSTAP_ID_MAX + 2];

	errno = 0;
	ok(dnstap_writer_new(NULL, DNSTAP_QUEUE_MIN - 1) == NULL &&
	    errno == EINVAL, "writer: a queue below the minimum refused");
	memset(id, 'x', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	o.identity = id;
	errno = 0;
	ok(dnstap_writer_new(&o, 0) == NULL && errno == EINVAL,
	    "writer: an identity over 255 bytes refused");
	id[DNSTAP_ID_MAX] = '\0';
	w = dnstap_writer_new(&o, 0);
	ok(w != NULL && dnstap_writer_needfd(w) &&
	    dnstap_writer_fd(w) == -1 && !dnstap_writer_want_write(w) &&
	    dnstap_writer_error(w) == NULL,
	    "writer: new, without a descriptor, nothing to write");
	ok(w != NULL && dnstap_writer_io(w, DNSTAP_IO_READ |
	    DNSTAP_IO_WRITE) == -1, "writer: no I/O without a descriptor");
	dnstap_writer_free(w);
	dnstap_writer_free(NULL);
}

static void
test_writer_stream(void)
{
	struct dnstap_opts	 o = { .identity = "tap", .version = "1" };
	struct dnstap_writer	*w;
	uint64_t		 sent, dropped;
	int			 p[2], i, good;

	open_pair(p);
	if ((w = dnstap_writer_new(&o, 0)) == NULL) {
		ok(0, "stream: writer");
		return;
	}
	for (i = 0; i < 3; i++)
		log_seq(w, i, 0);
	ok(!dnstap_writer_want_write(w),
	    "stream: records wait for a descriptor");
	dnstap_writer_set_fd(w, p[0]);
	ok(!dnstap_writer_needfd(w) && dnstap_writer_fd(w) == p[0],
	    "stream: the descriptor taken");
	ok(dnstap_writer_want_write(w), "stream: READY to write");
	ok(dnstap_writer_io(w, DNSTAP_IO_WRITE) == 0,
	    "stream: READY written");
	ok(expect_control(p[1], FSTRM_CONTROL_READY),
	    "stream: the collector reads READY with protobuf:dnstap.Dnstap");
	ok(!dnstap_writer_want_write(w) && dnstap_writer_io(w,
	    DNSTAP_IO_WRITE) == 0, "stream: nothing to write before ACCEPT");
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == 0 &&
	    !dnstap_writer_needfd(w), "stream: no ACCEPT yet, waiting");

	/* ACCEPT in three pieces */
	{
		uint8_t	buf[FSTRM_CONTROL_FRAME_LENGTH_MAX + 8];
		size_t	len = control(FSTRM_CONTROL_ACCEPT, CT, buf);

		good = write(p[1], buf, 3) == 3 &&
		    dnstap_writer_io(w, DNSTAP_IO_READ) == 0 &&
		    write(p[1], buf + 3, 7) == 7 &&
		    dnstap_writer_io(w, DNSTAP_IO_READ) == 0;
		good = good && write(p[1], buf + 10, len - 10) ==
		    (ssize_t)(len - 10);
	}
	ok(good, "stream: ACCEPT in pieces");
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == 0,
	    "stream: ACCEPT read; START and the records written");
	ok(expect_control(p[1], FSTRM_CONTROL_START),
	    "stream: the collector reads START with the content type");
	good = 1;
	for (i = 0; i < 3; i++)
		good &= read_seq(p[1]) == i;
	ok(good, "stream: the records queued before, in order, decoded");
	dnstap_writer_stats(w, &sent, &dropped);
	ok(sent == 3 && dropped == 0, "stream: 3 sent, none dropped");

	for (i = 3; i < 10; i++)
		log_seq(w, i, 300);
	ok(dnstap_writer_want_write(w), "stream: more to write");
	ok(dnstap_writer_io(w, DNSTAP_IO_WRITE) == 0 &&
	    !dnstap_writer_want_write(w), "stream: written in one go");
	good = 1;
	for (i = 3; i < 10; i++)
		good &= read_seq(p[1]) == i;
	ok(good, "stream: 7 more records decoded");
	dnstap_writer_stats(w, &sent, NULL);
	is_int(sent, 10, "stream: 10 sent");

	dnstap_writer_free(w);
	ok(expect_control(p[1], FSTRM_CONTROL_STOP),
	    "stream: STOP at the end");
	{
		uint8_t	c;

		ok(readn(p[1], &c, 1) == -1, "stream: then EOF");
	}
	close(p[1]);
}

static void
test_writer_stalled(void)
{
	struct dnstap_writer	*w;
	struct timespec		 t0, t1;
	uint64_t		 sent, dropped;
	int			 p[2], i, n, fails = 0, queued = 0, sndbuf;
	double			 secs;

	open_pair(p);
	sndbuf = 16384;
	setsockopt(p[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if ((w = dnstap_writer_new(NULL, 64 * 1024)) == NULL) {
		ok(0, "stalled: writer");
		return;
	}
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "stalled: handshake");

	/* the collector reads no more */
	n = 2000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++) {
		if (log_seq(w, i, 500) == 0)
			queued++;
		if (dnstap_writer_io(w, DNSTAP_IO_WRITE) == -1)
			fails++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	dnstap_writer_stats(w, &sent, &dropped);
	is_int(fails, 0, "stalled: writing never failed");
	ok(secs < 5, "stalled: 2000 records and writes in %.3f s, "
	    "never blocked", secs);
	ok(dropped > 0 && dropped == (uint64_t)(n - queued),
	    "stalled: %llu dropped and counted", (unsigned long long)dropped);
	ok(sent > 0 && sent < (uint64_t)queued,
	    "stalled: %llu sent into the socket, the rest queued",
	    (unsigned long long)sent);
	ok(dnstap_writer_want_write(w) && !dnstap_writer_needfd(w),
	    "stalled: still connected, still wanting to write");

	/* the collector catches up: the stream is intact */
	for (i = 0; (uint64_t)i < sent; i++)
		if (read_seq(p[1]) != i)
			break;
	is_int(i, sent, "stalled: what was sent decodes in order");
	dnstap_writer_free(w);
	close(p[1]);

	/* no ACCEPT ever: records queue up to the bound, then drop */
	open_pair(p);
	if ((w = dnstap_writer_new(NULL, DNSTAP_QUEUE_MIN * 4)) == NULL) {
		ok(0, "no ACCEPT: writer");
		return;
	}
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	for (i = 0; i < 100; i++) {
		log_seq(w, i, 0);
		dnstap_writer_io(w, DNSTAP_IO_READ | DNSTAP_IO_WRITE);
	}
	dnstap_writer_stats(w, &sent, &dropped);
	ok(sent == 0 && dropped > 0 && dropped < 100,
	    "no ACCEPT: nothing sent, %llu of 100 dropped",
	    (unsigned long long)dropped);
	dnstap_writer_free(w);
	ok(expect_control(p[1], FSTRM_CONTROL_READY),
	    "no ACCEPT: READY was sent");
	{
		uint8_t	c;

		ok(readn(p[1], &c, 1) == -1,
		    "no ACCEPT: no START, no STOP, then EOF");
	}
	close(p[1]);
}

static void
test_writer_lost(void)
{
	struct dnstap_writer	*w;
	uint64_t		 sent, dropped;
	int			 p[2];
	const char		*e;

	/* the collector closes while idle */
	open_pair(p);
	if ((w = dnstap_writer_new(NULL, 0)) == NULL) {
		ok(0, "lost: writer");
		return;
	}
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "lost: handshake");
	close(p[1]);
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == -1 &&
	    dnstap_writer_needfd(w) && dnstap_writer_fd(w) == -1,
	    "lost: EOF reported, a new descriptor wanted");
	e = dnstap_writer_error(w);
	ok(e != NULL && strstr(e, "closed") != NULL, "lost: why: %s",
	    e ? e : "(none)");
	ok(!dnstap_writer_want_write(w) && dnstap_writer_io(w,
	    DNSTAP_IO_WRITE) == -1, "lost: no more I/O");

	/* the collector closes with records to write: EPIPE */
	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	ok(dnstap_writer_error(w) == NULL, "lost: a new descriptor clears it");
	ok(handshake(w, p[1]), "lost: handshake again");
	close(p[1]);
	log_seq(w, 1, 0);
	ok(dnstap_writer_io(w, DNSTAP_IO_WRITE) == -1 &&
	    dnstap_writer_needfd(w), "lost: a write to a closed collector");
	e = dnstap_writer_error(w);
	ok(e != NULL && strncmp(e, "write:", 6) == 0, "lost: why: %s",
	    e ? e : "(none)");
	dnstap_writer_stats(w, &sent, &dropped);
	ok(sent == 0 && dropped == 0,
	    "lost: the record still queued, not counted either way");

	/* a collector closing during the handshake */
	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	close(p[1]);
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == -1 &&
	    dnstap_writer_needfd(w), "lost: EOF instead of ACCEPT");
	dnstap_writer_free(w);
}

static void
test_writer_refused(void)
{
	struct dnstap_writer	*w;
	uint8_t			 junk[8] = { 0, 0, 0, 0, 0, 0, 0x10, 0 };
	const char		*e;
	int			 p[2];

	if ((w = dnstap_writer_new(NULL, 0)) == NULL) {
		ok(0, "refused: writer");
		return;
	}

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	send_control(p[1], FSTRM_CONTROL_ACCEPT, "protobuf:other.Thing");
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == -1 &&
	    dnstap_writer_needfd(w), "refused: ACCEPT of another content type");
	e = dnstap_writer_error(w);
	ok(e != NULL && strstr(e, "does not accept") != NULL, "refused: %s",
	    e ? e : "(none)");
	close(p[1]);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	send_control(p[1], FSTRM_CONTROL_FINISH, NULL);
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == -1,
	    "refused: FINISH instead of ACCEPT");
	close(p[1]);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	ok(write(p[1], junk, sizeof(junk)) == sizeof(junk) &&
	    dnstap_writer_io(w, DNSTAP_IO_READ) == -1,
	    "refused: a control frame longer than 512 bytes");
	close(p[1]);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	junk[3] = 1;
	ok(write(p[1], junk, sizeof(junk)) == sizeof(junk) &&
	    dnstap_writer_io(w, DNSTAP_IO_READ) == -1,
	    "refused: a data frame instead of ACCEPT");
	close(p[1]);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "refused: handshake");
	ok(write(p[1], "x", 1) == 1 &&
	    dnstap_writer_io(w, DNSTAP_IO_READ) == -1,
	    "refused: data from the collector after ACCEPT");
	close(p[1]);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	ok(write(p[1], "x", 1) == 1 &&
	    dnstap_writer_io(w, DNSTAP_IO_READ) == -1,
	    "refused: data from the collector before READY is out");
	close(p[1]);
	dnstap_writer_free(w);
}

/*
 * The collector stops reading, then goes away in the middle of a frame;
 * on the next descriptor the handshake starts over and what was queued
 * follows it, whole frames only.
 */
static void
test_writer_reconnect(void)
{
	struct dnstap_writer	*w;
	static uint8_t		 stream[1024 * 1024];
	uint64_t		 sent0, dropped0, sent, dropped;
	int			 p[2], i, n = 200, sndbuf = 8192, good;
	long			 seq, first;
	size_t			 len, off;

	if ((w = dnstap_writer_new(NULL, 0)) == NULL) {
		ok(0, "reconnect: writer");
		return;
	}
	open_pair(p);
	setsockopt(p[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "reconnect: handshake");
	for (i = 0; i < n; i++)
		log_seq(w, i, 777);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	dnstap_writer_stats(w, &sent0, &dropped0);
	ok(sent0 > 0 && sent0 < (uint64_t)n && dropped0 == 0,
	    "reconnect: %llu of %d sent before the collector stalls",
	    (unsigned long long)sent0, n);
	close(p[1]);
	ok(dnstap_writer_io(w, DNSTAP_IO_READ | DNSTAP_IO_WRITE) == -1 &&
	    dnstap_writer_needfd(w), "reconnect: the collector went away");
	dnstap_writer_stats(w, &sent, &dropped);
	ok(sent == sent0 && dropped <= 1,
	    "reconnect: a frame half written (%llu) dropped",
	    (unsigned long long)dropped);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "reconnect: the handshake starts over");
	len = pump(w, p[1], stream, sizeof(stream));
	good = 1;
	first = -1;
	for (off = 0, i = 0; good && off < len; i++) {
		seq = parse_seq(stream, len, &off);
		if (first == -1)
			first = seq;
		good = seq >= 0 && seq == first + i;
	}
	ok(good && first == (long)(sent0 + dropped) &&
	    (uint64_t)i == n - sent0 - dropped,
	    "reconnect: the %d queued records follow, whole and in order, "
	    "from %ld", i, first);
	dnstap_writer_stats(w, &sent, &dropped);
	ok(sent + dropped == (uint64_t)n, "reconnect: every record counted "
	    "(%llu sent, %llu dropped)", (unsigned long long)sent,
	    (unsigned long long)dropped);
	dnstap_writer_free(w);
	ok(expect_control(p[1], FSTRM_CONTROL_STOP),
	    "reconnect: STOP at the end");
	close(p[1]);
}

static void
test_writer_replace(void)
{
	struct dnstap_writer	*w;
	int			 p[2], q[2];
	uint8_t			 c;

	if ((w = dnstap_writer_new(NULL, 0)) == NULL) {
		ok(0, "replace: writer");
		return;
	}
	open_pair(p);
	open_pair(q);
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "replace: handshake");
	dnstap_writer_set_fd(w, q[0]);
	ok(readn(p[1], &c, 1) == -1, "replace: the old descriptor closed");
	ok(handshake(w, q[1]), "replace: handshake on the new one");
	dnstap_writer_set_fd(w, -1);
	ok(dnstap_writer_needfd(w) && readn(q[1], &c, 1) == -1,
	    "replace: -1 only closes");
	dnstap_writer_free(w);
	close(p[1]);
	close(q[1]);
}

static void
test_writer_close(void)
{
	struct dnstap_writer	*w;
	uint64_t		 sent;
	const char		*e;
	int			 p[2], i, good;

	if ((w = dnstap_writer_new(NULL, 0)) == NULL) {
		ok(0, "close: writer");
		return;
	}
	ok(dnstap_writer_close(w) == -1, "close: no stream, nothing to end");
	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	dnstap_writer_io(w, DNSTAP_IO_WRITE);
	ok(dnstap_writer_close(w) == -1 && dnstap_writer_needfd(w),
	    "close: before START, only closed");
	close(p[1]);

	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "close: handshake");
	for (i = 0; i < 5; i++)
		log_seq(w, i, 0);
	ok(dnstap_writer_close(w) == 0 && dnstap_writer_want_write(w),
	    "close: ending, with records to write");
	ok(dnstap_writer_io(w, DNSTAP_IO_WRITE) == 0 &&
	    !dnstap_writer_want_write(w) && !dnstap_writer_needfd(w),
	    "close: records and STOP written, waiting for FINISH");
	good = 1;
	for (i = 0; i < 5; i++)
		good &= read_seq(p[1]) == i;
	ok(good && expect_control(p[1], FSTRM_CONTROL_STOP),
	    "close: the records, then STOP");
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == 0 &&
	    !dnstap_writer_needfd(w), "close: no FINISH yet");
	send_control(p[1], FSTRM_CONTROL_FINISH, NULL);
	ok(dnstap_writer_io(w, DNSTAP_IO_READ) == -1 &&
	    dnstap_writer_needfd(w), "close: FINISH read, descriptor closed");
	e = dnstap_writer_error(w);
	ok(e != NULL && strcmp(e, "stream ended") == 0, "close: %s",
	    e ? e : "(none)");
	dnstap_writer_stats(w, &sent, NULL);
	is_int(sent, 5, "close: 5 sent");
	close(p[1]);

	/* nothing queued: STOP at once */
	open_pair(p);
	dnstap_writer_set_fd(w, p[0]);
	ok(handshake(w, p[1]), "close: handshake again");
	ok(dnstap_writer_close(w) == 0 && dnstap_writer_want_write(w) &&
	    dnstap_writer_io(w, DNSTAP_IO_WRITE) == 0 &&
	    expect_control(p[1], FSTRM_CONTROL_STOP),
	    "close: an empty queue, STOP at once");
	send_control(p[1], FSTRM_CONTROL_ACCEPT, CT);
	good = dnstap_writer_io(w, DNSTAP_IO_READ) == -1;
	e = dnstap_writer_error(w);
	ok(good && e != NULL && strstr(e, "FINISH") != NULL,
	    "close: other than FINISH: %s", e ? e : "(none)");
	close(p[1]);
	dnstap_writer_free(w);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_client_query();
	test_client_response();
	test_forwarder();
	test_anonymize();
	test_refused();
	test_writer_new();
	test_writer_stream();
	test_writer_stalled();
	test_writer_lost();
	test_writer_refused();
	test_writer_reconnect();
	test_writer_replace();
	test_writer_close();
	return done();
}
