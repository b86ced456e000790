//! The agent in-process against a real `skiff` API server (started by the e2e harness; run
//! `cargo build -p skiff` first), with a test runtime whose containers "run" in memory: an
//! image `fake/forever` runs until stopped, `fake/exit-N` exits with code N shortly after it
//! starts. Real runtimes are exercised by the e2e suite once they are wired in.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use skiff_node::pod_env::{PodEnvError, PodEnvironment, PodVolumes};
use skiff_node::runtime::{
    ContainerRuntime, ContainerSpec, ContainerStats, ExitInfo, ImageRef, LogSink, LogStream, Mount, PodRef,
    PullCredentials, PullPolicy, RunningContainer, RuntimeError,
};
use skiff_node::worker::backoff::BackoffConfig;
use skiff_node::{Agent, AgentConfig, RunningAgent};
use skiff_tests::{Skiff, StoreKind, wait_until};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(25);
const POLL: Duration = Duration::from_millis(200);

// ---- the test runtime --------------------------------------------------------------------

#[derive(Debug, Default)]
struct FakeRuntime {
    /// `(pod name, container, grace)` of every stop asked for.
    stops: Arc<Mutex<Vec<(String, Duration)>>>,
    starts: Mutex<Vec<ContainerSpec>>,
}

#[derive(Debug)]
struct FakeContainer {
    pod: String,
    exit: watch::Sender<Option<ExitInfo>>,
    stops: Arc<Mutex<Vec<(String, Duration)>>>,
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn name(&self) -> &'static str {
        "wasm"
    }

    async fn pull(&self, image: &str, _policy: PullPolicy, _creds: &PullCredentials) -> Result<ImageRef, RuntimeError> {
        if !image.starts_with("fake/") {
            return Err(RuntimeError::new("ErrImagePull", format!("{image}: not found")));
        }
        Ok(ImageRef { reference: image.into(), image_id: format!("sha256:{}", image.len()) })
    }

    async fn start(&self, spec: ContainerSpec) -> Result<Box<dyn RunningContainer>, RuntimeError> {
        let (exit, _) = watch::channel(None);
        let c = FakeContainer { pod: spec.pod.name.clone(), exit, stops: self.stops.clone() };
        if let Some(code) = spec.image.reference.strip_prefix("fake/exit-") {
            let code: i32 = code.parse().map_err(|_| RuntimeError::new("RunContainerError", "bad exit code"))?;
            let tx = c.exit.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let reason = if code == 0 { "Completed" } else { "Error" };
                tx.send_if_modified(|v| {
                    v.is_none()
                        && v.replace(ExitInfo { exit_code: code, reason: reason.into(), message: None }).is_none()
                });
            });
        }
        spec.logs.write(LogStream::Stdout, b"started\n");
        self.starts.lock().expect("lock").push(spec);
        Ok(Box::new(c))
    }
}

#[async_trait]
impl RunningContainer for FakeContainer {
    async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.subscribe();
        let info = rx.wait_for(Option::is_some).await.map(|v| v.clone());
        info.ok().flatten().unwrap_or(ExitInfo { exit_code: 137, reason: "Error".into(), message: None })
    }

    async fn stop(&self, grace: Duration) {
        self.stops.lock().expect("lock").push((self.pod.clone(), grace));
        self.exit.send_if_modified(|v| {
            v.is_none() && v.replace(ExitInfo { exit_code: 0, reason: "Completed".into(), message: None }).is_none()
        });
    }

    fn stats(&self) -> ContainerStats {
        ContainerStats::default()
    }
}

// ---- the test pod environment -------------------------------------------------------------

#[derive(Debug, Default)]
struct FakeEnv {
    cleaned: Mutex<Vec<PodRef>>,
}

#[derive(Debug)]
struct NoVolumes;

impl PodVolumes for NoVolumes {
    fn mounts(&self, _c: &Container) -> Result<Vec<Mount>, PodEnvError> {
        Ok(vec![])
    }
}

#[derive(Debug, Default)]
struct MemLog(Mutex<Vec<u8>>);

impl LogSink for MemLog {
    fn write(&self, _stream: LogStream, bytes: &[u8]) {
        self.0.lock().expect("lock").extend_from_slice(bytes);
    }
}

