/*
 * The answer cache: TTLs, negative entries, eviction, key handling.
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "dns.h"
#include "tap.h"

/* the tables' hash key: any fixed one will do */
static const uint8_t hkey[SIP_KEY_LEN] = { 1 };

/* "www.example.test" in wire form */
static const uint8_t qname[] = { 3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm',
    'p', 'l', 'e', 4, 't', 'e', 's', 't', 0 };

static size_t
put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
	return 2;
}

static size_t
put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xffff);
	return 4;
}

/*
 * An answer: rcode, nan A records with ttl, and an SOA in the authority
 * section when soa_ttl is not 0 (its MINIMUM is soa_min).
 */
static size_t
answer(uint8_t *m, int rcode, int nan, uint32_t ttl, uint32_t soa_ttl,
    uint32_t soa_min)
{
	size_t	o = 0;
	int	i;

	o += put16(m + o, 0x1234);
	o += put16(m + o, 0x8180 | rcode);
	o += put16(m + o, 1);
	o += put16(m + o, (uint16_t)nan);
	o += put16(m + o, soa_ttl ? 1 : 0);
	o += put16(m + o, 0);
	memcpy(m + o, qname, sizeof(qname));
	o += sizeof(qname);
	o += put16(m + o, DNS_T_A);
	o += put16(m + o, DNS_C_IN);
	for (i = 0; i < nan; i++) {
		o += put16(m + o, 0xc00c);
		o += put16(m + o, DNS_T_A);
		o += put16(m + o, DNS_C_IN);
		o += put32(m + o, ttl + (uint32_t)i * 10);
		o += put16(m + o, 4);
		o += put32(m + o, 0xc0000201 + (uint32_t)i);
	}
	if (soa_ttl) {
		o += put16(m + o, 0xc00c + 4);	/* example.test */
		o += put16(m + o, DNS_T_SOA);
		o += put16(m + o, DNS_C_IN);
		o += put32(m + o, soa_ttl);
		o += put16(m + o, 2 + 2 + 20);
		o += put16(m + o, 0xc00c + 4);	/* mname */
		o += put16(m + o, 0xc00c + 4);	/* rname */
		o += put32(m + o, 1);
		o += put32(m + o, 3600);
		o += put32(m + o, 600);
		o += put32(m + o, 86400);
		o += put32(m + o, soa_min);
	}
	return o;
}

static uint32_t
ttl_of_first(const uint8_t *m)
{
	size_t	off = DNS_HDR_LEN + sizeof(qname) + 4 + 2 + 4;

	return (uint32_t)m[off] << 24 | (uint32_t)m[off + 1] << 16 |
	    (uint32_t)m[off + 2] << 8 | m[off + 3];
}

static int
store(struct cache *c, const char *key, const uint8_t *a, size_t alen,
    int64_t now)
{
	struct dns_msg	am;

	if (dns_parse(a, alen, &am) == -1)
		return -1;
	return cache_store(c, (const uint8_t *)key, strlen(key),
	    cache_hash(hkey, (const uint8_t *)key, strlen(key)), a, alen, &am,
	    now);
}

static int
lookup(struct cache *c, const char *key, int64_t now, struct cache_hit *h)
{
	return cache_lookup(c, (const uint8_t *)key, strlen(key),
	    cache_hash(hkey, (const uint8_t *)key, strlen(key)), now, h);
}

static int
lookup_stale(struct cache *c, const char *key, int64_t now,
    struct cache_hit *h)
{
	return cache_lookup_stale(c, (const uint8_t *)key, strlen(key),
	    cache_hash(hkey, (const uint8_t *)key, strlen(key)), now, h);
}

