//! Recording core/v1 Events for what controllers and the scheduler do (`Scheduled`,
//! `FailedScheduling`, `SuccessfulCreate`, …), so `kubectl get events` and `kubectl describe`
//! show them. Best effort: a failed event write is logged, never fails the caller.
//!
//! Not here: aggregation of repeated events into a series (each call writes one Event).

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use tracing::debug;

use crate::registry::catalog;
use crate::registry::object;
use crate::registry::rest::{Registry, WriteOptions};

/// `Normal` or `Warning`, as Kubernetes spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A reference to an object, for `involvedObject`.
pub fn reference(api_version: &str, kind: &str, meta: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    }
}

/// Writes one Event about `involved`, reported by `component` (e.g. `default-scheduler`).
pub async fn record(
    registry: &Registry,
    component: &str,
    involved: &ObjectReference,
    kind: EventType,
    reason: &str,
    message: &str,
) {
    let Some(info) = catalog::find("", "v1", "events") else { return };
    let ns = involved.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let name =
        format!("{}.{:x}", involved.name.as_deref().unwrap_or("unknown"), jiff::Timestamp::now().as_nanosecond());
    let now = object::now();
    let body = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind.as_str(),
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
    });
    if let Err(e) = registry.create(info, Some(&ns), body, WriteOptions::default()).await {
        debug!(error = %e, reason, "could not record an event");
    }
}
