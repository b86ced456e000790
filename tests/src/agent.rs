//! Extra node agents for multi-node tests: `skiff agent` processes joining a running
//! [`Skiff`] (`skiff up` or `skiff server`) through its kubeconfig and cluster PKI, each with
//! its own data dir, log, pod CIDR (`127.244.<n>.0/24`, loopback pod network) and a node API
//! on a free port. Killed (SIGKILL) on drop.
//!
//! What it does not: decide anything about the cluster; tests assert through kubectl.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::net::{log_tail, wait_until};
use crate::skiff::Skiff;

/// Pod CIDRs handed out so far in this test process (`skiff up`'s own node uses 0).
static NEXT_CIDR: AtomicU8 = AtomicU8::new(10);

/// How long an agent may take to register its Node and report Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start an agent.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Further `skiff agent` flags (e.g. `--node-lease-duration-seconds 4`).
    pub extra_args: Vec<String>,
}

/// A running `skiff agent` owned by a test.
#[derive(Debug)]
pub struct Agent {
    /// The Node name.
    pub name: String,
    /// The pod CIDR the agent was given.
    pub pod_cidr: String,
    binary: PathBuf,
    kubeconfig: PathBuf,
    pki: PathBuf,
    home: PathBuf,
    extra_args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    work: TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Agent {
    /// Starts an agent named `name` joining `skiff` and waits until its Node is Ready.
    pub async fn start(skiff: &Skiff, name: &str) -> Result<Agent> {
        Agent::start_with(skiff, name, AgentOptions::default()).await
    }

    /// [`Agent::start`] with extra flags.
    pub async fn start_with(skiff: &Skiff, name: &str, options: AgentOptions) -> Result<Agent> {
        let n = NEXT_CIDR.fetch_add(1, Ordering::SeqCst);
        let work = tempfile::Builder::new().prefix(&format!("skiff-agent-{name}-")).tempdir().context("agent dir")?;
        let mut agent = Agent {
            name: name.into(),
            pod_cidr: format!("127.244.{n}.0/24"),
            binary: skiff.binary().to_path_buf(),
            kubeconfig: skiff.kubeconfig.clone(),
            pki: skiff.data_dir().join("pki"),
            home: skiff.home().to_path_buf(),
            extra_args: options.extra_args,
            log: work.path().join("agent.log"),
            child: None,
            work,
        };
        agent.spawn()?;
        agent.wait_ready(skiff).await?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).context("opening agent log")?;
        let log_err = log.try_clone().context("cloning log handle")?;
        let child = Command::new(&self.binary)
            .arg("agent")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", &self.name, "--pod-network", "loopback", "--pod-cidr", &self.pod_cidr])
            .args(["--node-api-port", "0"])
            // Host network: the ingress ports stay free unless the test names them.
            .args(if self.extra_args.iter().any(|a| a.starts_with("--ingress-")) {
                &[][..]
            } else {
                &["--ingress-http-port", "0", "--ingress-https-port", "0"][..]
            })
            .arg("--data-dir")
            .arg(self.work.path().join("data"))
            .arg("--cluster-pki")
            .arg(&self.pki)
            .args(&self.extra_args)
            .env("HOME", &self.home)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {} agent", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the Node reports Ready=True (and the process is still alive).
    pub async fn wait_ready(&mut self, skiff: &Skiff) -> Result<()> {
        let name = self.name.clone();
        let waited = wait_until(&format!("node {name} Ready"), READY_TIMEOUT, Duration::from_millis(250), || {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            let name = name.clone();
            async move {
                if let Some(status) = exited {
                    return Err(crate::Fatal(format!("agent exited with {status}")).into());
                }
                let node = skiff.kubectl(&["get", "node", &name, "-o", "json"]).await?.json()?;
                let ready = node["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                Ok(ready.then_some(()))
            }
        })
        .await;
        waited.with_context(|| format!("--- agent {} log tail ---\n{}", self.name, self.log_tail(40)))
    }

    /// Kills the agent at once (SIGKILL: no goodbye, like a crashed or cut-off node).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops with SIGTERM (bounded; SIGKILL after 20 s) and returns the exit status.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("agent {} is not running", self.name) };
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().context("running kill -TERM")?;
        let waited =
            wait_until("agent to exit after SIGTERM", Duration::from_secs(20), Duration::from_millis(50), || {
                let status = child.try_wait();
                async move { status.context("polling agent") }
            })
            .await;
        match waited {
            Ok(status) => Ok(status),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Starts the agent again (same name, data dir and pod CIDR) after [`Agent::kill`] or
    /// [`Agent::stop`], and waits until its Node is Ready again.
    pub async fn restart(&mut self, skiff: &Skiff) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready(skiff).await
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `lines` lines of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}
