#ifndef DOTPROXYD_NETWATCH_H
#define DOTPROXYD_NETWATCH_H

#include <stddef.h>

/*
 * Network changes, as the parent sees them on the kernel's routing
 * socket.  netwatch_parse() returns an OR of these for a buffer read
 * from it, 0 if nothing in it matters, -1 if it is malformed.
 */
#define NETWATCH_LINK	0x01	/* an interface went up or down */
#define NETWATCH_ADDR	0x02	/* an address was added or removed */
#define NETWATCH_ROUTE	0x04	/* a default route was added or removed */
#define NETWATCH_LOST	0x08	/* messages were lost or unreadable */

#define NETWATCH_SETTLE_MS	150	/* a burst of changes: one notice */
#define NETWATCH_SPACING_MS	500	/* notices are at least this apart */

/* netwatch.c: watch on the event loop, call back once a burst settled */
void	 netwatch_start(void (*)(void));

/* netwatch-linux.c or netwatch-openbsd.c */
int	 netwatch_open(const char **);
int	 netwatch_read(int);
int	 netwatch_parse(const void *, size_t);

#endif /* DOTPROXYD_NETWATCH_H */
