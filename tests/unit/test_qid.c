/*
 * Request IDs: taken in turn from where the last one was, never 0,
 * never one in use, wrapping at 2^32.
 */
#include <stddef.h>
#include <stdint.h>

#include "qid.h"
#include "tap.h"

/* A table of IDs in use, as a list. */
struct ids {
	const uint32_t	*id;
	size_t		 n;
};

static int	 asked;		/* times taken() was called */

static int
taken(const void *arg, uint32_t id)
{
	const struct ids	*t = arg;
	size_t			 i;

	asked++;
	for (i = 0; i < t->n; i++)
		if (t->id[i] == id)
			return 1;
	return 0;
}

int
main(void)
{
	static const uint32_t	 run[] = { 5, 6, 7, 9 };
	static const uint32_t	 top[] = { UINT32_MAX, 1, 2 };
	struct ids		 none = { NULL, 0 }, t;
	uint32_t		 id, next = 1;
	int			 i, fresh = 1;

	is_int(qid_pick(1, taken, &none), 1, "an empty table: the next one");
	is_int(qid_pick(0, taken, &none), 1, "never 0");
	is_int(qid_pick(12345, taken, &none), 12345, "from where it was");

	t = (struct ids){ run, 4 };
	asked = 0;
	is_int(qid_pick(5, taken, &t), 8, "past the ones in use");
	is_int(qid_pick(4, taken, &t), 4, "a free one before them");
	is_int(qid_pick(9, taken, &t), 10, "past the last in use");
	is_int(asked, 7, "one look in the table for each ID tried");

	is_int(qid_pick(UINT32_MAX, taken, &none), UINT32_MAX,
	    "the largest ID");
	t = (struct ids){ top, 3 };
	is_int(qid_pick(UINT32_MAX, taken, &t), 3,
	    "wrapping at 2^32, past 0 and the ones in use");
	t = (struct ids){ top, 1 };
	is_int(qid_pick(UINT32_MAX, taken, &t), 1, "wrapping to 1");

	/* in turn: the caller goes on after the last ID picked */
	t = (struct ids){ run, 4 };
	for (i = 0; i < 8; i++) {
		id = qid_pick(next, taken, &t);
		if (id < next || taken(&t, id))
			fresh = 0;
		next = id + 1;
	}
	ok(fresh && id == 12, "eight in turn: 1 to 4, 8, 10 to 12 (the last "
	    "%u)", id);
	return done();
}
