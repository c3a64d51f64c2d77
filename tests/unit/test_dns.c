/*
 * DNS wire format: query validation, the upstream query, synthesized
 * errors, answer parsing and the per-client rewrite of an answer.
 * Messages are built by hand with the small builder below.
 */
#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "tap.h"

/* A message under construction. */
struct mb {
	uint8_t	b[8192];
	size_t	len;
};

static void
mb_u8(struct mb *m, uint8_t v)
{
	if (m->len >= sizeof(m->b)) {
		fprintf(stderr, "builder overflow\n");
		exit(2);
	}
	m->b[m->len++] = v;
}

static void
mb_u16(struct mb *m, uint16_t v)
{
	mb_u8(m, v >> 8);
	mb_u8(m, v & 0xff);
}

static void
mb_u32(struct mb *m, uint32_t v)
{
	mb_u16(m, v >> 16);
	mb_u16(m, v & 0xffff);
}

static void
mb_bytes(struct mb *m, const void *p, size_t len)
{
	const uint8_t	*b = p;
	size_t		 i;

	for (i = 0; i < len; i++)
		mb_u8(m, b[i]);
}

static void
mb_hdr(struct mb *m, uint16_t id, uint16_t flags, uint16_t qd, uint16_t an,
    uint16_t ns, uint16_t ar)
{
	m->len = 0;
	mb_u16(m, id);
	mb_u16(m, flags);
	mb_u16(m, qd);
	mb_u16(m, an);
	mb_u16(m, ns);
	mb_u16(m, ar);
}

/* "www.example.com" (or "." for the root) as uncompressed labels. */
static void
mb_name(struct mb *m, const char *name)
{
	const char	*p = name, *dot;
	size_t		 l;

	if (strcmp(name, ".") == 0) {
		mb_u8(m, 0);
		return;
	}
	while (*p) {
		dot = strchr(p, '.');
		l = dot ? (size_t)(dot - p) : strlen(p);
		mb_u8(m, (uint8_t)l);
		mb_bytes(m, p, l);
		p += l;
		if (*p == '.')
			p++;
	}
	mb_u8(m, 0);
}

static void
mb_ptr(struct mb *m, uint16_t off)
{
	mb_u16(m, 0xc000 | off);
}

static void
mb_question(struct mb *m, const char *name, uint16_t type)
{
	mb_name(m, name);
	mb_u16(m, type);
	mb_u16(m, DNS_C_IN);
}

/* type, class, ttl, rdlength, rdata after an owner name already written */
static void
mb_rr_tail(struct mb *m, uint16_t type, uint32_t ttl, const void *rd,
    uint16_t rdlen)
{
	mb_u16(m, type);
	mb_u16(m, DNS_C_IN);
	mb_u32(m, ttl);
	mb_u16(m, rdlen);
	mb_bytes(m, rd, rdlen);
}

static void
mb_a(struct mb *m, uint32_t ttl, uint8_t last)
{
	uint8_t	a[4] = { 192, 0, 2, last };

	mb_ptr(m, DNS_HDR_LEN);
	mb_rr_tail(m, DNS_T_A, ttl, a, sizeof(a));
}

static void
mb_opt(struct mb *m, uint16_t udpsize, uint16_t flags, const void *opts,
    uint16_t optlen)
{
	mb_u8(m, 0);
	mb_u16(m, DNS_T_OPT);
	mb_u16(m, udpsize);
	mb_u8(m, 0);		/* extended rcode */
	mb_u8(m, 0);		/* version */
	mb_u16(m, flags);
	mb_u16(m, optlen);
	mb_bytes(m, opts, optlen);
}

static void
mb_soa(struct mb *m, uint32_t ttl, uint32_t minimum)
{
	struct mb	rd;

	rd.len = 0;
	mb_name(&rd, "ns1.example.com");
	mb_name(&rd, "hostmaster.example.com");
	mb_u32(&rd, 2024010101);
	mb_u32(&rd, 7200);
	mb_u32(&rd, 3600);
	mb_u32(&rd, 1209600);
	mb_u32(&rd, minimum);
	mb_name(m, "example.com");
	mb_rr_tail(m, DNS_T_SOA, ttl, rd.b, (uint16_t)rd.len);
}

/* ECS option: family 1, source /24, scope 0, 3 address bytes */
static const uint8_t ecs_opt[] = { 0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2 };

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

static void
a_query(struct mb *m, uint16_t id, const char *name)
{
	mb_hdr(m, id, DNS_F_RD, 1, 0, 0, 0);
	mb_question(m, name, DNS_T_A);
}

static void
edns_query(struct mb *m, uint16_t id, const char *name, uint16_t udpsize,
    uint16_t flags, const void *opts, uint16_t optlen)
{
	mb_hdr(m, id, DNS_F_RD | DNS_F_CD, 1, 0, 0, 1);
	mb_question(m, name, DNS_T_A);
	mb_opt(m, udpsize, flags, opts, optlen);
}

/* Options of the OPT RR in msg (parsed as pm) contain code? */
static int
opt_has(const uint8_t *msg, const struct dns_msg *pm, uint16_t code,
    const uint8_t **val, uint16_t *vlen)
{
	const uint8_t	*rd;
	size_t		 rdlen, o;

	if (!pm->edns)
		return 0;
	rd = msg + pm->opt_off + 11;
	rdlen = pm->opt_end - pm->opt_off - 11;
	for (o = 0; o + 4 <= rdlen; o += 4 + dns_get16(rd + o + 2)) {
		if (dns_get16(rd + o) == code) {
			if (val)
				*val = rd + o + 4;
			if (vlen)
				*vlen = dns_get16(rd + o + 2);
			return 1;
		}
	}
	return 0;
}

