//! The filters: may this pod run on this node? Each one is a pure function of the pod, its
//! demand and the node's [`NodeInfo`], returning the reasons it may not — worded exactly as
//! the Go scheduler words them, since users grep for those strings. They run in the Go
//! scheduler's plugin order and the first failing filter decides a node's reasons.

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use skiff_api::labels;

use super::affinity;
use super::node_info::{NodeInfo, PodDemand};

/// Why one node cannot take the pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NotReady,
    Unschedulable,
    RuntimeNotOffered(String),
    UntoleratedTaint {
        key: String,
        value: String,
    },
    NodeAffinity,
    HostPorts,
    Insufficient(&'static str),
    TooManyPods,
    /// A bound volume's node affinity excludes the node (or a claim is provisioned elsewhere).
    VolumeNodeAffinityConflict,
    /// An unbound WaitForFirstConsumer claim has neither a volume here nor a provisioner.
    NoVolumeToBind,
    /// A ReadWriteOncePod claim of the pod is in use by another pod.
    ReadWriteOncePodConflict,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::RuntimeNotOffered(r) => write!(f, "node(s) didn't offer the {r} runtime"),
            Reason::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::HostPorts => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::VolumeNodeAffinityConflict => f.write_str("node(s) had volume node affinity conflict"),
            Reason::NoVolumeToBind => f.write_str("node(s) didn't find available persistent volumes to bind"),
            Reason::ReadWriteOncePodConflict => f.write_str(
                "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode",
            ),
        }
    }
}

/// Runs every filter in order; `Err` holds the reasons of the first that fails. Node-side
/// questions are answered from the facts [`NodeInfo`] read from the Node once
/// ([`super::node_info::NodeFacts`]); the functions below are the same rules over a Node.
pub fn run_filters(pod: &Pod, demand: &PodDemand, node: &NodeInfo) -> Result<(), Vec<Reason>> {
    let facts = &node.facts;
    if !facts.ready {
        return Err(vec![Reason::NotReady]);
    }
    if facts.unschedulable && !tolerations(pod).iter().any(|t| tolerates(t, &cordon_taint())) {
        return Err(vec![Reason::Unschedulable]);
    }
    if !facts.offers(demand.runtime) {
        return Err(vec![Reason::RuntimeNotOffered(demand.runtime.to_string())]);
    }
    untolerated(pod, &facts.hard_taints).map_err(|e| vec![e])?;
    let one = |r: Result<(), Reason>| r.map_err(|e| vec![e]);
    one(node_affinity(pod, &node.node))?;
    one(host_ports_free(demand, node))?;
    resources_fit(demand, node)
}

/// The taint `kubectl cordon` stands for.
fn cordon_taint() -> Taint {
    Taint { key: labels::TAINT_UNSCHEDULABLE.into(), effect: "NoSchedule".into(), ..Default::default() }
}

/// The node reports the Ready condition as True.
pub fn node_ready(node: &Node) -> Result<(), Reason> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready { Ok(()) } else { Err(Reason::NotReady) }
}

/// The node is not cordoned, or the pod tolerates the cordon's taint.
pub fn node_schedulable(pod: &Pod, node: &Node) -> Result<(), Reason> {
    if !node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        return Ok(());
    }
    if tolerations(pod).iter().any(|t| tolerates(t, &cordon_taint())) { Ok(()) } else { Err(Reason::Unschedulable) }
}

/// The runtime a pod needs: `oci` when its `runtimeClassName` says so, `wasm` otherwise.
pub fn required_runtime(pod: &Pod) -> &'static str {
    match pod.spec.as_ref().and_then(|s| s.runtime_class_name.as_deref()) {
        Some("oci") => "oci",
        _ => "wasm",
    }
}

/// The node's `skiff.dev/runtimes` label (`wasm`, `wasm.oci`, …) lists the pod's runtime.
pub fn runtime_offered(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let wanted = required_runtime(pod);
    if offers_runtime(node, wanted) { Ok(()) } else { Err(Reason::RuntimeNotOffered(wanted.to_string())) }
}

/// Whether the node's `skiff.dev/runtimes` label lists `runtime`.
pub fn offers_runtime(node: &Node, runtime: &str) -> bool {
    let offered = node.metadata.labels.as_ref().and_then(|l| l.get(labels::RUNTIMES)).map(String::as_str).unwrap_or("");
    // Label values cannot hold commas, so the list is dot-separated; accept commas anyway.
    offered.split(['.', ',']).any(|r| r == runtime)
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[])
}

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref() {
        Some("Exists") => true,
        None | Some("") | Some("Equal") => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        Some(_) => false,
    }
}

/// Every NoSchedule/NoExecute taint of the node is tolerated (PreferNoSchedule only scores).
pub fn taints_tolerated(pod: &Pod, node: &Node) -> Result<(), Reason> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    let hard: Vec<Taint> =
        taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").cloned().collect();
    untolerated(pod, &hard)
}

/// The first of `taints` (already the filtering ones) the pod does not tolerate.
fn untolerated(pod: &Pod, taints: &[Taint]) -> Result<(), Reason> {
    let tols = tolerations(pod);
    match taints.iter().find(|taint| !tols.iter().any(|t| tolerates(t, taint))) {
        None => Ok(()),
        Some(t) => Err(Reason::UntoleratedTaint { key: t.key.clone(), value: t.value.clone().unwrap_or_default() }),
    }
}

/// `nodeSelector` and required node affinity both hold.
pub fn node_affinity(pod: &Pod, node: &Node) -> Result<(), Reason> {
    if affinity::matches_node_selector(pod, node) && affinity::matches_required_affinity(pod, node) {
        Ok(())
    } else {
        Err(Reason::NodeAffinity)
    }
}

/// None of the pod's host ports is taken on the node.
pub fn host_ports_free(demand: &PodDemand, node: &NodeInfo) -> Result<(), Reason> {
    let clash = demand.host_ports.iter().any(|want| node.host_ports.iter().any(|used| used.conflicts(want)));
    if clash { Err(Reason::HostPorts) } else { Ok(()) }
}

/// Pod count, cpu and memory fit in what is allocatable minus what bound pods request.
pub fn resources_fit(demand: &PodDemand, node: &NodeInfo) -> Result<(), Vec<Reason>> {
    let (alloc, pods) = node.allocatable();
    let mut reasons = Vec::new();
    if node.pod_count as i64 + 1 > pods {
        reasons.push(Reason::TooManyPods);
    }
    if demand.requests.milli_cpu > 0 && demand.requests.milli_cpu > alloc.milli_cpu - node.requested.milli_cpu {
        reasons.push(Reason::Insufficient("cpu"));
    }
    if demand.requests.memory > 0 && demand.requests.memory > alloc.memory - node.requested.memory {
        reasons.push(Reason::Insufficient("memory"));
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons) }
}
