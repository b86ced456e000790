//! Container terminals: pseudo-terminal pairs, runc's `--console-socket` handshake, window
//! sizes, and async I/O over a terminal master.
//!
//! With `--tty`, runc opens a pty inside the container and makes its slave the process's
//! stdin, stdout and stderr. What happens to the master depends on whether runc detaches:
//! * detached (`runc create`, the shim's containers): runc sends the *master* to the unix
//!   socket named by `--console-socket` as an `SCM_RIGHTS` message — [`ConsoleSocket`] (in a
//!   private directory, so no other user can connect first) and [`recv_fd`];
//! * attached (`runc exec --tty`, which then waits and passes the exit code through): runc
//!   refuses a console socket and relays between the container's pty and its *own* stdio,
//!   which must be a terminal — [`open_pty`] makes one, the agent keeps its master, and a
//!   resize is applied to it and announced to runc with `SIGWINCH` (see `super::runc`).
//!
//! [`set_size`] is `TIOCSWINSZ`; [`Console`] is an async reader/writer over a master for the
//! agent's `kubectl exec -t` sessions. Does not own the sessions (the node API does) nor what
//! the shim does with a container's console (`super::shim`, with the blocking functions here).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A listening unix socket for runc's `--console-socket`, in a fresh `0700` directory that is
/// removed on drop.
#[derive(Debug)]
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl ConsoleSocket {
    /// Binds a new socket under the system's temporary directory (short paths: a unix socket
    /// path must fit in 108 bytes, which bundle directories may not).
    pub fn bind() -> io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("skiff-console-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("sock");
        match tokio::net::UnixListener::bind(&path) {
            Ok(listener) => Ok(Self { dir, path, listener }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// The path to pass as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts runc's connection and returns the terminal master it sends.
    pub async fn receive(&self) -> io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().await?;
        loop {
            stream.readable().await?;
            match stream.try_io(tokio::io::Interest::READABLE, || recv_fd(&stream)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Receives one descriptor passed with `SCM_RIGHTS` on `socket` (runc sends the pty's name as
/// the message's data, which is ignored).
pub fn recv_fd(socket: impl AsFd) -> io::Result<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let received = rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let fd = control.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    fd.ok_or_else(|| {
        let what = if received.bytes == 0 { "the console socket closed" } else { "a message without a descriptor" };
        io::Error::new(io::ErrorKind::InvalidData, format!("expected a terminal descriptor from runc, got {what}"))
    })
}

/// A new pseudo-terminal: `(master, slave)`, both close-on-exec and the slave not made anyone's
/// controlling terminal.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    Ok((master, slave))
}

/// Sets the terminal's window size (`TIOCSWINSZ`); the foreground process gets `SIGWINCH`.
pub fn set_size(master: impl AsFd, width: u16, height: u16) -> io::Result<()> {
    let size = rustix::termios::Winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(master, size).map_err(io::Error::from)
}

/// A terminal master registered with the tokio reactor; [`Console::split`] gives a reader and
/// a writer that work concurrently.
#[derive(Debug, Clone)]
pub struct Console {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl Console {
    /// Wraps `master` (made non-blocking). Needs a tokio runtime.
    pub fn new(master: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&master, true)?;
        // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` may close or swap its
        // descriptor behind the reactor's back; an `OwnedFd` moved in cannot, which is exactly
        // the condition `register` (unsafe, and unsafe code is denied here) asks callers for.
        #[allow(deprecated)]
        let fd = AsyncFd::new(master)?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// Sets the window size.
    pub fn resize(&self, width: u16, height: u16) -> io::Result<()> {
        set_size(self.fd.get_ref(), width, height)
    }

    /// A reader (the terminal's output) and a writer (its input) over the same master.
    pub fn split(&self) -> (ConsoleReader, ConsoleWriter) {
        (ConsoleReader { fd: Arc::clone(&self.fd) }, ConsoleWriter { fd: Arc::clone(&self.fd) })
    }
}

/// The output of a terminal. Ends (reads 0) once every process holding its slave is gone: the
/// kernel answers `EIO` then, which is end of stream here.
#[derive(Debug)]
pub struct ConsoleReader {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl AsyncRead for ConsoleReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The input of a terminal.
#[derive(Debug)]
pub struct ConsoleWriter {
    fd: Arc<AsyncFd<OwnedFd>>,
}

impl AsyncWrite for ConsoleWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_message_without_descriptor_is_refused() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        std::io::Write::write_all(&mut &a, b"/dev/pts/0").expect("write");
        let err = recv_fd(&b).expect_err("no fd was sent");
        assert!(err.to_string().contains("without a descriptor"), "{err}");
        drop(a);
        let err = recv_fd(&b).expect_err("closed");
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[test]
    fn a_passed_terminal_master_is_received_and_resized() {
        let (master, slave) = open_pty().expect("pty");
        let (a, b) = UnixStream::pair().expect("socketpair");
        let fds = [master.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(&a, &[io::IoSlice::new(b"/dev/pts/x")], &mut control, rustix::net::SendFlags::empty())
            .expect("sendmsg");
        let received = recv_fd(&b).expect("recv_fd");
        set_size(&received, 132, 43).expect("resize");
        let size = rustix::termios::tcgetwinsize(&slave).expect("winsize");
        assert_eq!((size.ws_col, size.ws_row), (132, 43));
    }

    #[tokio::test]
    async fn console_reads_what_the_slave_writes_and_ends_when_it_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (master, slave) = open_pty().expect("pty");
        let console = Console::new(master).expect("console");
        let (mut out, mut input) = console.split();
        let mut slave = std::fs::File::from(slave);
        std::io::Write::write_all(&mut slave, b"hi\n").expect("write slave");
        let mut buf = [0u8; 16];
        let n = out.read(&mut buf).await.expect("read");
        // The line discipline turns "\n" into "\r\n".
        assert_eq!(&buf[..n], b"hi\r\n");
        input.write_all(b"x").await.expect("write master");
        drop(slave);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), out.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_))), "EIO after the slave closed is end of stream: {read:?}");
    }

    #[tokio::test]
    async fn socket_lives_in_a_private_directory_removed_on_drop() {
        let socket = ConsoleSocket::bind().expect("bind");
        let dir = socket.path().parent().expect("dir").to_path_buf();
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).expect("stat").permissions());
        assert_eq!(mode & 0o777, 0o700);
        assert!(socket.path().as_os_str().len() < 100);
        drop(socket);
        assert!(!dir.exists());
    }
}
