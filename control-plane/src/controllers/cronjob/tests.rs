//! The CronJob controller against the real registry on an in-memory store with a fake clock
//! (set to the CronJob's creation time, then moved by hand); Jobs "finish" by status writes.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};
use skiff_api::cron::Schedule;

use super::CronJobController;
use crate::controllers::info;
use crate::controllers::testing::TestCluster;
use crate::storage::ListOptions;

const NS: Option<&str> = Some("default");

struct Fixture {
    tc: TestCluster,
    c: CronJobController,
    /// The first scheduled time after creation.
    first: Timestamp,
}

async fn start(schedule: &str, extra: Value) -> Fixture {
    let tc = TestCluster::start().await;
    let c = CronJobController::new(&tc.ctx);
    let mut spec = json!({"schedule": schedule, "jobTemplate": {"metadata": {"labels": {"from": "cron"}}, "spec": {"template": {
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.test/c:1"}]}}}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let cj = tc.create("batch", "cronjobs", NS, json!({"metadata": {"name": "tick"}, "spec": spec})).await;
    let created: Timestamp = cj["metadata"]["creationTimestamp"].as_str().expect("created").parse().expect("time");
    // Decisions follow the fake clock; start it at the (real) creation time.
    tc.clock.set(created);
    tc.settle().await;
    let first =
        Schedule::parse(schedule).expect("schedule").next_after(created, &jiff::tz::TimeZone::UTC).expect("next");
    Fixture { tc, c, first }
}

impl Fixture {
    async fn sync(&self) {
        self.c.reconcile("default/tick").await.expect("reconcile");
        self.tc.settle().await;
    }

    fn at(&self, t: Timestamp) {
        self.tc.clock.set(t);
    }

    fn jobs(&self) -> Vec<Arc<Job>> {
        let mut jobs = self.tc.inf().jobs.list_namespace("default");
        jobs.sort_by_key(|j| j.metadata.name.clone());
        jobs
    }

    fn names(&self) -> Vec<String> {
        self.jobs().iter().map(|j| j.metadata.name.clone().unwrap_or_default()).collect()
    }

    fn active(&self) -> Vec<String> {
        let cj = self.tc.inf().cronjobs.get("default/tick").expect("cronjob");
        let active = cj.status.as_ref().and_then(|s| s.active.clone()).unwrap_or_default();
        active.into_iter().filter_map(|r| r.name).collect()
    }

    async fn finish(&self, name: &str, how: &str) {
        let now = self.tc.clock.now().to_string();
        self.tc
            .update("batch", "jobs", NS, name, Some("status"), |j| {
                j["status"] = json!({"conditions": [{"type": how, "status": "True"}], "startTime": now});
                if how == "Complete" {
                    j["status"]["completionTime"] = json!(now);
                }
            })
            .await;
        self.tc.settle().await;
    }

    async fn event_reasons(&self) -> Vec<String> {
        let prefix = format!("{}default/", info("", "events").key_prefix());
        let page = self.tc.registry().store().list(&prefix, ListOptions::default()).await.expect("events");
        page.items
            .iter()
            .filter_map(|kv| crate::registry::object::decode(kv).ok())
            .filter(|e| e["involvedObject"]["kind"] == "CronJob")
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }
}

fn minutes(t: Timestamp) -> i64 {
    t.as_second() / 60
}

fn plus(t: Timestamp, secs: i64) -> Timestamp {
    t + jiff::SignedDuration::from_secs(secs)
}

#[tokio::test]
async fn creates_one_job_per_scheduled_time_and_tracks_it() {
    let f = start("*/5 * * * *", json!({})).await;
    f.sync().await;
    assert!(f.jobs().is_empty(), "nothing due before the first time");
    f.at(plus(f.first, 10));
    f.sync().await;
    let jobs = f.jobs();
    assert_eq!(f.names(), vec![format!("tick-{}", minutes(f.first))]);
    let job = &jobs[0];
    let annotations = job.metadata.annotations.as_ref().expect("annotations");
    let stamp = f.first.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"], stamp);
    assert_eq!(job.metadata.labels.as_ref().expect("labels")["from"], "cron");
    let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("CronJob", Some(true)));
    assert_eq!(f.active(), f.names());
    let cj = f.tc.inf().cronjobs.get("default/tick").expect("cronjob");
    assert_eq!(cj.status.as_ref().and_then(|s| s.last_schedule_time.clone()).map(|t| t.0), Some(f.first));
    f.sync().await;
    assert_eq!(f.jobs().len(), 1, "the same time runs once");

    // Allow: the next time starts a second Job beside the running one.
    f.at(plus(f.first, 300));
    f.sync().await;
    assert_eq!(f.active().len(), 2);
    f.finish(&f.names()[0], "Complete").await;
    f.sync().await;
    assert_eq!(f.active(), vec![f.names()[1].clone()], "finished Jobs leave the active list");
    let cj = f.tc.inf().cronjobs.get("default/tick").expect("cronjob");
    assert_eq!(cj.status.as_ref().and_then(|s| s.last_successful_time.clone()).map(|t| t.0), Some(plus(f.first, 300)));
    assert!(f.event_reasons().await.contains(&"SawCompletedJob".to_string()));
}

#[tokio::test]
async fn forbid_skips_while_a_job_runs_and_replace_swaps_it() {
    let f = start("*/5 * * * *", json!({"concurrencyPolicy": "Forbid"})).await;
    f.at(plus(f.first, 1));
    f.sync().await;
    f.at(plus(f.first, 301));
    f.sync().await;
    assert_eq!(f.jobs().len(), 1, "Forbid: no second Job while the first runs");
    assert!(f.event_reasons().await.contains(&"JobAlreadyActive".to_string()));
    f.finish(&f.names()[0], "Failed").await;
    f.sync().await;
    assert_eq!(f.active(), vec![format!("tick-{}", minutes(f.first) + 5)], "the due time runs once the first ended");

    let f = start("*/5 * * * *", json!({"concurrencyPolicy": "Replace"})).await;
    f.at(plus(f.first, 1));
    f.sync().await;
    let first = f.names();
    f.at(plus(f.first, 301));
    f.sync().await;
    let second = format!("tick-{}", minutes(f.first) + 5);
    assert_eq!(f.names(), vec![second.clone()], "Replace: the running Job is deleted");
    assert_ne!(first, f.names());
    assert_eq!(f.active(), vec![second]);
}

#[tokio::test]
async fn after_a_restart_only_the_most_recent_missed_time_runs() {
    let f = start("*/5 * * * *", json!({})).await;
    f.at(plus(f.first, 1));
    f.sync().await;
    f.finish(&f.names()[0], "Complete").await;
    // The control plane was down for three hours; a fresh controller takes over.
    let c = CronJobController::new(&f.tc.ctx);
    let later = plus(f.first, 3 * 3600 + 120);
    f.tc.clock.set(later);
    c.reconcile("default/tick").await.expect("reconcile");
    f.tc.settle().await;
    let expected = format!("tick-{}", minutes(plus(f.first, 3 * 3600)));
    assert_eq!(f.active(), vec![expected], "one Job, for the latest missed time");
    assert_eq!(f.jobs().len(), 2);
    assert!(!f.event_reasons().await.contains(&"TooManyMissedTimes".to_string()));

    // Ten days later: thousands missed — a warning, and still just the latest.
    f.finish(&f.active()[0], "Complete").await;
    f.tc.clock.set(plus(later, 10 * 86400));
    c.reconcile("default/tick").await.expect("reconcile");
    f.tc.settle().await;
    let latest = plus(later, 10 * 86400);
    let latest = Timestamp::from_second(latest.as_second() / 300 * 300).expect("time");
    assert_eq!(f.active(), vec![format!("tick-{}", minutes(latest))]);
    assert_eq!(f.jobs().len(), 3, "two finished (history limit 3) and the new one");
    assert!(f.event_reasons().await.contains(&"TooManyMissedTimes".to_string()));
}

#[tokio::test]
async fn a_starting_deadline_skips_times_missed_by_too_much() {
    let f = start("*/5 * * * *", json!({"startingDeadlineSeconds": 60})).await;
    f.at(plus(f.first, 120));
    f.sync().await;
    assert!(f.jobs().is_empty(), "two minutes late with a one-minute deadline");
    f.at(plus(f.first, 330));
    f.sync().await;
    assert_eq!(f.names(), vec![format!("tick-{}", minutes(f.first) + 5)], "the next time within the deadline runs");
}

#[tokio::test]
async fn suspended_cronjobs_start_nothing() {
    let f = start("*/5 * * * *", json!({"suspend": true})).await;
    f.at(plus(f.first, 10));
    f.sync().await;
    assert!(f.jobs().is_empty());
}

#[tokio::test]
async fn history_limits_delete_the_oldest_finished_jobs() {
    let f = start("*/5 * * * *", json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1})).await;
    for (i, how) in ["Complete", "Complete", "Failed", "Failed"].iter().enumerate() {
        f.at(plus(f.first, 300 * i as i64 + 1));
        f.sync().await;
        let name = format!("tick-{}", minutes(f.first) + 5 * i as i64);
        f.finish(&name, how).await;
    }
    f.sync().await;
    let m = minutes(f.first);
    assert_eq!(f.names(), vec![format!("tick-{}", m + 5), format!("tick-{}", m + 15)], "the newest of each kind");
}
