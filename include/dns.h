/*
 * DNS wire format: just what a forwarder needs.  Every function takes the
 * message and its length and checks every offset against that length.
 */
#ifndef DOTPROXYD_DNS_H
#define DOTPROXYD_DNS_H

#include <stddef.h>
#include <stdint.h>

#define DNS_HDR_LEN		12
#define DNS_MAX_MSG		65535
#define DNS_MAX_NAME		255
#define DNS_MIN_UDP		512
#define DNS_EDNS_UDP		1232	/* default UDP answer cap, advertised */
#define DNS_EDNS_UDP_MAX	4096	/* the largest one a config may set */
#define DNS_PAD_BLOCK		128	/* RFC 8467 query padding */

/* header flags (host order of the 16-bit flags word) */
#define DNS_F_QR		0x8000
#define DNS_F_OPCODE(f)		(((f) >> 11) & 0xf)
#define DNS_F_AA		0x0400
#define DNS_F_TC		0x0200
#define DNS_F_RD		0x0100
#define DNS_F_RA		0x0080
#define DNS_F_AD		0x0020
#define DNS_F_CD		0x0010
#define DNS_F_RCODE(f)		((f) & 0xf)

#define DNS_OPCODE_QUERY	0
#define DNS_OPCODE_NOTIFY	4

#define DNS_RCODE_NOERROR	0
#define DNS_RCODE_FORMERR	1
#define DNS_RCODE_SERVFAIL	2
#define DNS_RCODE_NXDOMAIN	3
#define DNS_RCODE_NOTIMP	4
#define DNS_RCODE_REFUSED	5
#define DNS_RCODE_BADVERS	16	/* extended: OPT extended rcode 1 */

#define DNS_T_A			1
#define DNS_T_NS		2
#define DNS_T_CNAME		5
#define DNS_T_SOA		6
#define DNS_T_AAAA		28
#define DNS_T_OPT		41
#define DNS_T_IXFR		251
#define DNS_T_AXFR		252
#define DNS_C_IN		1

#define DNS_OPT_ECS		8
#define DNS_OPT_COOKIE		10
#define DNS_OPT_PADDING		12
#define DNS_OPT_EDE		15
#define DNS_EDNS_DO		0x8000

/* RFC 8914 extended error codes that dotproxyd produces */
#define EDE_OTHER		0
#define EDE_STALE_ANSWER	3
#define EDE_STALE_NXDOMAIN	19
#define EDE_PROHIBITED		18
#define EDE_NETWORK_ERROR	23
#define EDE_NOT_READY		14
#define EDE_NO_REACHABLE	22
#define EDE_CACHED_ERROR	13
#define EDE_TEXT_MAX		128	/* bytes of EXTRA-TEXT we write */

enum dns_section { DNS_S_AN, DNS_S_NS, DNS_S_AR };

/* What parsing a whole message found. */
struct dns_msg {
	/* small: the cache keeps one beside each answer */
	uint16_t	id;
	uint16_t	flags;
	uint16_t	qdcount, ancount, nscount, arcount;
	uint32_t	qname_off;	/* 12 when qdcount == 1 */
	uint32_t	qname_len;	/* wire length, uncompressed */
	uint16_t	qtype, qclass;
	uint32_t	qend;		/* first byte after the question */
	uint32_t	end;		/* first byte after the last RR */
	/* EDNS */
	uint32_t	opt_off;	/* start of the OPT RR */
	uint32_t	opt_end;
	uint16_t	ar_before_opt;	/* additional records before it */
	uint16_t	udpsize;
	uint16_t	edns_flags;	/* DO bit */
	uint8_t		ext_rcode;
	uint8_t		edns_version;
	uint8_t		edns;		/* an OPT RR was present */
	uint8_t		has_ecs;
	uint8_t		has_soa;
	uint8_t		ttl_top;	/* a TTL has its top bit set */
	uint32_t	min_ttl;	/* over answer and authority RRs */
	uint32_t	soa_min;	/* negative TTL (RFC 2308) if SOA in NS */
};

typedef int (*dns_rr_cb)(void *, const uint8_t *msg, enum dns_section,
    size_t rr_off, size_t ttl_off, uint16_t type, size_t rdata_off,
    size_t rdlen);

int	 dns_parse(const uint8_t *, size_t, struct dns_msg *);
int	 dns_check_query(const uint8_t *, size_t, struct dns_msg *);
int	 dns_walk_rrs(const uint8_t *, size_t, const struct dns_msg *,
	    dns_rr_cb, void *);
int	 dns_name_equal(const uint8_t *, const uint8_t *, size_t);
int	 dns_qname_lower(uint8_t *, size_t, const struct dns_msg *);
int	 dns_answers_question(const uint8_t *, size_t, const struct dns_msg *,
	    const uint8_t *, size_t, const struct dns_msg *);
size_t	 dns_make_query(uint8_t *, size_t, const uint8_t *, const
	    struct dns_msg *, uint16_t, size_t);
size_t	 dns_make_error(uint8_t *, size_t, const uint8_t *, size_t,
	    const struct dns_msg *, int, int, const char *, int);
size_t	 dns_cache_form(uint8_t *, size_t, const uint8_t *,
	    const struct dns_msg *);
void	 dns_set_udp_size(uint16_t);
size_t	 dns_client_answer(uint8_t *, size_t, const uint8_t *, size_t,
	    const struct dns_msg *, const uint8_t *, const struct dns_msg *,
	    uint32_t, size_t);
size_t	 dns_stale_answer(uint8_t *, size_t, const uint8_t *, size_t,
	    const struct dns_msg *, const uint8_t *, const struct dns_msg *,
	    uint32_t, size_t);
int	 dns_name_to_text(const uint8_t *, size_t, char *, size_t);
int	 dns_tcp_frame(const uint8_t *, size_t, size_t *);
uint16_t dns_get16(const uint8_t *);
void	 dns_read_header(const uint8_t *, struct dns_msg *);
void	 dns_put16(uint8_t *, uint16_t);

#endif /* DOTPROXYD_DNS_H */
