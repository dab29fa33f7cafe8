#!/usr/bin/env bash
# Start speed from a single-file image: `nook run --rm --network none FILE.sqsh true` (the
# squashfs mounted by squashfuse under the container's overlay) against the same image run
# from the store, and the same squashfs wrapped as a SIF. Medians from one run; nothing here
# asserts a time.
#
#   scripts/bench/squash.sh [RUNS]     (default 30; run as root it benchmarks as user nooktest)
#
# NOOK=path/to/nook uses that binary instead of the release build. Stores on tmpfs unless
# BENCH_DIR says otherwise (see pull.sh for why).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-30}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init squash docker-registry skopeo hyperfine python3 squashfuse mksquashfs
USER_ENV=(-i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK/run" NOOK_ROOT="$WORK/nook-store")
as_user() { "${AS[@]}" "${USER_ENV[@]}" "$@"; }
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  as_user "$NOOK" system reset -f >/dev/null 2>&1 || true
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

bench_busybox
as_user "$NOOK" save --format squashfs -o "$WORK/busybox.sqsh" "$IMAGE"
# A SIF by hand: header, one primary system partition descriptor, the squashfs at 32 KiB.
as_user python3 - "$WORK/busybox.sqsh" "$WORK/busybox.sif" <<'EOF'
import struct, sys
sq = open(sys.argv[1], "rb").read()
head = b"#!/usr/bin/env run-singularity\n".ljust(32, b"\0") + b"SIF_MAGIC\0" + b"01\0" + b"02\0" + bytes(16)
head += struct.pack("<8q", 0, 0, 47, 48, 128, 585, 32768, len(sq))
extra = struct.pack("<ii3s", 1, 2, b"02").ljust(384, b"\0")
desc = struct.pack("<i?III7q", 0x4004, True, 1, 0, 0, 32768, len(sq), len(sq), 0, 0, 0, 0) + bytes(128) + extra
open(sys.argv[2], "wb").write((head + desc).ljust(32768, b"\0") + sq)
EOF

CMDS=("$NOOK run --rm --network none $IMAGE true"
      "$NOOK run --rm --network none $WORK/busybox.sqsh true"
      "$NOOK run --rm --network none $WORK/busybox.sif true")
as_user hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$WORK/squash.json" "${CMDS[@]}" >/dev/null

echo "start a container and run true, median of $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "$WORK/squash.json" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
names = ["store", "squashfs", "sif"]
med = {n: r["median"] * 1000 for n, r in zip(names, res)}
for n in names:
    print(f"{n:9} {med[n]:7.2f}ms  {med[n] - med['store']:+7.2f}ms vs the store")
EOF
