#!/usr/bin/env bash
# Start speed: `nook run --rm --network none IMAGE true` with the image stored, against
# rootless `podman run --rm --network none` and `bwrap` on the same unpacked rootfs.
# Prints medians and ratios from one run. Not a test: nothing here asserts a time.
#
#   scripts/bench/start.sh [RUNS]     (default 50; run as root it benchmarks as user nooktest)
#   scripts/bench/start.sh RUNS seccomp
#                                     only nook with docker's default seccomp profile against
#                                     nook with --security-opt seccomp=unconfined, in alternating
#                                     rounds (drift on a shared machine hits both alike); prints
#                                     both medians and the profile's cost
#
# NOOK=path/to/nook uses that binary instead of the release build.
#
# Stores live on tmpfs (/dev/shm) unless BENCH_DIR says otherwise (see pull.sh for why).
# `baseline` is hyperfine starting /bin/true; the last column subtracts it.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-50}
WHAT=${2:-all}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init start docker-registry skopeo hyperfine python3 bwrap podman runc
USER_ENV=(-i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK/run" NOOK_ROOT="$WORK/nook-store")
as_user() { "${AS[@]}" "${USER_ENV[@]}" "$@"; }
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  as_user "$NOOK" system reset -f >/dev/null 2>&1 || true
  command -v podman >/dev/null && as_user podman unshare rm -rf "$WORK/podman-root" "$WORK/podman-run" 2>/dev/null
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

bench_busybox

# bwrap gets the same layer, unpacked by nook, plus the mount points it needs.
ROOTFS=$WORK/rootfs
as_user mkdir -p "$ROOTFS"
as_user cp -a "$(ls -d "$WORK"/nook-store/layers/*/root | head -n 1)/." "$ROOTFS/"
as_user mkdir -p "$ROOTFS/proc" "$ROOTFS/dev" "$ROOTFS/sys"

if [ "$WHAT" = seccomp ]; then
  ON="$NOOK run --rm --network none $IMAGE true"
  OFF="$NOOK run --rm --network none --security-opt seccomp=unconfined $IMAGE true"
  ROUNDS=5
  for r in $(seq 1 $ROUNDS); do
    if [ $((r % 2)) = 1 ]; then PAIR=("$ON" "$OFF"); else PAIR=("$OFF" "$ON"); fi
    as_user hyperfine -N --style none --warmup 3 --runs $(( (RUNS + ROUNDS - 1) / ROUNDS )) \
      --export-json "$WORK/seccomp-$r.json" "${PAIR[@]}" >/dev/null
  done
  echo "nook run --rm --network none IMAGE true, $ROUNDS alternating rounds, $RUNS runs each ($(nproc) cores, $(date +%F))"
  python3 - "$ON" "$WORK"/seccomp-*.json <<'EOF'
import json, statistics, sys
on, times = sys.argv[1], {"default": [], "unconfined": []}
for f in sys.argv[2:]:
    for r in json.load(open(f))["results"]:
        times["default" if r["command"] == on else "unconfined"] += r["times"]
med = {k: statistics.median(v) * 1000 for k, v in times.items()}
for k in ("default", "unconfined"):
    print(f"seccomp={k:11} median {med[k]:7.2f}ms  ({len(times[k])} runs)")
print(f"the default profile costs {med['default'] - med['unconfined']:+.2f}ms per start")
EOF
  exit 0
fi

# hyperfine itself runs as the user, so no wrapper is timed with the commands.
CMDS=(/bin/true "$NOOK run --rm --network none $IMAGE true"
      "bwrap --unshare-all --die-with-parent --ro-bind $ROOTFS / --proc /proc --dev /dev /bin/true")
NAMES=(baseline nook bwrap)
if command -v podman >/dev/null; then
  # crun refuses this VM's hybrid cgroup hierarchy; runc (installed by setup.sh) runs rootless.
  RUNTIME=(--runtime "$(command -v runc || echo crun)")
  P="podman --root $WORK/podman-root --runroot $WORK/podman-run ${RUNTIME[*]} --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
  as_user $P pull -q --tls-verify=false "$IMAGE" >/dev/null
  CMDS+=("$P run --rm --network none $IMAGE true")
  NAMES+=(podman)
fi
as_user hyperfine -N --style none --warmup 5 --runs "$RUNS" --export-json "$WORK/start.json" "${CMDS[@]}" >/dev/null

# nook for a user without /etc/subuid (single mapping: no newuidmap/newgidmap to run).
if [ "$(id -u)" = 0 ] && id nooksingle >/dev/null 2>&1; then
  SINGLE=(setpriv --reuid=nooksingle --regid=nooksingle --init-groups env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin
          HOME="$WORK/single" XDG_RUNTIME_DIR="$WORK/single/run" NOOK_ROOT="$WORK/single/store")
  mkdir -p "$WORK/single/run" && chown -R nooksingle: "$WORK/single"
  "${SINGLE[@]}" "$NOOK" pull -q "$IMAGE" >/dev/null
  "${SINGLE[@]}" hyperfine -N --style none --warmup 5 --runs "$RUNS" --export-json "$WORK/single/start.json" \
    "$NOOK run --rm --network none $IMAGE true" >/dev/null
  "${SINGLE[@]}" "$NOOK" system reset -f >/dev/null
fi

echo "start a container and run true, median of $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "$WORK/start.json" "$WORK/single/start.json" "${NAMES[@]}" <<'EOF'
import json, os, sys
res = json.load(open(sys.argv[1]))["results"]
names = sys.argv[3:]
med = {n: r["median"] * 1000 for n, r in zip(names, res)}
if os.path.exists(sys.argv[2]):
    med["nook-single"] = json.load(open(sys.argv[2]))["results"][0]["median"] * 1000
    names.insert(2, "nook-single")
base = med["baseline"]
print(f"{'tool':12} {'median':>9} {'minus baseline':>15} {'nook is':>16}")
for n in names:
    rel = ""
    if n in ("bwrap", "podman"):
        f = med[n] / med["nook"]
        rel = f"{f:.2f}x faster" if f >= 1 else f"{1 / f:.2f}x slower"
    print(f"{n:12} {med[n]:7.2f}ms {med[n] - base:13.2f}ms {rel:>16}")
print("nook: subordinate range (newuidmap/newgidmap each run); nook-single: a user without one")
EOF
