//! The `pods` benchmark: create → Ready latency of WASM pods, and the cluster helpers the `http`
//! and `footprint` benchmarks share ([`Cluster`], [`ReadyWatch`]).
//!
//! Latency is measured on the client's clock, from sending the create to receiving the watch
//! event whose pod has `Ready=True`. One watch per namespace is opened before the first create
//! and kept open, so the figure is create + schedule + pull/start + status write + watch fan-out,
//! not watch setup. The sequential run creates one pod, waits for it, then the next; the burst
//! run creates all pods from 8 concurrent clients and times until the last one is Ready.
//! What this does not do: tune or inspect skiff; it only drives the public API.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use skiff_tests::binary::skiff_binary;
use skiff_tests::guests::guests_dir;
use skiff_tests::{Skiff, StartOptions, StoreKind, wait_until, with_timeout};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::load;
use crate::report;

/// How long one pod may take to become Ready before the benchmark fails.
const POD_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Repository and tag the benchmark pushes `hello_http.wasm` as.
const IMAGE_NAME: &str = "bench/hello-http:v1";

/// A release `skiff up` with `hello_http.wasm` pushed to its registry.
#[derive(Debug)]
pub struct Cluster {
    /// The running server.
    pub skiff: Skiff,
    /// API client (cluster CA, admin token, 30 s timeout).
    pub http: reqwest::Client,
    /// Image reference `skiff push` printed.
    pub image: String,
    /// The skiff binary in use.
    pub binary: PathBuf,
}

impl Cluster {
    /// Starts `skiff up` (embedded store) from `binary` (default: beside this bench).
    pub async fn start(binary: Option<PathBuf>) -> Result<Cluster> {
        Cluster::start_with_args(binary, Vec::new()).await
    }

    /// [`Cluster::start`] with further `skiff up` flags.
    pub async fn start_with_args(binary: Option<PathBuf>, extra_args: Vec<String>) -> Result<Cluster> {
        let binary = match binary {
            Some(path) => path,
            None => skiff_binary()?,
        };
        let mut options = StartOptions::new(StoreKind::Embedded);
        options.binary = Some(binary.clone());
        options.extra_args = extra_args;
        let skiff = Skiff::start_with(options).await?;
        let http = skiff.http()?;
        Ok(Cluster { skiff, http, image: String::new(), binary })
    }

    /// `skiff up --pod-network bridge` from `binary` (default: beside this bench) inside
    /// `netns` (cluster IPs and cluster DNS are served only in bridge mode), hello-http pushed.
    pub async fn start_bridge(binary: Option<&PathBuf>, netns: &skiff_tests::NetNs) -> Result<Cluster> {
        let binary = match binary {
            Some(path) => path.clone(),
            None => skiff_binary()?,
        };
        let mut options = StartOptions::new(StoreKind::Embedded);
        options.binary = Some(binary.clone());
        options.netns = Some(netns.name().to_string());
        options.extra_args = vec!["--pod-network".into(), "bridge".into()];
        let skiff = Skiff::start_with(options).await?;
        let http = skiff.http()?;
        let mut cluster = Cluster { skiff, http, image: String::new(), binary };
        cluster.push_hello_http().await?;
        Ok(cluster)
    }

    /// Pushes the hello-http example with `skiff push` and remembers the printed reference.
    pub async fn push_hello_http(&mut self) -> Result<()> {
        let wasm = hello_http_path()?;
        let output = with_timeout("skiff push", Duration::from_secs(60), async {
            tokio::process::Command::new(&self.binary)
                .arg("push")
                .arg(&wasm)
                .arg(IMAGE_NAME)
                .arg("--kubeconfig")
                .arg(&self.skiff.kubeconfig)
                .kill_on_drop(true)
                .output()
                .await
                .context("running skiff push")
        })
        .await?;
        ensure!(output.status.success(), "skiff push failed: {}", String::from_utf8_lossy(&output.stderr));
        self.image = String::from_utf8_lossy(&output.stdout).trim().to_string();
        ensure!(!self.image.is_empty(), "skiff push printed no reference");
        Ok(())
    }

