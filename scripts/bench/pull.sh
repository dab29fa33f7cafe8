#!/usr/bin/env bash
# Pull speed: nook against rootless `podman pull` (own --root) and `skopeo copy` to oci:, from
# a loopback docker-registry into an empty store each run. Two images: ~100 MB in one layer,
# and ~100 MB in 8 layers, made of the host's own files (realistic compression ratios).
# The floor is single-core inflate: `gzip -dc` of every layer, one after the other.
# Prints medians and ratios. Not a test: nothing here asserts a time.
#
#   scripts/bench/pull.sh [RUNS]      (default 5; run as root it benchmarks as user nooktest)
#
# Stores live on tmpfs (/dev/shm) unless BENCH_DIR says otherwise: on this project's VMs
# (ext4 mounted with discard) creating files right after a large delete is 5-10x slower and
# gets slower run after run, which would measure the disk, not the tools.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init pull docker-registry skopeo hyperfine python3 gzip podman
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  bench_podman_stop
  [ -n "${KEEP:-}" ] || rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
USER_ENV=(env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK")

# shellcheck source=../lib/registry.sh
. scripts/lib/registry.sh
start_registry

echo "bench: building images from host files (gzip -6, as docker does)"
python3 scripts/lib/mkimage.py "$WORK/single" --files /usr/lib/x86_64-linux-gnu:/usr/lib:/usr/share --mb 100 --layers 1
python3 scripts/lib/mkimage.py "$WORK/eight" --files /usr/share:/usr/lib --mb 100 --layers 8
for img in single eight; do
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/$img:latest" "docker://127.0.0.1:$PORT/bench/$img:latest"
done
chown -R "$(stat -c %U "$WORK")" "$WORK" 2>/dev/null || true

HAVE_PODMAN=$(command -v podman || true)
results=()
bench() { # name image cmd prepare
  local name=$1 img=$2 cmd=$3 prep=$4
  hyperfine -N --style none --runs "$RUNS" --warmup 1 --prepare "$prep" --export-json "$WORK/$name-$img.json" "$cmd" >/dev/null
  results+=("$name $img $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$WORK/$name-$img.json")")
}
run_as() { printf '%q ' "${AS[@]}" "${USER_ENV[@]}" "$@"; }

for img in single eight; do
  REF=127.0.0.1:$PORT/bench/$img
  bench nook "$img" "$(run_as "$NOOK" --root "$WORK/nook-store" pull -q "$REF")" \
    "$(run_as "$NOOK" --root "$WORK/nook-store" system reset -f)"
  if [ -n "$HAVE_PODMAN" ]; then
    P="$(run_as podman --root "$WORK/podman-root" --runroot "$WORK/podman-run" --storage-driver overlay --cgroup-manager cgroupfs --events-backend file)"
    bench podman "$img" "$P pull -q --tls-verify=false $REF" "$(run_as podman unshare rm -rf "$WORK/podman-root" "$WORK/podman-run")"
  fi
  [ -n "${ONLY_NOOK:-}" ] && continue
  bench skopeo "$img" "$(run_as skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$WORK/skopeo-$img:latest")" \
    "rm -rf $WORK/skopeo-$img"
  bench gunzip "$img" "bash -c 'for f in $WORK/$img-layer*.tar.gz; do gzip -dc \$f >/dev/null; done'" "true"
done

echo
echo "pull into an empty store, median of $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "${results[@]}" <<'EOF'
import sys
r = {}
for line in sys.argv[1:]:
    name, img, t = line.split()
    r[(name, img)] = float(t)
print(f"{'image':8} {'tool':8} {'median':>9} {'nook is':>12}")
for img in ("single", "eight"):
    n = r[("nook", img)]
    for tool in ("nook", "podman", "skopeo", "gunzip"):
        if (tool, img) not in r:
            continue
        t = r[(tool, img)]
        rel = "" if tool == "nook" else (f"{t / n:.2f}x faster" if tool != "gunzip" else f"{n / t:.2f}x floor")
        print(f"{img:8} {tool:8} {t:8.3f}s {rel:>12}")
EOF
