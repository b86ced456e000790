//! Backend resolution: an Ingress backend (Service and port, by number or name) to the ready
//! endpoint addresses of that port, from the Service and its EndpointSlices, with a
//! round-robin pick per backend.
//!
//! The Service port named by the Ingress is found in `spec.ports` (by `port` or `name`); its
//! name then selects the port in each EndpointSlice labelled `kubernetes.io/service-name`, as
//! kube-proxy does. An endpoint is ready unless `conditions.ready` is false (unset means ready).
//! Pure: built from listed objects, no I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::routes::{PortRef, ServiceRef};

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a backend resolves to.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// Ready endpoints to spread requests over.
    Ready(Arc<Endpoints>),
    /// The backend cannot be served; the message says why (503 body, Warning event).
    Unavailable(Unavailable),
}

/// Why a backend has no endpoint to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No such Service (a misconfiguration: reported as an event).
    NoService,
    /// The Service has no such port (a misconfiguration: reported as an event).
    NoPort,
    /// The Service exists but no endpoint is ready (routine: not reported).
    NoEndpoints,
}

impl Unavailable {
    /// Whether this is the Ingress author's mistake, worth a Warning event.
    pub fn is_misconfiguration(&self) -> bool {
        !matches!(self, Unavailable::NoEndpoints)
    }

    /// A sentence for the 503 body and the event.
    pub fn describe(&self, svc: &ServiceRef) -> String {
        let port = match &svc.port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(n) => n.clone(),
        };
        match self {
            Unavailable::NoService => format!("service {}/{} not found", svc.namespace, svc.name),
            Unavailable::NoPort => format!("service {}/{} has no port {port}", svc.namespace, svc.name),
            Unavailable::NoEndpoints => {
                format!("service {}/{} port {port} has no ready endpoints", svc.namespace, svc.name)
            }
        }
    }
}

/// A backend's ready addresses and its round-robin cursor.
#[derive(Debug, Default)]
pub struct Endpoints {
    addrs: Vec<SocketAddr>,
    next: Arc<AtomicUsize>,
}

impl Endpoints {
    /// The next address in turn (`None` when there are none).
    pub fn pick(&self) -> Option<SocketAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.addrs[n % self.addrs.len()])
    }

    /// Every address, in a stable order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// Resolves `wanted` backends from the Services and EndpointSlices of the cluster. `cursors`
/// carries round-robin positions from the previous resolution, so a rebuild (any endpoint
/// change anywhere) does not send the next request of every backend to its first address.
pub fn resolve<'a>(
    wanted: impl IntoIterator<Item = &'a ServiceRef>,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    cursors: &HashMap<ServiceRef, Arc<AtomicUsize>>,
) -> HashMap<ServiceRef, Resolution> {
    let by_key: HashMap<(&str, &str), &Service> = services
        .iter()
        .filter_map(|s| Some(((s.metadata.namespace.as_deref()?, s.metadata.name.as_deref()?), s.as_ref())))
        .collect();
    let mut slices_of: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
            slices_of.entry((ns, svc.as_str())).or_default().push(slice);
        }
    }
    wanted
        .into_iter()
        .map(|want| {
            let key = (want.namespace.as_str(), want.name.as_str());
            let resolution = match by_key.get(&key) {
                None => Resolution::Unavailable(Unavailable::NoService),
                Some(svc) => match port_name(svc, &want.port) {
                    None => Resolution::Unavailable(Unavailable::NoPort),
                    Some(name) => {
                        let mut addrs = ready_addrs(slices_of.get(&key).map(Vec::as_slice).unwrap_or_default(), &name);
                        addrs.sort();
                        addrs.dedup();
                        if addrs.is_empty() {
                            Resolution::Unavailable(Unavailable::NoEndpoints)
                        } else {
                            let next = cursors.get(want).cloned().unwrap_or_default();
                            Resolution::Ready(Arc::new(Endpoints { addrs, next }))
                        }
                    }
                },
            };
            (want.clone(), resolution)
        })
        .collect()
}

