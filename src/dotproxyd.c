/*
 * dotproxyd: the parent process.  It parses the config, binds the
 * listening sockets, starts the listener and upstream processes by fork
 * and re-exec, hands them sockets and config, then confines itself and
 * only logs for them, reloads on SIGHUP and shuts down on SIGTERM.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>

#include <err.h>
#include <errno.h>
#include <event.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"

struct child {
	enum proc_type	 type;
	pid_t		 pid;
	struct imsgbuf	 ibuf;
	struct event	 ev;
	short		 events;
};

struct lsock {
	TAILQ_ENTRY(lsock)	 entry;
	struct sockaddr_storage	 ss;
	int			 udp;
	int			 tcp;
};

static void	 usage(void) __attribute__((__noreturn__));
static int	 bind_socket(const struct sockaddr_storage *, int);
static void	 bind_listeners(const struct dotproxyd_conf *);
static void	 start_child(struct child *, enum proc_type, int);
static void	 send_startup(const struct dotproxyd_conf *, int, int);
static void	 child_dispatch(int, short, void *);
static void	 child_event_add(struct child *);
static void	 sig_handler(int, short, void *);
static void	 shutdown_children(int);
static void	 reload(void);
static void	 resolve_user(struct dotproxyd_conf *);

static struct dotproxyd_conf	*conf;
static const char		*conffile = DOTPROXYD_CONF;
static char			 self[PATH_MAX];
static struct child		 children[2];	/* listener, upstream */
static TAILQ_HEAD(, lsock)	 lsocks = TAILQ_HEAD_INITIALIZER(lsocks);
static int			 debug, verbose;

const char *
proc_name(enum proc_type t)
{
	switch (t) {
	case PROC_PARENT:
		return "parent";
	case PROC_LISTENER:
		return "listener";
	case PROC_UPSTREAM:
		return "upstream";
	}
	return "?";
}

static void
usage(void)
{
	fprintf(stderr, "usage: dotproxyd [-dnv] [-f file] [-s socket]\n");
	exit(1);
}

int
main(int argc, char *argv[])
{
	struct event	 ev_sigterm, ev_sigint, ev_sighup, ev_sigchld;
	const char	*child = NULL, *sockpath = NULL;
	int		 ch, noaction = 0, pairs[3][2], i;
	ssize_t		 n;

	setproctitle_init(argc, argv, environ);
	while ((ch = getopt(argc, argv, "dnf:P:s:v")) != -1) {
		switch (ch) {
		case 'd':
			debug = 1;
			break;
		case 'n':
			noaction = 1;
			break;
		case 'f':
			conffile = optarg;
			break;
		case 'P':
			child = optarg;
			break;
		case 's':
			sockpath = optarg;
			break;
		case 'v':
			verbose++;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	if (argc > 0)
		usage();

	log_init(1, LOG_DAEMON);	/* stderr until daemonised */
	log_setverbose(verbose);

	if (child != NULL) {
		if (strcmp(child, "listener") == 0)
			listener_main(debug, verbose);
		if (strcmp(child, "upstream") == 0)
			upstream_main(debug, verbose);
		fatalx("unknown process %s", child);
	}

	conf = parse_config(conffile, strcmp(conffile, DOTPROXYD_CONF) == 0);
	if (conf == NULL)
		exit(1);
	if (sockpath != NULL && strlcpy(conf->control_path, sockpath,
	    sizeof(conf->control_path)) >= sizeof(conf->control_path))
		errx(1, "control socket path too long");
	if (noaction) {
		if (verbose)
			print_config(conf);
		else
			fprintf(stderr, "configuration OK\n");
		exit(0);
	}

	if (geteuid() != 0)
		errx(1, "need root privileges");
	resolve_user(conf);
	conf->verbose = verbose;

	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) == -1) {
		if (argv[0][0] != '/' &&
		    realpath(argv[0], self) == NULL)
			err(1, "cannot find my own binary");
		if (argv[0][0] == '/')
			strlcpy(self, argv[0], sizeof(self));
	} else
		self[n] = '\0';

	log_init(debug, LOG_DAEMON);
	if (!debug && daemon(0, 0) == -1)
		fatal("daemon");
	log_info("dotproxyd %s starting", DOTPROXYD_VERSION);

	bind_listeners(conf);

	/* 0: parent-listener, 1: parent-upstream, 2: listener-upstream */
	for (i = 0; i < 3; i++)
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0, pairs[i]) == -1)
			fatal("socketpair");
	start_child(&children[0], PROC_LISTENER, pairs[0][1]);
	start_child(&children[1], PROC_UPSTREAM, pairs[1][1]);
	close(pairs[0][1]);
	close(pairs[1][1]);
	if (imsgbuf_init(&children[0].ibuf, pairs[0][0]) == -1 ||
	    imsgbuf_init(&children[1].ibuf, pairs[1][0]) == -1)
		fatal("imsgbuf_init");
	send_startup(conf, pairs[2][0], pairs[2][1]);

	event_init();
	signal(SIGPIPE, SIG_IGN);
	signal_set(&ev_sigterm, SIGTERM, sig_handler, NULL);
	signal_set(&ev_sigint, SIGINT, sig_handler, NULL);
	signal_set(&ev_sighup, SIGHUP, sig_handler, NULL);
	signal_set(&ev_sigchld, SIGCHLD, sig_handler, NULL);
	signal_add(&ev_sigterm, NULL);
	signal_add(&ev_sigint, NULL);
	signal_add(&ev_sighup, NULL);
	signal_add(&ev_sigchld, NULL);
	for (i = 0; i < 2; i++) {
		children[i].events = 0;
		child_event_add(&children[i]);
	}

	sandbox_parent();
	setproctitle("parent");

	event_dispatch();
	shutdown_children(0);
	return 0;
}

