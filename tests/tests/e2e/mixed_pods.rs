//! Mixed pods for real (issue 5): one pod listing WebAssembly components and a busybox
//! container shares ONE network namespace. `skiff up --pod-network bridge --runtimes wasm,oci`
//! runs inside a network namespace this test creates; real runc, real CNI.
//!
//! The pod names no runtime class: its busybox image alone puts it on the OCI runtime.
//! The pod has the hello-http component (`wasi:http`, port 8080), the cli-probe command
//! (`wasi:sockets`: first an HTTP GET of busybox's page on `127.0.0.1:8081`, then serving on
//! port 9090), and busybox `httpd` on port 8081. From busybox (`kubectl exec`),
//! `localhost:8080` and `localhost:9090` reach the WASM guests, and the WASM command's log holds
//! the page it fetched from busybox on localhost; from the test's namespace the pod IP serves
//! hello-http. Deleting the pod removes its container and namespace. Whatever
//! happens, runc containers, overlays and namespaces under the data dir are cleaned up.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::oci_node::{OciLeftovers, oci_start_options};
use skiff_tests::{NetNs, Skiff, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, push_guest};

fn mixed_pod(hello: &str, probe: &str, busybox: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: mixed
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hello
    image: {hello}
    ports:
    - containerPort: 8080
  - name: sockets
    image: {probe}
    args: ["get", "127.0.0.1:8081", "/hello.txt", "serve", "9090"]
  - name: shell
    image: {busybox}
    command: ["sh", "-c", "mkdir -p /www && echo from-busybox > /www/hello.txt && exec httpd -f -p 8081 -h /www"]
"#
    )
}

/// The pod once all three containers run.
async fn running(skiff: &Skiff) -> Result<Value> {
    wait_until("the mixed pod to run all its containers", POD_TIMEOUT, POLL, || async {
        let pod = get_json(skiff, &["pod", "mixed"]).await?;
        let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
        let all = statuses.len() == 3 && statuses.iter().all(|s| !s["state"]["running"].is_null());
        Ok(all.then_some(pod))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))
}

/// `wget` run by busybox inside the pod: the body.
async fn wget_in_pod(skiff: &Skiff, url: &str) -> Result<String> {
    let last = std::sync::Mutex::new(String::new());
    wait_until(&format!("busybox to fetch {url}"), POD_TIMEOUT, POLL, || async {
        // No `-T`: busybox 1.35's static wget crashes with it; `timeout` bounds it instead.
        let out = skiff.kubectl(&["exec", "mixed", "-c", "shell", "--", "timeout", "10", "wget", "-qO-", url]).await?;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = out.stderr.clone();
        Ok(out.success.then_some(out.stdout))
    })
    .await
    .with_context(|| {
        let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!("last wget error: {last}\nskiff log tail:\n{}", skiff.log_tail(30))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasm_and_oci_containers_share_the_pod_network() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-mixed-e2e-").tempdir()?;
    let options = oci_start_options(&netns, scripts.path())?;
    let mut skiff = Skiff::start_with(options).await?;
    let oci_dir = skiff.data_dir().join("agent").join("oci");
    let _leftovers = OciLeftovers::new(skiff.data_dir());
    let busybox = skiff_tests::oci_image::push_busybox(&skiff, "busybox", "v1").await?;
    let hello = push_guest(&skiff, "hello-http", "mixed/hello:v1").await?;
    let probe = push_guest(&skiff, "cli-probe", "mixed/cli:v1").await?;

    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&mixed_pod(&hello, &probe, &busybox))).await?.ok()?;
    let pod = running(&skiff).await?;
    let ip: Ipv4Addr = pod["status"]["podIP"].as_str().context("no podIP")?.parse()?;
    let statuses = pod["status"]["containerStatuses"].as_array().context("no container statuses")?;
    let id_of = |name: &str| statuses.iter().find(|s| s["name"] == name).map(|s| s["containerID"].clone());
    ensure!(
        id_of("shell").is_some_and(|id| id.as_str().is_some_and(|id| id.starts_with("runc://"))),
        "busybox must run in runc: {statuses:?}"
    );

    // The WASM HTTP component listens inside the pod: busybox reaches it on the pod's loopback
    // (by address: the static busybox's glibc resolver crashes on names) ...
    let body = wget_in_pod(&skiff, "http://127.0.0.1:8080/").await?;
    ensure!(body.contains("Hello from Skiff: /"), "127.0.0.1:8080 from busybox answered {body:?}");
    // ... on the pod IP too, from inside the pod and from the node's network.
    let body = wget_in_pod(&skiff, &format!("http://{ip}:8080/x")).await?;
    ensure!(body.contains("Hello from Skiff: /x"), "{ip}:8080 from busybox answered {body:?}");
    let body = netns.run("curl", &["-sS", "--fail", "-m", "10", &format!("http://{ip}:8080/node")]).await?;
    ensure!(body.contains("Hello from Skiff: /node"), "{ip}:8080 from the node answered {body:?}");
    // A WASM command's wasi:sockets listener is the pod's too.
    let body = wget_in_pod(&skiff, "http://127.0.0.1:9090/").await?;
    ensure!(body == "cli-probe", "127.0.0.1:9090 (wasi:sockets) from busybox answered {body:?}");
    // The other way round: the WASM command reached busybox's httpd on the pod's localhost.
    let fetched = wait_until("the WASM command's fetch of busybox's page", POD_TIMEOUT, POLL, || async {
        let out = skiff.kubectl(&["logs", "mixed", "-c", "sockets"]).await?;
        Ok(out.stdout.contains("from-busybox").then_some(out.stdout))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(30)))?;
    ensure!(fetched.contains("listening on 9090"), "cli-probe should serve after its fetch: {fetched:?}");
    // Nothing of the pod is served on the node bridge: the address lives in the sandbox.
    let bridge = netns.ipv4_addrs("skiff0")?;
    ensure!(!bridge.contains(&format!("{ip}/32")), "{ip}/32 must not be on skiff0: {bridge:?}");

    // Deleting the pod stops the guests and removes the container and the namespace.
    skiff.kubectl(&["delete", "pod", "mixed", "--timeout=60s"]).await?.ok()?;
    wait_until("the container and sandbox to be removed", POD_TIMEOUT, POLL, || async {
        let left = |d: &str| std::fs::read_dir(oci_dir.join(d)).map(|e| e.count()).unwrap_or(0);
        Ok((left("containers") == 0 && left("netns") == 0).then_some(()))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(40)))?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
