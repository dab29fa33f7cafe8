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
NOOK=${NOOK:-$PWD/target/release/nook}
[ -x "$NOOK" ] || cargo build --release --locked
for t in docker-registry skopeo hyperfine python3 gzip; do
  command -v "$t" >/dev/null || { echo "bench: $t is missing (scripts/setup.sh installs it)"; exit 1; }
done

BASE=${BENCH_DIR:-/dev/shm}
[ -d "$BASE" ] && [ -w "$BASE" ] || BASE=/tmp
WORK=$(mktemp -d "$BASE/nook-bench-pull.XXXXXX")
chmod 755 "$WORK"
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK" 2>/dev/null || true; }
trap cleanup EXIT

AS=()
if [ "$(id -u)" = 0 ]; then
  id nooktest >/dev/null 2>&1 || { echo "bench: run scripts/setup.sh first (needs user nooktest)"; exit 1; }
  chown nooktest: "$WORK"
  AS=(runuser -u nooktest --)
  cp "$NOOK" "$WORK/nook" && chmod 755 "$WORK/nook" && NOOK=$WORK/nook
fi
USER_ENV=(env -i PATH=/usr/bin:/bin:/usr/sbin:/sbin HOME="$WORK" XDG_RUNTIME_DIR="$WORK")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
EOF
env -i /usr/bin/docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

echo "bench: building images from host files (gzip -6, as docker does)"
python3 - "$WORK" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
work = sys.argv[1]

def files(roots, limit):
    out, total = [], 0
    for root in roots:
        for d, dirs, names in os.walk(root):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(d, n)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                s = os.path.getsize(p)
                if s == 0 or s > 8 << 20:
                    continue
                out.append(p)
                total += s
                if total >= limit:
                    return out
    return out

def layout(name, groups):
    root = f"{work}/{name}"
    os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
    def put(b):
        h = hashlib.sha256(b).hexdigest()
        with open(f"{root}/blobs/sha256/{h}", "wb") as f:
            f.write(b)
        return "sha256:" + h
    layers, diffs = [], []
    for i, g in enumerate(groups):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for p in g:
                t.add(p, arcname=p.lstrip("/"))
        raw = buf.getvalue()
        gz = gzip.compress(raw, 6)
        with open(f"{work}/{name}-layer{i}.tar.gz", "wb") as f:
            f.write(gz)
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cfg), "size": len(cfg)},
                    "layers": layers}).encode()
    md = put(m)
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
               "size": len(m), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(f"{root}/index.json", "w"))
    open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    print(f"  {name}: {len(groups)} layer(s), {sum(l['size'] for l in layers) / 1e6:.1f} MB compressed")

big = files(["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/share"], 100 << 20)
layout("single", [big])
many = files(["/usr/share", "/usr/lib"], 100 << 20)
layout("eight", [many[i::8] for i in range(8)])
EOF
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
