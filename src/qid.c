/*
 * The IDs of the listener's requests to the upstream process: one a
 * request in flight, never 0, taken in turn so that an ID freed is not
 * soon given again: an answer that comes late finds no request rather
 * than another's.
 */
#include <stdint.h>

#include "qid.h"

/*
 * The first ID from next on (wrapping, past 0) that taken() says table
 * does not hold; the caller's next is then the ID after it.  The table
 * must hold fewer than 2^32 - 1 IDs, as the listener's does.
 */
uint32_t
qid_pick(uint32_t next, qid_taken_fn taken, const void *table)
{
	uint32_t	id;

	for (id = next; id == 0 || taken(table, id); id++)
		;
	return id;
}
