//! Starting and stopping the control plane as one unit: open the store, load or create the
//! cluster PKI, bootstrap the system namespaces, write the kubeconfig, serve the API over TLS,
//! compact the store's history in the background, and drain on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::apiserver::{self, ApiState, error::ApiError, serve};
use crate::controllers;
use crate::pki::{self, ClusterPki};
use crate::registry::catalog;
use crate::registry::rest::WriteOptions;
use crate::storage::{SharedStore, StoreError, embedded::EmbeddedStore, etcd::EtcdStore};

/// Which store backend to use.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// One `redb` file in the data dir.
    Embedded,
    /// A real etcd cluster; keys live under `prefix`.
    Etcd { endpoints: Vec<String>, prefix: String },
}

/// Everything `skiff server` / `skiff up` decide on the command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub store: StoreConfig,
    /// Extra names/IPs for the server certificate.
    pub extra_sans: Vec<String>,
    /// How long history is kept for watches before compaction.
    pub compaction_interval: Duration,
    /// The controllers' clock and timing flags.
    pub controllers: controllers::ControllerConfig,
    /// Cluster IPs and node ports of Services.
    pub service_network: crate::registry::service_alloc::ServiceNetwork,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    #[error("cluster PKI: {0}")]
    Pki(#[from] pki::PkiError),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("bootstrapping {what}: {source}")]
    Bootstrap { what: String, source: ApiError },
}

/// A started control plane.
#[derive(Debug)]
pub struct RunningServer {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    tasks: JoinSet<()>,
    state: apiserver::SharedState,
}

/// System namespaces every cluster has.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl RunningServer {
    /// Opens everything and starts serving; returns once the listener is bound.
    pub async fn start(cfg: ServerConfig, shutdown: CancellationToken) -> Result<RunningServer, ServerError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|source| ServerError::DataDir { path: cfg.data_dir.clone(), source })?;
        let store: SharedStore = match &cfg.store {
            StoreConfig::Embedded => Arc::new(EmbeddedStore::open(&cfg.data_dir.join("state.redb"))?),
            StoreConfig::Etcd { endpoints, prefix } => Arc::new(EtcdStore::connect(endpoints, prefix).await?),
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: cfg.listen, source })?;
        let client_host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        let mut sans = cfg.extra_sans.clone();
        sans.push(client_host.clone());
        let pki = ClusterPki::load_or_create(&cfg.data_dir.join("pki"), &sans)?;
        let server_url = if addr.is_ipv6() {
            format!("https://[{client_host}]:{}", addr.port())
        } else {
            format!("https://{client_host}:{}", addr.port())
        };
        let kubeconfig = cfg.data_dir.join("kubeconfig");
        pki::write_kubeconfig(&kubeconfig, &server_url, pki.ca_pem(), pki.admin_token())?;

        let mut api = ApiState::new(
            store.clone(),
            pki.admin_token().to_string(),
            shutdown.clone(),
            format!("{client_host}:{}", addr.port()),
        );
        // The built-in OCI registry keeps its blobs, uploads and tags beside the state.
        let registry_dir = cfg.data_dir.join("registry");
        let artifacts = crate::artifacts::storage::Storage::open(&registry_dir)
            .map_err(|source| ServerError::DataDir { path: registry_dir, source })?;
        api.artifacts = Some(Arc::new(artifacts));
        api.kubelet_tls = Some(pki.kubelet_client_config()?);
        api.registry = api
            .registry
            .with_default_toleration(cfg.controllers.default_unreachable_toleration)
            .with_service_network(cfg.service_network.clone());
        let state = Arc::new(api);
        bootstrap(&state).await?;
        let api_ip: std::net::IpAddr = client_host.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        crate::kubernetes_service::ensure(&state.registry, api_ip, addr.port())
            .await
            .map_err(|source| ServerError::Bootstrap { what: "service default/kubernetes".into(), source })?;
        crate::ingress_class::ensure(&state.registry)
            .await
            .map_err(|source| ServerError::Bootstrap { what: "ingressclass skiff".into(), source })?;
        crate::kube_dns_service::ensure(&state.registry)
            .await
            .map_err(|source| ServerError::Bootstrap { what: "service kube-system/kube-dns".into(), source })?;

        let mut tasks = JoinSet::new();
        let app = apiserver::router(state.clone());
        let tls = pki.server_tls_config()?;
        let serve_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = serve::serve(listener, Some(tls), app, serve_shutdown, Duration::from_secs(5)).await {
                warn!(error = %e, "API server listener failed");
            }
        });
        tasks.spawn(state.registry.namespace_cache().run(store.clone(), shutdown.clone()));
        // The informer caches, the scheduler and the workload controllers.
        controllers::start(&state.registry, cfg.controllers.clone(), &shutdown, &mut tasks);
        tasks.spawn(compactor(store, cfg.compaction_interval, shutdown.clone()));
        // The OpenAPI documents are built on first use (off the async workers): an idle server
        // does not hold them, and only clients that read them (kubectl apply/explain) wait once.
        info!(%addr, kubeconfig = %kubeconfig.display(), "API server serving");
        Ok(RunningServer { addr, kubeconfig, tasks, state })
    }

    /// Waits until every task has ended (after the shutdown token is cancelled).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.state.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.state.tasks.wait()).await;
    }
}

/// Creates the system namespaces if missing (idempotent across restarts).
async fn bootstrap(state: &ApiState) -> Result<(), ServerError> {
    let info = catalog::find("", "v1", "namespaces").expect("namespaces are in the catalog");
    for ns in SYSTEM_NAMESPACES {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        match state.registry.create(info, None, body, WriteOptions::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(source) => return Err(ServerError::Bootstrap { what: format!("namespace {ns}"), source }),
        }
    }
    // The default StorageClass: local-path volumes, provisioned on the node of their first pod.
    let info = catalog::find("storage.k8s.io", "v1", "storageclasses").expect("storageclasses are in the catalog");
    let body = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {skiff_api::labels::IS_DEFAULT_CLASS: "true"}},
        "provisioner": skiff_api::labels::LOCAL_PATH_PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"});
    match state.registry.create(info, None, body, WriteOptions::default()).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
        Err(source) => return Err(ServerError::Bootstrap { what: "storageclass local-path".into(), source }),
    }
    Ok(())
}

/// Compacts history older than one interval, like the Go API server's periodic etcd
/// compaction: watchers further behind than that get `410 Gone` and re-list.
async fn compactor(store: SharedStore, interval: Duration, shutdown: CancellationToken) {
    let mut previous: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Some(rev) = previous
            && let Err(e) = store.compact(rev).await
        {
            warn!(error = %e, revision = rev, "compaction failed");
        }
        previous = store.current_revision().await.ok();
    }
}
