#ifndef DOTPROXYD_AUDIT_H
#define DOTPROXYD_AUDIT_H

#include <stddef.h>

#include "dotproxyd.h"

#define AUDIT_KV_MAX	1024

/* An audit event as a child sends it: fields as key NUL value NUL ... */
struct audit_msg {
	char	event[32];
	char	kv[AUDIT_KV_MAX];
	size_t	kvlen;
};

struct imsgbuf;

int	 audit_open(const char *, char *, size_t);
void	 audit_close(void);
void	 audit_write(const char *, const char *, const char *, size_t);
int	 audit_allowed(enum proc_type, const char *, const char *, size_t,
	    char *, size_t);
void	 audit(const char *, ...) __attribute__((__sentinel__));
size_t	 json_escape(char *, size_t, const char *);

#endif /* DOTPROXYD_AUDIT_H */
