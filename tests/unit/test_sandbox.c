/*
 * Each process's real seccomp policy, loaded in a forked child: allowed
 * work succeeds, a forbidden call kills the child with SIGSYS.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/filter.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <linux/sched.h>

#include "dotproxyd.h"
#include "netwatch.h"
#include "sandbox.h"
#include "tap.h"

enum action {
	A_NOTHING, A_SOCKET_INET_STREAM, A_SOCKET_INET_DGRAM, A_SOCKET_UNIX,
	A_OPEN, A_EXECVE, A_BIND, A_LISTEN, A_MMAP_EXEC, A_MPROTECT_EXEC,
	A_PTRACE, A_SETSOCKOPT_IP, A_FCNTL_DUPFD, A_OPEN_ERRNO, A_STAT_ERRNO,
	A_MEMFILE, A_FCHMOD_WIDE, A_MEMFD_EXEC, A_FSTATAT_NOFOLLOW,
	A_SOCKET_NETLINK, A_NETWATCH_READ, A_SOCKET_MPTCP, A_SOCKET_SCTP,
	A_SOCKET_TCP_PROTO, A_UPSTREAM_SOCKOPTS, A_ATTACH_FILTER,
	A_SOCKOPT_BINDTODEVICE, A_GETSOCKOPT_TCP_INFO, A_OPEN_READ,
	A_OPEN_APPEND, A_OPEN_RDWR, A_OPEN_TRUNC, A_OPEN_WRONLY, A_FORK,
	A_CLONE_NEWNET, A_CLONE3, A_IOCTL, A_EXECVE_RUNS, A_PEERCRED,
	A_GETSOCKOPT_SNDBUF, A_CLOSE_RANGE
};

static const char *names[] = {
	"nothing", "socket(AF_INET, SOCK_STREAM)",
	"socket(AF_INET, SOCK_DGRAM)", "socket(AF_UNIX)", "open()",
	"execve()", "bind()", "listen()", "mmap(PROT_EXEC)",
	"mprotect(PROT_EXEC)", "ptrace()", "setsockopt(IPPROTO_IP)",
	"fcntl(F_DUPFD)", "open() refused with EACCES",
	"stat() refused with EACCES", "a session store (memfd_create, fchmod "
	"0600, fstat, ftruncate, pwrite, pread)", "fchmod(0644)",
	"memfd_create without MFD_CLOEXEC",
	"fstatat(AT_SYMLINK_NOFOLLOW) refused with EACCES",
	"socket(AF_NETLINK)",
	"reading the routing socket opened before confinement",
	"socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP)",
	"socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP)",
	"socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP)",
	"the socket options upconn.c sets and SO_ERROR",
	"setsockopt(SO_ATTACH_FILTER)", "setsockopt(SO_BINDTODEVICE)",
	"getsockopt(TCP_INFO)",
	"open() to read, close-on-exec, no-follow, and a directory",
	"open() to append as the audit log is: create, close-on-exec, "
	"no-follow, non-blocking, no controlling terminal",
	"open(O_RDWR)", "open(O_WRONLY | O_APPEND | O_TRUNC)",
	"open(O_WRONLY)", "fork()", "clone(CLONE_NEWNET)",
	"clone3() refused with ENOSYS", "ioctl(TIOCGWINSZ) refused with ENOTTY",
	"execve() of a program that runs",
	"getsockopt(SO_PEERCRED) on the control socket",
	"getsockopt(SO_SNDBUF)", "close_range() (closefrom)"
};

static char	tmpfile_path[] = "/tmp/test_sandbox.XXXXXX";
static int	unix_fd = -1;	/* a local socket made before confinement */

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP	262
#endif

/* What libtls does with its session file, in an anonymous file. */
static int
memfile_work(void)
{
	struct stat	sb;
	char		buf[8];
	int		fd;

	if ((fd = sandbox_memfile("test")) == -1 || fstat(fd, &sb) == -1 ||
	    (sb.st_mode & 0777) != 0600 || sb.st_uid != getuid() ||
	    ftruncate(fd, 5) == -1 || pwrite(fd, "hello", 5, 0) != 5 ||
	    pread(fd, buf, 5, 0) != 5 || memcmp(buf, "hello", 5) != 0 ||
	    close(fd) == -1)
		return -1;
	return 0;
}

