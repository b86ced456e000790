//! The Job controller against the real registry on an in-memory store with a fake clock:
//! pods are "run" by writing their status phases.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::JobController;
use crate::controllers::testing::TestCluster;

const NS: Option<&str> = Some("default");

fn job(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"restartPolicy": spec.get("restartPolicy").cloned().unwrap_or(json!("Never")),
                 "containers": [{"name": "work", "image": "registry.test/work:1"}]},
    });
    if let Some(m) = spec.as_object_mut() {
        m.remove("restartPolicy");
    }
    json!({"metadata": {"name": name}, "spec": spec})
}

async fn start(name: &str, spec: Value) -> (TestCluster, JobController, String) {
    let tc = TestCluster::start().await;
    let c = JobController::new(&tc.ctx);
    tc.create("batch", "jobs", NS, job(name, spec)).await;
    tc.settle().await;
    (tc, c, format!("default/{name}"))
}

async fn sync(tc: &TestCluster, c: &JobController, key: &str) {
    c.reconcile(key).await.expect("reconcile");
    tc.settle().await;
}

fn pods(tc: &TestCluster) -> Vec<Arc<Pod>> {
    let mut pods = tc.inf().pods.list_namespace("default");
    pods.sort_by_key(|p| p.metadata.name.clone());
    pods
}

fn running(tc: &TestCluster) -> Vec<Arc<Pod>> {
    pods(tc).into_iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")).collect()
}

/// Finishes a pod as the node would: phase and a terminated container at the clock's time.
async fn finish(tc: &TestCluster, pod: &Pod, phase: &str) {
    let now = tc.clock.now().to_string();
    let code = if phase == "Succeeded" { 0 } else { 1 };
    let name = pod.metadata.name.as_deref().expect("pod name");
    tc.update("", "pods", NS, name, Some("status"), |p| {
        p["status"]["phase"] = json!(phase);
        p["status"]["containerStatuses"] = json!([{"name": "work", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code, "finishedAt": now}}}]);
    })
    .await;
    tc.settle().await;
}

fn status(tc: &TestCluster, name: &str) -> k8s_openapi::api::batch::v1::JobStatus {
    let job: Arc<Job> = tc.inf().jobs.get(&format!("default/{name}")).expect("job in cache");
    job.status.clone().unwrap_or_default()
}

fn condition(tc: &TestCluster, name: &str, kind: &str) -> Option<(String, String)> {
    let s = status(tc, name);
    s.conditions?.into_iter().find(|c| c.type_ == kind).map(|c| (c.status, c.reason.unwrap_or_default()))
}

#[tokio::test]
async fn runs_parallelism_pods_until_completions_succeed() {
    let (tc, c, key) = start("pi", json!({"completions": 3, "parallelism": 2})).await;
    sync(&tc, &c, &key).await;
    let first = pods(&tc);
    assert_eq!(first.len(), 2, "parallelism pods");
    let owner = &first[0].metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.controller, owner.block_owner_deletion), ("Job", Some(true), Some(true)));
    assert_eq!(first[0].metadata.labels.as_ref().expect("labels")["batch.kubernetes.io/job-name"], "pi");
    let s = status(&tc, "pi");
    assert_eq!((s.active, s.succeeded), (Some(2), Some(0)));
    assert_eq!(s.start_time.map(|t| t.0), Some(tc.clock.now()));

    sync(&tc, &c, &key).await;
    assert_eq!(pods(&tc).len(), 2, "no more pods while they run");
    for p in &first {
        finish(&tc, p, "Succeeded").await;
    }
    sync(&tc, &c, &key).await;
    assert_eq!(running(&tc).len(), 1, "only one completion left");
    assert_eq!(status(&tc, "pi").succeeded, Some(2));
    finish(&tc, &running(&tc)[0], "Succeeded").await;
    tc.clock.advance(Duration::from_secs(5));
    sync(&tc, &c, &key).await;
    let s = status(&tc, "pi");
    assert_eq!((s.active, s.succeeded, s.failed), (Some(0), Some(3), Some(0)));
    assert_eq!(condition(&tc, "pi", "Complete"), Some(("True".into(), "CompletionsReached".into())));
    assert_eq!(condition(&tc, "pi", "SuccessCriteriaMet").map(|c| c.0), Some("True".into()));
    assert_eq!(s.completion_time.map(|t| t.0), Some(tc.clock.now()));
    sync(&tc, &c, &key).await;
    assert_eq!(pods(&tc).len(), 3, "a finished Job creates nothing");
}

