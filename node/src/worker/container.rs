//! One container of a pod as its worker tracks it: the current run, the last one, restart
//! count, back-off and probe verdicts.
//!
//! What it owns: the container state transitions (launch result, exit, probe verdicts), the
//! restart policy a container actually follows (init containers and sidecars differ from the
//! pod's), and the view the status is computed from. What it does not: start or stop anything — the
//! worker does, following what these transitions decide.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerStateTerminated, ContainerStatus};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::{Backoff, BackoffConfig, RestartPolicy};
use super::status::{ContainerView, Terminated, ViewState};
use crate::probe::{ProbeKind, ProbeSettings, ProbeTracker};
use crate::runtime::{ExitInfo, RunningContainer};

/// Where a container is in its life.
#[derive(Debug)]
pub enum Run {
    /// Not running; (re)started once `retry_at` has passed (`None`: as soon as possible).
    Waiting {
        reason: String,
        message: Option<String>,
        retry_at: Option<Instant>,
    },
    /// A launch task is pulling and starting it.
    Launching,
    Running {
        handle: Arc<dyn RunningContainer>,
        started_at: Timestamp,
        since: Instant,
        probes: CancellationToken,
    },
    /// Ended and not restarted (restart policy, or the pod is terminating).
    Terminated(Terminated),
}

/// Why a launch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchFailure {
    /// The image could not be pulled (`ErrImagePull`, `InvalidImageName`, ...).
    Pull { reason: String, message: String },
    /// Env, mounts or logs could not be prepared (`CreateContainerConfigError`).
    Config(String),
    /// The runtime could not create or start it (`CreateContainerError`, `RunContainerError`).
    Start { reason: String, message: String },
}

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// `spec.containers`.
    App,
    /// `spec.initContainers`: runs to completion before the app containers start.
    Init,
    /// `spec.initContainers` with `restartPolicy: Always`: started in order, kept running.
    Sidecar,
}

impl SlotKind {
    /// The kind of an init container.
    pub fn of_init(container: &Container) -> SlotKind {
        if container.restart_policy.as_deref() == Some("Always") { SlotKind::Sidecar } else { SlotKind::Init }
    }

    /// The restart policy a container of this kind follows in a pod with `pod` policy: an init
    /// container is retried on failure unless the pod says `Never`; a sidecar always restarts.
    pub fn policy(self, pod: RestartPolicy) -> RestartPolicy {
        match (self, pod) {
            (SlotKind::App, p) => p,
            (SlotKind::Init, RestartPolicy::Never) => RestartPolicy::Never,
            (SlotKind::Init, _) => RestartPolicy::OnFailure,
            (SlotKind::Sidecar, _) => RestartPolicy::Always,
        }
    }

    /// Whether it is listed under `spec.initContainers`.
    pub fn is_init(self) -> bool {
        self != SlotKind::App
    }
}

/// The state of one container of the pod.
#[derive(Debug)]
pub struct Slot {
    pub kind: SlotKind,
    pub container: Container,
    /// Bumped on every launch, so results of older runs are recognised and ignored.
    pub generation: u64,
    pub run: Run,
    pub image_id: String,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    /// Whether it has run before (the next start is then a restart).
    pub ran_before: bool,
    crash: Backoff,
    pull: Backoff,
    pub probes: HashMap<ProbeKind, ProbeTracker>,
    /// The runtime's count of requests refused for memory, as last turned into an event.
    pub memory_rejections_seen: u64,
    /// `containerID` of the current (or last) run, for runtimes that have one.
    pub container_id: Option<String>,
    /// A container reported running before an agent restart: its `containerID` and start
    /// time, to take over instead of starting anew (consumed by the first launch).
    pub adopt: Option<(String, Timestamp)>,
}

