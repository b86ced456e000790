//! The node's cluster DNS server: every node answers the cluster zone itself at the
//! `kube-system/kube-dns` address (the service range's `.10`), from Services and Endpoints it
//! watches through the API server, and forwards other names upstream.
//!
//! What it owns: the two watches (all namespaces) feeding a [`ClusterRecords`] cache (shared
//! with the WASM guests' resolvers, `runtime/wasm_names.rs`, so it is fed even where no DNS
//! server runs), the
//! choice of upstream resolvers (the `--dns-upstream` flags, else the host's `resolv.conf` minus
//! the cluster DNS address itself, which would loop), and the [`DnsServer`] on
//! `<cluster dns>:53` over UDP and TCP. It only listens when that address is local to the node
//! ([`HostNet::local_service_cidr`](crate::bridge::HostNet::local_service_cidr): bridge mode,
//! or a loopback service range); otherwise it says once why and does nothing. What it does
//! not: the record logic (the `skiff-dns` crate) or the `kube-dns` Service (the control plane).

use std::collections::HashSet;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use skiff_dns::{ClusterHandler, ClusterRecords, DnsServer, Forwarder, Upstreams, ZoneConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The port DNS is served on.
pub const DNS_PORT: u16 = 53;

/// How the node's DNS server runs.
#[derive(Debug, Clone)]
pub struct ClusterDnsConfig {
    /// The address to serve (the kubelet's `--cluster-dns`).
    pub ip: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub zone: String,
    /// Upstream resolvers; empty: the nameservers of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    /// The host's resolver configuration (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
}

impl ClusterDnsConfig {
    /// Serving `ip`, zone `cluster.local`, upstreams from `/etc/resolv.conf`.
    pub fn new(ip: Ipv4Addr) -> Self {
        Self { ip, zone: "cluster.local".into(), upstreams: Vec::new(), resolv_conf: "/etc/resolv.conf".into() }
    }
}

/// An empty record cache for `cfg`'s zone, to share between [`run`] and guest resolvers.
pub fn new_records(cfg: &ClusterDnsConfig) -> ClusterRecords {
    ClusterRecords::new(ZoneConfig { zone: cfg.zone.clone(), dns_ip: Some(cfg.ip.into()), ..ZoneConfig::default() })
}

/// Keeps `records` current and serves cluster DNS from it until `cancel` fires (see the module
/// docs). Never fails: problems are logged, and the node runs on without DNS.
pub async fn run(
    client: kube::Client,
    cfg: ClusterDnsConfig,
    records: ClusterRecords,
    local: Option<Ipv4Net>,
    cancel: CancellationToken,
) {
    let server = if local.is_some_and(|cidr| cidr.contains(&cfg.ip)) {
        serve(&cfg, &records, &cancel).await
    } else {
        let why = match local {
            Some(cidr) => format!("{} is outside the local service range {cidr}", cfg.ip),
            None => "cluster IPs are not local addresses of this node (loopback pod network with a \
                     non-loopback service range; use --pod-network bridge)"
                .to_owned(),
        };
        info!(ip = %cfg.ip, "cluster DNS not served on this node: {why}");
        None
    };
    let (r1, r2, r3, r4) = (records.clone(), records.clone(), records.clone(), records);
    let services = follow::<Service>(
        Api::all(client.clone()),
        move |s| r1.upsert_service(s),
        move |ns, name| r2.remove_service(ns, name),
    );
    let endpoints = follow::<Endpoints>(
        Api::all(client),
        move |e| r3.upsert_endpoints(e),
        move |ns, name| r4.remove_endpoints(ns, name),
    );
    tokio::select! {
        () = cancel.cancelled() => {}
        () = services => warn!("the Service watch of cluster DNS ended"),
        () = endpoints => warn!("the Endpoints watch of cluster DNS ended"),
    }
    cancel.cancelled().await;
    if let Some(server) = server
        && let Err(error) = server.wait().await
    {
        warn!(%error, "cluster DNS server stopped with an error");
    }
}

/// Starts the DNS server on `<cfg.ip>:53`; `None` (logged) if it cannot.
async fn serve(cfg: &ClusterDnsConfig, records: &ClusterRecords, cancel: &CancellationToken) -> Option<DnsServer> {
    let upstreams = upstreams(cfg);
    let forwarder = if upstreams.is_empty() {
        warn!("cluster DNS has no upstream resolver: names outside the cluster zone are refused");
        None
    } else {
        match Forwarder::new(&Upstreams::Servers(upstreams.clone())) {
            Ok(forwarder) => Some(forwarder),
            Err(error) => {
                warn!(%error, "cluster DNS cannot forward: names outside the cluster zone are refused");
                None
            }
        }
    };
    let listen = SocketAddr::new(cfg.ip.into(), DNS_PORT);
    let handler = ClusterHandler::new(records.clone(), forwarder);
    let server = match DnsServer::start(listen, handler, cancel.child_token()).await {
        Ok(server) => server,
        Err(error) => {
            warn!(%error, "cluster DNS not served on this node");
            return None;
        }
    };
    info!(%listen, ?upstreams, "cluster DNS serving");
    Some(server)
}

/// Follows every object of kind `K` into `apply`/`remove`, including objects deleted while the
/// watch was down (missing from a re-list).
async fn follow<K>(api: Api<K>, apply: impl Fn(&K), remove: impl Fn(&str, &str))
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
{
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut listing: Option<HashSet<(String, String)>> = None;
    let key = |k: &K| {
        let meta = k.meta();
        Some((meta.namespace.clone()?, meta.name.clone()?))
    };
    while let Some(event) = events.next().await {
        match event {
            Err(error) => warn!(%error, "cluster DNS watch failed; retrying"),
            Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                if let (Some(seen), Some(k)) = (&mut listing, key(&obj)) {
                    seen.insert(k);
                }
                apply(&obj);
            }
            Ok(watcher::Event::InitDone) => {
                let seen = listing.take().unwrap_or_default();
                for (ns, name) in known.difference(&seen) {
                    remove(ns, name);
                }
                known = seen;
            }
            Ok(watcher::Event::Apply(obj)) => {
                if let Some(k) = key(&obj) {
                    known.insert(k);
                }
                apply(&obj);
            }
            Ok(watcher::Event::Delete(obj)) => {
                if let Some((ns, name)) = key(&obj) {
                    remove(&ns, &name);
                    known.remove(&(ns, name));
                }
            }
        }
    }
}

