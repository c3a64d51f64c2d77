/*
 * The listener's own parts: what listener.c shares with the files that
 * serve it (querylog.c, tcpclient.c).  Not for the other processes.
 */
#ifndef DOTPROXYD_LISTENER_H
#define DOTPROXYD_LISTENER_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "dns.h"
#include "sip.h"

struct request;
struct tcpc;

/* One client's query, waiting for its request's answer. */
struct cquery {
	TAILQ_ENTRY(cquery)	 rentry;	/* in its request */
	LIST_ENTRY(cquery)	 centry;	/* in its TCP connection */
	struct request		*req;
	int			 fd;		/* UDP socket, or -1 */
	struct tcpc		*tc;		/* TCP connection, or NULL */
	struct sockaddr_storage	 from;
	socklen_t		 fromlen;
	struct dns_msg		 qm;
	struct timespec		 t0;		/* arrival, for query logs */
	size_t			 qlen;
	uint8_t			 q[];		/* header + question */
};

extern uint8_t	 hash_key[SIP_KEY_LEN];	/* of the listener's tables */

/* listener.c */
void	 handle_query(const uint8_t *, size_t, int, struct tcpc *,
	    const struct sockaddr_storage *, socklen_t);
void	 cquery_free(struct cquery *);
void	 udp_flush(void);
void	 upstream_kick(void);

#endif /* DOTPROXYD_LISTENER_H */
