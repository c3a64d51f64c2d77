/*
 * dotproxyd: the parent process.  It parses the config, binds the
 * listening sockets, starts the listener (by fork and re-exec) and the
 * upstream process (by fork and exec of dotproxyd-upstream, upmain.c),
 * hands them sockets and config, then confines itself and
 * only logs for them, reloads on SIGHUP, tells the upstream process when
 * the network changed and shuts down on SIGTERM.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <netinet/in.h>

#include <err.h>
#include <errno.h>
#include <event.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "audit.h"
#include "chan.h"
#include "dotproxyd.h"
#include "imsg.h"
#include "log.h"
#include "netwatch.h"
#include "proc.h"
#include "sandbox.h"
#include "sdnotify.h"

struct child {
	enum proc_type	 type;
	pid_t		 pid;
	struct chan	 ch;
	int		 serving;	/* said IMSG_STARTED */
	int64_t		 heard;		/* ms: its last heartbeat or start */
	struct heartbeat hb;		/* what it said then */
	struct event	 respawn;
	struct event	 tap_retry;	/* connect to the dnstap collector */
	int64_t		 tap_tried;	/* ms: last connect for it */
	int		 tap_want;	/* it has no descriptor */
	int		 tap_warned;	/* said the collector is absent */
	time_t		 started;
	time_t		 deaths[RESPAWN_MAX];
};

struct lsock {
	TAILQ_ENTRY(lsock)	 entry;
	struct sockaddr_storage	 ss;
	int			 udp;
	int			 tcp;
};

static void	 usage(void) __attribute__((__noreturn__));
static int	 bind_socket(const struct sockaddr_storage *, int);
static void	 bind_failed(const struct sockaddr_storage *, int, int);
static void	 bind_listeners(const struct dotproxyd_conf *);
static int	 sync_metrics(const struct dotproxyd_conf *);
static int	 send_metrics(struct imsgbuf *);
static void	 open_control(const struct dotproxyd_conf *);
static void	 child_start(struct child *, int);
static void	 child_respawn(int, short, void *);
static void	 child_died(struct child *, int);
static void	 child_dispatch(int, short, void *);
static int	 child_message(struct child *, struct imsg *);
static int	 child_msg_bad(const struct child *, const struct imsg *,
		    size_t, size_t);
static int	 child_log(struct child *, struct imsg *);
static int	 child_audit(struct child *, struct imsg *);
static int	 child_reload(struct child *, struct imsg *);
static int	 child_log_level(struct child *, struct imsg *);
static void	 ctl_result_bound(char *, size_t);
static void	 sig_handler(int, short, void *);
static void	 shutdown_children(int) __attribute__((__noreturn__));
static int	 reload(char *, size_t);
static int	 reload_config(char *, size_t);
static void	 resolve_user(struct dotproxyd_conf *);
static void	 warn_open_resolver(const struct dotproxyd_conf *);
static void	 audit_confinement(const struct child *);
static void	 network_changed(void);
static int	 child_heartbeat(struct child *, struct imsg *);
static int	 child_dnstap_needfd(struct child *, struct imsg *);
static void	 dnstap_retry(int, short, void *);
static void	 service_start(void);
static void	 service_tick(int, short, void *);
static void	 service_ready(void);

static struct dotproxyd_conf	*conf;
static const char		*conffile = DOTPROXYD_CONF;
static char			 self[PATH_MAX];	/* the listener's */
static char			 upstream_prog[PATH_MAX];
static struct child		 children[2];	/* listener, upstream */
static int			 pending_peer[2] = { -1, -1 };
static TAILQ_HEAD(, lsock)	 lsocks = TAILQ_HEAD_INITIALIZER(lsocks);
static int			 control_fd = -1;
static int			 metrics_fd = -1;
static struct sockaddr_storage	 metrics_ss;	/* metrics_fd's address */
static int			 debug, verbose;
static struct event		 service_timer;
static int			 service_ready_said;
static int			 starting = 1;	/* until the event loop runs */

static void
usage(void)
{
	fprintf(stderr, "usage: dotproxyd [-dnv] [-f file] [-s socket]\n");
	exit(1);
}

static void	 parse_options(int, char *[], int *, const char **,
		    const char **);
static void	 run_child_process(const char *) __attribute__((__noreturn__));
static void	 check_config_and_exit(void) __attribute__((__noreturn__));
static void	 find_self(const char *);
static void	 find_upstream_prog(void);
static void	 start_daemon(const char *);
static void	 setup_events(void);

