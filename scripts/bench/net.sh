#!/usr/bin/env bash
# Network speed: iperf3 container→host and host→container through a published port, nook with
# pasta and with slirp4netns, against the same tool started by hand (unshare + the helper with
# the options nook gives it) and against rootless podman; MTU 65520 and 1500. Then the start
# time of `nook run --rm --network slirp4netns|pasta IMAGE true` against `--network none`.
# Prints medians and ratios from one run. Not a test: nothing here asserts a speed.
#
#   scripts/bench/net.sh [RUNS] [SECONDS]   (default 3 runs of 3 s; as root it runs as nooktest)
#
# All traffic stays on the host's loopback: container→host goes to an iperf3 server on
# 127.0.0.1, reached through the driver's host-loopback mapping (slirp4netns's 10.0.2.2 with
# allow_host_loopback=true, pasta's gateway address without --no-map-gw).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-3}
SECS=${2:-3}
# shellcheck source=../lib/bench.sh
. scripts/lib/bench.sh
bench_init net docker-registry skopeo hyperfine python3 iperf3 pasta slirp4netns podman runc
# A short runtime directory: podman puts slirp4netns's API socket there, and slirp4netns
# refuses a socket path of 108 bytes or more.
RUN=$(mktemp -d /tmp/nbr.XXXXXX)
USER_ENV=(-i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$RUN" NOOK_ROOT="$WORK/nook-store")
as_user() { "${AS[@]}" "${USER_ENV[@]}" "$@"; }
P=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null
  pkill -P $$ 2>/dev/null || true
  [ -s "$WORK/podman.log" ] && { echo "podman said:"; tail -n 5 "$WORK/podman.log"; }
  as_user "$NOOK" system reset -f >/dev/null 2>&1 || true
  [ -n "$P" ] && as_user podman unshare rm -rf "$WORK/podman-root" "$WORK/podman-run" 2>/dev/null
  rm -rf "$WORK" "$RUN" 2>/dev/null || true
}
trap cleanup EXIT

# An image with busybox and iperf3 (and the libraries it links).
STAGE=$WORK/stage
mkdir -p "$STAGE/bin" "$STAGE/tmp" "$STAGE/etc"
cp /usr/bin/busybox "$STAGE/bin/busybox"
for a in sh sleep true cat ip; do ln -s busybox "$STAGE/bin/$a"; done
IPERF=$(command -v iperf3)
for f in "$IPERF" $(ldd "$IPERF" | grep -o '/[^ ]*'); do
  mkdir -p "$STAGE$(dirname "$f")" && cp -L "$f" "$STAGE$f"
done
ln -s "$IPERF" "$STAGE/bin/iperf3"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$STAGE/etc/passwd"
. scripts/lib/registry.sh
start_registry
python3 scripts/lib/mkimage.py "$WORK/iperf" --dirs "$STAGE" >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$WORK/iperf:latest" "docker://127.0.0.1:$PORT/bench/iperf:latest"
[ "$(id -u)" = 0 ] && chown -R nooktest: "$WORK" "$RUN"
IMAGE=127.0.0.1:$PORT/bench/iperf
as_user "$NOOK" pull -q "$IMAGE" >/dev/null
if command -v podman >/dev/null; then
  P="podman --root $WORK/podman-root --runroot $WORK/podman-run --runtime $(command -v runc || echo crun) --storage-driver overlay --cgroup-manager cgroupfs --events-backend file"
  as_user $P pull -q --tls-verify=false "$IMAGE" >/dev/null