#[async_trait]
impl PodEnvironment for FakeEnv {
    async fn container_env(
        &self,
        _pod: &Pod,
        c: &Container,
        _ip: IpAddr,
    ) -> Result<Vec<(String, String)>, PodEnvError> {
        Ok(c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect())
    }

    async fn prepare_volumes(&self, _pod: &Pod) -> Result<Box<dyn PodVolumes>, PodEnvError> {
        Ok(Box::new(NoVolumes))
    }

    async fn cleanup(&self, pod: &PodRef) {
        self.cleaned.lock().expect("lock").push(pod.clone());
    }

    fn open_log(&self, _pod: &PodRef, _c: &str, _restart: i32) -> Result<Arc<dyn LogSink>, PodEnvError> {
        Ok(Arc::new(MemLog::default()))
    }
}

// ---- fixtures ------------------------------------------------------------------------------

struct Harness {
    skiff: Skiff,
    client: kube::Client,
    runtime: Arc<FakeRuntime>,
    env: Arc<FakeEnv>,
    agent: Option<RunningAgent>,
    _data: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Result<Harness> {
        let skiff = Skiff::start(StoreKind::Embedded).await?;
        let client = skiff.kube_client().await?;
        let data = tempfile::tempdir()?;
        let runtime = Arc::new(FakeRuntime::default());
        let env = Arc::new(FakeEnv::default());
        let agent = Self::start_agent(&client, data.path(), runtime.clone(), env.clone()).await?;
        Ok(Harness { skiff, client, runtime, env, agent: Some(agent), _data: data })
    }

    /// Stops the agent and starts a new one (new runtime, same data dir), as after a restart.
    async fn restart_agent(&mut self) -> Result<()> {
        self.agent.take().context("agent")?.stop().await;
        self.runtime = Arc::new(FakeRuntime::default());
        let agent = Self::start_agent(&self.client, self._data.path(), self.runtime.clone(), self.env.clone()).await?;
        self.agent = Some(agent);
        Ok(())
    }

    async fn start_agent(
        client: &kube::Client,
        data: &std::path::Path,
        runtime: Arc<FakeRuntime>,
        env: Arc<FakeEnv>,
    ) -> Result<RunningAgent> {
        let mut cfg = AgentConfig::new("node-a", data);
        cfg.node_api_port = 10999;
        cfg.lease_interval = Duration::from_secs(1);
        cfg.status_interval = Duration::from_secs(1);
        cfg.backoff = BackoffConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(4),
            reset: Duration::from_secs(600),
        };
        cfg.labels = BTreeMap::from([("zone".into(), "test".into())]);
        Agent::start(cfg, client.clone(), vec![runtime], env, CancellationToken::new())
            .await
            .context("starting the agent")
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create(&self, pod: Pod) -> Result<()> {
        self.pods().create(&PostParams::default(), &pod).await.context("creating a pod")?;
        Ok(())
    }

    /// Waits until pod `name` satisfies `check`; returns it.
    async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Result<Pod> {
        let pods = self.pods();
        let result = wait_until(what, WAIT, POLL, || {
            let pods = pods.clone();
            let check = &check;
            async move {
                let pod = pods.get(name).await?;
                Ok(check(&pod).then_some(pod))
            }
        })
        .await;
        if result.is_err() {
            let pod = self.pods().get_opt(name).await.ok().flatten();
            eprintln!("last seen {name}: {:#?}", pod.and_then(|p| p.status));
            eprintln!("server log:\n{}", self.skiff.log_tail(20));
        }
        result
    }
}