int
main(int argc, char *argv[])
{
	const char	*child = NULL, *sockpath = NULL;
	char		 hash[CONFIG_HASH_HEX + 1];
	int		 noaction = 0, pair[2], i;

	sandbox_title_init(argc, argv);
	parse_options(argc, argv, &noaction, &child, &sockpath);

	log_init(1, LOG_DAEMON);	/* stderr until daemonised */
	log_setverbose(verbose);

	if (child != NULL)
		run_child_process(child);

	conf = parse_config(conffile, strcmp(conffile, DOTPROXYD_CONF) == 0);
	if (conf == NULL)
		exit(1);
	if (sockpath != NULL && strlcpy(conf->control_path, sockpath,
	    sizeof(conf->control_path)) >= sizeof(conf->control_path))
		errx(1, "control socket path too long");
	if (noaction)
		check_config_and_exit();

	start_daemon(argv[0]);
	setup_events();
	service_start();

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    pair) == -1)
		fatal("socketpair");
	children[0].type = PROC_LISTENER;
	children[1].type = PROC_UPSTREAM;
	for (i = 0; i < 2; i++) {
		evtimer_set(&children[i].respawn, child_respawn,
		    &children[i]);
		evtimer_set(&children[i].tap_retry, dnstap_retry,
		    &children[i]);
		child_start(&children[i], pair[i]);
	}
	/* the routing socket is opened now: the confined parent cannot */
	netwatch_start(network_changed);

	sandbox_parent(self, upstream_prog, conffile, conf);
	setproctitle("parent");
	config_hash(conf, hash, sizeof(hash));
	audit("start", "version", DOTPROXYD_VERSION, "config", conffile,
	    "config_hash", hash, NULL);

	starting = 0;
	event_dispatch();
	shutdown_children(0);
}

static void
parse_options(int argc, char *argv[], int *noaction, const char **child,
    const char **sockpath)
{
	int	ch;

	while ((ch = getopt(argc, argv, "dnf:P:s:v")) != -1) {
		switch (ch) {
		case 'd':
			debug = 1;
			break;
		case 'n':
			*noaction = 1;
			break;
		case 'f':
			conffile = optarg;
			break;
		case 'P':
			*child = optarg;
			break;
		case 's':
			*sockpath = optarg;
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
}

/*
 * -P listener: this is the listener the parent started; it never
 * returns here.  The upstream process is dotproxyd-upstream.
 */
static void
run_child_process(const char *child)
{
	if (strcmp(child, "listener") == 0)
		listener_main(debug, verbose);
	fatalx("unknown process %s", child);
}

/* -n: the config parsed; say so, or print it with -v, and exit. */
static void
check_config_and_exit(void)
{
	if (verbose)
		print_config(stdout, conf);
	else
		fprintf(stderr, "configuration OK\n");
	warn_open_resolver(conf);
	exit(0);
}

/* Our own binary, to start the listener (and new ones) from. */
static void
find_self(const char *argv0)
{
	ssize_t	n;

	if ((n = readlink("/proc/self/exe", self, sizeof(self) - 1)) == -1) {
		if (argv0[0] != '/' &&
		    realpath(argv0, self) == NULL)
			err(1, "cannot find my own binary");
		if (argv0[0] == '/')
			strlcpy(self, argv0, sizeof(self));
	} else
		self[n] = '\0';
}

/*
 * The upstream process's program: dotproxyd-upstream beside ours (as in
 * a build tree), else in ../libexec from ours (PREFIX/sbin/dotproxyd,
 * PREFIX/libexec/dotproxyd-upstream, as `make install' puts them).
 */
static void
find_upstream_prog(void)
{
	static const char *const where[] = { "", "../libexec/" };
	char		 dir[PATH_MAX], path[PATH_MAX], *slash;
	size_t		 i;

	strlcpy(dir, self, sizeof(dir));
	if ((slash = strrchr(dir, '/')) == NULL)
		errx(1, "cannot tell where my binary %s is", self);
	slash[1] = '\0';
	for (i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%sdotproxyd-upstream",
		    dir, where[i]) >= sizeof(path))
			continue;
		if (access(path, X_OK) == 0 && realpath(path, upstream_prog))
			return;
	}
	errx(1, "cannot find dotproxyd-upstream in %s or %s../libexec",
	    dir, dir);
}

/*
 * As root: the user to run children as, our binary, the audit log, then
 * into the background, and the listening and control sockets.
 */
static void
start_daemon(const char *argv0)
{
	char	why[128];

	if (geteuid() != 0)
		errx(1, "need root privileges");
	resolve_user(conf);
	conf->verbose = verbose;
	find_self(argv0);
	find_upstream_prog();

	log_init(debug, LOG_DAEMON);
	if (audit_open(conf->audit_log, why, sizeof(why)) == -1)
		fatalx("audit log %s: %s", conf->audit_log, why);
	if (!debug && daemon(0, 0) == -1)
		fatal("daemon");
	parse_errors_to_log(1);		/* stderr is gone now */
	log_info("dotproxyd %s starting", DOTPROXYD_VERSION);
	warn_open_resolver(conf);

	bind_listeners(conf);
	sync_metrics(conf);
	open_control(conf);
}

/* The event loop and the signals it handles. */
static void
setup_events(void)
{
	static struct event	ev_sigterm, ev_sigint, ev_sighup, ev_sigchld;

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
}

/* Listening on more than loopback, with only loopback allowed? Say so. */
static void
warn_open_resolver(const struct dotproxyd_conf *c)
{
	const struct listen_conf	*l;
	const struct acl_conf		*a;
	int				 wide = 0, open = 0;

	TAILQ_FOREACH(l, &c->listens, entry)
		if (!acl_is_loopback((const struct sockaddr *)&l->ss))
			wide = 1;
	TAILQ_FOREACH(a, &c->acls, entry) {
		struct sockaddr_storage ss;

		memset(&ss, 0, sizeof(ss));
		ss.ss_family = (sa_family_t)a->af;
		if (a->af == AF_INET)
			memcpy(&((struct sockaddr_in *)&ss)->sin_addr,
			    a->addr, 4);
		else
			memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr,
			    a->addr, 16);
		if (!acl_is_loopback((struct sockaddr *)&ss) ||
		    (a->af == AF_INET && a->plen < 8))
			open = 1;
	}
	if (wide && !open)
		log_warnx("listening beyond loopback, but no \"allow from\" "
		    "covers a non-loopback network: such clients are "
		    "refused");
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
	if (bind(s, (const struct sockaddr *)ss, len) == -1) {
		bind_failed(ss, type, errno);
		close(s);
		return -1;
	}
	if (type == SOCK_STREAM && listen(s, 1024) == -1)
		fatal("listen");
	return s;
}

