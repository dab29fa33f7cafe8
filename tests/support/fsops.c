/*
 * fsops: one script of filesystem operations, printed in a normalised form, so that the
 * output under the kernel overlay and under nook's FUSE overlay can be compared line by line
 * (tests/fsdiff.rs). Built static by the test suite and run inside containers as root.
 *
 *   fsops ops            prints the operation names, one a line (the test builds the image's
 *                        fixture directories from them)
 *   fsops kinds          prints the target kinds, one a line
 *   fsops run ROOT       for every kind, prepares ROOT/OP.KIND, then runs each operation in
 *                        its own directory and prints "OP.KIND step -> ERRNO" lines followed by
 *                        a dump of the directory (type, mode, nlink, owner, size, whether mtime
 *                        and ctime moved during the operation, symlink targets, short contents,
 *                        user.* xattrs)
 *
 * Every fixture directory starts as the set below: in the image for the kinds "lower",
 * "copied" and "recreated", created by the probe for "upper" (ROOT/OP.upper is empty in the
 * image), and re-created over whiteouts for "recreated" (deleted here first) and "layerwh"
 * (deleted by a whiteout in the image's second layer).
 *
 *   f "hello\n" 0644   g "other data\n" 0644   s -> f   d/ (d/x "x\n")   e/ (empty)
 *   n/ (n/y "y\n")     sub/ (empty)         p (fifo 0644)
 *   u "mine\n" 0644 and w/ 0755 (empty), both owned by 1234:1234
 *
 * The operation "as_user" runs as uid/gid 1234, which a single id mapping does not have: the
 * test leaves its blocks out there.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

static const char *const kinds[] = {"lower", "upper", "copied", "recreated", "layerwh"};
#define NKINDS (sizeof kinds / sizeof kinds[0])

static const char *ename(int e) {
	if (e == 0)
		return "0";
	const char *n = strerrorname_np(e);
	return n ? n : "E?";
}

/* The directory the current operation works in, and paths below it. */
static char dir[512];
static const char *at(const char *name) {
	static char bufs[8][1024];
	static int next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
	return b;
}

/* Prints one step of an operation: "STEP -> 0" or "STEP -> ENAME". */
static int step(const char *what, int rc) {
	printf("  %s -> %s\n", what, ename(rc == -1 ? errno : 0));
	return rc;
}
#define S(call) step(#call, (call))

/* ---- fixtures ---- */

static void put(const char *path, const char *data, mode_t mode) {
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0) {
		printf("  setup open %s -> %s\n", path, ename(errno));
		return;
	}
	if (write(fd, data, strlen(data)) != (ssize_t)strlen(data))
		printf("  setup write %s -> %s\n", path, ename(errno));
	close(fd);
}

static void make_set(void) {
	put(at("f"), "hello\n", 0644);
	put(at("g"), "other data\n", 0644);
	if (symlink("f", at("s")) != 0)
		printf("  setup symlink -> %s\n", ename(errno));
	const char *dirs[] = {"d", "e", "n", "sub"};
	for (size_t i = 0; i < 4; i++)
		if (mkdir(at(dirs[i]), 0755) != 0)
			printf("  setup mkdir %s -> %s\n", dirs[i], ename(errno));
	put(at("d/x"), "x\n", 0644);
	put(at("n/y"), "y\n", 0644);
	if (mkfifo(at("p"), 0644) != 0)
		printf("  setup mkfifo -> %s\n", ename(errno));
	put(at("u"), "mine\n", 0644);
	if (mkdir(at("w"), 0755) != 0 || chown(at("u"), 1234, 1234) != 0 || chown(at("w"), 1234, 1234) != 0)
		printf("  setup owned -> %s\n", ename(errno));
}

