//! `/exec/{namespace}/{pod}/{container}` and `/attach/{namespace}/{pod}/{container}`: the
//! kubelet's remote-command endpoints over WebSocket (`channel` protocol).
//!
//! What it owns: reading the kubelet query (`command` repeated, `stdin`, `stdout`, `stderr`,
//! `tty`), the upgrade, and a session that pumps the client's messages into the container's
//! streams and back, ending with the `Status` on the error channel. What it does not: run
//! anything — [`RunningContainer::exec`]/[`RunningContainer::attach`] do, so every runtime gets
//! the same protocol. SPDY (kubectl's fallback) is not spoken: a non-WebSocket request gets a
//! `Status` saying so.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::websocket::{self, Message, Outgoing};
use super::{NodeApiState, channel, status_response};
use crate::runtime::{ExecIo, RunningContainer};

/// Output still buffered when the command ended is flushed for at most this long.
const DRAIN: Duration = Duration::from_secs(5);
/// Size of each in-memory pipe between the socket and the container.
const PIPE: usize = 64 * 1024;

/// The kubelet's query of `/exec` and `/attach`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    /// Parses a query string (`command` may repeat), validated as the kubelet does.
    pub fn parse(query: &str, exec: bool) -> Result<StreamOptions, String> {
        let mut o = StreamOptions::default();
        let flag = |v: &str| matches!(v, "1" | "true" | "True" | "TRUE");
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "command" => o.command.push(v.into_owned()),
                "stdin" | "input" => o.stdin = flag(&v),
                "stdout" | "output" => o.stdout = flag(&v),
                "stderr" | "error" => o.stderr = flag(&v),
                "tty" => o.tty = flag(&v),
                _ => {}
            }
        }
        if exec && o.command.is_empty() {
            return Err("you must specify at least one command for the container".into());
        }
        if !(o.stdin || o.stdout || o.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        // A terminal has one output stream.
        if o.tty {
            o.stderr = false;
        }
        Ok(o)
    }
}

/// `GET /exec/{namespace}/{pod}/{container}`.
pub async fn exec(
    State(state): State<NodeApiState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    start(state, &namespace, &pod, &container, req, true)
}

/// `GET /attach/{namespace}/{pod}/{container}`.
pub async fn attach(
    State(state): State<NodeApiState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    start(state, &namespace, &pod, &container, req, false)
}

fn start(state: NodeApiState, namespace: &str, pod: &str, container: &str, mut req: Request, exec: bool) -> Response {
    let bad = |msg: &str| status_response(StatusCode::BAD_REQUEST, "BadRequest", msg);
    let opts = match StreamOptions::parse(req.uri().query().unwrap_or_default(), exec) {
        Ok(o) => o,
        Err(msg) => return bad(&msg),
    };
    let Some(handle) = state.targets.container(namespace, pod, container) else {
        return bad(&format!("container not found ({container:?})"));
    };
    if !websocket::is_upgrade(req.headers()) {
        return bad("this node serves exec and attach over WebSocket only (v5.channel.k8s.io or v4.channel.k8s.io)");
    }
    let Some(protocol) = websocket::choose_protocol(req.headers(), channel::PROTOCOLS) else {
        return bad("no supported WebSocket subprotocol offered (v5.channel.k8s.io or v4.channel.k8s.io)");
    };
    let response = match websocket::handshake(req.headers(), protocol) {
        Ok(r) => r,
        Err(msg) => return bad(&msg),
    };
    let Some(upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return bad("this connection cannot be upgraded (HTTP/1.1 is required)");
    };
    let target = if exec { Target::Exec(opts.command.clone()) } else { Target::Attach };
    let cancel = state.shutdown.child_token();
    let span = tracing::info_span!("exec", %namespace, %pod, %container, attach = !exec);
    state.sessions.spawn(tracing::Instrument::instrument(
        async move {
            match upgrade.await {
                Ok(io) => run_session(hyper_util::rt::TokioIo::new(io), opts, target, handle, cancel).await,
                Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
            }
        },
        span,
    ));
    response
}

/// What a session runs.
#[derive(Debug, Clone)]
pub enum Target {
    Exec(Vec<String>),
    Attach,
}

