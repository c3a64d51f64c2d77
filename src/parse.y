/*
 * dotproxyd.conf(5) grammar: statements one per line, macros, include,
 * every error reported as file:line: message.
 */
%{
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pwd.h>
#include <resolv.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dns.h"
#include "dotproxyd.h"
#include "log.h"

#define MAX_INCLUDE_DEPTH	8
#define MAX_WORD		8192

struct file {
	TAILQ_ENTRY(file)	 entry;
	FILE			*stream;
	char			*name;
	int			 lineno;
	int			 errors;
};
static TAILQ_HEAD(files_head, file) files = TAILQ_HEAD_INITIALIZER(files);
static struct file		*file, *topfile;

struct sym {
	TAILQ_ENTRY(sym)	 entry;
	char			*name;
	char			*value;
};
static TAILQ_HEAD(, sym)	 symhead = TAILQ_HEAD_INITIALIZER(symhead);

static struct dotproxyd_conf	*conf;
static struct upstream_conf	*cur_upstream;
static int			 errors;
static int			 errors_to_log;

int		 yyparse(void);
static int	 yylex(void);
static int	 yyerror(const char *, ...)
		    __attribute__((__format__ (printf, 1, 2)));
static struct file *pushfile(const char *);
static int	 popfile(void);
static int	 lungetc(int);
static int	 symset(const char *, const char *);
static char	*symget(const char *);
static int	 add_pin(struct upstream_conf *, const char *);
static int	 copy_string(char *, size_t, const char *, const char *);

typedef struct {
	union {
		long long	 number;
		char		*string;
	} v;
	int lineno;
} YYSTYPE;
#define YYSTYPE_IS_DECLARED 1

%}

%token	ALLOW ANONYMIZE AUDIT BURST CA CACHE CHROOT CONNECTIONS CONTROL
%token	DNSTAP EDNS FROM IDLE INCLUDE LISTEN LOG MAXAGE NAME NO OFF ON PER PIN
%token	PORT PREFETCH QUERIES RATELIMIT SECOND SERVESTALE SHA256 SIZE SOCKET
%token	TIMEOUT TLS
%token	UDP UPSTREAM USER YES ERROR
%token	METRICS
%token	<v.string>	STRING
%token	<v.number>	NUMBER
%type	<v.number>	port burst anonymize yesno maxage
%type	<v.string>	string
%destructor	{ free($$); } <v.string>

%%

grammar		: /* empty */
		| grammar '\n'
		| grammar include '\n'
		| grammar varset '\n'
		| grammar main '\n'
		| grammar error '\n'		{ yyerrok; }
		;

include		: INCLUDE STRING {
			struct file *nfile;

			if ((nfile = pushfile($2)) == NULL) {
				yyerror("failed to include file %s", $2);
				free($2);
				YYERROR;
			}
			free($2);
			file = nfile;
			lungetc('\n');
		}
		;

string		: string STRING {
			if (asprintf(&$$, "%s %s", $1, $2) == -1)
				fatal("string: asprintf");
			free($1);
			free($2);
		}
		| STRING
		;

varset		: STRING '=' string {
			char *s;

			for (s = $1; *s; s++)
				if (!isalnum((unsigned char)*s) && *s != '_') {
					yyerror("macro name may only contain "
					    "letters, digits and '_'");
					free($1);
					free($3);
					YYERROR;
				}
			if (symset($1, $3) == -1)
				fatal("cannot store variable");
			free($1);
			free($3);
		}
		;

port		: /* empty */		{ $$ = 0; }
		| PORT NUMBER {
			if ($2 < 1 || $2 > 65535) {
				yyerror("port %lld out of range 1-65535", $2);
				YYERROR;
			}
			$$ = $2;
		}
		;

burst		: /* empty */		{ $$ = 0; }
		| BURST NUMBER {
			if ($2 < 1 || $2 > MAX_RATELIMIT) {
				yyerror("burst %lld out of range 1-%d", $2,
				    MAX_RATELIMIT);
				YYERROR;
			}
			$$ = $2;
		}
		;

anonymize	: /* empty */		{ $$ = 1; }
		| ANONYMIZE		{ $$ = 2; }
		;

