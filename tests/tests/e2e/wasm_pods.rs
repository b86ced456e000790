//! WASM pods end to end on `skiff up`: push an artifact to the built-in registry, run it as a
//! Deployment or Pod with kubectl, and reach it on its pod IP — the issue-3 scenarios.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use skiff_tests::guests::guest_path;
use skiff_tests::{Skiff, StoreKind, wait_until};

use crate::{get_json, write_manifest};

/// Pods of a WASM function start in milliseconds; this only bounds a broken test.
const POD_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// `skiff push FILE NAME` against this cluster; returns the printed image reference.
async fn push(skiff: &Skiff, guest: &str, name: &str) -> Result<String> {
    push_file(skiff, &guest_path(guest), name).await
}

/// `skiff push PATH NAME` against this cluster; returns the printed image reference.
async fn push_file(skiff: &Skiff, path: &std::path::Path, name: &str) -> Result<String> {
    let out = tokio::process::Command::new(skiff.binary())
        .args(["push", path.to_str().context("guest path")?, name, "--kubeconfig"])
        .arg(&skiff.kubeconfig)
        .output()
        .await
        .context("running skiff push")?;
    ensure!(out.status.success(), "skiff push failed: {}", String::from_utf8_lossy(&out.stderr));
    let reference = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(reference.ends_with(name), "unexpected reference {reference:?}");
    Ok(reference)
}

