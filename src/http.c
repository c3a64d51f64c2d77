/*
 * The request side of a minimal HTTP/1.1 server (RFC 9110, RFC 9112) for
 * a Prometheus scrape: one request a connection, answered with
 * Connection: close.  The head is read a byte at a time into a bounded
 * buffer and each line checked as it ends, so bytes may arrive in any
 * pieces.  Header fields are checked for syntax and otherwise ignored,
 * but for Host, which HTTP/1.1 requires exactly once.
 *
 * Lines end in CR LF or a bare LF (RFC 9112 2.2), empty lines before the
 * request line are skipped, and a line folded onto the one before it
 * (obs-fold) is refused.  A request target may be in origin form, in
 * absolute form (http or https) or "*".
 */
#include <sys/types.h>

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"

enum {
	ST_REQUEST,			/* before the request line */
	ST_FIELDS			/* after it */
};

static const struct {
	int		 status;
	const char	*reason;
} reasons[] = {
	{ 200, "OK" },
	{ 400, "Bad Request" },
	{ 404, "Not Found" },
	{ 405, "Method Not Allowed" },
	{ 408, "Request Timeout" },
	{ 414, "URI Too Long" },
	{ 431, "Request Header Fields Too Large" },
	{ 503, "Service Unavailable" },
	{ 505, "HTTP Version Not Supported" }
};

#define ERROR_TYPE	"text/plain; charset=utf-8"

static int	 http_line(struct http_request *, const char *, size_t);
static int	 request_line(struct http_request *, const char *, size_t);
static int	 field_line(struct http_request *, const char *, size_t);
static int	 parse_version(struct http_request *, const char *, size_t);
static int	 parse_target(struct http_request *, const char *, size_t);
static int	 end_of_head(const struct http_request *);
static size_t	 token_len(const char *, size_t);
static int	 uri_chars(const char *, size_t, const char *);
static int	 in_set(unsigned char, const char *);
static int	 is_alnum(unsigned char);
static int	 is_hex(unsigned char);
static const char *reason(int);
static int	 response_head(char *, size_t, int, const char *, size_t,
		    const char *, time_t);

void
http_request_init(struct http_request *r)
{
	memset(r, 0, offsetof(struct http_request, buf));
	r->method = HTTP_M_NONE;
	r->status = HTTP_MORE;
	r->state = ST_REQUEST;
}

int
http_request_feed(struct http_request *r, const void *p, size_t n)
{
	const char	*s = p;
	size_t		 i, end;

	for (i = 0; i < n && r->status == HTTP_MORE; i++) {
		if (r->len == sizeof(r->buf)) {
			r->status = r->state == ST_REQUEST ? 414 : 431;
			break;
		}
		r->buf[r->len++] = s[i];
		if (s[i] != '\n')
			continue;
		end = r->len - 1;
		if (end > r->line && r->buf[end - 1] == '\r')
			end--;
		r->status = http_line(r, r->buf + r->line, end - r->line);
		r->line = r->len;
	}
	return r->status;
}

/* One line of the head, without its end: HTTP_MORE or a status. */
static int
http_line(struct http_request *r, const char *s, size_t n)
{
	int	rc;

	if (r->state == ST_REQUEST) {
		if (n == 0)
			return HTTP_MORE;	/* RFC 9112 2.2 */
		if ((rc = request_line(r, s, n)) == HTTP_MORE)
			r->state = ST_FIELDS;
		return rc;
	}
	if (n == 0)
		return end_of_head(r);
	return field_line(r, s, n);
}

/* method SP request-target SP HTTP-version */
static int
request_line(struct http_request *r, const char *s, size_t n)
{
	const char	*target, *sp;
	size_t		 mlen, tlen;
	int		 rc;

	mlen = token_len(s, n);
	if (mlen == 0 || mlen == n || s[mlen] != ' ')
		return 400;
	target = s + mlen + 1;
	if ((sp = memchr(target, ' ', n - mlen - 1)) == NULL)
		return 400;
	tlen = (size_t)(sp - target);
	if ((rc = parse_version(r, sp + 1, n - mlen - 2 - tlen)) != HTTP_MORE ||
	    (rc = parse_target(r, target, tlen)) != HTTP_MORE)
		return rc;
	if (mlen == 3 && memcmp(s, "GET", 3) == 0)
		r->method = HTTP_M_GET;
	else if (mlen == 4 && memcmp(s, "HEAD", 4) == 0)
		r->method = HTTP_M_HEAD;
	else
		r->method = HTTP_M_OTHER;
	return HTTP_MORE;
}

