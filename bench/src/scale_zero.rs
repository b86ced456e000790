//! The `scale-from-zero` benchmark: how long the first request to a scaled-to-zero WASM HTTP
//! Deployment waits, from its first byte sent to the full response, through the Service's
//! cluster IP. Target: p99 ≤ 50 ms (issue 6).
//!
//! Cluster IPs are only local addresses in bridge mode, so `skiff up --pod-network bridge` runs
//! inside a network namespace this benchmark creates (root), and curl runs in it too. One
//! hello-http Deployment annotated `skiff.dev/scale-to-zero: "true"` (with an idle period of an
//! hour, so the control plane never scales it down under the benchmark) behind a ClusterIP
//! Service. Each round: scale it to 0 and wait until no pod and no endpoint is left, then one
//! `curl` through the cluster IP; the figure is curl's `time_total - time_pretransfer` (request
//! sent → last byte received: everything the scale-from-zero chain costs — the held connection,
//! the scale-up, ReplicaSet, pod, scheduling, start, readiness, endpoints, the proxy). The time
//! of the whole curl (connect included) is shown beside it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::{NetNs, wait_until};

use crate::pods::{Cluster, micros_histogram, release_warning, verdict};
use crate::report;

const NAMESPACE: &str = "bench-zero";
const NAME: &str = "hello";
/// The target: p99 of request sent → response.
const TARGET_P99_MS: f64 = 50.0;

/// Settings of one `scale-from-zero` run.
#[derive(Debug, Clone)]
pub struct ScaleZeroBench {
    /// Measured scale-from-zero requests.
    pub rounds: usize,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

/// One round's timings.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Request sent → last byte received.
    request: Duration,
    /// The whole curl, connect included.
    total: Duration,
}

impl ScaleZeroBench {
    /// Runs the rounds and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let netns = NetNs::create()?;
        let cluster = Cluster::start_bridge(self.skiff_bin.as_ref(), &netns).await?;
        let result = self.measure(&cluster, &netns).await;
        cluster.with_log(result)
    }

    async fn measure(&self, cluster: &Cluster, netns: &NetNs) -> Result<String> {
        cluster.create_namespace(NAMESPACE).await?;
        let base = format!("{}/apis/apps/v1/namespaces/{NAMESPACE}/deployments", cluster.skiff.url);
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "annotations": {
                "skiff.dev/scale-to-zero": "true", "skiff.dev/scale-to-zero-idle": "1h"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": NAME}},
                "template": {"metadata": {"labels": {"app": NAME}}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "hello", "image": cluster.image,
                        "ports": [{"name": "http", "containerPort": 8080}]}]}}}});
        post(&cluster.http, &base, &deployment).await?;
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": NAME},
            "spec": {"selector": {"app": NAME}, "ports": [{"port": 80, "targetPort": "http"}]}});
        let created =
            post(&cluster.http, &format!("{}/api/v1/namespaces/{NAMESPACE}/services", cluster.skiff.url), &service)
                .await?;
        let ip = created["spec"]["clusterIP"].as_str().context("the Service has no clusterIP")?.to_string();
        let url = format!("http://{ip}/bench");
        // Let the controllers see the new Deployment (its ReplicaSet at zero) before the first wake.
        tokio::time::sleep(Duration::from_secs(2)).await;

        // A first scale-up outside the measurement (the agent compiles the component once).
        let (body, warm) = curl(netns, &url).await?;
        ensure!(body.starts_with("Hello"), "{url} answered {body:?}");
        eprintln!("warm-up scale-from-zero: {warm:?}");

        let mut rounds = Vec::new();
        for round in 0..self.rounds.max(1) {
            to_zero(cluster, &base).await?;
            let (body, timing) = curl(netns, &url).await?;
            ensure!(body.starts_with("Hello"), "round {round}: {url} answered {body:?}");
            eprintln!("round {round}: {timing:?}");
            rounds.push(timing);
        }
        self.render(&ip, &rounds)
    }

    fn render(&self, ip: &str, rounds: &[Round]) -> Result<String> {
        let mut request = micros_histogram()?;
        let mut total = micros_histogram()?;
        for r in rounds {
            request.record(micros(r.request))?;
            total.record(micros(r.total))?;
        }
        let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let p99 = ms(&request, 0.99);
        let mut out = format!(
            "## Scale-from-zero: first request to a WASM Deployment at zero replicas\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce (root: it creates a network namespace): `bash scripts/build-guests.sh && \
             cargo build --release -p skiff -p skiff-bench && target/release/skiff-bench scale-from-zero \
             --rounds {}`\n\n\
             A hello-http Deployment annotated `skiff.dev/scale-to-zero: \"true\"` behind a ClusterIP \
             Service ({ip}:80) of a `skiff up --pod-network bridge` in a fresh network namespace. Each of \
             {} rounds scales it to 0, waits until no pod and no endpoint is left, then sends one request \
             with curl (in the namespace) through the cluster IP: the node agent's proxy holds the \
             connection, scales the Deployment to 1 and relays the request once the pod is ready. \
             *Request → response* is curl's `time_total - time_pretransfer` (first byte sent to last byte \
             received); *whole curl* adds the TCP connect.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            self.rounds,
            rounds.len(),
        );
        out += &report::table(
            &["measure", "p50 ms", "p99 ms", "max ms", "rounds", "target"],
            &[
                vec![
                    "request → response".into(),
                    format!("{:.1}", ms(&request, 0.5)),
                    format!("{p99:.1}"),
                    format!("{:.1}", request.max() as f64 / 1000.0),
                    rounds.len().to_string(),
                    format!("p99 ≤ {TARGET_P99_MS} ms — {}", verdict(p99 <= TARGET_P99_MS)),
                ],
                vec![
                    "whole curl".into(),
                    format!("{:.1}", ms(&total, 0.5)),
                    format!("{:.1}", ms(&total, 0.99)),
                    format!("{:.1}", total.max() as f64 / 1000.0),
                    rounds.len().to_string(),
                    "—".into(),
                ],
            ],
        );
        Ok(out)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let response = http.post(url).json(body).send().await?;
    if !response.status().is_success() {
        bail!("POST {url}: {} {}", response.status(), response.text().await?);
    }
    Ok(response.json().await?)
}

