//! Launching one run of a container: pull, env, logs, start, postStart hook — as one owned
//! task per launch, so a slow pull never blocks the worker from seeing a deletion.
//!
//! What it owns: turning a pod's container into a [`ContainerSpec`] and handing it to the
//! runtime, running its `lifecycle.postStart` hook (the container is reported Running only
//! once the hook returned, as in the kubelet; a failed hook kills the run), and the events of
//! those steps as the kubelet writes them (`Pulling`, `Pulled`, `Failed`, `Created`,
//! `Started`, `FailedPostStartHook`). What it does not: decide whether to launch or what a
//! failure means (the slot does).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::container::LaunchFailure;
use super::spec;
use crate::events::{EventType, PodEvents, go_duration};
use crate::lifecycle::{self, HookTarget};
use crate::pod_env::PodEnvironment;
use crate::runtime::{
    ContainerRuntime, ContainerSpec, ExitInfo, Mount, PodRef, PullCredentials, PullPolicy, RunningContainer, StdinSpec,
};

/// Everything one launch needs, resolved by the worker beforehand.
#[derive(Debug)]
pub struct LaunchPlan {
    pub pod: Pod,
    pub pod_ref: PodRef,
    pub container: Container,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub env: Arc<dyn PodEnvironment>,
    /// The node's own credentials; the pod's `imagePullSecrets` are read at launch, in front.
    pub creds: PullCredentials,
    pub pod_ip: IpAddr,
    pub mounts: Vec<Mount>,
    /// The restart count the run will have (names its log).
    pub run_count: i32,
    pub events: PodEvents,
    /// The container's `involvedObject.fieldPath`.
    pub field_path: String,
    /// A container an earlier agent process started (its `containerID`): taken over when the
    /// runtime still has it, instead of starting a new run.
    pub adopt: Option<String>,
    /// For httpGet lifecycle hooks.
    pub http: reqwest::Client,
    /// Fires when the pod terminates: a postStart hook still running is abandoned.
    pub terminating: CancellationToken,
    /// `terminationGracePeriodSeconds`: what a run killed for a failed postStart hook gets.
    pub grace: Duration,
    /// The cluster DNS address (`ClusterFirst` pods' nameserver).
    pub cluster_dns: Option<IpAddr>,
}

/// What a launch produced.
#[derive(Debug)]
pub struct Launched {
    pub result: Result<Arc<dyn RunningContainer>, LaunchFailure>,
    /// The resolved image digest, when the pull got that far.
    pub image_id: Option<String>,
    /// The container was taken over from an earlier agent process, not started.
    pub adopted: bool,
    /// The run started but its postStart hook failed: it was killed and ended like this
    /// (restarted per restart policy, as if it had exited).
    pub post_start_failed: Option<ExitInfo>,
}

