//! The `dns` benchmark (issue 6): queries/s and latency of the node's cluster DNS, side by side
//! with knot (Debian's `knot`, an authoritative server) serving an equivalent static zone on
//! the same machine in the same run, both loaded by `dnsperf` (Debian's `dnsperf`).
//!
//! `skiff up --pod-network bridge` runs inside a network namespace this bench creates, so the
//! node serves `10.96.0.10:53`; `--services` ClusterIP Services with a named port and one
//! headless Service with ten manual endpoints are created. `knotd` runs in the same namespace
//! on `127.0.0.3:53` with zones `cluster.local` and `96.10.in-addr.arpa` holding the same
//! records (written from the Services' allocated addresses). The query file is the same for
//! both: per Service, in a fixed mix — A of the Service (40%), SRV of its port (10%), A of the
//! headless Service (10 answers, 10%), PTR of its cluster IP (10%), AAAA (NODATA, 10%), A of a
//! missing name (NXDOMAIN, 10%), A of a StatefulSet-style member name (10%).
//!
//! Each server gets, alternately, a throughput run (`dnsperf -c clients -q outstanding -l
//! secs`: qps and mean latency from dnsperf's summary) and a latency run at a fixed rate
//! (`-Q rate -v`: every response's latency, for p50/p99 at moderate load). dnsperf runs in
//! the namespace too, on the same cores as the servers.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use skiff_tests::binary::skiff_binary;
use skiff_tests::{NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::pods::{release_warning, verdict};
use crate::report;

/// The node's cluster DNS.
const SKIFF_DNS: &str = "10.96.0.10";
/// Where knot listens inside the namespace.
const KNOT_DNS: &str = "127.0.0.3";
/// Endpoints of the headless Service.
const HEADLESS_ENDPOINTS: u8 = 10;
/// Target: the node's qps at least this times knot's.
const TARGET_RATIO: f64 = 1.0;

/// Settings of one `dns` run.
#[derive(Debug, Clone)]
pub struct DnsBench {
    /// ClusterIP Services created (and queried).
    pub services: usize,
    /// Seconds per throughput run.
    pub duration_s: u64,
    /// dnsperf clients (sockets).
    pub clients: usize,
    /// Queries outstanding per dnsperf run.
    pub outstanding: usize,
    /// Queries/s of the latency runs.
    pub latency_qps: u64,
    /// Measured runs per server (alternating).
    pub rounds: usize,
    /// skiff binary; default beside this bench.
    pub skiff_bin: Option<PathBuf>,
    /// [`crate::pods::load_note`] taken when the run started.
    pub load_at_start: String,
}

/// A throughput run's summary.
#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    qps: f64,
    mean_ms: f64,
    lost: u64,
}

/// A latency run: sorted per-response latencies in ms and the count of timeouts.
#[derive(Debug, Clone, Default)]
struct Latency {
    ms: Vec<f64>,
    lost: u64,
}

impl Latency {
    fn quantile(&self, q: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let i = ((self.ms.len() as f64 - 1.0) * q).round() as usize;
        self.ms[i.min(self.ms.len() - 1)]
    }
}

/// What one server measured over every round.
#[derive(Debug, Default)]
struct Side {
    throughput: Vec<Throughput>,
    latency: Latency,
}

impl Side {
    fn best_qps(&self) -> f64 {
        self.throughput.iter().map(|t| t.qps).fold(0.0, f64::max)
    }
}

/// One Service as both servers serve it.
#[derive(Debug, Clone)]
struct Svc {
    name: String,
    ip: Ipv4Addr,
}

