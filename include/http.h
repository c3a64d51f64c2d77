#ifndef DOTPROXYD_HTTP_H
#define DOTPROXYD_HTTP_H

#include <stddef.h>
#include <time.h>

/*
 * The least of an HTTP/1.1 server (RFC 9110, RFC 9112) that Prometheus
 * needs to scrape GET /metrics: a request head read incrementally, and
 * the head of the answer.  No I/O: the caller reads, feeds the bytes and
 * writes what is built here, then closes the connection.
 */

#define HTTP_HEAD_MAX		4096	/* a request head, empty line included */
#define HTTP_PATH_MAX		256	/* a path, without the query */
#define HTTP_RESPONSE_MAX	512	/* the largest response head built here */

#define HTTP_MORE		0	/* the head is not complete yet */

#define HTTP_METRICS_PATH	"/metrics"
#define HTTP_METRICS_TYPE	"text/plain; version=0.0.4; charset=utf-8"

enum http_method {
	HTTP_M_NONE = 0,
	HTTP_M_GET,
	HTTP_M_HEAD,
	HTTP_M_OTHER			/* a well-formed method not served */
};

struct http_request {
	/* once the request line is read */
	enum http_method	 method;
	char			 path[HTTP_PATH_MAX];	/* no query */
	int			 minor;		/* HTTP/1.minor */

	/* the parser's */
	int			 status;	/* HTTP_MORE, or the answer's */
	int			 state;
	int			 hosts;		/* Host fields seen */
	size_t			 len;		/* bytes of the head so far */
	size_t			 line;		/* where the current line begins */
	char			 buf[HTTP_HEAD_MAX];
};

/*
 * http_request_feed() takes the next len bytes of a request and returns
 * HTTP_MORE while the head is incomplete, else the status to answer
 * with: 200 for GET or HEAD of HTTP_METRICS_PATH (any query ignored),
 * 400 for a malformed request line or header field, 404 for another
 * path, 405 for another method on it, 414 for a path over
 * HTTP_PATH_MAX - 1 bytes or a request line that does not end within
 * HTTP_HEAD_MAX bytes, 431 for header fields that do not, 505 for an
 * HTTP major version other than 1.  The answer, once given, stays; bytes
 * after the head are not read.  method is HTTP_M_NONE until a good
 * request line is read; from then on it, path and minor are set.
 */
void	 http_request_init(struct http_request *);
int	 http_request_feed(struct http_request *, const void *, size_t);

/*
 * The head of a 200 answer whose body is bodylen bytes of metrics text
 * (sent by the caller after it, unless the request was HEAD), or a
 * whole error answer for status with a short text body (no body for
 * HEAD; 405 says Allow: GET, HEAD).  Each says Connection: close and the
 * Date of now.  The length written, NUL not counted, or -1 if size is
 * too small or status unknown.  HTTP_RESPONSE_MAX is always enough.
 */
int	 http_response_ok(char *, size_t, size_t, time_t);
int	 http_response_error(char *, size_t, int, enum http_method, time_t);

#endif /* DOTPROXYD_HTTP_H */
