//! The in-process controllers (ARCHITECTURE decision 5): they read from shared informer caches
//! fed by the store's watch, enqueue keys from change handlers, and reconcile each key in a
//! worker through the same validated write path as the HTTP handlers
//! ([`crate::registry::rest::Registry`]).
//!
//! Owns: the caches ([`informer`]), the queue ([`workqueue`]), event recording ([`events`]),
//! and the minimal workload controllers — [`replicaset`], [`deployment`], and the garbage
//! collection of dependents whose controller is gone ([`gc`]). The scheduler lives in
//! [`crate::scheduler`] but is started here too, on the same caches.

pub mod deployment;
pub mod events;
mod expectations;
pub mod gc;
pub mod informer;
pub mod owner;
pub mod replicaset;
pub mod workqueue;

use std::future::Future;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_api::selector::SelectorError;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::apiserver::error::ApiError;
use crate::registry::catalog::{self, ResourceInfo};
use crate::registry::rest::Registry;
use crate::scheduler::Scheduler;
use informer::Informer;
use workqueue::WorkQueue;

/// Why one reconcile pass failed (the key is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A read or write through the registry failed.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: ApiError,
    },
    /// The object's selector does not parse (validation should have refused it).
    #[error("{key}: invalid selector: {source}")]
    Selector {
        key: String,
        #[source]
        source: SelectorError,
    },
}

/// Adds context to registry errors.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ReconcileError>;
}

impl<T> Context<T> for Result<T, ApiError> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, ReconcileError> {
        self.map_err(|source| ReconcileError::Api { what: what(), source })
    }
}

/// Replaces the status of `ns/name` with `status` through the status subresource (as a
/// controller's status write in Kubernetes); an object deleted meanwhile is not an error.
pub(crate) async fn write_status(
    registry: &Registry,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), ReconcileError> {
    let result = registry
        .update_with(info, ns, name, Some("status"), crate::registry::rest::WriteOptions::default(), None, |old| {
            let mut new = old.clone();
            new["status"] = status.clone();
            Ok(new)
        })
        .await;
    match result {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e).context(|| format!("updating status of {} {name}", info.kind)),
    }
}

/// The resource info of a core or apps kind (always in the catalog).
pub(crate) fn info(group: &str, plural: &str) -> &'static ResourceInfo {
    catalog::find(group, "v1", plural).expect("core and apps v1 kinds are in the catalog")
}

/// The caches the controllers and the scheduler share.
#[derive(Debug, Clone)]
pub struct Informers {
    pub pods: Informer<Pod>,
    pub nodes: Informer<Node>,
    pub replicasets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
}

impl Default for Informers {
    fn default() -> Self {
        Informers {
            pods: Informer::new(info("", "pods")),
            nodes: Informer::new(info("", "nodes")),
            replicasets: Informer::new(info("apps", "replicasets")),
            deployments: Informer::new(info("apps", "deployments")),
        }
    }
}

/// How many keys each controller reconciles at once.
const WORKERS: usize = 2;

/// Starts the caches, the scheduler and the controllers as tasks in `tasks`, all ending when
/// `cancel` fires.
pub fn start(registry: &Registry, cancel: &CancellationToken, tasks: &mut JoinSet<()>) -> Informers {
    let inf = Informers::default();
    // Everyone subscribes before the caches start, so the first list reaches every handler.
    let scheduler = Scheduler::new(registry.clone(), inf.pods.clone(), inf.nodes.clone());
    let rs = replicaset::ReplicaSetController::new(registry.clone(), &inf);
    let deploy = deployment::DeploymentController::new(registry.clone(), &inf);
    let gc = gc::GarbageCollector::new(registry.clone(), &inf);

    let store = registry.store().clone();
    tasks.spawn(inf.pods.clone().run(store.clone(), cancel.clone()));
    tasks.spawn(inf.nodes.clone().run(store.clone(), cancel.clone()));
    tasks.spawn(inf.replicasets.clone().run(store.clone(), cancel.clone()));
    tasks.spawn(inf.deployments.clone().run(store, cancel.clone()));

    tasks.spawn(scheduler.run(cancel.clone()));
    for _ in 0..WORKERS {
        let c = rs.clone();
        tasks.spawn(run_worker("replicaset", rs.queue(), inf.clone(), cancel.clone(), move |key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }));
        let c = deploy.clone();
        tasks.spawn(run_worker("deployment", deploy.queue(), inf.clone(), cancel.clone(), move |key| {
            let c = c.clone();
            async move { c.reconcile(&key).await }
        }));
    }
    tasks.spawn(gc.clone().run_periodic(cancel.clone()));
    let c = gc.clone();
    tasks.spawn(run_worker("garbage-collector", gc.queue(), inf.clone(), cancel.clone(), move |key| {
        let c = c.clone();
        async move { c.reconcile(&key).await }
    }));
    inf
}

/// One worker: waits for the caches, then reconciles keys until `cancel`; a failed key is
/// retried with back-off, a successful one forgets its failures.
async fn run_worker<F, Fut>(
    name: &'static str,
    queue: WorkQueue,
    inf: Informers,
    cancel: CancellationToken,
    reconcile: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), ReconcileError>>,
{
    for synced in [
        inf.pods.wait_synced(&cancel).await,
        inf.replicasets.wait_synced(&cancel).await,
        inf.deployments.wait_synced(&cancel).await,
    ] {
        if !synced {
            return;
        }
    }
    while let Some(key) = queue.next(&cancel).await {
        match reconcile(key.clone()).await {
            Ok(()) => queue.forget(&key),
            // Lost races are routine: the cache was behind; the retry sees the new state.
            Err(ReconcileError::Api { source: ApiError::Conflict(_), .. }) => {
                debug!(controller = name, key, "conflict; retrying");
                queue.retry(&key);
            }
            Err(e) => {
                warn!(controller = name, key, error = %e, "reconcile failed; retrying");
                queue.retry(&key);
            }
        }
        queue.done(&key);
    }
}
