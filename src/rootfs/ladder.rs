//! The rootfs ladder in one place: which rung a run takes ([`choose`], a pure decision on
//! what the caller found out about the host), the rung below a refused one, and the plan
//! for the init to mount. `nook run` and `nook info` both ask [`choose`], so what `info`
//! says is what `run` does.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::OverlayProbe;
use crate::sandbox::plan::RootfsPlan;
use crate::sandbox::spec::Driver;
use crate::store::{ImageRecord, Store};

/// A rung of the ladder, as records, the init's report and `nook inspect` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rung {
    /// The kernel's overlayfs in the user namespace.
    Overlay,
    /// nook's FUSE overlay.
    Fuse,
    /// A private copy of the layers.
    Copy,
}

impl Rung {
    pub fn as_str(self) -> &'static str {
        match self {
            Rung::Overlay => "overlay",
            Rung::Fuse => "fuse",
            Rung::Copy => "copy",
        }
    }

    /// The rung below this one: FUSE where this user can open /dev/fuse, else the copy.
    pub fn below(self, fuse: bool) -> Rung {
        match self {
            Rung::Overlay if fuse => Rung::Fuse,
            _ => Rung::Copy,
        }
    }
}

impl std::fmt::Display for Rung {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the choice depends on, found out by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// `--rootfs-driver`.
    pub driver: Driver,
    /// The filesystem the store is on, when overlay cannot keep an upper layer there
    /// ([`super::unsuitable_fs`]).
    pub store_fs: Option<&'a str>,
    /// What a run (or `nook info`) found out about the kernel overlay, if anything yet.
    pub probe: Option<&'a OverlayProbe>,
    /// Only one id is mapped.
    pub single: bool,
    /// This user can open /dev/fuse ([`super::fuse_usable`]).
    pub fuse: bool,
    /// Some of the image's layers are in a shared store and belong to another user
    /// ([`Store::foreign_layers`]): the kernel overlay could not copy their files up.
    pub shared: bool,
}

/// The rung to take, and why a higher one is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub rung: Rung,
    pub why: Option<String>,
}

impl Choice {
    /// The choice in words, as `nook info` shows it.
    pub fn describe(&self) -> String {
        match &self.why {
            Some(why) => format!("{} ({why})", self.rung),
            None => self.rung.to_string(),
        }
    }
}

/// Picks the rung: the one `--rootfs-driver` names, or for `auto` the highest the host allows.
pub fn choose(i: Inputs<'_>) -> Choice {
    let take = |rung, why: Option<String>| Choice { rung, why };
    match i.driver {
        Driver::Overlay => take(Rung::Overlay, None),
        Driver::Fuse => take(Rung::Fuse, None),
        Driver::Copy => take(Rung::Copy, None),
        Driver::Auto => {
            if let Some(fs) = i.store_fs {
                let why =
                    format!("the store is on {fs}, where overlayfs cannot keep an upper layer");
                return take(Rung::Overlay.below(i.fuse), Some(why));
            }
            if i.shared {
                let why = "the image is in a shared store of another user's, whose files the \
                           kernel overlay cannot copy up";
                return take(Rung::Overlay.below(i.fuse), Some(why.into()));
            }
            match i.probe {
                Some(OverlayProbe::Refused(why)) => take(
                    Rung::Overlay.below(i.fuse),
                    Some(format!("the kernel refuses overlayfs here: {why}")),
                ),
                // With one id mapped only nook's FUSE overlay can show the image's owners.
                _ if i.single && i.fuse => take(
                    Rung::Fuse,
                    Some(
                        "one id mapped: nook's FUSE overlay shows the image's owners; \
                         --rootfs-driver overlay for the kernel's"
                            .into(),
                    ),
                ),
                _ => take(Rung::Overlay, None),
            }
        }
    }
}

/// The image's layers as overlay lower directories: top first, relative to `layers/` (a
/// shared store's by their whole path).
pub fn overlay_lowers(store: &Store, image: &ImageRecord) -> Vec<String> {
    image
        .layers
        .iter()
        .rev()
        .map(|l| {
            let root = store.layer_root(&l.diff_id);
            match root.strip_prefix(store.root().join("layers")) {
                Ok(rel) => rel.display().to_string(),
                Err(_) => root.display().to_string(),
            }
        })
        .collect()
}