/* Serve-stale (RFC 8767): expired answers kept for a while, if asked. */
static void
test_stale(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	struct cache_stats	 st, st2;
	uint8_t			 a[1024];
	size_t			 alen;
	char			 key[32];
	int			 i, n;

	c = cache_new(100, 100 * CACHE_BYTES_PER_ENTRY);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 300, 0, 0);

	/* off: an expired entry goes, as ever */
	store(c, "s1", a, alen, 1000);
	ok(lookup(c, "s1", 1300, &h) == 0 && lookup_stale(c, "s1", 1300,
	    &h) == 0, "stale off: an expired entry is gone");
	cache_get_stats(c, &st);
	is_int(st.entries, 0, "stale off: and no longer counted");

	/* on: kept up to the maximum age past its TTL */
	cache_set_stale(c, 600);
	store(c, "s1", a, alen, 1000);
	ok(lookup_stale(c, "s1", 1100, &h) == 1 && h.stale == 0 &&
	    h.age == 100, "stale on: a fresh entry is found, not stale");
	ok(lookup(c, "s1", 1300, &h) == 0,
	    "stale on: clients' lookups miss at the TTL");
	cache_get_stats(c, &st);
	is_int(st.entries, 1, "stale on: the expired entry is kept");
	ok(lookup_stale(c, "s1", 1300, &h) == 1 && h.stale == 1 &&
	    h.age == 300, "stale on: a stale lookup finds it, marked stale");
	ok(h.len == alen && memcmp(h.answer, a, alen) == 0,
	    "stale on: the answer as stored");
	cache_get_stats(c, &st);
	ok(lookup_stale(c, "s1", 1899, &h) == 1, "stale on: found until "
	    "max age past the TTL");
	cache_get_stats(c, &st2);
	ok(st2.hits == st.hits && st2.misses == st.misses,
	    "stale lookups count as neither hit nor miss");
	ok(lookup_stale(c, "s1", 1900, &h) == 0, "stale on: not at max age");
	cache_get_stats(c, &st);
	is_int(st.entries, 0, "stale on: dropped past max age");
	store(c, "s1", a, alen, 1000);
	ok(lookup(c, "s1", 1900, &h) == 0 && lookup_stale(c, "s1", 1300,
	    &h) == 0, "a client's lookup past max age drops it too");

	/* a new answer replaces the stale one */
	store(c, "s2", a, alen, 0);
	store(c, "s2", a, alen, 400);
	ok(lookup(c, "s2", 500, &h) == 1 && h.stale == 0 && h.age == 100,
	    "a fresh answer replaces a stale entry");

	/* negative answers may serve stale, SERVFAIL never */
	alen = answer(a, DNS_RCODE_NXDOMAIN, 0, 0, 3600, 60);
	store(c, "nx", a, alen, 0);
	ok(lookup_stale(c, "nx", 100, &h) == 1 && h.stale == 1,
	    "a stale NXDOMAIN is kept");
	alen = answer(a, DNS_RCODE_SERVFAIL, 0, 0, 0, 0);
	is_int(store(c, "sf", a, alen, 0), 1, "a SERVFAIL is stored");
	ok(lookup_stale(c, "sf", 1, &h) == 1 && h.stale == 0,
	    "and found while fresh");
	ok(lookup_stale(c, "sf", CACHE_SERVFAIL_TTL, &h) == 0,
	    "but never stale");

	/* the bounds hold: stale entries are evicted like any other */
	cache_flush(c);
	cache_resize(c, 10, 10 * CACHE_BYTES_PER_ENTRY);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 10, 0, 0);
	for (i = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "old%d", i);
		store(c, key, a, alen, 0);
	}
	for (i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "new%d", i);
		store(c, key, a, alen, 100);
	}
	cache_get_stats(c, &st);
	for (i = 0, n = 0; i < 10; i++) {
		snprintf(key, sizeof(key), "old%d", i);
		n += lookup_stale(c, key, 100, &h);
	}
	ok(st.entries == 10 && n == 5, "stale entries are evicted to make "
	    "room (%zu entries, %d stale left)", st.entries, n);

	/* turned off again: what was kept goes at its next lookup */
	cache_set_stale(c, 0);
	ok(lookup_stale(c, "old9", 100, &h) == 0,
	    "stale off again: a kept entry is no longer found");
	cache_get_stats(c, &st);
	is_int(st.entries, 9, "stale off again: and dropped");
	cache_free(c);
}

