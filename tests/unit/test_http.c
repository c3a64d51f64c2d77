/*
 * The HTTP request parser and response builder for the metrics
 * endpoint: requests fed whole, in pieces and a byte at a time give the
 * same answer; every error status; the head and path limits; the exact
 * bytes of the responses and their bound.
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "tap.h"

#define CRLF	"\r\n"
#define HOST	CRLF "Host: a" CRLF		/* after the request line */
#define L(s)	s, sizeof(s) - 1		/* NULs included */

static const struct {
	const char	*name;
	const char	*req;
	size_t		 len;
	int		 want;
} cases[] = {
	{ "GET /metrics", L("GET /metrics HTTP/1.1" HOST CRLF), 200 },
	{ "HEAD /metrics", L("HEAD /metrics HTTP/1.1" HOST CRLF), 200 },
	{ "a query is ignored", L("GET /metrics?x HTTP/1.1" HOST CRLF), 200 },
	{ "a query with '/', '?' and escapes",
	    L("GET /metrics?a=%2F/b?c=d&e HTTP/1.1" HOST CRLF), 200 },
	{ "an empty query", L("GET /metrics? HTTP/1.1" HOST CRLF), 200 },
	{ "HTTP/1.0 without Host", L("GET /metrics HTTP/1.0" CRLF CRLF), 200 },
	{ "HTTP/1.2 as 1.1", L("GET /metrics HTTP/1.2" HOST CRLF), 200 },
	{ "bare LF line ends", L("GET /metrics HTTP/1.1\nHost: a\n\n"), 200 },
	{ "mixed line ends", L("GET /metrics HTTP/1.1\nHost: a" CRLF "\n"),
	    200 },
	{ "empty lines before the request",
	    L(CRLF "\n" CRLF "GET /metrics HTTP/1.1" HOST CRLF), 200 },
	{ "header fields ignored", L("GET /metrics HTTP/1.1" CRLF
	    "Host: [::1]:9100" CRLF "User-Agent: Prometheus/2.50" CRLF
	    "Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1" CRLF
	    "X-Empty:" CRLF "X-Tab:\tv\t" CRLF "X-Obs-Text: \xc3\xa9" CRLF
	    "Accept-Encoding: gzip" CRLF CRLF), 200 },
	{ "absolute form", L("GET http://localhost:9100/metrics?x HTTP/1.1"
	    HOST CRLF), 200 },
	{ "absolute form, https, any case",
	    L("GET HTTPS://[::1]/metrics HTTP/1.1" HOST CRLF), 200 },
	{ "bytes after the head are not read",
	    L("GET /metrics HTTP/1.0" CRLF CRLF "\0\r\r junk"), 200 },

	{ "another path", L("GET / HTTP/1.1" HOST CRLF), 404 },
	{ "a longer path", L("GET /metricsx HTTP/1.1" HOST CRLF), 404 },
	{ "a trailing slash", L("GET /metrics/ HTTP/1.1" HOST CRLF), 404 },
	{ "an escaped path is not decoded",
	    L("GET /metric%73 HTTP/1.1" HOST CRLF), 404 },
	{ "absolute form without a path",
	    L("GET http://a?x HTTP/1.1" HOST CRLF), 404 },
	{ "asterisk form", L("OPTIONS * HTTP/1.1" HOST CRLF), 404 },
	{ "POST elsewhere", L("POST /x HTTP/1.1" HOST CRLF), 404 },

	{ "POST /metrics", L("POST /metrics HTTP/1.1" HOST CRLF), 405 },
	{ "methods are case-sensitive", L("get /metrics HTTP/1.1" HOST CRLF),
	    405 },
	{ "an odd but valid method", L("M-SEARCH /metrics HTTP/1.1" HOST CRLF),
	    405 },

	{ "no version", L("GET /metrics" CRLF CRLF), 400 },
	{ "two spaces", L("GET  /metrics HTTP/1.1" HOST CRLF), 400 },
	{ "a space at the end", L("GET /metrics HTTP/1.1 " HOST CRLF), 400 },
	{ "a tab for a space", L("GET\t/metrics HTTP/1.1" HOST CRLF), 400 },
	{ "a space in the path", L("GET /met rics HTTP/1.1" HOST CRLF), 400 },
	{ "no method", L(" /metrics HTTP/1.1" HOST CRLF), 400 },
	{ "a method not a token", L("G(T /metrics HTTP/1.1" HOST CRLF), 400 },
	{ "NUL in the method", L("GE\0T /metrics HTTP/1.1" HOST CRLF), 400 },
	{ "NUL in the path", L("GET /metrics\0 HTTP/1.1" HOST CRLF), 400 },
	{ "a fragment", L("GET /metrics#x HTTP/1.1" HOST CRLF), 400 },
	{ "a bad escape", L("GET /metrics?%zz HTTP/1.1" HOST CRLF), 400 },
	{ "a cut escape", L("GET /metrics?%4 HTTP/1.1" HOST CRLF), 400 },
	{ "a quote in the query", L("GET /metrics?\" HTTP/1.1" HOST CRLF),
	    400 },
	{ "obs-text in the path", L("GET /m\xc3\xa9 HTTP/1.1" HOST CRLF), 400 },
	{ "a relative path", L("GET metrics HTTP/1.1" HOST CRLF), 400 },
	{ "another scheme", L("GET ftp://a/metrics HTTP/1.1" HOST CRLF), 400 },
	{ "an empty authority", L("GET http:///metrics HTTP/1.1" HOST CRLF),
	    400 },
	{ "a version in lower case", L("GET /metrics http/1.1" HOST CRLF),
	    400 },
	{ "a version of two digits", L("GET /metrics HTTP/1.10" HOST CRLF),
	    400 },
	{ "a version without minor", L("GET /metrics HTTP/1" HOST CRLF), 400 },
	{ "a CR alone in the request line",
	    L("GET /metrics\rHTTP/1.1" HOST CRLF), 400 },
	{ "a request line ending in CR CR LF",
	    L("GET /metrics HTTP/1.1\r\r\nHost: a" CRLF CRLF), 400 },
	{ "HTTP/1.1 without Host", L("GET /metrics HTTP/1.1" CRLF CRLF), 400 },
	{ "two Host fields", L("GET /metrics HTTP/1.0" HOST "host: b" CRLF
	    CRLF), 400 },
	{ "obs-fold", L("GET /metrics HTTP/1.1" HOST "X: b" CRLF " c" CRLF
	    CRLF), 400 },
	{ "a tab fold", L("GET /metrics HTTP/1.1" HOST "X: b" CRLF "\tc" CRLF
	    CRLF), 400 },
	{ "a space first after the request line",
	    L("GET /metrics HTTP/1.1" CRLF " Host: a" CRLF CRLF), 400 },
	{ "a space before the colon",
	    L("GET /metrics HTTP/1.1" CRLF "Host : a" CRLF CRLF), 400 },
	{ "no colon", L("GET /metrics HTTP/1.1" HOST "X" CRLF CRLF), 400 },
	{ "an empty name", L("GET /metrics HTTP/1.1" HOST ": x" CRLF CRLF),
	    400 },
	{ "a name not a token", L("GET /metrics HTTP/1.1" HOST "X(y): z" CRLF
	    CRLF), 400 },
	{ "NUL in a value", L("GET /metrics HTTP/1.1" HOST "X: a\0b" CRLF
	    CRLF), 400 },
	{ "a CR alone in a value", L("GET /metrics HTTP/1.1" HOST "X: a\rb"
	    CRLF CRLF), 400 },
	{ "a control character in a value",
	    L("GET /metrics HTTP/1.1" HOST "X: \001" CRLF CRLF), 400 },
	{ "DEL in a value", L("GET /metrics HTTP/1.1" HOST "X: \177" CRLF
	    CRLF), 400 },
	{ "a bad field in HTTP/1.0", L("GET /metrics HTTP/1.0" CRLF "X y" CRLF
	    CRLF), 400 },

	{ "HTTP/2.0", L("GET /metrics HTTP/2.0" HOST CRLF), 505 },
	{ "HTTP/0.9", L("GET /metrics HTTP/0.9" CRLF CRLF), 505 },
	{ "HTTP/3.1 with a bad path", L("GET x HTTP/3.1" CRLF CRLF), 505 },
};

