//! One reconcile pass of a CronJob (Kubernetes' `syncCronJob` + `cleanupFinishedJobs`):
//! reconcile the active list with the Jobs that exist, then start the Job that is due.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use skiff_api::cron::Schedule;
use skiff_api::labels::CRONJOB_SCHEDULED_TIMESTAMP;
use tracing::{debug, instrument};

use super::schedule::{self, Missed, Timing};
use super::{COMPONENT, CronJobController};
use crate::apiserver::error::ApiError;
use crate::controllers::events::{self, EventType};
use crate::controllers::job::status::{COMPLETE, FAILED, true_condition};
use crate::controllers::owner::{controller_ref, controller_reference};
use crate::controllers::{Context, ReconcileError, info, write_status};
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// How a Job ended, if it did.
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_deref()?;
    if true_condition(conditions, COMPLETE).is_some() {
        Some(COMPLETE)
    } else {
        true_condition(conditions, FAILED).map(|_| FAILED)
    }
}

fn job_ref(job: &Value) -> ObjectReference {
    let meta = &job["metadata"];
    let s = |k: &str| meta[k].as_str().map(str::to_string);
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: s("name"),
        namespace: s("namespace"),
        uid: s("uid"),
        resource_version: s("resourceVersion"),
        ..Default::default()
    }
}

