//! Pod workers: one task per pod bound to this node, driving its lifecycle.
//!
//! What it owns: pull → IP and volumes → init containers one after another (`init`) → start
//! containers → running (probes, restarts with back-off) → terminating (grace period, then the pod object is deleted for good) →
//! terminated (IP released, node-side leftovers cleaned up), and reporting every step as pod
//! status and as events (`Killing`, `BackOff`, `Unhealthy`, `FailedPreStopHook`; launches
//! write their own). Every stop of a container runs its preStop hook first (`crate::lifecycle`). The worker is fed the latest pod object through a watch channel (`None`: the pod is
//! gone from the API) and learns about its containers through events from the tasks it owns
//! (launches, waits, probes). What it does not: watch the API (the dispatcher does), decide
//! the status shape (`status`), or the container transitions (`container`). This file holds
//! the loop and set-up; reactions to task reports are in `handle`, the ways a worker ends in
//! `ending`.

pub mod backoff;
mod choose;
pub mod container;
mod ending;
mod handle;

use self::ending::Ending;
pub mod init;
pub mod launch;
pub mod spec;
pub mod status;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::backoff::{BackoffConfig, RestartPolicy};
use self::container::{LaunchFailure, Run, Slot, SlotKind};
use self::launch::{LaunchPlan, Launched};
use self::status::{StatusInput, is_terminal, pod_phase, pod_status};
use crate::bridge::HostNet;
use crate::events::{EventRecorder, EventType, PodEvents, field_path};
use crate::ipam::Ipam;
use crate::pod_env::{PodEnvironment, PodVolumes};
use crate::probe::ProbeReport;
use crate::runtime::{ContainerRuntime, ExitInfo, PodRef, PullCredentials};

/// How often a worker re-checks its pod when nothing happens (retries of IP or volume set-up,
/// a status patch that failed).
const RESYNC: Duration = Duration::from_secs(10);
/// How long a terminating worker waits for launches already under way.
const LAUNCH_DRAIN: Duration = Duration::from_secs(60);
/// How long a fresh launch may hold back the status report (see `Worker::report_hold`);
/// a slow start (an image pull) is reported as ContainerCreating after this.
const REPORT_HOLD: Duration = Duration::from_millis(250);

