//! Container probes: liveness, readiness and startup.
//!
//! What it owns: the settings of a probe as Kubernetes defaults them ([`ProbeSettings`]), the
//! pure bookkeeping that turns single results into the probe's verdict with success and
//! failure thresholds ([`ProbeTracker`]), running one check ([`check`]; commands inside the
//! container: [`exec`], shared with exec lifecycle hooks), and the task that runs checks on
//! schedule and reports raw results ([`run_probe`]). What it does not: act on a
//! verdict — the pod worker restarts a container or flips its readiness.

pub mod check;
pub mod exec;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use check::{Action, ProbeTarget};

use crate::runtime::RunningContainer;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// The probe of this kind on `container`, if it has one.
    pub fn of(self, container: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Startup => container.startup_probe.as_ref(),
            ProbeKind::Liveness => container.liveness_probe.as_ref(),
            ProbeKind::Readiness => container.readiness_probe.as_ref(),
        }
    }

    /// The verdict before any check ran: a live container is assumed alive, but not ready and
    /// not started until its probes say so.
    pub fn initial(self) -> bool {
        matches!(self, ProbeKind::Liveness)
    }
}

/// Timing and thresholds of a probe, with the Kubernetes defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSettings {
    /// Reads `probe`'s settings (defaults: period 10 s, timeout 1 s, thresholds 1 and 3).
    /// Liveness and startup probes always use a success threshold of 1.
    pub fn of(kind: ProbeKind, probe: &Probe) -> ProbeSettings {
        let secs = |v: Option<i32>, default: u64, min: u64| {
            Duration::from_secs(v.map_or(default, |s| (s.max(0) as u64).max(min)))
        };
        let count = |v: Option<i32>, default: u32| v.map_or(default, |n| n.max(1) as u32);
        ProbeSettings {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold: if kind == ProbeKind::Readiness { count(probe.success_threshold, 1) } else { 1 },
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Turns single check results into a verdict that changes only after `success_threshold`
/// consecutive successes or `failure_threshold` consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    settings: ProbeSettings,
    verdict: bool,
    successes: u32,
    failures: u32,
}

impl ProbeTracker {
    pub fn new(kind: ProbeKind, settings: ProbeSettings) -> ProbeTracker {
        ProbeTracker { settings, verdict: kind.initial(), successes: 0, failures: 0 }
    }

    /// The current verdict.
    pub fn verdict(&self) -> bool {
        self.verdict
    }

    /// Whether the failure threshold is reached (a startup probe that fails for good).
    pub fn failing(&self) -> bool {
        self.failures >= self.settings.failure_threshold
    }

    /// Records one result; returns `Some(new verdict)` when the verdict changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = if ok && self.successes >= self.settings.success_threshold {
            true
        } else if !ok && self.failures >= self.settings.failure_threshold {
            false
        } else {
            self.verdict
        };
        let changed = next != self.verdict;
        self.verdict = next;
        changed.then_some(next)
    }
}

/// One raw check result, as the probe task reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub kind: ProbeKind,
    pub ok: bool,
    /// Why it failed (for events and logs).
    pub detail: String,
}

/// Runs `action` against `container` on `settings`' schedule until `cancel` fires, sending
/// every result to `out` (wrapped by `wrap`, so the worker can tag it with the container and run).
#[allow(clippy::too_many_arguments)]
pub async fn run_probe<T: Send + 'static>(
    kind: ProbeKind,
    settings: ProbeSettings,
    action: Action,
    http: reqwest::Client,
    container: Arc<dyn RunningContainer>,
    out: mpsc::UnboundedSender<T>,
    wrap: impl Fn(ProbeReport) -> T + Send + 'static,
    cancel: CancellationToken,
) {
    if cancel.run_until_cancelled(tokio::time::sleep(settings.initial_delay)).await.is_none() {
        return;
    }
    loop {
        let result = cancel.run_until_cancelled(check::run(&action, &http, container.as_ref(), settings.timeout)).await;
        let Some(result) = result else { return };
        let report = ProbeReport { kind, ok: result.is_ok(), detail: result.err().unwrap_or_default() };
        if out.send(wrap(report)).is_err() {
            return;
        }
        if cancel.run_until_cancelled(tokio::time::sleep(settings.period)).await.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(success: u32, failure: u32) -> ProbeSettings {
        ProbeSettings {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn readiness_needs_consecutive_successes() {
        let mut t = ProbeTracker::new(ProbeKind::Readiness, settings(2, 3));
        assert!(!t.verdict(), "not ready before any check");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "a failure breaks the streak");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(false), None);
    }

    #[test]
    fn liveness_starts_alive_and_dies_after_threshold() {
        let mut t = ProbeTracker::new(ProbeKind::Liveness, settings(1, 2));
        assert!(t.verdict());
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success resets the failure count");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
    }

    #[test]
    fn startup_starts_unstarted() {
        let mut t = ProbeTracker::new(ProbeKind::Startup, settings(1, 2));
        assert!(!t.verdict());
        assert_eq!(t.record(false), None);
        assert!(!t.failing());
        assert_eq!(t.record(false), None);
        assert!(t.failing(), "two failures reach the threshold");
        assert_eq!(t.record(true), Some(true));
        assert!(!t.failing());
    }

    #[test]
    fn settings_defaults_and_clamps() {
        let p = Probe::default();
        let s = ProbeSettings::of(ProbeKind::Readiness, &p);
        assert_eq!(
            s,
            ProbeSettings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let p = Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(0),
            timeout_seconds: Some(0),
            success_threshold: Some(4),
            failure_threshold: Some(0),
            ..Probe::default()
        };
        let live = ProbeSettings::of(ProbeKind::Liveness, &p);
        assert_eq!(live.initial_delay, Duration::from_secs(5));
        assert_eq!(live.period, Duration::from_secs(1));
        assert_eq!(live.timeout, Duration::from_secs(1));
        assert_eq!(live.success_threshold, 1, "liveness success threshold is always 1");
        assert_eq!(live.failure_threshold, 1);
        assert_eq!(ProbeSettings::of(ProbeKind::Readiness, &p).success_threshold, 4);
    }
}
