//! The `pods/eviction` subresource's logic (Kubernetes' `EvictionREST`): delete a pod unless
//! that would break its PodDisruptionBudget. With one budget selecting the pod, a disruption
//! is spent first — `disruptionsAllowed` decremented and the pod recorded in
//! `disruptedPods`, written at the budget's resourceVersion so two evictions never spend the
//! same disruption — then the pod gets the `DisruptionTarget` condition and is deleted with
//! the Eviction's `deleteOptions`. No disruption left: [`Outcome::Denied`] (HTTP 429).
//!
//! Pods that do not count for budgets (terminating, Pending, finished) and pods no budget
//! selects are deleted directly; an unready pod is, too, while its budget is healthy
//! (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the default; `AlwaysAllow` always).
//!
//! Not here: the HTTP wrapping (`crate::apiserver::eviction`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::{is_ready, selector};
use crate::apiserver::error::ApiError;
use crate::controllers::info;
use crate::registry::list::{self, Filter};
use crate::registry::rest::{DeleteOptions, Registry, WriteOptions};

/// The message of a refused eviction, as Kubernetes words it.
pub const DENIED_MESSAGE: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// What became of an eviction.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The pod is being deleted.
    Evicted,
    /// A budget forbids it; `cause` says which and why.
    Denied { cause: String },
}

/// How many times a lost race on the budget is retried with a fresh read.
const MAX_ATTEMPTS: usize = 8;

/// The DeleteOptions an Eviction body carries (`deleteOptions`), and whether it is a dry run.
pub fn delete_options(body: &Value) -> Result<DeleteOptions, ApiError> {
    let o = body.get("deleteOptions").cloned().unwrap_or(Value::Null);
    let dry_run = match o.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Array(v)) if v.iter().all(|x| x == "All") => !v.is_empty(),
        Some(other) => return Err(ApiError::BadRequest(format!("invalid dryRun {other}: only All is supported"))),
    };
    let str_of = |v: &Value| v.as_str().map(str::to_string);
    Ok(DeleteOptions {
        dry_run,
        grace_period_seconds: o.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation_policy: o.get("propagationPolicy").and_then(str_of),
        precondition_uid: o.get("preconditions").and_then(|p| p.get("uid")).and_then(str_of),
        precondition_resource_version: o.get("preconditions").and_then(|p| p.get("resourceVersion")).and_then(str_of),
    })
}

/// Evicts pod `ns/name` as the Eviction `body` asks; `now` stamps `disruptedPods`.
pub async fn evict(
    registry: &Registry,
    ns: &str,
    name: &str,
    body: &Value,
    dry_run: bool,
    now: Timestamp,
) -> Result<Outcome, ApiError> {
    let mut opts = delete_options(body)?;
    opts.dry_run |= dry_run;
    let pods = info("", "pods");
    for _ in 0..MAX_ATTEMPTS {
        let pod: Pod = decode(registry.get(pods, Some(ns), name).await?)?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if pod.metadata.deletion_timestamp.is_some() || matches!(phase, "Pending" | "Succeeded" | "Failed") {
            return delete(registry, ns, name, &opts, false).await;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let prefix = format!("{}{ns}/", info("policy", "poddisruptionbudgets").key_prefix());
        let mut budgets = Vec::new();
        for item in list::list(registry.store(), &prefix, &Filter::default(), 0, None).await?.items {
            let pdb: PodDisruptionBudget = decode(item)?;
            if selector(&pdb).is_some_and(|s| s.matches(&labels)) {
                budgets.push(pdb);
            }
        }
        let pdb = match budgets.len() {
            0 => return delete(registry, ns, name, &opts, true).await,
            1 => budgets.remove(0),
            _ => {
                return Err(ApiError::Internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
                        .into(),
                ));
            }
        };
        let status = pdb.status.clone().unwrap_or_default();
        let pdb_name = pdb.metadata.name.clone().unwrap_or_default();
        if !is_ready(&pod) {
            let policy = pdb.spec.as_ref().and_then(|s| s.unhealthy_pod_eviction_policy.as_deref());
            if policy == Some("AlwaysAllow")
                || (status.current_healthy >= status.desired_healthy && status.desired_healthy > 0)
            {
                return delete(registry, ns, name, &opts, true).await;
            }
        }
        if status.observed_generation.unwrap_or(0) < pdb.metadata.generation.unwrap_or(1) {
            return Ok(Outcome::Denied {
                cause: format!("The disruption budget {pdb_name} is still being processed by the server."),
            });
        }
        if status.disruptions_allowed < 0 {
            return Err(ApiError::Forbidden("pdb disruptions allowed is negative".into()));
        }
        if status.disruptions_allowed == 0 {
            return Ok(Outcome::Denied {
                cause: format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    status.desired_healthy, status.current_healthy
                ),
            });
        }
        if !opts.dry_run {
            let rv = pdb.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok());
            let mut spent = status.clone();
            spent.disruptions_allowed -= 1;
            spent.disrupted_pods.get_or_insert_default().insert(name.to_string(), Time(now));
            let spent = json!(spent);
            let write = registry
                .update_with(
                    info("policy", "poddisruptionbudgets"),
                    Some(ns),
                    &pdb_name,
                    Some("status"),
                    WriteOptions::default(),
                    rv,
                    |old| {
                        let mut new = old.clone();
                        new["status"] = spent.clone();
                        Ok(new)
                    },
                )
                .await;
            match write {
                Ok(_) => {}
                // Someone else spent or refreshed the budget: decide again on the new one.
                Err(ApiError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        return delete(registry, ns, name, &opts, true).await;
    }
    Err(ApiError::Conflict(format!("the disruption budget of pod {name} kept changing; please retry")))
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Internal(format!("decoding a stored object: {e}")))
}

/// Marks the pod with `DisruptionTarget` (when `mark`) and deletes it.
async fn delete(
    registry: &Registry,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
    mark: bool,
) -> Result<Outcome, ApiError> {
    let pods = info("", "pods");
    if mark && !opts.dry_run {
        let now = crate::registry::object::now();
        let marked = registry
            .update_with(pods, Some(ns), name, Some("status"), WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                let mut conditions = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
                if conditions.iter().any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True") {
                    return Ok(new);
                }
                conditions.retain(|c| c["type"] != "DisruptionTarget");
                conditions
                    .push(json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting", "lastTransitionTime": now}));
                new["status"]["conditions"] = json!(conditions);
                Ok(new)
            })
            .await;
        match marked {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    registry.delete(pods, Some(ns), name, opts).await?;
    Ok(Outcome::Evicted)
}