/* Feed n bytes in pieces of chunk; the status, HTTP_MORE before the end. */
static int
feed(const char *s, size_t n, size_t chunk, struct http_request *r,
    size_t *at)
{
	size_t	off, k;
	int	rc = HTTP_MORE;

	http_request_init(r);
	for (off = 0; off < n && rc == HTTP_MORE; off += k) {
		k = n - off < chunk ? n - off : chunk;
		rc = http_request_feed(r, s + off, k);
	}
	if (at != NULL)
		*at = off;
	return rc;
}

static void
test_cases(void)
{
	static const size_t	 chunks[] = { 1, 2, 3, 7, 64, 100000 };
	struct http_request	*r;
	size_t			 i, j, len;
	int			 rc, same;

	if ((r = malloc(sizeof(*r))) == NULL)
		exit(2);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = cases[i].len;
		rc = feed(cases[i].req, len, len, r, NULL);
		is_int(rc, cases[i].want, "%s: %d", cases[i].name,
		    cases[i].want);
		same = 1;
		for (j = 0; j < sizeof(chunks) / sizeof(chunks[0]); j++)
			if (feed(cases[i].req, len, chunks[j], r, NULL) != rc)
				same = 0;
		ok(same, "%s: the same in pieces of 1, 2, 3, 7 and 64",
		    cases[i].name);
	}
	free(r);
}

