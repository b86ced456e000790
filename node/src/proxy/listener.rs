//! One TCP frontend: its listener and the connections it accepted.
//!
//! What it owns: listening on the frontend's address while it has a ready backend (and only
//! then: with none, nothing listens, so a client is refused at once — a RST, `curl` exit 7 —
//! instead of hanging), binding again when backends come back, accepting, choosing each
//! connection's backend (`balance`), and relaying it: handed straight to the backend's HTTP
//! server when that is a WASM pod of this agent (`local`), else spliced to a new connection to
//! the backend with `copy_bidirectional` (half-closes pass through: EOF one way shuts down the
//! other side's write, the other direction carries on). A connection whose backend cannot be
//! reached is reset (`SO_LINGER` 0), never left open. What it does not: decide which frontends
//! exist (`mod.rs` does, from `table`).
//!
//! When its Service goes away the listener closes at once; connections already established
//! carry on to their natural end (as kube-proxy leaves established flows alone) unless the
//! agent stops.
//!
//! Scale-to-zero: a frontend whose Service fronts an opted-in Deployment (`wake`) listens even
//! with no ready backend. A connection accepted then is held — not refused — while `scaler`
//! scales the Deployment from zero, and relayed the moment a backend is ready; after
//! [`HOLD_LIMIT`] (or a failed scale-up) it is reset, and a Warning event on the Deployment says
//! why. Every connection of such a frontend counts as the Deployment's activity.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::balance::Balancer;
use super::local::LocalHttp;
use super::scaler::{REWAKE, ScaleError, Scaler};
use super::table::Frontend;
use super::wake::WakeTarget;

/// How long a connection is held for a Deployment scaling from zero before it is given up.
pub const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// Time for a connection to a backend to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backends tried for one connection (the chosen one, then the next ones in the rotation).
const CONNECT_ATTEMPTS: usize = 3;
/// How long a busy address is retried (the listener of a Service just deleted and re-created
/// may not be closed yet), and how often a failing bind is retried after that.
const BIND_BUSY_FOR: Duration = Duration::from_secs(2);
const BIND_RETRY: Duration = Duration::from_secs(5);
/// Splice buffer per direction.
const BUFFER: usize = 64 * 1024;

/// What the proxy and a frontend's task share: the backends, whether there are any, and the
/// Deployments a connection may wake.
#[derive(Debug)]
pub struct Shared {
    balancer: Mutex<Balancer>,
    wake: Mutex<Vec<WakeTarget>>,
    /// Whether there is a ready backend.
    ready: watch::Sender<bool>,
    /// Whether to listen: a ready backend, or a Deployment to wake.
    listen: watch::Sender<bool>,
}

impl Shared {
    pub fn new(balancer: Balancer, wake: Vec<WakeTarget>) -> Arc<Shared> {
        let ready = !balancer.backends().is_empty();
        let listen = watch::Sender::new(ready || !wake.is_empty());
        Arc::new(Shared {
            balancer: Mutex::new(balancer),
            wake: Mutex::new(wake),
            ready: watch::Sender::new(ready),
            listen,
        })
    }

