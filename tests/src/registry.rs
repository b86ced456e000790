//! A throw-away OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! reference implementation, apt package `docker-registry`) on a free loopback port over plain
//! HTTP, with a temporary storage dir, killed on drop.
//!
//! Tests push to it with `skiff push --registry HOST:PORT --insecure` or the image code, and
//! may reach into [`DockerRegistry::storage_dir`] to corrupt a blob on purpose.
//! [`DockerRegistry::start_with_htpasswd`] requires HTTP Basic credentials from an htpasswd
//! file the test writes (bcrypt entries only, as distribution demands; distribution does not
//! insist on TLS for Basic auth, so loopback plain HTTP is enough).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::net::{Fatal, free_port, log_tail, wait_until};

/// Environment variable overriding the registry binary.
pub const DOCKER_REGISTRY_BIN_ENV: &str = "DOCKER_REGISTRY_BIN";

/// How long the registry may take to answer `/v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry` owned by a test.
#[derive(Debug)]
pub struct DockerRegistry {
    /// `127.0.0.1:PORT`, the registry part of image references.
    pub host_port: String,
    child: Child,
    log: PathBuf,
    storage: PathBuf,
    // Held for its Drop: removes storage after the process is gone.
    _dir: TempDir,
}

impl DockerRegistry {
    /// Starts the registry and waits until `GET /v2/` answers 200.
    pub async fn start() -> Result<DockerRegistry> {
        DockerRegistry::start_inner(None).await
    }

    /// Starts the registry with `auth: htpasswd` over `htpasswd` (lines `user:$2y$...`), and
    /// waits until `GET /v2/` answers (401 without credentials).
    pub async fn start_with_htpasswd(htpasswd: &str) -> Result<DockerRegistry> {
        DockerRegistry::start_inner(Some(htpasswd)).await
    }

    async fn start_inner(htpasswd: Option<&str>) -> Result<DockerRegistry> {
        let bin = std::env::var_os(DOCKER_REGISTRY_BIN_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
        let dir = tempfile::Builder::new().prefix("skiff-registry-").tempdir().context("creating registry temp dir")?;
        let storage = dir.path().join("storage");
        let host_port = format!("127.0.0.1:{}", free_port()?);
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host_port}\n",
            storage.display()
        );
        if let Some(htpasswd) = htpasswd {
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, htpasswd).context("writing htpasswd")?;
            yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n", path.display()));
        }
        std::fs::write(&config, yaml).context("writing registry config")?;
        let log = dir.path().join("registry.log");
        let log_file = std::fs::File::create(&log).context("creating registry log")?;
        let log_err = log_file.try_clone().context("cloning registry log handle")?;
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {} (apt-get install docker-registry)", bin.display()))?;
        let mut registry = DockerRegistry { host_port, child, log, storage, _dir: dir };
        if let Err(error) = registry.wait_ready(htpasswd.is_some()).await {
            bail!(
                "docker-registry did not become ready: {error:#}\n--- registry log tail ---\n{}",
                log_tail(&registry.log, 40)
            );
        }
        Ok(registry)
    }

    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The file holding blob `sha256:<hex>` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage.join("docker/registry/v2/blobs/sha256").join(&hex[..2.min(hex.len())]).join(hex).join("data")
    }

    /// The tail of the registry's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    async fn wait_ready(&mut self, auth: bool) -> Result<()> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(2)).build().context("building HTTP client")?;
        let url = format!("http://{}/v2/", self.host_port);
        let child = &mut self.child;
        wait_until("docker-registry GET /v2/", READY_TIMEOUT, Duration::from_millis(100), || {
            let exited = child.try_wait();
            let request = http.get(&url).send();
            async move {
                if let Some(status) = exited.context("polling docker-registry")? {
                    return Err(Fatal(format!("docker-registry exited early with {status}")).into());
                }
                let status = request.await?.status();
                Ok((status.is_success() || (auth && status == reqwest::StatusCode::UNAUTHORIZED)).then_some(()))
            }
        })
        .await
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        // The process may already be gone; Drop cannot report errors.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
