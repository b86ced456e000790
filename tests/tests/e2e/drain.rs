//! Cordon and drain with a PodDisruptionBudget, through kubectl: `kubectl cordon` keeps new
//! pods off a node, `kubectl drain` evicts its pods through `pods/eviction` one budget-allowed
//! disruption at a time, a budget that allows nothing makes drain time out reporting it, and
//! `kubectl uncordon` opens the node again.

use std::time::Duration;

use anyhow::{Result, ensure};
use skiff_tests::{Agent, Skiff, StartOptions, StoreKind, wait_until};

use crate::node_failure::{app_pods, deployment, node_of};
use crate::{get_json, pod_is_ready, push_guest};

const POLL: Duration = Duration::from_millis(250);

const PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 2\n  \
                   selector:\n    matchLabels:\n      app: web\n";

async fn wait_ready_pods(skiff: &Skiff, n: usize) -> Result<Vec<serde_json::Value>> {
    wait_until(&format!("{n} Ready web pods"), Duration::from_secs(60), POLL, || async {
        let pods = app_pods(skiff, "web").await?;
        Ok((pods.len() == n && pods.iter().all(pod_is_ready)).then_some(pods))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_drain_respects_the_budget_and_uncordon() -> Result<()> {
    let skiff = Skiff::start_with(StartOptions::control_plane_only(StoreKind::Embedded)).await?;
    let _a = Agent::start(&skiff, "node-a").await?;
    let _b = Agent::start(&skiff, "node-b").await?;
    let image = push_guest(&skiff, "http-probe", "probe:v1").await?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&deployment("web", &image, 3))).await?.ok()?;
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(PDB)).await?.ok()?;
    let pods = wait_ready_pods(&skiff, 3).await?;
    // Drain the node holding more of them.
    let on_a = pods.iter().filter(|p| node_of(p) == "node-a").count();
    let (victim, other) = if on_a >= 2 { ("node-a", "node-b") } else { ("node-b", "node-a") };

    let pdb = wait_until("the budget's status", Duration::from_secs(20), POLL, || async {
        let pdb = get_json(&skiff, &["pdb", "web"]).await?;
        Ok((pdb["status"]["currentHealthy"] == 3).then_some(pdb))
    })
    .await?;
    let s = &pdb["status"];
    ensure!(s["desiredHealthy"] == 2 && s["expectedPods"] == 3 && s["disruptionsAllowed"] == 1, "status: {s}");

    skiff.kubectl(&["cordon", victim]).await?.ok()?;
    let node = get_json(&skiff, &["node", victim]).await?;
    ensure!(node["spec"]["unschedulable"] == true, "cordoned: {}", node["spec"]);
    skiff.kubectl(&["scale", "deployment", "web", "--replicas", "4"]).await?.ok()?;
    let pods = wait_ready_pods(&skiff, 4).await?;
    let before: Vec<&str> =
        pods.iter().filter(|p| node_of(p) == victim).filter_map(|p| p["metadata"]["name"].as_str()).collect();
    ensure!(before.len() == on_a.max(3 - on_a), "the new pod avoided the cordoned node: {before:?}");

    let drained = skiff
        .kubectl(&["drain", victim, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=60s"])
        .await?
        .ok()?;
    ensure!(drained.contains("drained"), "drain output: {drained}");
    for name in &before {
        ensure!(
            drained.contains(&format!("evicting pod default/{name}")) || drained.contains(name),
            "evicted {name}: {drained}"
        );
    }
    let pods = wait_ready_pods(&skiff, 4).await?;
    ensure!(pods.iter().all(|p| node_of(p) == other), "every pod on {other} now");

    // A budget that allows no disruption: drain times out and says why.
    skiff.kubectl(&["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec":{"minAvailable":4}}"#]).await?.ok()?;
    wait_until("the budget to allow nothing", Duration::from_secs(20), POLL, || async {
        let pdb = get_json(&skiff, &["pdb", "web"]).await?;
        Ok((pdb["status"]["observedGeneration"] == 2 && pdb["status"]["disruptionsAllowed"] == 0).then_some(()))
    })
    .await?;
    skiff.kubectl(&["uncordon", victim]).await?.ok()?;
    let node = get_json(&skiff, &["node", victim]).await?;
    ensure!(node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false, "uncordoned");
    let refused = skiff.kubectl(&["drain", other, "--ignore-daemonsets", "--timeout=8s"]).await?;
    ensure!(!refused.success, "drain must fail while the budget allows nothing");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    ensure!(said.contains("Cannot evict pod as it would violate the pod's disruption budget."), "drain output: {said}");
    ensure!(app_pods(&skiff, "web").await?.len() == 4, "nothing was evicted");
    skiff.kubectl(&["uncordon", other]).await?.ok()?;
    Ok(())
}
