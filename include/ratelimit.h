#ifndef DOTPROXYD_RATELIMIT_H
#define DOTPROXYD_RATELIMIT_H

#include <sys/socket.h>

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_CLIENTS	65536	/* tracked at once, then the oldest go */
#define CLIENT_KEY_LEN		9	/* family, then 4 or 8 address bytes */

struct ratelimit;

struct ratelimit	*ratelimit_new(int, int, size_t);
void			 ratelimit_free(struct ratelimit *);
void			 ratelimit_set(struct ratelimit *, int, int);
int			 ratelimit_allow(struct ratelimit *,
			    const struct sockaddr *, int64_t);
int			 client_key(const struct sockaddr *,
			    uint8_t [CLIENT_KEY_LEN]);

#endif /* DOTPROXYD_RATELIMIT_H */
