/*
 * proc.c's pure parts: when a child gives freed memory back.
 */
#include <stddef.h>

#include "tap.h"
#include "proc.h"

static void
test_trim_due(void)
{
	struct proc_heap	last = { 500000, 100000 }, now;

	now = last;
	ok(!proc_trim_due(&now, &last), "unchanged since the last trim: no trim");
	now.inuse = 2000000;
	now.free = 0;
	ok(!proc_trim_due(&now, &last), "in a burst, nothing free: no trim");
	now.inuse = 500000;
	now.free = 100000 + 1500000;
	ok(proc_trim_due(&now, &last), "the burst over, its memory free: trim");
	last = now;
	ok(!proc_trim_due(&now, &last),
	    "that trimmed, nothing since: no trim again");
	now.inuse = 500016;
	ok(proc_trim_due(&now, &last),
	    "anything done since, with that much free: trim");
	now.free = PROC_TRIM_FREED - 1;
	ok(!proc_trim_due(&now, &last),
	    "less than the threshold free: no trim");
	now.free = PROC_TRIM_FREED;
	ok(proc_trim_due(&now, &last), "the threshold free: trim");
	last.inuse = last.free = 0;
	now.inuse = now.free = 0;
	ok(!proc_trim_due(&now, &last), "an empty heap: no trim");
}

int
main(void)
{
	plan(8);
	test_trim_due();
	return done();
}
