/*
 * fsprobe: filesystem conformance cases for nook's root filesystems, in the spirit of
 * pjdfstest (which Debian does not package). Built static by the test suite and run inside
 * containers, so the same binary probes the kernel overlay and nook's FUSE overlay.
 *
 *   fsprobe posix DIR      success paths and the errno of each failure path (as root, and as
 *                          uid 1234 for the permission cases); prints "ok NAME" or
 *                          "FAIL NAME: ..."; exits 1 if any case failed
 *   fsprobe scenario LOWER SCRATCH
 *                          operations on the image's lower files (copy-up, whiteouts, opaque
 *                          directories, renames, hard links, xattrs, permissions, big and
 *                          sparse files, O_APPEND, mmap); prints one "key: value" line per
 *                          observation, the same on every driver that behaves as overlayfs
 *   fsprobe owners PATH... prints "PATH uid:gid mode" from stat, lstat and statx
 *   fsprobe threads DIR N MiB
 *                          N threads each write and verify their own file of MiB mebibytes
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static int failures;

static const char *ename(int e) {
	if (e == 0)
		return "success";
	const char *n = strerrorname_np(e);
	return n ? n : "E?";
}

static void pass(const char *name) { printf("ok %s\n", name); }

static void fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const char *name, const char *fmt, ...) {
	va_list ap;
	failures++;
	printf("FAIL %s: ", name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

/* The errno of a call that returns -1 on failure, 0 when it succeeded. */
#define RC(call) ((call) == -1 ? errno : 0)
#define OK(name, call) check_err(name, 0, RC(call))
#define ERR(name, want, call) check_err(name, want, RC(call))

static void check_err(const char *name, int want, int got) {
	if (got == want)
		pass(name);
	else
		fail(name, "expected %s, got %s", ename(want), ename(got));
}

static void check_eq(const char *name, long long got, long long want) {
	if (got == want)
		pass(name);
	else
		fail(name, "expected %lld (0%llo), got %lld (0%llo)", want, want, got, got);
}

static void check_str(const char *name, const char *got, const char *want) {
	if (strcmp(got, want) == 0)
		pass(name);
	else
		fail(name, "expected \"%s\", got \"%s\"", want, got);
}

/* open+close: 0, or -1 with errno. */
static int xopen(const char *path, int flags, mode_t mode) {
	int fd = open(path, flags, mode);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static struct stat st_of(const char *path) {
	struct stat st;
	memset(&st, 0, sizeof st);
	if (lstat(path, &st) != 0)
		st.st_mode = 0;
	return st;
}

static long long mode_of(const char *p) { return st_of(p).st_mode & 07777; }
static long long size_of(const char *p) { return st_of(p).st_size; }

static int put(const char *path, const char *data) {
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, data, strlen(data));
	close(fd);
	return n == (ssize_t)strlen(data) ? 0 : -1;
}

/* The file's contents (at most 255 bytes, newlines as "|"), or "<ERRNAME>". */
static const char *get(const char *path) {
	static char buf[256];
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		snprintf(buf, sizeof buf, "<%s>", ename(errno));
		return buf;
	}
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n < 0 ? 0 : n] = 0;
	for (char *c = buf; *c; c++)
		if (*c == '\n')
			*c = '|';
	return buf;
}

static void nap(void) {
	struct timespec t = {0, 20 * 1000 * 1000};
	nanosleep(&t, NULL);
}

/* Runs fn as uid:gid 1234:1234 in a child; its failures count as ours. */
static void as_user(void (*fn)(void)) {
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		failures = 0;
		if (setgroups(0, NULL) != 0 && errno != EPERM)
			_exit(100);
		if (setresgid(1234, 1234, 1234) != 0 || setresuid(1234, 1234, 1234) != 0) {
			printf("skip unprivileged cases: uid 1234 is not mapped (%s)\n", ename(errno));
			_exit(0);
		}
		fn();
		fflush(stdout);
		_exit(failures > 99 ? 99 : failures);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status) == 100)
		fail("unprivileged", "child ended with status %d", status);
	else
		failures += WEXITSTATUS(status);
}

