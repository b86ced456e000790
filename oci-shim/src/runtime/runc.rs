//! [`Runc`]: the driver the node agent uses to run containers through shims and `runc`.
//!
//! Owns: turning a [`ContainerSpec`] into a bundle and a running shim, and the container
//! operations (state, kill, stop, delete, list, exec) as `runc` invocations plus the shim's
//! `status.json`. Holds no state of its own beyond its configuration: everything lives on disk
//! (bundles, runc's state dir), so a new driver after an agent restart sees every container the
//! old one started ([`Runc::list`]). Does not own: the shim process's work ([`super::shim`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::bundle::{Bundle, BundleError};
use super::console::{self, Console};
use super::shim::{ShimArgs, StdinMode, parse_answer};
use super::spec::{self, ContainerSpec, SpecError};
use super::status::ExitStatus;

/// How long a shim may take to create and start its container.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `status.json` is polled while waiting for an exit.
const POLL: Duration = Duration::from_millis(20);

/// Why a container operation failed. Messages carry runc's own words where it gave some.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The container's runtime spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Its bundle could not be prepared or removed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// No container (and no bundle) with this id.
    #[error("container {0} not found")]
    NotFound(String),
    /// A container with this id exists already (delete it, or adopt it with `state`).
    #[error("container {0} already exists")]
    AlreadyExists(String),
    /// A program (runc or the shim) could not be started at all.
    #[error("cannot run {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// runc (or the shim on its behalf) failed; `message` is its error text.
    #[error("{op} container {id}: {message}")]
    Runc {
        /// The operation (`create`, `kill`, …).
        op: &'static str,
        /// Container id.
        id: String,
        /// What runc said.
        message: String,
    },
    /// A wait ran out of time.
    #[error("container {id}: timed out after {after:?} waiting for {what}")]
    Timeout {
        /// Container id.
        id: String,
        /// What was awaited.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// [`Runc::exec`] was asked for a terminal: that is [`Runc::exec_tty`]'s job (it has a
    /// console to hand back, a piped [`Child`] has not).
    #[error("exec with a TTY in container {0} needs Runc::exec_tty")]
    TtyUnsupported(String),
}

/// How the driver starts a shim: `program args… <shim args>` with `env` added. The `skiff`
/// binary uses itself with `["container-shim"]`.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the shim's own (e.g. a subcommand).
    pub args: Vec<OsString>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
}

/// Where the driver keeps things and which programs it runs.
#[derive(Debug, Clone)]
pub struct RuncConfig {
    /// The runc binary (`runc` on `PATH` by default in callers).
    pub runc: PathBuf,
    /// runc's `--root` state directory (e.g. `/run/skiff/runc`).
    pub runc_root: PathBuf,
    /// Where bundles live (e.g. `/var/lib/skiff/containers`).
    pub bundle_root: PathBuf,
    /// How to start a shim.
    pub shim: ShimCommand,
}

/// runc's own view of a container's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeStatus {
    /// Created, not started.
    Created,
    /// Init is running.
    Running,
    /// Frozen.
    Paused,
    /// Init exited.
    Stopped,
    /// A bundle exists but runc has no container (start failed, or it was deleted).
    #[serde(other)]
    Unknown,
}

/// What a started container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// Container id.
    pub id: String,
    /// Its init process id.
    pub pid: u32,
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// Its log file (CRI log format).
    pub log: PathBuf,
}

/// A container's state: runc's status with the shim's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// runc's status.
    pub status: RuntimeStatus,
    /// Init's pid, while it runs.
    pub pid: Option<u32>,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// How it ended, once it did.
    pub exit: Option<ExitStatus>,
    /// Why it could not start, if it could not.
    pub error: Option<String>,
    /// Its bundle directory.
    pub bundle: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// Options of [`Runc::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Allocate a terminal: [`Runc::exec_tty`] always does, [`Runc::exec`] refuses it
    /// ([`RuncError::TtyUnsupported`]).
    pub tty: bool,
    /// Extra `NAME=value` environment.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: Option<String>,
}

/// A command [`Runc::exec_tty`] started on a terminal.
#[derive(Debug)]
pub struct TtyExec {
    /// The `runc exec` process: its exit status is the command's. runc's own errors (no such
    /// container, no such command) arrive on the terminal, as they would in a shell.
    pub child: Child,
    /// The terminal's master: the command's input, and its stdout and stderr merged.
    pub console: Console,
}

