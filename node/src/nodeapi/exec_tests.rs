//! The exec session end to end over an in-memory socket: a client speaking the WebSocket
//! channel protocol, a container whose `exec` runs a real host process (`sh -c`), and one
//! that keeps the trait's default (as WASM containers do).

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, DuplexStream};

use super::*;
use crate::nodeapi::websocket::encode_frame;
use crate::runtime::{ContainerStats, ExitInfo, RuntimeError};

/// A "container" whose commands are host processes: an honest test of the streaming path.
#[derive(Debug)]
struct HostProcesses;

async fn copy_out(from: Option<impl AsyncRead + Unpin>, to: Option<Box<dyn AsyncWrite + Send + Unpin>>) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }
}

#[async_trait]
impl RunningContainer for HostProcesses {
    async fn wait(&self) -> ExitInfo {
        std::future::pending().await
    }
    async fn stop(&self, _grace: Duration) {}
    fn stats(&self) -> ContainerStats {
        ContainerStats::default()
    }
    async fn exec(&self, argv: Vec<String>, _tty: bool, io: ExecIo) -> Result<i32, RuntimeError> {
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(if io.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::new("ExecError", e.to_string()))?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut from), Some(mut to)) = (io.stdin, stdin) {
                let _ = tokio::io::copy(&mut from, &mut to).await;
            }
        };
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let ((), (), ()) = tokio::join!(feed, copy_out(out, io.stdout), copy_out(err, io.stderr));
        let status = child.wait().await.map_err(|e| RuntimeError::new("ExecError", e.to_string()))?;
        Ok(status.code().unwrap_or(128))
    }
}

/// A container that keeps the default `exec`.
#[derive(Debug)]
struct NoExec;

#[async_trait]
impl RunningContainer for NoExec {
    async fn wait(&self) -> ExitInfo {
        std::future::pending().await
    }
    async fn stop(&self, _grace: Duration) {}
    fn stats(&self) -> ContainerStats {
        ContainerStats::default()
    }
}

/// What the client received, by channel.
#[derive(Debug, Default)]
struct Received {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<Value>,
}

async fn read_all(mut client: tokio::io::ReadHalf<DuplexStream>) -> Received {
    let (pong, _keep) = mpsc::channel(4);
    let mut got = Received::default();
    while let Ok(Some(Message::Binary(m))) = websocket::read_message(&mut client, &pong).await {
        match m.split_first() {
            Some((&channel::STDOUT, d)) => got.stdout.extend_from_slice(d),
            Some((&channel::STDERR, d)) => got.stderr.extend_from_slice(d),
            Some((&channel::ERROR, d)) => got.status = Some(serde_json::from_slice(d).expect("status json")),
            _ => {}
        }
    }
    got
}

async fn session(container: Arc<dyn RunningContainer>, opts: StreamOptions, stdin: &[&[u8]]) -> Received {
    let (client, server) = tokio::io::duplex(1024);
    let target = Target::Exec(opts.command.clone());
    let server = tokio::spawn(run_session(server, opts, target, container, CancellationToken::new()));
    let (rd, mut wr) = tokio::io::split(client);
    for msg in stdin {
        wr.write_all(&encode_frame(0x2, msg, Some([7, 1, 9, 3]))).await.expect("send");
    }
    let got = tokio::time::timeout(Duration::from_secs(20), read_all(rd)).await.expect("session ended in time");
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("server ended").expect("no panic");
    got
}

#[tokio::test]
async fn exec_streams_stdin_stdout_stderr_and_exit_code() {
    let opts = StreamOptions::parse(
        "command=sh&command=-c&command=cat%3B+echo+oops+%3E%262%3B+exit+3&stdin=true&stdout=true&stderr=true",
        true,
    )
    .expect("valid query");
    let got = session(Arc::new(HostProcesses), opts, &[&channel::frame(channel::STDIN, b"hello\n"), &[255, 0]]).await;
    assert_eq!(String::from_utf8_lossy(&got.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&got.stderr), "oops\n");
    let status = got.status.expect("a final status");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_success_reports_success() {
    let opts = StreamOptions::parse("command=echo&command=hi&stdout=1", true).expect("valid query");
    let got = session(Arc::new(HostProcesses), opts, &[]).await;
    assert_eq!(got.stdout, b"hi\n");
    assert_eq!(got.status.expect("status")["status"], "Success");
}

#[tokio::test]
async fn default_exec_says_why_it_is_not_supported() {
    let opts = StreamOptions::parse("command=sh&stdout=true", true).expect("valid query");
    let got = session(Arc::new(NoExec), opts, &[]).await;
    let status = got.status.expect("status");
    assert_eq!(status["status"], "Failure");
    let message = status["message"].as_str().expect("message");
    assert!(message.starts_with("exec is not supported for WASM containers: "), "{message}");
}

#[test]
fn query_validation() {
    assert!(StreamOptions::parse("stdout=true", true).is_err());
    assert!(StreamOptions::parse("command=ls", true).is_err());
    let o = StreamOptions::parse("command=ls&command=-l&stdout=true&stderr=true&tty=true", true).expect("valid");
    assert_eq!(o.command, ["ls", "-l"]);
    assert!(o.tty && o.stdout && !o.stderr);
    assert!(StreamOptions::parse("stdout=true", false).is_ok());
}
