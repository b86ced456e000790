//! TLS of the ingress: certificates from `kubernetes.io/tls` Secrets named in the served
//! Ingresses' `spec.tls`, chosen per connection by SNI (exact host, then a `*.wildcard` entry
//! covering one label), and a self-signed default certificate (made with rcgen at start) for
//! every other name — including hosts whose Secret is missing or invalid, so a broken Secret
//! degrades one host instead of failing the listener.
//!
//! What it owns: parsing a Secret into a rustls [`CertifiedKey`] (chain, key, and a check that
//! they belong together), the SNI map, and the [`SniResolver`] whose map is swapped in place
//! when Ingresses or Secrets change (no listener restart). What it does not: decide which
//! Ingresses count ([`super::class`]) or report bad Secrets ([`super::snapshot`] does).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::routes::normalize_host;

/// Why a TLS Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSecretError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("secret {secret} has no {key}")]
    MissingKey { secret: String, key: &'static str },
    #[error("secret {secret}: {key} is not valid PEM: {message}")]
    Pem { secret: String, key: &'static str, message: String },
    #[error("secret {secret}: the certificate and key do not belong together or the key is unsupported: {message}")]
    Key { secret: String, message: String },
}

/// The certificate of a `kubernetes.io/tls` Secret (`tls.crt` chain, `tls.key`).
pub fn certified_key(secret: &Secret, provider: &CryptoProvider) -> Result<CertifiedKey, TlsSecretError> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let data = secret.data.as_ref();
    let field = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| TlsSecretError::MissingKey { secret: name.clone(), key })
    };
    let pem_err = |key: &'static str, message: String| TlsSecretError::Pem { secret: name.clone(), key, message };
    let chain = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("tls.crt", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_err("tls.crt", "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(field("tls.key")?).map_err(|e| pem_err("tls.key", e.to_string()))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| TlsSecretError::Key { secret: name, message: e.to_string() })
}

/// A self-signed certificate for names no Secret covers.
pub fn default_certificate(provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["skiff-ingress.invalid".to_string()]).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    CertifiedKey::from_der(vec![generated.cert.der().clone()], key, provider).map_err(|e| e.to_string())
}

/// Certificates by server name.
#[derive(Debug, Default)]
pub struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertMap {
    /// Adds `host` (as written in `spec.tls[].hosts`); the first certificate for a name stays.
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) {
        let host = normalize_host(host);
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.entry(suffix.to_string()).or_insert(key),
            None => self.exact.entry(host).or_insert(key),
        };
    }

    /// The certificate for a client's SNI name.
    pub fn get(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = normalize_host(server_name);
        self.exact.get(&name).or_else(|| {
            let (label, suffix) = name.split_once('.')?;
            if label.is_empty() { None } else { self.wildcard.get(suffix) }
        })
    }

    /// How many names have a certificate.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Picks the certificate by SNI from the current map, else the default one.
#[derive(Debug)]
pub struct SniResolver {
    current: RwLock<Arc<CertMap>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(default: CertifiedKey) -> SniResolver {
        SniResolver { current: RwLock::default(), default: Arc::new(default) }
    }

    /// Swaps in a new map; connections already set up keep theirs.
    pub fn replace(&self, map: Arc<CertMap>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = map;
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let map = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        Some(hello.server_name().and_then(|name| map.get(name)).cloned().unwrap_or_else(|| self.default.clone()))
    }
}

/// The rustls server configuration of the HTTPS listener: SNI resolution, ALPN h2 then http/1.1.
pub fn server_config(
    resolver: Arc<SniResolver>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn secret(crt: &[u8], key: &[u8]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("tls".into());
        s.metadata.namespace = Some("ns".into());
        s.type_ = Some("kubernetes.io/tls".into());
        s.data = Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(crt.to_vec())),
            ("tls.key".to_string(), ByteString(key.to_vec())),
        ]));
        s
    }

    #[test]
    fn parses_a_tls_secret_and_refuses_broken_ones() {
        let made = rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).expect("cert");
        let (crt, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        assert!(certified_key(&secret(crt.as_bytes(), key.as_bytes()), &provider()).is_ok());
        let other = rcgen::generate_simple_self_signed(vec!["b".to_string()]).expect("cert");
        let mismatched =
            certified_key(&secret(crt.as_bytes(), other.signing_key.serialize_pem().as_bytes()), &provider());
        assert!(matches!(mismatched, Err(TlsSecretError::Key { .. })), "{mismatched:?}");
        let garbage = certified_key(&secret(b"not pem", key.as_bytes()), &provider());
        assert!(matches!(garbage, Err(TlsSecretError::Pem { .. })), "{garbage:?}");
        let empty = certified_key(&Secret::default(), &provider());
        assert!(matches!(empty, Err(TlsSecretError::MissingKey { key: "tls.crt", .. })), "{empty:?}");
    }

    #[test]
    fn sni_exact_then_one_label_wildcard() {
        let default = default_certificate(&provider()).expect("default cert");
        let key = Arc::new(default);
        let mut map = CertMap::default();
        map.insert("a.example.com", key.clone());
        map.insert("*.wild.example.com", key.clone());
        assert!(map.get("A.example.com").is_some());
        assert!(map.get("x.wild.example.com").is_some());
        assert!(map.get("y.x.wild.example.com").is_none());
        assert!(map.get("wild.example.com").is_none());
        assert_eq!(map.len(), 2);
    }
}