yesno		: YES			{ $$ = 1; }
		| NO			{ $$ = 0; }
		;

maxage		: /* empty */		{ $$ = 0; }
		| MAXAGE NUMBER {
			if ($2 < 1 || $2 > MAX_STALE_MAX) {
				yyerror("max-age %lld out of range 1-%d", $2,
				    MAX_STALE_MAX);
				YYERROR;
			}
			$$ = $2;
		}
		;

main		: LISTEN ON STRING port {
			struct listen_conf *l;

			if ((l = calloc(1, sizeof(*l))) == NULL)
				fatal("calloc");
			if (parse_address($3, $4 ? (int)$4 :
			    DEFAULT_DNS_PORT, &l->ss) == -1) {
				yyerror("invalid listen address %s", $3);
				free(l);
				free($3);
				YYERROR;
			}
			free($3);
			TAILQ_INSERT_TAIL(&conf->listens, l, entry);
		}
		| UPSTREAM STRING port NAME STRING {
			struct upstream_conf *u;

			if ((u = calloc(1, sizeof(*u))) == NULL)
				fatal("calloc");
			if (parse_address($2, $3 ? (int)$3 :
			    DEFAULT_DOT_PORT, &u->ss) == -1) {
				yyerror("invalid upstream address %s "
				    "(an IP address is required)", $2);
				free(u);
				YYERROR;	/* $2, $5: freed as discarded */
			}
			free($2);
			$2 = NULL;	/* the rule is still on the stack */
			if (copy_string(u->name, sizeof(u->name), $5,
			    "upstream name") == -1 || u->name[0] == '\0') {
				if (u->name[0] == '\0')
					yyerror("upstream name is empty");
				free(u);
				YYERROR;
			}
			free($5);
			$5 = NULL;
			TAILQ_INSERT_TAIL(&conf->upstreams, u, entry);
			cur_upstream = u;
		} pins
		| UPSTREAM STRING port { cur_upstream = NULL; } pins {
			yyerror("upstream %s needs an authentication name: "
			    "upstream ADDRESS name \"NAME\"", $2);
			free($2);
			YYERROR;
		}
		| TLS CA STRING {
			if (copy_string(conf->tls_ca, sizeof(conf->tls_ca),
			    $3, "tls ca") == -1) {
				free($3);
				YYERROR;
			}
			free($3);
		}
		| TLS CONNECTIONS NUMBER {
			if ($3 < 1 || $3 > MAX_TLS_CONNS) {
				yyerror("tls connections %lld out of range "
				    "1-%d", $3, MAX_TLS_CONNS);
				YYERROR;
			}
			conf->tls_connections = (int)$3;
		}
		| TLS IDLE TIMEOUT NUMBER {
			if ($4 < 1 || $4 > MAX_TLS_IDLE) {
				yyerror("tls idle timeout %lld out of range "
				    "1-%d", $4, MAX_TLS_IDLE);
				YYERROR;
			}
			conf->tls_idle = (int)$4;
		}
		| ALLOW FROM STRING {
			struct acl_conf *a;

			if ((a = calloc(1, sizeof(*a))) == NULL)
				fatal("calloc");
			if (parse_prefix($3, a) == -1) {
				yyerror("invalid prefix %s", $3);
				free(a);
				free($3);
				YYERROR;
			}
			free($3);
			TAILQ_INSERT_TAIL(&conf->acls, a, entry);
		}
		| USER STRING {
			if (copy_string(conf->user, sizeof(conf->user), $2,
			    "user") == -1) {
				free($2);
				YYERROR;
			}
			free($2);
		}
		| CHROOT STRING {
			if (copy_string(conf->chroot, sizeof(conf->chroot),
			    $2, "chroot") == -1) {
				free($2);
				YYERROR;
			}
			free($2);
			if (conf->chroot[0] != '/') {
				yyerror("chroot must be an absolute path");
				YYERROR;
			}
		}
		| CACHE SIZE NUMBER {
			if ($3 < 1 || $3 > MAX_CACHE_SIZE) {
				yyerror("cache size %lld out of range 1-%d",
				    $3, MAX_CACHE_SIZE);
				YYERROR;
			}
			conf->cache_size = (int)$3;
		}
		| CACHE OFF		{ conf->cache_size = 0; }
		| CACHE SERVESTALE yesno maxage {
			conf->serve_stale = (int)$3;
			conf->stale_max = $4 ? (int)$4 : DEFAULT_STALE_MAX;
		}
		| CACHE PREFETCH yesno	{ conf->prefetch = (int)$3; }
		| RATELIMIT NUMBER PER SECOND burst {
			if ($2 < 1 || $2 > MAX_RATELIMIT) {
				yyerror("ratelimit %lld out of range 1-%d",
				    $2, MAX_RATELIMIT);
				YYERROR;
			}
			if ($5 && $5 < $2) {
				yyerror("burst %lld is below the rate %lld",
				    $5, $2);
				YYERROR;
			}
			conf->ratelimit = (int)$2;
			conf->ratelimit_burst = $5 ? (int)$5 : (int)$2 * 2;
		}
		| CONTROL SOCKET STRING {
			if (copy_string(conf->control_path,
			    sizeof(conf->control_path), $3,
			    "control socket") == -1) {
				free($3);
				YYERROR;
			}
			free($3);
		}
		| AUDIT LOG STRING {
			if (copy_string(conf->audit_log,
			    sizeof(conf->audit_log), $3, "audit log") == -1) {
				free($3);
				YYERROR;
			}
			free($3);
			if (conf->audit_log[0] != '/') {
				yyerror("audit log must be an absolute path");
				YYERROR;
			}
		}
		| LOG QUERIES anonymize	{ conf->log_queries = (int)$3; }
		| DNSTAP SOCKET STRING {
			if (copy_string(conf->dnstap_path,
			    sizeof(conf->dnstap_path), $3,
			    "dnstap socket") == -1) {
				free($3);
				YYERROR;
			}
			free($3);
			if (conf->dnstap_path[0] != '/') {
				yyerror("dnstap socket must be an absolute "
				    "path");
				YYERROR;
			}
		}
		| DNSTAP ANONYMIZE	{ conf->dnstap_anonymize = 1; }
		| EDNS UDP SIZE NUMBER {
			if ($4 < DNS_MIN_UDP || $4 > DNS_EDNS_UDP_MAX) {
				yyerror("edns udp size %lld out of range "
				    "%d-%d", $4, DNS_MIN_UDP,
				    DNS_EDNS_UDP_MAX);
				YYERROR;
			}
			conf->edns_udp_size = (int)$4;
		}
		| METRICS LISTEN ON STRING port {
			if (conf->metrics.ss_family != AF_UNSPEC) {
				yyerror("metrics listen on given twice");
				free($4);
				YYERROR;
			}
			if (parse_address($4, $5 ? (int)$5 :
			    DEFAULT_METRICS_PORT, &conf->metrics) == -1) {
				yyerror("invalid metrics address %s", $4);
				memset(&conf->metrics, 0,
				    sizeof(conf->metrics));
				free($4);
				YYERROR;
			}
			free($4);
		}
		;

