//! DaemonSets end to end with kubectl, on four nodes: the real node of `skiff up` (running
//! the http-probe WASM guest, which really serves) plus three hollow nodes from one
//! `skiff agent --hollow-nodes 3` process. One pod per node; a node labelled out loses its pod;
//! a template change rolls out (`kubectl rollout status` succeeds) and `kubectl rollout
//! history/undo` work on the ControllerRevisions; an OnDelete DaemonSet only updates pods that
//! are deleted; killing the hollow agent and deleting its Nodes removes their pods. A second
//! scenario runs a DaemonSet over several real `skiff agent` processes.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_tests::{Skiff, StoreKind, net::wait_until};

use crate::{get_json, pod_is_ready, push_guest};

const CONVERGE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

fn daemonset(name: &str, image: &str, strategy: &str, selector: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  \
         updateStrategy: {strategy}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      \
         nodeSelector: {selector}\n      containers:\n      - name: app\n        image: {image}\n        ports:\n        \
         - containerPort: 8080\n"
    )
}

/// node name → (pod name, controller-revision-hash, ready) for the non-terminating pods of `app`.
async fn pods_by_node(skiff: &Skiff, app: &str) -> Result<BTreeMap<String, (String, String, bool)>> {
    let pods = get_json(skiff, &["pods", "-l", &format!("app={app}")]).await?;
    let mut out = BTreeMap::new();
    for p in pods["items"].as_array().cloned().unwrap_or_default() {
        if p["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let node = p["spec"]["nodeName"].as_str().unwrap_or("<unscheduled>").to_string();
        let name = p["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let hash = p["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or_default().to_string();
        ensure!(out.insert(node.clone(), (name, hash, pod_is_ready(&p))).is_none(), "two pods of {app} on {node}");
    }
    Ok(out)
}

/// Waits until `app` has exactly one ready pod on each of `nodes` (and nowhere else), all with
/// a hash accepted by `hash_ok`.
async fn wait_pods_on(
    skiff: &Skiff,
    app: &str,
    nodes: &[String],
    hash_ok: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, (String, String, bool)>> {
    wait_until(&format!("{app}: one ready pod on each of {nodes:?}"), CONVERGE, POLL, || async {
        let pods = pods_by_node(skiff, app).await?;
        let ok = pods.len() == nodes.len()
            && nodes.iter().all(|n| pods.get(n).is_some_and(|(_, h, ready)| *ready && hash_ok(h)));
        Ok(ok.then_some(pods))
    })
    .await
}

#[tokio::test]
async fn daemonset_on_a_real_node_and_hollow_nodes() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let log_path = skiff.data_dir().join("hollow.log");
    let mut agent = tokio::process::Command::new(skiff.binary())
        .arg("agent")
        .arg("--kubeconfig")
        .arg(&skiff.kubeconfig)
        .args(["--hollow-nodes", "3", "--hollow-name-prefix", "h-"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting skiff agent --hollow-nodes")?;
    let nodes: Vec<String> = wait_until("four nodes", CONVERGE, POLL, || async {
        let names = crate::item_names(&get_json(&skiff, &["nodes"]).await?);
        Ok((names.len() == 4).then_some(names))
    })
    .await
    .with_context(|| skiff_tests::net::log_tail(&log_path, 20))?;
    let real = nodes.iter().find(|n| !n.starts_with("h-")).context("the real node")?.clone();
    skiff.kubectl(&["label", "nodes", "--all", "ds=on"]).await?.ok()?;

    // One pod per node; the real node's one serves HTTP.
    let image = push_guest(&skiff, "http-probe", "probes/http:v1").await?;
    let ds = daemonset("web", &image, "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 2}}", "{ds: 'on'}");
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&ds)).await?.ok()?;
    let first = wait_pods_on(&skiff, "web", &nodes, |_| true).await?;
    let v1 = first[&real].1.clone();
    ensure!(first.values().all(|(name, h, _)| h == &v1 && name.starts_with("web-")), "{first:?}");
    let pod = get_json(&skiff, &["pod", &first[&real].0]).await?;
    let ip = pod["status"]["podIP"].as_str().context("podIP of the real pod")?;
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?
        .get(format!("http://{ip}:8080/"))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "the real node's daemon pod serves: {}", resp.status());
    skiff.kubectl(&["rollout", "status", "ds/web", "--timeout=60s"]).await?.ok()?;
    let table = skiff.kubectl(&["get", "ds", "web"]).await?.ok()?;
    ensure!(table.contains("DESIRED") && table.lines().nth(1).is_some_and(|l| l.contains(" 4 ")), "{table}");

    // Labelled out: that node's pod goes.
    skiff.kubectl(&["label", "node", "h-00001", "ds=off", "--overwrite"]).await?.ok()?;
    let three: Vec<String> = nodes.iter().filter(|n| *n != "h-00001").cloned().collect();
    wait_pods_on(&skiff, "web", &three, |h| h == v1).await?;

    // A template change rolls out; history shows two revisions; undo brings v1's hash back.
    let patch = r#"{"spec":{"template":{"metadata":{"annotations":{"rev":"2"}}}}}"#;
    skiff.kubectl(&["patch", "ds", "web", "-p", patch]).await?.ok()?;
    skiff.kubectl(&["rollout", "status", "ds/web", "--timeout=90s"]).await?.ok()?;
    let rolled = wait_pods_on(&skiff, "web", &three, |h| h != v1).await?;
    let v2 = rolled[&real].1.clone();
    let status = get_json(&skiff, &["ds", "web"]).await?["status"].clone();
    ensure!(status["updatedNumberScheduled"] == 3 && status["numberAvailable"] == 3, "{status}");
    let history = skiff.kubectl(&["rollout", "history", "ds/web"]).await?.ok()?;
    ensure!(history.lines().filter(|l| l.trim_start().starts_with(['1', '2'])).count() == 2, "{history}");
    let revs = get_json(&skiff, &["controllerrevisions", "-l", "app=web"]).await?;
    ensure!(crate::item_names(&revs).contains(&format!("web-{v2}")), "revision named web-<hash>: {revs}");
    skiff.kubectl(&["rollout", "undo", "ds/web"]).await?.ok()?;
    skiff.kubectl(&["rollout", "status", "ds/web", "--timeout=90s"]).await?.ok()?;
    wait_pods_on(&skiff, "web", &three, |h| h == v1).await?;

    // OnDelete: a template change alone replaces nothing; a deleted pod comes back updated.
    let od = daemonset("od", "example.invalid/od:1", "{type: OnDelete}", "{skiff.dev/hollow: 'true'}");
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&od)).await?.ok()?;
    let hollow: Vec<String> = nodes.iter().filter(|n| n.starts_with("h-")).cloned().collect();
    let before = wait_pods_on(&skiff, "od", &hollow, |_| true).await?;
    skiff.kubectl(&["patch", "ds", "od", "-p", patch]).await?.ok()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(pods_by_node(&skiff, "od").await? == before, "OnDelete leaves pods alone");
    skiff.kubectl(&["delete", "pod", &before["h-00000"].0]).await?.ok()?;
    let old_hash = before["h-00000"].1.clone();
    let after = wait_until("od's deleted pod replaced", CONVERGE, POLL, || async {
        let pods = pods_by_node(&skiff, "od").await?;
        Ok(pods.get("h-00000").is_some_and(|(_, h, ready)| *ready && h != &old_hash).then_some(pods))
    })
    .await?;
    ensure!(after["h-00002"].1 == old_hash, "the others keep the old template: {after:?}");

    // The hollow agent dies and its Nodes are deleted: their pods go.
    agent.kill().await?;
    skiff.kubectl(&["delete", "nodes", "-l", "skiff.dev/hollow=true"]).await?.ok()?;
    wait_pods_on(&skiff, "web", std::slice::from_ref(&real), |h| h == v1).await?;
    wait_until("od has no pods left", CONVERGE, POLL, || async {
        Ok(pods_by_node(&skiff, "od").await?.is_empty().then_some(()))
    })
    .await?;
    let events = skiff.kubectl(&["get", "events"]).await?.ok()?;
    ensure!(events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"), "{events}");
    Ok(())
}

