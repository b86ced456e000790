//! A throwaway single-node etcd for tests and benchmarks: started on free loopback ports in a
//! fresh temporary directory, killed and cleaned up on drop.
//!
//! Not test-only code: the end-to-end tests and the store benchmark of other crates use it
//! too. The binary is `$SKIFF_ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on the `PATH`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd gets to elect itself and answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts: a free port can be taken by someone else before etcd binds it.
const ATTEMPTS: usize = 3;

/// A running etcd, killed when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    child: Child,
    dir: PathBuf,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers requests.
    pub async fn start() -> Result<EtcdServer, String> {
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            match Self::start_once().await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    async fn start_once() -> Result<EtcdServer, String> {
        let dir = std::env::temp_dir().join(format!("skiff-etcd-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let (client_port, peer_port) = free_ports()?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.join("etcd.log");
        let log = File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("duplicating log handle: {e}"))?;
        let child = Command::new(binary())
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            // A lone member need not wait a full second to elect itself.
            .arg("--heartbeat-interval=20")
            .arg("--election-timeout=200")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary().display()))?;
        // From here on, dropping `server` kills etcd and removes the directory.
        let mut server = EtcdServer { endpoint, child, dir };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}: {}", self.log_tail()));
            }
            if self.answers().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("etcd did not answer within {START_TIMEOUT:?}: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether a linearizable read succeeds (so a leader exists).
    async fn answers(&self) -> bool {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1));
        match etcd_client::Client::connect([self.endpoint.as_str()], Some(options)).await {
            Ok(mut client) => client.get("skiff-probe", None).await.is_ok(),
            Err(_) => false,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// The temporary directory holding etcd's data and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SKIFF_ETCD_BIN") {
        return PathBuf::from(path);
    }
    let default = PathBuf::from("/usr/bin/etcd");
    if default.exists() { default } else { PathBuf::from("etcd") }
}

/// Two distinct free loopback ports (both held while choosing, so they differ).
fn free_ports() -> Result<(u16, u16), String> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"));
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| format!("reading port: {e}"));
    Ok((port(&a)?, port(&b)?))
}
