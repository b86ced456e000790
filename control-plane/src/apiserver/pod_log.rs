//! The `pods/log` subresource: `GET /api/v1/namespaces/{ns}/pods/{name}/log`.
//!
//! The API server holds no logs. It checks the request against the pod (which container,
//! scheduled or not), finds the pod's node (`status.addresses` InternalIP and
//! `status.daemonEndpoints.kubeletEndpoint.Port`), and streams that node API's
//! `/containerLogs/{ns}/{pod}/{container}` response back — chunk by chunk, so `kubectl logs
//! -f` follows. It authenticates to the node with its kubelet-client certificate from the
//! cluster PKI and verifies the node's serving certificate against the cluster CA.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio_rustls::TlsConnector;

use super::SharedState;
use super::error::ApiError;
use super::request::ResourcePath;
use crate::registry::catalog;

/// Connecting to a node API (TCP + TLS) must not take longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The node API answers with headers right away, even when following.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(30);
/// The kubelet's default port, when a Node does not say.
const DEFAULT_NODE_PORT: u16 = 10250;
/// Error bodies from a node API are read up to this size.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The query of `pods/log` (`PodLogOptions`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodLogQuery {
    pub container: Option<String>,
    pub follow: Option<String>,
    pub previous: Option<String>,
    pub tail_lines: Option<String>,
    pub since_seconds: Option<String>,
    pub since_time: Option<String>,
    pub timestamps: Option<String>,
    pub limit_bytes: Option<String>,
}

impl PodLogQuery {
    /// The node API query string for these options.
    fn node_query(&self) -> String {
        let pairs = [
            ("follow", &self.follow),
            ("previous", &self.previous),
            ("tailLines", &self.tail_lines),
            ("sinceSeconds", &self.since_seconds),
            ("sinceTime", &self.since_time),
            ("timestamps", &self.timestamps),
            ("limitBytes", &self.limit_bytes),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent_encode(v))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn names(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// Which container to read, with Kubernetes' messages for a missing or unknown one.
pub fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let pod_name = crate::registry::object::name(pod);
    let spec = pod.get("spec");
    let containers = names(spec.and_then(|s| s.get("containers")));
    let init = names(spec.and_then(|s| s.get("initContainers")));
    let ephemeral = names(spec.and_then(|s| s.get("ephemeralContainers")));
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).chain(&ephemeral).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {pod_name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            Err(ApiError::BadRequest(msg))
        }
    }
}

/// Where the node API of `node` listens: InternalIP (else Hostname) and the kubelet port.
pub fn node_endpoint(node: &Value) -> Option<(String, u16)> {
    let status = node.get("status")?;
    let addresses = status.get("addresses")?.as_array()?;
    let pick = |ty: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(ty))
            .and_then(|a| a.get("address")?.as_str())
    };
    let host = pick("InternalIP").or_else(|| pick("Hostname"))?.to_string();
    let port = status
        .pointer("/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_NODE_PORT);
    Some((host, port))
}

/// The waiting reason the pod status shows for `container`, if any.
fn waiting_reason(pod: &Value, container: &str) -> Option<String> {
    let status = pod.get("status")?;
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| status.get(*k)?.as_array())
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container))
        .and_then(|s| s.pointer("/state/waiting/reason")?.as_str().map(str::to_string))
}

/// Serves `GET .../pods/{name}/log`.
pub async fn get(state: &SharedState, path: &ResourcePath, uri: &Uri) -> Result<Response, ApiError> {
    let query = axum::extract::Query::<PodLogQuery>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {}", e.body_text())))?;
    let ns = path.object_namespace().unwrap_or("default");
    let name = path.name.as_deref().unwrap_or_default();
    let pod = state.registry.get(path.info, Some(ns), name).await?;
    let container = pick_container(&pod, query.container.as_deref())?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    if let Some(reason) = waiting_reason(&pod, &container).filter(|r| r != "CrashLoopBackOff") {
        // No run has written anything yet; say why, as the kubelet does.
        if query.previous.as_deref() != Some("true") {
            return Err(ApiError::BadRequest(format!(
                "container {container:?} in pod {name:?} is waiting to start: {reason}"
            )));
        }
    }
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!("pod {name:?} does not have a host assigned")));
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
    let tls = state
        .kubelet_tls
        .clone()
        .ok_or_else(|| ApiError::Internal("no kubelet client credentials configured".into()))?;
    let target = format!("/containerLogs/{ns}/{name}/{container}?{}", query.node_query());
    proxy(state, tls, &host, port, &target).await
}

/// A TLS connection to a node's API at `host:port` (bounded by [`CONNECT_TIMEOUT`]), with the
/// API server's kubelet-client credentials; failures are phrased by `unreachable`. Shared by
/// `kubectl logs` and the exec/attach/port-forward stream proxy.
pub(super) async fn connect_node(
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    unreachable: &(dyn Fn(&dyn std::fmt::Display) -> ApiError + Sync),
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ApiError> {
    let server_name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_string()).map_err(|e| unreachable(&e))?,
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(tls).connect(server_name, tcp).await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable(&"connection timed out"))?
        .map_err(|e| unreachable(&e))
}

/// Calls the node API and relays its answer (streamed on success, as a Status on failure).
async fn proxy(
    state: &SharedState,
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    target: &str,
) -> Result<Response, ApiError> {
    let unreachable =
        |e: &dyn std::fmt::Display| ApiError::Internal(format!("Get \"https://{host}:{port}{target}\": {e}"));
    let stream = connect_node(tls, host, port, &unreachable).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
    // The connection task ends with the response body (or at shutdown); it is tracked so
    // shutdown waits for it.
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = conn => if let Err(e) = r { tracing::debug!(error = %e, "node API connection ended with error") },
        }
    });
    let request = http::Request::get(target)
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let response = tokio::time::timeout(HEADERS_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| unreachable(&"no response from the node"))?
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok((StatusCode::OK, [(http::header::CONTENT_TYPE, "text/plain")], Body::new(response.into_body()))
            .into_response());
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
    Err(match status {
        StatusCode::FORBIDDEN => ApiError::Forbidden(message),
        s if s.is_client_error() => ApiError::BadRequest(message),
        _ => ApiError::Internal(message),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn container_choice_and_messages() {
        let one = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}]}});
        assert_eq!(pick_container(&one, None).expect("single"), "app");
        assert_eq!(pick_container(&one, Some("app")).expect("named"), "app");
        let err = pick_container(&one, Some("nope")).expect_err("unknown");
        assert_eq!(err.to_string(), "container nope is not valid for pod web");
        let two = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = pick_container(&two, None).expect_err("ambiguous");
        assert_eq!(
            err.to_string(),
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(pick_container(&two, Some("i")).expect("init"), "i");
    }

    #[test]
    fn node_endpoints() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 40123}}}});
        assert_eq!(node_endpoint(&node), Some(("10.0.0.2".to_string(), 40123)));
        let bare = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}]}});
        assert_eq!(node_endpoint(&bare), Some(("n1".to_string(), 10250)));
        assert_eq!(node_endpoint(&json!({})), None);
    }

    #[test]
    fn forwarded_query() {
        let q = PodLogQuery {
            follow: Some("true".into()),
            since_time: Some("2024-05-01T10:00:00+02:00".into()),
            tail_lines: Some("5".into()),
            ..Default::default()
        };
        assert_eq!(q.node_query(), "follow=true&tailLines=5&sinceTime=2024-05-01T10%3A00%3A00%2B02%3A00");
    }
}
