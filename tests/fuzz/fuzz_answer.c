/*
 * An upstream's answer: parsing, matching against the question asked,
 * and the rewrite for the client, fresh or stale, with small output
 * buffers.  The
 * queries are a fixed one and one derived from the answer's own question
 * (with its case changed) so that the rewrite is reached often.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* www.example.com A IN, EDNS udp 1232 with DO */
static const uint8_t fixed_q[] = {
	0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o',
	'm', 0, 0x00, 0x01, 0x00, 0x01,
	0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0x80, 0x00, 0x00, 0x00,
};

static void
client(const uint8_t *a, size_t alen, const struct dns_msg *am,
    const uint8_t *q, size_t qlen, uint32_t age, size_t outlen, size_t maxlen)
{
	struct dns_msg	 qm, om;
	uint8_t		*out;
	size_t		 n;
	int		 stale;

	if (dns_check_query(q, qlen, &qm) != DNS_RCODE_NOERROR)
		return;
	if (!dns_answers_question(a, alen, am, q, qlen, &qm))
		return;
	if ((out = malloc(outlen ? outlen : 1)) == NULL)
		return;
	for (stale = 0; stale <= 1; stale++) {
		n = stale ? dns_stale_answer(out, outlen, a, alen, am, q, &qm,
		    30, maxlen) : dns_client_answer(out, outlen, a, alen, am,
		    q, &qm, age, maxlen);
		if (n > outlen)
			abort();
		if (n == 0)
			continue;
		/* the client gets its own ID and a parseable message */
		if (dns_get16(out) != qm.id)
			abort();
		if (dns_parse(out, n, &om) == -1)
			abort();
		if (n > maxlen && n > am->qend + 11 + (stale ? 6 : 0))
			abort();
	}
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dns_msg	 am;
	uint8_t		 q[DNS_HDR_LEN + DNS_MAX_NAME + 4 + 11];
	size_t		 qlen, i, outlen, maxlen;
	uint32_t	 age;

	if (dns_parse(data, size, &am) == -1)
		return 0;
	{
		struct dns_msg	cut;

		/* a parsed answer still parses when cut where it ends */
		if (dns_parse(data, am.end, &cut) == -1)
			abort();
	}
	{
		static uint8_t	kept[DNS_MAX_MSG];
		struct dns_msg	km;
		size_t		klen;

		/* as the cache keeps it: parses, no longer, same records */
		klen = dns_cache_form(kept, sizeof(kept), data, &am);
		if (klen == 0 || klen > am.end ||
		    dns_parse(kept, klen, &km) == -1 || km.end != klen ||
		    km.ancount != am.ancount || km.edns != am.edns ||
		    km.min_ttl != am.min_ttl)
			abort();
		if (dns_cache_form(kept, am.end / 2, data, &am) > am.end / 2)
			abort();
		client(kept, klen, &km, fixed_q, sizeof(fixed_q), 0, 65535,
		    512);
	}
	age = size > 0 ? data[size - 1] * 17u : 0;
	outlen = 64 + (size * 7) % 700;
	maxlen = size > 1 && (data[size - 2] & 1) ? 512 : 100;

	client(data, size, &am, fixed_q, sizeof(fixed_q), age, outlen, maxlen);
	client(data, size, &am, fixed_q, sizeof(fixed_q) - 11, age, 65535,
	    512);

	/* a query for the answer's own question, case flipped */
	if (am.qend > sizeof(q) - 11)
		return 0;
	memcpy(q, data, am.qend);
	q[2] &= 0x7f;		/* QR=0 */
	q[2] &= 0x87;		/* opcode QUERY */
	q[3] &= 0x10;		/* CD only */
	memset(q + 6, 0, 6);
	for (i = am.qname_off; i < am.qname_off + am.qname_len; i++)
		if (isalpha(q[i]) && (i & 1))
			q[i] ^= 0x20;
	qlen = am.qend;
	client(data, size, &am, q, qlen, age, outlen, maxlen);
	/* with EDNS */
	memcpy(q + qlen, fixed_q + sizeof(fixed_q) - 11, 11);
	q[11] = 1;
	client(data, size, &am, q, qlen + 11, age, outlen, 4096);
	return 0;
}
