//! The rustls client configuration of a TLS endpoint: the CA that signs the daemon's
//! certificate (or the system's roots), the client certificate the daemon asks for, and
//! docker's `--tls` without `--tlsverify` (encrypted, the server unchecked).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::ClientError;
use super::endpoint::TlsOptions;

/// PEM files are small: a larger one is not a certificate.
const MAX_PEM: u64 = 1 << 20;

fn read_pem(path: &Path) -> Result<Vec<u8>, ClientError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| ClientError::TlsFile {
        path: path.to_owned(),
        source: e,
    })?;
    let mut out = Vec::new();
    f.take(MAX_PEM)
        .read_to_end(&mut out)
        .map_err(|e| ClientError::TlsFile {
            path: path.to_owned(),
            source: e,
        })?;
    Ok(out)
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = read_pem(path)?;
    let list = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
    if list.is_empty() {
        return Err(ClientError::Tls(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(list)
}

/// The client configuration for `opts`.
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if opts.verify {
        let mut roots = RootCertStore::empty();
        match &opts.ca {
            Some(ca) => {
                for c in certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(
                provider.signature_verification_algorithms,
            )))
    };
    let config = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_slice(&read_pem(key)?)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(format!("the client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ClientError::Tls(
                "a client certificate needs its key, and a key its certificate: give both".into(),
            ));
        }
    };
    Ok(Arc::new(config))
}

/// docker's `--tls` without `--tlsverify`: any server certificate, signatures still checked.
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn config_from_ca_and_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        let opts = TlsOptions {
            ca: Some(write(dir.path(), "ca.pem", &ca.cert.pem())),
            cert: Some(write(dir.path(), "cert.pem", &client.cert.pem())),
            key: Some(write(
                dir.path(),
                "key.pem",
                &client.signing_key.serialize_pem(),
            )),
            verify: true,
        };
        let config = client_config(&opts).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        // Without verification the config builds with no CA at all.
        let loose = TlsOptions {
            ca: None,
            verify: false,
            ..opts.clone()
        };
        assert!(client_config(&loose).is_ok());
    }

    #[test]
    fn bad_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = write(dir.path(), "ca.pem", "not a certificate");
        let opts = TlsOptions {
            ca: Some(junk),
            verify: true,
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        let half = TlsOptions {
            cert: Some(dir.path().join("cert.pem")),
            ..TlsOptions::default()
        };
        assert!(client_config(&half).is_err());
        let missing = TlsOptions {
            ca: Some(dir.path().join("nope.pem")),
            verify: true,
            ..TlsOptions::default()
        };
        assert!(
            client_config(&missing)
                .unwrap_err()
                .to_string()
                .contains("nope.pem")
        );
    }

    /// A CA, a server certificate for localhost and a client certificate, as PEM files.
    fn pki(dir: &Path) -> (TlsOptions, rustls::ServerConfig) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf = |names: Vec<String>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            (cert, key)
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["client".into()]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let opts = TlsOptions {
            ca: Some(write(dir, "ca.pem", &ca.pem())),
            cert: Some(write(dir, "cert.pem", &client_cert.pem())),
            key: Some(write(dir, "key.pem", &client_key.serialize_pem())),
            verify: true,
        };
        (opts, server)
    }

    /// Serves `answers` on successive connections: each reads a request head and, when it
    /// starts with the expected line, writes the canned answer.
    fn serve(config: rustls::ServerConfig, answers: Vec<(&'static str, &'static str)>) -> u16 {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = Arc::new(config);
        std::thread::spawn(move || {
            for (expect, answer) in answers {
                let Ok((sock, _)) = listener.accept() else {
                    return;
                };
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, sock));
                let mut first = String::new();
                if tls.read_line(&mut first).is_err() {
                    continue;
                }
                let mut line = String::new();
                while tls.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let reply = if first.starts_with(expect) {
                    answer
                } else {
                    "HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n"
                };
                let _ = tls.get_mut().write_all(reply.as_bytes());
                let _ = tls.get_mut().flush();
            }
        });
        port
    }

    #[test]
    fn a_tls_daemon_with_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (opts, server) = pki(dir.path());
        let port = serve(
            server,
            vec![
                (
                    "GET /_ping ",
                    "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK",
                ),
                // The daemon's lower version is the one spoken; the body comes chunked.
                (
                    "GET /v1.41/info ",
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
                ),
                (
                    "GET /_ping ",
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                ),
            ],
        );
        let ep = |tls: TlsOptions| super::super::Endpoint {
            host: super::super::Host::Tcp {
                host: "localhost".into(),
                port,
            },
            tls: Some(tls),
        };
        let client = super::super::Client::connect(ep(opts.clone())).unwrap();
        assert_eq!(client.json("GET", "/info", None).unwrap()["a"], 1);
        // Without its certificate the client is turned away.
        let anonymous = TlsOptions {
            cert: None,
            key: None,
            ..opts
        };
        assert!(super::super::Client::connect(ep(anonymous)).is_err());
    }
}