/* Prefetch: a hit in the last tenth of the TTL refreshes the entry. */
static void
test_prefetch(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	uint8_t			 a[1024];
	size_t			 alen;

	is_int(cache_prefetch_due(300, 0), 0, "prefetch: not when new");
	is_int(cache_prefetch_due(300, 269), 0, "prefetch: not before 90%%");
	is_int(cache_prefetch_due(300, 270), 1, "prefetch: from 90%% on");
	is_int(cache_prefetch_due(300, 299), 1, "prefetch: to the last second");
	is_int(cache_prefetch_due(300, 300), 0, "prefetch: not once expired");
	is_int(cache_prefetch_due(10, 9), 1, "prefetch: TTL 10 at 9 s");
	is_int(cache_prefetch_due(9, 8), 0, "prefetch: never under 10 s");
	is_int(cache_prefetch_due(0, 0), 0, "prefetch: never for TTL 0");
	is_int(cache_prefetch_due(CACHE_MAX_TTL, CACHE_MAX_TTL - 8640), 1,
	    "prefetch: the longest TTL");

	c = cache_new(10, 10 * CACHE_BYTES_PER_ENTRY);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 300, 0, 0);
	store(c, "p", a, alen, 1000);
	ok(lookup(c, "p", 1280, &h) == 1 && h.ttl == 300 && h.age == 280 &&
	    cache_prefetch_due(h.ttl, h.age), "prefetch: a hit knows its TTL");
	cache_free(c);
}

/*
 * A hit's parsed answer is the stored one's, but for min_ttl and
 * soa_min: an answer with an SOA, an additional record with the top
 * bit of its TTL set, then an OPT record with a client subnet option.
 */
static void
test_msg(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	struct dns_msg		 am;
	uint8_t			 a[1024];
	size_t			 o;

	o = answer(a, DNS_RCODE_NOERROR, 2, 300, 3600, 60);
	put16(a + 10, 2);
	o += put16(a + o, 0xc00c);
	o += put16(a + o, DNS_T_A);
	o += put16(a + o, DNS_C_IN);
	o += put32(a + o, 0x90000000U);
	o += put16(a + o, 4);
	o += put32(a + o, 0xc0000299);
	a[o++] = 0;
	o += put16(a + o, DNS_T_OPT);
	o += put16(a + o, 1232);
	o += put32(a + o, 0x01008000);	/* ext rcode 1, DO */
	o += put16(a + o, 4 + 7);
	o += put16(a + o, DNS_OPT_ECS);
	o += put16(a + o, 7);
	o += put16(a + o, 1);		/* IPv4 */
	a[o++] = 24;
	a[o++] = 0;
	a[o++] = 192;
	a[o++] = 0;
	a[o++] = 2;
	ok(dns_parse(a, o, &am) == 0 && am.edns && am.has_ecs &&
	    am.has_soa && am.ttl_top && am.ar_before_opt == 1 &&
	    am.ext_rcode == 1, "msg: the test answer parses");
	c = cache_new(10, 10 * CACHE_BYTES_PER_ENTRY);
	ok(cache_store(c, (const uint8_t *)"m", 1, 9, a, o, &am, 0) == 1 &&
	    cache_lookup(c, (const uint8_t *)"m", 1, 9, 0, &h) == 1,
	    "msg: stored and found");
	am.min_ttl = am.soa_min = 0;
	ok(memcmp(&h.msg, &am, sizeof(am)) == 0,
	    "msg: the hit's parsed answer is the one stored");

	o = answer(a, DNS_RCODE_NOERROR, 1, 300, 0, 0);
	dns_parse(a, o, &am);
	ok(cache_store(c, (const uint8_t *)"n", 1, 9, a, o, &am, 0) == 1 &&
	    cache_lookup(c, (const uint8_t *)"n", 1, 9, 0, &h) == 1,
	    "msg: without EDNS, stored and found");
	am.min_ttl = 0;
	ok(memcmp(&h.msg, &am, sizeof(am)) == 0,
	    "msg: and its parsed answer is the one stored");
	cache_free(c);
}

/*
 * A key in the canonical form of a query, header, question and OPT,
 * for the answer of answer(): with flags, and the DO bit or not.
 */
