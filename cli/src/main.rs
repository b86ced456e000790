#![allow(clippy::print_stdout)] // a CLI prints its answers
//! `skiff`: one binary for the whole system — the control plane (`server`), the all-in-one
//! single node (`up`), and, as later issues add them, the node agent and function-author verbs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod push;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_control_plane::controllers::ControllerConfig;
use skiff_control_plane::registry::service_alloc::ServiceNetwork;
use skiff_control_plane::server::{RunningServer, ServerConfig, StoreConfig};
use tokio_util::sync::CancellationToken;

mod agent;
mod heap;
mod limits;
mod node;

#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff: a WebAssembly-first workload orchestrator that speaks the Kubernetes API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run an all-in-one single node: the control plane and a node agent running WASM pods.
    Up(UpArgs),
    /// Run the control plane only: API server and state store.
    Server(ServeArgs),
    /// Run the node agent: register this machine as a Node and run the pods bound to it.
    Agent(agent::AgentArgs),
    /// Print the version of this binary and of the Kubernetes API it serves.
    Version,
    /// Internal: compile WebAssembly from stdin into the node's artifact cache (the node agent
    /// runs this as a short-lived child so the compiler's memory never stays in the agent).
    #[command(hide = true)]
    CompileWasm(CompileWasmArgs),
    /// Push a .wasm file to the cluster's built-in registry (or --registry) and print its image reference.
    Push(push::PushArgs),
    /// Internal: the per-container shim the OCI runtime starts (`skiff container-shim --id …`);
    /// dispatched before argument parsing, listed here for `--help` completeness only.
    #[command(hide = true)]
    ContainerShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// One redb file in the data dir (the default).
    Embedded,
    /// An etcd cluster (see --etcd-endpoints).
    Etcd,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where state, certificates and the kubeconfig live
    /// [default: /var/lib/skiff as root, ~/.local/share/skiff otherwise].
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the HTTPS API listens on [default: 127.0.0.1:6443 for `up`, 0.0.0.0:6443 for `server`].
    #[arg(long, env = "SKIFF_LISTEN")]
    listen: Option<SocketAddr>,
    /// State store backend.
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
    /// etcd client URLs, comma separated (with --store etcd).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// Key prefix of Skiff's objects in etcd.
    #[arg(long, default_value = "/registry/")]
    etcd_prefix: String,
    /// Extra DNS names or IPs for the API server certificate, comma separated.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// How often old history is compacted (watchers further behind must re-list).
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    compaction_interval: u64,
    /// How long a node may go without renewing its Lease before it is marked NotReady
    /// (kube-controller-manager's --node-monitor-grace-period).
    #[arg(long, default_value = "40", value_name = "SECONDS")]
    node_monitor_grace_period: u64,
    /// How long pods stay on a NotReady or unreachable node before eviction, unless they
    /// tolerate the taint themselves (the API server's --default-unreachable-toleration-seconds).
    #[arg(long, default_value = "300", value_name = "SECONDS")]
    default_unreachable_toleration_seconds: u64,
    /// The range Service cluster IPs come from (kube-apiserver's flag); its first address
    /// is the `kubernetes` Service's, `.10` is the one cluster DNS takes.
    #[arg(long, default_value = "10.96.0.0/16", value_name = "CIDR")]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// The range node ports come from, `LOW-HIGH` (kube-apiserver's flag).
    #[arg(long, default_value = "30000-32767", value_name = "LOW-HIGH", value_parser = parse_port_range)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
}

/// `LOW-HIGH` as an inclusive port range.
fn parse_port_range(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| format!("{s:?} is not LOW-HIGH"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{hi:?}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!("{s:?}: LOW must be at least 1 and not above HIGH"));
    }
    Ok(lo..=hi)
}