    /// Adds the tail of skiff's log to an error, to say why a wait failed.
    pub fn with_log<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|error| error.context(format!("--- skiff log tail ---\n{}", self.skiff.log_tail(400))))
    }

    /// Creates namespace `name`.
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let response = self.http.post(format!("{}/api/v1/namespaces", self.skiff.url)).json(&body).send().await?;
        if !response.status().is_success() {
            bail!("creating namespace {name}: {} {}", response.status(), response.text().await?);
        }
        Ok(())
    }

    /// The pod's `status` as the API returns it now (or the error), for failure messages.
    pub async fn pod_status(&self, namespace: &str, name: &str) -> String {
        let url = format!("{}/api/v1/namespaces/{namespace}/pods/{name}", self.skiff.url);
        let result = async {
            let pod: Value = self.http.get(&url).send().await?.json().await?;
            anyhow::Ok(pod["status"].to_string())
        };
        result.await.unwrap_or_else(|error| format!("unknown ({error:#})"))
    }

    /// Deletes every pod of `namespace` and waits (bounded) until the list is empty, so the
    /// node's pod capacity is free again.
    pub async fn delete_all_pods(&self, namespace: &str) -> Result<()> {
        let url = format!("{}/api/v1/namespaces/{namespace}/pods", self.skiff.url);
        let list: Value = self.http.get(&url).send().await?.json().await?;
        let names: Vec<String> = list["items"]
            .as_array()
            .map(|items| {
                items.iter().filter_map(|p| p.pointer("/metadata/name")?.as_str().map(str::to_string)).collect()
            })
            .unwrap_or_default();
        let names = Arc::new(names);
        let (http, base) = (self.http.clone(), Arc::new(url.clone()));
        let deletes = load::run(names.len(), 8, move |i| {
            let request = http.delete(format!("{base}/{}?gracePeriodSeconds=0", names[i])).send();
            async move {
                let status = request.await?.status();
                ensure!(status.is_success() || status == reqwest::StatusCode::NOT_FOUND, "delete: {status}");
                Ok(())
            }
        })
        .await?;
        ensure!(deletes.errors == 0, "deleting pods: {}", deletes.first_error.as_deref().unwrap_or("?"));
        wait_until(
            &format!("all pods of {namespace} gone"),
            Duration::from_secs(120),
            Duration::from_millis(200),
            || {
                let request = self.http.get(&url).send();
                async move {
                    let list: Value = request.await?.json().await?;
                    Ok(list["items"].as_array().is_some_and(Vec::is_empty).then_some(()))
                }
            },
        )
        .await
    }

    /// Creates the hello-http pod `name` in `namespace`.
    pub async fn create_pod(&self, namespace: &str, name: &str) -> Result<()> {
        create_pod(&self.http, &self.skiff.url, &self.image, namespace, name).await
    }

    /// Opens a watch on the pods of `namespace` reporting each pod's first Ready=True.
    pub async fn watch_ready(&self, namespace: &str) -> Result<ReadyWatch> {
        self.watch_pods(namespace, is_ready).await
    }

    /// Opens a watch on the pods of `namespace` reporting each pod the first time `matches`
    /// holds for it (e.g. [`is_ready`]).
    pub async fn watch_pods(&self, namespace: &str, matches: PodPredicate) -> Result<ReadyWatch> {
        // The shared client's 30 s total timeout would cut the stream.
        let client = self
            .skiff
            .info
            .client_builder(true)?
            .timeout(Duration::from_secs(24 * 3600))
            .build()
            .context("building watch client")?;
        let url = format!("{}/api/v1/namespaces/{namespace}/pods?watch=true&timeoutSeconds=86400", self.skiff.url);
        let response = client.get(&url).send().await.context("opening watch")?;
        ensure!(response.status().is_success(), "watch {url}: {}", response.status());
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(read_watch(response, matches, tx, cancel.clone()));
        Ok(ReadyWatch { rx, seen: HashMap::new(), cancel, task })
    }
}

/// Path of the built hello-http example, or an error saying how to build it.
pub fn hello_http_path() -> Result<PathBuf> {
    let path = guests_dir().join("hello_http.wasm");
    ensure!(
        path.is_file(),
        "{} not found: run scripts/build-guests.sh (with the same CARGO_TARGET_DIR) first",
        path.display()
    );
    Ok(path)
}

/// A hello-http pod serving on containerPort 8080, on a WASM node.
fn pod(image: &str, namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "pods"}},
        "spec": {
            "containers": [{
                "name": "hello",
                "image": image,
                "ports": [{"containerPort": 8080}],
            }],
        },
    })
}

async fn create_pod(http: &reqwest::Client, base: &str, image: &str, namespace: &str, name: &str) -> Result<()> {
    let response = http
        .post(format!("{base}/api/v1/namespaces/{namespace}/pods"))
        .json(&pod(image, namespace, name))
        .send()
        .await?;
    let status = response.status();
    if status != reqwest::StatusCode::CREATED {
        bail!("create pod {name}: {status}: {}", response.text().await?);
    }
    Ok(())
}