impl Slot {
    /// A container not started yet; `previous` is its status from before an agent restart. A
    /// regular init container that already completed stays completed (it is not run again).
    pub fn new(kind: SlotKind, container: Container, previous: Option<&ContainerStatus>) -> Slot {
        let ran_before = previous.is_some_and(|s| {
            let st = s.state.as_ref();
            st.is_some_and(|st| st.running.is_some() || st.terminated.is_some())
                || s.last_state.as_ref().is_some_and(|l| l.terminated.is_some())
        });
        let completed = previous
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .filter(|t| kind == SlotKind::Init && t.exit_code == 0);
        let adopt = previous.and_then(|s| {
            let running = s.state.as_ref()?.running.as_ref()?;
            Some((s.container_id.clone()?, running.started_at.as_ref()?.0))
        });
        let run = match completed {
            Some(t) => Run::Terminated(terminated_from(t)),
            None => Run::Waiting { reason: "ContainerCreating".into(), message: None, retry_at: None },
        };
        Slot {
            kind,
            container,
            generation: 0,
            run,
            image_id: previous.map(|s| s.image_id.clone()).unwrap_or_default(),
            last: None,
            restart_count: previous.map_or(0, |s| s.restart_count),
            ran_before,
            crash: Backoff::default(),
            pull: Backoff::default(),
            probes: HashMap::new(),
            memory_rejections_seen: 0,
            container_id: previous.and_then(|s| s.container_id.clone()),
            adopt,
        }
    }

    pub fn name(&self) -> &str {
        &self.container.name
    }

    /// Whether a launch should begin now.
    pub fn due(&self, now: Instant) -> bool {
        matches!(self.run, Run::Waiting { retry_at, .. } if retry_at.is_none_or(|t| t <= now))
    }

    /// When this container next wants attention (a back-off ending).
    pub fn wake_at(&self) -> Option<Instant> {
        match self.run {
            Run::Waiting { retry_at, .. } => retry_at,
            _ => None,
        }
    }

    /// The restart count the next run's log is opened with.
    pub fn next_run_count(&self) -> i32 {
        if self.ran_before { self.restart_count + 1 } else { self.restart_count }
    }

    /// A launch is starting.
    pub fn launching(&mut self) -> u64 {
        self.generation += 1;
        self.run = Run::Launching;
        self.generation
    }

    /// The container started (or, `adopted`, was taken over from an earlier agent process:
    /// same run, so no restart is counted and its start time is kept); returns the probe
    /// token for the probe tasks.
    pub fn started(
        &mut self,
        handle: Arc<dyn RunningContainer>,
        image_id: String,
        adopted: bool,
        parent: &CancellationToken,
    ) -> CancellationToken {
        let adopted_at = self.adopt.take().filter(|_| adopted).map(|(_, at)| at);
        if self.ran_before && adopted_at.is_none() {
            self.restart_count += 1;
        }
        self.ran_before = true;
        if !image_id.is_empty() || adopted_at.is_none() {
            self.image_id = image_id;
        }
        self.container_id = handle.container_id();
        self.memory_rejections_seen = 0;
        self.pull.reset();
        self.probes = [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness]
            .into_iter()
            .filter_map(|k| k.of(&self.container).map(|p| (k, ProbeTracker::new(k, ProbeSettings::of(k, p)))))
            .collect();
        let probes = parent.child_token();
        let started_at = adopted_at.unwrap_or_else(Timestamp::now);
        self.run = Run::Running { handle, started_at, since: Instant::now(), probes: probes.clone() };
        probes
    }

