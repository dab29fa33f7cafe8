#!/usr/bin/env bash
# Push and archive speed: nook against rootless `podman push` (own --root) and `skopeo copy`
# from an OCI layout, into a loopback docker-registry whose storage is emptied before every
# run (so every run uploads every blob: no HEAD finds one, no mount can succeed); then
# `nook save` against `podman save` (docker-archive), and `nook load` against `podman load`
# of the same archive (podman's) into an empty store each run. The images are the pull
# benchmark's: ~100 MB of host files in one layer and in 8 layers. Each tool has the image
# stored beforehand (nook and podman pulled it from a second loopback registry, so that
# nook's store knows no repository of the destination to mount from). Prints medians and
# ratios. Not a test: nothing here asserts a time.
#
#   scripts/bench/push.sh [RUNS]      (default 5; run as root it benchmarks as user nooktest)
#
# Stores and both registries live on tmpfs (/dev/shm) unless BENCH_DIR says otherwise, for
# the reason pull.sh gives.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init push docker-registry skopeo hyperfine python3 podman
REG_PIDS=()
cleanup() {
  local p
  for p in "${REG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  bench_podman_stop
  [ -n "${KEEP:-}" ] || rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT
USER_ENV=(env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK")

# shellcheck source=../lib/registry.sh
. scripts/lib/registry.sh
start_registry source
REG_PIDS+=("$REG_PID")
SRC=127.0.0.1:$PORT
start_registry dest
REG_PIDS+=("$REG_PID")
DEST=127.0.0.1:$PORT
# Emptied before each run; distribution keeps no blob cache unless configured to, so a
# HEAD after this always answers 404.
EMPTY_DEST="rm -rf $WORK/dest/docker"

echo "bench: building images from host files (gzip -6, as docker does)"
python3 scripts/lib/mkimage.py "$WORK/single" --files /usr/lib/x86_64-linux-gnu:/usr/lib:/usr/share --mb 100 --layers 1
python3 scripts/lib/mkimage.py "$WORK/eight" --files /usr/share:/usr/lib --mb 100 --layers 8
for img in single eight; do
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/$img:latest" "docker://$SRC/bench/$img:latest"
done
chown -R "$(stat -c %U "$WORK")" "$WORK" 2>/dev/null || true

run_as() { printf '%q ' "${AS[@]}" "${USER_ENV[@]}" "$@"; }
in_user() { eval "$(run_as "$@")"; }
N=("$NOOK" --root "$WORK/nook-store")
P=(podman --root "$WORK/podman-root" --runroot "$WORK/podman-run" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file)
PL=(podman --root "$WORK/podman-load-root" --runroot "$WORK/podman-load-run" --storage-driver overlay
  --cgroup-manager cgroupfs --events-backend file)
echo "bench: storing the images in nook's and podman's stores"
for img in single eight; do
  in_user "${N[@]}" pull -q "$SRC/bench/$img" >/dev/null
  in_user "${P[@]}" pull -q --tls-verify=false "$SRC/bench/$img" >/dev/null
done

results=()
bench() { # name op image cmd prepare
  local name=$1 op=$2 img=$3 cmd=$4 prep=$5
  hyperfine -N --style none --runs "$RUNS" --warmup 1 --prepare "$prep" \
    --export-json "$WORK/$name-$op-$img.json" "$cmd" >/dev/null
  results+=("$op $img $name $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][0]["median"])' "$WORK/$name-$op-$img.json")")
}

# The last run's upload is what the emptied registry holds: every blob of the image (the
# layers, the config, the manifest), and at least 90% of its compressed layer bytes
# (podman recompresses, so its digests and sizes differ).
check_pushed() { # name image
  local layers want got_n got_b
  layers=$(ls "$WORK/$2-layer"*.tar.gz | wc -l)
  want=$(cat "$WORK/$2-layer"*.tar.gz | wc -c)
  got_n=$(find "$WORK/dest/docker/registry/v2/blobs" -name data | wc -l)
  got_b=$(find "$WORK/dest/docker/registry/v2/blobs" -name data -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  if [ "$got_n" -lt $((layers + 2)) ] || [ "$got_b" -lt $((want * 9 / 10)) ]; then
    echo "bench: $1 did not upload $2 ($got_n blobs, $got_b bytes; want $((layers + 2)), ~$want)" >&2
    exit 1
  fi
}

for img in single eight; do
  REF=$SRC/bench/$img
  bench nook push "$img" "$(run_as "${N[@]}" push -q --tls-verify=false "$REF" "$DEST/push/nook-$img")" "$EMPTY_DEST"
  check_pushed nook "$img"
  bench podman push "$img" "$(run_as "${P[@]}" push -q --tls-verify=false "$REF" "$DEST/push/podman-$img")" "$EMPTY_DEST"
  check_pushed podman "$img"
  bench skopeo push "$img" "$(run_as skopeo copy -q --dest-tls-verify=false "oci:$WORK/$img:latest" "docker://$DEST/push/skopeo-$img:latest")" "$EMPTY_DEST"
  check_pushed skopeo "$img"

  bench nook save "$img" "$(run_as "${N[@]}" save -o "$WORK/nook-$img.tar" "$REF")" "rm -f $WORK/nook-$img.tar"
  bench podman save "$img" "$(run_as "${P[@]}" save -q -o "$WORK/podman-$img.tar" "$REF")" "rm -f $WORK/podman-$img.tar"

  ARCHIVE=$WORK/podman-$img.tar
  bench nook load "$img" "$(run_as "$NOOK" --root "$WORK/nook-load" load -q -i "$ARCHIVE")" \
    "$(run_as "$NOOK" --root "$WORK/nook-load" system reset -f)"
  bench podman load "$img" "$(run_as "${PL[@]}" load -q -i "$ARCHIVE")" \
    "$(run_as podman unshare rm -rf "$WORK/podman-load-root" "$WORK/podman-load-run")"
done

echo
echo "push to an emptied registry, save, and load into an empty store: median of $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "${results[@]}" <<'EOF'
import sys
r = {}
for line in sys.argv[1:]:
    op, img, name, t = line.split()
    r[(op, img, name)] = float(t)
def vs(n, t):
    return f"{t / n:.2f}x faster" if t >= n else f"{n / t:.2f}x slower"
print(f"{'op':5} {'image':7} {'nook':>8} {'podman':>8} {'skopeo':>8} {'nook vs podman':>15} {'nook/skopeo':>12}")
for op in ("push", "save", "load"):
    for img in ("single", "eight"):
        n, p, s = (r.get((op, img, t)) for t in ("nook", "podman", "skopeo"))
        cell = lambda t: f"{t:7.3f}s" if t is not None else f"{'':8}"
        ratio = f"{n / s:.2f}x" if s else ""
        print(f"{op:5} {img:7} {cell(n)} {cell(p)} {cell(s)} {vs(n, p):>15} {ratio:>12}")
print("targets: push >= 3x faster than podman and nook/skopeo <= 1.5x; load >= 2x faster than podman")
EOF
