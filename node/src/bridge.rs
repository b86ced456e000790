//! Pod addresses on the host: the `skiff0` bridge in bridge mode, nothing in loopback mode.
//!
//! What it owns: making a pod's IP bindable on this host. In bridge mode (root) the node
//! bridge `skiff0` carries the gateway address (`.1` of the pod CIDR) and every WASM pod's
//! address as a `/32` — WASM pods run inside the agent, so their IP only has to be a local
//! address the agent can listen on. In loopback mode the addresses come from `127.0.0.0/8`,
//! which Linux routes to `lo` as a whole, so nothing needs doing.
//!
//! It shells out to `ip` (iproute2) rather than speaking netlink: a handful of calls per pod,
//! and the commands are easy to read in logs.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tokio::process::Command;

/// The node bridge's name.
pub const BRIDGE: &str = "skiff0";

/// How pod IPs are provided on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetwork {
    /// Pod IPs from `127.244.N.0/24`: bindable without setup, no root needed.
    #[default]
    Loopback,
    /// Pod IPs from `10.244.N.0/24` on the bridge `skiff0` (needs root).
    Bridge,
}

impl PodNetwork {
    /// The pod CIDR used when none is configured.
    pub fn default_cidr(self) -> Ipv4Net {
        match self {
            PodNetwork::Loopback => Ipv4Net::new(Ipv4Addr::new(127, 244, 0, 0), 24),
            PodNetwork::Bridge => Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 24),
        }
        .expect("a /24 prefix is valid")
    }
}

/// A failed `ip` command.
#[derive(Debug, thiserror::Error)]
#[error("`ip {args}` failed: {message}")]
pub struct NetError {
    args: String,
    message: String,
}

/// Sets up and changes the host side of pod addresses.
#[derive(Debug, Clone)]
pub struct HostNet {
    mode: PodNetwork,
    cidr: Ipv4Net,
    service_cidr: Option<Ipv4Net>,
}

impl HostNet {
    pub fn new(mode: PodNetwork, cidr: Ipv4Net) -> HostNet {
        HostNet { mode, cidr, service_cidr: None }
    }

    /// Also makes the Service cluster IP range local to this host at [`setup`](Self::setup)
    /// (bridge mode), so the service proxy and the DNS server can listen on cluster IPs and
    /// pods reach them through their gateway. Loopback ranges are local already.
    pub fn with_service_cidr(mut self, service_cidr: Ipv4Net) -> HostNet {
        self.service_cidr = Some(service_cidr);
        self
    }

    /// The Service cluster IP range, when it is local to this host: always for a loopback
    /// range, in bridge mode for any range (see [`with_service_cidr`](Self::with_service_cidr)).
    pub fn local_service_cidr(&self) -> Option<Ipv4Net> {
        let cidr = self.service_cidr?;
        (cidr.network().is_loopback() || self.mode == PodNetwork::Bridge).then_some(cidr)
    }

    /// Creates the bridge with its gateway address (bridge mode); idempotent.
    pub async fn setup(&self) -> Result<(), NetError> {
        if self.mode != PodNetwork::Bridge {
            return Ok(());
        }
        for args in setup_commands(self.cidr) {
            run(&args).await?;
        }
        if let Some(service_cidr) = self.service_cidr.filter(|c| !c.network().is_loopback()) {
            run(&service_route_command(service_cidr)).await?;
        }
        Ok(())
    }

    /// Makes `ip` a local address (bridge mode); idempotent.
    pub async fn add_pod_ip(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        match self.mode {
            PodNetwork::Loopback => Ok(()),
            PodNetwork::Bridge => run(&pod_ip_command("replace", ip)).await,
        }
    }

    /// The pod addresses (`/32`s) on the bridge (bridge mode; none in loopback mode).
    pub async fn pod_ips(&self) -> Result<Vec<Ipv4Addr>, NetError> {
        if self.mode != PodNetwork::Bridge {
            return Ok(Vec::new());
        }
        let args: Vec<String> = ["-4", "-o", "addr", "show", "dev", BRIDGE].iter().map(|x| x.to_string()).collect();
        Ok(host_addresses(&output(&args).await?))
    }

