#ifndef DOTPROXYD_ANCHORS_H
#define DOTPROXYD_ANCHORS_H

#include <stddef.h>
#include <stdint.h>

#define ANCHOR_DEPTH	8	/* certificates above a chain, at most */

/*
 * Build libcrypto's tables of algorithms for every operation a handshake
 * uses, before the first connection parses the bundle.
 */
void	anchors_prepare(void);

/* The certificates a PEM buffer holds, read and freed; -1 if one is bad. */
int	anchors_count(const uint8_t *, size_t);

/*
 * Of a CA bundle (PEM), the certificates a peer's chain (PEM, as the
 * peer sent it) leads to, with those of seed (PEM: anchors picked
 * before, or NULL), as a new PEM buffer in *out for free().  Returns
 * how many in all, 0 if none (*out NULL), -1 if the chain or the bundle
 * has none or does not parse, or on failure.
 */
int	anchors_pick(const uint8_t *, size_t, const uint8_t *, size_t,
	    const uint8_t *, size_t, uint8_t **, size_t *);

#endif /* DOTPROXYD_ANCHORS_H */