static void posix_open(void) {
	umask(022);
	OK("open.creat", xopen("f", O_CREAT | O_EXCL | O_WRONLY, 0666));
	check_eq("open.creat.mode", mode_of("f"), 0644);
	ERR("open.excl", EEXIST, xopen("f", O_CREAT | O_EXCL | O_WRONLY, 0644));
	ERR("open.noent", ENOENT, xopen("nothere", O_RDONLY, 0));
	ERR("open.notdir", ENOTDIR, xopen("f/x", O_RDONLY, 0));
	OK("open.mkdir", mkdir("d", 0755));
	ERR("open.isdir", EISDIR, xopen("d", O_WRONLY, 0));
	char longname[300];
	memset(longname, 'n', 256);
	longname[256] = 0;
	ERR("open.nametoolong", ENAMETOOLONG, xopen(longname, O_CREAT | O_WRONLY, 0644));
	OK("open.symlink", symlink("f", "sl"));
	ERR("open.nofollow", ELOOP, xopen("sl", O_RDONLY | O_NOFOLLOW, 0));
	ERR("open.directory", ENOTDIR, xopen("f", O_RDONLY | O_DIRECTORY, 0));
	symlink("loop2", "loop1");
	symlink("loop1", "loop2");
	ERR("open.loop", ELOOP, xopen("loop1", O_RDONLY, 0));
	umask(077);
	OK("open.umask.create", xopen("g", O_CREAT | O_WRONLY, 0666));
	check_eq("open.umask", mode_of("g"), 0600);
	umask(022);
	put("f", "hello");
	struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
	utimensat(AT_FDCWD, "f", old, 0);
	OK("open.trunc", xopen("f", O_WRONLY | O_TRUNC, 0));
	check_eq("open.trunc.size", size_of("f"), 0);
	check_eq("open.trunc.mtime", st_of("f").st_mtime > 1000000000, 1);
	put("c", "abc");
	int fd = creat("c", 0600);
	check_eq("creat.fd", fd >= 0, 1);
	if (fd >= 0)
		close(fd);
	check_eq("creat.trunc", size_of("c"), 0);
	check_eq("creat.keeps-mode", mode_of("c"), 0644);
}

static void posix_chmod_chown(void) {
	OK("chmod", chmod("f", 0754));
	check_eq("chmod.mode", mode_of("f"), 0754);
	ERR("chmod.noent", ENOENT, chmod("nothere", 0644));
	struct stat before = st_of("f");
	nap();
	OK("chmod.setuid", chmod("f", 04755));
	check_eq("chmod.setuid.mode", mode_of("f"), 04755);
	struct stat after = st_of("f");
	check_eq("chmod.ctime", after.st_ctim.tv_sec * 1000000000LL + after.st_ctim.tv_nsec >
	                            before.st_ctim.tv_sec * 1000000000LL + before.st_ctim.tv_nsec,
	         1);
	OK("chown", chown("f", 1234, 1235));
	check_eq("chown.uid", st_of("f").st_uid, 1234);
	check_eq("chown.gid", st_of("f").st_gid, 1235);
	check_eq("chown.clears-setuid", mode_of("f"), 0755);
	OK("chown.noop", chown("f", -1, -1));
	check_eq("chown.noop.uid", st_of("f").st_uid, 1234);
	OK("lchown", lchown("sl", 1236, 1236));
	check_eq("lchown.link", st_of("sl").st_uid, 1236);
	check_eq("lchown.target", st_of("f").st_uid, 1234);
	ERR("chown.noent", ENOENT, chown("nothere", 0, 0));
	chown("f", 0, 0);
}

static void posix_link_mkdir(void) {
	OK("link", link("f", "f2"));
	check_eq("link.nlink", st_of("f").st_nlink, 2);
	check_eq("link.same-ino", st_of("f").st_ino == st_of("f2").st_ino, 1);
	ERR("link.exist", EEXIST, link("f", "f2"));
	ERR("link.dir", EPERM, link("d", "d2"));
	ERR("link.noent", ENOENT, link("nothere", "x"));
	ERR("link.noent-dir", ENOENT, link("f", "nodir/x"));
	OK("mkdir", mkdir("m", 0777));
	check_eq("mkdir.mode", mode_of("m"), 0755);
	ERR("mkdir.exist", EEXIST, mkdir("m", 0755));
	ERR("mkdir.exist-file", EEXIST, mkdir("f", 0755));
	ERR("mkdir.noent", ENOENT, mkdir("no/m", 0755));
	ERR("mkdir.notdir", ENOTDIR, mkdir("f/m", 0755));
	nlink_t n = st_of("d").st_nlink;
	OK("mkdir.sub", mkdir("d/sub", 0755));
	check_eq("mkdir.parent-nlink", st_of("d").st_nlink, n + 1);
	OK("mkfifo", mkfifo("p", 0644));
	check_eq("mkfifo.type", S_ISFIFO(st_of("p").st_mode), 1);
	ERR("mkfifo.exist", EEXIST, mkfifo("p", 0644));
	OK("mknod.socket", mknod("s", S_IFSOCK | 0644, 0));
	check_eq("mknod.socket.type", S_ISSOCK(st_of("s").st_mode), 1);
	OK("mknod.file", mknod("r", S_IFREG | 0600, 0));
	check_eq("mknod.file.mode", st_of("r").st_mode, S_IFREG | 0600);
}

