//! Pod IP address management for this node.
//!
//! What it owns: handing out one IPv4 address per pod uid from the node's pod CIDR, and
//! remembering the assignments in a small JSON file in the data dir, so an agent that restarts
//! gives a still-running pod the same address again. What it does not: put the address on an
//! interface (the `bridge` module does, in bridge mode; loopback addresses need nothing).
//!
//! Allocation walks forward from the last address handed out (like CNI's `host-local`), so a
//! just-released address is not reused at once by the next pod — clients of the old pod may
//! still be talking to it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Why an address could not be handed out or remembered.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("pod CIDR {0} has no free address left")]
    Exhausted(Ipv4Net),
    #[error("pod CIDR {0} is too small (need at least a /30)")]
    TooSmall(Ipv4Net),
    #[error("reading IP assignments {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("IP assignments {path} are corrupt: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("writing IP assignments {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// What is persisted: the assignments and where the next search starts.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct State {
    cidr: Option<Ipv4Net>,
    last: Option<Ipv4Addr>,
    pods: BTreeMap<String, Ipv4Addr>,
}

/// The allocator. Not synchronised: the agent keeps it behind a mutex.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Net,
    path: Option<PathBuf>,
    state: State,
}

impl Ipam {
    /// An allocator that remembers nothing on disk (tests, dry runs).
    pub fn in_memory(cidr: Ipv4Net) -> Result<Ipam, IpamError> {
        check_size(cidr)?;
        Ok(Ipam { cidr, path: None, state: State { cidr: Some(cidr), ..State::default() } })
    }

    /// Loads the assignments in `path` (if any). Assignments outside `cidr` (the CIDR
    /// changed) are dropped.
    pub fn load(cidr: Ipv4Net, path: &Path) -> Result<Ipam, IpamError> {
        check_size(cidr)?;
        let mut state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|source| IpamError::Corrupt { path: path.to_path_buf(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(IpamError::Read { path: path.to_path_buf(), source }),
        };
        state.pods.retain(|_, ip| usable(cidr, *ip));
        if state.cidr != Some(cidr) {
            state.last = None;
            state.cidr = Some(cidr);
        }
        Ok(Ipam { cidr, path: Some(path.to_path_buf()), state })
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The address of pod `uid`: the one it already has, or a new one.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some(ip) = self.state.pods.get(uid) {
            return Ok(*ip);
        }
        let ip = next_free(self.cidr, self.state.last, |ip| self.state.pods.values().any(|used| *used == ip))
            .ok_or(IpamError::Exhausted(self.cidr))?;
        self.state.pods.insert(uid.to_string(), ip);
        self.state.last = Some(ip);
        self.save()?;
        Ok(ip)
    }

    /// The address pod `uid` holds, if any.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.state.pods.get(uid).copied()
    }

    /// Gives pod `uid`'s address back; returns it.
    pub fn release(&mut self, uid: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        let released = self.state.pods.remove(uid);
        if released.is_some() {
            self.save()?;
        }
        Ok(released)
    }

    /// Releases every assignment whose pod uid `keep` rejects (pods gone while the agent was
    /// down); returns the released addresses.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut released = Vec::new();
        self.state.pods.retain(|uid, ip| {
            let kept = keep(uid);
            if !kept {
                released.push(*ip);
            }
            kept
        });
        if !released.is_empty() {
            self.save()?;
        }
        Ok(released)
    }

    /// Every `(uid, address)` assignment.
    pub fn assignments(&self) -> impl Iterator<Item = (&str, Ipv4Addr)> {
        self.state.pods.iter().map(|(uid, ip)| (uid.as_str(), *ip))
    }

    fn save(&self) -> Result<(), IpamError> {
        let Some(path) = &self.path else { return Ok(()) };
        let write_err = |source| IpamError::Write { path: path.clone(), source };
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| write_err(std::io::Error::other(e)))?;
        // Write-then-rename: a crash mid-write never leaves a truncated file behind.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(write_err)?;
        std::fs::rename(&tmp, path).map_err(write_err)
    }
}

fn check_size(cidr: Ipv4Net) -> Result<(), IpamError> {
    if cidr.prefix_len() > 30 { Err(IpamError::TooSmall(cidr)) } else { Ok(()) }
}

