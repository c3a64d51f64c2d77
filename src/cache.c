/*
 * The answer cache, in the listener: a hit never leaves the process.
 * Keyed by the canonical upstream query (lower-cased name, type, class,
 * the RD/CD flags and the DO bit), bounded by entries and by bytes,
 * least recently used first out.  TTLs count down from the time of
 * storing; negative answers live as long as RFC 2308 says.  For
 * serve-stale (RFC 8767), answers but SERVFAIL may be kept up to a set
 * number of seconds past their TTL; lookups of clients never find them,
 * only cache_lookup_stale() does.
 */
#include <sys/types.h>
#include <sys/queue.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "sip.h"

/*
 * An entry: 51 bytes before its answer and key on x86-64 (and other
 * LP64 systems).  Times are the low 32 bits of the monotonic clock's
 * seconds: an age is their difference modulo 2^32, which is right for
 * 136 years.  A key and an answer are each at most 65535 bytes
 * (DNS_MAX_MSG); cache_store() refuses longer ones, so offsets into an
 * answer fit in 16 bits too.  Of the parsed answer (struct dns_msg),
 * an entry keeps only what a hit cannot read from the answer's header,
 * question and OPT record without walking its records; see entry_msg().
 * A key is the canonical query, whose question is usually the answer's
 * byte for byte: then the entry keeps only the key's other bytes, its
 * header and OPT record, 23 bytes (see key_equal()).
 */
struct centry {
	SLIST_ENTRY(centry)	 hentry;
	TAILQ_ENTRY(centry)	 lru;
	uint32_t		 hash;
	uint32_t		 stored;	/* seconds, monotonic */
	uint32_t		 ttl;		/* seconds from stored */
	uint16_t		 keylen;
	uint16_t		 anslen;
	uint16_t		 qend;		/* of the answer's dns_msg */
	uint16_t		 end;
	uint16_t		 opt_off;
	uint16_t		 opt_end;
	uint16_t		 ar_before_opt;
	uint8_t			 bits;		/* CE_* */
	uint8_t			 data[];	/* answer, then key */
};

#define CE_EDNS		0x01		/* dns_msg's edns, has_ecs, ... */
#define CE_ECS		0x02
#define CE_SOA		0x04
#define CE_TTL_TOP	0x08
#define CE_KEY_Q	0x10		/* the key's question: the answer's */

#define CENTRY_SIZE	offsetof(struct centry, data)
#ifdef __LP64__
_Static_assert(CENTRY_SIZE == 51, "struct centry is not 51 bytes");
#endif

struct cache {
	SLIST_HEAD(centry_head, centry) *buckets;
	size_t			 nbuckets;	/* power of two */
	TAILQ_HEAD(centry_lru, centry) lru;	/* most recent first */
	size_t			 max_entries;
	size_t			 max_bytes;
	uint32_t		 stale_max;	/* seconds past expiry */
	struct cache_stats	 st;
};

/*
 * The hash of the cache's and the listener's tables: 32 bits of
 * SipHash-2-4 under a random key of the process, so a client cannot
 * choose names that all land in one bucket.
 */
uint32_t
cache_hash(const uint8_t key[SIP_KEY_LEN], const uint8_t *p, size_t len)
{
	uint64_t	h = sip24(key, p, len);

	return (uint32_t)(h ^ (h >> 32));
}

struct cache *
cache_new(size_t max_entries, size_t max_bytes)
{
	struct cache	*c;
	size_t		 i;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->nbuckets = 1024;
	while (c->nbuckets < max_entries && c->nbuckets < (1U << 24))
		c->nbuckets <<= 1;
	if ((c->buckets = calloc(c->nbuckets, sizeof(*c->buckets))) == NULL) {
		free(c);
		return NULL;
	}
	for (i = 0; i < c->nbuckets; i++)
		SLIST_INIT(&c->buckets[i]);
	TAILQ_INIT(&c->lru);
	c->max_entries = max_entries;
	c->max_bytes = max_bytes;
	return c;
}

