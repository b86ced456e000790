//! The HTTP API server: Kubernetes REST conventions over HTTPS, so that kubectl, client-go,
//! kube-rs and the Python client work unchanged.
//!
//! Layout: `request` understands URLs, queries and bodies; `handlers` dispatches verbs to the
//! shared [`crate::registry::rest::Registry`]; `watch` streams changes; `discovery` and
//! `openapi` describe what is served; `protobuf` decodes kubectl's protobuf bodies; `table` prints for kubectl; `patch` applies the three
//! patch formats; `auth` checks credentials; `serve` runs the TLS listener; `error` is the
//! single place errors become `Status` objects.

pub mod auth;
pub mod discovery;
pub mod error;
pub mod eviction;
pub mod handlers;
pub mod openapi;
pub mod patch;
pub mod pod_log;
pub mod protobuf;
pub mod request;
pub mod scale;
pub mod serve;
pub mod stream_proxy;
pub mod table;
pub mod watch;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::registry::rest::Registry;
use crate::storage::SharedStore;

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState {
    pub registry: Registry,
    /// The admin bearer token (constant-time compared).
    pub admin_token: String,
    /// Cancelled at shutdown: ends watch streams.
    pub shutdown: CancellationToken,
    /// Owns the per-watch tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Address clients should use (for `serverAddressByClientCIDRs`).
    pub advertise: String,
    /// The built-in OCI registry's storage; `/v2/` answers 404 without it.
    pub artifacts: Option<Arc<crate::artifacts::storage::Storage>>,
    /// Client TLS for calling node APIs (`pods/log`); `None` disables those subresources.
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
}

impl ApiState {
    pub fn new(store: SharedStore, admin_token: String, shutdown: CancellationToken, advertise: String) -> Self {
        Self {
            registry: Registry::new(store),
            admin_token,
            shutdown,
            tasks: TaskTracker::new(),
            advertise,
            artifacts: None,
            kubelet_tls: None,
        }
    }

    pub fn store(&self) -> &SharedStore {
        self.registry.store()
    }
}

/// The shared state handle.
pub type SharedState = Arc<ApiState>;

/// The whole API router, authentication included.
pub fn router(state: SharedState) -> Router {
    let api = Router::new()
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/api/v1/", get(discovery::core_resources))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(stream_proxy::exec))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", any(stream_proxy::attach))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/portforward", any(stream_proxy::portforward))
        .route("/api/v1/{*rest}", any(handlers::core))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/apis/{group}/{version}/{*rest}", any(handlers::grouped))
        .merge(openapi::routes())
        .merge(crate::artifacts::routes())
        .fallback(handlers::fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state);
    Router::new()
        .route("/readyz", get(discovery::healthy))
        .route("/livez", get(discovery::healthy))
        .route("/healthz", get(discovery::healthy))
        .merge(api)
}
