//! The agent as a whole: configuration, start-up order, owned tasks, shutdown.
//!
//! What it owns: loading the IPAM state and setting up pod networking, registering the Node,
//! handing back the pod IPs (and runtimes' containers) of pods deleted while the agent was down, then running the status loop, the Lease heartbeat, the pod dispatcher, the
//! service proxy (`proxy`), the cluster DNS server (`cluster_dns`), image garbage collection (`image_gc`) and the Ingress listeners (`ingress`) as owned tasks under one cancellation token. What it does not: serve the node API (`nodeapi`, started by
//! whoever builds the agent, which passes its port in), or build runtimes and the pod
//! environment (passed in, so tests can use fakes).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bridge::{HostNet, NetError, PodNetwork};
use crate::events::EventRecorder;
use crate::ipam::{Ipam, IpamError};
use crate::node_status::{self, NodeFacts, NodeIdentity};
use crate::pod_env::PodEnvironment;
use crate::runtime::{ContainerRuntime, PullCredentials};
use crate::worker::WorkerContext;
use crate::worker::backoff::BackoffConfig;
use crate::{lease, pods, probe};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// Where the agent keeps its state (IP assignments).
    pub data_dir: PathBuf,
    pub pod_network: PodNetwork,
    /// The pod CIDR (default: the network mode's, `127.244.0.0/24` or `10.244.0.0/24`).
    pub pod_cidr: Option<Ipv4Net>,
    /// The range Service cluster IPs come from (the API server's `--service-cluster-ip-range`):
    /// the service proxy and the DNS server listen on addresses from it, so in bridge mode the
    /// whole range is made local to the node (a `local` route, as kube-proxy's IPVS mode does
    /// with its dummy interface, but one route instead of one address per Service).
    pub service_cidr: Ipv4Net,
    /// The cluster DNS address written into containers' `resolv.conf` and served by the node's
    /// DNS server (the kubelet's `--cluster-dns`; default: the range's `.10`).
    pub cluster_dns: Option<Ipv4Addr>,
    /// Where the node's DNS server forwards names outside the cluster zone (`--dns-upstream`);
    /// empty: the host's `/etc/resolv.conf` nameservers.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// The cache of cluster names the node's DNS server answers from, when the embedder shares
    /// it (with the WASM runtime's guest resolvers: [`crate::cluster_dns::new_records`]);
    /// `None`: the agent makes its own.
    pub cluster_records: Option<skiff_dns::ClusterRecords>,
    /// The node's InternalIP (also the pods' hostIP).
    pub node_ip: IpAddr,
    /// The port the node API listens on (reported as the kubelet endpoint).
    pub node_api_port: u16,
    /// Capacity overrides (`cpu`, `memory`, `pods`) as quantities.
    pub capacity: BTreeMap<String, String>,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
    pub backoff: BackoffConfig,
    /// How often the Node status is refreshed.
    pub status_interval: Duration,
    /// How often the Lease is renewed.
    pub lease_interval: Duration,
    /// Grace given to containers when the agent stops.
    pub shutdown_grace: Duration,
    /// The node's own registry credentials, consulted after a pod's `imagePullSecrets`.
    pub pull_credentials: PullCredentials,
    /// Registries (`host:port`) reached over plain HTTP, as containerd's insecure registries.
    pub insecure_registries: Vec<String>,
    /// Where workers publish running containers for the node API's exec and port-forward.
    pub stream_targets: Arc<crate::nodeapi::StreamTargets>,
    /// Image garbage collection over the node's image store (`None`: never collect).
    pub image_gc: Option<crate::image_gc::ImageGc>,
    /// The port the node serves Ingresses on over HTTP (`--ingress-http-port`; 0: not served).
    pub ingress_http_port: u16,
    /// The port the node serves Ingresses on over HTTPS (`--ingress-https-port`; 0: not served).
    pub ingress_https_port: u16,
}

