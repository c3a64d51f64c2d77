/*
 * Trust anchors: which certificates of a CA bundle an upstream's chain
 * leads to (anchors_pick()), and that they verify that chain as the
 * whole bundle does.  The certificates are fixtures made once with
 * openssl (P-256, valid for 100 years): two roots, an intermediate under
 * the first, a leaf for dot.test under the intermediate, and the first
 * root's name and key cross-signed by the second.
 */
#include <sys/types.h>

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "anchors.h"
#include "tap.h"

static const char root1[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBhjCCAS2gAwIBAgIUcfemMf12RqXrP0mJAPLMOAFQAtEwCgYIKoZIzj0EAwIw\n"
    "GDEWMBQGA1UEAwwNVGVzdCBSb290IE9uZTAgFw0yNjEyMDIwMDM4MTVaGA8yMTI2\n"
    "MTEwODAwMzgxNVowGDEWMBQGA1UEAwwNVGVzdCBSb290IE9uZTBZMBMGByqGSM49\n"
    "AgEGCCqGSM49AwEHA0IABADaVxoUTCGL7rGOYvh4eI77HMUsc+t8hxvXUAvBDTNl\n"
    "dqGwRTdXAunl6JCGAr+/yOXON0WBRqVuw0Pff5ZwLDKjUzBRMB0GA1UdDgQWBBQw\n"
    "HwDDwqRTPxNyCbprYeCOx/radzAfBgNVHSMEGDAWgBQwHwDDwqRTPxNyCbprYeCO\n"
    "x/radzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIByxH5zeOgzP\n"
    "Er+8+zVSFagRg7yQNnVHvdlL55fF5IY5AiAgJS1BDcWFj7gPUIA2qg6cgnUihIH7\n"
    "/peAnZ8BY8QJLg==\n"
    "-----END CERTIFICATE-----\n"
    ;

static const char root2[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBhzCCAS2gAwIBAgIUaUB7jimlzWexCi/1R2bQ2LX6sbMwCgYIKoZIzj0EAwIw\n"
    "GDEWMBQGA1UEAwwNVGVzdCBSb290IFR3bzAgFw0yNjEyMDIwMDM4MTVaGA8yMTI2\n"
    "MTEwODAwMzgxNVowGDEWMBQGA1UEAwwNVGVzdCBSb290IFR3bzBZMBMGByqGSM49\n"
    "AgEGCCqGSM49AwEHA0IABGMrqTEg1waCS7HNZ3dOUHjqm4IJvSCmzjUMTVtdsVz6\n"
    "pKtP8GiiaaBca8WrBr7a66f1b6YQK3N8RuSJITuF3kmjUzBRMB0GA1UdDgQWBBQL\n"
    "AYVr3ALdkV8ZyK0BhHS+WjzSYDAfBgNVHSMEGDAWgBQLAYVr3ALdkV8ZyK0BhHS+\n"
    "WjzSYDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQDvs1F9hrYy\n"
    "QxFVFWwu4++pJVE3ePc+wG3j/rwMBPyzAwIgH3cfbmDKbmGp0ggGUahc0oV+uTvY\n"
    "BiZg4hki3bfwQ6g=\n"
    "-----END CERTIFICATE-----\n"
    ;

static const char inter1[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBjDCCATGgAwIBAgIUeGywKftC2ogAXOiLtPnFhg6K2WEwCgYIKoZIzj0EAwIw\n"
    "GDEWMBQGA1UEAwwNVGVzdCBSb290IE9uZTAgFw0yNjEyMDIwMDM4MTVaGA8yMTI2\n"
    "MTEwODAwMzgxNVowHDEaMBgGA1UEAwwRVGVzdCBJbnRlcm1lZGlhdGUwWTATBgcq\n"
    "hkjOPQIBBggqhkjOPQMBBwNCAASmso0L3QgBG4YrUXzXKJKqTDSRW8J5GPiQ67dk\n"
    "O7Z4V2CuiIurX59SFSKx5ItaPguE8gKE/1bYUoWdinHrUpI3o1MwUTAPBgNVHRMB\n"
    "Af8EBTADAQH/MB0GA1UdDgQWBBTHvl5NvImDnbLnFsLN9dW8crGqZTAfBgNVHSME\n"
    "GDAWgBQwHwDDwqRTPxNyCbprYeCOx/radzAKBggqhkjOPQQDAgNJADBGAiEAhtc5\n"
    "uRwUBgP+fpwXVJfmewojvv0751h6ss+jfFaanMYCIQC01sz+3XD8RGNzHvm+QuGm\n"
    "fHWf+n5loPDt02D1x6UQrg==\n"
    "-----END CERTIFICATE-----\n"
    ;

static const char leaf[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBKzCB0gIUf/NPGRAS8aCmIIiU6cLCPsYuSkkwCgYIKoZIzj0EAwIwHDEaMBgG\n"
    "A1UEAwwRVGVzdCBJbnRlcm1lZGlhdGUwIBcNMjYxMjAyMDAzODE1WhgPMjEyNjEx\n"
    "MDgwMDM4MTVaMBMxETAPBgNVBAMMCGRvdC50ZXN0MFkwEwYHKoZIzj0CAQYIKoZI\n"
    "zj0DAQcDQgAERkvXXO+oYjKfYO+rYYjgPYMxHWJ56WxcoACtpREtiHDwbn9KzCy6\n"
    "aEBvaNzcK7j81nDsa3+oj6+NraiLtP1TtTAKBggqhkjOPQQDAgNIADBFAiEA3FiQ\n"
    "x1HVeQdh7bugGTGdS21fgJVgPSL/ywYdv0JbmmMCIChMw2Z84zIfANTCoaZul/0h\n"
    "Ha7jBJmpRI9tEbovzits\n"
    "-----END CERTIFICATE-----\n"
    ;

static const char cross1[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBiDCCAS2gAwIBAgIURabNzr94ApKxU64GAec83FwgJLMwCgYIKoZIzj0EAwIw\n"
    "GDEWMBQGA1UEAwwNVGVzdCBSb290IFR3bzAgFw0yNjEyMDIwMDM5MTlaGA8yMTI2\n"
    "MTEwODAwMzkxOVowGDEWMBQGA1UEAwwNVGVzdCBSb290IE9uZTBZMBMGByqGSM49\n"
    "AgEGCCqGSM49AwEHA0IABADaVxoUTCGL7rGOYvh4eI77HMUsc+t8hxvXUAvBDTNl\n"
    "dqGwRTdXAunl6JCGAr+/yOXON0WBRqVuw0Pff5ZwLDKjUzBRMA8GA1UdEwEB/wQF\n"
    "MAMBAf8wHQYDVR0OBBYEFDAfAMPCpFM/E3IJumth4I7H+tp3MB8GA1UdIwQYMBaA\n"
    "FAsBhWvcAt2RXxnIrQGEdL5aPNJgMAoGCCqGSM49BAMCA0kAMEYCIQClDo3et3FW\n"
    "pIum9oDG1qoB54CIxbs6Cu8AcuOQUIhCSgIhAIMebTfm+q3szXSot0eHHdcsiUFM\n"
    "2YYMuzpyfSTVaqtQ\n"
    "-----END CERTIFICATE-----\n"
    ;

static const char root1_trusted[] =
    "-----BEGIN TRUSTED CERTIFICATE-----\n"
    "MIIBhjCCAS2gAwIBAgIUcfemMf12RqXrP0mJAPLMOAFQAtEwCgYIKoZIzj0EAwIw\n"
    "GDEWMBQGA1UEAwwNVGVzdCBSb290IE9uZTAgFw0yNjEyMDIwMDM4MTVaGA8yMTI2\n"
    "MTEwODAwMzgxNVowGDEWMBQGA1UEAwwNVGVzdCBSb290IE9uZTBZMBMGByqGSM49\n"
    "AgEGCCqGSM49AwEHA0IABADaVxoUTCGL7rGOYvh4eI77HMUsc+t8hxvXUAvBDTNl\n"
    "dqGwRTdXAunl6JCGAr+/yOXON0WBRqVuw0Pff5ZwLDKjUzBRMB0GA1UdDgQWBBQw\n"
    "HwDDwqRTPxNyCbprYeCOx/radzAfBgNVHSMEGDAWgBQwHwDDwqRTPxNyCbprYeCO\n"
    "x/radzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIByxH5zeOgzP\n"
    "Er+8+zVSFagRg7yQNnVHvdlL55fF5IY5AiAgJS1BDcWFj7gPUIA2qg6cgnUihIH7\n"
    "/peAnZ8BY8QJLjAMMAoGCCsGAQUFBwMB\n"
    "-----END TRUSTED CERTIFICATE-----\n"
    ;

/* up to four PEM texts end to end, in one of two static buffers */
static const char *
cat(const char *a, const char *b, const char *c, const char *d)
{
	static char	buf[2][8192];
	static int	i;

	i = !i;
	snprintf(buf[i], sizeof(buf[i]), "%s%s%s%s", a, b ? b : "",
	    c ? c : "", d ? d : "");
	return buf[i];
}

/* anchors_pick() of a bundle, a chain and a seed (or NULL) */
static int
pick_seed(const char *bundle, const char *chain, const char *seed,
    uint8_t **out, size_t *outlen)
{
	char	*b = strdup(bundle), *c = strdup(chain);
	int	 n = -2;

	if (b != NULL && c != NULL)
		n = anchors_pick((const uint8_t *)b, strlen(b),
		    (const uint8_t *)c, strlen(c), (const uint8_t *)seed,
		    seed != NULL ? strlen(seed) : 0, out, outlen);
	free(b);
	free(c);
	return n;
}

/* a certificate block that does not parse, and a block of another kind */
static const char bad_cert[] =
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
static const char other_block[] =
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";

static int
count(const char *pem)
{
	return anchors_count((const uint8_t *)pem, strlen(pem));
}

static int
pick(const char *bundle, const char *chain, uint8_t **out, size_t *outlen)
{
	return pick_seed(bundle, chain, NULL, out, outlen);
}

/* How many anchors of the bundle for the chain, with seed? */
static void
picks(const char *bundle, const char *chain, const char *seed, int want,
    const char *what)
{
	uint8_t	*p;
	size_t	 len;

	is_int(pick_seed(bundle, chain, seed, &p, &len), want, "%s", what);
	free(p);
}

/* Does the PEM text p hold the certificate cert (PEM) among its own? */
static int
holds(const uint8_t *p, size_t len, const char *cert)
{
	BIO	*bio;
	X509	*x, *want;
	int	 found = 0;

	bio = BIO_new_mem_buf(cert, -1);
	want = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
	BIO_free(bio);
	bio = BIO_new_mem_buf(p, (int)len);
	while (want != NULL &&
	    (x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)) != NULL) {
		if (X509_cmp(x, want) == 0)
			found = 1;
		X509_free(x);
	}
	BIO_free(bio);
	X509_free(want);
	return found;
}

/* Does the leaf, with the untrusted chain, verify against anchors? */
static int
verifies(const uint8_t *anchors, size_t len, const char *untrusted)
{
	X509_STORE	*store = X509_STORE_new();
	X509_STORE_CTX	*ctx = X509_STORE_CTX_new();
	STACK_OF(X509)	*sk = sk_X509_new_null();
	BIO		*bio;
	X509		*x, *leaf_x;
	int		 ok = 0;

	bio = BIO_new_mem_buf(anchors, (int)len);
	while ((x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)) != NULL) {
		X509_STORE_add_cert(store, x);
		X509_free(x);
	}
	BIO_free(bio);
	bio = BIO_new_mem_buf(untrusted, -1);
	while ((x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)) != NULL)
		sk_X509_push(sk, x);
	BIO_free(bio);
	bio = BIO_new_mem_buf(leaf, -1);
	leaf_x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL);
	BIO_free(bio);
	/* as libtls verifies a server */
	if (store != NULL && ctx != NULL && leaf_x != NULL &&
	    X509_STORE_CTX_init(ctx, store, leaf_x, sk) == 1 &&
	    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER) == 1)
		ok = X509_verify_cert(ctx) == 1;
	X509_free(leaf_x);
	sk_X509_pop_free(sk, X509_free);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok;
}