/// The configured upstreams, else the host's nameservers; never the cluster DNS itself.
fn upstreams(cfg: &ClusterDnsConfig) -> Vec<SocketAddr> {
    let own = SocketAddr::new(cfg.ip.into(), DNS_PORT);
    let servers = if cfg.upstreams.is_empty() { host_nameservers(&cfg.resolv_conf) } else { cfg.upstreams.clone() };
    servers.into_iter().filter(|s| *s != own).collect()
}

fn host_nameservers(path: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => nameservers(&text),
        Err(error) => {
            warn!(path = %path.display(), %error, "reading the host's resolver configuration");
            Vec::new()
        }
    }
}

/// `nameserver` lines of a resolv.conf, port 53; lines that do not parse are skipped.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            // A zone index (`fe80::1%eth0`) cannot be used from here.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, DNS_PORT))
        })
        .collect()
}

/// Parses `--dns-upstream`: `IP` (port 53), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, DNS_PORT)).map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_never_point_back_at_the_cluster_dns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "search x\nnameserver 10.96.0.10\nnameserver 192.0.2.1\nnameserver bogus\n")
            .expect("write");
        let mut cfg = ClusterDnsConfig::new(Ipv4Addr::new(10, 96, 0, 10));
        cfg.resolv_conf = path;
        assert_eq!(upstreams(&cfg), ["192.0.2.1:53".parse().expect("addr")]);
        cfg.upstreams = vec!["127.0.0.2:5353".parse().expect("addr"), "10.96.0.10:53".parse().expect("addr")];
        assert_eq!(upstreams(&cfg), ["127.0.0.2:5353".parse().expect("addr")], "flags override, minus itself");
        cfg.upstreams.clear();
        cfg.resolv_conf = dir.path().join("missing");
        assert!(upstreams(&cfg).is_empty());
    }

    #[test]
    fn upstream_flags_parse() {
        assert_eq!(parse_upstream("192.0.2.1"), Ok("192.0.2.1:53".parse().expect("addr")));
        assert_eq!(parse_upstream("127.0.0.2:5353"), Ok("127.0.0.2:5353".parse().expect("addr")));
        assert_eq!(parse_upstream("::1"), Ok("[::1]:53".parse().expect("addr")));
        assert_eq!(parse_upstream("[::1]:54"), Ok("[::1]:54".parse().expect("addr")));
        assert!(parse_upstream("dns.example").is_err());
    }
}
