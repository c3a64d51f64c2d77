/*
 * A child's dnstap output ("dnstap socket"): one writer (dnstap.h) on a
 * descriptor the parent connected, driven by the child's event loop.
 * When the collector goes away the child asks the parent for a new
 * descriptor (IMSG_DNSTAP_NEEDFD); until one comes, records are dropped
 * and counted.  A query never waits for the collector.
 */
#ifndef DOTPROXYD_TAP_H
#define DOTPROXYD_TAP_H

#include <stdint.h>
#include <time.h>

#include "chan.h"
#include "dnstap.h"
#include "dotproxyd.h"
#include "imsg.h"

void	 tap_configure(struct chan *, const struct dotproxyd_conf *,
	    dnstap_anon_fn, void *);
void	 tap_take_fd(struct chan *, struct imsg *);
int	 tap_on(void);
void	 tap_log(const struct dnstap_event *);
void	 tap_stats(struct tap_counts *);
void	 tap_realtime(struct timespec *, int64_t);

#endif /* DOTPROXYD_TAP_H */
