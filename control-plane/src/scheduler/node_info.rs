//! What the scheduler knows about one node while placing a pod: the Node itself, the facts
//! the filters ask of it (read once per Node change: readiness, cordon, runtimes, taints,
//! allocatable), and the sum of what the pods bound (or assumed bound) to it use — cpu/memory
//! requests, pod count, host ports, and how many pods each controller owns there (for
//! spreading). Pure data, no I/O.
//!
//! Why the facts are copied out of the Node: a placement on 5,000 nodes examines hundreds of
//! them, and following each `Arc<Node>` into its status conditions, labels and taints was most
//! of the scheduler's time (cache misses and string compares); the facts and the usage sit
//! together in the cache's contiguous `Vec<NodeInfo>`.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, Taint};
use skiff_api::quantity::parse_quantity;
use smallvec::SmallVec;

use super::filters;

/// cpu (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Resources {
    fn add(&mut self, other: Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
    }

    fn sub(&mut self, other: Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
    }

    fn max(self, other: Resources) -> Resources {
        Resources { milli_cpu: self.milli_cpu.max(other.milli_cpu), memory: self.memory.max(other.memory) }
    }
}

/// What scoring assumes a container without a cpu request uses (the Go scheduler's value), so
/// that pods without requests still spread instead of piling onto one node.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// The memory counterpart of [`DEFAULT_MILLI_CPU`] (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// One host port in use (or wanted): `0.0.0.0` stands for every address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Two uses of a port clash when protocol and port agree and either address is the
    /// wildcard or both are the same.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod's demand, computed once per scheduling attempt.
#[derive(Debug, Clone, Default)]
pub struct PodDemand {
    /// What the filters check: requests as declared.
    pub requests: Resources,
    /// What scoring uses: requests with defaults for containers that declare none.
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    /// The pod's controller (ReplicaSet, …) as an [`owner_key`], for spreading.
    pub owner: Option<u64>,
    /// The runtime the pod needs (`wasm` or `oci`).
    pub runtime: &'static str,
}

/// A controller uid as the small key spreading counts by: a 64-bit hash (fixed keys, so
/// stable), computed once per pod instead of hashing the uid string on every node examined.
/// Two controllers colliding would only blur their spreading scores, never a filter.
pub fn owner_key(uid: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    uid.hash(&mut h);
    h.finish()
}

fn quantity<'a>(c: &'a Container, resource: &str) -> Option<&'a str> {
    let r = c.resources.as_ref()?;
    // An unset request defaults to the limit (API defaulting); read both to be safe.
    r.requests.as_ref().and_then(|m| m.get(resource)).or_else(|| r.limits.as_ref()?.get(resource)).map(|q| q.0.as_str())
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let cpu = quantity(c, "cpu").and_then(|q| parse_quantity(q).ok()).map(|q| q.as_millis());
    let mem = quantity(c, "memory").and_then(|q| parse_quantity(q).ok()).map(|q| q.as_bytes());
    if non_zero {
        Resources { milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU), memory: mem.unwrap_or(DEFAULT_MEMORY) }
    } else {
        Resources { milli_cpu: cpu.unwrap_or(0), memory: mem.unwrap_or(0) }
    }
}

/// The controller ownerReference's uid of an object's metadata, if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

impl PodDemand {
    /// Sum of the containers' requests, at least the largest init container's, plus overhead
    /// (Kubernetes' effective pod request).
    pub fn of(pod: &Pod) -> PodDemand {
        let Some(spec) = pod.spec.as_ref() else { return PodDemand::default() };
        let mut demand = PodDemand {
            owner: controller_uid(pod).map(owner_key),
            runtime: filters::required_runtime(pod),
            ..Default::default()
        };
        for non_zero in [false, true] {
            let mut sum = Resources::default();
            for c in &spec.containers {
                sum.add(container_requests(c, non_zero));
            }
            for c in spec.init_containers.iter().flatten() {
                sum = sum.max(container_requests(c, non_zero));
            }
            if let Some(overhead) = &spec.overhead {
                let get = |k: &str| overhead.get(k).and_then(|q| parse_quantity(&q.0).ok());
                sum.milli_cpu += get("cpu").map(|q| q.as_millis()).unwrap_or(0);
                sum.memory += get("memory").map(|q| q.as_bytes()).unwrap_or(0);
            }
            if non_zero { demand.non_zero = sum } else { demand.requests = sum }
        }
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(port) = p.host_port.filter(|p| *p > 0) {
                    demand.host_ports.push(HostPort {
                        ip: p.host_ip.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port,
                    });
                }
            }
        }
        demand
    }
}