impl AgentConfig {
    /// Defaults: loopback networking on 127.0.0.1, port 10250, kubelet timings, no ingress.
    pub fn new(node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            data_dir: data_dir.into(),
            pod_network: PodNetwork::Loopback,
            pod_cidr: None,
            service_cidr: DEFAULT_SERVICE_CIDR,
            cluster_dns: None,
            dns_upstreams: Vec::new(),
            cluster_records: None,
            node_ip: IpAddr::from([127, 0, 0, 1]),
            node_api_port: 10250,
            capacity: BTreeMap::new(),
            labels: BTreeMap::new(),
            backoff: BackoffConfig::default(),
            status_interval: Duration::from_secs(10),
            lease_interval: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
            pull_credentials: PullCredentials::default(),
            insecure_registries: Vec::new(),
            stream_targets: Arc::default(),
            image_gc: None,
            // Off unless asked for (the CLI asks for 80 and 443): embedders and tests on the
            // host's network must not take those ports by accident.
            ingress_http_port: 0,
            ingress_https_port: 0,
        }
    }

    /// The pod CIDR in effect.
    pub fn effective_pod_cidr(&self) -> Ipv4Net {
        self.pod_cidr.unwrap_or_else(|| self.pod_network.default_cidr())
    }

    /// Where the ingress listens: the node IP (its InternalIP, what `status.loadBalancer` names),
    /// in both network modes. Not every address: in bridge mode the whole service range is
    /// local, so a wildcard listener on :80 would take every cluster IP's port 80 from the
    /// service proxy (Linux refuses a specific bind beside a listening wildcard one), and a
    /// WASM pod serving on :80 its pod IP. A port of 0 is not served.
    pub fn ingress(&self) -> crate::ingress::IngressConfig {
        let ip = self.node_ip;
        let addr = |port: u16| (port != 0).then(|| std::net::SocketAddr::new(ip, port));
        crate::ingress::IngressConfig { http: addr(self.ingress_http_port), https: addr(self.ingress_https_port) }
    }

    /// The cluster DNS address in effect: the configured one, else the service range's `.10`
    /// (where the control plane puts the `kube-system/kube-dns` Service).
    pub fn cluster_dns_ip(&self) -> Ipv4Addr {
        self.cluster_dns.unwrap_or_else(|| default_cluster_dns(self.service_cidr))
    }
}

/// The API server's default `--service-cluster-ip-range`.
pub const DEFAULT_SERVICE_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 96, 0, 0), 16);