pins		: /* empty */
		| pins PIN SHA256 STRING {
			if (cur_upstream == NULL) {
				/* an upstream without a name: reported below */
				free($4);
				break;
			}
			if (add_pin(cur_upstream, $4) == -1) {
				free($4);
				YYERROR;
			}
			free($4);
		}
		;

%%

struct keyword {
	const char	*name;
	int		 token;
};

static int
yyerror(const char *fmt, ...)
{
	va_list	 ap;
	char	*msg;

	file->errors++;
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) == -1)
		fatalx("yyerror vasprintf");
	va_end(ap);
	if (errors_to_log)
		log_warnx("%s:%d: %s", file->name, yylval.lineno, msg);
	else
		fprintf(stderr, "%s:%d: %s\n", file->name, yylval.lineno,
		    msg);
	free(msg);
	return 0;
}

static int
kw_cmp(const void *k, const void *e)
{
	return strcmp(k, ((const struct keyword *)e)->name);
}

static int
lookup(char *s)
{
	/* sorted for bsearch */
	static const struct keyword keywords[] = {
		{ "allow",		ALLOW },
		{ "anonymize",		ANONYMIZE },
		{ "audit",		AUDIT },
		{ "burst",		BURST },
		{ "ca",			CA },
		{ "cache",		CACHE },
		{ "chroot",		CHROOT },
		{ "connections",	CONNECTIONS },
		{ "control",		CONTROL },
		{ "dnstap",		DNSTAP },
		{ "edns",		EDNS },
		{ "from",		FROM },
		{ "idle",		IDLE },
		{ "include",		INCLUDE },
		{ "listen",		LISTEN },
		{ "log",		LOG },
		{ "max-age",		MAXAGE },
		{ "metrics",		METRICS },
		{ "name",		NAME },
		{ "no",			NO },
		{ "off",		OFF },
		{ "on",			ON },
		{ "per",		PER },
		{ "pin",		PIN },
		{ "port",		PORT },
		{ "prefetch",		PREFETCH },
		{ "queries",		QUERIES },
		{ "ratelimit",		RATELIMIT },
		{ "second",		SECOND },
		{ "serve-stale",	SERVESTALE },
		{ "sha256",		SHA256 },
		{ "size",		SIZE },
		{ "socket",		SOCKET },
		{ "timeout",		TIMEOUT },
		{ "tls",		TLS },
		{ "udp",		UDP },
		{ "upstream",		UPSTREAM },
		{ "user",		USER },
		{ "yes",		YES },
	};
	const struct keyword *p;

	p = bsearch(s, keywords, sizeof(keywords) / sizeof(keywords[0]),
	    sizeof(keywords[0]), kw_cmp);
	return p ? p->token : STRING;
}