static void
test_check_query(void)
{
	struct mb	m;
	struct dns_msg	qm;
	char		name[400];
	int		i;

	a_query(&m, 0x1234, "www.example.com");
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_NOERROR,
	    "check: good A query is NOERROR");
	is_int(qm.id, 0x1234, "check: id");
	is_int(qm.flags, DNS_F_RD, "check: flags");
	is_int(qm.qdcount, 1, "check: qdcount");
	is_int(qm.qname_off, 12, "check: qname_off");
	is_int(qm.qname_len, 17, "check: qname_len");
	is_int(qm.qtype, DNS_T_A, "check: qtype");
	is_int(qm.qclass, DNS_C_IN, "check: qclass");
	is_int(qm.qend, 12 + 17 + 4, "check: qend");
	is_int(qm.end, m.len, "check: end");
	is_int(qm.edns, 0, "check: no EDNS");

	is_int(dns_check_query(m.b, 11, &qm), -1, "check: 11 bytes dropped");
	is_int(dns_check_query(m.b, 0, &qm), -1, "check: 0 bytes dropped");
	is_int(dns_check_query(m.b, 12 + 5, &qm), DNS_RCODE_FORMERR,
	    "check: question cut short is FORMERR");
	is_int(qm.qend, 0, "check: ... with no question kept");

	mb_hdr(&m, 1, DNS_F_QR | DNS_F_RD, 1, 0, 0, 0);
	mb_question(&m, "example.com", DNS_T_A);
	is_int(dns_check_query(m.b, m.len, &qm), -1, "check: QR=1 dropped");

	mb_hdr(&m, 0x4444, 4 << 11, 1, 0, 0, 0);
	mb_question(&m, "example.com", DNS_T_SOA);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_REFUSED,
	    "check: opcode 4 NOTIFY is REFUSED");
	is_int(qm.id, 0x4444, "check: REFUSED keeps the id");
	is_int(DNS_F_OPCODE(qm.flags), 4, "check: REFUSED keeps the opcode");
	is_int(qm.qend, m.len, "check: ... and the question");
	m.b[2] = 2 << 3;
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_NOTIMP,
	    "check: opcode 2 STATUS is NOTIMP");

	mb_hdr(&m, 1, 0, 0, 0, 0, 0);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: qdcount 0 is FORMERR");
	mb_hdr(&m, 1, 0, 2, 0, 0, 0);
	mb_question(&m, "a.example", DNS_T_A);
	mb_question(&m, "b.example", DNS_T_A);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: qdcount 2 is FORMERR");

	/* label of 64 */
	memset(name, 'a', 64);
	strcpy(name + 64, ".com");
	a_query(&m, 1, name);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: a 64-byte label is FORMERR");
	/* label of 63 is fine */
	memset(name, 'a', 63);
	strcpy(name + 63, ".com");
	a_query(&m, 1, name);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_NOERROR,
	    "check: a 63-byte label is fine");

	/* names of exactly 255 and 256 wire bytes */
	memset(name, 0, sizeof(name));
	for (i = 0; i < 3; i++) {
		memset(name + i * 64, 'b', 63);
		name[i * 64 + 63] = '.';
	}
	memset(name + 192, 'c', 61);	/* 3*64 + 62 + 1 = 255 */
	a_query(&m, 1, name);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_NOERROR,
	    "check: a 255-byte name is fine");
	is_int(qm.qname_len, 255, "check: ... and its length is 255");
	name[192 + 61] = 'c';		/* 256 */
	a_query(&m, 1, name);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: a 256-byte name is FORMERR");
	memset(name, 0, sizeof(name));
	for (i = 0; i < 5; i++) {
		memset(name + i * 64, 'd', 63);
		name[i * 64 + 63] = i < 4 ? '.' : '\0';
	}
	a_query(&m, 1, name);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: a 320-byte name is FORMERR");

	/* a compression pointer in the question */
	mb_hdr(&m, 1, 0, 1, 0, 0, 0);
	mb_u8(&m, 3);
	mb_bytes(&m, "www", 3);
	mb_ptr(&m, 0);
	mb_u16(&m, DNS_T_A);
	mb_u16(&m, DNS_C_IN);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: compression pointer in the question is FORMERR");
	is_int(qm.qend, 0, "check: ... and the question is not kept");

	/* a pointer loop in an additional record */
	mb_hdr(&m, 1, 0, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_A);
	{
		size_t self = m.len;

		mb_ptr(&m, (uint16_t)self);
		mb_rr_tail(&m, DNS_T_A, 0, "\1\2\3\4", 4);
	}
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: self-pointer in an additional record is FORMERR");
	ok(qm.qend > 0, "check: ... but the question is kept for the answer");
	/* two pointers pointing at each other */
	mb_hdr(&m, 1, 0, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_A);
	{
		size_t at = m.len;

		mb_u8(&m, 1);
		mb_u8(&m, 'x');
		mb_ptr(&m, (uint16_t)(at + 4));
		mb_ptr(&m, (uint16_t)at);
		mb_rr_tail(&m, DNS_T_A, 0, "\1\2\3\4", 4);
	}
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: pointer loop in an additional record is FORMERR");

	a_query(&m, 1, "example.com");
	m.b[m.len - 3] = DNS_T_AXFR;
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_REFUSED,
	    "check: AXFR is REFUSED");
	m.b[m.len - 3] = DNS_T_IXFR;
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_REFUSED,
	    "check: IXFR is REFUSED");

	mb_hdr(&m, 1, DNS_F_RD, 1, 1, 0, 0);
	mb_question(&m, "example.com", DNS_T_A);
	mb_a(&m, 60, 1);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: a query with an answer record is FORMERR");

	/* EDNS */
	edns_query(&m, 7, "example.com", 4096, DNS_EDNS_DO, ecs_opt,
	    sizeof(ecs_opt));
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_NOERROR,
	    "edns: query with OPT is NOERROR");
	is_int(qm.edns, 1, "edns: OPT seen");
	is_int(qm.udpsize, 4096, "edns: udpsize");
	ok(qm.edns_flags & DNS_EDNS_DO, "edns: DO bit");
	is_int(qm.has_ecs, 1, "edns: client subnet option detected");
	is_int(qm.opt_off, qm.qend, "edns: opt_off");
	is_int(qm.opt_end, m.len, "edns: opt_end");

	edns_query(&m, 7, "example.com", 1232, 0, NULL, 0);
	dns_check_query(m.b, m.len, &qm);
	ok(qm.edns && !(qm.edns_flags & DNS_EDNS_DO) && !qm.has_ecs &&
	    qm.udpsize == 1232, "edns: plain OPT, no DO, no ECS");

	/* an option that runs past the RDATA */
	edns_query(&m, 7, "example.com", 1232, 0, "\0\12\0\10\1\2", 6);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "edns: option longer than the OPT RDATA is FORMERR");

	/* two OPT RRs */
	mb_hdr(&m, 1, 0, 1, 0, 0, 2);
	mb_question(&m, "example.com", DNS_T_A);
	mb_opt(&m, 1232, 0, NULL, 0);
	mb_opt(&m, 1232, 0, NULL, 0);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "edns: two OPT RRs are FORMERR");
	is_int(qm.edns, 1, "edns: ... answered with EDNS");

	/* an OPT owned by a non-root name */
	mb_hdr(&m, 1, 0, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_A);
	mb_ptr(&m, DNS_HDR_LEN);
	mb_rr_tail(&m, DNS_T_OPT, 0, NULL, 0);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "edns: OPT with a non-root owner is FORMERR");

	/* a query for type OPT */
	a_query(&m, 1, "example.com");
	m.b[m.len - 3] = DNS_T_OPT;
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "check: qtype OPT is FORMERR");
	/* TC, EDNS version 1 and the rest: test_own_answers() */
}

