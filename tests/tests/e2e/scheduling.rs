//! The scheduler and the minimal workload controllers, end to end through kubectl: a
//! Deployment becomes a ReplicaSet and pods, the pods are bound and spread over the nodes,
//! scaling follows `replicas`, a pod that fits nowhere gets `PodScheduled=False` with the Go
//! scheduler's message and a `FailedScheduling` event and is placed once a matching node
//! appears, and deleting the Deployment removes its ReplicaSet and pods.
//!
//! There is no node agent here: Node objects (Ready, allocatable, `skiff.dev/runtimes=wasm`)
//! are created with kubectl, so bound pods never run and deleted pods stay Terminating
//! (their agent would finish them); the checks count pods without a deletionTimestamp.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StartOptions, StoreKind, net::wait_until};

use crate::{get_json, write_manifest};

/// Deadline for the controllers and the scheduler to converge.
const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

fn node_manifest(name: &str, extra_labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
    skiff.dev/runtimes: wasm{extra_labels}
status:
  capacity: {{cpu: "4", memory: 8Gi, pods: "110"}}
  allocatable: {{cpu: "4", memory: 8Gi, pods: "110"}}
  conditions:
  - type: Ready
    status: "True"
    reason: KubeletReady
    message: test node
"#
    )
}

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.example/web.wasm:1
        resources:
          requests: {cpu: 100m, memory: 64Mi}
"#;

const PICKY_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: picky
spec:
  nodeSelector: {disk: ssd}
  containers:
  - name: c
    image: registry.example/app.wasm:1
"#;

async fn apply(skiff: &Skiff, file: &str, text: &str) -> Result<()> {
    let path = write_manifest(skiff, file, text)?;
    skiff.kubectl(&["apply", "-f", path.to_str().context("utf-8 path")?]).await?.ok()?;
    Ok(())
}

/// The `app=web` pods that are not being deleted.
async fn live_web_pods(skiff: &Skiff) -> Result<Vec<Value>> {
    let list = get_json(skiff, &["pods", "-l", "app=web"]).await?;
    Ok(list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect())
}

/// Waits for exactly `n` live web pods, all bound; returns the nodes they are on.
async fn wait_bound(skiff: &Skiff, n: usize) -> Result<Vec<String>> {
    wait_until(&format!("{n} bound web pods"), CONVERGE, POLL, || async {
        let pods = live_web_pods(skiff).await?;
        let nodes: Vec<String> =
            pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string)).collect();
        Ok((pods.len() == n && nodes.len() == n).then_some(nodes))
    })
    .await
}

