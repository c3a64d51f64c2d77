/*
 * DNS wire format parsing and the few rewrites a forwarder makes.
 * Nothing here trusts a length or offset it has not checked against the
 * message's length.
 */
#include <sys/types.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "dns.h"

#define OPT_FIXED	11	/* root name, type, class, ttl, rdlen */
#define MAX_PTR_HOPS	64

/* The UDP payload size the OPT records of answers to clients offer. */
static uint16_t	client_udp = DNS_EDNS_UDP;

void
dns_set_udp_size(uint16_t size)
{
	if (size < DNS_MIN_UDP)
		size = DNS_MIN_UDP;
	if (size > DNS_EDNS_UDP_MAX)
		size = DNS_EDNS_UDP_MAX;
	client_udp = size;
}

uint16_t
dns_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

void
dns_put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = (v >> 16) & 0xff;
	p[2] = (v >> 8) & 0xff;
	p[3] = v & 0xff;
}

/*
 * Step over a possibly compressed name at *off.  A pointer must point
 * strictly backwards, and the name it leads to must end before the
 * pointer itself: so following pointers always ends, and a name can
 * never run into the bytes that follow it (a TTL, the next record).
 * The expanded name must fit in 255 bytes.
 */
static int
skip_name(const uint8_t *m, size_t len, size_t *off)
{
	size_t	pos = *off, end = 0, total = 0, bound = len;
	int	jumped = 0, hops = 0;
	uint8_t	l;

	for (;;) {
		if (pos >= bound)
			return -1;
		l = m[pos];
		if ((l & 0xc0) == 0xc0) {
			size_t ptr;

			if (pos + 1 >= bound || ++hops > MAX_PTR_HOPS)
				return -1;
			ptr = (size_t)(l & 0x3f) << 8 | m[pos + 1];
			if (ptr >= pos || ptr < DNS_HDR_LEN)
				return -1;
			if (!jumped)
				end = pos + 2;
			jumped = 1;
			bound = pos;
			pos = ptr;
			continue;
		}
		if (l & 0xc0)
			return -1;
		total += (size_t)l + 1;
		if (total > DNS_MAX_NAME)
			return -1;
		if (l == 0) {
			pos++;
			break;
		}
		if (pos + 1 + l > bound)
			return -1;
		pos += 1 + (size_t)l;
	}
	*off = jumped ? end : pos;
	return 0;
}

/* Length of an uncompressed name at off, or 0 if it is not one. */
static size_t
plain_name_len(const uint8_t *m, size_t len, size_t off)
{
	size_t	pos = off;
	uint8_t	l;

	while (pos < len) {
		l = m[pos];
		if (l & 0xc0)
			return 0;
		if (pos - off + l + 1 > DNS_MAX_NAME)
			return 0;
		if (l == 0)
			return pos - off + 1;
		pos += 1 + (size_t)l;
	}
	return 0;
}

static int
parse_opt(const uint8_t *m, size_t rr, const uint8_t *rd, size_t rdlen,
    struct dns_msg *msg)
{
	size_t	 o = 0;

	if (msg->edns || m[rr] != 0)	/* one OPT, owned by the root */
		return -1;
	msg->edns = 1;
	msg->udpsize = dns_get16(m + rr + 3);
	msg->ext_rcode = m[rr + 5];
	msg->edns_version = m[rr + 6];
	msg->edns_flags = dns_get16(m + rr + 7);
	while (o < rdlen) {
		uint16_t code, olen;

		if (rdlen - o < 4)
			return -1;
		code = dns_get16(rd + o);
		olen = dns_get16(rd + o + 2);
		if (rdlen - o - 4 < olen)
			return -1;
		if (code == DNS_OPT_ECS)
			msg->has_ecs = 1;
		o += 4 + (size_t)olen;
	}
	return 0;
}

