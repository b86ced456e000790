//! The one runtime trait the agent drives every container through (ARCHITECTURE decision 2).
//!
//! What it owns: the contract between a pod worker and a runtime — pull an image, create and
//! run a container from a [`ContainerSpec`], wait for it, stop it, read its stats — and the
//! log sink a runtime writes a container's output to. What it does not: decide *when* to do any
//! of this (the pod worker's state machine does), resolve env or volumes (the pod environment
//! does), or know about the API server.
//!
//! Why the trait lives in the agent and not in `skiff-api`: the runtimes (`skiff-wasm-runtime`,
//! `skiff-oci-shim`) stay plain libraries with no Kubernetes types, and the agent owns the
//! adapters that map a pod onto them. Errors carry the Kubernetes waiting/terminated reason the
//! pod status shows, so a runtime decides how its failures read to users.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use skiff_wasm_runtime::HttpHandoff;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::pull_secrets::{Credential, Keyring};

pub mod oci;
pub mod oci_spec;
pub mod wasm;
pub mod wasm_names;

/// The `imagePullPolicy` of a container, defaulted as Kubernetes does (`Always` for `:latest`
/// or no tag, `IfNotPresent` otherwise): the image store's own type, so no runtime translates.
pub use skiff_oci_shim::image::PullPolicy;

/// Credentials the agent found for a pull: keyrings consulted in order (the pod's
/// `imagePullSecrets` first, then the node's own), as the kubelet's union keyring is. The
/// built-in registry's credentials are the runtime's own and never come from here.
#[derive(Debug, Clone, Default)]
pub struct PullCredentials {
    pub keyrings: Vec<Keyring>,
}

impl PullCredentials {
    /// `pod`'s keyring in front of these (the node's).
    pub fn with_pod_keyring(&self, pod: Keyring) -> PullCredentials {
        let mut keyrings = Vec::with_capacity(self.keyrings.len() + 1);
        if !pod.is_empty() {
            keyrings.push(pod);
        }
        keyrings.extend(self.keyrings.iter().cloned());
        PullCredentials { keyrings }
    }

    /// Every credential that applies to `image`, in the order to try them (empty: anonymous).
    pub fn lookup(&self, image: &str) -> Vec<Credential> {
        self.keyrings.iter().flat_map(|k| k.lookup(image)).collect()
    }
}

/// A pulled image, ready to create containers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as written in the pod spec.
    pub reference: String,
    /// `containerStatuses[].imageID`: the content digest the runtime resolved.
    pub image_id: String,
}

/// Where a volume appears inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The prepared directory (or file) on the node.
    pub host_path: PathBuf,
    /// `volumeMounts[].mountPath`.
    pub container_path: String,
    pub read_only: bool,
}

/// Identifies the pod a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Everything a runtime needs to start one container: already resolved, no API lookups left.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub pod: PodRef,
    pub container_name: String,
    pub image: ImageRef,
    /// `command` followed by `args` (empty: the artifact's default entry point).
    pub argv: Vec<String>,
    /// `command` alone (replaces an image's Entrypoint, and drops its Cmd).
    pub command: Vec<String>,
    /// `args` alone (replaces an image's Cmd).
    pub args: Vec<String>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// The effective security context (the container's over the pod's).
    pub security: Security,
    /// `resources.requests.cpu` in millicores (CPU shares of a container).
    pub cpu_request_millis: Option<u64>,
    /// What the pod's sandbox needs (hostname, hostPorts, …); the same for every container.
    pub sandbox: SandboxSpec,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub pod_ip: IpAddr,
    /// `ports[].containerPort` of TCP ports: where an HTTP component is served.
    pub ports: Vec<u16>,
    /// `resources.limits.memory` in bytes.
    pub memory_limit: Option<u64>,
    /// `resources.limits.cpu` in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// Where the container's stdout/stderr go.
    pub logs: Arc<dyn LogSink>,
    /// The pod's annotations: runtime-specific settings (`skiff.dev/request-timeout`, ...).
    pub annotations: BTreeMap<String, String>,
    /// The pod's sandbox network namespace a WASM container joins (mixed pods: the OCI
    /// runtime sets it when it hands a WASM container over); `None`: the node's network.
    pub netns: Option<PathBuf>,
    /// `stdin`, `stdinOnce`, `tty`: a container `kubectl attach -i` can type into.
    pub stdin: StdinSpec,
}