static void
test_bytewise(void)
{
	static const char	 req[] = "HEAD /metrics?a=b HTTP/1.1" CRLF
				    "Host: x" CRLF CRLF;
	struct http_request	 r;
	size_t			 i, first = 0;
	int			 rc;

	http_request_init(&r);
	for (i = 0; i < sizeof(req) - 1; i++)
		if ((rc = http_request_feed(&r, req + i, 1)) != HTTP_MORE &&
		    first == 0)
			first = i + 1;
	is_int(first, sizeof(req) - 1, "a byte at a time: complete at the "
	    "last byte, not before");
	is_int(r.status, 200, "200");
	is_int(r.method, HTTP_M_HEAD, "method HEAD");
	ok(strcmp(r.path, "/metrics") == 0, "path without the query");
	is_int(r.minor, 1, "HTTP/1.1");
	is_int(http_request_feed(&r, "GET / HTTP/1.1\r\n\r\n", 18), 200,
	    "the answer stays after more bytes");
	is_int(http_request_feed(&r, "", 0), 200, "and after none");

	http_request_init(&r);
	is_int(http_request_feed(&r, "", 0), HTTP_MORE, "nothing: more");
	is_int(http_request_feed(&r, "GET /metrics HTTP/1.1", 21), HTTP_MORE,
	    "a request line without its end: more");
	is_int(r.method, HTTP_M_NONE, "no method before the line ends");
	is_int(http_request_feed(&r, "\r", 1), HTTP_MORE, "CR: more");
	is_int(http_request_feed(&r, "\n", 1), HTTP_MORE, "LF: more");
	is_int(r.method, HTTP_M_GET, "the method once the line ends");
	is_int(http_request_feed(&r, "Host: a\r\n\r", 10), HTTP_MORE,
	    "the last CR: more");
	is_int(http_request_feed(&r, "\n", 1), 200, "the last LF: 200");

	http_request_init(&r);
	is_int(http_request_feed(&r, "GET /metrics HTTP/2.0\n", 22), 505,
	    "505 as soon as the request line ends");
	is_int(http_request_feed(&r, "Host: a\r\n\r\n", 11), 505,
	    "and it stays");
	http_request_init(&r);
	is_int(http_request_feed(&r, "GET /metrics HTTP/1.1\nX\n", 24), 400,
	    "400 as soon as a bad field line ends");
	is_int(r.method, HTTP_M_GET, "the method of a good request line "
	    "stays");
}

