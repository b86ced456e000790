//! The `http` benchmark: requests/s and p99 latency of `examples/hello-http` served by a Skiff
//! pod (on its pod IP) and by `wasmtime serve` of the same wasmtime version, side by side in one
//! run, both loaded by `wrk` with the same settings.
//!
//! The two targets alternate (Skiff, wasmtime, Skiff, wasmtime, …), each measured run preceded
//! by its own warm-up, and each side's figure is the median of its rounds, so drift of the
//! shared machine hits both sides alike. Nothing is pinned: server and wrk share the cores.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use skiff_tests::net::free_port;
use skiff_tests::wait_until;

use crate::pods::{Cluster, hello_http_path, release_warning, verdict};
use crate::report;

/// Settings of one `http` run.
#[derive(Debug, Clone)]
pub struct HttpBench {
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
    /// The `wasmtime` CLI to compare with.
    pub wasmtime: PathBuf,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

/// Figures of one wrk run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WrkResult {
    /// `Requests/sec`.
    pub requests_per_s: f64,
    /// 50th percentile latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// A `wasmtime serve` child, killed on drop.
#[derive(Debug)]
struct WasmtimeServe {
    _child: tokio::process::Child,
    url: String,
}

impl WasmtimeServe {
    async fn start(wasmtime: &Path, wasm: &Path) -> Result<WasmtimeServe> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let child = tokio::process::Command::new(wasmtime)
            .args(["serve", "-Scli", "--addr", &addr])
            .arg(wasm)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", wasmtime.display()))?;
        let url = format!("http://{addr}/");
        wait_serving("wasmtime serve", &url).await?;
        Ok(WasmtimeServe { _child: child, url })
    }
}

/// Waits (bounded) until `url` answers 200, returning the body.
async fn wait_serving(what: &str, url: &str) -> Result<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    wait_until(&format!("{what} to answer 200 on {url}"), Duration::from_secs(60), Duration::from_millis(100), || {
        let request = client.get(url).send();
        async move {
            let response = request.await?;
            if !response.status().is_success() {
                return Ok(None);
            }
            Ok(Some(response.text().await?))
        }
    })
    .await
}

impl HttpBench {
    /// Runs the comparison and returns the markdown section body.
    pub async fn run(&self) -> Result<String> {
        let wasm = hello_http_path()?;
        let mut cluster = Cluster::start(self.skiff_bin.clone()).await?;
        cluster.push_hello_http().await?;
        let namespace = "bench-http";
        cluster.create_namespace(namespace).await?;
        let mut watch = cluster.watch_ready(namespace).await?;
        cluster.create_pod(namespace, "hello").await?;
        let pod = watch.wait_for("hello").await?;
        let ip = pod.pod_ip.context("Ready pod has no podIP")?;
        let skiff_url = format!("http://{ip}:8080/");
        let skiff_body = wait_serving("the skiff pod", &skiff_url).await?;
        let wasmtime = WasmtimeServe::start(&self.wasmtime, &wasm).await?;
        let wasmtime_body = wait_serving("wasmtime serve", &wasmtime.url).await?;
        let version = wasmtime_version(&self.wasmtime).await?;
        eprintln!("skiff pod {skiff_url}: {skiff_body:?}; {version} {}: {wasmtime_body:?}", wasmtime.url);

        let mut skiff_runs = Vec::new();
        let mut wasmtime_runs = Vec::new();
        for round in 0..self.rounds.max(1) {
            for (side, url, runs) in
                [("skiff", &skiff_url, &mut skiff_runs), ("wasmtime", &wasmtime.url, &mut wasmtime_runs)]
            {
                self.wrk(url, self.warmup_s).await?;
                let result = self.wrk(url, self.duration_s).await?;
                eprintln!("round {round} {side}: {result:?}");
                runs.push(result);
            }
        }
        Ok(self.render(&version, (&skiff_body, &wasmtime_body), &skiff_runs, &wasmtime_runs))
    }

    async fn wrk(&self, url: &str, seconds: u64) -> Result<WrkResult> {
        self.wrk_with(url, None, seconds).await
    }

    /// One wrk run of `seconds` against `url` with this bench's threads and connections, and
    /// `header` (`Name: value`) on every request if given.
    pub async fn wrk_with(&self, url: &str, header: Option<&str>, seconds: u64) -> Result<WrkResult> {
        run_wrk(tokio::process::Command::new("wrk"), (self.threads, self.connections), url, header, seconds).await
    }

