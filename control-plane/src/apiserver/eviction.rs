//! `POST pods/<name>/eviction` (policy/v1 Eviction, what `kubectl drain` uses): the HTTP side
//! of [`crate::controllers::disruption::eviction`] — 201 with a success `Status` when the pod
//! is being deleted, 429 `TooManyRequests` with the budget as the cause when a
//! PodDisruptionBudget forbids it (clients such as kubectl retry those).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::SharedState;
use super::error::ApiError;
use super::handlers::json_response;
use super::request::ResourcePath;
use crate::controllers::disruption::eviction::{self, DENIED_MESSAGE, Outcome};
use crate::registry::rest::WriteOptions;

/// Evicts the pod `path` names as the Eviction `body` asks.
pub async fn create(
    state: &SharedState,
    path: &ResourcePath,
    body: Value,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let ns = path.object_namespace().unwrap_or("default");
    let name = path.name.as_deref().unwrap_or_default();
    if let Some(named) = body.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str)
        && !named.is_empty()
        && named != name
    {
        return Err(ApiError::BadRequest(format!(
            "name in URL does not match name in Eviction object: {name} vs {named}"
        )));
    }
    let outcome = eviction::evict(&state.registry, ns, name, &body, opts.dry_run, jiff::Timestamp::now()).await?;
    Ok(match outcome {
        Outcome::Evicted => {
            let status =
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
            json_response(StatusCode::CREATED, &status, vec![])
        }
        Outcome::Denied { cause } => json_response(StatusCode::TOO_MANY_REQUESTS, &denied_status(&cause), vec![]),
    })
}

/// The `Status` of a refused eviction, as Kubernetes writes it.
pub fn denied_status(cause: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": DENIED_MESSAGE,
        "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget", "message": cause}]},
        "code": 429,
    })
}