/* A head of exactly len bytes: padding in a field, or in the path. */
static char *
make_head(size_t len, int in_path)
{
	static const char	 a[] = "GET /metrics HTTP/1.1" CRLF "Host: a"
				    CRLF "X: ";
	static const char	 b[] = "GET /metrics?";
	static const char	 b2[] = " HTTP/1.0" CRLF CRLF;
	char			*s;

	if ((s = malloc(len + 1)) == NULL)
		exit(2);
	memset(s, 'p', len);
	if (in_path) {
		memcpy(s, b, sizeof(b) - 1);
		memcpy(s + len - (sizeof(b2) - 1), b2, sizeof(b2) - 1);
	} else {
		memcpy(s, a, sizeof(a) - 1);
		memcpy(s + len - 4, CRLF CRLF, 4);
	}
	s[len] = '\0';
	return s;
}

static void
test_limits(void)
{
	struct http_request	 r;
	char			*s, path[HTTP_PATH_MAX + 64];
	size_t			 at;

	s = make_head(HTTP_HEAD_MAX, 0);
	is_int(feed(s, HTTP_HEAD_MAX, 1, &r, NULL), 200,
	    "a head of HTTP_HEAD_MAX bytes");
	free(s);
	s = make_head(HTTP_HEAD_MAX + 1, 0);
	is_int(feed(s, HTTP_HEAD_MAX + 1, 1, &r, &at), 431,
	    "a byte more in a header field: 431");
	is_int(at, HTTP_HEAD_MAX + 1, "at the byte past the limit");
	is_int(feed(s, HTTP_HEAD_MAX + 1, HTTP_HEAD_MAX + 1, &r, NULL), 431,
	    "the same whole");
	free(s);

	s = make_head(HTTP_HEAD_MAX, 1);
	is_int(feed(s, HTTP_HEAD_MAX, 5, &r, NULL), 200,
	    "a query that fills the head");
	free(s);
	s = make_head(HTTP_HEAD_MAX + 1, 1);
	is_int(feed(s, HTTP_HEAD_MAX + 1, 5, &r, NULL), 431,
	    "a byte more, after the request line: 431");
	memset(s + 13, 'p', HTTP_HEAD_MAX + 1 - 13);	/* no line end */
	is_int(feed(s, HTTP_HEAD_MAX, 5, &r, NULL), HTTP_MORE,
	    "a request line HTTP_HEAD_MAX bytes long and not ended: more");
	is_int(feed(s, HTTP_HEAD_MAX + 1, 5, &r, NULL), 414,
	    "a byte more: 414");
	free(s);

	s = calloc(1, HTTP_HEAD_MAX + 1);
	if (s == NULL)
		exit(2);
	memset(s, '\n', HTTP_HEAD_MAX + 1);
	is_int(feed(s, HTTP_HEAD_MAX, 1, &r, NULL), HTTP_MORE,
	    "HTTP_HEAD_MAX empty lines: more");
	ok(feed(s, HTTP_HEAD_MAX + 1, 1, &r, NULL) >= 400,
	    "one more: an error");
	free(s);

	memset(path, 'a', sizeof(path));
	path[0] = '/';
	snprintf(path + HTTP_PATH_MAX - 1, sizeof(path) - HTTP_PATH_MAX + 1,
	    " HTTP/1.0\n\n");
	s = malloc(4 + sizeof(path));
	if (s == NULL)
		exit(2);
	snprintf(s, 4 + sizeof(path), "GET %s", path);
	is_int(feed(s, strlen(s), 1, &r, NULL), 404,
	    "a path of HTTP_PATH_MAX - 1 bytes");
	is_int(strlen(r.path), HTTP_PATH_MAX - 1, "kept whole");
	path[HTTP_PATH_MAX - 1] = 'a';
	snprintf(path + HTTP_PATH_MAX, sizeof(path) - HTTP_PATH_MAX,
	    " HTTP/1.0\n\n");
	snprintf(s, 4 + sizeof(path), "GET %s", path);
	is_int(feed(s, strlen(s), 1, &r, NULL), 414,
	    "a path of HTTP_PATH_MAX bytes: 414");
	snprintf(path + HTTP_PATH_MAX, sizeof(path) - HTTP_PATH_MAX,
	    "?q HTTP/1.0\n\n");
	snprintf(s, 4 + sizeof(path), "GET %s", path);
	is_int(feed(s, strlen(s), 1, &r, NULL), 414,
	    "with a query too");
	free(s);
}

