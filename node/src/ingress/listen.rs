//! The ingress listeners: accepting connections on the HTTP and HTTPS ports and serving each
//! with hyper's auto builder (HTTP/1.1, and HTTP/2 — by ALPN `h2` over TLS, by prior knowledge
//! in plain text), every request handed to the [`Proxy`].
//!
//! What it owns: the accept loops and the connection tasks (a `JoinSet`, drained for a moment
//! at shutdown), the TLS handshake (bounded in time). What it does not: bind (the caller does,
//! so a port already in use is reported where the ports are chosen).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::proxy::Proxy;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(2);

/// Serves `listener` until `cancel` fires; with `tls`, every connection is TLS first.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, proxy: Proxy, cancel: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (proxy, cancel, tls) = (proxy.clone(), cancel.clone(), tls.clone());
                    connections.spawn(async move {
                        match tls {
                            None => connection(stream, peer, proxy, cancel).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => connection(stream, peer, proxy, cancel).await,
                                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "ingress TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "ingress TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ingress accept failed");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
    connections.shutdown().await;
}

/// Serves one connection until it closes (or, at shutdown, after a graceful drain).
async fn connection<S>(stream: S, peer: SocketAddr, proxy: Proxy, cancel: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let proxy = Arc::new(proxy);
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { tracing::debug!(error = %e, %peer, "ingress connection closed with error") },
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}
