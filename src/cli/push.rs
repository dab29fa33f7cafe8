//! `nook push`: an image from the store to a registry (or, with a podman-style transport
//! prefix, to an archive — which `nook save` writes). Progress as docker draws it: a bar per
//! layer on a terminal, a line per layer state otherwise, nothing with `-q`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Session;
use crate::archive::{ArchiveFormat, SaveItem};
use crate::digest::Digest;
use crate::push::{
    BlobOutcome, BlobProgress, BlobState, LayerCompression, ManifestFormat, PushOptions,
    PushProgress, Pusher,
};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Verify the registry's TLS certificate (--tls-verify=false to skip).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Manifest format at the destination: oci or v2s2 (docker schema 2); default: as stored.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Recompress layers: gzip or zstd; default: as stored (uncompressed layers get gzip).
    #[arg(long, value_name = "ALGORITHM")]
    pub compression_format: Option<String>,
    /// Push every local tag of the repository.
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the pushed manifest's digest to this file.
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Image to push (name, name:tag or id).
    pub image: String,
    /// Where to push it: a reference, `docker://REF`, `oci-archive:PATH[:REF]`,
    /// `docker-archive:PATH[:REF]` or `oci:DIR[:REF]`; default IMAGE.
    pub dest: Option<String>,
}

fn parse_format(v: Option<&str>) -> Result<Option<ManifestFormat>> {
    Ok(match v {
        None => None,
        Some("oci") => Some(ManifestFormat::Oci),
        Some("v2s2" | "docker") => Some(ManifestFormat::V2s2),
        Some(other) => bail!("--format {other:?}: use oci or v2s2"),
    })
}

fn parse_compression(v: Option<&str>) -> Result<Option<LayerCompression>> {
    Ok(match v {
        None => None,
        Some("gzip") => Some(LayerCompression::Gzip),
        Some("zstd") => Some(LayerCompression::Zstd),
        Some(other) => bail!("--compression-format {other:?}: use gzip or zstd"),
    })
}

/// An archive a destination names (podman's transports): `oci-archive:PATH[:NAME]`,
/// `docker-archive:PATH[:NAME]`, `oci:DIR[:NAME]`.
fn archive_destination(dest: &str) -> Option<(ArchiveFormat, &str, Option<&str>)> {
    [
        ("oci-archive:", ArchiveFormat::OciArchive),
        ("docker-archive:", ArchiveFormat::DockerArchive),
        ("oci:", ArchiveFormat::OciDir),
    ]
    .into_iter()
    .find_map(|(prefix, format)| {
        let rest = dest.strip_prefix(prefix)?;
        let (path, name) = match rest.split_once(':') {
            Some((p, n)) => (p, Some(n).filter(|n| !n.is_empty())),
            None => (rest, None),
        };
        Some((format, path, name))
    })
}

/// The registry reference a destination names.
fn registry_destination(dest: &str) -> Result<Reference> {
    let r = dest.strip_prefix("docker://").unwrap_or(dest);
    Reference::parse(r).with_context(|| format!("destination {dest:?}"))
}

/// `nook push IMAGE oci-archive:PATH[:NAME]` and the like: what `nook save` writes, under NAME
/// (else IMAGE's name when it was named by one).
fn push_to_archive(
    session: &Session,
    a: &PushArgs,
    (format, path, name): (ArchiveFormat, &str, Option<&str>),
) -> Result<i32> {
    if a.all_tags {
        bail!("--all-tags pushes to a registry, not to an archive");
    }
    if path.is_empty() {
        bail!(
            "{}: name the archive's path",
            a.dest.as_deref().unwrap_or("")
        );
    }
    let store = session.store_without_userns()?;
    let image = store.find_image(&a.image)?;
    let named = match name {
        Some(n) => Some(Reference::parse(n).with_context(|| format!("archive name {n:?}"))?),
        None => Reference::parse(&a.image).ok().filter(|r| {
            r.digest().is_none()
                && !image
                    .id
                    .hex()
                    .starts_with(a.image.trim_start_matches("sha256:"))
        }),
    };
    let names = named
        .map(|r| format!("{}:{}", r.repository(), r.tag_or_latest()))
        .into_iter()
        .collect();
    let items = [SaveItem { image, names }];
    super::archive::save_to(&store, &items, format, std::path::Path::new(path))?;
    Ok(0)
}

/// `IMAGE` as its own destination, unless it names the image by id.
fn default_destination(image: &str, rec: &ImageRecord) -> Result<Reference> {
    let by_id = rec
        .id
        .hex()
        .starts_with(image.trim_start_matches("sha256:"));
    match Reference::parse(image) {
        Ok(r) if r.digest().is_none() && !by_id => Ok(r),
        _ => bail!("{image}: name a destination (nook push IMAGE REGISTRY/REPOSITORY[:TAG])"),
    }
}

