/*
 * Trust anchors: of a CA bundle, the certificates an upstream's chain
 * leads to.  Each TLS connection parses the bundle it is given and keeps
 * it while it lasts, some 800 KB for a system bundle of 140
 * certificates; a connection given only these keeps a few KB.
 */
#include <sys/types.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "anchors.h"

#if OPENSSL_VERSION_NUMBER >= 0x30000000L && !defined(LIBRESSL_VERSION_NUMBER)
/*
 * libcrypto 3 builds its tables of an operation's algorithms (names,
 * methods) the first time the operation is used: for most of them, in
 * the first handshake.  They stay for the process's life.  Built then,
 * they would land among the first connection's parse of the CA bundle,
 * some 300 KB of them, and pin its pages in the heap once it is freed.
 * Built here, they come before it.
 */
#define NONE(type)	static void none_##type(type *a, void *arg) \
			    { (void)a; (void)arg; }
NONE(EVP_MD)
NONE(EVP_CIPHER)
NONE(EVP_MAC)
NONE(EVP_KDF)
NONE(EVP_RAND)
NONE(EVP_KEYMGMT)
NONE(EVP_KEYEXCH)
NONE(EVP_SIGNATURE)
NONE(EVP_ASYM_CIPHER)
NONE(EVP_KEM)
#undef NONE

void
anchors_prepare(void)
{
	EVP_MD_do_all_provided(NULL, none_EVP_MD, NULL);
	EVP_CIPHER_do_all_provided(NULL, none_EVP_CIPHER, NULL);
	EVP_MAC_do_all_provided(NULL, none_EVP_MAC, NULL);
	EVP_KDF_do_all_provided(NULL, none_EVP_KDF, NULL);
	EVP_RAND_do_all_provided(NULL, none_EVP_RAND, NULL);
	EVP_KEYMGMT_do_all_provided(NULL, none_EVP_KEYMGMT, NULL);
	EVP_KEYEXCH_do_all_provided(NULL, none_EVP_KEYEXCH, NULL);
	EVP_SIGNATURE_do_all_provided(NULL, none_EVP_SIGNATURE, NULL);
	EVP_ASYM_CIPHER_do_all_provided(NULL, none_EVP_ASYM_CIPHER, NULL);
	EVP_KEM_do_all_provided(NULL, none_EVP_KEM, NULL);
}
#else
/* LibreSSL has its tables built in. */
void
anchors_prepare(void)
{
}
#endif

/*
 * Each certificate of a PEM buffer in turn, to fn, which keeps it (1) or
 * leaves it to be freed (0): a bundle is never held whole.  Read as
 * libtls reads a CA bundle: "TRUSTED CERTIFICATE" blocks too, other
 * blocks skipped, and one that does not parse failing the whole.
 * Returns how many were read, -1 on failure.  libcrypto's error queue
 * is left as it was.
 */
static int
each_cert(const uint8_t *pem, size_t len, int (*fn)(X509 *, void *),
    void *arg)
{
	BIO		*bio;
	X509		*x;
	unsigned long	 e;
	int		 n = 0;

	if (len > INT32_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
		return -1;
	(void)ERR_set_mark();
	while ((x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)) != NULL) {
		n++;
		if (fn(x, arg) == 0)
			X509_free(x);
	}
	BIO_free(bio);
	/* the end of the text is "no start line"; anything else, a failure */
	e = ERR_peek_last_error();
	if (e != 0 && (ERR_GET_LIB(e) != ERR_LIB_PEM ||
	    ERR_GET_REASON(e) != PEM_R_NO_START_LINE))
		n = -1;
	(void)ERR_pop_to_mark();
	return n;
}

static int
keep(X509 *x, void *arg)
{
	return sk_X509_push(arg, x) != 0;
}

static int
drop(X509 *x, void *arg)
{
	(void)x;
	(void)arg;
	return 0;
}

/* The certificates of a PEM buffer, in order; NULL if it has none. */
static STACK_OF(X509) *
read_pem(const uint8_t *pem, size_t len)
{
	STACK_OF(X509)	*sk;

	if ((sk = sk_X509_new_null()) == NULL)
		return NULL;
	if (each_cert(pem, len, keep, sk) <= 0 || sk_X509_num(sk) == 0) {
		sk_X509_pop_free(sk, X509_free);
		return NULL;
	}
	return sk;
}