static void posix_rename(void) {
	put("r1", "one");
	put("r2", "two");
	ino_t ino = st_of("r1").st_ino;
	OK("rename.replace", rename("r1", "r2"));
	check_str("rename.replace.data", get("r2"), "one");
	ERR("rename.replace.gone", ENOENT, access("r1", F_OK));
	check_eq("rename.keeps-ino", st_of("r2").st_ino == ino, 1);
	mkdir("rd1", 0755);
	mkdir("rd2", 0755);
	OK("rename.dir-over-empty", rename("rd1", "rd2"));
	mkdir("rd3", 0755);
	mkdir("rd4", 0755);
	put("rd4/x", "x");
	int e = RC(rename("rd3", "rd4"));
	check_err("rename.dir-over-full", e == EEXIST ? EEXIST : ENOTEMPTY, e);
	ERR("rename.file-over-dir", EISDIR, rename("r2", "rd3"));
	ERR("rename.dir-over-file", ENOTDIR, rename("rd3", "r2"));
	mkdir("rd3/in", 0755);
	ERR("rename.into-itself", EINVAL, rename("rd3", "rd3/in/x"));
	ERR("rename.noent", ENOENT, rename("nothere", "x"));
	link("r2", "r2b");
	OK("rename.same-inode", rename("r2", "r2b"));
	check_eq("rename.same-inode.both", access("r2", F_OK) == 0 && access("r2b", F_OK) == 0, 1);
	put("n1", "1");
	put("n2", "2");
	ERR("rename.noreplace", EEXIST, renameat2(AT_FDCWD, "n1", AT_FDCWD, "n2", RENAME_NOREPLACE));
	OK("rename.noreplace.new", renameat2(AT_FDCWD, "n1", AT_FDCWD, "n3", RENAME_NOREPLACE));
	put("x1", "A");
	put("x2", "B");
	OK("rename.exchange", renameat2(AT_FDCWD, "x1", AT_FDCWD, "x2", RENAME_EXCHANGE));
	check_str("rename.exchange.data", get("x1"), "B");
	ERR("rename.exchange.noent", ENOENT, renameat2(AT_FDCWD, "x1", AT_FDCWD, "nothere", RENAME_EXCHANGE));
	OK("rename.dir", rename("rd3", "rd5"));
	check_eq("rename.dir.child", access("rd5/in", F_OK), 0);
}

static void posix_remove(void) {
	int e = RC(rmdir("rd4"));
	check_err("rmdir.notempty", e == EEXIST ? EEXIST : ENOTEMPTY, e);
	ERR("rmdir.notdir", ENOTDIR, rmdir("f"));
	ERR("rmdir.dot", EINVAL, rmdir("m/."));
	ERR("rmdir.noent", ENOENT, rmdir("nothere"));
	OK("rmdir", rmdir("m"));
	ERR("rmdir.gone", ENOENT, access("m", F_OK));
	OK("unlink", unlink("f2"));
	check_eq("unlink.nlink", st_of("f").st_nlink, 1);
	ERR("unlink.dir", EISDIR, unlink("d"));
	ERR("unlink.noent", ENOENT, unlink("nothere"));
	put("open-unlinked", "still here");
	int fd = open("open-unlinked", O_RDONLY);
	OK("unlink.open", unlink("open-unlinked"));
	char buf[32] = {0};
	check_eq("unlink.open.read", fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1, 10);
	if (fd >= 0)
		close(fd);
	OK("symlink", symlink("some/target", "sym"));
	char t[64] = {0};
	readlink("sym", t, sizeof t - 1);
	check_str("symlink.readlink", t, "some/target");
	check_eq("symlink.size", st_of("sym").st_size, 11);
	check_eq("symlink.type", S_ISLNK(st_of("sym").st_mode), 1);
	ERR("symlink.exist", EEXIST, symlink("x", "sym"));
	ERR("symlink.noent", ENOENT, symlink("x", "nodir/sym"));
}

