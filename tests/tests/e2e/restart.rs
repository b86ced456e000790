//! Objects survive a SIGTERM + restart on the same data dir; SIGTERM exits with status 0; a
//! running pod comes back on the same pod IP (loopback mode here; bridge mode in
//! `bridge_netns`).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_tests::{Fatal, Skiff, StoreKind, both_stores, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, pod_is_ready, push_guest, run_http_pod};

async fn restart_keeps_objects(store: StoreKind) -> Result<()> {
    let mut skiff = Skiff::start(store).await?;
    skiff
        .kubectl_stdin(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: durable\n---\n\
                 apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  namespace: durable\ndata:\n  k: v\n---\n\
                 apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: durable\nspec:\n  \
                 selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    \
                 spec:\n      containers:\n      - name: web\n        image: registry.example/web:1\n",
            ),
        )
        .await?
        .ok()?;
    let before = get_json(&skiff, &["cm", "kept", "-n", "durable"]).await?;

    skiff.restart().await?;

    let after = get_json(&skiff, &["cm", "kept", "-n", "durable"]).await?;
    ensure!(after["data"]["k"] == "v", "{after}");
    ensure!(after["metadata"]["uid"] == before["metadata"]["uid"], "uid changed: {after}");
    let deploy = get_json(&skiff, &["deployment", "web", "-n", "durable"]).await?;
    ensure!(deploy["metadata"]["name"] == "web", "{deploy}");
    // Writes keep working after the restart.
    skiff.kubectl(&["label", "cm", "kept", "-n", "durable", "after=restart"]).await?.ok()?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    Ok(())
}

both_stores!(restart_keeps_objects);

/// GET `http://ip:8080/` from the test (loopback pod IPs are reachable from the host).
async fn get_pod(ip: &str) -> Result<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let response = client.get(format!("http://{ip}:8080/")).send().await?.error_for_status()?;
    Ok(response.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_pod_ip_loopback() -> Result<()> {
    let mut skiff = Skiff::start(StoreKind::Embedded).await?;
    let image = push_guest(&skiff, "http-probe", "probes/http:v1").await?;
    let pod = run_http_pod(&skiff, "web", &image).await?;
    let ip = pod["status"]["podIP"].as_str().context("podIP")?.to_string();
    ensure!(ip.starts_with("127.244.0."), "pod IP {ip} not from the loopback pod CIDR");
    ensure!(get_pod(&ip).await? == "ok", "the pod did not answer before the restart");

    skiff.restart().await?;
    wait_until("the pod to answer again after the restart", POD_TIMEOUT, POLL, || async {
        let pod = get_json(&skiff, &["pod", "web"]).await?;
        let now = pod["status"]["podIP"].as_str().unwrap_or_default();
        if !now.is_empty() && now != ip {
            return Err(Fatal(format!("pod IP changed across the restart: {ip} -> {now}")).into());
        }
        if !pod_is_ready(&pod) {
            return Ok(None);
        }
        Ok((get_pod(&ip).await? == "ok").then_some(()))
    })
    .await?;

    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}");
    Ok(())
}