/// Whether a pod (the watch event's `object`) is in the state a watch waits for.
pub type PodPredicate = fn(&Value) -> bool;

/// A pod seen Ready (or matching the watch's predicate), stamped when its event arrived.
#[derive(Debug, Clone)]
pub struct ReadyPod {
    /// Pod name.
    pub name: String,
    /// `status.podIP`, if set.
    pub pod_ip: Option<String>,
    /// When the event was read off the stream.
    pub at: Instant,
}

/// An open pod watch reporting pods that match its predicate (Ready unless
/// [`Cluster::watch_pods`] chose another); the reader task is cancelled on drop.
#[derive(Debug)]
pub struct ReadyWatch {
    rx: mpsc::UnboundedReceiver<Result<ReadyPod>>,
    seen: HashMap<String, ReadyPod>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ReadyWatch {
    /// Waits (bounded) until pod `name` has been seen Ready.
    pub async fn wait_for(&mut self, name: &str) -> Result<ReadyPod> {
        let deadline = tokio::time::Instant::now() + POD_READY_TIMEOUT;
        loop {
            if let Some(pod) = self.seen.get(name) {
                return Ok(pod.clone());
            }
            self.next(deadline).await.with_context(|| format!("waiting for pod {name} Ready"))?;
        }
    }

    /// Waits (bounded by `timeout`) until `count` distinct pods have been seen Ready.
    pub async fn wait_count(&mut self, count: usize, timeout: Duration) -> Result<Vec<ReadyPod>> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.seen.len() < count {
            self.next(deadline)
                .await
                .with_context(|| format!("waiting for {count} Ready pods ({} so far)", self.seen.len()))?;
        }
        Ok(self.seen.values().cloned().collect())
    }

    async fn next(&mut self, deadline: tokio::time::Instant) -> Result<()> {
        let pod =
            tokio::time::timeout_at(deadline, self.rx.recv()).await.context("timed out")?.context("watch ended")??;
        self.seen.entry(pod.name.clone()).or_insert(pod);
        Ok(())
    }
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

/// Reads watch events off `response` and sends every Ready pod (with its arrival time).
async fn read_watch(
    mut response: reqwest::Response,
    matches: PodPredicate,
    tx: mpsc::UnboundedSender<Result<ReadyPod>>,
    cancel: CancellationToken,
) {
    let mut buffer = Vec::new();
    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return,
            chunk = response.chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return,
            Err(error) => {
                let _ = tx.send(Err(error).context("reading watch"));
                return;
            }
        };
        let at = Instant::now();
        buffer.extend_from_slice(&chunk);
        for line in take_lines(&mut buffer) {
            let event: Value = match serde_json::from_slice(&line) {
                Ok(event) => event,
                Err(error) => {
                    let _ = tx.send(Err(error).context("watch event is not JSON"));
                    return;
                }
            };
            if let Some((name, pod_ip)) = matching_pod(&event, matches)
                && tx.send(Ok(ReadyPod { name, pod_ip, at })).is_err()
            {
                return;
            }
        }
    }
}

/// Removes and returns the complete (newline-terminated, non-empty) lines of `buffer`.
pub(crate) fn take_lines(buffer: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let Some(last) = buffer.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let rest = buffer.split_off(last + 1);
    let complete = std::mem::replace(buffer, rest);
    complete
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Name and pod IP of the pod in an ADDED/MODIFIED watch event for which `matches` holds.
fn matching_pod(event: &Value, matches: PodPredicate) -> Option<(String, Option<String>)> {
    let kind = event.get("type")?.as_str()?;
    if kind != "ADDED" && kind != "MODIFIED" {
        return None;
    }
    let pod = event.get("object")?;
    if !matches(pod) {
        return None;
    }
    let name = pod.pointer("/metadata/name")?.as_str()?.to_string();
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str).map(str::to_string);
    Some((name, ip))
}

