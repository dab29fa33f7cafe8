//! An MPI job's material, made on this machine: the checks of tests/support/mpihello.c
//! compiled with the host's `mpicc` (Debian's OpenMPI), and two image tarballs holding it, for
//! `nook import`:
//!
//! - `bind.tar`: the program alone on an empty merged-/usr skeleton; the host's MPI is bound in
//!   at run time ([`BIND_VOLUMES`]), the "bind" model;
//! - `hybrid.tar`: the program with the MPI library inside the image (OpenMPI's and PMIx's
//!   directories, their help files, the plugin directories of UCX, hwloc and libfabric, and
//!   every library the program and all those plugins load, copied from the host), the
//!   "hybrid" model.
//!
//! Built once per version of the sources for every test process: `/tmp/nook-it-mpi/HASH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What the bind model adds to `nook run`: the host's /usr (which holds its MPI) and the
/// alternatives its library links go through.
pub const BIND_VOLUMES: [&str; 4] = [
    "-v",
    "/usr:/usr:ro",
    "-v",
    "/etc/alternatives:/etc/alternatives:ro",
];

/// Makes the material in `$1` from the program `$1/hello`.
const MAKE: &str = r#"
set -eu
out=$1
skeleton() {
    mkdir -p "$1/usr/bin" "$1/usr/lib" "$1/usr/lib64" "$1/etc" "$1/tmp"
    chmod 1777 "$1/tmp"
    for d in bin lib lib64 sbin; do ln -s "usr/$d" "$1/$d"; done
    cp "$out/hello" "$1/hello"
}
skeleton "$out/bind"
tar -C "$out/bind" -cf "$out/bind.tar" .
h=$out/hybrid
skeleton "$h"
multi=/usr/lib/x86_64-linux-gnu
mkdir -p "$h$multi" "$h/usr/share"
# OpenMPI, PMIx, and the plugins their libraries dlopen (UCX transports, hwloc, libfabric).
plugins=
for d in openmpi pmix2 ucx hwloc libfabric; do
    [ -d "$multi/$d" ] && cp -a "$multi/$d" "$h$multi/" && plugins="$plugins $multi/$d"
done
for d in /usr/share/openmpi /usr/share/pmix; do [ -d "$d" ] && cp -a "$d" "$h/usr/share/"; done
cp -a /etc/openmpi "$h/etc/"
{ ldd "$out/hello"; find $plugins -name '*.so*' -type f -exec ldd {} \; ; } 2>/dev/null |
    awk '/=> \//{print $3} /^\t\//{print $1}' | sort -u |
    while read -r lib; do
        case $lib in /lib/* | /lib64/*) dest=$h/usr$lib ;; *) dest=$h$lib ;; esac
        mkdir -p "$(dirname "$dest")"
        [ -e "$dest" ] || cp -L "$lib" "$dest"
    done
tar -C "$h" -cf "$out/hybrid.tar" .
rm -rf "$out/bind" "$h"
"#;

/// The directory holding `hello`, `bind.tar` and `hybrid.tar`, or why it cannot be made here.
pub fn material() -> Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(build).clone()
}

fn build() -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let src = format!("{}/tests/support/mpihello.c", env!("CARGO_MANIFEST_DIR"));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&src)
        .map_err(|e| format!("{src}: {e}"))?
        .hash(&mut hasher);
    MAKE.hash(&mut hasher);
    let root = Path::new("/tmp/nook-it-mpi");
    let dir = root.join(format!("{:016x}", hasher.finish()));
    if dir.join("hybrid.tar").is_file() {
        return Ok(dir);
    }
    let tmp = root.join(format!(".build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let fail = |why: String| {
        let _ = std::fs::remove_dir_all(&tmp);
        Err(why)
    };
    let cc = std::process::Command::new("mpicc")
        .args(["-O1", "-Wall", "-o"])
        .arg(tmp.join("hello"))
        .arg(&src)
        .output();
    match cc {
        Ok(o) if o.status.success() => {}
        Ok(o) => return fail(format!("mpicc: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => {
            return fail(format!(
                "mpicc: {e} (apt-get install openmpi-bin libopenmpi-dev)"
            ));
        }
    }
    let made = std::process::Command::new("sh")
        .args(["-c", MAKE, "sh"])
        .arg(&tmp)
        .output()
        .map_err(|e| e.to_string())?;
    if !made.status.success() {
        return fail(format!(
            "making the MPI images: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    for d in [root, tmp.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    // Another test process may have won the race: its copy is as good as ours.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}