/// A container's `stdin`, `stdinOnce` and `tty` (WASM containers ignore them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StdinSpec {
    pub open: bool,
    pub once: bool,
    pub tty: bool,
}

/// A container's security settings, resolved from `securityContext` (container over pod).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_non_root: bool,
    pub supplemental_groups: Vec<i64>,
    pub read_only_root_filesystem: bool,
    pub privileged: bool,
    pub allow_privilege_escalation: Option<bool>,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
}

/// A `hostPort` of the pod: `host_port` on the node forwards to `container_port` on the pod IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// Pod-level facts a runtime with its own pod sandbox (network namespace) needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxSpec {
    /// `spec.hostname`, else the pod name.
    pub hostname: String,
    /// `<hostname>.<subdomain>.<namespace>.svc.cluster.local` when the pod has a subdomain.
    pub fqdn: Option<String>,
    /// `spec.hostAliases` as (IP, names).
    pub host_aliases: Vec<(IpAddr, Vec<String>)>,
    /// Every `hostPort` of every container of the pod.
    pub host_ports: Vec<HostPort>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// `dnsPolicy`/`dnsConfig` and the cluster DNS: what the pod's `resolv.conf` is made of.
    pub dns: skiff_oci_shim::network::PodDns,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Receives a container's output. Implementations must not block for long: runtimes call it
/// from the guest's own thread.
pub trait LogSink: Send + Sync + Debug + 'static {
    fn write(&self, stream: LogStream, bytes: &[u8]);

    /// The CRI-format file behind this sink, if there is one: a runtime whose containers
    /// write their own log (the OCI shim) writes there directly, so `kubectl logs` reads it.
    fn path(&self) -> Option<PathBuf> {
        None
    }
}

/// How a container ended: the fields of `containerStatuses[].state.terminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: String,
    pub message: Option<String>,
}

/// Resource usage of one container, for probes of health and later for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    pub cpu_time: Duration,
    pub memory_bytes: u64,
    /// HTTP requests answered `503` because they would have grown the guest past its memory
    /// limit (HTTP components; the agent turns growth of this counter into an event).
    pub requests_rejected_memory: u64,
}

/// A runtime failure, already phrased for pod status: `reason` becomes the waiting reason
/// (`ErrImagePull`, `InvalidImageName`, `CreateContainerError`, `RunContainerError`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct RuntimeError {
    pub reason: String,
    pub message: String,
}

impl RuntimeError {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        RuntimeError { reason: reason.into(), message: message.into() }
    }
}

