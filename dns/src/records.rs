//! The service/endpoint cache DNS answers are computed from.
//!
//! [`ClusterRecords`] owns a compact, DNS-shaped copy of the Services and Endpoints it was fed
//! (the node agent's informers feed it; this crate has no API client). It is cheap to clone
//! (an `Arc`) and read concurrently: writers take a short write lock, every query a short read
//! lock, and nothing is held across an `.await`. Turning a query name into records lives in
//! `lookup.rs`; this file only keeps the state current.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use k8s_openapi::api::core::v1::{Endpoints, Service};

/// Settings of the cluster zone.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The cluster domain, without the trailing dot (`cluster.local`).
    pub zone: String,
    /// TTL of every answer and of negative answers (SOA minimum).
    pub ttl: u32,
    /// The address this DNS server is reachable at (the `kube-dns` ClusterIP), published as
    /// `ns.dns.<zone>` so that the zone's NS record resolves.
    pub dns_ip: Option<IpAddr>,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self { zone: "cluster.local".to_owned(), ttl: 30, dns_ip: None }
    }
}

/// A port as DNS needs it: SRV names are `_<name>._<protocol>`, so unnamed ports are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedPort {
    /// Lowercased port name.
    pub name: String,
    /// Lowercased protocol (`tcp`, `udp`, `sctp`).
    pub protocol: String,
    pub port: u16,
}

/// How a Service's own name resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    /// `A`/`AAAA` to the cluster IPs.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to this (lowercased, dot-less) name.
    External(String),
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceEntry {
    pub kind: ServiceKind,
    pub ports: Vec<NamedPort>,
}

/// One ready endpoint address with the ports of its subset.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub ip: IpAddr,
    /// `spec.hostname` of the pod (StatefulSet members), else the dashed IP as CoreDNS does,
    /// so that every backend has a name to be an SRV target and a PTR answer.
    pub hostname: String,
    pub ports: Vec<NamedPort>,
}

pub(crate) type Key = (String, String);

#[derive(Debug, Default)]
pub(crate) struct State {
    pub services: HashMap<Key, ServiceEntry>,
    pub endpoints: HashMap<Key, Vec<Backend>>,
    /// Services per namespace: `<ns>.svc.<zone>` exists (NODATA, not NXDOMAIN) while > 0.
    pub namespaces: HashMap<String, usize>,
    /// Which Services have an IP as a cluster IP or as an endpoint: PTR lookups without a
    /// scan of every Service.
    pub by_ip: HashMap<IpAddr, BTreeSet<Key>>,
    /// SOA serial, bumped on every change so secondaries/caches can tell.
    pub serial: u32,
}