impl DnsBench {
    /// Runs the benchmark and returns its BENCHMARKS.md section.
    pub async fn run(&self) -> Result<String> {
        ensure!(self.services > 0 && self.rounds > 0, "--services and --rounds must be at least 1");
        let binary = match &self.skiff_bin {
            Some(path) => path.clone(),
            None => skiff_binary()?,
        };
        let netns = NetNs::create()?;
        let work = tempfile::Builder::new().prefix("skiff-bench-dns-").tempdir()?;
        let mut options = StartOptions::new(StoreKind::Embedded);
        options.binary = Some(binary.clone());
        options.netns = Some(netns.name().to_owned());
        options.extra_args = ["--pod-network", "bridge"].map(String::from).to_vec();
        let mut skiff = Skiff::start_with(options).await?;
        let result = self.measure(&skiff, &netns, work.path()).await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return Err(e.context(format!("skiff log tail:\n{}", skiff.log_tail(30)))),
        };
        skiff.stop().await?;
        Ok(self.render(&binary, &result.0, &result.1))
    }

    async fn measure(&self, skiff: &Skiff, netns: &NetNs, dir: &Path) -> Result<(Side, Side)> {
        let services = self.create_services(skiff).await?;
        let queries = query_file(&services);
        let query_path = dir.join("queries.txt");
        std::fs::write(&query_path, &queries)?;
        write_knot(dir, &services)?;
        let log = std::fs::File::create(dir.join("knot.log"))?;
        let _knot = netns
            .command("knotd")
            .arg("-c")
            .arg(dir.join("knot.conf"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting knotd (install knot: scripts/setup.sh)")?;
        // Both servers must answer the last Service before anything is measured.
        let last = services.last().context("no services")?;
        let name = format!("{}.default.svc.cluster.local", last.name);
        for server in [SKIFF_DNS, KNOT_DNS] {
            let at = format!("@{server}");
            wait_until(
                &format!("{server} to answer {name}"),
                Duration::from_secs(60),
                Duration::from_millis(200),
                || {
                    let (at, name) = (at.clone(), name.clone());
                    async move {
                        let out = netns.run("dig", &[&at, &name, "A", "+short", "+time=1", "+tries=1"]).await;
                        Ok(out.ok().filter(|o| o.trim() == last.ip.to_string()).map(|_| ()))
                    }
                },
            )
            .await
            .with_context(|| {
                format!("knot log: {}", std::fs::read_to_string(dir.join("knot.log")).unwrap_or_default())
            })?;
        }
        eprintln!("{} services, {} queries in the mix", services.len(), queries.lines().count());
        let (mut skiff_side, mut knot_side) = (Side::default(), Side::default());
        // Warm-up (caches, first allocations), then alternating measured rounds.
        for server in [SKIFF_DNS, KNOT_DNS] {
            self.throughput(netns, server, &query_path, 2).await?;
        }
        for round in 0..self.rounds {
            for (server, side) in [(SKIFF_DNS, &mut skiff_side), (KNOT_DNS, &mut knot_side)] {
                let t = self.throughput(netns, server, &query_path, self.duration_s).await?;
                eprintln!("round {round}: {server} {:.0} qps, mean {:.3} ms, lost {}", t.qps, t.mean_ms, t.lost);
                side.throughput.push(t);
                let l = self.latency(netns, server, &query_path).await?;
                side.latency.ms.extend(l.ms);
                side.latency.lost += l.lost;
            }
        }
        for side in [&mut skiff_side, &mut knot_side] {
            side.latency.ms.sort_by(f64::total_cmp);
        }
        Ok((skiff_side, knot_side))
    }

    async fn create_services(&self, skiff: &Skiff) -> Result<Vec<Svc>> {
        let mut yaml = String::new();
        for i in 0..self.services {
            let _ = write!(
                yaml,
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec:\n  \
                 ports: [{{name: http, port: 80, protocol: TCP}}]\n---\n"
            );
        }
        let addresses: Vec<String> = (0..HEADLESS_ENDPOINTS)
            .map(|j| format!("{{ip: 10.244.0.{}, hostname: hl-{j}}}", 100 + u16::from(j)))
            .collect();
        let _ = write!(
            yaml,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: hl}}\nspec:\n  clusterIP: None\n  \
             ports: [{{name: http, port: 80, protocol: TCP}}]\n---\napiVersion: v1\nkind: Endpoints\n\
             metadata: {{name: hl}}\nsubsets:\n- addresses: [{}]\n  ports: [{{name: http, port: 80, protocol: TCP}}]\n",
            addresses.join(", ")
        );
        skiff.apply(&yaml).await?;
        let list = skiff.kubectl(&["get", "services", "-o", "json"]).await?.json()?;
        let mut services = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            if !name.starts_with("svc-") {
                continue;
            }
            let ip = item["spec"]["clusterIP"].as_str().context("service without clusterIP")?;
            services.push(Svc { name: name.to_owned(), ip: ip.parse()? });
        }
        ensure!(services.len() == self.services, "created {} services, listed {}", self.services, services.len());
        services.sort_by_key(|s| s.name.clone());
        Ok(services)
    }

    async fn throughput(&self, netns: &NetNs, server: &str, queries: &Path, secs: u64) -> Result<Throughput> {
        let out = self.dnsperf(netns, server, queries, &["-l", &secs.to_string()]).await?;
        parse_summary(&out)
    }

    async fn latency(&self, netns: &NetNs, server: &str, queries: &Path) -> Result<Latency> {
        let secs = self.duration_s.clamp(1, 5).to_string();
        let rate = self.latency_qps.to_string();
        let out = self.dnsperf(netns, server, queries, &["-l", &secs, "-Q", &rate, "-v"]).await?;
        Ok(parse_verbose(&out))
    }

    async fn dnsperf(&self, netns: &NetNs, server: &str, queries: &Path, extra: &[&str]) -> Result<String> {
        let (clients, outstanding) = (self.clients.to_string(), self.outstanding.to_string());
        let path = queries.to_str().context("query path")?;
        let mut args = vec!["-s", server, "-d", path, "-c", clients.as_str(), "-q", outstanding.as_str(), "-t", "2"];
        args.extend_from_slice(extra);
        netns.run("dnsperf", &args).await.context("running dnsperf (install dnsperf: scripts/setup.sh)")
    }

    fn render(&self, binary: &Path, skiff: &Side, knot: &Side) -> String {
        let ratio = skiff.best_qps() / knot.best_qps().max(f64::MIN_POSITIVE);
        let mut out = format!(
            "## Cluster DNS: queries/s and latency vs knot\n\n\
             Run {} on {}{}.{} skiff `{}`{}; {}; {}.\n\n\
             Reproduce (as root): `cargo build --release -p skiff -p skiff-bench && target/release/skiff-bench dns \
             --services {} --duration {} --clients {} --outstanding {} --latency-qps {} --rounds {}`\n\n\
             `skiff up --pod-network bridge` inside a network namespace the bench creates; the node's DNS \
             server on `{SKIFF_DNS}:53` answers from its Service/Endpoints cache. Reference: `knotd` in the same \
             namespace on `{KNOT_DNS}:53`, zones `cluster.local` and `96.10.in-addr.arpa` with the same records \
             as static zone files. {} ClusterIP Services with a named port plus a headless Service with {} \
             endpoints. One query file for both, per Service: A 40%, SRV 10%, A of the headless Service \
             (10 records) 10%, PTR 10%, AAAA (NODATA) 10%, NXDOMAIN 10%, A of a member name 10%. Throughput: \
             `dnsperf -c {} -q {} -l {}` (best of {} alternating rounds; dnsperf's own qps and mean latency). \
             Latency: `dnsperf -Q {} -v` for up to 5 s per round, every response's latency, all rounds pooled. \
             dnsperf and both servers share the machine's cores.\n\n",
            report::now(),
            report::machine(),
            release_warning(),
            self.load_at_start,
            binary.display(),
            if binary.components().any(|c| c.as_os_str() == "debug") || binary.to_string_lossy().contains("debug") {
                " (**a debug build**: figures understate a release build)"
            } else {
                ""
            },
            tool_version("dnsperf", &["-h"]),
            tool_version("knotd", &["--version"]),
            self.services,
            self.duration_s,
            self.clients,
            self.outstanding,
            self.latency_qps,
            self.rounds,
            self.services,
            HEADLESS_ENDPOINTS,
            self.clients,
            self.outstanding,
            self.duration_s,
            self.rounds,
            self.latency_qps,
        );
        let row = |what: &str, side: &Side| {
            let mean = side.throughput.iter().map(|t| t.mean_ms).sum::<f64>() / side.throughput.len().max(1) as f64;
            let lost: u64 = side.throughput.iter().map(|t| t.lost).sum();
            vec![
                what.to_owned(),
                format!("{:.0}", side.best_qps()),
                format!("{mean:.3}"),
                lost.to_string(),
                side.latency.ms.len().to_string(),
                format!("{:.3}", side.latency.quantile(0.5)),
                format!("{:.3}", side.latency.quantile(0.99)),
                side.latency.lost.to_string(),
            ]
        };
        out += &report::table(
            &[
                "server",
                "qps (best)",
                "mean ms under load",
                "lost",
                "latency-run answers",
                &format!("p50 ms @{} qps", self.latency_qps),
                &format!("p99 ms @{} qps", self.latency_qps),
                "lost",
            ],
            &[row("skiff node DNS", skiff), row("knot (reference)", knot)],
        );
        let _ = write!(
            out,
            "\nskiff / knot qps: **{ratio:.2}×** — target ≥ {TARGET_RATIO:.1}× the reference: {}.\n",
            verdict(ratio >= TARGET_RATIO)
        );
        out
    }
}