/*
 * An address of the config that cannot be bound: at start-up that is
 * fatal (the user would believe we serve it), naming what holds it where
 * the system can tell; on a reload the others are served, and the
 * failure is logged and audited.
 */
static void
bind_failed(const struct sockaddr_storage *ss, int type, int err)
{
	const char	*proto = type == SOCK_DGRAM ? "udp" : "tcp";
	char		 addr[64], holder[128], by[160] = "";

	sockaddr_text(ss, addr, sizeof(addr));
	if (err == EADDRINUSE &&
	    sandbox_port_holder(ss, type, holder, sizeof(holder)) == 0)
		snprintf(by, sizeof(by), " (held by %s)", holder);
	if (starting)
		fatalx("cannot listen on %s %s: %s%s", proto, addr,
		    strerror(err), by);
	log_warnx("cannot listen on %s %s: %s%s; serving the other "
	    "addresses", proto, addr, strerror(err), by);
	audit("listen-failed", "address", addr, "protocol", proto, "reason",
	    strerror(err), NULL);
}

/*
 * Bind what the config lists and is not bound yet; close what it no
 * longer lists.  Returns new sockets to hand to the listener in *added.
 */
static int
sync_listeners(const struct dotproxyd_conf *c, struct lsock **added,
    int max)
{
	const struct listen_conf	*l;
	struct lsock			*ls, *next;
	int				 n = 0, found;

	TAILQ_FOREACH(l, &c->listens, entry) {
		found = 0;
		TAILQ_FOREACH(ls, &lsocks, entry)
			if (memcmp(&ls->ss, &l->ss, sizeof(ls->ss)) == 0)
				found = 1;
		if (found || n == max)
			continue;
		if ((ls = calloc(1, sizeof(*ls))) == NULL)
			fatal("calloc");
		ls->ss = l->ss;
		if ((ls->udp = bind_socket(&l->ss, SOCK_DGRAM)) == -1 ||
		    (ls->tcp = bind_socket(&l->ss, SOCK_STREAM)) == -1) {
			if (ls->udp != -1)
				close(ls->udp);
			free(ls);
			continue;
		}
		TAILQ_INSERT_TAIL(&lsocks, ls, entry);
		added[n++] = ls;
	}
	for (ls = TAILQ_FIRST(&lsocks); ls != NULL; ls = next) {
		next = TAILQ_NEXT(ls, entry);
		if (config_listens(c, &ls->ss))
			continue;
		/* the listener closes its copies when the config arrives */
		TAILQ_REMOVE(&lsocks, ls, entry);
		close(ls->udp);
		close(ls->tcp);
		free(ls);
	}
	return n;
}

static void
bind_listeners(const struct dotproxyd_conf *c)
{
	struct lsock	*added[64];

	sync_listeners(c, added, 64);
	if (TAILQ_EMPTY(&lsocks))
		fatalx("no address to listen on");
}

/*
 * The metrics socket: bound when the config names an address that is
 * not bound yet, closed when it names another or none (the listener
 * closes its copy when the config arrives).  Returns 1 when there is a
 * new socket to hand to the listener.
 */
static int
sync_metrics(const struct dotproxyd_conf *c)
{
	if (metrics_fd != -1 &&
	    memcmp(&metrics_ss, &c->metrics, sizeof(metrics_ss)) == 0)
		return 0;
	if (metrics_fd != -1) {
		close(metrics_fd);
		metrics_fd = -1;
		memset(&metrics_ss, 0, sizeof(metrics_ss));
	}
	if (c->metrics.ss_family == AF_UNSPEC ||
	    (metrics_fd = bind_socket(&c->metrics, SOCK_STREAM)) == -1)
		return 0;
	metrics_ss = c->metrics;
	return 1;
}

/* A copy of the metrics socket for the listener, if there is one. */
static int
send_metrics(struct imsgbuf *ib)
{
	int	fd;

	if (metrics_fd == -1)
		return 0;
	if ((fd = dup(metrics_fd)) == -1)
		return -1;
	return imsg_compose(ib, IMSG_SOCKET_METRICS, 0, fd, &metrics_ss,
	    sizeof(metrics_ss));
}

