//! User and group id mappings: subordinate ranges from /etc/subuid and /etc/subgid, and the
//! map lines a user namespace gets.
//!
//! With a subordinate range, container id 0 is the user and ids 1..=N are the range (as
//! podman does); without one, only one id exists: the user the command runs as (root, or the
//! image's USER: see `container::mapping`). The arithmetic lives in one place,
//! [`IdMap`], and is tested exhaustively at its edges (youki's off-by-one was here).

use std::path::{Path, PathBuf};

/// One line of `/proc/PID/uid_map`: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLine {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// A complete mapping of container ids to host ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub lines: Vec<MapLine>,
}

impl IdMap {
    /// Container 0 → `own`; container 1.. → the ranges in order.
    pub fn with_ranges(own: u32, ranges: &[SubRange]) -> IdMap {
        let mut lines = vec![MapLine {
            inside: 0,
            outside: own,
            count: 1,
        }];
        let mut next: u32 = 1;
        for r in ranges.iter().filter(|r| r.count > 0) {
            let Some(end) = next.checked_add(r.count) else {
                break;
            };
            lines.push(MapLine {
                inside: next,
                outside: r.start,
                count: r.count,
            });
            next = end;
        }
        IdMap { lines }
    }

    /// Container 0 → `own`, nothing else.
    pub fn single(own: u32) -> IdMap {
        IdMap {
            lines: vec![MapLine {
                inside: 0,
                outside: own,
                count: 1,
            }],
        }
    }

    /// `--userns keep-id`: container id `me` is `own` (so the user keeps their id inside),
    /// the subordinate ranges fill container ids 0..me and me+1.. in order.
    pub fn keep_id(own: u32, me: u32, ranges: &[SubRange]) -> IdMap {
        let mut lines = vec![MapLine {
            inside: me,
            outside: own,
            count: 1,
        }];
        let mut next_inside: u32 = 0;
        for r in ranges.iter().filter(|r| r.count > 0) {
            let (mut start, mut left) = (r.start, r.count);
            while left > 0 {
                if next_inside == me {
                    next_inside = match me.checked_add(1) {
                        Some(n) => n,
                        None => break,
                    };
                }
                // Up to `me` first, then everything after it.
                let room = if next_inside < me {
                    me - next_inside
                } else {
                    u32::MAX - next_inside
                };
                let n = left.min(room);
                if n == 0 {
                    break;
                }
                lines.push(MapLine {
                    inside: next_inside,
                    outside: start,
                    count: n,
                });
                next_inside += n;
                start += n;
                left -= n;
            }
        }
        lines.sort_by_key(|l| l.inside);
        IdMap { lines }
    }

    /// The host id of container id `inside`, if mapped.
    pub fn to_host(&self, inside: u32) -> Option<u32> {
        self.lines.iter().find_map(|l| {
            let off = inside.checked_sub(l.inside)?;
            (off < l.count).then(|| l.outside + off)
        })
    }

    /// The container id of host id `outside`, if mapped: the inverse the id-range property
    /// tests check `to_host` against. Nothing else needs it.
    #[cfg(test)]
    pub fn to_container(&self, outside: u32) -> Option<u32> {
        self.lines.iter().find_map(|l| {
            let off = outside.checked_sub(l.outside)?;
            (off < l.count).then(|| l.inside + off)
        })
    }

    /// The highest container id that is mapped.
    pub fn max_inside(&self) -> u32 {
        self.lines
            .iter()
            .map(|l| l.inside + (l.count - 1))
            .max()
            .unwrap_or(0)
    }

    /// The text written to `/proc/PID/uid_map`.
    pub fn proc_text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {} {}\n", l.inside, l.outside, l.count))
            .collect()
    }

    /// The arguments newuidmap/newgidmap take after the pid.
    pub fn helper_args(&self) -> Vec<String> {
        self.lines
            .iter()
            .flat_map(|l| {
                [
                    l.inside.to_string(),
                    l.outside.to_string(),
                    l.count.to_string(),
                ]
            })
            .collect()
    }
}