static void posix_truncate_utimes(void) {
	put("t", "0123456789");
	OK("truncate.grow", truncate("t", 20));
	check_eq("truncate.grow.size", size_of("t"), 20);
	int fd = open("t", O_RDONLY);
	char buf[20];
	int zeros = fd >= 0 && pread(fd, buf, 20, 0) == 20;
	for (int i = 10; i < 20 && zeros; i++)
		zeros = buf[i] == 0;
	if (fd >= 0)
		close(fd);
	check_eq("truncate.grow.zeros", zeros, 1);
	OK("truncate.shrink", truncate("t", 4));
	check_str("truncate.shrink.data", get("t"), "0123");
	ERR("truncate.negative", EINVAL, truncate("t", -1));
	ERR("truncate.dir", EISDIR, truncate("d", 0));
	ERR("truncate.noent", ENOENT, truncate("nothere", 0));
	struct timespec ts[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
	OK("utimensat", utimensat(AT_FDCWD, "t", ts, 0));
	struct stat st = st_of("t");
	check_eq("utimensat.atime", st.st_atim.tv_sec, 1000000000);
	check_eq("utimensat.atime.nsec", st.st_atim.tv_nsec, 123456789);
	check_eq("utimensat.mtime", st.st_mtim.tv_sec, 1100000000);
	check_eq("utimensat.mtime.nsec", st.st_mtim.tv_nsec, 987654321);
	struct timespec omit[2] = {{1200000000, 0}, {0, UTIME_OMIT}};
	OK("utimensat.omit", utimensat(AT_FDCWD, "t", omit, 0));
	check_eq("utimensat.omit.mtime", st_of("t").st_mtime, 1100000000);
	check_eq("utimensat.omit.atime", st_of("t").st_atime, 1200000000);
	struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
	OK("utimensat.now", utimensat(AT_FDCWD, "t", now, 0));
	check_eq("utimensat.now.mtime", labs(st_of("t").st_mtime - time(NULL)) < 10, 1);
	OK("utimensat.nofollow", utimensat(AT_FDCWD, "sym", ts, AT_SYMLINK_NOFOLLOW));
	check_eq("utimensat.nofollow.link", st_of("sym").st_mtime, 1100000000);
	ERR("utimensat.noent", ENOENT, utimensat(AT_FDCWD, "nothere", ts, 0));
}

static void unprivileged(void) {
	ERR("u.open.eacces", EACCES, xopen("root600", O_RDONLY, 0));
	ERR("u.creat.eacces", EACCES, xopen("rootdir/new", O_CREAT | O_WRONLY, 0644));
	ERR("u.search.eacces", EACCES, xopen("noexec/f", O_RDONLY, 0));
	ERR("u.chmod.eperm", EPERM, chmod("root600", 0777));
	ERR("u.chown.eperm", EPERM, chown("mine", 0, -1));
	ERR("u.unlink.eacces", EACCES, unlink("rootdir/file"));
	ERR("u.rename.eacces", EACCES, rename("rootdir/file", "rootdir/file2"));
	ERR("u.mkdir.eacces", EACCES, mkdir("rootdir/m", 0755));
	ERR("u.link.eacces", EACCES, link("mine", "rootdir/mine"));
	ERR("u.symlink.eacces", EACCES, symlink("x", "rootdir/s"));
	ERR("u.truncate.eacces", EACCES, truncate("root600", 0));
	ERR("u.write.eacces", EACCES, xopen("rootdir/file", O_WRONLY, 0));
	struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
	ERR("u.utimensat.eperm", EPERM, utimensat(AT_FDCWD, "root600", ts, 0));
	ERR("u.utimensat.eacces", EACCES, utimensat(AT_FDCWD, "rootdir/file", NULL, 0));
	ERR("u.sticky.eperm", EPERM, unlink("sticky/rootfile"));
	OK("u.chmod.own", chmod("mine", 0600));
	check_eq("u.chmod.own.mode", mode_of("mine"), 0600);
	OK("u.utimensat.own", utimensat(AT_FDCWD, "mine", ts, 0));
	OK("u.sticky.own", put("sticky/mine", "m"));
	OK("u.sticky.unlink-own", unlink("sticky/mine"));
	/* the owner may set setgid on a file of its own group */
	OK("u.chmod.setgid", chmod("mine", 02755));
	check_eq("u.chmod.setgid.mode", mode_of("mine"), 02755);
}

static void posix(const char *dir) {
	setvbuf(stdout, NULL, _IONBF, 0);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		fail("setup", "mkdir %s: %s", dir, ename(errno));
		return;
	}
	chmod(dir, 0755);
	if (chdir(dir) != 0) {
		fail("setup", "chdir %s: %s", dir, ename(errno));
		return;
	}
	posix_open();
	posix_chmod_chown();
	posix_link_mkdir();
	posix_rename();
	posix_remove();
	posix_truncate_utimes();
	/* fixtures for the unprivileged cases */
	put("root600", "x");
	chmod("root600", 0600);
	mkdir("rootdir", 0755);
	put("rootdir/file", "x");
	mkdir("noexec", 0700);
	put("noexec/f", "x");
	put("mine", "m");
	chown("mine", 1234, 1234);
	mkdir("sticky", 0777);
	chmod("sticky", 01777);
	put("sticky/rootfile", "r");
	as_user(unprivileged);
	/* setgid directories pass their group on */
	mkdir("sg", 0755);
	chown("sg", 0, 1235);
	chmod("sg", 02775);
	put("sg/x", "x");
	mkdir("sg/y", 0755);
	check_eq("setgid-dir.file-gid", st_of("sg/x").st_gid, 1235);
	check_eq("setgid-dir.dir-gid", st_of("sg/y").st_gid, 1235);
	check_eq("setgid-dir.dir-mode", mode_of("sg/y") & 02000, 02000);
}