static int
picked(STACK_OF(X509) *sk, X509 *x)
{
	int	i;

	for (i = 0; i < sk_X509_num(sk); i++)
		if (X509_cmp(sk_X509_value(sk, i), x) == 0)
			return 1;
	return 0;
}

static int
self_signed(X509 *x)
{
	return X509_NAME_cmp(X509_get_subject_name(x),
	    X509_get_issuer_name(x)) == 0;
}

/* Is x the issuer, by name, of a certificate of the chain or of one picked? */
static int
wanted(X509 *x, STACK_OF(X509) *chain, STACK_OF(X509) *pick)
{
	const X509_NAME	*s = X509_get_subject_name(x);
	X509		*y;
	int		 i;

	for (i = 0; i < sk_X509_num(chain); i++)
		if (X509_NAME_cmp(s,
		    X509_get_issuer_name(sk_X509_value(chain, i))) == 0)
			return 1;
	for (i = 0; i < sk_X509_num(pick); i++) {
		y = sk_X509_value(pick, i);
		if (!self_signed(y) &&
		    X509_NAME_cmp(s, X509_get_issuer_name(y)) == 0)
			return 1;
	}
	return 0;
}

struct walk {
	STACK_OF(X509)	*chain;
	STACK_OF(X509)	*pick;
	int		 added;
};

static int
walk_one(X509 *x, void *arg)
{
	struct walk	*w = arg;

	if (picked(w->pick, x) || !wanted(x, w->chain, w->pick) ||
	    sk_X509_push(w->pick, x) == 0)
		return 0;
	w->added = 1;
	return 1;
}

/*
 * Walk up from the chain: the bundle's certificates that issued one of
 * it (cross-signed ones share a name: all of them), then those that
 * issued one picked that is not self-signed, ANCHOR_DEPTH rounds at most,
 * one certificate of the bundle in memory at a time.  Whatever path a
 * verifier builds through the bundle is among them.
 */
static int
walk(const uint8_t *bundle, size_t blen, struct walk *w)
{
	int	round, n;

	for (round = 0; round < ANCHOR_DEPTH; round++) {
		w->added = 0;
		if ((n = each_cert(bundle, blen, walk_one, w)) <= 0)
			return -1;	/* none in the bundle */
		if (!w->added)
			break;
	}
	return 0;
}

int
anchors_count(const uint8_t *bundle, size_t len)
{
	return each_cert(bundle, len, drop, NULL);
}

int
anchors_pick(const uint8_t *bundle, size_t blen, const uint8_t *chain,
    size_t clen, const uint8_t *seed, size_t slen, uint8_t **out,
    size_t *outlen)
{
	struct walk	 w;
	BIO		*bio = NULL;
	BUF_MEM		*mem;
	int		 i, n = -1;

	*out = NULL;
	*outlen = 0;
	if ((w.chain = read_pem(chain, clen)) == NULL)
		return -1;
	if ((w.pick = sk_X509_new_null()) == NULL ||
	    (seed != NULL && each_cert(seed, slen, keep, w.pick) == -1) ||
	    walk(bundle, blen, &w) == -1)
		goto done;
	if (sk_X509_num(w.pick) == 0) {
		n = 0;
		goto done;
	}
	(void)ERR_set_mark();
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		goto pop;
	for (i = 0; i < sk_X509_num(w.pick); i++)
		if (PEM_write_bio_X509_AUX(bio, sk_X509_value(w.pick, i)) != 1)
			goto pop;
	BIO_get_mem_ptr(bio, &mem);
	if (mem == NULL || mem->length == 0 ||
	    (*out = malloc(mem->length)) == NULL)
		goto pop;
	memcpy(*out, mem->data, mem->length);
	*outlen = mem->length;
	n = sk_X509_num(w.pick);
pop:
	(void)ERR_pop_to_mark();
done:
	BIO_free(bio);
	sk_X509_pop_free(w.pick, X509_free);
	sk_X509_pop_free(w.chain, X509_free);
	return n;
}
