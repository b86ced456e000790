//! One probe check: resolve what to contact ([`Action::resolve`]) and do it ([`run`]).
//!
//! `httpGet` succeeds on a status of 200–399 (redirects followed, as the kubelet does),
//! `tcpSocket` when a connection opens, `exec` when the command exits 0 (run in the container
//! through the runtime, [`super::exec`]; killed when the timeout passes); all within the
//! probe's timeout. A WASM container has no process to exec into: its runtime answers exec
//! with a clear "not supported", which becomes the probe's failure message. HTTPS probes skip
//! certificate checks, as in Kubernetes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::runtime::RunningContainer;

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
    /// A command run inside the container; exit code 0 is a success.
    Exec {
        command: Vec<String>,
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
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Action::Unsupported("exec probe has no command".into());
            }
            return Action::Exec { command };
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

/// Runs one check against `container` (the one probed; exec checks run inside it); `Err`
/// says why it failed.
pub async fn run(
    action: &Action,
    http: &reqwest::Client,
    container: &dyn RunningContainer,
    timeout: Duration,
) -> Result<(), String> {
    match action {
        Action::Unsupported(msg) => Err(msg.clone()),
        Action::Exec { command } => match super::exec::run(container, command, Some(timeout)).await {
            Ok(out) if out.exit_code == 0 => Ok(()),
            // The kubelet's message is the command's output; an empty one says how it ended.
            Ok(out) if !out.output.trim().is_empty() => Err(out.output.trim_end().to_string()),
            Ok(out) => Err(format!("command {:?} exited with code {}", command.join(" "), out.exit_code)),
            Err(e) => Err(e.to_string()),
        },
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
    use crate::probe::exec::tests::FakeExec;
    use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, TCPSocketAction};

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
        let c = FakeExec::default();
        let t = Duration::from_secs(2);
        let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp_addr = tcp_listener.local_addr().expect("addr");
        assert!(run(&Action::Tcp { addr: tcp_addr }, &http, &c, t).await.is_ok());
        drop(tcp_listener);
        assert!(run(&Action::Tcp { addr: tcp_addr }, &http, &c, t).await.is_err(), "nobody listens any more");

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
        let first = run(&action, &http, &c, t).await;
        assert!(first.as_ref().is_err_and(|e| e.contains("503")), "{first:?}");
        assert!(run(&action, &http, &c, t).await.is_ok());
        server.await.expect("server");
    }

    #[tokio::test]
    async fn exec_checks_pass_on_exit_zero_and_report_output() {
        let http = http_client().expect("client");
        let t = Duration::from_secs(1);
        let exec = |cmd: &[&str]| Probe {
            exec: Some(ExecAction { command: Some(cmd.iter().map(|s| s.to_string()).collect()) }),
            ..Probe::default()
        };
        let c = container();
        let target = ProbeTarget { pod_ip: "127.244.0.5".parse().expect("ip"), container: &c };
        let action = Action::resolve(&exec(&["cat", "/ready"]), &target);
        assert_eq!(action, Action::Exec { command: vec!["cat".into(), "/ready".into()] });
        assert!(matches!(Action::resolve(&exec(&[]), &target), Action::Unsupported(_)));
        assert!(run(&action, &http, &FakeExec::default(), t).await.is_ok());
        let failing = FakeExec { code: 1, output: "cat: can't open '/ready'\n".into(), ..FakeExec::default() };
        assert_eq!(run(&action, &http, &failing, t).await, Err("cat: can't open '/ready'".into()));
        let silent = FakeExec { code: 2, ..FakeExec::default() };
        assert_eq!(run(&action, &http, &silent, t).await, Err("command \"cat /ready\" exited with code 2".into()));
    }
}