static void
resolve_user(struct dotproxyd_conf *c)
{
	struct passwd	*pw;
	struct stat	 st;

	if ((pw = getpwnam(c->user)) == NULL)
		errx(1, "user %s does not exist; create it, e.g. useradd "
		    "--system --home-dir %s --shell /usr/sbin/nologin %s",
		    c->user, c->chroot, c->user);
	if (pw->pw_uid == 0)
		errx(1, "user %s is root; dotproxyd needs an unprivileged "
		    "user", c->user);
	c->uid = pw->pw_uid;
	c->gid = pw->pw_gid;
	if (stat(c->chroot, &st) == -1) {
		if (errno != ENOENT)
			err(1, "chroot %s", c->chroot);
		if (mkdir(c->chroot, 0755) == -1)
			err(1, "mkdir %s", c->chroot);
		log_info("created chroot directory %s", c->chroot);
	} else if (!S_ISDIR(st.st_mode))
		errx(1, "chroot %s is not a directory", c->chroot);
	else if (st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH)))
		errx(1, "chroot %s must be owned by root and not writable by "
		    "others", c->chroot);
}

static int
bind_socket(const struct sockaddr_storage *ss, int type)
{
	socklen_t	 len;
	int		 s, on = 1, bufsz = 1 << 20;
	char		 buf[64];

	len = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
	if ((s = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		fatal("socket");
	if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		fatal("setsockopt SO_REUSEADDR");
	if (ss->ss_family == AF_INET6 && setsockopt(s, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) == -1)
		fatal("setsockopt IPV6_V6ONLY");
	if (type == SOCK_DGRAM) {
		(void)setsockopt(s, SOL_SOCKET, SO_RCVBUF, &bufsz,
		    sizeof(bufsz));
		(void)setsockopt(s, SOL_SOCKET, SO_SNDBUF, &bufsz,
		    sizeof(bufsz));
	}
	if (bind(s, (const struct sockaddr *)ss, len) == -1)
		fatal("bind %s %s", type == SOCK_DGRAM ? "udp" : "tcp",
		    sockaddr_text(ss, buf, sizeof(buf)));
	if (type == SOCK_STREAM && listen(s, 1024) == -1)
		fatal("listen");
	return s;
}

static void
bind_listeners(const struct dotproxyd_conf *c)
{
	const struct listen_conf	*l;
	struct lsock			*ls;

	TAILQ_FOREACH(l, &c->listens, entry) {
		if ((ls = calloc(1, sizeof(*ls))) == NULL)
			fatal("calloc");
		ls->ss = l->ss;
		ls->udp = bind_socket(&l->ss, SOCK_DGRAM);
		ls->tcp = bind_socket(&l->ss, SOCK_STREAM);
		TAILQ_INSERT_TAIL(&lsocks, ls, entry);
	}
}

static void
start_child(struct child *c, enum proc_type type, int fd)
{
	char	*argv[6];
	int	 argc = 0;
	pid_t	 pid;

	c->type = type;
	switch ((pid = fork())) {
	case -1:
		fatal("fork");
	case 0:
		break;
	default:
		c->pid = pid;
		return;
	}
	if (dup2(fd, PARENT_FD) == -1)
		fatal("dup2");
	argv[argc++] = "dotproxyd";
	argv[argc++] = "-P";
	argv[argc++] = (char *)proc_name(type);
	if (debug)
		argv[argc++] = "-d";
	if (verbose)
		argv[argc++] = "-v";
	argv[argc] = NULL;
	execv(self, argv);
	fatal("execv %s", self);
}

/*
 * Sockets and the CA bundle first, then the config: a child's start-up
 * ends with the config's CONF_END, so by then it holds every descriptor.
 */
static void
send_startup(const struct dotproxyd_conf *c, int lpeer, int upeer)
{
	struct imsgbuf	*lib = &children[0].ibuf, *uib = &children[1].ibuf;
	struct lsock	*ls;
	int		 fd;

	TAILQ_FOREACH(ls, &lsocks, entry) {
		if ((fd = dup(ls->udp)) == -1 ||
		    imsg_compose(lib, IMSG_SOCKET_UDP, 0, fd, &ls->ss,
		    sizeof(ls->ss)) == -1)
			fatal("sending a udp socket");
		if ((fd = dup(ls->tcp)) == -1 ||
		    imsg_compose(lib, IMSG_SOCKET_TCP, 0, fd, &ls->ss,
		    sizeof(ls->ss)) == -1)
			fatal("sending a tcp socket");
	}
	if ((fd = open(c->tls_ca, O_RDONLY | O_CLOEXEC)) == -1)
		fatal("tls ca %s", c->tls_ca);
	if (imsg_compose(uib, IMSG_CA_FD, 0, fd, NULL, 0) == -1 ||
	    imsg_compose(lib, IMSG_PEER_FD, 0, lpeer, NULL, 0) == -1 ||
	    imsg_compose(uib, IMSG_PEER_FD, 0, upeer, NULL, 0) == -1)
		fatal("imsg_compose");
	if (config_send(lib, c, PROC_LISTENER) == -1 ||
	    config_send(uib, c, PROC_UPSTREAM) == -1)
		fatal("config_send");
	if (imsg_flush(lib) == -1 || imsg_flush(uib) == -1)
		fatal("sending the config");
}

static void
child_event_add(struct child *c)
{
	short	events = EV_READ | (imsg_pending(&c->ibuf) ? EV_WRITE : 0);

	if (c->events == events && event_initialized(&c->ev))
		return;
	if (event_initialized(&c->ev))
		event_del(&c->ev);
	c->events = events;
	event_set(&c->ev, c->ibuf.fd, events | EV_PERSIST, child_dispatch, c);
	event_add(&c->ev, NULL);
}

static void
child_dispatch(int fd, short event, void *arg)
{
	struct child	*c = arg;
	struct imsg	 imsg;
	struct log_msg	 lm;
	ssize_t		 n;
	char		 line[sizeof(lm.text) * 4];

	(void)fd;
	if (event & EV_WRITE) {
		if (imsg_write(&c->ibuf) == -1)
			fatal("write to the %s", proc_name(c->type));
	}
	if (event & EV_READ) {
		n = imsg_read(&c->ibuf);
		if (n == -1 && errno != EAGAIN)
			fatal("read from the %s", proc_name(c->type));
		if (n == 0) {
			log_warnx("the %s process closed its channel",
			    proc_name(c->type));
			event_loopexit(NULL);
			return;
		}
	}
	for (;;) {
		if ((n = imsg_get(&c->ibuf, &imsg)) == -1) {
			log_warnx("malformed message from the %s process",
			    proc_name(c->type));
			shutdown_children(1);
		}
		if (n == 0)
			break;
		switch (imsg.hdr.type) {
		case IMSG_LOG:
			if (imsg.len != sizeof(lm))
				fatalx("bad log message from the %s",
				    proc_name(c->type));
			memcpy(&lm, imsg.data, sizeof(lm));
			lm.text[sizeof(lm.text) - 1] = '\0';
			log_sanitize(line, sizeof(line), lm.text);
			if (lm.priority < LOG_EMERG || lm.priority > LOG_DEBUG)
				lm.priority = LOG_ERR;
			logit(lm.priority, "%s: %s", proc_name(c->type), line);
			break;
		case IMSG_STARTED:
			log_info("%s process confined and serving (pid %d)",
			    proc_name(c->type), (int)c->pid);
			break;
		default:
			log_warnx("unexpected message %u from the %s",
			    imsg.hdr.type, proc_name(c->type));
			shutdown_children(1);
		}
		imsg_free(&imsg);
	}
	child_event_add(c);
}

static void
reload(void)
{
	struct dotproxyd_conf	*nconf;
	int			 i;

	log_info("reloading %s", conffile);
	nconf = parse_config(conffile, strcmp(conffile, DOTPROXYD_CONF) == 0);
	if (nconf == NULL) {
		log_warnx("reload failed: %s has errors, keeping the running "
		    "config", conffile);
		return;
	}
	/* what needs privileges or a restart stays as it was */
	strlcpy(nconf->user, conf->user, sizeof(nconf->user));
	strlcpy(nconf->chroot, conf->chroot, sizeof(nconf->chroot));
	strlcpy(nconf->tls_ca, conf->tls_ca, sizeof(nconf->tls_ca));
	strlcpy(nconf->control_path, conf->control_path,
	    sizeof(nconf->control_path));
	nconf->uid = conf->uid;
	nconf->gid = conf->gid;
	nconf->verbose = conf->verbose;
	config_free(conf);
	conf = nconf;
	for (i = 0; i < 2; i++) {
		if (config_send(&children[i].ibuf, conf, children[i].type) ==
		    -1)
			fatal("config_send");
		child_event_add(&children[i]);
	}
	log_info("reload done");
}

static void
sig_handler(int sig, short event, void *arg)
{
	pid_t	pid;
	int	status, i;

	(void)event;
	(void)arg;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		log_info("received signal %d, shutting down", sig);
		shutdown_children(0);
		break;
	case SIGHUP:
		reload();
		break;
	case SIGCHLD:
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < 2; i++)
				if (children[i].pid == pid)
					break;
			if (i == 2)
				continue;
			children[i].pid = 0;
			if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
				log_warnx("the %s process (pid %d) violated "
				    "its sandbox policy and was killed",
				    proc_name(children[i].type), (int)pid);
			else if (WIFSIGNALED(status))
				log_warnx("the %s process (pid %d) died of "
				    "signal %d", proc_name(children[i].type),
				    (int)pid, WTERMSIG(status));
			else
				log_warnx("the %s process (pid %d) exited "
				    "with status %d",
				    proc_name(children[i].type), (int)pid,
				    WEXITSTATUS(status));
			shutdown_children(1);
		}
		break;
	}
}

static void
shutdown_children(int failed)
{
	int	i, status, tries;

	for (i = 0; i < 2; i++)
		if (children[i].pid > 0)
			kill(children[i].pid, SIGTERM);
	for (i = 0; i < 2; i++) {
		if (children[i].pid <= 0)
			continue;
		for (tries = 0; tries < 50; tries++) {
			if (waitpid(children[i].pid, &status, WNOHANG) != 0)
				break;
			usleep(20000);
		}
		if (tries == 50) {
			kill(children[i].pid, SIGKILL);
			waitpid(children[i].pid, &status, 0);
		}
		children[i].pid = 0;
	}
	log_info("terminating");
	exit(failed ? 1 : 0);
}
