/*
 * proc.c's pure parts: when a child gives freed memory back.
 */
#include <stddef.h>

#include "tap.h"
#include "proc.h"

static void
test_trim_due(void)
{
	size_t	peak = 0;

	ok(!proc_trim_due(1000000, &peak) && peak == 1000000,
	    "growing: no trim, the peak follows");
	ok(!proc_trim_due(1000000 - PROC_TRIM_FREED, &peak) && peak == 1000000,
	    "freed exactly the threshold: no trim yet, the peak stays");
	ok(proc_trim_due(1000000 - PROC_TRIM_FREED - 1, &peak),
	    "freed more than the threshold below the peak: trim");
	peak = 500000;			/* as proc_mem_trim() sets it */
	ok(!proc_trim_due(500000, &peak) && peak == 500000,
	    "steady after a trim: no trim");
	ok(!proc_trim_due(400000, &peak) && peak == 500000,
	    "a little freed: no trim, the peak stays");
	ok(!proc_trim_due(2000000, &peak) && peak == 2000000,
	    "a burst: the peak follows it up");
	ok(proc_trim_due(600000, &peak),
	    "the burst over: trim");
	peak = 100;
	ok(!proc_trim_due(0, &peak), "small numbers: no underflow, no trim");
}

int
main(void)
{
	plan(8);
	test_trim_due();
	return done();
}
