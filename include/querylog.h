/*
 * The listener's query log ("log queries") and its audit of refused and
 * rate-limited clients, one record a client a minute.
 */
#ifndef DOTPROXYD_QUERYLOG_H
#define DOTPROXYD_QUERYLOG_H

#include <sys/types.h>
#include <sys/socket.h>

#include <event.h>
#include <stddef.h>
#include <stdint.h>

#include "dnstap.h"
#include "sip.h"

struct chan;
struct cquery;
struct dotproxyd_conf;

/* What note_client() counts for the audit. */
enum client_event {
	CLIENT_REFUSED,		/* not in the access list */
	CLIENT_RATELIMITED,	/* over its rate limit */
	CLIENT_EVENTS
};

void	 querylog_init(void);
void	 note_client(enum client_event, const struct sockaddr_storage *);
void	 audit_clients(int, short, void *);
void	 log_query(const struct cquery *, const uint8_t *, size_t,
	    const char *, int);
void	 querylog_tap_configure(struct chan *, const struct dotproxyd_conf *);
void	 tap_client(const struct cquery *, enum dnstap_type, const uint8_t *,
	    size_t, const struct sockaddr_storage *);

/* set up by listener_main(): the audit's timer, the anonymizing key */

#endif /* DOTPROXYD_QUERYLOG_H */
