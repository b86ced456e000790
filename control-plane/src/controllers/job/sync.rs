//! One reconcile pass of a Job (Kubernetes' `syncJob`): count its pods, decide whether it
//! finished, failed, is suspended or needs pods created or deleted, act, and write status.

use std::sync::Arc;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_api::selector::LabelSelector;
use tracing::{debug, instrument};

use super::indexed::{self, Indexes};
use super::pods::{self, PodState};
use super::status::{self as st, COMPLETE, FAILED, FAILURE_TARGET, SUCCESS_CRITERIA_MET, SUSPENDED};
use super::{COMPONENT, JobController};
use crate::apiserver::error::ApiError;
use crate::controllers::events::{self, EventType};
use crate::controllers::owner::{controller_ref, labels_of};
use crate::controllers::replicaset::pods::{is_ready, pods_to_delete};
use crate::controllers::{Context, ReconcileError, info, write_status};
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// The owned pods of a Job, sorted by state.
#[derive(Default)]
struct Owned {
    active: Vec<Arc<Pod>>,
    succeeded: Vec<Arc<Pod>>,
    failed: Vec<Arc<Pod>>,
    terminating: usize,
}

impl JobController {
    /// Brings one Job's pods and status to the desired state.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(job) = self.jobs.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let now = self.clock.now();
        if let Some(finished) = st::finished_at(&job) {
            return self.expire(key, &job, finished, now).await;
        }
        let Some(spec) = job.spec.as_ref() else { return Ok(()) };
        let selector = match spec.selector.as_ref() {
            Some(s) => LabelSelector::from_label_selector(s)
                .map_err(|source| ReconcileError::Selector { key: key.into(), source })?,
            None => return Ok(()),
        };
        let owned = self.owned_pods(&job, &selector);
        let old = job.status.clone().unwrap_or_default();
        let mut status = old.clone();
        let mut conditions = old.conditions.clone().unwrap_or_default();
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let suspended = spec.suspend == Some(true);

        // Counts never go down: a finished pod someone deleted still counted.
        let mut done = Indexes::new();
        if indexed {
            let c = completions.unwrap_or(0);
            done = indexed::parse(old.completed_indexes.as_deref().unwrap_or_default(), c);
            done.extend(owned.succeeded.iter().filter_map(|p| indexed::of_pod(p, c)));
        }
        let succeeded =
            if indexed { done.len() as i32 } else { old.succeeded.unwrap_or(0).max(owned.succeeded.len() as i32) };
        let failed = old.failed.unwrap_or(0).max(owned.failed.len() as i32);

        if !suspended && status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
        if !suspended && st::true_condition(&conditions, SUSPENDED).is_some() {
            // Resuming restarts the clock of activeDeadlineSeconds.
            st::set_condition(&mut conditions, SUSPENDED, false, "JobResumed", "Job resumed", now);
            status.start_time = Some(Time(now));
            self.event(&job, EventType::Normal, "Resumed", "Job resumed").await;
        }

