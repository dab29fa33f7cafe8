//! Apptainer's SIF files, read as hostile input: the global header, the descriptor table, and
//! the one descriptor nook runs from (the primary system partition, a squashfs). Layout from
//! github.com/apptainer/sif (`pkg/sif`): little-endian, Go's `binary` packing (no padding).
//!
//! Header (128 bytes): launch script [32], "SIF_MAGIC\0" [10], version [3], arch [3], uuid
//! [16], then eight i64: ctime, mtime, free descriptors, total descriptors, descriptors'
//! offset, descriptors' length, data offset, data length. Descriptor (585 bytes): datatype
//! i32, used u8, id, group, link u32, offset, size, size with padding, ctime, mtime, uid, gid
//! i64, name [128], extra [384] (for a partition: fs type i32, partition type i32, arch [3]).

use std::io::{self, Read, Seek, SeekFrom};

const HEADER_LEN: usize = 128;
const DESCRIPTOR_LEN: usize = 585;
const MAGIC: &[u8] = b"SIF_MAGIC\0";
/// Apptainer writes 48 descriptors; more than this is not a SIF anyone made.
const MAX_DESCRIPTORS: u64 = 1024;
const DATA_PARTITION: i32 = 0x4004;
const FS_SQUASH: i32 = 1;
const PART_SYSTEM: i32 = 1;
const PART_PRIMARY: i32 = 2;

/// Why a SIF file is refused.
#[derive(Debug, thiserror::Error)]
pub enum SifError {
    #[error("cannot read the SIF file")]
    Read(#[from] io::Error),
    #[error("not a SIF file (no SIF_MAGIC in its header)")]
    Magic,
    #[error("the SIF header is broken: {0}")]
    Header(String),
    #[error("the SIF file has no squashfs system partition nook can run")]
    NoPartition,
}

/// Where the squashfs partition lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub offset: u64,
    pub size: u64,
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_le_bytes(a)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a)
}

/// A field that must be a count or offset: not negative.
fn field(b: &[u8], at: usize, name: &str) -> Result<u64, SifError> {
    u64::try_from(i64_at(b, at)).map_err(|_| SifError::Header(format!("negative {name}")))
}

/// Whether the file starts like a SIF file.
pub fn is_sif(head: &[u8]) -> bool {
    head.len() >= 32 + MAGIC.len() && &head[32..32 + MAGIC.len()] == MAGIC
}

/// Finds the squashfs partition of a SIF file of `len` bytes: the primary system partition,
/// else the only system partition. Every offset and size is checked against the file.
pub fn squashfs_partition<R: Read + Seek>(r: &mut R, len: u64) -> Result<Partition, SifError> {
    let mut h = [0u8; HEADER_LEN];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut h).map_err(|_| SifError::Magic)?;
    if !is_sif(&h) {
        return Err(SifError::Magic);
    }
    let total = field(&h, 88, "descriptor count")?;
    let offset = field(&h, 96, "descriptor offset")?;
    if total == 0 || total > MAX_DESCRIPTORS {
        return Err(SifError::Header(format!(
            "{total} descriptors (at most {MAX_DESCRIPTORS})"
        )));
    }
    let table_end = total
        .checked_mul(DESCRIPTOR_LEN as u64)
        .and_then(|n| n.checked_add(offset))
        .filter(|end| *end <= len && offset >= HEADER_LEN as u64)
        .ok_or_else(|| SifError::Header("the descriptor table lies outside the file".into()))?;
    let mut table = vec![0u8; (table_end - offset) as usize];
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(&mut table)?;
    let mut found: Option<(bool, Partition)> = None;
    for d in table.chunks_exact(DESCRIPTOR_LEN) {
        let Some((primary, p)) = partition(d)? else {
            continue;
        };
        let end = p.offset.checked_add(p.size).filter(|e| *e <= len);
        if end.is_none() || p.offset < table_end || p.size == 0 {
            return Err(SifError::Header(format!(
                "the partition at {} ({} bytes) lies outside the file's data",
                p.offset, p.size
            )));
        }
        match found {
            Some((true, _)) if primary => {
                return Err(SifError::Header("two primary system partitions".into()));
            }
            Some((true, _)) => {}
            Some((false, _)) if !primary => {
                return Err(SifError::Header(
                    "several system partitions and none primary".into(),
                ));
            }
            _ => found = Some((primary, p)),
        }
    }
    found.map(|(_, p)| p).ok_or(SifError::NoPartition)
}