/// What every worker shares: the node's identity, its runtimes and environment, the IPAM.
pub struct WorkerContext {
    pub client: kube::Client,
    pub node_name: String,
    pub host_ip: IpAddr,
    pub runtimes: Vec<Arc<dyn ContainerRuntime>>,
    pub env: Arc<dyn PodEnvironment>,
    pub ipam: Arc<Mutex<Ipam>>,
    pub net: HostNet,
    pub backoff: BackoffConfig,
    pub http: reqwest::Client,
    pub creds: PullCredentials,
    /// Grace given to containers when the agent itself shuts down.
    pub shutdown_grace: Duration,
    /// Where pod events go.
    pub events: EventRecorder,
    /// Running containers, for the node API's exec and port-forward.
    pub stream_targets: Arc<crate::nodeapi::StreamTargets>,
    /// The cluster DNS address containers' `resolv.conf` names (`ClusterFirst` pods).
    pub cluster_dns: Option<IpAddr>,
    /// Running HTTP components, for the service proxy's same-node shortcut.
    pub local_http: Arc<crate::proxy::LocalHttp>,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("node_name", &self.node_name)
            .field("host_ip", &self.host_ip)
            .field("runtimes", &self.runtimes)
            .field("net", &self.net)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Results of the tasks a worker owns, tagged with the container (index) and run (generation).
#[derive(Debug)]
enum Event {
    Launched { idx: usize, generation: u64, launched: Launched },
    Exited { idx: usize, generation: u64, info: ExitInfo },
    Probe { idx: usize, generation: u64, report: ProbeReport },
}

/// Runs the worker of one pod until it is gone (or `cancel` fires: the agent stops).
pub async fn run(ctx: Arc<WorkerContext>, pod: Pod, rx: watch::Receiver<Option<Pod>>, cancel: CancellationToken) {
    let worker = Worker::new(ctx, pod, cancel);
    let span = tracing::info_span!("pod", pod = %worker.describe());
    tracing::Instrument::instrument(worker.run(rx), span).await;
}

struct Worker {
    ctx: Arc<WorkerContext>,
    pod: Pod,
    pod_ref: PodRef,
    policy: RestartPolicy,
    /// The init containers (first `n_init`, in spec order), then the app containers.
    slots: Vec<Slot>,
    n_init: usize,
    /// Every init container has done its part; app containers may run (never undone).
    initialized: bool,
    events: PodEvents,
    /// The runtime running this pod, chosen once at set-up (`choose`).
    runtime: Option<Arc<dyn ContainerRuntime>>,
    pod_ip: Option<IpAddr>,
    /// Whether this worker holds an IPAM assignment (released once the pod is done).
    holds_ip: bool,
    volumes: Option<Arc<dyn PodVolumes>>,
    setup_retry: Option<Instant>,
    start_time: Option<Timestamp>,
    last_status: Option<PodStatus>,
    /// While a launch started at most [`REPORT_HOLD`] ago is in flight, the status report
    /// waits until this instant: a cached WASM artifact starts in a millisecond or two, so
    /// the first report can already say Running instead of ContainerCreating — one status
    /// write per pod start instead of two, which is what pod start-up latency is made of.
    report_hold: Option<Instant>,
    /// The pod was already finished when this worker started: leave it alone.
    finished_before: bool,
    /// All containers are done for good.
    done: bool,
    /// Terminating: nothing is (re)started any more.
    stopping: bool,
    tasks: JoinSet<()>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    cancel: CancellationToken,
    /// Fires when the pod starts terminating (or the agent stops): postStart hooks under way
    /// are abandoned.
    terminating: CancellationToken,
}

impl Worker {
    fn new(ctx: Arc<WorkerContext>, pod: Pod, cancel: CancellationToken) -> Worker {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        let previous = |list: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>, name: &str| {
            list.and_then(|p| p.iter().find(|s| s.name == name)).cloned()
        };
        let init = spec.init_containers.iter().flatten().map(|c| {
            let prev = previous(status.and_then(|s| s.init_container_statuses.as_ref()), &c.name);
            Slot::new(SlotKind::of_init(c), c.clone(), prev.as_ref())
        });
        let app = spec.containers.iter().map(|c| {
            let prev = previous(status.and_then(|s| s.container_statuses.as_ref()), &c.name);
            Slot::new(SlotKind::App, c.clone(), prev.as_ref())
        });
        let slots: Vec<Slot> = init.chain(app).collect();
        let n_init = spec.init_containers.as_ref().map_or(0, Vec::len);
        // After an agent restart: a pod already initialized does not run its init containers again.
        let initialized = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Initialized" && c.status == "True"));
        let finished_before = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(is_terminal);
        let (tx, rx) = mpsc::unbounded_channel();
        let own = cancel.child_token();
        let pod_ref = PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        Worker {
            policy: RestartPolicy::parse(spec.restart_policy.as_deref()),
            events: PodEvents::new(ctx.events.clone(), &pod),
            n_init,
            initialized,
            start_time: pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            ctx,
            pod,
            pod_ref,
            slots,
            runtime: None,
            pod_ip: None,
            holds_ip: false,
            volumes: None,
            setup_retry: None,
            last_status: None,
            report_hold: None,
            finished_before,
            done: finished_before,
            stopping: false,
            tasks: JoinSet::new(),
            tx,
            rx,
            terminating: own.child_token(),
            cancel: own,
        }
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.pod_ref.namespace, self.pod_ref.name)
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace)
    }

    async fn run(mut self, mut pod_rx: watch::Receiver<Option<Pod>>) {
        info!(finished = self.finished_before, "pod worker started");
        loop {
            if self.pod.metadata.deletion_timestamp.is_some() {
                return self.end(Ending::Graceful).await;
            }
            if !self.done {
                self.sync().await;
            }
            self.memory_rejections();
            if !self.holding_report() {
                self.report().await;
            }
            let wake = self.wake_at();
            tokio::select! {
                _ = self.cancel.cancelled() => return self.shutdown().await,
                changed = pod_rx.changed() => {
                    if changed.is_err() {
                        // The dispatcher is gone: the agent is stopping.
                        return self.shutdown().await;
                    }
                    let latest = pod_rx.borrow_and_update().clone();
                    match latest {
                        Some(pod) => self.pod = pod,
                        None => return self.end(Ending::Gone).await,
                    }
                }
                Some(event) = self.rx.recv() => self.handle(event),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn wake_at(&self) -> Instant {
        let resync = Instant::now() + RESYNC;
        self.slots
            .iter()
            .filter_map(Slot::wake_at)
            .chain(self.setup_retry)
            .chain(self.report_hold)
            .fold(resync, Instant::min)
    }

    /// Whether the status report should wait for a launch in flight (see `report_hold`).
    fn holding_report(&mut self) -> bool {
        let launching = self.slots.iter().any(|s| matches!(s.run, Run::Launching));
        match self.report_hold {
            Some(until) if launching && Instant::now() < until => true,
            _ => {
                self.report_hold = None;
                false
            }
        }
    }

    /// Prepares the IP and volumes, starts what is due, and notices when the pod is done.
    async fn sync(&mut self) {
        let now = Instant::now();
        if self.setup_retry.is_some_and(|t| t > now) {
            return;
        }
        self.start_time.get_or_insert_with(Timestamp::now);
        if let Err(message) = self.setup().await {
            warn!(%message, "pod set-up failed; retrying");
            for slot in &mut self.slots {
                if let Run::Waiting { message: m, .. } = &mut slot.run {
                    *m = Some(message.clone());
                }
            }
            self.setup_retry = Some(now + self.ctx.backoff.base.min(RESYNC));
            return;
        }
        self.setup_retry = None;
        let plan = init::plan(&self.slots, self.initialized, now);
        if plan.initialized && !self.initialized && self.n_init > 0 {
            info!("init containers done");
        }
        self.initialized = plan.initialized;
        for idx in plan.launch {
            self.launch(idx);
        }
        let (init, app) = self.views();
        if is_terminal(pod_phase(self.policy, &init, &app)) {
            info!("all containers finished");
            self.done = true;
            self.stop_sidecars();
            self.release_ip().await;
        }
    }

    /// Views of the init containers and of the app containers.
    fn views(&self) -> (Vec<status::ContainerView>, Vec<status::ContainerView>) {
        let (init, app) = self.slots.split_at(self.n_init.min(self.slots.len()));
        (init.iter().map(Slot::view).collect(), app.iter().map(Slot::view).collect())
    }

    /// The `involvedObject.fieldPath` of slot `idx`.
    fn field_path(&self, idx: usize) -> String {
        let slot = &self.slots[idx];
        field_path(slot.kind.is_init(), slot.name())
    }

    /// The pod is done (its app containers ended for good): sidecars still running are stopped,
    /// as Kubernetes does; their exits are recorded and not restarted (`done`).
    fn stop_sidecars(&mut self) {
        let grace = self.termination_grace();
        for idx in 0..self.slots.len() {
            let Some(handle) = self.slots[idx].handle() else { continue };
            let name = self.slots[idx].name().to_string();
            self.events.container(
                &self.field_path(idx),
                EventType::Normal,
                "Killing",
                format!("Stopping container {name}"),
            );
            self.tasks.spawn(self.stopper(idx, handle, grace));
        }
    }

    /// Turns requests an HTTP component refused for memory into a `Warning` event (counted).
    fn memory_rejections(&mut self) {
        for idx in 0..self.slots.len() {
            let new = self.slots[idx].new_memory_rejections();
            if new == 0 {
                continue;
            }
            let name = self.slots[idx].name().to_string();
            warn!(container = %name, requests = new, "requests refused over the memory limit");
            self.events.container_at(
                &self.field_path(idx),
                EventType::Warning,
                "MemoryLimitExceeded",
                format!("Container {name}: a request would have exceeded the memory limit (resources.limits.memory) and was answered 503"),
                i32::try_from(new).unwrap_or(i32::MAX),
                Timestamp::now(),
            );
        }
    }

    /// The runtime, pod IP and volumes, once.
    async fn setup(&mut self) -> Result<(), String> {
        if self.runtime.is_none() {
            // The pod's own pull secrets count when classifying its images.
            let keyring = self.ctx.env.pull_keyring(&self.pod).await.unwrap_or_default();
            let creds = self.ctx.creds.with_pod_keyring(keyring);
            // A runtime the node lacks is the containers' error (each launch reports it), not set-up's.
            self.runtime = choose::choose_runtime(&self.pod, &self.ctx.runtimes, &creds).await.ok();
        }
        if self.pod_ip.is_none() {
            let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
            if host_network {
                self.pod_ip = Some(self.ctx.host_ip);
            } else {
                let ip = self.allocate_ip()?;
                self.holds_ip = true;
                // A runtime with its own pod network (OCI: a namespace attached by CNI) puts the
                // address inside the pod; otherwise the node serves it on the bridge/loopback.
                let own_network = self.runtime.as_ref().is_some_and(|r| r.networks_pods());
                if !own_network {
                    self.ctx.net.add_pod_ip(ip).await.map_err(|e| format!("setting up pod IP {ip}: {e}"))?;
                }
                self.pod_ip = Some(IpAddr::V4(ip));
            }
        }
        if self.volumes.is_none() {
            let volumes =
                self.ctx.env.prepare_volumes(&self.pod).await.map_err(|e| format!("mounting volumes: {e}"))?;
            self.volumes = Some(Arc::from(volumes));
        }
        Ok(())
    }

    fn allocate_ip(&self) -> Result<Ipv4Addr, String> {
        let mut ipam = self.ctx.ipam.lock().map_err(|_| "IPAM lock poisoned".to_string())?;
        ipam.allocate(&self.pod_ref.uid).map_err(|e| format!("allocating a pod IP: {e}"))
    }

    async fn release_ip(&mut self) {
        // The runtimes' share of the pod (an OCI sandbox holding the address) goes first.
        for runtime in &self.ctx.runtimes {
            runtime.pod_done(&self.pod_ref).await;
        }
        if !std::mem::take(&mut self.holds_ip) {
            return;
        }
        let released = match self.ctx.ipam.lock() {
            Ok(mut ipam) => ipam.release(&self.pod_ref.uid),
            Err(_) => return warn!("IPAM lock poisoned; pod IP not released"),
        };
        match released {
            Ok(Some(ip)) => {
                if let Err(e) = self.ctx.net.remove_pod_ip(ip).await {
                    warn!(error = %e, "removing the pod IP");
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "releasing the pod IP"),
        }
    }

    /// Starts a launch task for container `idx`.
    fn launch(&mut self, idx: usize) {
        let (Some(pod_ip), Some(volumes)) = (self.pod_ip, self.volumes.clone()) else { return };
        let field_path = self.field_path(idx);
        let grace = self.termination_grace();
        let slot = &mut self.slots[idx];
        let policy = slot.kind.policy(self.policy);
        let prepared = self
            .runtime
            .clone()
            .map_or_else(|| spec::runtime_for(&self.pod, &self.ctx.runtimes), Ok)
            .and_then(|rt| volumes.mounts(&slot.container).map(|m| (rt, m)).map_err(|e| e.to_string()));
        let (runtime, mounts) = match prepared {
            Ok(p) => p,
            Err(message) => {
                self.events.container(&field_path, EventType::Warning, "Failed", format!("Error: {message}"));
                return slot.launch_failed(LaunchFailure::Config(message), None, policy, &self.ctx.backoff);
            }
        };
        let plan = LaunchPlan {
            pod: self.pod.clone(),
            pod_ref: self.pod_ref.clone(),
            container: slot.container.clone(),
            runtime,
            env: self.ctx.env.clone(),
            creds: self.ctx.creds.clone(),
            pod_ip,
            mounts,
            run_count: slot.next_run_count(),
            events: self.events.clone(),
            field_path,
            adopt: slot.adopt.as_ref().map(|(id, _)| id.clone()),
            http: self.ctx.http.clone(),
            terminating: self.terminating.clone(),
            grace,
            cluster_dns: self.ctx.cluster_dns,
        };
        let generation = slot.launching();
        self.report_hold.get_or_insert_with(|| Instant::now() + REPORT_HOLD);
        debug!(container = slot.name(), generation, "launching");
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            let launched = launch::launch(plan).await;
            let _ = tx.send(Event::Launched { idx, generation, launched });
        });
    }

    /// Patches `pods/status` when the computed status differs from the last one reported.
    async fn report(&mut self) {
        if self.finished_before {
            return;
        }
        let (init, app) = self.views();
        let status = pod_status(&StatusInput {
            pod: &self.pod,
            previous: self.last_status.as_ref(),
            init_containers: &init,
            containers: &app,
            pod_ip: self.pod_ip,
            host_ip: self.ctx.host_ip,
            start_time: self.start_time,
            now: Timestamp::now(),
        });
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        let patch = Patch::Merge(json!({ "status": status }));
        match self.api().patch_status(&self.pod_ref.name, &PatchParams::default(), &patch).await {
            Ok(_) => {
                debug!(phase = ?status.phase, "status reported");
                self.last_status = Some(status);
            }
            Err(e) => warn!(error = %e, "reporting pod status failed; will retry"),
        }
    }
}
