#ifndef DOTPROXYD_SDNOTIFY_H
#define DOTPROXYD_SDNOTIFY_H

#include <sys/time.h>

#include <stdint.h>

/*
 * The service manager's readiness protocol (systemd's sd_notify(3)),
 * without libsystemd: datagrams of "NAME=value" lines to the socket
 * named by NOTIFY_SOCKET.
 *
 * sdnotify_open() reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID,
 * removes them from the environment, and creates and connects the
 * socket, so that later sending needs neither socket(2) nor connect(2):
 * call it before the sandbox, and after daemon(3), since the watchdog
 * is meant for the process that reads WATCHDOG_PID.  It returns 0 with
 * a socket, -1 without one (the variable unset or unusable; a problem
 * is logged).  Opening again closes the socket it had.
 *
 * The senders never block and never fail the caller: without a socket
 * they do nothing and return 0; a failed send returns -1 and is logged,
 * the first time only.  Text for sdnotify_status() is cut at
 * SDNOTIFY_STATUS_MAX bytes, and each byte not printable ASCII becomes
 * '?': a newline cannot add an assignment, nor a cut leave bad UTF-8.
 */

#define SDNOTIFY_STATUS_MAX	256

int		 sdnotify_open(void);
void		 sdnotify_close(void);
int		 sdnotify_ready(void);		/* READY=1 */
int		 sdnotify_reloading(void);	/* RELOADING=1, MONOTONIC_USEC */
int		 sdnotify_stopping(void);	/* STOPPING=1 */
int		 sdnotify_watchdog(void);	/* WATCHDOG=1 */
int		 sdnotify_status(const char *, ...)	/* STATUS=text */
		    __attribute__((__format__ (printf, 1, 2)));

/*
 * The watchdog timeout in microseconds from WATCHDOG_USEC, 0 if there is
 * none (no socket, unset, not a positive number, or WATCHDOG_PID set to
 * another process); sdnotify_watchdog_interval() gives half of it, how
 * often to send WATCHDOG=1, and returns -1 if there is none.
 */
uint64_t	 sdnotify_watchdog_usec(void);
int		 sdnotify_watchdog_interval(struct timeval *);

#endif /* DOTPROXYD_SDNOTIFY_H */
