#!/usr/bin/env bash
# Filesystem speed of a container's root: the same lower layers (host files, ~200 MB and 7,000+
# files, a 1 GiB file, a small C project) under the kernel overlay (`unshare -Urm`, userxattr),
# Debian's fuse-overlayfs (in `unshare -Urm`, as rootless podman runs it) and nook's FUSE
# overlay (`nook internal fuse-mount`, the server `nook run --rootfs-driver fuse` uses).
# The layers are an image's, pulled by nook into its store. Every run mounts afresh on an
# empty upper layer and times only the workload, inside the mount's namespace. Prints medians
# and ratios from one run. Not a test: nothing asserts a time.
#
#   scripts/bench/fs.sh [RUNS]      (default 5; run as root it benchmarks as user nooktest)
#
# Layers live on tmpfs (/dev/shm) unless BENCH_DIR says otherwise (see pull.sh for why).
# "cold" means a fresh mount (the overlay's caches are empty; the layers' own files are in memory).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init fs unshare fuse-overlayfs gcc tar python3 skopeo docker-registry
as_user() { "${AS[@]}" -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" "$@"; }
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

# The lower layers are an image's, as nook stores them: host files made into an image, pushed
# to a local registry and pulled. All three mounts use nook's unpacked layers.
as_user python3 scripts/lib/mklower.py "$WORK/layers"
as_user python3 scripts/lib/mkimage.py "$WORK/oci" --dirs "$WORK/layers/l1:$WORK/layers/l2" >/dev/null
rm -rf "$WORK/layers/l1" "$WORK/layers/l2"
# shellcheck source=../lib/registry.sh
. scripts/lib/registry.sh
start_registry
skopeo copy -q --dest-tls-verify=false "oci:$WORK/oci:latest" "docker://127.0.0.1:$PORT/bench/fs:latest"
rm -rf "$WORK/oci"
as_user mkdir -p "$WORK/run"
as_user XDG_RUNTIME_DIR="$WORK/run" NOOK_ROOT="$WORK/store" "$NOOK" pull -q "127.0.0.1:$PORT/bench/fs" >/dev/null
# Top layer first, as overlayfs takes them.
LOWERS=$(python3 -c '
import glob, json, os, sys
store = sys.argv[1]
for f in glob.glob(os.path.join(store, "images", "*.json")):
    if not f.endswith("tags.json"):
        layers = json.load(open(f))["layers"]
        print(":".join(os.path.join(store, "layers", l["diff_id"].split(":")[1], "root") for l in reversed(layers)))
' "$WORK/store")
[ -n "$LOWERS" ] || { echo "bench: the pulled image's layers were not found"; exit 1; }
M=$WORK/merged
as_user mkdir -p "$M"

# The workloads, run inside the mount's namespace as `bash runner WORKLOAD MOUNTPOINT`; each
# prints the seconds it took.
cat >"$WORK/runner" <<'EOF'
set -eu
w=$1 m=$2 d=$(dirname "$2")/layers
now() { echo "$EPOCHREALTIME"; }
case $w in
  find-warm) find "$m" >/dev/null ;;
esac
t0=$(now)
case $w in
  find-cold|find-warm) find "$m" >/dev/null ;;
  du) du -s "$m" >/dev/null ;;
  tar) tar cf - -C "$m" tree | wc -c >/dev/null ;;
  read-1g) cat "$m/big" >/dev/null ;;
  untar-20k) mkdir "$m/x" && tar xf "$d/small.tar" -C "$m/x" ;;
  append-2000) while read -r f; do echo x >>"$m/$f"; done <"$d/append.list" ;;
  rm-rf) rm -rf "${m:?}/$(cat "$d/rm.dir")" ;;
  cc) mkdir "$m/obj" && for f in "$m"/src/*.c; do gcc -pipe -O1 -c "$f" -o "$m/obj/$(basename "$f" .c).o"; done ;;
  mixed) find "$m" >/dev/null; tar cf - -C "$m" tree | wc -c >/dev/null
         head -n 500 "$d/append.list" | while read -r f; do echo x >>"$m/$f"; done ;;
esac
t1=$(now)
echo "$t0 $t1" | awk '{ printf "%.4f\n", $2 - $1 }'
EOF

mount_and_run() { # method workload
  local u=$WORK/upper w=$WORK/work
  rm -rf "$u" "$w"
  as_user mkdir -p "$u" "$w"
  case $1 in
    kernel)
      as_user unshare -Urm bash -c 'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3,userxattr" "$4" && bash "$5" "$6" "$4"' \
        _ "$LOWERS" "$u" "$w" "$M" "$WORK/runner" "$2" ;;
    fuse-overlayfs)
      as_user unshare -Urm bash -c 'fuse-overlayfs -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" && { bash "$5" "$6" "$4"; r=$?; umount "$4"; exit $r; }' \
        _ "$LOWERS" "$u" "$w" "$M" "$WORK/runner" "$2" ;;
    nook)
      as_user "$NOOK" internal fuse-mount --lower "$LOWERS" --upper "$u" --work "$w" "$M" -- bash "$WORK/runner" "$2" "$M" ;;
  esac
}

WORKLOADS=(find-cold find-warm du tar read-1g untar-20k append-2000 rm-rf cc mixed)
METHODS=(kernel fuse-overlayfs nook)
: >"$WORK/times"
for w in "${WORKLOADS[@]}"; do
  for ((i = 0; i < RUNS; i++)); do
    for m in "${METHODS[@]}"; do
      echo "$w $m $(mount_and_run "$m" "$w")" >>"$WORK/times"
    done
  done
done

python3 - "$WORK/times" "$RUNS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
t = {}
for w, m, s in rows:
    t.setdefault(w, {}).setdefault(m, []).append(float(s))
print(f"fs: medians of {sys.argv[2]} runs, seconds (fresh mount per run)")
print(f"{'workload':<12} {'kernel':>9} {'fuse-ovl':>9} {'nook':>9}   {'fuse-ovl/nook':>13} {'nook/kernel':>11}")
for w, by in t.items():
    k, f, n = (statistics.median(by[m]) for m in ("kernel", "fuse-overlayfs", "nook"))
    print(f"{w:<12} {k:9.3f} {f:9.3f} {n:9.3f}   {f / n:12.2f}x {n / k:10.2f}x")
EOF
