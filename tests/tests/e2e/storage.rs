//! Storage on `skiff up` with real kubectl: the default `local-path` StorageClass, a claim
//! bound on the node of its first pod (WaitForFirstConsumer), data written by one WASM pod
//! (the cli-probe guest) and read by the next on the same claim, reclaim `Delete` (PV and
//! directory gone) and `Retain` (PV Released, data kept).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StoreKind, wait_until};

use super::{get_json, push_guest};

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(300);

fn claim(name: &str, class: Option<&str>) -> String {
    let class = class.map(|c| format!("  storageClassName: {c}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  \
         resources:\n    requests:\n      storage: 64Mi\n"
    )
}

/// A run-to-completion cli-probe pod with claim `claim` mounted at `/data`.
fn probe_pod(name: &str, image: &str, claim: &str, args: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: app\n    \
         image: {image}\n    args: {args}\n    volumeMounts:\n    - name: data\n      mountPath: /data\n  volumes:\n  \
         - name: data\n    persistentVolumeClaim:\n      claimName: {claim}\n"
    )
}

async fn wait_succeeded(skiff: &Skiff, pod: &str) -> Result<Value> {
    wait_until(&format!("pod {pod} to succeed"), TIMEOUT, POLL, || async {
        let p = get_json(skiff, &["pod", pod]).await?;
        ensure!(p["status"]["phase"] != "Failed", "pod {pod} failed: {}", p["status"]);
        Ok((p["status"]["phase"] == "Succeeded").then_some(p))
    })
    .await
}

async fn bound_volume(skiff: &Skiff, claim: &str) -> Result<String> {
    let pvc = get_json(skiff, &["pvc", claim]).await?;
    ensure!(pvc["status"]["phase"] == "Bound", "claim {claim}: {}", pvc["status"]);
    pvc["spec"]["volumeName"].as_str().map(str::to_string).context("volumeName")
}

/// The node-side directory of a local-path volume (`<data-dir>/agent/<local.path>`).
async fn volume_dir(skiff: &Skiff, pv: &str) -> Result<PathBuf> {
    let v = get_json(skiff, &["pv", pv]).await?;
    let rel = v["spec"]["local"]["path"].as_str().context("local.path")?;
    Ok(skiff.data_dir().join("agent").join(rel))
}

/// Writes through one pod, reads through the next, returns the bound PV's name.
async fn write_then_read(skiff: &Skiff, image: &str, claim_name: &str) -> Result<String> {
    let writer = format!("{claim_name}-writer");
    let reader = format!("{claim_name}-reader");
    skiff.apply(&probe_pod(&writer, image, claim_name, "[\"write\", \"/data/hello\"]")).await?;
    wait_succeeded(skiff, &writer).await?;
    skiff.kubectl(&["delete", "pod", &writer, "--wait=false"]).await?.ok()?;
    skiff.apply(&probe_pod(&reader, image, claim_name, "[\"cat\", \"/data/hello\"]")).await?;
    wait_succeeded(skiff, &reader).await?;
    let logs = skiff.kubectl(&["logs", &reader]).await?.ok()?;
    ensure!(logs.contains("written"), "the second pod reads what the first wrote: {logs:?}");
    skiff.kubectl(&["delete", "pod", &reader, "--wait=false"]).await?.ok()?;
    bound_volume(skiff, claim_name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_path_claims_keep_data_across_pods_and_are_reclaimed() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let classes = skiff.kubectl(&["get", "storageclass"]).await?.ok()?;
    ensure!(classes.contains("local-path (default)"), "kubectl get storageclass:\n{classes}");
    let image = push_guest(&skiff, "cli-probe", "probes/cli:v1").await?;

    // Delete (the default class): pending until its pod, then bound on the pod's node.
    skiff.apply(&claim("scratch", None)).await?;
    let pvc = get_json(&skiff, &["pvc", "scratch"]).await?;
    ensure!(pvc["spec"]["storageClassName"] == "local-path", "default class: {}", pvc["spec"]);
    let events = wait_until("the WaitForFirstConsumer event", TIMEOUT, POLL, || async {
        let out = skiff.kubectl(&["describe", "pvc", "scratch"]).await?.ok()?;
        Ok(out.contains("WaitForFirstConsumer").then_some(out))
    })
    .await?;
    ensure!(events.contains("waiting for first consumer to be created before binding"), "{events}");
    ensure!(get_json(&skiff, &["pvc", "scratch"]).await?["status"]["phase"] == "Pending", "pending without a pod");

    let pv = write_then_read(&skiff, &image, "scratch").await?;
    let node =
        get_json(&skiff, &["nodes"]).await?["items"][0]["metadata"]["name"].as_str().context("node")?.to_string();
    let v = get_json(&skiff, &["pv", &pv]).await?;
    let affinity = &v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    ensure!(affinity["values"][0] == node.as_str(), "node affinity to {node}: {affinity}");
    ensure!(v["status"]["phase"] == "Bound" && v["spec"]["persistentVolumeReclaimPolicy"] == "Delete", "{v}");
    let dir = volume_dir(&skiff, &pv).await?;
    ensure!(std::fs::read_to_string(dir.join("hello")).ok().as_deref() == Some("written"), "data in {dir:?}");

    skiff.kubectl(&["delete", "pvc", "scratch", "--wait=false"]).await?.ok()?;
    wait_until("the Delete volume and its directory to go", TIMEOUT, POLL, || async {
        let gone = skiff.kubectl(&["get", "pv", &pv]).await?.err().is_ok();
        Ok((gone && !dir.exists()).then_some(()))
    })
    .await?;

    // Retain: the volume stays Released with its data.
    skiff.apply(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: keep\nprovisioner: rancher.io/local-path\n\
         volumeBindingMode: WaitForFirstConsumer\nreclaimPolicy: Retain\n",
    )
    .await?;
    skiff.apply(&claim("kept", Some("keep"))).await?;
    let pv = write_then_read(&skiff, &image, "kept").await?;
    let dir = volume_dir(&skiff, &pv).await?;
    skiff.kubectl(&["delete", "pvc", "kept", "--wait=false"]).await?.ok()?;
    wait_until("the Retain volume to be Released", TIMEOUT, POLL, || async {
        let v = get_json(&skiff, &["pv", &pv]).await?;
        Ok((v["status"]["phase"] == "Released").then_some(()))
    })
    .await?;
    ensure!(std::fs::read_to_string(dir.join("hello")).ok().as_deref() == Some("written"), "Retain keeps the data");
    Ok(())
}