/// The mixed query file (see the module docs), in dnsperf's `name type` format.
fn query_file(services: &[Svc]) -> String {
    let mut out = String::new();
    for (i, svc) in services.iter().enumerate() {
        let name = format!("{}.default.svc.cluster.local", svc.name);
        let [a, b, c, d] = svc.ip.octets();
        let member = format!("hl-{}.hl.default.svc.cluster.local", i % usize::from(HEADLESS_ENDPOINTS));
        for _ in 0..4 {
            let _ = writeln!(out, "{name} A");
        }
        let _ = writeln!(out, "_http._tcp.{name} SRV");
        let _ = writeln!(out, "hl.default.svc.cluster.local A");
        let _ = writeln!(out, "{d}.{c}.{b}.{a}.in-addr.arpa PTR");
        let _ = writeln!(out, "{name} AAAA");
        let _ = writeln!(out, "missing-{i}.default.svc.cluster.local A");
        let _ = writeln!(out, "{member} A");
    }
    out
}

/// knot's configuration and the two zone files, equivalent to what the node serves.
fn write_knot(dir: &Path, services: &[Svc]) -> Result<()> {
    let d = dir.display();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::fs::write(
        dir.join("knot.conf"),
        format!(
            "server:\n    rundir: \"{d}\"\n    listen: {KNOT_DNS}@53\n    udp-workers: {threads}\n\
             log:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: \"{d}\"\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    semantic-checks: off\n\
             zone:\n  - domain: cluster.local\n    file: \"cluster.local.zone\"\n\
             \x20 - domain: 96.10.in-addr.arpa\n    file: \"reverse.zone\"\n"
        ),
    )?;
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 30\n@ SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n\
         @ NS ns.dns\nns.dns A 10.96.0.10\n",
    );
    let mut reverse = String::from(
        "$ORIGIN 96.10.in-addr.arpa.\n$TTL 30\n@ SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30\n\
         @ NS ns.dns.cluster.local.\n",
    );
    for svc in services {
        let [_, _, c, d] = svc.ip.octets();
        let _ = writeln!(zone, "{}.default.svc A {}", svc.name, svc.ip);
        let _ = writeln!(zone, "_http._tcp.{0}.default.svc SRV 0 100 80 {0}.default.svc", svc.name);
        let _ = writeln!(reverse, "{d}.{c} PTR {}.default.svc.cluster.local.", svc.name);
    }
    for j in 0..HEADLESS_ENDPOINTS {
        let ip = format!("10.244.0.{}", 100 + u16::from(j));
        let _ = writeln!(zone, "hl.default.svc A {ip}");
        let _ = writeln!(zone, "hl-{j}.hl.default.svc A {ip}");
    }
    std::fs::write(dir.join("cluster.local.zone"), zone)?;
    std::fs::write(dir.join("reverse.zone"), reverse)?;
    Ok(())
}

