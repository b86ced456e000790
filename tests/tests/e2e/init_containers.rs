//! Init containers and the node's pod Events on `skiff up`, with the `cli-probe` guest: init
//! containers run in order to completion before the app (and hand it files through an
//! emptyDir), a sidecar runs beside the app and is stopped when the pod completes, a failing
//! init container fails the pod under `restartPolicy: Never` and is restarted with back-off
//! otherwise — and `kubectl get events` tells the story the kubelet would.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::guests::guest_path;
use skiff_tests::{Skiff, StoreKind, wait_until};

use crate::{get_json, write_manifest};

/// Guest pods start in milliseconds; back-off restarts take ~10 s each. This bounds a broken test.
const POD_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

/// `skiff push` of the cli-probe guest; returns the image reference to use in `image:`.
async fn push_cli_probe(skiff: &Skiff) -> Result<String> {
    let path = guest_path("cli-probe");
    ensure!(path.is_file(), "{} is missing: run `bash scripts/build-guests.sh`", path.display());
    let out = tokio::process::Command::new(skiff.binary())
        .args(["push", path.to_str().context("guest path")?, "probes/cli:v1", "--kubeconfig"])
        .arg(&skiff.kubeconfig)
        .output()
        .await
        .context("running skiff push")?;
    ensure!(out.status.success(), "skiff push failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

async fn apply(skiff: &Skiff, name: &str, manifest: &str) -> Result<()> {
    let path = write_manifest(skiff, &format!("{name}.yaml"), manifest)?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;
    Ok(())
}

async fn wait_pod(skiff: &Skiff, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_until(what, POD_TIMEOUT, POLL, || async {
        let pod = get_json(skiff, &["pod", name]).await?;
        Ok(check(&pod).then_some(pod))
    })
    .await
}

/// The STATUS column of `kubectl get pod NAME`.
async fn status_column(skiff: &Skiff, name: &str) -> Result<String> {
    let out = skiff.kubectl(&["get", "pod", name, "--no-headers"]).await?.ok()?;
    Ok(out.split_whitespace().nth(2).unwrap_or_default().to_string())
}

/// Waits until `kubectl get pod` shows a STATUS accepted by `check`.
async fn wait_status_column(skiff: &Skiff, name: &str, check: impl Fn(&str) -> bool) -> Result<String> {
    wait_until(&format!("pod {name}'s STATUS column"), POD_TIMEOUT, POLL, || async {
        let status = status_column(skiff, name).await?;
        Ok(check(&status).then_some(status))
    })
    .await
}

/// The pod's events (`kubectl get events --field-selector involvedObject.name=POD`).
async fn events(skiff: &Skiff, pod: &str) -> Result<Vec<Value>> {
    let selector = format!("involvedObject.name={pod}");
    let list = get_json(skiff, &["events", "--field-selector", &selector]).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Waits until the pod has an event with `reason` about the container at `field_path`.
async fn wait_event(skiff: &Skiff, pod: &str, reason: &str, field_path: &str) -> Result<Value> {
    wait_until(&format!("a {reason} event for {field_path}"), POD_TIMEOUT, POLL, || async {
        let found = events(skiff, pod).await?.into_iter().find(|e| {
            e["reason"] == reason
                && e["involvedObject"]["fieldPath"] == field_path
                && e["involvedObject"]["kind"] == "Pod"
        });
        Ok(found)
    })
    .await
}

fn init_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["initContainerStatuses"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn app_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn condition<'a>(pod: &'a Value, type_: &str) -> &'a Value {
    pod["status"]["conditions"].as_array().and_then(|l| l.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_prepare_files_for_the_app_and_events_tell_it() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_cli_probe(&skiff).await?;
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: staged
spec:
  restartPolicy: Never
  volumes:
  - name: work
    emptyDir: {{}}
  initContainers:
  - name: setup
    image: {image}
    args: ["sleep", "3000", "write", "/work/greeting"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: proxy
    image: {image}
    restartPolicy: Always
    args: ["print", "sidecar-up", "sleep", "600000"]
  - name: check
    image: {image}
    args: ["cat", "/work/greeting"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: app
    image: {image}
    args: ["print", "app-saw:", "cat", "/work/greeting"]
    volumeMounts: [{{name: work, mountPath: /work}}]
"#
    );
    apply(&skiff, "staged", &manifest).await?;

    // While `setup` sleeps, kubectl shows the init progress and the app waits.
    let column = wait_status_column(&skiff, "staged", |s| s.starts_with("Init:")).await?;
    ensure!(column == "Init:0/3", "STATUS while the first init container runs: {column}");
    let pod = get_json(&skiff, &["pod", "staged"]).await?;
    let initialized = condition(&pod, "Initialized");
    ensure!(initialized["status"] == "False" && initialized["reason"] == "ContainersNotInitialized", "{initialized}");
    ensure!(initialized["message"] == "containers with incomplete status: [setup proxy check]", "{initialized}");
    ensure!(app_status(&pod)["state"]["waiting"]["reason"] == "PodInitializing", "{}", pod["status"]);

    // The app sees what the init container wrote; the pod completes and its sidecar is stopped.
    let pod = wait_pod(&skiff, "staged", "the pod to succeed with its sidecar stopped", |p| {
        p["status"]["phase"] == "Succeeded" && init_status(p, "proxy")["state"]["terminated"].is_object()
    })
    .await?;
    ensure!(condition(&pod, "Initialized")["status"] == "True", "{}", pod["status"]);
    for name in ["setup", "check"] {
        let status = init_status(&pod, name);
        let terminated = &status["state"]["terminated"];
        ensure!(terminated["exitCode"] == 0 && terminated["reason"] == "Completed", "{name}: {status}");
        ensure!(status["ready"] == true && status["restartCount"] == 0, "{name}: {status}");
        ensure!(status["imageID"].as_str().is_some_and(|id| id.contains("sha256:")), "{name}: {status}");
    }
    ensure!(app_status(&pod)["state"]["terminated"]["exitCode"] == 0, "{}", pod["status"]);
    let app_logs = skiff.kubectl(&["logs", "staged", "-c", "app"]).await?.ok()?;
    ensure!(app_logs.contains("app-saw:") && app_logs.contains("written"), "kubectl logs -c app: {app_logs:?}");
    let check_logs = skiff.kubectl(&["logs", "staged", "-c", "check"]).await?.ok()?;
    ensure!(check_logs.contains("written"), "kubectl logs -c check: {check_logs:?}");
    let sidecar_logs = skiff.kubectl(&["logs", "staged", "-c", "proxy"]).await?.ok()?;
    ensure!(sidecar_logs.contains("sidecar-up"), "kubectl logs -c proxy: {sidecar_logs:?}");

    // Events, as the kubelet writes them.
    for (reason, path) in [
        ("Pulled", "spec.initContainers{setup}"),
        ("Created", "spec.initContainers{setup}"),
        ("Started", "spec.initContainers{setup}"),
        ("Started", "spec.initContainers{proxy}"),
        ("Killing", "spec.initContainers{proxy}"),
        ("Pulled", "spec.containers{app}"),
        ("Created", "spec.containers{app}"),
        ("Started", "spec.containers{app}"),
    ] {
        let event = wait_event(&skiff, "staged", reason, path).await?;
        ensure!(event["source"]["component"] == "kubelet", "{event}");
        ensure!(event["source"]["host"].as_str().is_some_and(|h| !h.is_empty()), "{event}");
        ensure!(event["reportingComponent"] == "kubelet" && event["type"] == "Normal", "{event}");
    }
    let started = wait_event(&skiff, "staged", "Started", "spec.containers{app}").await?;
    ensure!(started["message"] == "Started container app", "{started}");
    let pulled = wait_event(&skiff, "staged", "Pulled", "spec.containers{app}").await?;
    let message = pulled["message"].as_str().unwrap_or_default();
    ensure!(
        message == format!("Container image {image:?} already present on machine")
            || message.starts_with(&format!("Successfully pulled image {image:?} in ")),
        "{pulled}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_init_container_fails_the_pod_under_never() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_cli_probe(&skiff).await?;
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: doomed
spec:
  restartPolicy: Never
  initContainers:
  - name: fail
    image: {image}
    args: ["print", "init-failing", "exit", "3"]
  containers:
  - name: app
    image: {image}
    args: ["print", "app-must-not-run"]
"#
    );
    apply(&skiff, "doomed", &manifest).await?;
    let pod = wait_pod(&skiff, "doomed", "the pod to fail", |p| p["status"]["phase"] == "Failed").await?;
    let status = init_status(&pod, "fail");
    // A component's wasi:cli/run reports only success or failure, so `exit 3` reads as 1.
    let terminated = &status["state"]["terminated"];
    ensure!(terminated["exitCode"] == 1 && terminated["reason"] == "Error", "{status}");
    ensure!(status["ready"] == false && status["restartCount"] == 0, "{status}");
    ensure!(app_status(&pod)["state"]["waiting"]["reason"] == "PodInitializing", "{}", pod["status"]);
    ensure!(condition(&pod, "Initialized")["status"] == "False", "{}", pod["status"]);
    let column = status_column(&skiff, "doomed").await?;
    ensure!(column == "Init:Error", "STATUS of a pod whose init container failed: {column}");
    let logs = skiff.kubectl(&["logs", "doomed", "-c", "fail"]).await?.ok()?;
    ensure!(logs.contains("init-failing"), "kubectl logs -c fail: {logs:?}");

    // The app container never started: no event about it, ever.
    wait_event(&skiff, "doomed", "Started", "spec.initContainers{fail}").await?;
    let about_app: Vec<Value> = events(&skiff, "doomed")
        .await?
        .into_iter()
        .filter(|e| e["involvedObject"]["fieldPath"] == "spec.containers{app}")
        .collect();
    ensure!(about_app.is_empty(), "events about the app container: {about_app:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_init_container_restarts_with_back_off_under_on_failure() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_cli_probe(&skiff).await?;
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: retrying
spec:
  restartPolicy: OnFailure
  initContainers:
  - name: fail
    image: {image}
    args: ["exit", "3"]
  containers:
  - name: app
    image: {image}
    args: ["print", "app-must-not-run"]
"#
    );
    apply(&skiff, "retrying", &manifest).await?;
    let pod = wait_pod(&skiff, "retrying", "the init container to be restarted twice", |p| {
        init_status(p, "fail")["restartCount"].as_i64().unwrap_or(0) >= 2
    })
    .await?;
    ensure!(pod["status"]["phase"] == "Pending", "{}", pod["status"]);
    ensure!(app_status(&pod)["state"]["waiting"]["reason"] == "PodInitializing", "{}", pod["status"]);
    let last = &init_status(&pod, "fail")["lastState"]["terminated"];
    ensure!(last["exitCode"] == 1 && last["reason"] == "Error", "{last}");

    let column = wait_status_column(&skiff, "retrying", |s| s == "Init:CrashLoopBackOff").await?;
    ensure!(column == "Init:CrashLoopBackOff", "{column}");
    let backoff = wait_event(&skiff, "retrying", "BackOff", "spec.initContainers{fail}").await?;
    ensure!(backoff["type"] == "Warning", "{backoff}");
    let message = backoff["message"].as_str().unwrap_or_default();
    ensure!(message.starts_with("Back-off restarting failed container fail in pod retrying"), "{backoff}");
    // Repeated starts of the same container fold into one event with a growing count.
    let started = wait_until("the Started event to count the restarts", POD_TIMEOUT, POLL, || async {
        let found = events(&skiff, "retrying").await?.into_iter().find(|e| {
            e["reason"] == "Started"
                && e["involvedObject"]["fieldPath"] == "spec.initContainers{fail}"
                && e["count"].as_i64().unwrap_or(0) >= 3
        });
        Ok(found)
    })
    .await?;
    ensure!(started["lastTimestamp"] != started["firstTimestamp"], "{started}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_failures_and_requests_over_the_memory_limit_are_events() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let path = guest_path("http-probe");
    ensure!(path.is_file(), "{} is missing: run `bash scripts/build-guests.sh`", path.display());
    let out = tokio::process::Command::new(skiff.binary())
        .args(["push", path.to_str().context("guest path")?, "probes/http:v1", "--kubeconfig"])
        .arg(&skiff.kubeconfig)
        .output()
        .await
        .context("running skiff push")?;
    ensure!(out.status.success(), "skiff push failed: {}", String::from_utf8_lossy(&out.stderr));
    let image = String::from_utf8(out.stdout)?.trim().to_string();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: limited
spec:
  containers:
  - name: app
    image: {image}
    ports: [{{containerPort: 8080}}]
    resources:
      limits: {{memory: 32Mi}}
    readinessProbe:
      httpGet: {{path: /env/NOT_SET, port: 8080}}
      periodSeconds: 1
"#
    );
    apply(&skiff, "limited", &manifest).await?;
    let pod = wait_pod(&skiff, "limited", "the app to run", |p| app_status(p)["state"]["running"].is_object()).await?;
    let ip = pod["status"]["podIP"].as_str().context("podIP")?.to_string();

    let unhealthy = wait_event(&skiff, "limited", "Unhealthy", "spec.containers{app}").await?;
    let message = unhealthy["message"].as_str().unwrap_or_default();
    ensure!(message.starts_with("Readiness probe failed: "), "{unhealthy}");
    ensure!(unhealthy["type"] == "Warning", "{unhealthy}");

    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    for _ in 0..2 {
        let resp = client.get(format!("http://{ip}:8080/alloc?mb=64")).send().await?;
        ensure!(resp.status().as_u16() == 503, "a request over the memory limit answered {}", resp.status());
    }
    let event = wait_until("the memory event to count both requests", POD_TIMEOUT, POLL, || async {
        let found = events(&skiff, "limited").await?.into_iter().find(|e| {
            e["reason"] == "MemoryLimitExceeded"
                && e["involvedObject"]["fieldPath"] == "spec.containers{app}"
                && e["count"].as_i64().unwrap_or(0) >= 2
        });
        Ok(found)
    })
    .await?;
    ensure!(event["type"] == "Warning", "{event}");
    ensure!(event["message"].as_str().is_some_and(|m| m.contains("503")), "{event}");
    Ok(())
}
