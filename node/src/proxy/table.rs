//! The proxy's routing table, computed from Services and EndpointSlices: every address the
//! node serves for a Service port (its cluster IP, its node port, its load-balancer port) and
//! the ready backends behind it.
//!
//! Pure: objects in, table out, so what is served where is unit-tested without a cluster.
//! What it owns: which frontends exist (and which cannot be served, and why), port resolution
//! by the slice's port name, readiness (`conditions.ready`; with no ready endpoint at all,
//! kube-proxy's fallback to serving-and-terminating ones), session affinity settings. What it
//! does not: listen or pick a backend (`listener`, `balance`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::wake::{self, WakeTarget};

/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` when unset (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `TCP` (also when unset), `UDP`, `SCTP`; anything else is not served.
    pub fn parse(value: Option<&str>) -> Option<Protocol> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// An address (and protocol) the node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol)
    }
}

/// Which of a Service's addresses a frontend is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// What a frontend leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name:port` (the port's name, else its number), for logs.
    pub service: String,
    pub kind: Kind,
    /// Ready backends, sorted (empty: nothing to serve; the frontend refuses connections).
    pub backends: Vec<SocketAddr>,
    /// The ClientIP affinity timeout, when the Service asks for affinity.
    pub affinity: Option<Duration>,
    /// Scale-to-zero Deployments behind the Service (`wake`): while there are any, the
    /// frontend listens even with no backend, and holds connections while one scales up.
    pub wake: Vec<WakeTarget>,
}

/// Where this node serves each kind of frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The service range when cluster IPs are bindable here (`HostNet::local_service_cidr`).
    pub local_service_cidr: Option<Ipv4Net>,
    /// The node's InternalIP: load-balancer ports are served on it.
    pub node_ip: IpAddr,
    /// Node ports are served on it: `0.0.0.0` in bridge mode, the node IP in loopback mode
    /// (so test clusters sharing one host's loopback do not collide).
    pub node_port_ip: IpAddr,
}

/// A frontend a Service wants but this node does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The cluster IP is not a local address of this node (loopback networking with a
    /// non-loopback service range).
    NotLocal { service: String, ip: IpAddr },
    /// Another Service port already has this frontend (the first, by namespace/name, wins).
    Taken { service: String, frontend: Frontend, by: String },
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::NotLocal { service, ip } => write!(
                f,
                "{service}: cluster IP {ip} is not a local address of this node (loopback pod networking \
                 serves only a loopback --service-cluster-ip-range)"
            ),
            Skipped::Taken { service, frontend, by } => write!(f, "{service}: {frontend} is already served for {by}"),
        }
    }
}

/// The routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub routes: BTreeMap<Frontend, Route>,
    pub skipped: Vec<Skipped>,
}

/// Builds the table from every Service and EndpointSlice, and the Deployments that may be
/// scaled from zero (all at once; the proxy keeps the same result up to date per Service with
/// [`Routing`](super::routing::Routing)); the unit tests' view of the whole table.
#[cfg(test)]
pub fn build(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    deployments: &[Arc<Deployment>],
    placement: &Placement,
) -> Table {
    let mut by_service: std::collections::HashMap<(&str, &str), Vec<&EndpointSlice>> = Default::default();
    for slice in slices {
        if let Some(service) = owner(slice) {
            by_service.entry(service).or_default().push(slice);
        }
    }
    let mut routing = super::routing::Routing::default();
    for svc in services {
        let key = (namespace(&svc.metadata), svc.metadata.name.as_deref().unwrap_or_default());
        let mine = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        routing.set((key.0.to_owned(), key.1.to_owned()), service_routes(svc, mine, deployments, placement));
    }
    routing.table()
}

/// The namespace and Service an EndpointSlice belongs to (its `kubernetes.io/service-name`).
pub fn owner(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((namespace(&slice.metadata), service.as_str()))
}

