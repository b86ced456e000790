//! Live output of a running container for `kubectl attach`: the shim serves it on a unix
//! socket in the bundle directory (`attach.sock`), the agent connects through [`connect`].
//!
//! What it owns: the socket ([`AttachServer`], shim side, blocking threads like the rest of the
//! shim), the wire format (one frame per chunk: stream byte `1` stdout / `2` stderr, a 4-byte
//! big-endian length, the bytes) and the agent's reader ([`read_frame`]). Every chunk the shim
//! writes to the log also goes to every attached client, from the moment it connected (the log
//! has what came before, as with CRI attach). When the container ends the shim closes the
//! clients, which is their end of stream.
//!
//! Stdin: a container started with a kept stdin ([`super::shim::StdinMode`]) reads what
//! clients send as [`STDIN`] frames; [`STDIN_CLOSE`] (or a client leaving) closes it when it is
//! `stdinOnce`. A container without one ignores those frames. Not yet: terminals of
//! containers (`tty: true`, a pty from `runc create --console-socket`).
//!
//! A unix socket path must fit in 108 bytes and bundle directories may be deeper: both sides
//! then go through `/proc/self/fd/<dir fd>/attach.sock`, which names the same file.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The socket's file name in the bundle directory.
pub const SOCKET: &str = "attach.sock";
/// Frame stream byte of stdin (client to shim).
pub const STDIN: u8 = 0;
/// Frame stream byte of "no more stdin from this client" (client to shim, empty).
pub const STDIN_CLOSE: u8 = 3;
/// Frame stream byte of stdout.
pub const STDOUT: u8 = 1;
/// Frame stream byte of stderr.
pub const STDERR: u8 = 2;
/// A client that does not take a chunk within this long is dropped: a stalled `kubectl attach`
/// must not stall the container's output (and its log).
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest path used as is; longer ones go through `/proc/self/fd`.
const MAX_SOCKET_PATH: usize = 100;

/// One frame of output.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(stream);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&data[..len as usize]);
    out
}

/// Reads the next frame: `(stream, bytes)`, or `None` at end of stream.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > 1 << 20 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of {len} bytes")));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(Some((head[0], data)))
}