/// The issue's shape: a DaemonSet over several real `skiff agent` processes (each a WASM node
/// with its own pod CIDR) beside the node of `skiff up` — every daemon pod really serves, a node
/// that joins gets one, and a node that leaves loses it.
#[tokio::test]
async fn daemonset_on_several_real_agents() -> Result<()> {
    let skiff = Skiff::start(StoreKind::Embedded).await?;
    let a = skiff_tests::Agent::start(&skiff, "agent-a").await?;
    let mut b = skiff_tests::Agent::start(&skiff, "agent-b").await?;
    let nodes = crate::item_names(&get_json(&skiff, &["nodes"]).await?);
    ensure!(nodes.len() == 3 && nodes.contains(&a.name) && nodes.contains(&b.name), "three nodes: {nodes:?}");
    let image = push_guest(&skiff, "http-probe", "probes/http:v1").await?;
    let ds = daemonset("agents", &image, "{type: RollingUpdate}", "{kubernetes.io/os: linux}");
    skiff.kubectl_stdin(&["apply", "-f", "-"], Some(&ds)).await?.ok()?;
    let pods = wait_pods_on(&skiff, "agents", &nodes, |_| true).await?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    for (node, (name, _, _)) in &pods {
        let pod = get_json(&skiff, &["pod", name]).await?;
        let ip = pod["status"]["podIP"].as_str().with_context(|| format!("podIP of {name}"))?;
        let resp = http.get(format!("http://{ip}:8080/")).send().await?;
        ensure!(resp.status().is_success(), "the daemon pod on {node} serves: {}", resp.status());
    }
    skiff.kubectl(&["rollout", "status", "ds/agents", "--timeout=60s"]).await?.ok()?;

    // A node joins: it gets its pod.
    let c = skiff_tests::Agent::start(&skiff, "agent-c").await?;
    let mut four = nodes.clone();
    four.push(c.name.clone());
    wait_pods_on(&skiff, "agents", &four, |_| true).await?;

    // A node leaves (agent stopped, Node deleted): its pod goes.
    b.stop().await?;
    skiff.kubectl(&["delete", "node", &b.name]).await?.ok()?;
    let left: Vec<String> = four.iter().filter(|n| **n != b.name).cloned().collect();
    wait_pods_on(&skiff, "agents", &left, |_| true).await?;
    Ok(())
}
