//! One UDP frontend: datagrams to a Service's UDP port relayed to a ready backend, replies
//! relayed back, as kube-proxy does for UDP with conntrack.
//!
//! What it owns: listening on the frontend's address while there is a ready backend (with
//! none nothing listens, so a client gets ICMP port unreachable — `ECONNREFUSED` — at once, as
//! kube-proxy's reject rule gives), and one *flow* per client address: a socket connected to
//! the backend chosen for the client's first datagram (`balance`: round robin, or ClientIP
//! affinity), so every datagram of a client goes to the same backend, and its replies come back
//! from the Service's address. A flow ends after [`FLOW_IDLE`] without traffic either way (as
//! conntrack forgets an idle UDP entry), when its backend refuses (ICMP port unreachable), or
//! when its backend leaves the Service (kube-proxy clears conntrack entries of removed UDP
//! endpoints); the client's next datagram starts a new flow.
//!
//! Bounded: at most [`MAX_FLOWS`] flows per frontend (more clients' datagrams are dropped and
//! that is logged once), and one receive buffer per frontend shared by its flows' reply tasks
//! (they never await while holding it), so memory does not grow with the number of clients.
//! Scale-to-zero does not apply to UDP: a UDP frontend listens only with a ready backend.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::listener::Shared;
use super::table::Frontend;

/// A flow with no datagram either way for this long is forgotten (conntrack's timeout for a
/// UDP entry that has seen replies is 120 s, 30 s for one that has not; one figure keeps it simple).
pub const FLOW_IDLE: Duration = Duration::from_secs(30);
/// Flows per frontend at most.
pub const MAX_FLOWS: usize = 4096;
/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 65_535;
/// How often a failing bind is retried.
const BIND_RETRY: Duration = Duration::from_secs(5);

/// One client's flow.
#[derive(Debug)]
struct Flow {
    backend: SocketAddr,
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the frontend's clock started, at the last datagram either way.
    last: Arc<AtomicU64>,
    id: u64,
    replies: AbortHandle,
}

/// The clock flows are stamped with.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(self, millis: u64) -> Instant {
        self.0 + Duration::from_millis(millis)
    }
}

/// Serves `frontend` until `stop` fires (its Service port is gone).
pub async fn run(frontend: Frontend, shared: Arc<Shared>, stop: CancellationToken) {
    let mut ready = shared.ready();
    let mut warned = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            open = async { ready.wait_for(|r| *r).await.is_ok() } => if !open { break },
        }
        let socket = match UdpSocket::bind(frontend.addr).await {
            Ok(socket) => Arc::new(socket),
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
        warned = false;
        info!(%frontend, "serving a Service frontend");
        let mut relay = Relay::new(frontend, Arc::clone(&shared), socket);
        let open = relay.serve(&mut ready, &stop).await;
        debug!(%frontend, flows = relay.flows.len(), "UDP frontend closed");
        if !open {
            break;
        }
        info!(%frontend, "no ready backend left; datagrams are refused");
    }
}

/// A listening UDP frontend and its flows (all end when it is dropped).
struct Relay {
    frontend: Frontend,
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    clock: Clock,
    flows: HashMap<SocketAddr, Flow>,
    replies: JoinSet<(SocketAddr, u64)>,
    /// The receive buffer the reply tasks share.
    buffer: Arc<Mutex<Vec<u8>>>,
    next_id: u64,
    full_logged: bool,
}

impl Relay {
    fn new(frontend: Frontend, shared: Arc<Shared>, socket: Arc<UdpSocket>) -> Relay {
        Relay {
            frontend,
            shared,
            socket,
            clock: Clock(Instant::now()),
            flows: HashMap::new(),
            replies: JoinSet::new(),
            buffer: Arc::new(Mutex::new(vec![0; MAX_DATAGRAM])),
            next_id: 0,
            full_logged: false,
        }
    }

    /// Relays until the last backend goes (true) or the frontend stops (false).
    async fn serve(&mut self, ready: &mut tokio::sync::watch::Receiver<bool>, stop: &CancellationToken) -> bool {
        let mut buf = vec![0; MAX_DATAGRAM];
        loop {
            tokio::select! {
                () = stop.cancelled() => return false,
                open = async { ready.wait_for(|r| !*r).await.is_ok() } => return open,
                Some(ended) = self.replies.join_next(), if !self.replies.is_empty() => {
                    if let Ok((client, id)) = ended && self.flows.get(&client).is_some_and(|f| f.id == id) {
                        self.flows.remove(&client);
                        self.shared.with(|b| b.touch(client.ip(), Instant::now()));
                    }
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, client)) => self.forward(&buf[..len], client).await,
                    // An ICMP error about an earlier reply to some client; nothing to do.
                    Err(error) => debug!(frontend = %self.frontend, %error, "UDP receive failed"),
                },
            }
        }
    }

    /// Sends one client datagram on its flow, starting the flow if needed.
    async fn forward(&mut self, datagram: &[u8], client: SocketAddr) {
        let current =
            self.flows.get(&client).is_some_and(|flow| self.shared.with(|b| b.backends().contains(&flow.backend)));
        if !current {
            if let Some(gone) = self.flows.remove(&client) {
                gone.replies.abort();
            }
            if self.flows.len() >= MAX_FLOWS {
                if !std::mem::replace(&mut self.full_logged, true) {
                    warn!(frontend = %self.frontend, "{MAX_FLOWS} UDP flows open; datagrams of new clients are dropped");
                }
                return;
            }
            let Some(flow) = self.start(client).await else { return };
            self.flows.insert(client, flow);
        }
        let Some(flow) = self.flows.get(&client) else { return };
        flow.last.store(self.clock.now(), Ordering::Relaxed);
        if let Err(error) = flow.upstream.send(datagram).await {
            debug!(frontend = %self.frontend, backend = %flow.backend, %error, "UDP backend refused; flow ends");
            if let Some(gone) = self.flows.remove(&client) {
                gone.replies.abort();
            }
        }
    }

    /// A new flow for `client` to the backend the balancer picks (`None`: none, or no socket).
    async fn start(&mut self, client: SocketAddr) -> Option<Flow> {
        let backend = self.shared.with(|b| b.pick(client.ip(), Instant::now()))?;
        let any = if backend.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
        let upstream = match UdpSocket::bind(SocketAddr::new(any, 0)).await {
            Ok(socket) => socket,
            Err(error) => {
                warn!(frontend = %self.frontend, %error, "cannot open a UDP socket for a flow");
                return None;
            }
        };
        if let Err(error) = upstream.connect(backend).await {
            debug!(frontend = %self.frontend, %backend, %error, "cannot reach the UDP backend");
            return None;
        }
        let upstream = Arc::new(upstream);
        let last = Arc::new(AtomicU64::new(self.clock.now()));
        self.next_id += 1;
        let id = self.next_id;
        let replies = self.replies.spawn(replies(
            client,
            id,
            Arc::clone(&upstream),
            Arc::clone(&self.socket),
            Arc::clone(&last),
            Arc::clone(&self.buffer),
            self.clock,
        ));
        debug!(frontend = %self.frontend, %client, %backend, "UDP flow started");
        Some(Flow { backend, upstream, last, id, replies })
    }
}