    /// Runs `f` on the balancer and replaces the wake targets, then tells the task whether
    /// backends are left and whether to listen.
    pub fn update(&self, f: impl FnOnce(&mut Balancer), wake: Vec<WakeTarget>) {
        let ready = {
            let mut balancer = self.balancer.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut balancer);
            !balancer.backends().is_empty()
        };
        let listen = ready || !wake.is_empty();
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = wake;
        self.ready.send_if_modified(|r| std::mem::replace(r, ready) != ready);
        self.listen.send_if_modified(|l| std::mem::replace(l, listen) != listen);
    }

    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Balancer) -> T) -> T {
        f(&mut self.balancer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Follows whether there is a ready backend.
    pub(super) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn wake_targets(&self) -> Vec<WakeTarget> {
        self.wake.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Serves `frontend` until `stop` fires (its Service port is gone), then lets established
/// connections finish unless `shutdown` (the agent's) fires.
pub async fn run(
    frontend: Frontend,
    shared: Arc<Shared>,
    local: Arc<LocalHttp>,
    scaler: Arc<Scaler>,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut ready = shared.listen.subscribe();
    let mut connections = JoinSet::new();
    let mut warned = false;
    'serve: loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            open = async { ready.wait_for(|r| *r).await.is_ok() } => if !open { break },
        }
        let listener = match bind(frontend.addr, &stop).await {
            Ok(listener) => listener,
            Err(error) => {
                if !warned {
                    warn!(%frontend, %error, "cannot listen for a Service; retrying");
                    warned = true;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(BIND_RETRY) => continue,
                }
            }
        };
        info!(%frontend, "serving a Service frontend");
        warned = false;
        loop {
            tokio::select! {
                () = stop.cancelled() => break 'serve,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                open = async { ready.wait_for(|r| !*r).await.is_ok() } => {
                    if !open { break 'serve }
                    info!(%frontend, "no ready backend left (and nothing to scale from zero); connections are refused");
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(relay(
                            stream,
                            peer,
                            frontend,
                            Arc::clone(&shared),
                            Arc::clone(&local),
                            Arc::clone(&scaler),
                        ));
                    }
                    Err(error) => {
                        warn!(%frontend, %error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
    debug!(%frontend, open = connections.len(), "frontend closed");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = async { while connections.join_next().await.is_some() {} } => {}
    }
}

/// Listens on `addr` (reusing an address in TIME_WAIT); a busy address is retried briefly.
async fn bind(addr: SocketAddr, stop: &CancellationToken) -> io::Result<TcpListener> {
    let started = Instant::now();
    loop {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }?;
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(1024)) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && started.elapsed() < BIND_BUSY_FOR => {
                tokio::select! {
                    () = stop.cancelled() => return Err(e),
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
            other => return other,
        }
    }
}

/// Relays one accepted connection to a backend.
async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    frontend: Frontend,
    shared: Arc<Shared>,
    local: Arc<LocalHttp>,
    scaler: Arc<Scaler>,
) {
    let _ = client.set_nodelay(true);
    let wake = shared.wake_targets();
    let _activity = (!wake.is_empty()).then(|| scaler.connection(&wake));
    if !wake.is_empty() && !*shared.ready.borrow() {
        match hold(&shared, &scaler, &wake, frontend).await {
            Ok(waited) => debug!(%frontend, %peer, ?waited, "held connection goes on"),
            Err(error) => {
                warn!(%frontend, %peer, %error, "held connection given up");
                for target in &wake {
                    scaler.warn(
                        target,
                        "ScaleFromZeroTimeout",
                        format!("A connection to {frontend} was closed: {error}"),
                    );
                }
                reject(client);
                return;
            }
        }
    }
    for _ in 0..CONNECT_ATTEMPTS {
        let Some(backend) = shared.with(|b| b.pick(peer.ip(), Instant::now())) else { break };
        if let Some(server) = local.get(backend) {
            match server.serve_connection(client, peer) {
                Ok(()) => return,
                // The pod's server stopped meanwhile: go through the network like anyone.
                Err(back) => client = back,
            }
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                let result = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER).await;
                if let Err(error) = result {
                    // Pass a reset on rather than a clean end.
                    debug!(%frontend, %backend, %error, "relay ended with an error");
                    let _ = client.set_zero_linger();
                    let _ = upstream.set_zero_linger();
                }
                shared.with(|b| b.touch(peer.ip(), Instant::now()));
                return;
            }
            Ok(Err(error)) => debug!(%frontend, %backend, %error, "backend refused; trying another"),
            Err(_) => debug!(%frontend, %backend, "backend did not answer in time; trying another"),
        }
    }
    reject(client);
}

/// Why a held connection was given up.
#[derive(Debug, thiserror::Error)]
enum HoldError {
    #[error("no ready backend {}s after asking to scale from zero", HOLD_LIMIT.as_secs())]
    Timeout,
    #[error(transparent)]
    Scale(#[from] ScaleError),
    #[error("the Service's frontend went away")]
    Closed,
}

/// Holds a connection until the frontend has a ready backend, scaling `targets` from zero
/// meanwhile (again every [`REWAKE`]: they may have been scaled back down); how long it took.
async fn hold(
    shared: &Shared,
    scaler: &Scaler,
    targets: &[WakeTarget],
    frontend: Frontend,
) -> Result<Duration, HoldError> {
    let started = Instant::now();
    let mut ready = shared.ready.subscribe();
    let deadline = tokio::time::sleep(HOLD_LIMIT);
    tokio::pin!(deadline);
    let why = format!("a connection to {frontend} is waiting");
    loop {
        let wake = async {
            for target in targets {
                scaler.wake(target, &why).await?;
            }
            tokio::time::sleep(REWAKE).await;
            Ok::<(), ScaleError>(())
        };
        tokio::select! {
            biased;
            r = ready.wait_for(|r| *r) => return r.map(|_| started.elapsed()).map_err(|_| HoldError::Closed),
            r = wake => r?,
            () = &mut deadline => return Err(HoldError::Timeout),
        }
    }
}

/// Resets a connection (RST instead of FIN): the client learns at once that nobody serves it.
fn reject(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