/// Whether a pod still holds its node's resources (not Succeeded/Failed).
pub fn holds_resources(pod: &Pod) -> bool {
    !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// What the filters ask of a Node, read once whenever the Node changes.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// The Ready condition is True.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Offers the `wasm` runtime (`skiff.dev/runtimes`).
    pub wasm: bool,
    /// Offers the `oci` runtime.
    pub oci: bool,
    /// NoSchedule and NoExecute taints (filtered on).
    pub hard_taints: Vec<Taint>,
    /// PreferNoSchedule taints (scored).
    pub soft_taints: Vec<Taint>,
}

impl NodeFacts {
    pub fn of(node: &Node) -> NodeFacts {
        let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
        let pick = |hard: bool| {
            taints
                .iter()
                .filter(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") == hard)
                .filter(|t| hard || t.effect == "PreferNoSchedule")
                .cloned()
                .collect()
        };
        NodeFacts {
            ready: filters::node_ready(node).is_ok(),
            unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
            wasm: filters::offers_runtime(node, "wasm"),
            oci: filters::offers_runtime(node, "oci"),
            hard_taints: pick(true),
            soft_taints: pick(false),
        }
    }

    /// Whether the node offers `runtime` (one of [`filters::required_runtime`]'s answers).
    pub fn offers(&self, runtime: &str) -> bool {
        match runtime {
            "wasm" => self.wasm,
            "oci" => self.oci,
            _ => false,
        }
    }
}

/// A node and what its pods use.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    /// What the filters need of the Node, read once.
    pub facts: NodeFacts,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pod_count: usize,
    pub host_ports: Vec<HostPort>,
    /// How many pods of each controller ([`owner_key`]) are on this node — inline for the one
    /// or two controllers a node usually has, so spreading reads no other memory.
    owner_pods: SmallVec<[(u64, u32); 2]>,
    /// Allocatable cpu/memory and pods, parsed once from the Node.
    alloc: (Resources, i64),
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        NodeInfo {
            alloc: parse_allocatable(&node),
            facts: NodeFacts::of(&node),
            node,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pod_count: 0,
            host_ports: Vec::new(),
            owner_pods: SmallVec::new(),
        }
    }

    /// Replaces the Node (a status or spec change), keeping the usage of its pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.alloc = parse_allocatable(&node);
        self.facts = NodeFacts::of(&node);
        self.node = node;
    }

    /// How many pods of the controller with this [`owner_key`] are here.
    pub fn owner_pods(&self, owner: u64) -> usize {
        self.owner_pods.iter().find(|(k, _)| *k == owner).map_or(0, |(_, n)| *n as usize)
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    /// Counts a pod bound to this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        if holds_resources(pod) {
            self.add_demand(&PodDemand::of(pod));
        }
    }

    /// Counts a demand (a pod being placed here).
    pub fn add_demand(&mut self, d: &PodDemand) {
        self.requested.add(d.requests);
        self.non_zero_requested.add(d.non_zero);
        self.pod_count += 1;
        self.host_ports.extend(d.host_ports.iter().cloned());
        if let Some(owner) = d.owner {
            match self.owner_pods.iter_mut().find(|(k, _)| *k == owner) {
                Some((_, n)) => *n += 1,
                None => self.owner_pods.push((owner, 1)),
            }
        }
    }

    /// Un-counts a demand added before (a pod that left or finished, a dropped assumption).
    pub fn remove_demand(&mut self, d: &PodDemand) {
        self.requested.sub(d.requests);
        self.non_zero_requested.sub(d.non_zero);
        self.pod_count = self.pod_count.saturating_sub(1);
        for hp in &d.host_ports {
            if let Some(i) = self.host_ports.iter().position(|h| h == hp) {
                self.host_ports.swap_remove(i);
            }
        }
        if let Some(owner) = d.owner
            && let Some(i) = self.owner_pods.iter().position(|(k, _)| *k == owner)
        {
            self.owner_pods[i].1 = self.owner_pods[i].1.saturating_sub(1);
            if self.owner_pods[i].1 == 0 {
                self.owner_pods.swap_remove(i);
            }
        }
    }

    /// Allocatable cpu/memory and pod count (missing means none, as in Kubernetes).
    pub fn allocatable(&self) -> (Resources, i64) {
        self.alloc
    }
}

fn parse_allocatable(node: &Node) -> (Resources, i64) {
    let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| alloc.and_then(|a| a.get(k)).and_then(|q| parse_quantity(&q.0).ok());
    (
        Resources {
            milli_cpu: get("cpu").map(|q| q.as_millis()).unwrap_or(0),
            memory: get("memory").map(|q| q.as_bytes()).unwrap_or(0),
        },
        get("pods").map(|q| q.as_bytes()).unwrap_or(0),
    )
}