/// Parses /etc/subuid or /etc/subgid and returns the ranges of the user named `name` or with
/// numeric id `id`, in file order. Malformed lines are skipped.
pub fn parse_subid(text: &str, name: &str, id: u32) -> Vec<SubRange> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut f = line.split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            if f.next().is_some() || (who != name && who != id) {
                return None;
            }
            let start: u32 = start.trim().parse().ok()?;
            let count: u32 = count.trim().parse().ok()?;
            start.checked_add(count)?;
            (count > 0).then_some(SubRange { start, count })
        })
        .collect()
}

/// A setuid (or file-capability) id-mapping helper, found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helpers {
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

/// Finds newuidmap/newgidmap in the usual places and `PATH`, checking they can raise
/// privileges (setuid root or file capabilities); returns why not otherwise.
pub fn find_helpers() -> Result<Helpers, String> {
    let find = |name: &str| -> Result<PathBuf, String> {
        let mut dirs: Vec<PathBuf> = vec![
            "/usr/bin".into(),
            "/usr/sbin".into(),
            "/bin".into(),
            "/sbin".into(),
        ];
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p));
        }
        let path = dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                format!(
                    "{name} is not installed (apt-get install uidmap / dnf install shadow-utils)"
                )
            })?;
        if privileged_helper(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{} is neither setuid root nor has file capabilities",
                path.display()
            ))
        }
    };
    Ok(Helpers {
        newuidmap: find("newuidmap")?,
        newgidmap: find("newgidmap")?,
    })
}

fn privileged_helper(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let setuid_root = meta.mode() & 0o4000 != 0 && meta.uid() == 0;
    setuid_root || super::xattr::path_has("security.capability", path)
}

/// How this user's ids map into containers and the store, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// nook runs as real root: no user namespace is needed for the store.
    Root,
    /// A subordinate range, written with the setuid helpers.
    Range {
        helpers: Helpers,
        uids: IdMap,
        gids: IdMap,
    },
    /// Only the user's own id; `why` says what is missing for a range.
    Single { uid: u32, gid: u32, why: String },
}

impl Mapping {
    /// Finds the mapping for the calling user from /etc/subuid, /etc/subgid and the helpers.
    pub fn detect() -> Mapping {
        Self::detect_from(Path::new("/etc/subuid"), Path::new("/etc/subgid"))
    }

    pub fn detect_from(subuid: &Path, subgid: &Path) -> Mapping {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        if uid == 0 {
            return Mapping::Root;
        }
        let single = |why: String| Mapping::Single { uid, gid, why };
        let name = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let uranges = parse_subid(&read(subuid), &name, uid);
        let granges = parse_subid(&read(subgid), &name, uid);
        if uranges.is_empty() || granges.is_empty() {
            let which = if uranges.is_empty() { subuid } else { subgid };
            return single(format!(
                "no entry for {name} (uid {uid}) in {}",
                which.display()
            ));
        }
        match find_helpers() {
            Ok(helpers) => Mapping::Range {
                helpers,
                uids: IdMap::with_ranges(uid, &uranges),
                gids: IdMap::with_ranges(gid, &granges),
            },
            Err(why) => single(why),
        }
    }

    /// A stable one-line description, recorded in the store (`single`, `root`,
    /// `range:START:COUNT,...`).
    pub fn describe(&self) -> String {
        match self {
            Mapping::Root => "root".into(),
            Mapping::Single { .. } => "single".into(),
            Mapping::Range { uids, .. } => {
                let parts: Vec<String> = uids.lines[1..]
                    .iter()
                    .map(|l| format!("{}:{}", l.outside, l.count))
                    .collect();
                format!("range:{}", parts.join(","))
            }
        }
    }

    /// The highest container id that files may be owned by.
    pub fn max_id(&self) -> u32 {
        match self {
            Mapping::Root => u32::MAX - 1,
            Mapping::Range { uids, gids, .. } => uids.max_inside().min(gids.max_inside()),
            Mapping::Single { .. } => 0,
        }
    }
}

