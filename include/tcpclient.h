/*
 * The listener's TCP clients, tcpclient.c: what the rest of the listener
 * asks of them.
 */
#ifndef DOTPROXYD_TCPCLIENT_H
#define DOTPROXYD_TCPCLIENT_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event.h>
#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "ratelimit.h"

#define TCP_MAX_CLIENTS		1000	/* connections, when descriptors allow */

struct cquery;
struct obuf;

/*
 * A client's connection.  Only tcpclient.c looks inside, but for the
 * listener's last flush of what is queued at shutdown (tcp_write()).
 */
struct tcpc {
	TAILQ_ENTRY(tcpc)	 entry;
	int			 fd;
	struct event		 rev;
	struct event		 wev;
	struct event		 tmo;
	struct event		 resume;
	struct sockaddr_storage	 from;
	socklen_t		 fromlen;
	uint8_t			 key[CLIENT_KEY_LEN];	/* client_key() */
	LIST_HEAD(, cquery)	 queries;
	int			 inflight;
	TAILQ_HEAD(, obuf)	 out;
	int			 reading;
	int			 eof;
	int			 shed;		/* answers dropped, to close */
	uint64_t		 seq;		/* accept order */
	int64_t			 partial_ms;	/* a message began arriving */
	int64_t			 write_ms;	/* output last moved */
	size_t			 outbytes;	/* queued in out */
	size_t			 rlen;
	uint8_t			 rbuf[2 + DNS_MAX_MSG];
};

TAILQ_HEAD(tcpc_head, tcpc);
extern struct tcpc_head	 tcpcs;		/* oldest first */

int	 tcp_accept(int);
void	 tcp_send(struct tcpc *, const uint8_t *, size_t);
void	 tcp_write(int, short, void *);
void	 tcp_query_add(struct tcpc *, struct cquery *);
void	 tcp_query_remove(struct tcpc *, struct cquery *);
void	 tcp_set_max_clients(int);
int	 tcp_clients(void);

#endif /* DOTPROXYD_TCPCLIENT_H */
