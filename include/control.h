#ifndef DOTPROXYD_CONTROL_H
#define DOTPROXYD_CONTROL_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;
struct sockaddr_storage;
struct upstream_status;
struct tap_counts;
struct cache_stats;

/* control.c, in the listener */
void	 control_init(int);
void	 control_upstream(uint32_t, const struct upstream_status *);
void	 control_upstream_end(uint32_t, const struct tap_counts *);
void	 control_result(uint32_t, const char *);
void	 control_audit_flush(void);
void	 control_http_socket(int, const struct sockaddr_storage *);
void	 control_http_keep(const struct sockaddr_storage *);

/* what control.c asks of the listener */
int	 listener_to_parent(uint32_t, uint32_t, const void *, size_t);
int	 listener_to_upstream(uint32_t, uint32_t);
void	 listener_cache_flush(void);
int	 listener_cache_stats(struct cache_stats *);
int	 listener_upstream_ok(void);
void	 listener_gauges(int *, int *);
int	 listener_acl_allowed(const struct sockaddr *);

#endif /* DOTPROXYD_CONTROL_H */
