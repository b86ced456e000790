//! The streaming pod subresources: `pods/{name}/exec`, `pods/{name}/attach` and
//! `pods/{name}/portforward` (GET or POST with `Upgrade`).
//!
//! What it owns: the checks Kubernetes makes before a stream (the pod exists, is bound and
//! running, the container is valid — named, or the only one, or the
//! `kubectl.kubernetes.io/default-container` annotation), then the upgrade relay: the request
//! goes to the pod's node API (`/exec`, `/attach`, `/portForward`, the kubelet's paths) with the
//! API server's kubelet-client certificate; when the node switches protocols, the client's
//! connection and the node's are joined byte for byte. What it does not: speak the streaming
//! protocols (WebSocket channels, SPDY) — the node does, so the API server never parses them.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::SharedState;
use super::error::ApiError;
use super::pod_log::{node_endpoint, pick_container};
use crate::registry::catalog;

const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The annotation kubectl sets to choose a pod's default container.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
/// Request headers of an upgrade the node needs (never the caller's credentials).
const FORWARDED: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];
/// Response headers of a switch the client needs.
const RETURNED: &[&str] =
    &["upgrade", "connection", "sec-websocket-accept", "sec-websocket-protocol", "x-stream-protocol-version"];

/// Which streaming subresource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

pub async fn exec(state: State<SharedState>, path: Path<(String, String)>, req: Request) -> Response {
    serve(state, path, req, Kind::Exec).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn attach(state: State<SharedState>, path: Path<(String, String)>, req: Request) -> Response {
    serve(state, path, req, Kind::Attach).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn portforward(state: State<SharedState>, path: Path<(String, String)>, req: Request) -> Response {
    serve(state, path, req, Kind::PortForward).await.unwrap_or_else(IntoResponse::into_response)
}

/// The `container` query parameter (first one).
fn query_container(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "container").map(|(_, v)| v.into_owned())
}

/// The container to use: the requested one, else the annotated default, else the only one.
fn choose_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let annotated = pod.pointer(&format!("/metadata/annotations/{}", DEFAULT_CONTAINER.replace('/', "~1")));
    let requested = requested.filter(|c| !c.is_empty()).or_else(|| annotated.and_then(Value::as_str));
    pick_container(pod, requested)
}

#[tracing::instrument(level = "debug", skip(state, req), fields(kind = ?kind))]
async fn serve(
    State(state): State<SharedState>,
    Path((ns, name)): Path<(String, String)>,
    mut req: Request,
    kind: Kind,
) -> Result<Response, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return Err(ApiError::MethodNotAllowed);
    }
    let pods = catalog::find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let pod = state.registry.get(pods, Some(&ns), &name).await?;
    let query = req.uri().query().unwrap_or_default().to_string();
    let target = match kind {
        Kind::PortForward => format!("/portForward/{ns}/{name}"),
        Kind::Exec | Kind::Attach => {
            let container = choose_container(&pod, query_container(&query).as_deref())?;
            let verb = if kind == Kind::Exec { "exec" } else { "attach" };
            format!("/{verb}/{ns}/{name}/{container}")
        }
    };
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    }
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    if phase != "Running" {
        return Err(ApiError::BadRequest(format!("pod {name} is not running (phase {phase})")));
    }
    let nodes = catalog::find("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let node = match state.registry.get(nodes, None, node_name).await {
        Ok(node) => node,
        Err(ApiError::NotFound { .. }) => {
            return Err(ApiError::BadRequest(format!("node {node_name:?} of pod {name:?} not found")));
        }
        Err(e) => return Err(e),
    };
    let (host, port) = node_endpoint(&node)
        .ok_or_else(|| ApiError::BadRequest(format!("node {node_name:?} has no address for its node API")))?;
    let target = if query.is_empty() { target } else { format!("{target}?{query}") };
    let client_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let response = call_node(&state, &host, port, req.method().clone(), &target, req.headers()).await?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(relay_error(response).await);
    }
    let client_upgrade = client_upgrade
        .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded (HTTP/1.1 is required)".into()))?;
    let mut switched = StatusCode::SWITCHING_PROTOCOLS.into_response();
    for name in RETURNED {
        for v in response.headers().get_all(*name) {
            switched.headers_mut().append(*name, v.clone());
        }
    }
    let node_upgrade = hyper::upgrade::on(response);
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        let (client, node) = match tokio::try_join!(client_upgrade, node_upgrade) {
            Ok(both) => both,
            Err(e) => return tracing::debug!(error = %e, "stream upgrade failed"),
        };
        let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = tokio::io::copy_bidirectional(&mut client, &mut node) => {
                if let Err(e) = r { tracing::debug!(error = %e, "stream relay ended with error") }
            }
        }
    });
    Ok(switched)
}

/// Sends the upgrade request to the node API and returns its answer (headers only).
async fn call_node(
    state: &SharedState,
    host: &str,
    port: u16,
    method: Method,
    target: &str,
    headers: &HeaderMap,
) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::Internal(format!(
            "error dialing backend: https://{host}:{port}{}: {e}",
            target.split('?').next().unwrap_or_default()
        ))
    };
    let tls = state
        .kubelet_tls
        .clone()
        .ok_or_else(|| ApiError::Internal("no kubelet client credentials configured".into()))?;
    let stream = super::pod_log::connect_node(tls, host, port, &unreachable).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
    // The connection task hands the socket over on upgrade, so it ends by itself.
    state.tasks.spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "node API stream connection ended with error");
        }
    });
    let mut request =
        http::Request::builder().method(method).uri(target).header(header::HOST, format!("{host}:{port}"));
    for name in FORWARDED {
        for v in headers.get_all(*name) {
            request = request.header(*name, v.clone());
        }
    }
    let request =
        request.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| ApiError::Internal(e.to_string()))?;
    tokio::time::timeout(HEADERS_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| unreachable(&"no response from the node"))?
        .map_err(|e| unreachable(&e))
}

/// The node's refusal as a Status of the same kind.
async fn relay_error(response: http::Response<hyper::body::Incoming>) -> ApiError {
    let status = response.status();
    let body = http_body_util::Limited::new(Body::new(response.into_body()), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    match status {
        StatusCode::FORBIDDEN => ApiError::Forbidden(message),
        s if s.is_client_error() => ApiError::BadRequest(message),
        _ => ApiError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn container_defaults() {
        let pod = json!({"metadata": {"name": "web", "annotations": {DEFAULT_CONTAINER: "b"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(choose_container(&pod, None).expect("annotated"), "b");
        assert_eq!(choose_container(&pod, Some("a")).expect("named"), "a");
        let err = choose_container(&pod, Some("nope")).expect_err("unknown");
        assert_eq!(err.to_string(), "container nope is not valid for pod web");
        assert_eq!(query_container("command=ls&container=b&stdout=true").as_deref(), Some("b"));
        assert_eq!(query_container("command=ls"), None);
    }
}
