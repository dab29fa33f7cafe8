//! TCP doors of `nook serve`: `-H tcp://ADDR:PORT` with mutual TLS (a client must present a
//! certificate signed by `--tlscacert`), or plain TCP on a loopback address with
//! `--insecure-tcp`.
//!
//! Every handler speaks to a `UnixStream` (hijacked attach and exec streams read and write it
//! from several threads), so a TCP connection is not served directly: a relay thread owns the
//! TCP socket and its TLS session and pumps plaintext to and from one end of a
//! `UnixStream::pair()`, whose other end goes to the connection loop a UNIX client gets
//! ([`super::wire`]). A client that never finishes its handshake is dropped at
//! [`HANDSHAKE_DEADLINE`]; the connection bound counts TCP clients from their accept on.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::Engine;
use super::server::{Slot, Slots};
use super::wire::{self, Plain, Tls};

/// docker's port for TCP with TLS, when `-H tcp://ADDR` names none.
const TLS_PORT: u16 = 2376;
/// docker's port for plain TCP.
const PLAIN_PORT: u16 = 2375;
/// How long a TCP client may take to finish its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// A `-H` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    /// An address, and its port when one was given.
    Tcp(IpAddr, Option<u16>),
}

/// Why a `-H` value or the TCP flags cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("-H {0}: give an absolute path, as unix:///run/user/1000/nook.sock")]
    RelativeSocket(String),
    #[error("-H {0}: give unix:///PATH or tcp://ADDR:PORT")]
    Scheme(String),
    #[error(
        "-H {0}: give tcp://ADDR:PORT with ADDR an IP address, as tcp://127.0.0.1:2376 or tcp://[::1]:2376"
    )]
    TcpAddress(String),
    #[error(
        "-H tcp://{0}: TCP needs mutual TLS: add --tlsverify --tlscacert CA.pem --tlscert CERT.pem --tlskey KEY.pem (or --insecure-tcp on a loopback address)"
    )]
    NeedsTls(IpAddr),
    #[error(
        "--insecure-tcp serves only a loopback address (127.0.0.0/8, ::1), not {0}: use --tlsverify with certificates there"
    )]
    NotLoopback(IpAddr),
    #[error(
        "--tls without --tlsverify would let in any client: TCP needs client certificates, add --tlsverify"
    )]
    TlsWithoutVerify,
    #[error("--tlsverify and --insecure-tcp: choose one")]
    Both,
    #[error("--tlsverify needs --{0} FILE")]
    Missing(&'static str),
    #[error("{0} is for -H tcp://ADDR:PORT: add one, or leave the flag out")]
    NoTcp(&'static str),
}

/// Parses one `-H`: `unix:///PATH`, `/PATH`, `tcp://ADDR[:PORT]` (`[V6]` in brackets,
/// `localhost` for 127.0.0.1, an empty ADDR for every address as in docker).
pub fn parse_host(h: &str) -> Result<Host, HostError> {
    if let Some(p) = h.strip_prefix("unix://") {
        if !p.starts_with('/') {
            return Err(HostError::RelativeSocket(h.into()));
        }
        return Ok(Host::Unix(PathBuf::from(p)));
    }
    if h.starts_with('/') {
        return Ok(Host::Unix(PathBuf::from(h)));
    }
    let Some(rest) = h.strip_prefix("tcp://") else {
        return Err(HostError::Scheme(h.into()));
    };
    let bad = || HostError::TcpAddress(h.into());
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let port = |p: &str| p.parse::<u16>().map(Some).map_err(|_| bad());
    let v4 = |a: &str| match a {
        "" => Ok(Ipv4Addr::UNSPECIFIED),
        "localhost" => Ok(Ipv4Addr::LOCALHOST),
        a => a.parse::<Ipv4Addr>().map_err(|_| bad()),
    };
    let (ip, port) = if let Some(after) = rest.strip_prefix('[') {
        let (v6, tail) = after.split_once(']').ok_or_else(bad)?;
        let p = match tail {
            "" => None,
            t => port(t.strip_prefix(':').ok_or_else(bad)?)?,
        };
        (IpAddr::V6(v6.parse::<Ipv6Addr>().map_err(|_| bad())?), p)
    } else if rest.matches(':').count() > 1 {
        (
            IpAddr::V6(rest.parse::<Ipv6Addr>().map_err(|_| bad())?),
            None,
        )
    } else {
        match rest.split_once(':') {
            Some((a, p)) => (IpAddr::V4(v4(a)?), port(p)?),
            None => (IpAddr::V4(v4(rest)?), None),
        }
    };
    Ok(Host::Tcp(ip, port))
}

/// The TCP flags of `nook serve`, as given.
#[derive(Debug, Default, Clone)]
pub struct TcpFlags {
    pub tlsverify: bool,
    pub tls: bool,
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// How the TCP doors are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpMode {
    /// TLS, and a client certificate signed by `ca`.
    Mutual {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// Plain TCP, loopback only.
    Insecure,
}

impl TcpMode {
    /// docker's port for this mode.
    pub fn default_port(&self) -> u16 {
        match self {
            TcpMode::Mutual { .. } => TLS_PORT,
            TcpMode::Insecure => PLAIN_PORT,
        }
    }
}

/// Checks the flags against the TCP addresses asked for: `None` when there are none.
pub fn tcp_mode(f: &TcpFlags, addrs: &[IpAddr]) -> Result<Option<TcpMode>, HostError> {
    if addrs.is_empty() {
        let given = [
            (f.tlsverify, "--tlsverify"),
            (f.tls, "--tls"),
            (f.insecure, "--insecure-tcp"),
            (f.ca.is_some(), "--tlscacert"),
            (f.cert.is_some(), "--tlscert"),
            (f.key.is_some(), "--tlskey"),
        ];
        return match given.iter().find(|(set, _)| *set) {
            Some((_, flag)) => Err(HostError::NoTcp(flag)),
            None => Ok(None),
        };
    }
    if f.tls && !f.tlsverify {
        return Err(HostError::TlsWithoutVerify);
    }
    if f.tlsverify && f.insecure {
        return Err(HostError::Both);
    }
    if f.tlsverify {
        let need = |p: &Option<PathBuf>, flag| p.clone().ok_or(HostError::Missing(flag));
        return Ok(Some(TcpMode::Mutual {
            ca: need(&f.ca, "tlscacert")?,
            cert: need(&f.cert, "tlscert")?,
            key: need(&f.key, "tlskey")?,
        }));
    }
    if !f.insecure {
        return Err(HostError::NeedsTls(addrs[0]));
    }
    // Plain TCP has no peer credentials: on loopback only users of this machine reach it,
    // and the warning at start says that each of them can.
    match addrs.iter().find(|a| !a.to_canonical().is_loopback()) {
        Some(a) => Err(HostError::NotLoopback(*a)),
        None => Ok(Some(TcpMode::Insecure)),
    }
}

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("--{flag} {path}: cannot read PEM")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "--tlscacert {0}: no CA certificate in it: give the PEM of the CA that signs client certificates"
    )]
    NoCa(String),
    #[error("--tlscert {0}: no certificate in it: give the server's certificate in PEM")]
    NoCert(String),
    #[error("--tlscacert {path}: not a usable CA certificate")]
    BadCa {
        path: String,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot check client certificates against --tlscacert")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error(
        "--tlscert and --tlskey do not make a usable server identity: check they belong together"
    )]
    Identity(#[source] rustls::Error),
}