static size_t
canon_key(uint8_t *k, uint16_t flags, int dobit)
{
	size_t	o = answer(k, 0, 0, 0, 0, 0);

	put16(k, 0);
	put16(k + 2, flags);
	put16(k + 10, 1);
	k[o++] = 0;
	o += put16(k + o, DNS_T_OPT);
	o += put16(k + o, DNS_EDNS_UDP);
	o += put32(k + o, dobit ? DNS_EDNS_DO : 0);
	o += put16(k + o, 0);
	return o;
}

static int
find_key(struct cache *c, const uint8_t *k, size_t klen)
{
	struct cache_hit	h;

	return cache_lookup(c, k, klen, cache_hash(hkey, k, klen), 0, &h);
}

/*
 * A key whose question is the answer's, byte for byte, is kept without
 * it; its name's case, its flags and its DO bit still tell keys apart.
 */
static void
test_key(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	struct cache_stats	 st;
	struct dns_msg		 am;
	uint8_t			 a[1024], k[512], k2[512];
	size_t			 alen, klen;

	c = cache_new(10, 10 * CACHE_BYTES_PER_ENTRY);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 300, 0, 0);
	dns_parse(a, alen, &am);
	klen = canon_key(k, DNS_F_RD, 1);
	ok(cache_store(c, k, klen, cache_hash(hkey, k, klen), a, alen, &am,
	    0) == 1 && find_key(c, k, klen) == 1, "key: found");
	ok(cache_lookup(c, k, klen, cache_hash(hkey, k, klen), 0, &h) == 1 &&
	    h.len == alen && memcmp(h.answer, a, alen) == 0,
	    "key: with its answer");
	cache_get_stats(c, &st);
	is_int(st.bytes, klen + alen, "key: counts as key and answer");
	memcpy(k2, k, klen);
	k2[DNS_HDR_LEN + 1] = 'W';
	is_int(find_key(c, k2, klen), 0, "key: the name's case counts");
	canon_key(k2, DNS_F_RD, 0);
	is_int(find_key(c, k2, klen), 0, "key: the DO bit counts");
	canon_key(k2, DNS_F_RD | DNS_F_CD, 1);
	is_int(find_key(c, k2, klen), 0, "key: the flags count");
	memcpy(k2, k, klen);
	k2[DNS_HDR_LEN + sizeof(qname) + 1] = DNS_T_AAAA;
	is_int(find_key(c, k2, klen), 0, "key: the type counts");
	is_int(find_key(c, k, klen - 1), 0, "key: a shorter one is another");

	/* an answer whose name is spelt otherwise: the key is kept whole */
	a[DNS_HDR_LEN + 1] = 'W';
	dns_parse(a, alen, &am);
	klen = canon_key(k, 0, 0);
	ok(cache_store(c, k, klen, cache_hash(hkey, k, klen), a, alen, &am,
	    0) == 1 && find_key(c, k, klen) == 1,
	    "key: found with another spelling in the answer");
	k[DNS_HDR_LEN + 1] = 'W';
	is_int(find_key(c, k, klen), 0, "key: and that spelling is another");
	cache_free(c);
}

/*
 * The bounds of an entry: a key and an answer of at most 65535 bytes,
 * times in 32 bits that wrap.
 */
