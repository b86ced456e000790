//! The `api` benchmark: pod creates through the API (1 and 32 clients) on both stores, raw
//! etcd puts of the same size and concurrency on the same etcd, and listing 10,000 pods with
//! the server's memory before and after. Writes the `api` section of BENCHMARKS.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::{Skiff, StartOptions, StoreKind};

use crate::load::{self, LoadResult};
use crate::procfs::{self, Memory};
use crate::report;

/// Settings of one `api` run.
#[derive(Debug, Clone)]
pub struct ApiBench {
    /// Pods created per (store, concurrency) configuration.
    pub pods: usize,
    /// Concurrent clients to measure.
    pub concurrency: Vec<usize>,
    /// Pods in the list benchmark.
    pub list_pods: usize,
    /// Timed lists per store.
    pub list_runs: usize,
    /// Stores to run against.
    pub stores: Vec<StoreKind>,
    /// skiff binary; default `target/release/skiff` beside this binary.
    pub skiff_bin: Option<PathBuf>,
}

/// Create figures of one store and concurrency.
#[derive(Debug)]
struct CreateRow {
    store: StoreKind,
    clients: usize,
    result: LoadResult,
    /// Mean size of the created pod as the server returned it, i.e. about what it stores.
    object_bytes: usize,
    /// Raw etcd puts of `object_bytes` at the same concurrency (etcd store only).
    raw_etcd: Option<LoadResult>,
}

/// List figures of one store.
#[derive(Debug)]
struct ListRow {
    store: StoreKind,
    pods: usize,
    p50_ms: f64,
    max_ms: f64,
    response_mib: f64,
    idle: Memory,
    after_create: Memory,
    after_list: Memory,
}

/// A minimal valid pod.
fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "api"}},
        "spec": {"containers": [{"name": "main", "image": "registry.example/bench:1"}]},
    })
}

