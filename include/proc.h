/*
 * What the two children share: start-up, the channels to the parent and
 * to the other child, a new config, the loss of the other child, and the
 * checks every received message goes through.
 */
#ifndef DOTPROXYD_PROC_H
#define DOTPROXYD_PROC_H

#include <sys/types.h>

#include <event.h>
#include <stdint.h>
#include <time.h>

#include "chan.h"
#include "dotproxyd.h"
#include "imsg.h"

/*
 * A child process as the skeleton sees it.  The state stays the child's
 * own (its channels, its config pointer); the skeleton gets references
 * to it and the child's hooks.
 */
struct proc {
	enum proc_type		  type;
	struct chan		 *parent;	/* vital: lost, we exit */
	struct chan		 *peer;		/* the other child */
	int			 *peer_up;
	struct dotproxyd_conf	**conf;		/* the running config */
	struct dotproxyd_conf	 *pending;	/* a config being received */
	/* a start-up descriptor of this child's own: 0, or -1 if unwanted */
	int			(*take_fd)(struct imsg *);
	/* called with *conf already the new config (or the first one) */
	void			(*conf_applied)(void);
	/* the other child is gone: let go of what was sent there */
	void			(*peer_lost)(void);
	/* what the child says of itself in a heartbeat */
	void			(*heartbeat)(struct heartbeat *);
	/* a message of the parent's only this child takes */
	void			(*parent_message)(struct chan *, struct imsg *);
	void			(*sigterm)(int, short, void *);
};

/*
 * A child's struct proc.  Its hooks for a start-up descriptor, a config
 * applied, a message of the parent's and a heartbeat are the child's
 * static take_startup_fd(), conf_applied(), parent_message() and
 * heartbeat(); the loss of the other child and SIGTERM are named.
 */
#define PROC_CHILD(t, par, other, other_up, cf, lost, term) {		\
	.type = (t), .parent = (par), .peer = (other),			\
	.peer_up = (other_up), .conf = (cf),				\
	.take_fd = take_startup_fd, .conf_applied = conf_applied,	\
	.peer_lost = (lost), .parent_message = parent_message,		\
	.heartbeat = heartbeat, .sigterm = (term)			\
}

/* What a message may carry beside its payload. */
enum msg_fd {
	MSG_NO_FD,
	MSG_FD,
};

const char	*imsg_type_name(uint32_t);

void		 proc_child_init(struct proc *, int);
void		 proc_child_confine(struct proc *);
__attribute__((__noreturn__)) void proc_child_serve(struct proc *);
#define PROC_TRIM_FREED	(256 * 1024)	/* free in the heap: trim */
/* the heap as the last trim left it */
struct proc_heap {
	size_t	inuse;
	size_t	free;
};
void		 proc_mem_trim(void);
int		 proc_trim_due(const struct proc_heap *,
		    const struct proc_heap *);
void		 proc_dispatch(int, short, void *);
void		 proc_parent_message(struct chan *, struct imsg *);
void		 proc_peer_lost(struct proc *);
__attribute__((__noreturn__)) void proc_unexpected(const struct chan *,
		    const struct imsg *);

const char	*msg_problem(const struct imsg *, size_t, size_t, enum msg_fd,
		    char *, size_t);
void		 msg_need(const struct chan *, const struct imsg *, size_t,
		    size_t, enum msg_fd);

void		 mono_time(struct timespec *);
int64_t		 mono_ms(void);
int64_t		 mono_us(void);

#endif /* DOTPROXYD_PROC_H */