static void
test_bounds(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	struct dns_msg		 am;
	static uint8_t		 big[DNS_MAX_MSG + 1024], a[1024];
	size_t			 alen, biglen, n;
	int64_t			 t = UINT32_MAX - 10LL;

	c = cache_new(10, 1 << 20);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 300, 0, 0);
	dns_parse(a, alen, &am);
	memset(big, 'k', sizeof(big));
	is_int(cache_store(c, big, DNS_MAX_MSG + 1, 7, a, alen, &am, 0), 0,
	    "a key over 65535 bytes is refused");
	is_int(cache_store(c, big, DNS_MAX_MSG, 7, a, alen, &am, 0), 1,
	    "a key of 65535 bytes is kept");
	ok(cache_lookup(c, big, DNS_MAX_MSG, 7, 0, &h) == 1 &&
	    h.len == alen && memcmp(h.answer, a, alen) == 0,
	    "and found, with its answer");
	ok(cache_lookup(c, big, DNS_MAX_MSG - 1, 7, 0, &h) == 0,
	    "a shorter key is another");

	/* an answer of 4097 A records: 65 bytes over the bound */
	biglen = answer(big, DNS_RCODE_NOERROR, 4097, 300, 0, 0);
	ok(biglen > DNS_MAX_MSG && dns_parse(big, biglen, &am) == 0,
	    "a test answer of %zu bytes parses", biglen);
	is_int(cache_store(c, (const uint8_t *)"b", 1, 8, big, biglen, &am,
	    0), 0, "an answer over 65535 bytes is refused");
	n = answer(big, DNS_RCODE_NOERROR, 4092, 300, 0, 0);
	ok(n <= DNS_MAX_MSG && dns_parse(big, n, &am) == 0 &&
	    cache_store(c, (const uint8_t *)"b", 1, 8, big, n, &am, 0) == 1 &&
	    cache_lookup(c, (const uint8_t *)"b", 1, 8, 0, &h) == 1 &&
	    h.len == n, "an answer of %zu bytes is kept", n);
	cache_free(c);

	/* the clock's seconds past 2^32 */
	c = cache_new(10, 10 * CACHE_BYTES_PER_ENTRY);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 300, 0, 0);
	store(c, "w", a, alen, t);
	ok(lookup(c, "w", t + 5, &h) == 1 && h.age == 5 && h.ttl == 300,
	    "before 2^32 s: age 5");
	ok(lookup(c, "w", t + 111, &h) == 1 && h.age == 111,
	    "past 2^32 s: age 111");
	ok(lookup(c, "w", t + 300, &h) == 0, "past 2^32 s: expired at 300");
	cache_set_stale(c, 600);
	store(c, "w", a, alen, t);
	ok(lookup_stale(c, "w", t + 899, &h) == 1 && h.stale == 1 &&
	    h.age == 899, "past 2^32 s: stale until 300 + 600");
	ok(lookup_stale(c, "w", t + 900, &h) == 0, "and not after");
	cache_free(c);
}

/* Name k's answer of version v: 1 to 20 A records, each version its own. */
static size_t
versioned(uint8_t *a, int k, int v)
{
	return answer(a, DNS_RCODE_NOERROR, 1 + (k + v) % 20,
	    100 + (uint32_t)v, 0, 0);
}

/*
 * Of nnames names, how many the cache finds; bad counts those found
 * with another answer than their version's.
 */
static int
find_all(struct cache *c, const int *ver, int nnames, int *bad)
{
	struct cache_hit	h;
	uint8_t			want[512];
	size_t			wlen;
	char			key[32];
	int			k, found = 0;

	for (k = 0; k < nnames; k++) {
		snprintf(key, sizeof(key), "name%d", k);
		if (!lookup(c, key, 0, &h))
			continue;
		found++;
		wlen = versioned(want, k, ver[k]);
		if (h.len != wlen || memcmp(h.answer, want, wlen) != 0)
			(*bad)++;
	}
	return found;
}

/*
 * The log the entries are kept in: entries moved to its end, holes
 * cleared and segments given back, in a run of stores and lookups with
 * a fixed seed.  Every entry is found with its last answer, and the
 * memory stays bounded.
 */