static void
test_make_query(void)
{
	struct mb	m;
	struct dns_msg	qm, om;
	uint8_t		out[1024];
	size_t		n;
	const uint8_t	*val;
	uint16_t	vlen;

	edns_query(&m, 0x1111, "www.example.com", 4096, DNS_EDNS_DO, ecs_opt,
	    sizeof(ecs_opt));
	dns_check_query(m.b, m.len, &qm);
	n = dns_make_query(out, sizeof(out), m.b, &qm, 0xbeef, DNS_PAD_BLOCK);
	ok(n > 0, "make_query: built (%zu bytes)", n);
	is_int(n % DNS_PAD_BLOCK, 0, "make_query: padded to a multiple of 128");
	is_int(dns_get16(out), 0xbeef, "make_query: id set");
	is_int(dns_parse(out, n, &om), 0, "make_query: result parses");
	is_int(om.end, n, "make_query: no trailing bytes");
	ok(!(om.flags & DNS_F_QR), "make_query: a query");
	ok(om.flags & DNS_F_RD, "make_query: RD kept");
	ok(om.flags & DNS_F_CD, "make_query: CD kept");
	is_int(om.qdcount, 1, "make_query: one question");
	ok(om.ancount == 0 && om.nscount == 0 && om.arcount == 1,
	    "make_query: only our OPT in additional");
	is_mem(out + 12, m.b + 12, qm.qend - 12, "make_query: question copied");
	ok(om.edns, "make_query: has OPT");
	ok(om.edns_flags & DNS_EDNS_DO, "make_query: DO preserved");
	is_int(om.has_ecs, 0, "make_query: client subnet not copied");
	ok(opt_has(out, &om, DNS_OPT_PADDING, &val, &vlen),
	    "make_query: padding option present");
	is_int(om.opt_end - om.opt_off, 11 + 4 + vlen,
	    "make_query: padding is the only option");
	is_int(om.udpsize, DNS_EDNS_UDP, "make_query: our udp size");

	a_query(&m, 0x2222, "example.org");
	dns_check_query(m.b, m.len, &qm);
	n = dns_make_query(out, sizeof(out), m.b, &qm, 7, DNS_PAD_BLOCK);
	is_int(n % DNS_PAD_BLOCK, 0, "make_query: non-EDNS client padded too");
	dns_parse(out, n, &om);
	ok(om.edns && !(om.edns_flags & DNS_EDNS_DO),
	    "make_query: non-EDNS client gets our OPT without DO");

	n = dns_make_query(out, sizeof(out), m.b, &qm, 7, 0);
	is_int(n, qm.qend + 11, "make_query: no padding when pad_block is 0");
	dns_parse(out, n, &om);
	ok(!opt_has(out, &om, DNS_OPT_PADDING, NULL, NULL),
	    "make_query: ... and no padding option");

	is_int(dns_make_query(out, qm.qend - 1, m.b, &qm, 7, 0), 0,
	    "make_query: too small a buffer gives 0");
	is_int(dns_make_query(out, qm.qend + 14, m.b, &qm, 7, DNS_PAD_BLOCK), 0,
	    "make_query: no room for the padding gives 0");
}

static void
test_make_error(void)
{
	struct mb	m;
	struct dns_msg	qm, em;
	uint8_t		out[1024];
	size_t		n;
	const uint8_t	*val;
	uint16_t	vlen;
	const char	*text = "client not allowed";

	edns_query(&m, 0x3333, "example.com", 1232, DNS_EDNS_DO, NULL, 0);
	dns_check_query(m.b, m.len, &qm);
	n = dns_make_error(out, sizeof(out), m.b, m.len, &qm,
	    DNS_RCODE_REFUSED, EDE_PROHIBITED, text, 1);
	is_int(dns_parse(out, n, &em), 0, "error: REFUSED parses");
	is_int(em.id, 0x3333, "error: client id");
	ok(em.flags & DNS_F_QR, "error: QR set");
	ok(em.flags & DNS_F_RD, "error: RD copied");
	is_int(DNS_F_RCODE(em.flags), DNS_RCODE_REFUSED, "error: rcode REFUSED");
	is_mem(out + 12, m.b + 12, qm.qend - 12, "error: question copied");
	is_int(em.arcount, 1, "error: one OPT");
	ok(em.edns_flags & DNS_EDNS_DO, "error: DO echoed");
	ok(opt_has(out, &em, DNS_OPT_EDE, &val, &vlen),
	    "error: extended DNS error option present");
	is_int(vlen, 2 + strlen(text), "error: EDE length");
	is_int(dns_get16(val), EDE_PROHIBITED, "error: EDE info-code");
	is_mem(val + 2, text, strlen(text), "error: EDE text");

	n = dns_make_error(out, sizeof(out), m.b, m.len, &qm,
	    DNS_RCODE_SERVFAIL, -1, NULL, 1);
	dns_parse(out, n, &em);
	ok(em.edns && !opt_has(out, &em, DNS_OPT_EDE, NULL, NULL),
	    "error: ede -1 gives an OPT without EDE");

	a_query(&m, 0x4444, "example.com");
	dns_check_query(m.b, m.len, &qm);
	n = dns_make_error(out, sizeof(out), m.b, m.len, &qm,
	    DNS_RCODE_REFUSED, EDE_PROHIBITED, text, 1);
	is_int(n, qm.qend, "error: non-EDNS client: header and question only");
	dns_parse(out, n, &em);
	ok(!em.edns && em.arcount == 0, "error: ... no OPT");
	is_int(DNS_F_RCODE(em.flags), DNS_RCODE_REFUSED, "error: ... REFUSED");

	/* unparseable question: header only */
	mb_hdr(&m, 0x5555, DNS_F_RD, 1, 0, 0, 0);
	mb_u8(&m, 3);
	mb_bytes(&m, "www", 3);
	mb_ptr(&m, 0);
	mb_u16(&m, DNS_T_A);
	mb_u16(&m, DNS_C_IN);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_FORMERR,
	    "error: bad question is FORMERR");
	n = dns_make_error(out, sizeof(out), m.b, m.len, &qm,
	    DNS_RCODE_FORMERR, -1, NULL, 1);
	is_int(n, DNS_HDR_LEN, "error: FORMERR is header-only");
	is_int(dns_get16(out), 0x5555, "error: FORMERR keeps the id");
	is_int(dns_get16(out + 4), 0, "error: FORMERR qdcount 0");
	is_int(DNS_F_RCODE(dns_get16(out + 2)), DNS_RCODE_FORMERR,
	    "error: rcode FORMERR");
	ok(dns_get16(out + 2) & DNS_F_QR, "error: FORMERR has QR");

	/* NOTIMP keeps the opcode and the question */
	mb_hdr(&m, 0x6666, 5 << 11, 1, 0, 0, 0);
	mb_question(&m, "example.com", DNS_T_SOA);
	dns_check_query(m.b, m.len, &qm);
	n = dns_make_error(out, sizeof(out), m.b, m.len, &qm,
	    DNS_RCODE_NOTIMP, -1, NULL, 1);
	is_int(n, qm.qend, "error: NOTIMP is header and question");
	is_int(DNS_F_OPCODE(dns_get16(out + 2)), 5, "error: NOTIMP opcode kept");

	/* a long EDE text is cut, a small buffer drops the OPT */
	edns_query(&m, 1, "example.com", 1232, 0, NULL, 0);
	dns_check_query(m.b, m.len, &qm);
	{
		char long_text[400];

		memset(long_text, 'x', sizeof(long_text) - 1);
		long_text[sizeof(long_text) - 1] = '\0';
		n = dns_make_error(out, sizeof(out), m.b, m.len, &qm,
		    DNS_RCODE_SERVFAIL, EDE_NETWORK_ERROR, long_text, 1);
		ok(dns_parse(out, n, &em) == 0 && em.edns &&
		    opt_has(out, &em, DNS_OPT_EDE, NULL, &vlen) && vlen <= 130,
		    "error: long EDE text is cut (%u)", vlen);
	}
	n = dns_make_error(out, qm.qend + 5, m.b, m.len, &qm,
	    DNS_RCODE_SERVFAIL, EDE_NETWORK_ERROR, text, 1);
	is_int(n, qm.qend, "error: no room for OPT: answer without it");
	is_int(dns_get16(out + 10), 0, "error: ... and arcount 0");
	is_int(dns_make_error(out, 11, m.b, m.len, &qm, DNS_RCODE_SERVFAIL, -1,
	    NULL, 1), 0, "error: no room for a header gives 0");
}

/* An answer to "www.example.com A" with n A records and an OPT. */
static void
answer_msg(struct mb *m, uint16_t id, const char *qname, int n,
    uint32_t ttl0, int edns, const void *opts, uint16_t optlen)
{
	int	i;

	mb_hdr(m, id, DNS_F_QR | DNS_F_RD | DNS_F_RA, 1, (uint16_t)n, 0,
	    edns ? 1 : 0);
	mb_question(m, qname, DNS_T_A);
	for (i = 0; i < n; i++)
		mb_a(m, ttl0 + (uint32_t)i * 10, (uint8_t)(i + 1));
	if (edns)
		mb_opt(m, 1232, 0, opts, optlen);
}

