//! Running one command inside a container — for an `exec` probe or an `exec` lifecycle hook —
//! through [`RunningContainer::exec`], with its output captured (bounded) and an optional
//! timeout.
//!
//! What it owns: capturing stdout and stderr together (as the kubelet reports them) and the
//! timeout. What it does not: end the command when the timeout passes — that is the runtime's
//! part: dropping an exec future ends the process it started (the OCI runtime kills the exec'd
//! process tree). A runtime that cannot start processes (WASM) answers with its own clear
//! "not supported" error, which is passed through.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::runtime::{ExecIo, RunningContainer};

/// How much output of a command is kept (the kubelet's limit for exec probes, 10 KiB).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// Why a command could not be run to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The runtime could not start it (WASM: not supported; OCI: runc failed).
    #[error("{0}")]
    Runtime(String),
    /// It ran longer than allowed and was killed.
    #[error("command {command:?} timed out after {timeout:?}")]
    TimedOut { command: String, timeout: Duration },
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    /// stdout and stderr as they came, cut at [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// Runs `argv` in `container` (no stdin), waiting at most `timeout` (`None`: until it ends).
pub async fn run(
    container: &dyn RunningContainer,
    argv: &[String],
    timeout: Option<Duration>,
) -> Result<ExecOutput, ExecError> {
    let buffer = Capture::default();
    let io = ExecIo {
        stdin: None,
        stdout: Some(Box::new(buffer.clone())),
        stderr: Some(Box::new(buffer.clone())),
        resize: None,
    };
    let exec = container.exec(argv.to_vec(), false, io);
    let result = match timeout {
        None => exec.await,
        Some(t) => match tokio::time::timeout(t, exec).await {
            Ok(r) => r,
            // Dropping the exec future ends the command (see the module docs).
            Err(_) => return Err(ExecError::TimedOut { command: argv.join(" "), timeout: t }),
        },
    };
    let exit_code = result.map_err(|e| ExecError::Runtime(e.message))?;
    Ok(ExecOutput { exit_code, output: buffer.text() })
}

/// A shared, bounded sink both output streams write into.
#[derive(Debug, Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Ok(mut b) = self.0.lock() {
            let room = MAX_OUTPUT.saturating_sub(b.len());
            b.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        // Output past the limit is read and dropped, so the command never blocks on a full pipe.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::runtime::{ContainerStats, ExitInfo, RuntimeError};
    use tokio::io::AsyncWriteExt;

    /// A container whose exec writes `output` and exits with `code` after `delay`; counts
    /// the commands it was asked to run and how many ran to their end.
    #[derive(Debug, Default)]
    pub(crate) struct FakeExec {
        pub code: i32,
        pub output: String,
        pub delay: Duration,
        pub started: Mutex<Vec<Vec<String>>>,
        pub finished: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl RunningContainer for FakeExec {
        async fn wait(&self) -> ExitInfo {
            std::future::pending().await
        }
        async fn stop(&self, _grace: Duration) {}
        fn stats(&self) -> ContainerStats {
            ContainerStats::default()
        }
        async fn exec(&self, argv: Vec<String>, _tty: bool, io: ExecIo) -> Result<i32, RuntimeError> {
            self.started.lock().expect("lock").push(argv);
            tokio::time::sleep(self.delay).await;
            if let Some(mut out) = io.stdout {
                out.write_all(self.output.as_bytes()).await.expect("write");
            }
            self.finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.code)
        }
    }

    #[derive(Debug)]
    struct NoExec;

    #[async_trait::async_trait]
    impl RunningContainer for NoExec {
        async fn wait(&self) -> ExitInfo {
            std::future::pending().await
        }
        async fn stop(&self, _grace: Duration) {}
        fn stats(&self) -> ContainerStats {
            ContainerStats::default()
        }
    }

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn output_and_exit_code() {
        let c = FakeExec { code: 3, output: "boom\n".into(), ..FakeExec::default() };
        let out = run(&c, &argv(&["cat", "/x"]), Some(Duration::from_secs(1))).await.expect("ran");
        assert_eq!(out, ExecOutput { exit_code: 3, output: "boom\n".into() });
        assert_eq!(c.started.lock().expect("lock")[0], ["cat", "/x"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_command_times_out_and_is_dropped() {
        let c = FakeExec { delay: Duration::from_secs(5), ..FakeExec::default() };
        let err = run(&c, &argv(&["sleep", "5"]), Some(Duration::from_secs(1))).await.expect_err("timeout");
        assert!(matches!(&err, ExecError::TimedOut { command, .. } if command == "sleep 5"), "{err}");
        assert_eq!(c.finished.load(std::sync::atomic::Ordering::SeqCst), 0, "the exec was abandoned");
    }

    #[tokio::test]
    async fn runtimes_without_exec_say_why() {
        let err = run(&NoExec, &argv(&["true"]), None).await.expect_err("unsupported");
        assert!(err.to_string().contains("not supported for WASM containers"), "{err}");
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let c = FakeExec { output: "x".repeat(MAX_OUTPUT * 2), ..FakeExec::default() };
        let out = run(&c, &argv(&["yes"]), None).await.expect("ran");
        assert_eq!(out.output.len(), MAX_OUTPUT);
    }
}