static struct centry_head *
bucket(struct cache *c, uint32_t hash)
{
	return &c->buckets[hash & (c->nbuckets - 1)];
}

/* Out of its chain, which is short: walking it finds the one before. */
static void
entry_remove(struct cache *c, struct centry *e)
{
	SLIST_REMOVE(bucket(c, e->hash), e, centry, hentry);
	TAILQ_REMOVE(&c->lru, e, lru);
	c->st.entries--;
	c->st.bytes -= e->keylen + e->anslen;
	free(e);
}

void
cache_flush(struct cache *c)
{
	struct centry	*e;

	while ((e = TAILQ_FIRST(&c->lru)) != NULL)
		entry_remove(c, e);
}

void
cache_free(struct cache *c)
{
	if (c == NULL)
		return;
	cache_flush(c);
	free(c->buckets);
	free(c);
}

static void
shrink(struct cache *c, size_t need_bytes)
{
	struct centry	*e;

	while ((c->st.entries >= c->max_entries ||
	    c->st.bytes + need_bytes > c->max_bytes) &&
	    (e = TAILQ_LAST(&c->lru, centry_lru)) != NULL) {
		entry_remove(c, e);
		c->st.evictions++;
	}
}

/* New bounds; the hash table keeps its size. */
void
cache_resize(struct cache *c, size_t max_entries, size_t max_bytes)
{
	c->max_entries = max_entries;
	c->max_bytes = max_bytes;
	shrink(c, 0);
}

/* Keep expired answers this many seconds for serve-stale; 0: not. */
void
cache_set_stale(struct cache *c, uint32_t seconds)
{
	c->stale_max = seconds;
}

/*
 * Is key e's key?  With CE_KEY_Q, e's key is kept after the answer but
 * for its bytes from DNS_HDR_LEN to qend, which are the answer's: both
 * have a header of DNS_HDR_LEN bytes, and the same question after it.
 */
static int
key_equal(const struct centry *e, const uint8_t *key, size_t keylen)
{
	const uint8_t	*k = e->data + e->anslen;

	if (keylen != e->keylen)
		return 0;
	if (!(e->bits & CE_KEY_Q))
		return memcmp(k, key, keylen) == 0;
	return memcmp(k, key, DNS_HDR_LEN) == 0 &&
	    memcmp(e->data + DNS_HDR_LEN, key + DNS_HDR_LEN,
	    e->qend - DNS_HDR_LEN) == 0 &&
	    memcmp(k + DNS_HDR_LEN, key + e->qend, keylen - e->qend) == 0;
}

/* Keep key after the answer, as key_equal() reads it. */
static void
keep_key(struct centry *e, const uint8_t *key, size_t keylen)
{
	uint8_t	*k = e->data + e->anslen;

	if (!(e->bits & CE_KEY_Q)) {
		memcpy(k, key, keylen);
		return;
	}
	memcpy(k, key, DNS_HDR_LEN);
	memcpy(k + DNS_HDR_LEN, key + e->qend, keylen - e->qend);
}

static struct centry *
find(struct cache *c, const uint8_t *key, size_t keylen, uint32_t hash)
{
	struct centry	*e;

	SLIST_FOREACH(e, bucket(c, hash), hentry)
		if (e->hash == hash && key_equal(e, key, keylen))
			return e;
	return NULL;
}

/*
 * The parsed answer again, without parsing: the header, question and
 * OPT record from the answer's bytes, the rest as the entry kept it.
 * min_ttl and soa_min, which only storing needs, are 0.
 */
