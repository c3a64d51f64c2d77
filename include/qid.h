#ifndef DOTPROXYD_QID_H
#define DOTPROXYD_QID_H

#include <stdint.h>

/* Does the table hold this ID? */
typedef int	(*qid_taken_fn)(const void *table, uint32_t id);

uint32_t	 qid_pick(uint32_t, qid_taken_fn, const void *);

#endif /* DOTPROXYD_QID_H */