/// Serves one upgraded connection until the command ended (or the client left, or shutdown).
pub async fn run_session<IO>(
    io: IO,
    opts: StreamOptions,
    target: Target,
    handle: Arc<dyn RunningContainer>,
    cancel: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(64);
    let writer = tokio::spawn(websocket::write_loop(wr, out_rx));

    let (stdin_tx, stdin_rx) = if opts.stdin { split_pipe() } else { (None, None) };
    let (resize_tx, resize_rx) = if opts.tty { channel_pair() } else { (None, None) };
    let mut pumps = tokio::task::JoinSet::new();
    let mut output = |wanted: bool, ch: u8| -> Option<Box<dyn AsyncWrite + Send + Unpin>> {
        if !wanted {
            return None;
        }
        let (theirs, mut ours) = tokio::io::duplex(PIPE);
        let tx = out_tx.clone();
        pumps.spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = ours.read(&mut buf).await {
                if n == 0 || tx.send(Outgoing::Binary(channel::frame(ch, &buf[..n]))).await.is_err() {
                    break;
                }
            }
        });
        Some(Box::new(theirs))
    };
    let io = ExecIo {
        stdin: stdin_rx,
        stdout: output(opts.stdout, channel::STDOUT),
        stderr: output(opts.stderr, channel::STDERR),
        resize: resize_rx,
    };

    // Client messages: stdin, its close, terminal sizes. The reader ends with the socket.
    let pong = out_tx.clone();
    let reader = tokio::spawn(async move {
        let (mut stdin, resize) = (stdin_tx, resize_tx);
        loop {
            let message = match websocket::read_message(&mut rd, &pong).await {
                Ok(Some(Message::Binary(m))) => m,
                Ok(Some(Message::Text(_))) => continue,
                Ok(Some(Message::Close) | None) | Err(_) => break,
            };
            match channel::decode(&message) {
                Ok(channel::Inbound::Stdin(data)) => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Ok(channel::Inbound::StdinClosed) => stdin = None,
                Ok(channel::Inbound::Resize(size)) => {
                    if let Some(tx) = &resize {
                        let _ = tx.try_send(size);
                    }
                }
                Ok(channel::Inbound::Ignored) => {}
                Err(e) => tracing::debug!(error = %e, "ignoring a malformed exec message"),
            }
        }
    });

    let outcome = tokio::select! {
        r = run(&handle, target.clone(), opts.tty, io) => Some(r),
        _ = cancel.cancelled() => None,
    };
    // The runtime dropped its pipe ends: the pumps end once they sent what is left.
    let _ = tokio::time::timeout(DRAIN, async { while pumps.join_next().await.is_some() {} }).await;
    pumps.abort_all();
    let status = match outcome {
        Some(Ok(code)) => {
            let argv = if let Target::Exec(argv) = &target { argv.clone() } else { Vec::new() };
            channel::exit_status(&argv, code)
        }
        Some(Err(e)) => channel::failure_status(&e.reason, &e.message),
        None => channel::failure_status("ServiceUnavailable", "the node is shutting down"),
    };
    let _ = out_tx.send(Outgoing::Binary(channel::frame(channel::ERROR, &status))).await;
    let _ = out_tx.send(Outgoing::Close).await;
    drop(out_tx);
    let _ = tokio::time::timeout(DRAIN, writer).await;
    reader.abort();
}

async fn run(
    handle: &Arc<dyn RunningContainer>,
    target: Target,
    tty: bool,
    io: ExecIo,
) -> Result<i32, crate::runtime::RuntimeError> {
    match target {
        Target::Exec(argv) => handle.exec(argv, tty, io).await,
        Target::Attach => handle.attach(io).await.map(|()| 0),
    }
}

type PipePair = (Option<tokio::io::DuplexStream>, Option<Box<dyn AsyncRead + Send + Unpin>>);

/// A pipe: the session writes the first end, the container reads the second.
fn split_pipe() -> PipePair {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    (Some(ours), Some(Box::new(theirs)))
}

type ResizePair =
    (Option<mpsc::Sender<crate::runtime::TerminalSize>>, Option<mpsc::Receiver<crate::runtime::TerminalSize>>);

fn channel_pair() -> ResizePair {
    let (tx, rx) = mpsc::channel(8);
    (Some(tx), Some(rx))
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
