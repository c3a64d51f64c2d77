/*
 * SipHash-2-4, the keyed PRF behind "log queries anonymize": the
 * published test vectors, a key that decides every output, and no
 * relation between outputs that would let one known client's line give
 * away another's address.
 *
 * The hash this replaced was FNV-1a and an xorshift-multiply finish
 * under a 32-bit key: every step invertible, so one (address, hash) pair
 * gave the key by a search of 2^32, and the key every other address in
 * the log by inverting the steps.  SipHash-2-4 has a 128-bit key; with
 * it unknown, its outputs are indistinguishable from random ones, and no
 * number of (input, output) pairs is known to help find it faster than
 * trying every key.  The tests below check the properties a simple
 * attack would use: linear (XOR) relations between outputs, and output
 * bits that follow single input or key bits.
 */
#include <sys/types.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sip.h"
#include "tap.h"

/* The reference vectors: key 00..0f, message 00..(n-1), n = 0..15. */
static const uint64_t vectors[16] = {
	0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL, 0x0d6c8009d9a94f5aULL,
	0x85676696d7fb7e2dULL, 0xcf2794e0277187b7ULL, 0x18765564cd99a68dULL,
	0xcbc9466e58fee3ceULL, 0xab0200f58b01d137ULL, 0x93f5f5799a932462ULL,
	0x9e0082df0ba9e4b0ULL, 0x7a5dbbc594ddb9f3ULL, 0xf4b32f46226bada7ULL,
	0x751e8fbc860ee5fbULL, 0x14ea5627c0843d90ULL, 0xf723ca908e7af2eeULL,
	0xa129ca6149be45e5ULL
};

static int
bits(uint64_t x)
{
	int	n = 0;

	for (; x; x &= x - 1)
		n++;
	return n;
}

static void
test_vectors(void)
{
	uint8_t	key[SIP_KEY_LEN], msg[16];
	int	i, bad = -1;

	for (i = 0; i < 16; i++)
		key[i] = msg[i] = (uint8_t)i;
	for (i = 0; i < 16; i++)
		if (sip24(key, msg, (size_t)i) != vectors[i] && bad == -1)
			bad = i;
	ok(bad == -1, "SipHash-2-4 reference vectors, lengths 0 to 15 "
	    "(first wrong: %d)", bad);
}

/* Same key, same output; another key, another output, for every input. */
static void
test_keys(void)
{
	uint8_t		k1[SIP_KEY_LEN], k2[SIP_KEY_LEN], a[17];
	int		i, same = 1, differ = 1;

	arc4random_buf(k1, sizeof(k1));
	memcpy(k2, k1, sizeof(k2));
	k2[15] ^= 0x80;		/* one bit apart */
	for (i = 0; i < 1000; i++) {
		arc4random_buf(a, sizeof(a));
		if (sip24(k1, a, sizeof(a)) != sip24(k1, a, sizeof(a)))
			same = 0;
		if (sip24(k1, a, sizeof(a)) == sip24(k2, a, sizeof(a)))
			differ = 0;
	}
	ok(same, "one key: the same output for the same address, 1000 times");
	ok(differ, "two keys one bit apart: different outputs for 1000 "
	    "addresses");
}

/*
 * An XOR-linear (or affine) hash has h(a) ^ h(b) ^ h(a ^ b) ^ h(0) == 0
 * for all a and b: from a few known lines, the hash of any address is
 * computed without the key.  None of 1000 random triples may hold it.
 */
static void
test_not_linear(void)
{
	uint8_t	key[SIP_KEY_LEN], a[5], b[5], c[5], z[5] = { 4 };
	int	i, j, holds = 0;

	arc4random_buf(key, sizeof(key));
	for (i = 0; i < 1000; i++) {
		arc4random_buf(a + 1, 4);
		arc4random_buf(b + 1, 4);
		a[0] = b[0] = c[0] = 4;
		for (j = 1; j < 5; j++)
			c[j] = a[j] ^ b[j];
		if ((sip24(key, a, 5) ^ sip24(key, b, 5) ^ sip24(key, c, 5) ^
		    sip24(key, z, 5)) == 0)
			holds++;
	}
	ok(holds == 0, "no XOR relation between the outputs of a, b, a^b "
	    "and 0 (held %d times of 1000)", holds);
}

/*
 * One input bit, or one key bit, changes each output bit with
 * probability 1/2: about 32 of 64 on average, so neighbouring addresses
 * (the same /24) and neighbouring keys say nothing of each other.
 */
static void
test_avalanche(void)
{
	uint8_t		key[SIP_KEY_LEN], k2[SIP_KEY_LEN], a[5], b[5];
	uint64_t	h;
	long		in_sum = 0, key_sum = 0;
	int		i, bit, n = 0, m = 0;

	for (i = 0; i < 256; i++) {
		arc4random_buf(key, sizeof(key));
		arc4random_buf(a, sizeof(a));
		h = sip24(key, a, sizeof(a));
		for (bit = 0; bit < 40; bit++, n++) {
			memcpy(b, a, sizeof(b));
			b[bit / 8] ^= (uint8_t)(1 << (bit % 8));
			in_sum += bits(h ^ sip24(key, b, sizeof(b)));
		}
		for (bit = 0; bit < 128; bit++, m++) {
			memcpy(k2, key, sizeof(k2));
			k2[bit / 8] ^= (uint8_t)(1 << (bit % 8));
			key_sum += bits(h ^ sip24(k2, a, sizeof(a)));
		}
	}
	ok(in_sum * 100 / n >= 3100 && in_sum * 100 / n <= 3300,
	    "one input bit flips %ld.%02ld of 64 output bits on average",
	    in_sum * 100 / n / 100, in_sum * 100 / n % 100);
	ok(key_sum * 100 / m >= 3100 && key_sum * 100 / m <= 3300,
	    "one key bit flips %ld.%02ld of 64 output bits on average",
	    key_sum * 100 / m / 100, key_sum * 100 / m % 100);
}

int
main(void)
{
	plan(6);
	test_vectors();
	test_keys();
	test_not_linear();
	test_avalanche();
	return done();
}