fn pem_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let read = |source| TlsSetupError::Read {
        flag,
        path: path.display().to_string(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)
}

/// The server's TLS: its certificate and key, and client certificates required and checked
/// against the CA file (TLS 1.2 and 1.3, ring).
pub fn tls_config(ca: &Path, cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in pem_certs("tlscacert", ca)? {
        roots.add(c).map_err(|source| TlsSetupError::BadCa {
            path: ca.display().to_string(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoCa(ca.display().to_string()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(TlsSetupError::Verifier)?;
    let chain = pem_certs("tlscert", cert)?;
    if chain.is_empty() {
        return Err(TlsSetupError::NoCert(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Read {
        flag: "tlskey",
        path: key.display().to_string(),
        source,
    })?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Identity)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsSetupError::Identity)?;
    Ok(Arc::new(config))
}

/// A bound TCP door: the listener and how its connections are kept.
pub struct TcpDoor {
    pub listener: TcpListener,
    /// The server's TLS; `None` for plain TCP on loopback.
    pub tls: Option<Arc<ServerConfig>>,
}

/// Accepts TCP clients until the process ends: each gets a relay thread (TLS handshake,
/// then the pump) and a connection thread, both holding one of the server's slots.
pub fn accept_loop(door: &TcpDoor, engine: &Arc<Engine>, slots: &Arc<Slots>) {
    for conn in door.listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let peer = tcp
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        // Over the bound, a TLS client could not read an HTTP answer anyway: it is closed.
        let Some(slot) = slots.take() else {
            tracing::info!("refused a TCP client from {peer}: too many connections");
            continue;
        };
        let (engine, tls) = (engine.clone(), door.tls.clone());
        let spawned = std::thread::Builder::new()
            .name("api-tcp".into())
            .spawn(move || client(&engine, tcp, tls, &peer, Arc::new(slot)));
        if spawned.is_err() {
            tracing::warn!("cannot start a TCP relay thread");
        }
    }
}

/// One TCP client: its handshake, then the pump until both sides are done.
fn client(
    engine: &Arc<Engine>,
    tcp: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    peer: &str,
    slot: Arc<Slot>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tls.map(|config| handshake(config, &tcp)).transpose() {
        Ok(t) => t,
        Err(e) => {
            tracing::info!("refused a TLS client from {peer}: {e}");
            return;
        }
    };
    let Ok((near, far)) = std::os::unix::net::UnixStream::pair() else {
        tracing::warn!("cannot make a socket pair for a TCP client");
        return;
    };
    if !super::server::start_connection(engine.clone(), far, slot.clone()) {
        return;
    }
    let ended = match tls {
        Some(conn) => wire::pump(Tls::new(conn), tcp, near),
        None => wire::pump(Plain::default(), tcp, near),
    };
    if let Err(e) = ended {
        tracing::debug!("TCP client {peer}: {e}");
    }
    drop(slot);
}

/// Completes the TLS handshake of `tcp`, or says why not (no or a refused client
/// certificate, a protocol error, [`HANDSHAKE_DEADLINE`] passed).
fn handshake(config: Arc<ServerConfig>, tcp: &TcpStream) -> io::Result<ServerConnection> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut io = Timed {
        tcp,
        until: Instant::now() + HANDSHAKE_DEADLINE,
    };
    while conn.is_handshaking() {
        io.left()?;
        match conn.complete_io(&mut io) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.left().map(|_| ())?,
            Err(e) => return Err(e),
        }
    }
    Ok(conn)
}

/// A blocking TCP stream whose reads and writes fail once `until` has passed: a client
/// trickling its handshake a byte at a time cannot hold its thread for ever.
struct Timed<'a> {
    tcp: &'a TcpStream,
    until: Instant,
}

impl Timed<'_> {
    fn left(&self) -> io::Result<Duration> {
        match self.until.checked_duration_since(Instant::now()) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete handshake in time",
            )),
        }
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        (&mut &*self.tcp).read(b)
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        (&mut &*self.tcp).write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Binds `addr` for `mode` (the TLS configuration made from its files).
pub fn bind(addr: SocketAddr, mode: &TcpMode) -> Result<TcpDoor, BindError> {
    let tls = match mode {
        TcpMode::Mutual { ca, cert, key } => Some(tls_config(ca, cert, key)?),
        TcpMode::Insecure => None,
    };
    let listener = TcpListener::bind(addr).map_err(|source| BindError::Listen { addr, source })?;
    Ok(TcpDoor { listener, tls })
}

