//! `nook save` and `nook load`: images to and from docker and OCI archives.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Session;
use crate::archive::{self, ArchiveFormat, LoadProgress, SaveItem, SaveTarget};
use crate::reference::Reference;
use crate::store::Store;

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file (or directory, for oci-dir) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// docker-archive (default), oci-archive, oci-dir, or squashfs (one image flattened into
    /// one squashfs file for `nook run FILE.sqsh`; needs -o).
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    /// Images to save (names, name:tag or ids): a name without a tag saves every tag of that
    /// repository, an id saves the image without names.
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Show no progress; the loaded images are still named on stdout, as docker load -q does.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn save(session: &Session, a: SaveArgs) -> Result<i32> {
    if a.format == "squashfs" {
        return save_squashfs(session, &a);
    }
    let format: ArchiveFormat = a.format.parse().context("--format")?;
    let Some(store) = session.readable_store()? else {
        bail!("no such image: {} (the store is empty)", a.images[0]);
    };
    let items = save_items(&store, &a.images)?;
    match (format, &a.output) {
        (ArchiveFormat::OciDir, None) => bail!("--format oci-dir needs -o DIRECTORY"),
        (_, Some(path)) => save_to(&store, &items, format, path)?,
        (_, None) => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write an image archive to a terminal: give -o FILE or redirect stdout"
                );
            }
            let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
            archive::save(&store, &items, format, SaveTarget::Writer(&mut w))
                .context("saving to stdout")?;
            w.flush().context("saving to stdout")?;
        }
    }
    for i in &items {
        crate::events::image(
            store.root(),
            "save",
            &i.image.id.to_string(),
            i.names.first().map(String::as_str),
        );
    }
    Ok(0)
}

/// `nook save --format squashfs -o FILE IMAGE`.
fn save_squashfs(session: &Session, a: &SaveArgs) -> Result<i32> {
    let Some(out) = &a.output else {
        bail!("--format squashfs needs -o FILE");
    };
    let [image] = a.images.as_slice() else {
        bail!("--format squashfs saves one image: give one name");
    };
    let Some(store) = session.readable_store()? else {
        bail!("no such image: {image} (the store is empty)");
    };
    let rec = store.find_image(image)?;
    crate::archive::squash::save(&store, &session.mapping, &rec, out)
        .with_context(|| format!("saving {image} to {}", out.display()))?;
    crate::events::image(store.root(), "save", &rec.id.to_string(), Some(image));
    Ok(0)
}

/// Saves into the file (or, for oci-dir, the directory) `path`.
pub(super) fn save_to(
    store: &Store,
    items: &[SaveItem],
    format: ArchiveFormat,
    path: &Path,
) -> Result<()> {
    if format == ArchiveFormat::OciDir {
        return archive::save(store, items, format, SaveTarget::Dir(path))
            .with_context(|| format!("saving to {}", path.display()));
    }
    save_file(store, items, format, path)
}

/// Saves into `path`, which is removed again if the save fails.
fn save_file(store: &Store, items: &[SaveItem], format: ArchiveFormat, path: &Path) -> Result<()> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let res = archive::save(store, items, format, SaveTarget::Writer(&mut w))
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(w.flush()?));
    if let Err(e) = res {
        let _ = std::fs::remove_file(path);
        return Err(e.context(format!("saving to {}", path.display())));
    }
    Ok(())
}

/// The images `queries` name, each once, with the names it goes under.
fn save_items(store: &Store, queries: &[String]) -> Result<Vec<SaveItem>> {
    let all = store.images()?;
    let mut items: Vec<SaveItem> = Vec::new();
    let mut add = |rec: &crate::store::ImageRecord, name: Option<&String>| {
        let i = match items.iter().position(|i| i.image.id == rec.id) {
            Some(i) => i,
            None => {
                items.push(SaveItem {
                    image: rec.clone(),
                    names: Vec::new(),
                });
                items.len() - 1
            }
        };
        if let Some(n) = name.filter(|n| !items[i].names.contains(n)) {
            items[i].names.push(n.clone());
        }
    };
    for q in queries {
        let by_name = Reference::parse(q).ok().filter(|r| r.digest().is_none());
        let mut found = false;
        if let Some(r) = &by_name {
            let wanted = |t: &String| match r.tag() {
                Some(_) => r.tagged().as_ref() == Some(t),
                None => Reference::parse(t).is_ok_and(|x| x.repository() == r.repository()),
            };
            for (rec, tags) in &all {
                for t in tags.iter().filter(|t| wanted(t)) {
                    add(rec, Some(t));
                    found = true;
                }
            }
        }
        if !found {
            let rec = store.find_image(q)?;
            add(&rec, None);
        }
    }
    Ok(items)
}

/// Load progress: lines on stderr when it is a terminal, nothing otherwise.
struct Lines(bool);

impl LoadProgress for Lines {
    fn say(&self, text: &str) {
        if self.0 {
            eprintln!("{text}");
        }
    }
}

pub fn load(session: &mut Session, a: LoadArgs) -> Result<i32> {
    let mut input: Box<dyn Read> = match &a.input {
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
        None => {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                bail!("no archive on stdin: give -i FILE or redirect stdin");
            }
            Box::new(stdin.lock())
        }
    };
    let (store, owners) = session.writable_store()?;
    let progress = Lines(!a.quiet && io::stderr().is_terminal());
    let loaded =
        archive::load(&store, owners, &mut input, &progress).context("loading the archive")?;
    for l in loaded {
        let id = l.id.to_string();
        crate::events::image(
            store.root(),
            "load",
            &id,
            l.names.first().map(String::as_str),
        );
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.id);
        }
        for n in &l.names {
            println!("Loaded image: {}", familiar(n));
        }
    }
    Ok(0)
}

/// `busybox:latest` for `docker.io/library/busybox:latest`, as docker prints names.
fn familiar(name: &str) -> String {
    match Reference::parse(name) {
        Ok(r) => format!("{}:{}", r.familiar_repository(), r.tag_or_latest()),
        Err(_) => name.to_owned(),
    }
}