/// Whether `ip` may be given to a pod: inside the CIDR, not the network address, not the
/// first host (the gateway on the bridge), not the broadcast address.
fn usable(cidr: Ipv4Net, ip: Ipv4Addr) -> bool {
    let network = u32::from(cidr.network());
    let broadcast = u32::from(cidr.broadcast());
    let n = u32::from(ip);
    cidr.contains(&ip) && n > network + 1 && n < broadcast
}

/// The first usable address after `last` (wrapping around) for which `used` is false.
fn next_free(cidr: Ipv4Net, last: Option<Ipv4Addr>, used: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let first = u32::from(cidr.network()) + 2;
    let end = u32::from(cidr.broadcast()); // exclusive
    let span = end - first;
    let start = match last {
        Some(l) if usable(cidr, l) => u32::from(l) + 1 - first,
        _ => 0,
    };
    (0..span).map(|i| Ipv4Addr::from(first + (start + i) % span)).find(|ip| !used(*ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let mut ipam = Ipam::in_memory(cidr("127.244.0.0/24")).expect("ipam");
        assert_eq!(ipam.allocate("a").expect("ip"), Ipv4Addr::new(127, 244, 0, 2));
        assert_eq!(ipam.allocate("b").expect("ip"), Ipv4Addr::new(127, 244, 0, 3));
        // The same pod asks again: same address.
        assert_eq!(ipam.allocate("a").expect("ip"), Ipv4Addr::new(127, 244, 0, 2));
    }

    #[test]
    fn exhaustion_and_release_walk_forward() {
        // A /29 has .2 .. .6 usable: five pods.
        let mut ipam = Ipam::in_memory(cidr("10.0.0.0/29")).expect("ipam");
        for i in 0..5 {
            ipam.allocate(&format!("p{i}")).expect("ip");
        }
        assert!(matches!(ipam.allocate("p5"), Err(IpamError::Exhausted(_))));
        assert_eq!(ipam.release("p1").expect("release"), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(ipam.release("p1").expect("release"), None);
        assert_eq!(ipam.allocate("p5").expect("ip"), Ipv4Addr::new(10, 0, 0, 3));
    }

    #[test]
    fn released_address_is_not_reused_at_once() {
        let mut ipam = Ipam::in_memory(cidr("10.0.0.0/24")).expect("ipam");
        let a = ipam.allocate("a").expect("ip");
        ipam.release("a").expect("release");
        let b = ipam.allocate("b").expect("ip");
        assert_ne!(a, b);
    }

    #[test]
    fn too_small_is_rejected() {
        assert!(matches!(Ipam::in_memory(cidr("10.0.0.0/31")), Err(IpamError::TooSmall(_))));
    }

    #[test]
    fn assignments_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        let net = cidr("127.244.0.0/24");
        let mut ipam = Ipam::load(net, &path).expect("load");
        let a = ipam.allocate("a").expect("ip");
        let b = ipam.allocate("b").expect("ip");
        ipam.release("a").expect("release");
        drop(ipam);

        let mut again = Ipam::load(net, &path).expect("reload");
        assert_eq!(again.get("b"), Some(b));
        assert_eq!(again.get("a"), None);
        // The walk continues after the last address handed out.
        let c = again.allocate("c").expect("ip");
        assert!(c != a && c != b, "{c} should be fresh");

        // A different CIDR drops the old assignments.
        let other = Ipam::load(cidr("10.9.0.0/24"), &path).expect("reload");
        assert_eq!(other.assignments().count(), 0);
    }

    #[test]
    fn retain_releases_the_rejected_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        let net = cidr("10.244.0.0/24");
        let mut ipam = Ipam::load(net, &path).expect("load");
        let a = ipam.allocate("a").expect("ip");
        let b = ipam.allocate("b").expect("ip");
        assert_eq!(ipam.retain(|uid| uid == "b").expect("retain"), vec![a]);
        assert!(ipam.retain(|_| true).expect("retain").is_empty());
        let again = Ipam::load(net, &path).expect("reload");
        assert_eq!(again.assignments().collect::<Vec<_>>(), vec![("b", b)]);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(Ipam::load(cidr("10.0.0.0/24"), &path), Err(IpamError::Corrupt { .. })));
    }
}
