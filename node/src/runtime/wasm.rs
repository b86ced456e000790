//! The WASM side of the runtime trait: images come from the content store (`skiff-oci-shim`),
//! compiled and run by `skiff-wasm-runtime`.
//!
//! What it owns: mapping a [`ContainerSpec`] onto a guest (argv, env, volumes as preopens,
//! memory limit, output to the container's log), choosing how to serve it from the artifact's
//! shape (an HTTP component on `podIP:containerPort`, a command like a process), and phrasing
//! failures as the reasons a pod status shows. What it does not: decide when to start or stop
//! (the pod worker does) or fetch bytes (the image store does).
//!
//! A guest of a mixed pod (its spec has a `netns`, set by the OCI runtime) lives in the pod's
//! network namespace: its listener, outgoing HTTP and sockets (`skiff-wasm-runtime`).
//!
//! Cluster names: with [`WasmContainerRuntime::with_cluster_names`], every guest of a
//! `ClusterFirst` pod resolves Service and pod names from the node's record cache
//! (`wasm_names.rs`).
//!
//! Credentials: the cluster's own token is only ever sent to the built-in registry (the API
//! server's `host:port`); other registries get the pod's `imagePullSecrets` or nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skiff_oci_shim::image::{self, Auth, ImageKind, ImageStore, RegistryCredentials};
use skiff_wasm_runtime::{
    Artifact, ClusterNames, Exit, GuestConfig, HttpOptions, HttpServer, OutputSink, OutputStream, Preopen, Shape,
    WasmRuntime,
};
use tokio::sync::{Notify, watch};

use super::{
    ContainerRuntime, ContainerSpec, ContainerStats, ExitInfo, ImageRef, LogSink, LogStream, PullCredentials,
    PullPolicy, RunningContainer, RuntimeError,
};

/// Annotation: per-request timeout of a pod's HTTP components (`30s`, `500ms`).
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "skiff.dev/request-timeout";
/// Annotation: concurrent requests per HTTP component.
pub const MAX_CONCURRENCY_ANNOTATION: &str = "skiff.dev/max-concurrency";

/// Where the built-in registry is and how to authenticate to it.
#[derive(Clone)]
pub struct BuiltinRegistry {
    /// `host:port` of the API server, the prefix of images pushed with `skiff push`.
    pub host: String,
    pub token: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for BuiltinRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinRegistry").field("host", &self.host).finish_non_exhaustive()
    }
}

/// The `wasm` runtime of a node.
#[derive(Debug)]
pub struct WasmContainerRuntime {
    wasm: WasmRuntime,
    images: ImageStore,
    builtin: Option<BuiltinRegistry>,
    insecure_registries: Vec<String>,
    /// The cluster's names for guests' resolvers (`None`: host resolution only).
    cluster_names: Option<Arc<dyn ClusterNames>>,
    /// Compiled artifacts by image ID (a failed load is kept too, so a bad artifact is not
    /// recompiled on every restart of its pod).
    loaded: Mutex<HashMap<String, Result<Artifact, String>>>,
}

