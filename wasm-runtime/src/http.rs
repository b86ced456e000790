//! The `wasi:http` server of one guest: HTTP/1.1 on the pod's address, a fresh instance per
//! request from the artifact's pre-instantiated component.
//!
//! The per-request path mirrors `wasmtime serve`'s P2 fast path (new store, `ProxyPre::
//! instantiate_async`, `incoming-handler.handle` on its own task, the response sent through
//! the `response-outparam` channel) and adds what a pod needs:
//! * a concurrency limit (a semaphore; requests beyond it queue, within their timeout);
//! * a per-request deadline: the store's epoch callback traps the guest once it passes (a
//!   runaway loop), a timer covers a guest blocked in the host; either answers `504`;
//! * the pod's memory limit over all live instances ([`crate::MemoryBudget`]): a request
//!   whose instance is refused memory answers `503` and is counted; the server carries on;
//! * CPU time and request counters ([`GuestStats`]).
//!
//! A guest of a pod with a network namespace is served from inside it (see `netns`).
//!
//! The guest task lives as long as the response body streams (the body owns it), and is
//! aborted when the client goes away or the request fails.
//!
//! Besides its listener, a server takes connections accepted elsewhere ([`HttpHandoff`]): the
//! node's service proxy hands a connection for this pod's address straight over, so the
//! request reaches the guest exactly as one made to the pod IP, without a second socket.

use crate::artifact::Code;
use crate::guest::{GuestConfig, Host};
use crate::limits::{GuestLimiter, MemoryBudget};
use crate::netns::NetNamespace;
use crate::stats::{Counters, GuestStats, InflightGuard};
use crate::{Artifact, RunError, Shape, WasmRuntime};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

type BodyError = <HyperOutgoingBody as Body>::Error;
type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;
type GuestResult = Result<(), wasmtime::Error>;

/// How an HTTP guest is served.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Address to listen on (the pod IP and container port; port 0 picks one).
    pub listen: SocketAddr,
    /// Requests handled at once; more wait for a slot (within their timeout).
    pub max_concurrency: usize,
    /// Time from a request's arrival to its response headers (and the guest's end).
    pub request_timeout: Duration,
}

impl HttpOptions {
    /// `listen` with 1000 concurrent requests and a 30 s timeout.
    pub fn new(listen: SocketAddr) -> Self {
        Self { listen, max_concurrency: 1000, request_timeout: Duration::from_secs(30) }
    }
}

/// A running HTTP guest. Dropping it stops serving at once; [`HttpServer::shutdown`] drains.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    /// Connections accepted by someone else, served by the accept loop like its own.
    handoff: Option<HttpHandoff>,
    accept: Option<JoinHandle<Connections>>,
    /// The runtime of a guest inside a pod's network namespace (`None`: the caller's).
    netns_runtime: Option<tokio::runtime::Runtime>,
}

/// What the accept loop hands back for draining.
type Connections = (JoinSet<()>, hyper_util::server::graceful::GracefulShutdown);

impl HttpServer {
    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Current resource use and request counters.
    pub fn stats(&self) -> GuestStats {
        self.counters.snapshot()
    }

    /// A handle that passes accepted connections to this server (`None` for a guest inside a
    /// pod's network namespace: its connections belong to that namespace's runtime).
    pub fn handoff(&self) -> Option<HttpHandoff> {
        self.handoff.clone()
    }

    /// Serves `stream`, accepted elsewhere from `peer`, as if this server had accepted it;
    /// gives it back if the server has stopped.
    pub fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), TcpStream> {
        match &self.handoff {
            Some(handoff) => handoff.serve_connection(stream, peer),
            None => Err(stream),
        }
    }
}

/// Passes connections accepted elsewhere (the service proxy's) to a running [`HttpServer`],
/// which serves them with its own connections: same limits, same draining on shutdown.
#[derive(Clone, Debug)]
pub struct HttpHandoff {
    tx: mpsc::UnboundedSender<(TcpStream, SocketAddr)>,
}

impl HttpHandoff {
    /// Serves `stream` (from `peer`) on the server; gives it back if the server has stopped.
    pub fn serve_connection(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), TcpStream> {
        self.tx.send((stream, peer)).map_err(|mpsc::error::SendError((stream, _))| stream)
    }