impl CronJobController {
    /// Brings one CronJob's Jobs and status up to date and requeues it for its next time.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(cj) = self.cronjobs.get(key) else { return Ok(()) };
        let now = self.clock.now();
        let old = cj.status.clone().unwrap_or_default();
        let mut status = old.clone();
        let jobs = self.owned_jobs(&cj);
        self.track_jobs(&cj, &jobs, &mut status).await?;
        let result = self.schedule(key, &cj, &mut status, now).await;
        self.cleanup(&cj, &jobs).await?;
        if status != old {
            let value = serde_json::to_value(&status).unwrap_or_default();
            let name = cj.metadata.name.as_deref().unwrap_or_default();
            write_status(&self.registry, info("batch", "cronjobs"), cj.metadata.namespace.as_deref(), name, value)
                .await?;
        }
        result
    }

    fn owned_jobs(&self, cj: &CronJob) -> Vec<Arc<Job>> {
        let uid = cj.metadata.uid.as_deref().unwrap_or_default();
        let ns = cj.metadata.namespace.as_deref().unwrap_or_default();
        self.jobs
            .list_namespace(ns)
            .into_iter()
            .filter(|j| controller_ref(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect()
    }

    /// Drops finished and vanished Jobs from `status.active` and moves `lastSuccessfulTime`.
    async fn track_jobs(
        &self,
        cj: &CronJob,
        jobs: &[Arc<Job>],
        status: &mut CronJobStatus,
    ) -> Result<(), ReconcileError> {
        let mut active = status.active.clone().unwrap_or_default();
        for job in jobs {
            let uid = job.metadata.uid.as_deref();
            let name = job.metadata.name.as_deref().unwrap_or_default();
            let listed = active.iter().any(|r| r.uid.as_deref() == uid);
            match finished(job) {
                Some(how) if listed => {
                    active.retain(|r| r.uid.as_deref() != uid);
                    let message = format!("Saw completed job: {name}, condition: {how}");
                    self.event(cj, EventType::Normal, "SawCompletedJob", &message).await;
                }
                _ => {}
            }
            if finished(job) == Some(COMPLETE)
                && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone())
                && status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0)
            {
                status.last_successful_time = Some(done);
            }
        }
        let mut kept = Vec::new();
        for r in active {
            if jobs.iter().any(|j| j.metadata.uid == r.uid) {
                kept.push(r);
                continue;
            }
            // The cache may lag: ask the store before declaring the Job gone.
            let name = r.name.clone().unwrap_or_default();
            match self.registry.get(info("batch", "jobs"), r.namespace.as_deref(), &name).await {
                Err(ApiError::NotFound { .. }) => {
                    self.event(cj, EventType::Normal, "MissingJob", &format!("Active job went missing: {name}")).await;
                }
                Err(e) => return Err(e).context(|| format!("reading Job {name}")),
                Ok(_) => kept.push(r),
            }
        }
        status.active = (!kept.is_empty()).then_some(kept);
        Ok(())
    }

    /// Starts the Job that is due, if any, and requeues for the next scheduled time.
    async fn schedule(
        &self,
        key: &str,
        cj: &CronJob,
        status: &mut CronJobStatus,
        now: Timestamp,
    ) -> Result<(), ReconcileError> {
        let Some(spec) = cj.spec.as_ref() else { return Ok(()) };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let tz = match schedule::time_zone(spec.time_zone.as_deref()) {
            Ok(tz) => tz,
            Err(e) => {
                let message = format!("invalid timeZone: {:?}: {e}", spec.time_zone.as_deref().unwrap_or_default());
                self.event(cj, EventType::Warning, "UnknownTimeZone", &message).await;
                return Ok(());
            }
        };
        if spec.suspend == Some(true) {
            return Ok(());
        }
        let sched = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                self.event(cj, EventType::Warning, "UnparseableSchedule", &message).await;
                return Ok(());
            }
        };
        let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        let timing = Timing {
            schedule: &sched,
            tz: &tz,
            created,
            last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
            starting_deadline_seconds: spec.starting_deadline_seconds,
        };
        let due = timing.most_recent(now, true);
        if due.missed == Missed::Many {
            let message =
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
            self.event(cj, EventType::Warning, "TooManyMissedTimes", message).await;
        }
        let requeue = |timing: &Timing| {
            if let Some(d) = timing.requeue_after(now) {
                self.queue.add_after(key, d);
            }
        };
        let Some(scheduled) = due.most_recent.filter(|t| *t <= now) else {
            requeue(&timing);
            return Ok(());
        };
        if let Some(d) = spec.starting_deadline_seconds
            && schedule::plus(scheduled, d) < now
        {
            let message =
                format!("Missed scheduled time to start a job: {}", scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000"));
            self.event(cj, EventType::Warning, "MissSchedule", &message).await;
            requeue(&timing);
            return Ok(());
        }
        let name = schedule::job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled);
        let active = status.active.clone().unwrap_or_default();
        if active.iter().any(|r| r.name.as_deref() == Some(&name))
            || status.last_schedule_time.as_ref().is_some_and(|t| t.0 == scheduled)
        {
            requeue(&timing);
            return Ok(());
        }
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
                self.event(cj, EventType::Normal, "JobAlreadyActive", message).await;
                requeue(&timing);
                return Ok(());
            }
            Some("Replace") => {
                for r in &active {
                    self.delete_job(cj, r.namespace.as_deref(), r.name.as_deref().unwrap_or_default()).await?;
                }
                status.active = None;
            }
            _ => {}
        }
        let Some(job) = self.create_job(cj, &name, scheduled, &tz).await? else { return Ok(()) };
        let mut active = status.active.clone().unwrap_or_default();
        if !active.iter().any(|r| r.uid == job.uid) {
            active.push(job);
        }
        status.active = Some(active);
        status.last_schedule_time = Some(Time(scheduled));
        let timing = Timing { last_schedule: Some(scheduled), ..timing };
        requeue(&timing);
        Ok(())
    }

    /// Creates the Job for `scheduled`; an existing one of ours is taken as created (a
    /// retry after a crash), someone else's means the name is taken (`None`).
    async fn create_job(
        &self,
        cj: &CronJob,
        name: &str,
        scheduled: Timestamp,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Option<ObjectReference>, ReconcileError> {
        let template = cj.spec.as_ref().map(|s| &s.job_template);
        let tmeta = template.and_then(|t| t.metadata.as_ref());
        let mut annotations = json!(tmeta.and_then(|m| m.annotations.clone()).unwrap_or_default());
        annotations[CRONJOB_SCHEDULED_TIMESTAMP] = json!(schedule::scheduled_timestamp(scheduled, tz));
        let body = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": cj.metadata.namespace,
                "labels": tmeta.and_then(|m| m.labels.clone()),
                "annotations": annotations,
                "ownerReferences": [controller_reference("batch/v1", "CronJob", &cj.metadata)],
            },
            "spec": template.and_then(|t| t.spec.clone()),
        });
        let ns = cj.metadata.namespace.as_deref();
        match self.registry.create(info("batch", "jobs"), ns, body, WriteOptions::default()).await {
            Ok(w) => {
                self.event(cj, EventType::Normal, "SuccessfulCreate", &format!("Created job {name}")).await;
                Ok(Some(job_ref(&w.object)))
            }
            Err(ApiError::AlreadyExists { .. }) => {
                let existing = self
                    .registry
                    .get(info("batch", "jobs"), ns, name)
                    .await
                    .context(|| format!("reading Job {name}"))?;
                let ours = existing["metadata"]["ownerReferences"].as_array().is_some_and(|refs| {
                    refs.iter().any(|r| r["controller"] == true && r["uid"].as_str() == cj.metadata.uid.as_deref())
                });
                debug!(job = name, ours, "job already exists");
                Ok(ours.then(|| job_ref(&existing)))
            }
            Err(e) => {
                self.event(cj, EventType::Warning, "FailedCreate", &format!("Error creating job: {e}")).await;
                Err(e).context(|| format!("creating Job {name}"))
            }
        }
    }

    async fn delete_job(&self, cj: &CronJob, ns: Option<&str>, name: &str) -> Result<(), ReconcileError> {
        let opts = DeleteOptions { propagation_policy: Some("Background".into()), ..Default::default() };
        match self.registry.delete(info("batch", "jobs"), ns, name, &opts).await {
            Ok(_) => {
                self.event(cj, EventType::Normal, "SuccessfulDelete", &format!("Deleted job {name}")).await;
                Ok(())
            }
            Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("deleting Job {name}")),
        }
    }

    /// Deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` and
    /// `failedJobsHistoryLimit`.
    async fn cleanup(&self, cj: &CronJob, jobs: &[Arc<Job>]) -> Result<(), ReconcileError> {
        let Some(spec) = cj.spec.as_ref() else { return Ok(()) };
        for (how, limit) in [(COMPLETE, spec.successful_jobs_history_limit), (FAILED, spec.failed_jobs_history_limit)] {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(how)).collect();
            let excess = done.len().saturating_sub(limit.max(0) as usize);
            if excess == 0 {
                continue;
            }
            let started = |j: &Job| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .or(j.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0)
            };
            done.sort_by_key(|j| (started(j), j.metadata.name.clone()));
            for job in done.into_iter().take(excess) {
                self.delete_job(
                    cj,
                    job.metadata.namespace.as_deref(),
                    job.metadata.name.as_deref().unwrap_or_default(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn event(&self, cj: &CronJob, kind: EventType, reason: &str, message: &str) {
        let involved = events::reference("batch/v1", "CronJob", &cj.metadata);
        events::record(&self.registry, COMPONENT, &involved, kind, reason, message).await;
    }
}
