/*
 * A config travels to a child as CONF_MAIN (the fixed part), one message
 * per list element, then CONF_END; the child merges it only on END.
 */
#include <sys/types.h>
#include <sys/queue.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "dotproxyd.h"
#include "imsg.h"

#define TERMINATE(s)	((s)[sizeof(s) - 1] = '\0')

int
config_send(struct imsgbuf *ibuf, const struct dotproxyd_conf *c,
    int proc)
{
	const struct upstream_conf	*u;
	const struct acl_conf		*a;
	const struct listen_conf	*l;

	if (imsg_compose(ibuf, IMSG_CONF_MAIN, 0, -1, c, sizeof(*c)) == -1)
		return -1;
	if (proc == PROC_UPSTREAM)
		TAILQ_FOREACH(u, &c->upstreams, entry)
			if (imsg_compose(ibuf, IMSG_CONF_UPSTREAM, 0, -1, u,
			    sizeof(*u)) == -1)
				return -1;
	if (proc == PROC_LISTENER) {
		TAILQ_FOREACH(a, &c->acls, entry)
			if (imsg_compose(ibuf, IMSG_CONF_ACL, 0, -1, a,
			    sizeof(*a)) == -1)
				return -1;
		TAILQ_FOREACH(l, &c->listens, entry)
			if (imsg_compose(ibuf, IMSG_CONF_LISTEN, 0, -1, l,
			    sizeof(*l)) == -1)
				return -1;
	}
	return imsg_compose(ibuf, IMSG_CONF_END, 0, -1, NULL, 0);
}

static void *
copy_element(struct imsg *imsg, size_t size)
{
	void	*p;

	if (imsg->len != size) {
		errno = EBADMSG;
		return NULL;
	}
	if ((p = malloc(size)) == NULL)
		return NULL;
	memcpy(p, imsg->data, size);
	return p;
}

/*
 * Take one config message.  Returns 1 when *pending is complete (END),
 * 0 when more is expected, -1 when the message is malformed or out of
 * order (fatal for the peer that sent it).
 */
int
config_recv(struct dotproxyd_conf **pending, struct imsg *imsg)
{
	struct dotproxyd_conf	*c = *pending;
	struct upstream_conf	*u;
	struct acl_conf		*a;
	struct listen_conf	*l;

	switch (imsg->hdr.type) {
	case IMSG_CONF_MAIN:
		if (c != NULL || imsg->len != sizeof(*c))
			return -1;
		if ((c = malloc(sizeof(*c))) == NULL)
			return -1;
		memcpy(c, imsg->data, sizeof(*c));
		TAILQ_INIT(&c->listens);
		TAILQ_INIT(&c->upstreams);
		TAILQ_INIT(&c->acls);
		TERMINATE(c->user);
		TERMINATE(c->chroot);
		TERMINATE(c->tls_ca);
		TERMINATE(c->control_path);
		TERMINATE(c->audit_log);
		*pending = c;
		return 0;
	case IMSG_CONF_UPSTREAM:
		if (c == NULL || (u = copy_element(imsg, sizeof(*u))) == NULL)
			return -1;
		TERMINATE(u->name);
		if (u->npins < 0 || u->npins > MAX_PINS) {
			free(u);
			return -1;
		}
		TAILQ_INSERT_TAIL(&c->upstreams, u, entry);
		return 0;
	case IMSG_CONF_ACL:
		if (c == NULL || (a = copy_element(imsg, sizeof(*a))) == NULL)
			return -1;
		TAILQ_INSERT_TAIL(&c->acls, a, entry);
		if ((a->af != AF_INET && a->af != AF_INET6) || a->plen < 0 ||
		    a->plen > (a->af == AF_INET ? 32 : 128))
			return -1;
		return 0;
	case IMSG_CONF_LISTEN:
		if (c == NULL || (l = copy_element(imsg, sizeof(*l))) == NULL)
			return -1;
		TAILQ_INSERT_TAIL(&c->listens, l, entry);
		return 0;
	case IMSG_CONF_END:
		if (c == NULL || imsg->len != 0)
			return -1;
		return 1;
	}
	return -1;
}

/*
 * A short hash of the effective config, for the audit trail: the first
 * CONFIG_HASH_HEX hexadecimal digits of the SHA-256 digest of what -nv
 * prints, fewer only if buf is too small for them (whole bytes only).
 */
void
config_hash(const struct dotproxyd_conf *c, char *buf, size_t len)
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen = 0, i;
	char		*text = NULL;
	size_t		 textlen = 0;
	FILE		*f;

	strlcpy(buf, "?", len);
	if ((f = open_memstream(&text, &textlen)) == NULL)
		return;
	print_config(f, c);
	fclose(f);
	if (EVP_Digest(text, textlen, md, &mdlen, EVP_sha256(), NULL) == 1)
		for (i = 0; i < mdlen && 2 * i + 2 < len &&
		    2 * i < CONFIG_HASH_HEX; i++)
			snprintf(buf + 2 * i, len - 2 * i, "%02x", md[i]);
	free(text);
}
