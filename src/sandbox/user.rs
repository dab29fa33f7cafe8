//! Users and groups as the container's /etc/passwd and /etc/group define them.
//!
//! The files come from the image, so they are hostile: they are read through the container's
//! root (never following a link out), only if they are regular files, and only up to a size
//! limit, so that a `/etc/passwd` linked to `/dev/zero` or a FIFO neither hangs nor leaks.

use std::io::Read;

use nix::fcntl::OFlag;

use crate::sys::confined::{RootDir, components};

/// The largest passwd or group file nook reads.
const LIMIT: u64 = 4 << 20;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: the user's memberships in /etc/group plus `--group-add`.
    pub groups: Vec<u32>,
    pub home: String,
}

/// Why a user or group could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("invalid user {0:?}: expected USER[:GROUP] with names or numeric ids")]
    Invalid(String),
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some((
            f[0],
            f[2].parse().ok()?,
            f[3].split(',').filter(|m| !m.is_empty()).collect(),
        ))
    })
}

fn group_id(spec: &str, group: &str) -> Result<u32, UserError> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    group_entries(group)
        .find(|(n, _, _)| *n == spec)
        .map(|(_, g, _)| g)
        .ok_or_else(|| UserError::NoGroup(spec.to_owned()))
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, ...) and `--group-add`
/// against the texts of /etc/passwd and /etc/group, as docker does: a numeric uid missing
/// from passwd is allowed (gid 0, home /), a name must exist.
pub fn resolve(
    spec: &str,
    group_add: &[String],
    passwd: &str,
    group: &str,
) -> Result<User, UserError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() && g.is_some() || g == Some("") || spec.matches(':').count() > 1 {
        return Err(UserError::Invalid(spec.to_owned()));
    }
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd)
            .find(|e| e.uid == uid)
            .map(|e| (e.name, uid, e.gid, e.home))
            .or(Some(("", uid, 0, "/"))),
        Err(_) => passwd_entries(passwd)
            .find(|e| e.name == u)
            .map(|e| (e.name, e.uid, e.gid, e.home)),
    };
    let (name, uid, default_gid, home) = entry.ok_or_else(|| UserError::NoUser(u.to_owned()))?;
    let gid = match g {
        Some(g) => group_id(g, group)?,
        None => default_gid,
    };
    let mut groups: Vec<u32> = Vec::new();
    if g.is_none() && !name.is_empty() {
        groups.extend(
            group_entries(group)
                .filter(|(_, _, m)| m.contains(&name))
                .map(|(_, id, _)| id),
        );
    }
    for extra in group_add {
        groups.push(group_id(extra, group)?);
    }
    groups.sort_unstable();
    groups.dedup();
    let home = if home.is_empty() {
        "/".to_owned()
    } else {
        home.to_owned()
    };
    Ok(User {
        uid,
        gid,
        groups,
        home,
    })
}

/// The user's own entries for the container's /etc/passwd and /etc/group under
/// `--userns keep-id` (as podman): the host's name, uid, gid and home directory path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub group: String,
    pub home: String,
}

/// A field of a passwd or group line: no separator, no line break.
fn field_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains([':', '\n', '\r', '\0'])
}

/// The line to append to the image's `passwd` for `a`, if it has no entry for the uid yet.
/// The shell is the image's root's, else `/bin/sh`.
pub fn passwd_line(passwd: &str, a: &Account) -> Option<String> {
    if passwd_entries(passwd).any(|e| e.uid == a.uid) || !field_ok(&a.name) || !field_ok(&a.home) {
        return None;
    }
    let shell = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2] == "0")
        .map(|f| f[6])
        .filter(|s| field_ok(s))
        .unwrap_or("/bin/sh");
    Some(format!(
        "{}:x:{}:{}:{}:{}:{shell}\n",
        a.name, a.uid, a.gid, a.name, a.home
    ))
}

/// The line to append to the image's `group` for `a`'s group, if it has none with the gid.
pub fn group_line(group: &str, a: &Account) -> Option<String> {
    if group_entries(group).any(|(_, gid, _)| gid == a.gid) || !field_ok(&a.group) {
        return None;
    }
    Some(format!("{}:x:{}:\n", a.group, a.gid))
}