/* The control socket: root and the daemon's group may connect. */
static void
open_control(const struct dotproxyd_conf *c)
{
	struct sockaddr_un	 sun;
	mode_t			 old;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlcpy(sun.sun_path, c->control_path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path))
		fatalx("control socket path too long");
	if ((control_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0)) == -1)
		fatal("control socket");
	if (unlink(c->control_path) == -1 && errno != ENOENT)
		fatal("unlink %s", c->control_path);
	old = umask(S_IXUSR | S_IXGRP | S_IRWXO);
	if (bind(control_fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		fatal("bind %s", c->control_path);
	umask(old);
	if (chmod(c->control_path, 0660) == -1 ||
	    chown(c->control_path, 0, c->gid) == -1)
		fatal("control socket permissions");
	if (listen(control_fd, 16) == -1)
		fatal("listen %s", c->control_path);
}

/*
 * Fork and exec a child with its channel to us on PARENT_FD and the
 * standard descriptors: every other descriptor, whether ours or one
 * whoever started us left open, is closed first.
 */
static void
start_process(struct child *c, int fd)
{
	char	*argv[6], *envp[4], *prog;
	int	 argc = 0;
	pid_t	 pid, ppid = getpid();

	switch ((pid = fork())) {
	case -1:
		fatal("fork");
	case 0:
		break;
	default:
		c->pid = pid;
		return;
	}
	if (fd == PARENT_FD) {
		if (fcntl(fd, F_SETFD, 0) == -1)
			fatal("fcntl");
	} else if (dup2(fd, PARENT_FD) == -1)
		fatal("dup2");
	closefrom(PARENT_FD + 1);
	sandbox_child_init();
	if (getppid() != ppid)
		_exit(1);	/* we are gone already */
	prog = c->type == PROC_UPSTREAM ? upstream_prog : self;
	argv[argc++] = "dotproxyd";	/* titles: "dotproxyd: upstream" */
	argv[argc++] = "-P";
	argv[argc++] = (char *)proc_name(c->type);
	if (debug)
		argv[argc++] = "-d";
	if (verbose)
		argv[argc++] = "-v";
	argv[argc] = NULL;
	sandbox_child_env(c->type, envp, sizeof(envp) / sizeof(envp[0]));
	execve(prog, argv, envp);
	fatal("execve %s", prog);
}

/*
 * Start a child and give it what it needs: its sockets or the CA bundle,
 * its end of the channel to the other child, then the config.  Its
 * start-up ends with the config's CONF_END.
 */
static void
child_start(struct child *c, int peerfd)
{
	struct imsgbuf	*ib = &c->ch.ibuf;
	struct lsock	*ls;
	int		 pair[2], fd;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    pair) == -1)
		fatal("socketpair");
	start_process(c, pair[1]);
	close(pair[1]);
	if (imsgbuf_init(ib, pair[0]) == -1)
		fatal("imsgbuf_init");
	c->started = time(NULL);
	c->serving = 0;
	c->tap_want = 0;
	evtimer_del(&c->tap_retry);
	if (c->type == PROC_LISTENER) {
		TAILQ_FOREACH(ls, &lsocks, entry) {
			if ((fd = dup(ls->udp)) == -1 ||
			    imsg_compose(ib, IMSG_SOCKET_UDP, 0, fd, &ls->ss,
			    sizeof(ls->ss)) == -1)
				fatal("sending a udp socket");
			if ((fd = dup(ls->tcp)) == -1 ||
			    imsg_compose(ib, IMSG_SOCKET_TCP, 0, fd, &ls->ss,
			    sizeof(ls->ss)) == -1)
				fatal("sending a tcp socket");
		}
		if ((fd = dup(control_fd)) == -1 ||
		    imsg_compose(ib, IMSG_SOCKET_CONTROL, 0, fd, NULL, 0) == -1)
			fatal("sending the control socket");
		if (send_metrics(ib) == -1)
			fatal("sending the metrics socket");
	} else {
		if ((fd = open(conf->tls_ca, O_RDONLY | O_CLOEXEC)) == -1)
			fatal("tls ca %s", conf->tls_ca);
		if (imsg_compose(ib, IMSG_CA_FD, 0, fd, NULL, 0) == -1)
			fatal("imsg_compose");
	}
	if (imsg_compose(ib, IMSG_PEER_FD, 0, peerfd, NULL, 0) == -1 ||
	    config_send(ib, conf, c->type) == -1 || imsg_flush(ib) == -1)
		fatal("starting the %s", proc_name(c->type));
	c->ch.dispatch = child_dispatch;
	c->ch.peer = c->type == PROC_LISTENER ? "listener process" :
	    "upstream process";
	c->ch.events = 0;
	chan_update(&c->ch);
}

/* A child is gone: log and audit it, then start a new one, or give up. */
static void
child_died(struct child *c, int status)
{
	struct timeval	 tv;
	time_t		 now = time(NULL);
	char		 pid[16], why[64];
	int		 i, recent = 0;

	snprintf(pid, sizeof(pid), "%d", (int)c->pid);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) {
		log_warnx("the %s process (pid %s) violated its sandbox "
		    "policy and was killed", proc_name(c->type), pid);
		strlcpy(why, "sandbox violation", sizeof(why));
	} else if (WIFSIGNALED(status)) {
		log_warnx("the %s process (pid %s) died of signal %d",
		    proc_name(c->type), pid, WTERMSIG(status));
		snprintf(why, sizeof(why), "signal %d", WTERMSIG(status));
	} else {
		log_warnx("the %s process (pid %s) exited with status %d",
		    proc_name(c->type), pid, WEXITSTATUS(status));
		snprintf(why, sizeof(why), "exit %d", WEXITSTATUS(status));
	}
	audit("child-died", "child", proc_name(c->type), "pid", pid,
	    "reason", why, NULL);
	c->pid = 0;
	c->serving = 0;
	chan_close(&c->ch);

	memmove(c->deaths + 1, c->deaths, sizeof(c->deaths) -
	    sizeof(c->deaths[0]));
	c->deaths[0] = now;
	for (i = 0; i < RESPAWN_MAX; i++)
		if (c->deaths[i] != 0 && now - c->deaths[i] < RESPAWN_WINDOW)
			recent++;
	if (recent >= RESPAWN_MAX) {
		log_warnx("the %s process died %d times in %d seconds; "
		    "giving up", proc_name(c->type), recent, RESPAWN_WINDOW);
		audit("crash-loop", "child", proc_name(c->type), NULL);
		shutdown_children(1);
	}
	/* 0 s, then 0.2, 0.4, 0.8 s: back within a second at first */
	tv.tv_sec = 0;
	tv.tv_usec = recent <= 1 ? 0 : 100000 << (recent - 1);
	evtimer_add(&c->respawn, &tv);
}