/// Pulls, resolves env, opens the log and starts the container.
pub async fn launch(plan: LaunchPlan) -> Launched {
    let c = &plan.container;
    if let Some(id) = &plan.adopt
        && let Some(running) = plan.runtime.adopt(&plan.pod_ref, &c.name, id).await
    {
        return Launched { result: Ok(Arc::from(running)), image_id: None, adopted: true, post_start_failed: None };
    }
    let event = |type_: EventType, reason: &str, message: String| {
        plan.events.container(&plan.field_path, type_, reason, message);
    };
    let image = c.image.clone().unwrap_or_default();
    // Read at every launch, so a Secret created or fixed after the pod is used at the next retry.
    let creds = match plan.env.pull_keyring(&plan.pod).await {
        Ok(keyring) => plan.creds.with_pod_keyring(keyring),
        Err(e) => {
            event(EventType::Warning, "Failed", format!("Failed to pull image {image:?}: {e}"));
            let failure = LaunchFailure::Pull { reason: "ErrImagePull".into(), message: e.to_string() };
            return Launched { result: Err(failure), image_id: None, adopted: false, post_start_failed: None };
        }
    };
    let policy = spec::pull_policy(c);
    let present = policy != PullPolicy::Always && plan.runtime.image_present(&image).await;
    if !present && policy != PullPolicy::Never {
        event(EventType::Normal, "Pulling", format!("Pulling image {image:?}"));
    }
    let began = Instant::now();
    let pulled = match plan.runtime.pull(&image, policy, &creds).await {
        Ok(i) => {
            let message = if present {
                format!("Container image {image:?} already present on machine")
            } else {
                format!("Successfully pulled image {image:?} in {}", go_duration(began.elapsed()))
            };
            event(EventType::Normal, "Pulled", message);
            i
        }
        Err(e) => {
            event(EventType::Warning, "Failed", format!("Failed to pull image {image:?}: {}", e.message));
            return Launched {
                result: Err(LaunchFailure::Pull { reason: e.reason, message: e.message }),
                image_id: None,
                adopted: false,
                post_start_failed: None,
            };
        }
    };
    let image_id = Some(pulled.image_id.clone());
    let fail = |f: LaunchFailure| {
        let message = match &f {
            LaunchFailure::Config(m) => m,
            LaunchFailure::Pull { message, .. } | LaunchFailure::Start { message, .. } => message,
        };
        event(EventType::Warning, "Failed", format!("Error: {message}"));
        Launched { result: Err(f), image_id: image_id.clone(), adopted: false, post_start_failed: None }
    };
    let (memory_limit, cpu_limit_millis) = match spec::limits(c) {
        Ok(l) => l,
        Err(e) => return fail(LaunchFailure::Config(e)),
    };
    let env = match plan.env.container_env(&plan.pod, c, plan.pod_ip).await {
        Ok(env) => env,
        Err(e) => return fail(LaunchFailure::Config(e.to_string())),
    };
    let logs = match plan.env.open_log(&plan.pod_ref, &c.name, plan.run_count) {
        Ok(l) => l,
        Err(e) => return fail(LaunchFailure::Config(format!("opening the log: {e}"))),
    };
    let spec = ContainerSpec {
        pod: plan.pod_ref.clone(),
        container_name: c.name.clone(),
        image: pulled,
        argv: spec::argv(c),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone(),
        security: spec::security(&plan.pod, c),
        cpu_request_millis: spec::cpu_request(c),
        sandbox: spec::sandbox(&plan.pod, plan.cluster_dns),
        env,
        mounts: plan.mounts.clone(),
        pod_ip: plan.pod_ip,
        ports: spec::tcp_ports(c),
        memory_limit,
        cpu_limit_millis,
        logs,
        annotations: plan.pod.metadata.annotations.clone().unwrap_or_default(),
        // Only the runtime knows the sandbox (and sets it when the pod has one).
        netns: None,
        stdin: StdinSpec {
            open: c.stdin.unwrap_or(false),
            once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
        },
    };
    let running: Arc<dyn RunningContainer> = match plan.runtime.start(spec).await {
        Ok(running) => Arc::from(running),
        Err(e) => return fail(LaunchFailure::Start { reason: e.reason, message: e.message }),
    };
    event(EventType::Normal, "Created", format!("Created container {}", c.name));
    event(EventType::Normal, "Started", format!("Started container {}", c.name));
    let post_start_failed = post_start(&plan, running.clone()).await;
    Launched { result: Ok(running), image_id, adopted: false, post_start_failed }
}

/// Runs the container's postStart hook; when it fails, kills the run as the kubelet does
/// (preStop first, within the pod's grace period) and returns how it ended.
async fn post_start(plan: &LaunchPlan, running: Arc<dyn RunningContainer>) -> Option<ExitInfo> {
    let target = HookTarget {
        container: plan.container.clone(),
        handle: running.clone(),
        pod_ip: plan.pod_ip,
        http: plan.http.clone(),
    };
    let message = lifecycle::post_start(&target, &plan.terminating).await.err()?;
    let name = &plan.container.name;
    tracing::warn!(container = %name, %message, "postStart hook failed; killing the container");
    let event = |type_: EventType, reason: &str, message: String| {
        plan.events.container(&plan.field_path, type_, reason, message);
    };
    event(EventType::Warning, "FailedPostStartHook", format!("PostStartHook failed: {message}"));
    event(EventType::Normal, "Killing", format!("FailedPostStartHook: stopping container {name}"));
    lifecycle::stop(&target, plan.grace, |m| {
        event(EventType::Warning, "FailedPreStopHook", format!("PreStopHook failed: {m}"));
    })
    .await;
    let ended = running.wait().await;
    Some(ExitInfo { message: Some(format!("PostStartHook failed: {message}")), ..ended })
}
