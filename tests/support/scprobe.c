/*
 * scprobe: the system calls docker's seccomp profile refuses, each tried once inside a
 * container; prints "NAME ERRNO" per call ("success" when it worked) and the number of
 * seccomp filters on the process ("filters N"). Built static by the test suite.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long r) {
	int e = errno;
	const char *n = r >= 0 ? "success" : strerrorname_np(e);
	printf("%s %s\n", name, n ? n : "E?");
}

/* unshare in a child, so the probe's own namespaces stay as they are. */
static void in_child(const char *name, int flags) {
	int p[2];
	if (pipe(p) != 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		int r = unshare(flags);
		int e = r == 0 ? 0 : errno;
		if (write(p[1], &e, sizeof e) != sizeof e)
			_exit(1);
		_exit(0);
	}
	close(p[1]);
	int e = -1;
	if (read(p[0], &e, sizeof e) != sizeof e)
		e = -1;
	close(p[0]);
	waitpid(pid, NULL, 0);
	errno = e;
	report(name, e == 0 ? 0 : -1);
}

int main(void) {
	errno = 0;
	report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
	report("add_key", syscall(SYS_add_key, "user", "scprobe", "x", 1, -2 /* process */));
	report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
	report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY));
	in_child("unshare_user", CLONE_NEWUSER);
	in_child("unshare_mount", CLONE_NEWNS);
	/* On a directory of its own: even run by root on a host, it covers nothing. */
	char dir[] = "/tmp/scprobe.XXXXXX";
	if (mkdtemp(dir)) {
		long r = mount("none", dir, "tmpfs", 0, NULL);
		int e = errno;
		if (r == 0)
			umount2(dir, MNT_DETACH);
		rmdir(dir);
		errno = e;
		report("mount", r);
	} else {
		report("mkdtemp", -1);
	}
	report("clone3", syscall(SYS_clone3, NULL, 0));
	report("socket_vsock", socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
	report("socket_unix", socket(AF_UNIX, SOCK_STREAM, 0));
	report("personality_query", personality(0xffffffff));
	report("personality_bsd", personality(6 /* PER_BSD */));
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	while (f && fgets(line, sizeof line, f))
		if (strncmp(line, "Seccomp_filters:", 16) == 0)
			printf("filters %d\n", atoi(line + 16));
	return 0;
}