static void
child_respawn(int fd, short event, void *arg)
{
	struct child	*c = arg, *other;
	int		 pair[2], idx = c == &children[0] ? 0 : 1;

	(void)fd;
	(void)event;
	other = &children[1 - idx];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
	    pair) == -1) {
		log_warn("socketpair");
		shutdown_children(1);
	}
	if (other->pid > 0) {
		if (imsg_compose(&other->ch.ibuf, IMSG_PEER_FD, 0, pair[1],
		    NULL, 0) == -1)
			fatal("imsg_compose");
		chan_update(&other->ch);
	} else {
		if (pending_peer[1 - idx] != -1)
			close(pending_peer[1 - idx]);
		pending_peer[1 - idx] = pair[1];
	}
	if (pending_peer[idx] != -1) {
		/* the other one was also restarted and left us its end */
		close(pair[0]);
		pair[0] = pending_peer[idx];
		pending_peer[idx] = -1;
	}
	log_info("starting a new %s process", proc_name(c->type));
	child_start(c, pair[0]);
}

/*
 * An audit event from a child: written only if it is one that child may
 * report, with the fields it may carry.  -1 for a malformed message.
 */
static int
child_audit(struct child *c, struct imsg *imsg)
{
	struct audit_msg	am;
	char			why[128], line[sizeof(why) * 4];

	if (child_msg_bad(c, imsg, sizeof(am), sizeof(am)))
		return -1;
	memcpy(&am, imsg->data, sizeof(am));
	am.event[sizeof(am.event) - 1] = '\0';
	if (am.kvlen > sizeof(am.kv)) {
		log_warnx("bad message from the %s process: IMSG_AUDIT with "
		    "%zu bytes of fields", proc_name(c->type), (size_t)am.kvlen);
		return -1;
	}
	if (audit_allowed(c->type, am.event, am.kv, am.kvlen, why,
	    sizeof(why)) == -1) {
		log_sanitize(line, sizeof(line), why);
		log_warnx("rejected an audit event from the %s process: %s",
		    proc_name(c->type), line);
		audit("audit-rejected", "child", proc_name(c->type), "reason",
		    why, NULL);
		return 0;
	}
	audit_write(proc_name(c->type), am.event, am.kv, am.kvlen);
	return 0;
}

/*
 * Cut a control result to what the listener takes (CTL_RESULT_MAX with
 * its NUL), with a marker at the end: a long config path, say.
 */
static void
ctl_result_bound(char *result, size_t len)
{
	static const char	marker[] = " [truncated]";

	if (len < CTL_RESULT_MAX || strlen(result) < CTL_RESULT_MAX)
		return;
	memcpy(result + CTL_RESULT_MAX - sizeof(marker), marker,
	    sizeof(marker));
}

/* dotproxyctl reload, from the listener: reload, then say how it went. */
static int
child_reload(struct child *c, struct imsg *imsg)
{
	char	result[PATH_MAX + 128];

	if (child_msg_bad(c, imsg, 0, 0))
		return -1;
	result[0] = '\0';
	reload(result, sizeof(result));
	ctl_result_bound(result, sizeof(result));
	if (imsg_compose(&c->ch.ibuf, IMSG_CTL_RESULT, imsg->hdr.peerid, -1,
	    result, strlen(result) + 1) == -1)
		log_warn("imsg_compose");
	return 0;
}

/* dotproxyctl log verbose or brief, from the listener: for everyone. */
static int
child_log_level(struct child *c, struct imsg *imsg)
{
	int	v, i;

	if (child_msg_bad(c, imsg, sizeof(v), sizeof(v)))
		return -1;
	memcpy(&v, imsg->data, sizeof(v));
	verbose = conf->verbose = v ? 1 : 0;
	log_setverbose(verbose);
	log_info("logging %s", verbose ? "verbose" : "brief");
	for (i = 0; i < 2; i++)
		if (children[i].pid > 0) {
			if (imsg_compose(&children[i].ch.ibuf, IMSG_CTL_LOG, 0,
			    -1, &verbose, sizeof(verbose)) == -1)
				log_warn("imsg_compose");
			chan_update(&children[i].ch);
		}
	return 0;
}