/*
 * What libcrypto allocates to fetch the algorithms of a handshake, in
 * bytes: some 300 KB the first time, unless anchors_prepare() built its
 * tables before.  0 where the heap cannot be read.
 */
static size_t
fetch_cost(void)
{
#if defined(__GLIBC__) && OPENSSL_VERSION_NUMBER >= 0x30000000L
	size_t	before = mallinfo2().uordblks, after;

	EVP_MD_free(EVP_MD_fetch(NULL, "SHA384", NULL));
	EVP_CIPHER_free(EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL));
	EVP_MAC_free(EVP_MAC_fetch(NULL, "HMAC", NULL));
	EVP_KDF_free(EVP_KDF_fetch(NULL, "HKDF", NULL));
	EVP_KEYEXCH_free(EVP_KEYEXCH_fetch(NULL, "X25519", NULL));
	EVP_SIGNATURE_free(EVP_SIGNATURE_fetch(NULL, "ECDSA", NULL));
	after = mallinfo2().uordblks;
	return after > before ? after - before : 0;
#else
	return 0;
#endif
}

int
main(void)
{
	uint8_t		*p;
	size_t		 len;
	int		 n;

	plan(27);

	/* first, before anything here uses libcrypto */
	anchors_prepare();
	ok(fetch_cost() < 4096, "after anchors_prepare(), a handshake's "
	    "algorithms are fetched without building tables");

	/* the usual case: the server sends leaf and intermediate */
	n = pick(cat(root2, root1, NULL, NULL), cat(leaf, inter1, NULL,
	    NULL), &p, &len);
	is_int(n, 1, "leaf + intermediate: one anchor");
	ok(p != NULL && holds(p, len, root1) && !holds(p, len, root2),
	    "the root that issued the intermediate, not the other");
	ok(p != NULL && verifies(p, len, inter1),
	    "the chain verifies against it alone");
	free(p);

	/* the server sends the leaf only: the bundle has the intermediate */
	n = pick(cat(root2, inter1, root1, NULL), leaf, &p, &len);
	is_int(n, 2, "leaf alone, intermediate in the bundle: two");
	ok(p != NULL && holds(p, len, inter1) && holds(p, len, root1) &&
	    !holds(p, len, root2), "the intermediate and its root");
	ok(p != NULL && verifies(p, len, ""),
	    "the leaf verifies against them alone");
	free(p);

	/* the server sends its root too */
	n = pick(cat(root2, root1, NULL, NULL), cat(leaf, inter1, root1,
	    NULL), &p, &len);
	is_int(n, 1, "root sent along: still the one root");
	ok(p != NULL && holds(p, len, root1), "root one");
	free(p);

	/* a cross-signed root: both versions and the other root */
	n = pick(cat(root2, cross1, root1, NULL), cat(leaf, inter1, NULL,
	    NULL), &p, &len);
	is_int(n, 3, "cross-signed: both certificates named root one, "
	    "and root two above the cross-signed one");
	ok(p != NULL && holds(p, len, root1) && holds(p, len, cross1) &&
	    holds(p, len, root2), "all three");
	free(p);

	/* nothing in the bundle: no anchors, the caller keeps the bundle */
	n = pick(root2, cat(leaf, inter1, NULL, NULL), &p, &len);
	is_int(n, 0, "no issuer in the bundle: none");
	ok(p == NULL && len == 0, "and no buffer");

	/* what is not PEM */
	is_int(pick(root1, "not a certificate", &p, &len), -1,
	    "a chain without a certificate: -1");
	ok(p == NULL, "and no buffer");
	is_int(pick("", leaf, &p, &len), -1,
	    "an empty bundle: -1");
	is_int(pick(cat(root2, bad_cert, root1, NULL), cat(leaf, inter1,
	    NULL, NULL), &p, &len), -1,
	    "a certificate that does not parse fails the bundle, as in libtls");
	ok(p == NULL, "and no buffer");
	is_int(count(cat(root2, bad_cert, root1, NULL)), -1,
	    "anchors_count: so does it");
	is_int(count(cat(root2, root1, NULL, NULL)), 2,
	    "anchors_count: two certificates");
	is_int(count(cat(other_block, root1, NULL, NULL)), 1,
	    "anchors_count: a block of another kind is skipped");

	/* trusted certificates (openssl x509 -trustout), as libtls reads them */
	n = pick(cat(root2, root1_trusted, NULL, NULL), cat(leaf, inter1,
	    NULL, NULL), &p, &len);
	is_int(n, 1, "a TRUSTED CERTIFICATE block is read: one anchor");
	ok(p != NULL && holds(p, len, root1) && verifies(p, len, inter1),
	    "root one, which verifies the chain");
	free(p);

	/* picked before (a seed): kept with the new ones, none twice */
	n = pick_seed(cat(root2, root1, NULL, NULL), cat(leaf, inter1, NULL,
	    NULL), root2, &p, &len);
	is_int(n, 2, "with a seed: the seed and the new anchor");
	ok(p != NULL && holds(p, len, root1) && holds(p, len, root2),
	    "both");
	free(p);
	picks(cat(root2, root1, NULL, NULL), cat(leaf, inter1, NULL, NULL),
	    root1, 1, "a seed of the same anchor: it once");
	picks(cat(root2, root1, NULL, NULL), root2, NULL, 1,
	    "a self-signed chain: itself");

	return done();
}