static void remove_set(void) {
	const char *files[] = {"f", "g", "s", "p", "u", "d/x", "n/y"};
	for (size_t i = 0; i < 7; i++)
		if (unlink(at(files[i])) != 0)
			printf("  setup unlink %s -> %s\n", files[i], ename(errno));
	const char *dirs[] = {"d", "e", "n", "sub", "w"};
	for (size_t i = 0; i < 5; i++)
		if (rmdir(at(dirs[i])) != 0)
			printf("  setup rmdir %s -> %s\n", dirs[i], ename(errno));
}

/* Copies every entry up without changing what stat shows: chmod to the same mode, and an
 * owner change to the same owner for the symlink. */
static void copy_up_set(void) {
	const char *all[] = {"f", "g", "p", "u", "d", "e", "n", "sub", "w", "d/x", "n/y"};
	for (size_t i = 0; i < 11; i++) {
		struct stat st;
		if (lstat(at(all[i]), &st) != 0 || chmod(at(all[i]), st.st_mode & 07777) != 0)
			printf("  setup copy-up %s -> %s\n", all[i], ename(errno));
	}
	if (lchown(at("s"), 0, 0) != 0)
		printf("  setup copy-up s -> %s\n", ename(errno));
}

static void prepare(const char *kind) {
	if (strcmp(kind, "upper") == 0 || strcmp(kind, "layerwh") == 0)
		make_set();
	else if (strcmp(kind, "copied") == 0)
		copy_up_set();
	else if (strcmp(kind, "recreated") == 0) {
		remove_set();
		make_set();
	}
}

/* ---- the dump after each operation ---- */

static long long t0; /* ns, just before the operation */

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

/* Whether a time moved during the operation. Kernel timestamps come from a coarse clock (a
 * few ms behind); everything before the operation is at least 50 ms older (see nap). */
static const char *moved(struct timespec t) { return ns(t) >= t0 - 20000000LL ? "new" : "old"; }

static void nap(void) {
	struct timespec d = {0, 50000000};
	nanosleep(&d, NULL);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	t0 = ns(now);
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void show_xattrs(const char *path) {
	char list[4096];
	ssize_t n = llistxattr(path, list, sizeof list);
	if (n < 0) {
		printf(" xattrs=<%s>", ename(errno));
		return;
	}
	for (ssize_t i = 0; i < n; i += strlen(list + i) + 1) {
		if (strncmp(list + i, "user.", 5) != 0)
			continue;
		char v[256];
		ssize_t l = lgetxattr(path, list + i, v, sizeof v - 1);
		v[l < 0 ? 0 : l] = 0;
		printf(" %s=%s", list + i, l < 0 ? ename(errno) : v);
	}
}

static void print_data(const char *b, ssize_t n) {
	printf(" data=\"");
	for (ssize_t i = 0; i < n; i++)
		printf(b[i] >= 32 && b[i] < 127 ? "%c" : "\\x%02x", (unsigned char)b[i]);
	printf("\"");
}

static void show_content(const char *path) {
	char b[33];
	int fd = open(path, O_RDONLY | O_NOFOLLOW);
	if (fd < 0) {
		printf(" data=<%s>", ename(errno));
		return;
	}
	ssize_t n = read(fd, b, 32);
	close(fd);
	print_data(b, n);
}

static void show(const char *rel, const char *path);

static void show_dir(const char *rel, const char *path) {
	char *names[64];
	int n = 0;
	DIR *d = opendir(path);
	if (!d) {
		printf("    %s/ <%s>\n", rel, ename(errno));
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) && n < 64) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof names[0], cmp);
	printf("    %s/ ls:", rel);
	for (int i = 0; i < n; i++)
		printf(" %s", names[i]);
	printf("\n");
	for (int i = 0; i < n; i++) {
		char r[512], p[1024];
		snprintf(r, sizeof r, "%s/%s", rel, names[i]);
		snprintf(p, sizeof p, "%s/%s", path, names[i]);
		show(r, p);
		free(names[i]);
	}
}