impl TtyExec {
    /// Sets the terminal's window size: on runc's terminal, then `SIGWINCH` tells runc to copy
    /// it to the container's (the process is not in the terminal's session, so the kernel
    /// would not signal it).
    pub fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        self.console.resize(width, height)?;
        let pid = self.child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32));
        match pid {
            Some(pid) => rustix::process::kill_process(pid, rustix::process::Signal::WINCH).map_err(Into::into),
            // runc has exited: nobody left to tell.
            None => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RuncState {
    status: RuntimeStatus,
    pid: i64,
}

/// The container driver.
#[derive(Debug, Clone)]
pub struct Runc {
    config: RuncConfig,
}

impl Runc {
    /// A driver over `config`'s directories (created when missing on first start).
    pub fn new(config: RuncConfig) -> Self {
        Self { config }
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(&self.config.runc);
        cmd.arg("--root").arg(&self.config.runc_root);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs `runc <args>`; a failure becomes [`RuncError::Runc`] with runc's stderr.
    async fn run(&self, op: &'static str, id: &str, args: &[&str]) -> Result<Vec<u8>, RuncError> {
        let out = self
            .runc()
            .args(args)
            .output()
            .await
            .map_err(|source| RuncError::Spawn { program: self.config.runc.clone(), source })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if message.contains("does not exist") || message.contains("not exist") {
            return Err(RuncError::NotFound(id.to_string()));
        }
        Err(RuncError::Runc { op, id: id.to_string(), message })
    }

    /// Creates the bundle of `spec` over the image snapshot dirs `lowerdirs` (base layer
    /// first), starts its shim and returns once the container runs.
    pub async fn start(&self, spec: &ContainerSpec, lowerdirs: &[PathBuf]) -> Result<Handle, RuncError> {
        self.start_with_stdin(spec, lowerdirs, StdinMode::Closed).await
    }

    /// [`Runc::start`] with the container's stdin kept by the shim as `stdin` says
    /// (Kubernetes `stdin`/`stdinOnce`), fed through [`Runc::attach`].
    #[tracing::instrument(skip_all, fields(id = %spec.id))]
    pub async fn start_with_stdin(
        &self,
        spec: &ContainerSpec,
        lowerdirs: &[PathBuf],
        stdin: StdinMode,
    ) -> Result<Handle, RuncError> {
        let config = spec::build(spec, "rootfs")?;
        // runc keeps `<root>/<id>/state.json` per container: a file check instead of a whole
        // `runc state` run keeps the start path short.
        if self.config.runc_root.join(&spec.id).join("state.json").exists() {
            return Err(RuncError::AlreadyExists(spec.id.clone()));
        }
        let (root, id, lowers) = (self.config.bundle_root.clone(), spec.id.clone(), lowerdirs.to_vec());
        let bundle = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&root).map_err(|source| BundleError::Io {
                op: "creating",
                path: root.clone(),
                source,
            })?;
            let bundle = Bundle::create(&root, &id, &lowers, &config)?;
            // A status from an earlier run of the same id must not be mistaken for this one.
            let _ = std::fs::remove_file(bundle.status_path());
            Ok::<_, BundleError>(bundle)
        })
        .await
        .map_err(|e| RuncError::Runc { op: "create", id: spec.id.clone(), message: e.to_string() })??;
        std::fs::create_dir_all(&self.config.runc_root).map_err(|source| BundleError::Io {
            op: "creating",
            path: self.config.runc_root.clone(),
            source,
        })?;
        let pid = self.spawn_shim(&bundle, stdin).await?;
        Ok(Handle { id: spec.id.clone(), pid, bundle: bundle.dir().to_path_buf(), log: bundle.log() })
    }

    /// Starts the shim for `bundle` and reads its one-line answer.
    async fn spawn_shim(&self, bundle: &Bundle, stdin: StdinMode) -> Result<u32, RuncError> {
        let id = bundle.id().to_string();
        let shim_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(bundle.shim_log())
            .map_err(|source| BundleError::Io { op: "opening", path: bundle.shim_log(), source })?;
        let args = ShimArgs {
            id: id.clone(),
            bundle_root: self.config.bundle_root.clone(),
            runc: self.config.runc.clone(),
            runc_root: self.config.runc_root.clone(),
            stdin,
        };
        let shim = &self.config.shim;
        // Not kill_on_drop: the shim must outlive this driver (and the agent). A dropped child is
        // reaped by tokio in the background.
        let mut child = Command::new(&shim.program)
            .args(&shim.args)
            .args(args.to_args())
            .envs(shim.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|source| RuncError::Spawn { program: shim.program.clone(), source })?;
        let stdout = child.stdout.take().ok_or_else(|| RuncError::Runc {
            op: "create",
            id: id.clone(),
            message: "shim has no stdout".into(),
        })?;
        let mut line = String::new();
        let read = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        match read {
            Err(_) => {
                let _ = child.start_kill();
                Err(RuncError::Timeout { id, what: "the shim to start the container", after: START_TIMEOUT })
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                let log = std::fs::read_to_string(bundle.shim_log()).unwrap_or_default();
                let message = log.lines().last().unwrap_or("the shim exited without answering").to_string();
                Err(RuncError::Runc { op: "create", id, message })
            }
            Ok(Ok(_)) => parse_answer(&line).map_err(|message| RuncError::Runc { op: "create", id, message }),
        }
    }

    /// runc's state of `id`, or `None` when runc has no such container.
    async fn runc_state(&self, id: &str) -> Result<Option<RuncState>, RuncError> {
        match self.run("state", id, &["state", id]).await {
            Ok(out) => serde_json::from_slice(&out).map(Some).map_err(|e| RuncError::Runc {
                op: "state",
                id: id.to_string(),
                message: format!("unreadable runc state: {e}"),
            }),
            Err(RuncError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The state of `id`: runc's status with the shim's record of start and exit.
    pub async fn state(&self, id: &str) -> Result<ContainerState, RuncError> {
        let bundle = Bundle::open(&self.config.bundle_root, id);
        let runc = self.runc_state(id).await?;
        let Some(bundle) = bundle else {
            return Err(RuncError::NotFound(id.to_string()));
        };
        let mut record = bundle.status()?.unwrap_or_default();
        let status = runc.as_ref().map_or(RuntimeStatus::Unknown, |s| s.status);
        if status == RuntimeStatus::Stopped && record.exit.is_none() && record.started_at.is_some() {
            // runc saw init die a moment before the shim wrote it down: give the shim a moment.
            for _ in 0..50 {
                tokio::time::sleep(POLL).await;
                record = bundle.status()?.unwrap_or_default();
                if record.exit.is_some() {
                    break;
                }
            }
        }
        let pid = runc
            .as_ref()
            .filter(|s| matches!(s.status, RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Created))
            .and_then(|s| u32::try_from(s.pid).ok());
        Ok(ContainerState {
            id: id.to_string(),
            status,
            pid,
            started_at: record.started_at,
            exit: record.exit,
            error: record.error,
            bundle: bundle.dir().to_path_buf(),
            log: bundle.log(),
        })
    }

    /// Sends `signal` (a number, e.g. 15) to the container's init process.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), RuncError> {
        self.run("kill", id, &["kill", id, &signal.to_string()]).await.map(drop)
    }

    /// Waits up to `timeout` for the container to exit; `None` if it still runs.
    pub async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<Option<ExitStatus>, RuncError> {
        let bundle = Bundle::open(&self.config.bundle_root, id).ok_or_else(|| RuncError::NotFound(id.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(exit) = bundle.status()?.and_then(|s| s.exit) {
                return Ok(Some(exit));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the container: SIGTERM, then SIGKILL when it has not exited after `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerState, RuncError> {
        const SIGTERM: i32 = 15;
        const SIGKILL: i32 = 9;
        let state = self.state(id).await?;
        if !matches!(state.status, RuntimeStatus::Running | RuntimeStatus::Paused | RuntimeStatus::Created) {
            return Ok(state);
        }
        let exited_on_term = match self.kill(id, SIGTERM).await {
            Ok(()) => self.wait_exit(id, grace).await?.is_some(),
            // It exited between `state` and `kill`: nothing to signal.
            Err(RuncError::Runc { .. }) => false,
            Err(e) => return Err(e),
        };
        if !exited_on_term {
            match self.kill(id, SIGKILL).await {
                Ok(()) | Err(RuncError::Runc { .. }) => {}
                Err(e) => return Err(e),
            }
            let after = Duration::from_secs(10);
            if self.wait_exit(id, after).await?.is_none() {
                return Err(RuncError::Timeout { id: id.to_string(), what: "exit after SIGKILL", after });
            }
        }
        self.state(id).await
    }

    /// Deletes the runc container (killing it if it still runs) and its bundle. Idempotent.
    pub async fn delete(&self, id: &str) -> Result<(), RuncError> {
        match self.run("delete", id, &["delete", "--force", id]).await {
            Ok(_) | Err(RuncError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(bundle) = Bundle::open(&self.config.bundle_root, id) {
            tokio::task::spawn_blocking(move || bundle.remove()).await.map_err(|e| RuncError::Runc {
                op: "delete",
                id: id.to_string(),
                message: e.to_string(),
            })??;
        }
        Ok(())
    }

    /// Every container with a bundle, for re-adoption after an agent restart.
    pub async fn list(&self) -> Result<Vec<ContainerState>, RuncError> {
        let root = &self.config.bundle_root;
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(BundleError::Io { op: "listing", path: root.clone(), source }.into()),
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| Bundle::open(root, id).is_some())
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.state(&id).await {
                Ok(state) => out.push(state),
                // Deleted meanwhile.
                Err(RuncError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Runs `argv` in the running container with piped stdin/stdout/stderr. The child's exit
    /// status is the command's (runc exec passes it through).
    pub fn exec(&self, id: &str, argv: &[String], options: &ExecOptions) -> Result<Child, RuncError> {
        if options.tty {
            return Err(RuncError::TtyUnsupported(id.to_string()));
        }
        let mut cmd = self.exec_command(id, argv, options, false);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().map_err(|source| RuncError::Spawn { program: self.config.runc.clone(), source })
    }

    /// Runs `argv` in the running container on a new terminal (`runc exec --tty`).
    ///
    /// runc accepts a console socket only when it detaches, and a detached exec's exit code
    /// would be lost (its process is re-parented away from us). So runc stays attached, and its
    /// own stdio is a pty whose master is returned: runc relays between it and the container's
    /// terminal (in raw mode), and passes the command's exit code through as always.
    pub async fn exec_tty(&self, id: &str, argv: &[String], options: &ExecOptions) -> Result<TtyExec, RuncError> {
        let failed = |message: String| RuncError::Runc { op: "exec", id: id.to_string(), message };
        let (master, slave) = console::open_pty().map_err(|e| failed(format!("opening a terminal: {e}")))?;
        let stdio = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone().map(Stdio::from).map_err(|e| failed(format!("sharing the terminal: {e}")))
        };
        let mut cmd = self.exec_command(id, argv, options, true);
        cmd.stdin(stdio(&slave)?).stdout(stdio(&slave)?).stderr(Stdio::from(slave));
        let child = cmd.spawn().map_err(|source| RuncError::Spawn { program: self.config.runc.clone(), source })?;
        // Our copies of the slave go with `cmd`: the master then ends when runc exits.
        drop(cmd);
        let console = Console::new(master).map_err(|e| failed(format!("using the terminal: {e}")))?;
        Ok(TtyExec { child, console })
    }

    fn exec_command(&self, id: &str, argv: &[String], options: &ExecOptions, tty: bool) -> Command {
        let mut cmd = self.runc();
        cmd.arg("exec");
        if tty {
            cmd.arg("--tty");
        }
        for e in &options.env {
            cmd.arg("--env").arg(e);
        }
        if let Some(cwd) = &options.cwd {
            cmd.arg("--cwd").arg(cwd);
        }
        cmd.arg(id).args(argv);
        cmd
    }

    /// Connects to the running container's live output (see [`super::attach`]): frames read
    /// with [`super::attach::read_frame`] until the container ends.
    pub async fn attach(&self, id: &str) -> Result<tokio::net::UnixStream, RuncError> {
        let bundle = Bundle::open(&self.config.bundle_root, id).ok_or_else(|| RuncError::NotFound(id.to_string()))?;
        super::attach::connect(bundle.dir()).await.map_err(|e| RuncError::Runc {
            op: "attach",
            id: id.to_string(),
            message: if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::ConnectionRefused {
                "the container has ended, or its shim predates attach".to_string()
            } else {
                format!("connecting to the shim: {e}")
            },
        })
    }

    /// The directory bundles live in.
    pub fn bundle_root(&self) -> &Path {
        &self.config.bundle_root
    }
}