fi
GW=$(ip -4 route show default | awk '{print $3; exit}')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
gbits() { python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'; }
RES=$WORK/results
: > "$RES"
record() { echo "$1 $2" >> "$RES"; }

# container→host: an iperf3 server on the host's loopback; the client runs in the container.
# $1 = label, $2 = the address of the host's loopback inside, then the command that runs a
# program in the container (the client's arguments follow).
to_host() {
  local label=$1 addr=$2; shift 2
  local port; port=$(free_port)
  for _ in $(seq "$RUNS"); do
    "${AS[@]}" "${USER_ENV[@]}" iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    local srv=$!
    sleep 0.3
    record "$label" "$("$@" iperf3 -J -c "$addr" -p "$port" -t "$SECS" | gbits)"
    wait "$srv" 2>/dev/null || true
  done
}

# host→container: the server in the container behind a published port; $2 = a command that
# starts `iperf3 -s -1` in the container in the background with host port $PUB published.
from_host() {
  local label=$1; shift
  for _ in $(seq "$RUNS"); do
    PUB=$(free_port)
    export PUB
    "$@" &
    local ctr=$!
    local out=
    for _ in $(seq 50); do
      sleep 0.2
      out=$(as_user iperf3 -J -c 127.0.0.1 -p "$PUB" -t "$SECS" 2>/dev/null) && break
    done
    record "$label" "$(echo "$out" | gbits 2>/dev/null)"
    wait "$ctr" 2>/dev/null || true
  done
}

# The helpers by hand: a namespace from unshare, the helper with nook's options, iperf3 via
# nsenter. $1 = pasta|slirp4netns, $2 = MTU; sets HAND_PID (the namespace's process).
# (Helpers start through "${AS[@]}" directly: a shell function put in the background runs in
# a subshell, and $! would name the subshell.)
hand_up() {
  local tool=$1 mtu=$2 pub=${3:-}
  "${AS[@]}" "${USER_ENV[@]}" unshare -Urn sleep 600 &
  HAND_PID=$!
  sleep 0.2
  local inner; inner=$(pgrep -P "$HAND_PID" sleep || echo "$HAND_PID")
  HAND_NS=$inner
  if [ "$tool" = slirp4netns ]; then
    rm -f "$WORK/hand.sock"
    "${AS[@]}" "${USER_ENV[@]}" slirp4netns --configure --mtu "$mtu" --enable-sandbox --enable-seccomp -a "$WORK/hand.sock" "$inner" tap0 >/dev/null 2>&1 &
    HAND_HELPER=$!
    sleep 0.5
    if [ -n "$pub" ]; then
      printf '{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%s,"guest_port":5201}}' "$pub" |
        as_user python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); s.shutdown(1); s.recv(999)' "$WORK/hand.sock"
    fi
  else
    local ports=(-t none)
    [ -n "$pub" ] && ports=(-t "127.0.0.1/$pub:5201")
    "${AS[@]}" "${USER_ENV[@]}" pasta -f -q --config-net -m "$mtu" "${ports[@]}" -u none -T none -U none "$inner" >/dev/null 2>&1 &
    HAND_HELPER=$!
    sleep 0.5
  fi
}
hand_down() { kill "$HAND_HELPER" "$HAND_PID" 2>/dev/null; wait "$HAND_HELPER" "$HAND_PID" 2>/dev/null || true; }
hand_exec() { as_user nsenter -t "$HAND_NS" -U -n --preserve-credentials "$@"; }

