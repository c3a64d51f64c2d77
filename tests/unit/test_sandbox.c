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

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>

#include "dotproxyd.h"
#include "netwatch.h"
#include "sandbox.h"
#include "tap.h"

enum action {
	A_NOTHING, A_SOCKET_INET_STREAM, A_SOCKET_INET_DGRAM, A_SOCKET_UNIX,
	A_OPEN, A_EXECVE, A_BIND, A_LISTEN, A_MMAP_EXEC, A_MPROTECT_EXEC,
	A_PTRACE, A_SETSOCKOPT_IP, A_FCNTL_DUPFD, A_OPEN_ERRNO, A_STAT_ERRNO,
	A_MEMFILE, A_FCHMOD_WIDE, A_MEMFD_EXEC, A_FSTATAT_NOFOLLOW,
	A_SOCKET_NETLINK, A_NETWATCH_READ, A_CLOSEFROM
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
	"closefrom() before the exec of a new child"
};

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

/* What an action needs before the filter: returns the routing socket. */
static int
before_filter(enum action a, int report)
{
	const char	*what;
	int		 nl = -1;

	/* the parent opens its routing socket before it confines itself */
	if (a == A_NETWATCH_READ && (nl = netwatch_open(&what)) == -1)
		_exit(8);
	/* a descriptor a new child must not inherit */
	if (a == A_CLOSEFROM && dup2(report, 40) != 40)
		_exit(8);
	return nl;
}

/* What a new child does before exec: close all but report and below. */
static int
closefrom_work(int report)
{
	closefrom(report + 1);
	if (fcntl(40, F_GETFD) != -1 || errno != EBADF ||
	    fcntl(report, F_GETFD) == -1)
		return -1;
	return 0;
}

/* Allowed everywhere: memory, time, writing to a descriptor. */
static void
allowed_everywhere(int report)
{
	void	*p;

	if ((p = malloc(100000)) == NULL)
		_exit(3);
	free(p);
	if (write(report, "ok", 2) != 2)
		_exit(3);
}

/* In the child: allowed work first, reported on the pipe, then the call. */
static void
child(enum proc_type type, enum action a, int report)
{
	struct sockaddr_in	sin;
	struct stat		sb;
	void			*p;
	int			 s, one = 1, nl;
	char			*argv[] = { "/bin/true", NULL };

	nl = before_filter(a, report);
	(void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	sandbox_filter(type);
	allowed_everywhere(report);
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
		execve(argv[0], argv, NULL);
		break;
	case A_BIND:
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		(void)bind(3, (struct sockaddr *)&sin, sizeof(sin));
		break;
	case A_LISTEN:
		(void)listen(3, 1);
		break;
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
	case A_CLOSEFROM:
		if (closefrom_work(report) == -1)
			_exit(10);
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
	plan(26);

	expect(PROC_LISTENER, A_NOTHING, 0);
	expect(PROC_LISTENER, A_SOCKET_INET_STREAM, SIGSYS);
	expect(PROC_LISTENER, A_SOCKET_UNIX, SIGSYS);
	expect(PROC_LISTENER, A_OPEN, SIGSYS);
	expect(PROC_LISTENER, A_EXECVE, SIGSYS);
	expect(PROC_LISTENER, A_MMAP_EXEC, SIGSYS);
	expect(PROC_LISTENER, A_MPROTECT_EXEC, SIGSYS);
	expect(PROC_LISTENER, A_FCNTL_DUPFD, SIGSYS);
	expect(PROC_LISTENER, A_MEMFILE, SIGSYS);

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

	expect(PROC_PARENT, A_PTRACE, SIGSYS);
	expect(PROC_PARENT, A_SOCKET_NETLINK, SIGSYS);
	expect(PROC_PARENT, A_NETWATCH_READ, 0);
	expect(PROC_PARENT, A_CLOSEFROM, 0);
	return done();
}
