//! The `sched` benchmark: scheduler and controller throughput at cluster scale on simulated
//! nodes — Kubernetes' scheduler_perf shape (5,000 nodes, 10,000 pods) on one machine.
//!
//! `skiff server` (embedded store) runs the control plane; one `skiff agent --hollow-nodes N`
//! process registers N hollow nodes that heartbeat and report bound pods Running without
//! running them. Once every node is Ready, one Deployment of P replicas is created and a watch
//! on its namespace timestamps each pod's first appearance, first binding and first Running.
//! The figures are P divided by the time from the Deployment's creation to the last pod bound
//! (and Running): the whole pipeline — Deployment → ReplicaSet → pod creates → scheduling →
//! bindings (→ node status) — not the scheduler's decision loop alone.
//!
//! Anchor: Kubernetes' scheduler_perf floor for this shape, 270 pods/s (a published figure; a
//! Kubernetes control plane cannot run here, so it is not measured in the same run).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::binary::skiff_binary;
use skiff_tests::{Skiff, StartOptions, StoreKind, wait_until};

use crate::pods::{load_note, release_warning, take_lines, verdict};
use crate::report;

/// Kubernetes scheduler_perf's floor on 5,000 nodes / 10,000 pods, pods/s.
pub const ANCHOR_PODS_PER_S: f64 = 270.0;
/// The target for pods bound per second with the embedded store.
pub const TARGET_PODS_PER_S: f64 = 5000.0;

/// Settings of one `sched` run.
#[derive(Debug, Clone)]
pub struct SchedBench {
    pub nodes: usize,
    pub pods: usize,
    pub skiff_bin: Option<PathBuf>,
}

/// When each pod was first seen in each state, relative to the Deployment's creation.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    created: Option<Duration>,
    bound: Option<Duration>,
    running: Option<Duration>,
}