static int	 at_eof;
static unsigned char	*parsebuf;	/* into expansion, while read */
static int	 parseindex;
static char	*expansion;	/* a copy of the macro value being read */
static unsigned char	 pushback_buffer[MAX_WORD];
static int	 pushback_index;

static int
lgetc(int quotec)
{
	int		c, next;

	if (parsebuf) {
		/* reading a macro's value */
		if (parseindex >= 0) {
			c = parsebuf[parseindex++];
			if (c != '\0')
				return c;
			parsebuf = NULL;
		} else
			parseindex++;
	}
	if (pushback_index)
		return pushback_buffer[--pushback_index];

	if (quotec) {
		if ((c = getc(file->stream)) == EOF) {
			yyerror("reached end of file while parsing a "
			    "quoted string");
			if (file == topfile || popfile() == EOF)
				return EOF;
			return quotec;
		}
		return c;
	}
	while ((c = getc(file->stream)) == '\\') {
		next = getc(file->stream);
		if (next != '\n') {
			c = next;
			break;
		}
		yylval.lineno = file->lineno;
		file->lineno++;
	}
	while (c == EOF) {
		/* an included file ends like a line does */
		if (file == topfile || popfile() == EOF)
			return EOF;
		c = getc(file->stream);
	}
	return c;
}

static int
lungetc(int c)
{
	if (c == EOF)
		return EOF;
	if (parsebuf) {
		parseindex--;
		if (parseindex >= 0)
			return c;
	}
	if (pushback_index + 1 >= (int)sizeof(pushback_buffer))
		return EOF;
	pushback_buffer[pushback_index++] = (unsigned char)c;
	return c;
}

static int
findeol(void)
{
	int	c;

	parsebuf = NULL;
	pushback_index = 0;
	for (;;) {
		c = lgetc(0);
		if (c == '\n') {
			file->lineno++;
			break;
		}
		if (c == EOF)
			break;
	}
	return ERROR;
}

static int
allowed_in_word(int c)
{
	return isalnum(c) || c == '-' || c == '_' || c == '.' ||
	    c == ':' || c == '/' || c == '$' || c == '+' || c == '@' ||
	    c == '[' || c == ']' || c == '%';
}

