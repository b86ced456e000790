//! The OCI side of the runtime trait: container images from the content store, run by `runc`
//! through one `skiff container-shim` process per container (`skiff-oci-shim`).
//!
//! What it owns: pulling and unpacking container images, mapping a [`ContainerSpec`] onto a
//! runc container (`oci_spec`) inside the pod's sandbox (`crate::sandbox`), pointing the shim's
//! log at the file `kubectl logs` reads, waiting for exits (`OOMKilled`/`Error`/`Completed`),
//! and recovery: containers outlive the agent process, are adopted again by id after a
//! restart, and those of pods gone meanwhile are removed. What it does not: decide when to
//! start or stop (the pod worker does) or allocate pod IPs (node IPAM).
//!
//! Streams: `kubectl exec` runs `runc exec` (with `-t`, on a terminal that follows the
//! client's window size; stderr shares it as in Kubernetes); `kubectl attach` reads the live
//! output the container's shim serves (`skiff_oci_shim::runtime::attach`).
//!
//! Networking: in bridge mode every pod gets a network namespace attached to `skiff0`; in
//! loopback mode (no root, no bridge) only `hostNetwork: true` pods can run here, anything
//! else fails with `CreatePodSandboxError` saying so.
//!
//! Mixed pods (WASM and container images in one pod): a pod comes here when it names
//! `runtimeClassName: oci` or, naming none, lists a container image anywhere (the worker's
//! `choose` rule, through [`ContainerRuntime::claims_image`]). Its WebAssembly containers are
//! handed to the node's WASM runtime (`with_wasm`) with the pod's sandbox namespace in
//! [`ContainerSpec::netns`], so the guest listens on the pod IP and `localhost` inside the pod
//! and its outgoing connections start there. All-WASM pods never come here: they keep the
//! in-process path on the node's own network.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skiff_oci_shim::image::{ContainerImage, ImageKind, ImageStore};
use skiff_oci_shim::runtime::shim::StdinMode;
use skiff_oci_shim::runtime::{Runc, RuncError, RuntimeStatus};
use tokio::sync::watch;
use tracing::{info, warn};

use super::oci_spec::{self, NodeLimits};
use super::wasm::{BuiltinRegistry, present_locally, pull_with};
use super::{
    ContainerRuntime, ContainerSpec, ContainerStats, ExecIo, ExitInfo, ImageRef, PodRef, PullCredentials, PullPolicy,
    RunningContainer, RuntimeError, StdinSpec,
};
use crate::sandbox::{PodSandbox, Sandboxes};

/// Prefix of `containerStatuses[].containerID`.
const ID_PREFIX: &str = "runc://";
/// How often a running container's exit record is looked at.
const EXIT_POLL: Duration = Duration::from_millis(200);

/// The `oci` runtime of a node.
#[derive(Debug)]
pub struct OciRuntime {
    runc: Runc,
    images: ImageStore,
    builtin: Option<BuiltinRegistry>,
    insecure_registries: Vec<String>,
    /// Unpacked images by image ID.
    unpacked: Mutex<HashMap<String, ContainerImage>>,
    /// `None` in loopback mode: only host-network pods.
    sandboxes: Option<Sandboxes>,
    limits: NodeLimits,
    /// The runtime WASM containers of mixed pods are handed to (see the module docs).
    wasm: Option<Arc<dyn ContainerRuntime>>,
    /// Image IDs (`reference@digest`) that are WebAssembly artifacts, run by `wasm`.
    wasm_images: Mutex<HashSet<String>>,
}

impl OciRuntime {
    pub fn new(
        runc: Runc,
        images: ImageStore,
        builtin: Option<BuiltinRegistry>,
        insecure_registries: Vec<String>,
        sandboxes: Option<Sandboxes>,
        limits: NodeLimits,
    ) -> Self {
        OciRuntime {
            runc,
            images,
            builtin,
            insecure_registries,
            unpacked: Mutex::new(HashMap::new()),
            sandboxes,
            limits,
            wasm: None,
            wasm_images: Mutex::new(HashSet::new()),
        }
    }

    /// Runs the WebAssembly containers of mixed pods on `wasm`, inside the pod's sandbox.
    pub fn with_wasm(mut self, wasm: Arc<dyn ContainerRuntime>) -> Self {
        self.wasm = Some(wasm);
        self
    }