static void show(const char *rel, const char *path) {
	struct stat st;
	if (lstat(path, &st) != 0) {
		printf("    %s <%s>\n", rel, ename(errno));
		return;
	}
	const char *type = S_ISREG(st.st_mode) ? "reg" : S_ISDIR(st.st_mode) ? "dir" : S_ISLNK(st.st_mode) ? "lnk" : S_ISFIFO(st.st_mode) ? "fifo" : "other";
	printf("    %s %s %04o nlink=%lu ids=%u:%u mtime=%s ctime=%s", rel, type, st.st_mode & 07777,
	       (unsigned long)st.st_nlink, st.st_uid, st.st_gid, moved(st.st_mtim), moved(st.st_ctim));
	if (!S_ISDIR(st.st_mode))
		printf(" size=%lld", (long long)st.st_size);
	if (S_ISLNK(st.st_mode)) {
		char t[256];
		ssize_t l = readlink(path, t, sizeof t - 1);
		t[l < 0 ? 0 : l] = 0;
		printf(" -> %s", t);
	}
	if (S_ISREG(st.st_mode))
		show_content(path);
	show_xattrs(path);
	printf("\n");
	if (S_ISDIR(st.st_mode))
		show_dir(rel, path);
}

/* ---- the operations: each works in its own fixture directory ---- */

static void rename_file_over_file(void) { S(rename(at("g"), at("f"))); }
static void rename_dir_over_empty_dir(void) { S(rename(at("d"), at("e"))); }
static void rename_dir_over_full_dir(void) { S(rename(at("d"), at("n"))); }
static void rename_file_over_dir(void) { S(rename(at("f"), at("e"))); }
static void rename_dir_over_file(void) { S(rename(at("d"), at("f"))); }

static void rename_across_dirs(void) {
	S(rename(at("f"), at("sub/f2")));
	S(rename(at("d"), at("sub/d2")));
	S(rename(at("n/y"), at("e/y")));
	S(rename(at("s"), at("sub/s2")));
	S(rename(at("p"), at("sub/p2")));
}

static void rename_noreplace(void) {
	S(renameat2(AT_FDCWD, at("g"), AT_FDCWD, at("f"), RENAME_NOREPLACE));
	S(renameat2(AT_FDCWD, at("d"), AT_FDCWD, at("e"), RENAME_NOREPLACE));
	S(renameat2(AT_FDCWD, at("g"), AT_FDCWD, at("h"), RENAME_NOREPLACE));
	S(renameat2(AT_FDCWD, at("d"), AT_FDCWD, at("d2"), RENAME_NOREPLACE));
}

static void rename_exchange(void) {
	S(renameat2(AT_FDCWD, at("f"), AT_FDCWD, at("d"), RENAME_EXCHANGE));
	S(renameat2(AT_FDCWD, at("e"), AT_FDCWD, at("n"), RENAME_EXCHANGE));
	S(renameat2(AT_FDCWD, at("g"), AT_FDCWD, at("sub/none"), RENAME_EXCHANGE));
}

static void rename_odd(void) {
	S(rename(at("f"), at("f")));
	S(rename(at("n"), at("n/z")));
	S(rename(at("s"), at("g")));
	S(rename(at("none"), at("g")));
}

static void link_(void) {
	S(link(at("f"), at("f.l")));
	S(link(at("d"), at("d.l")));
	S(link(at("g"), at("f")));
	S(link(at("s"), at("s.l")));
}

static void unlink_(void) {
	S(unlink(at("f")));
	S(unlink(at("f")));
	S(unlink(at("d")));
	S(unlink(at("s")));
	S(unlink(at("p")));
	S(unlink(at("d/x")));
}

static void rmdir_(void) {
	S(rmdir(at("e")));
	S(rmdir(at("e")));
	S(rmdir(at("n")));
	S(rmdir(at("f")));
	S(unlink(at("n/y")));
	S(rmdir(at("n")));
}

static void mkdir_(void) {
	S(mkdir(at("d/new"), 0750));
	S(mkdir(at("f"), 0755));
	S(mkdir(at("e"), 0755));
	S(mkdir(at("s"), 0755));
	S(unlink(at("g")));
	S(mkdir(at("g"), 0700));
	S(rmdir(at("n/y")));
}

