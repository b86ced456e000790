//! Repair of Service allocations: gives back cluster IPs and node ports that no Service
//! uses any more — the Service was deleted (by a user, a namespace deletion, the garbage
//! collector), changed type or dropped a port, or the API server died between reserving an
//! address and writing the Service (`registry::service_alloc` explains the keys).
//!
//! Why two sweeps: a reservation is written a moment before its Service, and the Service
//! cache lags the store a little; a key is released only when it was already orphaned, at
//! the same revision, one sweep earlier — [`SWEEP_INTERVAL`] apart, far longer than any write
//! takes. The delete is conditional on that revision, so a key re-taken meanwhile stays.
//! Deleted Services trigger an early sweep, so their addresses return within one interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Ctx;
use super::informer::Change;
use crate::registry::service_alloc::{CLUSTER_IP_PREFIX, Holder, NODE_PORT_PREFIX};
use crate::storage::{ListOptions, Revision, StoreError};

/// How often allocations are checked (and so how long an orphan lives at most, twice over).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The repair loop; see the module docs.
#[derive(Debug, Clone)]
pub struct RepairController {
    ctx: Ctx,
    /// Orphans seen by the previous sweep: key → its revision then.
    suspects: Arc<std::sync::Mutex<HashMap<String, Revision>>>,
    deleted: Arc<Notify>,
}

impl RepairController {
    /// Creates the controller and subscribes it to Service deletions.
    pub fn new(ctx: &Ctx) -> Self {
        let c = RepairController { ctx: ctx.clone(), suspects: Arc::default(), deleted: Arc::new(Notify::new()) };
        let deleted = c.deleted.clone();
        ctx.inf.services.subscribe(move |change: &Change<Service>| {
            if matches!(change, Change::Deleted(_)) {
                deleted.notify_one();
            }
        });
        c
    }

    /// Sweeps every [`SWEEP_INTERVAL`] (sooner after a deletion) until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        if !self.ctx.inf.wait_synced(&cancel).await {
            return;
        }
        loop {
            if let Err(e) = self.sweep().await {
                warn!(error = %e, "repairing service allocations");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                // A deletion makes its keys suspects now; the next sweep releases them.
                () = self.deleted.notified() => tokio::time::sleep(SWEEP_INTERVAL / 2).await,
            }
        }
    }

    /// One pass: releases keys orphaned now and at the previous pass; returns how many.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let store = self.ctx.registry.store();
        let mut orphans = HashMap::new();
        for prefix in [CLUSTER_IP_PREFIX, NODE_PORT_PREFIX] {
            for kv in store.list(prefix, ListOptions::default()).await?.items {
                let value = kv.key.trim_start_matches(prefix);
                let holder: Option<Holder> = serde_json::from_slice(&kv.value).ok();
                if !holder.is_some_and(|h| self.in_use(&h, prefix, value)) {
                    orphans.insert(kv.key.clone(), kv.mod_revision);
                }
            }
        }
        let previous =
            std::mem::replace(&mut *self.suspects.lock().unwrap_or_else(|p| p.into_inner()), orphans.clone());
        let mut released = 0;
        for (key, revision) in orphans {
            if previous.get(&key) != Some(&revision) {
                continue;
            }
            match store.delete(&key, Some(revision)).await {
                Ok(_) => {
                    debug!(%key, "released an unused service allocation");
                    released += 1;
                }
                Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// Whether the holder's Service still exists and uses `value` (an IP or a node port).
    fn in_use(&self, holder: &Holder, prefix: &str, value: &str) -> bool {
        let Some(svc) = self.ctx.inf.services.get(&holder.service) else { return false };
        if svc.metadata.uid.as_deref() != Some(holder.uid.as_str()) {
            return false;
        }
        let Some(spec) = svc.spec.as_ref() else { return false };
        if prefix == CLUSTER_IP_PREFIX {
            spec.cluster_ip.as_deref() == Some(value)
        } else {
            spec.ports.iter().flatten().any(|p| p.node_port.is_some_and(|n| n.to_string() == value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::TestCluster;
    use serde_json::json;

    fn svc(name: &str, ty: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
               "spec": {"type": ty, "ports": [{"port": 80}]}})
    }

    async fn held(tc: &TestCluster) -> Vec<String> {
        let store = tc.registry().store();
        let mut keys = Vec::new();
        for prefix in [CLUSTER_IP_PREFIX, NODE_PORT_PREFIX] {
            keys.extend(
                store.list(prefix, ListOptions::default()).await.expect("list").items.into_iter().map(|kv| kv.key),
            );
        }
        keys
    }

    #[tokio::test]
    async fn allocations_of_deleted_or_changed_services_are_released_after_two_sweeps() {
        let tc = TestCluster::start().await;
        let repair = RepairController::new(&tc.ctx);
        let kept = tc.create("", "services", Some("default"), svc("kept", "NodePort")).await;
        let gone = tc.create("", "services", Some("default"), svc("gone", "ClusterIP")).await;
        let narrowed = tc.create("", "services", Some("default"), svc("narrowed", "NodePort")).await;
        tc.settle().await;
        assert_eq!(held(&tc).await.len(), 5, "2 IPs + 1 port for NodePorts, 1 IP for the other");
        assert_eq!(repair.sweep().await.expect("sweep"), 0, "nothing is orphaned");

        tc.delete("", "services", Some("default"), "gone", Default::default()).await;
        tc.update("", "services", Some("default"), "narrowed", None, |s| s["spec"]["type"] = json!("ClusterIP")).await;
        tc.settle().await;
        // First sweep: suspects only. Second: released.
        assert_eq!(repair.sweep().await.expect("sweep"), 0);
        assert_eq!(repair.sweep().await.expect("sweep"), 2, "gone's IP and narrowed's node port");
        let left = held(&tc).await;
        let ip = |s: &serde_json::Value| format!("{CLUSTER_IP_PREFIX}{}", s["spec"]["clusterIP"].as_str().expect("ip"));
        let port = |s: &serde_json::Value| format!("{NODE_PORT_PREFIX}{}", s["spec"]["ports"][0]["nodePort"]);
        assert!(left.contains(&ip(&kept)) && left.contains(&port(&kept)) && left.contains(&ip(&narrowed)), "{left:?}");
        assert!(!left.contains(&ip(&gone)) && !left.contains(&port(&narrowed)), "{left:?}");
    }

    #[tokio::test]
    async fn a_reservation_whose_service_never_came_is_released_but_a_retaken_one_is_not() {
        let tc = TestCluster::start().await;
        let repair = RepairController::new(&tc.ctx);
        let store = tc.registry().store();
        let holder = |uid: &str| serde_json::to_vec(&json!({"uid": uid, "service": "default/ghost"})).expect("json");
        store.create(&format!("{CLUSTER_IP_PREFIX}10.96.200.1"), holder("u1")).await.expect("create");
        let retaken = store.create(&format!("{CLUSTER_IP_PREFIX}10.96.200.2"), holder("u2")).await.expect("create");
        assert_eq!(repair.sweep().await.expect("sweep"), 0);
        // Re-written between the sweeps: a new revision, so not the orphan seen before.
        store.update(&retaken.key, holder("u3"), retaken.mod_revision).await.expect("update");
        assert_eq!(repair.sweep().await.expect("sweep"), 1);
        assert_eq!(held(&tc).await, vec![format!("{CLUSTER_IP_PREFIX}10.96.200.2")]);
    }
}
