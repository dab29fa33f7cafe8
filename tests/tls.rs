//! TLS registries: the system store plus SSL_CERT_FILE, certs.d folders, the config's
//! insecure list and --tls-verify=false. The registry is Debian's docker-registry with a
//! certificate from a test CA, reached through a configured Docker Hub mirror (loopback
//! registries are otherwise plain HTTP, as in docker).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use nook::registry::transport::{Request, Transport, TransportOptions};
use support::env::{Mode, User};
use support::image::{self, Comp, ImageOpts, busybox_base};
use support::registry::{TestRegistry, Tls};

struct Pki {
    _dir: tempfile::TempDir,
    ca: String,
    cert: PathBuf,
    key: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nook test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert_path,
        key: key_path,
        _dir: dir,
    }
}

fn tls_registry(p: &Pki) -> Option<TestRegistry> {
    TestRegistry::start_with(
        Some(Tls {
            cert: &p.cert,
            key: &p.key,
        }),
        "",
    )
}

#[test]
fn transport_verifies_and_can_be_told_not_to() {
    let p = pki();
    let Some(reg) = tls_registry(&p) else { return };
    let url = format!("{}/v2/", reg.url);
    let plain = Transport::new(TransportOptions::default());
    let err = plain
        .send(&Request::get(url.clone()))
        .err()
        .expect("an unknown CA must be refused");
    let chain = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(
        chain.to_lowercase().contains("certificate") || chain.contains("UnknownIssuer"),
        "{chain}"
    );
    let mut skip = Request::get(url.clone());
    skip.tls_verify = false;
    assert_eq!(plain.send(&skip).unwrap().status, 200);
    // docker's certs.d/HOST:PORT/ca.crt adds a CA for that registry only.
    let certs = tempfile::tempdir().unwrap();
    let host_dir = certs.path().join(&reg.host);
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::write(host_dir.join("ca.crt"), &p.ca).unwrap();
    let with_dir = Transport::new(TransportOptions {
        certs_dirs: vec![certs.path().to_owned()],
        ..Default::default()
    });
    assert_eq!(with_dir.send(&Request::get(url)).unwrap().status, 200);
}

fn mirror_config(user: &User, reg: &TestRegistry, insecure: bool) {
    let extra = if insecure {
        format!("insecure_registries = [\"{}\"]\n", reg.host)
    } else {
        String::new()
    };
    let text = format!(
        "{extra}[mirrors]\n\"docker.io\" = [\"https://{}\"]\n",
        reg.host
    );
    user.write_home(".config/nook/config.toml", text.as_bytes());
}

fn pull_in(
    user: &User,
    store: &Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> support::env::Out {
    let mut args = vec!["pull"];
    args.extend_from_slice(extra_args);
    args.push("library/tlsimage");
    let store = store.to_str().unwrap();
    let mut all = vec![("NOOK_ROOT", store), ("HTTPS_PROXY", "http://127.0.0.1:9")];
    all.extend_from_slice(env);
    user.run_env(&args, &all)
}

#[test]
fn pull_over_tls_with_ca_file_insecure_list_or_no_verify() {
    let Some(user) = User::new(Mode::Range) else {
        return;
    };
    let p = pki();
    let Some(reg) = tls_registry(&p) else { return };
    let b = image::build(
        &[(busybox_base().finish(), Comp::Gzip)],
        &ImageOpts::default(),
    );
    image::push(&reg.url, "library/tlsimage", "latest", &b);
    let ca = user.write_home("ca.pem", p.ca.as_bytes());

    mirror_config(&user, &reg, false);
    let s1 = user.work.path().join("s1");
    pull_in(&user, &s1, &[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]).ok();
    let s2 = user.work.path().join("s2");
    pull_in(&user, &s2, &["--tls-verify=false"], &[]).ok();

    mirror_config(&user, &reg, true);
    let s3 = user.work.path().join("s3");
    pull_in(&user, &s3, &[], &[]).ok();
    for s in [s1, s2, s3] {
        assert!(s.join("blobs/sha256").join(&b.config_digest[7..]).exists());
    }
}