/* Walk every resource record after the question. */
int
dns_walk_rrs(const uint8_t *m, size_t len, const struct dns_msg *msg,
    dns_rr_cb cb, void *arg)
{
	size_t		 off = msg->qend, rr, n, count[3];
	enum dns_section s;

	count[DNS_S_AN] = msg->ancount;
	count[DNS_S_NS] = msg->nscount;
	count[DNS_S_AR] = msg->arcount;
	for (s = DNS_S_AN; s <= DNS_S_AR; s++) {
		for (n = 0; n < count[s]; n++) {
			uint16_t type, rdlen;

			rr = off;
			if (skip_name(m, len, &off) == -1 || len - off < 10)
				return -1;
			type = dns_get16(m + off);
			rdlen = dns_get16(m + off + 8);
			if (len - off - 10 < rdlen)
				return -1;
			if (cb != NULL && cb(arg, m, s, rr, off + 4, type,
			    off + 10, rdlen) == -1)
				return -1;
			off += 10 + (size_t)rdlen;
		}
	}
	return (int)off;
}

static int
parse_rr_cb(void *arg, const uint8_t *m, enum dns_section s, size_t rr,
    size_t ttl_off, uint16_t type, size_t rd_off, size_t rdlen)
{
	struct dns_msg	*msg = arg;
	const uint8_t	*rd = m + rd_off;
	uint32_t	 ttl;

	if (type == DNS_T_OPT) {
		if (s != DNS_S_AR)
			return -1;
		if (parse_opt(m, rr, rd, rdlen, msg) == -1)
			return -1;
		msg->opt_off = rr;
		msg->opt_end = ttl_off + 6 + rdlen;
		return 0;
	}
	ttl = get32(m + ttl_off);
	if (ttl > 0x7fffffff) {		/* RFC 2181 8: treat as zero */
		msg->ttl_top = 1;
		ttl = 0;
	}
	if (s == DNS_S_AR) {
		if (!msg->edns)
			msg->ar_before_opt++;
		return 0;
	}
	if (ttl < msg->min_ttl)
		msg->min_ttl = ttl;
	if (type == DNS_T_SOA && s == DNS_S_NS && rdlen >= 20) {
		uint32_t minimum = get32(rd + rdlen - 4);

		msg->has_soa = 1;
		msg->soa_min = minimum < ttl ? minimum : ttl;
	}
	return 0;
}

/* The header's ID, flags and counts; m holds DNS_HDR_LEN bytes. */
void
dns_read_header(const uint8_t *m, struct dns_msg *msg)
{
	msg->id = dns_get16(m);
	msg->flags = dns_get16(m + 2);
	msg->qdcount = dns_get16(m + 4);
	msg->ancount = dns_get16(m + 6);
	msg->nscount = dns_get16(m + 8);
	msg->arcount = dns_get16(m + 10);
}

/*
 * Parse a whole message with exactly one question.  Returns 0, or -1 if
 * anything is malformed.  Trailing bytes after the last record are
 * ignored (msg->end says where the message really ends).
 */
int
dns_parse(const uint8_t *m, size_t len, struct dns_msg *msg)
{
	size_t	off;
	int	end;

	memset(msg, 0, sizeof(*msg));
	if (len < DNS_HDR_LEN)
		return -1;
	dns_read_header(m, msg);
	msg->min_ttl = UINT32_MAX;
	if (msg->qdcount != 1)
		return -1;
	off = DNS_HDR_LEN;
	if ((msg->qname_len = plain_name_len(m, len, off)) == 0)
		return -1;
	msg->qname_off = off;
	off += msg->qname_len;
	if (len - off < 4)
		return -1;
	msg->qtype = dns_get16(m + off);
	msg->qclass = dns_get16(m + off + 2);
	msg->qend = off + 4;
	if ((end = dns_walk_rrs(m, len, msg, parse_rr_cb, msg)) == -1)
		return -1;
	msg->end = (size_t)end;
	if (msg->min_ttl == UINT32_MAX)
		msg->min_ttl = 0;
	return 0;
}