    /// Whether the server still takes connections.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Whether both handles lead to the same server.
    pub fn same_server(&self, other: &HttpHandoff) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

impl HttpServer {
    /// Stops accepting, lets in-flight requests finish for up to `grace`, then aborts the rest.
    pub async fn shutdown(mut self, grace: Duration) {
        self.cancel.cancel();
        let Some(accept) = self.accept.take() else { return };
        let Ok((mut connections, graceful)) = accept.await else { return };
        let _ = tokio::time::timeout(grace, graceful.shutdown()).await;
        connections.shutdown().await;
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(accept) = self.accept.take() {
            // Aborting drops the connection set, which aborts every connection and guest.
            accept.abort();
        }
        if let Some(runtime) = self.netns_runtime.take() {
            // Dropped from async code (the agent's): must not block on its threads.
            runtime.shutdown_background();
        }
    }
}

/// Everything a request needs, shared by all connections of one server.
struct ServerState {
    runtime: WasmRuntime,
    pre: ProxyPre<Host>,
    guest: GuestConfig,
    budget: Arc<MemoryBudget>,
    counters: Arc<Counters>,
    slots: Semaphore,
    timeout: Duration,
}

impl WasmRuntime {
    /// Serves `artifact` (an HTTP component) on `opts.listen` until the returned server is
    /// shut down or dropped. Must be called within a tokio runtime.
    pub async fn serve_http(
        &self,
        artifact: &Artifact,
        guest: GuestConfig,
        opts: HttpOptions,
    ) -> Result<HttpServer, RunError> {
        let Code::Http(pre) = &artifact.inner.code else {
            return Err(RunError::WrongShape {
                digest: artifact.digest().to_owned(),
                actual: artifact.shape(),
                wanted: Shape::Http,
            });
        };
        guest.check_preopens()?;
        // Inside a pod's namespace everything runs on a runtime whose threads joined it, the
        // listener included (a socket belongs to the namespace of the thread creating it).
        let netns_runtime = match &guest.netns {
            Some(path) => Some(NetNamespace::open(path)?.runtime()?),
            None => None,
        };
        let listener = match &netns_runtime {
            Some(rt) => {
                let addr = opts.listen;
                rt.spawn(async move { listen(addr) }).await.map_err(|e| RunError::Listen {
                    addr,
                    source: std::io::Error::other(format!("the listening task failed: {e}")),
                })??
            }
            None => listen(opts.listen)?,
        };
        let local_addr = listener.local_addr().map_err(|source| RunError::Listen { addr: opts.listen, source })?;
        let budget = Arc::new(MemoryBudget::new(guest.memory_limit));
        let counters = Arc::new(Counters::new(Arc::clone(&budget)));
        let guest_netns = guest.netns.clone();
        let state = Arc::new(ServerState {
            runtime: self.clone(),
            pre: pre.clone(),
            guest,
            budget,
            counters: Arc::clone(&counters),
            slots: Semaphore::new(opts.max_concurrency.max(1)),
            timeout: opts.request_timeout,
        });
        let cancel = CancellationToken::new();
        let (tx, handed) = mpsc::unbounded_channel();
        let handoff = netns_runtime.is_none().then_some(HttpHandoff { tx });
        let accept = accept_loop(listener, handed, state, cancel.clone());
        let accept = match &netns_runtime {
            Some(rt) => rt.spawn(accept),
            None => tokio::spawn(accept),
        };
        tracing::debug!(%local_addr, digest = artifact.digest(), netns = ?guest_netns, "serving wasi:http guest");
        Ok(HttpServer { local_addr, counters, cancel, handoff, accept: Some(accept), netns_runtime })
    }
}

fn listen(addr: SocketAddr) -> Result<tokio::net::TcpListener, RunError> {
    let err = |source| RunError::Listen { addr, source };
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(err)?;
    // Rebinding right after a pod restart must not fail on connections in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    mut handed: mpsc::UnboundedReceiver<(TcpStream, SocketAddr)>,
    state: Arc<ServerState>,
    cancel: CancellationToken,
) -> Connections {
    let mut connections = JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some((stream, _peer)) = handed.recv() => serve(stream, &state, &graceful, &mut connections),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve(stream, &state, &graceful, &mut connections),
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    (connections, graceful)
}

/// Serves HTTP/1.1 on one connection as a task of `connections`, watched for draining.
fn serve(
    stream: TcpStream,
    state: &Arc<ServerState>,
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    connections: &mut JoinSet<()>,
) {
    // Small response writes must not wait for Nagle (as in `wasmtime serve`).
    let _ = stream.set_nodelay(true);
    let state = Arc::clone(state);
    let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
    let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
    let conn = graceful.watch(conn);
    connections.spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "http connection ended with an error");
        }
    });
}

async fn handle(
    state: Arc<ServerState>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let _inflight = InflightGuard::start(&state.counters);
    let deadline = Instant::now() + state.timeout;
    let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, state.slots.acquire()).await else {
        state.counters.timed_out.fetch_add(1, Ordering::Relaxed);
        return Ok(plain(503, "timed out waiting for a free request slot"));
    };
    Ok(run_guest(&state, req, deadline).await)
}

