//! The DaemonSet controller (kube-controller-manager's `pkg/controller/daemon`): one pod per
//! eligible node, created when a node joins or becomes eligible and deleted when it leaves or
//! stops being eligible; failed pods replaced with a per-node back-off; RollingUpdate
//! (`maxUnavailable`/`maxSurge`, `minReadySeconds` on the controller clock) or OnDelete
//! updates; ControllerRevisions for `kubectl rollout history/undo`; and the status `kubectl get
//! ds` and `kubectl rollout status` read.
//!
//! Pods are not bound here: each carries a required `matchFields metadata.name In [node]`
//! term and the default scheduler binds it. Pure decisions live in [`placement`] (eligibility,
//! the pod), [`plan`] (what to create and delete) and [`status`]; [`revisions`] keeps history.
//!
//! Not here: adopting orphan pods or revisions that match the selector, slow-start batches of
//! creations, the `pod-template-generation` label.

mod backoff;
pub mod placement;
pub mod plan;
mod revisions;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::labels::CONTROLLER_REVISION_HASH;
use skiff_api::selector::LabelSelector;
use tracing::{debug, instrument};

use super::events::{self, EventType};
use super::expectations::Expectations;
use super::informer::{Change, key_of};
use super::owner::{controller_key, controller_ref, labels_of};
use super::workqueue::WorkQueue;
use super::{Context, Ctx, ReconcileError, info, write_status};
use crate::registry::rest::{DeleteOptions, WriteOptions};
use backoff::Backoff;
use placement::NodeFit;
use plan::NodePods;

/// The component name on Events.
const COMPONENT: &str = "daemonset-controller";

/// The DaemonSet controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct DaemonSetController {
    ctx: Ctx,
    queue: WorkQueue,
    expectations: Expectations,
    failed_backoff: Backoff,
}

/// The update strategy, defaulted as the API server does.
fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

impl DaemonSetController {
    /// Creates the controller and subscribes it to the DaemonSet, pod, node and revision caches.
    pub fn new(ctx: &Ctx) -> Self {
        let c = DaemonSetController {
            ctx: ctx.clone(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            failed_backoff: Backoff::default(),
        };
        let me = c.clone();
        ctx.inf.daemonsets.subscribe(move |change| {
            let key = key_of(&change.object().metadata);
            if let Change::Deleted(_) = change {
                me.expectations.forget(&key);
                me.failed_backoff.forget_prefix(&format!("{key}/"));
            }
            me.queue.add(&key);
        });
        let me = c.clone();
        ctx.inf.pods.subscribe(move |change| me.on_pod(change));
        let me = c.clone();
        ctx.inf.nodes.subscribe(move |change| {
            let relevant = match change {
                Change::Added(_) | Change::Deleted(_) => true,
                // Eligibility reads labels, taints and `unschedulable`, never node status.
                Change::Updated { old, new } => old.metadata.labels != new.metadata.labels || old.spec != new.spec,
            };
            if relevant {
                me.enqueue_all();
            }
        });
        let me = c.clone();
        ctx.inf.controller_revisions.subscribe(move |change| {
            if let Some(owner) = controller_key(&change.object().metadata, "DaemonSet") {
                me.queue.add(&owner);
            }
        });
        c
    }

    fn enqueue_all(&self) {
        for ds in self.ctx.inf.daemonsets.list() {
            self.queue.add(&key_of(&ds.metadata));
        }
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let owner = |p: &Pod| controller_key(&p.metadata, "DaemonSet");
        match change {
            Change::Added(p) => {
                if let Some(o) = owner(p) {
                    self.expectations.created(&o);
                    self.queue.add(&o);
                }
            }
            Change::Updated { old, new } => {
                if let Some(o) = owner(new) {
                    if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some() {
                        self.expectations.deleted(&o);
                    }
                    self.queue.add(&o);
                }
            }
            Change::Deleted(p) => {
                if let Some(o) = owner(p) {
                    if p.metadata.deletion_timestamp.is_none() {
                        self.expectations.deleted(&o);
                    }
                    self.queue.add(&o);
                }
            }
        }
    }

    /// The DaemonSet's live pods per node (see [`plan::counts`]), each list oldest first.
    fn node_pods(&self, ds: &DaemonSet, selector: &LabelSelector) -> NodePods {
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
        let mut out = NodePods::new();
        for pod in self.ctx.inf.pods.list_namespace(ns) {
            let ours = controller_ref(&pod.metadata).is_some_and(|r| r.uid == uid);
            if !ours || !plan::counts(&pod) || !selector.matches(labels_of(&pod.metadata)) {
                continue;
            }
            if let Some(node) = placement::target_node(&pod) {
                out.entry(node).or_default().push(pod);
            }
        }
        for pods in out.values_mut() {
            plan::sort_oldest_first(pods);
        }
        out
    }

    /// Brings one DaemonSet's pods, revisions and status to the desired state.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(ds) = self.ctx.inf.daemonsets.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(spec) = ds.spec.as_ref() else { return Ok(()) };
        let selector = LabelSelector::from_label_selector(&spec.selector)
            .map_err(|source| ReconcileError::Selector { key: key.into(), source })?;
        if selector.is_empty() {
            // An empty selector would claim every pod of the namespace (validation refuses it).
            return Ok(());
        }
        let history = self.construct_history(&ds, &selector).await?;
        let template = placement::template_pod(&ds);
        let fits: BTreeMap<String, NodeFit> = self
            .ctx
            .inf
            .nodes
            .list()
            .iter()
            .map(|n| (n.metadata.name.clone().unwrap_or_default(), placement::node_fit(&template, n)))
            .collect();
        let pods = self.node_pods(&ds, &selector);

        if self.expectations.satisfied(key) {
            let (max_surge, _) = plan::max_surge_unavailable(&ds, fits.values().filter(|f| f.should_run).count());
            let rolling = is_rolling(&ds);
            let m = plan::manage(&fits, &pods, &history.hash, rolling && max_surge > 0);
            let mut delete = m.delete;
            let now = self.ctx.config.clock.now();
            for (node, pod) in m.failed {
                let bkey = format!("{key}/{node}");
                if let Some(wait) = self.failed_backoff.in_backoff(&bkey, now) {
                    self.queue.add_after(key, wait);
                    continue;
                }
                self.failed_backoff.next(&bkey, now);
                let msg = format!(
                    "Found failed daemon pod {}/{} on node {node}, will try to kill it",
                    pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod.metadata.name.as_deref().unwrap_or_default()
                );
                self.event(&ds, EventType::Warning, "FailedDaemonPod", &msg).await;
                delete.push(pod);
            }
            let mut create_on = m.create_on;
            if create_on.is_empty() && delete.is_empty() && rolling {
                let wanted: Vec<String> = fits.iter().filter(|(_, f)| f.should_run).map(|(n, _)| n.clone()).collect();
                let r = plan::rolling_update(&ds, &wanted, &pods, &history.hash, now);
                create_on = r.create_on;
                delete = r.delete;
            }
            self.sync_nodes(key, &ds, &create_on, &delete, &fits, &history.hash).await?;
            let live: BTreeSet<String> = pods
                .values()
                .flatten()
                .filter_map(|p| p.metadata.labels.as_ref()?.get(CONTROLLER_REVISION_HASH).cloned())
                .chain([history.hash.clone()])
                .collect();
            self.cleanup_history(&ds, &history.old, &live).await?;
        }
        self.update_status(key, &ds, &fits, &pods, &history.hash).await
    }