fn pod(name: &str, image: &str, policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            restart_policy: Some(policy.into()),
            termination_grace_period_seconds: Some(5),
            containers: vec![Container { name: "main".into(), image: Some(image.into()), ..Container::default() }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn condition(p: &Pod, type_: &str) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn main_status(p: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

fn waiting_reason(p: &Pod) -> String {
    main_status(p)
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
        .unwrap_or_default()
}

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_node_and_renews_lease() -> Result<()> {
    let h = Harness::start().await?;
    let nodes: Api<Node> = Api::all(h.client.clone());
    let node = wait_until("node Ready", WAIT, POLL, || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("node-a").await?;
            let ready = n
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(ready.then_some(n))
        }
    })
    .await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    ensure!(labels.get("skiff.dev/runtimes").map(String::as_str) == Some("wasm"), "labels: {labels:?}");
    ensure!(labels.get("kubernetes.io/hostname").map(String::as_str) == Some("node-a"));
    ensure!(labels.get("kubernetes.io/os").map(String::as_str) == Some("linux"));
    ensure!(labels.get("zone").map(String::as_str) == Some("test"));
    let status = node.status.clone().context("node status")?;
    let cap = status.capacity.clone().context("capacity")?;
    ensure!(cap.contains_key("cpu") && cap.contains_key("memory") && cap["pods"].0 == "110", "capacity: {cap:?}");
    ensure!(status.daemon_endpoints.and_then(|d| d.kubelet_endpoint).map(|e| e.port) == Some(10999));
    ensure!(node.spec.and_then(|s| s.pod_cidr).as_deref() == Some("127.244.0.0/24"));

    let leases: Api<Lease> = Api::namespaced(h.client.clone(), "kube-node-lease");
    let renew = |l: &Lease| l.spec.as_ref().and_then(|s| s.renew_time.clone()).map(|t| t.0);
    let first = wait_until("lease created", WAIT, POLL, || {
        let leases = leases.clone();
        async move { Ok(leases.get_opt("node-a").await?.and_then(|l| renew(&l))) }
    })
    .await?;
    wait_until("lease renewed", WAIT, POLL, || {
        let leases = leases.clone();
        async move { Ok(leases.get("node-a").await.ok().and_then(|l| renew(&l)).filter(|t| *t > first)) }
    })
    .await?;
    let lease = leases.get("node-a").await?;
    let spec = lease.spec.context("lease spec")?;
    ensure!(spec.holder_identity.as_deref() == Some("node-a") && spec.lease_duration_seconds == Some(40));
    h.agent.context("agent")?.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_get_ips_and_ready_and_are_deleted_gracefully() -> Result<()> {
    let h = Harness::start().await?;
    // A readiness probe against a port the test controls.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut web = pod("web", "fake/forever", "Always");
    if let Some(spec) = web.spec.as_mut() {
        spec.containers[0].readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction { host: Some("127.0.0.1".into()), port: IntOrString::Int(port.into()) }),
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..Probe::default()
        });
    }
    h.create(web).await?;
    let running = h
        .wait_pod("web", "web Running and Ready", |p| phase(p) == "Running" && condition(p, "Ready") == "True")
        .await?;
    let status = running.status.clone().context("status")?;
    let ip: Ipv4Addr = status.pod_ip.clone().context("podIP")?.parse()?;
    ensure!(ip.octets()[..3] == [127, 244, 0] && ip.octets()[3] >= 2, "pod IP {ip}");
    ensure!(status.pod_ips.map(|v| v.len()) == Some(1));
    ensure!(status.host_ip.as_deref() == Some("127.0.0.1"));
    ensure!(status.start_time.is_some() && status.qos_class.as_deref() == Some("BestEffort"));
    for c in ["PodScheduled", "Initialized", "ContainersReady"] {
        ensure!(condition(&running, c) == "True", "{c}");
    }
    let cs = main_status(&running).context("container status")?;
    ensure!(cs.ready && cs.started == Some(true) && cs.image_id.starts_with("sha256:"), "{cs:?}");
    {
        let starts = h.runtime.starts.lock().expect("lock");
        let spec = starts.iter().find(|s| s.pod.name == "web").context("web started")?;
        ensure!(spec.pod_ip == IpAddr::V4(ip), "the runtime got the pod IP");
    }

    // The probe target goes away: not ready.
    drop(listener);
    h.wait_pod("web", "web not Ready", |p| condition(p, "Ready") == "False" && phase(p) == "Running").await?;

    // Graceful deletion: the container is stopped with the pod's grace, the object disappears.
    let started = std::time::Instant::now();
    h.pods().delete("web", &DeleteParams { grace_period_seconds: Some(3), ..DeleteParams::default() }).await?;
    let pods = h.pods();
    wait_until("web deleted", WAIT, POLL, || {
        let pods = pods.clone();
        async move { Ok(pods.get_opt("web").await?.is_none().then_some(())) }
    })
    .await?;
    ensure!(started.elapsed() < Duration::from_secs(10), "deleted in {:?}", started.elapsed());
    let stops = h.runtime.stops.lock().expect("lock").clone();
    ensure!(stops.iter().any(|(p, g)| p == "web" && *g == Duration::from_secs(3)), "stops: {stops:?}");
    wait_until("web cleaned up", WAIT, POLL, || async {
        Ok(h.env.cleaned.lock().expect("lock").iter().any(|p| p.name == "web").then_some(()))
    })
    .await?;
    h.agent.context("agent")?.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_and_crash_loop_back_off() -> Result<()> {
    let h = Harness::start().await?;
    h.create(pod("crash", "fake/exit-1", "Always")).await?;
    h.create(pod("once", "fake/exit-1", "Never")).await?;
    h.create(pod("job", "fake/exit-0", "OnFailure")).await?;
    h.create(pod("noimage", "elsewhere/app:1", "Always")).await?;

    let failed = h.wait_pod("once", "once Failed", |p| phase(p) == "Failed").await?;
    let term = main_status(&failed).and_then(|s| s.state.clone()).and_then(|s| s.terminated).context("terminated")?;
    ensure!(term.exit_code == 1 && term.reason.as_deref() == Some("Error"), "{term:?}");
    ensure!(condition(&failed, "Ready") == "False");

    h.wait_pod("job", "job Succeeded", |p| phase(p) == "Succeeded").await?;

    let looping = h
        .wait_pod("crash", "crash restarting in back-off", |p| {
            main_status(p).is_some_and(|s| s.restart_count >= 2) && waiting_reason(p) == "CrashLoopBackOff"
        })
        .await?;
    ensure!(phase(&looping) == "Running", "a crash-looping pod is Running");
    let last =
        main_status(&looping).and_then(|s| s.last_state.clone()).and_then(|s| s.terminated).context("lastState")?;
    ensure!(last.exit_code == 1);

    h.wait_pod("noimage", "pull back-off", |p| waiting_reason(p) == "ImagePullBackOff" && phase(p) == "Pending")
        .await?;

    // The finished pods gave their IPs back: a new pod gets a fresh address, and stopping the
    // agent stops the crash-looping container.
    h.agent.context("agent")?.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_init_containers_do_not_run_again_after_an_agent_restart() -> Result<()> {
    let mut h = Harness::start().await?;
    let mut p = pod("staged", "fake/forever", "Always");
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers =
            Some(vec![Container { name: "setup".into(), image: Some("fake/exit-0".into()), ..Container::default() }]);
    }
    h.create(p).await?;
    h.wait_pod("staged", "staged Running after its init container", |p| {
        phase(p) == "Running" && condition(p, "Initialized") == "True"
    })
    .await?;
    let started = |rt: &FakeRuntime| -> Vec<String> {
        rt.starts.lock().expect("lock").iter().map(|s| s.container_name.clone()).collect()
    };
    ensure!(started(&h.runtime) == ["setup", "main"], "first agent started {:?}", started(&h.runtime));

    h.restart_agent().await?;
    let runtime = h.runtime.clone();
    wait_until("the app container started again", WAIT, POLL, || {
        let runtime = runtime.clone();
        async move { Ok((!started(&runtime).is_empty()).then_some(())) }
    })
    .await?;
    let pod = h.wait_pod("staged", "staged Running again", |p| phase(p) == "Running").await?;
    ensure!(started(&h.runtime) == ["main"], "after the restart the agent started {:?}", started(&h.runtime));
    ensure!(condition(&pod, "Initialized") == "True");
    let init = pod.status.as_ref().and_then(|s| s.init_container_statuses.as_ref()).context("init statuses")?;
    let term = init[0].state.as_ref().and_then(|s| s.terminated.as_ref()).context("terminated")?;
    ensure!(term.exit_code == 0 && init[0].restart_count == 0 && init[0].ready, "{init:?}");
    h.agent.take().context("agent")?.stop().await;
    Ok(())
}