fn one(inside: u32, outside: u32) -> IdMap {
    IdMap {
        lines: vec![MapLine {
            inside,
            outside,
            count: 1,
        }],
    }
}

/// The id maps for a container of the caller `(uid, gid)`; `keep_id` is `--userns keep-id`;
/// `single` is the ids of the image's user for a single mapping (root when `None`).
pub fn container_maps(
    mapping: &Mapping,
    keep_id: bool,
    (uid, gid): (u32, u32),
    single: Option<(u32, u32)>,
) -> (IdMap, IdMap) {
    let ranges = |m: &IdMap| -> Vec<SubRange> {
        m.lines[1..]
            .iter()
            .map(|l| SubRange {
                start: l.outside,
                count: l.count,
            })
            .collect()
    };
    match (mapping, keep_id) {
        (Mapping::Root, _) => {
            let all = IdMap {
                lines: vec![MapLine {
                    inside: 0,
                    outside: 0,
                    count: u32::MAX,
                }],
            };
            (all.clone(), all)
        }
        (Mapping::Range { uids, gids, .. }, false) => (uids.clone(), gids.clone()),
        (Mapping::Range { uids, gids, .. }, true) => (
            IdMap::keep_id(uid, uid, &ranges(uids)),
            IdMap::keep_id(gid, gid, &ranges(gids)),
        ),
        (Mapping::Single { .. }, false) => {
            let (cu, cg) = single.unwrap_or((0, 0));
            (one(cu, uid), one(cg, gid))
        }
        (Mapping::Single { .. }, true) => (one(uid, uid), one(gid, gid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> Mapping {
        Mapping::Single {
            uid: 1000,
            gid: 100,
            why: String::new(),
        }
    }

    #[test]
    fn single_mapping_maps_the_image_user_to_the_caller() {
        let (u, g) = container_maps(&single(), false, (1000, 100), Some((1234, 50)));
        assert_eq!(u.proc_text(), "1234 1000 1\n");
        assert_eq!(g.proc_text(), "50 100 1\n");
        let (u, g) = container_maps(&single(), false, (1000, 100), None);
        assert_eq!(
            (u.proc_text(), g.proc_text()),
            ("0 1000 1\n".into(), "0 100 1\n".into())
        );
        let (u, g) = container_maps(&single(), true, (1000, 100), Some((1234, 50)));
        assert_eq!(
            (u.proc_text(), g.proc_text()),
            ("1000 1000 1\n".into(), "100 100 1\n".into())
        );
    }

    #[test]
    fn range_mapping_ignores_the_single_ids() {
        let helpers = Helpers {
            newuidmap: "/x".into(),
            newgidmap: "/y".into(),
        };
        let r = [SubRange {
            start: 100000,
            count: 65536,
        }];
        let m = Mapping::Range {
            helpers,
            uids: IdMap::with_ranges(1000, &r),
            gids: IdMap::with_ranges(100, &r),
        };
        let (u, _) = container_maps(&m, false, (1000, 100), Some((1234, 50)));
        assert_eq!(u, IdMap::with_ranges(1000, &r));
        let (u, _) = container_maps(&m, true, (1000, 100), None);
        assert_eq!(u.to_host(1000), Some(1000));
    }

    #[test]
    fn parses_by_name_and_id() {
        let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1001:300000:10\nbad line\nalice:500000:5\nalice:x:1\n";
        assert_eq!(
            parse_subid(text, "alice", 1000),
            vec![
                SubRange {
                    start: 100000,
                    count: 65536
                },
                SubRange {
                    start: 500000,
                    count: 5
                }
            ]
        );
        assert_eq!(
            parse_subid(text, "carol", 1001),
            vec![SubRange {
                start: 300000,
                count: 10
            }]
        );
        assert!(parse_subid(text, "nobody", 4242).is_empty());
        assert!(
            parse_subid("x:4294967295:2\n", "x", 1).is_empty(),
            "overflowing range accepted"
        );
        assert!(
            parse_subid("x:1:0\n", "x", 1).is_empty(),
            "empty range accepted"
        );
    }

    #[test]
    fn range_map_edges() {
        let m = IdMap::with_ranges(
            1000,
            &[SubRange {
                start: 100000,
                count: 65536,
            }],
        );
        assert_eq!(m.to_host(0), Some(1000));
        assert_eq!(m.to_host(1), Some(100000));
        assert_eq!(m.to_host(65536), Some(165535));
        assert_eq!(m.to_host(65537), None);
        assert_eq!(m.max_inside(), 65536);
        assert_eq!(m.to_container(1000), Some(0));
        assert_eq!(m.to_container(100000), Some(1));
        assert_eq!(m.to_container(165535), Some(65536));
        assert_eq!(m.to_container(165536), None);
        assert_eq!(m.to_container(99999), None);
        assert_eq!(m.proc_text(), "0 1000 1\n1 100000 65536\n");
        assert_eq!(m.helper_args(), ["0", "1000", "1", "1", "100000", "65536"]);
    }

    #[test]
    fn several_ranges_are_concatenated() {
        let m = IdMap::with_ranges(
            1000,
            &[
                SubRange {
                    start: 100,
                    count: 2,
                },
                SubRange {
                    start: 500,
                    count: 3,
                },
            ],
        );
        let host: Vec<_> = (0..7).map(|i| m.to_host(i)).collect();
        assert_eq!(
            host,
            [
                Some(1000),
                Some(100),
                Some(101),
                Some(500),
                Some(501),
                Some(502),
                None
            ]
        );
        for inside in 0..6 {
            assert_eq!(m.to_container(m.to_host(inside).unwrap()), Some(inside));
        }
    }

    #[test]
    fn map_roundtrip_property() {
        // Every mapped id maps back to itself, across many shapes of ranges.
        for n in 1..6u32 {
            let ranges: Vec<_> = (0..n)
                .map(|i| SubRange {
                    start: 10_000 * (i + 1),
                    count: i * 3 + 1,
                })
                .collect();
            let m = IdMap::with_ranges(7, &ranges);
            let total: u32 = 1 + ranges.iter().map(|r| r.count).sum::<u32>();
            assert_eq!(m.max_inside(), total - 1);
            for inside in 0..total {
                let h = m.to_host(inside).unwrap();
                assert_eq!(m.to_container(h), Some(inside));
            }
            assert_eq!(m.to_host(total), None);
        }
    }

    #[test]
    fn keep_id_puts_the_user_at_their_own_id() {
        let m = IdMap::keep_id(
            1000,
            1000,
            &[SubRange {
                start: 100000,
                count: 65536,
            }],
        );
        assert_eq!(m.to_host(1000), Some(1000));
        assert_eq!(m.to_host(0), Some(100000));
        assert_eq!(m.to_host(999), Some(100999));
        assert_eq!(m.to_host(1001), Some(101000));
        assert_eq!(m.to_host(65536), Some(165535));
        assert_eq!(m.to_host(65537), None);
        for inside in [0, 1, 999, 1000, 1001, 40000, 65536] {
            assert_eq!(m.to_container(m.to_host(inside).unwrap()), Some(inside));
        }
        assert!(
            m.lines
                .windows(2)
                .all(|w| w[0].inside + w[0].count <= w[1].inside),
            "lines overlap: {:?}",
            m.lines
        );
        let small = IdMap::keep_id(
            5000,
            5000,
            &[SubRange {
                start: 200,
                count: 10,
            }],
        );
        assert_eq!(small.to_host(5000), Some(5000));
        assert_eq!(small.to_host(9), Some(209));
        assert_eq!(small.to_host(10), None);
    }

    #[test]
    fn single_map() {
        let m = IdMap::single(1000);
        assert_eq!(m.to_host(0), Some(1000));
        assert_eq!(m.to_host(1), None);
        assert_eq!(m.max_inside(), 0);
    }
}
