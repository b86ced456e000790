//! The HTTPS serve loop: accepts TCP connections, performs the TLS handshake per connection
//! (in the connection's own task, with a timeout, so a slow client never stalls accepting),
//! serves HTTP/1.1 and HTTP/2 with hyper-util's auto builder, and hands each request to the
//! axum router with a [`PeerInfo`] extension naming the peer and its verified client
//! certificate identity.
//!
//! It owns connection lifetime and shutdown — stop accepting, graceful GOAWAY / close of idle
//! keep-alives, a bounded drain, then a hard stop — and nothing about routing, authentication
//! or authorization, which live in the router.
//!
//! Every task it spawns (connections and hyper's per-HTTP/2-stream tasks) is owned and has
//! ended when [`serve`] returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::Instrument;

use crate::pki::cert_identity;

/// A TLS handshake that takes longer than this is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not about a single connection (e.g. out of file
/// descriptors), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Who is on the other end of a request's connection. Inserted into every request's
/// extensions; extract it with `axum::Extension<PeerInfo>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The remote socket address.
    pub addr: SocketAddr,
    /// Common name of the client certificate, if one was presented. rustls has already
    /// verified it against the cluster CA, so this is an authenticated user name.
    pub client_cert_cn: Option<String>,
    /// Organizations (Kubernetes groups) of the client certificate.
    pub client_cert_orgs: Vec<String>,
}

/// Runs hyper's background tasks (one per HTTP/2 stream) in a tracker we can wait for, and
/// stops them at the hard-stop deadline, instead of detaching them with `tokio::spawn`.
#[derive(Debug, Clone)]
struct OwnedExecutor {
    tracker: TaskTracker,
    hard_stop: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for OwnedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let hard_stop = self.hard_stop.clone();
        self.tracker.spawn(
            async move {
                tokio::select! {
                    _ = hard_stop.cancelled() => {}
                    _ = fut => {}
                }
            }
            .in_current_span(),
        );
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, over TLS when `tls` is given
/// (plain HTTP otherwise, for tests and local sockets).
///
/// On shutdown it stops accepting, asks every connection to finish gracefully, waits up to
/// `drain` for them, then drops whatever is left. Accept errors are logged and retried, so
/// this only returns once shut down.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let span = tracing::info_span!("serve", %local, tls = tls.is_some());
    async move {
        let acceptor = tls.map(TlsAcceptor::from);
        let graceful = GracefulShutdown::new();
        let executor = OwnedExecutor { tracker: TaskTracker::new(), hard_stop: CancellationToken::new() };
        let mut connections = JoinSet::new();
        tracing::info!("API server listening");

        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = joined.map_err(|e| e.is_panic().then_some(e)) {
                        tracing::error!(error = ?e, "connection task panicked");
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let conn = Connection {
                            acceptor: acceptor.clone(),
                            app: app.clone(),
                            // Subscribed now, before any shutdown signal, so a connection
                            // still handshaking when it fires sees it on `watch`.
                            watcher: graceful.watcher(),
                            shutdown: shutdown.clone(),
                            executor: executor.clone(),
                        };
                        let span = tracing::debug_span!("connection", peer = %addr);
                        connections.spawn(conn.run(stream, addr).instrument(span));
                    }
                    Err(e) if is_connection_error(&e) => {
                        tracing::debug!(error = %e, "accept: connection error");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "accept failed; backing off");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                        }
                    }
                }
            }
        }

        drop(listener);
        tracing::info!(open = graceful.count(), ?drain, "shutting down: draining connections");
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!("drain timeout elapsed; closing remaining connections");
        }
        executor.hard_stop.cancel();
        connections.shutdown().await;
        executor.tracker.close();
        executor.tracker.wait().await;
        tracing::info!("API server stopped");
        Ok(())
    }
    .instrument(span)
    .await
}

/// Errors that concern only the connection being accepted; the listener itself is fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Everything one connection task needs.
struct Connection {
    acceptor: Option<TlsAcceptor>,
    app: Router,
    watcher: Watcher,
    shutdown: CancellationToken,
    executor: OwnedExecutor,
}

impl Connection {
    async fn run(self, stream: TcpStream, addr: SocketAddr) {
        // Small API responses and watch events should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.acceptor.clone() else {
            let peer = PeerInfo { addr, client_cert_cn: None, client_cert_orgs: Vec::new() };
            return self.http(TokioIo::new(stream), peer).await;
        };
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let tls = tokio::select! {
            // Dropping here also drops the watcher, so graceful shutdown need not wait for us.
            _ = self.shutdown.cancelled() => return,
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            },
        };
        let identity = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| cert_identity(leaf))
            .unwrap_or_default();
        let peer = PeerInfo { addr, client_cert_cn: identity.common_name, client_cert_orgs: identity.organizations };
        self.http(TokioIo::new(tls), peer).await;
    }

    /// Serves HTTP/1.1 or HTTP/2 (detected from the connection preface) until the client
    /// goes away or graceful shutdown completes the connection.
    async fn http<I>(self, io: TokioIo<I>, peer: PeerInfo)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = self.app.map_request(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(peer.clone());
            req
        });
        let mut builder = auto::Builder::new(self.executor);
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service)).into_owned();
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection closed with error");
        }
    }
}

#[cfg(test)]
mod tests;
