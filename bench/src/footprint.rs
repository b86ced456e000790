//! The `footprint` benchmark: idle RSS of `skiff up` with no pods, the RSS each idle hello-http
//! pod adds, and the size of the release binary.
//!
//! RSS is `VmRSS` of the `skiff up` process plus any descendants (there are none while the node
//! runs in-process, but a future out-of-process runtime must not hide its memory). The per-pod
//! figure is given two ways: all pods over the idle baseline (includes one-time costs such as
//! the pushed image, the compiled component and the runtime's first instance), and the
//! marginal cost of pods 2..N over the state with one pod Ready.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use skiff_tests::Skiff;

use crate::pods::{Cluster, release_warning, verdict};
use crate::procfs;
use crate::report;

/// Settings of one `footprint` run.
#[derive(Debug, Clone)]
pub struct FootprintBench {
    /// Idle pods to create.
    pub pods: usize,
    /// Seconds to wait after ready before the idle reading.
    pub idle_wait_s: u64,
    /// Seconds to wait after all pods are Ready before the reading.
    pub settle_s: u64,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

/// RSS readings in KiB.
#[derive(Debug, Clone, Copy)]
struct Readings {
    idle_kib: f64,
    idle_processes: usize,
    one_pod_kib: f64,
    all_pods_kib: f64,
    all_processes: usize,
    peak_kib: f64,
    /// After the OpenAPI documents were fetched once (as `kubectl apply` does).
    after_openapi_kib: f64,
    binary_bytes: u64,
}

impl FootprintBench {
    /// Runs the measurements and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let mut cluster = Cluster::start(self.skiff_bin.clone()).await?;
        let binary_bytes = std::fs::metadata(&cluster.binary)
            .with_context(|| format!("reading size of {}", cluster.binary.display()))?
            .len();
        eprintln!("skiff ready; waiting {} s idle", self.idle_wait_s);
        tokio::time::sleep(Duration::from_secs(self.idle_wait_s)).await;
        let (idle_kib, idle_processes) = tree_rss_kib(&cluster.skiff)?;

        cluster.push_hello_http().await?;
        let namespace = "bench-footprint";
        cluster.create_namespace(namespace).await?;
        let mut watch = cluster.watch_ready(namespace).await?;
        cluster.create_pod(namespace, "idle-0").await?;
        watch.wait_for("idle-0").await?;
        tokio::time::sleep(Duration::from_secs(self.settle_s)).await;
        let (one_pod_kib, _) = tree_rss_kib(&cluster.skiff)?;

