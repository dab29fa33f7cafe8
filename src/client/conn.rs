//! One connection to a daemon, split into a read half and a write half so an attached
//! container's input and output flow at once: a UNIX socket, TCP, TLS over TCP, or the
//! standard input and output of `ssh HOST -- nook system dial-stdio`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};

use super::ClientError;
use super::endpoint::{Endpoint, Host};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// How long a TLS reader holds the connection before letting a writer in.
const TLS_TURN: Duration = Duration::from_millis(50);

/// The ssh process behind a connection: killed and reaped when both halves are gone.
pub struct SshChild(Mutex<Child>);

impl Drop for SshChild {
    fn drop(&mut self) {
        if let Ok(c) = self.0.get_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The half a response is read from.
pub enum ReadHalf {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Arc<Mutex<TlsStream>>),
    Ssh(ChildStdout, Arc<SshChild>),
}

/// The half a request (and an attached container's input) is written to.
pub enum WriteHalf {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Arc<Mutex<TlsStream>>),
    Ssh(Option<ChildStdin>, Arc<SshChild>),
}

/// Opens a connection to `ep`; `tls` is the client config a TLS endpoint needs.
pub fn connect(
    ep: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(ReadHalf, WriteHalf), ClientError> {
    let url = ep.host.url();
    let failed = |e: io::Error| ClientError::Connect {
        url: url.clone(),
        source: e,
    };
    match &ep.host {
        Host::Unix(p) => {
            let s = UnixStream::connect(p).map_err(failed)?;
            let r = s.try_clone().map_err(failed)?;
            Ok((ReadHalf::Unix(r), WriteHalf::Unix(s)))
        }
        Host::Tcp { host, port } => {
            let s = TcpStream::connect((host.as_str(), *port)).map_err(failed)?;
            let _ = s.set_nodelay(true);
            let Some(config) = tls else {
                let r = s.try_clone().map_err(failed)?;
                return Ok((ReadHalf::Tcp(r), WriteHalf::Tcp(s)));
            };
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ClientError::Tls(format!("{host}: {e}")))?;
            let conn = ClientConnection::new(config.clone(), name)
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let mut t = StreamOwned::new(conn, s);
            while t.conn.is_handshaking() {
                t.conn
                    .complete_io(&mut t.sock)
                    .map_err(|e| ClientError::Tls(format!("handshake with {url}: {e}")))?;
            }
            t.sock.set_read_timeout(Some(TLS_TURN)).map_err(failed)?;
            let t = Arc::new(Mutex::new(t));
            Ok((ReadHalf::Tls(t.clone()), WriteHalf::Tls(t)))
        }
        Host::Ssh { user, host, port } => {
            ssh(user.as_deref(), host, *port).map_err(|e| ClientError::Connect {
                url: url.clone(),
                source: e,
            })
        }
    }
}

/// `ssh [-p PORT] [USER@]HOST -- nook system dial-stdio`, as docker runs `docker system
/// dial-stdio`; ssh's own messages (a host key prompt, a refusal) go to our standard error.
fn ssh(user: Option<&str>, host: &str, port: Option<u16>) -> io::Result<(ReadHalf, WriteHalf)> {
    let mut c = Command::new("ssh");
    c.args(["-o", "ConnectTimeout=30", "-T"]);
    if let Some(p) = port {
        c.arg("-p").arg(p.to_string());
    }
    let dest = match user {
        Some(u) => format!("{u}@{host}"),
        None => host.to_owned(),
    };
    c.arg("--").arg(dest).args(["nook", "system", "dial-stdio"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = c.spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("ssh started without pipes"));
    };
    let guard = Arc::new(SshChild(Mutex::new(child)));
    Ok((
        ReadHalf::Ssh(stdout, guard.clone()),
        WriteHalf::Ssh(Some(stdin), guard),
    ))
}

fn poisoned() -> io::Error {
    io::Error::other("the TLS connection failed in another thread")
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Unix(s) => s.read(buf),
            ReadHalf::Tcp(s) => s.read(buf),
            ReadHalf::Ssh(s, _) => s.read(buf),
            // The socket's read timeout hands the lock to a waiting writer now and then.
            ReadHalf::Tls(t) => loop {
                let mut g = t.lock().map_err(|_| poisoned())?;
                match g.read(buf) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        drop(g);
                        std::thread::yield_now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    other => return other,
                }
            },
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Unix(s) => s.write(buf),
            WriteHalf::Tcp(s) => s.write(buf),
            WriteHalf::Tls(t) => t.lock().map_err(|_| poisoned())?.write(buf),
            WriteHalf::Ssh(Some(s), _) => s.write(buf),
            WriteHalf::Ssh(None, _) => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Unix(s) => s.flush(),
            WriteHalf::Tcp(s) => s.flush(),
            WriteHalf::Tls(t) => t.lock().map_err(|_| poisoned())?.flush(),
            WriteHalf::Ssh(Some(s), _) => s.flush(),
            WriteHalf::Ssh(None, _) => Ok(()),
        }
    }
}

impl WriteHalf {
    /// Ends the input (the daemon sees EOF) while the output keeps flowing.
    pub fn close_write(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Unix(s) => s.shutdown(Shutdown::Write),
            WriteHalf::Tcp(s) => s.shutdown(Shutdown::Write),
            WriteHalf::Tls(t) => {
                let mut g = t.lock().map_err(|_| poisoned())?;
                g.conn.send_close_notify();
                g.flush()?;
                g.sock.shutdown(Shutdown::Write)
            }
            WriteHalf::Ssh(s, _) => {
                s.take();
                Ok(())
            }
        }
    }
}

/// `nook system dial-stdio`: standard input to the socket at `path`, the socket to standard
/// output, until the daemon closes its side.
pub fn dial_stdio(path: &std::path::Path) -> io::Result<()> {
    let sock = UnixStream::connect(path)?;
    let mut to = sock.try_clone()?;
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    super::stream::copy_raw(sock, &mut io::stdout().lock())
}