static void
test_responses(void)
{
	static const int	 statuses[] = { 400, 404, 405, 408, 414, 431,
				    503, 505 };
	char			 buf[HTTP_RESPONSE_MAX], *p;
	const char		*want;
	size_t			 i;
	int			 n, fits, cut;

	want = "HTTP/1.1 200 OK\r\n"
	    "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
	    "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
	    "Content-Length: 1234\r\n"
	    "Connection: close\r\n"
	    "\r\n";
	n = http_response_ok(buf, sizeof(buf), 1234, 1700000000);
	is_int(n, strlen(want), "200: length");
	ok(n > 0 && strcmp(buf, want) == 0, "200: the head");

	want = "HTTP/1.1 404 Not Found\r\n"
	    "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 10\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Not Found\n";
	n = http_response_error(buf, sizeof(buf), 404, HTTP_M_GET, 0);
	is_int(n, strlen(want), "404: length");
	ok(n > 0 && strcmp(buf, want) == 0, "404: head and body");
	n = http_response_error(buf, sizeof(buf), 404, HTTP_M_HEAD, 0);
	is_int(n, strlen(want) - 10, "404 to HEAD: no body");
	ok(n > 0 && strncmp(buf, want, (size_t)n) == 0,
	    "404 to HEAD: the same head, the body's length");

	want = "HTTP/1.1 405 Method Not Allowed\r\n"
	    "Date: Sat, 29 Feb 2020 23:59:59 GMT\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Length: 19\r\n"
	    "Allow: GET, HEAD\r\n"
	    "Connection: close\r\n"
	    "\r\n"
	    "Method Not Allowed\n";
	n = http_response_error(buf, sizeof(buf), 405, HTTP_M_OTHER,
	    1583020799);
	ok(n > 0 && strcmp(buf, want) == 0, "405: Allow");

	fits = 1;
	for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
		n = http_response_error(buf, sizeof(buf), statuses[i],
		    HTTP_M_GET, (time_t)253402300799LL);
		if (n <= 0 || (size_t)n >= sizeof(buf) ||
		    (p = strstr(buf, "\r\n\r\n")) == NULL ||
		    strchr(p + 4, '\n') != buf + n - 1 ||
		    strncmp(buf + 13, p + 4, strlen(p + 4) - 1) != 0)
			fits = 0;
	}
	ok(fits, "every error status fits in HTTP_RESPONSE_MAX in 9999");
	is_int(http_response_error(buf, sizeof(buf), 418, HTTP_M_GET, 0), -1,
	    "an unknown status");
	is_int(http_response_error(buf, sizeof(buf), 200, HTTP_M_GET, 0), -1,
	    "200 is no error");

	n = http_response_ok(buf, sizeof(buf), 5, 0);
	cut = 0;
	for (i = 0; i <= (size_t)n; i++)
		if (http_response_ok(buf, i, 5, 0) != -1)
			cut = 1;
	ok(!cut && http_response_ok(buf, (size_t)n + 1, 5, 0) == n,
	    "200: -1 for every size too small, n for n + 1");
	n = http_response_error(buf, sizeof(buf), 431, HTTP_M_GET, 0);
	cut = 0;
	for (i = 0; i <= (size_t)n; i++)
		if (http_response_error(buf, i, 431, HTTP_M_GET, 0) != -1)
			cut = 1;
	ok(!cut && http_response_error(buf, (size_t)n + 1, 431, HTTP_M_GET,
	    0) == n, "431: -1 for every size too small, n for n + 1");
}

int
main(void)
{
	test_cases();
	test_bytewise();
	test_limits();
	test_responses();
	return done();
}
