//! The pure part of both endpoint controllers: which pods a Service selects, whether a pod
//! belongs in its endpoints, how a Service port resolves against a pod (numeric or named
//! `targetPort`), and the Endpoints subsets Kubernetes' `RepackSubsets` would produce.
//!
//! Nothing here reads a cache or writes an object; [`super`] and [`super::slices`] do that.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::disruption::is_ready;
use crate::controllers::owner::labels_of;

/// A resolved port, comparable and sortable: (name, port, protocol, appProtocol). A Service's
/// endpoints are grouped by the set of these their pod resolves to.
pub type PortKey = (String, i32, String, Option<String>);

/// The label every managed EndpointSlice carries naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label marking who manages an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (kube-controller-manager's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The label Kubernetes puts on the endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a Service that gets managed endpoints: `None` for selector-less and
/// ExternalName Services (their endpoints are the user's). An empty selector selects every
/// pod of the namespace, as in Kubernetes.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

/// True when `pod` is in the Service's namespace and carries every selector label.
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = selector(svc) else { return false };
    pod.metadata.namespace == svc.metadata.namespace && selects_labels(sel, labels_of(&pod.metadata))
}

/// True when `labels` satisfy the equality selector `sel`.
pub fn selects_labels(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod's (first) IP, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<&str> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .as_deref()
        .or_else(|| status.pod_ips.as_ref()?.first().map(|p| p.ip.as_str()))
        .filter(|ip| !ip.is_empty())
}

/// Kubernetes' `ShouldPodBeInEndpoints`: the pod has an IP, is not terminating (unless
/// `include_terminating`), and has not finished for good under its restart policy.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ip(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => phase != "Failed" && phase != "Succeeded",
        Some("OnFailure") => phase != "Succeeded",
        _ => true,
    }
}

/// The pod's ready state as the endpoints see it: Ready, or any pod when the Service
/// publishes not-ready addresses.
pub fn counts_ready(svc: &Service, pod: &Pod) -> bool {
    publish_not_ready(svc) || is_ready(pod)
}

/// `spec.publishNotReadyAddresses`.
pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

/// True for a headless Service (`clusterIP: None`).
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Kubernetes' `podutil.FindPort`: the container port a Service port targets on `pod` — the
/// number itself, or the container port of that name and protocol; `None` when the pod has
/// no port of that name (the pod is then left out for this Service port).
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            // A numeric string is a number (the API accepts both spellings).
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
                (p.name.as_deref() == Some(name.as_str()) && same_protocol).then_some(p.container_port)
            })
        }
    }
}

/// Every Service port resolved on `pod` (ports the pod lacks are left out).
pub fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<PortKey> {
    let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let mut keys: Vec<PortKey> = ports
        .iter()
        .filter_map(|p| {
            let n = find_port(pod, p)?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            Some((p.name.clone().unwrap_or_default(), n, protocol, p.app_protocol.clone()))
        })
        .collect();
    keys.sort();
    keys
}

/// `targetRef` of a pod's address.
pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The DNS hostname of a pod's address: `spec.hostname` when the pod's `spec.subdomain` names
/// this Service (same namespace) — how StatefulSet pods get `<pod>.<svc>` records.
pub fn hostname(svc: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let matches = spec.subdomain.is_some()
        && spec.subdomain == svc.metadata.name
        && pod.metadata.namespace == svc.metadata.namespace;
    matches.then(|| host.to_string())
}

fn address(svc: &Service, pod: &Pod, ip: &str) -> EndpointAddress {
    EndpointAddress {
        ip: ip.to_string(),
        hostname: hostname(svc, pod),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(target_ref(pod)),
    }
}

fn endpoint_port((name, port, protocol, app_protocol): &PortKey) -> EndpointPort {
    EndpointPort {
        name: (!name.is_empty()).then(|| name.clone()),
        port: *port,
        protocol: Some(protocol.clone()),
        app_protocol: app_protocol.clone(),
    }
}

