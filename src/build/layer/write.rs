//! Entries → a layer tar: PAX, numeric owners only, deterministic.
//!
//! Entries are sorted by path component by component (so a directory comes before what it
//! holds, and its `.wh..wh..opq` right after it); a later entry for the same path replaces an
//! earlier one. Each header holds only what the entry says — no user or group names, no
//! access times — so two writes of the same entries give the same bytes, and with a clamp
//! the same image from two builds. Whiteouts are empty regular files `.wh.NAME`; opaque
//! markers are `.wh..wh..opq` with the directory's owner and permission bits and time 0, as
//! docker writes them. Fields that do not fit the ustar header (long names and link targets,
//! large ids, sizes and times, xattrs) go into a PAX record.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::at;
use super::layered::normal_components;
use crate::build::entry::{Entry, EntryKind, Source};
use crate::fuse::layers::open_beneath;

/// How a layer is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `--timestamp` / SOURCE_DATE_EPOCH: every mtime above it is set to it.
    pub clamp: Option<i64>,
}

/// The largest values the ustar numeric fields hold (7 and 11 octal digits).
const MAX_ID: u64 = 0o7777777;
const MAX_BIG: u64 = 0o77777777777;

const OPAQUE_NAME: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";

/// Writes `entries` as a layer tar to `out`; returns the number of bytes of file content.
pub fn write_tar(entries: &[Entry], out: impl Write, opts: &WriteOptions) -> io::Result<u64> {
    let plan = order(entries)?;
    let mut tar = tar::Builder::new(out);
    let mut roots: HashMap<PathBuf, OwnedFd> = HashMap::new();
    let mut bytes = 0;
    for e in &plan {
        let (header, pax) = header(e, opts).map_err(|err| at("cannot write", &e.path, err))?;
        if !pax.is_empty() {
            let ph = pax_header(&header, pax.len());
            tar.append(&ph, pax.as_slice())?;
        }
        match &e.kind {
            EntryKind::File { size, source } => {
                let data = content(source, *size, &mut roots)
                    .map_err(|err| at("cannot read the content of", &e.path, err))?;
                tar.append(&header, data)
                    .map_err(|err| at("cannot write", &e.path, err))?;
                bytes += size;
            }
            _ => tar.append(&header, io::empty())?,
        }
    }
    let mut out = tar.into_inner()?;
    out.flush()?;
    Ok(bytes)
}

/// The sort key of an entry: its path's components, with an opaque marker as an empty name
/// inside its directory (so it sorts first there).
fn key(e: &Entry) -> io::Result<Vec<&[u8]>> {
    let mut k: Vec<&[u8]> = normal_components(&e.path)?
        .into_iter()
        .map(|c| c.as_bytes())
        .collect();
    if k.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a layer entry needs a path",
        ));
    }
    if e.kind == EntryKind::Opaque {
        k.push(b"");
    }
    Ok(k)
}

/// Sorts, drops replaced entries and makes the first path of each hard-link group the one
/// that carries the content.
fn order(entries: &[Entry]) -> io::Result<Vec<Entry>> {
    let mut keyed = entries
        .iter()
        .map(|e| Ok((key(e)?, e)))
        .collect::<io::Result<Vec<_>>>()?;
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut plan: Vec<Entry> = Vec::with_capacity(keyed.len());
    let mut last: Option<Vec<&[u8]>> = None;
    for (k, e) in keyed {
        if last.as_ref() == Some(&k) {
            plan.pop();
        }
        plan.push(e.clone());
        last = Some(k);
    }
    fix_links(&mut plan)?;
    Ok(plan)
}

/// A hard link must follow its target in the tar: when a link sorts before the entry it
/// names, the first of them takes the content and the others link to it.
fn fix_links(plan: &mut [Entry]) -> io::Result<()> {
    let index: HashMap<PathBuf, usize> = plan
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in plan.iter().enumerate() {
        if let EntryKind::Hardlink(t) = &e.kind {
            let j = index.get(t).copied().filter(|j| {
                let k = &plan[*j].kind;
                !matches!(
                    k,
                    EntryKind::Hardlink(_)
                        | EntryKind::Dir
                        | EntryKind::Whiteout
                        | EntryKind::Opaque
                )
            });
            let Some(j) = j else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} links to {}, which the layer does not hold as a file",
                        e.path.display(),
                        t.display()
                    ),
                ));
            };
            groups.entry(j).or_default().push(i);
        }
    }
    for (target, links) in groups {
        let Some(&first) = links.iter().min().filter(|f| **f < target) else {
            continue;
        };
        let content = plan[target].kind.clone();
        let first_path = plan[first].path.clone();
        plan[first].kind = content;
        for i in links.into_iter().chain([target]) {
            if i != first {
                plan[i].kind = EntryKind::Hardlink(first_path.clone());
            }
        }
    }
    Ok(())
}