/* ---- scenario: observations on the image's lower files ---- */

static void say(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *key, const char *fmt, ...) {
	va_list ap;
	printf("%s: ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The sorted names of a directory, with a type letter each. */
static const char *listing(const char *dir) {
	static char out[4096];
	char *names[256];
	int n = 0;
	DIR *d = opendir(dir);
	if (!d) {
		snprintf(out, sizeof out, "<%s>", ename(errno));
		return out;
	}
	struct dirent *e;
	while ((e = readdir(d)) && n < 256) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char t = e->d_type == DT_DIR ? 'd' : e->d_type == DT_REG ? 'f' : e->d_type == DT_LNK ? 'l' : e->d_type == DT_UNKNOWN ? '?' : 'o';
		if (asprintf(&names[n], "%s/%c", e->d_name, t) > 0)
			n++;
	}
	closedir(d);
	qsort(names, n, sizeof names[0], cmp);
	out[0] = 0;
	for (int i = 0; i < n; i++) {
		strncat(out, names[i], sizeof out - strlen(out) - 2);
		strcat(out, " ");
		free(names[i]);
	}
	return out;
}

static void scenario(const char *lower, const char *scratch) {
	setvbuf(stdout, NULL, _IONBF, 0);
	if (chdir(lower) != 0) {
		say("setup", "chdir %s: %s", lower, ename(errno));
		failures++;
		return;
	}
	int e;
	say("lower.listing", "%s", listing("."));
	say("lower.whiteout-hidden", "%s", ename(RC(access("wh", F_OK))));
	say("lower.opaque", "%s", listing("opq"));
	/* copy-up on write, truncate, chmod, chown, utimes, setxattr */
	int fd = open("file", O_WRONLY | O_APPEND);
	say("copyup.write", "%s", ename(fd < 0 ? errno : RC(write(fd, "more\n", 5))));
	if (fd >= 0)
		close(fd);
	say("copyup.write.data", "%s", get("file"));
	say("copyup.truncate", "%s", ename(RC(truncate("trunc", 3))));
	say("copyup.truncate.data", "%s", get("trunc"));
	e = RC(chmod("chmod", 0600));
	say("copyup.chmod", "%s %llo", ename(e), mode_of("chmod"));
	e = RC(chown("chown", 1234, 1234));
	say("copyup.chown", "%s %d:%d", ename(e), st_of("chown").st_uid, st_of("chown").st_gid);
	say("copyup.chown.data", "%s", get("chown"));
	struct timespec ts[2] = {{1000000000, 5}, {1100000000, 7}};
	e = RC(utimensat(AT_FDCWD, "utime", ts, 0));
	say("copyup.utimes", "%s %lld.%ld", ename(e), (long long)st_of("utime").st_mtime, st_of("utime").st_mtim.tv_nsec);
	say("copyup.setxattr", "%s", ename(RC(setxattr("xattr", "user.probe", "v1", 2, 0))));
	char v[64] = {0};
	ssize_t n = getxattr("xattr", "user.probe", v, sizeof v - 1);
	say("copyup.getxattr", "%zd %s", n, v);
	char names[1024];
	n = listxattr("xattr", names, sizeof names);
	int seen = 0;
	for (ssize_t i = 0; i < n; i += strlen(names + i) + 1)
		seen |= strcmp(names + i, "user.probe") == 0;
	say("copyup.listxattr", "%d", seen);
	say("copyup.removexattr", "%s", ename(RC(removexattr("xattr", "user.probe"))));
	say("copyup.removexattr.gone", "%s", ename(RC(getxattr("xattr", "user.probe", v, sizeof v))));
	say("xattr.missing", "%s", ename(RC(getxattr("file", "user.none", v, sizeof v))));
	say("xattr.create-exists", "%s", ename(RC(setxattr("xattr", "user.a", "1", 1, 0)) ?: RC(setxattr("xattr", "user.a", "2", 1, XATTR_CREATE))));
	say("xattr.replace-missing", "%s", ename(RC(setxattr("xattr", "user.b", "1", 1, XATTR_REPLACE))));
	/* whiteouts */
	say("unlink", "%s", ename(RC(unlink("gone"))));
	say("unlink.gone", "%s", ename(RC(access("gone", F_OK))));
	say("unlink.listing", "%s", listing("."));
	e = RC(unlink("recreate")) ?: RC(put("recreate", "new\n"));
	say("recreate", "%s %s", ename(e), get("recreate"));
	/* directories: rmdir of a full lower dir, then of an emptied one, then opaque */
	say("rmdir.full", "%s", ename(RC(rmdir("dir"))));
	unlink("dir/a");
	unlink("dir/b");
	unlink("dir/sub/c");
	say("rmdir.sub", "%s", ename(RC(rmdir("dir/sub"))));
	say("rmdir.emptied", "%s", ename(RC(rmdir("dir"))));
	say("rmdir.gone", "%s", ename(RC(access("dir", F_OK))));
	say("opaque.mkdir", "%s", ename(RC(mkdir("dir", 0755))));
	say("opaque.listing", "[%s]", listing("dir"));
	e = RC(put("dir/a", "fresh"));
	say("opaque.create", "%s %s", ename(e), listing("dir"));
	e = RC(put("keep/k2", "k2"));
	say("merged.create", "%s %s", ename(e), listing("keep"));
	/* renames */
	e = RC(rename("renamed-from", "renamed-to"));
	say("rename.file", "%s %s", ename(e), get("renamed-to"));
	say("rename.file.old", "%s", ename(RC(access("renamed-from", F_OK))));
	e = RC(rename("renamed-to", "over-target"));
	say("rename.over-lower", "%s %s", ename(e), get("over-target"));
	e = RC(rename("dir2", "dir2-moved"));
	say("rename.lower-dir", "%s", e == 0 || e == EXDEV ? "ok-or-exdev" : ename(e));
	say("rename.upper-dir", "%s", ename(RC(mkdir("newdir", 0755)) ?: RC(put("newdir/f", "f")) ?: RC(rename("newdir", "newdir2"))));
	say("rename.upper-dir.data", "%s", get("newdir2/f"));
	/* hard links */
	struct stat h1 = st_of("h1"), h2 = st_of("h2");
	say("hardlink.lower", "%d nlink=%ld", h1.st_ino == h2.st_ino, (long)h1.st_nlink);
	e = RC(link("file", "file-link"));
	say("hardlink.new", "%s nlink=%ld", ename(e), (long)st_of("file").st_nlink);
	/* the kernel overlay (index=off) reports the origin's st_ino for a copied-up file but the
	 * upper inode's for a new link to it; nook reports one number */
	printf("hardlink.new.same-ino (driver): %d\n", st_of("file").st_ino == st_of("file-link").st_ino);
	fd = open("h1", O_WRONLY | O_APPEND);
	if (fd >= 0) {
		(void)!write(fd, "x\n", 2);
		close(fd);
	}
	say("hardlink.copyup.h1", "%s", get("h1"));
	/* kernel overlay with index=off breaks lower hard links on copy-up; nook keeps them */
	printf("hardlink.copyup.h2 (driver): %s", get("h2"));
	printf("\n");
	/* permissions */
	say("perm.chmod000", "%s", ename(RC(chmod("noperm", 0))));
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		setgroups(0, NULL);
		if (setresgid(1234, 1234, 1234) || setresuid(1234, 1234, 1234))
			_exit(2);
		_exit(xopen("noperm", O_RDONLY, 0) == -1 && errno == EACCES ? 0 : 1);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	say("perm.unprivileged-open", "%s", WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "EACCES" : WIFEXITED(status) && WEXITSTATUS(status) == 2 ? "no-uid-1234" : "opened");
	/* O_APPEND on a lower file */
	fd = open("append", O_WRONLY | O_APPEND);
	if (fd >= 0) {
		lseek(fd, 0, SEEK_SET);
		(void)!write(fd, "line2\n", 6);
		lseek(fd, 0, SEEK_SET);
		(void)!write(fd, "line3\n", 6);
		close(fd);
	}
	say("append.data", "%s", get("append"));
	/* shared writable mmap of a copied-up file */
	fd = open("mmap", O_RDWR);
	char *m = fd >= 0 ? mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
	if (m != MAP_FAILED) {
		memcpy(m + 4096, "MMAP", 4);
		msync(m, 8192, MS_SYNC);
		munmap(m, 8192);
	}
	if (fd >= 0)
		close(fd);
	char mb[8] = {0};
	fd = open("mmap", O_RDONLY);
	if (fd >= 0) {
		(void)!pread(fd, mb, 6, 4095);
		close(fd);
	}
	say("mmap.shared", "%s %s", m == MAP_FAILED ? "failed" : "mapped", mb);
	/* mknod of fifos and sockets, symlinks */
	e = RC(mkfifo("fifo", 0644));
	say("mkfifo", "%s %d", ename(e), S_ISFIFO(st_of("fifo").st_mode));
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s/sock", lower);
	e = RC(bind(s, (struct sockaddr *)&addr, sizeof addr));
	say("socket.bind", "%s %d", ename(e), S_ISSOCK(st_of("sock").st_mode));
	close(s);
	char t[64] = {0};
	(void)!readlink("link", t, sizeof t - 1);
	say("symlink.lower", "%s %s", t, get("link"));
	say("symlink.new", "%s", ename(RC(symlink("file", "link2"))));
	memset(t, 0, sizeof t);
	(void)!readlink("link2", t, sizeof t - 1);
	say("symlink.new.target", "%s", t);
	/* fsync and statfs */
	fd = open("file", O_RDWR);
	say("fsync", "%s", ename(fd < 0 ? errno : RC(fsync(fd)) ?: RC(fdatasync(fd))));
	if (fd >= 0)
		close(fd);
	fd = open(".", O_RDONLY | O_DIRECTORY);
	say("fsync.dir", "%s", ename(fd < 0 ? errno : RC(fsync(fd))));
	if (fd >= 0)
		close(fd);
	struct statfs sf;
	e = RC(statfs(".", &sf));
	say("statfs", "%s %d", ename(e), sf.f_bsize > 0 && sf.f_blocks > 0);
	/* large and sparse files */
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/big", scratch);
	mkdir(scratch, 0755);
	fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
	off_t far = 5LL << 30;
	say("big.pwrite", "%s", ename(fd < 0 ? errno : pwrite(fd, "tail", 4, far) == 4 ? 0 : errno));
	char tb[8] = {0};
	say("big.pread", "%zd %s", fd < 0 ? -1 : pread(fd, tb, 4, far), tb);
	struct stat bs;
	fstat(fd, &bs);
	say("big.size", "%lld", (long long)bs.st_size);
	say("big.sparse", "%d", bs.st_blocks * 512LL < (64LL << 20));
	say("big.seek-data", "%lld", (long long)lseek(fd, 0, SEEK_DATA) / 4096 * 4096);
	say("big.seek-hole", "%lld", (long long)lseek(fd, 0, SEEK_HOLE));
	e = RC(ftruncate(fd, 6LL << 30));
	say("big.truncate", "%s %lld", ename(e), size_of(path));
	if (fd >= 0)
		close(fd);
	unlink(path);
	say("final.listing", "%s", listing("."));
}

static void owners(int argc, char **argv) {
	for (int i = 0; i < argc; i++) {
		struct stat a, b;
		struct statx x;
		if (stat(argv[i], &a) != 0 || lstat(argv[i], &b) != 0 ||
		    statx(AT_FDCWD, argv[i], AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &x) != 0) {
			printf("%s %s\n", argv[i], ename(errno));
			failures++;
			continue;
		}
		int fd = open(argv[i], O_PATH | O_NOFOLLOW);
		struct stat f;
		if (fd < 0 || fstatat(fd, "", &f, AT_EMPTY_PATH) != 0) {
			printf("%s fd %s\n", argv[i], ename(errno));
			failures++;
			continue;
		}
		close(fd);
		printf("%s stat=%u:%u:%o lstat=%u:%u:%o statx=%u:%u:%o fd=%u:%u:%o\n", argv[i], a.st_uid, a.st_gid,
		       a.st_mode & 07777, b.st_uid, b.st_gid, b.st_mode & 07777, x.stx_uid, x.stx_gid,
		       x.stx_mode & 07777, f.st_uid, f.st_gid, f.st_mode & 07777);
	}
}

struct job {
	char path[PATH_MAX];
	long mib;
	int ok;
};

static void *writer(void *arg) {
	struct job *j = arg;
	static __thread char buf[1 << 16];
	int fd = open(j->path, O_CREAT | O_RDWR | O_TRUNC, 0644);
	if (fd < 0)
		return NULL;
	unsigned seed = (unsigned)(uintptr_t)j;
	for (long blk = 0; blk < j->mib * 16; blk++) {
		for (size_t i = 0; i < sizeof buf; i += 4)
			*(unsigned *)(buf + i) = seed ^ (unsigned)(blk * 65536 + i);
		if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
			goto out;
	}
	if (fsync(fd) != 0)
		goto out;
	for (long blk = 0; blk < j->mib * 16; blk++) {
		if (pread(fd, buf, sizeof buf, blk * (off_t)sizeof buf) != (ssize_t)sizeof buf)
			goto out;
		for (size_t i = 0; i < sizeof buf; i += 4)
			if (*(unsigned *)(buf + i) != (seed ^ (unsigned)(blk * 65536 + i)))
				goto out;
	}
	j->ok = 1;
out:
	close(fd);
	return NULL;
}

static void threads(const char *dir, int n, long mib) {
	pthread_t t[64];
	struct job *jobs = calloc(n, sizeof *jobs);
	if (n > 64 || !jobs) {
		failures++;
		return;
	}
	mkdir(dir, 0755);
	for (int i = 0; i < n; i++) {
		snprintf(jobs[i].path, sizeof jobs[i].path, "%s/w%d", dir, i);
		jobs[i].mib = mib;
		pthread_create(&t[i], NULL, writer, &jobs[i]);
	}
	int good = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		good += jobs[i].ok;
	}
	printf("threads: %d of %d files written and verified\n", good, n);
	failures += n - good;
}

int main(int argc, char **argv) {
	if (argc >= 3 && strcmp(argv[1], "posix") == 0)
		posix(argv[2]);
	else if (argc >= 4 && strcmp(argv[1], "scenario") == 0)
		scenario(argv[2], argv[3]);
	else if (argc >= 3 && strcmp(argv[1], "owners") == 0)
		owners(argc - 2, argv + 2);
	else if (argc >= 5 && strcmp(argv[1], "threads") == 0)
		threads(argv[2], atoi(argv[3]), atol(argv[4]));
	else {
		fprintf(stderr, "usage: fsprobe posix DIR | scenario LOWER SCRATCH | owners PATH... | threads DIR N MIB\n");
		return 2;
	}
	return failures ? 1 : 0;
}