/// The name (`""` when unnamed) of the Service port the backend means.
fn port_name(svc: &Service, port: &PortRef) -> Option<String> {
    let ports = svc.spec.as_ref()?.ports.as_ref()?;
    let found = ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    })?;
    Some(found.name.clone().unwrap_or_default())
}

/// The ready `address:port` of the slices' endpoints for the port named `name`.
fn ready_addrs(slices: &[&EndpointSlice], name: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == name && p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            if let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// The cursors of a resolution, for the next one.
pub fn cursors(resolved: &HashMap<ServiceRef, Resolution>) -> HashMap<ServiceRef, Arc<AtomicUsize>> {
    resolved
        .iter()
        .filter_map(|(k, r)| match r {
            Resolution::Ready(e) => Some((k.clone(), e.next.clone())),
            Resolution::Unavailable(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service() -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "ns"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                   {"name": "admin", "port": 81, "targetPort": 9090}]},
            }))
            .expect("valid service"),
        )
    }

    fn slice() -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web-x", "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9090}],
                "endpoints": [
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.1"]},
                    {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
                ],
            }))
            .expect("valid slice"),
        )
    }

    fn svc_ref(name: &str, port: PortRef) -> ServiceRef {
        ServiceRef { namespace: "ns".into(), name: name.into(), port }
    }

    #[test]
    fn by_number_and_name_to_ready_endpoints_round_robin() {
        let wanted = [svc_ref("web", PortRef::Number(80)), svc_ref("web", PortRef::Name("admin".into()))];
        let resolved = resolve(&wanted, &[service()], &[slice()], &HashMap::new());
        let Some(Resolution::Ready(http)) = resolved.get(&wanted[0]) else { panic!("{resolved:?}") };
        let picks: Vec<String> = (0..4).filter_map(|_| http.pick()).map(|a| a.to_string()).collect();
        assert_eq!(picks, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.1:8080", "10.0.0.2:8080"]);
        let Some(Resolution::Ready(admin)) = resolved.get(&wanted[1]) else { panic!("{resolved:?}") };
        assert_eq!(admin.addrs().len(), 2);
        assert!(admin.addrs().iter().all(|a| a.port() == 9090));
    }

    #[test]
    fn missing_service_port_or_endpoints() {
        let wanted = [
            svc_ref("nope", PortRef::Number(80)),
            svc_ref("web", PortRef::Number(99)),
            svc_ref("web", PortRef::Name("http".into())),
        ];
        let resolved = resolve(&wanted, &[service()], &[], &HashMap::new());
        let reason = |i: usize| match resolved.get(&wanted[i]) {
            Some(Resolution::Unavailable(u)) => Some(u.clone()),
            _ => None,
        };
        assert_eq!(reason(0), Some(Unavailable::NoService));
        assert_eq!(reason(1), Some(Unavailable::NoPort));
        assert_eq!(reason(2), Some(Unavailable::NoEndpoints));
        assert!(Unavailable::NoService.is_misconfiguration());
        assert!(!Unavailable::NoEndpoints.is_misconfiguration());
    }

    #[test]
    fn cursors_survive_a_rebuild() {
        let wanted = [svc_ref("web", PortRef::Number(80))];
        let first = resolve(&wanted, &[service()], &[slice()], &HashMap::new());
        let Some(Resolution::Ready(e)) = first.get(&wanted[0]) else { panic!() };
        assert_eq!(e.pick().map(|a| a.to_string()).as_deref(), Some("10.0.0.1:8080"));
        let second = resolve(&wanted, &[service()], &[slice()], &cursors(&first));
        let Some(Resolution::Ready(e)) = second.get(&wanted[0]) else { panic!() };
        assert_eq!(e.pick().map(|a| a.to_string()).as_deref(), Some("10.0.0.2:8080"));
    }
}