        let failure = self.failure(&job, &conditions, &owned, failed, status.start_time.as_ref(), suspended, now);
        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && owned.active.is_empty(),
        };
        let mut active = owned.active.clone();
        if let Some((reason, message)) = failure {
            if st::set_condition(&mut conditions, FAILURE_TARGET, true, reason, message, now) {
                self.event(&job, EventType::Warning, reason, message).await;
            }
            self.delete_pods(key, &job, &active).await?;
            active.clear();
            if owned.terminating == 0 && owned.active.is_empty() {
                st::set_condition(&mut conditions, FAILED, true, reason, message, now);
            }
        } else if complete {
            st::set_condition(
                &mut conditions,
                SUCCESS_CRITERIA_MET,
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            );
            self.delete_pods(key, &job, &active).await?;
            active.clear();
            if owned.terminating == 0 && owned.active.is_empty() {
                st::set_condition(
                    &mut conditions,
                    COMPLETE,
                    true,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
                status.completion_time = Some(Time(now));
                self.event(&job, EventType::Normal, "Completed", "Job completed").await;
            }
        } else if suspended {
            if st::set_condition(&mut conditions, SUSPENDED, true, "JobSuspended", "Job suspended", now) {
                self.event(&job, EventType::Normal, "Suspended", "Job suspended").await;
            }
            self.delete_pods(key, &job, &active).await?;
            active.clear();
        } else if self.expectations.satisfied(key) {
            active = self.manage(key, &job, &owned, &done, succeeded, failed, parallelism, now).await?;
            if let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, status.start_time.as_ref()) {
                self.queue.add_after(key, st::until(now, st::plus_secs(start.0, deadline)));
            }
        }

        status.active = Some(active.len() as i32);
        status.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
        status.succeeded = Some(succeeded);
        status.failed = Some(failed);
        status.completed_indexes = indexed.then(|| indexed::format(&done));
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        if status == old {
            return Ok(());
        }
        let value = serde_json::to_value(&status).unwrap_or_default();
        let name = job.metadata.name.as_deref().unwrap_or_default();
        write_status(&self.registry, info("batch", "jobs"), job.metadata.namespace.as_deref(), name, value).await
    }

    /// The pods this Job controls, by state.
    fn owned_pods(&self, job: &Job, selector: &LabelSelector) -> Owned {
        let uid = job.metadata.uid.as_deref().unwrap_or_default();
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        let mut owned = Owned::default();
        for pod in self.pods.list_namespace(ns) {
            let labels = labels_of(&pod.metadata);
            if controller_ref(&pod.metadata).is_none_or(|r| r.uid != uid) || !selector.matches(labels) {
                continue;
            }
            match pods::state(&pod) {
                PodState::Active => owned.active.push(pod),
                PodState::Succeeded => owned.succeeded.push(pod),
                PodState::Failed => owned.failed.push(pod),
                PodState::Terminating => owned.terminating += 1,
            }
        }
        owned
    }

    /// Why the Job fails, if it does: an earlier verdict sticks; then the back-off limit
    /// (failed pods, or container restarts under `OnFailure`), then the active deadline.
    #[allow(clippy::too_many_arguments)]
    fn failure(
        &self,
        job: &Job,
        conditions: &[JobCondition],
        owned: &Owned,
        failed: i32,
        start: Option<&Time>,
        suspended: bool,
        now: Timestamp,
    ) -> Option<(&'static str, &'static str)> {
        const BACKOFF: (&str, &str) = ("BackoffLimitExceeded", "Job has reached the specified backoff limit");
        const DEADLINE: (&str, &str) = ("DeadlineExceeded", "Job was active longer than specified deadline");
        if let Some(c) = st::true_condition(conditions, FAILURE_TARGET) {
            return Some(if c.reason.as_deref() == Some(DEADLINE.0) { DEADLINE } else { BACKOFF });
        }
        let spec = job.spec.as_ref()?;
        let limit = spec.backoff_limit.unwrap_or(6);
        if failed > limit {
            return Some(BACKOFF);
        }
        if spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure") {
            let restarts: i32 = owned.active.iter().map(|p| pods::restarts(p)).sum();
            if (limit == 0 && restarts > 0) || (limit > 0 && restarts >= limit) {
                return Some(BACKOFF);
            }
        }
        let deadline = spec.active_deadline_seconds?;
        (!suspended && start.is_some_and(|s| st::plus_secs(s.0, deadline) <= now)).then_some(DEADLINE)
    }

    /// Creates and deletes pods so the right number run (the right indexes, in Indexed
    /// mode); returns the pods now active.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        owned: &Owned,
        done: &Indexes,
        succeeded: i32,
        failed: i32,
        parallelism: i32,
        now: Timestamp,
    ) -> Result<Vec<Arc<Pod>>, ReconcileError> {
        let Some(spec) = job.spec.as_ref() else { return Ok(owned.active.clone()) };
        let mut keep: Vec<Arc<Pod>> = Vec::new();
        let mut excess: Vec<Arc<Pod>> = Vec::new();
        let mut to_create: Vec<Option<i32>> = Vec::new();
        if spec.completion_mode.as_deref() == Some("Indexed") {
            let completions = spec.completions.unwrap_or(0);
            let want = (completions - done.len() as i32).clamp(0, parallelism) as usize;
            let mut taken = Indexes::new();
            let mut by_index = owned.active.clone();
            by_index.sort_by_key(|p| indexed::of_pod(p, completions));
            for pod in by_index {
                // A pod for a finished, invalid or already-covered index is not needed.
                match indexed::of_pod(&pod, completions) {
                    Some(i) if !done.contains(&i) && taken.len() < want && taken.insert(i) => keep.push(pod),
                    _ => excess.push(pod),
                }
            }
            let pending = indexed::first_pending(completions, done, &taken, want.saturating_sub(keep.len()));
            to_create.extend(pending.into_iter().map(Some));
        } else {
            let active = owned.active.len() as i32;
            let want = st::want_active(spec.completions, parallelism, succeeded, active);
            if active > want {
                let victims = pods_to_delete(&owned.active, (active - want) as usize);
                for pod in &owned.active {
                    if victims.iter().any(|v| Arc::ptr_eq(v, pod)) {
                        excess.push(pod.clone())
                    } else {
                        keep.push(pod.clone())
                    }
                }
            } else {
                keep = owned.active.clone();
                to_create.extend(std::iter::repeat_n(None, (want - active) as usize));
            }
        }
        self.delete_pods(key, job, &excess).await?;
        if !to_create.is_empty() && failed > 0 {
            // A failed pod's replacement waits, longer with every failure.
            let last = owned.failed.iter().filter_map(|p| pods::finished_at(p)).max();
            if let Some(last) = last {
                let ready_at = st::plus_secs(last, st::failure_backoff(failed).as_secs() as i64);
                if ready_at > now {
                    debug!(job = key, "waiting out the failure back-off");
                    self.queue.add_after(key, st::until(now, ready_at));
                    return Ok(keep);
                }
            }
        }
        keep.extend(self.create_pods(key, job, &to_create).await?);
        Ok(keep)
    }

    async fn create_pods(&self, key: &str, job: &Job, which: &[Option<i32>]) -> Result<Vec<Arc<Pod>>, ReconcileError> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        debug!(job = key, n = which.len(), "creating pods");
        self.expectations.expect(key, which.len() as i64, 0);
        let ns = job.metadata.namespace.as_deref();
        let results = join_all(which.iter().map(|index| {
            self.registry.create(info("", "pods"), ns, pods::pod_from_template(job, *index), WriteOptions::default())
        }))
        .await;
        let mut created = Vec::new();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(w) => {
                    let name = w.object["metadata"]["name"].as_str().unwrap_or_default().to_string();
                    self.event(job, EventType::Normal, "SuccessfulCreate", &format!("Created pod: {name}")).await;
                    if let Ok(pod) = serde_json::from_value::<Pod>(w.object) {
                        created.push(Arc::new(pod));
                    }
                }
                Err(e) => {
                    self.expectations.created(key);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(created),
            Some(e) => Err(e).context(|| format!("creating pods for Job {key}")),
        }
    }

    async fn delete_pods(&self, key: &str, job: &Job, victims: &[Arc<Pod>]) -> Result<(), ReconcileError> {
        if victims.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, 0, victims.len() as i64);
        let opts = DeleteOptions::default();
        let results = join_all(victims.iter().map(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            self.registry.delete(info("", "pods"), p.metadata.namespace.as_deref(), name, &opts)
        }))
        .await;
        let mut first_error = None;
        for (r, pod) in results.into_iter().zip(victims) {
            match self.expectations.settle_delete(key, r) {
                Ok(true) => {
                    let name = pod.metadata.name.as_deref().unwrap_or_default();
                    self.event(job, EventType::Normal, "SuccessfulDelete", &format!("Deleted pod: {name}")).await;
                }
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e).context(|| format!("deleting pods of Job {key}")),
        }
    }

    /// A finished Job with `ttlSecondsAfterFinished` is deleted (pods in the background)
    /// that long after it finished; until then it is looked at again when the time comes.
    async fn expire(&self, key: &str, job: &Job, finished: Timestamp, now: Timestamp) -> Result<(), ReconcileError> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else { return Ok(()) };
        let expires = st::plus_secs(finished, ttl.into());
        if expires > now {
            self.queue.add_after(key, st::until(now, expires));
            return Ok(());
        }
        debug!(job = key, "deleting a finished Job after its TTL");
        let opts = DeleteOptions {
            propagation_policy: Some("Background".into()),
            precondition_uid: job.metadata.uid.clone(),
            ..Default::default()
        };
        let name = job.metadata.name.as_deref().unwrap_or_default();
        match self.registry.delete(info("batch", "jobs"), job.metadata.namespace.as_deref(), name, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("deleting expired Job {key}")),
        }
    }

    async fn event(&self, job: &Job, kind: EventType, reason: &str, message: &str) {
        let involved = events::reference("batch/v1", "Job", &job.metadata);
        events::record(&self.registry, COMPONENT, &involved, kind, reason, message).await;
    }
}