/// What the init mounts on `rung` for a container whose store directory is `dir`.
pub fn plan(store: &Store, image: &ImageRecord, dir: &Path, rung: Rung) -> RootfsPlan {
    match rung {
        Rung::Overlay => RootfsPlan::Overlay {
            layers_dir: store.root().join("layers"),
            lowers: overlay_lowers(store, image),
            upper: dir.join("upper"),
            work: dir.join("work"),
        },
        Rung::Fuse => RootfsPlan::Fuse {
            lowers: image
                .layers
                .iter()
                .rev()
                .map(|l| store.layer_root(&l.diff_id))
                .collect(),
            upper: dir.join("upper"),
            work: dir.join("work"),
        },
        Rung::Copy => RootfsPlan::Copy {
            layers: image
                .layers
                .iter()
                .map(|l| store.layer_root(&l.diff_id))
                .collect(),
            dest: dir.join("rootfs"),
        },
    }
}

/// A record's rung, `""` before the container first ran (the records' format since
/// version 1).
pub mod or_empty {
    use super::Rung;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Option<Rung>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.map_or("", Rung::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rung>, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "" => Ok(None),
            "overlay" => Ok(Some(Rung::Overlay)),
            "fuse" => Ok(Some(Rung::Fuse)),
            "copy" => Ok(Some(Rung::Copy)),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["", "overlay", "fuse", "copy"],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> Inputs<'static> {
        Inputs {
            driver: Driver::Auto,
            store_fs: None,
            probe: None,
            single: false,
            fuse: true,
            shared: false,
        }
    }

    #[test]
    fn a_named_driver_is_taken_whatever_the_host() {
        let refused = OverlayProbe::Refused("EPERM".into());
        for (driver, rung) in [
            (Driver::Overlay, Rung::Overlay),
            (Driver::Fuse, Rung::Fuse),
            (Driver::Copy, Rung::Copy),
        ] {
            let c = choose(Inputs {
                driver,
                store_fs: Some("NFS"),
                probe: Some(&refused),
                single: true,
                fuse: false,
                shared: true,
            });
            assert_eq!(c, Choice { rung, why: None });
        }
    }

    #[test]
    fn auto_takes_overlay_until_the_host_says_otherwise() {
        assert_eq!(choose(auto()).rung, Rung::Overlay, "not probed yet");
        let works = OverlayProbe::Works;
        let c = choose(Inputs {
            probe: Some(&works),
            ..auto()
        });
        assert_eq!(c.describe(), "overlay");
        let c = choose(Inputs {
            single: true,
            fuse: false,
            ..auto()
        });
        assert_eq!(c.rung, Rung::Overlay, "one id, no /dev/fuse");
    }

    #[test]
    fn auto_steps_down_for_the_store_the_kernel_and_one_id() {
        let refused = OverlayProbe::Refused("EPERM".into());
        let on_nfs = choose(Inputs {
            store_fs: Some("NFS"),
            probe: Some(&refused),
            ..auto()
        });
        assert!(on_nfs.describe().starts_with("fuse (the store is on NFS"));
        let c = choose(Inputs {
            probe: Some(&refused),
            fuse: false,
            ..auto()
        });
        assert!(
            c.describe()
                .starts_with("copy (the kernel refuses overlayfs here: EPERM")
        );
        let c = choose(Inputs {
            single: true,
            ..auto()
        });
        assert!(c.describe().starts_with("fuse (one id mapped"));
        let c = choose(Inputs {
            shared: true,
            ..auto()
        });
        assert!(
            c.describe()
                .starts_with("fuse (the image is in a shared store")
        );
    }

    #[test]
    fn below_overlay_is_fuse_where_usable_and_below_that_the_copy() {
        assert_eq!(Rung::Overlay.below(true), Rung::Fuse);
        assert_eq!(Rung::Overlay.below(false), Rung::Copy);
        assert_eq!(Rung::Fuse.below(true), Rung::Copy);
    }

    #[test]
    fn rungs_serialise_as_the_old_strings() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct R {
            #[serde(with = "or_empty")]
            driver: Option<Rung>,
        }
        for (r, text) in [
            (None, r#"{"driver":""}"#),
            (Some(Rung::Overlay), r#"{"driver":"overlay"}"#),
            (Some(Rung::Fuse), r#"{"driver":"fuse"}"#),
            (Some(Rung::Copy), r#"{"driver":"copy"}"#),
        ] {
            assert_eq!(serde_json::to_string(&R { driver: r }).unwrap(), text);
            assert_eq!(serde_json::from_str::<R>(text).unwrap(), R { driver: r });
        }
        assert!(serde_json::from_str::<R>(r#"{"driver":"zfs"}"#).is_err());
        assert_eq!(serde_json::to_string(&Rung::Fuse).unwrap(), r#""fuse""#);
    }
}
