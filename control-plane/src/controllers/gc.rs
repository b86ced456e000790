//! A minimal garbage collector: deletes ReplicaSets whose controlling Deployment is gone and
//! pods whose controlling ReplicaSet is gone, so `kubectl delete deployment` (background
//! propagation, kubectl's default) cleans up. Before deleting, the owner's absence is checked
//! with a live read, never trusted to the cache alone.
//!
//! Not here: foreground deletion and orphaning (the `foregroundDeletion` / `orphan`
//! finalizers), owners other than the controller reference, and other kinds.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::informer::{Change, Informer};
use super::owner::controller_ref;
use super::workqueue::WorkQueue;
use super::{Context, Informers, ReconcileError, info};
use crate::apiserver::error::ApiError;
use crate::registry::catalog::ResourceInfo;
use crate::registry::object::meta_str;
use crate::registry::rest::{DeleteOptions, Registry};

/// Queue key: sweep the ReplicaSets.
const REPLICASETS: &str = "replicasets";
/// Queue key: sweep the pods.
const PODS: &str = "pods";
/// A full sweep also runs this often, in case a delete event was missed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The garbage collector (cheap to clone).
#[derive(Debug, Clone)]
pub struct GarbageCollector {
    registry: Registry,
    pods: Informer<Pod>,
    replicasets: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    queue: WorkQueue,
}

impl GarbageCollector {
    /// Creates the collector and subscribes it to owner deletions.
    pub fn new(registry: Registry, inf: &Informers) -> Self {
        let gc = GarbageCollector {
            registry,
            pods: inf.pods.clone(),
            replicasets: inf.replicasets.clone(),
            deployments: inf.deployments.clone(),
            queue: WorkQueue::new(),
        };
        let q = gc.queue.clone();
        gc.deployments.subscribe(move |c| {
            if let Change::Deleted(_) = c {
                q.add(REPLICASETS);
            }
        });
        let q = gc.queue.clone();
        gc.replicasets.subscribe(move |c| {
            if let Change::Deleted(_) = c {
                q.add(PODS);
            }
        });
        gc
    }

    /// The queue of sweeps.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Queues both sweeps now and every [`SWEEP_INTERVAL`], until `cancel`.
    pub async fn run_periodic(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    self.queue.add(REPLICASETS);
                    self.queue.add(PODS);
                }
            }
        }
    }

    /// Runs one sweep.
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        match key {
            REPLICASETS => {
                let candidates: Vec<ObjectMeta> = self.replicasets.list().iter().map(|r| r.metadata.clone()).collect();
                let cached =
                    |uid: &str| self.deployments.list_where(|d| d.metadata.uid.as_deref() == Some(uid)).is_empty();
                self.sweep(info("apps", "replicasets"), candidates, "Deployment", info("apps", "deployments"), cached)
                    .await
            }
            PODS => {
                let candidates: Vec<ObjectMeta> = self
                    .pods
                    .list()
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .map(|p| p.metadata.clone())
                    .collect();
                let cached =
                    |uid: &str| self.replicasets.list_where(|r| r.metadata.uid.as_deref() == Some(uid)).is_empty();
                self.sweep(info("", "pods"), candidates, "ReplicaSet", info("apps", "replicasets"), cached).await
            }
            _ => Ok(()),
        }
    }

    /// Deletes every candidate whose controller of `owner_kind` no longer exists.
    async fn sweep(
        &self,
        dependent: &'static ResourceInfo,
        candidates: Vec<ObjectMeta>,
        owner_kind: &str,
        owner: &'static ResourceInfo,
        missing_in_cache: impl Fn(&str) -> bool,
    ) -> Result<(), ReconcileError> {
        for meta in candidates {
            let Some(r) = controller_ref(&meta).filter(|r| r.kind == owner_kind) else { continue };
            if !missing_in_cache(&r.uid) {
                continue;
            }
            let ns = meta.namespace.as_deref();
            // The cache may lag behind a just-created owner: ask the store.
            let live = match self.registry.get(owner, ns, &r.name).await {
                Ok(o) => meta_str(&o, "uid") == Some(r.uid.as_str()),
                Err(ApiError::NotFound { .. }) => false,
                Err(e) => return Err(e).context(|| format!("reading {owner_kind} {}", r.name)),
            };
            if live {
                continue;
            }
            let name = meta.name.as_deref().unwrap_or_default();
            debug!(kind = dependent.kind, name, owner = %r.name, "deleting a dependent whose owner is gone");
            let opts = DeleteOptions { precondition_uid: meta.uid.clone(), ..Default::default() };
            match self.registry.delete(dependent, ns, name, &opts).await {
                Ok(_) | Err(ApiError::NotFound { .. }) | Err(ApiError::Conflict(_)) => {}
                Err(e) => return Err(e).context(|| format!("deleting {} {name}", dependent.kind)),
            }
        }
        Ok(())
    }
}

impl super::Reconcile for GarbageCollector {
    const NAME: &'static str = "garbage-collector";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        GarbageCollector::reconcile(self, key).await
    }
}
