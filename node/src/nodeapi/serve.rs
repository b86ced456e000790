//! The node API's accept loop: TLS handshake per connection in its own task (bounded by a
//! timeout), the caller's groups checked against [`READ_LOGS_GROUP`], HTTP/1.1 or HTTP/2 by
//! hyper-util's auto builder. Every connection task lives in a `JoinSet` and is aborted at
//! shutdown, after a short grace, since a followed log never ends on its own.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::tls::{NodeApiTls, READ_LOGS_GROUP, identity};
use super::{NodeApiState, StreamTargets, forbidden_router, router};
use crate::logs::LogStore;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may finish after shutdown before they are cut.
const DRAIN: Duration = Duration::from_secs(2);

/// Why the node API could not serve.
#[derive(Debug, thiserror::Error)]
pub enum NodeApiError {
    #[error("node API TLS: {0}")]
    Tls(String),
    #[error("node API listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves the node API (logs only: no container is known for exec or port-forward) on
/// `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: NodeApiTls,
    logs: LogStore,
    shutdown: CancellationToken,
) -> Result<(), NodeApiError> {
    serve_with_targets(listener, tls, logs, Arc::default(), shutdown).await
}

/// Serves the node API on `listener` until `shutdown` is cancelled; exec, attach and
/// port-forward act on the containers `targets` knows.
pub async fn serve_with_targets(
    listener: TcpListener,
    tls: NodeApiTls,
    logs: LogStore,
    targets: Arc<StreamTargets>,
    shutdown: CancellationToken,
) -> Result<(), NodeApiError> {
    let acceptor = TlsAcceptor::from(tls.server_config()?);
    let sessions = TaskTracker::new();
    let app = router(NodeApiState { logs, targets, sessions: sessions.clone(), shutdown: shutdown.clone() });
    let mut connections = JoinSet::new();
    tracing::info!(addr = %listener.local_addr()?, "node API listening");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = connection(stream, acceptor.clone(), app.clone(), shutdown.clone());
                    connections.spawn(tracing::Instrument::instrument(conn, tracing::debug_span!("node-api", %peer)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "node API accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    connections.shutdown().await;
    // Sessions watch the same token; they only send their final status.
    sessions.close();
    let _ = tokio::time::timeout(DRAIN, sessions.wait()).await;
    Ok(())
}

async fn connection(stream: TcpStream, acceptor: TlsAcceptor, app: Router, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let tls = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(error = %e, "node API TLS handshake failed"),
            Err(_) => return tracing::debug!("node API TLS handshake timed out"),
        },
    };
    // The verifier requires a CA-issued certificate, so one is always there.
    let who = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(identity);
    let app = match who {
        Some((_, orgs)) if orgs.iter().any(|o| o == READ_LOGS_GROUP) => app,
        Some((cn, _)) => forbidden_router(cn),
        None => forbidden_router(String::new()),
    };
    let service = TowerToHyperService::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, "node API connection closed with error") },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}