static int
yylex(void)
{
	char		 buf[MAX_WORD];
	char		*p, *val;
	int		 quotec, next, c, token;

top:
	p = buf;
	while ((c = lgetc(0)) == ' ' || c == '\t')
		;
	yylval.lineno = file->lineno;
	if (c == '#')
		while ((c = lgetc(0)) != '\n' && c != EOF)
			;
	/* a macro's value is not searched for macros: no recursion */
	if (c == '$' && parsebuf == NULL) {
		/* $macro */
		for (;;) {
			if ((c = lgetc(0)) == EOF)
				return 0;
			if (p + 1 >= buf + sizeof(buf) - 1) {
				yyerror("string too long");
				return findeol();
			}
			if (isalnum(c) || c == '_') {
				*p++ = (char)c;
				continue;
			}
			*p = '\0';
			lungetc(c);
			break;
		}
		val = symget(buf);
		if (val == NULL) {
			yyerror("macro '%s' not defined", buf);
			return findeol();
		}
		/*
		 * Read from a copy: the tokens of a macro's value may
		 * redefine that very macro, freeing the value.
		 */
		free(expansion);
		if ((expansion = strdup(val)) == NULL)
			fatal("strdup");
		parsebuf = (unsigned char *)expansion;
		parseindex = 0;
		goto top;
	}

	switch (c) {
	case '\'':
	case '"':
		quotec = c;
		for (;;) {
			if ((c = lgetc(quotec)) == EOF)
				return 0;
			if (c == '\n') {
				file->lineno++;
				yyerror("unterminated quoted string");
				return findeol();
			}
			if (c == '\\') {
				if ((next = lgetc(quotec)) == EOF)
					return 0;
				if (next == quotec || next == '\\')
					c = next;
				else if (next == '\n') {
					file->lineno++;
					continue;
				} else
					lungetc(next);
			} else if (c == quotec) {
				*p = '\0';
				break;
			} else if (c == '\0') {
				yyerror("NUL byte in quoted string");
				return findeol();
			}
			if (p + 1 >= buf + sizeof(buf) - 1) {
				yyerror("string too long");
				return findeol();
			}
			*p++ = (char)c;
		}
		if ((yylval.v.string = strdup(buf)) == NULL)
			fatal("yylex: strdup");
		return STRING;
	}

	if (isdigit(c) || c == '-') {
		/* a number, unless more than digits follow */
		do {
			*p++ = (char)c;
			if ((size_t)(p - buf) >= sizeof(buf) - 1) {
				yyerror("string too long");
				return findeol();
			}
		} while ((c = lgetc(0)) != EOF && isdigit(c));
		lungetc(c);
		if (p == buf + 1 && buf[0] == '-')
			goto nodigits;
		if (c == EOF || !allowed_in_word(c)) {
			const char *errstr = NULL;

			*p = '\0';
			yylval.v.number = strtonum(buf, -LLONG_MAX, LLONG_MAX,
			    &errstr);
			if (errstr) {
				yyerror("\"%s\" invalid number: %s", buf,
				    errstr);
				return findeol();
			}
			return NUMBER;
		}
nodigits:
		while (p > buf + 1)
			lungetc((unsigned char)*--p);
		c = (unsigned char)*--p;
		if (c == '-')
			return c;
	}

	if (allowed_in_word(c) && c != '$') {
		do {
			*p++ = (char)c;
			if ((size_t)(p - buf) >= sizeof(buf) - 1) {
				yyerror("string too long");
				return findeol();
			}
		} while ((c = lgetc(0)) != EOF && allowed_in_word(c));
		lungetc(c);
		*p = '\0';
		if ((token = lookup(buf)) == STRING)
			if ((yylval.v.string = strdup(buf)) == NULL)
				fatal("yylex: strdup");
		return token;
	}
	if (c == '\n') {
		yylval.lineno = file->lineno;
		file->lineno++;
	}
	if (c == EOF) {
		/* a last line without its newline still ends a statement */
		if (!at_eof) {
			at_eof = 1;
			return '\n';
		}
		return 0;
	}
	return c;
}

static struct file *
pushfile(const char *name)
{
	struct file	*nfile;

	if (file != NULL && TAILQ_FIRST(&files) != NULL) {
		int depth = 0;

		TAILQ_FOREACH(nfile, &files, entry)
			depth++;
		if (depth >= MAX_INCLUDE_DEPTH) {
			errno = ELOOP;
			return NULL;
		}
	}
	if ((nfile = calloc(1, sizeof(*nfile))) == NULL)
		return NULL;
	if ((nfile->name = strdup(name)) == NULL) {
		free(nfile);
		return NULL;
	}
	if ((nfile->stream = fopen(nfile->name, "r")) == NULL) {
		free(nfile->name);
		free(nfile);
		return NULL;
	}
	nfile->lineno = TAILQ_EMPTY(&files) ? 1 : 0;
	TAILQ_INSERT_TAIL(&files, nfile, entry);
	return nfile;
}

