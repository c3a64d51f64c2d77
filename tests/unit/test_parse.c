/*
 * dotproxyd.conf parsing: every statement, macros, include, the built-in
 * default, error reporting as FILE:LINE:, and print_config round trips.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <net/if.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "tap.h"

#define PIN_ONE_B64	"dpLDrTVAu4A8Ags67mbNiIcSMjTqDG5xQ8Ct1z/0Me0="
#define PIN_TWO_B64	"P8TM/nRYcOLA2Z9x8w/wZWyN7dQcwdfT03aw2+aF4vM="

static const uint8_t pin_one[32] = {
	0x76, 0x92, 0xc3, 0xad, 0x35, 0x40, 0xbb, 0x80, 0x3c, 0x02, 0x0b,
	0x3a, 0xee, 0x66, 0xcd, 0x88, 0x87, 0x12, 0x32, 0x34, 0xea, 0x0c,
	0x6e, 0x71, 0x43, 0xc0, 0xad, 0xd7, 0x3f, 0xf4, 0x31, 0xed,
};
static const uint8_t pin_two[32] = {
	0x3f, 0xc4, 0xcc, 0xfe, 0x74, 0x58, 0x70, 0xe2, 0xc0, 0xd9, 0x9f,
	0x71, 0xf3, 0x0f, 0xf0, 0x65, 0x6c, 0x8d, 0xed, 0xd4, 0x1c, 0xc1,
	0xd7, 0xd3, 0xd3, 0x76, 0xb0, 0xdb, 0xe6, 0x85, 0xe2, 0xf3,
};

static char	*tmpfiles[256];
static int	 ntmpfiles;
static char	 errtext[8192];

/* A temp file holding text; removed at exit. */
static char *
write_file(const char *text)
{
	char	*path;
	int	 fd;
	size_t	 len = strlen(text);

	if ((path = strdup("/tmp/dotproxyd-test.XXXXXX")) == NULL ||
	    (fd = mkstemp(path)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	if (write(fd, text, len) != (ssize_t)len) {
		perror("write");
		exit(2);
	}
	close(fd);
	if (ntmpfiles < (int)(sizeof(tmpfiles) / sizeof(tmpfiles[0])))
		tmpfiles[ntmpfiles++] = path;
	return path;
}

static void
cleanup(void)
{
	int	i;

	for (i = 0; i < ntmpfiles; i++) {
		unlink(tmpfiles[i]);
		free(tmpfiles[i]);
	}
	ntmpfiles = 0;
}

/* parse_config() with its stderr captured into errtext. */
static struct dotproxyd_conf *
parse(const char *path, int missing_ok)
{
	struct dotproxyd_conf	*c;
	char			 errpath[] = "/tmp/dotproxyd-err.XXXXXX";
	int			 efd, saved;
	ssize_t			 n;

	if ((efd = mkstemp(errpath)) == -1) {
		perror("mkstemp");
		exit(2);
	}
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	dup2(efd, STDERR_FILENO);
	c = parse_config(path, missing_ok);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	lseek(efd, 0, SEEK_SET);
	n = read(efd, errtext, sizeof(errtext) - 1);
	errtext[n > 0 ? n : 0] = '\0';
	close(efd);
	unlink(errpath);
	return c;
}

static struct dotproxyd_conf *
parse_text(const char *text)
{
	return parse(write_file(text), 0);
}

static int
count_lines(const char *s)
{
	int	n = 0;

	for (; *s; s++)
		if (*s == '\n')
			n++;
	return n;
}

/* errtext has a line starting "path:line: " */
static int
err_at(const char *path, int line)
{
	char	want[256];
	char	*p;

	snprintf(want, sizeof(want), "%s:%d: ", path, line);
	for (p = errtext; p != NULL && *p; ) {
		if (strncmp(p, want, strlen(want)) == 0)
			return 1;
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return 0;
}

static int
addr_is(const struct sockaddr_storage *ss, const char *addr, int port)
{
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)ss;
	uint8_t				 want[16];

	if (inet_pton(AF_INET, addr, want) == 1)
		return ss->ss_family == AF_INET &&
		    memcmp(&sin->sin_addr, want, 4) == 0 &&
		    ntohs(sin->sin_port) == port;
	if (inet_pton(AF_INET6, addr, want) == 1)
		return ss->ss_family == AF_INET6 &&
		    memcmp(&sin6->sin6_addr, want, 16) == 0 &&
		    ntohs(sin6->sin6_port) == port;
	return 0;
}

static int
acl_is(const struct acl_conf *a, const char *addr, int plen)
{
	uint8_t	want[16];
	int	af = strchr(addr, ':') ? AF_INET6 : AF_INET;

	memset(want, 0, sizeof(want));
	if (inet_pton(af, addr, want) != 1)
		return 0;
	return a->af == af && a->plen == plen &&
	    memcmp(a->addr, want, af == AF_INET ? 4 : 16) == 0;
}

static int
count_listens(const struct dotproxyd_conf *c)
{
	const struct listen_conf	*l;
	int				 n = 0;

	TAILQ_FOREACH(l, &c->listens, entry)
		n++;
	return n;
}

static int
count_upstreams(const struct dotproxyd_conf *c)
{
	const struct upstream_conf	*u;
	int				 n = 0;

	TAILQ_FOREACH(u, &c->upstreams, entry)
		n++;
	return n;
}

static int
count_acls(const struct dotproxyd_conf *c)
{
	const struct acl_conf	*a;
	int			 n = 0;

	TAILQ_FOREACH(a, &c->acls, entry)
		n++;
	return n;
}

static const char full_conf[] =
    "# every statement\n"
    "listen on 127.0.0.1\n"
    "listen on 192.0.2.1 port 5353\n"
    "listen on ::1 port 5300\n"
    "listen on 2001:db8::53\n"
    "upstream 1.1.1.1 name \"cloudflare-dns.com\"\n"
    "upstream 9.9.9.9 port 8853 name \"dns.quad9.net\" "
    "pin sha256 \"" PIN_ONE_B64 "\" pin sha256 \"" PIN_TWO_B64 "\"\n"
    "upstream 2620:fe::fe name \"dns.quad9.net\" pin sha256 \""
    PIN_ONE_B64 "\"\n"
    "tls ca \"/etc/ssl/my ca.pem\"\n"
    "tls connections 4\n"
    "tls idle timeout 20\n"
    "allow from 192.0.2.77/24\n"
    "allow from 2001:db8::/32\n"
    "allow from 10.1.2.3\n"
    "user _dnsproxy\n"
    "chroot \"/var/lib/dotproxyd\"\n"
    "cache size 5000\n"
    "cache serve-stale yes max-age 3600\n"
    "cache prefetch no\n"
    "ratelimit 100 per second burst 300\n"
    "edns udp size 4096\n"
    "control socket \"/run/dp.sock\"\n"
    "audit log \"/var/log/dotproxyd-audit.log\"\n"
    "log queries anonymize\n"
    "dnstap socket \"/run/dotproxyd/dnstap.sock\"\n"
    "dnstap anonymize\n";

static void
test_every_statement(void)
{
	struct dotproxyd_conf		*c;
	const struct listen_conf	*l;
	const struct upstream_conf	*u;
	const struct acl_conf		*a;

	c = parse_text(full_conf);
	ok(c != NULL, "full: parses");
	if (c == NULL) {
		diag("%s", errtext);
		return;
	}
	is_int(errtext[0], '\0', "full: nothing on stderr");
	is_int(count_listens(c), 4, "full: 4 listens");
	l = TAILQ_FIRST(&c->listens);
	ok(addr_is(&l->ss, "127.0.0.1", 53), "full: listen without port is 53");
	l = TAILQ_NEXT(l, entry);
	ok(addr_is(&l->ss, "192.0.2.1", 5353), "full: listen with port");
	l = TAILQ_NEXT(l, entry);
	ok(addr_is(&l->ss, "::1", 5300), "full: IPv6 listen with port");
	l = TAILQ_NEXT(l, entry);
	ok(addr_is(&l->ss, "2001:db8::53", 53), "full: IPv6 listen");

	is_int(count_upstreams(c), 3, "full: 3 upstreams");
	u = TAILQ_FIRST(&c->upstreams);
	ok(addr_is(&u->ss, "1.1.1.1", 853), "full: upstream default port 853");
	ok(strcmp(u->name, "cloudflare-dns.com") == 0, "full: upstream name");
	is_int(u->npins, 0, "full: no pins");
	u = TAILQ_NEXT(u, entry);
	ok(addr_is(&u->ss, "9.9.9.9", 8853), "full: upstream with port");
	ok(strcmp(u->name, "dns.quad9.net") == 0, "full: second name");
	is_int(u->npins, 2, "full: two pins");
	is_mem(u->pins[0], pin_one, 32, "full: first pin decoded");
	is_mem(u->pins[1], pin_two, 32, "full: second pin decoded");
	u = TAILQ_NEXT(u, entry);
	ok(addr_is(&u->ss, "2620:fe::fe", 853), "full: IPv6 upstream");
	is_int(u->npins, 1, "full: one pin");

	ok(strcmp(c->tls_ca, "/etc/ssl/my ca.pem") == 0, "full: tls ca");
	is_int(c->tls_connections, 4, "full: tls connections");
	is_int(c->tls_idle, 20, "full: tls idle timeout");
	is_int(count_acls(c), 3, "full: 3 allow");
	a = TAILQ_FIRST(&c->acls);
	ok(acl_is(a, "192.0.2.0", 24), "full: allow IPv4 prefix, host bits 0");
	a = TAILQ_NEXT(a, entry);
	ok(acl_is(a, "2001:db8::", 32), "full: allow IPv6 prefix");
	a = TAILQ_NEXT(a, entry);
	ok(acl_is(a, "10.1.2.3", 32), "full: allow host");
	ok(strcmp(c->user, "_dnsproxy") == 0, "full: user");
	ok(strcmp(c->chroot, "/var/lib/dotproxyd") == 0, "full: chroot");
	is_int(c->cache_size, 5000, "full: cache size");
	ok(c->serve_stale == 1 && c->stale_max == 3600,
	    "full: cache serve-stale yes max-age 3600");
	ok(c->prefetch == 0, "full: cache prefetch no");
	is_int(c->ratelimit, 100, "full: ratelimit");
	is_int(c->ratelimit_burst, 300, "full: burst");
	is_int(c->edns_udp_size, 4096, "full: edns udp size");
	ok(strcmp(c->control_path, "/run/dp.sock") == 0, "full: control socket");
	ok(strcmp(c->audit_log, "/var/log/dotproxyd-audit.log") == 0,
	    "full: audit log");
	is_int(c->log_queries, 2, "full: log queries anonymize");
	ok(strcmp(c->dnstap_path, "/run/dotproxyd/dnstap.sock") == 0,
	    "full: dnstap socket");
	is_int(c->dnstap_anonymize, 1, "full: dnstap anonymize");
	config_free(c);

	c = parse_text("cache off\nlog queries\nratelimit 50 per second\n");
	ok(c != NULL, "small: parses");
	if (c != NULL) {
		is_int(c->cache_size, 0, "small: cache off");
		is_int(c->log_queries, 1, "small: log queries");
		is_int(c->ratelimit, 50, "small: ratelimit");
		is_int(c->ratelimit_burst, 100, "small: burst defaults to 2x");
		is_int(count_listens(c), 2, "small: default listens fill in");
		is_int(count_upstreams(c), 3, "small: default upstreams");
		is_int(count_acls(c), 2, "small: default acl");
		ok(strcmp(c->user, DOTPROXYD_USER) == 0, "small: default user");
		ok(strcmp(c->chroot, DOTPROXYD_CHROOT) == 0,
		    "small: default chroot");
		ok(strcmp(c->tls_ca, DOTPROXYD_CA) == 0, "small: default ca");
		is_int(c->tls_connections, DEFAULT_TLS_CONNS,
		    "small: default tls connections");
		is_int(c->tls_idle, DEFAULT_TLS_IDLE,
		    "small: default tls idle timeout");
		ok(c->serve_stale == 0 && c->stale_max == DEFAULT_STALE_MAX,
		    "small: serve-stale off by default");
		ok(strcmp(c->control_path, DOTPROXYD_SOCKET) == 0,
		    "small: default control socket");
		is_int(c->audit_log[0], '\0', "small: no audit log by default");
		ok(c->dnstap_path[0] == '\0' && c->dnstap_anonymize == 0,
		    "small: no dnstap by default");
		is_int(c->edns_udp_size, 1232,
		    "small: edns udp size 1232 by default");
		config_free(c);
	}
}

/* cache serve-stale yes | no [max-age NUMBER] */
static void
test_serve_stale(void)
{
	struct dotproxyd_conf	*c;
	char			 text[128];

	c = parse_text("cache serve-stale yes\n");
	ok(c != NULL && c->serve_stale == 1 &&
	    c->stale_max == DEFAULT_STALE_MAX,
	    "serve-stale yes: on, default max-age");
	config_free(c);
	c = parse_text("cache serve-stale yes max-age 1\n");
	ok(c != NULL && c->serve_stale == 1 && c->stale_max == 1,
	    "serve-stale max-age 1: the smallest");
	config_free(c);
	snprintf(text, sizeof(text), "cache serve-stale yes max-age %d\n",
	    MAX_STALE_MAX);
	c = parse_text(text);
	ok(c != NULL && c->stale_max == MAX_STALE_MAX,
	    "serve-stale max-age %d: the largest", MAX_STALE_MAX);
	config_free(c);
	c = parse_text("cache serve-stale yes max-age 60\n"
	    "cache serve-stale no\n");
	ok(c != NULL && c->serve_stale == 0 &&
	    c->stale_max == DEFAULT_STALE_MAX,
	    "serve-stale no: off, and the last statement counts whole");
	config_free(c);
	c = parse_text("cache off\ncache serve-stale yes\n");
	ok(c != NULL && c->cache_size == 0 && c->serve_stale == 1,
	    "serve-stale with cache off: accepted");
	config_free(c);
	c = parse_text("s = \"serve-stale yes max-age 90\"\ncache $s\n");
	ok(c != NULL && c->serve_stale == 1 && c->stale_max == 90,
	    "serve-stale: the hyphenated keywords from a macro");
	if (c == NULL)
		diag("stderr: %s", errtext);
	config_free(c);
	c = parse_text("cache serve-stale yes max-age 604801\n");
	ok(c == NULL && strstr(errtext, "max-age 604801 out of range "
	    "1-604800") != NULL, "serve-stale max-age 604801: the error "
	    "says the range");
	if (c != NULL || strstr(errtext, "out of range") == NULL)
		diag("stderr: %s", errtext);
	config_free(c);
}

/* cache prefetch yes | no: on by default */
static void
test_prefetch(void)
{
	struct dotproxyd_conf	*c;

	c = parse_text("");
	ok(c != NULL && c->prefetch == 1, "prefetch: on by default");
	config_free(c);
	c = parse_text("cache prefetch no\n");
	ok(c != NULL && c->prefetch == 0, "prefetch no: off");
	config_free(c);
	c = parse_text("cache prefetch no\ncache prefetch yes\n");
	ok(c != NULL && c->prefetch == 1, "prefetch yes: on, the last counts");
	config_free(c);
	c = parse_text("cache prefetch\n");
	ok(c == NULL, "prefetch without yes or no: an error");
	config_free(c);
}

/* A statement with a number: the smallest and largest values it takes. */
static void
test_bounds(void)
{
	struct dotproxyd_conf	*c;
	char			 text[128];

	c = parse_text("tls idle timeout 1\n");
	ok(c != NULL && c->tls_idle == 1, "tls idle timeout 1: the smallest");
	config_free(c);
	snprintf(text, sizeof(text), "tls idle timeout %d\n", MAX_TLS_IDLE);
	c = parse_text(text);
	ok(c != NULL && c->tls_idle == MAX_TLS_IDLE,
	    "tls idle timeout %d: the largest", MAX_TLS_IDLE);
	config_free(c);
	c = parse_text("tls idle timeout 30\ntls idle timeout 9\n");
	ok(c != NULL && c->tls_idle == 9,
	    "tls idle timeout: the last one counts");
	config_free(c);
	c = parse_text("tls idle timeout 0\n");
	ok(c == NULL && strstr(errtext, "tls idle timeout 0 out of range "
	    "1-3600") != NULL, "tls idle timeout 0: the error says the range");
	if (c != NULL || strstr(errtext, "out of range") == NULL)
		diag("stderr: %s", errtext);
	config_free(c);
	c = parse_text("edns udp size 512\n");
	ok(c != NULL && c->edns_udp_size == 512,
	    "edns udp size 512: the smallest");
	config_free(c);
	c = parse_text("edns udp size 4096\nedns udp size 1400\n");
	ok(c != NULL && c->edns_udp_size == 1400,
	    "edns udp size: the last one counts");
	config_free(c);
	c = parse_text("edns udp size 4097\n");
	ok(c == NULL && strstr(errtext, "edns udp size 4097 out of range "
	    "512-4096") != NULL, "edns udp size 4097: the error says the range");
	config_free(c);
	c = parse_text("edns udp size 511\n");
	ok(c == NULL && strstr(errtext, "edns udp size 511 out of range") !=
	    NULL, "edns udp size 511: out of range");
	config_free(c);
	c = parse_text("edns udp size\n");
	ok(c == NULL, "edns udp size without a number: an error");
	config_free(c);
	test_serve_stale();
	test_prefetch();
}

static void
test_macros_include_comments(void)
{
	struct dotproxyd_conf		*c;
	const struct upstream_conf	*u;
	char				 text[1024], *inc;

	c = parse_text(
	    "q9 = \"9.9.9.9\"\n"
	    "q9name = \"dns.quad9.net\"\n"
	    "lan = \"192.0.2.0/24\"\n"
	    "conns = \"8\"\n"
	    "upstream $q9 name $q9name\n"
	    "allow from $lan\n"
	    "tls connections $conns\n");
	ok(c != NULL, "macro: parses");
	if (c != NULL) {
		u = TAILQ_FIRST(&c->upstreams);
		ok(u && addr_is(&u->ss, "9.9.9.9", 853) &&
		    strcmp(u->name, "dns.quad9.net") == 0,
		    "macro: upstream from macros");
		ok(acl_is(TAILQ_FIRST(&c->acls), "192.0.2.0", 24),
		    "macro: allow from macro");
		is_int(c->tls_connections, 8, "macro: number from macro");
		config_free(c);
	} else
		diag("%s", errtext);

	c = parse_text("c = 'c = \"4\"'\n$c\ntls connections $c\n");
	ok(c != NULL && c->tls_connections == 4,
	    "macro: a macro whose value redefines it");
	if (c == NULL)
		diag("%s", errtext);
	config_free(c);

	inc = write_file("upstream 149.112.112.112 name \"dns.quad9.net\"\n"
	    "# a comment in the included file\n"
	    "tls connections 3\n");
	snprintf(text, sizeof(text),
	    "listen on 127.0.0.1 port 5353\n"
	    "include \"%s\"\n"
	    "cache size 77\n", inc);
	c = parse_text(text);
	ok(c != NULL, "include: parses");
	if (c != NULL) {
		u = TAILQ_FIRST(&c->upstreams);
		ok(u && addr_is(&u->ss, "149.112.112.112", 853),
		    "include: upstream from the included file");
		is_int(c->tls_connections, 3, "include: statement after comment");
		is_int(c->cache_size, 77, "include: statement after include");
		ok(addr_is(&TAILQ_FIRST(&c->listens)->ss, "127.0.0.1", 5353),
		    "include: statement before include");
		config_free(c);
	} else
		diag("%s", errtext);

	/* error in the included file reports that file and its line */
	inc = write_file("tls connections 2\n\ncache size 0\n");
	snprintf(text, sizeof(text), "# top\n\ninclude \"%s\"\nuser \"x\"\n",
	    inc);
	c = parse_text(text);
	ok(c == NULL, "include: error in included file fails");
	if (!ok(err_at(inc, 3), "include: reported at the included file's line"))
		diag("stderr: %s", errtext);
	config_free(c);

	snprintf(text, sizeof(text), "include \"/nonexistent/dotproxyd.conf\"\n"
	    "tls connections 2\n");
	c = parse_text(text);
	ok(c == NULL, "include: missing file fails");
	config_free(c);

	c = parse_text(
	    "# a comment line\n"
	    "   # an indented comment\n"
	    "\n"
	    "tls connections 5 # trailing comment\n"
	    "\t\n"
	    "user \"nobody\"\t# tab before the comment\n");
	ok(c != NULL, "comments: parse");
	if (c != NULL) {
		is_int(c->tls_connections, 5, "comments: statement before #");
		ok(strcmp(c->user, "nobody") == 0, "comments: after tab");
		config_free(c);
	} else
		diag("%s", errtext);

	c = parse_text("tls connections 6\nuser \"nobody\"");
	ok(c != NULL, "no newline at the end of the file: parses");
	if (c != NULL) {
		ok(strcmp(c->user, "nobody") == 0,
		    "no newline at the end: last statement applied");
		config_free(c);
	}

	c = parse_text("tls \\\n connections 7\n");
	ok(c != NULL && c->tls_connections == 7, "backslash-newline joins");
	config_free(c);
}

static void
test_default(void)
{
	struct dotproxyd_conf		*c;
	const struct listen_conf	*l;
	const struct upstream_conf	*u;
	const struct acl_conf		*a;

	c = parse("/nonexistent/dotproxyd.conf", 1);
	ok(c != NULL, "default: missing file with missing_ok");
	if (c == NULL)
		return;
	is_int(errtext[0], '\0', "default: nothing on stderr");
	is_int(count_listens(c), 2, "default: two listens");
	l = TAILQ_FIRST(&c->listens);
	ok(addr_is(&l->ss, "127.0.0.1", 53), "default: 127.0.0.1 port 53");
	l = TAILQ_NEXT(l, entry);
	ok(l && addr_is(&l->ss, "::1", 53), "default: ::1 port 53");
	is_int(count_upstreams(c), 3, "default: three upstreams");
	u = TAILQ_FIRST(&c->upstreams);
	ok(addr_is(&u->ss, "1.1.1.1", 853) &&
	    strcmp(u->name, "cloudflare-dns.com") == 0, "default: 1.1.1.1");
	u = TAILQ_NEXT(u, entry);
	ok(addr_is(&u->ss, "1.0.0.1", 853) &&
	    strcmp(u->name, "cloudflare-dns.com") == 0, "default: 1.0.0.1");
	u = TAILQ_NEXT(u, entry);
	ok(addr_is(&u->ss, "9.9.9.9", 853) &&
	    strcmp(u->name, "dns.quad9.net") == 0, "default: 9.9.9.9");
	is_int(count_acls(c), 2, "default: two acl entries");
	a = TAILQ_FIRST(&c->acls);
	ok(acl_is(a, "127.0.0.0", 8), "default: allow 127.0.0.0/8");
	a = TAILQ_NEXT(a, entry);
	ok(acl_is(a, "::1", 128), "default: allow ::1/128");
	ok(c->cache_size > 0, "default: a cache");
	ok(strcmp(c->tls_ca, DOTPROXYD_CA) == 0, "default: system CA bundle");
	config_free(c);

	c = parse("/nonexistent/dotproxyd.conf", 0);
	ok(c == NULL, "missing file without missing_ok fails");
	ok(strstr(errtext, "/nonexistent/dotproxyd.conf") != NULL,
	    "missing file: named on stderr");
}

struct bad {
	const char	*text;
	int		 line;
	const char	*what;
};

/* Cases that fail because of a known bug in src/, reported as TODO. */
static const char *
known_bug(const char *what)
{
	(void)what;
	return NULL;
}

/* Each config is rejected, the error reported at its line. */
static void
check_bad(const struct bad *bad, size_t n)
{
	struct dotproxyd_conf	*c;
	char			*path;
	size_t			 i;

	for (i = 0; i < n; i++) {
		path = write_file(bad[i].text);
		if (known_bug(bad[i].what) != NULL)
			todo_start(known_bug(bad[i].what));
		c = parse(path, 0);
		ok(c == NULL, "error: %s: rejected", bad[i].what);
		ok(err_at(path, bad[i].line), "error: %s: reported at line %d",
		    bad[i].what, bad[i].line);
		todo_end();
		if (c != NULL || !err_at(path, bad[i].line))
			diag("stderr: %s", errtext);
		config_free(c);
	}
}

static void
test_errors(void)
{
	static const struct bad	 bad[] = {
		{ "# ok\nlisten on 127.0.0.1\nfrobnicate 1\n", 3,
		    "unknown statement" },
		{ "\n\nupstream 9.9.9.9\n", 3, "upstream without name" },
		{ "upstream 9.9.9.9 port 853\n", 1,
		    "upstream with port without name" },
		{ "# x\nupstream 9.9.9.9 pin sha256 \"" PIN_ONE_B64 "\"\n",
		    2, "upstream with a pin but no name" },
		{ "upstream 9.9.9.9 name \"\"\n", 1, "empty upstream name" },
		{ "upstream dns.quad9.net name \"dns.quad9.net\"\n", 1,
		    "upstream by host name" },
		{ "tls connections 2\nupstream 9.9.9.9 name \"q\" "
		    "pin sha256 \"bm90IGEgaGFzaA==\"\n", 2, "short pin" },
		{ "upstream 9.9.9.9 name \"q\" pin sha256 \"!!!!\"\n", 1,
		    "bad base64 pin" },
		{ "upstream 9.9.9.9 name \"q\" pin sha256 "
		    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"\n", 1,
		    "31-byte pin" },
		{ "\nlisten on 127.0.0.1 port 0\n", 2, "port 0" },
		{ "\n\n\nlisten on 127.0.0.1 port 70000\n", 4, "port 70000" },
		{ "upstream 9.9.9.9 port 0 name \"q\"\n", 1, "upstream port 0" },
		{ "listen on 300.1.1.1\n", 1, "bad listen address" },
		{ "tls connections 0\n", 1, "tls connections 0" },
		{ "tls connections 65\n", 1, "tls connections 65" },
		{ "tls idle timeout 0\n", 1, "tls idle timeout 0" },
		{ "# x\ntls idle timeout 3601\n", 2, "tls idle timeout 3601" },
		{ "tls idle timeout -5\n", 1, "tls idle timeout -5" },
		{ "tls idle timeout\n", 1, "tls idle timeout, no number" },
		{ "cache serve-stale\n", 1, "serve-stale without yes or no" },
		{ "\ncache serve-stale maybe\n", 2, "serve-stale maybe" },
		{ "cache serve-stale yes max-age 0\n", 1,
		    "serve-stale max-age 0" },
		{ "cache serve-stale yes max-age -1\n", 1,
		    "serve-stale max-age -1" },
		{ "cache serve-stale yes max-age 604801\n", 1,
		    "serve-stale max-age 604801" },
		{ "cache serve-stale yes max-age\n", 1,
		    "serve-stale max-age without a number" },
		{ "cache serve-stale yes max 60\n", 1, "serve-stale max" },
		{ "cache serve_stale yes\n", 1, "serve_stale" },
		{ "cache serve-stale 1\n", 1, "serve-stale 1" },
		{ "cache stale yes\n", 1, "cache stale" },
		{ "tls idle 10\n", 1, "tls idle without timeout" },
		{ "tls idle timeout ten\n", 1, "tls idle timeout ten" },
		{ "user \"u\"\nchroot \"var/empty\"\n", 2, "relative chroot" },
		{ "allow from 10.0.0.0/33\n", 1, "allow /33" },
		{ "allow from example.com\n", 1, "allow from a name" },
		{ "cache size 0\n", 1, "cache size 0" },
		{ "ratelimit 0 per second\n", 1, "ratelimit 0" },
		{ "ratelimit 10 per second burst 5\n", 1, "burst below rate" },
		{ "ratelimit 10 per minute\n", 1, "ratelimit per minute" },
		{ "audit log \"audit.log\"\n", 1, "relative audit log" },
		{ "tls connections $nope\n", 1, "undefined macro" },
		{ "user \"abc\n", 1, "unterminated string" },
		{ "tls connections 99999999999999999999\n", 1,
		    "number too big" },
		{ "bad-name = \"x\"\n", 1, "macro name with '-'" },
		/* found by fuzz_config: read after the value was freed */
		{ "x = \"x = w\001\"\n$x\n", 2,
		    "macro redefining itself, then junk" },
		/* found by fuzz_config: expanded itself without end */
		{ "a = \"1 $a\"\ntls connections $a\n", 2,
		    "macro using itself" },
		{ "log queries loudly\n", 1, "log queries junk" },
		{ "dnstap socket \"dnstap.sock\"\n", 1,
		    "relative dnstap socket" },
		{ "dnstap socket\n", 1, "dnstap socket without a path" },
		{ "dnstap \"/run/x.sock\"\n", 1, "dnstap without socket" },
		{ "dnstap socket \"/run/"
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		    ".sock\"\n", 1, "dnstap socket path too long" },
		{ "listen 127.0.0.1\n", 1, "listen without on" },
	};

	check_bad(bad, sizeof(bad) / sizeof(bad[0]));
}

static void
test_many_errors(void)
{
	struct dotproxyd_conf	*c;
	char			*path;

	path = write_file(
	    "listen on 127.0.0.1 port 0\n"		/* 1 */
	    "tls connections 3\n"			/* 2 ok */
	    "upstream 9.9.9.9\n"			/* 3 */
	    "# comment\n"				/* 4 */
	    "tls connections 0\n"			/* 5 */
	    "cache size 100\n"				/* 6 ok */
	    "chroot \"relative\"\n"			/* 7 */
	    "frobnicate\n"				/* 8 */
	    "user \"ok\"\n");				/* 9 ok */
	c = parse(path, 0);
	ok(c == NULL, "many errors: rejected");
	is_int(count_lines(errtext), 5, "many errors: five lines on stderr");
	ok(err_at(path, 1) && err_at(path, 3) && err_at(path, 5) &&
	    err_at(path, 7) && err_at(path, 8),
	    "many errors: lines 1, 3, 5, 7, 8 reported");
	if (count_lines(errtext) != 5)
		diag("stderr: %s", errtext);
	config_free(c);

	/* after a failed parse, the next one starts clean */
	c = parse_text("tls connections 9\n");
	ok(c != NULL && c->tls_connections == 9,
	    "a good parse after a failed one");
	config_free(c);
}

/* print_config() into a string. */
static char *
print_to_string(const struct dotproxyd_conf *c)
{
	char	*text = NULL;
	size_t	 len = 0;
	FILE	*f;

	if ((f = open_memstream(&text, &len)) == NULL)
		exit(2);
	print_config(f, c);
	fclose(f);
	return text;
}

static void
test_round_trip(void)
{
	struct dotproxyd_conf	*c, *c2;
	char			*t1, *t2;
	char			 path[] = "/tmp/dotproxyd-print.XXXXXX";
	int			 fd;
	FILE			*f;

	c = parse_text(full_conf);
	ok(c != NULL, "round trip: parse");
	if (c == NULL)
		return;
	if ((fd = mkstemp(path)) == -1 || (f = fdopen(fd, "w")) == NULL)
		exit(2);
	print_config(f, c);
	fclose(f);
	t1 = print_to_string(c);
	c2 = parse(path, 0);
	ok(c2 != NULL, "round trip: printed config parses");
	if (c2 == NULL)
		diag("%s\n%s", t1, errtext);
	t2 = c2 ? print_to_string(c2) : strdup("");
	ok(strcmp(t1, t2) == 0, "round trip: printed twice, identical");
	if (strcmp(t1, t2) != 0)
		diag("first:\n%s\nsecond:\n%s", t1, t2);
	ok(strstr(t1, "pin sha256 \"" PIN_TWO_B64 "\"") != NULL,
	    "round trip: pins printed");
	ok(strstr(t1, "listen on ::1 port 5300\n") != NULL,
	    "round trip: IPv6 listen printed with port");
	ok(strstr(t1, "log queries anonymize\n") != NULL,
	    "round trip: log queries anonymize printed");
	ok(strstr(t1, "tls idle timeout 20\n") != NULL,
	    "round trip: tls idle timeout printed");
	ok(strstr(t1, "cache serve-stale yes max-age 3600\n") != NULL,
	    "round trip: cache serve-stale printed");
	ok(strstr(t1, "edns udp size 4096\n") != NULL,
	    "round trip: edns udp size printed");
	ok(strstr(t1, "dnstap socket \"/run/dotproxyd/dnstap.sock\"\n"
	    "dnstap anonymize\n") != NULL, "round trip: dnstap printed");
	unlink(path);
	free(t1);
	free(t2);
	config_free(c);
	config_free(c2);

	/* the built-in default prints and re-parses too */
	c = parse("/nonexistent/dotproxyd.conf", 1);
	t1 = print_to_string(c);
	c2 = parse_text(t1);
	t2 = c2 ? print_to_string(c2) : strdup("");
	ok(c2 != NULL && strcmp(t1, t2) == 0,
	    "round trip: built-in default");
	ok(strstr(t1, "tls idle timeout 8\n") != NULL,
	    "round trip: the default tls idle timeout is printed");
	ok(strstr(t1, "cache serve-stale no\n") != NULL,
	    "round trip: serve-stale off is printed");
	ok(strstr(t1, "cache prefetch yes\n") != NULL,
	    "round trip: prefetch on is printed");
	ok(strstr(t1, "edns udp size 1232\n") != NULL,
	    "round trip: the default edns udp size is printed");
	free(t1);
	free(t2);
	config_free(c);
	config_free(c2);

	/* awkward strings survive quoting */
	c = parse_text("user \"a\\\"b\"\ncontrol socket \"/run/x\\\\y.sock\"\n"
	    "cache off\n");
	ok(c != NULL && strcmp(c->user, "a\"b") == 0 &&
	    strcmp(c->control_path, "/run/x\\y.sock") == 0,
	    "quoting: escapes parsed");
	t1 = c ? print_to_string(c) : strdup("");
	c2 = parse_text(t1);
	t2 = c2 ? print_to_string(c2) : strdup("");
	ok(c2 != NULL && strcmp(t1, t2) == 0, "quoting: round trip");
	free(t1);
	free(t2);
	config_free(c);
	config_free(c2);

	/* a link-local listen address keeps its interface */
	if (if_nametoindex("lo") != 0) {
		const struct sockaddr_in6 *s1, *s2;

		c = parse_text("listen on fe80::1%lo\n");
		ok(c != NULL, "scope: fe80::1%%lo parses");
		if (c == NULL)
			return;
		s1 = (const struct sockaddr_in6 *)
		    &TAILQ_FIRST(&c->listens)->ss;
		ok(s1->sin6_scope_id == if_nametoindex("lo"),
		    "scope: scope id set");
		t1 = print_to_string(c);
		c2 = parse_text(t1);
		s2 = c2 ? (const struct sockaddr_in6 *)
		    &TAILQ_FIRST(&c2->listens)->ss : NULL;
		ok(s2 != NULL && s2->sin6_scope_id == s1->sin6_scope_id,
		    "scope: scope id survives print and re-parse");
		free(t1);
		config_free(c);
		config_free(c2);
	}
}

/* metrics listen on: its default port, its printing, its errors. */
static void
test_metrics(void)
{
	static const struct bad	 bad[] = {
		{ "metrics listen on 300.1.1.1\n", 1, "bad metrics address" },
		{ "metrics listen on localhost\n", 1, "metrics by host name" },
		{ "\nmetrics listen on 127.0.0.1 port 0\n", 2,
		    "metrics port 0" },
		{ "metrics listen on ::1 port 65536\n", 1,
		    "metrics port 65536" },
		{ "metrics listen on 127.0.0.1\n"
		    "metrics listen on ::1\n", 2, "metrics given twice" },
		{ "metrics on 127.0.0.1\n", 1, "metrics without listen" },
		{ "metrics listen on\n", 1, "metrics without address" },
	};
	static const struct {
		const char	*text;
		const char	*addr;		/* NULL: none */
		int		 port;
		const char	*what;
	} good[] = {
		{ "tls connections 3\n", NULL, 0, "none unless configured" },
		{ "metrics listen on 127.0.0.1\n", "127.0.0.1", 9153,
		    "port 9153 by default" },
		{ "metrics listen on ::1 port 9999\n", "::1", 9999,
		    "IPv6 with a port" },
	};
	struct dotproxyd_conf	*c, *c2;
	char			*t1, *t2;
	size_t			 i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		c = parse_text(good[i].text);
		ok(c != NULL && (good[i].addr == NULL ?
		    c->metrics.ss_family == AF_UNSPEC :
		    addr_is(&c->metrics, good[i].addr, good[i].port)),
		    "metrics: %s", good[i].what);
		t1 = c ? print_to_string(c) : strdup("");
		c2 = parse_text(t1);
		t2 = c2 ? print_to_string(c2) : strdup("");
		ok(good[i].addr == NULL ? strstr(t1, "metrics") == NULL :
		    strstr(t1, good[i].text) != NULL,
		    "metrics: %s: printed as written", good[i].what);
		ok(c2 != NULL && strcmp(t1, t2) == 0, "metrics: %s: round trip",
		    good[i].what);
		free(t1);
		free(t2);
		config_free(c);
		config_free(c2);
	}
	check_bad(bad, sizeof(bad) / sizeof(bad[0]));
}

int
main(void)
{
	alarm(60);	/* a parser that loops fails the test */
	test_every_statement();
	test_bounds();
	test_macros_include_comments();
	test_default();
	test_errors();
	test_many_errors();
	test_round_trip();
	test_metrics();
	cleanup();
	return done();
}