    /// A launch failed. Pull and config failures are retried with back-off whatever the
    /// restart policy; a start failure ends the container under `Never`.
    pub fn launch_failed(
        &mut self,
        failure: LaunchFailure,
        image_id: Option<String>,
        policy: RestartPolicy,
        cfg: &BackoffConfig,
    ) {
        if let Some(id) = image_id {
            self.image_id = id;
        }
        self.adopt = None;
        let now = Instant::now();
        self.run = match failure {
            LaunchFailure::Pull { reason, message } => {
                let delay = self.pull.failed(cfg, Duration::ZERO);
                // The first failure shows the pull error; while backing off, kubelet's ImagePullBackOff.
                let reason = if delay.is_zero() { reason } else { "ImagePullBackOff".to_string() };
                Run::Waiting { reason, message: Some(message), retry_at: Some(now + delay) }
            }
            LaunchFailure::Config(message) => {
                let delay = self.crash.failed(cfg, Duration::ZERO).max(cfg.base.min(Duration::from_secs(1)));
                Run::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(message),
                    retry_at: Some(now + delay),
                }
            }
            LaunchFailure::Start { reason, message } if policy == RestartPolicy::Never => Run::Terminated(Terminated {
                exit_code: 128,
                reason,
                message: Some(message),
                started_at: None,
                finished_at: Timestamp::now(),
            }),
            LaunchFailure::Start { reason, message } => {
                let delay = self.crash.failed(cfg, Duration::ZERO);
                Run::Waiting { reason, message: Some(message), retry_at: Some(now + delay) }
            }
        };
    }

    /// The running container ended with `info`. `restart` is false while the pod terminates.
    /// Returns the back-off delay when it is restarted.
    pub fn exited(
        &mut self,
        info: ExitInfo,
        policy: RestartPolicy,
        restart: bool,
        cfg: &BackoffConfig,
        pod: &str,
    ) -> Option<Duration> {
        let (started_at, ran) = match &self.run {
            Run::Running { started_at, since, probes, .. } => {
                probes.cancel();
                (Some(*started_at), since.elapsed())
            }
            _ => (None, Duration::ZERO),
        };
        let term = Terminated {
            exit_code: info.exit_code,
            reason: info.reason,
            message: info.message,
            started_at,
            finished_at: Timestamp::now(),
        };
        if !restart || !policy.restarts(term.exit_code) {
            self.run = Run::Terminated(term);
            return None;
        }
        let delay = self.crash.failed(cfg, ran);
        self.last = Some(term);
        self.run = if delay.is_zero() {
            Run::Waiting { reason: "ContainerCreating".into(), message: None, retry_at: None }
        } else {
            Run::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} {pod}",
                    delay.as_secs(),
                    self.container.name
                )),
                retry_at: Some(Instant::now() + delay),
            }
        };
        Some(delay)
    }

    /// The running container's handle, if it runs.
    pub fn handle(&self) -> Option<Arc<dyn RunningContainer>> {
        match &self.run {
            Run::Running { handle, .. } => Some(handle.clone()),
            _ => None,
        }
    }

    fn verdict(&self, kind: ProbeKind) -> bool {
        self.probes.get(&kind).is_none_or(ProbeTracker::verdict)
    }

    /// Started: running and past its startup probe.
    pub fn is_started(&self) -> bool {
        matches!(self.run, Run::Running { .. }) && self.verdict(ProbeKind::Startup)
    }

    /// What the pod status shows of this container.
    pub fn view(&self) -> ContainerView {
        let state = match &self.run {
            Run::Waiting { reason, message, .. } => {
                ViewState::Waiting { reason: reason.clone(), message: message.clone() }
            }
            Run::Launching => ViewState::Waiting { reason: "ContainerCreating".into(), message: None },
            Run::Running { started_at, .. } => ViewState::Running { started_at: *started_at },
            Run::Terminated(t) => ViewState::Terminated(t.clone()),
        };
        let started = self.is_started();
        ContainerView {
            name: self.container.name.clone(),
            image: self.container.image.clone().unwrap_or_default(),
            image_id: self.image_id.clone(),
            state,
            last_terminated: self.last.clone(),
            restart_count: self.restart_count,
            ready: started && self.verdict(ProbeKind::Readiness),
            started,
            restartable: self.kind == SlotKind::Sidecar,
            container_id: self.container_id.clone(),
        }
    }

    /// New requests refused for memory since the last look (and remembers the count).
    pub fn new_memory_rejections(&mut self) -> u64 {
        let Some(handle) = self.handle() else { return 0 };
        let now = handle.stats().requests_rejected_memory;
        let new = now.saturating_sub(self.memory_rejections_seen);
        self.memory_rejections_seen = now;
        new
    }
}