static void symlink_(void) {
	S(symlink("../f", at("d/sl")));
	S(symlink("x", at("f")));
	S(symlink("x", at("s")));
	S(rmdir(at("e")));
	S(symlink("f", at("e")));
}

static void mknod_(void) {
	S(mknod(at("d/p"), S_IFIFO | 0640, 0));
	S(mkfifo(at("f"), 0644));
	S(unlink(at("g")));
	S(mknod(at("g"), S_IFIFO | 0600, 0));
	S(mknod(at("d/c"), S_IFCHR | 0600, makedev(1, 3)));
}

static void chmod_(void) {
	S(chmod(at("f"), 0600));
	S(chmod(at("d"), 0700));
	S(chmod(at("s"), 0640));
	S(chmod(at("g"), 04755));
	S(chmod(at("p"), 0600));
	S(chmod(at("none"), 0644));
}

static void chown_(void) {
	S(chown(at("f"), 1234, 1235));
	S(lchown(at("s"), 1234, 1234));
	S(chown(at("d"), 1234, -1));
	S(chown(at("e"), -1, 1235));
	S(chown(at("p"), 1234, 1234));
	S(chmod(at("g"), 06755));
	S(chown(at("g"), 1234, 1234));
}

static void truncate_(void) {
	S(truncate(at("f"), 3));
	S(truncate(at("g"), 20));
	S(truncate(at("d"), 0));
	S(truncate(at("p"), 0));
	S(truncate(at("d/x"), 0));
	S(truncate(at("none"), 0));
}

static void ftruncate_(void) {
	int fd;
	S(fd = open(at("f"), O_RDWR));
	S(ftruncate(fd, 2));
	S(pwrite(fd, "Z", 1, 4));
	close(fd);
	S(fd = open(at("g"), O_RDONLY));
	S(ftruncate(fd, 0));
	close(fd);
}