static void
test_parse_answer(void)
{
	struct mb	m;
	struct dns_msg	am;

	answer_msg(&m, 1, "www.example.com", 3, 300, 0, NULL, 0);
	/* lower the middle one */
	m.b[12 + 17 + 4 + 16 + 6] = 0;
	m.b[12 + 17 + 4 + 16 + 7] = 0;
	m.b[12 + 17 + 4 + 16 + 8] = 0;
	m.b[12 + 17 + 4 + 16 + 9] = 42;
	is_int(dns_parse(m.b, m.len, &am), 0, "parse: answer parses");
	is_int(am.ancount, 3, "parse: ancount");
	is_int(am.min_ttl, 42, "parse: min TTL over the answers");
	is_int(am.has_soa, 0, "parse: no SOA");
	is_int(am.end, m.len, "parse: end");

	/* TTL with the top bit set counts as 0 */
	m.b[12 + 17 + 4 + 16 + 6] = 0x80;
	dns_parse(m.b, m.len, &am);
	is_int(am.min_ttl, 0, "parse: TTL above 2^31-1 is 0");

	/* trailing garbage is ignored, end says where the message ends */
	answer_msg(&m, 1, "www.example.com", 1, 300, 0, NULL, 0);
	{
		size_t real = m.len;

		mb_bytes(&m, "junk", 4);
		is_int(dns_parse(m.b, m.len, &am), 0, "parse: trailing bytes ok");
		is_int(am.end, real, "parse: ... end before them");
	}

	/* NXDOMAIN with an SOA: negative TTL */
	mb_hdr(&m, 1, DNS_F_QR | DNS_F_RD | DNS_F_RA | DNS_RCODE_NXDOMAIN, 1,
	    0, 1, 0);
	mb_question(&m, "nope.example.com", DNS_T_A);
	mb_soa(&m, 3600, 900);
	is_int(dns_parse(m.b, m.len, &am), 0, "parse: NXDOMAIN parses");
	is_int(am.has_soa, 1, "parse: SOA seen");
	is_int(am.soa_min, 900, "parse: negative TTL is the SOA minimum");
	is_int(am.min_ttl, 3600, "parse: min TTL is the SOA's TTL");

	mb_hdr(&m, 1, DNS_F_QR | DNS_F_RA, 1, 0, 1, 0);
	mb_question(&m, "www.example.com", DNS_T_AAAA);
	mb_soa(&m, 600, 900);
	dns_parse(m.b, m.len, &am);
	is_int(am.soa_min, 600, "parse: NODATA: SOA TTL when below minimum");

	/* an SOA in the answer section is not a negative answer */
	mb_hdr(&m, 1, DNS_F_QR | DNS_F_RA, 1, 1, 0, 0);
	mb_question(&m, "example.com", DNS_T_SOA);
	mb_soa(&m, 3600, 900);
	dns_parse(m.b, m.len, &am);
	is_int(am.has_soa, 0, "parse: SOA in the answer section is no SOA min");

	/* truncated answers */
	answer_msg(&m, 1, "www.example.com", 2, 300, 0, NULL, 0);
	is_int(dns_parse(m.b, m.len - 1, &am), -1,
	    "parse: last RDATA cut short fails");
	is_int(dns_parse(m.b, m.len - 14, &am), -1,
	    "parse: last RR header cut short fails");

	/* a forward pointer */
	mb_hdr(&m, 1, DNS_F_QR, 1, 1, 0, 0);
	mb_question(&m, "example.com", DNS_T_A);
	mb_ptr(&m, (uint16_t)(m.len + 2));
	mb_rr_tail(&m, DNS_T_A, 0, "\1\2\3\4", 4);
	is_int(dns_parse(m.b, m.len, &am), -1, "parse: forward pointer fails");

	/* OPT in the answer section */
	mb_hdr(&m, 1, DNS_F_QR, 1, 1, 0, 0);
	mb_question(&m, "example.com", DNS_T_A);
	mb_opt(&m, 1232, 0, NULL, 0);
	is_int(dns_parse(m.b, m.len, &am), -1, "parse: OPT outside AR fails");
}

static void
test_answers_question(void)
{
	struct mb	q, a;
	struct dns_msg	qm, am;

	a_query(&q, 1, "WwW.ExAmPlE.cOm");
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 2, "www.example.com", 1, 60, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	is_int(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm), 1,
	    "match: names differing only in case match");

	answer_msg(&a, 2, "www.example.net", 1, 60, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	is_int(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm), 0,
	    "match: other name does not match");

	answer_msg(&a, 2, "ww.example.com", 1, 60, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	is_int(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm), 0,
	    "match: other name length does not match");

	answer_msg(&a, 2, "www.example.com", 1, 60, 0, NULL, 0);
	a.b[12 + 17 + 1] = DNS_T_AAAA;
	dns_parse(a.b, a.len, &am);
	is_int(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm), 0,
	    "match: other type does not match");

	answer_msg(&a, 2, "www.example.com", 1, 60, 0, NULL, 0);
	a.b[12 + 17 + 3] = 3;		/* CHAOS */
	dns_parse(a.b, a.len, &am);
	is_int(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm), 0,
	    "match: other class does not match");

	answer_msg(&a, 2, "www.example.com", 1, 60, 0, NULL, 0);
	a.b[2] &= 0x7f;			/* QR=0 */
	dns_parse(a.b, a.len, &am);
	is_int(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm), 0,
	    "match: a query is no answer");
}