    /// Removes a pod's address (bridge mode); an address already gone is fine.
    pub async fn remove_pod_ip(&self, ip: Ipv4Addr) -> Result<(), NetError> {
        match self.mode {
            PodNetwork::Loopback => Ok(()),
            PodNetwork::Bridge => match run(&pod_ip_command("del", ip)).await {
                Err(e) if e.message.contains("Cannot assign requested address") => Ok(()),
                other => other,
            },
        }
    }
}

fn setup_commands(cidr: Ipv4Net) -> Vec<Vec<String>> {
    let gateway = Ipv4Addr::from(u32::from(cidr.network()) + 1);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        // `add` fails if it exists; `-batch` is overkill — the error is tolerated in `run`.
        s(&["link", "add", BRIDGE, "type", "bridge"]),
        s(&["addr", "replace", &format!("{gateway}/{}", cidr.prefix_len()), "dev", BRIDGE]),
        s(&["link", "set", BRIDGE, "up"]),
    ]
}

/// `ip route replace local CIDR dev lo table local`: every address of the range is this host's
/// (the AnyIP trick), so listeners can bind any cluster IP without an address per Service, and
/// a cluster IP:port nobody serves is refused at once (a RST) rather than routed away.
fn service_route_command(cidr: Ipv4Net) -> Vec<String> {
    ["route", "replace", "local", &cidr.to_string(), "dev", "lo", "table", "local"]
        .iter()
        .map(|x| x.to_string())
        .collect()
}

fn pod_ip_command(verb: &str, ip: Ipv4Addr) -> Vec<String> {
    ["addr", verb, &format!("{ip}/32"), "dev", BRIDGE].iter().map(|x| x.to_string()).collect()
}

/// The `/32` addresses in `ip -4 -o addr show` output: pod addresses, not the gateway's.
fn host_addresses(output: &str) -> Vec<Ipv4Addr> {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let (ip, len) = words.next()?.split_once('/')?;
            if len == "32" { ip.parse().ok() } else { None }
        })
        .collect()
}

/// Runs `ip ARGS`; its stdout.
async fn output(args: &[String]) -> Result<String, NetError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| NetError { args: args.join(" "), message: e.to_string() })?;
    if !out.status.success() {
        return Err(NetError {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn run(args: &[String]) -> Result<(), NetError> {
    let joined = args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| NetError { args: joined.clone(), message: e.to_string() })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() || (args.get(1).is_some_and(|v| v == "add") && stderr.contains("File exists")) {
        return Ok(());
    }
    Err(NetError { args: joined, message: stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_commands() {
        let cidr = PodNetwork::Bridge.default_cidr();
        let cmds = setup_commands(cidr);
        assert_eq!(cmds[1].join(" "), "addr replace 10.244.0.1/24 dev skiff0");
        assert_eq!(pod_ip_command("del", Ipv4Addr::new(10, 244, 0, 7)).join(" "), "addr del 10.244.0.7/32 dev skiff0");
        assert_eq!(PodNetwork::Loopback.default_cidr().to_string(), "127.244.0.0/24");
    }

    #[test]
    fn pod_addresses_are_the_host_routes() {
        let out = "5: skiff0    inet 10.244.0.1/24 brd 10.244.0.255 scope global skiff0\\       valid_lft forever\n\
                   5: skiff0    inet 10.244.0.7/32 scope global skiff0\\       valid_lft forever\n";
        assert_eq!(host_addresses(out), vec![Ipv4Addr::new(10, 244, 0, 7)]);
        assert!(host_addresses("").is_empty());
    }

    #[tokio::test]
    async fn loopback_mode_needs_nothing() {
        let net = HostNet::new(PodNetwork::Loopback, PodNetwork::Loopback.default_cidr());
        net.setup().await.expect("setup");
        net.add_pod_ip(Ipv4Addr::new(127, 244, 0, 9)).await.expect("add");
        net.remove_pod_ip(Ipv4Addr::new(127, 244, 0, 9)).await.expect("remove");
        assert!(net.pod_ips().await.expect("list").is_empty());
    }
}