/* "HTTP/" DIGIT "." DIGIT; a major version other than 1 is refused. */
static int
parse_version(struct http_request *r, const char *s, size_t n)
{
	if (n != 8 || memcmp(s, "HTTP/", 5) != 0 || s[6] != '.' ||
	    s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9')
		return 400;
	if (s[5] != '1')
		return 505;
	r->minor = s[7] - '0';
	return HTTP_MORE;
}

/*
 * The path of the request target (RFC 9112 3.2) into r->path: "*", or
 * an absolute path, alone or after "http://" or "https://" and an
 * authority, then an optional query.  Characters as RFC 3986 allows.
 */
static int
parse_target(struct http_request *r, const char *t, size_t n)
{
	size_t	p = 0, q, a;

	if (n == 1 && t[0] == '*') {
		(void)strlcpy(r->path, "*", sizeof(r->path));
		return HTTP_MORE;
	}
	if (n == 0)
		return 400;
	if (t[0] != '/') {
		if (n > 7 && strncasecmp(t, "http://", 7) == 0)
			a = 7;
		else if (n > 8 && strncasecmp(t, "https://", 8) == 0)
			a = 8;
		else
			return 400;
		for (p = a; p < n && t[p] != '/' && t[p] != '?'; p++)
			;
		if (p == a || !uri_chars(t + a, p - a, "[]"))
			return 400;
	}
	for (q = p; q < n && t[q] != '?'; q++)
		;
	if (!uri_chars(t + p, q - p, "/") ||
	    (q < n && !uri_chars(t + q + 1, n - q - 1, "/?")))
		return 400;
	if (q == p)
		(void)strlcpy(r->path, "/", sizeof(r->path));
	else if (q - p < sizeof(r->path)) {
		memcpy(r->path, t + p, q - p);
		r->path[q - p] = '\0';
	} else
		return 414;
	return HTTP_MORE;
}

/*
 * field-name ":" OWS field-value OWS: a token, the colon right after it,
 * then tabs, spaces, visible ASCII and obs-text only.
 */
static int
field_line(struct http_request *r, const char *s, size_t n)
{
	const unsigned char	*v;
	size_t			 nlen, i;

	if (s[0] == ' ' || s[0] == '\t')
		return 400;		/* obs-fold (RFC 9112 5.2) */
	nlen = token_len(s, n);
	if (nlen == 0 || nlen == n || s[nlen] != ':')
		return 400;
	v = (const unsigned char *)s + nlen + 1;
	for (i = 0; i < n - nlen - 1; i++)
		if (v[i] != '\t' && (v[i] < 0x20 || v[i] == 0x7f))
			return 400;
	if (nlen == 4 && strncasecmp(s, "host", 4) == 0)
		r->hosts++;
	return HTTP_MORE;
}

/* The empty line: the head is complete, the answer is known. */
static int
end_of_head(const struct http_request *r)
{
	/* RFC 9112 3.2: one Host, and in HTTP/1.1 not none */
	if (r->hosts > 1 || (r->hosts == 0 && r->minor >= 1))
		return 400;
	if (strcmp(r->path, HTTP_METRICS_PATH) != 0)
		return 404;
	if (r->method != HTTP_M_GET && r->method != HTTP_M_HEAD)
		return 405;
	return 200;
}

/* The length of the token (RFC 9110 5.6.2) s begins with. */
static size_t
token_len(const char *s, size_t n)
{
	size_t	i;

	for (i = 0; i < n; i++)
		if (!is_alnum((unsigned char)s[i]) &&
		    !in_set((unsigned char)s[i], "!#$%&'*+-.^_`|~"))
			break;
	return i;
}

/*
 * RFC 3986: unreserved, sub-delims, ':', '@', the extra characters
 * allowed where it is, and '%' followed by two hexadecimal digits.
 */
static int
uri_chars(const char *s, size_t n, const char *extra)
{
	const unsigned char	*u = (const unsigned char *)s;
	size_t			 i;

	for (i = 0; i < n; i++) {
		if (u[i] == '%') {
			if (n - i < 3 || !is_hex(u[i + 1]) ||
			    !is_hex(u[i + 2]))
				return 0;
			i += 2;
		} else if (!is_alnum(u[i]) &&
		    !in_set(u[i], "-._~!$&'()*+,;=:@") && !in_set(u[i], extra))
			return 0;
	}
	return 1;
}

static int
in_set(unsigned char c, const char *set)
{
	return c != '\0' && strchr(set, c) != NULL;
}

static int
is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z');
}

static int
is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F');
}

static const char *
reason(int status)
{
	size_t	i;

	for (i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].status == status)
			return reasons[i].reason;
	return NULL;
}

/* Status line, Date, Content-Type, Content-Length, extra, Connection. */
static int
response_head(char *buf, size_t size, int status, const char *type,
    size_t bodylen, const char *extra, time_t now)
{
	static const char	*days[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
				    "Fri", "Sat" };
	static const char	*months[] = { "Jan", "Feb", "Mar", "Apr",
				    "May", "Jun", "Jul", "Aug", "Sep", "Oct",
				    "Nov", "Dec" };
	const char		*why;
	struct tm		 tm;
	int			 n;

	if ((why = reason(status)) == NULL || gmtime_r(&now, &tm) == NULL ||
	    tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 ||
	    tm.tm_mon > 11 || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return -1;
	n = snprintf(buf, size, "HTTP/1.1 %d %s\r\n"
	    "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n"
	    "Content-Type: %s\r\n"
	    "Content-Length: %zu\r\n"
	    "%s"
	    "Connection: close\r\n"
	    "\r\n", status, why, days[tm.tm_wday], tm.tm_mday,
	    months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, type, bodylen, extra);
	if (n < 0 || (size_t)n >= size)
		return -1;
	return n;
}

int
http_response_ok(char *buf, size_t size, size_t bodylen, time_t now)
{
	return response_head(buf, size, 200, HTTP_METRICS_TYPE, bodylen, "",
	    now);
}

int
http_response_error(char *buf, size_t size, int status,
    enum http_method method, time_t now)
{
	const char	*why;
	size_t		 blen;
	int		 n;

	if (status < 400 || (why = reason(status)) == NULL)
		return -1;
	blen = strlen(why) + 1;
	if ((n = response_head(buf, size, status, ERROR_TYPE, blen,
	    status == 405 ? "Allow: GET, HEAD\r\n" : "", now)) == -1)
		return -1;
	if (method == HTTP_M_HEAD)
		return n;
	if (size - (size_t)n <= blen)
		return -1;
	(void)snprintf(buf + n, size - (size_t)n, "%s\n", why);
	return n + (int)blen;
}
