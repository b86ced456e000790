//! HTTPS from a real guest (`dns-probe`, built by `scripts/build-guests.sh`) to cluster names:
//! real TLS servers on 127.0.0.1 (tokio-rustls + hyper) with serving certificates a test CA
//! issued for `hello.default.svc.cluster.local`, `hello.default.svc`, `hello.default` and
//! `hello` (as Kubernetes users put in such certificates), a runtime trusting that CA as an
//! extra root, and a fixture of cluster names mapping `hello` to `127.0.0.3` (where nothing
//! listens, so every fetch also shows the fallback to the next address) then `127.0.0.1`.

mod common;
use anyhow::Result;
use bytes::Bytes;
use common::{StaticNames, guest_bytes};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use skiff_wasm_runtime::{
    DiscardOutput, GuestConfig, HttpOptions, HttpServer, NameResolver, RuntimeConfig, WasmRuntime,
};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A test CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok(Ca { pem: cert.pem(), issuer: Issuer::new(params, key) })
}

/// A serving certificate of `ca` for the `hello` Service's names, and its key.
fn hello_cert(ca: &Ca) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let names = ["hello.default.svc.cluster.local", "hello.default.svc", "hello.default", "hello"];
    let mut params = CertificateParams::new(names.map(str::to_owned).to_vec())?;
    params.distinguished_name.push(DnType::CommonName, "hello.default.svc.cluster.local");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.der().clone(), PrivatePkcs8KeyDer::from(key.serialize_der()).into()))
}

/// A TLS server on 127.0.0.1 offering `alpn`, answering `hello over <version> to <host>`;
/// returns its port and its task.
async fn tls_server(ca: &Ca, alpn: &[&[u8]]) -> Result<(u16, JoinHandle<()>)> {
    let (cert, key) = hello_cert(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| req.uri().authority().map(ToString::to_string))
                        .unwrap_or_default();
                    let body = format!("hello over {:?} to {host}", req.version());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    Ok((port, task))
}

fn guest(resolver: NameResolver) -> GuestConfig {
    GuestConfig {
        args: Vec::new(),
        env: Vec::new(),
        preopens: Vec::new(),
        memory_limit: None,
        output: Arc::new(DiscardOutput),
        netns: None,
        resolver: Some(resolver),
    }
}

/// A `dns-probe` guest on its own runtime, trusting `extra_roots_pem` besides the web roots.
async fn start_probe(dir: &std::path::Path, extra_roots_pem: Option<String>) -> Result<(WasmRuntime, HttpServer)> {
    let rt = WasmRuntime::new(RuntimeConfig {
        cache_dir: dir.to_owned(),
        max_instances: 16,
        extra_tls_roots_pem: extra_roots_pem,
        ..RuntimeConfig::default()
    })?;
    let artifact = rt.load("test:dns-probe", &guest_bytes("dns-probe"))?;
    let opts =
        HttpOptions { listen: "127.0.0.1:0".parse()?, max_concurrency: 16, request_timeout: Duration::from_secs(20) };
    let resolver = NameResolver::cluster_first(
        Arc::new(StaticNames::new(&[
            ("hello.default.svc.cluster.local", &["127.0.0.3", "127.0.0.1"]),
            ("other.default.svc.cluster.local", &["127.0.0.1"]),
        ])),
        "default",
    );
    let server = rt.serve_http(&artifact, guest(resolver), opts).await?;
    Ok((rt, server))
}

/// What the guest answers to `/fetch?url=<url>`: status and body.
async fn fetch(probe: &HttpServer, url: &str) -> Result<(u16, String)> {
    common::get(probe.local_addr(), &format!("/fetch?url={url}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_fetch_https_cluster_names_verified_by_the_cluster_ca() -> Result<()> {
    let cluster_ca = ca("test cluster CA")?;
    let (h2_port, h2_server) = tls_server(&cluster_ca, &[b"h2", b"http/1.1"]).await?;
    let (h1_port, h1_server) = tls_server(&cluster_ca, &[b"http/1.1"]).await?;
    let dir = tempfile::tempdir()?;
    let (_rt, probe) = start_probe(dir.path(), Some(cluster_ca.pem.clone())).await?;

    // Every form of the name, verified as the name the guest used; ALPN picks h2 when offered.
    for name in ["hello", "hello.default", "hello.default.svc", "hello.default.svc.cluster.local"] {
        assert_eq!(
            fetch(&probe, &format!("https://{name}:{h2_port}/")).await?,
            (200, format!("200\nhello over HTTP/2.0 to {name}:{h2_port}")),
            "{name}"
        );
    }
    assert_eq!(
        fetch(&probe, &format!("https://hello:{h1_port}/")).await?,
        (200, format!("200\nhello over HTTP/1.1 to hello:{h1_port}"))
    );
    // The same server under a name its certificate does not carry.
    let (status, body) = fetch(&probe, &format!("https://other:{h2_port}/")).await?;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TlsCertificateError"), "{body}");
    // A cluster name that does not exist.
    let (status, body) = fetch(&probe, "https://nothere.default.svc.cluster.local/").await?;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("NXDOMAIN"), "{body}");

    probe.shutdown(Duration::from_secs(1)).await;
    h2_server.abort();
    h1_server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_an_untrusted_ca_fail_with_a_tls_certificate_error() -> Result<()> {
    let cluster_ca = ca("test cluster CA")?;
    let stranger = ca("some other CA")?;
    let (stranger_port, stranger_server) = tls_server(&stranger, &[b"h2", b"http/1.1"]).await?;
    let (cluster_port, cluster_server) = tls_server(&cluster_ca, &[b"h2", b"http/1.1"]).await?;
    let dir = tempfile::tempdir()?;

    // Trusting the cluster CA, not the stranger.
    let (_rt, probe) = start_probe(dir.path(), Some(cluster_ca.pem.clone())).await?;
    let (status, body) = fetch(&probe, &format!("https://hello:{stranger_port}/")).await?;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TlsCertificateError"), "{body}");
    probe.shutdown(Duration::from_secs(1)).await;

    // Without extra roots only the web roots are trusted: the cluster CA's certificate fails too.
    let (_rt, plain) = start_probe(dir.path(), None).await?;
    let (status, body) = fetch(&plain, &format!("https://hello:{cluster_port}/")).await?;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("TlsCertificateError"), "{body}");
    plain.shutdown(Duration::from_secs(1)).await;
    stranger_server.abort();
    cluster_server.abort();
    Ok(())
}