        eprintln!("creating {} more idle pods", self.pods.saturating_sub(1));
        for i in 1..self.pods {
            cluster.create_pod(namespace, &format!("idle-{i}")).await?;
        }
        let timeout = Duration::from_secs(60) + Duration::from_millis(200 * self.pods as u64);
        watch.wait_count(self.pods, timeout).await?;
        tokio::time::sleep(Duration::from_secs(self.settle_s)).await;
        let (all_pods_kib, all_processes) = tree_rss_kib(&cluster.skiff)?;
        // The OpenAPI documents are built on first use; read them as kubectl apply would
        // (gzip accepted) and report what holding them costs.
        for path in ["/openapi/v2", "/openapi/v3/api/v1", "/openapi/v3/apis/apps/v1"] {
            let response = cluster
                .http
                .get(format!("{}{path}", cluster.skiff.url))
                .header("accept-encoding", "gzip")
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("GET {path}: {}", response.status());
            }
            response.bytes().await?;
        }
        tokio::time::sleep(Duration::from_secs(self.settle_s)).await;
        let (after_openapi_kib, _) = tree_rss_kib(&cluster.skiff)?;
        let pid = cluster.skiff.pid().context("skiff not running")?;
        let peak_kib = procfs::memory(pid)?.hwm_mib * 1024.0;
        Ok(self.render(
            &cluster.binary,
            Readings {
                idle_kib,
                idle_processes,
                one_pod_kib,
                all_pods_kib,
                all_processes,
                peak_kib,
                after_openapi_kib,
                binary_bytes,
            },
        ))
    }

    fn render(&self, binary: &std::path::Path, r: Readings) -> String {
        let pods = self.pods.max(1) as f64;
        let idle_mib = r.idle_kib / 1024.0;
        let per_pod_kib = (r.all_pods_kib - r.idle_kib) / pods;
        let marginal_kib = (r.all_pods_kib - r.one_pod_kib) / (pods - 1.0).max(1.0);
        let binary_mib = r.binary_bytes as f64 / 1024.0 / 1024.0;
        let mut out = format!(
            "## Footprint: memory and binary size\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce: `bash scripts/build-guests.sh && cargo build --release -p skiff -p skiff-bench && \
             target/release/skiff-bench footprint --pods {} --idle-wait {} --settle {}`\n\n\
             A release `skiff up` (embedded store, in-process node, loopback pod network) on a fresh \
             data dir. RSS = `VmRSS` from `/proc` of the skiff process and its descendants ({} \
             process(es) idle, {} with pods). Idle: {} s after `/readyz`, no image pushed, no pods. \
             Then `hello_http.wasm` is pushed, one pod created and awaited (+{} s), then the other \
             {} (all Ready on a watch, +{} s). Peak RSS (VmHWM) of the run: {:.1} MiB.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            self.pods,
            self.idle_wait_s,
            self.settle_s,
            r.idle_processes,
            r.all_processes,
            self.idle_wait_s,
            self.settle_s,
            self.pods.saturating_sub(1),
            self.settle_s,
            r.peak_kib / 1024.0,
        );
        let rows = vec![
            vec![
                "idle RSS of `skiff up`, no pods".into(),
                format!("{idle_mib:.1} MiB"),
                format!("≤ 40 MiB: {}", verdict(idle_mib <= 40.0)),
            ],
            vec![
                format!("RSS with 1 pod / with {} pods", self.pods),
                format!("{:.1} MiB / {:.1} MiB", r.one_pod_kib / 1024.0, r.all_pods_kib / 1024.0),
                "—".into(),
            ],
            vec![
                format!("added RSS per idle pod ({} pods over idle)", self.pods),
                format!("{per_pod_kib:.0} KiB"),
                format!("≤ 256 KiB: {}", verdict(per_pod_kib <= 256.0)),
            ],
            vec![
                format!("marginal RSS per idle pod (pods 2..{} over 1 pod)", self.pods),
                format!("{marginal_kib:.0} KiB"),
                "(information)".into(),
            ],
            vec![
                format!("RSS with {} pods after the OpenAPI documents were read once", self.pods),
                format!(
                    "{:.1} MiB (+{:.1})",
                    r.after_openapi_kib / 1024.0,
                    (r.after_openapi_kib - r.all_pods_kib) / 1024.0
                ),
                "(information: built on first use)".into(),
            ],
            vec![
                format!(
                    "release binary `{}`",
                    binary
                        .file_name()
                        .map_or_else(|| binary.display().to_string(), |n| n.to_string_lossy().into_owned())
                ),
                format!("{binary_mib:.1} MiB ({} bytes)", r.binary_bytes),
                format!("≤ 40 MiB: {}", verdict(binary_mib <= 40.0)),
            ],
        ];
        out += &report::table(&["measure", "value", "target"], &rows);
        out
    }
}

/// Summed VmRSS (KiB) of skiff and its descendants, and how many processes that is.
fn tree_rss_kib(skiff: &Skiff) -> Result<(f64, usize)> {
    let root = skiff.pid().context("skiff not running")?;
    let mut pending = vec![root];
    let mut total = 0.0;
    let mut count = 0;
    while let Some(pid) = pending.pop() {
        match procfs::memory(pid) {
            Ok(memory) => {
                total += memory.rss_mib * 1024.0;
                count += 1;
            }
            // A child may exit between listing and reading; the root must be readable.
            Err(error) if pid == root => return Err(error),
            Err(_) => continue,
        }
        pending.extend(children(pid));
    }
    Ok((total, count))
}

/// Child pids of `pid`, by scanning the parent pid of every `/proc/<n>/stat` (the
/// `task/*/children` files need a kernel option that is not always there).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat")).ok().and_then(|stat| parent_pid(&stat)) == Some(pid)
        })
        .collect()
}

/// The parent pid (4th field) of a `/proc/<pid>/stat` line; the command name (2nd field) is in
/// parentheses and may contain spaces, so fields are counted after its closing `)`.
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parent_pid() {
        assert_eq!(parent_pid("42 (a b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn finds_a_spawned_child() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawning sleep");
        let listed = children(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed, "sleep child not listed");
    }
}
