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
static struct imsgbuf	*parent_ibuf;
static void		(*parent_kick)(void);
static const char	*audit_proc = "parent";

int
audit_open(const char *path)
{
	if (audit_fd != -1)
		close(audit_fd);
	audit_fd = -1;
	if (path == NULL || path[0] == '\0')
		return 0;
	audit_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0640);
	return audit_fd == -1 ? -1 : 0;
}

void
audit_close(void)
{
	if (audit_fd != -1)
		close(audit_fd);
	audit_fd = -1;
}

/* In a child: events go to the parent over ibuf. */
void
audit_to_parent(struct imsgbuf *ibuf, void (*kick)(void))
{
	parent_ibuf = ibuf;
	parent_kick = kick;
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
	char		 line[AUDIT_LINE_MAX], ts[40], k[256], v[1024];
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

/* audit("event", "key", "value", ..., NULL), from any process. */
void
audit(const char *event, ...)
{
	struct audit_msg	 am;
	va_list			 ap;
	const char		*s;
	size_t			 l;

	memset(&am, 0, sizeof(am));
	strlcpy(am.event, event, sizeof(am.event));
	va_start(ap, event);
	while ((s = va_arg(ap, const char *)) != NULL) {
		l = strlen(s) + 1;
		if (am.kvlen + l > sizeof(am.kv))
			break;
		memcpy(am.kv + am.kvlen, s, l);
		am.kvlen += l;
	}
	va_end(ap);
	if (parent_ibuf == NULL) {
		audit_write(audit_proc, am.event, am.kv, am.kvlen);
		return;
	}
	if (imsg_compose(parent_ibuf, IMSG_AUDIT, 0, -1, &am,
	    sizeof(am)) == 0 && parent_kick != NULL)
		parent_kick();
}
