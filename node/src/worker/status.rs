//! Pod status from container states — pure, as the kubelet's `generateAPIPodStatus`.
//!
//! What it owns: the phase (`getPhase`, init containers included), the four conditions with
//! `lastTransitionTime` that only moves when a condition's status changes (`Initialized`
//! follows the init containers), `initContainerStatuses` and `containerStatuses` (with the
//! `PodInitializing` waiting reason while init containers run), IPs, start time and QoS class.
//! What it does not: decide container states (the worker does), decide which container starts
//! next (`init`), or talk to the API.

use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::backoff::RestartPolicy;

/// How a run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewState {
    Waiting { reason: String, message: Option<String> },
    Running { started_at: Timestamp },
    Terminated(Terminated),
}

/// What the status shows of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: ViewState,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// A sidecar: an init container with `restartPolicy: Always` (started in order, then kept
    /// running beside the app containers).
    pub restartable: bool,
    /// `containerID` (`runc://…`) of the current or last run, when the runtime has one.
    pub container_id: Option<String>,
}

impl ContainerView {
    /// Ran to completion with exit code 0 (a regular init container is then done).
    pub fn completed(&self) -> bool {
        matches!(&self.state, ViewState::Terminated(t) if t.exit_code == 0)
    }

    /// Has run at least once (running now, ended, or waiting to restart after a run).
    pub fn has_run(&self) -> bool {
        !matches!(self.state, ViewState::Waiting { .. }) || self.last_terminated.is_some()
    }

    /// An init container that the pod no longer waits for: a regular one completed, a
    /// sidecar started.
    pub fn init_done(&self) -> bool {
        if self.restartable {
            self.started && matches!(self.state, ViewState::Running { .. })
        } else {
            self.completed()
        }
    }
}

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The pod as last seen (its spec).
    pub pod: &'a Pod,
    /// The status last reported (for condition transition times); the pod's own status if
    /// this worker has not reported one yet.
    pub previous: Option<&'a PodStatus>,
    /// One view per `spec.initContainers` entry, in order.
    pub init_containers: &'a [ContainerView],
    /// One view per `spec.containers` entry, in order.
    pub containers: &'a [ContainerView],
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
    pub start_time: Option<Timestamp>,
    pub now: Timestamp,
}

/// The pod phase from its containers' states (the kubelet's `getPhase`): regular init
/// containers that have not completed keep the pod `Pending` (until an app container has run);
/// one that failed under `restartPolicy: Never` fails the pod. Sidecars do not count.
pub fn pod_phase(policy: RestartPolicy, init: &[ContainerView], containers: &[ContainerView]) -> &'static str {
    let (mut pending_init, mut failed_init) = (0, 0);
    for c in init.iter().filter(|c| !c.restartable) {
        match &c.state {
            ViewState::Running { .. } => pending_init += 1,
            ViewState::Terminated(t) if t.exit_code != 0 => failed_init += 1,
            ViewState::Terminated(_) => {}
            ViewState::Waiting { .. } => match &c.last_terminated {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            },
        }
    }
    if failed_init > 0 && policy == RestartPolicy::Never {
        return "Failed";
    }
    if (pending_init > 0 || failed_init > 0) && !containers.iter().any(ContainerView::has_run) {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            ViewState::Running { .. } => running += 1,
            ViewState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            // Waiting to restart after a run counts as stopped; waiting to start for the first time
            // as waiting.
            ViewState::Waiting { .. } if c.last_terminated.is_some() => stopped += 1,
            ViewState::Waiting { .. } => waiting += 1,
        }
    }
    if containers.is_empty() || waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match policy {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::Never => "Failed",
            RestartPolicy::OnFailure => "Running",
        };
    }
    "Pending"
}

/// Whether the pod is initialized: every init container done (see
/// [`ContainerView::init_done`]), or an app container has run already (a sidecar restarting
/// later does not take that back).
pub fn initialized(init: &[ContainerView], containers: &[ContainerView]) -> bool {
    init.iter().all(ContainerView::init_done) || containers.iter().any(ContainerView::has_run)
}

/// Whether `phase` is final.
pub fn is_terminal(phase: &str) -> bool {
    matches!(phase, "Succeeded" | "Failed")
}

