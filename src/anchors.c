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
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "anchors.h"

/* The certificates of a PEM buffer, in order; NULL if it has none. */
static STACK_OF(X509) *
read_pem(const uint8_t *pem, size_t len)
{
	STACK_OF(X509)	*sk;
	BIO		*bio;
	X509		*x;

	if (len > INT32_MAX || (sk = sk_X509_new_null()) == NULL)
		return NULL;
	if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		sk_X509_free(sk);
		return NULL;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
		if (sk_X509_push(sk, x) == 0) {
			X509_free(x);
			break;
		}
	BIO_free(bio);
	/* the end of the text is an error to libcrypto: not to its next user */
	ERR_clear_error();
	if (sk_X509_num(sk) == 0) {
		sk_X509_free(sk);
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

/*
 * Walk up from the chain: the bundle's certificates that issued one of
 * it (cross-signed ones share a name: all of them), then those that
 * issued one picked that is not self-signed, ANCHOR_DEPTH rounds at most.
 * Whatever path a verifier builds through the bundle is among them.
 */
static void
walk(STACK_OF(X509) *bundle, STACK_OF(X509) *chain, STACK_OF(X509) *pick)
{
	X509	*x;
	int	 round, i, added;

	for (round = 0; round < ANCHOR_DEPTH; round++) {
		added = 0;
		for (i = 0; i < sk_X509_num(bundle); i++) {
			x = sk_X509_value(bundle, i);
			if (picked(pick, x) || !wanted(x, chain, pick))
				continue;
			if (sk_X509_push(pick, x) == 0)
				return;
			added = 1;
		}
		if (!added)
			return;
	}
}

int
anchors_count(const uint8_t *bundle, size_t len)
{
	STACK_OF(X509)	*sk;
	int		 n;

	if ((sk = read_pem(bundle, len)) == NULL)
		return 0;
	n = sk_X509_num(sk);
	sk_X509_pop_free(sk, X509_free);
	return n;
}

int
anchors_pick(const uint8_t *bundle, size_t blen, const uint8_t *chain,
    size_t clen, uint8_t **out, size_t *outlen)
{
	STACK_OF(X509)	*b, *c, *pick = NULL;
	BIO		*bio = NULL;
	BUF_MEM		*mem;
	int		 i, n = -1;

	*out = NULL;
	*outlen = 0;
	if ((c = read_pem(chain, clen)) == NULL)
		return -1;
	if ((b = read_pem(bundle, blen)) == NULL) {
		sk_X509_pop_free(c, X509_free);
		return -1;
	}
	if ((pick = sk_X509_new_null()) == NULL)
		goto done;
	walk(b, c, pick);
	if (sk_X509_num(pick) == 0) {
		n = 0;
		goto done;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		goto done;
	for (i = 0; i < sk_X509_num(pick); i++)
		if (PEM_write_bio_X509(bio, sk_X509_value(pick, i)) != 1)
			goto done;
	BIO_get_mem_ptr(bio, &mem);
	if (mem == NULL || mem->length == 0 ||
	    (*out = malloc(mem->length)) == NULL)
		goto done;
	memcpy(*out, mem->data, mem->length);
	*outlen = mem->length;
	n = sk_X509_num(pick);
done:
	BIO_free(bio);
	sk_X509_free(pick);	/* its certificates are b's */
	sk_X509_pop_free(b, X509_free);
	sk_X509_pop_free(c, X509_free);
	return n;
}
