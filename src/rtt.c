/*
 * An upstream's round-trip estimate, as TCP keeps its own (RFC 6298):
 * a smoothed time and its mean deviation from the times answers take,
 * and from them the time a try has before it is also sent elsewhere.
 */
#include <stdint.h>

#include "rtt.h"

void
rtt_sample(struct rtt *r, int64_t us)
{
	int64_t	d;

	if (us < 1)
		us = 1;
	if (r->srtt == 0) {
		r->srtt = us;
		r->rttvar = us / 2;
	} else {
		d = r->srtt > us ? r->srtt - us : us - r->srtt;
		r->rttvar = (3 * r->rttvar + d) / 4;
		r->srtt = (7 * r->srtt + us) / 8;
		if (r->srtt == 0)
			r->srtt = 1;
	}
	r->shift = 0;
}

/* A try went unanswered in its time: the next ones wait twice as long. */
void
rtt_timedout(struct rtt *r)
{
	if (r->shift < RTT_MAX_SHIFT)
		r->shift++;
}

/*
 * A try's time in milliseconds: srtt + 4 * rttvar (the deviation
 * counted as at least 10 ms), doubled per timeout in a row, within
 * RTT_MIN_MS and max_ms.
 */
int
rtt_timeout(const struct rtt *r, int max_ms)
{
	int64_t	rto, var;

	if (r->srtt == 0)
		rto = RTT_INIT_MS * 1000LL;
	else {
		var = 4 * r->rttvar;
		rto = r->srtt + (var > 10000 ? var : 10000);
	}
	rto <<= r->shift;
	if (rto < RTT_MIN_MS * 1000LL)
		rto = RTT_MIN_MS * 1000LL;
	if (rto > max_ms * 1000LL)
		rto = max_ms * 1000LL;
	return (int)(rto / 1000);
}

/* How long a suspect connection may stay quiet: three try times. */
int
rtt_dead(const struct rtt *r, int max_ms)
{
	int	ms = 3 * rtt_timeout(r, max_ms);

	if (ms < RTT_DEAD_MIN_MS)
		ms = RTT_DEAD_MIN_MS;
	return ms > max_ms ? max_ms : ms;
}

/*
 * The back-off after the n-th failure in a row: a random time between
 * half and all of 500 ms doubled per failure, at most 60 s.  uniform(n)
 * is arc4random_uniform(3) or a stand-in.
 */
int64_t
rtt_backoff(int failures, uint32_t (*uniform)(uint32_t))
{
	int64_t	ms;

	if (failures < 1)
		failures = 1;
	ms = (int64_t)RTT_BACKOFF_MIN_MS << (failures > 8 ? 8 : failures - 1);
	if (ms > RTT_BACKOFF_MAX_MS)
		ms = RTT_BACKOFF_MAX_MS;
	return ms / 2 + uniform((uint32_t)ms / 2 + 1);
}