static void
test_log(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	struct cache_stats	 st;
	uint8_t			 a[512], want[512];
	size_t			 alen, wlen, maxmap = 0;
	uint64_t		 evicted;
	char			 key[32];
	int			 ver[300] = { 0 }, i, k, bad = 0, found;
	unsigned		 seed = 1;

	/* 300 names through a cache of 200: a third of the steps store */
	c = cache_new(200, 200 * CACHE_BYTES_PER_ENTRY);
	for (i = 0; i < 30000; i++) {
		seed = seed * 1103515245 + 12345;
		k = (int)((seed >> 8) % 300);
		snprintf(key, sizeof(key), "name%d", k);
		if ((seed >> 20) % 3 == 0) {
			alen = versioned(a, k, ++ver[k]);
			if (store(c, key, a, alen, 0) != 1)
				bad++;
		} else if (lookup(c, key, 0, &h)) {
			wlen = versioned(want, k, ver[k]);
			if (h.len != wlen || memcmp(h.answer, want, wlen) != 0)
				bad++;
		}
	}
	cache_get_stats(c, &st);
	found = find_all(c, ver, 300, &bad);
	ok(bad == 0 && st.entries == 200 && (size_t)found == st.entries,
	    "log: a full cache finds each of its %zu entries with its last "
	    "answer (%d found, %d wrong)", st.entries, found, bad);
	ok(st.evictions > 0 && st.mapped > 0 && st.mapped <= 256 * 1024,
	    "log: %llu evictions, %zu KB mapped",
	    (unsigned long long)st.evictions, st.mapped / 1024);

	/* 100 names answered anew again and again: each leaves a hole */
	cache_flush(c);
	cache_resize(c, 1000, 1000 * CACHE_BYTES_PER_ENTRY);
	cache_get_stats(c, &st);
	evicted = st.evictions;
	memset(ver, 0, sizeof(ver));
	for (i = 0; i < 30000; i++) {
		k = i % 100;
		snprintf(key, sizeof(key), "name%d", k);
		alen = versioned(a, k, ++ver[k]);
		if (store(c, key, a, alen, 0) != 1)
			bad++;
		cache_get_stats(c, &st);
		if (st.mapped > maxmap)
			maxmap = st.mapped;
	}
	found = find_all(c, ver, 100, &bad);
	ok(bad == 0 && found == 100 && st.entries == 100 &&
	    st.evictions == evicted, "log: 30000 answers to 100 names, each found "
	    "with its last (%d found, %d wrong)", found, bad);
	ok(maxmap <= 256 * 1024, "log: their holes are cleared, at most "
	    "%zu KB mapped", maxmap / 1024);

	/* a smaller cache gives its memory back, an empty one all of it */
	cache_resize(c, 10, 10 * CACHE_BYTES_PER_ENTRY);
	cache_get_stats(c, &st);
	found = find_all(c, ver, 100, &bad);
	ok(st.entries == 10 && found == 10 && bad == 0 &&
	    st.mapped <= 2 * 64 * 1024, "log: resized to 10 entries, "
	    "%d found, %zu KB mapped", found, st.mapped / 1024);
	cache_flush(c);
	cache_get_stats(c, &st);
	ok(st.entries == 0 && st.bytes == 0 && st.mapped == 0,
	    "log: flushed, nothing mapped");
	alen = versioned(a, 1, 1);
	ok(store(c, "name1", a, alen, 0) == 1 &&
	    lookup(c, "name1", 0, &h) == 1 && h.len == alen,
	    "log: and it keeps answers again");
	cache_free(c);
}