/// Settings of one `pods` run.
#[derive(Debug, Clone)]
pub struct PodsBench {
    /// Pods of the one-after-another variant.
    pub pods: usize,
    /// Pods alive at once in the sequential variant: after this many, they are deleted
    /// (untimed) before the next batch, as a node takes at most 110 pods.
    pub batch: usize,
    /// Pods of the burst variant (all alive at once, so ≤ the node's capacity).
    pub burst_pods: usize,
    /// Concurrent clients of the burst variant.
    pub burst_clients: usize,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

/// Outcome of the burst variant.
#[derive(Debug)]
struct Burst {
    all_ready: Duration,
    creates: load::LoadResult,
    latency_ms: Histogram<u64>,
}

impl PodsBench {
    /// Runs both variants on one fresh cluster and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let mut cluster = Cluster::start(self.skiff_bin.clone()).await?;
        cluster.push_hello_http().await?;
        eprintln!("pushed {}", cluster.image);
        // One warm-up pod, so the image pull and first compile are not in the figures.
        cluster.create_namespace("bench-warmup").await?;
        let mut watch = cluster.watch_ready("bench-warmup").await?;
        let t0 = Instant::now();
        cluster.create_pod("bench-warmup", "warmup").await?;
        let warmup = cluster.with_log(watch.wait_for("warmup").await)?.at.duration_since(t0);
        eprintln!("warm-up pod Ready after {warmup:?}");
        let sequential = cluster.with_log(self.sequential(&cluster).await)?;
        let burst = cluster.with_log(self.burst(&cluster).await)?;
        Ok(self.render(warmup, &sequential, &burst))
    }

    async fn sequential(&self, cluster: &Cluster) -> Result<Histogram<u64>> {
        let namespace = "bench-pods-seq";
        cluster.create_namespace(namespace).await?;
        let mut watch = cluster.watch_ready(namespace).await?;
        let mut latency = micros_histogram()?;
        eprintln!("creating {} pods one after another", self.pods);
        for i in 0..self.pods {
            if i > 0 && i % self.batch.max(1) == 0 {
                eprintln!("{i} pods measured; deleting them (untimed)");
                cluster.delete_all_pods(namespace).await?;
            }
            let name = format!("seq-{i}");
            let t0 = Instant::now();
            cluster.create_pod(namespace, &name).await?;
            let ready = match watch.wait_for(&name).await {
                Ok(ready) => ready,
                Err(error) => {
                    let status = cluster.pod_status(namespace, &name).await;
                    return Err(error.context(format!("pod {name} status now: {status}")));
                }
            };
            latency.saturating_record(micros(ready.at.duration_since(t0)));
        }
        cluster.delete_all_pods(namespace).await?;
        Ok(latency)
    }

    async fn burst(&self, cluster: &Cluster) -> Result<Burst> {
        let namespace = "bench-pods-burst";
        cluster.create_namespace(namespace).await?;
        let mut watch = cluster.watch_ready(namespace).await?;
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (http, base, image) =
            (cluster.http.clone(), Arc::new(cluster.skiff.url.clone()), Arc::new(cluster.image.clone()));
        eprintln!("creating {} pods from {} clients", self.burst_pods, self.burst_clients);
        let started = Instant::now();
        let sent_by_workers = Arc::clone(&sent);
        let creates = load::run(self.burst_pods, self.burst_clients, move |i| {
            let (http, base, image) = (http.clone(), Arc::clone(&base), Arc::clone(&image));
            let sent = Arc::clone(&sent_by_workers);
            async move {
                let name = format!("burst-{i}");
                let t0 = Instant::now();
                create_pod(&http, &base, &image, namespace, &name).await?;
                sent.lock().map_err(|_| anyhow::anyhow!("send-time map poisoned"))?.insert(name, t0);
                Ok(())
            }
        })
        .await?;
        ensure!(
            creates.errors == 0,
            "{} burst creates failed, first: {}",
            creates.errors,
            creates.first_error.as_deref().unwrap_or("?")
        );
        let timeout = POD_READY_TIMEOUT + Duration::from_millis(200 * self.burst_pods as u64);
        let ready = watch.wait_count(self.burst_pods, timeout).await?;
        let sent = sent.lock().map_err(|_| anyhow::anyhow!("send-time map poisoned"))?;
        let mut latency_ms = micros_histogram()?;
        let mut last = started;
        for pod in &ready {
            let t0 = sent.get(&pod.name).with_context(|| format!("Ready pod {} was never created", pod.name))?;
            latency_ms.saturating_record(micros(pod.at.duration_since(*t0)));
            last = last.max(pod.at);
        }
        Ok(Burst { all_ready: last.duration_since(started), creates, latency_ms })
    }

