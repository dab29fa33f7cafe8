//! Fixture images built from the host's busybox, and pushing them with the registry API.

use std::io::Write;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const BUSYBOX: &str = "/usr/bin/busybox";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A layer tar built entry by entry. Raw header bytes are used so that hostile names survive.
pub struct LayerTar {
    b: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerTar {
    pub fn new() -> Self {
        LayerTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        mut self,
        name: &[u8],
        kind: tar::EntryType,
        link: &[u8],
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut h = tar::Header::new_gnu();
        if name.len() >= 100 || link.len() >= 100 {
            // Long names go through GNU long-name records, as real layers do.
            let mut h2 = tar::Header::new_gnu();
            h2.set_entry_type(kind);
            h2.set_size(data.len() as u64);
            h2.set_mode(mode);
            h2.set_uid(uid);
            h2.set_gid(gid);
            h2.set_mtime(1_700_000_000);
            if !link.is_empty() {
                self.b
                    .append_link(
                        &mut h2,
                        std::str::from_utf8(name).unwrap(),
                        std::str::from_utf8(link).unwrap(),
                    )
                    .unwrap();
            } else {
                self.b
                    .append_data(&mut h2, std::str::from_utf8(name).unwrap(), data)
                    .unwrap();
            }
            return self;
        }
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.raw(
            format!("{}/", path.trim_end_matches('/')).as_bytes(),
            tar::EntryType::Directory,
            b"",
            b"",
            mode,
            0,
            0,
        )
    }

    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.raw(
            format!("{}/", path.trim_end_matches('/')).as_bytes(),
            tar::EntryType::Directory,
            b"",
            b"",
            mode,
            uid,
            gid,
        )
    }

    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Regular,
            b"",
            data,
            mode,
            0,
            0,
        )
    }

    pub fn file_owned(self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Regular,
            b"",
            data,
            mode,
            uid,
            gid,
        )
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Symlink,
            target.as_bytes(),
            b"",
            0o777,
            0,
            0,
        )
    }

    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.raw(
            path.as_bytes(),
            tar::EntryType::Link,
            target.as_bytes(),
            b"",
            0o644,
            0,
            0,
        )
    }

    /// A character or block device node.
    pub fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o666);
        h.set_mtime(1_700_000_000);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b.append_data(&mut h, path, &b""[..]).unwrap();
        self
    }

    /// Deletes `name` of lower layers (`dir/.wh.name`).
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"", 0o644)
    }

    /// Hides everything lower layers have below `dir`.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A minimal root filesystem: busybox and the applets a shell needs.
pub fn busybox_base() -> LayerTar {
    let bb = std::fs::read(BUSYBOX)
        .expect("busybox-static is installed (apt-get install busybox-static)");
    let mut t = LayerTar::new()
        .dir("bin", 0o755)
        .dir("etc", 0o755)
        .dir("tmp", 0o1777)
        .dir("root", 0o700)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("bin/busybox", &bb, 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nuser:x:1234:1234::/home/user:/bin/sh\n", 0o644)
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\nuser:x:1234:\n", 0o644);
    for applet in [
        "sh", "ls", "cat", "echo", "id", "stat", "true", "false", "sleep", "env", "mkdir", "rm",
        "touch", "chown", "chmod", "ln", "readlink", "head", "wc", "grep", "sed", "ps", "kill",
        "hostname", "mount", "test", "printf", "seq", "find", "mknod", "mkfifo", "dd", "tr",
        "uname", "cut", "sort", "xargs", "nc", "ip",
    ] {
        t = t.symlink(&format!("bin/{applet}"), "busybox");
    }
    t
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(tar: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => tar.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// How to build an image.
#[derive(Debug, Clone)]
pub struct ImageOpts {
    pub oci: bool,
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    /// The config's `config` section (Env, Cmd, Entrypoint, User, WorkingDir, ...).
    pub config: Value,
}

impl Default for ImageOpts {
    fn default() -> Self {
        ImageOpts {
            oci: false,
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
            config: json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}),
        }
    }
}

/// A built image: its blobs and its manifest.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub diff_ids: Vec<String>,
    pub blobs: Vec<(String, Vec<u8>)>,
    pub platform: Value,
}

