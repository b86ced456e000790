//! Certificate issuance with rcgen: the self-signed cluster CA, the API server's serving
//! certificate and client certificates. All keys are ECDSA P-256. Nothing here touches disk;
//! persistence and reuse decisions live in [`super::ClusterPki::load_or_create`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

use super::PkiError;

/// CA lifetime: the CA is never rotated automatically, so make it long.
pub(crate) const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Serving and client certificate lifetime.
pub(crate) const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Back-date `notBefore` a little so clients with slightly skewed clocks accept new certs.
const CLOCK_SKEW: Duration = Duration::from_secs(60 * 60);

/// X.520 organizationName, used to encode a second `O` entry (see [`client_cert`]).
const OID_ORGANIZATION_NAME: &[u64] = &[2, 5, 4, 10];

/// A PEM-encoded certificate with its PEM (PKCS#8) private key.
#[derive(Clone)]
pub(crate) struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("PemPair").finish_non_exhaustive()
    }
}

/// rcgen uses `time::OffsetDateTime`; we build it from the Unix epoch so we need no direct
/// dependency on the `time` crate.
fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch.saturating_sub(CLOCK_SKEW);
    params.not_after = epoch + since_epoch + lifetime;
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| PkiError::Generate { what: "key pair", source: e })
}

/// Generates the self-signed cluster CA.
pub(crate) fn ca() -> Result<PemPair, PkiError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "skiff-ca");
    dn.push(DnType::OrganizationName, "skiff");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, CA_VALIDITY);
    let cert = params.self_signed(&key).map_err(|e| PkiError::Generate { what: "CA certificate", source: e })?;
    Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Parses the CA so it can sign.
fn issuer(ca: &PemPair) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| PkiError::Parse { what: "CA key", source: e })?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| PkiError::Parse { what: "CA certificate", source: e })
}

/// Converts a host string to a SAN: IP addresses become IP SANs, anything else a DNS name.
pub(crate) fn san(host: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let name = host.to_string().try_into().map_err(|e| PkiError::InvalidHost { host: host.to_string(), source: e })?;
    Ok(SanType::DnsName(name))
}

/// Issues the API server's serving certificate for `hosts` (already validated SAN strings).
pub(crate) fn server_cert(ca: &PemPair, hosts: &[String]) -> Result<PemPair, PkiError> {
    named_server_cert(ca, "skiff-apiserver", hosts)
}

/// Issues a serving certificate named `common_name` for `hosts` (a node API's, for example).
pub(crate) fn named_server_cert(ca: &PemPair, common_name: &str, hosts: &[String]) -> Result<PemPair, PkiError> {
    let issuer = issuer(ca)?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY);
    let cert =
        params.signed_by(&key, &issuer).map_err(|e| PkiError::Generate { what: "server certificate", source: e })?;
    Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues a client certificate: the Kubernetes convention is user = CN, groups = O entries.
///
/// rcgen keeps one value per attribute type, so a second `O` is written under the same OID
/// through `DnType::CustomDnType`; that caps us at two organizations, enough for node and
/// admin identities (`system:nodes`, `system:masters`).
pub(crate) fn client_cert(ca: &PemPair, common_name: &str, organizations: &[String]) -> Result<PemPair, PkiError> {
    if organizations.len() > 2 {
        return Err(PkiError::TooManyOrganizations(organizations.len()));
    }
    let issuer = issuer(ca)?;
    let key = new_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(first) = organizations.first() {
        dn.push(DnType::OrganizationName, first.as_str());
    }
    if let Some(second) = organizations.get(1) {
        dn.push(DnType::CustomDnType(OID_ORGANIZATION_NAME.to_vec()), second.as_str());
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY);
    let cert =
        params.signed_by(&key, &issuer).map_err(|e| PkiError::Generate { what: "client certificate", source: e })?;
    Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// How long before expiry a serving certificate is re-issued.
pub(crate) const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
