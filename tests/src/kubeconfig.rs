//! Reading what the harness needs from the kubeconfig `skiff up` writes.
//!
//! Only the current context's server URL, CA certificate and bearer token are used: enough to
//! build raw HTTP clients that trust the cluster CA. kubectl and kube-rs read the file
//! themselves; this module does not interpret anything else in it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use serde_json::Value;

/// The connection facts of one kubeconfig context.
#[derive(Debug, Clone)]
pub struct KubeconfigInfo {
    /// Path of the file they were read from.
    pub path: PathBuf,
    /// `https://HOST:PORT` of the API server.
    pub server: String,
    /// PEM of the cluster CA.
    pub ca_pem: Vec<u8>,
    /// Bearer token of the admin user, if the user authenticates with one.
    pub token: Option<String>,
}

impl KubeconfigInfo {
    /// Reads and parses the kubeconfig at `path`.
    pub fn read(path: &Path) -> Result<KubeconfigInfo> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses kubeconfig YAML; `path` only resolves a relative `certificate-authority` file.
    pub fn parse(path: &Path, text: &str) -> Result<KubeconfigInfo> {
        let doc: Value = serde_yaml::from_str(text).context("kubeconfig is not valid YAML")?;
        let context_name = doc.get("current-context").and_then(Value::as_str);
        let context = pick(&doc, "contexts", context_name).and_then(|c| c.get("context"));
        let cluster_name = context.and_then(|c| c.get("cluster")).and_then(Value::as_str);
        let user_name = context.and_then(|c| c.get("user")).and_then(Value::as_str);
        let cluster = pick(&doc, "clusters", cluster_name)
            .and_then(|c| c.get("cluster"))
            .ok_or_else(|| anyhow!("kubeconfig has no cluster"))?;
        let server = cluster
            .get("server")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("kubeconfig cluster has no server"))?
            .trim_end_matches('/')
            .to_string();
        let ca_pem = if let Some(data) = cluster.get("certificate-authority-data").and_then(Value::as_str) {
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .context("certificate-authority-data is not base64")?
        } else if let Some(file) = cluster.get("certificate-authority").and_then(Value::as_str) {
            let file = path.parent().unwrap_or(Path::new(".")).join(file);
            std::fs::read(&file).with_context(|| format!("reading CA {}", file.display()))?
        } else {
            return Err(anyhow!("kubeconfig cluster has no CA"));
        };
        let token = pick(&doc, "users", user_name)
            .and_then(|u| u.get("user"))
            .and_then(|u| u.get("token"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(KubeconfigInfo { path: path.to_path_buf(), server, ca_pem, token })
    }

    /// An HTTP client trusting only the cluster CA, sending the admin token on every request.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        self.client_builder(true)?.build().context("building HTTP client")
    }

    /// An HTTP client trusting only the cluster CA and sending no credentials.
    pub fn anonymous_http_client(&self) -> Result<reqwest::Client> {
        self.client_builder(false)?.build().context("building HTTP client")
    }

    /// A client builder with the CA (and, if `with_token`, the bearer token) configured, for
    /// callers that tune more (the bench sets pool sizes).
    pub fn client_builder(&self, with_token: bool) -> Result<reqwest::ClientBuilder> {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).context("parsing cluster CA")?;
        let mut headers = reqwest::header::HeaderMap::new();
        if with_token {
            let token = self.token.as_deref().ok_or_else(|| anyhow!("kubeconfig user has no token"))?;
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .default_headers(headers)
            .timeout(Duration::from_secs(30)))
    }
}

/// The entry of the named list `list` whose `name` is `name`, else the first entry.
fn pick<'a>(doc: &'a Value, list: &str, name: Option<&str>) -> Option<&'a Value> {
    let items = doc.get(list)?.as_array()?;
    name.and_then(|n| items.iter().find(|item| item.get("name").and_then(Value::as_str) == Some(n)))
        .or_else(|| items.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: Config
current-context: skiff
clusters:
- name: other
  cluster: {server: "https://10.0.0.1:1", certificate-authority-data: "eA=="}
- name: skiff
  cluster:
    server: https://127.0.0.1:6443/
    certificate-authority-data: LS0tLS1CRUdJTg==
contexts:
- name: skiff
  context: {cluster: skiff, user: admin}
users:
- name: admin
  user: {token: s3cret}
"#;

    #[test]
    fn parses_current_context() {
        let info = KubeconfigInfo::parse(Path::new("/x/kubeconfig"), SAMPLE).expect("parses");
        assert_eq!(info.server, "https://127.0.0.1:6443");
        assert_eq!(info.ca_pem, b"-----BEGIN");
        assert_eq!(info.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn missing_cluster_is_an_error() {
        let err = KubeconfigInfo::parse(Path::new("k"), "apiVersion: v1\nkind: Config\n").expect_err("no cluster");
        assert!(err.to_string().contains("no cluster"), "{err}");
    }
}
