#!/usr/bin/env python3
"""Builds the lower layers for scripts/bench/fs.sh from the host's own files.

  mklower.py OUT [--mb 200] [--min-files 7000] [--big-mb 1024]

OUT/l1/tree/...    host files (/usr/include, /usr/lib/python3, /usr/share, in that order)
                   until both --mb megabytes and --min-files files are reached
OUT/l2/big         one file of --big-mb MiB (sequential read)
OUT/l2/src/        a small C project (30 files and a header)
OUT/small.tar      20,000 small files in 200 directories (untar)
OUT/append.list    2,000 regular files of the tree (copy-up by append)
OUT/rm.dir         the subtree removed by the rm -rf workload
"""
import argparse, io, os, shutil, stat, tarfile

ROOTS = ["/usr/include", "/usr/lib/python3", "/usr/share"]


def copy_tree(out, mb, min_files):
    total = files = 0
    regular = []
    for root in ROOTS:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, "/")
            os.makedirs(os.path.join(out, rel), exist_ok=True)
            for name in sorted(filenames):
                src = os.path.join(dirpath, name)
                dst = os.path.join(out, rel, name)
                try:
                    st = os.lstat(src)
                    if stat.S_ISLNK(st.st_mode):
                        os.symlink(os.readlink(src), dst)
                    elif stat.S_ISREG(st.st_mode):
                        shutil.copyfile(src, dst)
                        os.chmod(dst, 0o644)
                        total += st.st_size
                        regular.append(os.path.join("tree", rel, name))
                    else:
                        continue
                except OSError:
                    continue
                files += 1
                if total >= mb << 20 and files >= min_files:
                    return total, files, regular
    return total, files, regular


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--min-files", type=int, default=7000)
    ap.add_argument("--big-mb", type=int, default=1024)
    a = ap.parse_args()
    tree = os.path.join(a.out, "l1", "tree")
    os.makedirs(tree)
    total, files, regular = copy_tree(tree, a.mb, a.min_files)
    l2 = os.path.join(a.out, "l2")
    os.makedirs(os.path.join(l2, "src"))
    block = b"\xa5" * (1 << 20)
    with open(os.path.join(l2, "big"), "wb") as f:
        for _ in range(a.big_mb):
            f.write(block)
    with open(os.path.join(l2, "src", "common.h"), "w") as f:
        f.write("#include <stdio.h>\n#include <string.h>\nstruct item { int id; char name[32]; };\nint work(int);\n")
    for i in range(30):
        with open(os.path.join(l2, "src", f"f{i:02}.c"), "w") as f:
            f.write('#include "common.h"\n')
            for j in range(20):
                f.write(f"static int g{j}(struct item *it) {{ return it->id * {j} + (int)strlen(it->name); }}\n")
            f.write(f"int work{i}(int n) {{ struct item it = {{ n, \"x\" }}; int s = 0;\n")
            for j in range(20):
                f.write(f"  s += g{j}(&it);\n")
            f.write("  printf(\"%d\\n\", s); return s; }\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for d in range(200):
            ti = tarfile.TarInfo(f"d{d:03}")
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            t.addfile(ti)
            for k in range(100):
                data = (f"file {d}/{k}\n" * (1 + k % 8)).encode()
                ti = tarfile.TarInfo(f"d{d:03}/f{k:03}")
                ti.size, ti.mode = len(data), 0o644
                t.addfile(ti, io.BytesIO(data))
    with open(os.path.join(a.out, "small.tar"), "wb") as f:
        f.write(buf.getvalue())
    step = max(1, len(regular) // 2000)
    with open(os.path.join(a.out, "append.list"), "w") as f:
        f.write("\n".join(regular[::step][:2000]) + "\n")
    with open(os.path.join(a.out, "rm.dir"), "w") as f:
        f.write(os.path.join("tree", os.path.relpath(ROOTS[0], "/")) + "\n")
    print(f"lower: {files} files, {total >> 20} MB in the tree; big {a.big_mb} MiB; 20000 files to untar")


if __name__ == "__main__":
    main()
