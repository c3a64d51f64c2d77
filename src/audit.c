/*
 * The audit trail: one JSON object per line, appended to the file the
 * parent opened ("audit log"), and the same line to syslog's auth
 * facility.  Children do not write it: they send the event and its
 * fields to the parent, which escapes every string itself.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"

#define AUDIT_LINE_MAX	4096

static int		 audit_fd = -1;
static const char	*audit_proc = "parent";

/*
 * Open the audit log, or open it anew after rotation.  Only a regular
 * file will do: not a symbolic link, and not a FIFO or a device, which
 * could block the parent in open(2) or write(2).  When the new file
 * cannot be opened, the one open before stays in use; *why says why.
 */
int
audit_open(const char *path, char *why, size_t whylen)
{
	struct stat	st;
	int		fd, fl;

	if (path == NULL || path[0] == '\0') {
		audit_close();
		return 0;
	}
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0640);
	if (fd == -1) {
		strlcpy(why, strerror(errno), whylen);
		return -1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		strlcpy(why, "not a regular file", whylen);
		close(fd);
		return -1;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
		strlcpy(why, strerror(errno), whylen);
		close(fd);
		return -1;
	}
	audit_close();
	audit_fd = fd;
	return 0;
}

void
audit_close(void)
{
	if (audit_fd != -1)
		close(audit_fd);
	audit_fd = -1;
}

/*
 * The events each child may report, and the fields each may carry.
 * Anything else from a child (an event of the parent's, "time",
 * "event" or "process" as a field, a field twice) is a forgery.
 */
#define AUDIT_KEYS_MAX	4
static const struct audit_rule {
	enum proc_type	 proc;
	const char	*event;
	const char	*keys[AUDIT_KEYS_MAX];
} audit_rules[] = {
	{ PROC_LISTENER, "control", { "uid", "command" } },
	{ PROC_LISTENER, "control-suppressed", { "kind", "commands",
	    "period" } },
	{ PROC_LISTENER, "access-refused", { "client", "queries", "period" } },
	{ PROC_LISTENER, "rate-limited", { "client", "queries", "period" } },
	{ PROC_UPSTREAM, "upstream-auth-failure", { "upstream", "reason" } },
	{ PROC_UPSTREAM, "upstream-down", { "upstream", "reason" } },
	{ PROC_UPSTREAM, "upstream-up", { "upstream" } },
};

static const struct audit_rule *
audit_rule(enum proc_type proc, const char *event)
{
	size_t	i;

	for (i = 0; i < sizeof(audit_rules) / sizeof(audit_rules[0]); i++)
		if (audit_rules[i].proc == proc &&
		    strcmp(audit_rules[i].event, event) == 0)
			return &audit_rules[i];
	return NULL;
}

/* The index of key among the rule's fields, or -1. */
static int
audit_key(const struct audit_rule *r, const char *key)
{
	int	i;

	for (i = 0; i < AUDIT_KEYS_MAX && r->keys[i] != NULL; i++)
		if (strcmp(r->keys[i], key) == 0)
			return i;
	return -1;
}

/*
 * May a child of type proc report this event with these fields (key NUL
 * value NUL ..., as audit() packs them)?  0 if so; -1 if not, with the
 * reason in why.
 */
int
audit_allowed(enum proc_type proc, const char *event, const char *kv,
    size_t kvlen, char *why, size_t whylen)
{
	const struct audit_rule	*r;
	const char		*key, *val, *end;
	size_t			 off = 0;
	unsigned int		 seen = 0;
	int			 i;

	if ((r = audit_rule(proc, event)) == NULL) {
		snprintf(why, whylen, "event \"%.32s\" is not the %s's",
		    event, proc_name(proc));
		return -1;
	}
	if (kvlen > AUDIT_KV_MAX) {
		snprintf(why, whylen, "fields too long");
		return -1;
	}
	while (off < kvlen) {
		key = kv + off;
		if ((end = memchr(key, '\0', kvlen - off)) == NULL ||
		    (size_t)(end + 1 - kv) >= kvlen ||
		    memchr(end + 1, '\0', kvlen - (size_t)(end + 1 - kv)) ==
		    NULL) {
			snprintf(why, whylen, "malformed fields");
			return -1;
		}
		val = end + 1;
		off = (size_t)(val - kv) + strlen(val) + 1;
		if (strcmp(key, "time") == 0 || strcmp(key, "event") == 0 ||
		    strcmp(key, "process") == 0) {
			snprintf(why, whylen, "field \"%s\" is reserved", key);
			return -1;
		}
		if ((i = audit_key(r, key)) == -1) {
			snprintf(why, whylen, "field \"%.32s\" is not one of "
			    "event %s", key, event);
			return -1;
		}
		if (seen & (1U << i)) {
			snprintf(why, whylen, "field \"%s\" twice", key);
			return -1;
		}
		seen |= 1U << i;
	}
	return 0;
}