    /// The sandbox a container of `spec`'s pod joins (`None`: host network).
    async fn sandbox(&self, spec: &ContainerSpec) -> Result<Option<PodSandbox>, RuntimeError> {
        if spec.sandbox.host_network {
            return Ok(None);
        }
        let Some(sandboxes) = &self.sandboxes else {
            return Err(RuntimeError::new(
                "CreatePodSandboxError",
                "container images need the bridge pod network on this node (run the node as root with \
                 --pod-network bridge), or set hostNetwork: true",
            ));
        };
        let IpAddr::V4(ip) = spec.pod_ip else {
            return Err(RuntimeError::new("CreatePodSandboxError", "IPv6 pod IPs are not supported"));
        };
        Ok(Some(sandboxes.ensure(&spec.pod, ip, &spec.sandbox).await?))
    }

    /// Ids of the earlier runs of a container (bundles named `<uid>_<name>_<n>`), and the next `n`.
    fn runs_of(&self, pod_uid: &str, container: &str) -> (Vec<String>, u32) {
        let prefix = format!("{pod_uid}_{container}_");
        let mut ids = Vec::new();
        let mut next = 0;
        if let Ok(entries) = std::fs::read_dir(self.runc.bundle_root()) {
            for name in entries.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()) {
                if let Some(n) = name.strip_prefix(&prefix).and_then(|n| n.parse::<u32>().ok()) {
                    next = next.max(n + 1);
                    ids.push(name);
                }
            }
        }
        (ids, next)
    }

    fn start_error(e: RuncError) -> RuntimeError {
        match e {
            RuncError::Spec(e) => RuntimeError::new("CreateContainerConfigError", e.to_string()),
            RuncError::Bundle(e) => RuntimeError::new("CreateContainerError", e.to_string()),
            e => RuntimeError::new("RunContainerError", e.to_string()),
        }
    }
}

