//! Writing an admin kubeconfig so `kubectl` (and kube-rs) can talk to the API server with the
//! cluster CA and the admin bearer token. Only writing: reading kubeconfigs is the clients' job.

use std::path::Path;

use base64::Engine;
use serde_json::json;

use super::PkiError;
use super::files::{SECRET_MODE, write_atomic};

/// Writes a kubeconfig with cluster `skiff`, user `admin` (bearer `token`) and context `skiff`
/// as the current context. The file holds a credential, so it is mode 0600 and written
/// atomically (temporary file + rename).
pub fn write_kubeconfig(path: &Path, server_url: &str, ca_pem: &str, token: &str) -> Result<(), PkiError> {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "skiff",
            "cluster": {
                "server": server_url,
                "certificate-authority-data": ca_data,
            },
        }],
        "users": [{
            "name": "admin",
            "user": { "token": token },
        }],
        "contexts": [{
            "name": "skiff",
            "context": { "cluster": "skiff", "user": "admin" },
        }],
        "current-context": "skiff",
        "preferences": {},
    });
    let yaml = serde_yaml::to_string(&config).map_err(PkiError::Kubeconfig)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| PkiError::Io { path: parent.to_path_buf(), source })?;
    }
    write_atomic(path, yaml.as_bytes(), SECRET_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kubeconfig_has_expected_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("kubeconfig");
        let ca = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        write_kubeconfig(&path, "https://127.0.0.1:6443", ca, "tok123").expect("write");

        let text = std::fs::read_to_string(&path).expect("read");
        let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
        assert_eq!(v["current-context"], "skiff");
        assert_eq!(v["clusters"][0]["name"], "skiff");
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
        let data = v["clusters"][0]["cluster"]["certificate-authority-data"].as_str().expect("ca data");
        let decoded = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
        assert_eq!(decoded, ca.as_bytes());
        assert_eq!(v["users"][0]["name"], "admin");
        assert_eq!(v["users"][0]["user"]["token"], "tok123");
        assert_eq!(v["contexts"][0]["context"]["cluster"], "skiff");
        assert_eq!(v["contexts"][0]["context"]["user"], "admin");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