/* The first question, if it is whole and its name uncompressed. */
static void
scan_question(const uint8_t *m, size_t len, struct dns_msg *msg)
{
	size_t	qlen;

	if (msg->qdcount == 0 ||
	    (qlen = plain_name_len(m, len, DNS_HDR_LEN)) == 0 ||
	    len - DNS_HDR_LEN - qlen < 4)
		return;
	msg->qname_off = DNS_HDR_LEN;
	msg->qname_len = qlen;
	msg->qtype = dns_get16(m + DNS_HDR_LEN + qlen);
	msg->qclass = dns_get16(m + DNS_HDR_LEN + qlen + 2);
	msg->qend = DNS_HDR_LEN + qlen + 4;
}

/*
 * What an answer of our own needs from a query that is not forwarded,
 * well formed or not: the header, the first question if it is whole,
 * and whether the message has an OPT record anywhere (its UDP size, DO
 * bit and version from the first one), however malformed that record
 * is and whatever follows it (RFC 6891 7: an answer to a query with an
 * OPT record carries one).  Reading stops at the first record that
 * does not parse.
 */
static void
scan_query(const uint8_t *m, size_t len, struct dns_msg *msg)
{
	size_t		off = DNS_HDR_LEN, n, total;
	uint16_t	rdlen;

	memset(msg, 0, sizeof(*msg));
	dns_read_header(m, msg);
	scan_question(m, len, msg);
	for (n = 0; n < msg->qdcount; n++) {
		if (skip_name(m, len, &off) == -1 || len - off < 4)
			return;
		off += 4;
	}
	total = (size_t)msg->ancount + msg->nscount + msg->arcount;
	for (n = 0; n < total; n++) {
		if (skip_name(m, len, &off) == -1 || len - off < 10)
			return;
		if (dns_get16(m + off) == DNS_T_OPT && !msg->edns) {
			msg->edns = 1;
			msg->udpsize = dns_get16(m + off + 2);
			msg->ext_rcode = m[off + 4];
			msg->edns_version = m[off + 5];
			msg->edns_flags = dns_get16(m + off + 6);
		}
		rdlen = dns_get16(m + off + 8);
		if (len - off - 10 < rdlen)
			return;
		off += 10 + (size_t)rdlen;
	}
}

/*
 * Validate a client's query.  Returns -1 when it must be dropped without
 * an answer (too short to answer, or a response), else the rcode to
 * answer with: NOERROR means forward it.  In that order: NOTIFY is
 * REFUSED and every other opcode but QUERY NOTIMP; a message that does
 * not parse, with records in the answer or authority section, with TC
 * set or asking for type OPT is FORMERR (RFC 1035 4.1.1, RFC 6891
 * 6.1.1); an EDNS version other than 0 is BADVERS (RFC 6891 6.1.3);
 * zone transfers are REFUSED.  When it is not NOERROR, msg holds what
 * the answer needs (see scan_query()).
 */
int
dns_check_query(const uint8_t *m, size_t len, struct dns_msg *msg)
{
	uint16_t	flags;

	memset(msg, 0, sizeof(*msg));
	if (len < DNS_HDR_LEN)
		return -1;
	flags = dns_get16(m + 2);
	if (flags & DNS_F_QR)
		return -1;
	if (DNS_F_OPCODE(flags) != DNS_OPCODE_QUERY) {
		scan_query(m, len, msg);
		return DNS_F_OPCODE(flags) == DNS_OPCODE_NOTIFY ?
		    DNS_RCODE_REFUSED : DNS_RCODE_NOTIMP;
	}
	if (dns_parse(m, len, msg) == -1 || msg->ancount != 0 ||
	    msg->nscount != 0 || (flags & DNS_F_TC) ||
	    msg->qtype == DNS_T_OPT) {
		scan_query(m, len, msg);
		return DNS_RCODE_FORMERR;
	}
	if (msg->edns && msg->edns_version != 0)
		return DNS_RCODE_BADVERS;
	if (msg->qtype == DNS_T_AXFR || msg->qtype == DNS_T_IXFR)
		return DNS_RCODE_REFUSED;
	return DNS_RCODE_NOERROR;
}

