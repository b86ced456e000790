//! `skiff-bench`: benchmarks that write BENCHMARKS.md at the workspace root.
//!
//! One module per benchmark (`api`, `pods`, `http`, `footprint`, `sched`, `containers`, `dns`, `ingress`, `service`, `churn`, `scale_zero`), each rewriting only its own section of the file
//! (see [`report`]). Run with `--release` against a release `skiff`:
//! `cargo build --release -p skiff && cargo run --release -p skiff-bench -- api`.

mod api;
mod churn;
mod containers;
mod dns;
mod footprint;
mod http;
mod ingress;
mod load;
mod pods;
mod procfs;
mod report;
mod scale_zero;
mod sched;
mod service;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skiff_tests::{Etcd, StoreKind};

/// Benchmarks for Skiff; results go to BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Markdown file to update.
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md"))]
    output: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// API pod-create throughput/latency on both stores, raw etcd puts, and a large list.
    Api {
        /// Pods created per store and concurrency.
        #[arg(long, default_value_t = 5000)]
        pods: usize,
        /// Concurrent clients, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        clients: Vec<usize>,
        /// Pods in the list benchmark (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        list_pods: usize,
        /// Timed lists per store.
        #[arg(long, default_value_t = 10)]
        list_runs: usize,
        /// Stores to benchmark, comma separated (embedded, etcd).
        #[arg(long, value_delimiter = ',', default_value = "embedded,etcd")]
        stores: Vec<String>,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// WASM pod create → Ready latency: one after another, then a concurrent burst.
    Pods {
        /// Pods created one after another.
        #[arg(long, default_value_t = 200)]
        pods: usize,
        /// Sequential pods alive at once; deleted (untimed) after each batch (node takes ≤ 110).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Pods of the burst variant (all alive at once).
        #[arg(long, default_value_t = 100)]
        burst_pods: usize,
        /// Concurrent clients of the burst variant.
        #[arg(long, default_value_t = 8)]
        burst_clients: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// hello-http requests/s and p99 on a Skiff pod vs `wasmtime serve`, loaded by wrk.
    Http {
        /// wrk threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds per measured run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Warm-up seconds before each measured run.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Measured runs per side (alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// The wasmtime CLI to compare with.
        #[arg(long, default_value = "wasmtime")]
        wasmtime: PathBuf,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// hello-http requests/s and p99 through the node's Ingress vs straight to the pod IP (wrk).
    Ingress {
        /// wrk threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds per measured run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Warm-up seconds before each measured run.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Measured runs per side (alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Time for many Services and their endpoints to reach the node's proxy and cluster DNS,
    /// created and deleted (root: runs skiff in bridge mode inside a network namespace).
    Churn {
        /// Services created (each with a manual Endpoints).
        #[arg(long, default_value_t = 10_000)]
        services: usize,
        /// Concurrent API clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Scale-from-zero: first request to a scaled-to-zero hello-http Deployment through its
    /// cluster IP, request sent → response, p50/p99 (root: runs skiff in bridge mode inside a
    /// network namespace).
    ScaleFromZero {
        /// Measured scale-from-zero requests.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// hello-http requests/s and p99 through its Service's cluster IP vs the pod IP (root: runs
    /// skiff in bridge mode inside a network namespace).
    Service {
        /// wrk threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// wrk connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds per measured run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Warm-up seconds before each measured run.
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Measured runs per side (alternating).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Idle RSS of `skiff up`, added RSS per idle pod, release binary size.
    Footprint {
        /// Idle pods to create.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Seconds idle after ready before the first reading.
        #[arg(long, default_value_t = 10)]
        idle_wait: u64,
        /// Seconds after pods are Ready before a reading.
        #[arg(long, default_value_t = 5)]
        settle: u64,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Scheduling throughput on hollow nodes: a Deployment of --pods over --nodes simulated nodes.
    Sched {
        /// Hollow nodes.
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        /// Replicas of the Deployment.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// OCI pod create → running vs bare `runc run`, and image pull + unpack MiB/s (as root).
    Containers {
        /// Timed pods (and as many timed bare runc containers), one after another.
        #[arg(long, default_value_t = 30)]
        pods: usize,
        /// Size of the generated random layer in MiB.
        #[arg(long, default_value_t = 50)]
        image_mib: usize,
        /// Pull + unpack runs (median reported).
        #[arg(long, default_value_t = 3)]
        pull_runs: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Cluster DNS queries/s and latency with dnsperf, side by side with knot on an equivalent
    /// static zone (as root: skiff runs in a network namespace).
    Dns {
        /// ClusterIP Services created and queried.
        #[arg(long, default_value_t = 200)]
        services: usize,
        /// Seconds per throughput run.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// dnsperf clients (sockets).
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Queries outstanding (dnsperf -q).
        #[arg(long, default_value_t = 100)]
        outstanding: usize,
        /// Queries/s of the latency runs.
        #[arg(long, default_value_t = 2000)]
        latency_qps: u64,
        /// Measured rounds per server (alternating).
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// skiff binary (default: `skiff` beside this binary, i.e. target/release/skiff).
        #[arg(long, env = "SKIFF_BIN")]
        skiff_bin: Option<PathBuf>,
        /// Print the section instead of writing it to the output file.
        #[arg(long)]
        dry_run: bool,
    },
    /// Only raw etcd puts against a throw-away etcd (a baseline; writes nothing).
    RawEtcd {
        /// Puts per concurrency.
        #[arg(long, default_value_t = 5000)]
        puts: usize,
        /// Concurrent clients, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        clients: Vec<usize>,
        /// Value size in bytes.
        #[arg(long, default_value_t = 1000)]
        value_bytes: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Api { pods, clients, list_pods, list_runs, stores, skiff_bin, dry_run } => {
            let stores = stores
                .iter()
                .map(|s| match s.as_str() {
                    "embedded" => Ok(StoreKind::Embedded),
                    "etcd" => Ok(StoreKind::Etcd),
                    other => anyhow::bail!("unknown store {other:?} (embedded, etcd)"),
                })
                .collect::<Result<Vec<_>>>()?;
            let bench = api::ApiBench { pods, concurrency: clients, list_pods, list_runs, stores, skiff_bin };
            let section = bench.run().await?;
            if dry_run {
                writeln!(std::io::stdout(), "{section}").context("writing stdout")?;
            } else {
                report::write_section(&cli.output, "api", &section)?;
                eprintln!("updated {}", cli.output.display());
            }
        }
        Command::Pods { pods, batch, burst_pods, burst_clients, skiff_bin, dry_run } => {
            let bench =
                pods::PodsBench { pods, batch, burst_pods, burst_clients, skiff_bin, load_at_start: pods::load_note() };
            let section = bench.run().await?;
            emit(&cli.output, "pods", &section, dry_run)?;
        }
        Command::Http { threads, connections, duration, warmup, rounds, wasmtime, skiff_bin, dry_run } => {
            let bench = http::HttpBench {
                threads,
                connections,
                duration_s: duration,
                warmup_s: warmup,
                rounds,
                wasmtime,
                skiff_bin,
                load_at_start: pods::load_note(),
            };
            let section = bench.run().await?;
            emit(&cli.output, "http", &section, dry_run)?;
        }
        Command::Ingress { threads, connections, duration, warmup, rounds, skiff_bin, dry_run } => {
            let bench = ingress::IngressBench {
                threads,
                connections,
                duration_s: duration,
                warmup_s: warmup,
                rounds,
                skiff_bin,
                load_at_start: pods::load_note(),
            };
            let section = bench.run().await?;
            emit(&cli.output, "ingress", &section, dry_run)?;
        }
        Command::Churn { services, clients, skiff_bin, dry_run } => {
            let bench = churn::ChurnBench {
                services,
                clients,
                skiff_bin,
                load_at_start: pods::load_note(),
                retried: Default::default(),
            };
            let section = bench.run().await?;
            emit(&cli.output, "churn", &section, dry_run)?;
        }
        Command::ScaleFromZero { rounds, skiff_bin, dry_run } => {
            let bench = scale_zero::ScaleZeroBench { rounds, skiff_bin, load_at_start: pods::load_note() };
            let section = bench.run().await?;
            emit(&cli.output, "scale-from-zero", &section, dry_run)?;
        }
        Command::Service { threads, connections, duration, warmup, rounds, skiff_bin, dry_run } => {
            let bench = service::ServiceBench {
                threads,
                connections,
                duration_s: duration,
                warmup_s: warmup,
                rounds,
                skiff_bin,
                load_at_start: pods::load_note(),
            };
            let section = bench.run().await?;
            emit(&cli.output, "service", &section, dry_run)?;
        }
        Command::Footprint { pods, idle_wait, settle, skiff_bin, dry_run } => {
            let bench = footprint::FootprintBench {
                pods,
                idle_wait_s: idle_wait,
                settle_s: settle,
                skiff_bin,
                load_at_start: pods::load_note(),
            };
            let section = bench.run().await?;
            emit(&cli.output, "footprint", &section, dry_run)?;
        }
        Command::Sched { nodes, pods, skiff_bin, dry_run } => {
            let section = sched::SchedBench { nodes, pods, skiff_bin }.run().await?;
            emit(&cli.output, "sched", &section, dry_run)?;
        }
        Command::Containers { pods, image_mib, pull_runs, skiff_bin, dry_run } => {
            let bench =
                containers::ContainersBench { pods, image_mib, pull_runs, skiff_bin, load_at_start: pods::load_note() };
            let section = bench.run().await?;
            emit(&cli.output, "containers", &section, dry_run)?;
        }
        Command::Dns { services, duration, clients, outstanding, latency_qps, rounds, skiff_bin, dry_run } => {
            let bench = dns::DnsBench {
                services,
                duration_s: duration,
                clients,
                outstanding,
                latency_qps,
                rounds,
                skiff_bin,
                load_at_start: pods::load_note(),
            };
            let section = bench.run().await?;
            emit(&cli.output, "dns", &section, dry_run)?;
        }
        Command::RawEtcd { puts, clients, value_bytes } => {
            let etcd = Etcd::start().await?;
            let mut out = std::io::stdout();
            writeln!(out, "| clients | value bytes | puts/s | p50 ms | p99 ms | errors |")?;
            writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
            for c in clients {
                let r = api::raw_etcd_puts(&etcd.endpoint, &format!("/raw/c{c}/"), puts, c, value_bytes).await?;
                writeln!(
                    out,
                    "| {c} | {value_bytes} | {:.0} | {:.2} | {:.2} | {} |",
                    r.per_second(),
                    r.percentile_ms(50.0),
                    r.percentile_ms(99.0),
                    r.errors
                )?;
            }
        }
    }
    Ok(())
}

/// Prints `section` (dry run) or writes it as section `name` of `output`.
fn emit(output: &std::path::Path, name: &str, section: &str, dry_run: bool) -> Result<()> {
    if dry_run {
        writeln!(std::io::stdout(), "{section}").context("writing stdout")?;
    } else {
        report::write_section(output, name, section)?;
        eprintln!("updated {}", output.display());
    }
    Ok(())
}