/* JSON string body of s into buf; returns the length written. */
size_t
json_escape(char *buf, size_t len, const char *s)
{
	size_t	o = 0;

	if (len == 0)
		return 0;
	for (; *s != '\0'; s++) {
		unsigned char	c = (unsigned char)*s;
		char		esc[8];
		size_t		n;

		if (c == '"' || c == '\\')
			n = (size_t)snprintf(esc, sizeof(esc), "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
		else {
			esc[0] = (char)c;
			esc[1] = '\0';
			n = 1;
		}
		if (o + n >= len)
			break;
		memcpy(buf + o, esc, n);
		o += n;
	}
	buf[o] = '\0';
	return o;
}

/*
 * Write one event (parent only).  kv holds key NUL value NUL pairs as
 * received; anything malformed in it is cut off, never trusted.
 */
void
audit_write(const char *proc, const char *event, const char *kv,
    size_t kvlen)
{
	char		 line[AUDIT_LINE_MAX], ts[40], k[256], v[AUDIT_LINE_MAX];
	struct timespec	 now;
	struct tm	 tm;
	size_t		 o = 0, off = 0;
	int		 n;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	json_escape(k, sizeof(k), event);
	json_escape(v, sizeof(v), proc);
	n = snprintf(line, sizeof(line), "{\"time\":\"%s.%03ldZ\","
	    "\"event\":\"%s\",\"process\":\"%s\"", ts,
	    now.tv_nsec / 1000000, k, v);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	o = (size_t)n;
	while (off < kvlen) {
		const char *key = kv + off, *val, *end;

		if ((end = memchr(key, '\0', kvlen - off)) == NULL)
			break;
		val = end + 1;
		if ((size_t)(val - kv) >= kvlen ||
		    memchr(val, '\0', kvlen - (size_t)(val - kv)) == NULL)
			break;
		off = (size_t)(val - kv) + strlen(val) + 1;
		json_escape(k, sizeof(k), key);
		json_escape(v, sizeof(v), val);
		n = snprintf(line + o, sizeof(line) - o, ",\"%s\":\"%s\"",
		    k, v);
		if (n < 0 || (size_t)n >= sizeof(line) - o - 2)
			break;
		o += (size_t)n;
	}
	line[o++] = '}';
	line[o] = '\0';
	syslog(LOG_AUTH | LOG_NOTICE, "audit: %s", line);
	if (audit_fd != -1) {
		line[o++] = '\n';
		if (write(audit_fd, line, o) == -1)
			log_warn("audit log");
	}
}

/*
 * audit("event", "key", "value", ..., NULL), from any process.  A child's
 * fields travel in a struct audit_msg (AUDIT_KV_MAX); the parent's are
 * bounded only by the line, so that a long config path does not push
 * the fields after it out.
 */
void
audit(const char *event, ...)
{
	struct audit_msg	 am;
	char			 kv[AUDIT_LINE_MAX];
	va_list			 ap;
	const char		*k, *v;
	size_t			 kl, vl, kvlen = 0, max;

	max = log_in_child() ? sizeof(am.kv) : sizeof(kv);
	va_start(ap, event);
	/* whole pairs only: a field that does not fit ends the list */
	while ((k = va_arg(ap, const char *)) != NULL &&
	    (v = va_arg(ap, const char *)) != NULL) {
		kl = strlen(k) + 1;
		vl = strlen(v) + 1;
		if (kvlen + kl + vl > max)
			break;
		memcpy(kv + kvlen, k, kl);
		memcpy(kv + kvlen + kl, v, vl);
		kvlen += kl + vl;
	}
	va_end(ap);
	if (!log_in_child()) {
		audit_write(audit_proc, event, kv, kvlen);
		return;
	}
	memset(&am, 0, sizeof(am));
	strlcpy(am.event, event, sizeof(am.event));
	memcpy(am.kv, kv, kvlen);
	am.kvlen = kvlen;
	log_send_parent(IMSG_AUDIT, &am, sizeof(am));
}
