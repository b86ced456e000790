//! OCI containers for real (issue 5): `skiff up --pod-network bridge --runtimes wasm,oci`
//! inside a network namespace this test creates, with a busybox image built by the test and
//! pushed to skiff's built-in registry. Real runc, real CNI (bridge + portmap), real cgroups.
//!
//! One scenario, in order: a Deployment of busybox `httpd` answers on its pod IP (curl inside
//! the namespace) and `kubectl logs` shows its output; a memory-limited pod that allocates
//! ends `OOMKilled`; a fork bomb stops at the pids limit while the node keeps serving; an
//! agent restart keeps the container running with the same containerID, startedAt and restart
//! count; deleting the Deployment removes container and sandbox. Whatever happens, runc
//! containers, overlay mounts and pod namespaces under the data dir are removed at the end.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::oci_node::{OciLeftovers, oci_start_options};
use skiff_tests::{NetNs, Skiff, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready};

fn deployment(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      runtimeClassName: oci
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: {image}
        command: ["sh", "-c"]
        args: ["mkdir -p /www && echo hello-from-oci > /www/index.html && echo httpd starting && exec httpd -f -p 8080 -h /www"]
        ports:
        - containerPort: 8080
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
"#
    )
}

fn single_pod(name: &str, image: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  runtimeClassName: oci
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
{extra}"#
    )
}

/// An Indexed Job of busybox containers: the same manifest as a WASM Job, another image.
fn container_job(image: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: count
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      runtimeClassName: oci
      restartPolicy: Never
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX"]
"#
    )
}