static void
test_client_answer(void)
{
	struct mb	q, a;
	struct dns_msg	qm, am, om;
	uint8_t		out[DNS_MAX_MSG];
	size_t		n, off;
	const uint8_t	opts[] = {
		0, 3, 0, 4, 'n', 's', 'i', 'd',			/* NSID */
		0, 12, 0, 6, 0, 0, 0, 0, 0, 0,			/* padding */
	};

	/* non-EDNS client, the upstream answered with an OPT */
	a_query(&q, 0x1234, "WwW.ExAmPlE.cOm");
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 0xbeef, "www.example.com", 2, 300, 1, opts,
	    sizeof(opts));
	is_int(dns_parse(a.b, a.len, &am), 0, "client: upstream answer parses");
	ok(dns_answers_question(a.b, a.len, &am, q.b, q.len, &qm),
	    "client: answers the question");
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 100,
	    512);
	ok(n > 0, "client: built (%zu bytes)", n);
	is_int(dns_get16(out), 0x1234, "client: client id restored");
	is_mem(out + 12, q.b + 12, qm.qname_len,
	    "client: question spelled as the client did");
	is_int(dns_parse(out, n, &om), 0, "client: result parses");
	is_int(om.end, n, "client: nothing after the last RR");
	is_int(om.edns, 0, "client: OPT removed for a non-EDNS client");
	is_int(om.arcount, 0, "client: arcount 0");
	off = 12 + 17 + 4;
	is_int(get32(out + off + 6), 200, "client: TTL 300 aged by 100");
	is_int(get32(out + off + 16 + 6), 210, "client: TTL 310 aged by 100");
	is_int(get32(a.b + off + 6), 300, "client: upstream answer untouched");

	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm,
	    1000, 512);
	dns_parse(out, n, &om);
	is_int(om.min_ttl, 0, "client: TTLs age to 0, not below");

	/* EDNS client: our OPT, upstream options kept but padding */
	edns_query(&q, 0x4321, "www.EXAMPLE.com", 4096, DNS_EDNS_DO, NULL, 0);
	dns_check_query(q.b, q.len, &qm);
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    4096);
	is_int(dns_parse(out, n, &om), 0, "client edns: result parses");
	is_int(om.end, n, "client edns: ends with the OPT");
	ok(om.edns && om.arcount == 1, "client edns: one OPT");
	ok(om.edns_flags & DNS_EDNS_DO, "client edns: DO from the client");
	ok(!opt_has(out, &om, DNS_OPT_PADDING, NULL, NULL),
	    "client edns: padding option stripped");
	ok(opt_has(out, &om, 3, NULL, NULL), "client edns: other option kept");
	is_int(om.opt_end - om.opt_off, 11 + 8,
	    "client edns: OPT holds just the NSID option");
	is_int(get32(out + 12 + 17 + 4 + 6), 300, "client edns: no aging at 0");

	/* truncation */
	a_query(&q, 0x7777, "www.example.com");
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 0xbeef, "www.example.com", 40, 60, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	ok(a.len > 512, "trunc: upstream answer is %zu bytes", a.len);
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    512);
	is_int(n, qm.qend, "trunc: header and question only");
	ok(dns_get16(out + 2) & DNS_F_TC, "trunc: TC set");
	ok(dns_get16(out + 2) & DNS_F_QR, "trunc: still an answer");
	is_int(dns_get16(out), 0x7777, "trunc: client id");
	is_int(dns_get16(out + 4), 1, "trunc: qdcount 1");
	ok(dns_get16(out + 6) == 0 && dns_get16(out + 8) == 0 &&
	    dns_get16(out + 10) == 0, "trunc: no records");
	is_mem(out + 12, q.b + 12, qm.qend - 12, "trunc: question kept");

	edns_query(&q, 0x7778, "www.example.com", 512, 0, NULL, 0);
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 0xbeef, "www.example.com", 40, 60, 1, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    512);
	ok(n <= 512 && dns_parse(out, n, &om) == 0, "trunc edns: parses");
	ok((om.flags & DNS_F_TC) && om.edns && om.ancount == 0 &&
	    om.arcount == 1, "trunc edns: TC, no answers, our OPT");

	/* an answer that just fits is not truncated */
	a_query(&q, 0x7779, "www.example.com");
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 0xbeef, "www.example.com", 29, 60, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    a.len);
	ok(n == a.len && !(dns_get16(out + 2) & DNS_F_TC),
	    "trunc: an answer of exactly maxlen is whole");

	is_int(dns_client_answer(out, a.len - 1, a.b, a.len, &am, q.b, &qm, 0,
	    512), 0, "client: output buffer too small gives 0");

	/*
	 * RFC 6891 6.1.1: the OPT may sit anywhere in the additional
	 * section.  A non-EDNS client must still get no OPT (7: a responder
	 * must not send OPT to a requestor that did not send one), and the
	 * upstream's padding must not leak.
	 */
	a_query(&q, 0x8888, "www.example.com");
	dns_check_query(q.b, q.len, &qm);
	mb_hdr(&a, 0xbeef, DNS_F_QR | DNS_F_RD | DNS_F_RA, 1, 1, 0, 2);
	mb_question(&a, "www.example.com", DNS_T_A);
	mb_a(&a, 60, 1);
	mb_opt(&a, 1232, 0, opts, sizeof(opts));
	mb_a(&a, 60, 2);		/* glue-like record after the OPT */
	is_int(dns_parse(a.b, a.len, &am), 0, "opt-not-last: answer parses");
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    512);
	ok(n > 0 && dns_parse(out, n, &om) == 0 && !om.edns,
	    "opt-not-last: OPT removed for a non-EDNS client");
	edns_query(&q, 0x8889, "www.example.com", 1232, 0, NULL, 0);
	dns_check_query(q.b, q.len, &qm);
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    4096);
	ok(n > 0 && dns_parse(out, n, &om) == 0 && om.edns &&
	    !opt_has(out, &om, DNS_OPT_PADDING, NULL, NULL),
	    "opt-not-last: padding stripped for an EDNS client");
}

static int
ttl_is_cb(void *arg, const uint8_t *m, enum dns_section s, size_t rr,
    size_t ttl_off, uint16_t type, size_t rd_off, size_t rdlen)
{
	(void)s; (void)rr; (void)rd_off; (void)rdlen;
	if (type != DNS_T_OPT && get32(m + ttl_off) != *(uint32_t *)arg)
		return -1;
	return 0;
}

/* Every TTL but the OPT's in a parsed message is ttl. */
static int
ttls_are(const uint8_t *msg, size_t len, const struct dns_msg *pm,
    uint32_t ttl)
{
	return dns_walk_rrs(msg, len, pm, ttl_is_cb, &ttl) != -1;
}

/* Answers served stale (RFC 8767): TTL 30, EDE 3 or 19 (RFC 8914). */
static void
test_stale_answer(void)
{
	struct mb	 q, a;
	struct dns_msg	 qm, am, om;
	uint8_t		 out[DNS_MAX_MSG];
	const uint8_t	*val;
	uint16_t	 vlen;
	size_t		 n;
	const uint8_t	 opts[] = {
		0, 3, 0, 4, 'n', 's', 'i', 'd',			/* NSID */
		0, 12, 0, 6, 0, 0, 0, 0, 0, 0,			/* padding */
	};

	edns_query(&q, 0x5151, "WWW.example.com", 1232, DNS_EDNS_DO, NULL, 0);
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 0xbeef, "www.example.com", 2, 300, 1, opts,
	    sizeof(opts));
	dns_parse(a.b, a.len, &am);
	n = dns_stale_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 30,
	    1232);
	ok(n > 0 && dns_parse(out, n, &om) == 0 && om.end == n,
	    "stale: built, parses (%zu bytes)", n);
	ok(dns_get16(out) == 0x5151 && om.ancount == 2 &&
	    DNS_F_RCODE(om.flags) == DNS_RCODE_NOERROR,
	    "stale: the client's ID, both records, NOERROR");
	is_mem(out + 12, q.b + 12, qm.qname_len,
	    "stale: question spelled as the client did");
	ok(ttls_are(out, n, &om, 30), "stale: every TTL is 30");
	ok(opt_has(out, &om, DNS_OPT_EDE, &val, &vlen) && vlen == 2 &&
	    dns_get16(val) == EDE_STALE_ANSWER, "stale: EDE 3, Stale Answer");
	ok(opt_has(out, &om, 3, NULL, NULL) &&
	    !opt_has(out, &om, DNS_OPT_PADDING, NULL, NULL),
	    "stale: upstream options kept, padding not");
	ok(om.arcount == 1 && (om.edns_flags & DNS_EDNS_DO),
	    "stale: one OPT, DO from the client");
	ok(get32(a.b + qm.qend + 6) == 300, "stale: the cached copy untouched");
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    1232);
	ok(n > 0 && dns_parse(out, n, &om) == 0 &&
	    !opt_has(out, &om, DNS_OPT_EDE, NULL, NULL),
	    "a fresh answer has no EDE");

	/* no EDNS: no OPT, no EDE, TTLs still 30 */
	a_query(&q, 0x5152, "www.example.com");
	dns_check_query(q.b, q.len, &qm);
	n = dns_stale_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 30,
	    512);
	ok(n > 0 && dns_parse(out, n, &om) == 0 && !om.edns &&
	    om.arcount == 0 && ttls_are(out, n, &om, 30),
	    "stale, no EDNS: no OPT, TTLs 30");

	/* an upstream answer without OPT: the EDNS client gets one */
	edns_query(&q, 0x5153, "www.example.com", 1232, 0, NULL, 0);
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 0xbeef, "www.example.com", 1, 300, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_stale_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 30,
	    1232);
	ok(n > 0 && dns_parse(out, n, &om) == 0 && om.end == n && om.edns &&
	    om.arcount == 1 && opt_has(out, &om, DNS_OPT_EDE, NULL, NULL),
	    "stale, upstream without OPT: an OPT with the EDE added");
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    1232);
	ok(n == a.len && dns_parse(out, n, &om) == 0 && !om.edns,
	    "fresh, upstream without OPT: unchanged, no OPT");

	/* NXDOMAIN: Stale NXDOMAIN Answer, the SOA's TTL 30 too */
	mb_hdr(&a, 0xbeef, DNS_F_QR | DNS_F_RD | DNS_F_RA | DNS_RCODE_NXDOMAIN,
	    1, 0, 1, 1);
	mb_question(&a, "www.example.com", DNS_T_A);
	mb_soa(&a, 3600, 60);
	mb_opt(&a, 1232, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_stale_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 30,
	    1232);
	ok(n > 0 && dns_parse(out, n, &om) == 0 &&
	    DNS_F_RCODE(om.flags) == DNS_RCODE_NXDOMAIN &&
	    ttls_are(out, n, &om, 30), "stale NXDOMAIN: SOA TTL 30");
	ok(opt_has(out, &om, DNS_OPT_EDE, &val, &vlen) &&
	    dns_get16(val) == EDE_STALE_NXDOMAIN,
	    "stale NXDOMAIN: EDE 19, Stale NXDOMAIN Answer");

	/* truncated: TC, and the EDE in the OPT */
	answer_msg(&a, 0xbeef, "www.example.com", 40, 60, 1, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_stale_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 30,
	    512);
	ok(n <= 512 && dns_parse(out, n, &om) == 0 &&
	    (om.flags & DNS_F_TC) && om.ancount == 0 &&
	    opt_has(out, &om, DNS_OPT_EDE, NULL, NULL),
	    "stale, truncated: TC, no records, the EDE kept");
	is_int(dns_stale_answer(out, a.len - 1, a.b, a.len, &am, q.b, &qm, 30,
	    512), 0, "stale: output buffer too small gives 0");
}

