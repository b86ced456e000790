//! The reverse proxy: one request in (HTTP/1.1 or HTTP/2, plain or TLS), routed through the
//! current [`Snapshot`], forwarded over HTTP/1.1 to the chosen endpoint with a pooled hyper
//! client, the answer streamed back.
//!
//! What it owns: the host the request is for (`:authority`, else `Host`), hop-by-hop header
//! removal (RFC 9110 §7.6.1), the `X-Forwarded-For/-Proto/-Host/-Port` headers (appending to a
//! client's `X-Forwarded-For`, as proxies chain), and the answers of its own — 404 (no rule),
//! 503 (no Service, port or ready endpoint; not synced yet), 502 (the endpoint failed).
//! What it does not: upgrades (WebSocket) — they get the backend's answer without the switch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use super::snapshot::{Decision, Snapshot};

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Bodies the proxy answers with: the backend's, or one of its own.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// How long connecting to an endpoint may take before the request gets 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether requests came in over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Shared by every connection of one listener.
#[derive(Debug, Clone)]
pub struct Proxy {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    client: Client<HttpConnector, Incoming>,
    scheme: Scheme,
    /// The listener's port, for `X-Forwarded-Port`.
    port: u16,
}

impl Proxy {
    pub fn new(snapshot: watch::Receiver<Arc<Snapshot>>, scheme: Scheme, port: u16) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Proxy { snapshot, client, scheme, port }
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let host = request_host(&req);
        let path = req.uri().path().to_string();
        let snapshot = self.snapshot.borrow().clone();
        if !snapshot.synced {
            return text(StatusCode::SERVICE_UNAVAILABLE, "ingress is starting\n".into());
        }
        let (addr, target) = match snapshot.decide(&host, &path) {
            Decision::NotFound => return text(StatusCode::NOT_FOUND, format!("no ingress rule for {host}{path}\n")),
            Decision::Unavailable(why) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            Decision::Forward { addr, target } => (addr, target),
        };
        drop(snapshot);
        let outbound = match self.outbound(req, &host, addr, peer) {
            Ok(r) => r,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        match self.client.request(outbound).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(e) => {
                tracing::debug!(error = %e, %addr, ingress = %target.ingress, "ingress backend request failed");
                text(StatusCode::BAD_GATEWAY, format!("backend {addr} failed: {e}\n"))
            }
        }
    }

    /// The request as sent to `addr`: origin URI, HTTP/1.1, hop-by-hop headers gone, the
    /// original host kept, forwarding headers added.
    fn outbound(
        &self,
        req: Request<Incoming>,
        host: &str,
        addr: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Request<Incoming>, http::Error> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
        parts.uri = Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(path_and_query).build()?;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        let headers = &mut parts.headers;
        if !host.is_empty()
            && let Ok(value) = HeaderValue::from_str(host)
        {
            headers.insert(header::HOST, value.clone());
            headers.insert(HeaderName::from_static("x-forwarded-host"), value);
        }
        let client_ip = peer.ip().to_canonical().to_string();
        let xff = HeaderName::from_static("x-forwarded-for");
        let chained = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {client_ip}"),
            _ => client_ip.clone(),
        };
        if let Ok(value) = HeaderValue::from_str(&chained) {
            headers.insert(xff, value);
        }
        if let Ok(value) = HeaderValue::from_str(&client_ip) {
            headers.insert(HeaderName::from_static("x-real-ip"), value);
        }
        headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(self.scheme.as_str()));
        headers.insert(HeaderName::from_static("x-forwarded-port"), HeaderValue::from(self.port));
        Ok(Request::from_parts(parts, body))
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form), else `Host`.
fn request_host(req: &Request<Incoming>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_default()
}

/// Removes the headers that belong to one connection, including those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A plain-text answer of the proxy's own.
fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }
}
