//! Starting a node inside this process: the WASM runtime over the image store (and the OCI
//! runtime when enabled; image GC over the same store), the pod environment (env, volumes, logs), the node API the API
//! server reads logs from, and the agent.
//!
//! Shared by `skiff up` (the node beside the control plane) and `skiff agent`. What it does not
//! own: flags (cli modules) or pod lifecycles (the agent).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use skiff_control_plane::pki::ClusterPki;
use skiff_node::environment::NodePodEnvironment;
use skiff_node::image_gc::{ImageGc, ImageGcPolicy};
use skiff_node::nodeapi::{self, NodeApiTls};
use skiff_node::runtime::ContainerRuntime;
use skiff_node::runtime::oci::OciRuntime;
use skiff_node::runtime::oci_spec::NodeLimits;
use skiff_node::runtime::wasm::{BuiltinRegistry, WasmContainerRuntime};
use skiff_node::sandbox::Sandboxes;
use skiff_node::{Agent, AgentConfig, PodNetwork, RunningAgent};
use skiff_oci_shim::image::ImageStore;
use skiff_oci_shim::runtime::runc::ShimCommand;
use skiff_oci_shim::runtime::{Runc, RuncConfig};
use skiff_wasm_runtime::{Compiler, RuntimeConfig, WasmRuntime};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A node running in this process.
#[derive(Debug)]
pub struct RunningNode {
    pub agent: RunningAgent,
    tasks: JoinSet<()>,
}

impl RunningNode {
    /// Waits for the agent and the node API to end (after the shutdown token fires).
    pub async fn wait(mut self) {
        self.agent.wait().await;
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What the node needs from the cluster: its API client and the built-in registry's access.
pub struct ClusterAccess {
    pub client: kube::Client,
    /// `host:port` of the API server: images under it come from the built-in registry.
    pub api_host: String,
    pub token: String,
    pub pki: ClusterPki,
}

impl std::fmt::Debug for ClusterAccess {
    // The token never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess").field("api_host", &self.api_host).finish_non_exhaustive()
    }
}

/// Which runtimes the node offers besides WASM (always on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Run container images with runc (`oci`).
    pub oci: bool,
    /// Maximum processes per OCI container (`None`: unlimited).
    pub pids_limit: Option<i64>,
    /// When unused images are removed from the node's image store.
    pub image_gc: ImageGcPolicy,
    /// The OCI runtime binary (`--oci-runtime`: runc, crun or a path).
    pub oci_runtime: PathBuf,
}

