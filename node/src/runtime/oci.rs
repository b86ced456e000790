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
//! Networking: in bridge mode every pod gets a network namespace attached to `skiff0`; in
//! loopback mode (no root, no bridge) only `hostNetwork: true` pods can run here, anything
//! else fails with `CreatePodSandboxError` saying so.
//!
//! Mixed pods (WASM and container images in one pod): the rule is by image kind after the
//! pull. A pod asking for `runtimeClassName: oci` may list WebAssembly artifacts too; such a
//! container is handed to the node's WASM runtime (`with_wasm`) with the pod's sandbox
//! namespace in [`ContainerSpec::netns`], so the guest listens on the pod IP and `localhost`
//! inside the pod and its outgoing connections start there. Nothing changes for scheduling:
//! the pod lands on a node offering `oci`, and every such node also runs WASM (it is always
//! on). Pods without a runtime class stay all-WASM on the node's own network.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skiff_oci_shim::image::{ContainerImage, ImageKind, ImageStore};
use skiff_oci_shim::runtime::{Runc, RuncError, RuntimeStatus};
use tokio::sync::watch;
use tracing::{info, warn};

use super::oci_spec::{self, NodeLimits};
use super::wasm::{BuiltinRegistry, present_locally, pull_with};
use super::{
    ContainerRuntime, ContainerSpec, ContainerStats, ExecIo, ExitInfo, ImageRef, PodRef, PullCredentials, PullPolicy,
    RunningContainer, RuntimeError,
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
        match self.runc.start(&runc_spec, &lowerdirs).await {
            Ok(handle) => {
                info!(id = %handle.id, pid = handle.pid, "container started");
                Ok(Box::new(OciContainer::watch(self.runc.clone(), id, self.limits.cgroup_parent.clone())))
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
        OciContainer { runc, id, cgroup, done, _task: tokio_util::task::AbortOnDropHandle::new(task) }
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

    /// `runc exec` with the session's streams piped through (`kubectl exec`, `kubectl cp`).
    async fn exec(&self, argv: Vec<String>, tty: bool, io: ExecIo) -> Result<i32, RuntimeError> {
        if tty {
            return Err(RuntimeError::new(
                "NotSupported",
                "interactive terminals (exec -t) are not supported for OCI containers yet; run without -t",
            ));
        }
        let options = skiff_oci_shim::runtime::ExecOptions::default();
        let mut child = self
            .runc
            .exec(&self.id, &argv, &options)
            .map_err(|e| RuntimeError::new("ExecError", format!("starting {argv:?} in the container: {e}")))?;
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
        let status = status.map_err(|e| RuntimeError::new("ExecError", format!("waiting for {argv:?}: {e}")))?;
        Ok(status.code().unwrap_or(128 + status.signal().unwrap_or(0)))
    }
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
    fn cgroup_stats_read_v2_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("memory.current"), "4096\n").expect("write");
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").expect("write");
        let s = cgroup_stats(dir.path());
        assert_eq!((s.memory_bytes, s.cpu_time), (4096, Duration::from_millis(1500)));
        assert_eq!(cgroup_stats(Path::new("/nonexistent")), ContainerStats::default());
    }
}
