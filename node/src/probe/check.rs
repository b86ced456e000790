//! One probe check: resolve what to contact ([`Action::resolve`]) and do it ([`run`]).
//!
//! `httpGet` succeeds on a status of 200–399 (redirects followed, as the kubelet does),
//! `tcpSocket` when a connection opens; both within the probe's timeout. `exec` needs a
//! process to exec into and is not offered by the WASM runtime, so it always fails with a
//! message saying so. HTTPS probes skip certificate checks, as in Kubernetes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Where a probe's target lives: the pod IP and the container's declared ports.
#[derive(Debug, Clone)]
pub struct ProbeTarget<'a> {
    pub pod_ip: IpAddr,
    pub container: &'a Container,
}

/// A resolved check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        addr: SocketAddr,
    },
    /// A probe this node cannot run; every check fails with this message.
    Unsupported(String),
}

impl Action {
    /// Resolves `probe` against `target`: default host, named ports.
    pub fn resolve(probe: &Probe, target: &ProbeTarget<'_>) -> Action {
        if let Some(http) = &probe.http_get {
            let port = match resolve_port(&http.port, target.container) {
                Ok(p) => p,
                Err(e) => return Action::Unsupported(e),
            };
            let host = match http.host.as_deref().filter(|h| !h.is_empty()) {
                Some(h) => h.to_string(),
                None => target.pod_ip.to_string(),
            };
            let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
            let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
            let path = http.path.as_deref().unwrap_or("/");
            let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
            let headers = http.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
            return Action::Http { url: format!("{scheme}://{host}:{port}{path}"), headers };
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = match resolve_port(&tcp.port, target.container) {
                Ok(p) => p,
                Err(e) => return Action::Unsupported(e),
            };
            let ip = match tcp.host.as_deref().filter(|h| !h.is_empty()) {
                None => target.pod_ip,
                Some(h) => match h.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => return Action::Unsupported(format!("tcpSocket host {h:?} is not an IP address")),
                },
            };
            return Action::Tcp { addr: SocketAddr::new(ip, port) };
        }
        if probe.exec.is_some() {
            return Action::Unsupported("exec probes are not supported by this runtime".into());
        }
        if probe.grpc.is_some() {
            return Action::Unsupported("grpc probes are not supported yet".into());
        }
        Action::Unsupported("probe has no handler".into())
    }
}

/// A port number, or the name of one of `container`'s ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("container {} has no port named {name:?}", container.name))
        }
    }
}

/// Runs one check; `Err` says why it failed.
pub async fn run(action: &Action, http: &reqwest::Client, timeout: Duration) -> Result<(), String> {
    match action {
        Action::Unsupported(msg) => Err(msg.clone()),
        Action::Tcp { addr } => match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
            Err(_) => Err(format!("dial tcp {addr}: timeout after {timeout:?}")),
        },
        Action::Http { url, headers } => {
            let mut req = http.get(url).timeout(timeout).header("User-Agent", "kube-probe/skiff");
            for (name, value) in headers {
                req = req.header(name, value);
            }
            match req.send().await {
                Ok(resp) if (200..400).contains(&resp.status().as_u16()) => Ok(()),
                Ok(resp) => Err(format!("HTTP probe failed with statuscode: {}", resp.status().as_u16())),
                Err(e) => Err(format!("Get {url:?}: {e}")),
            }
        }
    }
}

/// The HTTP client probes share: no proxy, no certificate checks (as the kubelet's prober).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().no_proxy().danger_accept_invalid_certs(true).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, HTTPHeader, TCPSocketAction};

    fn container() -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("web".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    #[test]
    fn http_defaults_host_and_resolves_named_port() {
        let c = container();
        let target = ProbeTarget { pod_ip: "127.244.0.5".parse().expect("ip"), container: &c };
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("web".into()),
                path: Some("healthz".into()),
                http_headers: Some(vec![HTTPHeader { name: "X-A".into(), value: "1".into() }]),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            Action::resolve(&probe, &target),
            Action::Http { url: "http://127.244.0.5:8080/healthz".into(), headers: vec![("X-A".into(), "1".into())] }
        );
    }

    #[test]
    fn tcp_with_host_and_bad_ports() {
        let c = container();
        let target = ProbeTarget { pod_ip: "127.244.0.5".parse().expect("ip"), container: &c };
        let tcp = |port, host: Option<&str>| Probe {
            tcp_socket: Some(TCPSocketAction { port, host: host.map(str::to_string) }),
            ..Probe::default()
        };
        assert_eq!(
            Action::resolve(&tcp(IntOrString::Int(9), Some("127.0.0.1")), &target),
            Action::Tcp { addr: "127.0.0.1:9".parse().expect("addr") }
        );
        assert!(matches!(
            Action::resolve(&tcp(IntOrString::String("nope".into()), None), &target),
            Action::Unsupported(_)
        ));
        assert!(matches!(Action::resolve(&tcp(IntOrString::Int(70000), None), &target), Action::Unsupported(_)));
        assert!(matches!(Action::resolve(&Probe::default(), &target), Action::Unsupported(_)));
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        let http = http_client().expect("client");
        let t = Duration::from_secs(2);
        let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp_addr = tcp_listener.local_addr().expect("addr");
        assert!(run(&Action::Tcp { addr: tcp_addr }, &http, t).await.is_ok());
        drop(tcp_listener);
        assert!(run(&Action::Tcp { addr: tcp_addr }, &http, t).await.is_err(), "nobody listens any more");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A tiny HTTP server answering 503 once, then 200.
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                s.write_all(resp.as_bytes()).await.expect("write");
            }
        });
        let action = Action::Http { url: format!("http://{addr}/"), headers: vec![] };
        let first = run(&action, &http, t).await;
        assert!(first.as_ref().is_err_and(|e| e.contains("503")), "{first:?}");
        assert!(run(&action, &http, t).await.is_ok());
        server.await.expect("server");
    }
}