/// A path naming `dir/SOCKET` short enough for a socket address, with the directory handle
/// that keeps a `/proc/self/fd` path valid.
fn socket_path(dir: &Path) -> io::Result<(PathBuf, Option<File>)> {
    let path = dir.join(SOCKET);
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok((path, None));
    }
    let handle = File::open(dir)?;
    Ok((PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", handle.as_raw_fd())), Some(handle)))
}

/// Connects to the attach socket of the container whose bundle is `dir`.
pub async fn connect(dir: &Path) -> io::Result<tokio::net::UnixStream> {
    let (path, _handle) = socket_path(dir)?;
    tokio::net::UnixStream::connect(&path).await
}

/// The write end of a container's stdin, shared by attached clients.
#[derive(Debug, Clone)]
pub struct StdinSink {
    pipe: Arc<Mutex<Option<io::PipeWriter>>>,
    once: bool,
}

impl StdinSink {
    /// Over `pipe` (`None`: the container has no stdin); `once` closes it when the first
    /// client is done.
    pub fn new(pipe: Option<io::PipeWriter>, once: bool) -> Self {
        Self { pipe: Arc::new(Mutex::new(pipe)), once }
    }

    fn write(&self, data: &[u8]) {
        let mut pipe = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = pipe.as_mut()
            && p.write_all(data).is_err()
        {
            // The container closed its stdin: nothing more to deliver.
            *pipe = None;
        }
    }

    /// A client is done with stdin.
    fn client_done(&self) {
        if self.once {
            self.pipe.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
    }

    /// Reads a client's frames until it is done with stdin.
    fn serve(&self, mut client: UnixStream) {
        let mut head = [0u8; 5];
        let mut data = Vec::new();
        while io::Read::read_exact(&mut client, &mut head).is_ok() {
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > 1 << 20 {
                break;
            }
            data.resize(len, 0);
            if io::Read::read_exact(&mut client, &mut data).is_err() {
                break;
            }
            match head[0] {
                STDIN => self.write(&data),
                STDIN_CLOSE => break,
                _ => {}
            }
        }
        self.client_done();
    }
}

/// The shim's side: accepts clients on a thread and copies output to them.
#[derive(Debug)]
pub struct AttachServer {
    path: PathBuf,
    clients: Arc<Mutex<Vec<UnixStream>>>,
}

impl AttachServer {
    /// Listens on `dir/attach.sock` (replacing a stale one) and accepts clients until the
    /// process ends; what they send goes to `stdin`.
    pub fn bind(dir: &Path, stdin: StdinSink) -> io::Result<Self> {
        let _ = std::fs::remove_file(dir.join(SOCKET));
        let (path, _handle) = socket_path(dir)?;
        let listener = UnixListener::bind(&path)?;
        let clients: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let accepted = Arc::clone(&clients);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if client.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT)).is_err() {
                    continue;
                }
                if let Ok(reader) = client.try_clone() {
                    let stdin = stdin.clone();
                    std::thread::spawn(move || stdin.serve(reader));
                }
                accepted.lock().unwrap_or_else(PoisonError::into_inner).push(client);
            }
        });
        Ok(Self { path: dir.join(SOCKET), clients })
    }

    /// Sends a chunk of `stream` to every client; drops those that fail to take it.
    pub fn broadcast(&self, stream: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.is_empty() {
            return;
        }
        let frame = frame(stream, data);
        clients.retain_mut(|c| c.write_all(&frame).is_ok());
    }

    /// The container ended: clients see end of stream, and no one new connects.
    pub fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        for c in clients.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_get_frames_from_when_they_connect_and_eof_at_close() {
        // A deep directory: the /proc/self/fd path is used on both sides.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let server = AttachServer::bind(&dir, StdinSink::new(None, false)).expect("bind");
        server.broadcast(STDOUT, b"before anyone listened");
        let mut client = connect(&dir).await.expect("connect");
        // The accept thread registers the client asynchronously.
        let registered = async {
            while server.clients.lock().expect("lock").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), registered).await.expect("client registered");
        server.broadcast(STDOUT, b"out");
        server.broadcast(STDERR, b"err");
        server.close();
        assert_eq!(read_frame(&mut client).await.expect("frame"), Some((STDOUT, b"out".to_vec())));
        assert_eq!(read_frame(&mut client).await.expect("frame"), Some((STDERR, b"err".to_vec())));
        assert_eq!(read_frame(&mut client).await.expect("eof"), None);
        assert!(!dir.join(SOCKET).exists());
    }

    #[tokio::test]
    async fn stdin_once_closes_after_the_first_client() {
        use tokio::io::AsyncWriteExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut from, to) = io::pipe().expect("pipe");
        let server = AttachServer::bind(tmp.path(), StdinSink::new(Some(to), true)).expect("bind");
        let mut client = connect(tmp.path()).await.expect("connect");
        client.write_all(&frame(STDIN, b"typed\n")).await.expect("send");
        client.write_all(&frame(STDIN_CLOSE, b"")).await.expect("close");
        let got = tokio::task::spawn_blocking(move || {
            let mut got = String::new();
            io::Read::read_to_string(&mut from, &mut got).map(|_| got)
        });
        let got = tokio::time::timeout(Duration::from_secs(5), got).await.expect("stdin closed").expect("join");
        assert_eq!(got.expect("read"), "typed\n");
        drop(server);
    }

    #[tokio::test]
    async fn oversized_frames_are_refused() {
        let mut wire: &[u8] = &[1, 0xff, 0, 0, 0];
        assert!(read_frame(&mut wire).await.is_err());
        let mut short: &[u8] = &frame(STDOUT, b"abc")[..6];
        assert!(read_frame(&mut short).await.is_err(), "a cut frame is an error, not a clean end");
    }
}