#[async_trait]
impl ContainerRuntime for OciRuntime {
    fn name(&self) -> &'static str {
        "oci"
    }

    async fn pull(
        &self,
        image_ref: &str,
        policy: PullPolicy,
        creds: &PullCredentials,
    ) -> Result<ImageRef, RuntimeError> {
        let pulled =
            pull_with(&self.images, self.builtin.as_ref(), &self.insecure_registries, image_ref, policy, creds).await?;
        if let ImageKind::Wasm { .. } = pulled.kind {
            let Some(wasm) = &self.wasm else {
                return Err(RuntimeError::new(
                    "CreateContainerError",
                    format!(
                        "{image_ref} is a WebAssembly artifact and this node has no WASM runtime to run it \
                         beside the pod's containers; run it without runtimeClassName: oci"
                    ),
                ));
            };
            // Just pulled: the WASM runtime finds it in the shared store (and compiles it).
            let policy = if policy == PullPolicy::Never { PullPolicy::Never } else { PullPolicy::IfNotPresent };
            let image = wasm.pull(image_ref, policy, creds).await?;
            self.wasm_images.lock().unwrap_or_else(|p| p.into_inner()).insert(image.image_id.clone());
            return Ok(image);
        }
        let image_id = pulled.digest.clone();
        // Image GC may have removed the snapshots since they were unpacked: unpack again then.
        let known = self
            .unpacked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&image_id)
            .is_some_and(|image| image.lowerdirs.iter().all(|dir| dir.is_dir()));
        if !known {
            let unpacked = self
                .images
                .container_rootfs(&pulled)
                .await
                .map_err(|e| RuntimeError::new("CreateContainerError", format!("unpacking {image_ref}: {e}")))?;
            self.unpacked.lock().unwrap_or_else(|p| p.into_inner()).insert(image_id.clone(), unpacked);
        }
        Ok(ImageRef { reference: image_ref.to_string(), image_id: format!("{}@{}", pulled.reference, image_id) })
    }

    async fn claims_image(&self, image_ref: &str, policy: PullPolicy, creds: &PullCredentials) -> bool {
        let pulled =
            pull_with(&self.images, self.builtin.as_ref(), &self.insecure_registries, image_ref, policy, creds);
        matches!(pulled.await, Ok(p) if matches!(p.kind, ImageKind::Container { .. }))
    }

    fn owns_container_id(&self, container_id: &str) -> bool {
        container_id.starts_with(ID_PREFIX)
    }

    async fn image_present(&self, image_ref: &str) -> bool {
        present_locally(&self.images, self.builtin.as_ref(), &self.insecure_registries, image_ref).await
    }

    async fn start(&self, mut spec: ContainerSpec) -> Result<Box<dyn RunningContainer>, RuntimeError> {
        let is_wasm = self.wasm_images.lock().unwrap_or_else(|p| p.into_inner()).contains(&spec.image.image_id);
        if let (true, Some(wasm)) = (is_wasm, &self.wasm) {
            spec.netns = self.sandbox(&spec).await?.map(|s| s.netns);
            return wasm.start(spec).await;
        }
        let image_id = spec.image.image_id.rsplit('@').next().unwrap_or_default().to_string();
        let image = self
            .unpacked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&image_id)
            .cloned()
            .ok_or_else(|| RuntimeError::new("CreateContainerError", format!("image {image_id} was not pulled")))?;
        let sandbox = self.sandbox(&spec).await?;
        // Earlier runs of this container have ended (the worker starts a run only then): their
        // bundles go, the new run gets the next number.
        let (old, run) = self.runs_of(&spec.pod.uid, &spec.container_name);
        for id in old {
            if let Err(e) = self.runc.delete(&id).await {
                warn!(error = %e, %id, "removing an earlier run");
            }
        }
        let id = oci_spec::container_id(&spec.pod.uid, &spec.container_name, run);
        let runc_spec = oci_spec::runc_spec(
            &id,
            &spec,
            &image.config,
            sandbox.as_ref().map(|s| s.netns.as_path()),
            sandbox.as_ref().map(|s| &s.etc),
            &self.limits,
        )?;
        if let Some(log) = spec.logs.path() {
            link_log(self.runc.bundle_root(), &id, &log)
                .map_err(|e| RuntimeError::new("CreateContainerError", format!("linking the log of {id}: {e}")))?;
        }
        // The image's lowerdirs are top layer first; runc's bundle wants the base first.
        let lowerdirs: Vec<PathBuf> = image.lowerdirs.iter().rev().cloned().collect();
        // A kept stdin for `kubectl attach -i`. `tty: true` gets the same pipe, not a terminal
        // (the shim's console-socket path is not wired yet): a shell then runs without a prompt.
        let stdin = match spec.stdin {
            StdinSpec { open: false, .. } => StdinMode::Closed,
            StdinSpec { once: true, .. } => StdinMode::Once,
            StdinSpec { .. } => StdinMode::Open,
        };
        match self.runc.start_with_stdin(&runc_spec, &lowerdirs, stdin).await {
            Ok(handle) => {
                info!(id = %handle.id, pid = handle.pid, "container started");
                let mut container = OciContainer::watch(self.runc.clone(), id, self.limits.cgroup_parent.clone());
                container.stdin_kept = stdin != StdinMode::Closed;
                Ok(Box::new(container))
            }
            Err(e) => {
                let error = Self::start_error(e);
                if let Err(e) = self.runc.delete(&id).await {
                    warn!(error = %e, %id, "removing a container that failed to start");
                }
                Err(error)
            }
        }
    }

    fn networks_pods(&self) -> bool {
        self.sandboxes.is_some()
    }

    async fn adopt(&self, pod: &PodRef, container: &str, container_id: &str) -> Option<Box<dyn RunningContainer>> {
        let id = container_id.strip_prefix(ID_PREFIX)?;
        let ours = oci_spec::pod_uid_of(id) == Some(pod.uid.as_str())
            && id.strip_prefix(&format!("{}_{container}_", pod.uid)).is_some_and(|n| n.parse::<u32>().is_ok());
        if !ours {
            return None;
        }
        match self.runc.state(id).await {
            Ok(state) if state.status == RuntimeStatus::Running || state.exit.is_some() => {
                info!(%id, status = ?state.status, "container adopted");
                Some(Box::new(OciContainer::watch(
                    self.runc.clone(),
                    id.to_string(),
                    self.limits.cgroup_parent.clone(),
                )))
            }
            Ok(state) => {
                warn!(%id, status = ?state.status, "not adopting a container in this state; starting anew");
                None
            }
            Err(e) => {
                warn!(%id, error = %e, "container to adopt is gone; starting anew");
                None
            }
        }
    }

    async fn pod_done(&self, pod: &PodRef) {
        let prefix = format!("{}_", pod.uid);
        if let Ok(entries) = std::fs::read_dir(self.runc.bundle_root()) {
            let ids: Vec<String> = entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            for id in ids {
                if let Err(e) = self.runc.delete(&id).await {
                    warn!(error = %e, %id, "removing a container of a finished pod");
                }
            }
        }
        if let Some(sandboxes) = &self.sandboxes {
            sandboxes.remove(&pod.uid).await;
        }
    }

    async fn reconcile(&self, live_pod_uids: &HashSet<String>) {
        match self.runc.list().await {
            Ok(containers) => {
                for c in containers {
                    if oci_spec::pod_uid_of(&c.id).is_some_and(|uid| live_pod_uids.contains(uid)) {
                        continue;
                    }
                    info!(id = %c.id, "removing a container whose pod is gone");
                    if let Err(e) = self.runc.delete(&c.id).await {
                        warn!(error = %e, id = %c.id, "removing a container whose pod is gone");
                    }
                }
            }
            Err(e) => warn!(error = %e, "listing containers for recovery"),
        }
        if let Some(sandboxes) = &self.sandboxes {
            sandboxes.reconcile(live_pod_uids).await;
        }
    }
}