impl RuntimeOptions {
    /// From `--runtimes` (`wasm,oci`); without it, OCI is on when running as root in bridge
    /// mode with `runc` on `PATH` (so rootless and loopback set-ups stay WASM-only).
    pub fn from_flags(runtimes: Option<&[String]>, pids_limit: i64, network: PodNetwork) -> anyhow::Result<Self> {
        let oci = match runtimes {
            Some(list) => {
                for name in list {
                    anyhow::ensure!(
                        name == "wasm" || name == "oci",
                        "--runtimes: unknown runtime {name:?} (known: wasm, oci)"
                    );
                }
                anyhow::ensure!(list.iter().any(|r| r == "wasm"), "--runtimes must include wasm");
                list.iter().any(|r| r == "oci")
            }
            None => {
                let is_root = crate::default_data_dir() == std::path::Path::new("/var/lib/skiff");
                is_root && network == PodNetwork::Bridge && on_path("runc")
            }
        };
        Ok(RuntimeOptions {
            oci,
            pids_limit: (pids_limit > 0).then_some(pids_limit),
            image_gc: ImageGcPolicy::default(),
            oci_runtime: PathBuf::from("runc"),
        })
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The `oci` runtime: runc state, bundles and sandboxes under `<data dir>/oci`, shims run as
/// `<this program> container-shim`.
fn oci_runtime(
    cfg: &AgentConfig,
    images: ImageStore,
    builtin: BuiltinRegistry,
    opts: &RuntimeOptions,
) -> anyhow::Result<OciRuntime> {
    let dir = cfg.data_dir.join("oci");
    let exe = std::env::current_exe().context("finding this program's path (the container shim)")?;
    // Each runtime keeps its own state dir: their state formats differ.
    let name = opts.oci_runtime.file_name().map_or_else(|| "runc".into(), |n| n.to_string_lossy().into_owned());
    let runc = Runc::new(RuncConfig {
        runc: opts.oci_runtime.clone(),
        runc_root: dir.join(name),
        bundle_root: dir.join("containers"),
        shim: ShimCommand { program: exe, args: vec!["container-shim".into()], env: Vec::new() },
    });
    let sandboxes = (cfg.pod_network == PodNetwork::Bridge)
        .then(|| Sandboxes::new(skiff_node::bridge::BRIDGE, cfg.effective_pod_cidr(), &dir, &dir.join("sandboxes")));
    let limits = NodeLimits { pids_limit: opts.pids_limit, cgroup_parent: "/skiff".into() };
    Ok(OciRuntime::new(runc, images, Some(builtin), cfg.insecure_registries.clone(), sandboxes, limits))
}

/// Starts the node: binds the node API first (so its real port goes into the Node), then the agent.
pub async fn start(
    mut cfg: AgentConfig,
    cluster: ClusterAccess,
    runtimes: RuntimeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningNode> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    // Compile in a child (`skiff compile-wasm`): the compiler's memory never stays in the agent.
    let compiler = match std::env::current_exe() {
        Ok(exe) => Compiler::Subprocess(vec![exe.into(), "compile-wasm".into()]),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program's path; compiling WebAssembly in-process");
            Compiler::InProcess
        }
    };
    // Guests' HTTPS to cluster names trusts the cluster CA (the one the kubeconfig names, which
    // issues the cluster's serving certificates) besides the web roots, as pods trust
    // `kube-root-ca.crt`.
    let wasm = WasmRuntime::new(RuntimeConfig {
        cache_dir: cfg.data_dir.join("wasm-cache"),
        compiler,
        extra_tls_roots_pem: Some(cluster.pki.ca_pem().to_string()),
        ..RuntimeConfig::default()
    })
    .context("starting the WebAssembly engine")?;
    let images = ImageStore::open(&cfg.data_dir.join("images")).context("opening the image store")?;
    cfg.image_gc = Some(ImageGc { store: images.clone(), policy: runtimes.image_gc.clone() });
    let builtin = BuiltinRegistry {
        host: cluster.api_host.clone(),
        token: cluster.token.clone(),
        ca_pem: cluster.pki.ca_pem().to_string(),
    };
    // One cache of cluster names: the node's DNS server answers from it, WASM guests resolve
    // from it (`dnsPolicy: ClusterFirst`).
    let mut dns = skiff_node::cluster_dns::ClusterDnsConfig::new(cfg.cluster_dns_ip());
    dns.upstreams = cfg.dns_upstreams.clone();
    let records = skiff_node::cluster_dns::new_records(&dns);
    cfg.cluster_records = Some(records.clone());
    // WASM first: the runtime of pods that name none.
    let wasm: Arc<dyn ContainerRuntime> = Arc::new(
        WasmContainerRuntime::new(wasm, images.clone(), Some(builtin.clone()), cfg.insecure_registries.clone())
            .with_cluster_names(records),
    );
    let mut offered = vec![wasm.clone()];
    if runtimes.oci {
        // It runs the WASM containers of mixed pods inside their sandbox on the same runtime.
        offered.push(Arc::new(oci_runtime(&cfg, images, builtin, &runtimes)?.with_wasm(wasm)));
    }
    let env = NodePodEnvironment::new(&cfg.data_dir, cluster.client.clone());

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.node_ip, cfg.node_api_port))
        .await
        .with_context(|| format!("binding the node API on {}:{}", cfg.node_ip, cfg.node_api_port))?;
    cfg.node_api_port = listener.local_addr().context("node API address")?.port();
    let hosts = vec![cfg.node_ip.to_string(), cfg.node_name.clone()];
    let (cert_pem, key_pem) = cluster
        .pki
        .issue_server_cert(&format!("system:node:{}", cfg.node_name), &hosts)
        .context("issuing the node API certificate")?;
    let tls = NodeApiTls { cert_pem, key_pem, ca_pem: cluster.pki.ca_pem().to_string() };
    let mut tasks = JoinSet::new();
    let (logs, targets, api_shutdown) = (env.logs().clone(), cfg.stream_targets.clone(), shutdown.clone());
    tasks.spawn(async move {
        if let Err(e) = nodeapi::serve_with_targets(listener, tls, logs, targets, api_shutdown).await {
            tracing::error!(error = %e, "node API failed");
        }
    });
    let agent =
        Agent::start(cfg, cluster.client, offered, Arc::new(env), shutdown).await.context("starting the node agent")?;
    Ok(RunningNode { agent, tasks })
}

/// A kube client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &PathBuf) -> anyhow::Result<kube::Client> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    kube::Client::try_from(config).context("building the API client")
}
