//! The node lifecycle controller (kube-controller-manager's `node-lifecycle-controller`):
//! watches each Node and its heartbeat — the Lease `kube-node-lease/<node>` and the Ready
//! condition's `lastHeartbeatTime` — and when neither moved for
//! `node_monitor_grace_period` (on the controller's clock) marks the node's conditions
//! Unknown, marks its pods not Ready and taints it `node.kubernetes.io/unreachable`
//! (NoSchedule + NoExecute). A node reporting Ready=False gets the `not-ready` taints; a
//! node heard from again loses them. The pods of a deleted Node are force-deleted (the pod
//! GC's orphan rule), since no agent is left to confirm their end.
//!
//! Like Kubernetes it times heartbeats by when *it* saw them change (not by the agent's
//! clock), so a skewed node clock cannot keep a dead node alive.
//!
//! Not here: evicting pods from NoExecute-tainted nodes ([`taint_eviction`]), zone-based
//! eviction rate limits, CIDR allocation.

pub mod health;
pub mod taint_eviction;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use tracing::{debug, info as log_info, instrument};

use super::clock::since;
use super::informer::Change;
use super::workqueue::WorkQueue;
use super::{Context, Ctx, Reconcile, ReconcileError, info, write_status};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The heartbeat seen last for one node and when (on the controller's clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    /// Lease `renewTime` and Ready `lastHeartbeatTime`, as last seen.
    beat: (Option<Timestamp>, Option<Timestamp>),
    /// When `beat` was last seen to change.
    probe: Timestamp,
}

/// The node lifecycle controller; keys are node names.
#[derive(Debug, Clone)]
pub struct NodeLifecycleController {
    ctx: Ctx,
    queue: WorkQueue,
    health: Arc<Mutex<HashMap<String, Observed>>>,
}

impl NodeLifecycleController {
    /// Creates the controller and subscribes it to Nodes and node Leases.
    pub fn new(ctx: &Ctx) -> Self {
        let c = NodeLifecycleController { ctx: ctx.clone(), queue: WorkQueue::new(), health: Arc::default() };
        let q = c.queue.clone();
        ctx.inf.nodes.subscribe(move |change: &Change<Node>| {
            q.add(change.object().metadata.name.as_deref().unwrap_or_default());
        });
        let q = c.queue.clone();
        ctx.inf.leases.subscribe(move |change| {
            let meta = &change.object().metadata;
            if meta.namespace.as_deref() == Some(LEASE_NAMESPACE) {
                q.add(meta.name.as_deref().unwrap_or_default());
            }
        });
        c
    }

    /// Records the node's heartbeat; true when it was heard from within the grace period.
    fn observe(&self, name: &str, node: &Node) -> (bool, Duration) {
        let lease = self.ctx.inf.leases.get(&format!("{LEASE_NAMESPACE}/{name}"));
        let renew = lease.and_then(|l| l.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0));
        let beat = (renew, health::ready_heartbeat(node));
        let now = self.ctx.config.clock.now();
        let mut map = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(name.to_string()).or_insert_with(|| Observed { beat, probe: now });
        if entry.beat != beat {
            *entry = Observed { beat, probe: now };
        }
        let silent = since(&self.ctx.config.clock, entry.probe);
        let grace = self.ctx.config.node_monitor_grace_period;
        (silent <= grace, grace.saturating_sub(silent))
    }

    /// Sets the node's conditions Unknown (status subresource) and its pods not Ready.
    async fn mark_unknown(&self, name: &str, node: &Node) -> Result<(), ReconcileError> {
        let now = self.ctx.config.clock.now();
        let Some(conditions) = health::unknown_conditions(node, now) else { return Ok(()) };
        log_info!(node = name, "node stopped posting status; marking it Unknown");
        let mut status = serde_json::to_value(node.status.clone().unwrap_or_default()).unwrap_or_default();
        status["conditions"] = json!(conditions);
        write_status(&self.ctx.registry, info("", "nodes"), None, name, status).await?;
        for pod in self.pods_on(name) {
            self.mark_pod_not_ready(&pod).await?;
        }
        Ok(())
    }

    /// The pods bound to `node`.
    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.ctx.inf.pods.list_where(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
    }

    /// Kubernetes' MarkPodsNotReady: the pod's Ready condition becomes False.
    async fn mark_pod_not_ready(&self, pod: &Pod) -> Result<(), ReconcileError> {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let now = timestamp(self.ctx.config.clock.now());
        let result = self
            .ctx
            .registry
            .update_with(
                info("", "pods"),
                pod.metadata.namespace.as_deref(),
                name,
                Some("status"),
                WriteOptions::default(),
                None,
                |old| {
                    let mut new = old.clone();
                    let Some(conditions) = new["status"]["conditions"].as_array_mut() else { return Ok(new) };
                    for c in conditions.iter_mut().filter(|c| c["type"] == "Ready" && c["status"] != "False") {
                        c["status"] = json!("False");
                        c["lastTransitionTime"] = json!(now);
                    }
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("marking pod {name} not ready")),
        }
    }

    /// Puts the controller-owned taints the node should carry on it.
    async fn sync_taints(&self, name: &str, node: &Node, reachable: bool) -> Result<(), ReconcileError> {
        let key = health::condition_taint_key(node, reachable);
        if health::desired_taints(node, key, self.ctx.config.clock.now()).is_none() {
            return Ok(());
        }
        let clock = self.ctx.config.clock.clone();
        let result = self
            .ctx
            .registry
            .update_with(info("", "nodes"), None, name, None, WriteOptions::default(), None, |old| {
                let current: Node = serde_json::from_value(old.clone())
                    .map_err(|e| ApiError::Internal(format!("decoding node: {e}")))?;
                let mut new = old.clone();
                if let Some(taints) = health::desired_taints(&current, key, clock.now()) {
                    new["spec"]["taints"] = json!(taints);
                    if taints.is_empty()
                        && let Some(spec) = new["spec"].as_object_mut()
                    {
                        spec.remove("taints");
                    }
                }
                Ok(new)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("updating the taints of node {name}")),
        }
    }

    /// A Node is gone: its pods can never be confirmed stopped, so they are deleted at once.
    async fn delete_orphaned_pods(&self, name: &str) -> Result<(), ReconcileError> {
        for pod in self.pods_on(name) {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let opts = DeleteOptions {
                grace_period_seconds: Some(0),
                precondition_uid: pod.metadata.uid.clone(),
                ..DeleteOptions::default()
            };
            log_info!(node = name, pod = pod_name, "deleting a pod of a deleted node");
            match self.ctx.registry.delete(info("", "pods"), pod.metadata.namespace.as_deref(), pod_name, &opts).await {
                Ok(_) | Err(ApiError::NotFound { .. } | ApiError::Conflict(_)) => {}
                Err(e) => return Err(e).context(|| format!("deleting pod {pod_name} of deleted node {name}")),
            }
        }
        Ok(())
    }
}

/// A time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub(crate) fn timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Reconcile for NodeLifecycleController {
    const NAME: &'static str = "node-lifecycle";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(node) = self.ctx.inf.nodes.get(key) else {
            self.health.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            return self.delete_orphaned_pods(key).await;
        };
        if node.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let (reachable, left) = self.observe(key, &node);
        debug!(node = key, reachable, "node health");
        if !reachable {
            self.mark_unknown(key, &node).await?;
        }
        self.sync_taints(key, &node, reachable).await?;
        // Look again when the grace period would run out without a new heartbeat.
        let again =
            if reachable { left + Duration::from_millis(200) } else { self.ctx.config.node_monitor_grace_period };
        self.queue.add_after(key, again);
        Ok(())
    }
}
