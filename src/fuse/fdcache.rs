//! How many descriptors the FUSE server may keep, and the bounded cache that keeps them.
//!
//! The server caches directory handles and open backing files so that a lookup or a read does
//! not open its way down from a layer's root every time. Whatever the tree's size, those caches
//! stay within a share of the process's descriptor limit: when one is full, its least recently
//! used quarter goes (an entry a request still holds is an `Arc`, closed when that request is
//! done), and a later use reopens it through the layer's root-confined handle.

use std::collections::HashMap;
use std::hash::Hash;

/// Each of the two caches (directories, files) gets this share of the soft limit...
const SHARE: u64 = 4;
/// ...but never fewer entries than this (a tiny limit still serves)...
const FLOOR: usize = 64;
/// ...nor more than this (a huge limit is no reason to pin a whole tree open).
const CEILING: usize = 16384;

/// Raises this process's soft descriptor limit to its hard limit, as container engines do for
/// their long-running servers; returns the soft limit now in force. Processes started before
/// (the container) keep theirs.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(soft.max(hard))
}

/// The capacity of one descriptor cache under a soft limit of `soft`.
pub fn capacity_for(soft: u64) -> usize {
    usize::try_from(soft / SHARE)
        .unwrap_or(CEILING)
        .clamp(FLOOR, CEILING)
}

/// The capacity of one descriptor cache under this process's soft limit now.
pub fn capacity() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    capacity_for(soft)
}

/// A map of at most `cap` entries that drops its least recently used quarter when full.
#[derive(Debug)]
pub struct Lru<K, V> {
    cap: usize,
    clock: u64,
    map: HashMap<K, (V, u64)>,
}

impl<K: Hash + Eq, V> Lru<K, V> {
    pub fn new(cap: usize) -> Lru<K, V> {
        Lru {
            cap: cap.max(1),
            clock: 0,
            map: HashMap::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The entry of `k`, now the most recently used.
    pub fn get(&mut self, k: &K) -> Option<&V> {
        let now = self.tick();
        let (v, used) = self.map.get_mut(k)?;
        *used = now;
        Some(v)
    }

    /// Adds or replaces the entry of `k`, making room first.
    pub fn insert(&mut self, k: K, v: V) {
        if self.map.len() >= self.cap && !self.map.contains_key(&k) {
            self.evict();
        }
        let now = self.tick();
        self.map.insert(k, (v, now));
    }

    /// Drops the least recently used quarter (at least one entry).
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.map.values().map(|(_, used)| *used).collect();
        let n = (ages.len() / 4).max(1);
        if ages.is_empty() {
            return;
        }
        let (_, cut, _) = ages.select_nth_unstable(n - 1);
        let cut = *cut;
        self.map.retain(|_, (_, used)| *used > cut);
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.map.remove(k).map(|(v, _)| v)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_share_of_the_limit_within_bounds() {
        assert_eq!(capacity_for(1024), 256);
        assert_eq!(capacity_for(4096), 1024);
        assert_eq!(capacity_for(16), FLOOR, "a tiny limit keeps the floor");
        assert_eq!(
            capacity_for(u64::MAX),
            CEILING,
            "an unlimited one the ceiling"
        );
        assert!(
            2 * capacity_for(1024) < 1024,
            "both caches together leave room for everything else"
        );
    }

    #[test]
    fn a_full_cache_drops_its_least_recently_used_entries() {
        let mut c = Lru::new(8);
        for i in 0..8 {
            c.insert(i, i);
        }
        // 0 and 1 are used again: 2 and 3 are now the oldest.
        assert_eq!(c.get(&0), Some(&0));
        assert_eq!(c.get(&1), Some(&1));
        c.insert(100, 100);
        assert!(c.len() <= 8);
        assert_eq!(c.get(&2), None);
        assert_eq!(c.get(&3), None);
        for k in [0, 1, 4, 5, 6, 7, 100] {
            assert_eq!(c.get(&k), Some(&k), "{k} stays");
        }
        for i in 1000..10_000 {
            c.insert(i, i);
            assert!(c.len() <= 8, "never more than the capacity");
        }
        c.insert(5000, 1);
        assert_eq!(c.remove(&5000), Some(1));
    }
}
