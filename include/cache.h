#ifndef DOTPROXYD_CACHE_H
#define DOTPROXYD_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dns.h"
#include "sip.h"

#define CACHE_MAX_TTL		86400
#define CACHE_SERVFAIL_TTL	2	/* seconds a SERVFAIL is kept */
#define CACHE_BYTES_PER_ENTRY	1024	/* the byte bound: size * this */

struct cache;

struct cache_hit {
	const uint8_t		*answer;
	size_t			 len;
	struct dns_msg		 msg;	/* of answer; min_ttl, soa_min 0 */
	uint32_t		 age;	/* seconds since it was stored */
	uint32_t		 ttl;	/* seconds it was stored for */
	int			 stale;	/* past its TTL (RFC 8767) */
};

struct cache_stats {
	uint64_t	hits;
	uint64_t	misses;
	uint64_t	inserts;
	uint64_t	evictions;
	size_t		entries;
	size_t		bytes;
	size_t		mapped;		/* the memory holding them */
};

uint32_t	 cache_hash(const uint8_t [SIP_KEY_LEN], const uint8_t *, size_t);
struct cache	*cache_new(size_t, size_t);
void		 cache_free(struct cache *);
int		 cache_lookup(struct cache *, const uint8_t *, size_t, uint32_t,
		    int64_t, struct cache_hit *);
int		 cache_lookup_stale(struct cache *, const uint8_t *, size_t,
		    uint32_t, int64_t, struct cache_hit *);
void		 cache_set_stale(struct cache *, uint32_t);
int		 cache_store(struct cache *, const uint8_t *, size_t, uint32_t,
		    const uint8_t *, size_t, const struct dns_msg *, int64_t);
uint32_t	 cache_ttl(const struct dns_msg *);
int		 cache_prefetch_due(uint32_t, uint32_t);
void		 cache_flush(struct cache *);
void		 cache_resize(struct cache *, size_t, size_t);
void		 cache_get_stats(const struct cache *, struct cache_stats *);

#endif /* DOTPROXYD_CACHE_H */