/// Relays a flow's replies from its backend to `client` until the flow is idle or the
/// backend refuses; the flow's client and id.
async fn replies(
    client: SocketAddr,
    id: u64,
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
    buffer: Arc<Mutex<Vec<u8>>>,
    clock: Clock,
) -> (SocketAddr, u64) {
    loop {
        let idle_at = clock.at(last.load(Ordering::Relaxed)) + FLOW_IDLE;
        match tokio::time::timeout_at(idle_at.into(), upstream.readable()).await {
            Err(_) => {
                if clock.at(last.load(Ordering::Relaxed)) + FLOW_IDLE <= Instant::now() {
                    return (client, id);
                }
            }
            Ok(Err(_)) => return (client, id),
            Ok(Ok(())) => {
                let mut buf = buffer.lock().unwrap_or_else(PoisonError::into_inner);
                match upstream.try_recv(&mut buf) {
                    Ok(len) => {
                        last.store(clock.now(), Ordering::Relaxed);
                        // A full send buffer drops the reply, as a congested link would.
                        let _ = front.try_send_to(&buf[..len], client);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => {
                        debug!(%client, %error, "UDP backend refused; flow ends");
                        return (client, id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Balancer;

    /// A UDP server on loopback answering every datagram with `name:` and the datagram.
    async fn echo(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut buf = [0; 1500];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let reply = [name.as_bytes(), b":", &buf[..len]].concat();
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        (addr, task)
    }

    /// Sends `what` on a socket connected to the frontend (so only replies from the
    /// frontend's own address arrive, and a refusal is reported) and reads the reply.
    async fn ask(client: &UdpSocket, what: &str) -> io::Result<String> {
        client.send(what.as_bytes()).await?;
        let mut buf = [0; 1500];
        let len = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply"))??;
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    async fn client(to: SocketAddr) -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        socket.connect(to).await.expect("connect");
        socket
    }

    #[tokio::test]
    async fn clients_keep_their_backend_new_clients_rotate_and_a_removed_backend_moves_flows() {
        let (a, _a) = echo("a").await;
        let (b, _b) = echo("b").await;
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("free port");
        let frontend = Frontend { protocol: super::super::Protocol::Udp, addr: probe.local_addr().expect("addr") };
        drop(probe);
        let mut backends = vec![a, b];
        backends.sort();
        let shared = Shared::new(Balancer::new(backends.clone(), None), Vec::new());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(frontend, Arc::clone(&shared), stop.clone()));
        let one = client(frontend.addr).await;
        let two = client(frontend.addr).await;
        let mut first = None;
        for _ in 0..100 {
            match ask(&one, "x").await {
                Ok(answer) => {
                    first = Some(answer);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        let first = first.expect("the frontend answers");
        let name_one = first.split(':').next().expect("name").to_owned();
        for i in 0..5 {
            let answer = ask(&one, &format!("m{i}")).await.expect("reply");
            assert_eq!(answer, format!("{name_one}:m{i}"), "a client's datagrams stay on its backend");
        }
        let answer = ask(&two, "y").await.expect("reply");
        assert_ne!(answer.split(':').next(), Some(name_one.as_str()), "the next client gets the next backend");
        // The first client's backend leaves: its next datagram goes to the other one.
        let other = if name_one == "a" { b } else { a };
        shared.update(|bal| bal.update(vec![other], None), Vec::new());
        let answer = ask(&one, "z").await.expect("reply");
        assert_ne!(answer.split(':').next(), Some(name_one.as_str()), "moved off the removed backend");
        // No backend: nothing listens, the client's next datagram is refused.
        shared.update(|bal| bal.update(Vec::new(), None), Vec::new());
        let mut refused = false;
        for _ in 0..100 {
            if let Err(e) = ask(&one, "gone").await
                && e.kind() == io::ErrorKind::ConnectionRefused
            {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(refused, "with no backend the frontend stops listening");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("frontend ends").expect("no panic");
    }
}