/// The QoS class of a pod spec: Guaranteed when every container limits cpu and memory and
/// requests (if given) equal limits; BestEffort when nothing is requested or limited;
/// Burstable otherwise.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in &spec.containers {
        let res = c.resources.as_ref();
        let limits = res.and_then(|r| r.limits.as_ref());
        let requests = res.and_then(|r| r.requests.as_ref());
        let has = |m: Option<&std::collections::BTreeMap<String, _>>, k: &str| m.is_some_and(|m| m.contains_key(k));
        for r in ["cpu", "memory"] {
            if has(limits, r) || has(requests, r) {
                any = true;
            }
            let limit = limits.and_then(|l| l.get(r));
            let request = requests.and_then(|q| q.get(r));
            match (limit, request) {
                (Some(l), Some(q)) if l != q => guaranteed = false,
                (Some(_), _) => {}
                (None, _) => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The full status the worker wants the pod to have.
pub fn pod_status(input: &StatusInput<'_>) -> PodStatus {
    let spec = input.pod.spec.clone().unwrap_or_default();
    let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
    let phase = pod_phase(policy, input.init_containers, input.containers);
    let terminal = is_terminal(phase);
    let initialized = initialized(input.init_containers, input.containers);

    // Sidecars count toward readiness like app containers.
    let sidecars = input.init_containers.iter().filter(|c| c.restartable);
    let unready: Vec<&str> =
        sidecars.chain(input.containers).filter(|c| !c.ready || terminal).map(|c| c.name.as_str()).collect();
    let (ready_status, ready_reason, ready_message) = if terminal {
        ("False", Some("PodCompleted"), None)
    } else if unready.is_empty() {
        ("True", None, None)
    } else {
        ("False", Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", unready.join(" "))))
    };
    let previous = input.previous.or(input.pod.status.as_ref()).and_then(|s| s.conditions.as_ref());
    let condition = |type_: &str, status: &str, reason: Option<&str>, message: Option<String>| {
        let since = previous
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(input.now));
        PodCondition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.map(str::to_string),
            message,
            last_transition_time: Some(since),
            last_probe_time: None,
            observed_generation: None,
        }
    };
    let initialized_condition = if initialized {
        condition("Initialized", "True", None, None)
    } else {
        let incomplete: Vec<&str> =
            input.init_containers.iter().filter(|c| !c.init_done()).map(|c| c.name.as_str()).collect();
        let message = format!("containers with incomplete status: [{}]", incomplete.join(" "));
        condition("Initialized", "False", Some("ContainersNotInitialized"), Some(message))
    };
    let conditions = vec![
        initialized_condition,
        condition("Ready", ready_status, ready_reason, ready_message.clone()),
        condition("ContainersReady", ready_status, ready_reason, ready_message),
        condition("PodScheduled", "True", None, None),
    ];

    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        init_container_statuses: (!input.init_containers.is_empty())
            .then(|| input.init_containers.iter().map(|c| init_container_status(c, terminal)).collect()),
        container_statuses: Some(input.containers.iter().map(|c| container_status(c, terminal, initialized)).collect()),
        pod_ip: input.pod_ip.map(|ip| ip.to_string()),
        pod_ips: input.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        host_ip: Some(input.host_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: input.host_ip.to_string() }]),
        start_time: input.start_time.map(Time),
        qos_class: Some(qos_class(&spec).into()),
        ..PodStatus::default()
    }
}

fn terminated(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.map(Time),
            finished_at: Some(Time(t.finished_at)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// The waiting reason shown: a container that has not started for the first time yet says
/// `PodInitializing` while the pod initializes (the kubelet's wording), instead of
/// `ContainerCreating`.
fn shown_reason(c: &ContainerView, initializing: bool) -> &str {
    match &c.state {
        ViewState::Waiting { reason, .. } if initializing && reason == "ContainerCreating" && !c.has_run() => {
            "PodInitializing"
        }
        ViewState::Waiting { reason, .. } => reason,
        _ => "",
    }
}

/// An init container's status: `ready` once a regular one completed (a sidecar: as its
/// readiness says while it runs); not started yet reads `PodInitializing`.
fn init_container_status(c: &ContainerView, terminal: bool) -> ContainerStatus {
    let running = matches!(c.state, ViewState::Running { .. });
    let ready = if c.restartable { c.ready && running && !terminal } else { c.completed() };
    ContainerStatus { ready, ..status_of(c, shown_reason(c, true)) }
}

fn container_status(c: &ContainerView, terminal: bool, initialized: bool) -> ContainerStatus {
    let running = matches!(c.state, ViewState::Running { .. });
    ContainerStatus { ready: c.ready && running && !terminal, ..status_of(c, shown_reason(c, !initialized)) }
}

fn status_of(c: &ContainerView, waiting_reason: &str) -> ContainerStatus {
    let state = match &c.state {
        ViewState::Waiting { message, .. } => ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(waiting_reason.to_string()), message: message.clone() }),
            ..ContainerState::default()
        },
        ViewState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(*started_at)) }),
            ..ContainerState::default()
        },
        ViewState::Terminated(t) => terminated(t),
    };
    let running = matches!(c.state, ViewState::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        state: Some(state),
        last_state: Some(c.last_terminated.as_ref().map(terminated).unwrap_or_default()),
        ready: false,
        started: Some(c.started && running),
        restart_count: c.restart_count,
        container_id: c.container_id.clone(),
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
