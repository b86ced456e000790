//! Choosing a backend for one new connection: round robin per connection, as kube-proxy does,
//! or — with `sessionAffinity: ClientIP` — the backend a client IP last used, until the
//! affinity timeout passes without traffic from that client.
//!
//! Pure (the clock is passed in), so the rotation and the expiry are unit-tested directly.
//! What it does not: know where the backend list comes from (`table`) or open connections
//! (`listener`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Sticky entries are swept once the map holds this many (and on every backend change), so a
/// flood of distinct clients cannot grow it without bound between sweeps.
const SWEEP_AT: usize = 4096;

/// The backends of one frontend and how new connections are spread over them.
#[derive(Debug, Default)]
pub struct Balancer {
    backends: Vec<SocketAddr>,
    /// Index of the backend the next (non-sticky) connection goes to.
    next: usize,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` when affinity is `ClientIP`.
    affinity: Option<Duration>,
    /// Client IP → its backend and when the client was last seen.
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    pub fn new(backends: Vec<SocketAddr>, affinity: Option<Duration>) -> Balancer {
        let mut b = Balancer::default();
        b.update(backends, affinity);
        b
    }

    /// The ready backends, in table order.
    pub fn backends(&self) -> &[SocketAddr] {
        &self.backends
    }

    /// Replaces the backends and the affinity; clients stay with their backend while it is
    /// still ready (and affinity still on), the rotation carries on where it was.
    pub fn update(&mut self, backends: Vec<SocketAddr>, affinity: Option<Duration>) {
        if affinity.is_none() {
            self.sticky.clear();
        }
        self.sticky.retain(|_, (backend, _)| backends.contains(backend));
        self.next = if backends.is_empty() { 0 } else { self.next % backends.len() };
        self.backends = backends;
        self.affinity = affinity;
    }

    /// The backend for a new connection from `client` at `now` (`None`: no ready backend).
    pub fn pick(&mut self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        if self.backends.is_empty() {
            return None;
        }
        let Some(timeout) = self.affinity else { return Some(self.rotate()) };
        if let Some((backend, seen)) = self.sticky.get_mut(&client)
            && now.saturating_duration_since(*seen) < timeout
        {
            *seen = now;
            return Some(*backend);
        }
        if self.sticky.len() >= SWEEP_AT {
            self.sticky.retain(|_, (_, seen)| now.saturating_duration_since(*seen) < timeout);
        }
        let backend = self.rotate();
        self.sticky.insert(client, (backend, now));
        Some(backend)
    }

    /// Traffic from `client` at `now` (a connection ended): its affinity timer starts again.
    pub fn touch(&mut self, client: IpAddr, now: Instant) {
        if let Some((_, seen)) = self.sticky.get_mut(&client) {
            *seen = (*seen).max(now);
        }
    }

    fn rotate(&mut self) -> SocketAddr {
        let backend = self.backends[self.next % self.backends.len()];
        self.next = (self.next + 1) % self.backends.len();
        backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 244, 0, last], 8080))
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([10, 244, 0, last])
    }

    #[test]
    fn round_robin_per_connection() {
        let mut b = Balancer::new(vec![addr(2), addr(3), addr(4)], None);
        let now = Instant::now();
        let picks: Vec<_> = (0..6).map(|_| b.pick(client(9), now).expect("a backend")).collect();
        assert_eq!(picks, [addr(2), addr(3), addr(4), addr(2), addr(3), addr(4)]);
    }

    #[test]
    fn no_backend_no_pick() {
        let mut b = Balancer::new(Vec::new(), Some(Duration::from_secs(10)));
        assert_eq!(b.pick(client(9), Instant::now()), None);
    }

    #[test]
    fn rotation_survives_an_update() {
        let mut b = Balancer::new(vec![addr(2), addr(3), addr(4)], None);
        let now = Instant::now();
        assert_eq!(b.pick(client(9), now), Some(addr(2)));
        b.update(vec![addr(2), addr(3)], None);
        assert_eq!(b.pick(client(9), now), Some(addr(3)));
        assert_eq!(b.pick(client(9), now), Some(addr(2)));
    }

    #[test]
    fn client_ip_affinity_sticks_until_idle_for_the_timeout() {
        let timeout = Duration::from_secs(10);
        let mut b = Balancer::new(vec![addr(2), addr(3), addr(4)], Some(timeout));
        let t0 = Instant::now();
        let first = b.pick(client(9), t0).expect("a backend");
        // Traffic keeps the entry alive past the timeout counted from the first connection.
        for s in 1..=25 {
            assert_eq!(b.pick(client(9), t0 + Duration::from_secs(s)), Some(first));
        }
        // Another client rotates on.
        assert_ne!(b.pick(client(8), t0), Some(first));
        // Idle for the whole timeout: a new choice (the rotation's next, not the old one).
        let later = t0 + Duration::from_secs(25) + timeout;
        assert_ne!(b.pick(client(9), later), Some(first));
    }

    #[test]
    fn touch_restarts_the_timer() {
        let timeout = Duration::from_secs(10);
        let mut b = Balancer::new(vec![addr(2), addr(3)], Some(timeout));
        let t0 = Instant::now();
        let first = b.pick(client(9), t0).expect("a backend");
        b.touch(client(9), t0 + Duration::from_secs(8));
        assert_eq!(b.pick(client(9), t0 + Duration::from_secs(15)), Some(first));
    }

    #[test]
    fn a_gone_backend_releases_its_clients() {
        let mut b = Balancer::new(vec![addr(2), addr(3)], Some(Duration::from_secs(10)));
        let now = Instant::now();
        assert_eq!(b.pick(client(9), now), Some(addr(2)));
        b.update(vec![addr(3), addr(4)], Some(Duration::from_secs(10)));
        let again = b.pick(client(9), now).expect("a backend");
        assert!(again == addr(3) || again == addr(4), "{again}");
        assert_eq!(b.pick(client(9), now), Some(again));
        // Affinity switched off: plain rotation.
        b.update(vec![addr(3), addr(4)], None);
        let picks: Vec<_> = (0..2).map(|_| b.pick(client(9), now).expect("a backend")).collect();
        assert_ne!(picks[0], picks[1]);
    }
}
