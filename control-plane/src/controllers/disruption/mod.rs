//! The disruption controller (policy/v1 PodDisruptionBudget status): for each budget it
//! counts the selected pods that are healthy (Ready, not terminating, not just evicted),
//! works out the expected and required counts ([`budget`]) — percentages and
//! `maxUnavailable` from the scale of the pods' controllers (a ReplicaSet's Deployment, a
//! ReplicaSet, a StatefulSet) — and writes `currentHealthy`, `desiredHealthy`,
//! `expectedPods`, `disruptionsAllowed`, `disruptedPods`, `observedGeneration` and the
//! `DisruptionAllowed` condition. The eviction subresource ([`eviction`]) spends the
//! disruptions it allows.
//!
//! Not here: `unhealthyPodEvictionPolicy: AlwaysAllow` (the eviction path follows the
//! default `IfHealthyBudget`), ReplicationControllers and custom scale subresources.

pub mod budget;
pub mod eviction;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::json;
use skiff_api::selector::LabelSelector;
use tracing::instrument;

use super::informer::{Change, key_of};
use super::owner::{controller_ref, labels_of};
use super::workqueue::WorkQueue;
use super::{Context, Ctx, Reconcile, ReconcileError, info};
use crate::apiserver::error::ApiError;
use crate::registry::rest::WriteOptions;
use budget::BudgetError;

/// How long an evicted pod stays in `disruptedPods` (not counted healthy) while it is not
/// yet seen terminating — Kubernetes' `DeletionTimeout`.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// True when the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The selector of a budget; `None` (no selector) selects nothing, `{}` selects every pod.
pub fn selector(pdb: &PodDisruptionBudget) -> Option<LabelSelector> {
    let sel = pdb.spec.as_ref()?.selector.as_ref()?;
    LabelSelector::from_label_selector(sel).ok()
}

/// The PodDisruptionBudget controller; keys are `ns/name` of budgets.
#[derive(Debug, Clone)]
pub struct DisruptionController {
    ctx: Ctx,
    queue: WorkQueue,
}

impl DisruptionController {
    /// Creates the controller and subscribes it to budgets and pods.
    pub fn new(ctx: &Ctx) -> Self {
        let c = DisruptionController { ctx: ctx.clone(), queue: WorkQueue::new() };
        let q = c.queue.clone();
        ctx.inf.pdbs.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let me = c.clone();
        ctx.inf.pods.subscribe(move |change: &Change<Pod>| {
            let pod = change.object();
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let labels = labels_of(&pod.metadata);
            for pdb in me.ctx.inf.pdbs.list_namespace(ns) {
                let mut matches = selector(&pdb).is_some_and(|s| s.matches(labels));
                if let Change::Updated { old, .. } = change {
                    let old_labels = labels_of(&old.metadata);
                    matches |= selector(&pdb).is_some_and(|s| s.matches(old_labels));
                }
                if matches {
                    me.queue.add(&key_of(&pdb.metadata));
                }
            }
        });
        c
    }

    /// The pods a budget selects.
    fn pods_of(&self, pdb: &PodDisruptionBudget) -> Vec<Arc<Pod>> {
        let Some(sel) = selector(pdb) else { return Vec::new() };
        let ns = pdb.metadata.namespace.as_deref().unwrap_or_default();
        let mut pods = self.ctx.inf.pods.list_namespace(ns);
        pods.retain(|p| sel.matches(labels_of(&p.metadata)));
        pods
    }

