//! Container lifecycle for real (issue 5, "Running containers"): `skiff up --pod-network bridge
//! --runtimes wasm,oci` inside a network namespace this test creates (as `containers.rs`),
//! busybox containers under real runc.
//!
//! In order: a pod whose postStart hook writes the file its main command waits for (so the
//! hook ran inside the started container, before it was reported Running), whose readiness
//! exec probe flips with a file, whose secret and projected volumes are tmpfs mounts (seen in
//! the container's `/proc/mounts` and sized on the node), kept over an agent restart that
//! removes the tmpfs of a pod deleted meanwhile, and whose preStop hook writes a marker to a
//! hostPath volume when the pod is deleted (after the restart) — then its tmpfs mounts are gone;
//! a liveness exec probe that fails restarts its container with `Unhealthy` events; an exec
//! probe that outlives its timeout fails saying so and its command is killed; a failing
//! postStart hook gives `FailedPostStartHook` and restarts the container. Whatever happens,
//! runc containers, mounts and namespaces under the data dir are removed at the end.
//!
//! WASM pods (a second scenario, no containers): an httpGet postStart hook against the pod IP
//! holds the start until it answered; exec hooks and exec probes fail saying WASM has no
//! processes to run a command in.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::oci_node::{OciLeftovers, mounts_under, oci_start_options};
use skiff_tests::{NetNs, Skiff, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready, push_guest};

/// The pod with hooks, a flipping readiness probe, and secret volumes.
fn hooks_pod(image: &str, markers: &Path) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooks
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 10
  volumes:
  - name: markers
    hostPath: {{path: {markers}, type: DirectoryOrCreate}}
  - name: creds
    secret: {{secretName: creds}}
  - name: bundle
    projected:
      sources:
      - secret: {{name: creds, items: [{{key: token, path: token}}]}}
      - downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "while [ ! -f /tmp/started ]; do sleep 0.1; done; echo saw-$(cat /tmp/started); touch /tmp/ready; exec sleep 1000"]
    volumeMounts:
    - {{name: markers, mountPath: /markers}}
    - {{name: creds, mountPath: /etc/creds}}
    - {{name: bundle, mountPath: /etc/bundle}}
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo poststart > /tmp/started"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo prestop-ran > /markers/prestop"]}}
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
      failureThreshold: 1
"#,
        markers = markers.display()
    )
}

/// A pod with one container and `extra` under it (probes, lifecycle).
fn probed_pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: oci
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sleep", "1000"]
{extra}"#
    )
}

