//! Hollow nodes: many simulated nodes in one process, for measuring the control plane at
//! cluster scale on one machine (Kubernetes' kubemark idea). Each hollow node registers a real
//! Node (Ready, with capacity), renews its Lease like a kubelet, and "runs" the pods bound to
//! it by reporting them Running and Ready at once — no image pull, no runtime — and confirms
//! their deletion when they are deleted gracefully.
//!
//! What it owns: registration, the heartbeat of every hollow node, and one pod watch shared by
//! all of them (a real agent has one per node; thousands of watches would measure the watch
//! fan-out, not the scheduler). What it does not: anything a pod does inside a node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::lease;
use crate::node_status::{self, NodeFacts, NodeIdentity};

/// How the hollow nodes look and behave.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are `<prefix><index>` (zero-padded to 5 digits).
    pub name_prefix: String,
    /// Capacity of each node (`cpu`, `memory`, `pods`).
    pub capacity: BTreeMap<String, String>,
    /// How often every node's Lease is renewed (the kubelet's 10 s).
    pub lease_interval: Duration,
    /// How many API writes are in flight at once.
    pub concurrency: usize,
}

impl HollowConfig {
    /// `count` nodes named `hollow-00000…` with 4 cpu, 16 GiB and room for 110 pods each.
    pub fn new(count: usize) -> HollowConfig {
        HollowConfig {
            count,
            name_prefix: "hollow-".into(),
            capacity: BTreeMap::from([
                ("cpu".into(), "4".into()),
                ("memory".into(), "16Gi".into()),
                ("pods".into(), "110".into()),
            ]),
            lease_interval: Duration::from_secs(10),
            concurrency: 64,
        }
    }

    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}{i:05}", self.name_prefix)
    }

    /// The index of a node name of ours, `None` for anyone else's node.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix(&self.name_prefix)?.parse().ok()?;
        (i < self.count).then_some(i)
    }
}

/// The pod CIDR of hollow node `i`: a /24 out of 100.64.0.0/10 (shared address space, never
/// routed here — nothing listens on hollow pod IPs).
fn pod_cidr(i: usize) -> (Ipv4Addr, String) {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + ((i as u32) << 8);
    let base = Ipv4Addr::from(base);
    (base, format!("{base}/24"))
}

/// Why the hollow nodes could not start.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    #[error("registering hollow node {node}: {source}")]
    Register { node: String, source: kube::Error },
}

fn identity(cfg: &HollowConfig, i: usize) -> NodeIdentity {
    NodeIdentity {
        name: cfg.node_name(i),
        node_ip: Ipv4Addr::LOCALHOST.into(),
        api_port: 0,
        pod_cidr: pod_cidr(i).1,
        runtimes: vec!["wasm".into(), "oci".into()],
        labels: BTreeMap::from([("skiff.dev/hollow".into(), "true".into())]),
        capacity: cfg.capacity.clone(),
    }
}

/// Registers every node (Ready), then heartbeats them and runs their pods until `cancel`.
pub async fn run(client: kube::Client, cfg: HollowConfig, cancel: CancellationToken) -> Result<(), HollowError> {
    let cfg = Arc::new(cfg);
    register_all(&client, &cfg).await?;
    info!(count = cfg.count, "hollow nodes registered");
    let heartbeat = tokio::spawn(heartbeat(client.clone(), cfg.clone(), cancel.clone()));
    run_pods(client, cfg, cancel).await;
    let _ = heartbeat.await;
    Ok(())
}

async fn register_all(client: &kube::Client, cfg: &Arc<HollowConfig>) -> Result<(), HollowError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let facts = NodeFacts { hostname: "hollow".into(), ..NodeFacts::detect() };
    futures::stream::iter(0..cfg.count)
        .map(|i| {
            let nodes = nodes.clone();
            let id = identity(cfg, i);
            let facts = facts.clone();
            async move {
                let wrap = |source| HollowError::Register { node: id.name.clone(), source };
                node_status::register(&nodes, &node_status::desired_node(&id, &facts)).await.map_err(wrap)?;
                let status = node_status::desired_status(&id, &facts, None, Timestamp::now());
                let patch = Patch::Merge(json!({ "status": status }));
                nodes.patch_status(&id.name, &PatchParams::default(), &patch).await.map_err(wrap)?;
                Ok::<(), HollowError>(())
            }
        })
        .buffer_unordered(cfg.concurrency)
        .try_collect::<()>()
        .await
}

