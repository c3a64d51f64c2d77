/*
 * dnstap output: DNS messages as dnstap records (protobuf, dnstap.info)
 * sent as Frame Streams data frames over an already connected stream
 * socket.
 *
 * The writer never blocks and never connects: the descriptor comes from
 * whoever may connect (the parent) and must be non-blocking.  It speaks
 * the bidirectional handshake (READY, ACCEPT, START) and STOP on close,
 * and only reads, writes and closes the descriptor; SIGPIPE must be
 * ignored.  Records wait in a
 * bounded queue; one that does not fit is dropped and counted.  When the
 * collector goes away the writer closes the descriptor and says it needs
 * a new one; dnstap_writer_set_fd() starts over with the handshake, and
 * what was queued goes out on the new stream.
 *
 * With libevent: a persistent EV_READ event on the descriptor, an
 * EV_WRITE event added while dnstap_writer_want_write() says so (check
 * after dnstap_log() and after each dnstap_writer_io()), both calling
 * dnstap_writer_io() with what fired; when it returns -1 (or
 * dnstap_writer_needfd() says so) delete the events and ask for a new
 * descriptor.  To end cleanly, dnstap_writer_close() and go on until
 * dnstap_writer_io() returns -1 (the collector's FINISH came); or
 * dnstap_writer_free(), which sends what it can and STOP without
 * waiting.
 */
#ifndef DOTPROXYD_DNSTAP_H
#define DOTPROXYD_DNSTAP_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DNSTAP_CONTENT_TYPE	"protobuf:dnstap.Dnstap"
#define DNSTAP_QUEUE_DEFAULT	(1024 * 1024)	/* bytes of queued frames */
#define DNSTAP_QUEUE_MIN	1024
#define DNSTAP_ID_MAX		255	/* identity and version, bytes */
#define DNSTAP_MSG_MAX		65535	/* a wire DNS message */

/* What happened; the values are dnstap's Message.Type. */
enum dnstap_type {
	DNSTAP_CLIENT_QUERY = 5,	/* a client's query, as it came */
	DNSTAP_CLIENT_RESPONSE = 6,	/* the answer, as it left */
	DNSTAP_FORWARDER_QUERY = 7,	/* the query, as it went upstream */
	DNSTAP_FORWARDER_RESPONSE = 8	/* the upstream's answer */
};

/* The transport; the values are dnstap's SocketProtocol. */
enum dnstap_proto {
	DNSTAP_UDP = 1,
	DNSTAP_TCP = 2,
	DNSTAP_DOT = 3
};

/*
 * One event.  peer is the client for CLIENT_*, the upstream for
 * FORWARDER_*; local is our end of that exchange (may be NULL).  Both
 * are AF_INET or AF_INET6 of the same family.  qtime is when the query
 * came or went; rtime, for responses, when the answer left or came (a
 * zero time is left out).  msg is the wire message: the query for
 * *_QUERY, the answer for *_RESPONSE.
 */
struct dnstap_event {
	enum dnstap_type	 type;
	enum dnstap_proto	 proto;
	const struct sockaddr	*peer;
	const struct sockaddr	*local;
	struct timespec		 qtime;
	struct timespec		 rtime;
	const uint8_t		*msg;
	size_t			 msglen;
};

/*
 * Rewrites a client's address (and port; 0 leaves it out) before it is
 * recorded, in place: for a keyed anonymizer of the caller's.
 */
typedef void	(*dnstap_anon_fn)(void *, struct sockaddr_storage *);

/*
 * identity and version go into every record when not NULL.  anonymize
 * turns the client addresses of CLIENT_* records into their first 24
 * (IPv4) or 56 (IPv6) bits, without the port, or hands them to anon
 * when it is set.  Addresses the caller has already made anonymous go
 * in as given with anonymize off.
 */
struct dnstap_opts {
	const char	*identity;
	const char	*version;
	int		 anonymize;
	dnstap_anon_fn	 anon;
	void		*anon_arg;
};

struct dnstap_writer;

/* dnstap_writer_io() events */
#define DNSTAP_IO_READ		0x01
#define DNSTAP_IO_WRITE		0x02

ssize_t			 dnstap_encode(const struct dnstap_opts *,
			    const struct dnstap_event *, uint8_t *, size_t);

struct dnstap_writer	*dnstap_writer_new(const struct dnstap_opts *,
			    size_t);
void			 dnstap_writer_free(struct dnstap_writer *);
void			 dnstap_writer_set_fd(struct dnstap_writer *, int);
int			 dnstap_writer_fd(const struct dnstap_writer *);
int			 dnstap_writer_needfd(const struct dnstap_writer *);
int			 dnstap_writer_want_write(const struct dnstap_writer *);
int			 dnstap_writer_io(struct dnstap_writer *, int);
int			 dnstap_writer_close(struct dnstap_writer *);
int			 dnstap_log(struct dnstap_writer *,
			    const struct dnstap_event *);
void			 dnstap_writer_stats(const struct dnstap_writer *,
			    uint64_t *, uint64_t *);
const char		*dnstap_writer_error(const struct dnstap_writer *);

#endif /* DOTPROXYD_DNSTAP_H */
