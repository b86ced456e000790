//! The Job controller (kube-controller-manager's `job` and `ttl-after-finished` controllers
//! in one): runs pods from a Job's template until `completions` of them succeeded —
//! `parallelism` at a time, one per completion index in Indexed mode — and fails the Job
//! when `backoffLimit` or `activeDeadlineSeconds` is exceeded; suspends and resumes it;
//! reports status and conditions; deletes finished Jobs after `ttlSecondsAfterFinished`.
//! Every decision reads the controller clock; waits are requeues with `add_after`.
//!
//! Not here: pod tracking finalizers and `uncountedTerminatedPods` (counts come from the
//! pods that exist and never decrease — Skiff has no pod garbage collector that would remove
//! finished pods behind the Job's back), `podFailurePolicy`, `backoffLimitPerIndex`,
//! `successPolicy`, adopting orphan pods.

pub mod indexed;
pub mod pods;
pub mod status;
mod sync;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::expectations::Expectations;
use super::informer::{Change, Informer, key_of};
use super::owner::controller_key;
use super::workqueue::WorkQueue;
use super::{Clock, Ctx, ReconcileError};
use crate::registry::rest::Registry;

/// The name on the controller's events.
const COMPONENT: &str = "job-controller";

/// The Job controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct JobController {
    registry: Registry,
    clock: Clock,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    queue: WorkQueue,
    expectations: Expectations,
}

impl JobController {
    /// Creates the controller and subscribes it to the Job and pod caches.
    pub fn new(ctx: &Ctx) -> Self {
        let c = JobController {
            registry: ctx.registry.clone(),
            clock: ctx.config.clock.clone(),
            jobs: ctx.inf.jobs.clone(),
            pods: ctx.inf.pods.clone(),
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
        };
        let me = c.clone();
        c.jobs.subscribe(move |change| {
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

    /// The queue of Job keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Pods wake their Job; creations and deletions the controller asked for are observed.
    fn on_pod(&self, change: &Change<Pod>) {
        let Some(owner) = controller_key(&change.object().metadata, "Job") else { return };
        match change {
            Change::Added(_) => self.expectations.created(&owner),
            Change::Updated { old, new } => {
                if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some() {
                    self.expectations.deleted(&owner);
                }
            }
            Change::Deleted(p) => {
                if p.metadata.deletion_timestamp.is_none() {
                    self.expectations.deleted(&owner);
                }
            }
        }
        self.queue.add(&owner);
    }
}

impl super::Reconcile for JobController {
    const NAME: &'static str = "job";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        JobController::reconcile(self, key).await
    }
}

#[cfg(test)]
mod tests;
