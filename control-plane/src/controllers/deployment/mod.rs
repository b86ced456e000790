//! The Deployment controller, after kube-controller-manager's (`pkg/controller/deployment`):
//! one ReplicaSet per pod template (`<deployment>-<pod-template-hash>`), rolled out by the
//! Deployment's strategy — [`rolling`] within `maxSurge` / `maxUnavailable`, or [`recreate`]
//! — with revisions and history in annotations ([`history`]), proportional resizing
//! mid-rollout and while paused ([`scale`]), progress deadlines ([`progress`]) and the status
//! `kubectl rollout status` reads ([`status`]).
//!
//! A pass (`syncDeployment`): claim the ReplicaSets ([`claim`]); record pause/resume; when
//! paused or only resized, just resize; otherwise move the rollout one step. Rollback is
//! client-side (`kubectl rollout undo` writes an old template back), so it is just a
//! rollout to a template whose ReplicaSet already exists — it gets the next revision.
//!
//! Not here: the `ReplicaFailure` condition, the deprecated server-side `rollbackTo`.

mod claim;
pub mod hash;
pub mod history;
pub mod progress;
mod recreate;
pub mod rolling;
pub mod scale;
pub mod status;
pub mod strategy;
mod sync;
#[cfg(test)]
mod tests;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use skiff_api::labels::DEPLOYMENT_REVISION;
use skiff_api::selector::LabelSelector;
use tracing::instrument;

use super::informer::{Change, Informer, key_of};
use super::owner::{controller_key, labels_of};
use super::workqueue::WorkQueue;
use super::{Clock, Context, Ctx, ReconcileError, info, write_status};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{Registry, WriteOptions};
use sync::Rollout;
pub use sync::new_replica_set;

/// The Deployment controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct DeploymentController {
    registry: Registry,
    deployments: Informer<Deployment>,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    clock: Clock,
    queue: WorkQueue,
}

impl DeploymentController {
    /// Creates the controller and subscribes it to the caches.
    pub fn new(ctx: &Ctx) -> Self {
        let c = DeploymentController {
            registry: ctx.registry.clone(),
            deployments: ctx.inf.deployments.clone(),
            replicasets: ctx.inf.replicasets.clone(),
            pods: ctx.inf.pods.clone(),
            clock: ctx.config.clock.clone(),
            queue: WorkQueue::new(),
        };
        let me = c.clone();
        c.deployments.subscribe(move |change| me.queue.add(&key_of(&change.object().metadata)));
        let me = c.clone();
        c.replicasets.subscribe(move |change| me.on_replica_set(change));
        let me = c.clone();
        c.pods.subscribe(move |change| {
            if let Change::Deleted(p) = change {
                me.on_pod_deleted(p);
            }
        });
        c
    }

    /// The queue of Deployment keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// A ReplicaSet changed: its controller (old and new) looks again; for an orphan, every
    /// Deployment whose selector matches it (one may adopt it).
    fn on_replica_set(&self, change: &Change<ReplicaSet>) {
        if let Change::Updated { old, .. } = change
            && let Some(owner) = controller_key(&old.metadata, "Deployment")
        {
            self.queue.add(&owner);
        }
        let rs = change.object();
        if let Some(owner) = controller_key(&rs.metadata, "Deployment") {
            self.queue.add(&owner);
            return;
        }
        if rs.metadata.owner_references.iter().flatten().any(|r| r.controller == Some(true)) {
            return;
        }
        let labels = labels_of(&rs.metadata);
        for d in self.deployments.list_namespace(rs.metadata.namespace.as_deref().unwrap_or_default()) {
            let selector = d.spec.as_ref().and_then(|s| LabelSelector::from_label_selector(&s.selector).ok());
            if selector.is_some_and(|s| !s.is_empty() && s.matches(labels)) {
                self.queue.add(&key_of(&d.metadata));
            }
        }
    }

    /// A Recreate rollout waits for the old pods to be gone: each deletion may unblock it.
    fn on_pod_deleted(&self, pod: &Pod) {
        let Some(rs_key) = controller_key(&pod.metadata, "ReplicaSet") else { return };
        let Some(rs) = self.replicasets.get(&rs_key) else { return };
        if let Some(d) = controller_key(&rs.metadata, "Deployment") {
            self.queue.add(&d);
        }
    }

    /// Brings one Deployment's ReplicaSets and status one step closer to the desired state.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(cached) = self.deployments.get(key) else { return Ok(()) };
        if cached.spec.is_none() {
            return Ok(());
        }
        let rss = self.claim(&cached).await?;
        let mut r = Rollout::new(self, (*cached).clone(), rss, self.clock.now());
        if r.d.metadata.deletion_timestamp.is_some() {
            r.sync_revision(false).await?;
            r.finish_status();
        } else {
            progress::check_paused(&mut r.d, r.now);
            let paused = r.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
            if paused || r.is_scaling_event().await? {
                let new = r.sync_revision(false).await?;
                r.scale_replica_sets(new).await?;
                if paused {
                    r.cleanup().await?;
                }
                r.finish_status();
            } else if strategy::is_rolling(&r.d) {
                r.rolling().await?;
            } else {
                r.recreate().await?;
            }
        }
        self.write_back(&cached, r).await
    }

    /// Writes what the pass changed on the Deployment: the revision annotation (main
    /// resource), then the status; schedules the deadline recheck.
    async fn write_back(&self, cached: &Deployment, r: Rollout<'_>) -> Result<(), ReconcileError> {
        let ns = cached.metadata.namespace.as_deref();
        let name = cached.metadata.name.as_deref().unwrap_or_default();
        let revision =
            |d: &Deployment| d.metadata.annotations.as_ref().and_then(|a| a.get(DEPLOYMENT_REVISION)).cloned();
        if let Some(rev) = revision(&r.d)
            && revision(cached).as_ref() != Some(&rev)
        {
            let result = self
                .registry
                .update_with(info("apps", "deployments"), ns, name, None, WriteOptions::default(), None, |old| {
                    let mut new = old.clone();
                    if !new["metadata"]["annotations"].is_object() {
                        new["metadata"]["annotations"] = json!({});
                    }
                    new["metadata"]["annotations"][DEPLOYMENT_REVISION] = json!(rev);
                    Ok(new)
                })
                .await;
            match result {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e).context(|| format!("recording the revision of Deployment {name}")),
            }
        }
        if let Some(after) = r.recheck {
            self.queue.add_after(&key_of(&cached.metadata), after);
        }
        match r.status {
            Some(s) if cached.status.as_ref() != Some(&s) => {
                let value = serde_json::to_value(&s).unwrap_or_default();
                write_status(&self.registry, info("apps", "deployments"), ns, name, value).await
            }
            _ => Ok(()),
        }
    }
}

impl Rollout<'_> {
    /// Whether `replicas` changed since the ReplicaSets were last sized: an active one carries
    /// another `desired-replicas` (`isScalingEvent`).
    async fn is_scaling_event(&mut self) -> Result<bool, ReconcileError> {
        let new = self.sync_revision(false).await?;
        let desired = strategy::desired(&self.d);
        let all: Vec<usize> = new.into_iter().chain(self.olds(new)).collect();
        Ok(all
            .into_iter()
            .filter(|&i| self.spec_of(i) > 0)
            .any(|i| history::desired_replicas(&self.rss[i]).is_some_and(|n| n != desired)))
    }
}

impl super::Reconcile for DeploymentController {
    const NAME: &'static str = "deployment";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        DeploymentController::reconcile(self, key).await
    }
}