/// One kind of runtime (WASM in-process, OCI through runc).
#[async_trait]
pub trait ContainerRuntime: Send + Sync + Debug + 'static {
    /// The value this runtime adds to the node's `skiff.dev/runtimes` label (`wasm`, `oci`).
    fn name(&self) -> &'static str;

    /// Makes `image` available locally according to `policy` (and verifies it).
    async fn pull(&self, image: &str, policy: PullPolicy, creds: &PullCredentials) -> Result<ImageRef, RuntimeError>;

    /// Whether `image` is already on this node (a pull with `IfNotPresent` then downloads
    /// nothing): decides between the `Pulling`/`Pulled` events and "already present on
    /// machine". A runtime that cannot tell says `false`.
    async fn image_present(&self, _image: &str) -> bool {
        false
    }

    /// Whether this runtime, rather than the node's default one, should run a pod that names
    /// no runtime and lists `image` (the OCI runtime: a container image). May pull the image
    /// per `policy`; a failed pull answers `false` (the default runtime's launch reports it).
    async fn claims_image(&self, _image: &str, _policy: PullPolicy, _creds: &PullCredentials) -> bool {
        false
    }

    /// Whether `container_id` (as in `containerStatuses[].containerID`) is one of this
    /// runtime's containers: after an agent restart, a pod stays on the runtime it ran on.
    fn owns_container_id(&self, _container_id: &str) -> bool {
        false
    }

    /// Creates and starts a container; returns once it runs (an HTTP component: once it listens).
    async fn start(&self, spec: ContainerSpec) -> Result<Box<dyn RunningContainer>, RuntimeError>;

    /// Whether this runtime gives a pod its own network (a namespace with the pod IP on an
    /// interface) instead of the node putting the pod IP on the bridge or loopback.
    fn networks_pods(&self) -> bool {
        false
    }

    /// Takes over a container an earlier agent process started (`container_id` as reported
    /// in `containerStatuses[].containerID`), if it still runs; `None` starts it anew.
    async fn adopt(&self, _pod: &PodRef, _container: &str, _container_id: &str) -> Option<Box<dyn RunningContainer>> {
        None
    }

    /// The pod is done on this node (its containers have ended): release what the runtime
    /// holds for it (network namespace, addresses). Idempotent.
    async fn pod_done(&self, _pod: &PodRef) {}

    /// At agent start: removes containers and sandboxes of pods not in `live_pod_uids`.
    async fn reconcile(&self, _live_pod_uids: &HashSet<String>) {}
}

/// A started container.
#[async_trait]
pub trait RunningContainer: Send + Sync + Debug {
    /// Resolves when the container has ended (by itself, or after [`RunningContainer::stop`]).
    /// May be called again after it resolved and returns the same answer.
    async fn wait(&self) -> ExitInfo;

    /// Asks the container to stop, and forces it after `grace`. Returns once it has ended.
    async fn stop(&self, grace: Duration);

    fn stats(&self) -> ContainerStats;

    /// `containerStatuses[].containerID` (`<runtime>://<id>`), for runtimes that have one.
    fn container_id(&self) -> Option<String> {
        None
    }

    /// Whether the container keeps running when the agent process stops (and is adopted by
    /// the next one) instead of being stopped with it.
    fn survives_agent(&self) -> bool {
        false
    }

    /// An HTTP component served by this agent on the node's network: the address it listens
    /// on and a handle that takes connections accepted elsewhere (the service proxy's
    /// same-node shortcut, `crate::proxy::LocalHttp`).
    fn http_handoff(&self) -> Option<(SocketAddr, HttpHandoff)> {
        None
    }

    /// Runs `argv` inside the container (`kubectl exec`) with `io` as its streams; returns the
    /// command's exit code once it ended and its output was written. A runtime that cannot
    /// start processes inside its containers keeps this default, which says why.
    async fn exec(&self, argv: Vec<String>, tty: bool, io: ExecIo) -> Result<i32, RuntimeError> {
        let _ = (argv, tty, io);
        Err(not_supported("exec"))
    }

    /// Connects `io` to the container's main process (`kubectl attach`) until it ends or the
    /// caller leaves.
    async fn attach(&self, io: ExecIo) -> Result<(), RuntimeError> {
        let _ = io;
        Err(not_supported("attach"))
    }
}

/// A terminal size, as `kubectl exec -t` sends it on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The byte streams of an exec or attach session, as the node API's caller asked for them
/// (`None`: that stream was not requested). With a TTY, stderr is merged into stdout.
pub struct ExecIo {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Terminal size changes (TTY sessions only).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// Why a container cannot run a command: the default of runtimes that have no way to.
fn not_supported(what: &str) -> RuntimeError {
    RuntimeError::new(
        "NotSupported",
        format!(
            "{what} is not supported for WASM containers: a WebAssembly guest is one sandboxed program \
             with no shell or process table to start another command in"
        ),
    )
}
