//! Cluster PKI: the cluster certificate authority, the API server's serving certificate, the
//! admin bearer token, client certificates for nodes and users, and the admin kubeconfig.
//!
//! Everything lives in one directory (`ca.crt`, `ca.key`, `server.crt`, `server.key`,
//! `admin.token`). Restarts reuse what is there — above all the CA, which every kubeconfig
//! and node trusts — and only the serving certificate is re-issued, when a requested name is
//! missing from it or it is about to expire. This module does not authenticate requests; it
//! only produces the material (and [`cert_identity`]) that authentication builds on.

mod files;
mod identity;
mod issue;
mod kubeconfig;
mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;

pub use identity::{CertIdentity, cert_identity};
pub use kubeconfig::write_kubeconfig;

use files::{PUBLIC_MODE, SECRET_MODE, read_optional, write_atomic};
use issue::PemPair;

/// Errors from creating, loading or using the cluster PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A filesystem operation failed.
    #[error("PKI file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not generate a key or certificate.
    #[error("generating {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// Stored key or certificate material could not be parsed.
    #[error("parsing {what}: {source}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file did not contain the expected item.
    #[error("reading PEM {what}: {reason}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Exactly one of `ca.crt` / `ca.key` exists; regenerating would silently replace the CA
    /// every client trusts, so we refuse.
    #[error("incomplete CA in {dir}: ca.crt and ca.key must both exist or both be absent")]
    IncompleteCa {
        /// The PKI directory.
        dir: PathBuf,
    },
    /// A requested host is neither an IP address nor a valid DNS name.
    #[error("invalid host name {host:?} for the server certificate: {source}")]
    InvalidHost {
        /// The rejected host.
        host: String,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
    /// A requested host is not a name TLS clients can verify.
    #[error("invalid host name {0:?} for the server certificate")]
    UnverifiableHost(String),
    /// rcgen can encode at most two organizations (groups) in a client certificate.
    #[error("at most 2 organizations are supported in a client certificate, got {0}")]
    TooManyOrganizations(usize),
    /// The stored admin token is empty.
    #[error("admin token file {0} is empty")]
    EmptyToken(PathBuf),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The kubeconfig could not be serialized.
    #[error("serializing kubeconfig: {0}")]
    Kubeconfig(#[source] serde_yaml::Error),
}

/// Names every serving certificate carries besides the machine's own: loopback, and the
/// in-cluster names of the `kubernetes` Service (10.96.0.1 is its ClusterIP).
const BUILTIN_HOSTS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "10.96.0.1",
];

/// The cluster's CA, serving certificate and admin token, loaded from or created in a directory.
#[derive(Clone)]
pub struct ClusterPki {
    dir: PathBuf,
    ca: PemPair,
    server: PemPair,
    admin_token: String,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and the token are secrets: show only where they live.
        f.debug_struct("ClusterPki").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Loads the PKI from `dir`, creating whatever is missing. `hosts` are extra names (IPs or
    /// DNS names) the API server is reached by; the serving certificate is re-issued when one
    /// of them (or a built-in name) is missing or it expires within 30 days.
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<ClusterPki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
        let ca = load_or_create_ca(dir)?;
        let admin_token = load_or_create_token(dir)?;
        let sans = server_sans(hosts)?;

        let cert_path = dir.join("server.crt");
        let key_path = dir.join("server.key");
        let existing = match (read_optional(&cert_path)?, read_optional(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) => Some(PemPair { cert_pem, key_pem }),
            _ => None,
        };
        let server = match existing {
            Some(pair) if tls::server_cert_is_current(&ca.cert_pem, &pair, &sans)? => pair,
            _ => {
                tracing::info!(dir = %dir.display(), sans = ?sans, "issuing API server certificate");
                let pair = issue::server_cert(&ca, &sans)?;
                // Key first: a crash in between leaves a cert whose key is wrong, which the
                // next start detects (rustls rejects it) rather than a silently stale pair.
                write_atomic(&key_path, pair.key_pem.as_bytes(), SECRET_MODE)?;
                write_atomic(&cert_path, pair.cert_pem.as_bytes(), PUBLIC_MODE)?;
                pair
            }
        };
        Ok(ClusterPki { dir: dir.to_path_buf(), ca, server, admin_token })
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The API server's serving certificate (PEM).
    pub fn server_cert_pem(&self) -> &str {
        &self.server.cert_pem
    }

    /// The admin bearer token (64 hex characters).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// rustls configuration for the API server: ALPN `h2` and `http/1.1`; client certificates
    /// optional, but when presented they must chain to the cluster CA.
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        tls::server_config(&self.ca.cert_pem, &self.server)
    }

    /// A root store holding only the cluster CA, for clients (tests, nodes) of the API server.
    pub fn ca_root_store(&self) -> Result<Arc<rustls::RootCertStore>, PkiError> {
        tls::ca_roots(&self.ca.cert_pem)
    }