/// The name an entry has in the tar.
fn tar_name(e: &Entry) -> io::Result<Vec<u8>> {
    let path = e.path.as_os_str().as_bytes();
    let name = e.path.file_name().unwrap_or(OsStr::new("")).as_bytes();
    if e.kind != EntryKind::Whiteout && name.starts_with(WHITEOUT_PREFIX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a name starting with .wh. would read as a deletion in a layer; rename it",
        ));
    }
    let parent = |p: &Path| -> Vec<u8> {
        let mut v = p.as_os_str().as_bytes().to_vec();
        if !v.is_empty() {
            v.push(b'/');
        }
        v
    };
    Ok(match &e.kind {
        EntryKind::Dir => [path, b"/"].concat(),
        EntryKind::Opaque => [parent(&e.path).as_slice(), OPAQUE_NAME].concat(),
        EntryKind::Whiteout => {
            let dir = parent(e.path.parent().unwrap_or(Path::new("")));
            [dir.as_slice(), WHITEOUT_PREFIX, name].concat()
        }
        _ => path.to_vec(),
    })
}

/// The ustar header of an entry and the PAX records it needs.
fn header(e: &Entry, opts: &WriteOptions) -> io::Result<(tar::Header, Vec<u8>)> {
    let mut h = tar::Header::new_ustar();
    let mut pax = Vec::new();
    let name = tar_name(e)?;
    if !set_name(&mut h, &name) {
        pax.extend(record(b"path", &name));
    }
    let (ty, size, link): (tar::EntryType, u64, Option<&[u8]>) = match &e.kind {
        EntryKind::Dir => (tar::EntryType::Directory, 0, None),
        EntryKind::File { size, .. } => (tar::EntryType::Regular, *size, None),
        EntryKind::Symlink(t) => (tar::EntryType::Symlink, 0, Some(t.as_os_str().as_bytes())),
        EntryKind::Hardlink(t) => (tar::EntryType::Link, 0, Some(t.as_os_str().as_bytes())),
        EntryKind::Fifo => (tar::EntryType::Fifo, 0, None),
        EntryKind::CharDevice(..) => (tar::EntryType::Char, 0, None),
        EntryKind::BlockDevice(..) => (tar::EntryType::Block, 0, None),
        EntryKind::Whiteout | EntryKind::Opaque => (tar::EntryType::Regular, 0, None),
    };
    h.set_entry_type(ty);
    if let Some(link) = link
        && !set_link(&mut h, link)
    {
        pax.extend(record(b"linkpath", link));
    }
    if let EntryKind::CharDevice(ma, mi) | EntryKind::BlockDevice(ma, mi) = e.kind {
        h.set_device_major(ma)?;
        h.set_device_minor(mi)?;
    }
    numbers(&mut h, &mut pax, e, size, opts);
    if !matches!(
        e.kind,
        EntryKind::Hardlink(_) | EntryKind::Whiteout | EntryKind::Opaque
    ) {
        let mut xattrs: Vec<&(String, Vec<u8>)> = e.xattrs.iter().collect();
        xattrs.sort_by(|a, b| a.0.cmp(&b.0));
        for (n, v) in xattrs {
            pax.extend(record(format!("SCHILY.xattr.{n}").as_bytes(), v));
        }
    }
    h.set_cksum();
    Ok((h, pax))
}

