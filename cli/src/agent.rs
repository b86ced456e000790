//! `skiff agent`: the node agent on its own, joining the cluster its kubeconfig names.
//!
//! What it owns: the command-line flags and turning them into an [`AgentConfig`], the kube
//! client, and the process lifetime (signals). The runtimes and pod environment come from
//! [`node_parts`], which the integration fills in (the WASM runtime adapter and the env /
//! volumes / logs implementation); the node API server is started there too.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ipnet::Ipv4Net;
use skiff_node::pod_env::PodEnvironment;
use skiff_node::runtime::ContainerRuntime;
use skiff_node::{Agent, AgentConfig, PodNetwork};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// Pod IPs from 127.244.0.0/24: no set-up, no root needed.
    Loopback,
    /// Pod IPs from 10.244.0.0/24 on the bridge skiff0 (root).
    Bridge,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Node name [default: the hostname].
    #[arg(long)]
    node_name: Option<String>,
    /// Where the agent keeps its state [default: <skiff data dir>/agent].
    #[arg(long, env = "SKIFF_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How pods get their IPs [default: bridge as root, loopback otherwise].
    #[arg(long, value_enum)]
    pod_network: Option<NetworkArg>,
    /// The pod CIDR [default: 127.244.0.0/24 (loopback) or 10.244.0.0/24 (bridge)].
    #[arg(long)]
    pod_cidr: Option<Ipv4Net>,
    /// The node's InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Port of the node API (logs, kubelet role).
    #[arg(long, default_value = "10250")]
    node_api_port: u16,
}

/// What the agent drives pods through: runtimes (the first is the default) and the pod
/// environment.
pub type NodeParts = (Vec<Arc<dyn ContainerRuntime>>, Arc<dyn PodEnvironment>);

/// The runtimes and pod environment for `cfg`. Filled in where the WASM runtime adapter and
/// the env/volumes/logs implementation are integrated.
pub fn node_parts(_cfg: &AgentConfig) -> anyhow::Result<NodeParts> {
    anyhow::bail!("this build of skiff has no container runtime and pod environment wired into `skiff agent` yet")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Builds the config from the flags.
pub fn config(args: &AgentArgs) -> AgentConfig {
    let is_root = crate::default_data_dir() == std::path::Path::new("/var/lib/skiff");
    let network = match args.pod_network {
        Some(NetworkArg::Bridge) => PodNetwork::Bridge,
        Some(NetworkArg::Loopback) => PodNetwork::Loopback,
        None if is_root => PodNetwork::Bridge,
        None => PodNetwork::Loopback,
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| crate::default_data_dir().join("agent"));
    let mut cfg = AgentConfig::new(args.node_name.clone().unwrap_or_else(hostname), data_dir);
    cfg.pod_network = network;
    cfg.pod_cidr = args.pod_cidr;
    cfg.node_ip = args.node_ip;
    cfg.node_api_port = args.node_api_port;
    cfg
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cfg = config(&args);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
            .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
        let client_cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?;
        let client = kube::Client::try_from(client_cfg).context("building the API client")?;
        let (runtimes, env) = node_parts(&cfg)?;
        let shutdown = CancellationToken::new();
        let agent = Agent::start(cfg, client, runtimes, env, shutdown.clone()).await.context("starting the node agent")?;
        eprintln!("node agent running as node {} (pod CIDR {})", agent.node_name, agent.pod_cidr);
        tokio::spawn(crate::signals(shutdown));
        agent.wait().await;
        anyhow::Ok(())
    })
}