#[tokio::test]
async fn indexed_jobs_run_one_pod_per_index() {
    let (tc, c, key) = start("idx", json!({"completions": 3, "parallelism": 2, "completionMode": "Indexed"})).await;
    sync(&tc, &c, &key).await;
    let ps = pods(&tc);
    let index = |p: &Pod| {
        p.metadata.annotations.as_ref().expect("annotations")["batch.kubernetes.io/job-completion-index"].clone()
    };
    let mut indexes: Vec<String> = ps.iter().map(|p| index(p)).collect();
    indexes.sort();
    assert_eq!(indexes, vec!["0", "1"]);
    for p in &ps {
        let i = index(p);
        let name = p.metadata.name.as_deref().expect("name");
        assert!(name.starts_with(&format!("idx-{i}-")), "{name}");
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = spec.containers[0].env.as_ref().expect("env");
        let var = env.iter().find(|e| e.name == "JOB_COMPLETION_INDEX").expect("index env");
        let field = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).expect("fieldRef");
        assert_eq!(field.field_path, "metadata.annotations['batch.kubernetes.io/job-completion-index']");
    }
    assert_eq!(status(&tc, "idx").completed_indexes.as_deref(), Some(""));
    let one = ps.iter().find(|p| index(p) == "1").expect("index 1");
    finish(&tc, one, "Succeeded").await;
    sync(&tc, &c, &key).await;
    assert_eq!(status(&tc, "idx").completed_indexes.as_deref(), Some("1"));
    let mut active: Vec<String> = running(&tc).iter().map(|p| index(p)).collect();
    active.sort();
    assert_eq!(active, vec!["0", "2"], "the next pending index starts");
    for p in running(&tc) {
        finish(&tc, &p, "Succeeded").await;
    }
    sync(&tc, &c, &key).await;
    let s = status(&tc, "idx");
    assert_eq!(s.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(s.succeeded, Some(3));
    assert_eq!(condition(&tc, "idx", "Complete").map(|c| c.0), Some("True".into()));
}

#[tokio::test]
async fn failures_past_the_backoff_limit_fail_the_job_after_a_back_off() {
    let (tc, c, key) = start("flaky", json!({"backoffLimit": 1})).await;
    sync(&tc, &c, &key).await;
    finish(&tc, &pods(&tc)[0], "Failed").await;
    sync(&tc, &c, &key).await;
    assert_eq!(status(&tc, "flaky").failed, Some(1));
    assert_eq!(running(&tc).len(), 0, "the replacement waits out the 10 s back-off");
    tc.clock.advance(Duration::from_secs(11));
    sync(&tc, &c, &key).await;
    let again = running(&tc);
    assert_eq!(again.len(), 1, "replaced after the back-off");
    finish(&tc, &again[0], "Failed").await;
    sync(&tc, &c, &key).await;
    assert_eq!(status(&tc, "flaky").failed, Some(2));
    assert_eq!(condition(&tc, "flaky", "Failed"), Some(("True".into(), "BackoffLimitExceeded".into())));
    assert_eq!(condition(&tc, "flaky", "FailureTarget").map(|c| c.1), Some("BackoffLimitExceeded".into()));
    assert!(status(&tc, "flaky").completion_time.is_none(), "only success completes");
}

#[tokio::test]
async fn container_restarts_count_against_the_limit_under_on_failure() {
    let (tc, c, key) = start("restarts", json!({"backoffLimit": 2, "restartPolicy": "OnFailure"})).await;
    sync(&tc, &c, &key).await;
    let pod = pods(&tc)[0].clone();
    tc.update("", "pods", NS, pod.metadata.name.as_deref().expect("name"), Some("status"), |p| {
        p["status"]["phase"] = json!("Running");
        p["status"]["containerStatuses"] =
            json!([{"name": "work", "image": "i", "imageID": "", "ready": true, "restartCount": 2}]);
    })
    .await;
    tc.settle().await;
    sync(&tc, &c, &key).await;
    assert_eq!(condition(&tc, "restarts", "FailureTarget").map(|c| c.1), Some("BackoffLimitExceeded".into()));
    assert!(pods(&tc).is_empty(), "the running pod is deleted");
    sync(&tc, &c, &key).await;
    assert_eq!(condition(&tc, "restarts", "Failed").map(|c| c.1), Some("BackoffLimitExceeded".into()));
}

