//! `skiff agent`: the node agent on its own, joining the cluster its kubeconfig names.
//!
//! What it owns: the command-line flags and turning them into an [`AgentConfig`], the kube
//! client, and the process lifetime (signals). Starting the node itself (runtime, pod
//! environment, node API, agent) is [`crate::node`]'s, shared with `skiff up`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use ipnet::Ipv4Net;
use skiff_node::{AgentConfig, PodNetwork};
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
    /// The range Service cluster IPs come from: must match the API server's flag of the same
    /// name. The service proxy and cluster DNS listen on addresses from it.
    #[arg(long, default_value = "10.96.0.0/16", value_name = "CIDR")]
    service_cluster_ip_range: Ipv4Net,
    /// The cluster DNS address given to pods [default: the service range's .10].
    #[arg(long, value_name = "IP")]
    cluster_dns: Option<std::net::Ipv4Addr>,
    /// Where the node's cluster DNS forwards names outside the cluster zone; repeatable
    /// [default: the nameservers of /etc/resolv.conf].
    #[arg(long = "dns-upstream", value_name = "IP[:PORT]", value_parser = skiff_node::cluster_dns::parse_upstream)]
    dns_upstreams: Vec<std::net::SocketAddr>,
    /// The node's InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Port of the node API (logs, kubelet role).
    #[arg(long, default_value = "10250")]
    node_api_port: u16,
    /// Port this node serves Ingresses on over HTTP (bound to the node IP, not to every
    /// address: cluster IPs are local addresses too); 0 disables it.
    #[arg(long, default_value = "80", value_name = "PORT")]
    ingress_http_port: u16,
    /// Port this node serves Ingresses on over HTTPS (certificates from the Ingresses' TLS
    /// Secrets, chosen by SNI); 0 disables it.
    #[arg(long, default_value = "443", value_name = "PORT")]
    ingress_https_port: u16,
    /// The cluster PKI directory (`<server data dir>/pki`): the node API's certificate and the
    /// built-in registry's credentials come from it until nodes join with tokens.
    #[arg(long, required_unless_present = "hollow_nodes")]
    cluster_pki: Option<PathBuf>,
    /// Instead of this machine, register this many simulated ("hollow") nodes that heartbeat and
    /// report their pods Running without running them — for control-plane scale tests.
    #[arg(long, value_name = "COUNT")]
    hollow_nodes: Option<usize>,
    /// Name prefix of the hollow nodes (`<prefix>00000`, …).
    #[arg(long, default_value = "hollow-", requires = "hollow_nodes")]
    hollow_name_prefix: String,
    /// How long the node Lease is valid (the kubelet's `nodeLeaseDurationSeconds`); the
    /// agent renews it (and posts Node status at least as often) every quarter of it.
    #[arg(long, default_value = "40")]
    node_lease_duration_seconds: u64,
    /// A registry (`HOST:PORT`) to pull from over plain HTTP; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    #[command(flatten)]
    pub runtimes: RuntimeArgs,
}

/// Which runtimes the node offers (shared by `skiff agent` and `skiff up`).
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Runtimes to offer, comma separated: `wasm` and optionally `oci` (container images run
    /// with runc; needs root and --pod-network bridge for pod networking)
    /// [default: wasm,oci as root in bridge mode with runc on PATH, else wasm].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub runtimes: Option<Vec<String>>,
    /// Maximum number of processes in each OCI container (0: unlimited).
    #[arg(long, default_value = "1024", value_name = "N")]
    pub pod_pids_limit: i64,
    /// The OCI runtime binary containers run with: `runc`, `crun` (needs a host on pure
    /// cgroup v2 or v1 — crun 1.8 refuses hybrid hierarchies), or a path. Its state lives under
    /// `<data dir>/oci/<name>`; containers of another runtime are not adopted after a switch.
    #[arg(long, default_value = "runc", value_name = "NAME|PATH")]
    pub oci_runtime: std::path::PathBuf,
    /// Disk use (percent of the filesystem holding the data dir) at or above which unused
    /// images are removed; 100 disables image garbage collection.
    #[arg(long, default_value = "85", value_name = "PERCENT")]
    pub image_gc_high_threshold: u8,
    /// Disk use image garbage collection frees down to.
    #[arg(long, default_value = "80", value_name = "PERCENT")]
    pub image_gc_low_threshold: u8,
    /// Images used more recently than this are never garbage collected.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = skiff_node::image_gc::parse_go_duration)]
    pub minimum_image_ttl_duration: std::time::Duration,
    /// How often disk use is checked for image garbage collection.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = skiff_node::image_gc::parse_go_duration)]
    pub image_gc_period: std::time::Duration,
}

