//! The node's own HTTPS API — the kubelet role the API server calls for `kubectl logs`:
//! `GET /containerLogs/{namespace}/{pod}/{container}` (the kubelet's path and query
//! parameters) and `GET /healthz`.
//!
//! Only the API server may read logs: the listener requires a client certificate issued by
//! the cluster CA, and log requests additionally need the `system:masters` group in it (the
//! API server's kubelet-client certificate has it; node certificates do not). Errors are
//! Kubernetes `Status` objects, so the API server can relay them unchanged.
//! `/exec`, `/attach` (WebSocket channel protocol) and `/portForward` (SPDY, raw or tunnelled
//! in a WebSocket) act on the containers [`StreamTargets`] knows. Stats are not served yet.

pub mod channel;
pub mod exec;
pub mod portforward;
mod serve;
pub mod spdy;
pub mod targets;
mod tls;
pub mod websocket;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use jiff::Timestamp;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::logs::{LogError, LogOptions, LogStore};

pub use serve::{NodeApiError, serve, serve_with_targets};
pub use targets::StreamTargets;
pub use tls::{NodeApiTls, READ_LOGS_GROUP};

/// What the node API's handlers share.
#[derive(Debug, Clone)]
pub struct NodeApiState {
    pub logs: LogStore,
    pub targets: Arc<StreamTargets>,
    /// Owns the upgraded exec/attach/port-forward sessions, so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Ends the sessions.
    pub shutdown: CancellationToken,
}

impl FromRef<NodeApiState> for LogStore {
    fn from_ref(state: &NodeApiState) -> LogStore {
        state.logs.clone()
    }
}

/// The query of `/containerLogs`, as the kubelet accepts it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LogQuery {
    pub follow: Option<String>,
    pub previous: Option<String>,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
    pub timestamps: Option<String>,
    pub limit_bytes: Option<i64>,
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1" | "True"))
}

impl LogQuery {
    /// The reader options, validated as the API server validates `PodLogOptions`.
    pub fn options(&self, now: Timestamp) -> Result<LogOptions, String> {
        if self.since_seconds.is_some() && self.since_time.is_some() {
            return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
        }
        let since = match (&self.since_seconds, &self.since_time) {
            (Some(secs), _) if *secs < 1 => return Err("sinceSeconds must be greater than 0".into()),
            (Some(secs), _) => Some(now - jiff::SignedDuration::from_secs(*secs)),
            (_, Some(t)) => Some(t.parse::<Timestamp>().map_err(|e| format!("invalid sinceTime {t:?}: {e}"))?),
            _ => None,
        };
        let non_negative = |v: Option<i64>, what: &str| match v {
            Some(n) if n < 0 => Err(format!("{what} must be greater than or equal to 0")),
            Some(n) => Ok(Some(n.unsigned_abs())),
            None => Ok(None),
        };
        let limit_bytes = match self.limit_bytes {
            Some(n) if n < 1 => return Err("limitBytes must be greater than 0".into()),
            other => other.map(i64::unsigned_abs),
        };
        Ok(LogOptions {
            follow: truthy(self.follow.as_deref()),
            previous: truthy(self.previous.as_deref()),
            tail_lines: non_negative(self.tail_lines, "tailLines")?,
            since,
            timestamps: truthy(self.timestamps.as_deref()),
            limit_bytes,
        })
    }
}

/// A `Status` error response.
pub fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn log_error_response(e: &LogError) -> Response {
    match e {
        LogError::NotStarted { .. } | LogError::NoPrevious { .. } => {
            status_response(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string())
        }
        LogError::Io { .. } => {
            tracing::warn!(error = %e, "reading container log failed");
            status_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string())
        }
    }
}

#[tracing::instrument(level = "debug", skip(logs, query))]
async fn container_logs(
    State(logs): State<LogStore>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid query parameters: {}", e.body_text()),
            );
        }
    };
    let opts = match query.options(Timestamp::now()) {
        Ok(o) => o,
        Err(msg) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    match logs.read(&namespace, &pod, &container, opts).await {
        Ok(body) => ([(axum::http::header::CONTENT_TYPE, "text/plain")], Body::from_stream(body)).into_response(),
        Err(e) => log_error_response(&e),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// The routes for an authorized caller.
pub fn router(state: NodeApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", any(exec::exec))
        .route("/attach/{namespace}/{pod}/{container}", any(exec::attach))
        .route("/portForward/{namespace}/{pod}", any(portforward::port_forward))
        .with_state(state)
}

/// The routes for a caller with a valid certificate but without the right to read logs.
pub(crate) fn forbidden_router(user: String) -> Router {
    Router::new().route("/healthz", get(healthz)).fallback(move || {
        let msg = format!("user {user:?} is not allowed to use the node API (needs group {READ_LOGS_GROUP})");
        async move { status_response(StatusCode::FORBIDDEN, "Forbidden", &msg) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_options() {
        let now: Timestamp = "2024-05-01T10:00:00Z".parse().expect("now");
        let q = LogQuery {
            follow: Some("true".into()),
            tail_lines: Some(5),
            since_seconds: Some(60),
            limit_bytes: Some(10),
            ..Default::default()
        };
        let o = q.options(now).expect("valid");
        assert!(o.follow && !o.previous && !o.timestamps);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(10)));
        assert_eq!(o.since, Some("2024-05-01T09:59:00Z".parse().expect("since")));
        let q = LogQuery {
            since_time: Some("2024-05-01T09:00:00Z".into()),
            previous: Some("true".into()),
            ..Default::default()
        };
        assert_eq!(q.options(now).expect("valid").since, Some("2024-05-01T09:00:00Z".parse().expect("t")));
        assert!(
            LogQuery { since_seconds: Some(1), since_time: Some("2024-05-01T09:00:00Z".into()), ..Default::default() }
                .options(now)
                .is_err()
        );
        assert!(LogQuery { tail_lines: Some(-1), ..Default::default() }.options(now).is_err());
        assert!(LogQuery { limit_bytes: Some(0), ..Default::default() }.options(now).is_err());
        assert!(LogQuery { since_time: Some("yesterday".into()), ..Default::default() }.options(now).is_err());
    }
}