impl ApiBench {
    /// Runs every configuration and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let mut creates = Vec::new();
        let mut lists = Vec::new();
        for &store in &self.stores {
            let mut options = StartOptions::new(store);
            options.binary = self.skiff_bin.clone();
            eprintln!("starting skiff with the {store} store");
            let skiff = Skiff::start_with(options).await?;
            let http =
                skiff.info.client_builder(true)?.pool_max_idle_per_host(64).build().context("building bench client")?;
            let version = http.get(format!("{}/version", skiff.url)).send().await?.version();
            eprintln!("connected with {version:?}");
            for &clients in &self.concurrency {
                let row = self.creates(&skiff, &http, store, clients).await?;
                creates.push(row);
            }
            if self.list_pods > 0 {
                lists.push(self.list(&skiff, &http, store).await?);
            }
        }
        Ok(self.render(&creates, &lists))
    }

    async fn creates(
        &self,
        skiff: &Skiff,
        http: &reqwest::Client,
        store: StoreKind,
        clients: usize,
    ) -> Result<CreateRow> {
        let namespace = format!("bench-c{clients}");
        create_namespace(skiff, http, &namespace).await?;
        eprintln!("{store}: creating {} pods with {clients} clients", self.pods);
        let (result, object_bytes) = create_pods(skiff, http, &namespace, self.pods, clients).await?;
        ensure!(
            result.errors < result.ops,
            "every pod create failed: {}",
            result.first_error.as_deref().unwrap_or("?")
        );
        let raw_etcd = match skiff.etcd() {
            Some(etcd) => {
                eprintln!("raw etcd: {} puts of {object_bytes} bytes with {clients} clients", self.pods);
                let prefix = format!("/skiff-bench-raw/c{clients}/");
                Some(raw_etcd_puts(&etcd.endpoint, &prefix, self.pods, clients, object_bytes).await?)
            }
            None => None,
        };
        Ok(CreateRow { store, clients, result, object_bytes, raw_etcd })
    }

    async fn list(&self, skiff: &Skiff, http: &reqwest::Client, store: StoreKind) -> Result<ListRow> {
        let pid = skiff.pid().context("skiff not running")?;
        let idle = procfs::memory(pid)?;
        let namespace = "bench-list";
        create_namespace(skiff, http, namespace).await?;
        eprintln!("{store}: creating {} pods to list", self.list_pods);
        let (created, _) = create_pods(skiff, http, namespace, self.list_pods, 32).await?;
        ensure!(created.errors == 0, "list setup failed: {:?}", created.first_error);
        let after_create = procfs::memory(pid)?;
        let url = format!("{}/api/v1/namespaces/{namespace}/pods", skiff.url);
        let mut times = Vec::new();
        let mut bytes = 0;
        for run in 0..self.list_runs.max(1) {
            let t0 = Instant::now();
            let response = http.get(&url).timeout(Duration::from_secs(120)).send().await?;
            ensure!(response.status().is_success(), "list: {}", response.status());
            let body = response.bytes().await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
            if run == 0 {
                let list: Value = serde_json::from_slice(&body).context("list body")?;
                let items = list["items"].as_array().map_or(0, Vec::len);
                ensure!(items == self.list_pods, "listed {items} of {} pods", self.list_pods);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(ListRow {
            store,
            pods: self.list_pods,
            p50_ms: times[times.len() / 2],
            max_ms: times.last().copied().unwrap_or_default(),
            response_mib: bytes as f64 / 1024.0 / 1024.0,
            idle,
            after_create,
            after_list: procfs::memory(pid)?,
        })
    }

    fn render(&self, creates: &[CreateRow], lists: &[ListRow]) -> String {
        let profile = if self.skiff_bin.is_some() { "given with --skiff-bin" } else { "beside skiff-bench" };
        let mut out = format!(
            "## API: pod creates and lists\n\n\
             Run {} on {}. skiff binary {profile}{}.\n\n\
             Reproduce: `cargo build --release -p skiff && cargo run --release -p skiff-bench -- api --pods {} --list-pods {} --list-runs {}`\n\n\
             Client and server share the machine; the client is a closed loop of N workers over one \
             HTTP/2 connection (reqwest, cluster CA, bearer token). etcd is a local single member \
             (`/usr/bin/etcd`, default settings, fsync on).\n\n",
            report::now(),
            report::machine(),
            if cfg!(debug_assertions) { " (WARNING: bench built without --release)" } else { "" },
            self.pods,
            self.list_pods,
            self.list_runs,
        );
        out += "### Pod create through the API\n\n";
        let rows: Vec<Vec<String>> = creates
            .iter()
            .map(|row| {
                let r = &row.result;
                let target = match (row.store, row.clients) {
                    (StoreKind::Embedded, 32) => {
                        let met = r.per_second() >= 5000.0 && r.percentile_ms(99.0) <= 10.0;
                        format!("≥ 5,000/s, p99 ≤ 10 ms: {}", verdict(met))
                    }
                    _ => "—".into(),
                };
                vec![
                    row.store.to_string(),
                    row.clients.to_string(),
                    r.ops.to_string(),
                    format!("{:.0}", r.per_second()),
                    format!("{:.2}", r.percentile_ms(50.0)),
                    format!("{:.2}", r.percentile_ms(99.0)),
                    errors(r),
                    target,
                ]
            })
            .collect();
        out +=
            &report::table(&["store", "clients", "pods", "creates/s", "p50 ms", "p99 ms", "errors", "target"], &rows);
        let raw: Vec<Vec<String>> = creates
            .iter()
            .filter_map(|row| {
                let raw = row.raw_etcd.as_ref()?;
                let ratio = row.result.per_second() / raw.per_second().max(f64::MIN_POSITIVE);
                Some(vec![
                    row.clients.to_string(),
                    row.object_bytes.to_string(),
                    format!("{:.0}", raw.per_second()),
                    format!("{:.2}", raw.percentile_ms(50.0)),
                    format!("{:.2}", raw.percentile_ms(99.0)),
                    format!("{:.0}", row.result.per_second()),
                    format!("{:.0}%", ratio * 100.0),
                    format!("≥ 70%: {}", verdict(ratio >= 0.7)),
                ])
            })
            .collect();
        if !raw.is_empty() {
            out += "\n### API on etcd vs raw etcd puts (same etcd, value size, concurrency)\n\n";
            out += &report::table(
                &[
                    "clients",
                    "value bytes",
                    "raw puts/s",
                    "raw p50 ms",
                    "raw p99 ms",
                    "API creates/s",
                    "API/raw",
                    "target",
                ],
                &raw,
            );
        }
        if !lists.is_empty() {
            out +=
                &format!("\n### List all pods of a namespace (p50 of {} lists) and server memory\n\n", self.list_runs);
            let rows: Vec<Vec<String>> = lists
                .iter()
                .map(|l| {
                    vec![
                        l.store.to_string(),
                        l.pods.to_string(),
                        format!("{:.1}", l.p50_ms),
                        format!("{:.1}", l.max_ms),
                        format!("{:.1}", l.response_mib),
                        format!("{:.1}", l.idle.rss_mib),
                        format!("{:.1}", l.after_create.rss_mib),
                        format!("{:.1}", l.after_list.rss_mib),
                        format!("{:.1}", l.after_list.hwm_mib),
                    ]
                })
                .collect();
            out += &report::table(
                &[
                    "store",
                    "pods",
                    "list p50 ms",
                    "list max ms",
                    "response MiB",
                    "RSS at start MiB",
                    "RSS after creates MiB",
                    "RSS after lists MiB",
                    "peak RSS MiB",
                ],
                &rows,
            );
            out += "\nRSS at start is measured after the create runs above, so it includes their pods.\n";
        }
        out
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

fn errors(result: &LoadResult) -> String {
    match &result.first_error {
        Some(first) if result.errors > 0 => {
            format!("{} (first: {})", result.errors, first.replace('|', "/"))
        }
        _ => "0".into(),
    }
}

async fn create_namespace(skiff: &Skiff, http: &reqwest::Client, name: &str) -> Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let response = http.post(format!("{}/api/v1/namespaces", skiff.url)).json(&body).send().await?;
    if !response.status().is_success() {
        bail!("creating namespace {name}: {} {}", response.status(), response.text().await?);
    }
    Ok(())
}

/// Creates `count` pods named `p-<i>`; returns the load result and mean returned object size.
async fn create_pods(
    skiff: &Skiff,
    http: &reqwest::Client,
    namespace: &str,
    count: usize,
    clients: usize,
) -> Result<(LoadResult, usize)> {
    let url = Arc::new(format!("{}/api/v1/namespaces/{namespace}/pods", skiff.url));
    let namespace = Arc::new(namespace.to_string());
    let bytes = Arc::new(AtomicUsize::new(0));
    let http = http.clone();
    let total_bytes = Arc::clone(&bytes);
    let result = load::run(count, clients, move |i| {
        let request = http.post(url.as_str()).json(&pod(&namespace, &format!("p-{i}")));
        let bytes = Arc::clone(&total_bytes);
        async move {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != reqwest::StatusCode::CREATED {
                bail!("{status}: {}", String::from_utf8_lossy(&body));
            }
            bytes.fetch_add(body.len(), Ordering::Relaxed);
            Ok(())
        }
    })
    .await?;
    let ok = result.ops.saturating_sub(result.errors).max(1);
    Ok((result, bytes.load(Ordering::Relaxed) / ok))
}

/// `count` puts of `value_bytes`-byte values under `prefix` with `clients` concurrent workers.
pub async fn raw_etcd_puts(
    endpoint: &str,
    prefix: &str,
    count: usize,
    clients: usize,
    value_bytes: usize,
) -> Result<LoadResult> {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .with_context(|| format!("connecting to etcd {endpoint}"))?;
    let value = Arc::new(vec![b'x'; value_bytes]);
    let prefix = Arc::new(prefix.to_string());
    load::run(count, clients, move |i| {
        let mut kv = client.kv_client();
        let value = Arc::clone(&value);
        let key = format!("{prefix}{i}");
        async move {
            kv.put(key, value.as_slice(), None).await?;
            Ok(())
        }
    })
    .await
}