/// Renews every node's Lease once per interval, spread evenly over it as real kubelets are.
async fn heartbeat(client: kube::Client, cfg: Arc<HollowConfig>, cancel: CancellationToken) {
    let step = cfg.lease_interval / (cfg.count.max(1) as u32);
    let mut tick = tokio::time::interval(step.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let in_flight = Arc::new(Semaphore::new(cfg.concurrency));
    let mut next = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let name = cfg.node_name(next);
        next = (next + 1) % cfg.count.max(1);
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = lease::renew_once(client, &name).await {
                debug!(node = %name, error = %e, "hollow lease renewal failed");
            }
        });
    }
}

/// Reports the pods bound to hollow nodes Running and Ready, and confirms graceful deletions.
async fn run_pods(client: kube::Client, cfg: Arc<HollowConfig>, cancel: CancellationToken) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher(pods.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
    let in_flight = Arc::new(Semaphore::new(cfg.concurrency));
    let ip_counter = Arc::new(AtomicU32::new(0));
    loop {
        let pod = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = events.next() => match ev {
                Some(Ok(pod)) => pod,
                Some(Err(e)) => { warn!(error = %e, "hollow pod watch error"); continue }
                None => return,
            },
        };
        let Some(index) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| cfg.node_index(n)) else {
            continue;
        };
        let action = if pod.metadata.deletion_timestamp.is_some() {
            Action::ConfirmDelete
        } else if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
            Action::Run
        } else {
            continue;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let api: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod_ip(index, ip_counter.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(async move {
            let _permit = permit;
            let result = match action {
                Action::Run => {
                    api.patch_status(&name, &PatchParams::default(), &running_status(&pod, ip)).await.map(|_| ())
                }
                Action::ConfirmDelete => {
                    let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                    api.delete(&name, &dp).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => {}
                // Gone or changed meanwhile: the watch brings the pod back if there is more to do.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => debug!(pod = %name, error = %e, "hollow pod update failed"),
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Run,
    ConfirmDelete,
}

/// An address in node `index`'s /24 (hosts .1–.254, reused round robin).
fn pod_ip(index: usize, n: u32) -> Ipv4Addr {
    let (base, _) = pod_cidr(index);
    Ipv4Addr::from(u32::from(base) + 1 + n % 254)
}

/// The status a kubelet reports once every container of `pod` is running and ready.
fn running_status(pod: &Pod, ip: Ipv4Addr) -> Patch<serde_json::Value> {
    let now = Time(Timestamp::now());
    let containers: Vec<_> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let condition = |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "lastProbeTime": null});
    Patch::Merge(json!({"status": {
        "phase": "Running",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "hostIP": "127.0.0.1",
        "startTime": now,
        "conditions": [condition("PodScheduled"), condition("Initialized"), condition("ContainersReady"), condition("Ready")],
        "containerStatuses": containers,
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_indexes_and_addresses() {
        let cfg = HollowConfig::new(5000);
        assert_eq!(cfg.node_name(42), "hollow-00042");
        assert_eq!(cfg.node_index("hollow-00042"), Some(42));
        assert_eq!(cfg.node_index("hollow-05000"), None, "beyond count");
        assert_eq!(cfg.node_index("worker-1"), None);
        assert_eq!(pod_cidr(0).1, "100.64.0.0/24");
        assert_eq!(pod_cidr(4999).1, "100.83.135.0/24");
        assert_eq!(pod_ip(1, 0), Ipv4Addr::new(100, 64, 1, 1));
        assert_eq!(pod_ip(1, 254), Ipv4Addr::new(100, 64, 1, 1), "wraps within the /24");
    }

    #[test]
    fn running_status_marks_every_container_ready() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}))
        .expect("pod");
        let Patch::Merge(v) = running_status(&pod, Ipv4Addr::new(100, 64, 0, 9)) else { panic!("merge patch") };
        assert_eq!(v["status"]["phase"], "Running");
        assert_eq!(v["status"]["podIP"], "100.64.0.9");
        assert_eq!(v["status"]["containerStatuses"].as_array().map(Vec::len), Some(2));
        assert!(v["status"]["conditions"].as_array().expect("conditions").iter().all(|c| c["status"] == "True"));
    }
}
