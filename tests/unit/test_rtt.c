/*
 * The round-trip estimator: RFC 6298's smoothing, a try's time from
 * it, its doubling after timeouts and its bounds, a suspect
 * connection's allowance, and the back-off after failures.
 */
#include <stdint.h>
#include <string.h>

#include "rtt.h"
#include "tap.h"

static uint32_t	 fixed;

/* arc4random_uniform's stand-in: fixed, or n - 1 when fixed is ~0 */
static uint32_t
uniform(uint32_t n)
{
	return fixed == UINT32_MAX ? n - 1 : fixed % n;
}

static void
test_estimator(void)
{
	struct rtt	r;
	int		i;

	memset(&r, 0, sizeof(r));
	is_int(rtt_timeout(&r, 1500), RTT_INIT_MS,
	    "no sample yet: a try has 1 s");
	rtt_sample(&r, 20000);
	is_int(r.srtt, 20000, "first sample: srtt is it");
	is_int(r.rttvar, 10000, "first sample: rttvar is half of it");
	is_int(rtt_timeout(&r, 1500), 100,
	    "20 ms + 4 * 10 ms is below the 100 ms floor");
	memset(&r, 0, sizeof(r));
	rtt_sample(&r, 200000);
	rtt_sample(&r, 600000);
	is_int(r.rttvar, (3 * 100000 + 400000) / 4,
	    "rttvar: 3/4 of itself and 1/4 of the deviation");
	is_int(r.srtt, (7 * 200000 + 600000) / 8,
	    "srtt: 7/8 of itself and 1/8 of the sample");
	is_int(rtt_timeout(&r, 1500), (250000 + 4 * 175000) / 1000,
	    "a try's time: srtt + 4 * rttvar");
	for (i = 0; i < 50; i++)
		rtt_sample(&r, 2000000);
	is_int(rtt_timeout(&r, 1500), 1500, "capped at the maximum");
	memset(&r, 0, sizeof(r));
	for (i = 0; i < 50; i++)
		rtt_sample(&r, 1000);
	is_int(rtt_timeout(&r, 1500), 100,
	    "steady 1 ms answers: the floor, deviation counted as 10 ms");
	rtt_sample(&r, 0);
	ok(r.srtt >= 1, "a zero sample leaves srtt positive");
}

static void
test_timeouts(void)
{
	struct rtt	r;
	int		i;

	memset(&r, 0, sizeof(r));
	rtt_sample(&r, 100000);		/* 100 ms: rto 300 ms */
	is_int(rtt_timeout(&r, 1500), 300, "100 ms: a try has 300 ms");
	rtt_timedout(&r);
	is_int(rtt_timeout(&r, 1500), 600, "one timeout doubles it");
	rtt_timedout(&r);
	is_int(rtt_timeout(&r, 1500), 1200, "two double it again");
	for (i = 0; i < 20; i++)
		rtt_timedout(&r);
	is_int(r.shift, RTT_MAX_SHIFT, "the doublings are bounded");
	is_int(rtt_timeout(&r, 1500), 1500, "and so is the time");
	rtt_sample(&r, 100000);
	is_int(r.shift, 0, "an answer ends the doubling");
	is_int(rtt_dead(&r, 1500), 3 * rtt_timeout(&r, 1500) > 1500 ? 1500 :
	    3 * rtt_timeout(&r, 1500), "a quiet connection: three try times");
	memset(&r, 0, sizeof(r));
	rtt_sample(&r, 1000);
	is_int(rtt_dead(&r, 1500), RTT_DEAD_MIN_MS,
	    "a quiet connection: at least half a second");
	memset(&r, 0, sizeof(r));
	is_int(rtt_dead(&r, 1500), 1500,
	    "a quiet connection: at most the maximum");
}

static void
test_backoff(void)
{
	fixed = 0;
	is_int(rtt_backoff(1, uniform), 250, "first failure: at least 250 ms");
	fixed = UINT32_MAX;
	is_int(rtt_backoff(1, uniform), 500, "first failure: at most 500 ms");
	is_int(rtt_backoff(2, uniform), 1000, "second: at most 1 s");
	fixed = 0;
	is_int(rtt_backoff(2, uniform), 500, "second: at least 500 ms");
	fixed = UINT32_MAX;
	is_int(rtt_backoff(8, uniform), 60000, "eighth: capped at 60 s");
	is_int(rtt_backoff(1000, uniform), 60000, "many: still 60 s");
	fixed = 0;
	is_int(rtt_backoff(1000, uniform), 30000, "many: at least 30 s");
	is_int(rtt_backoff(0, uniform), 250, "zero failures count as one");
}

int
main(void)
{
	plan(27);
	test_estimator();
	test_timeouts();
	test_backoff();
	return done();
}
