//! The agent's Node object: registration and periodic status.
//!
//! What it owns: reading the machine's facts (cores, memory, hostname, os/arch), building the
//! Node the agent wants — labels, `spec.podCIDR(s)`, capacity/allocatable, addresses, the
//! kubelet endpoint port, nodeInfo, conditions — as pure functions, creating or updating it,
//! and refreshing its status every interval. What it does not: the Lease heartbeat (`lease`),
//! or taints and readiness judgements of the control plane.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_api::labels;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The machine, as the Node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub hostname: String,
    pub cpu_cores: u64,
    pub memory_bytes: u64,
    /// `linux`.
    pub os: String,
    /// Kubernetes spelling: `amd64`, `arm64`.
    pub arch: String,
}

impl NodeFacts {
    /// Reads this machine's facts (falls back to safe values where a source is missing).
    pub fn detect() -> NodeFacts {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total(&m)).unwrap_or(0);
        NodeFacts {
            hostname,
            cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_bytes,
            os: std::env::consts::OS.into(),
            arch: kube_arch(std::env::consts::ARCH).into(),
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Rust's architecture names in Kubernetes' (GOARCH) spelling.
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What the agent reports about itself besides the machine's facts.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub node_ip: IpAddr,
    pub api_port: u16,
    pub pod_cidr: String,
    /// Runtime names (`wasm`, `oci`), in preference order.
    pub runtimes: Vec<String>,
    /// Extra labels (they win over the defaults).
    pub labels: BTreeMap<String, String>,
    /// Capacity overrides: `cpu`, `memory`, `pods`, ...
    pub capacity: BTreeMap<String, String>,
}

/// The Node's metadata and spec the agent owns.
pub fn desired_node(id: &NodeIdentity, facts: &NodeFacts) -> Node {
    let mut node_labels = BTreeMap::from([
        (labels::HOSTNAME.to_string(), id.name.clone()),
        (labels::OS.to_string(), facts.os.clone()),
        (labels::ARCH.to_string(), facts.arch.clone()),
        // Label values cannot hold ',', so runtimes are joined with '.'.
        (labels::RUNTIMES.to_string(), id.runtimes.join(".")),
        (labels::NODE_VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]);
    node_labels.extend(id.labels.clone());
    Node {
        metadata: ObjectMeta { name: Some(id.name.clone()), labels: Some(node_labels), ..ObjectMeta::default() },
        spec: Some(NodeSpec {
            pod_cidr: Some(id.pod_cidr.clone()),
            pod_cidrs: Some(vec![id.pod_cidr.clone()]),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// The Node status the agent reports; condition transition times carry over from `previous`.
pub fn desired_status(
    id: &NodeIdentity,
    facts: &NodeFacts,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), Quantity(facts.cpu_cores.to_string())),
        ("memory".to_string(), Quantity(format!("{}Ki", facts.memory_bytes / 1024))),
        ("pods".to_string(), Quantity("110".into())),
        ("ephemeral-storage".to_string(), Quantity("0".into())),
    ]);
    capacity.retain(|k, _| k != "ephemeral-storage");
    for (k, v) in &id.capacity {
        capacity.insert(k.clone(), Quantity(v.clone()));
    }
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(since),
        }
    };
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: id.node_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: facts.hostname.clone() },
        ]),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "skiff agent has sufficient memory available",
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "skiff agent has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "skiff agent has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "skiff agent is posting ready status"),
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(id.api_port) }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.arch.clone(),
            operating_system: facts.os.clone(),
            kubelet_version: format!("skiff-{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            container_runtime_version: "wasmtime://48".into(),
            os_image: "Skiff".into(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates the Node, or brings an existing one's labels (and unset pod CIDR) up to date.
pub async fn register(api: &Api<Node>, desired: &Node) -> Result<Node, kube::Error> {
    let name = desired.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), desired).await {
        Ok(node) => return Ok(node),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let existing = api.get(&name).await?;
    let mut patch = json!({ "metadata": { "labels": desired.metadata.labels } });
    // podCIDR may only be set once.
    if existing.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_none() {
        patch["spec"] = json!({ "podCIDR": desired.spec.as_ref().and_then(|s| s.pod_cidr.clone()),
                                "podCIDRs": desired.spec.as_ref().and_then(|s| s.pod_cidrs.clone()) });
    }
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await
}

/// Reports the status now and then every `interval` until `cancel` fires.
pub async fn status_loop(
    api: Api<Node>,
    id: NodeIdentity,
    facts: NodeFacts,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut previous: Option<NodeStatus> = None;
    loop {
        let status = desired_status(&id, &facts, previous.as_ref(), Timestamp::now());
        let patch = Patch::Merge(json!({ "status": status }));
        match api.patch_status(&id.name, &PatchParams::default(), &patch).await {
            Ok(node) => {
                debug!(node = %id.name, "node status reported");
                previous = node.status;
            }
            Err(e) => warn!(node = %id.name, error = %e, "reporting node status failed"),
        }
        if cancel.run_until_cancelled(tokio::time::sleep(interval)).await.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeIdentity {
        NodeIdentity {
            name: "n1".into(),
            node_ip: "127.0.0.1".parse().expect("ip"),
            api_port: 10250,
            pod_cidr: "127.244.0.0/24".into(),
            runtimes: vec!["wasm".into(), "oci".into()],
            labels: BTreeMap::from([("zone".into(), "a".into())]),
            capacity: BTreeMap::from([("pods".into(), "20".into())]),
        }
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            hostname: "box".into(),
            cpu_cores: 4,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            os: "linux".into(),
            arch: "amd64".into(),
        }
    }

    #[test]
    fn meminfo_and_arch() {
        assert_eq!(mem_total("MemTotal:       16318412 kB\nMemFree: 1 kB\n"), Some(16318412 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
        let f = NodeFacts::detect();
        assert!(f.cpu_cores >= 1 && !f.hostname.is_empty());
    }

    #[test]
    fn node_labels_and_spec() {
        let node = desired_node(&id(), &facts());
        let l = node.metadata.labels.expect("labels");
        assert_eq!(l[labels::RUNTIMES], "wasm.oci");
        assert_eq!(l[labels::HOSTNAME], "n1");
        assert_eq!(l[labels::OS], "linux");
        assert_eq!(l[labels::ARCH], "amd64");
        assert_eq!(l["zone"], "a");
        assert_eq!(node.spec.and_then(|s| s.pod_cidr).as_deref(), Some("127.244.0.0/24"));
    }

    #[test]
    fn status_capacity_conditions_and_transition_times() {
        let t0 = Timestamp::from_second(1000).expect("ts");
        let s = desired_status(&id(), &facts(), None, t0);
        let cap = s.capacity.clone().expect("capacity");
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8388608Ki");
        assert_eq!(cap["pods"].0, "20", "override wins");
        assert_eq!(s.allocatable, s.capacity);
        assert_eq!(s.daemon_endpoints.as_ref().and_then(|d| d.kubelet_endpoint.as_ref()).map(|e| e.port), Some(10250));
        let info = s.node_info.clone().expect("info");
        assert!(info.kubelet_version.starts_with("skiff-"));
        assert_eq!(info.container_runtime_version, "wasmtime://48");
        let ready =
            |s: &NodeStatus| s.conditions.iter().flatten().find(|c| c.type_ == "Ready").cloned().expect("Ready");
        assert_eq!(ready(&s).reason.as_deref(), Some("KubeletReady"));
        let t1 = Timestamp::from_second(2000).expect("ts");
        let s2 = desired_status(&id(), &facts(), Some(&s), t1);
        assert_eq!(ready(&s2).last_transition_time, Some(Time(t0)), "no transition, time kept");
        assert_eq!(ready(&s2).last_heartbeat_time, Some(Time(t1)));
        let addrs = s.addresses.expect("addresses");
        assert_eq!((addrs[0].type_.as_str(), addrs[0].address.as_str()), ("InternalIP", "127.0.0.1"));
    }
}