/* A log record from a child, sanitised. */
static int
child_log(struct child *c, struct imsg *imsg)
{
	struct log_msg	lm;
	char		line[sizeof(lm.text) * 4];

	if (child_msg_bad(c, imsg, sizeof(lm), sizeof(lm)))
		return -1;
	memcpy(&lm, imsg->data, sizeof(lm));
	lm.text[sizeof(lm.text) - 1] = '\0';
	log_sanitize(line, sizeof(line), lm.text);
	if (lm.priority < LOG_EMERG || lm.priority > LOG_DEBUG)
		lm.priority = LOG_ERR;
	logit(lm.priority, "%s: %s", proc_name(c->type), line);
	return 0;
}

/*
 * A child's message of the wrong size, or with a descriptor (no child
 * sends one), is logged by name; 1 then.
 */
static int
child_msg_bad(const struct child *c, const struct imsg *imsg, size_t min,
    size_t max)
{
	char		 buf[128];
	const char	*why;

	if ((why = msg_problem(imsg, min, max, MSG_NO_FD, buf,
	    sizeof(buf))) == NULL)
		return 0;
	log_warnx("bad message from the %s process: %s", proc_name(c->type),
	    why);
	return 1;
}

/* A child's IMSG_STARTED: once a start, with nothing in it. */
static int
child_started(struct child *c, struct imsg *imsg)
{
	if (child_msg_bad(c, imsg, 0, 0))
		return -1;
	if (c->serving) {
		log_warnx("the %s process said IMSG_STARTED twice",
		    proc_name(c->type));
		return -1;
	}
	c->serving = 1;
	c->heard = mono_ms();
	log_info("%s process confined and serving (pid %d)",
	    proc_name(c->type), (int)c->pid);
	audit_confinement(c);
	service_ready();
	/* what start-up took (the config, the children's set-up) is done */
	if (children[0].serving && children[1].serving)
		proc_mem_trim();
	return 0;
}

/*
 * A Unix stream socket connected to the dnstap collector, non-blocking
 * for the child's writer; -1 with errno set when there is none.
 */
static int
dnstap_connect(const char *path)
{
	struct sockaddr_un	sun;
	int			fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		return close_fail(fd);
	return fd;
}

/*
 * Give a child that wants one a descriptor connected to the collector.
 * An absent collector is tried again DNSTAP_RETRY_MS later, and said
 * once until it is back.
 */
static void
dnstap_send_fd(struct child *c)
{
	struct timeval	tv = { DNSTAP_RETRY_MS / 1000, 0 };
	int		fd;

	c->tap_tried = mono_ms();
	if (!c->tap_want || c->pid <= 0 || conf->dnstap_path[0] == '\0') {
		c->tap_want = 0;
		return;
	}
	if ((fd = dnstap_connect(conf->dnstap_path)) == -1) {
		if (!c->tap_warned)
			log_warn("dnstap socket %s for the %s process; "
			    "trying again every %d s", conf->dnstap_path,
			    proc_name(c->type), DNSTAP_RETRY_MS / 1000);
		c->tap_warned = 1;
		evtimer_add(&c->tap_retry, &tv);
		return;
	}
	if (imsg_compose(&c->ch.ibuf, IMSG_DNSTAP_FD, 0, fd, NULL, 0) == -1) {
		log_warn("imsg_compose");
		evtimer_add(&c->tap_retry, &tv);
		return;
	}
	chan_update(&c->ch);
	if (c->tap_warned)
		log_info("dnstap socket %s: connected for the %s process",
		    conf->dnstap_path, proc_name(c->type));
	c->tap_want = c->tap_warned = 0;
}

static void
dnstap_retry(int fd, short event, void *arg)
{
	(void)fd;
	(void)event;
	dnstap_send_fd(arg);
}

/*
 * A child's writer has no descriptor (the first, or the collector went
 * away): connect for it now, or when a second has passed since the last
 * try for it.
 */
static int
child_dnstap_needfd(struct child *c, struct imsg *imsg)
{
	struct timeval	tv;
	int64_t		wait;

	if (child_msg_bad(c, imsg, 0, 0))
		return -1;
	c->tap_want = 1;
	if (evtimer_pending(&c->tap_retry, NULL))
		return 0;
	wait = DNSTAP_RETRY_MS - (mono_ms() - c->tap_tried);
	if (wait <= 0) {
		dnstap_send_fd(c);
		return 0;
	}
	tv.tv_sec = wait / 1000;
	tv.tv_usec = (wait % 1000) * 1000;
	evtimer_add(&c->tap_retry, &tv);
	return 0;
}

/*
 * One message from a child; -1 for a malformed one or one that child
 * may not send (the control commands come from the listener only).
 */
static int
child_message(struct child *c, struct imsg *imsg)
{
	switch (imsg->hdr.type) {
	case IMSG_LOG:
		return child_log(c, imsg);
	case IMSG_AUDIT:
		return child_audit(c, imsg);
	case IMSG_STARTED:
		return child_started(c, imsg);
	case IMSG_HEARTBEAT:
		return child_heartbeat(c, imsg);
	case IMSG_DNSTAP_NEEDFD:
		return child_dnstap_needfd(c, imsg);
	case IMSG_CTL_RELOAD:
		if (c->type != PROC_LISTENER)
			break;
		return child_reload(c, imsg);
	case IMSG_CTL_LOG:
		if (c->type != PROC_LISTENER)
			break;
		return child_log_level(c, imsg);
	}
	log_warnx("unexpected %s from the %s process",
	    imsg_type_name(imsg->hdr.type), proc_name(c->type));
	return -1;
}