/// A used squashfs system partition's descriptor: whether it is the primary one, and where.
fn partition(d: &[u8]) -> Result<Option<(bool, Partition)>, SifError> {
    let used = d[4] != 0;
    if !used || i32_at(d, 0) != DATA_PARTITION {
        return Ok(None);
    }
    let extra = 4 + 1 + 4 * 3 + 8 * 7 + 128;
    let (fs, part) = (i32_at(d, extra), i32_at(d, extra + 4));
    if fs != FS_SQUASH || (part != PART_PRIMARY && part != PART_SYSTEM) {
        return Ok(None);
    }
    let offset = field(d, 17, "partition offset")?;
    let size = field(d, 25, "partition size")?;
    Ok(Some((part == PART_PRIMARY, Partition { offset, size })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A SIF file around `squashfs` (for tests and tools): a header, one primary system partition
    /// descriptor and the squashfs at offset 4096.
    fn wrap(squashfs: &[u8]) -> Vec<u8> {
        let data_off: i64 = 4096;
        let mut h = vec![0u8; HEADER_LEN];
        h[..31].copy_from_slice(b"#!/usr/bin/env run-singularity\n");
        h[32..42].copy_from_slice(MAGIC);
        h[42..44].copy_from_slice(b"01");
        h[45..47].copy_from_slice(b"02");
        let nums = [
            0,
            0,
            0,
            1,
            HEADER_LEN as i64,
            DESCRIPTOR_LEN as i64,
            data_off,
        ];
        for (i, n) in nums.iter().enumerate() {
            h[64 + 8 * i..72 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        h[120..128].copy_from_slice(&(squashfs.len() as i64).to_le_bytes());
        let mut d = vec![0u8; DESCRIPTOR_LEN];
        d[..4].copy_from_slice(&DATA_PARTITION.to_le_bytes());
        d[4] = 1;
        d[5..9].copy_from_slice(&1u32.to_le_bytes());
        d[17..25].copy_from_slice(&data_off.to_le_bytes());
        d[25..33].copy_from_slice(&(squashfs.len() as i64).to_le_bytes());
        d[33..41].copy_from_slice(&(squashfs.len() as i64).to_le_bytes());
        let extra = 4 + 1 + 4 * 3 + 8 * 7 + 128;
        d[extra..extra + 4].copy_from_slice(&FS_SQUASH.to_le_bytes());
        d[extra + 4..extra + 8].copy_from_slice(&PART_PRIMARY.to_le_bytes());
        d[extra + 8..extra + 10].copy_from_slice(b"02");
        let mut out = h;
        out.extend_from_slice(&d);
        out.resize(data_off as usize, 0);
        out.extend_from_slice(squashfs);
        out
    }

    fn parse(b: &[u8]) -> Result<Partition, SifError> {
        squashfs_partition(&mut Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn finds_the_partition_it_wrapped() {
        let sif = wrap(b"hsqs and more");
        assert_eq!(
            parse(&sif).unwrap(),
            Partition {
                offset: 4096,
                size: 13
            }
        );
    }

    #[test]
    fn refuses_a_file_without_magic() {
        assert!(matches!(parse(&[0u8; 200]), Err(SifError::Magic)));
        assert!(matches!(parse(b"short"), Err(SifError::Magic)));
    }

    #[test]
    fn refuses_a_partition_past_the_end() {
        let mut sif = wrap(b"hsqs");
        sif[128 + 25..128 + 33].copy_from_slice(&(1i64 << 40).to_le_bytes());
        assert!(matches!(parse(&sif), Err(SifError::Header(_))));
        let mut sif = wrap(b"hsqs");
        sif[128 + 17..128 + 25].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(matches!(parse(&sif), Err(SifError::Header(_))));
    }

    #[test]
    fn refuses_a_partition_over_the_descriptors() {
        let mut sif = wrap(b"hsqs");
        sif[128 + 17..128 + 25].copy_from_slice(&0i64.to_le_bytes());
        assert!(matches!(parse(&sif), Err(SifError::Header(_))));
    }

    #[test]
    fn refuses_huge_or_negative_counts() {
        for n in [1i64 << 40, -1, 0] {
            let mut sif = wrap(b"hsqs");
            sif[88..96].copy_from_slice(&n.to_le_bytes());
            assert!(matches!(parse(&sif), Err(SifError::Header(_))), "{n}");
        }
        let mut sif = wrap(b"hsqs");
        sif[96..104].copy_from_slice(&(1i64 << 50).to_le_bytes());
        assert!(matches!(parse(&sif), Err(SifError::Header(_))));
    }

    #[test]
    fn refuses_a_sif_without_a_squashfs_partition() {
        let mut sif = wrap(b"hsqs");
        sif[128 + 4] = 0;
        assert!(matches!(parse(&sif), Err(SifError::NoPartition)));
    }
}
