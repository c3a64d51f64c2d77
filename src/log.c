/*
 * Logging.  The parent writes to syslog, or to stderr in the foreground.
 * Children have neither: they send each record to the parent, which
 * sanitises it and writes it for them.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"

#define LOG_LINE_MAX	1024	/* a record, as struct log_msg holds it */
#define LOG_PREFIX_MAX	64	/* room for "name: " in front of it */

static int		 debug;
static int		 verbose;
static const char	*procname = "dotproxyd";
static struct imsgbuf	*parent_ibuf;
static void		(*parent_kick)(void);

void
log_init(int n_debug, int facility)
{
	debug = n_debug;
	if (!debug)
		openlog("dotproxyd", LOG_PID | LOG_NDELAY, facility);
	tzset();
}

void
log_procinit(const char *name)
{
	if (name != NULL)
		procname = name;
}

void
log_setverbose(int v)
{
	verbose = v;
}

int
log_getverbose(void)
{
	return verbose;
}

/*
 * In a child: from now on, log and audit records go to the parent over
 * ibuf; kick schedules a write.
 */
void
log_to_parent(struct imsgbuf *ibuf, void (*kick)(void))
{
	parent_ibuf = ibuf;
	parent_kick = kick;
}

/* Whether records go to the parent (a child) or are written here. */
int
log_in_child(void)
{
	return parent_ibuf != NULL;
}

/* In a child: queue a message of type for the parent. */
void
log_send_parent(uint32_t type, const void *data, size_t len)
{
	if (imsg_compose(parent_ibuf, type, 0, -1, data, len) == 0 &&
	    parent_kick != NULL)
		parent_kick();
}

/*
 * Copy src to dst, each byte that is not printable ASCII written as a
 * backslash and its value in three decimal digits, as a name is in DNS
 * presentation format (RFC 1035 5.1).  A backslash that already begins
 * such an escape is kept as it is, any other is escaped (\092), so the
 * result escaped again is unchanged: a line is escaped once, where it is
 * built, and what checks it again on the way changes nothing.  An escape
 * is never cut at the end of dst.
 */
void
log_sanitize(char *dst, size_t dstlen, const char *src)
{
	const unsigned char	*s = (const unsigned char *)src;
	size_t			 o = 0;

	if (dstlen == 0)
		return;
	while (*s != '\0') {
		if (*s == '\\' && isdigit(s[1]) && isdigit(s[2]) &&
		    isdigit(s[3])) {
			if (o + 4 >= dstlen)
				break;
			memcpy(dst + o, s, 4);
			o += 4;
			s += 4;
		} else if (*s >= 0x20 && *s < 0x7f && *s != '\\') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)*s++;
		} else {
			if (o + 4 >= dstlen)
				break;
			(void)snprintf(dst + o, dstlen - o, "\\%03u", *s++);
			o += 4;
		}
	}
	dst[o] = '\0';
}

/*
 * A child's record is escaped here and sent to the parent as it is; the
 * parent checks it with log_sanitize() again (no change for a record so
 * built) and writes it with the child's name in front, in a buffer with
 * room for that name.
 */
static void
vlog(int pri, const char *fmt, va_list ap)
{
	char			 line[LOG_LINE_MAX + LOG_PREFIX_MAX];
	char			 clean[LOG_LINE_MAX + LOG_PREFIX_MAX];
	struct log_msg		 lm;
	int			 saved_errno = errno;

	if (pri == LOG_DEBUG && !verbose)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (parent_ibuf != NULL) {
		memset(&lm, 0, sizeof(lm));
		lm.priority = pri;
		log_sanitize(lm.text, sizeof(lm.text), line);
		log_send_parent(IMSG_LOG, &lm, sizeof(lm));
		errno = saved_errno;
		return;
	}
	log_sanitize(clean, sizeof(clean), line);
	if (debug) {
		fprintf(stderr, "%s: %s\n", procname, clean);
		fflush(stderr);
	} else
		syslog(pri, "%s: %s", procname, clean);
	errno = saved_errno;
}

static void vwarn_errno(int, int, const char *, va_list)
    __attribute__((__format__ (printf, 3, 0)));

static void
vwarn_errno(int pri, int err, const char *fmt, va_list ap)
{
	char	buf[LOG_LINE_MAX];

	if (fmt == NULL) {
		log_emit(pri, 0, "%s", strerror(err));
		return;
	}
	vsnprintf(buf, sizeof(buf), fmt, ap);
	log_emit(pri, 0, "%s: %s", buf, strerror(err));
}

/*
 * The one way into the log (log.h's macros name the levels): a record
 * at priority pri, with ": " and errno's text after it if with_errno.
 */
void
log_emit(int pri, int with_errno, const char *fmt, ...)
{
	va_list	ap;
	int	err = errno;

	va_start(ap, fmt);
	if (with_errno)
		vwarn_errno(pri, err, fmt, ap);
	else
		vlog(pri, fmt, ap);
	va_end(ap);
	errno = err;
}

/* After a fatal record: send what waits for the parent, and exit. */
void
log_exit(void)
{
	if (parent_ibuf != NULL)
		(void)imsg_flush(parent_ibuf);
	exit(1);
}
