#!/bin/sh
# The GPU device check (issue 15): on a machine with NVIDIA GPUs, make a CDI spec for them and
# run `nook run --gpus all IMAGE nvidia-smi -L` as an ordinary user.
#
#   scripts/gpu-check.sh NOOK IMAGE [USER]
#
# NOOK   the nook binary (copied where USER can run it)
# IMAGE  an image reference, or an archive `nook save` wrote (loaded first); any image will do,
#        busybox included: the spec binds nvidia-smi, the libraries it needs and their loader in
# USER   who runs the container when the script runs as root (made with useradd if missing;
#        default nookgpu); as any other user, that user runs it
#
# The spec: `nvidia-ctk cdi generate` where nvidia-ctk is installed, else one made here from the
# /dev/nvidia* nodes (one device per GPU, named by its index; nvidiactl, nvidia-uvm… for all),
# nvidia-smi and the driver's libraries (ldconfig's libnvidia-ml and libcuda, and everything
# `ldd` lists for nvidia-smi), with LD_LIBRARY_PATH naming their directories. GPU_DEV (default
# /dev) and NVIDIA_SMI (default: nvidia-smi on PATH) stand in for the real ones in tests.
set -eu

nook=$1 image=$2 user=${3:-nookgpu}
dev=${GPU_DEV:-/dev}
smi=${NVIDIA_SMI:-$(command -v nvidia-smi || true)}
work=$(mktemp -d /tmp/nook-gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/cdi"

# `"a","b"` from lines.
json_list() { sed 's/.*/"&"/' | paste -sd, -; }

# One deviceNodes entry: the container's /dev/NAME, from $dev/NAME.
node() { printf '{"path":"/dev/%s","hostPath":"%s/%s"}' "$1" "$dev" "$1"; }

# The libraries to bind in: nvidia-smi's and their loader, and the driver's libraries it opens
# at run time (at their sonames).
libs() {
    ldd "$smi" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p'
    ldconfig -p 2>/dev/null | sed -n 's/.*\(libnvidia-ml\|libcuda\)\.so\.1 .*=> \(.*\)/\2/p'
}

hand_made_spec() {
    gpus=$(cd "$dev" && ls -d nvidia[0-9]* 2>/dev/null | sort -V || true)
    [ -n "$gpus" ] || { echo "gpu-check: no $dev/nvidia[0-9]* nodes: no NVIDIA GPU here" >&2; exit 2; }
    [ -n "$smi" ] || { echo "gpu-check: no nvidia-smi (the driver's utilities)" >&2; exit 2; }
    devices=$(for g in $gpus; do
        printf '{"name":"%s","containerEdits":{"deviceNodes":[%s]}}\n' "${g#nvidia}" "$(node "$g")"
    done | paste -sd, -)
    common=$(for n in nvidiactl nvidia-uvm nvidia-uvm-tools nvidia-modeset; do
        [ -e "$dev/$n" ] && node "$n" && echo
    done | paste -sd, -)
    mounts=$( (echo "$smi /usr/bin/nvidia-smi"; libs | sort -u | sed 's/.*/& &/') |
        while read -r from to; do
            printf '{"hostPath":"%s","containerPath":"%s","options":["ro","nosuid","nodev","bind"]}\n' \
                "$(readlink -f "$from")" "$to"
        done | paste -sd, -)
    libdirs=$(libs | sed 's|/[^/]*$||' | sort -u | paste -sd: -)
    env=$([ -z "$libdirs" ] || echo "LD_LIBRARY_PATH=$libdirs" | json_list)
    printf '{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[%s],' "$devices"
    printf '"containerEdits":{"deviceNodes":[%s],"mounts":[%s],"env":[%s]}}\n' \
        "$common" "$mounts" "$env"
}

if command -v nvidia-ctk >/dev/null && [ "$dev" = /dev ]; then
    nvidia-ctk cdi generate --output="$work/cdi/nvidia.yaml" >&2
else
    hand_made_spec > "$work/cdi/nvidia.json"
fi
chmod -R a+rX "$work/cdi"
echo "== CDI spec ($work/cdi)"
cat "$work/cdi/"*

# Run as an ordinary user, with nook's clean environment and a store of its own.
if [ "$(id -u)" = 0 ]; then
    id "$user" >/dev/null 2>&1 || useradd -m "$user"
    cp "$nook" "$work/nook"
    [ -f "$image" ] && cp "$image" "$work/image.tar"
    chmod a+rx "$work/nook"; chmod -R a+rX "$work"
    home=$(getent passwd "$user" | cut -d: -f6)
    as() { runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" "$@"; }
else
    cp "$nook" "$work/nook"
    [ -f "$image" ] && cp "$image" "$work/image.tar"
    as() { env "$@"; }
fi
if [ -f "$image" ]; then
    image=$(as "$work/nook" load -q -i "$work/image.tar" | sed -n 's/^Loaded image[^:]*: //p' | head -n1)
fi
echo "== nook run --gpus all $image nvidia-smi -L (as $(as id -un))"
as "$work/nook" run --rm --cdi-spec-dir "$work/cdi" --gpus all "$image" nvidia-smi -L