static struct child *
child_of(const struct chan *ch)
{
	return ch == &children[0].ch ? &children[0] : &children[1];
}

/*
 * Messages from a child.  Anything malformed ends that child, not us; a
 * channel closed or broken is a child gone (SIGCHLD does the rest).
 */
static void
child_dispatch(int fd, short event, void *arg)
{
	struct child	*c = child_of(arg);
	struct imsg	 imsg;
	ssize_t		 n;

	(void)fd;
	if (!chan_io(&c->ch, event))
		goto bad;
	while ((n = imsg_get(&c->ch.ibuf, &imsg)) != 0) {
		if (n == -1) {
			log_warnx("malformed message from the %s process",
			    proc_name(c->type));
			goto bad;
		}
		if (child_message(c, &imsg) == -1) {
			imsg_free(&imsg);
			goto bad;
		}
		imsg_free(&imsg);
	}
	chan_update(&c->ch);
	return;
bad:
	/* a child that speaks nonsense is ended and started anew */
	event_del(&c->ch.ev);
	if (c->pid > 0)
		kill(c->pid, SIGKILL);
}

/*
 * A child reports itself confined: that goes into the audit trail, with
 * what the system's sandbox did (SANDBOX_AUDIT_PAIRS fields at most).
 */
static void
audit_confinement(const struct child *c)
{
	const char *const	*kv = sandbox_audit_fields(c->type);
	char			 uid[16], pid[16];

	snprintf(uid, sizeof(uid), "%u", (unsigned)conf->uid);
	snprintf(pid, sizeof(pid), "%d", (int)c->pid);
	audit("confined", "child", proc_name(c->type), "pid", pid, "uid", uid,
	    "chroot", conf->chroot, kv[0], kv[1], kv[2], kv[3], kv[4], kv[5],
	    NULL);
}

/*
 * The network changed (netwatch.c logged it): the upstream process drops
 * its connections and back-offs and connects anew.  A process being
 * started anew connects afresh anyway.
 */
static void
network_changed(void)
{
	int	i;

	for (i = 0; i < 2; i++) {
		if (children[i].type != PROC_UPSTREAM || children[i].pid <= 0)
			continue;
		if (imsg_compose(&children[i].ch.ibuf, IMSG_NETWORK_CHANGED, 0,
		    -1, NULL, 0) == -1) {
			log_warn("imsg_compose");
			continue;
		}
		chan_update(&children[i].ch);
	}
}

/*
 * Re-read the config.  An invalid file keeps the running config.  What
 * needs privileges the parent no longer has, or a new process, stays:
 * user, chroot, tls ca, control socket, audit log.
 */
static int
reload_config(char *result, size_t len)
{
	struct dotproxyd_conf	*nconf;
	struct lsock		*added[64];
	char			 hash[CONFIG_HASH_HEX + 1], why[128];
	int			 i, n, m, fd;

	log_info("reloading %s", conffile);
	/* the audit log anew, after rotation say, whatever the new config */
	if (audit_open(conf->audit_log, why, sizeof(why)) == -1)
		log_warnx("audit log %s: %s; still writing to the file open "
		    "before", conf->audit_log, why);
	nconf = parse_config(conffile, strcmp(conffile, DOTPROXYD_CONF) == 0);
	if (nconf == NULL) {
		log_warnx("reload failed: %s has errors, keeping the running "
		    "config", conffile);
		audit("reload", "result", "rejected", "config", conffile,
		    NULL);
		snprintf(result, len, "error: %s has errors; the running "
		    "config stays", conffile);
		return -1;
	}
	strlcpy(nconf->user, conf->user, sizeof(nconf->user));
	strlcpy(nconf->chroot, conf->chroot, sizeof(nconf->chroot));
	strlcpy(nconf->tls_ca, conf->tls_ca, sizeof(nconf->tls_ca));
	strlcpy(nconf->control_path, conf->control_path,
	    sizeof(nconf->control_path));
	strlcpy(nconf->audit_log, conf->audit_log, sizeof(nconf->audit_log));
	nconf->uid = conf->uid;
	nconf->gid = conf->gid;
	nconf->verbose = conf->verbose;
	config_free(conf);
	conf = nconf;
	warn_open_resolver(conf);
	n = sync_listeners(conf, added, 64);
	m = sync_metrics(conf);
	for (i = 0; i < 2; i++) {
		struct child *c = &children[i];

		if (c->pid <= 0)
			continue;
		if (c->type == PROC_LISTENER) {
			int j;

			for (j = 0; j < n; j++) {
				if ((fd = dup(added[j]->udp)) == -1 ||
				    imsg_compose(&c->ch.ibuf, IMSG_SOCKET_UDP, 0,
				    fd, &added[j]->ss, sizeof(added[j]->ss)) ==
				    -1 || (fd = dup(added[j]->tcp)) == -1 ||
				    imsg_compose(&c->ch.ibuf, IMSG_SOCKET_TCP, 0,
				    fd, &added[j]->ss, sizeof(added[j]->ss)) ==
				    -1)
					log_warn("sending a new socket");
			}
			if (m && send_metrics(&c->ch.ibuf) == -1)
				log_warn("sending the metrics socket");
		}
		if (config_send(&c->ch.ibuf, conf, c->type) == -1)
			log_warn("config_send");
		chan_update(&c->ch);
	}
	config_hash(conf, hash, sizeof(hash));
	audit("reload", "result", "accepted", "config", conffile,
	    "config_hash", hash, NULL);
	log_info("reload done");
	snprintf(result, len, "reloaded %s", conffile);
	proc_mem_trim();
	return 0;
}

