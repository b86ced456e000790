//! Tests for the cluster PKI.

use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::*;

fn now() -> UnixTime {
    UnixTime::since_unix_epoch(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after epoch"))
}

fn verify_server_name(pki: &ClusterPki, name: &str) -> bool {
    let verifier = WebPkiServerVerifier::builder_with_provider(pki.ca_root_store().expect("roots"), tls::provider())
        .build()
        .expect("verifier");
    let cert = CertificateDer::from_pem_slice(pki.server_cert_pem().as_bytes()).expect("cert");
    let name = ServerName::try_from(name.to_string()).expect("name");
    verifier.verify_server_cert(&cert, &[], &name, &[], now()).is_ok()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn load_twice_reuses_ca_token_and_server_cert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ClusterPki::load_or_create(dir.path(), &[]).expect("create");
    let second = ClusterPki::load_or_create(dir.path(), &[]).expect("load");
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(first.admin_token(), second.admin_token());
    assert_eq!(first.server_cert_pem(), second.server_cert_pem());
    assert_eq!(first.admin_token().len(), 64);
    assert!(first.admin_token().chars().all(|c| c.is_ascii_hexdigit()));
    for secret in ["ca.key", "server.key", "admin.token"] {
        assert_eq!(mode(&dir.path().join(secret)), 0o600, "{secret}");
    }
}

#[test]
fn server_cert_has_required_sans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = vec!["10.0.0.7".to_string(), "api.example.test".to_string()];
    let pki = ClusterPki::load_or_create(dir.path(), &hosts).expect("create");
    for name in [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
        "10.0.0.7",
        "api.example.test",
    ] {
        assert!(verify_server_name(&pki, name), "{name} should verify");
    }
    assert!(!verify_server_name(&pki, "other.example.test"));
}

#[test]
fn new_host_reissues_server_cert_with_same_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ClusterPki::load_or_create(dir.path(), &[]).expect("create");
    let hosts = vec!["192.0.2.10".to_string()];
    let second = ClusterPki::load_or_create(dir.path(), &hosts).expect("reload");
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_ne!(first.server_cert_pem(), second.server_cert_pem());
    assert!(verify_server_name(&second, "192.0.2.10"));
    // Asking again for the same host keeps the certificate.
    let third = ClusterPki::load_or_create(dir.path(), &hosts).expect("reload again");
    assert_eq!(second.server_cert_pem(), third.server_cert_pem());
}

#[test]
fn incomplete_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    ClusterPki::load_or_create(dir.path(), &[]).expect("create");
    std::fs::remove_file(dir.path().join("ca.key")).expect("remove");
    let err = ClusterPki::load_or_create(dir.path(), &[]).expect_err("must refuse");
    assert!(matches!(err, PkiError::IncompleteCa { .. }), "{err}");
}

#[test]
fn invalid_host_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ClusterPki::load_or_create(dir.path(), &["bad host!".to_string()]).expect_err("must reject");
    assert!(matches!(err, PkiError::InvalidHost { .. } | PkiError::UnverifiableHost(_)), "{err}");
}

#[test]
fn client_cert_verifies_and_carries_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ClusterPki::load_or_create(dir.path(), &[]).expect("create");
    let groups = vec!["system:nodes".to_string(), "ops".to_string()];
    let (cert_pem, key_pem) = pki.issue_client_cert("system:node:n1", &groups).expect("issue");
    assert!(key_pem.contains("PRIVATE KEY"));
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert");

    let verifier = WebPkiClientVerifier::builder_with_provider(pki.ca_root_store().expect("roots"), tls::provider())
        .build()
        .expect("verifier");
    verifier.verify_client_cert(&der, &[], now()).expect("client cert chains to the CA");

    let id = cert_identity(&der).expect("parse");
    assert_eq!(id.common_name.as_deref(), Some("system:node:n1"));
    assert_eq!(id.organizations, groups);

    let too_many = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    assert!(matches!(pki.issue_client_cert("x", &too_many), Err(PkiError::TooManyOrganizations(3))));
}

#[test]
fn server_tls_config_advertises_alpn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ClusterPki::load_or_create(dir.path(), &[]).expect("create");
    let config = pki.server_tls_config().expect("config");
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[test]
fn node_serving_cert_and_kubelet_client_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = ClusterPki::load_or_create(dir.path(), &[]).expect("create");
    let (cert_pem, key_pem) =
        pki.issue_server_cert("node-a", &["127.244.0.1".to_string(), "node-a".to_string()]).expect("issue");
    assert!(key_pem.contains("PRIVATE KEY"));
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("pem");
    let verifier = WebPkiServerVerifier::builder_with_provider(pki.ca_root_store().expect("roots"), tls::provider())
        .build()
        .expect("verifier");
    for name in ["127.244.0.1", "node-a"] {
        let server_name = ServerName::try_from(name).expect("name");
        verifier.verify_server_cert(&der, &[], &server_name, &[], now()).expect("valid for the node's names");
    }
    assert!(pki.issue_server_cert("bad", &["not a name!".to_string()]).is_err());

    let client = pki.kubelet_client_config().expect("client config");
    assert!(client.client_auth_cert_resolver.has_certs());

    let loaded = ClusterPki::load_existing(dir.path()).expect("load existing");
    assert_eq!(loaded.ca_pem(), pki.ca_pem());
    assert_eq!(loaded.admin_token(), pki.admin_token());
    assert!(ClusterPki::load_existing(&dir.path().join("absent")).is_err());
}