/// Appends `line` to the regular file at `path` below `root` (a missing file is created).
/// A file that is not regular is left alone: the image's files are hostile.
pub fn append_confined(root: &RootDir, path: &str, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let fd = match root.open_file(&components(path), flags) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            root.create_path(path, false)?;
            root.open_file(&components(path), flags)?
        }
        other => other?,
    };
    let mut file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    file.write_all(line.as_bytes())
}

/// Adds `a` to the container's /etc/passwd and /etc/group where they have no entry for its
/// ids yet (the writable layer keeps them for the next start).
pub fn add_account(root: &RootDir, a: &Account) -> std::io::Result<()> {
    if let Some(line) = passwd_line(&read_confined(root, "/etc/passwd"), a) {
        append_confined(root, "/etc/passwd", &line)?;
    }
    if let Some(line) = group_line(&read_confined(root, "/etc/group"), a) {
        append_confined(root, "/etc/group", &line)?;
    }
    Ok(())
}

/// Reads a small regular file below `root`, or an empty string if it is missing, not a
/// regular file, or too large.
pub fn read_confined(root: &RootDir, path: &str) -> String {
    let flags = OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let Ok(fd) = root.open_file(&components(path), flags) else {
        return String::new();
    };
    read_small(std::fs::File::from(fd)).unwrap_or_default()
}

/// What one layer says about a path.
enum InLayer {
    /// A regular file, read (up to [`LIMIT`]).
    Found(String),
    /// A whiteout, or something nook refuses to read (a symlink, a FIFO, a file too large):
    /// the layers below do not show through.
    Hidden,
    /// Absent here; `opaque` when a directory on the way hides the layers below.
    Missing { opaque: bool },
}

fn opaque_dir(fd: &std::os::fd::OwnedFd) -> bool {
    crate::sys::xattr::fget(fd, crate::unpack::OPAQUE_XATTR)
        .ok()
        .flatten()
        .is_some_and(|v| v == b"y")
}

/// Looks `comps` up in one layer, one component at a time and never following a symlink: a
/// link in an image layer could point anywhere on the host, since no root confines it here.
fn look_in(layer: &std::path::Path, comps: &[std::ffi::OsString]) -> InLayer {
    use nix::sys::stat::{SFlag, fstatat};
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(mut dir) = nix::fcntl::open(layer, dir_flags, nix::sys::stat::Mode::empty()) else {
        return InLayer::Missing { opaque: false };
    };
    let mut opaque = opaque_dir(&dir);
    for (i, name) in comps.iter().enumerate() {
        let st = match fstatat(
            &dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(_) => return InLayer::Missing { opaque },
        };
        let kind = SFlag::from_bits_truncate(st.st_mode & libc::S_IFMT);
        if kind == SFlag::S_IFCHR && st.st_rdev == 0 {
            return InLayer::Hidden;
        }
        let last = i + 1 == comps.len();
        let flags = if last {
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
        } else {
            dir_flags
        };
        let want = if last { SFlag::S_IFREG } else { SFlag::S_IFDIR };
        if kind != want {
            return InLayer::Hidden;
        }
        let Ok(fd) = nix::fcntl::openat(
            &dir,
            name.as_os_str(),
            flags | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) else {
            return InLayer::Hidden;
        };
        if last {
            return match read_small(std::fs::File::from(fd)) {
                Some(text) => InLayer::Found(text),
                None => InLayer::Hidden,
            };
        }
        opaque |= opaque_dir(&fd);
        dir = fd;
    }
    InLayer::Missing { opaque }
}