async fn run_guest(
    state: &ServerState,
    req: hyper::Request<Incoming>,
    deadline: Instant,
) -> hyper::Response<ResponseBody> {
    let limiter = GuestLimiter::new(Arc::clone(&state.budget));
    let denied = limiter.denied_flag();
    let wasi = match state.guest.wasi_builder() {
        Ok(mut builder) => builder.build(),
        Err(error) => return plain(500, &error.to_string()),
    };
    let mut store =
        Store::new(&state.runtime.inner.engine, state.guest.host(wasi, limiter, &state.runtime.inner.cluster_tls));
    store.limiter(|h| &mut h.limiter);
    let std_deadline = deadline.into_std();
    store.epoch_deadline_callback(move |_| {
        Ok(if std::time::Instant::now() >= std_deadline {
            UpdateDeadline::Interrupt
        } else {
            // Yield every tick so a CPU-bound guest cannot monopolise an executor thread.
            UpdateDeadline::Yield(1)
        })
    });
    store.set_epoch_deadline(1);

    let (tx, rx) = tokio::sync::oneshot::channel();
    let prepared = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(tx)?)));
    let (req, out) = match prepared {
        Ok(v) => v,
        Err(error) => return plain(400, &format!("bad request: {error:#}")),
    };
    let pre = state.pre.clone();
    let counters = Arc::clone(&state.counters);
    let mut guest = AbortOnDrop(tokio::spawn(async move {
        counters
            .metered(async move {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            })
            .await
    }));

    let failure = match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(response))) => {
            return response.map(|body| GuardedBody { body, _guest: guest }.boxed_unsync());
        }
        Ok(Ok(Err(code))) => Failure::GuestError(format!("guest answered with error {code:?}")),
        // The guest ended (or dropped the outparam) without a response: find out why.
        Ok(Err(_)) => match tokio::time::timeout_at(deadline, &mut guest.0).await {
            Ok(Ok(result)) => Failure::from_result(result),
            Ok(Err(join)) => Failure::GuestError(format!("guest task failed: {join}")),
            Err(_) => Failure::Timeout,
        },
        Err(_) => Failure::Timeout,
    };
    drop(guest);
    respond_failure(state, failure, denied.load(Ordering::Relaxed))
}

/// Why a request got no response from its guest.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Timeout,
    GuestError(String),
}

impl Failure {
    fn from_result(result: GuestResult) -> Self {
        match result {
            Ok(()) => Self::GuestError("guest returned without sending a response".to_owned()),
            Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Self::Timeout,
            Err(e) => Self::GuestError(format!("guest failed: {e:#}")),
        }
    }
}

/// Maps a failure to a status, counting it; a refused memory growth explains any failure.
fn respond_failure(state: &ServerState, failure: Failure, memory_denied: bool) -> hyper::Response<ResponseBody> {
    let (status, message) = classify(&failure, memory_denied);
    match status {
        503 => state.counters.rejected_memory.fetch_add(1, Ordering::Relaxed),
        504 => state.counters.timed_out.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    tracing::debug!(status, %message, "wasi:http request failed");
    plain(status, &message)
}

/// Status and body for a failed request (pure, tested).
fn classify(failure: &Failure, memory_denied: bool) -> (u16, String) {
    if memory_denied {
        return (503, "request exceeded the pod's memory limit".to_owned());
    }
    match failure {
        Failure::Timeout => (504, "request timed out".to_owned()),
        Failure::GuestError(message) => (500, message.clone()),
    }
}

fn plain(status: u16, message: &str) -> hyper::Response<ResponseBody> {
    let body =
        Full::new(Bytes::from(format!("{message}\n"))).map_err(|never: Infallible| match never {}).boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Aborts the guest task when dropped (the response is done or abandoned).
struct AbortOnDrop(JoinHandle<GuestResult>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A guest's response body, owning the guest task that produces it.
struct GuardedBody {
    body: HyperOutgoingBody,
    _guest: AbortOnDrop,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_denial_wins_then_timeout_then_error() {
        assert_eq!(classify(&Failure::Timeout, true).0, 503);
        assert_eq!(classify(&Failure::GuestError("x".into()), true).0, 503);
        assert_eq!(classify(&Failure::Timeout, false).0, 504);
        assert_eq!(classify(&Failure::GuestError("boom".into()), false), (500, "boom".to_owned()));
    }

    #[test]
    fn an_epoch_interrupt_is_a_timeout() {
        assert_eq!(Failure::from_result(Err(Trap::Interrupt.into())), Failure::Timeout);
        assert!(matches!(Failure::from_result(Err(Trap::UnreachableCodeReached.into())), Failure::GuestError(_)));
        assert!(matches!(Failure::from_result(Ok(())), Failure::GuestError(_)));
    }
}