/// Scales the Deployment to 0 and waits until its pods and ready endpoints are gone.
async fn to_zero(cluster: &Cluster, base: &str) -> Result<()> {
    let response = cluster
        .http
        .patch(format!("{base}/{NAME}"))
        .header("content-type", "application/merge-patch+json")
        .body(json!({"spec": {"replicas": 0}}).to_string())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("scaling to zero: {} {}", response.status(), response.text().await?);
    }
    let api = &cluster.skiff.url;
    wait_until("no pod and no endpoint", Duration::from_secs(60), Duration::from_millis(50), || async {
        let pods: Value =
            cluster.http.get(format!("{api}/api/v1/namespaces/{NAMESPACE}/pods")).send().await?.json().await?;
        let slices: Value = cluster
            .http
            .get(format!("{api}/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"))
            .send()
            .await?
            .json()
            .await?;
        let no_pods = pods["items"].as_array().is_none_or(Vec::is_empty);
        let no_endpoints = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["endpoints"].as_array().is_none_or(Vec::is_empty));
        Ok((no_pods && no_endpoints).then_some(()))
    })
    .await?;
    // The proxies follow the endpoints by watch: let that land before the next request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// One GET of `url` from inside the namespace: the body and its timings.
async fn curl(netns: &NetNs, url: &str) -> Result<(String, Round)> {
    let out = netns
        .command("curl")
        .args(["-sS", "--fail", "-m", "40", "-w", "\n%{time_pretransfer} %{time_total}", url])
        .output()
        .await
        .context("running curl")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "curl {url}: {} {}", out.status, String::from_utf8_lossy(&out.stderr));
    let (body, times) = stdout.rsplit_once('\n').context("no timings in curl's output")?;
    let mut times = times.split_whitespace().map(|t| t.parse::<f64>().context("curl timing"));
    let pretransfer = times.next().context("no time_pretransfer")??;
    let total = times.next().context("no time_total")??;
    let round = Round {
        request: Duration::from_secs_f64((total - pretransfer).max(0.0)),
        total: Duration::from_secs_f64(total),
    };
    Ok((body.to_string(), round))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_reports_percentiles_and_the_verdict() {
        let bench = ScaleZeroBench { rounds: 3, skiff_bin: None, load_at_start: String::new() };
        let rounds: Vec<Round> = [10u64, 20, 30]
            .iter()
            .map(|ms| Round { request: Duration::from_millis(*ms), total: Duration::from_millis(ms + 1) })
            .collect();
        let section = bench.render("10.96.0.20", &rounds).expect("render");
        assert!(section.contains("scale-from-zero --rounds 3"), "{section}");
        assert!(section.contains("| request → response | 20.0 | 30.0 | 30.0 | 3 | p99 ≤ 50 ms — met |"), "{section}");
    }
}