async fn deployment_and_scaling(skiff: &Skiff) -> Result<()> {
    apply(skiff, "deploy.yaml", DEPLOYMENT).await?;
    let nodes = wait_bound(skiff, 3).await?;
    let distinct: BTreeSet<&String> = nodes.iter().collect();
    ensure!(distinct.len() == 2, "3 pods of one owner should spread over both nodes: {nodes:?}");

    let rs = get_json(skiff, &["replicasets", "-l", "app=web"]).await?;
    let items = rs["items"].as_array().context("rs list")?;
    ensure!(items.len() == 1, "one ReplicaSet per template: {rs}");
    let hash = items[0]["metadata"]["labels"]["pod-template-hash"].as_str().context("pod-template-hash label")?;
    ensure!(
        items[0]["metadata"]["name"] == format!("web-{hash}").as_str(),
        "ReplicaSet name: {}",
        items[0]["metadata"]["name"]
    );
    ensure!(items[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment");
    let pod = &live_web_pods(skiff).await?[0];
    ensure!(pod["metadata"]["generateName"] == format!("web-{hash}-").as_str(), "pod generateName: {pod}");
    ensure!(pod["metadata"]["labels"]["pod-template-hash"] == hash);
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "True");
    ensure!(scheduled, "bound pod has PodScheduled=True: {pod}");

    wait_until("deployment status replicas=3", CONVERGE, POLL, || async {
        let d = get_json(skiff, &["deployment", "web"]).await?;
        Ok((d["status"]["replicas"] == 3
            && d["status"]["updatedReplicas"] == 3
            && d["status"]["observedGeneration"] == d["metadata"]["generation"])
            .then_some(()))
    })
    .await?;

    skiff.kubectl(&["scale", "deployment", "web", "--replicas=5"]).await?.ok()?;
    let nodes = wait_bound(skiff, 5).await?;
    let on_first = nodes.iter().filter(|n| **n == nodes[0]).count();
    ensure!((2..=3).contains(&on_first), "5 pods spread 3/2 over two nodes: {nodes:?}");

    // `kubectl apply` with a new replicas count works as well as `scale`.
    apply(skiff, "deploy-1.yaml", &DEPLOYMENT.replace("replicas: 3", "replicas: 1")).await?;
    wait_bound(skiff, 1).await?;
    wait_until("deployment status replicas=1", CONVERGE, POLL, || async {
        let d = get_json(skiff, &["deployment", "web"]).await?;
        Ok((d["status"]["replicas"] == 1 && d["spec"]["replicas"] == 1).then_some(()))
    })
    .await?;
    Ok(())
}

async fn unschedulable_then_scheduled(skiff: &Skiff) -> Result<()> {
    apply(skiff, "picky.yaml", PICKY_POD).await?;
    let want = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.";
    wait_until("PodScheduled=False on the picky pod", CONVERGE, POLL, || async {
        let pod = get_json(skiff, &["pod", "picky"]).await?;
        let cond =
            pod["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "PodScheduled").cloned();
        Ok(cond.filter(|c| c["status"] == "False" && c["reason"] == "Unschedulable" && c["message"] == want))
    })
    .await?;
    wait_until("a FailedScheduling event", CONVERGE, POLL, || async {
        let events = get_json(skiff, &["events"]).await?;
        let found = events["items"].as_array().into_iter().flatten().any(|e| {
            e["reason"] == "FailedScheduling"
                && e["involvedObject"]["name"] == "picky"
                && e["message"] == want
                && e["type"] == "Warning"
        });
        Ok(found.then_some(()))
    })
    .await?;
    let table = skiff.kubectl(&["get", "events"]).await?.ok()?;
    ensure!(table.contains("FailedScheduling"), "kubectl get events shows it:\n{table}");

    apply(skiff, "node-c.yaml", &node_manifest("node-c", "\n    disk: ssd")).await?;
    wait_until("the picky pod bound to node-c", CONVERGE, POLL, || async {
        let pod = get_json(skiff, &["pod", "picky"]).await?;
        Ok((pod["spec"]["nodeName"] == "node-c").then_some(()))
    })
    .await?;
    Ok(())
}

async fn delete_cleans_up(skiff: &Skiff) -> Result<()> {
    skiff.kubectl(&["delete", "deployment", "web"]).await?.ok()?;
    wait_until("ReplicaSet and pods gone", CONVERGE, POLL, || async {
        let rs = get_json(skiff, &["replicasets"]).await?;
        let pods = live_web_pods(skiff).await?;
        Ok((rs["items"].as_array().is_some_and(Vec::is_empty) && pods.is_empty()).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_are_scheduled_scaled_and_collected() -> Result<()> {
    let skiff = Skiff::start_with(StartOptions::control_plane_only(StoreKind::Embedded)).await?;
    apply(&skiff, "nodes.yaml", &format!("{}---\n{}", node_manifest("node-a", ""), node_manifest("node-b", "")))
        .await?;
    let result = async {
        deployment_and_scaling(&skiff).await?;
        unschedulable_then_scheduled(&skiff).await?;
        delete_cleans_up(&skiff).await
    }
    .await;
    result.with_context(|| format!("skiff log:\n{}", skiff.log_tail(40)))
}
