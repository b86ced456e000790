//! The `service` benchmark: requests/s and p99 of `examples/hello-http` through its Service's
//! cluster IP (the node agent's service proxy) against straight to the pod IP, in one run.
//!
//! Cluster IPs are only local addresses in bridge mode, so `skiff up --pod-network bridge` runs
//! inside a network namespace this benchmark creates (root), and `wrk` runs in it too. The two
//! targets alternate (pod IP, cluster IP, pod IP, …), each measured run after its own warm-up;
//! each side's figure is the median of its rounds. Target: the cluster IP at ≥ 0.9× direct —
//! the proxy hands a connection for a WASM pod of its own node straight to the pod's HTTP
//! server, so only the accept differs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use skiff_tests::{NetNs, wait_until};

use crate::http::{WrkResult, median, run_wrk, wrk_row};

use crate::pods::{Cluster, release_warning, verdict};
use crate::report;

/// Settings of one `service` run.
#[derive(Debug, Clone)]
pub struct ServiceBench {
    /// `wrk -t`.
    pub threads: usize,
    /// `wrk -c`.
    pub connections: usize,
    /// Measured seconds per run.
    pub duration_s: u64,
    /// Warm-up seconds before each measured run.
    pub warmup_s: u64,
    /// Measured runs per side.
    pub rounds: usize,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

impl ServiceBench {
    /// Runs the comparison and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let netns = NetNs::create()?;
        let cluster = Cluster::start_bridge(self.skiff_bin.as_ref(), &netns).await?;
        let result = self.measure(&cluster, &netns).await;
        cluster.with_log(result)
    }

    async fn measure(&self, cluster: &Cluster, netns: &NetNs) -> Result<String> {
        let namespace = "bench-service";
        cluster.create_namespace(namespace).await?;
        let mut watch = cluster.watch_ready(namespace).await?;
        cluster.create_pod(namespace, "hello").await?;
        let pod = watch.wait_for("hello").await?;
        let ip = pod.pod_ip.context("Ready pod has no podIP")?;
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
            "spec": {"selector": {"bench": "pods"}, "ports": [{"port": 80, "targetPort": 8080}]}});
        let response = cluster
            .http
            .post(format!("{}/api/v1/namespaces/{namespace}/services", cluster.skiff.url))
            .json(&service)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("creating the Service: {} {}", response.status(), response.text().await?);
        }
        let created: serde_json::Value = response.json().await?;
        let cluster_ip = created["spec"]["clusterIP"].as_str().context("the Service has no clusterIP")?.to_string();
        let direct = format!("http://{ip}:8080/");
        let proxied = format!("http://{cluster_ip}/");
        let direct_body = serving(netns, &direct).await?;
        let proxied_body = serving(netns, &proxied).await?;
        eprintln!("pod {direct}: {direct_body:?}; service {proxied}: {proxied_body:?}");

        let (mut direct_runs, mut proxied_runs) = (Vec::new(), Vec::new());
        for round in 0..self.rounds.max(1) {
            for (side, url, runs) in
                [("pod IP", &direct, &mut direct_runs), ("cluster IP", &proxied, &mut proxied_runs)]
            {
                self.wrk(netns, url, self.warmup_s).await?;
                let result = self.wrk(netns, url, self.duration_s).await?;
                eprintln!("round {round} {side}: {result:?}");
                runs.push(result);
            }
        }
        Ok(self.render((&direct_body, &proxied_body), &direct_runs, &proxied_runs))
    }

    /// `wrk` inside the namespace.
    async fn wrk(&self, netns: &NetNs, url: &str, seconds: u64) -> Result<WrkResult> {
        run_wrk(netns.command("wrk"), (self.threads, self.connections), url, None, seconds).await
    }

    fn render(&self, bodies: (&str, &str), direct: &[WrkResult], proxied: &[WrkResult]) -> String {
        let d = median(direct);
        let p = median(proxied);
        let ratio = p.requests_per_s / d.requests_per_s.max(f64::MIN_POSITIVE);
        let mut out = format!(
            "## Service: hello-http through its ClusterIP vs the pod IP\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce (root: it creates a network namespace): `bash scripts/build-guests.sh && \
             cargo build --release -p skiff -p skiff-bench && target/release/skiff-bench service --threads {} \
             --connections {} --duration {} --warmup {} --rounds {}`\n\n\
             One hello-http pod of a `skiff up --pod-network bridge` running in a fresh network namespace, \
             hit by `wrk -t{} -c{} -d{}s --latency` (run in the namespace) on its pod IP (podIP:8080) and \
             through its Service's cluster IP (port 80, the node agent's service proxy, which hands each \
             connection for a WASM pod of its own node straight to the pod's HTTP server). Each run after a \
             {} s warm-up, sides alternating for {} rounds; the figure is the median of a side's rounds. \
             Response bodies: pod IP {:?}, cluster IP {:?}.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            self.threads,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.rounds,
            self.threads,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.rounds,
            bodies.0.trim(),
            bodies.1.trim(),
        );
        out += &report::table(
            &["path", "requests/s (median)", "p50 ms", "p99 ms", "requests/s per round", "errors", "target"],
            &[
                wrk_row(
                    "cluster IP (service proxy)",
                    &p,
                    proxied,
                    format!("≥ 0.9× pod IP: {ratio:.2}× — {}", verdict(ratio >= 0.9)),
                ),
                wrk_row("pod IP (direct)", &d, direct, "—".into()),
            ],
        );
        out
    }
}

/// Waits (bounded) until `url` answers from inside the namespace; the body.
async fn serving(netns: &NetNs, url: &str) -> Result<String> {
    wait_until(&format!("{url} to answer"), Duration::from_secs(60), Duration::from_millis(200), || async {
        let out = netns.command("curl").args(["-sS", "--fail", "-m", "5", url]).output().await?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    })
    .await
}