/// Why a TCP door could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on tcp://{addr}: choose another address or port")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ip: &str, port: Option<u16>) -> Host {
        Host::Tcp(ip.parse().unwrap(), port)
    }

    #[test]
    fn hosts_parse() {
        let p = |h| parse_host(h);
        assert_eq!(
            p("unix:///run/x.sock"),
            Ok(Host::Unix("/run/x.sock".into()))
        );
        assert_eq!(p("/run/x.sock"), Ok(Host::Unix("/run/x.sock".into())));
        assert_eq!(p("tcp://127.0.0.1:2376"), Ok(tcp("127.0.0.1", Some(2376))));
        assert_eq!(p("tcp://127.0.0.1:0/"), Ok(tcp("127.0.0.1", Some(0))));
        assert_eq!(p("tcp://10.1.2.3"), Ok(tcp("10.1.2.3", None)));
        assert_eq!(p("tcp://[::1]:2376"), Ok(tcp("::1", Some(2376))));
        assert_eq!(p("tcp://[::1]"), Ok(tcp("::1", None)));
        assert_eq!(p("tcp://::1"), Ok(tcp("::1", None)));
        assert_eq!(p("tcp://localhost:2375"), Ok(tcp("127.0.0.1", Some(2375))));
        assert_eq!(p("tcp://:2376"), Ok(tcp("0.0.0.0", Some(2376))));
        assert!(matches!(
            p("unix://rel.sock"),
            Err(HostError::RelativeSocket(_))
        ));
        assert!(matches!(p("ssh://me@host"), Err(HostError::Scheme(_))));
        assert!(matches!(p("rel.sock"), Err(HostError::Scheme(_))));
        for bad in [
            "tcp://example.com:2376",
            "tcp://1.2.3.4:99999",
            "tcp://1.2.3.4:x",
            "tcp://[::1:2376",
        ] {
            assert!(matches!(p(bad), Err(HostError::TcpAddress(_))), "{bad}");
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn tcp_needs_mutual_tls_or_insecure_loopback() {
        let none = TcpFlags::default();
        assert_eq!(tcp_mode(&none, &[]), Ok(None));
        let lo = ips(&["127.0.0.1"]);
        assert!(matches!(tcp_mode(&none, &lo), Err(HostError::NeedsTls(_))));
        let insecure = TcpFlags {
            insecure: true,
            ..none.clone()
        };
        for ok in [
            &["127.0.0.1"][..],
            &["127.1.2.3", "::1"],
            &["::ffff:127.0.0.1"],
        ] {
            assert_eq!(
                tcp_mode(&insecure, &ips(ok)),
                Ok(Some(TcpMode::Insecure)),
                "{ok:?}"
            );
        }
        for bad in [
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "192.168.1.1",
            "::ffff:10.0.0.1",
        ] {
            let got = tcp_mode(&insecure, &ips(&["127.0.0.1", bad]));
            assert_eq!(
                got,
                Err(HostError::NotLoopback(bad.parse().unwrap())),
                "{bad}"
            );
        }
        assert_eq!(
            tcp_mode(&insecure, &[]),
            Err(HostError::NoTcp("--insecure-tcp"))
        );
        let tls = TcpFlags {
            tls: true,
            ..none.clone()
        };
        assert_eq!(tcp_mode(&tls, &lo), Err(HostError::TlsWithoutVerify));
        let verify = TcpFlags {
            tlsverify: true,
            ca: Some("ca".into()),
            cert: Some("c".into()),
            key: Some("k".into()),
            ..none.clone()
        };
        let mutual = tcp_mode(&verify, &ips(&["0.0.0.0"])).unwrap().unwrap();
        assert_eq!(mutual.default_port(), TLS_PORT);
        let both = TcpFlags {
            insecure: true,
            ..verify.clone()
        };
        assert_eq!(tcp_mode(&both, &lo), Err(HostError::Both));
        let no_key = TcpFlags {
            key: None,
            ..verify.clone()
        };
        assert_eq!(tcp_mode(&no_key, &lo), Err(HostError::Missing("tlskey")));
        assert_eq!(tcp_mode(&verify, &[]), Err(HostError::NoTcp("--tlsverify")));
    }
}
