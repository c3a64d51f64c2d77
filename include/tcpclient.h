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
struct tcpc;	/* a client's connection: only tcpclient.c looks inside */

int	 tcp_accept(int);
void	 tcp_send(struct tcpc *, const uint8_t *, size_t);
void	 tcp_flush_all(void);
void	 tcp_query_add(struct tcpc *, struct cquery *);
void	 tcp_query_remove(struct tcpc *, struct cquery *);
void	 tcp_set_max_clients(int);
int	 tcp_clients(void);

#endif /* DOTPROXYD_TCPCLIENT_H */