for MTU in 65520 1500; do
  SLIRP_OPTS="slirp4netns:mtu=$MTU,allow_host_loopback=true"
  PASTA_OPTS="pasta:-m,$MTU,--map-gw"
  # nook
  to_host "nook-slirp4netns $MTU c2h" 10.0.2.2 as_user "$NOOK" run --rm --network "$SLIRP_OPTS" "$IMAGE"
  to_host "nook-pasta $MTU c2h" "$GW" as_user "$NOOK" run --rm --network "$PASTA_OPTS" "$IMAGE"
  from_host "nook-slirp4netns $MTU h2c" sh -c "exec ${AS[*]} ${USER_ENV[*]} $NOOK run --rm --network slirp4netns:mtu=$MTU -p 127.0.0.1:\$PUB:5201 $IMAGE iperf3 -s -1 >/dev/null"
  from_host "nook-pasta $MTU h2c" sh -c "exec ${AS[*]} ${USER_ENV[*]} $NOOK run --rm --network pasta:-m,$MTU -p 127.0.0.1:\$PUB:5201 $IMAGE iperf3 -s -1 >/dev/null"
  # by hand
  for tool in slirp4netns pasta; do
    addr=10.0.2.2; [ "$tool" = pasta ] && addr=$GW
    for _ in $(seq "$RUNS"); do
      hand_up "$tool" "$MTU"
      port=$(free_port)
      "${AS[@]}" "${USER_ENV[@]}" iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
      srv=$!
      sleep 0.3
      record "hand-$tool $MTU c2h" "$(hand_exec iperf3 -J -c "$addr" -p "$port" -t "$SECS" | gbits)"
      wait "$srv" 2>/dev/null || true
      hand_down
      pub=$(free_port)
      hand_up "$tool" "$MTU" "$pub"
      "${AS[@]}" "${USER_ENV[@]}" nsenter -t "$HAND_NS" -U -n --preserve-credentials iperf3 -s -1 >/dev/null 2>&1 &
      sleep 0.3
      record "hand-$tool $MTU h2c" "$(as_user iperf3 -J -c 127.0.0.1 -p "$pub" -t "$SECS" | gbits)"
      hand_down
    done
  done
  # podman (slirp4netns with its own port handler, as nook uses it)
  if [ -n "$P" ]; then
    to_host "podman-slirp4netns $MTU c2h" 10.0.2.2 as_user $P run --rm --network "$SLIRP_OPTS" "$IMAGE"
    from_host "podman-slirp4netns $MTU h2c" sh -c "exec ${AS[*]} ${USER_ENV[*]} $P run --rm --network slirp4netns:mtu=$MTU,port_handler=slirp4netns -p 127.0.0.1:\$PUB:5201 $IMAGE iperf3 -s -1 >/dev/null 2>>$WORK/podman.log"
  fi
done
# The host's own loopback, for scale.
port=$(free_port)
for _ in $(seq "$RUNS"); do
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  srv=$!
  sleep 0.3
  record "host-loopback - -" "$(iperf3 -J -c 127.0.0.1 -p "$port" -t "$SECS" | gbits)"
  wait "$srv" || true
done

# Start time: the network's share of `nook run`.
as_user hyperfine -N --style none --warmup 3 --runs 20 --export-json "$WORK/start.json" \
  "$NOOK run --rm --network none $IMAGE true" \
  "$NOOK run --rm --network slirp4netns $IMAGE true" \
  "$NOOK run --rm --network pasta $IMAGE true" >/dev/null

echo "iperf3 through nook's network helpers, Gbit/s, median of $RUNS x ${SECS}s ($(nproc) cores, $(date +%F))"
python3 - "$RES" "$WORK/start.json" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    words = line.split()
    try:
        value = float(words[-1])
    except (ValueError, IndexError):
        continue  # a run that produced no figure
    rows.setdefault(" ".join(words[:-1]), []).append(value)
med = {k: statistics.median(v) for k, v in rows.items()}
print("c2h: container→host (client inside, server on the host's loopback); h2c: host→container through -p")
print(f"{'':22} {'nook':>8} {'by hand':>8} {'podman':>8} {'nook/hand':>10} {'nook/podman':>12}")
for mtu in ("65520", "1500"):
    for tool in ("slirp4netns", "pasta"):
        for d in ("c2h", "h2c"):
            n = med.get(f"nook-{tool} {mtu} {d}")
            h = med.get(f"hand-{tool} {mtu} {d}")
            p = med.get(f"podman-{tool} {mtu} {d}")
            f = lambda x: f"{x:8.2f}" if x else "     n/a"
            r = lambda a, b: f"{a / b:9.2f}x" if a and b else "       n/a"
            label = f"{tool} {mtu} {d}"
            print(f"{label:22}", f(n), f(h), f(p), r(n, h), " ", r(n, p))
print(f"host loopback (no helper): {med.get('host-loopback - -', 0):.2f} Gbit/s")
res = json.load(open(sys.argv[2]))["results"]
none, slirp, pasta = (r["median"] * 1000 for r in res)
print(f"start: --network none {none:.1f} ms, slirp4netns {slirp:.1f} ms (+{slirp - none:.1f} ms), pasta {pasta:.1f} ms (+{pasta - none:.1f} ms)")
EOF