fn layer_media_type(oci: bool, c: Comp) -> &'static str {
    match (oci, c) {
        (false, _) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (true, Comp::None) => "application/vnd.oci.image.layer.v1.tar",
        (true, Comp::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (true, Comp::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

pub fn build(layers: &[(Vec<u8>, Comp)], o: &ImageOpts) -> Built {
    let mut blobs = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for (tar, c) in layers {
        let blob = compress(tar, *c);
        let d = sha256(&blob);
        diff_ids.push(sha256(tar));
        descs.push(
            json!({"mediaType": layer_media_type(o.oci, *c), "digest": d, "size": blob.len()}),
        );
        layer_digests.push(d.clone());
        blobs.push((d, blob));
    }
    let mut config = json!({
        "architecture": o.arch, "os": o.os,
        "created": "2024-01-02T03:04:05Z",
        "config": o.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-02T03:04:05Z", "created_by": "nook test fixture"}],
    });
    if let Some(v) = &o.variant {
        config["variant"] = json!(v);
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = sha256(&config);
    let (mt, config_mt) = if o.oci {
        (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    } else {
        (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
        )
    };
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": config_mt, "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    blobs.push((config_digest.clone(), config.clone()));
    let mut platform = json!({"os": o.os, "architecture": o.arch});
    if let Some(v) = &o.variant {
        platform["variant"] = json!(v);
    }
    Built {
        digest: sha256(&manifest),
        manifest,
        media_type: mt.into(),
        config,
        config_digest,
        layer_digests,
        diff_ids,
        blobs,
        platform,
    }
}

/// An index over several built images (plus an attestation entry, as BuildKit writes).
pub fn index(images: &[&Built], oci: bool) -> (Vec<u8>, String, String) {
    let mt = if oci { OCI_INDEX } else { DOCKER_LIST };
    let mut manifests: Vec<Value> = images
        .iter()
        .map(|b| json!({"mediaType": b.media_type, "digest": b.digest, "size": b.manifest.len(), "platform": b.platform}))
        .collect();
    if let Some(first) = images.first() {
        manifests.push(
            json!({"mediaType": OCI_MANIFEST, "digest": first.digest, "size": first.manifest.len(),
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}),
        );
    }
    let bytes =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}))
            .unwrap();
    let d = sha256(&bytes);
    (bytes, mt.to_owned(), d)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build()
        .new_agent()
}

/// Uploads a blob (monolithic POST + PUT) unless the registry has it.
pub fn push_blob(url: &str, repo: &str, digest: &str, data: &[u8]) {
    let a = agent();
    let head = a
        .head(format!("{url}/v2/{repo}/blobs/{digest}"))
        .call()
        .unwrap();
    if head.status() == 200 {
        return;
    }
    let r = a
        .post(format!("{url}/v2/{repo}/blobs/uploads/"))
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 202, "upload start");
    let loc = r
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("{url}{loc}")
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = a
        .put(format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .send(data)
        .unwrap();
    assert_eq!(r.status(), 201, "blob upload of {digest}");
}

pub fn push_manifest(url: &str, repo: &str, reference: &str, bytes: &[u8], media_type: &str) {
    let r = agent()
        .put(format!("{url}/v2/{repo}/manifests/{reference}"))
        .header("content-type", media_type)
        .send(bytes)
        .unwrap();
    assert_eq!(r.status(), 201, "manifest upload");
}

/// Pushes an image's blobs and its manifest under `tag`.
pub fn push(url: &str, repo: &str, tag: &str, b: &Built) {
    for (d, data) in &b.blobs {
        push_blob(url, repo, d, data);
    }
    push_manifest(url, repo, tag, &b.manifest, &b.media_type);
}

/// Pushes images by digest and an index over them under `tag`; returns the index digest.
pub fn push_index(url: &str, repo: &str, tag: &str, images: &[&Built], oci: bool) -> String {
    for b in images {
        push(url, repo, &b.digest, b);
    }
    let (bytes, mt, d) = index(images, oci);
    push_manifest(url, repo, tag, &bytes, &mt);
    d
}

/// Busybox plus a layer holding `/big`: `len` bytes of noise that compresses as `shift`
/// makes it (higher shifts repeat more). Returns the file's bytes and the image.
pub fn with_big_file(len: u32, shift: u32, c: Comp) -> (Vec<u8>, Built) {
    let big: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> shift) as u8)
        .collect();
    let top = LayerTar::new().file("big", &big, 0o644).finish();
    let b = build(
        &[(busybox_base().finish(), Comp::Gzip), (top, c)],
        &ImageOpts::default(),
    );
    (big, b)
}