impl SchedBench {
    /// Runs the benchmark and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let load = load_note();
        let binary = match &self.skiff_bin {
            Some(p) => p.clone(),
            None => skiff_binary()?,
        };
        let mut options = StartOptions::control_plane_only(StoreKind::Embedded);
        options.binary = Some(binary.clone());
        let skiff = Skiff::start_with(options).await?;
        let http = skiff.http()?;
        let agent_log = skiff.data_dir().join("hollow-agent.log");
        let log = std::fs::File::create(&agent_log).context("creating the hollow agent log")?;
        let mut agent = tokio::process::Command::new(&binary)
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&skiff.kubeconfig)
            .arg("--hollow-nodes")
            .arg(self.nodes.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting skiff agent --hollow-nodes")?;

        let started = Instant::now();
        let nodes_url = format!("{}/api/v1/nodes?labelSelector=skiff.dev%2Fhollow%3Dtrue", skiff.url);
        wait_until(
            &format!("{} hollow nodes Ready", self.nodes),
            Duration::from_secs(120 + self.nodes as u64 / 20),
            Duration::from_secs(1),
            || {
                let request = http.get(&nodes_url).send();
                async {
                    let list: Value = request.await?.json().await?;
                    let ready =
                        list["items"].as_array().map_or(0, |items| items.iter().filter(|n| node_ready(n)).count());
                    Ok((ready >= self.nodes).then_some(()))
                }
            },
        )
        .await
        .with_context(|| format!("hollow agent log: {}", skiff_tests::net::log_tail(&agent_log, 20)))?;
        let registration = started.elapsed();
        eprintln!("{} hollow nodes Ready in {:.1} s", self.nodes, registration.as_secs_f64());

        let ns = "bench-sched";
        let created = http
            .post(format!("{}/api/v1/namespaces", skiff.url))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .send()
            .await?;
        ensure!(created.status().is_success(), "creating namespace: {}", created.status());

        let watch_client = skiff.info.client_builder(true)?.timeout(Duration::from_secs(24 * 3600)).build()?;
        let watch_url = format!("{}/api/v1/namespaces/{ns}/pods?watch=true&timeoutSeconds=86400", skiff.url);
        let mut response = watch_client.get(&watch_url).send().await.context("opening the pod watch")?;
        ensure!(response.status().is_success(), "pod watch: {}", response.status());

        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "scale", "namespace": ns},
            "spec": {
                "replicas": self.pods,
                "selector": {"matchLabels": {"app": "scale"}},
                "template": {
                    "metadata": {"labels": {"app": "scale"}},
                    "spec": {"containers": [{"name": "app", "image": "example.invalid/hollow:1",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                },
            },
        });
        let t0 = Instant::now();
        let created = http
            .post(format!("{}/apis/apps/v1/namespaces/{ns}/deployments", skiff.url))
            .json(&deployment)
            .send()
            .await?;
        ensure!(created.status().is_success(), "creating the Deployment: {}", created.status());

        let deadline = t0 + Duration::from_secs(60 + self.pods as u64 / 10);
        let mut seen: HashMap<String, Seen> = HashMap::with_capacity(self.pods);
        let (mut bound, mut running) = (0usize, 0usize);
        let mut buffer = Vec::new();
        while running < self.pods {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let chunk = match tokio::time::timeout(remaining, response.chunk()).await {
                Ok(chunk) => chunk.context("reading the pod watch")?,
                Err(_) => bail!(
                    "timed out: {bound}/{} bound, {running} Running after {:.0} s; hollow agent log: {}",
                    self.pods,
                    t0.elapsed().as_secs_f64(),
                    skiff_tests::net::log_tail(&agent_log, 10)
                ),
            };
            let Some(chunk) = chunk else { bail!("the pod watch ended early ({bound} bound, {running} Running)") };
            let at = t0.elapsed();
            buffer.extend_from_slice(&chunk);
            for line in take_lines(&mut buffer) {
                let event: Value = serde_json::from_slice(&line).context("watch event is not JSON")?;
                let pod = &event["object"];
                let Some(name) = pod.pointer("/metadata/name").and_then(Value::as_str) else { continue };
                let s = seen.entry(name.to_string()).or_default();
                s.created.get_or_insert(at);
                if s.bound.is_none()
                    && pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty())
                {
                    s.bound = Some(at);
                    bound += 1;
                }
                if s.running.is_none() && pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running") {
                    s.running = Some(at);
                    running += 1;
                }
            }
        }
        let _ = agent.start_kill();
        let _ = agent.wait().await;

        let last = |f: fn(&Seen) -> Option<Duration>| seen.values().filter_map(f).max().unwrap_or_default();
        let all_bound = last(|s| s.bound);
        let all_running = last(|s| s.running);
        let first_created = seen.values().filter_map(|s| s.created).min().unwrap_or_default();
        let mut latencies: Vec<Duration> =
            seen.values().filter_map(|s| Some(s.bound?.saturating_sub(s.created?))).collect();
        latencies.sort();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p / 100.0).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        let per_s = |d: Duration| self.pods as f64 / d.as_secs_f64().max(1e-9);
        let bound_rate = per_s(all_bound);
        let running_rate = per_s(all_running);
        let sched_only = self.pods as f64 / all_bound.saturating_sub(first_created).as_secs_f64().max(1e-9);

        let command = format!(
            "cargo build --release -p skiff -p skiff-bench && target/release/skiff-bench sched --nodes {} --pods {}",
            self.nodes, self.pods
        );
        let mut out = String::new();
        out.push_str("## Scheduling at scale (hollow nodes)\n\n");
        out.push_str(&format!(
            "Measured {}{} on {}.{load} Reproduce: `{command}`\n\n",
            report::now(),
            release_warning(),
            report::machine()
        ));
        out.push_str(&format!(
            "`skiff server` (embedded store) with {} hollow nodes from one `skiff agent --hollow-nodes` process \
             (registered and Ready in {:.1} s); one Deployment of {} pods. Times from the Deployment's creation. \
             Anchor: Kubernetes scheduler_perf's floor of {ANCHOR_PODS_PER_S:.0} pods/s on the same shape \
             (published figure, not run here).\n\n",
            self.nodes,
            registration.as_secs_f64(),
            self.pods
        ));
        out.push_str("| measure | value | vs anchor | target |\n| --- | --- | --- | --- |\n");
        out.push_str(&format!(
            "| pods/s, Deployment created → last pod bound | {bound_rate:.0} | {:.1}× | ≥ {TARGET_PODS_PER_S:.0}: {} |\n",
            bound_rate / ANCHOR_PODS_PER_S,
            verdict(bound_rate >= TARGET_PODS_PER_S)
        ));
        out.push_str(&format!(
            "| pods/s, first pod created → last pod bound | {sched_only:.0} | {:.1}× | |\n",
            sched_only / ANCHOR_PODS_PER_S
        ));
        out.push_str(&format!(
            "| pods/s, Deployment created → last pod Running | {running_rate:.0} | {:.1}× | |\n",
            running_rate / ANCHOR_PODS_PER_S
        ));
        out.push_str(&format!(
            "| all {} pods bound / Running after | {:.2} s / {:.2} s | | |\n",
            self.pods,
            all_bound.as_secs_f64(),
            all_running.as_secs_f64()
        ));
        out.push_str(&format!(
            "| per pod, created → bound p50 / p99 | {:.0} ms / {:.0} ms | | |\n",
            pct(50.0).as_secs_f64() * 1000.0,
            pct(99.0).as_secs_f64() * 1000.0
        ));
        Ok(out)
    }
}

fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}