impl RuntimeArgs {
    pub fn options(&self, network: PodNetwork) -> anyhow::Result<crate::node::RuntimeOptions> {
        let mut options =
            crate::node::RuntimeOptions::from_flags(self.runtimes.as_deref(), self.pod_pids_limit, network)?;
        options.image_gc = skiff_node::image_gc::ImageGcPolicy {
            high_threshold_percent: self.image_gc_high_threshold,
            low_threshold_percent: self.image_gc_low_threshold,
            min_age: self.minimum_image_ttl_duration,
            period: self.image_gc_period,
        };
        options.image_gc.validate().map_err(anyhow::Error::msg)?;
        options.oci_runtime = self.oci_runtime.clone();
        Ok(options)
    }
}

impl From<NetworkArg> for PodNetwork {
    fn from(arg: NetworkArg) -> PodNetwork {
        match arg {
            NetworkArg::Loopback => PodNetwork::Loopback,
            NetworkArg::Bridge => PodNetwork::Bridge,
        }
    }
}

pub fn hostname() -> String {
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
    cfg.service_cidr = args.service_cluster_ip_range.trunc();
    cfg.cluster_dns = args.cluster_dns;
    cfg.dns_upstreams = args.dns_upstreams.clone();
    cfg.node_ip = args.node_ip;
    cfg.node_api_port = args.node_api_port;
    cfg.ingress_http_port = args.ingress_http_port;
    cfg.ingress_https_port = args.ingress_https_port;
    cfg.insecure_registries = args.insecure_registries.clone();
    let renew = std::time::Duration::from_millis(args.node_lease_duration_seconds.max(1) * 1000 / 4);
    cfg.lease_interval = renew;
    cfg.status_interval = cfg.status_interval.min(renew);
    cfg
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| crate::DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = config(&args);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = crate::node::client_from_kubeconfig(&args.kubeconfig).await?;
        if let Some(count) = args.hollow_nodes {
            return run_hollow(client, count, args.hollow_name_prefix).await;
        }
        let pki_dir = args.cluster_pki.context("--cluster-pki is required")?;
        let pki = skiff_control_plane::pki::ClusterPki::load_existing(&pki_dir).context("reading the cluster PKI")?;
        let server = kube::config::Kubeconfig::read_from(&args.kubeconfig)?
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .context("the kubeconfig names no server")?;
        let api_host = server.trim_start_matches("https://").trim_end_matches('/').to_string();
        let cluster = crate::node::ClusterAccess { client, api_host, token: pki.admin_token().to_string(), pki };
        let shutdown = CancellationToken::new();
        let runtimes = args.runtimes.options(cfg.pod_network)?;
        let node = crate::node::start(cfg, cluster, runtimes, shutdown.clone()).await?;
        let agent = &node.agent;
        eprintln!("node agent running as node {} (pod CIDR {})", agent.node_name, agent.pod_cidr);
        tokio::spawn(crate::heap::trimmer(shutdown.clone()));
        tokio::spawn(crate::signals(shutdown));
        node.wait().await;
        anyhow::Ok(())
    })
}

/// `skiff agent --hollow-nodes N`: simulated nodes until SIGTERM/SIGINT.
async fn run_hollow(client: kube::Client, count: usize, prefix: String) -> anyhow::Result<()> {
    let mut cfg = skiff_node::hollow::HollowConfig::new(count);
    cfg.name_prefix = prefix;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::signals(shutdown.clone()));
    eprintln!("registering {count} hollow nodes");
    skiff_node::hollow::run(client, cfg, shutdown).await.context("running the hollow nodes")?;
    Ok(())
}