static void
entry_msg(const struct centry *e, struct dns_msg *m)
{
	const uint8_t	*a = e->data, *opt = a + e->opt_off;

	memset(m, 0, sizeof(*m));
	dns_read_header(a, m);
	m->qname_off = DNS_HDR_LEN;
	m->qname_len = e->qend - DNS_HDR_LEN - 4;
	m->qtype = dns_get16(a + e->qend - 4);
	m->qclass = dns_get16(a + e->qend - 2);
	m->qend = e->qend;
	m->end = e->end;
	m->ar_before_opt = e->ar_before_opt;
	if (e->bits & CE_EDNS) {
		m->edns = 1;
		m->opt_off = e->opt_off;
		m->opt_end = e->opt_end;
		m->udpsize = dns_get16(opt + 3);
		m->ext_rcode = opt[5];
		m->edns_version = opt[6];
		m->edns_flags = dns_get16(opt + 7);
	}
	m->has_ecs = (e->bits & CE_ECS) != 0;
	m->has_soa = (e->bits & CE_SOA) != 0;
	m->ttl_top = (e->bits & CE_TTL_TOP) != 0;
}

/* What entry_msg() needs of a parsed answer, kept in e. */
static void
entry_keep_msg(struct centry *e, const struct dns_msg *am)
{
	e->qend = (uint16_t)am->qend;
	e->end = (uint16_t)am->end;
	e->opt_off = (uint16_t)am->opt_off;
	e->opt_end = (uint16_t)am->opt_end;
	e->ar_before_opt = am->ar_before_opt;
	e->bits = (am->edns ? CE_EDNS : 0) | (am->has_ecs ? CE_ECS : 0) |
	    (am->has_soa ? CE_SOA : 0) | (am->ttl_top ? CE_TTL_TOP : 0);
}

/*
 * Seconds since e was stored.  The clock is monotonic: a time before
 * stored, were there one, would make a large age, an expired entry.
 */
static uint32_t
entry_age(const struct centry *e, int64_t now)
{
	return (uint32_t)now - e->stored;
}

static int
expired(const struct centry *e, int64_t now)
{
	return entry_age(e, now) >= e->ttl;
}

/*
 * An expired entry: may it still serve stale?  Not once stale_max has
 * passed, and a SERVFAIL never.  Entries that may not are dropped.
 */
static int
still_stale(struct cache *c, struct centry *e, int64_t now)
{
	if (c->stale_max > 0 &&
	    entry_age(e, now) < (uint64_t)e->ttl + c->stale_max &&
	    DNS_F_RCODE(dns_get16(e->data + 2)) != DNS_RCODE_SERVFAIL)
		return 1;
	entry_remove(c, e);
	return 0;
}

static void
fill_hit(struct cache *c, struct centry *e, int64_t now,
    struct cache_hit *hit)
{
	TAILQ_REMOVE(&c->lru, e, lru);
	TAILQ_INSERT_HEAD(&c->lru, e, lru);
	hit->answer = e->data;
	hit->len = e->anslen;
	entry_msg(e, &hit->msg);
	hit->age = entry_age(e, now);
	hit->ttl = e->ttl;
	hit->stale = hit->age >= hit->ttl;
}

/*
 * Find key.  On a hit, fills *hit (valid until the next store or flush)
 * and returns 1.  An expired entry counts as a miss; it is dropped
 * unless it is kept for serve-stale.
 */
int
cache_lookup(struct cache *c, const uint8_t *key, size_t keylen,
    uint32_t hash, int64_t now, struct cache_hit *hit)
{
	struct centry	*e;

	if ((e = find(c, key, keylen, hash)) != NULL && expired(e, now)) {
		(void)still_stale(c, e, now);	/* dropped unless kept */
		e = NULL;
	}
	if (e == NULL) {
		c->st.misses++;
		return 0;
	}
	fill_hit(c, e, now, hit);
	c->st.hits++;
	return 1;
}

/*
 * Serve-stale: find key, expired or not, as long as it may still serve.
 * hit->stale says whether it is past its TTL.  Not counted as a hit or
 * a miss: the client's lookup was counted already.
 */
