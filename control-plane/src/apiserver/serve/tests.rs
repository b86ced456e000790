//! Tests for the serve loop: real TLS connections on 127.0.0.1:0 with hyper clients.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::Request;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::pki::ClusterPki;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    pki: ClusterPki,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|Extension(peer): Extension<PeerInfo>, req: Request| async move {
                format!(
                    "{:?} {} {}",
                    req.version(),
                    peer.client_cert_cn.as_deref().unwrap_or("-"),
                    peer.client_cert_orgs.join(",")
                )
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
}

async fn start(tls: bool, drain: Duration) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ClusterPki::load_or_create(dir.path(), &[]).expect("pki");
    let config = tls.then(|| pki.server_tls_config().expect("tls config"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(serve(listener, config, app(), shutdown.clone(), drain));
    Server { addr, pki, shutdown, handle, _dir: dir }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task")
            .expect("serve result");
    }
}

async fn tls_connect(server: &Server, alpn: &[u8], client_cert: Option<(String, String)>) -> TlsStream<TcpStream> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(server.pki.ca_root_store().expect("roots"));
    let mut config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(WAIT, TlsConnector::from(Arc::new(config)).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

fn request(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("https://localhost{path}")).body(Empty::new()).expect("request")
}

async fn body_text(resp: http::Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

/// One HTTP/1.1 GET on a fresh connection.
async fn get_h1<I>(io: I, path: &str) -> String
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("h1 handshake");
    let driver = tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, sender.send_request(request(path)))
        .await
        .expect("response in time")
        .expect("response");
    let text = body_text(resp).await;
    driver.abort();
    text
}

/// One HTTP/2 GET on a fresh connection.
async fn get_h2<I>(io: I, path: &str) -> String
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.expect("h2 handshake");
    let driver = tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, sender.send_request(request(path)))
        .await
        .expect("response in time")
        .expect("response");
    let text = body_text(resp).await;
    driver.abort();
    text
}

#[tokio::test]
async fn http2_and_http1_over_tls() {
    let server = start(true, Duration::from_secs(1)).await;
    let h2 = get_h2(tls_connect(&server, b"h2", None).await, "/").await;
    assert_eq!(h2, "HTTP/2.0 - ");
    let h1 = get_h1(tls_connect(&server, b"http/1.1", None).await, "/").await;
    assert_eq!(h1, "HTTP/1.1 - ");
    server.stop().await;
}

#[tokio::test]
async fn client_certificate_identity_reaches_handlers() {
    let server = start(true, Duration::from_secs(1)).await;
    let cert = server.pki.issue_client_cert("alice", &["devs".to_string(), "ops".to_string()]).expect("client cert");
    let text = get_h2(tls_connect(&server, b"h2", Some(cert)).await, "/").await;
    assert_eq!(text, "HTTP/2.0 alice devs,ops");
    server.stop().await;
}

#[tokio::test]
async fn stalled_handshake_does_not_block_accepting() {
    let server = start(true, Duration::from_secs(1)).await;
    // Connects but never sends a ClientHello.
    let _stalled = TcpStream::connect(server.addr).await.expect("connect");
    let text = get_h1(tls_connect(&server, b"http/1.1", None).await, "/").await;
    assert_eq!(text, "HTTP/1.1 - ");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_when_tls_is_off() {
    let server = start(false, Duration::from_secs(1)).await;
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(get_h1(tcp, "/").await, "HTTP/1.1 - ");
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    assert_eq!(get_h2(tcp, "/").await, "HTTP/2.0 - ");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let server = start(true, Duration::from_secs(5)).await;
    let tls = tls_connect(&server, b"h2", None).await;
    let in_flight = tokio::spawn(get_h2(tls, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = server.addr;
    server.stop().await;
    let text = tokio::time::timeout(WAIT, in_flight).await.expect("in time").expect("task");
    assert_eq!(text, "done");
    assert!(TcpStream::connect(addr).await.is_err(), "listener is closed after shutdown");
}

#[tokio::test]
async fn shutdown_bounded_by_drain_with_stuck_connections() {
    let server = start(true, Duration::from_millis(200)).await;
    let _stalled = TcpStream::connect(server.addr).await.expect("connect");
    // An idle HTTP/2 connection whose client never answers GOAWAY by closing.
    let idle = tls_connect(&server, b"h2", None).await;
    let (_sender, conn) =
        hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(idle))
            .await
            .expect("h2 handshake");
    let driver = tokio::spawn(conn);
    // A request that outlives the drain period.
    let slow = tokio::spawn(get_h1(tls_connect(&server, b"http/1.1", None).await, "/slow"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    driver.abort();
    slow.abort();
}
