#ifndef DOTPROXYD_RATELIMIT_H
#define DOTPROXYD_RATELIMIT_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_CLIENTS	65536	/* tracked at once, then the oldest go */

struct ratelimit;

struct ratelimit	*ratelimit_new(int, int, size_t);
void			 ratelimit_free(struct ratelimit *);
void			 ratelimit_set(struct ratelimit *, int, int);
int			 ratelimit_allow(struct ratelimit *,
			    const struct sockaddr *, int64_t);

#endif /* DOTPROXYD_RATELIMIT_H */