/// `skiff up`: the control plane's flags plus the node's.
#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Name of the node [default: the hostname].
    #[arg(long)]
    node_name: Option<String>,
    /// How pods get their IPs: `loopback` (127.244.0.0/24, no privileges needed; the default)
    /// or `bridge` (10.244.0.0/24 on the bridge skiff0; root).
    #[arg(long, value_enum, default_value = "loopback")]
    pod_network: agent::NetworkArg,
    /// Port of the node API (logs); 0 picks a free one.
    #[arg(long, default_value = "0")]
    node_api_port: u16,
    /// Port this node serves Ingresses on over HTTP (bound to the node IP, not to every
    /// address: cluster IPs are local addresses too); 0 disables it.
    #[arg(long, default_value = "80", value_name = "PORT")]
    ingress_http_port: u16,
    /// Port this node serves Ingresses on over HTTPS (certificates from the Ingresses' TLS
    /// Secrets, chosen by SNI); 0 disables it.
    #[arg(long, default_value = "443", value_name = "PORT")]
    ingress_https_port: u16,
    /// A registry (`HOST:PORT`) the node pulls from over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// Where the node's cluster DNS forwards names outside the cluster zone; repeatable
    /// [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]", value_parser = skiff_node::cluster_dns::parse_upstream)]
    dns_upstreams: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    runtimes: agent::RuntimeArgs,
}

/// The log filter without `RUST_LOG`: info, except hickory's server, which logs every DNS
/// query at info (the node's cluster DNS would log each one).
pub(crate) const DEFAULT_LOG_FILTER: &str = "info,hickory_server=warn";

pub(crate) fn default_data_dir() -> PathBuf {
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::env::var("HOME").map(|h| h == "/root").unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/skiff");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/skiff"),
        None => PathBuf::from(".skiff"),
    }
}

