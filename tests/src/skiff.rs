//! One `skiff up` process under test: start, readiness, clients, restart, stop.
//!
//! A [`Skiff`] owns its process, a temporary work dir (log file, a private `HOME` for kubectl,
//! and by default the data dir) and, for [`StoreKind::Etcd`], its own etcd. Every wait has a
//! timeout, and a failed start reports the tail of skiff's log. The process is killed on drop,
//! so a failing test never leaks a server.
//!
//! With [`StartOptions::netns`], skiff runs inside that network namespace (`ip netns exec`,
//! which execs, so the child's pid is skiff's own). Its API then listens on the namespace's
//! `127.0.0.1`; a [`Forward`] on the same port of the host's `127.0.0.1` makes the URL, the
//! kubeconfig and every client (readiness polling included) work unchanged from the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::binary::skiff_binary;
use crate::etcd::Etcd;
use crate::kubeconfig::KubeconfigInfo;
use crate::net::{Fatal, free_port, log_tail, wait_until};
use crate::netns::Forward;

/// How long `skiff up` may take to answer `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd skiff may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which state store the server under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded single-file store (default).
    Embedded,
    /// A real etcd, started by the harness.
    Etcd,
}

impl StoreKind {
    /// Both stores, for tests and benches that cover each.
    pub const ALL: [StoreKind; 2] = [StoreKind::Embedded, StoreKind::Etcd];

    /// The value of `skiff up --store`.
    pub fn flag(self) -> &'static str {
        match self {
            StoreKind::Embedded => "embedded",
            StoreKind::Etcd => "etcd",
        }
    }
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.flag())
    }
}

/// How to start skiff.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Store backend; etcd is started by the harness.
    pub store: StoreKind,
    /// Data dir to use instead of a fresh temporary one (kept after the test).
    pub data_dir: Option<PathBuf>,
    /// Binary to run instead of [`skiff_binary`]'s choice.
    pub binary: Option<PathBuf>,
    /// `--etcd-prefix` to pass, if any.
    pub etcd_prefix: Option<String>,
    /// Further `skiff up` flags (e.g. `--compaction-interval 1`).
    pub extra_args: Vec<String>,
    /// Run `skiff server` (control plane only, no node) instead of `skiff up`: for tests that
    /// bring their own Nodes and must not have a real one scheduling pods.
    pub control_plane_only: bool,
    /// Run skiff inside this network namespace (see [`crate::NetNs`]); the API is forwarded to
    /// the same port on the host's loopback.
    pub netns: Option<String>,
}

impl StartOptions {
    /// Defaults for `store`: temporary data dir, binary found by [`skiff_binary`].
    pub fn new(store: StoreKind) -> StartOptions {
        StartOptions {
            store,
            data_dir: None,
            binary: None,
            etcd_prefix: None,
            extra_args: Vec::new(),
            control_plane_only: false,
            netns: None,
        }
    }

    /// `skiff server` with `store`: see [`StartOptions::control_plane_only`].
    pub fn control_plane_only(store: StoreKind) -> StartOptions {
        StartOptions { control_plane_only: true, ..StartOptions::new(store) }
    }
}

/// A running `skiff up` owned by a test.
#[derive(Debug)]
pub struct Skiff {
    /// Base URL of the API, `https://127.0.0.1:PORT`.
    pub url: String,
    /// Path of the kubeconfig skiff wrote.
    pub kubeconfig: PathBuf,
    /// Server, CA and token read from the kubeconfig.
    pub info: KubeconfigInfo,
    store: StoreKind,
    binary: PathBuf,
    listen: String,
    data_dir: PathBuf,
    etcd_prefix: Option<String>,
    extra_args: Vec<String>,
    control_plane_only: bool,
    netns: Option<String>,
    /// The API forward of a netns run; `Drop` kills the process before fields are dropped.
    _forward: Option<Forward>,
    log: PathBuf,
    home: PathBuf,
    child: Option<Child>,
    // Dropped after the process (field order): etcd must outlive skiff.
    etcd: Option<Etcd>,
    _work: TempDir,
}

impl Skiff {
    /// Starts skiff with `store` and defaults; see [`Skiff::start_with`].
    pub async fn start(store: StoreKind) -> Result<Skiff> {
        Skiff::start_with(StartOptions::new(store)).await
    }

    /// Starts etcd if needed, then `skiff up` on a free port, and waits until it serves.
    pub async fn start_with(options: StartOptions) -> Result<Skiff> {
        let binary = match options.binary {
            Some(path) => path,
            None => skiff_binary()?,
        };
        let work = tempfile::Builder::new().prefix("skiff-e2e-").tempdir().context("creating work dir")?;
        let data_dir = options.data_dir.unwrap_or_else(|| work.path().join("data"));
        let home = work.path().join("home");
        std::fs::create_dir_all(&home).context("creating kubectl HOME")?;
        let etcd = match options.store {
            StoreKind::Etcd => Some(Etcd::start().await?),
            StoreKind::Embedded => None,
        };
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        // In a fresh namespace the port is surely free; here it was free a moment ago.
        let forward = match &options.netns {
            Some(netns) => Some(Forward::start(netns, port).await?),
            None => None,
        };
        let url = format!("https://{listen}");
        let mut skiff = Skiff {
            url,
            kubeconfig: data_dir.join("kubeconfig"),
            info: KubeconfigInfo { path: PathBuf::new(), server: String::new(), ca_pem: Vec::new(), token: None },
            store: options.store,
            binary,
            listen,
            data_dir,
            etcd_prefix: options.etcd_prefix,
            extra_args: options.extra_args,
            control_plane_only: options.control_plane_only,
            netns: options.netns,
            _forward: forward,
            log: work.path().join("skiff.log"),
            home,
            child: None,
            etcd,
            _work: work,
        };
        skiff.spawn_and_wait().await?;
        Ok(skiff)
    }

