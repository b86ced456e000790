//! The `ingress` benchmark: requests/s and p99 latency of `examples/hello-http` reached
//! through the node's Ingress (host rule, HTTP) and straight on the pod IP, in one run, both
//! loaded by `wrk` with the same settings — the price of the proxy hop.
//!
//! `skiff up` runs on the host's loopback network with its ingress on a free port of
//! `127.0.0.1` (never 80). The two targets alternate (direct, ingress, direct, …), each run
//! after its own warm-up; a side's figure is the median of its rounds.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;
use skiff_tests::net::free_port;
use skiff_tests::wait_until;

use crate::http::{HttpBench, WrkResult, median, wrk_row};
use crate::pods::{Cluster, release_warning};
use crate::report;

/// The host the benchmark's Ingress rule names (wrk sends it as `Host`).
const HOST: &str = "hello.bench.test";

/// Settings of one `ingress` run.
#[derive(Debug, Clone)]
pub struct IngressBench {
    pub threads: usize,
    pub connections: usize,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub rounds: usize,
    pub skiff_bin: Option<PathBuf>,
    pub load_at_start: String,
}

impl IngressBench {
    /// Runs the comparison and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let port = free_port()?;
        let args = ["--ingress-http-port", &port.to_string(), "--ingress-https-port", "0"].map(String::from).to_vec();
        let mut cluster = Cluster::start_with_args(self.skiff_bin.clone(), args).await?;
        cluster.push_hello_http().await?;
        let ns = "bench-ingress";
        cluster.create_namespace(ns).await?;
        let mut watch = cluster.watch_ready(ns).await?;
        cluster.create_pod(ns, "hello").await?;
        let pod = cluster.with_log(watch.wait_for("hello").await)?;
        let ip = pod.pod_ip.context("Ready pod has no podIP")?;
        self.create(
            &cluster,
            ns,
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hello"},
            "spec": {"selector": {"bench": "pods"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await?;
        self.create(
            &cluster,
            ns,
            "ingresses",
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "hello"},
            "spec": {"rules": [{"host": HOST, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "hello", "port": {"number": 80}}}}]}}]}}),
        )
        .await?;
        let direct = format!("http://{ip}:8080/");
        let through = format!("http://127.0.0.1:{port}/");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let body = cluster.with_log(
            wait_until("the ingress to answer 200", Duration::from_secs(60), Duration::from_millis(100), || {
                let request = client.get(&through).header("host", HOST).send();
                async move {
                    let response = request.await?;
                    Ok(if response.status().is_success() { Some(response.text().await?) } else { None })
                }
            })
            .await,
        )?;
        eprintln!("pod {direct}; ingress {through} (Host: {HOST}): {body:?}");

        let wrk = HttpBench {
            threads: self.threads,
            connections: self.connections,
            duration_s: self.duration_s,
            warmup_s: self.warmup_s,
            rounds: self.rounds,
            wasmtime: PathBuf::new(),
            skiff_bin: None,
            load_at_start: String::new(),
        };
        let host_header = format!("Host: {HOST}");
        let (mut direct_runs, mut ingress_runs) = (Vec::new(), Vec::new());
        for round in 0..self.rounds.max(1) {
            for (side, url, header, runs) in [
                ("direct", &direct, None, &mut direct_runs),
                ("ingress", &through, Some(host_header.as_str()), &mut ingress_runs),
            ] {
                wrk.wrk_with(url, header, self.warmup_s).await?;
                let result = wrk.wrk_with(url, header, self.duration_s).await?;
                eprintln!("round {round} {side}: {result:?}");
                runs.push(result);
            }
        }
        Ok(self.render(&body, &direct_runs, &ingress_runs))
    }

    async fn create(&self, cluster: &Cluster, ns: &str, plural: &str, body: serde_json::Value) -> Result<()> {
        let prefix = if plural == "ingresses" { "apis/networking.k8s.io/v1" } else { "api/v1" };
        let url = format!("{}/{prefix}/namespaces/{ns}/{plural}", cluster.skiff.url);
        let response = cluster.http.post(url).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("creating {plural}: {} {}", response.status(), response.text().await?);
        }
        Ok(())
    }

    fn render(&self, body: &str, direct: &[WrkResult], ingress: &[WrkResult]) -> String {
        let d = median(direct);
        let i = median(ingress);
        let ratio = i.requests_per_s / d.requests_per_s.max(f64::MIN_POSITIVE);
        let mut out = format!(
            "## Ingress: hello-http through the node's Ingress vs straight to the pod\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce: `bash scripts/build-guests.sh && cargo build --release -p skiff -p skiff-bench && \
             target/release/skiff-bench ingress --threads {} --connections {} --duration {} --warmup {} --rounds {}`\n\n\
             One hello-http pod (release `skiff up`, loopback pod network), hit on podIP:8080 and through an \
             Ingress host rule on the node's ingress HTTP port (`Host: {HOST}`; the ingress proxies over a \
             pooled HTTP/1.1 connection to the same podIP:8080). Load: `wrk -t{} -c{} -d{}s --latency`, \
             each run after a {} s warm-up, sides alternating direct/ingress for {} rounds; the figure is \
             the median of a side's rounds. Nothing pinned: server, proxy and wrk share the cores. \
             Response body: {:?}.\n\n",
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
            body.trim(),
        );
        out += &report::table(
            &["path", "requests/s (median)", "p50 ms", "p99 ms", "requests/s per round", "errors", "vs direct"],
            &[
                wrk_row("pod IP (direct)", &d, direct, "—".into()),
                wrk_row(
                    "Ingress",
                    &i,
                    ingress,
                    format!("{ratio:.2}× the requests/s, p99 +{:.2} ms", i.p99_ms - d.p99_ms),
                ),
            ],
        );
        out
    }
}