impl State {
    fn index(&mut self, key: &Key, ips: impl IntoIterator<Item = IpAddr>) {
        for ip in ips {
            self.by_ip.entry(ip).or_default().insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &Key, ips: impl IntoIterator<Item = IpAddr>) {
        for ip in ips {
            if let Some(keys) = self.by_ip.get_mut(&ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }
}

fn cluster_ips(entry: &ServiceEntry) -> Vec<IpAddr> {
    match &entry.kind {
        ServiceKind::ClusterIp(ips) => ips.clone(),
        _ => Vec::new(),
    }
}

fn backend_ips(backends: &[Backend]) -> Vec<IpAddr> {
    backends.iter().map(|b| b.ip).collect()
}

#[derive(Debug)]
struct Inner {
    config: ZoneConfig,
    /// `.<zone>` lowercased, for suffix matching of query names.
    suffix: String,
    state: RwLock<State>,
    /// `state.serial`, readable without the lock (the UDP answer cache checks it per query).
    serial: AtomicU32,
}

/// A concurrently readable cache of the cluster's DNS data; clones share the same cache.
#[derive(Debug, Clone)]
pub struct ClusterRecords {
    inner: Arc<Inner>,
}

impl ClusterRecords {
    /// An empty cache for `config.zone`.
    pub fn new(mut config: ZoneConfig) -> Self {
        config.zone = config.zone.trim_matches('.').to_ascii_lowercase();
        let suffix = format!(".{}", config.zone);
        let state = RwLock::new(State { serial: 1, ..State::default() });
        Self { inner: Arc::new(Inner { config, suffix, state, serial: AtomicU32::new(1) }) }
    }

    /// The zone settings.
    pub fn config(&self) -> &ZoneConfig {
        &self.inner.config
    }

    /// The SOA serial: changes with every change of the records (answers cached under one
    /// serial are stale under another).
    pub fn serial(&self) -> u32 {
        self.inner.serial.load(Ordering::Acquire)
    }

    /// Records a change: a new serial, published while the write lock is still held.
    fn bump(&self, state: &mut State) {
        state.serial = state.serial.wrapping_add(1);
        self.inner.serial.store(state.serial, Ordering::Release);
    }

    pub(crate) fn zone_suffix(&self) -> &str {
        &self.inner.suffix
    }

    /// Adds or replaces a Service. Services without a namespace or name are ignored.
    pub fn upsert_service(&self, service: &Service) {
        let Some(key) = key_of(&service.metadata) else {
            return;
        };
        let entry = service_entry(service);
        let mut state = self.write();
        state.index(&key, cluster_ips(&entry));
        match state.services.insert(key.clone(), entry) {
            None => *state.namespaces.entry(key.0.clone()).or_default() += 1,
            Some(old) => {
                let current = cluster_ips(&state.services[&key]);
                let stale = cluster_ips(&old).into_iter().filter(|ip| !current.contains(ip));
                state.unindex(&key, stale.collect::<Vec<_>>());
            }
        }
        self.bump(&mut state);
    }

    /// Forgets a Service (its Endpoints are kept until removed, as the API server does).
    pub fn remove_service(&self, namespace: &str, name: &str) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut state = self.write();
        if let Some(old) = state.services.remove(&key) {
            state.unindex(&key, cluster_ips(&old));
            if let Some(count) = state.namespaces.get_mut(namespace) {
                *count -= 1;
                if *count == 0 {
                    state.namespaces.remove(namespace);
                }
            }
            self.bump(&mut state);
        }
    }

    /// Adds or replaces the ready addresses of an Endpoints object (not-ready ones are not
    /// served: the endpoints controller already moves `publishNotReadyAddresses` ones into
    /// `addresses`).
    pub fn upsert_endpoints(&self, endpoints: &Endpoints) {
        let Some(key) = key_of(&endpoints.metadata) else {
            return;
        };
        let backends = backends(endpoints);
        let mut state = self.write();
        if let Some(old) = state.endpoints.remove(&key) {
            state.unindex(&key, backend_ips(&old));
        }
        // Re-index cluster IPs too: a Service's IP and an endpoint IP share the key.
        if let Some(entry) = state.services.get(&key) {
            let ips = cluster_ips(entry);
            state.index(&key, ips);
        }
        state.index(&key, backend_ips(&backends));
        state.endpoints.insert(key, backends);
        self.bump(&mut state);
    }

    /// Forgets an Endpoints object.
    pub fn remove_endpoints(&self, namespace: &str, name: &str) {
        let mut state = self.write();
        if state.endpoints.remove(&(namespace.to_owned(), name.to_owned())).is_some() {
            self.bump(&mut state);
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters for DNS (each write is one insert/remove), so a poisoned lock is still used.
        self.inner.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn named_port(name: Option<&String>, protocol: Option<&String>, port: i32) -> Option<NamedPort> {
    let name = name.filter(|n| !n.is_empty())?;
    Some(NamedPort {
        name: name.to_ascii_lowercase(),
        protocol: protocol.map_or("tcp".to_owned(), |p| p.to_ascii_lowercase()),
        port: u16::try_from(port).ok()?,
    })
}

pub(crate) fn service_entry(service: &Service) -> ServiceEntry {
    let spec = service.spec.clone().unwrap_or_default();
    let ports =
        spec.ports.iter().flatten().filter_map(|p| named_port(p.name.as_ref(), p.protocol.as_ref(), p.port)).collect();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.unwrap_or_default();
        ServiceKind::External(target.trim_end_matches('.').to_ascii_lowercase())
    } else {
        // clusterIPs lists every family; older objects only have clusterIP.
        let raw: Vec<String> = match (spec.cluster_ips, spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips,
            (_, Some(ip)) => vec![ip],
            _ => Vec::new(),
        };
        if raw.iter().any(|ip| ip == "None") {
            ServiceKind::Headless
        } else {
            ServiceKind::ClusterIp(raw.iter().filter_map(|ip| ip.parse().ok()).collect())
        }
    };
    ServiceEntry { kind, ports }
}

pub(crate) fn backends(endpoints: &Endpoints) -> Vec<Backend> {
    let mut out = Vec::new();
    for subset in endpoints.subsets.iter().flatten() {
        let ports: Vec<NamedPort> = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| named_port(p.name.as_ref(), p.protocol.as_ref(), p.port))
            .collect();
        for address in subset.addresses.iter().flatten() {
            let Ok(ip) = address.ip.parse::<IpAddr>() else {
                continue;
            };
            let hostname = match &address.hostname {
                Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
                _ => dashed(ip),
            };
            out.push(Backend { ip, hostname, ports: ports.clone() });
        }
    }
    out
}

/// `10.0.0.1` → `10-0-0-1`, `fd00::1` → `fd00--1` (the pod and endpoint label form).
pub(crate) fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta { namespace: Some(ns.to_owned()), name: Some(name.to_owned()), ..ObjectMeta::default() }
    }

    /// A Service with `cluster_ip` ("None" for headless) and named ports `(name, proto, port)`.
    pub(crate) fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, &str, i32)]) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, port)| ServicePort {
                            name: Some((*n).to_owned()),
                            protocol: Some((*p).to_owned()),
                            port: *port,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    pub(crate) fn external(ns: &str, name: &str, target: &str) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".to_owned()),
                external_name: Some(target.to_owned()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// Endpoints with ready `(ip, hostname)` addresses, one not-ready address, and ports.
    pub(crate) fn endpoints(
        ns: &str,
        name: &str,
        ready: &[(&str, Option<&str>)],
        ports: &[(&str, &str, i32)],
    ) -> Endpoints {
        Endpoints {
            metadata: meta(ns, name),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    ready
                        .iter()
                        .map(|(ip, host)| EndpointAddress {
                            ip: (*ip).to_owned(),
                            hostname: host.map(str::to_owned),
                            ..EndpointAddress::default()
                        })
                        .collect(),
                ),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.244.9.9".to_owned(),
                    ..EndpointAddress::default()
                }]),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, port)| EndpointPort {
                            name: Some((*n).to_owned()),
                            protocol: Some((*p).to_owned()),
                            port: *port,
                            ..EndpointPort::default()
                        })
                        .collect(),
                ),
            }]),
        }
    }

    #[test]
    fn service_kinds_and_ports() {
        let web = service_entry(&service("d", "web", "10.96.0.5", &[("http", "TCP", 80), ("", "TCP", 81)]));
        assert_eq!(web.kind, ServiceKind::ClusterIp(vec!["10.96.0.5".parse().expect("ip")]));
        assert_eq!(web.ports.len(), 1, "unnamed ports have no SRV name");
        assert_eq!(web.ports[0].protocol, "tcp");
        assert_eq!(service_entry(&service("d", "h", "None", &[])).kind, ServiceKind::Headless);
        assert_eq!(
            service_entry(&external("d", "e", "Example.COM.")).kind,
            ServiceKind::External("example.com".to_owned())
        );
    }

    #[test]
    fn only_ready_addresses_become_backends() {
        let b = backends(&endpoints("d", "h", &[("10.244.0.7", Some("web-0")), ("10.244.0.8", None)], &[]));
        let names: Vec<_> = b.iter().map(|b| b.hostname.as_str()).collect();
        assert_eq!(names, ["web-0", "10-244-0-8"]);
    }

    #[test]
    fn namespaces_counted_and_serial_bumped() {
        let records = ClusterRecords::new(ZoneConfig::default());
        let serial = records.read().serial;
        records.upsert_service(&service("d", "a", "10.96.0.1", &[]));
        records.upsert_service(&service("d", "a", "10.96.0.2", &[]));
        records.upsert_service(&service("d", "b", "10.96.0.3", &[]));
        assert_eq!(records.read().namespaces.get("d"), Some(&2));
        records.remove_service("d", "a");
        records.remove_service("d", "b");
        records.remove_service("d", "b");
        assert!(records.read().namespaces.is_empty());
        assert!(records.read().by_ip.is_empty(), "reverse index emptied");
        assert!(records.read().serial > serial);
    }
}
