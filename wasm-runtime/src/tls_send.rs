//! HTTPS to a cluster name's addresses: [`ClusterTls`] and [`send`].
//!
//! wasmtime-wasi-http's `default_send_request` connects to the authority through the host's
//! resolver and verifies the server against the public web roots only, and takes neither
//! addresses nor a rustls configuration. A guest's HTTPS request to a cluster name
//! (`outgoing.rs` decides which) is sent here instead: TCP to the name's addresses in order
//! (the first that accepts), TLS with the name the guest used as the server name, verified
//! against the web roots plus the roots the runtime was configured with (the cluster CA, as a
//! Kubernetes pod trusts `kube-root-ca.crt`), ALPN `h2` then `http/1.1`, and hyper's client
//! connection for whichever the server picked.
//!
//! Timeouts and errors mirror `default_send_request`: the guest's connect timeout bounds the
//! TCP connect plus the TLS handshake, and again hyper's handshake; first-byte and
//! between-bytes timeouts bound the response (600 s each when the guest sets none). A refused
//! connection is `connection-refused`; a certificate that does not verify is
//! `TLS-certificate-error`; an alert from the server `TLS-alert-received`; any other TLS
//! failure `TLS-protocol-error`.
//!
//! What it does not own: which requests come here (`outgoing.rs`), name resolution
//! (`names.rs`), connection reuse (none, as in wasmtime's sender: one connection a request).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::RuntimeError;

/// What `default_send_request` waits when the guest sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The TLS client settings of cluster HTTPS requests, built once per runtime.
#[derive(Clone, Debug)]
pub(crate) struct ClusterTls(Arc<rustls::ClientConfig>);

impl ClusterTls {
    /// The public web roots (as wasmtime's sender trusts) plus every certificate of
    /// `extra_roots_pem`; a PEM without certificates, or with one that is not a usable root,
    /// is refused.
    pub(crate) fn new(extra_roots_pem: Option<&str>) -> Result<Self, RuntimeError> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        if let Some(pem) = extra_roots_pem {
            let mut added = 0usize;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| RuntimeError::TlsRoots(format!("reading the PEM: {e}")))?;
                roots.add(cert).map_err(|e| RuntimeError::TlsRoots(format!("not a usable root certificate: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(RuntimeError::TlsRoots("the PEM holds no CERTIFICATE".to_owned()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RuntimeError::TlsRoots(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }
}

/// A response and the future that drives its connection to the end (as the hooks return).
pub(crate) type Sent = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

/// Sends `request` (an absolute `https` URI) over TLS to the first of `addrs` that accepts,
/// verifying the server as `server_name`.
pub(crate) async fn send(
    tls: &ClusterTls,
    mut request: http::Request<WasiBody>,
    server_name: &str,
    addrs: &[SocketAddr],
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let timeout = |pick: fn(RequestOptions) -> Option<Duration>| options.and_then(pick).unwrap_or(DEFAULT_TIMEOUT);
    let connect_timeout = timeout(|o| o.connect_timeout);
    let first_byte_timeout = timeout(|o| o.first_byte_timeout);
    let between_bytes_timeout = timeout(|o| o.between_bytes_timeout);
    let name = ServerName::try_from(server_name.trim_end_matches('.').to_owned())?;

    let connector = TlsConnector::from(Arc::clone(&tls.0));
    let stream = tokio::time::timeout(connect_timeout, async {
        let tcp = connect(addrs).await?;
        connector.connect(name, tcp).await.map_err(|e| tls_error(server_name, e))
    })
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
    let io = TokioIo::new(stream);
    let (mut sender, conn) = tokio::time::timeout(connect_timeout, async {
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new()).handshake(io).await?;
            Ok::<_, hyper::Error>((Sender::H2(sender), Box::pin(conn) as Conn))
        } else {
            let (sender, conn) = http1::Builder::new().handshake(io).await?;
            Ok((Sender::H1(sender), Box::pin(conn) as Conn))
        }
    })
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    if h2 {
        // HTTP/2 carries the authority in the absolute URI (`:authority`).
        request.headers_mut().remove(http::header::HOST);
    } else {
        // HTTP/1.1 to an origin: the path only (the `Host` header names the server).
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    }

    let send = async move {
        let response = tokio::time::timeout(first_byte_timeout, sender.send(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        // tokio panics on a zero interval; 1 ns is as good as zero.
        let mut timeout = tokio::time::interval(between_bytes_timeout.max(Duration::from_nanos(1)));
        timeout.reset();
        Ok::<_, Error>(response.map(|incoming| TimedBody { incoming, timeout }.boxed_unsync()))
    };
    // Wait for the response while driving the connection, as `default_send_request` does.
    let mut send = pin!(send);
    let mut conn = Some(conn);
    let response = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(fut) = conn.as_mut() else {
                return Poll::Pending;
            };
            let result = ready!(fut.as_mut().poll(cx));
            conn = None;
            match result {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    let io = async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|e| if e.is_timeout() { Error::HttpResponseTimeout } else { Error::from(e) })
    };
    Ok((response, Box::new(io)))
}

type Conn = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// hyper's request half of whichever protocol ALPN chose.
enum Sender {
    H1(http1::SendRequest<WasiBody>),
    H2(http2::SendRequest<WasiBody>),
}

impl Sender {
    async fn send(&mut self, request: http::Request<WasiBody>) -> Result<http::Response<Incoming>, Error> {
        Ok(match self {
            Sender::H1(sender) => sender.send_request(request).await?,
            Sender::H2(sender) => sender.send_request(request).await?,
        })
    }
}

/// TCP to the first of `addrs` that accepts; the last refusal if none does.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cluster HTTPS: connect failed, trying the next address");
                last = Some(e);
            }
        }
    }
    Err(last.map_or(Error::ConnectionRefused, Error::Connect))
}

/// The `wasi:http` error of a failed TLS handshake with `server_name` (module docs).
fn tls_error(server_name: &str, error: std::io::Error) -> Error {
    tracing::debug!(%server_name, %error, "cluster HTTPS: TLS handshake failed");
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => {
            Error::TlsAlertReceived { alert_id: Some(u8::from(*alert)), alert_message: Some(format!("{alert:?}")) }
        }
        _ => Error::Tls(error),
    }
}

/// A response body whose frames must come within the between-bytes timeout (as
/// `default_send_request`'s own wrapper).
struct TimedBody {
    incoming: Incoming,
    timeout: tokio::time::Interval,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(if e.is_timeout() { Error::HttpResponseTimeout } else { Error::from(e) })))
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_roots_must_be_certificates() {
        assert!(ClusterTls::new(None).is_ok());
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).expect("CA").pem();
        let tls = ClusterTls::new(Some(&ca)).expect("a CA is a root");
        assert_eq!(tls.0.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(matches!(ClusterTls::new(Some("not a pem")), Err(RuntimeError::TlsRoots(_))));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(ClusterTls::new(Some(garbage)), Err(RuntimeError::TlsRoots(_))));
    }
}
