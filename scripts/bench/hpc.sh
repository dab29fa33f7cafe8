#!/usr/bin/env bash
# HPC figures from one run; medians and ratios, nothing here asserts a time.
#  (a) start storm: 64 `nook run --rm --network none IMAGE true` started at once, wall time
#      against 64 x one start's median, and against 64 rootless `podman --runtime runc run` at once;
#  (b) MPI allreduce latency, osu-style small messages (scripts/bench/allreduce.c, mpicc):
#      `mpirun -np 4` on the host against 4 ranks in 4 containers (the host's MPI bound in,
#      --network host --ipc host --userns keep-id), same transport settings: ob1 over self,tcp,
#      and over self,vader (shared memory; the containers add --pid host; single copy off for
#      both, as CMA is refused between the containers' user namespaces);
#  (c) `nook run FILE.sqsh` against the store: scripts/bench/squash.sh.
#
#   scripts/bench/hpc.sh [RUNS]     (default 5; run as root it benchmarks as user nooktest)
#   RANKS=2 scripts/bench/hpc.sh    (b) with 2 ranks: more ranks than cores measures the scheduler
#
# NOOK=path/to/nook uses that binary instead of the release build. Stores on tmpfs unless
# BENCH_DIR says otherwise (see pull.sh for why).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
RANKS=${RANKS:-4}
N=64
ORIG_NOOK=${NOOK:-}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init hpc docker-registry skopeo hyperfine python3 podman runc mpicc mpirun
USER_ENV=(-i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK/run" NOOK_ROOT="$WORK/nook-store")
as_user() { "${AS[@]}" "${USER_ENV[@]}" "$@"; }
P="podman --root $WORK/podman-root --runroot $WORK/podman-run --runtime $(command -v runc) --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  as_user "$NOOK" system reset -f >/dev/null 2>&1 || true
  as_user podman unshare rm -rf "$WORK/podman-root" "$WORK/podman-run" 2>/dev/null || true
  bench_podman_stop
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=../lib/registry.sh
. scripts/lib/registry.sh
start_registry
python3 scripts/lib/mkimage.py "$WORK/busybox" --busybox >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$WORK/busybox:latest" "docker://127.0.0.1:$PORT/bench/busybox:latest"
# The MPI program on an empty merged-/usr skeleton; the host's /usr is bound in at run time.
mkdir -p "$WORK/mpi/usr/bin" "$WORK/mpi/usr/lib" "$WORK/mpi/usr/lib64" "$WORK/mpi/etc" "$WORK/mpi/tmp"
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$WORK/mpi/$d"; done
mpicc -O2 -o "$WORK/mpi/allreduce" scripts/bench/allreduce.c
tar -C "$WORK/mpi" -cf "$WORK/mpi.tar" .
# storm.sh N CMD...: starts N copies of CMD at once, prints the wall time in ms and failures.
cat >"$WORK/storm.sh" <<'EOF'
#!/bin/sh
n=$1; shift
t0=$(date +%s%N)
seq "$n" | xargs -P "$n" -I{} sh -c '"$@" >/dev/null 2>&1 || echo x' sh "$@" >"$STORM_FAILS"
t1=$(date +%s%N)
echo "$(( (t1 - t0) / 1000000 )) $(wc -l <"$STORM_FAILS")"
EOF
chmod 755 "$WORK/storm.sh"
[ "$(id -u)" = 0 ] && chown -R nooktest: "$WORK"
as_user mkdir -p "$WORK/run"
IMAGE=127.0.0.1:$PORT/bench/busybox
as_user "$NOOK" pull -q "$IMAGE" >/dev/null
as_user "$NOOK" import "$WORK/mpi.tar" bench-mpi >/dev/null
as_user $P pull -q --tls-verify=false "$IMAGE" >/dev/null

# (a) one start's median, then RUNS storms of each tool.
as_user hyperfine -N --style none --warmup 3 --runs 20 --export-json "$WORK/single.json" \
  "$NOOK run --rm --network none $IMAGE true" >/dev/null
: >"$WORK/storms"
for r in $(seq 1 "$RUNS"); do
  echo "nook $(as_user STORM_FAILS="$WORK/fails" "$WORK/storm.sh" $N "$NOOK" run --rm --network none "$IMAGE" true)" >>"$WORK/storms"
  echo "podman $(as_user STORM_FAILS="$WORK/fails" "$WORK/storm.sh" $N $P run --rm --network none "$IMAGE" true)" >>"$WORK/storms"
done

# (b) host and containers alternate, so drift on a shared machine hits both alike.
MPI_ENV=(PMIX_MCA_gds=hash OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,tcp)
SHM_ENV=(PMIX_MCA_gds=hash OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none)
RANK=("$NOOK" run --rm --userns keep-id --network host --ipc host -e 'OMPI_*' -e 'PMIX_*' -e 'PMI_*'
      -v /usr:/usr:ro -v /etc/alternatives:/etc/alternatives:ro bench-mpi /allreduce)
SHM_RANK=("${RANK[@]:0:3}" --pid host "${RANK[@]:3}")
mpi() { # LABEL ENV... -- COMMAND...
  local label=$1 env=(); shift
  while [ "$1" != -- ]; do env+=("$1"); shift; done; shift
  as_user "${env[@]}" timeout 300 mpirun -np "$RANKS" --oversubscribe "$@" |
    grep -E '^[0-9]+ [0-9.]+$' | sed "s/^/$label /" >>"$WORK/mpi.txt"
}
: >"$WORK/mpi.txt"
for r in $(seq 1 "$RUNS"); do
  mpi host "${MPI_ENV[@]}" -- "$WORK/mpi/allreduce"
  mpi nook "${MPI_ENV[@]}" -- "${RANK[@]}"
  mpi host-shm "${SHM_ENV[@]}" -- "$WORK/mpi/allreduce"
  mpi nook-shm "${SHM_ENV[@]}" -- "${SHM_RANK[@]}"
done

echo "HPC figures, $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "$WORK/single.json" "$WORK/storms" "$WORK/mpi.txt" $N "$RANKS" <<'EOF'
import json, statistics as st, sys
single = json.load(open(sys.argv[1]))["results"][0]["median"] * 1000
n = int(sys.argv[4])
storms = {"nook": [], "podman": []}
fails = {"nook": 0, "podman": 0}
for line in open(sys.argv[2]):
    tool, ms, failed = line.split()
    storms[tool].append(float(ms))
    fails[tool] += int(failed)
nook, podman = st.median(storms["nook"]), st.median(storms["podman"])
print(f"(a) {n} starts at once: nook {nook:.0f} ms ({fails['nook']} failed), "
      f"{n} x one start {n * single:.0f} ms ({single:.2f} ms each): {n * single / nook:.2f}x; "
      f"podman {podman:.0f} ms ({fails['podman']} failed): nook {podman / nook:.1f}x faster")
lat = {}
for line in open(sys.argv[3]):
    where, size, us = line.split()
    lat.setdefault(int(size), {}).setdefault(where, []).append(float(us))
print(f"(b) allreduce, {sys.argv[5]} ranks, mean latency (median of runs)")
print(f"    {'':5} {'self,tcp':>29}   {'self,vader (nook: --pid host)':>29}")
print(f"    {'bytes':>5} {'host':>9} {'nook':>9} {'nook/host':>9}   "
      f"{'host':>9} {'nook':>9} {'nook/host':>9}")
for size in sorted(lat):
    row = f"    {size:5}"
    for h, c in (("host", "nook"), ("host-shm", "nook-shm")):
        h, c = st.median(lat[size][h]), st.median(lat[size][c])
        row += f" {h:7.2f}us {c:7.2f}us {c / h:9.3f}  "
    print(row.rstrip())
EOF
echo "(c) single-file images (scripts/bench/squash.sh $((RUNS * 4)))"
NOOK=$ORIG_NOOK scripts/bench/squash.sh $((RUNS * 4)) | sed 's/^/    /'
