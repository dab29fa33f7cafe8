//! The overlay's inode table: what each inode number stands for.
//!
//! Nodes are kept for the life of the mount, so an inode number never changes and is never
//! reused (tools compare them across calls). A node knows its parent and name, not its path:
//! a path is rebuilt from the parents when needed, so renaming a directory moves everything
//! below it at no cost. Lower files with several hard links share one node (and one inode
//! number) through their (layer, backing inode) identity.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

use super::layers::Layer;

/// The root's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// What kind of object a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            _ => Kind::File,
        }
    }

    /// The name containers/storage uses in the override xattr.
    pub fn override_name(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "pipe",
            Kind::Socket => "socket",
            Kind::Char => "char",
            Kind::Block => "block",
        }
    }
}

/// Owner and mode as the container should see them, when the disk cannot hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, setuid, setgid and sticky included.
    pub mode: u32,
}

/// One object of the merged tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub parent: u64,
    pub name: OsString,
    pub kind: Kind,
    /// It exists in the upper layer.
    pub upper: bool,
    /// Lower layers holding it, top first: for a directory every layer merged below the upper
    /// (up to an opaque one), for anything else the one whose copy shows.
    pub lowers: Vec<usize>,
    pub owner: Option<Owner>,
    /// (lower layer, backing inode) of a lower file with several links.
    pub link: Option<(usize, u64)>,
    /// Other names of a hard-linked node: (parent, name).
    pub aliases: Vec<(u64, OsString)>,
    pub lookups: u64,
    /// Its last name is gone: it lives on only while the kernel holds it (and has no path).
    pub unlinked: bool,
    /// The stat of its lower copy, while that is the visible one (lower layers never change).
    pub stat: Option<libc::stat>,
    /// Where an unlinked file's data still is: its lower copy, or a link in the work directory.
    pub orphan: Option<(Layer, PathBuf)>,
}

impl Node {
    /// A node of `kind` at (parent, name), in no layer yet and unknown to the kernel.
    pub fn new(parent: u64, name: OsString, kind: Kind) -> Node {
        Node {
            parent,
            name,
            kind,
            upper: false,
            lowers: vec![],
            owner: None,
            link: None,
            aliases: vec![],
            lookups: 0,
            unlinked: false,
            stat: None,
            orphan: None,
        }
    }

    /// The layer whose copy is visible.
    pub fn top(&self) -> Option<Layer> {
        if self.upper {
            Some(Layer::Upper)
        } else {
            self.lowers.first().map(|i| Layer::Lower(*i))
        }
    }

    /// Whether any lower layer has it (so removing it needs a whiteout).
    pub fn in_lower(&self) -> bool {
        !self.lowers.is_empty()
    }
}

/// The table.
#[derive(Debug)]
pub struct Table {
    nodes: HashMap<u64, Node>,
    children: HashMap<(u64, OsString), u64>,
    links: HashMap<(usize, u64), u64>,
    next: u64,
}

