#ifndef DOTPROXYD_ANCHORS_H
#define DOTPROXYD_ANCHORS_H

#include <stddef.h>
#include <stdint.h>

#define ANCHOR_DEPTH	8	/* certificates above a chain, at most */

/*
 * Of a CA bundle (PEM), the certificates a peer's chain (PEM, as the
 * peer sent it) leads to, as a new PEM buffer in *out for free().
 * Returns how many, 0 if none (*out NULL), -1 if either has none or on
 * failure.
 */
/* The certificates a PEM buffer holds, read and freed. */
int	anchors_count(const uint8_t *, size_t);
int	anchors_pick(const uint8_t *, size_t, const uint8_t *, size_t,
	    uint8_t **, size_t *);

#endif /* DOTPROXYD_ANCHORS_H */