/* The options set_sockopts() and conn_quickack() set, then SO_ERROR. */
static int
upstream_sockopts(void)
{
	static const int	 tcp[] = { TCP_NODELAY, TCP_USER_TIMEOUT,
	    TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_QUICKACK };
	socklen_t		 len = sizeof(int);
	size_t			 i;
	int			 s, on = 1, err;

	if ((s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) == -1)
		return -1;
	if (setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == -1)
		return -1;
	for (i = 0; i < sizeof(tcp) / sizeof(tcp[0]); i++)
		if (setsockopt(s, IPPROTO_TCP, tcp[i], &on, sizeof(on)) == -1)
			return -1;
	if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		return -1;
	return close(s);
}

/* A socket filter that passes everything, attached to a TCP socket. */
static void
attach_filter(void)
{
	struct sock_filter	insn = BPF_STMT(BPF_RET | BPF_K, 0xffff);
	struct sock_fprog	prog = { 1, &insn };
	int			s;

	if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		_exit(4);
	(void)setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog));
}

/* The memory and anonymous file cases of child(). */
static void
child_memory(enum action a, int report)
{
	void	*p;

	switch (a) {
	case A_MMAP_EXEC:
		(void)mmap(NULL, 4096, PROT_READ | PROT_EXEC,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		break;
	case A_MPROTECT_EXEC:
		p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			_exit(6);
		(void)mprotect(p, 4096, PROT_READ | PROT_EXEC);
		break;
	case A_MEMFILE:
		if (memfile_work() == -1)
			_exit(7);
		break;
	case A_FCHMOD_WIDE:
		(void)fchmod(report, 0644);
		break;
	case A_MEMFD_EXEC:
		(void)memfd_create("test", 0);
		break;
	default:
		_exit(10);
	}
}

/* The parent's file and process cases of child(). */
static void
child_parent(enum action a)
{
	struct clone_args	 ca;
	struct winsize		 ws;
	DIR			*d;
	pid_t			 pid;
	int			 fd, status;

	switch (a) {
	case A_OPEN_READ:
		if ((fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC |
		    O_NOFOLLOW)) == -1 || (d = opendir("/")) == NULL ||
		    readdir(d) == NULL)
			_exit(4);
		break;
	case A_OPEN_APPEND:
		if (open(tmpfile_path, O_WRONLY | O_APPEND | O_CREAT |
		    O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0600) == -1)
			_exit(4);
		break;
	case A_OPEN_RDWR:
		(void)open(tmpfile_path, O_RDWR);
		break;
	case A_OPEN_TRUNC:
		(void)open(tmpfile_path, O_WRONLY | O_APPEND | O_TRUNC);
		break;
	case A_OPEN_WRONLY:
		(void)open(tmpfile_path, O_WRONLY);
		break;
	case A_FORK:
		if ((pid = fork()) == 0)
			_exit(0);
		if (pid == -1 || waitpid(pid, &status, 0) != pid ||
		    !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			_exit(4);
		break;
	case A_CLONE_NEWNET:
		if (syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, 0, 0, 0) == 0)
			_exit(0);
		break;
	case A_CLONE3:
		memset(&ca, 0, sizeof(ca));
		ca.exit_signal = SIGCHLD;
		if (syscall(SYS_clone3, &ca, sizeof(ca)) != -1 ||
		    errno != ENOSYS)
			_exit(5);
		break;
	case A_CLOSE_RANGE:
		if (syscall(SYS_close_range, 100, ~0U, 0) == -1)
			_exit(4);
		break;
	case A_IOCTL:
		if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) != -1 ||
		    errno != ENOTTY)
			_exit(5);
		break;
	default:
		_exit(10);
	}
}

/* The socket and socket option cases of child(). */
static void
child_sockets(enum action a)
{
	socklen_t	len = sizeof(int);
	uid_t		uid;
	gid_t		gid;
	int		s, v;

	switch (a) {
	case A_SOCKET_MPTCP:
		(void)socket(AF_INET, SOCK_STREAM, IPPROTO_MPTCP);
		break;
	case A_SOCKET_SCTP:
		(void)socket(AF_INET6, SOCK_STREAM, IPPROTO_SCTP);
		break;
	case A_SOCKET_TCP_PROTO:
		if (socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP) == -1 &&
		    errno != EAFNOSUPPORT)
			_exit(4);
		break;
	case A_UPSTREAM_SOCKOPTS:
		if (upstream_sockopts() == -1)
			_exit(4);
		break;
	case A_ATTACH_FILTER:
		attach_filter();
		break;
	case A_SOCKOPT_BINDTODEVICE:
		if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1)
			_exit(4);
		(void)setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3);
		break;
	case A_PEERCRED:
		if (getpeereid(unix_fd, &uid, &gid) == -1)
			_exit(4);
		break;
	case A_GETSOCKOPT_SNDBUF:
		(void)getsockopt(unix_fd, SOL_SOCKET, SO_SNDBUF, &v, &len);
		break;
	case A_GETSOCKOPT_TCP_INFO:
		if ((s = socket(AF_INET, SOCK_STREAM, 0)) == -1)
			_exit(4);
		(void)getsockopt(s, IPPROTO_TCP, TCP_INFO, &v, &len);
		break;
	default:
		child_parent(a);
		break;
	}
}