/* An answer dotproxyd makes itself, as it must be, byte for byte. */
static void
own_answer(struct mb *e, uint16_t id, uint16_t flags, const char *qname,
    uint16_t qtype, int edns, uint8_t ext_rcode, uint16_t eflags)
{
	mb_hdr(e, id, flags, qname != NULL, 0, 0, edns ? 1 : 0);
	if (qname != NULL)
		mb_question(e, qname, qtype);
	if (!edns)
		return;
	mb_u8(e, 0);
	mb_u16(e, DNS_T_OPT);
	mb_u16(e, DNS_EDNS_UDP);
	mb_u8(e, ext_rcode);
	mb_u8(e, 0);		/* version 0 */
	mb_u16(e, eflags);
	mb_u16(e, 0);
}

/* Check query m, answer it with dns_make_error(), compare with e. */
static void
own_is(const struct mb *m, int rcode, int ra, const struct mb *e,
    const char *what)
{
	struct dns_msg	qm;
	uint8_t		out[1024];
	size_t		n;
	int		rc;

	rc = dns_check_query(m->b, m->len, &qm);
	is_int(rc, rcode, "%s: rcode %d", what, rcode);
	n = dns_make_error(out, sizeof(out), m->b, m->len, &qm, rc, -1, NULL,
	    ra);
	is_int(n, e->len, "%s: %zu bytes", what, e->len);
	if (n == e->len)
		is_mem(out, e->b, n, "%s: the answer, byte for byte", what);
	else
		ok(0, "%s: the answer, byte for byte", what);
}

static const uint8_t cookie_opt[] = {
	0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,	/* a client cookie */
};

/* BADVERS, FORMERR, NOTIMP and REFUSED: OPT, question, flags. */
static void
test_own_answers(void)
{
	struct mb	m, e;

	/* EDNS version 1: BADVERS, extended rcode 1 in an OPT of version 0 */
	edns_query(&m, 0xb001, "example.com", 4096, DNS_EDNS_DO, NULL, 0);
	m.b[m.len - 5] = 1;
	own_answer(&e, 0xb001, DNS_F_QR | DNS_F_RD | DNS_F_RA, "example.com",
	    DNS_T_A, 1, 1, DNS_EDNS_DO);
	own_is(&m, DNS_RCODE_BADVERS, 1, &e, "EDNS version 1");

	/* two OPT records: FORMERR with an OPT */
	mb_hdr(&m, 0xb002, DNS_F_RD, 1, 0, 0, 2);
	mb_question(&m, "example.com", DNS_T_A);
	mb_opt(&m, 1232, 0, NULL, 0);
	mb_opt(&m, 1232, 0, NULL, 0);
	own_answer(&e, 0xb002, DNS_F_QR | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_FORMERR, "example.com", DNS_T_A, 1, 0, 0);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "two OPTs");

	/* an option running past the OPT data; CD is not copied */
	edns_query(&m, 0xb003, "example.com", 1232, DNS_EDNS_DO,
	    "\0\12\0\10\1\2", 6);
	own_answer(&e, 0xb003, DNS_F_QR | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_FORMERR, "example.com", DNS_T_A, 1, 0, DNS_EDNS_DO);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "option past the OPT data");

	/* an OPT owned by a name other than the root */
	mb_hdr(&m, 0xb004, DNS_F_RD, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_A);
	mb_ptr(&m, DNS_HDR_LEN);
	mb_rr_tail(&m, DNS_T_OPT, 0, NULL, 0);
	own_answer(&e, 0xb004, DNS_F_QR | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_FORMERR, "example.com", DNS_T_A, 1, 0, 0);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "OPT not owned by the root");

	/* QDCOUNT 2 with EDNS: the first question, an OPT */
	mb_hdr(&m, 0xb005, DNS_F_RD, 2, 0, 0, 1);
	mb_question(&m, "a.example", DNS_T_A);
	mb_question(&m, "b.example", DNS_T_AAAA);
	mb_opt(&m, 1232, 0, NULL, 0);
	own_answer(&e, 0xb005, DNS_F_QR | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_FORMERR, "a.example", DNS_T_A, 1, 0, 0);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "QDCOUNT 2 with EDNS");

	/* QDCOUNT 0 with a COOKIE (RFC 7873 5.4): header and OPT */
	mb_hdr(&m, 0xb006, 0, 0, 0, 0, 1);
	mb_opt(&m, 1232, 0, cookie_opt, sizeof(cookie_opt));
	own_answer(&e, 0xb006, DNS_F_QR | DNS_F_RA | DNS_RCODE_FORMERR, NULL,
	    0, 1, 0, 0);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "QDCOUNT 0 with a COOKIE");

	/* STATUS with EDNS: NOTIMP, opcode and question kept */
	mb_hdr(&m, 0xb007, 2 << 11 | DNS_F_RD, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_A);
	mb_opt(&m, 1232, 0, NULL, 0);
	own_answer(&e, 0xb007, DNS_F_QR | 2 << 11 | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_NOTIMP, "example.com", DNS_T_A, 1, 0, 0);
	own_is(&m, DNS_RCODE_NOTIMP, 1, &e, "STATUS with EDNS");

	/* NOTIFY with EDNS: REFUSED; AA not copied */
	mb_hdr(&m, 0xb008, 4 << 11 | DNS_F_AA, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_SOA);
	mb_opt(&m, 1232, 0, NULL, 0);
	own_answer(&e, 0xb008, DNS_F_QR | 4 << 11 | DNS_F_RA |
	    DNS_RCODE_REFUSED, "example.com", DNS_T_SOA, 1, 0, 0);
	own_is(&m, DNS_RCODE_REFUSED, 1, &e, "NOTIFY with EDNS");

	/* opcode 15, every flag set: only the opcode and RD come back */
	mb_hdr(&m, 0xb009, 15 << 11 | DNS_F_AA | DNS_F_TC | DNS_F_RD |
	    DNS_F_RA | DNS_F_AD | DNS_F_CD | 0x0040, 1, 0, 0, 1);
	mb_question(&m, "example.com", DNS_T_A);
	mb_opt(&m, 1232, DNS_EDNS_DO, NULL, 0);
	own_answer(&e, 0xb009, DNS_F_QR | 15 << 11 | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_NOTIMP, "example.com", DNS_T_A, 1, 0, DNS_EDNS_DO);
	own_is(&m, DNS_RCODE_NOTIMP, 1, &e, "opcode 15 with EDNS");
}

