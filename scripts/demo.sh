#!/usr/bin/env bash
# nook's main job, offline: a loopback registry, a small image built from the host's busybox,
# pulled by nook as an ordinary user. Run as root, it acts as the test user nooktest.
set -euo pipefail
cd "$(dirname "$0")/.."
NOOK=${NOOK:-$PWD/target/release/nook}
[ -x "$NOOK" ] || cargo build --release --locked

WORK=$(mktemp -d /tmp/nook-demo.XXXXXX)
chmod 755 "$WORK"
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  # Files owned by the subordinate range go through nook itself.
  [ -d "$WORK/store" ] && nook system reset -f >/dev/null 2>&1
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

# shellcheck source=lib/registry.sh
. scripts/lib/registry.sh
start_registry
python3 scripts/lib/mkimage.py "$WORK/busybox" --busybox >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$WORK/busybox:latest" "docker://127.0.0.1:$PORT/demo/busybox:latest"

AS=()
if [ "$(id -u)" = 0 ]; then
  id nooktest >/dev/null 2>&1 || { echo "demo: run scripts/setup.sh first (it creates the user nooktest)"; exit 1; }
  chown nooktest: "$WORK"
  cp "$NOOK" "$WORK/nook" && chmod 755 "$WORK/nook" && NOOK=$WORK/nook
  AS=(runuser -u nooktest --)
fi
nook() { "${AS[@]}" env -i PATH=/usr/bin:/bin HOME="$WORK" NOOK_ROOT="$WORK/store" "$NOOK" "$@"; }

step() { echo; echo "\$ nook $*"; nook "$@"; }

IMAGE=127.0.0.1:$PORT/demo/busybox
step pull "$IMAGE"
step images
echo; echo "\$ nook inspect $IMAGE   (first lines)"
nook inspect "$IMAGE" | head -n 8
step run --rm "$IMAGE" sh -c 'echo "hello from $(hostname), as $(id -un) (uid $(id -u))"; cat /proc/self/uid_map'