/// A terminated state from a status written earlier (an agent restart).
fn terminated_from(t: &ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_else(|| "Completed".into()),
        message: t.message.clone(),
        started_at: t.started_at.as_ref().map(|s| s.0),
        finished_at: t.finished_at.as_ref().map_or_else(Timestamp::now, |f| f.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerStats;

    #[derive(Debug)]
    struct Nothing;

    #[async_trait::async_trait]
    impl RunningContainer for Nothing {
        async fn wait(&self) -> ExitInfo {
            ExitInfo { exit_code: 0, reason: "Completed".into(), message: None }
        }
        async fn stop(&self, _grace: Duration) {}
        fn stats(&self) -> ContainerStats {
            ContainerStats::default()
        }
    }

    fn cfg() -> BackoffConfig {
        BackoffConfig { base: Duration::from_secs(1), cap: Duration::from_secs(4), reset: Duration::from_secs(600) }
    }

    fn exit(code: i32) -> ExitInfo {
        ExitInfo { exit_code: code, reason: if code == 0 { "Completed" } else { "Error" }.into(), message: None }
    }

    #[tokio::test]
    async fn crash_loop_counts_restarts_and_backs_off() {
        let root = CancellationToken::new();
        let mut slot = Slot::new(SlotKind::App, Container { name: "c".into(), ..Container::default() }, None);
        assert!(slot.due(Instant::now()));
        assert_eq!(slot.next_run_count(), 0);
        slot.launching();
        slot.started(Arc::new(Nothing), "sha256:1".into(), false, &root);
        assert!(slot.view().ready, "no readiness probe: ready once running");
        assert_eq!(slot.exited(exit(1), RestartPolicy::Always, true, &cfg(), "p"), Some(Duration::ZERO));
        assert!(slot.due(Instant::now()), "first restart is immediate");
        assert_eq!(slot.next_run_count(), 1);
        slot.launching();
        slot.started(Arc::new(Nothing), "sha256:1".into(), false, &root);
        assert_eq!(slot.restart_count, 1);
        assert_eq!(slot.exited(exit(1), RestartPolicy::Always, true, &cfg(), "p"), Some(Duration::from_secs(1)));
        let v = slot.view();
        assert!(matches!(&v.state, ViewState::Waiting { reason, .. } if reason == "CrashLoopBackOff"), "{v:?}");
        assert_eq!(v.last_terminated.map(|t| t.exit_code), Some(1));
        assert!(!slot.due(Instant::now()));
    }

    #[tokio::test]
    async fn never_and_terminating_end_the_container() {
        let root = CancellationToken::new();
        let mut slot = Slot::new(SlotKind::App, Container { name: "c".into(), ..Container::default() }, None);
        slot.launching();
        slot.started(Arc::new(Nothing), String::new(), false, &root);
        assert_eq!(slot.exited(exit(2), RestartPolicy::Never, true, &cfg(), "p"), None);
        assert!(matches!(&slot.run, Run::Terminated(t) if t.exit_code == 2));
        let mut slot = Slot::new(SlotKind::App, Container { name: "c".into(), ..Container::default() }, None);
        slot.launching();
        slot.started(Arc::new(Nothing), String::new(), false, &root);
        assert_eq!(slot.exited(exit(0), RestartPolicy::Always, false, &cfg(), "p"), None, "terminating: no restart");
    }

    #[tokio::test]
    async fn a_run_killed_for_its_post_start_hook_counts_as_a_run() {
        // What the worker does with a launch whose postStart hook failed: started, then ended.
        let root = CancellationToken::new();
        let mut slot = Slot::new(SlotKind::App, Container { name: "c".into(), ..Container::default() }, None);
        slot.launching();
        let probes = slot.started(Arc::new(Nothing), "sha256:1".into(), false, &root);
        let killed = ExitInfo {
            exit_code: 137,
            reason: "Error".into(),
            message: Some("PostStartHook failed: command \"false\" exited with code 1".into()),
        };
        assert_eq!(slot.exited(killed, RestartPolicy::Always, true, &cfg(), "p"), Some(Duration::ZERO));
        assert!(probes.is_cancelled(), "no probe outlives the run");
        assert_eq!(slot.next_run_count(), 1, "the next start is a restart");
        let last = slot.view().last_terminated.expect("last state");
        assert!(last.message.is_some_and(|m| m.starts_with("PostStartHook failed")));
        slot.launching();
        let probes = slot.started(Arc::new(Nothing), "sha256:1".into(), false, &root);
        drop(probes);
        let again = ExitInfo { exit_code: 137, reason: "Error".into(), message: None };
        assert_eq!(slot.exited(again, RestartPolicy::Never, true, &cfg(), "p"), None, "Never: it stays terminated");
        assert!(matches!(&slot.run, Run::Terminated(t) if t.exit_code == 137));
    }

    #[test]
    fn launch_failures() {
        let mut slot = Slot::new(SlotKind::App, Container { name: "c".into(), ..Container::default() }, None);
        let pull = || LaunchFailure::Pull { reason: "ErrImagePull".into(), message: "nope".into() };
        slot.launch_failed(pull(), None, RestartPolicy::Always, &cfg());
        assert!(matches!(&slot.run, Run::Waiting { reason, .. } if reason == "ErrImagePull"));
        slot.launch_failed(pull(), None, RestartPolicy::Always, &cfg());
        assert!(matches!(&slot.run, Run::Waiting { reason, retry_at: Some(_), .. } if reason == "ImagePullBackOff"));
        slot.launch_failed(LaunchFailure::Config("no key".into()), None, RestartPolicy::Never, &cfg());
        assert!(matches!(&slot.run, Run::Waiting { reason, .. } if reason == "CreateContainerConfigError"));
        let start = LaunchFailure::Start { reason: "RunContainerError".into(), message: "trap".into() };
        slot.launch_failed(start, Some("sha256:x".into()), RestartPolicy::Never, &cfg());
        assert!(matches!(&slot.run, Run::Terminated(t) if t.reason == "RunContainerError" && t.exit_code == 128));
        assert_eq!(slot.image_id, "sha256:x");
    }

    #[test]
    fn seeded_from_a_previous_status() {
        let prev = ContainerStatus {
            name: "c".into(),
            restart_count: 3,
            image_id: "sha256:p".into(),
            last_state: Some(k8s_openapi::api::core::v1::ContainerState {
                terminated: Some(Default::default()),
                ..Default::default()
            }),
            ..ContainerStatus::default()
        };
        let slot = Slot::new(SlotKind::App, Container { name: "c".into(), ..Container::default() }, Some(&prev));
        assert_eq!((slot.restart_count, slot.ran_before, slot.next_run_count()), (3, true, 4));
    }

    #[test]
    fn init_kinds_follow_their_own_restart_policy() {
        let init = Container { name: "i".into(), ..Container::default() };
        let sidecar = Container { restart_policy: Some("Always".into()), ..init.clone() };
        assert_eq!(SlotKind::of_init(&init), SlotKind::Init);
        assert_eq!(SlotKind::of_init(&sidecar), SlotKind::Sidecar);
        assert_eq!(SlotKind::Init.policy(RestartPolicy::Always), RestartPolicy::OnFailure);
        assert_eq!(SlotKind::Init.policy(RestartPolicy::Never), RestartPolicy::Never);
        assert_eq!(SlotKind::Sidecar.policy(RestartPolicy::Never), RestartPolicy::Always);
        assert_eq!(SlotKind::App.policy(RestartPolicy::OnFailure), RestartPolicy::OnFailure);
        assert!(SlotKind::Sidecar.is_init() && !SlotKind::App.is_init());
    }

    #[test]
    fn a_completed_init_container_is_not_run_again_after_an_agent_restart() {
        use k8s_openapi::api::core::v1::ContainerState;
        let prev = ContainerStatus {
            name: "i".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        };
        let init = Slot::new(SlotKind::Init, Container { name: "i".into(), ..Container::default() }, Some(&prev));
        assert!(!init.due(Instant::now()));
        assert!(init.view().completed());
        // An app container (or a sidecar) with the same history starts again.
        let app = Slot::new(SlotKind::App, Container { name: "i".into(), ..Container::default() }, Some(&prev));
        assert!(app.due(Instant::now()));
        let side = Slot::new(SlotKind::Sidecar, Container { name: "i".into(), ..Container::default() }, Some(&prev));
        assert!(side.due(Instant::now()));
    }
}
