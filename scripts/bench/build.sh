#!/usr/bin/env bash
# Build speed: `nook build` against rootless `podman build` (buildah) on the same Dockerfile,
# context and base image (a busybox image pushed to a loopback docker-registry and pulled into
# both stores), both run as the test user with their stores on a tmpfs mounted for the run.
# Prints medians of RUNS runs and the ratios. Not a test: nothing here asserts a time.
#
#   scripts/bench/build.sh [RUNS]     (default 5; run as root it benchmarks as user nooktest)
#
# (a) cold: a two-stage build from an empty cache: stage 1 ADDs a source tree tarball of
#     ~20,000 small files and a RUN writes ~20,000 more; stage 2 COPY --from both trees and
#     a context file last.
# (b) cached: the same build again, every step from the cache (issue 12's target: < 150 ms).
# (c) one changed file: the context file the last COPY reads changes before every run; the
#     steps each tool reran are printed (only the last COPY should).
#
# NOOK=path/to/nook uses that binary instead of the release build. KEEP=1 keeps the work dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init build docker-registry skopeo hyperfine python3 podman
STORES=$WORK/stores
MOUNTED=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  if [ -n "$MOUNTED" ]; then umount "$STORES" 2>/dev/null || true; fi
  [ -n "${KEEP:-}" ] || rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
mkdir -p "$STORES"
if [ "$(id -u)" = 0 ]; then
  # A tmpfs of its own: /dev/shm is shared and its size is whatever the host left.
  mount -t tmpfs -o size=8g,mode=0755 tmpfs "$STORES" && MOUNTED=1
  chown nooktest: "$STORES"
fi
USER_ENV=(-i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$STORES" XDG_RUNTIME_DIR="$STORES" NOOK_ROOT="$STORES/nook")
as_user() { "${AS[@]}" "${USER_ENV[@]}" "$@"; }
run_as() { printf '%q ' "${AS[@]}" "${USER_ENV[@]}" "$@"; }
PODMAN=(podman --root "$STORES/podman-root" --runroot "$STORES/podman-run" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file)

# shellcheck source=../lib/registry.sh
. scripts/lib/registry.sh
start_registry
python3 scripts/lib/mkimage.py "$WORK/bb" --busybox >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$WORK/bb:latest" "docker://127.0.0.1:$PORT/bench/busybox:latest"
BASE=127.0.0.1:$PORT/bench/busybox:latest

echo "bench: a context with a source tree of 20,000 files (tar.gz)"
CTX=$WORK/ctx
mkdir -p "$CTX"
python3 - "$CTX/src.tar.gz" <<'EOF'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w:gz", compresslevel=6) as t:
    for d in range(100):
        for f in range(200):
            body = (f"/* module {d}.{f} */\nint f_{d}_{f}(int x) {{ return x * {f} + {d}; }}\n").encode()
            ti = tarfile.TarInfo(f"src/mod{d:03}/file{f:03}.c")
            ti.size, ti.mode, ti.mtime = len(body), 0o644, 1_700_000_000
            t.addfile(ti, io.BytesIO(body))
EOF
echo "v0" >"$CTX/app.txt"
cat >"$CTX/Dockerfile" <<EOF
FROM $BASE AS build
ADD src.tar.gz /
RUN i=0; while [ \$i -lt 100 ]; do busybox mkdir -p /out/d\$i; j=0; while [ \$j -lt 200 ]; do echo "\$i.\$j" > /out/d\$i/f\$j; j=\$((j+1)); done; i=\$((i+1)); done
FROM $BASE
COPY --from=build /src /src
COPY --from=build /out /out
COPY app.txt /app.txt
CMD ["cat", "/app.txt"]
EOF
chown -R "$(stat -c %U "$WORK")" "$CTX" 2>/dev/null || true

NOOK_BUILD=$(run_as "$NOOK" build -t bench:1 "$CTX")
NOOK_RESET="$(run_as "$NOOK" system reset -f) >/dev/null && $(run_as "$NOOK" pull -q "$BASE") >/dev/null"
P_BUILD=$(run_as "${PODMAN[@]}" build --layers --tls-verify=false -t bench:1 "$CTX")
P_RESET="$(run_as podman unshare rm -rf "$STORES/podman-root" "$STORES/podman-run") && $(run_as "${PODMAN[@]}" pull -q --tls-verify=false "$BASE") >/dev/null"
HAVE_PODMAN=$(command -v podman || true)

results=()
bench() { # tool scenario cmd prepare warmup
  local tool=$1 what=$2 cmd=$3 prep=$4 warm=$5
  hyperfine -N --style none --runs "$RUNS" --warmup "$warm" --prepare "bash -c '$prep'" \
    --export-json "$WORK/$tool-$what.json" "bash -c '$cmd >/dev/null 2>&1'" >/dev/null
  results+=("$tool $what $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$WORK/$tool-$what.json")")
}
change() { echo "date +%N > $CTX/app.txt"; }

# Steps a tool reran: nook prints docker's `Step N/M : ...` and ` ---> Using cache`, podman
# `[STAGE/STAGES] STEP N/M: ...` and `--> Using cache`.
reran() {
  python3 -c '
import re, sys
steps, cur = [], None
for l in sys.stdin:
    m = re.match(r"^(?:\[\d+/\d+\] )?(Step|STEP) (\d+/\d+) ?: (.*)", l)
    if m:
        cur = [m.group(2) + " " + m.group(3).strip(), False]
        steps.append(cur)
    elif "Using cache" in l and cur:
        cur[1] = True
print("; ".join(s for s, hit in steps if not hit and " FROM " not in " " + s) or "none")'
}

for tool in nook podman; do
  if [ "$tool" = podman ] && [ -z "$HAVE_PODMAN" ]; then continue; fi
  if [ "$tool" = nook ]; then B=$NOOK_BUILD R=$NOOK_RESET; else B=$P_BUILD R=$P_RESET; fi
  # One build outside the timing, so that a tool that cannot build here says why.
  if ! { bash -c "$R" && bash -c "$B"; } >"$WORK/$tool-check.log" 2>&1; then
    echo "bench: $tool cannot build here:"; tail -20 "$WORK/$tool-check.log"; exit 1
  fi
  echo "bench: $tool (a) cold"
  bench "$tool" cold "$B" "$R" 0
  echo "bench: $tool (b) cached"
  bench "$tool" cached "$B" "true" 1
  echo "bench: $tool (c) one changed file"
  bench "$tool" change "$B" "$(change)" 1
  bash -c "$(change)"
  echo "$tool (c) reran: $(bash -c "$B" 2>&1 | reran)" >>"$WORK/reran.txt"
done

echo
echo "nook build vs podman build, median of $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "${results[@]}" <<'EOF'
import sys
r = {}
for line in sys.argv[1:]:
    tool, what, t = line.split()
    r[(tool, what)] = float(t)
names = {"cold": "(a) cold multi-stage", "cached": "(b) all cached", "change": "(c) one file changed"}
print(f"{'scenario':24} {'nook':>9} {'podman':>9} {'nook is':>14}")
for what, name in names.items():
    n = r.get(("nook", what))
    p = r.get(("podman", what))
    ratio = f"{p / n:.2f}x faster" if n and p else ""
    ps = f"{p:8.3f}s" if p else f"{'-':>9}"
    print(f"{name:24} {n:8.3f}s {ps} {ratio:>14}")
EOF
cat "$WORK/reran.txt"