impl Table {
    pub fn new(root: Node) -> Table {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, root);
        Table {
            nodes,
            children: HashMap::new(),
            links: HashMap::new(),
            next: ROOT + 1,
        }
    }

    /// Every inode the table holds.
    pub fn inodes(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    #[cfg(test)]
    pub fn child(&self, parent: u64, name: &OsString) -> Option<u64> {
        self.children.get(&(parent, name.clone())).copied()
    }

    /// Records `node` under its parent and name, reusing the inode of a known hard link or of
    /// the node already there; returns the inode number.
    pub fn insert(&mut self, node: Node) -> u64 {
        let key = (node.parent, node.name.clone());
        if let Some(&ino) = self.children.get(&key)
            && let Some(existing) = self.nodes.get_mut(&ino)
        {
            // Refresh what may have changed below us (a copy-up, an opaque marker).
            existing.kind = node.kind;
            existing.upper = node.upper;
            existing.lowers = node.lowers;
            existing.owner = node.owner;
            existing.stat = node.stat;
            return ino;
        }
        if let Some(link) = node.link
            && let Some(&ino) = self.links.get(&link)
            && let Some(existing) = self.nodes.get_mut(&ino)
        {
            if (existing.parent, &existing.name) != (node.parent, &node.name)
                && !existing.aliases.contains(&key)
            {
                existing.aliases.push(key.clone());
            }
            self.children.insert(key, ino);
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        if let Some(link) = node.link {
            self.links.insert(link, ino);
        }
        self.children.insert(key, ino);
        self.nodes.insert(ino, node);
        ino
    }

    /// Adds another name for an existing node (a new hard link).
    pub fn alias(&mut self, ino: u64, parent: u64, name: OsString) {
        self.children.insert((parent, name.clone()), ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.aliases.push((parent, name));
        }
    }

    /// The node's path relative to the layer roots.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut parts = Vec::new();
        let mut cur = ino;
        let mut depth = 0;
        while cur != ROOT {
            let n = self.nodes.get(&cur)?;
            if n.unlinked {
                return None;
            }
            parts.push(n.name.clone());
            cur = n.parent;
            depth += 1;
            if depth > 4096 {
                return None;
            }
        }
        Some(parts.iter().rev().collect())
    }

    /// Removes the name (parent, name); the node lives on for open handles and its number.
    pub fn detach(&mut self, parent: u64, name: &OsString) {
        let Some(ino) = self.children.remove(&(parent, name.clone())) else {
            return;
        };
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if (n.parent, &n.name) == (parent, name) {
            match n.aliases.pop() {
                Some((p, nm)) => {
                    n.parent = p;
                    n.name = nm;
                }
                None => n.unlinked = true,
            }
        } else {
            n.aliases.retain(|a| a != &(parent, name.clone()));
        }
    }

    /// Swaps the nodes at two names (RENAME_EXCHANGE).
    pub fn exchange(&mut self, a: (u64, &OsString), b: (u64, &OsString)) {
        let (ka, kb) = ((a.0, a.1.clone()), (b.0, b.1.clone()));
        let (Some(ia), Some(ib)) = (
            self.children.get(&ka).copied(),
            self.children.get(&kb).copied(),
        ) else {
            return;
        };
        self.children.insert(ka.clone(), ib);
        self.children.insert(kb.clone(), ia);
        for (ino, from, to) in [(ia, &ka, &kb), (ib, &kb, &ka)] {
            if let Some(n) = self.nodes.get_mut(&ino) {
                if (n.parent, &n.name) == (from.0, &from.1) {
                    n.parent = to.0;
                    n.name = to.1.clone();
                } else if let Some(al) = n.aliases.iter_mut().find(|al| **al == *from) {
                    *al = to.clone();
                }
            }
        }
    }

    /// Moves the node at (parent, name) to (new_parent, new_name), detaching what was there.
    pub fn rename(&mut self, parent: u64, name: &OsString, new_parent: u64, new_name: &OsString) {
        self.detach(new_parent, new_name);
        let Some(ino) = self.children.remove(&(parent, name.clone())) else {
            return;
        };
        self.children.insert((new_parent, new_name.clone()), ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            if (n.parent, &n.name) == (parent, name) {
                n.parent = new_parent;
                n.name = new_name.clone();
            } else if let Some(a) = n.aliases.iter_mut().find(|a| (a.0, &a.1) == (parent, name)) {
                *a = (new_parent, new_name.clone());
            }
        }
    }

    /// Names of a node, its main one first.
    pub fn names(&self, ino: u64) -> Vec<(u64, OsString)> {
        self.nodes.get(&ino).map_or_else(Vec::new, |n| {
            let mut v = vec![(n.parent, n.name.clone())];
            v.extend(n.aliases.iter().cloned());
            v
        })
    }

    /// Drops `n` kernel references; an unlinked node the kernel no longer holds is removed
    /// and returned (its orphan may go).
    pub fn forget(&mut self, ino: u64, n: u64) -> Option<Node> {
        let node = self.nodes.get_mut(&ino)?;
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            // The kernel let it go: a later lookup stats it again.
            node.stat = None;
        }
        if node.lookups == 0 && node.unlinked {
            let dead = self.nodes.remove(&ino)?;
            if let Some(l) = dead.link {
                self.links.remove(&l);
            }
            return Some(dead);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(parent: u64, name: &str, kind: Kind) -> Node {
        Node {
            lowers: vec![0],
            lookups: 1,
            ..Node::new(parent, name.into(), kind)
        }
    }

    #[test]
    fn paths_follow_renames() {
        let mut t = Table::new(node(ROOT, "", Kind::Dir));
        let a = t.insert(node(ROOT, "a", Kind::Dir));
        let b = t.insert(node(a, "b", Kind::Dir));
        let f = t.insert(node(b, "f", Kind::File));
        assert_eq!(t.path(f).unwrap(), PathBuf::from("a/b/f"));
        t.rename(ROOT, &"a".into(), ROOT, &"z".into());
        assert_eq!(t.path(f).unwrap(), PathBuf::from("z/b/f"));
        assert_eq!(
            t.insert(node(b, "f", Kind::File)),
            f,
            "the same name keeps its inode"
        );
        assert_eq!(t.child(ROOT, &"a".into()), None);
    }

    #[test]
    fn hard_links_share_an_inode_and_survive_unlink() {
        let mut t = Table::new(node(ROOT, "", Kind::Dir));
        let mut x = node(ROOT, "x", Kind::File);
        x.link = Some((0, 77));
        let mut y = node(ROOT, "y", Kind::File);
        y.link = Some((0, 77));
        let ix = t.insert(x);
        let iy = t.insert(y);
        assert_eq!(ix, iy);
        t.detach(ROOT, &"x".into());
        assert_eq!(
            t.path(ix).unwrap(),
            PathBuf::from("y"),
            "the other name takes over"
        );
        let other = t.insert(node(ROOT, "z", Kind::File));
        assert!(other > ix, "numbers are never reused");
    }
}