fn main() -> std::process::ExitCode {
    // The container shim keeps its own minimal argument format and must not start a runtime.
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "container-shim") {
        return skiff_oci_shim::runtime::shim::main(args.collect());
    }
    match run_cli() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // What `fn main() -> anyhow::Result<()>` would print.
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli() -> anyhow::Result<()> {
    let cli = Cli::parse();
    limits::raise_open_files();
    match cli.command {
        Command::Version => {
            println!(
                "skiff {} (Kubernetes API v1.{})",
                env!("CARGO_PKG_VERSION"),
                skiff_control_plane::apiserver::discovery::KUBE_MINOR
            );
            Ok(())
        }
        Command::Up(args) => {
            let node = NodeArgs {
                name: args.node_name,
                network: args.pod_network,
                api_port: args.node_api_port,
                ingress_ports: (args.ingress_http_port, args.ingress_https_port),
                insecure_registries: args.insecure_registries,
                dns_upstreams: args.dns_upstreams,
                runtimes: args.runtimes,
            };
            run(args.serve, "127.0.0.1:6443", Some(node))
        }
        Command::Server(args) => run(args, "0.0.0.0:6443", None),
        Command::Push(args) => push::run(args),
        Command::CompileWasm(args) => {
            let child = skiff_wasm_runtime::ChildArgs {
                kind: args.kind,
                max_instances: args.max_instances,
                max_memory: args.max_memory,
                out: args.out,
            };
            if let Err(message) = skiff_wasm_runtime::compile_from_stdin(&child) {
                // Only the message: the node shows it as the container's reason.
                eprintln!("{message}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Agent(args) => agent::run(args),
        // `main` dispatches the shim before parsing; here only when flags came first.
        Command::ContainerShim { .. } => anyhow::bail!("container-shim must be the first argument"),
    }
}

/// Flags of `skiff compile-wasm` (see `skiff_wasm_runtime::ChildArgs`).
#[derive(Debug, Args)]
struct CompileWasmArgs {
    #[arg(long)]
    kind: String,
    #[arg(long)]
    max_instances: u32,
    #[arg(long)]
    max_memory: u64,
    #[arg(long)]
    out: PathBuf,
}

/// The node `skiff up` runs beside the control plane.
#[derive(Debug)]
struct NodeArgs {
    name: Option<String>,
    network: agent::NetworkArg,
    api_port: u16,
    /// `--ingress-http-port`, `--ingress-https-port`.
    ingress_ports: (u16, u16),
    insecure_registries: Vec<String>,
    dns_upstreams: Vec<std::net::SocketAddr>,
    runtimes: agent::RuntimeArgs,
}

fn run(args: ServeArgs, default_listen: &str, node: Option<NodeArgs>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let listen = match args.listen {
        Some(l) => l,
        None => default_listen.parse().context("default listen address")?,
    };
    let store = match args.store {
        StoreKind::Embedded => StoreConfig::Embedded,
        StoreKind::Etcd => StoreConfig::Etcd { endpoints: args.etcd_endpoints, prefix: args.etcd_prefix },
    };
    if args.service_cluster_ip_range.prefix_len() > 28 {
        anyhow::bail!(
            "--service-cluster-ip-range {} is too small: use a /28 or larger (the default is 10.96.0.0/16)",
            args.service_cluster_ip_range
        );
    }
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let service_cidr = args.service_cluster_ip_range.trunc();
    let cfg = ServerConfig {
        data_dir: data_dir.clone(),
        listen,
        store,
        extra_sans: args.tls_san,
        compaction_interval: Duration::from_secs(args.compaction_interval.max(1)),
        controllers: ControllerConfig {
            node_monitor_grace_period: Duration::from_secs(args.node_monitor_grace_period.max(1)),
            default_unreachable_toleration: Duration::from_secs(args.default_unreachable_toleration_seconds),
            ..ControllerConfig::default()
        },
        service_network: ServiceNetwork { cidr: service_cidr, node_ports: args.service_node_port_range },
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let server = RunningServer::start(cfg, shutdown.clone()).await.context("starting the control plane")?;
        eprintln!("kubeconfig: {}", server.kubeconfig.display());
        eprintln!("API server: https://{}", server.addr);
        tokio::spawn(signals(shutdown.clone()));
        tokio::spawn(heap::trimmer(shutdown.clone()));
        let node = match node {
            Some(args) => Some(start_local_node(&server, &data_dir, args, service_cidr, shutdown.clone()).await?),
            None => None,
        };
        if let Some(node) = node {
            node.wait().await;
        }
        server.wait().await;
        anyhow::Ok(())
    })
}

/// Starts the node of `skiff up` in this process, talking to the control plane like any agent.
async fn start_local_node(
    server: &RunningServer,
    data_dir: &std::path::Path,
    args: NodeArgs,
    service_cidr: ipnet::Ipv4Net,
    shutdown: CancellationToken,
) -> anyhow::Result<node::RunningNode> {
    let pki = skiff_control_plane::pki::ClusterPki::load_existing(&data_dir.join("pki"))
        .context("reading the cluster PKI")?;
    let client = node::client_from_kubeconfig(&server.kubeconfig).await?;
    let host = if server.addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { server.addr.ip().to_string() };
    let cluster = node::ClusterAccess {
        client,
        api_host: format!("{host}:{}", server.addr.port()),
        token: pki.admin_token().to_string(),
        pki,
    };
    let mut cfg = skiff_node::AgentConfig::new(args.name.unwrap_or_else(agent::hostname), data_dir.join("agent"));
    cfg.pod_network = args.network.into();
    cfg.service_cidr = service_cidr;
    cfg.node_api_port = args.api_port;
    (cfg.ingress_http_port, cfg.ingress_https_port) = args.ingress_ports;
    cfg.insecure_registries = args.insecure_registries;
    cfg.dns_upstreams = args.dns_upstreams;
    let runtimes = args.runtimes.options(cfg.pod_network)?;
    let node = node::start(cfg, cluster, runtimes, shutdown).await?;
    eprintln!("node {} running (pod CIDR {})", node.agent.node_name, node.agent.pod_cidr);
    Ok(node)
}

/// First SIGTERM/SIGINT drains gracefully; a second one exits at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("shutting down (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(130);
}