/// dnsperf's summary: `Queries per second:`, `Average Latency (s):`, `Queries lost:`.
fn parse_summary(out: &str) -> Result<Throughput> {
    let mut t = Throughput::default();
    let mut seen = false;
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Queries per second:") {
            t.qps = v.trim().parse().context("qps")?;
            seen = true;
        } else if let Some(v) = line.strip_prefix("Average Latency (s):") {
            let avg = v.split_whitespace().next().unwrap_or_default();
            t.mean_ms = avg.parse::<f64>().context("latency")? * 1000.0;
        } else if let Some(v) = line.strip_prefix("Queries lost:") {
            t.lost = v.split_whitespace().next().unwrap_or_default().parse().unwrap_or(0);
        }
    }
    if !seen {
        bail!("no dnsperf summary in:\n{out}");
    }
    Ok(t)
}

/// `-v` lines: `> RCODE name type latency` per response, `> T name type` per timeout.
fn parse_verbose(out: &str) -> Latency {
    let mut l = Latency::default();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("> ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"T") {
            l.lost += 1;
        } else if let Some(secs) = fields.last().and_then(|s| s.parse::<f64>().ok()) {
            l.ms.push(secs * 1000.0);
        }
    }
    l
}

/// The first line of `program args` mentioning a version, or "PROGRAM (version unknown)".
fn tool_version(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output();
    let text = out.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
    text.ok()
        .and_then(|t| t.lines().find(|l| l.contains("ersion")).map(|l| format!("{program} {}", l.trim())))
        .unwrap_or_else(|| format!("{program} (version unknown)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_output_parses() {
        let summary = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    998 (99.80%)\n  \
                       Queries lost:         2 (0.20%)\n\n  Queries per second:   25000.5\n\n  \
                       Average Latency (s):  0.000120 (min 0.000010, max 0.002000)\n";
        let t = parse_summary(summary).expect("summary");
        assert!((t.qps - 25000.5).abs() < 1e-6 && (t.mean_ms - 0.12).abs() < 1e-9 && t.lost == 2);
        assert!(parse_summary("nothing").is_err());
        let verbose = "> NOERROR web.default.svc.cluster.local A 0.000200\n> T x A\n> NXDOMAIN y A 0.000100\n";
        let mut l = parse_verbose(verbose);
        l.ms.sort_by(f64::total_cmp);
        assert_eq!(l.lost, 1);
        assert_eq!(l.ms.len(), 2);
        assert!((l.quantile(0.99) - 0.2).abs() < 1e-9);
    }

    #[test]
    fn query_mix_has_every_kind() {
        let services = [Svc { name: "svc-0".into(), ip: Ipv4Addr::new(10, 96, 1, 2) }];
        let file = query_file(&services);
        assert_eq!(file.lines().count(), 10);
        for line in [
            "svc-0.default.svc.cluster.local AAAA",
            "2.1.96.10.in-addr.arpa PTR",
            "hl-0.hl.default.svc.cluster.local A",
        ] {
            assert!(file.contains(line), "{line} in {file}");
        }
    }
}