    fn render(&self, warmup: Duration, seq: &Histogram<u64>, burst: &Burst) -> String {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let p99 = ms(seq, 0.99);
        let mut out = format!(
            "## Pods: create → Ready\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce: `bash scripts/build-guests.sh && cargo build --release -p skiff -p skiff-bench && \
             target/release/skiff-bench pods --pods {} --batch {} --burst-pods {} --burst-clients {}`\n\n\
             A release `skiff up` (embedded store, in-process node, loopback pod network) on a fresh \
             data dir; `hello_http.wasm` (examples/hello-http) pushed to the built-in registry with \
             `skiff push`; pods with `ports: [{{containerPort: 8080}}]`. Latency is client-side: from \
             sending the create (reqwest, HTTP/2, admin token) to reading the watch event with \
             `Ready=True` on a watch opened before the first create. One warm-up pod first (image \
             pull and first compile): Ready after {:.1} ms, not counted. Client and server share the \
             machine. The node accepts at most 110 pods (fixed `pods` capacity in \
             node/src/node_status.rs, no flag), so the sequential pods are measured in batches of {}: \
             after each batch its pods are deleted and gone from the API (untimed) before the next, \
             and the burst is limited to what fits at once.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            self.pods,
            self.batch,
            self.burst_pods,
            self.burst_clients,
            warmup.as_secs_f64() * 1000.0,
            self.batch,
        );
        out += "### One after another (create, wait Ready, next)\n\n";
        out += &report::table(
            &["pods", "p50 ms", "p90 ms", "p99 ms", "max ms", "target"],
            &[vec![
                seq.len().to_string(),
                format!("{:.1}", ms(seq, 0.5)),
                format!("{:.1}", ms(seq, 0.9)),
                format!("{p99:.1}"),
                format!("{:.1}", seq.max() as f64 / 1000.0),
                format!("p99 ≤ 20 ms: {}", verdict(p99 <= 20.0)),
            ]],
        );
        out += &format!("\n### Burst ({} clients create all pods at once; extra information)\n\n", self.burst_clients);
        let b = &burst.latency_ms;
        out += &report::table(
            &["pods", "creates/s", "all Ready after s", "pods Ready/s", "create→Ready p50 ms", "p99 ms", "max ms"],
            &[vec![
                b.len().to_string(),
                format!("{:.0}", burst.creates.per_second()),
                format!("{:.2}", burst.all_ready.as_secs_f64()),
                format!("{:.0}", b.len() as f64 / burst.all_ready.as_secs_f64().max(f64::MIN_POSITIVE)),
                format!("{:.1}", ms(b, 0.5)),
                format!("{:.1}", ms(b, 0.99)),
                format!("{:.1}", b.max() as f64 / 1000.0),
            ]],
        );
        out
    }
}

/// A histogram of 1 µs .. 10 min with 3 significant digits.
pub fn micros_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// "met" or a bold "not met".
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The 1-minute load average when a benchmark starts, as a sentence: other work on the
/// machine (e.g. parallel builds) makes figures worse and must be visible next to them.
pub fn load_note() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    match loadavg.split_whitespace().next() {
        Some(one) => format!(" Load average (1 min) at start: {one}."),
        None => String::new(),
    }
}

/// A warning for figures from a debug build of the bench.
pub fn release_warning() -> &'static str {
    if cfg!(debug_assertions) { " (WARNING: bench built without --release)" } else { "" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_partial_tail() {
        let mut buffer = b"{\"a\":1}\n\n{\"b\":2}\n{\"c\"".to_vec();
        let lines = take_lines(&mut buffer);
        assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        assert_eq!(buffer, b"{\"c\"".to_vec());
        assert!(take_lines(&mut buffer).is_empty());
    }

    #[test]
    fn ready_only_when_condition_true() {
        let ready_pod = |event: &Value| matching_pod(event, is_ready);
        let event = |kind: &str, status: &str| {
            json!({"type": kind, "object": {
                "metadata": {"name": "p"},
                "status": {"podIP": "127.244.0.5", "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": status},
                ]},
            }})
        };
        assert_eq!(ready_pod(&event("MODIFIED", "True")), Some(("p".into(), Some("127.244.0.5".into()))));
        assert_eq!(ready_pod(&event("MODIFIED", "False")), None);
        assert_eq!(ready_pod(&event("DELETED", "True")), None);
        assert_eq!(ready_pod(&json!({"type": "ADDED", "object": {}})), None);
    }

    #[test]
    fn pod_has_image_and_port() {
        let p = pod("r/x:v1", "ns", "a");
        assert_eq!(p["spec"]["containers"][0]["image"], "r/x:v1");
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["containerPort"], 8080);
        assert_eq!(p["metadata"]["namespace"], "ns");
    }
}