/* Compare two uncompressed wire names of length len, ignoring case. */
int
dns_name_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
	size_t	i;

	for (i = 0; i < len; i++)
		if (tolower(a[i]) != tolower(b[i]))
			return 0;
	return 1;
}

/*
 * The question name in lower case, in place: the letters A to Z only, as
 * names compare (RFC 4343).  A label's length byte is at most 63, below
 * 'A', and stays as it is.  Returns -1 if the name is not within the len
 * bytes of msg.
 */
int
dns_qname_lower(uint8_t *msg, size_t len, const struct dns_msg *m)
{
	size_t	i;

	if (m->qname_off > len || m->qname_len > len - m->qname_off)
		return -1;
	for (i = m->qname_off; i < m->qname_off + m->qname_len; i++)
		if (msg[i] >= 'A' && msg[i] <= 'Z')
			msg[i] += 'a' - 'A';
	return 0;
}

/* Does this parsed answer answer this parsed query's question? */
int
dns_answers_question(const uint8_t *a, size_t alen, const struct dns_msg *am,
    const uint8_t *q, size_t qlen, const struct dns_msg *qm)
{
	if (!(am->flags & DNS_F_QR) ||
	    DNS_F_OPCODE(am->flags) != DNS_F_OPCODE(qm->flags))
		return 0;
	if (am->qtype != qm->qtype || am->qclass != qm->qclass ||
	    am->qname_len != qm->qname_len)
		return 0;
	if (am->qname_off + am->qname_len > alen ||
	    qm->qname_off + qm->qname_len > qlen)
		return 0;
	return dns_name_equal(a + am->qname_off, q + qm->qname_off,
	    am->qname_len);
}

static size_t
put_opt(uint8_t *out, size_t outlen, uint16_t udpsize, uint8_t ext_rcode,
    uint16_t flags, const uint8_t *opts, size_t optlen)
{
	if (outlen < OPT_FIXED || outlen - OPT_FIXED < optlen)
		return 0;
	out[0] = 0;
	dns_put16(out + 1, DNS_T_OPT);
	dns_put16(out + 3, udpsize);
	out[5] = ext_rcode;
	out[6] = 0;
	dns_put16(out + 7, flags);
	dns_put16(out + 9, (uint16_t)optlen);
	if (optlen)
		memcpy(out + OPT_FIXED, opts, optlen);
	return OPT_FIXED + optlen;
}

/*
 * Build the query dotproxyd sends upstream from a checked client query:
 * the question, RD and CD from the client, and an OPT of our own carrying
 * the client's DO bit and nothing else (no client subnet, no cookies).
 * With pad_block > 0, pad the whole message to a multiple of it.
 */
size_t
dns_make_query(uint8_t *out, size_t outlen, const uint8_t *q,
    const struct dns_msg *qm, uint16_t id, size_t pad_block)
{
	uint8_t	 pad[4 + DNS_PAD_BLOCK * 4];
	size_t	 len, padlen = 0, n;
	uint16_t flags;

	len = qm->qend;
	if (outlen < len)
		return 0;
	memcpy(out, q, len);
	dns_put16(out, id);
	flags = qm->flags & (DNS_F_RD | DNS_F_CD | DNS_F_AD);
	dns_put16(out + 2, flags);
	dns_put16(out + 6, 0);
	dns_put16(out + 8, 0);
	dns_put16(out + 10, 1);
	if (pad_block > 0 && pad_block <= DNS_PAD_BLOCK * 4) {
		size_t total = len + OPT_FIXED + 4;

		padlen = (pad_block - total % pad_block) % pad_block;
		memset(pad, 0, sizeof(pad));
		dns_put16(pad, DNS_OPT_PADDING);
		dns_put16(pad + 2, (uint16_t)padlen);
		padlen += 4;
	}
	n = put_opt(out + len, outlen - len, DNS_EDNS_UDP, 0,
	    qm->edns ? (qm->edns_flags & DNS_EDNS_DO) : 0, pad, padlen);
	if (n == 0)
		return 0;
	return len + n;
}

