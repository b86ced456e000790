//! Reading the identity out of a verified client certificate: Kubernetes maps the subject's
//! common name to the user name and each organization to a group. Verification itself is done
//! by rustls during the handshake; this only parses.

use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity a client certificate asserts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    /// Subject common name (the user name), if present.
    pub common_name: Option<String>,
    /// Subject organizations (the groups), in certificate order.
    pub organizations: Vec<String>,
}

/// Parses the subject of a DER certificate. Returns `None` if it is not a valid certificate.
pub fn cert_identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let common_name = subject.iter_common_name().find_map(|a| a.as_str().ok().map(str::to_string));
    let organizations = subject.iter_organization().filter_map(|a| a.as_str().ok().map(str::to_string)).collect();
    Some(CertIdentity { common_name, organizations })
}
