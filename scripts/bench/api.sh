#!/usr/bin/env bash
# Engine API overhead: `docker run --rm --network none IMAGE true` (the real docker CLI) through
# `nook serve` against the same container started by `nook run` directly, and against Debian's
# rootful dockerd (docker.io) where it can be started here (as root, on a private socket and
# data root, without iptables or a bridge). Medians from one run; `docker version` through
# `nook serve` shows the CLI's own fixed cost (a Go binary starting, one or two round trips),
# and `nook -H` (nook's own client, the same create/attach/wait/start calls) the API's cost
# with a client that starts in a millisecond.
# Not a test: nothing here asserts a time.
#
#   scripts/bench/api.sh [RUNS]     (default 20; run as root it benchmarks nook as user nooktest)
#
# NOOK=path/to/nook uses that binary instead of the release build. DOCKER=path picks the CLI
# (default /usr/local/bin/docker, the 28.x CLI; Debian's docker.io brings a 20.10 one).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-20}
DOCKER=${DOCKER:-/usr/local/bin/docker}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init api docker-registry skopeo hyperfine python3
# The rootful peer needs root; as root, Debian's docker.io is installed when missing.
[ "$(id -u)" = 0 ] && bench_need dockerd
USER_ENV=(-i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK/run" NOOK_ROOT="$WORK/nook-store")
as_user() { "${AS[@]}" "${USER_ENV[@]}" "$@"; }
SERVE_PID=
DOCKERD_PID=
cleanup() {
  [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null
  if [ -n "$DOCKERD_PID" ]; then
    kill "$DOCKERD_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
    umount -R "$WORK/dockerd" 2>/dev/null || true
  fi
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  as_user "$NOOK" system reset -f >/dev/null 2>&1 || true
  rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

bench_busybox

SOCK=$WORK/run/nook-api.sock
# Not through as_user (a shell function): $! must be nook's own pid for the cleanup's kill.
"${AS[@]}" "${USER_ENV[@]}" "$NOOK" serve -H "unix://$SOCK" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || { echo "bench: nook serve did not start:"; cat "$WORK/serve.log"; exit 1; }

# hyperfine itself runs as the user, so no wrapper is timed with the commands.
CMDS=("$NOOK run --rm --network none $IMAGE true"
      "$DOCKER -H unix://$SOCK run --rm --network none $IMAGE true"
      "$DOCKER -H unix://$SOCK version"
      "$NOOK -H unix://$SOCK run --rm --network none $IMAGE true")
NAMES=(nook-run docker-to-nook-serve docker-version-to-serve nook-client-to-serve)
as_user hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$WORK/api.json" "${CMDS[@]}" >/dev/null

# The peer: rootful dockerd, when this machine has it and we are root.
ROOTFUL=$WORK/dockerd.json
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
  D=$WORK/dockerd
  mkdir -p "$D"
  dockerd --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/pid" -H "unix://$D/docker.sock" \
    --iptables=false --ip6tables=false --bridge=none >"$D/log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 100); do "$DOCKER" -H "unix://$D/docker.sock" version >/dev/null 2>&1 && break; sleep 0.2; done
  if "$DOCKER" -H "unix://$D/docker.sock" version >/dev/null 2>&1; then
    skopeo copy -q "oci:$WORK/busybox:latest" "docker-archive:$WORK/bb.tar:$IMAGE:latest"
    "$DOCKER" -H "unix://$D/docker.sock" load -q -i "$WORK/bb.tar" >/dev/null
    hyperfine -N --style none --warmup 3 --runs "$RUNS" --export-json "$ROOTFUL" \
      "$DOCKER -H unix://$D/docker.sock run --rm --network none $IMAGE true" >/dev/null
    DVER=$("$DOCKER" -H "unix://$D/docker.sock" version --format '{{.Server.Version}}')
  else
    echo "bench: dockerd did not start here (last lines of its log):"; tail -n 5 "$D/log"
  fi
else
  echo "bench: no rootful dockerd peer (needs root and Debian's docker.io)"
fi

echo "docker run --rm --network none IMAGE true, median of $RUNS runs ($(nproc) cores, $(date +%F))"
python3 - "$WORK/api.json" "$ROOTFUL" "${DVER:-}" "${NAMES[@]}" <<'EOF'
import json, os, sys
res = json.load(open(sys.argv[1]))["results"]
names = sys.argv[4:]
med = {n: r["median"] * 1000 for n, r in zip(names, res)}
if os.path.exists(sys.argv[2]):
    names.append("docker-to-dockerd")
    med["docker-to-dockerd"] = json.load(open(sys.argv[2]))["results"][0]["median"] * 1000
for n in names:
    print(f"{n:24} {med[n]:8.2f}ms")
api = med["docker-to-nook-serve"]
print(f"API path adds {api - med['nook-run']:+.2f}ms over nook run with the docker CLI "
      f"({api - med['nook-run'] - med['docker-version-to-serve']:+.2f}ms without the CLI's own start and ping), "
      f"{med['nook-client-to-serve'] - med['nook-run']:+.2f}ms with nook's own client")
if "docker-to-dockerd" in med:
    print(f"nook serve is {med['docker-to-dockerd'] / api:.2f}x faster than rootful dockerd {sys.argv[3]}")
EOF