async fn web_pod(skiff: &Skiff) -> Result<Value> {
    wait_until("the web pod to be Ready", POD_TIMEOUT, POLL, || async {
        let pods = get_json(skiff, &["pods", "-l", "app=web"]).await?;
        Ok(pods["items"].as_array().and_then(|items| items.iter().find(|p| pod_is_ready(p)).cloned()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

fn pod_ip(pod: &Value) -> Result<Ipv4Addr> {
    let ip = pod["status"]["podIP"].as_str().context("pod has no podIP")?;
    ip.parse().with_context(|| format!("podIP {ip:?} is not IPv4"))
}

async fn curl_inside(netns: &NetNs, ip: Ipv4Addr) -> Result<String> {
    netns.run("curl", &["-sS", "--fail", "-m", "10", &format!("http://{ip}:8080/")]).await
}

/// The terminated state of a pod's first container, once it has one.
async fn terminated(skiff: &Skiff, pod: &str) -> Result<Value> {
    wait_until(&format!("pod {pod} to terminate"), POD_TIMEOUT, POLL, || async {
        let p = get_json(skiff, &["pod", pod]).await?;
        let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
        Ok((!t.is_null()).then(|| t.clone()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_pods_run_with_runc_in_the_pod_network() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-oci-e2e-").tempdir()?;
    let mut options = oci_start_options(&netns, scripts.path())?;
    options.extra_args.extend(["--pod-pids-limit", "32"].map(String::from));
    let mut skiff = Skiff::start_with(options).await?;
    let _leftovers = OciLeftovers::new(skiff.data_dir());
    let image = skiff_tests::oci_image::push_busybox(&skiff, "busybox", "v1").await?;

    // The node offers both runtimes.
    wait_until("the node to offer oci", POD_TIMEOUT, POLL, || async {
        let nodes = get_json(&skiff, &["nodes"]).await?;
        Ok((nodes["items"][0]["metadata"]["labels"]["skiff.dev/runtimes"] == "wasm.oci").then_some(()))
    })
    .await?;

    // A Deployment of busybox httpd answers on its pod IP, from inside the namespace.
    skiff.apply(&deployment(&image)).await?;
    let pod = web_pod(&skiff).await?;
    let name = pod["metadata"]["name"].as_str().context("pod name")?.to_string();
    let ip = pod_ip(&pod)?;
    ensure!(ip.octets()[..3] == [10, 244, 0], "pod IP {ip} is not in the bridge CIDR");
    let body = curl_inside(&netns, ip).await?;
    ensure!(body.trim() == "hello-from-oci", "GET http://{ip}:8080/ answered {body:?}");
    let status = &pod["status"]["containerStatuses"][0];
    let container_id = status["containerID"].as_str().context("no containerID")?.to_string();
    ensure!(container_id.starts_with("runc://"), "containerID {container_id}");
    let started_at = status["state"]["running"]["startedAt"].clone();

    // kubectl logs reads what the shim wrote.
    let logs = skiff.kubectl(&["logs", &name]).await?.ok()?;
    ensure!(logs.contains("httpd starting"), "kubectl logs: {logs:?}");

    // kubectl exec runs inside the container (runc exec): both streams and the exit code.
    let out = skiff.kubectl(&["exec", &name, "--", "sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"]).await?;
    ensure!(!out.success, "exit 3 must fail kubectl exec");
    ensure!(out.stdout.contains("exec-out") && out.stderr.contains("exec-err"), "exec output: {out:?}");
    ensure!(out.stderr.contains("exit code 3"), "exec exit code not reported: {:?}", out.stderr);
    let piped = skiff.kubectl_stdin(&["exec", "-i", &name, "--", "cat"], Some("piped-in\n")).await?.ok()?;
    ensure!(piped.trim() == "piped-in", "exec -i stdin: {piped:?}");
    // kubectl cp is tar over exec, both ways.
    let local = scripts.path().join("copied.txt");
    std::fs::write(&local, "copied-in\n")?;
    let target = format!("{name}:/tmp/copied.txt");
    skiff.kubectl(&["cp", local.to_str().context("path")?, &target]).await?.ok()?;
    let inside = skiff.kubectl(&["exec", &name, "--", "cat", "/tmp/copied.txt"]).await?.ok()?;
    ensure!(inside.trim() == "copied-in", "kubectl cp into the container: {inside:?}");
    let back = scripts.path().join("back.txt");
    skiff.kubectl(&["cp", &target, back.to_str().context("path")?]).await?.ok()?;
    ensure!(std::fs::read_to_string(&back)?.trim() == "copied-in", "kubectl cp out of the container");

    // kubectl port-forward reaches the container's port through the API server and the node.
    let port = skiff_tests::net::free_port()?;
    let mapping = format!("{port}:8080");
    let mut forward = skiff.kubectl_spawn(&["port-forward", &format!("pod/{name}"), &mapping])?;
    forward
        .wait_for_line(Duration::from_secs(20), |l| l.contains(&format!("Forwarding from 127.0.0.1:{port}")))
        .await?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let body = client.get(format!("http://127.0.0.1:{port}/")).send().await?.text().await?;
    ensure!(body.trim() == "hello-from-oci", "through port-forward: {body:?}");
    drop(forward);

    // Memory limit: the allocating container is OOM-killed and says so.
    let oom =
        single_pod("hog", &image, "echo allocating; tail /dev/zero", "    resources:\n      limits: {memory: 32Mi}\n");
    skiff.apply(&oom).await?;
    let t = terminated(&skiff, "hog").await?;
    ensure!(t["reason"] == "OOMKilled" && t["exitCode"] == 137, "hog ended {t}");

    // Fork bomb: forks past the pids limit are refused; the container carries on, the node too.
    let bomb = single_pod(
        "bomb",
        &image,
        "(i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done) 2>/dev/null; echo bomb-contained; exec sleep 1000",
        "",
    );
    skiff.apply(&bomb).await?;
    wait_until("the fork bomb to be contained", POD_TIMEOUT, POLL, || async {
        let out = skiff.kubectl(&["logs", "bomb"]).await?;
        Ok(out.stdout.contains("bomb-contained").then_some(()))
    })
    .await?;
    let p = get_json(&skiff, &["pod", "bomb"]).await?;
    ensure!(p["status"]["phase"] == "Running", "bomb pod: {}", p["status"]);
    let body = curl_inside(&netns, ip).await?;
    ensure!(body.trim() == "hello-from-oci", "web after the bomb: {body:?}");
    skiff.kubectl(&["delete", "pod", "bomb", "hog", "--timeout=60s"]).await?.ok()?;

    // A container Job (issue 4): Indexed, every index completes, the Job is Complete.
    skiff.apply(&container_job(&image)).await?;
    skiff.kubectl(&["wait", "--for=condition=Complete", "job/count", "--timeout=120s"]).await?.ok()?;
    let job = get_json(&skiff, &["job", "count"]).await?;
    ensure!(job["status"]["succeeded"] == 3, "job status {}", job["status"]);
    ensure!(job["status"]["completedIndexes"] == "0-2", "completedIndexes {}", job["status"]);
    let logs = skiff.kubectl(&["logs", "-l", "batch.kubernetes.io/job-name=count", "--prefix"]).await?.ok()?;
    for i in 0..3 {
        ensure!(logs.contains(&format!("index={i}")), "job logs miss index {i}: {logs}");
    }
    skiff.kubectl(&["delete", "job", "count", "--timeout=60s"]).await?.ok()?;

    // Agent restart: the container keeps running and is adopted, not restarted.
    skiff.restart().await?;
    let again = wait_until("the web pod to be reported again", POD_TIMEOUT, POLL, || async {
        let p = get_json(&skiff, &["pod", &name]).await?;
        let ready = pod_is_ready(&p);
        Ok(ready.then_some(p))
    })
    .await?;
    let s = &again["status"]["containerStatuses"][0];
    ensure!(s["containerID"] == container_id.as_str(), "containerID changed: {container_id} -> {}", s["containerID"]);
    ensure!(s["state"]["running"]["startedAt"] == started_at, "startedAt changed: {started_at} -> {}", s["state"]);
    ensure!(s["restartCount"] == 0, "restartCount {}", s["restartCount"]);
    let body = curl_inside(&netns, ip).await?;
    ensure!(body.trim() == "hello-from-oci", "web after the restart: {body:?}");

    // Deleting the Deployment removes the container and the pod's namespace.
    skiff.kubectl(&["delete", "deployment", "web"]).await?.ok()?;
    let oci_dir = skiff.data_dir().join("agent").join("oci");
    wait_until("the containers and sandboxes to be removed", POD_TIMEOUT, POLL, || async {
        let left = |d: &str| std::fs::read_dir(oci_dir.join(d)).map(|e| e.count()).unwrap_or(0);
        Ok((left("containers") == 0 && left("netns") == 0).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
