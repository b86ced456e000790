//! Hollow nodes (`skiff agent --hollow-nodes N`), end to end: one process registers N Ready
//! nodes that renew their Leases, a Deployment's pods are bound across them by the scheduler
//! (spread, not piled on one node) and reported Running by the hollow kubelets, and scaling
//! down finishes — the hollow nodes confirm graceful deletions as a kubelet would. This is the
//! machinery the `sched` benchmark uses at 5,000 nodes.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Skiff, StartOptions, StoreKind, net::wait_until};

use crate::{get_json, write_manifest};

const NODES: usize = 30;
const PODS: usize = 60;
const CONVERGE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: scale
spec:
  replicas: 60
  selector:
    matchLabels: {app: scale}
  template:
    metadata:
      labels: {app: scale}
    spec:
      containers:
      - name: app
        image: example.invalid/hollow:1
        resources:
          requests: {cpu: 10m, memory: 16Mi}
"#;

fn ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[tokio::test]
async fn hollow_nodes_run_a_deployment_spread_over_them() -> Result<()> {
    let skiff = Skiff::start_with(StartOptions::control_plane_only(StoreKind::Embedded)).await?;
    let log_path = skiff.data_dir().join("hollow.log");
    let log = std::fs::File::create(&log_path)?;
    let _agent = tokio::process::Command::new(skiff.binary())
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&skiff.kubeconfig)
        .args(["--hollow-nodes", &NODES.to_string(), "--hollow-name-prefix", "h-"])
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting skiff agent --hollow-nodes")?;
    let log_tail = || skiff_tests::net::log_tail(&log_path, 20);

    wait_until("every hollow node Ready with a Lease", CONVERGE, POLL, || async {
        let nodes = get_json(&skiff, &["nodes", "-l", "skiff.dev/hollow=true"]).await?;
        let leases = get_json(&skiff, &["leases", "-n", "kube-node-lease"]).await?;
        let ready = nodes["items"].as_array().map_or(0, |n| n.iter().filter(|n| ready(n)).count());
        let leased =
            leases["items"].as_array().map_or(0, |l| l.iter().filter(|l| l["spec"]["renewTime"].is_string()).count());
        Ok((ready == NODES && leased == NODES).then_some(()))
    })
    .await
    .with_context(log_tail)?;
    let names = get_json(&skiff, &["nodes"]).await?;
    let first = names["items"][0]["metadata"]["name"].as_str().unwrap_or_default().to_string();
    ensure!(first.starts_with("h-") && first.len() == 7, "hollow node names are <prefix><5 digits>, got {first}");

    let manifest = write_manifest(&skiff, "scale.yaml", DEPLOYMENT)?;
    skiff.kubectl(&["apply", "-f", manifest.to_str().context("path")?]).await?.ok()?;
    let pods = wait_until("every pod Running and Ready on a hollow node", CONVERGE, POLL, || async {
        let pods = get_json(&skiff, &["pods", "-l", "app=scale"]).await?;
        let items = pods["items"].as_array().cloned().unwrap_or_default();
        let running = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && crate::pod_is_ready(p))
            .filter(|p| p["spec"]["nodeName"].as_str().is_some_and(|n| n.starts_with("h-")))
            .count();
        Ok((items.len() == PODS && running == PODS).then_some(items))
    })
    .await
    .with_context(log_tail)?;
    let used: BTreeSet<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
    ensure!(used.len() >= NODES * 2 / 3, "the scheduler spreads 60 pods over 30 nodes; used only {}", used.len());
    ensure!(
        pods.iter().all(|p| p["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("100."))),
        "hollow pods get an IP from their node's CIDR"
    );

    skiff.kubectl(&["scale", "deployment", "scale", "--replicas=5"]).await?.ok()?;
    wait_until("scale-down finished (hollow nodes confirm deletions)", CONVERGE, POLL, || async {
        let pods = get_json(&skiff, &["pods", "-l", "app=scale"]).await?;
        Ok((pods["items"].as_array().map_or(0, Vec::len) == 5).then_some(()))
    })
    .await
    .with_context(log_tail)?;
    let d = get_json(&skiff, &["deployment", "scale"]).await?;
    ensure!(d["status"]["availableReplicas"] == 5, "deployment status follows: {}", d["status"]);
    Ok(())
}
