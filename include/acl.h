#ifndef DOTPROXYD_ACL_H
#define DOTPROXYD_ACL_H

#include <sys/socket.h>

struct dotproxyd_conf;
struct acl_conf;

int	 acl_match_one(const struct acl_conf *, const struct sockaddr *);
int	 acl_allowed(const struct dotproxyd_conf *, const struct sockaddr *);
int	 acl_is_loopback(const struct sockaddr *);

#endif /* DOTPROXYD_ACL_H */
