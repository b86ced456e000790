//! The CronJob controller (Kubernetes' `cronjob` v2 controller): creates a Job from
//! `jobTemplate` at each scheduled time of `schedule` in `timeZone`, honouring
//! `concurrencyPolicy` (Allow/Forbid/Replace), `startingDeadlineSeconds` and `suspend`;
//! after downtime it runs only the most recent missed time; it tracks `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, and deletes finished Jobs beyond the history
//! limits. Decisions read the controller clock; it wakes again with `add_after` just after
//! the next scheduled time.
//!
//! Not here: the Jobs' pods (the Job controller), parsing cron syntax ([`skiff_api::cron`]).

pub mod schedule;
mod sync;

use k8s_openapi::api::batch::v1::{CronJob, Job};

use super::informer::{Informer, key_of};
use super::owner::controller_key;
use super::workqueue::WorkQueue;
use super::{Clock, Ctx, ReconcileError};
use crate::registry::rest::Registry;

/// The name on the controller's events.
const COMPONENT: &str = "cronjob-controller";

/// The CronJob controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct CronJobController {
    registry: Registry,
    clock: Clock,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    queue: WorkQueue,
}

impl CronJobController {
    /// Creates the controller and subscribes it to the CronJob and Job caches.
    pub fn new(ctx: &Ctx) -> Self {
        let c = CronJobController {
            registry: ctx.registry.clone(),
            clock: ctx.config.clock.clone(),
            cronjobs: ctx.inf.cronjobs.clone(),
            jobs: ctx.inf.jobs.clone(),
            queue: WorkQueue::new(),
        };
        let me = c.clone();
        c.cronjobs.subscribe(move |change| me.queue.add(&key_of(&change.object().metadata)));
        let me = c.clone();
        c.jobs.subscribe(move |change| {
            // A Job of ours started, finished or went away: the active list may change.
            if let Some(owner) = controller_key(&change.object().metadata, "CronJob") {
                me.queue.add(&owner);
            }
        });
        c
    }

    /// The queue of CronJob keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }
}

impl super::Reconcile for CronJobController {
    const NAME: &'static str = "cronjob";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        CronJobController::reconcile(self, key).await
    }
}

#[cfg(test)]
mod tests;
