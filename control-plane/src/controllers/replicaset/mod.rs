//! The ReplicaSet controller: keeps `spec.replicas` pods matching the selector — creating
//! them from the template, deleting the extra ones in Kubernetes' order, adopting orphans —
//! and reports status. Expectations keep it from over-creating while the cache lags.
//!
//! Not here: releasing pods whose labels stop matching, pod-deletion-cost, burst limits.

pub mod pods;

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_api::selector::LabelSelector;
use tracing::{debug, instrument};

use super::expectations::Expectations;
use super::informer::{Change, Informer, key_of};
use super::owner::{controller_key, controller_ref, controller_reference, labels_of};
use super::workqueue::WorkQueue;
use super::{Clock, Context, Ctx, ReconcileError, info, write_status};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{DeleteOptions, Registry, WriteOptions};
use crate::scheduler::node_info::holds_resources;

/// Pods this controller may count: not terminating, not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && holds_resources(pod)
}

/// How long pod events for one ReplicaSet are gathered before it is reconciled again, at
/// least; a ReplicaSet whose pass is expensive (many pods) waits [`PASS_COST_FACTOR`] times
/// its last pass, up to [`MAX_POD_BATCH`], so passes never take more than a fifth of a core.
const POD_BATCH: Duration = Duration::from_millis(50);
const PASS_COST_FACTOR: u32 = 4;
const MAX_POD_BATCH: Duration = Duration::from_secs(1);

/// The ReplicaSet controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct ReplicaSetController {
    registry: Registry,
    pods: Informer<Pod>,
    replicasets: Informer<ReplicaSet>,
    queue: WorkQueue,
    expectations: Expectations,
    clock: Clock,
    /// How long the last pass over each ReplicaSet took.
    pass_cost: Arc<std::sync::Mutex<std::collections::HashMap<String, Duration>>>,
}

impl ReplicaSetController {
    /// Creates the controller and subscribes it to the caches.
    pub fn new(ctx: &Ctx) -> Self {
        let c = ReplicaSetController {
            registry: ctx.registry.clone(),
            pods: ctx.inf.pods.clone(),
            replicasets: ctx.inf.replicasets.clone(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            clock: ctx.config.clock.clone(),
            pass_cost: Arc::default(),
        };
        let me = c.clone();
        c.replicasets.subscribe(move |change| {
            let key = key_of(&change.object().metadata);
            if let Change::Deleted(_) = change {
                me.expectations.forget(&key);
            }
            me.queue.add(&key);
        });
        let me = c.clone();
        c.pods.subscribe(move |change| me.on_pod(change));
        c
    }

    /// The queue of ReplicaSet keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Looks at `owner` again after one of its pods changed — after [`POD_BATCH`], so a burst
    /// of pod events (10,000 pods created, bound and started) costs one pass over the pods
    /// per batch instead of one per event: each pass walks every pod of the ReplicaSet.
    fn pod_changed(&self, owner: &str) {
        let cost = self.pass_cost.lock().unwrap_or_else(|e| e.into_inner()).get(owner).copied().unwrap_or_default();
        self.queue.add_after(owner, (cost * PASS_COST_FACTOR).clamp(POD_BATCH, MAX_POD_BATCH));
    }

    fn on_pod(&self, change: &Change<Pod>) {
        match change {
            Change::Added(p) => match controller_key(&p.metadata, "ReplicaSet") {
                Some(owner) => {
                    self.expectations.created(&owner);
                    self.pod_changed(&owner);
                }
                None => self.enqueue_matching(p),
            },
            Change::Updated { old, new } => {
                let owner = controller_key(&new.metadata, "ReplicaSet");
                if let Some(owner) = &owner {
                    if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some() {
                        self.expectations.deleted(owner);
                    }
                    self.pod_changed(owner);
                }
                if let Some(old_owner) =
                    controller_key(&old.metadata, "ReplicaSet").filter(|o| Some(o) != owner.as_ref())
                {
                    self.pod_changed(&old_owner);
                }
                if owner.is_none() {
                    self.enqueue_matching(new);
                }
            }
            Change::Deleted(p) => {
                if let Some(owner) = controller_key(&p.metadata, "ReplicaSet") {
                    if p.metadata.deletion_timestamp.is_none() {
                        self.expectations.deleted(&owner);
                    }
                    self.pod_changed(&owner);
                }
            }
        }
    }

    /// An orphan pod: every ReplicaSet of its namespace whose selector matches may adopt it.
    fn enqueue_matching(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let labels = labels_of(&pod.metadata);
        for rs in self.replicasets.list_namespace(ns) {
            let sel = rs.spec.as_ref().and_then(|s| LabelSelector::from_label_selector(&s.selector).ok());
            if sel.is_some_and(|s| !s.is_empty() && s.matches(labels)) {
                self.pod_changed(&key_of(&rs.metadata));
            }
        }
    }

    /// Brings one ReplicaSet's pods and status to the desired state.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(rs) = self.replicasets.get(key) else {
            self.expectations.forget(key);
            self.pass_cost.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            return Ok(());
        };
        if rs.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(spec) = rs.spec.as_ref() else { return Ok(()) };
        let selector = LabelSelector::from_label_selector(&spec.selector)
            .map_err(|source| ReconcileError::Selector { key: key.into(), source })?;
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();