/// Makes the bundle's `log` a link to the agent's log file of this run, so the shim writes the
/// CRI lines where `kubectl logs` reads them.
fn link_log(bundle_root: &Path, id: &str, log: &Path) -> std::io::Result<()> {
    let dir = bundle_root.join(id);
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("log");
    match std::fs::remove_file(&link) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(log, link)
}

/// A runc container: a task polls its exit record and publishes how it ended.
#[derive(Debug)]
struct OciContainer {
    runc: Runc,
    id: String,
    /// Its shim keeps a stdin attach clients write to (unknown after an adoption: assumed).
    stdin_kept: bool,
    cgroup: PathBuf,
    done: watch::Receiver<Option<ExitInfo>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl OciContainer {
    fn watch(runc: Runc, id: String, cgroup_parent: String) -> Self {
        let (tx, done) = watch::channel(None);
        let (runc2, id2) = (runc.clone(), id.clone());
        let task = tokio::spawn(async move {
            let exit = loop {
                match runc2.wait_exit(&id2, Duration::ZERO).await {
                    Ok(Some(exit)) => break exit_info(exit.code, exit.reason(), exit.signal),
                    Ok(None) => tokio::time::sleep(EXIT_POLL).await,
                    Err(e) => {
                        break ExitInfo {
                            exit_code: 128,
                            reason: "Error".into(),
                            message: Some(format!("lost track of the container: {e}")),
                        };
                    }
                }
            };
            tx.send_replace(Some(exit));
        });
        let cgroup = Path::new(cgroup_parent.trim_start_matches('/')).join(&id);
        OciContainer { runc, id, stdin_kept: true, cgroup, done, _task: tokio_util::task::AbortOnDropHandle::new(task) }
    }
}

/// `state.terminated` of an exit.
fn exit_info(code: i32, reason: &str, signal: Option<i32>) -> ExitInfo {
    let message = match reason {
        "OOMKilled" => Some("the container's memory grew past resources.limits.memory".to_string()),
        _ => signal.map(|s| format!("killed by signal {s}")),
    };
    ExitInfo { exit_code: code, reason: reason.to_string(), message }
}

/// Usage of the container's cgroup (`relative` under the cgroup root): v2 files when the unified
/// hierarchy is mounted, else v1's memory and cpuacct controllers.
fn usage(relative: &Path) -> ContainerStats {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return cgroup_stats(&root.join(relative));
    }
    let memory = std::fs::read_to_string(root.join("memory").join(relative).join("memory.usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let cpu_ns = std::fs::read_to_string(root.join("cpuacct").join(relative).join("cpuacct.usage"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    ContainerStats {
        cpu_time: Duration::from_nanos(cpu_ns.unwrap_or(0)),
        memory_bytes: memory.unwrap_or(0),
        requests_rejected_memory: 0,
    }
}

/// cgroup v2 usage: `memory.current` and `cpu.stat`'s `usage_usec` (zeros when unreadable).
fn cgroup_stats(dir: &Path) -> ContainerStats {
    let memory = std::fs::read_to_string(dir.join("memory.current")).ok().and_then(|s| s.trim().parse().ok());
    let cpu_us = std::fs::read_to_string(dir.join("cpu.stat"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse::<u64>().ok()));
    ContainerStats {
        cpu_time: Duration::from_micros(cpu_us.unwrap_or(0)),
        memory_bytes: memory.unwrap_or(0),
        requests_rejected_memory: 0,
    }
}

#[async_trait]
impl RunningContainer for OciContainer {
    async fn wait(&self) -> ExitInfo {
        let mut rx = self.done.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return ExitInfo { exit_code: 128, reason: "Error".into(), message: Some("watcher ended".into()) };
            }
        }
    }

    async fn stop(&self, grace: Duration) {
        if let Err(e) = self.runc.stop(&self.id, grace).await {
            warn!(error = %e, id = %self.id, "stopping the container");
        }
        self.wait().await;
    }

    fn stats(&self) -> ContainerStats {
        usage(&self.cgroup)
    }

    fn container_id(&self) -> Option<String> {
        Some(format!("{ID_PREFIX}{}", self.id))
    }

    fn survives_agent(&self) -> bool {
        true
    }

    /// The container's live output (`kubectl attach`), from its shim.
    async fn attach(&self, io: ExecIo) -> Result<(), RuntimeError> {
        attach_output(&self.runc, &self.id, self.stdin_kept, io).await
    }

    /// `runc exec` with the session's streams piped through (`kubectl exec`, `kubectl cp`), or
    /// on a terminal (`kubectl exec -t`).
    async fn exec(&self, argv: Vec<String>, tty: bool, io: ExecIo) -> Result<i32, RuntimeError> {
        if tty {
            return tty_exec(&self.runc, &self.id, argv, io).await;
        }
        let options = skiff_oci_shim::runtime::ExecOptions::default();
        let mut child = self
            .runc
            .exec(&self.id, &argv, &options)
            .map_err(|e| RuntimeError::new("ExecError", format!("starting {argv:?} in the container: {e}")))?;
        // Whoever gives up on this exec (a probe's timeout, a client gone) ends the command too.
        let mut reaper = ExecReaper(child.id());
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // stdin ends when the client closes it; the command's outputs end when it exits.
        let feed = async move {
            if let (Some(mut from), Some(mut to)) = (io.stdin, stdin) {
                let _ = tokio::io::copy(&mut from, &mut to).await;
            }
        };
        let out = pipe(stdout, io.stdout);
        let err = pipe(stderr, io.stderr);
        let feeding = tokio::spawn(feed);
        let (_, _, status) = tokio::join!(out, err, child.wait());
        feeding.abort();
        reaper.0 = None;
        let status = status.map_err(|e| RuntimeError::new("ExecError", format!("waiting for {argv:?}: {e}")))?;
        Ok(status.code().unwrap_or(128 + status.signal().unwrap_or(0)))
    }
}