int
cache_lookup_stale(struct cache *c, const uint8_t *key, size_t keylen,
    uint32_t hash, int64_t now, struct cache_hit *hit)
{
	struct centry	*e;

	if ((e = find(c, key, keylen, hash)) == NULL ||
	    (expired(e, now) && !still_stale(c, e, now)))
		return 0;
	fill_hit(c, e, now, hit);
	return 1;
}

/*
 * How long an answer may be kept: the smallest TTL of its answer and
 * authority records; for NXDOMAIN and NODATA the SOA's negative TTL
 * (RFC 2308 5), or nothing without an SOA; a few seconds for SERVFAIL.
 */
uint32_t
cache_ttl(const struct dns_msg *am)
{
	uint32_t	ttl;
	int		rcode = DNS_F_RCODE(am->flags);

	if (am->flags & DNS_F_TC)
		return 0;
	if (rcode == DNS_RCODE_SERVFAIL)
		return CACHE_SERVFAIL_TTL;
	if (rcode == DNS_RCODE_NXDOMAIN ||
	    (rcode == DNS_RCODE_NOERROR && am->ancount == 0)) {
		if (!am->has_soa)
			return 0;
		ttl = am->soa_min;
	} else if (rcode == DNS_RCODE_NOERROR)
		ttl = am->min_ttl;
	else
		return 0;
	return ttl > CACHE_MAX_TTL ? CACHE_MAX_TTL : ttl;
}

/*
 * Prefetch: is an entry stored for ttl seconds, age seconds old, in the
 * last tenth of its life, so that a hit should refresh it?  As unbound
 * has it: from ttl - ttl / 10 on, so never for a TTL under 10 s.
 */
int
cache_prefetch_due(uint32_t ttl, uint32_t age)
{
	uint32_t	from = ttl - ttl / 10;

	return from < ttl && age >= from && age < ttl;
}

/*
 * Keep an answer, am its parse, for as long as cache_ttl() says.
 * Returns 1 if kept; a key or an answer over 65535 bytes never is.
 */
int
cache_store(struct cache *c, const uint8_t *key, size_t keylen,
    uint32_t hash, const uint8_t *ans, size_t anslen,
    const struct dns_msg *am, int64_t now)
{
	struct centry	*e, *old;
	uint32_t	 ttl;
	size_t		 size = keylen + anslen, kept = keylen;
	int		 key_q;

	if ((ttl = cache_ttl(am)) == 0 || keylen > UINT16_MAX ||
	    anslen > UINT16_MAX || size > c->max_bytes || c->max_entries == 0)
		return 0;
	if (am->qname_off != DNS_HDR_LEN ||
	    am->qend != DNS_HDR_LEN + am->qname_len + 4 || am->end > anslen)
		return 0;	/* not what dns_parse() makes of ans */
	key_q = keylen >= am->qend && memcmp(key + DNS_HDR_LEN,
	    ans + DNS_HDR_LEN, am->qend - DNS_HDR_LEN) == 0;
	if (key_q)
		kept -= am->qend - DNS_HDR_LEN;
	if ((old = find(c, key, keylen, hash)) != NULL)
		entry_remove(c, old);
	shrink(c, size);
	if ((e = malloc(CENTRY_SIZE + anslen + kept)) == NULL)
		return 0;
	e->hash = hash;
	e->stored = (uint32_t)now;
	e->ttl = ttl;
	entry_keep_msg(e, am);
	if (key_q)
		e->bits |= CE_KEY_Q;
	e->keylen = (uint16_t)keylen;
	e->anslen = (uint16_t)anslen;
	memcpy(e->data, ans, anslen);
	keep_key(e, key, keylen);
	SLIST_INSERT_HEAD(bucket(c, hash), e, hentry);
	TAILQ_INSERT_HEAD(&c->lru, e, lru);
	c->st.entries++;
	c->st.bytes += size;
	c->st.inserts++;
	return 1;
}

void
cache_get_stats(const struct cache *c, struct cache_stats *st)
{
	*st = c->st;
}
