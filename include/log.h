#ifndef DOTPROXYD_LOG_H
#define DOTPROXYD_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

struct imsgbuf;

void	 log_init(int, int);
void	 log_procinit(const char *);
void	 log_setverbose(int);
int	 log_getverbose(void);
void	 log_to_parent(struct imsgbuf *, void (*)(void));
int	 log_in_child(void);
void	 log_send_parent(uint32_t, const void *, size_t);
void	 log_sanitize(char *, size_t, const char *);
void	 log_emit(int, int, const char *, ...)
	    __attribute__((__format__ (printf, 3, 4)));
__attribute__((__noreturn__)) void log_exit(void);

/* Each level is log_emit's priority, with errno's text (1) or without. */
#define log_warn(...)	log_emit(LOG_ERR, 1, __VA_ARGS__)
#define log_warnx(...)	log_emit(LOG_ERR, 0, __VA_ARGS__)
#define log_info(...)	log_emit(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...)	log_emit(LOG_DEBUG, 0, __VA_ARGS__)
#define logit(pri, ...)	log_emit((pri), 0, __VA_ARGS__)
#define fatal(...)	(log_emit(LOG_CRIT, 1, __VA_ARGS__), log_exit())
#define fatalx(...)	(log_emit(LOG_CRIT, 0, __VA_ARGS__), log_exit())

#endif /* DOTPROXYD_LOG_H */