/// `kubectl attach` without stdin or a terminal: the container's output from now on, until it
/// ends or the client leaves (the session drops this future).
async fn attach_output(runc: &Runc, id: &str, stdin_kept: bool, io: ExecIo) -> Result<(), RuntimeError> {
    use skiff_oci_shim::runtime::attach;
    let socket =
        runc.attach(id).await.map_err(|e| RuntimeError::new("AttachError", format!("attaching to {id}: {e}")))?;
    let (mut socket, mut to_shim) = socket.into_split();
    let (mut stdout, mut stderr) = (io.stdout, io.stderr);
    let mut feeding = None;
    if let Some(mut stdin) = io.stdin {
        // A container without `stdin: true` has no stdin to write to (the shim drops what is
        // sent): say so where the user looks instead of swallowing their typing, as kubectl's
        // own warning does.
        if !stdin_kept {
            let notice =
                b"skiff: this container does not accept input (set stdin: true in its spec); showing output only\r\n";
            if let Some(to) = stderr.as_mut().or(stdout.as_mut()) {
                let _ = tokio::io::AsyncWriteExt::write_all(to, notice).await;
            }
        }
        feeding = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 || to_shim.write_all(&attach::frame(attach::STDIN, &buf[..n])).await.is_err() {
                    break;
                }
            }
            // The client is done with stdin (a `stdinOnce` container's stdin closes now).
            let _ = to_shim.write_all(&attach::frame(attach::STDIN_CLOSE, b"")).await;
        })));
    }
    loop {
        let frame = attach::read_frame(&mut socket)
            .await
            .map_err(|e| RuntimeError::new("AttachError", format!("reading the output of {id}: {e}")))?;
        let Some((stream, data)) = frame else { break };
        // No stderr channel means a terminal session (kubectl attach asks for stderr otherwise):
        // a terminal has one output stream.
        let to = if stream == attach::STDERR { stderr.as_mut().or(stdout.as_mut()) } else { stdout.as_mut() };
        if let Some(to) = to
            && tokio::io::AsyncWriteExt::write_all(to, &data).await.is_err()
        {
            break;
        }
    }
    drop(feeding);
    for to in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = tokio::io::AsyncWriteExt::shutdown(to).await;
    }
    Ok(())
}

