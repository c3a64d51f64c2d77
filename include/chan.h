#ifndef DOTPROXYD_CHAN_H
#define DOTPROXYD_CHAN_H

#include <event.h>

#include "imsg.h"

/* A message channel to another process, driven by the event loop. */
struct chan {
	struct imsgbuf	 ibuf;
	struct event	 ev;
	short		 events;
	void		(*dispatch)(int, short, void *);
	/* for proc_dispatch(): each message, then once after a batch */
	void		(*message)(struct chan *, struct imsg *);
	void		(*done)(void);
	const char	*peer;		/* for messages: "parent", ... */
	int		 vital;		/* losing it ends this process */
};

void	 chan_update(struct chan *);
int	 chan_io(struct chan *, short);
void	 chan_close(struct chan *);

#endif /* DOTPROXYD_CHAN_H */
