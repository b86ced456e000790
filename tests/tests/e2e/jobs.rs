//! Jobs and CronJobs on `skiff up`, driven with kubectl, with the `cli-probe` WASM guest as
//! the workload (a `wasi:cli` command that runs to completion is a Job pod): an Indexed Job
//! whose pods each print their `JOB_COMPLETION_INDEX`, a failing Job that runs into its
//! backoff limit, a CronJob that starts a Job on its `*/1` schedule, `kubectl create job
//! --from=cronjob/…`, and the API's 422 for a bad schedule. Container images (runc) are not
//! part of this: they come with issue 5.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StoreKind, wait_until};

use crate::{get_json, push_guest};

/// A Job of guest pods finishes in seconds; a failure back-off adds ~10 s.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// A `*/1` CronJob fires within a minute of its creation; then its Job runs.
const CRON_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(300);

/// The condition `kind` of a Job (as JSON) when it is True: its reason.
fn true_condition(job: &Value, kind: &str) -> Option<String> {
    let conditions = job["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == kind && c["status"] == "True")?;
    Some(c["reason"].as_str().unwrap_or_default().to_string())
}

/// Waits until Job `name` has condition `kind`; returns the Job.
async fn wait_job(skiff: &Skiff, name: &str, kind: &str, timeout: Duration) -> Result<Value> {
    wait_until(&format!("Job {name} to be {kind}"), timeout, POLL, || async {
        let job = get_json(skiff, &["job", name]).await?;
        Ok(true_condition(&job, kind).map(|_| job))
    })
    .await
}

fn job_manifest(name: &str, image: &str, spec: &str, args: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      \
         restartPolicy: Never\n      containers:\n      - name: work\n        image: {image}\n        args: {args}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_completes_and_a_failing_job_hits_its_backoff_limit() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "cli-probe", "probes/cli:v1").await?;
    let indexed = job_manifest(
        "idx",
        &image,
        "  completions: 3\n  parallelism: 2\n  completionMode: Indexed\n",
        "[\"env\", \"JOB_COMPLETION_INDEX\"]",
    );
    let failing = job_manifest("doomed", &image, "  backoffLimit: 1\n", "[\"print\", \"failing\", \"exit\", \"1\"]");
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&indexed)).await?.ok()?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&failing)).await?.ok()?;

    let job = wait_job(&skiff, "idx", "Complete", JOB_TIMEOUT).await?;
    let status = &job["status"];
    ensure!(status["completedIndexes"] == "0-2", "{status}");
    ensure!(status["succeeded"] == 3 && status["active"] == 0, "{status}");
    ensure!(status["completionTime"].is_string() && status["startTime"].is_string(), "{status}");

    // Each pod ran its own index and printed the JOB_COMPLETION_INDEX it saw.
    let pods = get_json(&skiff, &["pods", "-l", "batch.kubernetes.io/job-name=idx"]).await?;
    let mut seen = Vec::new();
    for pod in pods["items"].as_array().context("pod list")? {
        ensure!(pod["status"]["phase"] == "Succeeded", "{}", pod["status"]);
        let name = pod["metadata"]["name"].as_str().context("pod name")?;
        let index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .context("index annotation")?;
        ensure!(name.starts_with(&format!("idx-{index}-")), "pod {name} for index {index}");
        ensure!(pod["spec"]["hostname"] == format!("idx-{index}"), "{}", pod["spec"]);
        let logs = skiff.kubectl(&["logs", name]).await?.ok()?;
        ensure!(logs.trim() == index, "pod {name} (index {index}) printed {logs:?}");
        seen.push(index.to_string());
    }
    seen.sort();
    ensure!(seen == ["0", "1", "2"], "indexes run: {seen:?}");

    // `kubectl get jobs` shows the server-side table.
    let table = skiff.kubectl(&["get", "job", "idx"]).await?.ok()?;
    ensure!(table.contains("COMPLETIONS") && table.contains("3/3"), "{table}");

    let job = wait_job(&skiff, "doomed", "Failed", JOB_TIMEOUT).await?;
    ensure!(true_condition(&job, "Failed").as_deref() == Some("BackoffLimitExceeded"), "{}", job["status"]);
    ensure!(job["status"]["failed"] == 2 && job["status"]["succeeded"] == 0, "{}", job["status"]);
    let events = skiff.kubectl(&["get", "events", "--field-selector", "involvedObject.name=doomed"]).await?.ok()?;
    ensure!(events.contains("BackoffLimitExceeded") && events.contains("SuccessfulCreate"), "{events}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_starts_a_job_on_schedule_and_can_be_instantiated_by_hand() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "cli-probe", "probes/cli:v1").await?;

    let bad = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: bad\nspec:\n  schedule: \"61 * * * *\"\n  \
               jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          \
               containers:\n          - name: c\n            image: x\n";
    let err = skiff.kubectl_stdin(&["apply", "-f", "-"], Some(bad)).await?.err()?;
    ensure!(err.contains("spec.schedule") && err.contains("Invalid"), "{err}");

    let cron = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: tick\nspec:\n  schedule: \"*/1 * * * *\"\n  \
         jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          \
         containers:\n          - name: work\n            image: {image}\n            args: [\"print\", \"tick\"]\n"
    );
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&cron)).await?.ok()?;

    // kubectl builds the Job from the CronJob's template client-side.
    skiff.kubectl(&["create", "job", "by-hand", "--from=cronjob/tick"]).await?.ok()?;
    let job = wait_job(&skiff, "by-hand", "Complete", JOB_TIMEOUT).await?;
    ensure!(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual", "{}", job["metadata"]);

    let scheduled = wait_until("the CronJob to start a Job", CRON_TIMEOUT, POLL, || async {
        let jobs = get_json(&skiff, &["jobs"]).await?;
        let items = jobs["items"].as_array().cloned().unwrap_or_default();
        Ok(items.into_iter().find(|j| {
            j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].is_string()
                && j["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
        }))
    })
    .await?;
    let name = scheduled["metadata"]["name"].as_str().context("job name")?.to_string();
    ensure!(name.starts_with("tick-"), "{name}");
    wait_job(&skiff, &name, "Complete", JOB_TIMEOUT).await?;
    let cj = wait_until("the CronJob to see its Job succeed", JOB_TIMEOUT, POLL, || async {
        let cj = get_json(&skiff, &["cronjob", "tick"]).await?;
        Ok(cj["status"]["lastSuccessfulTime"].is_string().then_some(cj))
    })
    .await?;
    ensure!(cj["status"]["lastScheduleTime"].is_string(), "{}", cj["status"]);
    let logs = skiff.kubectl(&["logs", &format!("job/{name}")]).await?.ok()?;
    ensure!(logs.contains("tick"), "{logs:?}");
    Ok(())
}
