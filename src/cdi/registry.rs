//! The spec directories, loaded: qualified names → the devices (and their specs) that
//! provide them. A directory later in the list wins over an earlier one; two specs of one
//! directory naming the same device are a conflict. Broken spec files are kept aside and
//! named when a device cannot be found, so that one bad file does not stop every run.

use std::path::PathBuf;

use super::spec::{self, Device, Spec};
use super::{CdiError, QualifiedName};

/// A spec directory holds at most this many files that are read.
const MAX_FILES: usize = 1024;

/// One loaded spec.
#[derive(Debug)]
pub struct Loaded {
    pub spec: Spec,
    pub path: PathBuf,
    /// The index of its directory: higher wins.
    pub priority: usize,
}

/// A device chosen for a run: index of its spec in the registry, and the device.
#[derive(Debug, Clone, Copy)]
pub struct Chosen<'a> {
    pub spec: usize,
    pub loaded: &'a Loaded,
    pub device: &'a Device,
}

/// Every spec of the directories.
#[derive(Debug, Default)]
pub struct Registry {
    pub specs: Vec<Loaded>,
    /// Files that could not be used, and why.
    pub broken: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Registry {
    /// Loads `*.json`, `*.yaml` and `*.yml` from each directory (missing ones are skipped).
    pub fn load(dirs: &[PathBuf]) -> Registry {
        let mut reg = Registry {
            dirs: dirs.to_vec(),
            ..Registry::default()
        };
        for (priority, dir) in dirs.iter().enumerate() {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
                    })
                    .take(MAX_FILES)
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    reg.broken.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            files.sort();
            for path in files {
                match spec::load(&path) {
                    Ok(spec) => reg.specs.push(Loaded {
                        spec,
                        path,
                        priority,
                    }),
                    Err(e) => reg.broken.push(e.to_string()),
                }
            }
        }
        reg
    }

    fn dirs_text(&self) -> String {
        let d: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        if d.is_empty() {
            "no directory".into()
        } else {
            d.join(", ")
        }
    }

    fn unknown(&self, device: String) -> CdiError {
        CdiError::Unknown {
            device,
            dirs: self.dirs_text(),
            broken: if self.broken.is_empty() {
                String::new()
            } else {
                format!(" (not read: {})", self.broken.join("; "))
            },
        }
    }

    /// The device `kind=name` from the highest directory that defines it.
    fn one(&self, kind: &str, name: &str) -> Result<Option<Chosen<'_>>, CdiError> {
        let mut best: Option<Chosen<'_>> = None;
        for (i, l) in self.specs.iter().enumerate() {
            if l.spec.kind != kind {
                continue;
            }
            let Some(device) = l.spec.devices.iter().find(|d| d.name == name) else {
                continue;
            };
            match best {
                Some(b) if b.loaded.priority == l.priority => {
                    return Err(CdiError::Conflict {
                        device: format!("{kind}={name}"),
                        first: b.loaded.path.display().to_string(),
                        second: l.path.display().to_string(),
                    });
                }
                Some(b) if b.loaded.priority > l.priority => {}
                _ => {
                    best = Some(Chosen {
                        spec: i,
                        loaded: l,
                        device,
                    })
                }
            }
        }
        Ok(best)
    }

    /// The names of every device of `kind`, sorted and without duplicates.
    fn names_of(&self, kind: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .specs
            .iter()
            .filter(|l| l.spec.kind == kind)
            .flat_map(|l| l.spec.devices.iter().map(|d| d.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The devices for `names`, each once; `all` is the spec's own device of that name, else
    /// every device of the kind.
    pub fn devices(&self, names: &[QualifiedName]) -> Result<Vec<Chosen<'_>>, CdiError> {
        let mut out: Vec<Chosen<'_>> = Vec::new();
        for n in names {
            let found: Vec<Chosen<'_>> = match self.one(&n.kind, &n.name)? {
                Some(c) => vec![c],
                None if n.name == "all" => {
                    let mut all = Vec::new();
                    for name in self.names_of(&n.kind) {
                        all.extend(self.one(&n.kind, name)?);
                    }
                    all
                }
                None => vec![],
            };
            if found.is_empty() {
                return Err(self.unknown(n.to_string()));
            }
            for c in found {
                let seen = out
                    .iter()
                    .any(|o| o.spec == c.spec && o.device.name == c.device.name);
                if !seen {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// `--gpus` → names of the `nvidia.com/gpu` kind.
    pub fn gpus(&self, req: &GpuRequest) -> Result<Vec<QualifiedName>, CdiError> {
        const KIND: &str = "nvidia.com/gpu";
        let names = self.names_of(KIND);
        if names.is_empty() {
            return Err(CdiError::NoGpuSpec {
                dirs: self.dirs_text(),
            });
        }
        let q = |name: &str| QualifiedName {
            kind: KIND.into(),
            name: name.to_owned(),
        };
        match req {
            GpuRequest::All => Ok(vec![q("all")]),
            GpuRequest::Devices(ids) => Ok(ids.iter().map(|i| q(i)).collect()),
            GpuRequest::Count(n) => {
                // The indexed devices (0, 1, ...) in numeric order; uuids and `all` aside.
                let mut indexed: Vec<(u64, &str)> = names
                    .iter()
                    .filter_map(|n| n.parse::<u64>().ok().map(|i| (i, *n)))
                    .collect();
                indexed.sort_unstable();
                if indexed.len() < *n {
                    return Err(CdiError::TooFewGpus {
                        want: *n,
                        have: indexed.len(),
                    });
                }
                Ok(indexed[..*n].iter().map(|(_, name)| q(name)).collect())
            }
        }
    }
}

/// `--gpus`, as docker spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuRequest {
    All,
    Count(usize),
    /// Indexes or uuids.
    Devices(Vec<String>),
}

impl GpuRequest {
    /// `all`, `N`, `count=N`, `device=0,1` (docker's CSV: `"device=0,1"` in quotes when more
    /// options follow), with `driver=nvidia` and `capabilities=...` accepted.
    pub fn parse(s: &str) -> Result<GpuRequest, CdiError> {
        let bad = || CdiError::Gpus(s.to_owned());
        let mut out = None;
        let mut devices: Option<Vec<String>> = None;
        // A bare field continues the list before it (`device=0,1` without quotes).
        let mut last = "";
        for field in csv(s) {
            let field = field.trim();
            match field.split_once('=') {
                None if last == "capabilities" => {}
                None if last == "device" => {
                    spec::check_name(field).map_err(|_| bad())?;
                    devices.get_or_insert_default().push(field.to_owned());
                }
                None | Some(("count", _)) => {
                    let v = field.strip_prefix("count=").unwrap_or(field);
                    out = Some(match v {
                        "all" | "-1" => GpuRequest::All,
                        n => match n.parse::<usize>() {
                            Ok(n) if n > 0 => GpuRequest::Count(n),
                            _ => return Err(bad()),
                        },
                    });
                    last = "count";
                }
                Some(("device", ids)) => {
                    let list = devices.get_or_insert_default();
                    for id in ids.split(',') {
                        spec::check_name(id).map_err(|_| bad())?;
                        list.push(id.to_owned());
                    }
                    last = "device";
                }
                Some(("capabilities", _)) => last = "capabilities",
                Some(("driver", "nvidia")) => last = "driver",
                _ => return Err(bad()),
            }
        }
        match (out, devices) {
            (Some(_), Some(_)) => Err(bad()),
            (Some(o), None) => Ok(o),
            (None, Some(d)) => Ok(GpuRequest::Devices(d)),
            (None, None) => Err(bad()),
        }
    }
}

/// Splits on commas outside double quotes, dropping the quotes.
fn csv(s: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c)
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec_file(dir: &Path, file: &str, kind: &str, names: &[&str]) {
        let devices: Vec<String> = names
            .iter()
            .map(|n| format!("{{\"name\": \"{n}\", \"containerEdits\": {{\"env\": [\"D={n}\"]}}}}"))
            .collect();
        std::fs::write(
            dir.join(file),
            format!(
                "{{\"cdiVersion\": \"0.6.0\", \"kind\": \"{kind}\", \"devices\": [{}]}}",
                devices.join(",")
            ),
        )
        .unwrap();
    }

    fn q(s: &str) -> QualifiedName {
        QualifiedName::parse(s).unwrap()
    }

    #[test]
    fn names_resolve_with_priority_and_all() {
        let low = tempfile::tempdir().unwrap();
        let high = tempfile::tempdir().unwrap();
        spec_file(low.path(), "a.json", "example.com/gpu", &["0", "1"]);
        spec_file(high.path(), "b.json", "example.com/gpu", &["1", "2"]);
        std::fs::write(low.path().join("broken.yaml"), "cdiVersion: [").unwrap();
        std::fs::write(low.path().join("ignored.txt"), "x").unwrap();
        let reg = Registry::load(&[
            low.path().into(),
            "/nonexistent-nook".into(),
            high.path().into(),
        ]);
        assert_eq!(reg.specs.len(), 2);
        assert_eq!(reg.broken.len(), 1);
        let one = reg.devices(&[q("example.com/gpu=1")]).unwrap();
        assert_eq!(one[0].loaded.path, high.path().join("b.json"), "later wins");
        let all = reg.devices(&[q("example.com/gpu=all")]).unwrap();
        let names: Vec<&str> = all.iter().map(|c| c.device.name.as_str()).collect();
        assert_eq!(names, ["0", "1", "2"]);
        let twice = reg
            .devices(&[q("example.com/gpu=0"), q("example.com/gpu=0")])
            .unwrap();
        assert_eq!(twice.len(), 1);
        let e = reg.devices(&[q("example.com/gpu=9")]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("example.com/gpu=9") && text.contains("broken.yaml"),
            "{text}"
        );
        let e = reg.devices(&[q("other.com/x=all")]).unwrap_err();
        assert!(matches!(e, CdiError::Unknown { .. }));
    }

    #[test]
    fn same_directory_conflicts() {
        let d = tempfile::tempdir().unwrap();
        spec_file(d.path(), "a.json", "example.com/gpu", &["0"]);
        spec_file(d.path(), "b.json", "example.com/gpu", &["0", "1"]);
        let reg = Registry::load(&[d.path().into()]);
        assert!(matches!(
            reg.devices(&[q("example.com/gpu=0")]),
            Err(CdiError::Conflict { .. })
        ));
        assert_eq!(reg.devices(&[q("example.com/gpu=1")]).unwrap().len(), 1);
    }

    #[test]
    fn gpus_map_to_the_nvidia_kind() {
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::load(&[d.path().into()]);
        assert!(matches!(
            reg.gpus(&GpuRequest::All),
            Err(CdiError::NoGpuSpec { .. })
        ));
        spec_file(
            d.path(),
            "nvidia.json",
            "nvidia.com/gpu",
            &["10", "2", "GPU-1234", "all", "0"],
        );
        let reg = Registry::load(&[d.path().into()]);
        let names = |r| {
            reg.gpus(&r)
                .unwrap()
                .into_iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(GpuRequest::All), ["nvidia.com/gpu=all"]);
        assert_eq!(
            names(GpuRequest::Count(2)),
            ["nvidia.com/gpu=0", "nvidia.com/gpu=2"]
        );
        assert!(matches!(
            reg.gpus(&GpuRequest::Count(4)),
            Err(CdiError::TooFewGpus { want: 4, have: 3 })
        ));
        assert_eq!(
            names(GpuRequest::Devices(vec!["GPU-1234".into()])),
            ["nvidia.com/gpu=GPU-1234"]
        );
    }

    #[test]
    fn gpus_flag_forms() {
        use GpuRequest::*;
        assert_eq!(GpuRequest::parse("all").unwrap(), All);
        assert_eq!(GpuRequest::parse("2").unwrap(), Count(2));
        assert_eq!(GpuRequest::parse("count=3").unwrap(), Count(3));
        assert_eq!(
            GpuRequest::parse("\"device=0,1\"").unwrap(),
            Devices(vec!["0".into(), "1".into()])
        );
        assert_eq!(
            GpuRequest::parse("device=0,1").unwrap(),
            Devices(vec!["0".into(), "1".into()])
        );
        assert_eq!(
            GpuRequest::parse("\"device=GPU-3a2b\",capabilities=compute,utility").unwrap(),
            Devices(vec!["GPU-3a2b".into()])
        );
        assert_eq!(
            GpuRequest::parse("all,driver=nvidia,capabilities=gpu").unwrap(),
            All
        );
        for bad in ["", "0", "-2", "many", "device=", "driver=amd", "2,device=0"] {
            assert!(GpuRequest::parse(bad).is_err(), "{bad}");
        }
    }
}
