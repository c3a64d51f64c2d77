#ifndef DOTPROXYD_SIP_H
#define DOTPROXYD_SIP_H

#include <stddef.h>
#include <stdint.h>

#define SIP_KEY_LEN	16

/*
 * SipHash-2-4 (Aumasson and Bernstein, 2012), a keyed pseudorandom
 * function: a 64-bit output of any input under a 128-bit key.  The
 * system's SipHash24() where there is one (OpenBSD), else sip.c.
 */
uint64_t	sip24(const uint8_t key[SIP_KEY_LEN], const void *, size_t);

#endif /* DOTPROXYD_SIP_H */