        let started = std::time::Instant::now();
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        let mut orphans: Vec<Arc<Pod>> = Vec::new();
        for pod in self.pods.list_namespace(ns) {
            if !is_active(&pod) {
                continue;
            }
            let labels = labels_of(&pod.metadata);
            match controller_ref(&pod.metadata) {
                Some(r) if r.uid == uid && selector.matches(labels) => owned.push(pod),
                Some(_) => {}
                None if !selector.is_empty() && selector.matches(labels) => orphans.push(pod),
                None => {}
            }
        }
        let scan = started.elapsed();
        for orphan in orphans {
            if self.adopt(&rs, &orphan).await? {
                owned.push(orphan);
            }
        }

        if self.expectations.satisfied(key) {
            let want = spec.replicas.unwrap_or(1).max(0) as usize;
            if owned.len() < want {
                self.create_pods(key, &rs, want - owned.len()).await?;
            } else if owned.len() > want {
                self.delete_pods(key, &owned, owned.len() - want).await?;
            }
        }
        self.update_status(&rs, &owned, scan).await
    }

    /// Sets this ReplicaSet as the controller of an orphan; false if someone else got it.
    async fn adopt(&self, rs: &ReplicaSet, pod: &Pod) -> Result<bool, ReconcileError> {
        let reference =
            serde_json::to_value(controller_reference("apps/v1", "ReplicaSet", &rs.metadata)).unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let result = self
            .registry
            .update_with(
                info("", "pods"),
                pod.metadata.namespace.as_deref(),
                name,
                None,
                WriteOptions::default(),
                None,
                |old| {
                    let mut new = old.clone();
                    let refs = new["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
                    if refs.iter().any(|r| r["controller"] == true) {
                        return Err(ApiError::Conflict(format!("pod {name} already has a controller")));
                    }
                    let mut refs = refs;
                    refs.push(reference.clone());
                    new["metadata"]["ownerReferences"] = json!(refs);
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(ApiError::Conflict(_) | ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e).context(|| format!("adopting pod {name}")),
        }
    }

    async fn create_pods(&self, key: &str, rs: &ReplicaSet, n: usize) -> Result<(), ReconcileError> {
        debug!(rs = key, n, "creating pods");
        self.expectations.expect(key, n as i64, 0);
        let body = pods::pod_from_template(rs);
        let ns = rs.metadata.namespace.as_deref();
        let results =
            join_all((0..n).map(|_| self.registry.create(info("", "pods"), ns, body.clone(), WriteOptions::default())))
                .await;
        let mut first_error = None;
        for r in results {
            if let Err(e) = r {
                // This creation will never be observed.
                self.expectations.created(key);
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e).context(|| format!("creating pods for ReplicaSet {key}")),
        }
    }

    async fn delete_pods(&self, key: &str, owned: &[Arc<Pod>], n: usize) -> Result<(), ReconcileError> {
        let victims = pods::pods_to_delete(owned, n);
        debug!(rs = key, n, "deleting pods");
        self.expectations.expect(key, 0, victims.len() as i64);
        let opts = DeleteOptions::default();
        let results = join_all(victims.iter().map(|p| {
            self.registry.delete(
                info("", "pods"),
                p.metadata.namespace.as_deref(),
                p.metadata.name.as_deref().unwrap_or_default(),
                &opts,
            )
        }))
        .await;
        let mut first_error = None;
        for r in results {
            if let Err(e) = self.expectations.settle_delete(key, r) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e).context(|| format!("deleting pods of ReplicaSet {key}")),
        }
    }

    /// Computes and writes the status; `scan` is what the pass over the pods cost so far.
    async fn update_status(&self, rs: &ReplicaSet, owned: &[Arc<Pod>], scan: Duration) -> Result<(), ReconcileError> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let key = key_of(&rs.metadata);
        // A pod Ready but not yet for minReadySeconds becomes available later without any
        // event: look again then.
        if let Some(after) = pods::next_available_in(rs, owned, now) {
            self.queue.add_after(&key, after);
        }
        let status = pods::compute_status(rs, owned, now);
        self.pass_cost.lock().unwrap_or_else(|e| e.into_inner()).insert(key, scan + started.elapsed());
        if rs.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let value = serde_json::to_value(&status).unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        write_status(&self.registry, info("apps", "replicasets"), rs.metadata.namespace.as_deref(), name, value).await
    }
}

impl super::Reconcile for ReplicaSetController {
    const NAME: &'static str = "replicaset";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        ReplicaSetController::reconcile(self, key).await
    }
}