int
main(void)
{
	struct cache		*c;
	struct cache_hit	 h;
	struct cache_stats	 st;
	struct dns_msg		 am, qm;
	uint8_t			 a[1024], out[1024], q[512];
	size_t			 alen, len, qlen;
	char			 key[32];
	int			 i;

	plan(91);

	c = cache_new(100, 100 * CACHE_BYTES_PER_ENTRY);
	ok(c != NULL, "cache_new");

	/* positive answer: kept for the smallest TTL of its records */
	alen = answer(a, DNS_RCODE_NOERROR, 2, 300, 0, 0);
	ok(dns_parse(a, alen, &am) == 0, "test answer parses");
	is_int(cache_ttl(&am), 300, "ttl is the smallest of the records");
	is_int(store(c, "k1", a, alen, 1000), 1, "stored");
	ok(lookup(c, "k1", 1000, &h) == 1 && h.age == 0, "hit at once, age 0");
	ok(lookup(c, "k1", 1100, &h) == 1 && h.age == 100, "hit later, age 100");
	ok(lookup(c, "K1", 1100, &h) == 0, "the key is compared exactly");
	ok(lookup(c, "k1", 1300, &h) == 0, "expired at its TTL");
	ok(lookup(c, "k1", 1100, &h) == 0, "an expired entry is gone");

	/* the served copy's TTLs count down */
	store(c, "k2", a, alen, 2000);
	lookup(c, "k2", 2040, &h);
	qlen = answer(q, 0, 0, 0, 0, 0);
	q[2] = 0x01;	/* a query: RD */
	q[3] = 0x00;
	ok(dns_parse(q, qlen, &qm) == 0, "test query parses");
	len = dns_client_answer(out, sizeof(out), h.answer, h.len, &h.msg, q,
	    &qm, h.age, DNS_MAX_MSG);
	ok(len > 0 && ttl_of_first(out) == 260, "served TTL 300 - 40 = %u",
	    len > 0 ? ttl_of_first(out) : 0);

	/* negative answers: the SOA's negative TTL (RFC 2308) */
	alen = answer(a, DNS_RCODE_NXDOMAIN, 0, 0, 3600, 60);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), 60, "NXDOMAIN: min(SOA TTL, MINIMUM)");
	alen = answer(a, DNS_RCODE_NOERROR, 0, 0, 30, 900);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), 30, "NODATA: min(SOA TTL, MINIMUM)");
	alen = answer(a, DNS_RCODE_NXDOMAIN, 0, 0, 0, 0);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), 0, "NXDOMAIN without SOA is not cached");
	is_int(store(c, "k3", a, alen, 0), 0, "and store refuses it");
	alen = answer(a, DNS_RCODE_SERVFAIL, 0, 0, 0, 0);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), CACHE_SERVFAIL_TTL, "SERVFAIL kept briefly");
	alen = answer(a, DNS_RCODE_REFUSED, 0, 0, 0, 0);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), 0, "REFUSED is not cached");
	alen = answer(a, DNS_RCODE_NOERROR, 1, 0x90000000U, 0, 0);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), 0, "a TTL with the top bit set counts as 0");
	alen = answer(a, DNS_RCODE_NOERROR, 1, 10 * 86400, 0, 0);
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), CACHE_MAX_TTL, "TTLs are capped");
	a[3] |= 0x00;
	a[2] |= DNS_F_TC >> 8;
	dns_parse(a, alen, &am);
	is_int(cache_ttl(&am), 0, "a truncated answer is not cached");

	/* replacing an entry */
	alen = answer(a, DNS_RCODE_NOERROR, 1, 100, 0, 0);
	store(c, "k4", a, alen, 0);
	alen = answer(a, DNS_RCODE_NOERROR, 1, 500, 0, 0);
	store(c, "k4", a, alen, 0);
	ok(lookup(c, "k4", 200, &h) == 1, "a newer answer replaces the old");
	cache_get_stats(c, &st);
	is_int(st.entries, 2, "two entries (k2, k4)");

	/* eviction by entries: the oldest first, one found since kept */
	cache_flush(c);
	cache_get_stats(c, &st);
	is_int(st.entries, 0, "flush empties it");
	for (i = 0; i < 150; i++) {
		snprintf(key, sizeof(key), "n%d", i);
		store(c, key, a, alen, 0);
		if (i >= 1)
			lookup(c, "n0", 0, &h);	/* keep n0 recently used */
	}
	cache_get_stats(c, &st);
	ok(st.entries == 100 && st.evictions == 50,
	    "bounded at 100 entries (%zu, %llu evicted)", st.entries,
	    (unsigned long long)st.evictions);
	ok(lookup(c, "n0", 0, &h) == 1 && lookup(c, "n1", 0, &h) == 0,
	    "the recently used entry stayed, an old one went");

	/* eviction by bytes */
	cache_resize(c, 100, 3 * (alen + 4));
	cache_get_stats(c, &st);
	ok(st.entries <= 3 && st.bytes <= 3 * (alen + 4),
	    "bounded by bytes after a resize (%zu entries, %zu bytes)",
	    st.entries, st.bytes);
	cache_free(c);

	c = cache_new(0, 0);
	is_int(store(c, "x", a, alen, 0), 0, "a zero-size cache keeps nothing");
	cache_free(c);

	test_stale();
	test_prefetch();
	test_bounds();
	test_log();
	test_msg();
	test_key();
	return done();
}