/*
 * An extended DNS error option (RFC 8914): the code and at most
 * EDE_TEXT_MAX bytes of text.  Returns its length, 0 if it does not fit.
 */
static size_t
put_ede(uint8_t *out, size_t outlen, int ede, const char *text)
{
	size_t	textlen = text ? strlen(text) : 0;

	if (textlen > EDE_TEXT_MAX)
		textlen = EDE_TEXT_MAX;
	if (outlen < 6 + textlen)
		return 0;
	dns_put16(out, DNS_OPT_EDE);
	dns_put16(out + 2, (uint16_t)(2 + textlen));
	dns_put16(out + 4, (uint16_t)ede);
	if (textlen)
		memcpy(out + 6, text, textlen);
	return 6 + textlen;
}

/*
 * Synthesize an answer with rcode to a client's query (qm as
 * dns_check_query() left it): its ID, opcode and RD, RA when ra is set,
 * no other flag; the first question if it parsed; and, if the query
 * had an OPT record, well formed or not, an OPT of version 0 with the
 * upper bits of an extended rcode such as BADVERS and an extended DNS
 * error (RFC 8914) when ede >= 0.  Without room for the OPT, the answer
 * goes without it; 0 when not even the header fits.
 */
size_t
dns_make_error(uint8_t *out, size_t outlen, const uint8_t *q, size_t qlen,
    const struct dns_msg *qm, int rcode, int ede, const char *text, int ra)
{
	uint8_t	 opt[6 + EDE_TEXT_MAX];
	size_t	 len = DNS_HDR_LEN, optlen = 0, n;
	uint16_t flags;

	if (outlen < DNS_HDR_LEN || qlen < DNS_HDR_LEN)
		return 0;
	flags = DNS_F_QR | (qm->flags & (0x7800 | DNS_F_RD)) | (rcode & 0xf);
	if (ra)
		flags |= DNS_F_RA;
	memset(out, 0, DNS_HDR_LEN);
	dns_put16(out, dns_get16(q));
	dns_put16(out + 2, flags);
	if (qm->qend > 0 && qm->qend <= qlen && qm->qend <= outlen) {
		memcpy(out + DNS_HDR_LEN, q + DNS_HDR_LEN,
		    qm->qend - DNS_HDR_LEN);
		dns_put16(out + 4, 1);
		len = qm->qend;
	}
	if (!qm->edns)
		return len;
	if (ede >= 0)
		optlen = put_ede(opt, sizeof(opt), ede, text);
	n = put_opt(out + len, outlen - len, client_udp, (rcode >> 4) & 0xff,
	    qm->edns_flags & DNS_EDNS_DO, opt, optlen);
	if (n == 0)
		return len;
	dns_put16(out + 10, 1);
	return len + n;
}

struct ttl_arg {
	uint8_t		*m;
	uint32_t	 ttl;
	int		 set;	/* every TTL becomes ttl; else aged by it */
};

static int
age_ttl_cb(void *arg, const uint8_t *m, enum dns_section s, size_t rr,
    size_t ttl_off, uint16_t type, size_t rd_off, size_t rdlen)
{
	struct ttl_arg	*ta = arg;
	uint32_t	 ttl;

	(void)m; (void)s; (void)rr; (void)rd_off; (void)rdlen;
	if (type == DNS_T_OPT)
		return 0;
	if (ta->set) {
		put32(ta->m + ttl_off, ta->ttl);
		return 0;
	}
	ttl = get32(ta->m + ttl_off);
	if (ttl > 0x7fffffff)
		ttl = 0;
	put32(ta->m + ttl_off, ttl > ta->ttl ? ttl - ta->ttl : 0);
	return 0;
}

