//! The DNS server task: UDP and TCP listeners on one address, served by [`ClusterHandler`] —
//! TCP by hickory's server, UDP by our own receive threads with an answer cache (`udp.rs`).
//!
//! Owns socket binding and the server's lifetime (a task that ends when the cancellation token
//! fires, after hickory drains its listeners); not the answers (`handler.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use socket2::Socket;
use tokio::net::TcpListener;

/// The error of binding `addr`.
fn bind_error(addr: SocketAddr) -> impl Fn(std::io::Error) -> ServerError + Copy {
    move |source| ServerError::Bind { addr, source }
}
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::handler::ClusterHandler;

/// How long a TCP client may stay idle between requests before hickory closes it.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 64;
/// UDP sockets (and receive threads) on the address: the kernel spreads clients over them.
const UDP_LOOPS: usize = 2;
/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const BIND_ATTEMPTS: usize = 16;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("DNS server failed: {0}")]
    Serve(String),
}

/// A running DNS server; it stops when the token given to [`DnsServer::start`] is cancelled.
#[derive(Debug)]
pub struct DnsServer {
    local_addr: SocketAddr,
    task: JoinHandle<Result<(), ServerError>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (port 0: the same free port for both) and serves
    /// `handler` until `cancel` fires.
    pub async fn start(
        listen: SocketAddr,
        handler: ClusterHandler,
        cancel: CancellationToken,
    ) -> Result<Self, ServerError> {
        let (udp, tcp) = bind_pair(listen).await?;
        let local_addr = crate::udp::local_addr(&udp).map_err(|source| ServerError::Bind { addr: listen, source })?;
        let udp_cancel = cancel.child_token();
        let mut sockets = vec![udp];
        sockets.extend(crate::udp::bind_more(&sockets[0], UDP_LOOPS - 1).map_err(bind_error(local_addr))?);
        let udp_task = crate::udp::spawn(sockets, handler.clone(), udp_cancel.clone())
            .map_err(|e| ServerError::Serve(e.to_string()))?;
        let mut server = Server::new(handler);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
        tracing::info!(%local_addr, "cluster DNS listening (udp, tcp)");
        let task = tokio::spawn(async move {
            let ended = tokio::select! {
                () = cancel.cancelled() => None,
                result = server.block_until_done() => Some(result),
            };
            udp_cancel.cancel();
            let _ = udp_task.await;
            let result = match ended {
                Some(result) => result,
                None => server.shutdown_gracefully().await,
            };
            result.map_err(|e| ServerError::Serve(e.to_string()))
        });
        Ok(Self { local_addr, task })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the server to stop (after cancellation, or on a listener failure).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ServerError::Serve(join.to_string())),
        }
    }
}

async fn bind_pair(listen: SocketAddr) -> Result<(Socket, TcpListener), ServerError> {
    let bind_error = bind_error(listen);
    let attempts = if listen.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = crate::udp::bind(listen).map_err(bind_error)?;
        let addr = crate::udp::local_addr(&udp).map_err(bind_error)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The kernel's free UDP port may be taken for TCP: try another one.
            Err(error) => last = Some(error),
        }
    }
    Err(bind_error(last.unwrap_or_else(|| std::io::Error::other("no attempt made"))))
}
