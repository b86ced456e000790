//! EndpointSlice mirroring (kube-controller-manager's `endpointslicemirroring` controller, the
//! pure part): a Service without a selector has its addresses in a user-written Endpoints
//! object, but service proxies read EndpointSlices — so that Endpoints is mirrored into slices
//! labelled with the mirroring controller's name. [`super::slices`] writes them; this module
//! says whether a Service is mirrored and what its slices should hold.
//!
//! As Kubernetes: an Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` is not
//! mirrored, addresses go in as ready endpoints and `notReadyAddresses` as not ready ones (one
//! slice family per subset's port set), and the Endpoints' labels are carried over. Not here:
//! IPv6 addresses (slices are `addressType: IPv4` only; such addresses are skipped).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

use super::addresses::{MANAGED_BY_LABEL, PortKey, SERVICE_NAME_LABEL};

/// The managed-by value of mirrored slices.
pub const MIRROR_MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// The Endpoints label that turns mirroring off.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

/// Whether `endpoints` is to be mirrored (the Service is known to have no selector).
pub fn mirrored(endpoints: &Endpoints) -> bool {
    let labels = endpoints.metadata.labels.as_ref();
    labels.and_then(|l| l.get(SKIP_MIRROR_LABEL)).map(String::as_str) != Some("true")
}

/// The endpoints the mirrored slices should hold, per port set.
pub fn desired(endpoints: &Endpoints) -> BTreeMap<Vec<PortKey>, Vec<Endpoint>> {
    let mut out: BTreeMap<Vec<PortKey>, Vec<Endpoint>> = BTreeMap::new();
    for subset in endpoints.subsets.iter().flatten() {
        let mut ports: Vec<PortKey> = (subset.ports.iter().flatten())
            .map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                (p.name.clone().unwrap_or_default(), p.port, protocol, p.app_protocol.clone())
            })
            .collect();
        ports.sort();
        ports.dedup();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten().map(|a| (a, false));
        let family = out.entry(ports).or_default();
        for (address, ready) in ready.chain(not_ready) {
            if let Some(endpoint) = endpoint(address, ready) {
                family.push(endpoint);
            }
        }
    }
    for family in out.values_mut() {
        family.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        family.dedup_by(|a, b| a.addresses == b.addresses);
    }
    out
}

/// The labels of a mirrored slice: the Endpoints' own, then the Service name and manager.
pub fn labels(endpoints: &Endpoints, service: &str) -> BTreeMap<String, String> {
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.remove(SKIP_MIRROR_LABEL);
    labels.insert(SERVICE_NAME_LABEL.into(), service.into());
    labels.insert(MANAGED_BY_LABEL.into(), MIRROR_MANAGED_BY.into());
    labels
}

fn endpoint(address: &EndpointAddress, ready: bool) -> Option<Endpoint> {
    address.ip.parse::<Ipv4Addr>().ok()?;
    Some(Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions { ready: Some(ready), serving: Some(ready), terminating: Some(false) }),
        hostname: address.hostname.clone(),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Endpoint::default()
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn address(ip: &str) -> EndpointAddress {
        EndpointAddress { ip: ip.into(), ..EndpointAddress::default() }
    }

    #[test]
    fn subsets_become_port_families_with_ready_conditions() {
        let port = |name: &str, port: i32| EndpointPort { name: Some(name.into()), port, ..EndpointPort::default() };
        let ep = Endpoints {
            metadata: ObjectMeta {
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..ObjectMeta::default()
            },
            subsets: Some(vec![
                EndpointSubset {
                    addresses: Some(vec![address("10.0.0.2"), address("10.0.0.1"), address("fd00::1")]),
                    not_ready_addresses: Some(vec![address("10.0.0.3")]),
                    ports: Some(vec![port("http", 80)]),
                },
                EndpointSubset { addresses: Some(vec![address("10.0.0.9")]), not_ready_addresses: None, ports: None },
            ]),
        };
        let desired = desired(&ep);
        let http = &desired[&vec![("http".to_string(), 80, "TCP".to_string(), None)]];
        let ips: Vec<(&str, bool)> = http
            .iter()
            .map(|e| (e.addresses[0].as_str(), e.conditions.as_ref().and_then(|c| c.ready) == Some(true)))
            .collect();
        assert_eq!(ips, [("10.0.0.1", true), ("10.0.0.2", true), ("10.0.0.3", false)], "IPv6 is skipped");
        assert_eq!(desired[&vec![]].len(), 1, "a subset without ports is its own family");
        let labels = labels(&ep, "web");
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[MANAGED_BY_LABEL], MIRROR_MANAGED_BY);
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert!(mirrored(&ep));
        let mut skip = ep.clone();
        skip.metadata.labels = Some([(SKIP_MIRROR_LABEL.to_string(), "true".to_string())].into());
        assert!(!mirrored(&skip));
    }
}