#[tokio::test]
async fn the_active_deadline_fails_the_job_and_stops_its_pods() {
    let (tc, c, key) = start("slow", json!({"activeDeadlineSeconds": 30, "parallelism": 2, "completions": 2})).await;
    sync(&tc, &c, &key).await;
    assert_eq!(pods(&tc).len(), 2);
    tc.clock.advance(Duration::from_secs(29));
    sync(&tc, &c, &key).await;
    assert_eq!(condition(&tc, "slow", "FailureTarget"), None, "not yet");
    tc.clock.advance(Duration::from_secs(2));
    sync(&tc, &c, &key).await;
    assert!(pods(&tc).is_empty(), "running pods deleted");
    sync(&tc, &c, &key).await;
    assert_eq!(condition(&tc, "slow", "Failed"), Some(("True".into(), "DeadlineExceeded".into())));
    assert_eq!(status(&tc, "slow").active, Some(0));
}

#[tokio::test]
async fn finished_jobs_are_deleted_after_their_ttl() {
    let (tc, c, key) = start("short", json!({"ttlSecondsAfterFinished": 60})).await;
    sync(&tc, &c, &key).await;
    finish(&tc, &pods(&tc)[0], "Succeeded").await;
    sync(&tc, &c, &key).await;
    assert_eq!(condition(&tc, "short", "Complete").map(|c| c.0), Some("True".into()));
    tc.clock.advance(Duration::from_secs(59));
    sync(&tc, &c, &key).await;
    assert!(tc.get("batch", "jobs", NS, "short").await.is_some(), "kept until the TTL passes");
    tc.clock.advance(Duration::from_secs(2));
    sync(&tc, &c, &key).await;
    assert!(tc.get("batch", "jobs", NS, "short").await.is_none(), "deleted after the TTL");
}

#[tokio::test]
async fn suspending_stops_pods_and_resuming_restarts_the_clock() {
    let (tc, c, key) = start("paused", json!({"parallelism": 2, "completions": 4})).await;
    sync(&tc, &c, &key).await;
    assert_eq!(pods(&tc).len(), 2);
    tc.update("batch", "jobs", NS, "paused", None, |j| j["spec"]["suspend"] = json!(true)).await;
    tc.settle().await;
    sync(&tc, &c, &key).await;
    assert!(pods(&tc).is_empty(), "active pods deleted");
    assert_eq!(condition(&tc, "paused", "Suspended"), Some(("True".into(), "JobSuspended".into())));
    assert_eq!(status(&tc, "paused").active, Some(0));
    tc.clock.advance(Duration::from_secs(600));
    tc.update("batch", "jobs", NS, "paused", None, |j| j["spec"]["suspend"] = json!(false)).await;
    tc.settle().await;
    sync(&tc, &c, &key).await;
    assert_eq!(condition(&tc, "paused", "Suspended"), Some(("False".into(), "JobResumed".into())));
    assert_eq!(status(&tc, "paused").start_time.map(|t| t.0), Some(tc.clock.now()), "startTime reset");
    assert_eq!(pods(&tc).len(), 2, "pods again");
}

#[tokio::test]
async fn jobs_get_a_generated_selector_and_restart_policy_is_checked() {
    let tc = TestCluster::start().await;
    let created = tc.create("batch", "jobs", NS, job("sel", json!({}))).await;
    let uid = created["metadata"]["uid"].clone();
    assert_eq!(created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(created["spec"]["template"]["metadata"]["labels"]["controller-uid"], uid);
    assert_eq!(created["spec"]["backoffLimit"], 6);
    assert_eq!(created["spec"]["completionMode"], "NonIndexed");
    let mut bad = job("always", json!({}));
    bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let err = tc
        .registry()
        .create(crate::controllers::info("batch", "jobs"), NS, bad, Default::default())
        .await
        .expect_err("Always is refused");
    assert!(err.to_string().contains("restartPolicy"), "{err}");
}
