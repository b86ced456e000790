//! The `scale` subresource (an `autoscaling/v1` Scale view of Deployments, ReplicaSets and
//! StatefulSets, what `kubectl scale` and autoscalers use) and `pods/binding` (how the
//! scheduler assigns a pod to a node).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::SharedState;
use super::error::ApiError;
use super::handlers::{json_response, object_response};
use super::patch::{self, PatchType};
use super::request::ResourcePath;
use crate::registry::catalog;
use crate::registry::object::{self, meta_str};
use crate::registry::rest::{Registry, WriteOptions, Written};

/// The Scale view of an object.
fn to_scale(obj: &Value) -> Value {
    let selector = obj
        .get("spec")
        .and_then(|s| s.get("selector"))
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.get("spec").and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.get("status").and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

fn name(path: &ResourcePath) -> &str {
    path.name.as_deref().unwrap_or_default()
}

pub async fn get(state: &SharedState, path: &ResourcePath) -> Result<Response, ApiError> {
    let obj = state.registry.get(path.info, path.object_namespace(), name(path)).await?;
    Ok(json_response(StatusCode::OK, &to_scale(&obj), vec![]))
}

fn replicas_of(scale: &Value) -> Result<i64, ApiError> {
    let r = scale.get("spec").and_then(|s| s.get("replicas")).and_then(Value::as_i64).unwrap_or(0);
    if r < 0 {
        return Err(ApiError::Invalid {
            kind: "Scale".into(),
            name: object::name(scale).into(),
            causes: vec![skiff_api::validation::FieldCause::invalid(
                "spec.replicas",
                &json!(r),
                "must be greater than or equal to 0",
            )],
        });
    }
    Ok(r)
}

/// Writes `spec.replicas` computed by `f` from the current Scale.
async fn write_scale<F>(
    state: &SharedState,
    path: &ResourcePath,
    opts: WriteOptions,
    precondition: Option<i64>,
    f: F,
) -> Result<Response, ApiError>
where
    F: Fn(&Value) -> Result<i64, ApiError> + Send + Sync,
{
    let w = state
        .registry
        .update_with(path.info, path.object_namespace(), name(path), None, opts, precondition, |old| {
            let replicas = f(&to_scale(old))?;
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            Ok(new)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &to_scale(&w.object), vec![]))
}

pub async fn update(
    state: &SharedState,
    path: &ResourcePath,
    body: Value,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let replicas = replicas_of(&body)?;
    let precondition = match meta_str(&body, "resourceVersion") {
        None | Some("") => None,
        Some(rv) => Some(rv.parse().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?),
    };
    write_scale(state, path, opts, precondition, move |_| Ok(replicas)).await
}

pub async fn patch(
    state: &SharedState,
    path: &ResourcePath,
    patch_type: PatchType,
    body: &[u8],
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    write_scale(state, path, opts, None, |scale| {
        let patched =
            patch::apply_patch(patch_type, "Scale", scale, body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        replicas_of(&patched)
    })
    .await
}

/// `POST pods/<name>/binding`: sets `spec.nodeName` once, with the PodScheduled condition.
pub async fn bind(
    state: &SharedState,
    path: &ResourcePath,
    body: Value,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let target = body
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::Invalid {
            kind: "Binding".into(),
            name: name(path).into(),
            causes: vec![skiff_api::validation::FieldCause::required("target.name", "")],
        })?
        .to_string();
    let w = bind_pod(&state.registry, path.object_namespace(), name(path), &target, opts).await?;
    tracing::debug!(pod = %name(path), node = ?w.object["spec"]["nodeName"], "bound");
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(object_response(StatusCode::CREATED, path, status, &HeaderMap::new(), vec![]))
}

/// Assigns a pod to a node: sets `spec.nodeName` (once; a bound or terminating pod is a
/// `Conflict`) and the PodScheduled=True condition. The one binding path, shared by
/// `pods/binding` and the in-process scheduler.
pub async fn bind_pod(
    registry: &Registry,
    ns: Option<&str>,
    pod_name: &str,
    node: &str,
    opts: WriteOptions,
) -> Result<Written, ApiError> {
    let info = catalog::find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    registry
        .update_with(info, ns, pod_name, Some("binding"), opts, None, |old| {
            let current = old.get("spec").and_then(|s| s.get("nodeName")).and_then(Value::as_str).unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::Conflict(format!("pod {pod_name} is already assigned to node \"{current}\"")));
            }
            if meta_str(old, "deletionTimestamp").is_some() {
                return Err(ApiError::Conflict(format!("pod {pod_name} is being deleted, cannot be assigned to a host")));
            }
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(node);
            let mut conditions: Vec<Value> = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": object::now(), "lastProbeTime": null}));
            new["status"]["conditions"] = json!(conditions);
            Ok(new)
        })
        .await
}