/* In the child: allowed work first, reported on the pipe, then the call. */
static void
child(enum proc_type type, enum action a, int report)
{
	struct sockaddr_in	sin;
	struct stat		sb;
	void			*p;
	const char		*what;
	int			 s, one = 1, nl = -1, sv[2] = { -1, -1 };
	char			*argv[] = { "/bin/true", NULL };

	/* the parent opens its routing socket before it confines itself */
	if (a == A_NETWATCH_READ && (nl = netwatch_open(&what)) == -1)
		_exit(8);
	if ((a == A_PEERCRED || a == A_GETSOCKOPT_SNDBUF) &&
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		_exit(8);
	unix_fd = sv[0];
	(void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	sandbox_filter(type);
	/* allowed everywhere: memory, time, writing to a descriptor */
	if ((p = malloc(100000)) == NULL)
		_exit(3);
	free(p);
	if (write(report, "ok", 2) != 2)
		_exit(3);
	switch (a) {
	case A_NOTHING:
		break;
	case A_SOCKET_INET_STREAM:
		if ((s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) == -1)
			_exit(4);
		break;
	case A_SOCKET_INET_DGRAM:
		(void)socket(AF_INET, SOCK_DGRAM, 0);
		break;
	case A_SOCKET_UNIX:
		(void)socket(AF_UNIX, SOCK_STREAM, 0);
		break;
	case A_OPEN:
		(void)open("/etc/passwd", O_RDONLY);
		break;
	case A_OPEN_ERRNO:
		if (open("/etc/passwd", O_RDONLY) != -1 || errno != EACCES)
			_exit(5);
		break;
	case A_EXECVE:
	case A_EXECVE_RUNS:
		execve(argv[0], argv, NULL);
		_exit(a == A_EXECVE_RUNS ? 4 : 0);
	case A_BIND:
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		(void)bind(3, (struct sockaddr *)&sin, sizeof(sin));
		break;
	case A_LISTEN:
		(void)listen(3, 1);
		break;
	case A_PTRACE:
		(void)syscall(101 /* ptrace */, 0, 0, 0, 0);
		break;
	case A_SETSOCKOPT_IP:
		(void)setsockopt(3, IPPROTO_IP, 1, &one, sizeof(one));
		break;
	case A_FCNTL_DUPFD:
		(void)fcntl(report, F_DUPFD, 100);
		break;
	case A_STAT_ERRNO:
		if (stat("/etc/passwd", &sb) != -1 || errno != EACCES)
			_exit(5);
		break;
	case A_FSTATAT_NOFOLLOW:
		if (fstatat(AT_FDCWD, "/etc/passwd", &sb,
		    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != -1 ||
		    errno != EACCES)
			_exit(5);
		break;
	case A_SOCKET_NETLINK:
		(void)socket(AF_NETLINK, SOCK_RAW, 0);
		break;
	case A_NETWATCH_READ:
		if (netwatch_read(nl) == -1)
			_exit(9);
		break;
	case A_MMAP_EXEC:
	case A_MPROTECT_EXEC:
	case A_MEMFILE:
	case A_FCHMOD_WIDE:
	case A_MEMFD_EXEC:
		child_memory(a, report);
		break;
	default:
		child_sockets(a);
		break;
	}
	_exit(0);
}

/* Returns the signal that ended the child, 0 for a clean exit, -1 else. */
static int
run(enum proc_type type, enum action a, int *reported)
{
	pid_t	pid;
	int	p[2], status;
	char	buf[2];

	if (pipe(p) == -1)
		exit(2);
	if ((pid = fork()) == -1)
		exit(2);
	if (pid == 0) {
		close(p[0]);
		child(type, a, p[1]);
	}
	close(p[1]);
	*reported = read(p[0], buf, sizeof(buf)) == 2;
	close(p[0]);
	if (waitpid(pid, &status, 0) == -1)
		return -1;
	if (WIFSIGNALED(status))
		return WTERMSIG(status);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void
expect(enum proc_type type, enum action a, int want)
{
	int	got, reported;

	got = run(type, a, &reported);
	ok(got == want && reported, "%s: %s %s", proc_name(type), names[a],
	    want == SIGSYS ? "kills with SIGSYS" : "is allowed");
}

int
main(void)
{
	int	tmp;

	plan(45);
	if ((tmp = mkstemp(tmpfile_path)) == -1)
		exit(2);
	close(tmp);

	expect(PROC_LISTENER, A_NOTHING, 0);
	expect(PROC_LISTENER, A_SOCKET_INET_STREAM, SIGSYS);
	expect(PROC_LISTENER, A_SOCKET_UNIX, SIGSYS);
	expect(PROC_LISTENER, A_OPEN, SIGSYS);
	expect(PROC_LISTENER, A_EXECVE, SIGSYS);
	expect(PROC_LISTENER, A_MMAP_EXEC, SIGSYS);
	expect(PROC_LISTENER, A_MPROTECT_EXEC, SIGSYS);
	expect(PROC_LISTENER, A_FCNTL_DUPFD, SIGSYS);
	expect(PROC_LISTENER, A_MEMFILE, SIGSYS);
	expect(PROC_LISTENER, A_PEERCRED, 0);
	expect(PROC_LISTENER, A_GETSOCKOPT_SNDBUF, SIGSYS);

	expect(PROC_UPSTREAM, A_SOCKET_INET_STREAM, 0);
	expect(PROC_UPSTREAM, A_SOCKET_INET_DGRAM, SIGSYS);
	expect(PROC_UPSTREAM, A_SOCKET_UNIX, SIGSYS);
	expect(PROC_UPSTREAM, A_BIND, SIGSYS);
	expect(PROC_UPSTREAM, A_LISTEN, SIGSYS);
	expect(PROC_UPSTREAM, A_EXECVE, SIGSYS);
	expect(PROC_UPSTREAM, A_SETSOCKOPT_IP, SIGSYS);
	expect(PROC_UPSTREAM, A_OPEN_ERRNO, 0);
	expect(PROC_UPSTREAM, A_STAT_ERRNO, 0);
	expect(PROC_UPSTREAM, A_MEMFILE, 0);
	expect(PROC_UPSTREAM, A_FCHMOD_WIDE, SIGSYS);
	expect(PROC_UPSTREAM, A_MEMFD_EXEC, SIGSYS);
	expect(PROC_UPSTREAM, A_FSTATAT_NOFOLLOW, 0);
	expect(PROC_UPSTREAM, A_SOCKET_MPTCP, SIGSYS);
	expect(PROC_UPSTREAM, A_SOCKET_SCTP, SIGSYS);
	expect(PROC_UPSTREAM, A_SOCKET_TCP_PROTO, 0);
	expect(PROC_UPSTREAM, A_UPSTREAM_SOCKOPTS, 0);
	expect(PROC_UPSTREAM, A_ATTACH_FILTER, SIGSYS);
	expect(PROC_UPSTREAM, A_SOCKOPT_BINDTODEVICE, SIGSYS);
	expect(PROC_UPSTREAM, A_GETSOCKOPT_TCP_INFO, SIGSYS);

	expect(PROC_PARENT, A_PTRACE, SIGSYS);
	expect(PROC_PARENT, A_SOCKET_NETLINK, SIGSYS);
	expect(PROC_PARENT, A_NETWATCH_READ, 0);
	expect(PROC_PARENT, A_OPEN_READ, 0);
	expect(PROC_PARENT, A_OPEN_APPEND, 0);
	expect(PROC_PARENT, A_OPEN_RDWR, SIGSYS);
	expect(PROC_PARENT, A_OPEN_TRUNC, SIGSYS);
	expect(PROC_PARENT, A_OPEN_WRONLY, SIGSYS);
	expect(PROC_PARENT, A_FORK, 0);
	expect(PROC_PARENT, A_CLONE_NEWNET, SIGSYS);
	expect(PROC_PARENT, A_CLONE3, 0);
	expect(PROC_PARENT, A_IOCTL, 0);
	expect(PROC_PARENT, A_CLOSE_RANGE, 0);
	expect(PROC_PARENT, A_EXECVE_RUNS, 0);
	unlink(tmpfile_path);
	return done();
}