    fn render(&self, version: &str, bodies: (&str, &str), skiff: &[WrkResult], wasmtime: &[WrkResult]) -> String {
        let s = median(skiff);
        let w = median(wasmtime);
        let ratio = s.requests_per_s / w.requests_per_s.max(f64::MIN_POSITIVE);
        let mut out = format!(
            "## HTTP: hello-http on Skiff vs `wasmtime serve`\n\n\
             Run {} on {}{}.{}\n\n\
             Reproduce: `bash scripts/build-guests.sh && cargo build --release -p skiff -p skiff-bench && \
             target/release/skiff-bench http --threads {} --connections {} --duration {} --warmup {} --rounds {} \
             --wasmtime {}`\n\n\
             The same component (`hello_http.wasm`) served by a Skiff pod (release `skiff up`, \
             loopback pod network, hit on podIP:8080) and by `{version}` (`wasmtime serve -Scli`). \
             Load: `wrk -t{} -c{} -d{}s --latency`, each run after a {} s warm-up, sides \
             alternating Skiff/wasmtime for {} rounds; the figure is the median of a side's rounds. \
             Nothing pinned: the machine's cores are shared by the server, skiff's control plane \
             (idle) and wrk, equally for both sides. Response bodies: Skiff {:?}, wasmtime {:?}.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            self.threads,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.rounds,
            self.wasmtime.display(),
            self.threads,
            self.connections,
            self.duration_s,
            self.warmup_s,
            self.rounds,
            bodies.0.trim(),
            bodies.1.trim(),
        );
        out += &report::table(
            &["server", "requests/s (median)", "p50 ms", "p99 ms", "requests/s per round", "errors", "target"],
            &[
                wrk_row("Skiff pod", &s, skiff, format!("≥ 1.0× wasmtime: {:.2}× — {}", ratio, verdict(ratio >= 1.0))),
                wrk_row("wasmtime serve", &w, wasmtime, "—".into()),
            ],
        );
        out
    }
}

async fn wasmtime_version(wasmtime: &Path) -> Result<String> {
    let output =
        tokio::process::Command::new(wasmtime).arg("--version").output().await.context("running wasmtime --version")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

/// Runs `command` (a `wrk`, possibly wrapped, e.g. `ip netns exec NS wrk`) for `seconds` against
/// `url` with `(threads, connections)` and `header` (`Name: value`) on every request if given.
pub async fn run_wrk(
    mut command: tokio::process::Command,
    (threads, connections): (usize, usize),
    url: &str,
    header: Option<&str>,
    seconds: u64,
) -> Result<WrkResult> {
    let started = Instant::now();
    command.arg(format!("-t{threads}")).arg(format!("-c{connections}")).arg(format!("-d{seconds}s")).arg("--latency");
    if let Some(header) = header {
        command.arg("-H").arg(header);
    }
    let output = command.arg(url).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(seconds + 60), output)
        .await
        .context("wrk did not finish")?
        .context("running wrk (apt install wrk)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed after {:?}: {stdout}{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_wrk(&stdout).with_context(|| format!("parsing wrk output:\n{stdout}"))
}

/// A report table row for one side: its median's requests/s, p50 and p99, every round's
/// requests/s, the errors of all rounds, and a last note (target or comparison).
pub fn wrk_row(side: &str, median: &WrkResult, runs: &[WrkResult], note: String) -> Vec<String> {
    vec![
        side.to_string(),
        format!("{:.0}", median.requests_per_s),
        format!("{:.2}", median.p50_ms),
        format!("{:.2}", median.p99_ms),
        runs.iter().map(|r| format!("{:.0}", r.requests_per_s)).collect::<Vec<_>>().join(", "),
        runs.iter().map(|r| r.errors).sum::<u64>().to_string(),
        note,
    ]
}

/// The per-field median of `runs` (mean of the middle two for an even count).
pub fn median(runs: &[WrkResult]) -> WrkResult {
    let pick = |f: fn(&WrkResult) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    WrkResult {
        requests_per_s: pick(|r| r.requests_per_s),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

/// Reads requests/s, p50/p99 and errors from `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Result<WrkResult> {
    let mut result = WrkResult::default();
    let mut saw_rps = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            result.requests_per_s = v.trim().parse().context("Requests/sec")?;
            saw_rps = true;
        } else if let Some(v) = line.strip_prefix("50%") {
            result.p50_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            result.p99_ms = duration_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.errors += v.trim().parse::<u64>().context("Non-2xx")?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    result.errors += n.parse::<u64>().context("Socket errors")?;
                }
            }
        }
    }
    ensure!(saw_rps, "no Requests/sec line");
    Ok(result)
}

/// `1.23ms`, `456.00us`, `1.02s`, `2.00m` in milliseconds.
fn duration_ms(text: &str) -> Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("bad number {text:?}"))?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        other => anyhow::bail!("unknown unit {other:?}"),
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  12.34ms   89.00%
    Req/Sec    25.00k     1.00k   27.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.30ms
     90%    1.60ms
     99%    3.20ms
  250000 requests in 10.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  24999.50
Transfer/sec:      3.00MB
";

    #[test]
    fn parses_wrk_latency_output() {
        let r = parse_wrk(OUTPUT).expect("parses");
        assert_eq!(r.requests_per_s, 24999.5);
        assert!((r.p50_ms - 0.85).abs() < 1e-9);
        assert!((r.p99_ms - 3.2).abs() < 1e-9);
        assert_eq!(r.errors, 8);
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(duration_ms("1.50s").expect("s"), 1500.0);
        assert!(duration_ms("3").is_err());
        assert!(duration_ms("3xs").is_err());
    }

    #[test]
    fn median_of_even_and_odd() {
        let r = |rps| WrkResult { requests_per_s: rps, ..WrkResult::default() };
        assert_eq!(median(&[r(1.0), r(3.0)]).requests_per_s, 2.0);
        assert_eq!(median(&[r(5.0), r(1.0), r(3.0)]).requests_per_s, 3.0);
    }
}
