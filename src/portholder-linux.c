/*
 * Who holds an address we could not bind, on Linux: the socket's inode
 * from /proc/net, then the process with a descriptor for it.  Used once,
 * for the message of a failed start, while the parent is still root.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox.h"

#define HOLDER_MAX_PROCS	100000	/* /proc entries looked at, at most */

/* Does a /proc/net local address ("0100007F:0035") match ss or its port? */
static int
net_line_matches(const char *local, const struct sockaddr_storage *ss)
{
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)ss;
	uint32_t			 w[4], want[4], any = 0;
	unsigned			 port;
	int				 i, n;

	if (ss->ss_family == AF_INET) {
		if (sscanf(local, "%8x:%4x", &w[0], &port) != 2)
			return 0;
		memcpy(&want[0], &sin->sin_addr, 4);
		n = 1;
		if (port != ntohs(sin->sin_port))
			return 0;
	} else {
		if (sscanf(local, "%8x%8x%8x%8x:%4x", &w[0], &w[1], &w[2],
		    &w[3], &port) != 5)
			return 0;
		memcpy(want, &sin6->sin6_addr, 16);
		n = 4;
		if (port != ntohs(sin6->sin6_port))
			return 0;
	}
	for (i = 0; i < n; i++)
		any |= w[i];
	if (any == 0)
		return 1;	/* the wildcard address holds every address */
	for (i = 0; i < n; i++)
		if (w[i] != want[i])
			return 0;
	return 1;
}

/* The inode of a socket bound to ss, from /proc/net; 0 if none. */
static unsigned long
socket_inode(const struct sockaddr_storage *ss, int type)
{
	char		 path[32], line[512], local[64];
	FILE		*f;
	unsigned long	 inode = 0, ino;

	snprintf(path, sizeof(path), "/proc/net/%s%s",
	    type == SOCK_DGRAM ? "udp" : "tcp",
	    ss->ss_family == AF_INET6 ? "6" : "");
	if ((f = fopen(path, "re")) == NULL)
		return 0;
	while (inode == 0 && fgets(line, sizeof(line), f) != NULL) {
		/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
		if (sscanf(line, "%*s %63s %*s %*s %*s %*s %*s %*s %*s %lu",
		    local, &ino) == 2 && ino != 0 &&
		    net_line_matches(local, ss))
			inode = ino;
	}
	fclose(f);
	return inode;
}

/* Has process pid a descriptor for the socket "socket:[inode]"? */
static int
proc_has_socket(const char *pid, const char *want)
{
	char		 dir[300], path[600], link[64];
	DIR		*d;
	struct dirent	*de;
	ssize_t		 n;
	int		 found = 0;

	snprintf(dir, sizeof(dir), "/proc/%s/fd", pid);
	if ((d = opendir(dir)) == NULL)
		return 0;
	while (!found && (de = readdir(d)) != NULL) {
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if ((n = readlink(path, link, sizeof(link) - 1)) <= 0)
			continue;
		link[n] = '\0';
		found = strcmp(link, want) == 0;
	}
	closedir(d);
	return found;
}

int
sandbox_port_holder(const struct sockaddr_storage *ss, int type, char *buf,
    size_t len)
{
	char		 want[48], path[300], comm[64];
	unsigned long	 inode;
	DIR		*d;
	struct dirent	*de;
	FILE		*f;
	int		 n = 0, found = 0;

	if ((inode = socket_inode(ss, type)) == 0 ||
	    (d = opendir("/proc")) == NULL)
		return -1;
	snprintf(want, sizeof(want), "socket:[%lu]", inode);
	while (!found && n++ < HOLDER_MAX_PROCS && (de = readdir(d)) != NULL) {
		if (strspn(de->d_name, "0123456789") != strlen(de->d_name) ||
		    !proc_has_socket(de->d_name, want))
			continue;
		found = 1;
		comm[0] = '\0';
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		if ((f = fopen(path, "re")) != NULL) {
			if (fgets(comm, sizeof(comm), f) == NULL)
				comm[0] = '\0';
			fclose(f);
		}
		comm[strcspn(comm, "\n")] = '\0';
		snprintf(buf, len, "%s (pid %s)", comm[0] ? comm : "?",
		    de->d_name);
	}
	closedir(d);
	return found ? 0 : -1;
}