impl WasmContainerRuntime {
    pub fn new(
        wasm: WasmRuntime,
        images: ImageStore,
        builtin: Option<BuiltinRegistry>,
        insecure_registries: Vec<String>,
    ) -> Self {
        WasmContainerRuntime {
            wasm,
            images,
            builtin,
            insecure_registries,
            cluster_names: None,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Gives guests of `ClusterFirst` pods cluster names from `records` (the node's DNS cache).
    pub fn with_cluster_names(mut self, records: skiff_dns::ClusterRecords) -> Self {
        self.cluster_names = Some(Arc::new(super::wasm_names::RecordNames(records)));
        self
    }

    fn artifact(&self, image_id: &str) -> Result<Artifact, RuntimeError> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        match loaded.get(image_id) {
            Some(Ok(artifact)) => Ok(artifact.clone()),
            Some(Err(message)) => Err(RuntimeError::new("CreateContainerError", message.clone())),
            None => Err(RuntimeError::new("CreateContainerError", format!("image {image_id} was not pulled"))),
        }
    }
}

/// Pulls `image_ref` into `images` as the kubelet does: every matching credential in turn
/// ([`pull_attempts`]), the first success wins, and the last failure is what the pod shows,
/// phrased as its waiting reason. Shared by the WASM and OCI runtimes.
pub(crate) async fn pull_with(
    images: &ImageStore,
    builtin: Option<&BuiltinRegistry>,
    insecure_registries: &[String],
    image_ref: &str,
    policy: PullPolicy,
    creds: &PullCredentials,
) -> Result<image::PulledImage, RuntimeError> {
    let mut outcome = None;
    for attempt in pull_attempts(builtin, insecure_registries, image_ref, creds) {
        let result = images.pull(image_ref, policy, &attempt).await;
        let done = match &result {
            Ok(_) => true,
            // Nothing another credential could change.
            Err(e) => matches!(e, image::ImageError::InvalidReference { .. } | image::ImageError::NotPresent { .. }),
        };
        outcome = Some(result);
        if done {
            break;
        }
    }
    let outcome = outcome.ok_or_else(|| RuntimeError::new("ErrImagePull", format!("no way to pull {image_ref}")))?;
    outcome.map_err(|e| match e {
        image::ImageError::InvalidReference { .. } => RuntimeError::new("InvalidImageName", e.to_string()),
        image::ImageError::NotPresent { .. } => RuntimeError::new("ErrImageNeverPull", e.to_string()),
        _ => RuntimeError::new("ErrImagePull", e.to_string()),
    })
}

/// Whether `image_ref` is in `images` already: a pull with `Never` is a local index lookup,
/// no registry traffic. Shared by the WASM and OCI runtimes' `image_present`.
pub(crate) async fn present_locally(
    images: &ImageStore,
    builtin: Option<&BuiltinRegistry>,
    insecure_registries: &[String],
    image_ref: &str,
) -> bool {
    let attempts = pull_attempts(builtin, insecure_registries, image_ref, &PullCredentials::default());
    let Some(creds) = attempts.into_iter().next() else { return false };
    images.pull(image_ref, PullPolicy::Never, &creds).await.is_ok()
}

/// What to try, in order, for one pull: the built-in registry with the cluster's own
/// credentials (never sent anywhere else); any other registry with each credential the pod's
/// `imagePullSecrets` (then the node's keyring) hold for it, or anonymously when none applies.
pub(crate) fn pull_attempts(
    builtin: Option<&BuiltinRegistry>,
    insecure_registries: &[String],
    image: &str,
    creds: &PullCredentials,
) -> Vec<RegistryCredentials> {
    let base =
        RegistryCredentials { auth: None, insecure_registries: insecure_registries.to_vec(), extra_root_ca_pem: None };
    if let Some(builtin) = builtin
        && registry_host(image) == builtin.host
    {
        return vec![RegistryCredentials {
            auth: Some(Auth::Bearer(builtin.token.clone())),
            extra_root_ca_pem: Some(builtin.ca_pem.clone()),
            ..base
        }];
    }
    let found = creds.lookup(image);
    if found.is_empty() {
        return vec![base];
    }
    found
        .into_iter()
        .map(|c| RegistryCredentials {
            auth: Some(Auth::Basic { username: c.username, password: c.password }),
            ..base.clone()
        })
        .collect()
}

/// Parses `30s`, `500ms`, `2m` (the forms Kubernetes users write in annotations).
fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (number, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    (seconds > 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds))
}

/// The registry `host[:port]` of an image reference (Docker Hub when there is none).
fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first.to_string(),
        _ => "docker.io".to_string(),
    }
}