/// The subsets of a selecting Service's Endpoints, from the pods it selects: each pod's
/// address goes to the subset of the port set it resolves to, ready or not ready; subsets
/// and their addresses are sorted, so equal inputs give equal output (written only on change).
pub fn subsets(svc: &Service, pods: &[impl Borrow<Pod>]) -> Vec<EndpointSubset> {
    let headless_without_ports =
        is_headless(svc) && svc.spec.as_ref().and_then(|s| s.ports.as_ref()).is_none_or(Vec::is_empty);
    // Port set -> (ready, not ready) addresses.
    let mut groups: BTreeMap<Vec<PortKey>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    for pod in pods {
        let pod = pod.borrow();
        let tolerate = publish_not_ready(svc);
        if !selects(svc, pod) || !should_be_in_endpoints(pod, tolerate) {
            continue;
        }
        let Some(ip) = pod_ip(pod) else { continue };
        let ports = resolve_ports(svc, pod);
        // A pod resolving none of the ports has no address, except on a port-less headless
        // Service (DNS only needs the address).
        if ports.is_empty() && !headless_without_ports {
            continue;
        }
        let group = groups.entry(ports).or_default();
        if counts_ready(svc, pod) {
            group.0.push(address(svc, pod, ip));
        } else {
            group.1.push(address(svc, pod, ip));
        }
    }
    let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
        (a.ip.as_str(), a.target_ref.as_ref().and_then(|r| r.uid.as_deref()))
            .cmp(&(b.ip.as_str(), b.target_ref.as_ref().and_then(|r| r.uid.as_deref())))
    };
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| ports.iter().map(endpoint_port).collect()),
            }
        })
        .collect()
}

/// The labels of a Service's managed endpoints: the Service's own, plus the headless marker.
pub fn endpoint_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = labels_of(&svc.metadata).clone();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}))
            .expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "ports": ports}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("pod")
    }

    #[test]
    fn named_numeric_and_missing_ports() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "admin", "port": 9000, "targetPort": 9090}]}));
        let with = pod("a", "10.0.0.1", true, json!([{"name": "web", "containerPort": 8080}]));
        let without = pod("b", "10.0.0.2", true, json!([]));
        assert_eq!(
            resolve_ports(&s, &with),
            vec![("admin".into(), 9090, "TCP".into(), None), ("http".into(), 8080, "TCP".into(), None)]
        );
        assert_eq!(resolve_ports(&s, &without), vec![("admin".into(), 9090, "TCP".into(), None)]);
        // Two port sets: two subsets.
        let subsets = subsets(&s, &[with, without]);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let udp = ServicePort {
            port: 53,
            target_port: Some(IntOrString::String("web".into())),
            protocol: Some("UDP".into()),
            ..ServicePort::default()
        };
        assert_eq!(
            find_port(&pod("c", "1.1.1.1", true, json!([{"name": "web", "containerPort": 1}])), &udp),
            None,
            "protocol must match"
        );
    }

    #[test]
    fn ready_split_terminating_and_publish_not_ready() {
        let s = svc(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let mut gone = pod("c", "10.0.0.3", true, json!([]));
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let no_ip = pod("d", "", true, json!([]));
        let pods = [pod("b", "10.0.0.2", false, json!([])), pod("a", "10.0.0.1", true, json!([])), gone.clone(), no_ip];
        let got = subsets(&s, &pods);
        assert_eq!(got.len(), 1);
        let ips = |a: &Option<Vec<EndpointAddress>>| a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&got[0].addresses), ["10.0.0.1"]);
        assert_eq!(ips(&got[0].not_ready_addresses), ["10.0.0.2"]);
        assert_eq!(got[0].ports.as_ref().map(|p| p[0].port), Some(80));
        let publish =
            svc(json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 80}]}));
        let got = subsets(&publish, &pods);
        assert_eq!(ips(&got[0].addresses), ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "all published, terminating too");
        assert!(got[0].not_ready_addresses.is_none());
    }

    #[test]
    fn hostname_only_for_the_named_subdomain() {
        let s = svc(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let mut p = pod("a", "10.0.0.1", true, json!([]));
        p.spec.as_mut().expect("spec").hostname = Some("a".into());
        assert_eq!(hostname(&s, &p), None);
        p.spec.as_mut().expect("spec").subdomain = Some("web".into());
        assert_eq!(hostname(&s, &p).as_deref(), Some("a"));
        // Port-less headless: the address is listed without ports.
        let got = subsets(&s, &[p]);
        assert_eq!(got.len(), 1);
        assert!(got[0].ports.is_none());
        assert_eq!(endpoint_labels(&s).get(HEADLESS_LABEL).map(String::as_str), Some(""));
    }

    #[test]
    fn selector_less_and_external_name_select_nothing() {
        let p = pod("a", "10.0.0.1", true, json!([]));
        assert!(!selects(&svc(json!({"ports": [{"port": 80}]})), &p));
        assert!(!selects(&svc(json!({"type": "ExternalName", "externalName": "x", "selector": {"app": "web"}})), &p));
        assert!(selects(&svc(json!({"selector": {}})), &p), "an empty selector selects all");
    }
}
