# The benchmarks' common start. `bench_init NAME TOOL...`: nook's release binary (built when
# missing), the tools the benchmark needs, a work directory on tmpfs (BENCH_DIR overrides:
# this VM's discard-mounted ext4 would measure the disk), and, run as root, the test user
# nooktest with a copy of nook it can execute. Sets NOOK, WORK, REG_PID and AS, the prefix
# that runs a command as that user (an `env` to add variables to).
# `bench_podman_stop`: ends the pause process rootless podman leaves behind (it holds the
# user namespace) when its XDG_RUNTIME_DIR was $WORK.
# `bench_need TOOL...`: installs the Debian packages of missing tools (as root), or names them.
bench_need() {
  local t pkgs=()
  for t in "$@"; do
    command -v "$t" >/dev/null && continue
    case $t in
      pasta) pkgs+=(passt) ;;
      bwrap) pkgs+=(bubblewrap) ;;
      dockerd) pkgs+=(docker.io) ;;
      unshare) pkgs+=(util-linux) ;;
      *) pkgs+=("$t") ;;
    esac
  done
  [ ${#pkgs[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "bench: missing peers; ask root to run: apt-get install ${pkgs[*]}"
    exit 1
  fi
  echo "bench: installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

bench_init() {
  local name=$1 t
  shift
  NOOK=${NOOK:-$PWD/target/release/nook}
  [ -x "$NOOK" ] || cargo build --release --locked
  bench_need "$@"
  BASE=${BENCH_DIR:-/dev/shm}
  [ -d "$BASE" ] && [ -w "$BASE" ] || BASE=/tmp
  WORK=$(mktemp -d "$BASE/nook-bench-$name.XXXXXX")
  chmod 755 "$WORK"
  REG_PID=
  AS=(env)
  if [ "$(id -u)" = 0 ]; then
    id nooktest >/dev/null 2>&1 || { echo "bench: run scripts/setup.sh first (needs user nooktest)"; exit 1; }
    AS=(setpriv --reuid=nooktest --regid=nooktest --init-groups env)
    # Not $WORK/nook: with XDG_RUNTIME_DIR=$WORK that is nook's runtime directory.
    mkdir -p "$WORK/bin" && cp "$NOOK" "$WORK/bin/nook" && chmod 755 "$WORK/bin" "$WORK/bin/nook"
    NOOK=$WORK/bin/nook
    chown nooktest: "$WORK"
  fi
}

# `bench_busybox`: a loopback registry (REG_PID, PORT) holding busybox as bench/busybox, pulled
# into the user's store as $IMAGE. Needs the calling script's `as_user`.
bench_busybox() {
  # shellcheck source=registry.sh
  . scripts/lib/registry.sh
  start_registry
  python3 scripts/lib/mkimage.py "$WORK/busybox" --busybox >/dev/null
  skopeo copy -q --dest-tls-verify=false "oci:$WORK/busybox:latest" "docker://127.0.0.1:$PORT/bench/busybox:latest"
  if [ "$(id -u)" = 0 ]; then chown -R nooktest: "$WORK"; fi
  as_user mkdir -p "$WORK/run"
  IMAGE=127.0.0.1:$PORT/bench/busybox
  as_user "$NOOK" pull -q "$IMAGE" >/dev/null
}

bench_podman_stop() {
  local pid
  pid=$(cat "$WORK/libpod/tmp/pause.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
}
