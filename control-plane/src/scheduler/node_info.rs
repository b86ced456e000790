//! What the scheduler knows about one node while placing a pod: the Node itself and the sum of
//! what the pods bound (or assumed bound) to it use — cpu/memory requests, pod count, host
//! ports, and how many pods each controller owns there (for spreading). Pure data, no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use skiff_api::quantity::parse_quantity;

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
    /// The uid of the pod's controller (ReplicaSet, …), for spreading.
    pub owner_uid: Option<String>,
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
        let mut demand = PodDemand { owner_uid: controller_uid(pod).map(str::to_string), ..Default::default() };
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

/// A node and what its pods use.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pod_count: usize,
    pub host_ports: Vec<HostPort>,
    /// Controller uid → how many of its pods are on this node.
    pub owner_pods: HashMap<String, usize>,
    /// Allocatable cpu/memory and pods, parsed once from the Node.
    alloc: (Resources, i64),
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let alloc = parse_allocatable(&node);
        NodeInfo {
            node,
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pod_count: 0,
            host_ports: Vec::new(),
            owner_pods: HashMap::new(),
            alloc,
        }
    }

    /// Replaces the Node (a status or spec change), keeping the usage of its pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.alloc = parse_allocatable(&node);
        self.node = node;
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
        if let Some(uid) = &d.owner_uid {
            *self.owner_pods.entry(uid.clone()).or_default() += 1;
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
        if let Some(uid) = &d.owner_uid
            && let Some(n) = self.owner_pods.get_mut(uid)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.owner_pods.remove(uid);
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