static void
sig_handler(int sig, short event, void *arg)
{
	pid_t	pid;
	int	status, i;
	char	buf[256];

	(void)event;
	(void)arg;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		log_info("received signal %d, shutting down", sig);
		shutdown_children(0);
		break;
	case SIGHUP:
		reload(buf, sizeof(buf));
		break;
	case SIGCHLD:
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			for (i = 0; i < 2; i++)
				if (children[i].pid == pid)
					child_died(&children[i], status);
		}
		break;
	}
}

/*
 * Stop both children, letting them drain for a bounded time while their
 * last log and audit records are still read, and exit.
 */
static void
shutdown_children(int failed)
{
	struct pollfd	 pfd[2];
	int		 i, n, status, left, tries;

	sdnotify_stopping();
	for (i = 0; i < 2; i++)
		if (children[i].pid > 0)
			kill(children[i].pid, SIGTERM);
	for (tries = 0; tries < (DRAIN_MS + 1000) / 20; tries++) {
		for (i = 0, left = 0; i < 2; i++) {
			if (children[i].pid > 0 &&
			    waitpid(children[i].pid, &status, WNOHANG) != 0)
				children[i].pid = 0;
			if (children[i].pid > 0)
				left++;
		}
		for (i = 0, n = 0; i < 2; i++)
			if (children[i].ch.ibuf.rbuf != NULL) {
				pfd[n].fd = children[i].ch.ibuf.fd;
				pfd[n++].events = POLLIN;
			}
		if (poll(pfd, (nfds_t)n, 20) > 0)
			for (i = 0; i < 2; i++)
				if (children[i].ch.ibuf.rbuf != NULL &&
				    event_initialized(&children[i].ch.ev) &&
				    event_pending(&children[i].ch.ev, EV_READ,
				    NULL))
					child_dispatch(children[i].ch.ibuf.fd,
					    EV_READ, &children[i].ch);
		if (left == 0)
			break;
	}
	for (i = 0; i < 2; i++)
		if (children[i].pid > 0) {
			kill(children[i].pid, SIGKILL);
			waitpid(children[i].pid, &status, 0);
			children[i].pid = 0;
		}
	audit("stop", "status", failed ? "failure" : "normal", NULL);
	log_info("terminating");
	exit(failed ? 1 : 0);
}

/* A reload, told to the service manager before and after. */
static int
reload(char *result, size_t len)
{
	int	r;

	sdnotify_reloading();
	r = reload_config(result, len);
	sdnotify_ready();
	return r;
}

/*
 * The service manager (systemd's notification socket, when it gave us
 * one): READY=1 once both children serve, a STATUS= line, and with a
 * watchdog, WATCHDOG=1 at half its interval while both children answer
 * our heartbeats within it.  The heartbeats go out every 10 s without a
 * watchdog, for the status line.
 */
static void
service_start(void)
{
	if (sdnotify_open() == -1)
		return;
	sdnotify_status("starting");
	evtimer_set(&service_timer, service_tick, NULL);
	service_tick(-1, 0, NULL);
}

static void
service_tick(int fd, short event, void *arg)
{
	struct timeval	 tv = { 10, 0 };
	uint64_t	 wd_ms = sdnotify_watchdog_usec() / 1000, queries;
	int64_t		 now = mono_ms();
	int		 i, alive = 1;

	(void)fd;
	(void)event;
	(void)arg;
	for (i = 0; i < 2; i++)
		if (!children[i].serving ||
		    (uint64_t)(now - children[i].heard) > wd_ms)
			alive = 0;
	if (wd_ms > 0 && alive)
		sdnotify_watchdog();
	if (service_ready_said) {
		queries = children[0].hb.queries + children[1].hb.queries;
		sdnotify_status("%llu queries; %d of %d upstreams up",
		    (unsigned long long)queries,
		    children[0].hb.upstreams_up + children[1].hb.upstreams_up,
		    children[0].hb.upstreams + children[1].hb.upstreams);
	}
	for (i = 0; i < 2; i++) {
		if (!children[i].serving)
			continue;
		if (imsg_compose(&children[i].ch.ibuf, IMSG_HEARTBEAT, 0, -1,
		    NULL, 0) == -1)
			log_warn("imsg_compose");
		chan_update(&children[i].ch);
	}
	(void)sdnotify_watchdog_interval(&tv);
	evtimer_add(&service_timer, &tv);
}

/* Both children serve for the first time: we are ready. */
static void
service_ready(void)
{
	if (service_ready_said || !children[0].serving ||
	    !children[1].serving)
		return;
	service_ready_said = 1;
	sdnotify_ready();
	sdnotify_status("serving");
}

/* A child answers our heartbeat. */
static int
child_heartbeat(struct child *c, struct imsg *imsg)
{
	if (child_msg_bad(c, imsg, sizeof(c->hb), sizeof(c->hb)))
		return -1;
	memcpy(&c->hb, imsg->data, sizeof(c->hb));
	c->heard = mono_ms();
	return 0;
}
