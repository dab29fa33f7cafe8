#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for nook: system packages, the release build and, as
# root, what distributions normally ship (/dev/fuse and /dev/net/tun mode 0666) plus the test
# users: nooktest (with /etc/subuid and /etc/subgid ranges) and nooksingle (without).
# Idempotent: run it again at any time.
set -euo pipefail
cd "$(dirname "$0")/.."

# What nook and its tests need. skopeo pushes the demo's image (scripts/demo.sh); podman is
# the oracle `nook build`'s, `load`'s and `export`'s tests compare with, and runs podman's
# containers with runc (crun refuses a hybrid cgroup v1/v2 hierarchy, as these VMs have).
# python3-docker (docker's Python SDK) drives `nook serve` in tests/serve_py.rs; openssh-server
# gives the client tests an sshd on loopback for `nook -H ssh://`; docker.io's rootful dockerd
# is the real Docker Engine nook's client is compared with (tests start it on a private
# socket, without iptables or a bridge; its 20.10 CLI lands in /usr/bin, the tests use the
# 28.x one in /usr/local/bin).
# The other benchmark peers (bubblewrap, fuse-overlayfs, hyperfine, iperf3) are installed by scripts/bench/ when a
# benchmark first needs them (scripts/lib/bench.sh `bench_need`).
PACKAGES=(
  uidmap fuse3 slirp4netns passt docker-registry busybox-static skopeo attr ca-certificates
  iproute2 procps util-linux coreutils python3 gcc libc6-dev podman runc python3-docker
  openssh-server docker.io
  # Single-file images (issue 15): nook save --format squashfs, nook run FILE.sqsh / FILE.sif.
  squashfuse squashfs-tools
  # HPC: a single-node Slurm for the tests (tests/support/slurm.rs) and OpenMPI for MPI jobs
  slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev
)

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

add_subids() { # user file
  local user=$1 file=$2
  grep -q "^${user}:" "$file" 2>/dev/null && return 0
  local next
  next=$(awk -F: 'BEGIN{m=100000} NF==3 && $2+$3>m {m=$2+$3} END{print m}' "$file" 2>/dev/null || echo 100000)
  echo "${user}:${next}:65536" >>"$file"
}

if [ "$(id -u)" = 0 ]; then
  mapfile -t missing < <(missing_packages)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # Distributions ship these world-accessible; some VMs and containers do not.
  [ -e /dev/fuse ] && chmod 0666 /dev/fuse
  if [ ! -e /dev/net/tun ]; then mkdir -p /dev/net && mknod -m 0666 /dev/net/tun c 10 200; fi
  chmod 0666 /dev/net/tun

  id nooktest >/dev/null 2>&1 || useradd -m -s /bin/sh nooktest
  add_subids nooktest /etc/subuid
  add_subids nooktest /etc/subgid

  # A user without subordinate ids (LDAP users on HPC machines look like this). Debian's
  # useradd gives every new user a range, so its lines are removed again.
  id nooksingle >/dev/null 2>&1 || useradd -m -s /bin/sh nooksingle
  sed -i '/^nooksingle:/d' /etc/subuid /etc/subgid
else
  # An ordinary user builds; root adds what the system lacks.
  mapfile -t missing < <(missing_packages)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: not root: ask root to run: apt-get install ${missing[*]}"
  fi
  if [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then
    echo "setup: /dev/fuse is not open to you (root: chmod 0666 /dev/fuse); nook falls back to copying the image"
  fi
  grep -q "^$(id -un):" /etc/subuid 2>/dev/null ||
    echo "setup: no /etc/subuid range for $(id -un): nook maps your id alone (see 'nook info')"
fi

command -v cargo >/dev/null || { echo "setup: cargo is missing: install Rust (https://rustup.rs)"; exit 1; }
cargo build --release --locked
echo "setup: done; nook is at target/release/nook"
