//! The Endpoints controller (kube-controller-manager's `endpoint` controller): for every
//! Service with a selector it keeps a core/v1 Endpoints object of the same name listing the
//! selected pods' addresses — ready and not ready, per port set ([`addresses::subsets`]) —
//! written only when the subsets or labels change. A deleted Service loses its Endpoints.
//! [`slices`] does the same for discovery.k8s.io/v1 EndpointSlices.
//!
//! Not here: Endpoints of selector-less Services (the user's, never touched), the
//! `last-change-trigger-time` annotation and the 1000-address truncation of very large
//! Services. Manual Endpoints are mirrored into slices by [`slices`] ([`mirror`]).

pub mod addresses;
pub mod mirror;
pub mod placement;
pub mod slices;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use serde_json::{Value, json};
use tracing::instrument;

use super::events::{self, EventType};
use super::informer::{Change, key_of};
use super::owner::labels_of;
use super::workqueue::WorkQueue;
use super::{Context, Ctx, Reconcile, ReconcileError, info};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// The component name on the events this controller records.
const COMPONENT: &str = "endpoint-controller";

/// Enqueues, for every pod change, the Services (same namespace) that select the pod before
/// or after it: a label change moves a pod between Services.
pub(crate) fn enqueue_services_of_pod(ctx: &Ctx, queue: &WorkQueue, change: &Change<Pod>) {
    let pod = change.object();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let old = match change {
        Change::Updated { old, .. } => Some(old),
        _ => None,
    };
    for svc in ctx.inf.services.list_namespace(ns) {
        let Some(sel) = addresses::selector(&svc) else { continue };
        let now = addresses::selects_labels(sel, labels_of(&pod.metadata));
        let before = old.is_some_and(|o| addresses::selects_labels(sel, labels_of(&o.metadata)));
        if now || before {
            queue.add(&key_of(&svc.metadata));
        }
    }
}

/// The Endpoints controller; keys are `ns/name` of Services.
#[derive(Debug, Clone)]
pub struct EndpointsController {
    ctx: Ctx,
    queue: WorkQueue,
}

impl EndpointsController {
    /// Creates the controller and subscribes it to Services, pods and (deleted) Endpoints.
    pub fn new(ctx: &Ctx) -> Self {
        let c = EndpointsController { ctx: ctx.clone(), queue: WorkQueue::new() };
        let q = c.queue.clone();
        ctx.inf.services.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let (q, ctx2) = (c.queue.clone(), ctx.clone());
        ctx.inf.pods.subscribe(move |change| enqueue_services_of_pod(&ctx2, &q, change));
        // A managed Endpoints deleted by hand comes back (Kubernetes' onEndpointsDelete).
        let q = c.queue.clone();
        ctx.inf.endpoints.subscribe(move |change: &Change<Endpoints>| {
            if let Change::Deleted(ep) = change {
                q.add(&key_of(&ep.metadata));
            }
        });
        c
    }

    /// The pods of the Service's namespace (the selection is made in [`addresses::subsets`]).
    fn pods_of(&self, svc: &Service) -> Vec<Arc<Pod>> {
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        let mut pods = self.ctx.inf.pods.list_namespace(ns);
        pods.retain(|p| addresses::selects(svc, p));
        pods
    }

    /// Deletes the Endpoints of a deleted Service (already gone is fine).
    async fn delete(&self, ns: &str, name: &str) -> Result<(), ReconcileError> {
        match self.ctx.registry.delete(info("", "endpoints"), Some(ns), name, &DeleteOptions::default()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("deleting Endpoints {ns}/{name}")),
        }
    }

    /// Creates or replaces the Endpoints with `subsets` and `labels` (other fields kept).
    async fn write(&self, svc: &Service, exists: bool, subsets: &Value, labels: &Value) -> Result<(), ApiError> {
        let ns = svc.metadata.namespace.as_deref();
        let name = svc.metadata.name.as_deref().unwrap_or_default();
        let ep = info("", "endpoints");
        if !exists {
            let body = json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels}, "subsets": subsets});
            match self.ctx.registry.create(ep, ns, body, WriteOptions::default()).await {
                // The cache was behind: replace what is there.
                Err(ApiError::AlreadyExists { .. }) => {}
                other => return other.map(|_| ()),
            }
        }
        let edit = |old: &Value| {
            let mut new = old.clone();
            new["subsets"] = subsets.clone();
            new["metadata"]["labels"] = labels.clone();
            Ok(new)
        };
        self.ctx.registry.update_with(ep, ns, name, None, WriteOptions::default(), None, edit).await.map(|_| ())
    }
}

impl Reconcile for EndpointsController {
    const NAME: &'static str = "endpoints";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let Some(svc) = self.ctx.inf.services.get(key) else { return self.delete(ns, name).await };
        if addresses::selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let subsets = json!(addresses::subsets(&svc, &self.pods_of(&svc)));
        let labels = json!(addresses::endpoint_labels(&svc));
        let current = self.ctx.inf.endpoints.get(key);
        if let Some(cur) = &current {
            let same_subsets = json!(cur.subsets.clone().unwrap_or_default()) == subsets;
            if same_subsets && json!(labels_of(&cur.metadata)) == labels {
                return Ok(());
            }
        }
        match self.write(&svc, current.is_some(), &subsets, &labels).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let (reason, verb) = if current.is_some() {
                    ("FailedToUpdateEndpoint", "update")
                } else {
                    ("FailedToCreateEndpoint", "create")
                };
                let involved = events::reference("v1", "Service", &svc.metadata);
                let message = format!("Failed to {verb} endpoint {key}: {e}");
                events::record(&self.ctx.registry, COMPONENT, &involved, EventType::Warning, reason, &message).await;
                Err(e).context(|| format!("writing Endpoints {key}"))
            }
        }
    }
}
