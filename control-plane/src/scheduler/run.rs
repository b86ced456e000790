//! The scheduler's async shell: pods without a node are queued the moment they appear in the
//! informer cache; one loop decides (pure [`super::schedule_from`] over the incremental
//! [`SchedulerCache`], in memory), assumes the pod on its node there, and hands the binding
//! write to a task of its own, so a slow store write never holds up the next decision. Pods that fit nowhere are marked
//! `PodScheduled=False` (reason `Unschedulable`) with a `FailedScheduling` event, and retried
//! whenever a node or a bound pod changes, and every [`RETRY_UNSCHEDULABLE`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, instrument, warn};

use super::cache::SchedulerCache;
use super::node_info::{PodDemand, holds_resources};
use super::volumes::{self, PodVolumes, VolumeCaches};
use super::{SCHEDULER_NAME, schedule_from_with};
use crate::apiserver::error::ApiError;
use crate::apiserver::scale::bind_pod;
use crate::controllers::events::{self, EventType};
use crate::controllers::informer::{Change, Informer, key_of};
use crate::controllers::workqueue::WorkQueue;
use crate::registry::catalog;
use crate::registry::object;
use crate::registry::rest::{Registry, WriteOptions};

/// How often pods that fit nowhere are tried again even when nothing seems to change.
pub const RETRY_UNSCHEDULABLE: Duration = Duration::from_secs(30);

/// The scheduler: owns its queue, its cache of node usage and its binding tasks.
#[derive(Debug, Clone)]
pub struct Scheduler {
    registry: Registry,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    queue: WorkQueue,
    shared: Arc<Shared>,
    /// Claims, volumes and classes, when volume scheduling is on ([`Scheduler::with_volumes`]).
    volumes: Option<VolumeCaches>,
}

/// How long a pod's binding waits for its WaitForFirstConsumer claims to be bound after the
/// selected node was written (Kubernetes' `bindTimeoutSeconds` is 600).
pub const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Shared {
    /// Every node with what its pods use, assumed pods included.
    cache: Mutex<SchedulerCache>,
    /// Pods that fit nowhere at their last attempt.
    unschedulable: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this scheduler should place `pod` now.
pub fn needs_scheduling(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && spec.scheduler_name.as_deref().is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME)
        && holds_resources(pod)
}

