/*
 * A client's query: validation, the query sent upstream and its lower
 * case form, and the synthesized error answer, on arbitrary bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t	 out[DNS_MAX_MSG];
	struct dns_msg	 qm, om;
	uint8_t		*small;
	size_t		 n, outlen, i;
	int		 rc;
	char		 text[DNS_MAX_NAME * 4 + 2];

	rc = dns_check_query(data, size, &qm);
	if (rc == -1)
		return 0;
	if (rc == DNS_RCODE_NOERROR) {
		n = dns_make_query(out, sizeof(out), data, &qm, 0xabcd,
		    DNS_PAD_BLOCK);
		/* what goes upstream is a well-formed padded query */
		if (n == 0 || n % DNS_PAD_BLOCK != 0 ||
		    dns_check_query(out, n, &om) != DNS_RCODE_NOERROR ||
		    om.id != 0xabcd || om.has_ecs || !om.edns ||
		    om.qname_len != qm.qname_len)
			abort();
		n = dns_make_query(out, sizeof(out), data, &qm, 1, 0);
		if (n != qm.qend + 11)
			abort();
		/* the listener's key: the same name, in lower case */
		if (dns_qname_lower(out, n, &qm) == -1 ||
		    !dns_name_equal(out + qm.qname_off, data + qm.qname_off,
		    qm.qname_len))
			abort();
		for (i = qm.qname_off; i < qm.qname_off + qm.qname_len; i++)
			if (out[i] >= 'A' && out[i] <= 'Z')
				abort();
		/* a tight output buffer, exactly sized for ASan */
		outlen = qm.qend + (size % 160);
		if ((small = malloc(outlen)) == NULL)
			return 0;
		n = dns_make_query(small, outlen, data, &qm, 2, DNS_PAD_BLOCK);
		if (n > outlen)
			abort();
		free(small);
		(void)dns_name_to_text(data + qm.qname_off, qm.qname_len,
		    text, sizeof(text));
		(void)dns_name_to_text(data + qm.qname_off, qm.qname_len,
		    text, 1 + size % 32);
	}

	n = dns_make_error(out, sizeof(out), data, size, &qm,
	    rc == DNS_RCODE_NOERROR ? DNS_RCODE_REFUSED : rc, EDE_PROHIBITED,
	    "refused by the access list", size & 1);
	if (n < DNS_HDR_LEN || !(dns_get16(out + 2) & DNS_F_QR) ||
	    dns_get16(out) != dns_get16(data))
		abort();
	/* the question if it parsed, then an OPT if the query had one */
	if (dns_get16(out + 4) == 1 && (dns_parse(out, n, &om) == -1 ||
	    om.edns != qm.edns || (om.edns && om.edns_version != 0) ||
	    (rc == DNS_RCODE_BADVERS && (om.ext_rcode != 1 ||
	    DNS_F_RCODE(om.flags) != 0))))
		abort();
	if (dns_get16(out + 4) == 0 && n != DNS_HDR_LEN &&
	    (!qm.edns || n < DNS_HDR_LEN + 11 || out[DNS_HDR_LEN] != 0 ||
	    dns_get16(out + 13) != DNS_T_OPT ||
	    n != DNS_HDR_LEN + 11 + (size_t)dns_get16(out + 21)))
		abort();

	outlen = size % 300;
	if ((small = malloc(outlen ? outlen : 1)) == NULL)
		return 0;
	n = dns_make_error(small, outlen, data, size, &qm,
	    DNS_RCODE_SERVFAIL, (int)(size % 30) - 1, "upstream unreachable",
	    1);
	if (n > outlen)
		abort();
	free(small);
	return 0;
}
