/*
 * The answer cache, in the listener: a hit never leaves the process.
 * Keyed by the canonical upstream query (lower-cased name, type, class,
 * the RD/CD flags and the DO bit), bounded by entries and by bytes.
 * TTLs count down from the time of storing; negative answers live as
 * long as RFC 2308 says.  For serve-stale (RFC 8767), answers but
 * SERVFAIL may be kept up to a set number of seconds past their TTL;
 * lookups of clients never find them, only cache_lookup_stale() does.
 *
 * Entries are records in a log: segments of memory mapped for the
 * cache, each record added at the end of the newest one.  A full cache
 * makes room at the log's start, oldest first, with a second chance:
 * a record found since it was last passed is moved to the end, one that
 * was not goes.  Removed records (replaced, expired) are left in place
 * and skipped; when they hold more than an eighth of the log, records
 * at its start move to the end a few at a time, and segments left empty
 * are unmapped, but for one kept for the next.  So the cache holds its
 * answers packed, in memory it gives back, and a hit only sets a bit.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/queue.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "sip.h"

/*
 * An entry: 35 bytes before its answer and key on x86-64 (and other
 * LP64 systems), its record rounded up to 8 bytes.  Times are the low
 * 32 bits of the monotonic clock's seconds: an age is their difference
 * modulo 2^32, which is right for 136 years.  A key and an answer are
 * each at most 65535 bytes (DNS_MAX_MSG); cache_store() refuses longer
 * ones, so offsets into an answer fit in 16 bits too.  Of the parsed
 * answer (struct dns_msg), an entry keeps only what a hit cannot read
 * from the answer's header, question and OPT record without walking its
 * records; see entry_msg().  A key is the canonical query, whose
 * question is usually the answer's byte for byte: then the entry keeps
 * only the key's other bytes, its header and OPT record, 23 bytes (see
 * key_equal()).
 */