    /// Creates pods on `create_on` and deletes `delete`, counting on expectations so the next
    /// pass waits until the cache has seen all of it.
    async fn sync_nodes(
        &self,
        key: &str,
        ds: &DaemonSet,
        create_on: &[String],
        delete: &[Arc<Pod>],
        fits: &BTreeMap<String, NodeFit>,
        hash: &str,
    ) -> Result<(), ReconcileError> {
        if create_on.is_empty() && delete.is_empty() {
            return Ok(());
        }
        debug!(ds = key, create = create_on.len(), delete = delete.len(), "syncing nodes");
        self.expectations.expect(key, create_on.len() as i64, delete.len() as i64);
        let ns = ds.metadata.namespace.as_deref();
        let pods = info("", "pods");
        let creates = join_all(create_on.iter().map(|node| async move {
            let body = placement::new_pod(ds, node, hash);
            (node, self.ctx.registry.create(pods, ns, body, WriteOptions::default()).await)
        }));
        let deletes = join_all(delete.iter().map(|pod| async move {
            // A pod on a node that is gone has no agent to confirm a graceful deletion.
            let node_gone = placement::target_node(pod).is_none_or(|n| !fits.contains_key(&n));
            let opts = DeleteOptions { grace_period_seconds: node_gone.then_some(0), ..Default::default() };
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            (name, self.ctx.registry.delete(pods, pod.metadata.namespace.as_deref(), name, &opts).await)
        }));
        let (created, deleted) = futures::join!(creates, deletes);
        let mut first_error = None;
        for (node, result) in created {
            match result {
                Ok(c) => {
                    let name = c.object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    self.event(ds, EventType::Normal, "SuccessfulCreate", &format!("Created pod: {name}")).await;
                }
                Err(e) => {
                    self.expectations.created(key);
                    let msg = format!("failed to place pod on {node:?}: {e}");
                    self.event(ds, EventType::Warning, "FailedPlacement", &msg).await;
                    first_error.get_or_insert(e);
                }
            }
        }
        for (name, result) in deleted {
            match self.expectations.settle_delete(key, result) {
                Ok(true) => {
                    self.event(ds, EventType::Normal, "SuccessfulDelete", &format!("Deleted pod: {name}")).await
                }
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e).context(|| format!("syncing pods of DaemonSet {key}")),
        }
    }

    async fn event(&self, ds: &DaemonSet, kind: EventType, reason: &str, message: &str) {
        let involved = events::reference("apps/v1", "DaemonSet", &ds.metadata);
        events::record(&self.ctx.registry, COMPONENT, &involved, kind, reason, message).await;
    }

    async fn update_status(
        &self,
        key: &str,
        ds: &DaemonSet,
        fits: &BTreeMap<String, NodeFit>,
        pods: &NodePods,
        hash: &str,
    ) -> Result<(), ReconcileError> {
        let status = status::compute(ds, fits, pods, hash, self.ctx.config.clock.now());
        // Pods ready but not yet available become available by the clock alone: look again then.
        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        if min_ready > 0 && Some(status.number_ready) != status.number_available {
            self.queue.add_after(key, Duration::from_secs(min_ready as u64));
        }
        if ds.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let value = serde_json::to_value(&status).unwrap_or_default();
        let name = ds.metadata.name.as_deref().unwrap_or_default();
        write_status(&self.ctx.registry, info("apps", "daemonsets"), ds.metadata.namespace.as_deref(), name, value)
            .await
    }
}

impl super::Reconcile for DaemonSetController {
    const NAME: &'static str = "daemonset";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        DaemonSetController::reconcile(self, key).await
    }
}