static int
popfile(void)
{
	struct file	*prev;

	if ((prev = TAILQ_PREV(file, files_head, entry)) != NULL)
		prev->errors += file->errors;
	TAILQ_REMOVE(&files, file, entry);
	fclose(file->stream);
	free(file->name);
	free(file);
	file = prev;
	return file ? 0 : EOF;
}

static int
symset(const char *name, const char *value)
{
	struct sym	*sym;

	TAILQ_FOREACH(sym, &symhead, entry)
		if (strcmp(name, sym->name) == 0)
			break;
	if (sym != NULL) {
		TAILQ_REMOVE(&symhead, sym, entry);
		free(sym->name);
		free(sym->value);
		free(sym);
	}
	if ((sym = calloc(1, sizeof(*sym))) == NULL)
		return -1;
	if ((sym->name = strdup(name)) == NULL ||
	    (sym->value = strdup(value)) == NULL) {
		free(sym->name);
		free(sym);
		return -1;
	}
	TAILQ_INSERT_TAIL(&symhead, sym, entry);
	return 0;
}

static char *
symget(const char *name)
{
	struct sym	*sym;

	TAILQ_FOREACH(sym, &symhead, entry)
		if (strcmp(name, sym->name) == 0)
			return sym->value;
	return NULL;
}

static void
symclear(void)
{
	struct sym	*sym;

	while ((sym = TAILQ_FIRST(&symhead)) != NULL) {
		TAILQ_REMOVE(&symhead, sym, entry);
		free(sym->name);
		free(sym->value);
		free(sym);
	}
}

static int
copy_string(char *dst, size_t len, const char *src, const char *what)
{
	if (strlcpy(dst, src, len) >= len) {
		yyerror("%s too long", what);
		return -1;
	}
	return 0;
}

static int
add_pin(struct upstream_conf *u, const char *b64)
{
	uint8_t	 hash[SPKI_HASH_LEN + 4];
	int	 n;

	if (u->npins == MAX_PINS) {
		yyerror("more than %d pins for one upstream", MAX_PINS);
		return -1;
	}
	n = b64_pton(b64, hash, sizeof(hash));
	if (n != SPKI_HASH_LEN) {
		yyerror("pin sha256 \"%s\" is not a base64 SHA-256 hash", b64);
		return -1;
	}
	memcpy(u->pins[u->npins++], hash, SPKI_HASH_LEN);
	return 0;
}

/* Once the daemon runs without a terminal, parse errors go to the log. */
void
parse_errors_to_log(int on)
{
	errors_to_log = on;
}

/*
 * Parse filename.  When it does not exist and missing_ok is set, the
 * built-in default applies.  Returns NULL after reporting every error.
 */
struct dotproxyd_conf *
parse_config(const char *filename, int missing_ok)
{
	struct stat	 st;

	if ((conf = config_new()) == NULL)
		fatal("config_new");
	errors = 0;
	cur_upstream = NULL;

	if (missing_ok && stat(filename, &st) == -1 && errno == ENOENT) {
		if (config_set_defaults(conf) == -1)
			fatalx("built-in default config");
		return conf;
	}
	if ((file = pushfile(filename)) == NULL) {
		if (errors_to_log)
			log_warn("%s", filename);
		else
			fprintf(stderr, "%s: %s\n", filename, strerror(errno));
		config_free(conf);
		return NULL;
	}
	topfile = file;
	at_eof = 0;

	yyparse();
	errors = file->errors;
	popfile();
	symclear();
	pushback_index = 0;
	parsebuf = NULL;
	free(expansion);
	expansion = NULL;

	if (errors == 0 && config_set_defaults(conf) == -1)
		fatalx("built-in default config");
	if (errors) {
		config_free(conf);
		return NULL;
	}
	return conf;
}
