//! The namespace controller (Kubernetes' `pkg/controller/namespace`): a namespace with a
//! deletionTimestamp and the `kubernetes` entry in `spec.finalizers` (what a DELETE of a
//! namespace sets, see the registry's delete path) is emptied ([`content`]), its status
//! conditions tell how far that got ([`conditions`]), and once nothing is left the
//! `kubernetes` finalizer is removed through the `finalize` subresource — the registry then
//! removes the namespace.
//!
//! Not here: refusing creates in a terminating namespace (registry admission) and refusing to
//! delete the system namespaces (registry delete path).

pub mod conditions;
pub mod content;
#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::{Value, json};
use tracing::debug;

use super::informer::Change;
use super::workqueue::WorkQueue;
use super::{Clock, Context, Ctx, ReconcileError, info, write_status};
use crate::apiserver::error::ApiError;
use crate::registry::object::meta_str;
use crate::registry::rest::{Registry, WriteOptions};

/// The `spec.finalizers` entry this controller owns.
pub const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose content is still going away is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// The namespace controller (cheap to clone).
#[derive(Debug, Clone)]
pub struct NamespaceController {
    registry: Registry,
    clock: Clock,
    queue: WorkQueue,
}

impl NamespaceController {
    /// Creates the controller and subscribes it to namespace changes and pod deletions.
    pub fn new(ctx: &Ctx) -> Self {
        let c = NamespaceController {
            registry: ctx.registry.clone(),
            clock: ctx.config.clock.clone(),
            queue: WorkQueue::new(),
        };
        let q = c.queue.clone();
        ctx.inf.namespaces.subscribe(move |change| {
            let ns = change.object();
            if ns.metadata.deletion_timestamp.is_some() {
                q.add(ns.metadata.name.as_deref().unwrap_or_default());
            }
        });
        // A pod leaving a terminating namespace may be the last thing it waits for.
        let q = c.queue.clone();
        let namespaces = ctx.inf.namespaces.clone();
        ctx.inf.pods.subscribe(move |change| {
            if let Change::Deleted(pod) = change
                && let Some(ns) = pod.metadata.namespace.as_deref()
                && namespaces.get(ns).is_some_and(|n| n.metadata.deletion_timestamp.is_some())
            {
                q.add(ns);
            }
        });
        c
    }

    /// Empties and finalizes the namespace `name` if it is terminating.
    pub async fn reconcile(&self, name: &str) -> Result<(), ReconcileError> {
        let ns_info = info("", "namespaces");
        let ns = match self.registry.get(ns_info, None, name).await {
            Ok(ns) => ns,
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e).context(|| format!("reading namespace {name}")),
        };
        if meta_str(&ns, "deletionTimestamp").is_none() || !spec_finalizers(&ns).iter().any(|f| f == FINALIZER) {
            return Ok(());
        }
        let content = content::delete_all(&self.registry, name).await?;
        let old: Vec<Value> = ns["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let now = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let status = json!({"phase": "Terminating", "conditions": conditions::conditions(&content, &old, &now)});
        if ns.get("status") != Some(&status) {
            write_status(&self.registry, ns_info, None, name, status).await?;
        }
        if content.remaining_total() > 0 || !content.errors.is_empty() {
            debug!(namespace = name, remaining = content.remaining_total(), "namespace content remains");
            self.queue.add_after(name, RECHECK);
            return Ok(());
        }
        debug!(namespace = name, "namespace empty; finalizing");
        let result = self
            .registry
            .update_with(ns_info, None, name, Some("finalize"), WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                let kept: Vec<String> = spec_finalizers(old).into_iter().filter(|f| f != FINALIZER).collect();
                new["spec"]["finalizers"] = json!(kept);
                Ok(new)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("finalizing namespace {name}")),
        }
    }
}

/// `spec.finalizers` of a namespace object.
fn spec_finalizers(ns: &Value) -> Vec<String> {
    ns["spec"]["finalizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl super::Reconcile for NamespaceController {
    const NAME: &'static str = "namespace";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        NamespaceController::reconcile(self, key).await
    }
}
