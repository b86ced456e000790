//! A throw-away single-member etcd for tests and benches.
//!
//! Starts `/usr/bin/etcd` (or `$ETCD_BIN`) on free loopback ports with a temporary data dir,
//! waits until its `/health` endpoint reports healthy, and kills it on drop. This is the
//! harness's own equivalent of the control plane's `EtcdServer`, kept so the tests crate does
//! not depend on control-plane internals.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::net::{Fatal, free_port, log_tail, wait_until};

/// Environment variable overriding the etcd binary.
pub const ETCD_BIN_ENV: &str = "ETCD_BIN";

/// How long etcd may take to report healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running etcd process owned by the test; killed (and its data removed) on drop.
#[derive(Debug)]
pub struct Etcd {
    /// Client URL, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Child,
    log: PathBuf,
    // Held for its Drop: removes the data dir after the process is gone.
    _dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it is healthy.
    pub async fn start() -> Result<Etcd> {
        let bin = std::env::var_os(ETCD_BIN_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        let dir = tempfile::Builder::new().prefix("skiff-etcd-").tempdir().context("creating etcd temp dir")?;
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        while peer_port == client_port {
            peer_port = free_port()?;
        }
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = dir.path().join("etcd.log");
        let log_file = std::fs::File::create(&log).context("creating etcd log file")?;
        let log_err = log_file.try_clone().context("cloning etcd log handle")?;
        let child = Command::new(&bin)
            .arg("--name=skiff-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=skiff-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {} (install etcd-server?)", bin.display()))?;
        let mut etcd = Etcd { endpoint: client_url, child, log, _dir: dir };
        if let Err(error) = etcd.wait_healthy().await {
            bail!("etcd did not become healthy: {error:#}\n--- etcd log tail ---\n{}", log_tail(&etcd.log, 40));
        }
        Ok(etcd)
    }

    /// Process id of etcd, e.g. to read its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(2)).build().context("building HTTP client")?;
        let url = format!("{}/health", self.endpoint);
        let child = &mut self.child;
        wait_until("etcd /health", READY_TIMEOUT, Duration::from_millis(100), || {
            let exited = child.try_wait();
            let request = http.get(&url).send();
            async move {
                if let Some(status) = exited.context("polling etcd")? {
                    return Err(Fatal(format!("etcd exited early with {status}")).into());
                }
                let body = request.await?.text().await?;
                Ok(body.contains("\"true\"").then_some(()))
            }
        })
        .await
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Errors are ignored: the process may already be gone, and Drop cannot report them.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs etcd installed (`scripts/setup.sh` installs it); CI runs it, so it is not ignored.
    #[tokio::test]
    async fn starts_and_answers_health() {
        let etcd = Etcd::start().await.expect("etcd starts");
        let body = reqwest::get(format!("{}/health", etcd.endpoint))
            .await
            .expect("health request")
            .text()
            .await
            .expect("health body");
        assert!(body.contains("true"), "{body}");
        assert!(etcd.pid() > 0);
    }
}