/* Type OPT and TC are FORMERR; RA only for clients offered recursion. */
static void
test_own_formerr_ra(void)
{
	struct mb	m, e;

	/* a query for type OPT, without EDNS */
	mb_hdr(&m, 0xb00a, DNS_F_RD, 1, 0, 0, 0);
	mb_question(&m, "example.com", DNS_T_OPT);
	own_answer(&e, 0xb00a, DNS_F_QR | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_FORMERR, "example.com", DNS_T_OPT, 0, 0, 0);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "type OPT");

	/* TC set in a query with EDNS */
	edns_query(&m, 0xb00b, "example.com", 1232, 0, NULL, 0);
	m.b[2] |= DNS_F_TC >> 8;
	own_answer(&e, 0xb00b, DNS_F_QR | DNS_F_RD | DNS_F_RA |
	    DNS_RCODE_FORMERR, "example.com", DNS_T_A, 1, 0, 0);
	own_is(&m, DNS_RCODE_FORMERR, 1, &e, "TC in a query");

	/* a zone transfer from a client outside the access list: no RA */
	mb_hdr(&m, 0xb00c, DNS_F_RD, 1, 0, 0, 0);
	mb_question(&m, "example.com", DNS_T_AXFR);
	own_answer(&e, 0xb00c, DNS_F_QR | DNS_F_RD | DNS_RCODE_REFUSED,
	    "example.com", DNS_T_AXFR, 0, 0, 0);
	own_is(&m, DNS_RCODE_REFUSED, 0, &e, "AXFR without RA");
}

/* edns udp size: the OPT records of answers to clients offer it. */
static void
test_udp_size(void)
{
	struct mb	q, a;
	struct dns_msg	qm, am, om;
	uint8_t		out[DNS_MAX_MSG];
	size_t		n;

	edns_query(&q, 1, "www.example.com", 4096, 0, NULL, 0);
	dns_check_query(q.b, q.len, &qm);
	dns_set_udp_size(4096);
	n = dns_make_error(out, sizeof(out), q.b, q.len, &qm,
	    DNS_RCODE_SERVFAIL, -1, NULL, 1);
	is_int(dns_parse(out, n, &om), 0, "udp size: the error parses");
	is_int(om.udpsize, 4096, "udp size: an error offers 4096");
	answer_msg(&a, 2, "www.example.com", 1, 60, 1, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    4096);
	is_int(dns_parse(out, n, &om), 0, "udp size: the answer parses");
	is_int(om.udpsize, 4096, "udp size: an answer offers 4096");
	n = dns_make_query(out, sizeof(out), q.b, &qm, 1, 0);
	ok(dns_parse(out, n, &om) == 0 && om.udpsize == DNS_EDNS_UDP,
	    "udp size: the upstream query keeps 1232");
	dns_set_udp_size(100);
	n = dns_make_error(out, sizeof(out), q.b, q.len, &qm,
	    DNS_RCODE_SERVFAIL, -1, NULL, 1);
	is_int(dns_parse(out, n, &om), 0, "udp size: the error parses");
	is_int(om.udpsize, 512, "udp size: below 512 is 512");
	dns_set_udp_size(DNS_EDNS_UDP);
}

/* RFC 2181 8: a TTL with its top bit set is 0, fresh from upstream too. */
static void
test_ttl_top_bit(void)
{
	struct mb	q, a;
	struct dns_msg	qm, am, om;
	uint8_t		out[DNS_MAX_MSG];
	size_t		n;

	a_query(&q, 0x7171, "www.example.com");
	dns_check_query(q.b, q.len, &qm);
	answer_msg(&a, 2, "www.example.com", 2, 0x80000010, 1, NULL, 0);
	is_int(dns_parse(a.b, a.len, &am), 0, "ttl: answer parses");
	is_int(am.ttl_top, 1, "ttl: a TTL with the top bit is seen");
	n = dns_client_answer(out, sizeof(out), a.b, a.len, &am, q.b, &qm, 0,
	    512);
	ok(n > 0 && dns_parse(out, n, &om) == 0 && ttls_are(out, n, &om, 0),
	    "ttl: a fresh answer has TTL 0 for them");
	is_int(get32(a.b + qm.qend + 6), 0x80000010,
	    "ttl: the upstream's answer is untouched");
	answer_msg(&a, 2, "www.example.com", 1, 300, 1, NULL, 0);
	dns_parse(a.b, a.len, &am);
	is_int(am.ttl_top, 0, "ttl: no top bit, nothing seen");
}

/* The cache keeps answers without the upstream's padding. */
static void
test_cache_form(void)
{
	struct mb	a, e;
	struct dns_msg	am, km;
	uint8_t		out[DNS_MAX_MSG], pad[4 + 400];
	const uint8_t	nsid[] = { 0, 3, 0, 4, 'n', 's', 'i', 'd' };
	size_t		n;

	memset(pad, 0, sizeof(pad));
	memcpy(pad, nsid, sizeof(nsid));
	pad[sizeof(nsid) + 1] = DNS_OPT_PADDING;
	dns_put16(pad + sizeof(nsid) + 2, sizeof(pad) - sizeof(nsid) - 4);
	answer_msg(&a, 2, "www.example.com", 1, 300, 1, pad, sizeof(pad));
	dns_parse(a.b, a.len, &am);
	answer_msg(&e, 2, "www.example.com", 1, 300, 1, nsid, sizeof(nsid));
	n = dns_cache_form(out, sizeof(out), a.b, &am);
	is_int(n, e.len, "cache form: %zu bytes for %zu", e.len, a.len);
	if (n == e.len)
		is_mem(out, e.b, n, "cache form: padding gone, NSID kept");
	else
		ok(0, "cache form: padding gone, NSID kept");
	ok(dns_parse(out, n, &km) == 0 && km.edns && km.ancount == 1,
	    "cache form: parses, one answer, an OPT");
	is_int(dns_cache_form(out, e.len - 1, a.b, &am), 0,
	    "cache form: too small a buffer gives 0");

	answer_msg(&a, 2, "www.example.com", 2, 300, 0, NULL, 0);
	dns_parse(a.b, a.len, &am);
	n = dns_cache_form(out, sizeof(out), a.b, &am);
	ok(n == a.len && memcmp(out, a.b, n) == 0,
	    "cache form: an answer without OPT as it came");

	mb_hdr(&a, 2, DNS_F_QR | DNS_F_RD | DNS_F_RA, 1, 1, 0, 2);
	mb_question(&a, "www.example.com", DNS_T_A);
	mb_a(&a, 60, 1);
	mb_opt(&a, 1232, 0, pad, sizeof(pad));
	mb_a(&a, 60, 2);
	dns_parse(a.b, a.len, &am);
	n = dns_cache_form(out, sizeof(out), a.b, &am);
	ok(n == a.len && memcmp(out, a.b, n) == 0,
	    "cache form: records after the OPT: as it came");
}