#[async_trait]
impl ContainerRuntime for WasmContainerRuntime {
    fn name(&self) -> &'static str {
        "wasm"
    }

    async fn pull(
        &self,
        image_ref: &str,
        policy: PullPolicy,
        creds: &PullCredentials,
    ) -> Result<ImageRef, RuntimeError> {
        let pulled =
            pull_with(&self.images, self.builtin.as_ref(), &self.insecure_registries, image_ref, policy, creds).await?;
        let (module_path, module_digest) = match pulled.kind {
            ImageKind::Wasm { module_path, module_digest } => (module_path, module_digest),
            ImageKind::Container { .. } => {
                return Err(RuntimeError::new(
                    "CreateContainerError",
                    format!("{image_ref} is a container image; this node runs only WebAssembly (no OCI runtime)"),
                ));
            }
        };
        let image_id = pulled.digest.clone();
        let known = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&image_id);
        if !known {
            let wasm = self.wasm.clone();
            // Compiling is CPU work (or a cache read): off the async workers.
            let result = tokio::task::spawn_blocking(move || {
                let bytes =
                    std::fs::read(&module_path).map_err(|e| format!("reading {}: {e}", module_path.display()))?;
                wasm.load(&module_digest, &bytes).map_err(|e| format!("invalid WebAssembly artifact: {e}"))
            })
            .await
            .unwrap_or_else(|e| Err(format!("compiling the artifact failed: {e}")));
            self.loaded.lock().unwrap_or_else(|p| p.into_inner()).insert(image_id.clone(), result);
        }
        Ok(ImageRef { reference: image_ref.to_string(), image_id: format!("{}@{}", pulled.reference, image_id) })
    }

    /// Asks the image store with `Never`: a local index lookup, no registry traffic.
    async fn image_present(&self, image_ref: &str) -> bool {
        present_locally(&self.images, self.builtin.as_ref(), &self.insecure_registries, image_ref).await
    }

    async fn start(&self, spec: ContainerSpec) -> Result<Box<dyn RunningContainer>, RuntimeError> {
        let image_id = spec.image.image_id.rsplit('@').next().unwrap_or_default().to_string();
        let artifact = self.artifact(&image_id)?;
        let guest = GuestConfig {
            args: spec.argv.clone(),
            env: spec.env.clone(),
            preopens: spec
                .mounts
                .iter()
                .map(|m| Preopen { host: m.host_path.clone(), guest: m.container_path.clone(), read_only: m.read_only })
                .collect(),
            memory_limit: spec.memory_limit,
            output: Arc::new(LogOutput(spec.logs.clone())),
            netns: spec.netns.clone(),
            resolver: self.cluster_names.as_ref().and_then(|n| super::wasm_names::pod_resolver(n, &spec.sandbox.dns)),
        };
        match artifact.shape() {
            Shape::Http => {
                let port = spec.ports.first().copied().unwrap_or(8080);
                // Inside the pod's own namespace every address is the pod's (its IP and
                // localhost, as for a container); on the node's network only the pod IP is.
                let ip = if spec.netns.is_some() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { spec.pod_ip };
                let mut opts = HttpOptions::new(SocketAddr::new(ip, port));
                if let Some(value) = spec.annotations.get(REQUEST_TIMEOUT_ANNOTATION) {
                    opts.request_timeout = parse_duration(value).ok_or_else(|| {
                        RuntimeError::new(
                            "CreateContainerConfigError",
                            format!(
                                "annotation {REQUEST_TIMEOUT_ANNOTATION}: {value:?} is not a duration like 30s or 500ms"
                            ),
                        )
                    })?;
                }
                if let Some(value) = spec.annotations.get(MAX_CONCURRENCY_ANNOTATION) {
                    opts.max_concurrency = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        RuntimeError::new(
                            "CreateContainerConfigError",
                            format!("annotation {MAX_CONCURRENCY_ANNOTATION}: {value:?} is not a positive number"),
                        )
                    })?;
                }
                let server = self
                    .wasm
                    .serve_http(&artifact, guest, opts)
                    .await
                    .map_err(|e| RuntimeError::new("RunContainerError", e.to_string()))?;
                Ok(Box::new(HttpContainer::new(server)))
            }
            Shape::Command => {
                let run = self
                    .wasm
                    .run_command(&artifact, guest)
                    .map_err(|e| RuntimeError::new("RunContainerError", e.to_string()))?;
                Ok(Box::new(CommandContainer::spawn(run)))
            }
        }
    }
}

/// Forwards guest output to the container's log.
#[derive(Debug)]
struct LogOutput(Arc<dyn LogSink>);

impl OutputSink for LogOutput {
    fn write(&self, stream: OutputStream, bytes: &[u8]) {
        let stream = match stream {
            OutputStream::Stdout => LogStream::Stdout,
            OutputStream::Stderr => LogStream::Stderr,
        };
        self.0.write(stream, bytes);
    }
}

/// An HTTP component: runs until stopped; stopping drains in-flight requests up to the grace.
#[derive(Debug)]
struct HttpContainer {
    server: Mutex<Option<HttpServer>>,
    done: watch::Sender<Option<ExitInfo>>,
}

impl HttpContainer {
    fn new(server: HttpServer) -> Self {
        HttpContainer { server: Mutex::new(Some(server)), done: watch::channel(None).0 }
    }
}

#[async_trait]
impl RunningContainer for HttpContainer {
    async fn wait(&self) -> ExitInfo {
        let mut rx = self.done.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return completed();
            }
        }
    }

    async fn stop(&self, grace: Duration) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            server.shutdown(grace).await;
        }
        self.done.send_replace(Some(completed()));
    }

    fn http_handoff(&self) -> Option<(SocketAddr, skiff_wasm_runtime::HttpHandoff)> {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        let server = server.as_ref()?;
        Some((server.local_addr(), server.handoff()?))
    }

    fn stats(&self) -> ContainerStats {
        match self.server.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(server) => {
                let s = server.stats();
                ContainerStats {
                    cpu_time: s.cpu_time,
                    memory_bytes: s.memory_bytes,
                    requests_rejected_memory: s.requests_rejected_memory,
                }
            }
            None => ContainerStats::default(),
        }
    }
}

fn completed() -> ExitInfo {
    ExitInfo { exit_code: 0, reason: "Completed".into(), message: None }
}

