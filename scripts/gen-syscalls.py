#!/usr/bin/env python3
"""Writes src/sandbox/seccomp/syscalls.rs: system call numbers by name from the kernel headers.

Usage: scripts/gen-syscalls.py > src/sandbox/seccomp/syscalls.rs (needs gcc and linux-libc-dev)."""
import re, subprocess, sys
def table(src, defines):
    code = "".join(f"#define {d} 1\n" for d in defines) + src
    out = subprocess.run(["gcc", "-dM", "-E", "-x", "c", "-"], input=code, capture_output=True, text=True, check=True).stdout
    macros = {}
    for line in out.splitlines():
        m = re.match(r"#define (__NR3264_\w+|__NR_\w+) (.+)$", line)
        if m:
            macros[m.group(1)] = m.group(2).strip()
    def ev(v, depth=0):
        v = v.strip().strip("()")
        if re.fullmatch(r"\d+", v): return int(v)
        if v in macros and depth < 10: return ev(macros[v], depth + 1)
        m = re.fullmatch(r"(\w+)\s*\+\s*(\d+)", v)
        if m: return ev(m.group(1), depth+1) + int(m.group(2))
        return None
    t = {}
    for k, v in macros.items():
        if k.startswith("__NR_") and k not in ("__NR_syscalls", "__NR_arch_specific_syscall"):
            n = ev(v)
            if n is not None: t[k[5:]] = n
    return t
x86 = table('#include <asm/unistd_64.h>\n', [])
arm = table('#include <asm-generic/unistd.h>\n', ["__ARCH_WANT_RENAMEAT", "__ARCH_WANT_NEW_STAT", "__ARCH_WANT_SET_GET_RLIMIT", "__ARCH_WANT_TIME32_SYSCALLS", "__ARCH_WANT_SYS_CLONE3"])
def emit(arch, t):
    rows = sorted(t.items())
    return (f'#[cfg(target_arch = "{arch}")]\npub const TABLE: &[(&str, u32)] = &[\n'
            + "".join(f'    ("{k}", {v}),\n' for k, v in rows) + "];\n")
print("//! System call numbers by name, generated from the kernel headers of Debian 12")
print("//! (`asm/unistd_64.h`; `asm-generic/unistd.h` as arm64 configures it) by scripts/gen-syscalls.py.")
print()
print(emit("x86_64", x86))
print(emit("aarch64", arm), end="")