/// The pod's events.
async fn events(skiff: &Skiff, pod: &str) -> Result<Vec<Value>> {
    let selector = format!("involvedObject.name={pod}");
    let list = get_json(skiff, &["events", "--field-selector", &selector]).await?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// Waits for an event of `pod` with `reason` whose message contains `text`; returns its message.
async fn event(skiff: &Skiff, pod: &str, reason: &str, text: &str) -> Result<String> {
    wait_until(&format!("a {reason} event of {pod} saying {text:?}"), POD_TIMEOUT, POLL, || async {
        let found = events(skiff, pod).await?.into_iter().find_map(|e| {
            let message = e["message"].as_str().unwrap_or_default();
            (e["reason"] == reason && message.contains(text)).then(|| message.to_string())
        });
        Ok(found)
    })
    .await
}

async fn ready(skiff: &Skiff, pod: &str, want: bool) -> Result<Value> {
    wait_until(&format!("pod {pod} Ready={want}"), POD_TIMEOUT, POLL, || async {
        let p = get_json(skiff, &["pod", pod]).await?;
        Ok((pod_is_ready(&p) == want && p["status"]["phase"] == "Running").then_some(p))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

async fn restarted(skiff: &Skiff, pod: &str) -> Result<Value> {
    wait_until(&format!("pod {pod} to restart its container"), POD_TIMEOUT, POLL, || async {
        let p = get_json(skiff, &["pod", pod]).await?;
        let s = &p["status"]["containerStatuses"][0];
        Ok((s["restartCount"].as_i64().unwrap_or(0) >= 1).then(|| s.clone()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_exec_probes_and_secret_tmpfs_in_containers() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-lifecycle-e2e-").tempdir()?;
    let options = oci_start_options(&netns, scripts.path())?;
    let mut skiff = Skiff::start_with(options).await?;
    let _leftovers = OciLeftovers::new(skiff.data_dir());
    let image = skiff_tests::oci_image::push_busybox(&skiff, "busybox", "v1").await?;
    let markers = scripts.path().join("markers");
    let pods_dir = skiff.data_dir().join("agent").join("pods");

    // postStart runs in the started container; the main command waits for its file.
    skiff.kubectl(&["create", "secret", "generic", "creds", "--from-literal=token=s3cret"]).await?.ok()?;
    skiff.apply(&hooks_pod(&image, &markers)).await?;
    let pod = ready(&skiff, "hooks", true).await?;
    let uid = pod["metadata"]["uid"].as_str().context("pod uid")?.to_string();
    let logs = skiff.kubectl(&["logs", "hooks"]).await?.ok()?;
    ensure!(logs.contains("saw-poststart"), "the main command did not see the postStart file: {logs:?}");

    // The readiness exec probe follows the file.
    skiff.kubectl(&["exec", "hooks", "--", "rm", "/tmp/ready"]).await?.ok()?;
    ready(&skiff, "hooks", false).await?;
    event(&skiff, "hooks", "Unhealthy", "Readiness probe failed: cat: can't open '/tmp/ready'").await?;
    skiff.kubectl(&["exec", "hooks", "--", "touch", "/tmp/ready"]).await?.ok()?;
    ready(&skiff, "hooks", true).await?;

    // Secret and projected volumes are tmpfs, inside the container and on the node (sized).
    for path in ["/etc/creds", "/etc/bundle"] {
        let line = skiff.kubectl(&["exec", "hooks", "--", "grep", path, "/proc/mounts"]).await?.ok()?;
        ensure!(line.contains(" tmpfs "), "{path} is not a tmpfs in the container: {line:?}");
    }
    let token = skiff.kubectl(&["exec", "hooks", "--", "cat", "/etc/bundle/token", "/etc/creds/token"]).await?.ok()?;
    ensure!(token == "s3crets3cret", "secret contents: {token:?}");
    let node_mounts: Vec<_> = mounts_under(&pods_dir).into_iter().filter(|(mp, _)| mp.contains(&uid)).collect();
    for kind in ["kubernetes.io~secret/creds", "kubernetes.io~projected/bundle"] {
        let (_, opts) = node_mounts
            .iter()
            .find(|(mp, _)| mp.ends_with(kind))
            .with_context(|| format!("no mount for {kind} on the node: {node_mounts:?}"))?;
        ensure!(opts.starts_with("tmpfs ") && opts.contains("size=16384k"), "{kind} mount: {opts}");
    }

    // An agent restart: the volumes of a pod deleted meanwhile (a tmpfs under a pod directory
    // no pod owns) are removed; the running pod keeps its own.
    let orphan = pods_dir.join("00000000-dead-4000-8000-000000000000/volumes/kubernetes.io~secret/s");
    std::fs::create_dir_all(&orphan)?;
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&orphan).status()?;
    ensure!(mounted.success(), "mounting the orphan tmpfs");
    skiff.restart().await?;
    ready(&skiff, "hooks", true).await?;
    wait_until("the deleted pod's tmpfs to be removed", POD_TIMEOUT, POLL, || async {
        Ok((!orphan.exists() && mounts_under(&orphan).is_empty()).then_some(()))
    })
    .await?;
    let after: Vec<_> = mounts_under(&pods_dir).into_iter().filter(|(mp, _)| mp.contains(&uid)).collect();
    ensure!(after.len() == 2, "the live pod's volumes after the restart: {after:?}");

    // Deleting the pod runs preStop (writing to the hostPath) and unmounts the volumes.
    skiff.kubectl(&["delete", "pod", "hooks", "--timeout=60s"]).await?.ok()?;
    let marker = std::fs::read_to_string(markers.join("prestop")).context("the preStop marker")?;
    ensure!(marker.trim() == "prestop-ran", "preStop marker: {marker:?}");
    wait_until("the pod's tmpfs volumes to be unmounted", POD_TIMEOUT, POLL, || async {
        let left: Vec<_> = mounts_under(&pods_dir).into_iter().filter(|(mp, _)| mp.contains(&uid)).collect();
        Ok(left.is_empty().then_some(()))
    })
    .await?;

    // A failing liveness exec probe restarts the container, with Unhealthy events.
    let liveness = "    livenessProbe:\n      exec: {command: [\"cat\", \"/tmp/healthy\"]}\n      periodSeconds: 1\n      failureThreshold: 2\n";
    skiff.apply(&probed_pod("liveness", &image, liveness)).await?;
    let status = restarted(&skiff, "liveness").await?;
    ensure!(status["lastState"]["terminated"].is_object(), "no last termination: {status}");
    event(&skiff, "liveness", "Unhealthy", "Liveness probe failed: cat: can't open '/tmp/healthy'").await?;
    event(&skiff, "liveness", "Killing", "failed liveness probe, will be restarted").await?;

    // An exec probe outliving its timeout fails saying so, and its command is killed.
    let slow = "    readinessProbe:\n      exec: {command: [\"sleep\", \"30\"]}\n      timeoutSeconds: 1\n      periodSeconds: 1\n";
    skiff.apply(&probed_pod("slow", &image, slow)).await?;
    event(&skiff, "slow", "Unhealthy", "timed out after 1s").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ps = skiff.kubectl(&["exec", "slow", "--", "ps", "-o", "args"]).await?.ok()?;
    let lingering = ps.lines().filter(|l| l.trim() == "sleep 30").count();
    ensure!(lingering <= 1, "timed-out probe commands keep running:\n{ps}");
    let p = get_json(&skiff, &["pod", "slow"]).await?;
    ensure!(!pod_is_ready(&p), "a probe that always times out made the pod Ready");

    // A failing postStart hook: FailedPostStartHook, the container is killed and restarted.
    let bad_hook = "    lifecycle:\n      postStart:\n        exec: {command: [\"sh\", \"-c\", \"exit 3\"]}\n";
    skiff.apply(&probed_pod("badhook", &image, bad_hook)).await?;
    event(&skiff, "badhook", "FailedPostStartHook", "exited with code 3").await?;
    let status = restarted(&skiff, "badhook").await?;
    let last = &status["lastState"]["terminated"];
    ensure!(last["message"].as_str().is_some_and(|m| m.contains("PostStartHook failed")), "last state: {status}");

    skiff.kubectl(&["delete", "pod", "liveness", "slow", "badhook", "--timeout=60s"]).await?.ok()?;
    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}

/// A WASM HTTP pod (the http-probe guest on 8080) with `extra` under its container.
fn wasm_pod(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  \
         - name: app\n    image: {image}\n    ports:\n    - containerPort: 8080\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_pods_run_http_hooks_and_refuse_exec_clearly() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "http-probe", "hooks/http:v1").await?;

    // httpGet postStart against the pod IP: answered, so the pod runs; an exec probe cannot run.
    let hooks = "    lifecycle:\n      postStart:\n        httpGet: {path: /, port: 8080}\n      preStop:\n        \
                 exec: {command: [\"true\"]}\n    readinessProbe:\n      exec: {command: [\"true\"]}\n      \
                 periodSeconds: 1\n";
    skiff.apply(&wasm_pod("wasm-hooks", &image, hooks)).await?;
    wait_until("the WASM pod to run", POD_TIMEOUT, POLL, || async {
        let p = get_json(&skiff, &["pod", "wasm-hooks"]).await?;
        Ok((p["status"]["phase"] == "Running").then_some(()))
    })
    .await?;
    event(&skiff, "wasm-hooks", "Unhealthy", "Readiness probe failed: exec is not supported for WASM containers")
        .await?;
    ensure!(
        events(&skiff, "wasm-hooks").await?.iter().all(|e| e["reason"] != "FailedPostStartHook"),
        "the httpGet postStart hook failed"
    );
    // Deleting it: the exec preStop hook fails clearly, and the pod goes anyway.
    skiff.kubectl(&["delete", "pod", "wasm-hooks", "--timeout=60s"]).await?.ok()?;
    event(&skiff, "wasm-hooks", "FailedPreStopHook", "not supported for WASM containers").await?;

    // An httpGet postStart hook nobody answers: FailedPostStartHook, the container restarts.
    let refused = "    lifecycle:\n      postStart:\n        httpGet: {path: /, port: 9}\n";
    skiff.apply(&wasm_pod("wasm-badhook", &image, refused)).await?;
    event(&skiff, "wasm-badhook", "FailedPostStartHook", ":9/").await?;
    restarted(&skiff, "wasm-badhook").await?;
    skiff.kubectl(&["delete", "pod", "wasm-badhook", "--timeout=60s"]).await?.ok()?;
    Ok(())
}
