//! rustls glue: the API server's `ServerConfig` (ALPN h2 + http/1.1, optional client
//! certificates verified against the cluster CA) and the check that decides whether an
//! existing serving certificate can be reused.
//!
//! The `ring` provider is always passed explicitly: the process may have no default provider
//! installed, or a different one, and the PKI must not depend on that.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::PkiError;
use super::issue::{PemPair, RENEW_BEFORE};

/// The crypto provider used for everything in the PKI.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem { what, reason: e.to_string() })
}

/// A root store holding only the cluster CA.
pub(crate) fn ca_roots(ca_pem: &str) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der(ca_pem, "CA certificate")?).map_err(|e| PkiError::Tls(e.to_string()))?;
    Ok(Arc::new(roots))
}

/// Builds the serving configuration.
pub(crate) fn server_config(ca_pem: &str, server: &PemPair) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = provider();
    let client_verifier = WebPkiClientVerifier::builder_with_provider(ca_roots(ca_pem)?, provider.clone())
        // Bearer-token clients (kubectl with the admin kubeconfig) present no certificate.
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let chain = vec![cert_der(&server.cert_pem, "server certificate")?];
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes())
        .map_err(|e| PkiError::Pem { what: "server key", reason: e.to_string() })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// True when `server` chains to the CA, is valid for every name in `hosts`, and stays valid
/// for at least [`RENEW_BEFORE`]. This is the same verification a client performs, evaluated
/// at "now + 30 days", so a certificate that passes is one clients will keep accepting.
pub(crate) fn server_cert_is_current(ca_pem: &str, server: &PemPair, hosts: &[String]) -> Result<bool, PkiError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(ca_roots(ca_pem)?, provider())
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    let Ok(cert) = cert_der(&server.cert_pem, "server certificate") else {
        return Ok(false);
    };
    // The key must at least parse; a mismatch with the certificate is caught by rustls when
    // the ServerConfig is built.
    if PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).is_err() {
        return Ok(false);
    }
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let at = UnixTime::since_unix_epoch(since_epoch + RENEW_BEFORE);
    for host in hosts {
        let Ok(name) = ServerName::try_from(host.as_str()) else {
            return Ok(false);
        };
        if verifier.verify_server_cert(&cert, &[], &name, &[], at).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A client configuration trusting only the cluster CA and authenticating with `client`.
pub(crate) fn client_config(ca_pem: &str, client: &PemPair) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let chain = vec![cert_der(&client.cert_pem, "client certificate")?];
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes())
        .map_err(|e| PkiError::Pem { what: "client key", reason: e.to_string() })?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(ca_roots(ca_pem)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