    /// The store this server uses.
    pub fn store(&self) -> StoreKind {
        self.store
    }

    /// The etcd started for this server, for [`StoreKind::Etcd`].
    pub fn etcd(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    /// The `skiff` binary this server runs (for `skiff push` and other CLI verbs).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Data dir passed to `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A private `HOME` for kubectl, so `~/.kube` of the user is never read or written.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The network namespace skiff runs in, if any.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The tail of skiff's combined stdout/stderr log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// An HTTP client trusting the cluster CA and sending the admin token.
    pub fn http(&self) -> Result<reqwest::Client> {
        self.info.http_client()
    }

    /// An HTTP client trusting the cluster CA, without credentials.
    pub fn http_anonymous(&self) -> Result<reqwest::Client> {
        self.info.anonymous_http_client()
    }

    /// A kube-rs client configured from the kubeconfig skiff wrote.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).context("kube-rs reading kubeconfig")?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .context("kube-rs config from kubeconfig")?;
        kube::Client::try_from(config).context("building kube client")
    }

    /// Stops with SIGTERM and starts again on the same data dir, port and store.
    pub async fn restart(&mut self) -> Result<()> {
        let status = self.stop().await?;
        if !status.success() {
            bail!("skiff exited with {status} on SIGTERM\n--- skiff log tail ---\n{}", self.log_tail(40));
        }
        self.spawn_and_wait().await
    }

    /// Sends SIGTERM and waits (bounded) for the exit status. Killed with SIGKILL on timeout.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("skiff is not running");
        };
        // The `kill` command keeps the harness free of libc/unsafe code.
        let sent =
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().context("running kill -TERM")?;
        if !sent.success() {
            bail!("kill -TERM {} failed: {sent}", child.id());
        }
        let waited = wait_until("skiff to exit after SIGTERM", STOP_TIMEOUT, Duration::from_millis(50), || {
            let status = child.try_wait();
            async move { status.context("polling skiff") }
        })
        .await;
        match waited {
            Ok(status) => Ok(status),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error.context(format!("skiff log tail:\n{}", self.log_tail(40))))
            }
        }
    }

    fn command(&self) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg(if self.control_plane_only { "server" } else { "up" })
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.listen)
            .arg("--store")
            .arg(self.store.flag());
        if let Some(etcd) = &self.etcd {
            command.arg("--etcd-endpoints").arg(&etcd.endpoint);
        }
        if let Some(prefix) = &self.etcd_prefix {
            command.arg("--etcd-prefix").arg(prefix);
        }
        // On the host's network a node must not take ports 80/443 (nor fight other tests'
        // nodes for them): the ingress is off unless the test names its ports.
        let names_ingress_ports = self.extra_args.iter().any(|a| a.starts_with("--ingress-"));
        if self.netns.is_none() && !self.control_plane_only && !names_ingress_ports {
            command.args(["--ingress-http-port", "0", "--ingress-https-port", "0"]);
        }
        command.args(&self.extra_args);
        command
    }

    async fn spawn_and_wait(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).context("opening skiff log")?;
        let log_err = log.try_clone().context("cloning log handle")?;
        let child = self
            .command()
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        if let Err(error) = self.wait_ready().await {
            bail!(
                "skiff ({} store) did not become ready on {}: {error:#}\n--- skiff log tail ---\n{}",
                self.store,
                self.url,
                self.log_tail(60)
            );
        }
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        // The CA is not known until skiff wrote the kubeconfig, so readiness is polled without
        // verifying the certificate; every later request verifies it.
        let probe = reqwest::Client::builder()
            .use_rustls_tls()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()
            .context("building readiness client")?;
        let url = format!("{}/readyz", self.url);
        let child = self.child.as_mut().context("skiff not spawned")?;
        wait_until("GET /readyz = 200", READY_TIMEOUT, Duration::from_millis(100), || {
            let exited = child.try_wait();
            let request = probe.get(&url).send();
            async move {
                if let Some(status) = exited.context("polling skiff")? {
                    return Err(Fatal(format!("skiff exited early with {status}")).into());
                }
                let response = request.await?;
                Ok(response.status().is_success().then_some(()))
            }
        })
        .await?;
        let kubeconfig = self.find_kubeconfig();
        self.info = wait_until("a readable kubeconfig", Duration::from_secs(10), Duration::from_millis(100), || {
            let parsed = KubeconfigInfo::read(&kubeconfig);
            async move { parsed.map(Some) }
        })
        .await?;
        self.kubeconfig = kubeconfig;
        Ok(())
    }

    /// `DIR/kubeconfig` per the contract, else the path of the `kubeconfig: <path>` log line.
    fn find_kubeconfig(&self) -> PathBuf {
        let default = self.data_dir.join("kubeconfig");
        if default.is_file() {
            return default;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .find_map(|line| line.split_once("kubeconfig: ").map(|(_, p)| p.trim()))
            .map(PathBuf::from)
            .unwrap_or(default)
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Best effort: the process may have exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
