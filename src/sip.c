/*
 * SipHash-2-4, from "SipHash: a fast short-input PRF" (Aumasson and
 * Bernstein, 2012): 2 compression rounds a 64-bit word, 4 finalisation
 * rounds.  OpenBSD has it in libc (SipHash24 in <siphash.h>), used there.
 */
#include <sys/types.h>

#include <endian.h>
#include <stdint.h>
#include <string.h>

#include "sip.h"

#ifdef __OpenBSD__
#include <siphash.h>

uint64_t
sip24(const uint8_t key[SIP_KEY_LEN], const void *p, size_t len)
{
	SIPHASH_KEY	k;

	memcpy(&k, key, sizeof(k));
	return SipHash24(&k, p, len);
}

#else

#define ROTL(x, b)	(((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t
le64(const uint8_t *p)
{
	uint64_t	v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void
sip_round(uint64_t v[4])
{
	v[0] += v[1];
	v[1] = ROTL(v[1], 13);
	v[1] ^= v[0];
	v[0] = ROTL(v[0], 32);
	v[2] += v[3];
	v[3] = ROTL(v[3], 16);
	v[3] ^= v[2];
	v[0] += v[3];
	v[3] = ROTL(v[3], 21);
	v[3] ^= v[0];
	v[2] += v[1];
	v[1] = ROTL(v[1], 17);
	v[1] ^= v[2];
	v[2] = ROTL(v[2], 32);
}

static void
sip_compress(uint64_t v[4], uint64_t m)
{
	v[3] ^= m;
	sip_round(v);
	sip_round(v);
	v[0] ^= m;
}

uint64_t
sip24(const uint8_t key[SIP_KEY_LEN], const void *p, size_t len)
{
	const uint8_t	*in = p;
	uint64_t	 v[4], k0, k1, last;
	size_t		 i, left;

	k0 = le64(key);
	k1 = le64(key + 8);
	v[0] = k0 ^ 0x736f6d6570736575ULL;
	v[1] = k1 ^ 0x646f72616e646f6dULL;
	v[2] = k0 ^ 0x6c7967656e657261ULL;
	v[3] = k1 ^ 0x7465646279746573ULL;
	for (i = 0; i + 8 <= len; i += 8)
		sip_compress(v, le64(in + i));
	/* the last 0-7 bytes, with the length's low byte on top */
	last = (uint64_t)(len & 0xff) << 56;
	for (left = len - i; left > 0; left--)
		last |= (uint64_t)in[i + left - 1] << (8 * (left - 1));
	sip_compress(v, last);
	v[2] ^= 0xff;
	for (i = 0; i < 4; i++)
		sip_round(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

#endif
