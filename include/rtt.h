/*
 * An upstream's round-trip estimate (RFC 6298) and the times that
 * follow from it: how long a try waits, how long a suspect connection
 * may stay quiet, how long a failed upstream backs off.
 */
#ifndef DOTPROXYD_RTT_H
#define DOTPROXYD_RTT_H

#include <stdint.h>

#define RTT_MIN_MS		100	/* a try's time, at least */
#define RTT_INIT_MS		1000	/* before the first answer */
#define RTT_MAX_SHIFT		4	/* doublings after timeouts */
#define RTT_DEAD_MIN_MS		500
#define RTT_BACKOFF_MIN_MS	500
#define RTT_BACKOFF_MAX_MS	60000

struct rtt {
	int64_t	srtt;		/* µs; 0: no sample yet */
	int64_t	rttvar;		/* µs */
	int	shift;		/* tries in a row not answered in time */
};

void	 rtt_sample(struct rtt *, int64_t);
void	 rtt_timedout(struct rtt *);
int	 rtt_timeout(const struct rtt *, int);
int	 rtt_dead(const struct rtt *, int);
int64_t	 rtt_backoff(int, uint32_t (*)(uint32_t));

#endif /* DOTPROXYD_RTT_H */