/* The upstream's EDNS options but padding (RFC 8467), into opts. */
static size_t
upstream_opts(uint8_t *opts, const uint8_t *a, const struct dns_msg *am)
{
	const uint8_t	*rd = a + am->opt_off + OPT_FIXED;
	size_t		 rdlen = am->opt_end - am->opt_off - OPT_FIXED;
	size_t		 o, l, optlen = 0;

	for (o = 0; o + 4 <= rdlen; o += l) {
		l = 4 + (size_t)dns_get16(rd + o + 2);
		if (l > rdlen - o)
			break;
		if (dns_get16(rd + o) == DNS_OPT_PADDING)
			continue;
		memcpy(opts + optlen, rd + o, l);
		optlen += l;
	}
	return optlen;
}

/*
 * The client's OPT record in place of the upstream's, for an answer
 * copied to out: the upstream's options but padding, and an extended
 * DNS error when ede >= 0; none for a client without EDNS.  Records
 * after the upstream's OPT, if any, go with it: names in them may point
 * into what moves.  Returns the answer's new length, 0 on failure.
 */
static size_t
client_opt(uint8_t *out, size_t outlen, const uint8_t *a,
    const struct dns_msg *am, const struct dns_msg *qm, int ede)
{
	uint8_t		 opts[DNS_MAX_MSG];
	size_t		 len = am->end, optlen = 0, n;
	uint16_t	 arcount = am->arcount;

	if (am->edns) {
		optlen = upstream_opts(opts, a, am);
		len = am->opt_off;
		arcount = am->ar_before_opt;
	}
	if (qm->edns && (am->edns || ede >= 0)) {
		if (ede >= 0) {
			if ((n = put_ede(opts + optlen, sizeof(opts) - optlen,
			    ede, NULL)) == 0)
				return 0;
			optlen += n;
		}
		n = put_opt(out + len, outlen - len, client_udp,
		    am->ext_rcode, qm->edns_flags & DNS_EDNS_DO, opts,
		    optlen);
		if (n == 0)
			return 0;
		len += n;
		arcount++;
	}
	dns_put16(out + 10, arcount);
	return len;
}

/* Cut an answer to header and question, TC set, and the client's OPT. */
static size_t
truncate_answer(uint8_t *out, size_t outlen, const struct dns_msg *am,
    const struct dns_msg *qm, int ede)
{
	uint8_t	 opt[6];
	size_t	 len = am->qend, optlen = 0, n;

	dns_put16(out + 2, am->flags | DNS_F_TC);
	dns_put16(out + 6, 0);
	dns_put16(out + 8, 0);
	dns_put16(out + 10, 0);
	if (qm->edns) {
		if (ede >= 0)
			optlen = put_ede(opt, sizeof(opt), ede, NULL);
		n = put_opt(out + len, outlen - len, client_udp,
		    am->ext_rcode, qm->edns_flags & DNS_EDNS_DO, opt, optlen);
		if (n > 0) {
			len += n;
			dns_put16(out + 10, 1);
		}
	}
	return len;
}

static size_t
client_answer(uint8_t *out, size_t outlen, const uint8_t *a, size_t alen,
    const struct dns_msg *am, const uint8_t *q, const struct dns_msg *qm,
    struct ttl_arg *ta, int ede, size_t maxlen)
{
	size_t	len = am->end;

	if (len > alen || len > outlen)
		return 0;
	memcpy(out, a, len);
	dns_put16(out, qm->id);
	memcpy(out + am->qname_off, q + qm->qname_off, am->qname_len);
	if (ta->set || ta->ttl > 0 || am->ttl_top) {
		ta->m = out;
		if (dns_walk_rrs(out, len, am, age_ttl_cb, ta) == -1)
			return 0;
	}
	if ((len = client_opt(out, outlen, a, am, qm, ede)) == 0)
		return 0;
	if (len <= maxlen)
		return len;
	return truncate_answer(out, outlen, am, qm, ede);
}

/*
 * An answer as the cache keeps it: the upstream's OPT record without the
 * padding (RFC 8467) that upstreams add to answers to padded queries,
 * which every client's OPT record drops anyway; its other options stay
 * for the clients.  An answer with records after its OPT is kept as it
 * came: names in them may point into what would move.  Returns the
 * length, 0 if out is too small.
 */