/// Mode, owners, time and size; those the ustar fields cannot hold go into PAX records.
fn numbers(h: &mut tar::Header, pax: &mut Vec<u8>, e: &Entry, size: u64, opts: &WriteOptions) {
    let perm = if e.kind == EntryKind::Opaque {
        0o777
    } else {
        0o7777
    };
    h.set_mode(e.mode & perm);
    let (uid, gid) = (u64::from(e.uid), u64::from(e.gid));
    for (key, v) in [(&b"uid"[..], uid), (b"gid", gid)] {
        if v > MAX_ID {
            pax.extend(record(key, v.to_string().as_bytes()));
        }
    }
    h.set_uid(if uid <= MAX_ID { uid } else { 0 });
    h.set_gid(if gid <= MAX_ID { gid } else { 0 });
    let mtime = match (e.kind == EntryKind::Opaque, opts.clamp) {
        (true, _) => 0,
        (false, Some(c)) => e.mtime.min(c),
        (false, None) => e.mtime,
    };
    match u64::try_from(mtime).ok().filter(|m| *m <= MAX_BIG) {
        Some(m) => h.set_mtime(m),
        None => {
            pax.extend(record(b"mtime", mtime.to_string().as_bytes()));
            h.set_mtime(0);
        }
    }
    if size > MAX_BIG {
        pax.extend(record(b"size", size.to_string().as_bytes()));
    }
    h.set_size(size);
}

/// Puts `name` in the ustar name (and prefix) fields; false when it does not fit.
fn set_name(h: &mut tar::Header, name: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    if name.len() <= u.name.len() {
        u.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a slash: the prefix takes at most 155 bytes, the name at most 100.
    let body = name.strip_suffix(b"/").unwrap_or(name);
    for (i, _) in body.iter().enumerate().filter(|(_, b)| **b == b'/') {
        let (pre, rest) = (&name[..i], &name[i + 1..]);
        if pre.len() <= u.prefix.len() && rest.len() <= u.name.len() && !rest.is_empty() {
            u.prefix[..pre.len()].copy_from_slice(pre);
            u.name[..rest.len()].copy_from_slice(rest);
            return true;
        }
    }
    // The PAX record carries it; the header keeps a recognisable start.
    let n = u.name.len();
    u.name.copy_from_slice(&name[..n]);
    false
}

/// Puts `link` in the ustar link name field; false when it does not fit.
fn set_link(h: &mut tar::Header, link: &[u8]) -> bool {
    let Some(u) = h.as_ustar_mut() else {
        return false;
    };
    if link.len() <= u.linkname.len() {
        u.linkname[..link.len()].copy_from_slice(link);
        true
    } else {
        false
    }
}

/// One PAX record: `LEN KEY=VALUE\n`, LEN counting itself.
fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    [len.to_string().as_bytes(), b" ", key, b"=", value, b"\n"].concat()
}

/// The header of the PAX extension before `of`: named as Go names it, fields zero.
fn pax_header(of: &tar::Header, size: usize) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let full = of.path_bytes();
    let (dir, file) = match full.iter().rposition(|b| *b == b'/') {
        Some(i) => (&full[..=i], &full[i + 1..]),
        None => (&b""[..], &full[..]),
    };
    let mut name = [dir, b"PaxHeaders.0/", file].concat();
    name.truncate(100);
    set_name(&mut h, &name);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size as u64);
    h.set_cksum();
    h
}

/// A reader of exactly `left` bytes: a source that ends early or has more is an error (it
/// changed after the layer was planned).
pub(super) struct Exact<R> {
    pub inner: R,
    pub left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the file grew while the layer was written",
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while the layer was written",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The content of a file entry, checked to be `size` bytes.
fn content<'a>(
    source: &'a Source,
    size: u64,
    roots: &mut HashMap<PathBuf, OwnedFd>,
) -> io::Result<Exact<Box<dyn Read + 'a>>> {
    let inner: Box<dyn Read + 'a> = match source {
        Source::Bytes(b) => {
            if b.len() as u64 != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the planned size does not match the content",
                ));
            }
            Box::new(b.as_slice())
        }
        Source::Beneath { root, rel } => Box::new(open_source(root, rel, size, roots)?),
    };
    Ok(Exact { inner, left: size })
}

/// Opens `rel` beneath `root` with no symlink followed, and checks that it is still a regular
/// file of `size` bytes.
fn open_source(
    root: &Path,
    rel: &Path,
    size: u64,
    roots: &mut HashMap<PathBuf, OwnedFd>,
) -> io::Result<std::fs::File> {
    if !roots.contains_key(root) {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        roots.insert(root.to_owned(), fd);
    }
    let dir = roots
        .get(root)
        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    normal_components(rel)?;
    // O_NONBLOCK: a fifo put in the file's place must not stall the build.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let fd = open_beneath(dir.as_fd(), rel, flags)?;
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no longer a regular file",
        ));
    }
    if u64::try_from(st.st_size).ok() != Some(size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("its size changed from {size} to {} bytes", st.st_size),
        ));
    }
    Ok(std::fs::File::from(fd))
}