static void times_of(const char *name) {
	struct stat st;
	if (lstat(at(name), &st) == 0)
		printf("  %s atime=%lld.%09ld mtime=%lld.%09ld\n", name, (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
		       (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
}

static void utimensat_(void) {
	struct timespec set[2] = {{1000000000, 500}, {1200000000, 250000000}};
	struct timespec now_mtime[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
	S(utimensat(AT_FDCWD, at("f"), set, 0));
	times_of("f");
	S(utimensat(AT_FDCWD, at("g"), now_mtime, 0));
	S(utimensat(AT_FDCWD, at("s"), set, AT_SYMLINK_NOFOLLOW));
	times_of("s");
	S(utimensat(AT_FDCWD, at("d"), NULL, 0));
	S(utimensat(AT_FDCWD, at("e"), set, 0));
	times_of("e");
	S(utimensat(AT_FDCWD, at("p"), set, 0));
	times_of("p");
}

static void open_(void) {
	int fd;
	S(open(at("f"), O_WRONLY | O_CREAT | O_EXCL, 0600));
	S(open(at("s"), O_WRONLY | O_CREAT | O_EXCL, 0600));
	S(fd = open(at("new"), O_WRONLY | O_CREAT | O_EXCL, 0600));
	close(fd);
	S(fd = open(at("g"), O_WRONLY | O_TRUNC));
	close(fd);
	S(fd = open(at("f"), O_WRONLY | O_APPEND));
	S(pwrite(fd, "more\n", 5, 0));
	close(fd);
	S(open(at("d"), O_WRONLY));
	S(open(at("f"), O_RDONLY | O_DIRECTORY));
	S(open(at("s"), O_RDONLY | O_NOFOLLOW));
	S(fd = open(at("n/y"), O_RDONLY | O_TRUNC));
	close(fd);
	S(fd = open(at("d/x"), O_RDONLY | O_CREAT, 0600));
	close(fd);
}

/* Opening for writing copies up without changing anything the container asked for. */
static void open_for_writing_only(void) {
	int fd;
	S(fd = open(at("f"), O_WRONLY));
	close(fd);
	S(fd = open(at("d/x"), O_RDWR));
	close(fd);
}

/* The same changes through descriptors (read-only ones, for a file: the attribute calls need
 * no write access), with a fstat printed after them. */
static void through_fds(void) {
	struct timespec set[2] = {{1000000000, 0}, {1100000000, 0}};
	char v[8] = "";
	int fd, dfd;
	S(fd = open(at("f"), O_RDONLY));
	S(fchmod(fd, 0600));
	S(fchown(fd, 1234, 1235));
	S(futimens(fd, set));
	S(fsetxattr(fd, "user.fd", "F", 1, 0));
	S(fgetxattr(fd, "user.fd", v, sizeof v - 1));
	S(fremovexattr(fd, "user.nope"));
	S(ftruncate(fd, 0));
	struct stat st;
	if (fstat(fd, &st) == 0)
		printf("  fstat f %04o %u:%u size=%lld\n", st.st_mode & 07777, st.st_uid, st.st_gid, (long long)st.st_size);
	close(fd);
	S(dfd = open(at("d"), O_RDONLY | O_DIRECTORY));
	S(fchmod(dfd, 0700));
	S(fsetxattr(dfd, "user.dir", "D", 1, 0));
	S(mkdirat(dfd, "inner", 0755));
	S(unlinkat(dfd, "x", 0));
	close(dfd);
}

/* A descriptor opened before the copy-up reads what was written through another one, and a
 * listing read again after rewinddir shows the names changed meanwhile. */
static void open_across_changes(void) {
	char b[32] = "";
	int ro, wr;
	S(ro = open(at("f"), O_RDONLY));
	S(wr = open(at("f"), O_WRONLY | O_APPEND));
	S(write(wr, "more\n", 5));
	ssize_t n = pread(ro, b, sizeof b, 0);
	printf("  pread fd opened before the copy-up -> %zd", n);
	print_data(b, n);
	printf("\n");
	close(ro);
	close(wr);
	DIR *d = opendir(dir);
	if (!d)
		return;
	int before = 0, after = 0;
	while (readdir(d))
		before++;
	S(mkdir(at("made"), 0755));
	S(unlink(at("g")));
	S(unlink(at("u")));
	rewinddir(d);
	while (readdir(d))
		after++;
	closedir(d);
	printf("  entries before=%d after=%d\n", before, after);
}

static void get(const char *name, const char *key) {
	char v[64];
	ssize_t n = getxattr(at(name), key, v, sizeof v - 1);
	v[n < 0 ? 0 : n] = 0;
	printf("  getxattr %s %s -> %s %s\n", name, key, n < 0 ? ename(errno) : "0", v);
}

static void xattr_(void) {
	S(setxattr(at("f"), "user.a", "1", 1, XATTR_CREATE));
	S(setxattr(at("f"), "user.a", "2", 1, XATTR_CREATE));
	S(setxattr(at("f"), "user.b", "3", 1, XATTR_REPLACE));
	S(setxattr(at("f"), "user.c", "44", 2, 0));
	get("f", "user.a");
	get("f", "user.nope");
	S(removexattr(at("f"), "user.c"));
	S(removexattr(at("f"), "user.c"));
	S(setxattr(at("d"), "user.dir", "D", 1, 0));
	S(lsetxattr(at("s"), "user.l", "L", 1, 0));
	S(setxattr(at("p"), "user.p", "P", 1, 0));
	S(setxattr(at("g"), "user.keep", "k", 1, 0));
	get("g", "user.keep");
}

/* As uid/gid 1234: refused on root's entries, allowed on its own (copying them up). */
static void as_user_steps(void) {
	int fd;
	struct timespec set[2] = {{1000000000, 0}, {1100000000, 0}};
	S(open(at("f"), O_WRONLY));
	S(chmod(at("f"), 0600));
	S(chown(at("f"), 1234, 1234));
	S(unlink(at("f")));
	S(rename(at("f"), at("h")));
	S(utimensat(AT_FDCWD, at("f"), NULL, 0));
	S(utimensat(AT_FDCWD, at("f"), set, 0));
	S(setxattr(at("f"), "user.u", "1", 1, 0));
	S(truncate(at("f"), 0));
	S(mkdir(at("d/new"), 0755));
	S(chmod(at("u"), 0600));
	S(utimensat(AT_FDCWD, at("u"), set, 0));
	S(setxattr(at("u"), "user.mine", "m", 1, 0));
	S(fd = open(at("u"), O_WRONLY | O_APPEND));
	S(write(fd, "more\n", 5));
	close(fd);
	S(chown(at("u"), -1, 1234));
	S(chown(at("u"), -1, 0));
	S(mkdir(at("w/sub"), 0755));
	S(fd = open(at("w/nf"), O_WRONLY | O_CREAT | O_EXCL, 0644));
	close(fd);
	S(symlink("../u", at("w/sl")));
	S(rename(at("w/nf"), at("w/nf2")));
	S(rmdir(at("w/sub")));
}

static void as_user(void) {
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		gid_t g = 1234;
		if (setgroups(1, &g) != 0 || setresgid(1234, 1234, 1234) != 0 || setresuid(1234, 1234, 1234) != 0) {
			printf("  setup setresuid -> %s\n", ename(errno));
			exit(1);
		}
		as_user_steps();
		exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
}

static const struct {
	const char *name;
	void (*run)(void);
} ops[] = {
    {"rename_file_over_file", rename_file_over_file},
    {"rename_dir_over_empty_dir", rename_dir_over_empty_dir},
    {"rename_dir_over_full_dir", rename_dir_over_full_dir},
    {"rename_file_over_dir", rename_file_over_dir},
    {"rename_dir_over_file", rename_dir_over_file},
    {"rename_across_dirs", rename_across_dirs},
    {"rename_noreplace", rename_noreplace},
    {"rename_exchange", rename_exchange},
    {"rename_odd", rename_odd},
    {"link", link_},
    {"unlink", unlink_},
    {"rmdir", rmdir_},
    {"mkdir", mkdir_},
    {"symlink", symlink_},
    {"mknod", mknod_},
    {"chmod", chmod_},
    {"chown", chown_},
    {"truncate", truncate_},
    {"ftruncate", ftruncate_},
    {"utimensat", utimensat_},
    {"open", open_},
    {"open_for_writing_only", open_for_writing_only},
    {"through_fds", through_fds},
    {"open_across_changes", open_across_changes},
    {"xattr", xattr_},
    {"as_user", as_user},
};
#define NOPS (sizeof ops / sizeof ops[0])

int main(int argc, char **argv) {
	if (argc == 2 && strcmp(argv[1], "ops") == 0) {
		for (size_t i = 0; i < NOPS; i++)
			printf("%s\n", ops[i].name);
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "kinds") == 0) {
		for (size_t i = 0; i < NKINDS; i++)
			printf("%s\n", kinds[i]);
		return 0;
	}
	if (argc != 3 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "usage: fsops ops | kinds | run ROOT\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	umask(022);
	for (size_t k = 0; k < NKINDS; k++)
		for (size_t i = 0; i < NOPS; i++) {
			snprintf(dir, sizeof dir, "%s/%s.%s", argv[2], ops[i].name, kinds[k]);
			printf("prepare %s.%s\n", ops[i].name, kinds[k]);
			prepare(kinds[k]);
		}
	for (size_t k = 0; k < NKINDS; k++)
		for (size_t i = 0; i < NOPS; i++) {
			snprintf(dir, sizeof dir, "%s/%s.%s", argv[2], ops[i].name, kinds[k]);
			printf("%s.%s\n", ops[i].name, kinds[k]);
			nap();
			ops[i].run();
			show(".", dir);
		}
	return 0;
}