size_t
dns_cache_form(uint8_t *out, size_t outlen, const uint8_t *a,
    const struct dns_msg *am)
{
	size_t	optlen, rdlen;

	if (!am->edns || am->opt_end != am->end) {
		if (outlen < am->end)
			return 0;
		memcpy(out, a, am->end);
		return am->end;
	}
	rdlen = am->opt_end - am->opt_off - OPT_FIXED;
	if (outlen < am->opt_off + OPT_FIXED ||
	    outlen - am->opt_off - OPT_FIXED < rdlen)
		return 0;
	memcpy(out, a, am->opt_off + OPT_FIXED);
	optlen = upstream_opts(out + am->opt_off + OPT_FIXED, a, am);
	dns_put16(out + am->opt_off + 9, (uint16_t)optlen);
	return am->opt_off + OPT_FIXED + optlen;
}

/*
 * Turn an upstream answer (already parsed as am) into the answer for one
 * client: the client's ID and question spelling, TTLs aged by age
 * seconds, the OPT record rewritten for the client (ours, without
 * padding, or none if the client did not use EDNS), and truncated with
 * TC=1 when it would exceed maxlen.  Returns the length, 0 on failure.
 */
size_t
dns_client_answer(uint8_t *out, size_t outlen, const uint8_t *a, size_t alen,
    const struct dns_msg *am, const uint8_t *q, const struct dns_msg *qm,
    uint32_t age, size_t maxlen)
{
	struct ttl_arg	ta = { NULL, age, 0 };

	return client_answer(out, outlen, a, alen, am, q, qm, &ta, -1, maxlen);
}

/*
 * The same for an answer served stale (RFC 8767): every TTL is ttl, and
 * a client with EDNS gets the extended DNS error Stale Answer, or Stale
 * NXDOMAIN Answer for an NXDOMAIN (RFC 8914).
 */
size_t
dns_stale_answer(uint8_t *out, size_t outlen, const uint8_t *a, size_t alen,
    const struct dns_msg *am, const uint8_t *q, const struct dns_msg *qm,
    uint32_t ttl, size_t maxlen)
{
	struct ttl_arg	ta = { NULL, ttl, 1 };
	int		ede = EDE_STALE_ANSWER;

	if (DNS_F_RCODE(am->flags) == DNS_RCODE_NXDOMAIN)
		ede = EDE_STALE_NXDOMAIN;
	return client_answer(out, outlen, a, alen, am, q, qm, &ta, ede, maxlen);
}

/*
 * RFC 7766 framing: is a whole length-prefixed message at the front of
 * buf?  Returns 1 and its length in *mlen (the message starts at buf +
 * 2), 0 when more bytes are needed, -1 for a zero length, which no DNS
 * message has.
 */
int
dns_tcp_frame(const uint8_t *buf, size_t len, size_t *mlen)
{
	if (len < 2)
		return 0;
	*mlen = dns_get16(buf);
	if (*mlen == 0)
		return -1;
	return len - 2 >= *mlen;
}

/* Presentation form of an uncompressed wire name, for logs. */
int
dns_name_to_text(const uint8_t *n, size_t len, char *buf, size_t buflen)
{
	size_t	i = 0, o = 0;
	uint8_t	l;

	if (buflen == 0)
		return -1;
	while (i < len && (l = n[i]) != 0) {
		size_t j;

		if (l > 63 || i + 1 + l > len)
			return -1;
		for (j = 0; j < l; j++) {
			unsigned char c = n[i + 1 + j];

			if (o + 5 >= buflen)
				return -1;
			if (isalnum(c) || c == '-' || c == '_')
				buf[o++] = (char)tolower(c);
			else
				o += (size_t)snprintf(buf + o, buflen - o,
				    "\\%03u", c);
		}
		if (o + 2 >= buflen)
			return -1;
		buf[o++] = '.';
		i += 1 + (size_t)l;
	}
	if (o == 0)
		buf[o++] = '.';
	buf[o] = '\0';
	return 0;
}