/// Waits until `check` accepts the pod (fetched with kubectl as JSON).
async fn wait_pod(skiff: &Skiff, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Result<Value> {
    wait_until(what, POD_TIMEOUT, POLL, || async {
        let pod = get_json(skiff, &["pod", name]).await?;
        Ok(check(&pod).then_some(pod))
    })
    .await
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

/// GET `http://<podIP>:<port><path>`, returning status and body.
async fn get_pod(pod: &Value, port: u16, path: &str) -> Result<(u16, String)> {
    let ip = pod["status"]["podIP"].as_str().context("pod has no podIP")?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let resp = client.get(format!("http://{ip}:{port}{path}")).send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn probe_pod(name: &str, image: &str, extra_container: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  {extra_spec}
  containers:
  - name: app
    image: {image}
    ports:
    - containerPort: 8080
    {extra_container}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_function_answers_and_pods_are_replaced() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push(&skiff, "hello-http", "examples/hello-http:v1").await?;
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello-http/deployment.yaml"))?;
    let manifest = manifest.replace("REGISTRY/hello-http:v1", &image);
    let path = write_manifest(&skiff, "hello.yaml", &manifest)?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;

    let first = wait_until("a ready hello pod", POD_TIMEOUT, POLL, || async {
        let pods = get_json(&skiff, &["pods", "-l", "app=hello-http"]).await?;
        Ok(pods["items"].as_array().and_then(|items| items.iter().find(|p| is_ready(p)).cloned()))
    })
    .await?;
    let (status, body) = get_pod(&first, 8080, "/greet").await?;
    ensure!(status == 200 && body.contains("Hello"), "{status} {body}");
    let ip = first["status"]["podIP"].as_str().context("podIP")?;
    ensure!(ip.starts_with("127.244."), "pod IP {ip} not from the loopback pod CIDR");
    ensure!(container_status(&first)["imageID"].as_str().is_some_and(|id| id.contains("sha256:")), "{first}");

    let first_name = first["metadata"]["name"].as_str().context("name")?.to_string();
    skiff.kubectl(&["delete", "pod", &first_name, "--wait=false"]).await?.ok()?;
    let second = wait_until("a replacement pod", POD_TIMEOUT, POLL, || async {
        let pods = get_json(&skiff, &["pods", "-l", "app=hello-http"]).await?;
        Ok(pods["items"].as_array().and_then(|items| {
            items.iter().find(|p| p["metadata"]["name"] != first_name.as_str() && is_ready(p)).cloned()
        }))
    })
    .await?;
    let (status, _) = get_pod(&second, 8080, "/").await?;
    ensure!(status == 200, "replacement answered {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_guest_backs_off_and_oom_is_reported() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push(&skiff, "cli-probe", "probes/cli:v1").await?;
    let crash =
        probe_pod("crash", &image, "args: [\"print\", \"about to fail\", \"exit\", \"3\"]", "restartPolicy: Always");
    let oom = probe_pod(
        "oom",
        &image,
        "args: [\"alloc\", \"64\"]\n    resources:\n      limits:\n        memory: 16Mi",
        "restartPolicy: Never",
    );
    let done = probe_pod("done", &image, "args: [\"print\", \"hello-logs\"]", "restartPolicy: Never");
    for (name, text) in [("crash.yaml", &crash), ("oom.yaml", &oom), ("done.yaml", &done)] {
        let path = write_manifest(&skiff, name, text)?;
        skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;
    }

    let pod = wait_pod(&skiff, "oom", "the memory bomb to end OOMKilled", |p| {
        container_status(p)["state"]["terminated"]["reason"] == "OOMKilled"
    })
    .await?;
    ensure!(pod["status"]["phase"] == "Failed", "{}", pod["status"]);

    let pod = wait_pod(&skiff, "done", "the command to succeed", |p| p["status"]["phase"] == "Succeeded").await?;
    ensure!(container_status(&pod)["state"]["terminated"]["exitCode"] == 0, "{}", pod["status"]);
    let logs = skiff.kubectl(&["logs", "done"]).await?.ok()?;
    ensure!(logs.contains("hello-logs"), "kubectl logs: {logs:?}");

    let pod = wait_pod(&skiff, "crash", "restarts with CrashLoopBackOff", |p| {
        let status = container_status(p);
        status["restartCount"].as_i64().unwrap_or(0) >= 2 && status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await?;
    // A component's wasi:cli/run reports only success or failure, so `exit 3` reads as 1.
    let last = &container_status(&pod)["lastState"]["terminated"];
    ensure!(last["exitCode"] == 1 && last["reason"] == "Error", "{last}");
    let previous = skiff.kubectl(&["logs", "crash", "--previous"]).await?.ok()?;
    ensure!(previous.contains("about to fail"), "kubectl logs --previous: {previous:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_guest_limits_fail_only_the_bad_request() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push(&skiff, "http-probe", "probes/http:v1").await?;
    let manifest = probe_pod("limits", &image, "resources:\n      limits:\n        memory: 32Mi", "").replace(
        "metadata:\n  name: limits",
        "metadata:\n  name: limits\n  annotations:\n    skiff.dev/request-timeout: 2s",
    );
    let path = write_manifest(&skiff, "limits.yaml", &manifest)?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;
    let pod = wait_pod(&skiff, "limits", "the http probe to be ready", is_ready).await?;

    let (status, body) = get_pod(&pod, 8080, "/alloc?mb=64").await?;
    ensure!(status >= 500, "a request over the memory limit answered {status} {body}");
    let (status, _) = get_pod(&pod, 8080, "/alloc?mb=4").await?;
    ensure!(status == 200, "a request within the limit answered {status}");

    // A runaway request is stopped by the timeout while other requests keep working.
    let looping = {
        let pod = pod.clone();
        tokio::spawn(async move { get_pod(&pod, 8080, "/loop").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = get_pod(&pod, 8080, "/").await?;
    ensure!(status == 200 && body == "ok", "{status} {body}");
    let (status, _) = looping.await??;
    ensure!(status >= 500, "the runaway request answered {status}");
    let pod = get_json(&skiff, &["pod", "limits"]).await?;
    ensure!(is_ready(&pod) && container_status(&pod)["restartCount"] == 0, "{}", pod["status"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_artifact_gets_a_clear_reason() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    // The WebAssembly magic and version, then garbage: `skiff push` accepts it, wasmtime cannot.
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&[0xff; 64]);
    let path = skiff.home().join("broken.wasm");
    std::fs::write(&path, bytes)?;
    let image = push_file(&skiff, &path, "probes/invalid:v1").await?;
    let path = write_manifest(&skiff, "bad.yaml", &probe_pod("bad", &image, "", ""))?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;
    let pod = wait_pod(&skiff, "bad", "a waiting reason for the invalid artifact", |p| {
        container_status(p)["state"]["waiting"]["message"].as_str().is_some_and(|m| !m.is_empty())
    })
    .await?;
    let waiting = &container_status(&pod)["state"]["waiting"];
    ensure!(waiting["reason"] == "CreateContainerError", "{waiting}");
    let message = waiting["message"].as_str().unwrap_or_default().to_lowercase();
    ensure!(message.contains("wasm") || message.contains("webassembly"), "{waiting}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_config_secrets_and_read_only_volumes_reach_the_guest() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push(&skiff, "http-probe", "probes/http:v1").await?;
    skiff.kubectl(&["create", "configmap", "settings", "--from-literal=colour=teal"]).await?.ok()?;
    skiff.kubectl(&["create", "secret", "generic", "creds", "--from-literal=password=hunter2"]).await?.ok()?;
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: envpod
  labels: {{tier: backend}}
spec:
  volumes:
  - name: config
    configMap: {{name: settings}}
  - name: secret
    secret: {{secretName: creds}}
  - name: scratch
    emptyDir: {{}}
  - name: frozen
    emptyDir: {{}}
  containers:
  - name: app
    image: {image}
    ports: [{{containerPort: 8080}}]
    env:
    - {{name: PLAIN, value: plain-value}}
    - name: COLOUR
      valueFrom: {{configMapKeyRef: {{name: settings, key: colour}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: MY_POD
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: MY_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    volumeMounts:
    - {{name: config, mountPath: /config}}
    - {{name: secret, mountPath: /secret}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: frozen, mountPath: /frozen, readOnly: true}}
"#
    );
    let path = write_manifest(&skiff, "env.yaml", &manifest)?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("path")?]).await?.ok()?;
    let pod = wait_pod(&skiff, "envpod", "the env pod to be ready", is_ready).await?;
    let ip = pod["status"]["podIP"].as_str().context("podIP")?.to_string();
    for (route, want) in [
        ("/env/PLAIN", "plain-value"),
        ("/env/COLOUR", "teal"),
        ("/env/PASSWORD", "hunter2"),
        ("/env/MY_POD", "envpod"),
        ("/env/MY_IP", ip.as_str()),
        ("/file?path=/config/colour", "teal"),
        ("/file?path=/secret/password", "hunter2"),
    ] {
        let (status, body) = get_pod(&pod, 8080, route).await?;
        ensure!(status == 200 && body == want, "{route}: {status} {body:?}, wanted {want:?}");
    }
    let (status, body) = get_pod(&pod, 8080, "/write?path=/scratch/x").await?;
    ensure!(status == 200, "writing a read-write volume: {status} {body}");
    let (status, body) = get_pod(&pod, 8080, "/write?path=/frozen/x").await?;
    ensure!(status == 500, "writing a readOnly volume answered {status} {body}");
    let (status, _) = get_pod(&pod, 8080, "/file?path=/etc/passwd").await?;
    ensure!(status != 200, "the guest could read the host's /etc/passwd");

    // configMap volumes follow updates within seconds.
    skiff.kubectl(&["patch", "configmap", "settings", "-p", r#"{"data":{"colour":"amber"}}"#]).await?.ok()?;
    wait_until("the configMap volume to follow the update", Duration::from_secs(30), POLL, || async {
        let (status, body) = get_pod(&pod, 8080, "/file?path=/config/colour").await?;
        if status != 200 {
            bail!("{status} {body}");
        }
        Ok((body == "amber").then_some(()))
    })
    .await?;
    Ok(())
}