fn bound_to(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

impl Scheduler {
    /// Creates the scheduler and subscribes it to the caches (before they start).
    pub fn new(registry: Registry, pods: Informer<Pod>, nodes: Informer<Node>) -> Self {
        let s = Scheduler { registry, pods, nodes, queue: WorkQueue::new(), shared: Arc::default(), volumes: None };
        let me = s.clone();
        s.pods.subscribe(move |change| me.on_pod(change));
        let me = s.clone();
        s.nodes.subscribe(move |change| {
            // A new node, or one whose labels, taints, capacity or readiness changed, may fit
            // pods that fit nowhere before.
            match change {
                Change::Added(n) | Change::Updated { new: n, .. } => lock(&me.shared.cache).set_node(n.clone()),
                Change::Deleted(n) => {
                    lock(&me.shared.cache).remove_node(n.metadata.name.as_deref().unwrap_or_default())
                }
            }
            let relevant = match change {
                Change::Added(_) => true,
                Change::Updated { old, new } => {
                    old.metadata.labels != new.metadata.labels || old.spec != new.spec || old.status != new.status
                }
                Change::Deleted(_) => false,
            };
            if relevant {
                me.retry_unschedulable();
            }
        });
        s
    }

    /// Turns on the volume plugins, reading claims, volumes and classes from `inf` (call
    /// before the caches start). A claim or volume that changes retries unschedulable pods.
    pub fn with_volumes(mut self, inf: &crate::controllers::Informers) -> Self {
        let caches = VolumeCaches::new(inf);
        let me = self.clone();
        caches.pvcs.subscribe(move |_| me.retry_unschedulable());
        let me = self.clone();
        caches.pvs.subscribe(move |_| me.retry_unschedulable());
        let me = self.clone();
        caches.classes.subscribe(move |_| me.retry_unschedulable());
        self.volumes = Some(caches);
        self
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let pod = change.object();
        let key = key_of(&pod.metadata);
        match change {
            Change::Added(p) | Change::Updated { new: p, .. } if needs_scheduling(p) => self.queue.add(&key),
            _ => {}
        }
        let gone = matches!(change, Change::Deleted(_));
        match change {
            Change::Added(p) | Change::Updated { new: p, .. } => lock(&self.shared.cache).update_pod(&key, p),
            Change::Deleted(_) => lock(&self.shared.cache).remove_pod(&key),
        }
        if gone {
            lock(&self.shared.unschedulable).remove(&key);
        }
        // A bound pod that leaves or finishes frees room on its node.
        let freed = match change {
            Change::Deleted(p) => bound_to(p).is_some(),
            Change::Updated { old, new } => bound_to(new).is_some() && holds_resources(old) && !holds_resources(new),
            Change::Added(_) => false,
        };
        if freed {
            self.retry_unschedulable();
        }
    }

    fn retry_unschedulable(&self) {
        let keys: Vec<String> = lock(&self.shared.unschedulable).iter().cloned().collect();
        for key in keys {
            self.queue.add(&key);
        }
    }

    /// Schedules until `cancel`, then waits for in-flight bindings.
    pub async fn run(self, cancel: CancellationToken) {
        if !self.pods.wait_synced(&cancel).await || !self.nodes.wait_synced(&cancel).await {
            return;
        }
        let tasks = TaskTracker::new();
        let mut periodic = tokio::time::interval(RETRY_UNSCHEDULABLE);
        loop {
            tokio::select! {
                key = self.queue.next(&cancel) => {
                    let Some(key) = key else { break };
                    self.schedule_one(&key, &tasks);
                    self.queue.done(&key);
                }
                _ = periodic.tick() => self.retry_unschedulable(),
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    #[instrument(level = "debug", skip(self, tasks))]
    fn schedule_one(&self, key: &str, tasks: &TaskTracker) {
        let Some(pod) = self.pods.get(key) else { return };
        if !needs_scheduling(&pod) {
            return;
        }
        let vols = match self.volumes.as_ref().map(|v| volumes::pre_filter(&pod, v)) {
            None => PodVolumes::default(),
            Some(Ok(vols)) => vols,
            Some(Err(reason)) => {
                let num_nodes = lock(&self.shared.cache).nodes().len();
                let message = format!("0/{num_nodes} nodes are available: {reason}.");
                debug!(pod = key, reason = %message, "unschedulable (volumes)");
                lock(&self.shared.unschedulable).insert(key.to_string());
                let me = self.clone();
                tasks.spawn(async move { me.mark_unschedulable(pod, message).await });
                return;
            }
        };
        let decision = {
            let mut cache = lock(&self.shared.cache);
            if !needs_scheduling(&pod) || cache.is_assumed(key) {
                return;
            }
            let extra = |node: &super::NodeInfo| if vols.is_empty() { Ok(()) } else { volumes::filter(&vols, node) };
            let (decision, next) = schedule_from_with(&pod, cache.nodes(), cache.next_start(), &extra);
            cache.set_next_start(next);
            if let Ok(node) = &decision {
                cache.assume(key, node, PodDemand::of(&pod));
            }
            decision
        };
        match decision {
            Ok(node) => {
                debug!(pod = key, node, "assumed");
                lock(&self.shared.unschedulable).remove(key);
                let me = self.clone();
                let key = key.to_string();
                tasks.spawn(async move { me.bind(key, pod, node, vols).await });
            }
            Err(fit) => {
                debug!(pod = key, reason = %fit, "unschedulable");
                lock(&self.shared.unschedulable).insert(key.to_string());
                let me = self.clone();
                tasks.spawn(async move { me.mark_unschedulable(pod, fit.to_string()).await });
            }
        }
    }

    /// Writes the selected node on the pod's unbound WaitForFirstConsumer claims and waits
    /// (up to [`VOLUME_BIND_TIMEOUT`]) until the binder has bound every claim of the pod.
    async fn bind_volumes(&self, pod: &Pod, node: &str, vols: &PodVolumes) -> Result<(), String> {
        let Some(caches) = self.volumes.as_ref().filter(|_| !vols.unbound.is_empty()) else { return Ok(()) };
        let info = crate::controllers::info("", "persistentvolumeclaims");
        for (ns, name) in volumes::claims_to_select(vols, node) {
            self.registry
                .update_with(info, Some(&ns), &name, None, WriteOptions::default(), None, |old| {
                    let mut new = old.clone();
                    new["metadata"]["annotations"][skiff_api::labels::SELECTED_NODE] = json!(node);
                    Ok(new)
                })
                .await
                .map_err(|e| format!("selecting node {node} for claim {ns}/{name}: {e}"))?;
        }
        let deadline = tokio::time::Instant::now() + VOLUME_BIND_TIMEOUT;
        while !volumes::all_bound(pod, caches) {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("timed out waiting for the volumes of the pod to be bound on {node}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn bind(&self, key: String, pod: Arc<Pod>, node: String, vols: PodVolumes) {
        let ns = pod.metadata.namespace.as_deref();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if let Err(e) = self.bind_volumes(&pod, &node, &vols).await {
            warn!(pod = %key, node, error = %e, "volume binding failed; will retry");
            lock(&self.shared.cache).forget_assumed(&key);
            self.queue.retry(&key);
            return;
        }
        match bind_pod(&self.registry, ns, name, &node, WriteOptions::default()).await {
            Ok(_) => {
                self.queue.forget(&key);
                let msg = format!("Successfully assigned {key} to {node}");
                let involved = events::reference("v1", "Pod", &pod.metadata);
                events::record(&self.registry, SCHEDULER_NAME, &involved, EventType::Normal, "Scheduled", &msg).await;
            }
            // Deleted meanwhile, or bound by someone else: nothing left to do for this pod.
            Err(ApiError::NotFound { .. } | ApiError::Conflict(_)) => {
                lock(&self.shared.cache).forget_assumed(&key);
            }
            Err(e) => {
                warn!(pod = %key, node, error = %e, "binding failed; will retry");
                lock(&self.shared.cache).forget_assumed(&key);
                self.queue.retry(&key);
            }
        }
    }

    /// Sets PodScheduled=False/Unschedulable with the fit message and records a
    /// FailedScheduling event — only when the message changed, so retries do not flood.
    async fn mark_unschedulable(&self, pod: Arc<Pod>, message: String) {
        let Some(info) = catalog::find("", "v1", "pods") else { return };
        let ns = pod.metadata.namespace.as_deref();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut changed = false;
        let result = self
            .registry
            .update_with(info, ns, name, Some("status"), WriteOptions::default(), None, |old| {
                changed = false;
                let mut new = old.clone();
                let bound = old
                    .get("spec")
                    .and_then(|s| s.get("nodeName"))
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let mut conditions: Vec<Value> = old["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let current = conditions.iter().find(|c| c["type"] == "PodScheduled");
                if bound || current.is_some_and(|c| c["status"] == "False" && c["message"] == message.as_str()) {
                    return Ok(new);
                }
                changed = true;
                conditions.retain(|c| c["type"] != "PodScheduled");
                conditions.push(json!({
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastTransitionTime": object::now(), "lastProbeTime": null,
                }));
                new["status"]["conditions"] = json!(conditions);
                Ok(new)
            })
            .await;
        match result {
            Ok(_) if changed => {
                let involved = events::reference("v1", "Pod", &pod.metadata);
                events::record(
                    &self.registry,
                    SCHEDULER_NAME,
                    &involved,
                    EventType::Warning,
                    "FailedScheduling",
                    &message,
                )
                .await;
            }
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => warn!(pod = name, error = %e, "could not record that the pod is unschedulable"),
        }
    }
}