/*
 * Answers dns_parse() must reject, found by tests/fuzz/fuzz_answer (the
 * inputs are kept in tests/fuzz/corpus/fuzz_answer):
 *
 * name-past-end: the second answer's owner name points back into the
 * first one's RDATA and its labels then run past the end of the last
 * record.  dns_parse() accepted it, end stopped before those bytes, and
 * the rewritten answer, cut at end, no longer parsed.  A name reached
 * through a pointer must end before the pointer.
 *
 * name-overlaps-ttl: the authority record's owner is a pointer back into
 * the question whose labels then run through the record's own fields and
 * into the TTL of the next one.  Aging that TTL rewrote a label length,
 * and the client's answer no longer parsed.
 */
static void
test_rejected_answers(void)
{
	static const uint8_t past_end[] = {
		0xbe, 0xef, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00,
		0x00, 0x00, 0x03, 0x77, 0x77, 0x77, 0x07, 0x65, 0xff, 0xff,
		0xff, 0x47, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00,
		0x01, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00,
		0x00, 0x00, 0x78, 0x00, 0x06, 0x03, 0x63, 0x64, 0xc0, 0x10,
		0x6e, 0xc0, 0x2d, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c, 0x00,
		0x05, 0x00, 0x01, 0xc6, 0x33, 0x78, 0x00,
	};
	static const uint8_t overlaps_ttl[] = {
		0xbe, 0xef, 0x81, 0x83, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
		0x00, 0x01, 0x03, 0x77, 0x77, 0x65, 0x00, 0x00, 0x01, 0x00,
		0x01, 0xc0, 0x12, 0x00, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00,
		0x11, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x01,
		0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x40,
	};
	static const struct {
		const char	*what;
		const uint8_t	*a;
		size_t		 len;
	} bad[] = {
		{ "past end: a name running past its pointer",
		    past_end, sizeof(past_end) },
		{ "overlap: a name running through the next record",
		    overlaps_ttl, sizeof(overlaps_ttl) },
	};
	struct dns_msg	am;
	size_t		i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_int(dns_parse(bad[i].a, bad[i].len, &am), -1,
		    "%s is rejected", bad[i].what);
}

static void
test_name_to_text(void)
{
	struct mb	m;
	char		buf[64];

	m.len = 0;
	mb_name(&m, "WWW.Example.com");
	ok(dns_name_to_text(m.b, m.len, buf, sizeof(buf)) == 0 &&
	    strcmp(buf, "www.example.com.") == 0, "text: lower case, dotted");
	m.len = 0;
	mb_name(&m, ".");
	ok(dns_name_to_text(m.b, m.len, buf, sizeof(buf)) == 0 &&
	    strcmp(buf, ".") == 0, "text: root");
	m.len = 0;
	mb_u8(&m, 2);
	mb_u8(&m, 'a');
	mb_u8(&m, ' ');
	mb_u8(&m, 0);
	ok(dns_name_to_text(m.b, m.len, buf, sizeof(buf)) == 0 &&
	    strcmp(buf, "a\\032.") == 0, "text: odd bytes escaped (%s)", buf);
	m.len = 0;
	mb_name(&m, "abcdefghij.abcdefghij");
	is_int(dns_name_to_text(m.b, m.len, buf, 8), -1,
	    "text: small buffer fails");
}

/* The question name in lower case, and nothing else of the message. */
static void
test_qname_lower(void)
{
	struct mb	m, want;
	struct dns_msg	qm;

	mb_hdr(&m, 0x4142, DNS_F_RD, 1, 0, 0, 0);
	mb_question(&m, "WwW.ExAmPlE.COM", DNS_T_A);
	mb_hdr(&want, 0x4142, DNS_F_RD, 1, 0, 0, 0);
	mb_question(&want, "www.example.com", DNS_T_A);
	is_int(dns_check_query(m.b, m.len, &qm), DNS_RCODE_NOERROR,
	    "qname_lower: a query in mixed case");
	is_int(dns_qname_lower(m.b, m.len, &qm), 0, "qname_lower: done");
	ok(m.len == want.len && memcmp(m.b, want.b, m.len) == 0,
	    "qname_lower: the name lower, the ID 0x4142 ('AB') as it was");

	/* '@' and '[' beside A and Z, and bytes past ASCII, stay */
	mb_hdr(&m, 1, 0, 1, 0, 0, 0);
	mb_question(&m, "@AZ[.\xc1\xe9", DNS_T_A);
	mb_hdr(&want, 1, 0, 1, 0, 0, 0);
	mb_question(&want, "@az[.\xc1\xe9", DNS_T_A);
	dns_check_query(m.b, m.len, &qm);
	is_int(dns_qname_lower(m.b, m.len, &qm), 0,
	    "qname_lower: odd bytes");
	is_mem(m.b, want.b, m.len, "qname_lower: only A to Z change");

	is_int(dns_qname_lower(m.b, qm.qname_off + qm.qname_len - 1, &qm), -1,
	    "qname_lower: a name past the end of the message fails");
	qm.qname_off = m.len + 1;
	is_int(dns_qname_lower(m.b, m.len, &qm), -1,
	    "qname_lower: an offset past the end fails");
}

/* RFC 7766 framing, as the listener and the upstream process use it. */
static void
test_tcp_frame(void)
{
	static const uint8_t	two[] = { 0x00, 0x03, 'a', 'b', 'c', 0x00, 0x01,
	    'd' };
	static const uint8_t	empty[] = { 0x00, 0x00, 'x' };
	size_t			mlen = 0;

	is_int(dns_tcp_frame(two, 0, &mlen), 0, "frame: nothing yet");
	is_int(dns_tcp_frame(two, 1, &mlen), 0, "frame: half a length");
	is_int(dns_tcp_frame(two, 4, &mlen), 0, "frame: part of a message");
	ok(dns_tcp_frame(two, 5, &mlen) == 1 && mlen == 3,
	    "frame: a whole message of 3 bytes");
	ok(dns_tcp_frame(two + 5, 3, &mlen) == 1 && mlen == 1,
	    "frame: the next one behind it");
	is_int(dns_tcp_frame(empty, sizeof(empty), &mlen), -1,
	    "frame: a zero length is invalid");
}

int
main(void)
{
	test_tcp_frame();
	test_check_query();
	test_make_query();
	test_make_error();
	test_parse_answer();
	test_answers_question();
	test_client_answer();
	test_stale_answer();
	test_own_answers();
	test_own_formerr_ra();
	test_udp_size();
	test_ttl_top_bit();
	test_cache_form();
	test_rejected_answers();
	test_name_to_text();
	test_qname_lower();
	return done();
}