/// The cluster DNS address Kubernetes conventionally uses: the service range's tenth address.
pub fn default_cluster_dns(service_cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(service_cidr.network()) + 10)
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("creating the data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("setting up pod networking: {0}")]
    Net(#[from] NetError),
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("building the probe HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The node agent.
#[derive(Debug)]
pub struct Agent;

impl Agent {
    /// Registers the Node and starts the agent's tasks; they run until `shutdown` fires.
    pub async fn start(
        cfg: AgentConfig,
        client: kube::Client,
        runtimes: Vec<Arc<dyn ContainerRuntime>>,
        env: Arc<dyn PodEnvironment>,
        shutdown: CancellationToken,
    ) -> Result<RunningAgent, AgentError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|source| AgentError::DataDir { path: cfg.data_dir.clone(), source })?;
        let cidr = cfg.effective_pod_cidr();
        let mut ipam = Ipam::load(cidr, &cfg.data_dir.join("ipam.json"))?;
        let net = HostNet::new(cfg.pod_network, cidr).with_service_cidr(cfg.service_cidr);
        net.setup().await?;

        let facts = NodeFacts::detect();
        let id = NodeIdentity {
            name: cfg.node_name.clone(),
            node_ip: cfg.node_ip,
            api_port: cfg.node_api_port,
            pod_cidr: cidr.to_string(),
            runtimes: runtimes.iter().map(|r| r.name().to_string()).collect(),
            labels: cfg.labels.clone(),
            capacity: cfg.capacity.clone(),
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let node = node_status::register(&nodes, &node_status::desired_node(&id, &facts))
            .await
            .map_err(|source| AgentError::Register { node: cfg.node_name.clone(), source })?;
        info!(node = %cfg.node_name, %cidr, "node registered");
        // Before any worker runs (workers are what allocate), so nothing races with it.
        reconcile_pod_ips(&client, &cfg.node_name, &mut ipam, &net, &runtimes).await;

        let (events, event_writer) = EventRecorder::start(client.clone(), cfg.node_name.clone(), shutdown.clone());
        let image_gc = cfg.image_gc.clone().map(|gc| {
            crate::image_gc::run(gc, client.clone(), cfg.node_name.clone(), events.clone(), shutdown.clone())
        });
        let local_http = Arc::new(crate::proxy::LocalHttp::default());
        let ctx = Arc::new(WorkerContext {
            client: client.clone(),
            node_name: cfg.node_name.clone(),
            host_ip: cfg.node_ip,
            runtimes,
            env,
            ipam: Arc::new(Mutex::new(ipam)),
            net,
            backoff: cfg.backoff,
            http: probe::check::http_client()?,
            creds: cfg.pull_credentials.clone(),
            shutdown_grace: cfg.shutdown_grace,
            events: events.clone(),
            stream_targets: cfg.stream_targets.clone(),
            cluster_dns: Some(IpAddr::V4(cfg.cluster_dns_ip())),
            local_http: local_http.clone(),
        });
        let mut dns = crate::cluster_dns::ClusterDnsConfig::new(cfg.cluster_dns_ip());
        dns.upstreams = cfg.dns_upstreams.clone();
        let records = cfg.cluster_records.clone().unwrap_or_else(|| crate::cluster_dns::new_records(&dns));
        let dns_task =
            crate::cluster_dns::run(client.clone(), dns, records, ctx.net.local_service_cidr(), shutdown.clone());
        let client_for_volumes = client.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::proxy::run(
            client.clone(),
            proxy_placement(&cfg, &ctx.net),
            local_http,
            events.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(event_writer);
        tasks.spawn(node_status::status_loop(nodes, id, facts, cfg.status_interval, shutdown.clone()));
        tasks.spawn(lease::heartbeat(client, cfg.node_name.clone(), Some(node), cfg.lease_interval, shutdown.clone()));
        tasks.spawn(pods::dispatch(ctx, shutdown.clone()));
        tasks.spawn(dns_task);
        if let Some(image_gc) = image_gc {
            tasks.spawn(image_gc);
        }
        let ingress = cfg.ingress();
        if ingress.http.is_some() || ingress.https.is_some() {
            tasks.spawn(crate::ingress::run(client_for_volumes.clone(), ingress, events, shutdown.clone()));
        }
        tasks.spawn(crate::volumes::reclaim::cleanup_loop(
            client_for_volumes,
            cfg.node_name.clone(),
            cfg.data_dir.clone(),
            shutdown.clone(),
        ));
        Ok(RunningAgent { node_name: cfg.node_name, pod_cidr: cidr, tasks, shutdown })
    }
}

/// Where the service proxy serves what: cluster IPs when they are local here, node ports on
/// every address in bridge mode but only on the node IP in loopback mode (test clusters
/// sharing one host's loopback must not collide), load-balancer ports on the node IP.
fn proxy_placement(cfg: &AgentConfig, net: &HostNet) -> crate::proxy::Placement {
    let node_port_ip = match cfg.pod_network {
        PodNetwork::Bridge => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        PodNetwork::Loopback => cfg.node_ip,
    };
    crate::proxy::Placement { local_service_cidr: net.local_service_cidr(), node_ip: cfg.node_ip, node_port_ip }
}

/// Hands back the IPs of pods that are gone from the API (deleted while the agent was down: no
/// worker will ever see them) and takes pod addresses no pod holds off the bridge. Best effort:
/// if the pods cannot be listed, nothing is released (a live pod must never lose its address),
/// and the next start tries again.
async fn reconcile_pod_ips(
    client: &kube::Client,
    node: &str,
    ipam: &mut Ipam,
    net: &HostNet,
    runtimes: &[Arc<dyn ContainerRuntime>],
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let live: HashSet<String> = match pods.list(&params).await {
        Ok(list) => list.items.into_iter().filter_map(|p| p.metadata.uid).collect(),
        Err(error) => return warn!(%error, "listing this node's pods failed; stale pod IPs are kept"),
    };
    // Containers (and sandboxes) that outlived the agent but whose pod is gone.
    for runtime in runtimes {
        runtime.reconcile(&live).await;
    }
    match ipam.retain(|uid| live.contains(uid)) {
        Ok(released) if !released.is_empty() => info!(?released, "released the IPs of pods deleted meanwhile"),
        Ok(_) => {}
        Err(error) => warn!(%error, "saving the released pod IPs"),
    }
    let held: HashSet<Ipv4Addr> = ipam.assignments().map(|(_, ip)| ip).collect();
    let on_host = match net.pod_ips().await {
        Ok(ips) => ips,
        Err(error) => return warn!(%error, "listing the pod addresses on the bridge"),
    };
    for ip in on_host.into_iter().filter(|ip| !held.contains(ip)) {
        match net.remove_pod_ip(ip).await {
            Ok(()) => info!(%ip, "removed a pod address no pod holds"),
            Err(error) => warn!(%error, "removing a stale pod address"),
        }
    }
}

/// A started agent.
#[derive(Debug)]
pub struct RunningAgent {
    pub node_name: String,
    pub pod_cidr: Ipv4Net,
    tasks: JoinSet<()>,
    shutdown: CancellationToken,
}

impl RunningAgent {
    /// Waits until the agent's tasks have ended (after the shutdown token fired, once every
    /// pod's containers are stopped).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }

    /// Fires the shutdown token and waits for the tasks.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }
}