    /// The summed replicas of the pods' controllers (each counted once).
    fn scale(&self, pods: &[Arc<Pod>]) -> Result<i32, BudgetError> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let r = controller_ref(&pod.metadata).ok_or_else(|| BudgetError::NoController(name.clone()))?;
            let (uid, replicas) = match r.kind.as_str() {
                "ReplicaSet" => {
                    let rs = self.ctx.inf.replicasets.get(&format!("{ns}/{}", r.name));
                    let rs = rs.ok_or_else(|| BudgetError::NoController(name.clone()))?;
                    let deploy = controller_ref(&rs.metadata)
                        .filter(|d| d.kind == "Deployment")
                        .and_then(|d| self.ctx.inf.deployments.get(&format!("{ns}/{}", d.name)));
                    match deploy {
                        Some(d) => (d.metadata.uid.clone(), d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
                        None => (rs.metadata.uid.clone(), rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
                    }
                }
                "StatefulSet" => {
                    let ss = self.ctx.inf.statefulsets.get(&format!("{ns}/{}", r.name));
                    let ss = ss.ok_or_else(|| BudgetError::NoController(name.clone()))?;
                    (ss.metadata.uid.clone(), ss.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
                }
                _ => return Err(BudgetError::NoController(name)),
            };
            if seen.insert(uid) {
                total += replicas;
            }
        }
        Ok(total)
    }
}

/// The `DisruptionAllowed` condition, keeping the transition time when the status stays.
fn condition(
    old: Option<&PodDisruptionBudgetStatus>,
    allowed: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Condition {
    let status = if allowed { "True" } else { "False" };
    let previous =
        old.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let since = previous.filter(|c| c.status == status).map(|c| c.last_transition_time.clone()).unwrap_or(Time(now));
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

impl Reconcile for DisruptionController {
    const NAME: &'static str = "disruption";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(pdb) = self.ctx.inf.pdbs.get(key) else { return Ok(()) };
        if pdb.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let spec = pdb.spec.clone().unwrap_or_default();
        let now = self.ctx.config.clock.now();
        let generation = pdb.metadata.generation.unwrap_or(1);
        let pods = self.pods_of(&pdb);
        let old = pdb.status.as_ref();

        // Evicted pods not yet seen terminating stay out of the healthy count for a while.
        let mut disrupted = BTreeMap::new();
        let mut recheck: Option<Duration> = None;
        for (name, at) in old.and_then(|s| s.disrupted_pods.clone()).unwrap_or_default() {
            let alive = pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(name.as_str()) && p.metadata.deletion_timestamp.is_none());
            let expires = at.0 + SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
            if alive && expires > now {
                let left = Duration::try_from(expires.duration_since(now)).unwrap_or_default();
                recheck = Some(recheck.map_or(left, |r| r.min(left)));
                disrupted.insert(name, at);
            }
        }
        let healthy = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
            .count() as i32;
        let matched = pods.len() as i32;
        let scale = if budget::needs_scale(&spec) { self.scale(&pods) } else { Ok(matched) };

        let status = match budget::budget(&spec, matched, scale) {
            Ok(b) => {
                let allowed = budget::disruptions_allowed(b, healthy);
                let (reason, ok) = if allowed > 0 { ("SufficientPods", true) } else { ("InsufficientPods", false) };
                PodDisruptionBudgetStatus {
                    current_healthy: healthy,
                    desired_healthy: b.desired_healthy,
                    expected_pods: b.expected,
                    disruptions_allowed: allowed,
                    disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                    observed_generation: Some(generation),
                    conditions: Some(vec![condition(old, ok, reason, "", generation, now)]),
                }
            }
            Err(e) => PodDisruptionBudgetStatus {
                current_healthy: healthy,
                disruptions_allowed: 0,
                disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
                observed_generation: Some(generation),
                conditions: Some(vec![condition(old, false, "SyncFailed", &e.to_string(), generation, now)]),
                ..PodDisruptionBudgetStatus::default()
            },
        };
        let ns = pdb.metadata.namespace.as_deref();
        let name = pdb.metadata.name.as_deref().unwrap_or_default();
        // At the cached revision, so an eviction's decrement made meanwhile is never
        // overwritten (the conflict retries with the newer budget), as Kubernetes does.
        let rv = pdb.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok());
        let status = json!(status);
        let result = self
            .ctx
            .registry
            .update_with(
                info("policy", "poddisruptionbudgets"),
                ns,
                name,
                Some("status"),
                WriteOptions::default(),
                rv,
                |old| {
                    let mut new = old.clone();
                    new["status"] = status.clone();
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e).context(|| format!("updating the status of PodDisruptionBudget {key}")),
        }
        if let Some(after) = recheck {
            self.queue.add_after(key, after + Duration::from_millis(100));
        }
        Ok(())
    }
}