struct centry {
	struct centry		*hnext;		/* in its hash bucket */
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
#define CE_USED		0x20		/* found since last passed */
#define CE_GONE		0x40		/* removed: a hole in the log */

#define CENTRY_SIZE	offsetof(struct centry, data)
#ifdef __LP64__
_Static_assert(CENTRY_SIZE == 35, "struct centry is not 35 bytes");
#endif
#define REC_ALIGN	8

/*
 * A segment of the log: records from data[] up to used.  In the oldest
 * segment, those before pass have been passed (moved, evicted or
 * skipped).  A segment is SEG_SIZE bytes, or as many pages as a record
 * too long for one needs.
 */
struct seg {
	TAILQ_ENTRY(seg)	 entry;
	size_t			 size;		/* mapped, this header in */
	size_t			 used;
	size_t			 pass;
	uint8_t			 data[];
};

#define SEG_SIZE	(64 * 1024)
#define SEG_ROOM(s)	((s)->size - offsetof(struct seg, data))

/*
 * Making room moves at most PASS_MOVES records to the log's end for an
 * eviction, so that one of a cache found whole since the last pass does
 * not move all of it; the next record goes, found or not.  Holes are
 * cleared while they hold more than an eighth of the log's records and
 * more than a segment, CLEAR_STEPS records at each store.
 */
#define PASS_MOVES	32
#define CLEAR_STEPS	16

struct cache {
	struct centry		**buckets;
	size_t			 nbuckets;	/* power of two */
	TAILQ_HEAD(segs, seg)	 log;		/* oldest first */
	struct seg		*spare;		/* passed, for the next */
	size_t			 held;		/* record bytes in the log */
	size_t			 live;		/* of them, of entries */
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

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	c->nbuckets = 1024;
	while (c->nbuckets < max_entries && c->nbuckets < (1U << 24))
		c->nbuckets <<= 1;
	if ((c->buckets = calloc(c->nbuckets, sizeof(*c->buckets))) == NULL) {
		free(c);
		return NULL;
	}
	TAILQ_INIT(&c->log);
	c->max_entries = max_entries;
	c->max_bytes = max_bytes;
	return c;
}

static struct centry **
bucket(struct cache *c, uint32_t hash)
{
	return &c->buckets[hash & (c->nbuckets - 1)];
}

/* The link to e, which is in its bucket's chain; chains are short. */
static struct centry **
link_to(struct cache *c, const struct centry *e)
{
	struct centry	**l;

	for (l = bucket(c, e->hash); *l != e; l = &(*l)->hnext)
		;
	return l;
}

/* A record's bytes in the log. */
static size_t
rec_size(size_t anslen, size_t kept)
{
	return (CENTRY_SIZE + anslen + kept + REC_ALIGN - 1) &
	    ~(size_t)(REC_ALIGN - 1);
}

/* The bytes of its key e keeps: all, or all but the answer's question. */
static size_t
entry_size(const struct centry *e)
{
	size_t	kept = e->keylen;

	if (e->bits & CE_KEY_Q)
		kept -= e->qend - DNS_HDR_LEN;
	return rec_size(e->anslen, kept);
}

/* Out of its chain; its record stays in the log, a hole. */
static void
entry_remove(struct cache *c, struct centry *e)
{
	*link_to(c, e) = e->hnext;
	e->bits |= CE_GONE;
	c->st.entries--;
	c->st.bytes -= e->keylen + e->anslen;
	c->live -= entry_size(e);
}

/*
 * A new segment at the log's end, with room for need bytes: the spare
 * one if it will do.  A cache that turns over passes a segment for each
 * it fills, and mapping each anew would fault in and zero its pages.
 */
static struct seg *
seg_new(struct cache *c, size_t need)
{
	struct seg	*s;
	size_t		 size = SEG_SIZE;

	if (need > SEG_SIZE - offsetof(struct seg, data))
		size = (offsetof(struct seg, data) + need + SEG_SIZE - 1) /
		    SEG_SIZE * SEG_SIZE;
	if (c->spare != NULL && c->spare->size == size) {
		s = c->spare;
		c->spare = NULL;
	} else {
		if ((s = mmap(NULL, size, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANON, -1, 0)) == MAP_FAILED)
			return NULL;
		s->size = size;
		c->st.mapped += size;
	}
	s->used = s->pass = 0;
	TAILQ_INSERT_TAIL(&c->log, s, entry);
	return s;
}

static void
seg_unmap(struct cache *c, struct seg *s)
{
	c->st.mapped -= s->size;
	(void)munmap(s, s->size);
}

/* Out of the log: the spare if there is none and it is of SEG_SIZE. */
static void
seg_free(struct cache *c, struct seg *s)
{
	TAILQ_REMOVE(&c->log, s, entry);
	if (c->spare == NULL && s->size == SEG_SIZE)
		c->spare = s;
	else
		seg_unmap(c, s);
}

/* A record of size bytes at the log's end; NULL if out of memory. */
static struct centry *
rec_add(struct cache *c, size_t size)
{
	struct seg	*s = TAILQ_LAST(&c->log, segs);
	struct centry	*e;

	if ((s == NULL || SEG_ROOM(s) - s->used < size) &&
	    (s = seg_new(c, size)) == NULL)
		return NULL;
	e = (struct centry *)(s->data + s->used);
	s->used += size;
	c->held += size;
	return e;
}

enum pass_how {
	PASS_MOVE,		/* every entry moves to the end, as it is */
	PASS_UNUSED,		/* evict unless found since the last pass */
	PASS_EVICT		/* evict */
};

enum passed {
	PASSED_NONE,		/* the log is empty */
	PASSED,			/* a hole skipped, an entry evicted, a
				   segment unmapped */
	PASSED_MOVED		/* an entry moved to the end */
};

/* Pass the record at the log's start, as how says. */
static enum passed
pass_one(struct cache *c, enum pass_how how)
{
	struct seg	*s = TAILQ_FIRST(&c->log);
	struct centry	*e, *n;
	size_t		 size;

	if (s == NULL)
		return PASSED_NONE;
	if (s->pass == s->used) {
		if (s == TAILQ_LAST(&c->log, segs)) {
			s->pass = s->used = 0;
			return PASSED_NONE;
		}
		seg_free(c, s);
		return PASSED;
	}
	e = (struct centry *)(s->data + s->pass);
	size = entry_size(e);
	s->pass += size;
	c->held -= size;
	if (e->bits & CE_GONE)
		return PASSED;
	if (how == PASS_EVICT || (how == PASS_UNUSED &&
	    !(e->bits & CE_USED)) || (n = rec_add(c, size)) == NULL) {
		entry_remove(c, e);
		c->st.evictions++;
		return PASSED;
	}
	memcpy(n, e, size);
	*link_to(c, e) = n;
	if (how == PASS_UNUSED)
		n->bits &= ~CE_USED;
	return PASSED_MOVED;
}

void
cache_flush(struct cache *c)
{
	struct seg	*s;

	while ((s = TAILQ_FIRST(&c->log)) != NULL) {
		TAILQ_REMOVE(&c->log, s, entry);
		seg_unmap(c, s);
	}
	if (c->spare != NULL)
		seg_unmap(c, c->spare);
	c->spare = NULL;
	memset(c->buckets, 0, c->nbuckets * sizeof(*c->buckets));
	c->held = c->live = 0;
	c->st.entries = 0;
	c->st.bytes = 0;
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

/*
 * Evict until need entries of need_bytes more fit the bounds: an entry
 * found since the last pass moves to the end instead, PASS_MOVES at
 * most.
 */
static void
shrink(struct cache *c, size_t need, size_t need_bytes)
{
	enum passed	p;
	int		moves = 0;

	while (c->st.entries > 0 && (c->st.entries + need > c->max_entries ||
	    c->st.bytes + need_bytes > c->max_bytes)) {
		p = pass_one(c, moves < PASS_MOVES ? PASS_UNUSED : PASS_EVICT);
		if (p == PASSED_NONE)
			break;
		if (p == PASSED_MOVED)
			moves++;
	}
}

/*
 * Clear the log's holes a few records at a time, while they are more
 * than an eighth of it and more than a segment.
 */
static void
clear_holes(struct cache *c)
{
	int	steps;

	for (steps = 0; steps < CLEAR_STEPS; steps++) {
		if (c->held - c->live <= SEG_SIZE ||
		    c->held - c->live <= c->held / 8 ||
		    pass_one(c, PASS_MOVE) == PASSED_NONE)
			break;
	}
}

/* New bounds; the hash table keeps its size. */
void
cache_resize(struct cache *c, size_t max_entries, size_t max_bytes)
{
	c->max_entries = max_entries;
	c->max_bytes = max_bytes;
	shrink(c, 0, 0);
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

	for (e = *bucket(c, hash); e != NULL; e = e->hnext)
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
fill_hit(struct centry *e, int64_t now, struct cache_hit *hit)
{
	e->bits |= CE_USED;
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
	fill_hit(e, now, hit);
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
	fill_hit(e, now, hit);
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
	struct centry	*e, *old, **b;
	uint32_t	 ttl;
	size_t		 size = keylen + anslen, kept = keylen, rsize;
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
	shrink(c, 1, size);
	clear_holes(c);
	rsize = rec_size(anslen, kept);
	if ((e = rec_add(c, rsize)) == NULL)
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
	b = bucket(c, hash);
	e->hnext = *b;
	*b = e;
	c->live += rsize;
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