/// A command: a task owns the run and publishes how it ended.
#[derive(Debug)]
struct CommandContainer {
    done: watch::Receiver<Option<ExitInfo>>,
    kill: Arc<Notify>,
    stats: Arc<Mutex<ContainerStats>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl CommandContainer {
    fn spawn(mut run: skiff_wasm_runtime::CommandRun) -> Self {
        let (tx, done) = watch::channel(None);
        let kill = Arc::new(Notify::new());
        let stats = Arc::new(Mutex::new(ContainerStats::default()));
        let (kill2, stats2) = (kill.clone(), stats.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let exit = loop {
                tokio::select! {
                    exit = run.wait() => break exit,
                    _ = kill2.notified() => run.kill(),
                    _ = tick.tick() => {
                        let s = run.stats();
                        *stats2.lock().unwrap_or_else(|p| p.into_inner()) = ContainerStats { cpu_time: s.cpu_time, memory_bytes: s.memory_bytes, ..ContainerStats::default() };
                    }
                }
            };
            tx.send_replace(Some(exit_info(exit)));
        });
        CommandContainer { done, kill, stats, _task: tokio_util::task::AbortOnDropHandle::new(task) }
    }
}

/// How a guest's end reads in `state.terminated`. No signals exist in WASI, so a killed guest
/// reports what a SIGKILLed process would (137).
fn exit_info(exit: Exit) -> ExitInfo {
    match exit {
        Exit::Exited(0) => completed(),
        Exit::Exited(code) => ExitInfo { exit_code: code, reason: "Error".into(), message: None },
        Exit::OomKilled => ExitInfo {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: Some("the guest's memory grew past resources.limits.memory".into()),
        },
        Exit::Trapped(message) => ExitInfo { exit_code: 1, reason: "Error".into(), message: Some(message) },
        Exit::Killed => ExitInfo { exit_code: 137, reason: "Error".into(), message: Some("stopped".into()) },
    }
}

#[async_trait]
impl RunningContainer for CommandContainer {
    async fn wait(&self) -> ExitInfo {
        let mut rx = self.done.clone();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                return ExitInfo {
                    exit_code: 1,
                    reason: "Error".into(),
                    message: Some("the guest's runner ended".into()),
                };
            }
        }
    }

    /// WASI has no signals, so a guest cannot act on a grace period: it is stopped at once.
    async fn stop(&self, _grace: Duration) {
        self.kill.notify_one();
        self.wait().await;
    }

    fn stats(&self) -> ContainerStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull_secrets::Keyring;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("10"), None);
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("127.0.0.1:6443/hello:v1"), "127.0.0.1:6443");
        assert_eq!(registry_host("localhost/x"), "localhost");
        assert_eq!(registry_host("library/nginx"), "docker.io");
        assert_eq!(registry_host("nginx"), "docker.io");
    }

    #[test]
    fn the_cluster_token_goes_only_to_the_builtin_registry() {
        let builtin = BuiltinRegistry { host: "10.0.0.1:6443".into(), token: "tok".into(), ca_pem: "ca".into() };
        let mut pod = Keyring::default();
        let json =
            r#"{"auths":{"10.0.0.1:6443":{"username":"u","password":"p"},"reg.io":{"username":"a","password":"b"}}}"#;
        let data = std::collections::BTreeMap::from([(".dockerconfigjson".to_string(), json.as_bytes().to_vec())]);
        pod.add_secret("s", Some("kubernetes.io/dockerconfigjson"), &data).expect("parses");
        let creds = PullCredentials::default().with_pod_keyring(pod);

        let attempts = pull_attempts(Some(&builtin), &[], "10.0.0.1:6443/app:v1", &creds);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].auth, Some(Auth::Bearer("tok".into())));
        assert_eq!(attempts[0].extra_root_ca_pem.as_deref(), Some("ca"));

        let attempts = pull_attempts(Some(&builtin), &["reg.io".into()], "reg.io/app:v1", &creds);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].auth, Some(Auth::Basic { username: "a".into(), password: "b".into() }));
        assert_eq!(attempts[0].insecure_registries, ["reg.io"]);
        assert_eq!(attempts[0].extra_root_ca_pem, None);

        let attempts = pull_attempts(Some(&builtin), &[], "other.io/app:v1", &creds);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].auth, None, "no matching secret: anonymous");
    }

    #[test]
    fn exits_read_like_processes() {
        assert_eq!(exit_info(Exit::Exited(0)).reason, "Completed");
        assert_eq!(exit_info(Exit::Exited(3)).exit_code, 3);
        assert_eq!(exit_info(Exit::OomKilled).reason, "OOMKilled");
        assert_eq!(exit_info(Exit::Trapped("unreachable".into())).message.as_deref(), Some("unreachable"));
    }
}