    /// Issues a client certificate signed by the cluster CA: `common_name` is the user,
    /// `organizations` (at most two) the groups. Returns `(cert_pem, key_pem)`; nothing is
    /// written to disk.
    pub fn issue_client_cert(&self, common_name: &str, organizations: &[String]) -> Result<(String, String), PkiError> {
        let pair = issue::client_cert(&self.ca, common_name, organizations)?;
        Ok((pair.cert_pem, pair.key_pem))
    }
}

/// The user name of the API server's client certificate for node APIs.
pub const KUBELET_CLIENT_USER: &str = "skiff-apiserver-kubelet-client";
/// Its group: node APIs allow log reads by this group only.
pub const KUBELET_CLIENT_GROUP: &str = "system:masters";

impl ClusterPki {
    /// Loads an existing PKI from `dir` without creating or re-issuing anything (for
    /// processes besides the API server that share its data dir, such as tests).
    pub fn load_existing(dir: &Path) -> Result<ClusterPki, PkiError> {
        let read = |name: &str, what: &'static str| -> Result<String, PkiError> {
            read_optional(&dir.join(name))?
                .ok_or_else(|| PkiError::Pem { what, reason: format!("{} is missing", dir.join(name).display()) })
        };
        let ca = PemPair { cert_pem: read("ca.crt", "CA certificate")?, key_pem: read("ca.key", "CA key")? };
        let server =
            PemPair { cert_pem: read("server.crt", "server certificate")?, key_pem: read("server.key", "server key")? };
        let admin_token = read("admin.token", "admin token")?.trim().to_string();
        Ok(ClusterPki { dir: dir.to_path_buf(), ca, server, admin_token })
    }

    /// Issues a serving certificate signed by the cluster CA for `hosts` (IPs or DNS names),
    /// e.g. a node API's. Returns `(cert_pem, key_pem)`; nothing is written to disk.
    pub fn issue_server_cert(&self, common_name: &str, hosts: &[String]) -> Result<(String, String), PkiError> {
        for host in hosts {
            issue::san(host)?;
            if rustls::pki_types::ServerName::try_from(host.as_str()).is_err() {
                return Err(PkiError::UnverifiableHost(host.clone()));
            }
        }
        let pair = issue::named_server_cert(&self.ca, common_name, hosts)?;
        Ok((pair.cert_pem, pair.key_pem))
    }

    /// A rustls client configuration for calling node APIs: trusts only the cluster CA and
    /// presents a fresh client certificate for [`KUBELET_CLIENT_USER`] in
    /// [`KUBELET_CLIENT_GROUP`]. ALPN is HTTP/1.1 (log streams are one request each).
    pub fn kubelet_client_config(&self) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let pair = issue::client_cert(&self.ca, KUBELET_CLIENT_USER, &[KUBELET_CLIENT_GROUP.to_string()])?;
        tls::client_config(&self.ca.cert_pem, &pair)
    }
}

fn load_or_create_ca(dir: &Path) -> Result<PemPair, PkiError> {
    let cert_path = dir.join("ca.crt");
    let key_path = dir.join("ca.key");
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert_pem), Some(key_pem)) => Ok(PemPair { cert_pem, key_pem }),
        (None, None) => {
            tracing::info!(dir = %dir.display(), "creating cluster CA");
            let pair = issue::ca()?;
            write_atomic(&key_path, pair.key_pem.as_bytes(), SECRET_MODE)?;
            write_atomic(&cert_path, pair.cert_pem.as_bytes(), PUBLIC_MODE)?;
            Ok(pair)
        }
        _ => Err(PkiError::IncompleteCa { dir: dir.to_path_buf() }),
    }
}

fn load_or_create_token(dir: &Path) -> Result<String, PkiError> {
    let path = dir.join("admin.token");
    if let Some(token) = read_optional(&path)? {
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(PkiError::EmptyToken(path));
        }
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    write_atomic(&path, format!("{token}\n").as_bytes(), SECRET_MODE)?;
    Ok(token)
}

/// The machine's host name, if it is usable as a certificate name.
fn machine_hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = raw.trim().to_string();
    let usable =
        !name.is_empty() && rustls::pki_types::ServerName::try_from(name.as_str()).is_ok() && issue::san(&name).is_ok();
    if !usable {
        tracing::warn!(hostname = %name, "host name is not a valid certificate name; skipping it");
    }
    usable.then_some(name)
}

/// All SANs of the serving certificate, deduplicated, built-ins first.
fn server_sans(hosts: &[String]) -> Result<Vec<String>, PkiError> {
    let mut sans: Vec<String> = BUILTIN_HOSTS.iter().map(|h| h.to_string()).collect();
    sans.extend(machine_hostname());
    for host in hosts {
        let host = host.trim();
        issue::san(host)?;
        if rustls::pki_types::ServerName::try_from(host).is_err() {
            return Err(PkiError::UnverifiableHost(host.to_string()));
        }
        sans.push(host.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.to_ascii_lowercase()));
    Ok(sans)
}

#[cfg(test)]
mod tests;