/// How long a terminal's output may still drain after its command exited (a background
/// process of the command may keep the terminal open forever).
const TTY_DRAIN: Duration = Duration::from_secs(2);

/// `kubectl exec -t`: the command on a terminal whose output (stdout and stderr merged, as
/// Kubernetes does) goes to the session's stdout, its input from the session's stdin, and
/// the session's resize messages to its window size.
async fn tty_exec(runc: &Runc, id: &str, argv: Vec<String>, io: ExecIo) -> Result<i32, RuntimeError> {
    let options = skiff_oci_shim::runtime::ExecOptions::default();
    let mut exec = runc.exec_tty(id, &argv, &options).await.map_err(|e| {
        RuntimeError::new("ExecError", format!("starting {argv:?} on a terminal in the container: {e}"))
    })?;
    let (output, mut input) = exec.console.split();
    let mut helpers = tokio::task::JoinSet::new();
    if let Some(mut from) = io.stdin {
        helpers.spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut input).await;
        });
    }
    let mut sizes = io.resize;
    let out = io.stdout.or(io.stderr);
    let mut pump = tokio::spawn(pipe(Some(output), out));
    let status = loop {
        tokio::select! {
            status = exec.child.wait() => break status,
            Some(size) = async { sizes.as_mut()?.recv().await } => {
                if let Err(e) = exec.resize(size.width, size.height) {
                    tracing::debug!(error = %e, "resizing an exec terminal");
                }
            }
        }
    };
    if tokio::time::timeout(TTY_DRAIN, &mut pump).await.is_err() {
        pump.abort();
    }
    helpers.abort_all();
    let status = status.map_err(|e| RuntimeError::new("ExecError", format!("waiting for {argv:?}: {e}")))?;
    Ok(status.code().unwrap_or(128 + status.signal().unwrap_or(0)))
}

/// Kills what a `runc exec` (pid `.0`) started inside the container when the exec is dropped
/// before it finished: killing `runc exec` alone would leave the command running, reparented
/// inside the container. Its descendants (the command and whatever it forked) are found by
/// parent pid in `/proc` and killed (in any order: SIGKILL cannot be caught).
#[derive(Debug)]
struct ExecReaper(Option<u32>);

impl Drop for ExecReaper {
    fn drop(&mut self) {
        let Some(root) = self.0 else { return };
        for pid in descendants(root, &process_parents()) {
            if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

/// `(pid, parent pid)` of every process visible in `/proc`.
fn process_parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

/// Every process below `root` in `parents` (not `root` itself).
fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in parents {
            if ppid == p && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Copies a child's output stream to the session (or drains it when the client did not ask).
async fn pipe(
    from: Option<impl tokio::io::AsyncRead + Unpin>,
    to: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
) {
    let Some(mut from) = from else { return };
    match to {
        Some(mut to) => {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut to).await;
        }
        None => {
            let _ = tokio::io::copy(&mut from, &mut tokio::io::sink()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_like_kubernetes() {
        let oom = exit_info(137, "OOMKilled", Some(9));
        assert_eq!((oom.exit_code, oom.reason.as_str()), (137, "OOMKilled"));
        assert!(oom.message.is_some_and(|m| m.contains("limits.memory")));
        assert_eq!(exit_info(0, "Completed", None).message, None);
        assert_eq!(exit_info(143, "Error", Some(15)).message.as_deref(), Some("killed by signal 15"));
    }

    #[test]
    fn descendants_of_an_exec() {
        let parents = [(10, 1), (11, 10), (12, 11), (13, 10), (20, 1), (21, 20)];
        let mut below = descendants(10, &parents);
        below.sort_unstable();
        assert_eq!(below, [11, 12, 13]);
        assert!(descendants(12, &parents).is_empty());
    }

    #[test]
    fn cgroup_stats_read_v2_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("memory.current"), "4096\n").expect("write");
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").expect("write");
        let s = cgroup_stats(dir.path());
        assert_eq!((s.memory_bytes, s.cpu_time), (4096, Duration::from_millis(1500)));
        assert_eq!(cgroup_stats(Path::new("/nonexistent")), ContainerStats::default());
    }
}