/// The images to push, each with its destination.
fn targets(store: &Store, a: &PushArgs) -> Result<Vec<(ImageRecord, Reference)>> {
    let dest = a.dest.as_deref().map(registry_destination).transpose()?;
    if !a.all_tags {
        let rec = store.find_image(&a.image)?;
        let dest = match dest {
            Some(d) => d,
            None => default_destination(&a.image, &rec)?,
        };
        return Ok(vec![(rec, dest)]);
    }
    let repo = Reference::parse(&a.image)?;
    if a.image.contains('@') || repo.tag().is_some() {
        bail!("--all-tags takes a repository name without a tag or digest");
    }
    let target_repo = dest.unwrap_or_else(|| repo.clone());
    if target_repo.tag().is_some() || target_repo.digest().is_some() {
        bail!("--all-tags takes a destination repository without a tag or digest");
    }
    let mut out = Vec::new();
    for (rec, tags) in store.images()? {
        for t in tags {
            let Ok(r) = Reference::parse(&t) else {
                continue;
            };
            if r.repository() == repo.repository() {
                let d = Reference::parse(&format!(
                    "{}:{}",
                    target_repo.repository(),
                    r.tag_or_latest()
                ))?;
                out.push((rec.clone(), d));
            }
        }
    }
    if out.is_empty() {
        bail!("{}: no local tags of this repository", a.image);
    }
    out.sort_by_key(|(_, d)| d.to_string());
    Ok(out)
}

pub fn push(session: &mut Session, a: PushArgs) -> Result<i32> {
    if let Some(dest) = a.dest.as_deref().and_then(archive_destination) {
        return push_to_archive(session, &a, dest);
    }
    let options = PushOptions {
        format: parse_format(a.format.as_deref())?,
        compression: parse_compression(a.compression_format.as_deref())?,
        jobs: 0,
    };
    let store = session.store_without_userns()?;
    let targets = targets(&store, &a)?;
    let registry = session.registry(a.tls_verify);
    let progress = Bars::new(a.quiet);
    let pusher = Pusher {
        registry: &registry,
        store: &store,
        progress: &progress,
        options,
    };
    let mut said = None;
    for (rec, dest) in &targets {
        if said.as_ref() != Some(&dest.repository()) {
            progress.say(&format!(
                "The push refers to repository [{}]",
                dest.repository()
            ));
            said = Some(dest.repository());
        }
        let pushed = pusher
            .push(rec, dest)
            .with_context(|| format!("pushing {dest}"))?;
        let name = crate::events::familiar(&dest.to_string());
        crate::events::record(store.root(), "image", "push", &name, &[("name", &name)]);
        if !a.quiet {
            let name = match (dest.tag(), dest.digest()) {
                (Some(t), _) => t.to_owned(),
                (None, Some(_)) => pushed.digest.to_string(),
                (None, None) => "latest".to_owned(),
            };
            println!("{name}: digest: {} size: {}", pushed.digest, pushed.size);
        }
        if let Some(f) = &a.digestfile {
            std::fs::write(f, pushed.digest.to_string())
                .with_context(|| format!("cannot write {}", f.display()))?;
        }
    }
    Ok(0)
}

/// Push progress on stderr.
struct Bars {
    quiet: bool,
    multi: Option<MultiProgress>,
    lines: Mutex<()>,
}

struct BlobBar<'a> {
    parent: &'a Bars,
    short: String,
    bar: Option<ProgressBar>,
}

impl Bars {
    fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Bars {
            quiet,
            multi,
            lines: Mutex::new(()),
        }
    }
}

impl PushProgress for Bars {
    fn say(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let _guard = self.lines.lock();
                eprintln!("{text}");
            }
        }
    }

    fn blob(&self, digest: &Digest, size: u64) -> Box<dyn BlobProgress + '_> {
        let short = digest.short().to_owned();
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            let style = ProgressStyle::with_template(
                "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(short.clone());
            b.set_message(BlobState::Preparing.label());
            b
        });
        if bar.is_none() {
            self.say(&format!("{short}: {}", BlobState::Preparing.label()));
        }
        Box::new(BlobBar {
            parent: self,
            short,
            bar,
        })
    }
}

impl BlobProgress for BlobBar<'_> {
    fn status(&self, state: BlobState) {
        match &self.bar {
            Some(b) => b.set_message(state.label()),
            None if state == BlobState::Retrying => {
                self.parent
                    .say(&format!("{}: {}", self.short, state.label()));
            }
            None => {}
        }
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn done(&self, outcome: &BlobOutcome) {
        let msg = outcome.label();
        match &self.bar {
            Some(b) => {
                b.set_message(msg);
                b.finish();
            }
            None => self.parent.say(&format!("{}: {msg}", self.short)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_destinations_name_a_path_and_maybe_a_name() {
        assert_eq!(
            archive_destination("oci-archive:/tmp/x.tar"),
            Some((ArchiveFormat::OciArchive, "/tmp/x.tar", None))
        );
        assert_eq!(
            archive_destination("docker-archive:/tmp/x.tar:a:b"),
            Some((ArchiveFormat::DockerArchive, "/tmp/x.tar", Some("a:b")))
        );
        assert_eq!(
            archive_destination("oci:/tmp/dir"),
            Some((ArchiveFormat::OciDir, "/tmp/dir", None))
        );
        assert_eq!(archive_destination("docker://localhost:5000/a"), None);
        let r = registry_destination("docker://localhost:5000/a/b:t").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a/b:t");
    }

    #[test]
    fn flags_are_checked() {
        assert_eq!(
            parse_format(Some("oci")).unwrap(),
            Some(ManifestFormat::Oci)
        );
        assert!(
            parse_format(Some("v1"))
                .unwrap_err()
                .to_string()
                .contains("--format")
        );
        assert_eq!(
            parse_compression(Some("zstd")).unwrap(),
            Some(LayerCompression::Zstd)
        );
        assert!(parse_compression(Some("xz")).is_err());
    }
}