/// An object's namespace (`default` when unset).
pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// One Service's frontends, before conflicts with other Services are settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRoutes {
    pub routes: Vec<(Frontend, Route)>,
    /// Cluster IPs not served here (conflicts are [`Routing`](super::routing::Routing)'s).
    pub skipped: Vec<Skipped>,
}

/// The frontends of `svc` given its own EndpointSlices (`slices`) and the Deployments it may
/// wake; nothing for an ExternalName Service or one being deleted.
pub fn service_routes(
    svc: &Service,
    slices: &[&EndpointSlice],
    deployments: &[Arc<Deployment>],
    placement: &Placement,
) -> ServiceRoutes {
    let mut out = ServiceRoutes::default();
    let Some(spec) = &svc.spec else { return out };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" || svc.metadata.deletion_timestamp.is_some() {
        return out;
    }
    let ns = namespace(&svc.metadata);
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let seconds = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .filter(|s| *s > 0);
        seconds.map_or(DEFAULT_AFFINITY_TIMEOUT, |s| Duration::from_secs(s.unsigned_abs().into()))
    });
    let cluster_ips = cluster_ips(svc);
    let wake = wake::targets(svc, deployments);
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
        let Ok(number) = u16::try_from(port.port) else { continue };
        let service =
            format!("{ns}/{name}:{}", port.name.clone().filter(|n| !n.is_empty()).unwrap_or(number.to_string()));
        let backends = backends(slices, port, protocol);
        let add = |out: &mut ServiceRoutes, kind: Kind, addr: SocketAddr| {
            let frontend = Frontend { protocol, addr };
            if let Some((_, existing)) = out.routes.iter().find(|(f, _)| *f == frontend) {
                let by = existing.service.clone();
                out.skipped.push(Skipped::Taken { service: service.clone(), frontend, by });
                return;
            }
            let route =
                Route { service: service.clone(), kind, backends: backends.clone(), affinity, wake: wake.clone() };
            out.routes.push((frontend, route));
        };
        for ip in &cluster_ips {
            let local = match (ip, placement.local_service_cidr) {
                (IpAddr::V4(v4), Some(cidr)) => cidr.contains(v4),
                _ => false,
            };
            if local {
                add(&mut out, Kind::ClusterIp, SocketAddr::new(*ip, number));
            } else {
                out.skipped.push(Skipped::NotLocal { service: service.clone(), ip: *ip });
            }
        }
        if matches!(svc_type, "NodePort" | "LoadBalancer")
            && let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
        {
            add(&mut out, Kind::NodePort, SocketAddr::new(placement.node_port_ip, node_port));
        }
        if svc_type == "LoadBalancer" {
            add(&mut out, Kind::LoadBalancer, SocketAddr::new(placement.node_ip, number));
        }
    }
    out
}

/// The Service's cluster IPs (`clusterIPs`, else `clusterIP`), without `None` (headless).
fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else { return Vec::new() };
    let listed = spec.cluster_ips.clone().filter(|ips| !ips.is_empty());
    let ips = listed.unwrap_or_else(|| spec.cluster_ip.clone().into_iter().collect());
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The backends of one Service port: its ready endpoints' first address with the slice's port
/// of the same name and protocol; with none ready, the serving terminating ones (kube-proxy's
/// fallback, so a rolling restart of every pod does not refuse connections meanwhile).
fn backends(slices: &[&EndpointSlice], port: &ServicePort, protocol: Protocol) -> Vec<SocketAddr> {
    let want = port.name.as_deref().unwrap_or_default();
    let mut ready = Vec::new();
    let mut terminating = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or_default() == want
                    && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else { continue };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let addr = SocketAddr::new(ip, number);
            // Unset `ready` means ready (the EndpointSlice API's rule for consumers).
            if conditions.ready != Some(false) {
                ready.push(addr);
            } else if conditions.serving == Some(true) && conditions.terminating == Some(true) {
                terminating.push(addr);
            }
        }
    }
    let mut chosen = if ready.is_empty() { terminating } else { ready };
    chosen.sort();
    chosen.dedup();
    chosen
}