/// The text of a regular file of at most [`LIMIT`] bytes.
fn read_small(file: std::fs::File) -> Option<String> {
    match file.metadata() {
        Ok(m) if m.is_file() && m.len() <= LIMIT => {}
        _ => return None,
    }
    let mut text = String::new();
    file.take(LIMIT).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Reads a small regular file (`/etc/passwd`, `/etc/group`) as the overlay of `layers`
/// (top first: the container's upper layer, then the image's from the top) will show it,
/// before any of it is mounted: whiteouts and opaque directories hide what is below them.
/// A symlink anywhere on the path, a special file or one over the size limit reads as empty.
pub fn read_layered(layers: &[std::path::PathBuf], path: &str) -> String {
    let comps = components(path);
    if comps.is_empty() {
        return String::new();
    }
    for layer in layers {
        match look_in(layer, &comps) {
            InLayer::Found(text) => return text,
            InLayer::Hidden | InLayer::Missing { opaque: true } => return String::new(),
            InLayer::Missing { opaque: false } => {}
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n#c:x:5:5::/:/bin/sh\nbroken\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:app,www\naudio:x:29:app\napp:x:1000:\n";

    fn me() -> Account {
        Account {
            name: "alice".into(),
            uid: 1003,
            gid: 1004,
            group: "alices".into(),
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn keep_id_entries_added_once() {
        assert_eq!(
            passwd_line(PASSWD, &me()).as_deref(),
            Some("alice:x:1003:1004:alice:/home/alice:/bin/sh\n")
        );
        let zsh = "root:x:0:0::/root:/bin/zsh\n";
        assert_eq!(
            passwd_line(zsh, &me()).as_deref(),
            Some("alice:x:1003:1004:alice:/home/alice:/bin/zsh\n"),
            "the image's root's shell"
        );
        let mut taken = me();
        taken.uid = 1000;
        assert_eq!(passwd_line(PASSWD, &taken), None, "the uid has an entry");
        assert_eq!(
            group_line(GROUP, &me()).as_deref(),
            Some("alices:x:1004:\n")
        );
        let mut g = me();
        g.gid = 50;
        assert_eq!(group_line(GROUP, &g), None, "the gid has an entry");
        // Nothing a field separator or line break could smuggle in.
        let mut bad = me();
        bad.name = "x:0:0".into();
        assert_eq!(passwd_line(PASSWD, &bad), None);
        bad.group = "a\nroot".into();
        assert_eq!(group_line(GROUP, &bad), None);
        assert_eq!(
            passwd_line("", &me()).as_deref(),
            Some("alice:x:1003:1004:alice:/home/alice:/bin/sh\n"),
            "an image without passwd"
        );
    }

    #[test]
    fn docker_user_forms() {
        let r = resolve("", &[], PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let a = resolve("app", &[], PASSWD, GROUP).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups.clone(), a.home.as_str()),
            (1000, 1000, vec![29, 50], "/home/app")
        );
        let n = resolve("1234", &[], PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (1234, 0, "/"));
        let ug = resolve("1000:33", &[], PASSWD, GROUP).unwrap();
        assert_eq!((ug.uid, ug.gid), (1000, 33));
        assert!(
            ug.groups.is_empty(),
            "an explicit group drops the memberships, as docker"
        );
        let named = resolve("www:staff", &[], PASSWD, GROUP).unwrap();
        assert_eq!((named.uid, named.gid), (33, 50));
    }

    #[test]
    fn group_add_and_errors() {
        let r = resolve("app", &["www".into(), "4242".into()], PASSWD, GROUP).unwrap();
        assert_eq!(r.groups, vec![29, 33, 50, 4242]);
        assert_eq!(
            resolve("nobody", &[], PASSWD, GROUP),
            Err(UserError::NoUser("nobody".into()))
        );
        assert_eq!(
            resolve("app:nogroup", &[], PASSWD, GROUP),
            Err(UserError::NoGroup("nogroup".into()))
        );
        assert_eq!(
            resolve("app", &["ghosts".into()], PASSWD, GROUP),
            Err(UserError::NoGroup("ghosts".into()))
        );
        assert!(matches!(
            resolve(":1", &[], PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
        assert!(matches!(
            resolve("a:b:c", &[], PASSWD, GROUP),
            Err(UserError::Invalid(_))
        ));
    }

    #[test]
    fn hostile_passwd_files_read_as_empty() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("etc/group"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let root = RootDir::open(d.path()).unwrap();
        // /dev/zero resolves inside the root (where it does not exist); the FIFO is no file.
        assert_eq!(read_confined(&root, "/etc/passwd"), "");
        assert_eq!(read_confined(&root, "/etc/group"), "");
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        std::fs::write(d.path().join("dev/zero"), "x:x:1:1::/:/\n").unwrap();
        assert_eq!(
            read_confined(&root, "/etc/passwd"),
            "x:x:1:1::/:/\n",
            "the link resolves inside the root"
        );
    }

    fn layer_with(
        root: &std::path::Path,
        name: &str,
        files: &[(&str, &str)],
    ) -> std::path::PathBuf {
        let l = root.join(name);
        std::fs::create_dir_all(l.join("etc")).unwrap();
        for (p, text) in files {
            std::fs::write(l.join(p), text).unwrap();
        }
        l
    }

    fn whiteout(path: &std::path::Path) {
        use nix::sys::stat::{Mode, SFlag, mknod};
        mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), 0).unwrap();
    }

    #[test]
    fn layered_lookup_takes_the_topmost_copy() {
        let d = tempfile::tempdir().unwrap();
        let bottom = layer_with(
            d.path(),
            "bottom",
            &[("etc/passwd", "old\n"), ("etc/group", "g\n")],
        );
        let top = layer_with(d.path(), "top", &[("etc/passwd", "new\n")]);
        let upper = d.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        let layers = [upper.clone(), top.clone(), bottom.clone()];
        assert_eq!(read_layered(&layers, "/etc/passwd"), "new\n");
        assert_eq!(
            read_layered(&layers, "/etc/group"),
            "g\n",
            "lower shows through"
        );
        std::fs::create_dir(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/passwd"), "upper\n").unwrap();
        assert_eq!(read_layered(&layers, "/etc/passwd"), "upper\n");
        assert_eq!(read_layered(&layers, "/etc/shadow"), "");
        assert_eq!(
            read_layered(&[d.path().join("gone"), bottom], "/etc/group"),
            "g\n"
        );
    }

    #[test]
    fn layered_lookup_honours_whiteouts_and_opaque_dirs() {
        let d = tempfile::tempdir().unwrap();
        let bottom = layer_with(
            d.path(),
            "bottom",
            &[("etc/passwd", "p\n"), ("etc/group", "g\n")],
        );
        let top = layer_with(d.path(), "top", &[]);
        whiteout(&top.join("etc/passwd"));
        let layers = [top.clone(), bottom.clone()];
        assert_eq!(read_layered(&layers, "/etc/passwd"), "", "whiteout ignored");
        assert_eq!(read_layered(&layers, "/etc/group"), "g\n");
        crate::sys::xattr::fset(
            std::fs::File::open(top.join("etc")).unwrap(),
            crate::unpack::OPAQUE_XATTR,
            b"y",
        )
        .unwrap();
        assert_eq!(
            read_layered(&layers, "/etc/group"),
            "",
            "opaque directory ignored"
        );
        let whole = layer_with(d.path(), "whole", &[]);
        std::fs::remove_dir(whole.join("etc")).unwrap();
        whiteout(&whole.join("etc"));
        assert_eq!(
            read_layered(&[whole, bottom], "/etc/passwd"),
            "",
            "whited-out /etc ignored"
        );
    }

    #[test]
    fn layered_lookup_refuses_symlinks_and_huge_files() {
        let d = tempfile::tempdir().unwrap();
        let host = layer_with(d.path(), "host", &[("etc/passwd", "host:x:0:0::/:/\n")]);
        let bottom = layer_with(
            d.path(),
            "bottom",
            &[("etc/passwd", "p\n"), ("etc/group", "g\n")],
        );
        let top = layer_with(d.path(), "top", &[]);
        std::os::unix::fs::symlink(host.join("etc/passwd"), top.join("etc/passwd")).unwrap();
        let layers = [top.clone(), bottom.clone()];
        assert_eq!(
            read_layered(&layers, "/etc/passwd"),
            "",
            "a symlinked file was followed"
        );
        let linked = d.path().join("linked");
        std::fs::create_dir(&linked).unwrap();
        std::os::unix::fs::symlink(host.join("etc"), linked.join("etc")).unwrap();
        assert_eq!(
            read_layered(&[linked, bottom.clone()], "/etc/group"),
            "",
            "a symlinked directory was followed"
        );
        let big = layer_with(d.path(), "big", &[]);
        std::fs::File::create(big.join("etc/group"))
            .unwrap()
            .set_len(LIMIT + 1)
            .unwrap();
        assert_eq!(read_layered(&[big, bottom], "/etc/group"), "");
    }
}
