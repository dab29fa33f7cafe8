//! Container ids (64 random hex characters, as docker's) and names (`--name`, or a generated
//! `adjective_name`).

use std::io::Read;

/// A new random container id.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return hex::encode(bytes);
    }
    // No /dev/urandom (a very bare chroot): time and pid still make ids unique here.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!("{}-{}", t.as_nanos(), std::process::id());
    crate::digest::Digest::sha256_of(seed.as_bytes())
        .hex()
        .to_owned()
}

/// docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "clever", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid",
    "merry", "nifty", "quiet", "rapid", "sharp", "stoic", "sunny", "tender", "vivid", "witty",
    "zealous", "bold", "cosmic", "dreamy",
];
const NAMES: &[&str] = &[
    "curie", "darwin", "euler", "fermi", "gauss", "hopper", "hypatia", "kepler", "lovelace",
    "meitner", "noether", "pascal", "ritchie", "shannon", "tesla", "turing", "wozniak", "yalow",
    "bohr", "dijkstra", "goodall", "knuth",
];

/// A docker-style name from the id's first bytes.
pub fn generate_name(id: &str) -> String {
    let n = u64::from_str_radix(id.get(..12).unwrap_or("0"), 16).unwrap_or(0);
    let a = ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize];
    let b = NAMES[((n / ADJECTIVES.len() as u64) % NAMES.len() as u64) as usize];
    format!("{a}_{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_distinct() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn names() {
        assert!(valid_name("web_1.a-b"));
        for bad in ["", "-x", "_x", "a b", "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let n = generate_name(&new_id());
        assert!(valid_name(&n) && n.contains('_'));
    }
}
