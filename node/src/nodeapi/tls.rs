//! TLS of the node API: the node's serving certificate (issued by the cluster CA) and mutual
//! TLS — a client must present a certificate that chains to the cluster CA; its
//! organizations (Kubernetes groups) decide what it may do.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::serve::NodeApiError;

/// The group a client certificate needs to read logs (the API server's kubelet-client
/// certificate carries it).
pub const READ_LOGS_GROUP: &str = "system:masters";

/// The node API's certificate, key and the cluster CA, all PEM.
#[derive(Clone)]
pub struct NodeApiTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for NodeApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("NodeApiTls").finish_non_exhaustive()
    }
}

fn tls_err(e: impl std::fmt::Display) -> NodeApiError {
    NodeApiError::Tls(e.to_string())
}

impl NodeApiTls {
    /// The rustls server configuration: client certificates required and verified against the CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, NodeApiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(ca.map_err(tls_err)?).map_err(tls_err)?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(tls_err)?;
        let chain =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(tls_err)?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(tls_err)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// `(common name, organizations)` of a verified client certificate.
pub(crate) fn identity(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or_default().to_string();
    let orgs = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_string).collect();
    Some((cn, orgs))
}
