//! Restart decisions and crash back-off, as the kubelet makes them.
//!
//! Pure arithmetic, no clocks of its own: the worker passes in how long a run lasted and asks
//! how long to wait before the next start. Kubernetes semantics: the first restart after a
//! failure is immediate; each further one within the back-off window waits `base`, then
//! doubles up to `cap` (10 s … 300 s by default); a run that lasted longer than `reset`
//! (10 min) starts the count over.

use std::time::Duration;

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// Parses the API value; unknown values read as the default, `Always`.
    pub fn parse(value: Option<&str>) -> RestartPolicy {
        match value {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that ended with `exit_code` is started again.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Back-off settings (configurable so tests can use a 1 s base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub cap: Duration,
    /// A run at least this long resets the back-off.
    pub reset: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { base: Duration::from_secs(10), cap: Duration::from_secs(300), reset: Duration::from_secs(600) }
    }
}

/// The back-off state of one container (or of one image pull).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive failures counted toward the delay.
    failures: u32,
}

impl Backoff {
    /// Records a failure after a run (or attempt) that lasted `ran`, and returns how long to
    /// wait before the next attempt.
    pub fn failed(&mut self, cfg: &BackoffConfig, ran: Duration) -> Duration {
        if ran >= cfg.reset {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        delay(cfg, self.failures)
    }

    /// Forgets the failures (the thing worked).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The wait before the next attempt after `failures` consecutive failures: 0, base, 2·base, …,
/// capped.
pub fn delay(cfg: &BackoffConfig, failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let shift = (failures - 2).min(31);
    cfg.base.checked_mul(1u32 << shift).map_or(cfg.cap, |d| d.min(cfg.cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn restart_policy_decisions() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(RestartPolicy::Always.restarts(1));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(137));
        assert!(!RestartPolicy::Never.restarts(1));
        assert_eq!(RestartPolicy::parse(None), RestartPolicy::Always);
        assert_eq!(RestartPolicy::parse(Some("Never")), RestartPolicy::Never);
        assert_eq!(RestartPolicy::parse(Some("OnFailure")), RestartPolicy::OnFailure);
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let cfg = BackoffConfig::default();
        let seq: Vec<u64> = (1..=9).map(|n| delay(&cfg, n).as_secs()).collect();
        assert_eq!(seq, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(&cfg, u32::MAX), S(300));
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let cfg = BackoffConfig { base: S(1), cap: S(8), reset: S(60) };
        let mut b = Backoff::default();
        assert_eq!(b.failed(&cfg, S(0)), S(0));
        assert_eq!(b.failed(&cfg, S(0)), S(1));
        assert_eq!(b.failed(&cfg, S(5)), S(2));
        assert_eq!(b.failed(&cfg, S(1)), S(4));
        assert_eq!(b.failed(&cfg, S(1)), S(8));
        assert_eq!(b.failed(&cfg, S(1)), S(8));
        assert_eq!(b.failed(&cfg, S(61)), S(0), "a run past the reset window starts over");
        assert_eq!(b.failed(&cfg, S(0)), S(1));
        b.reset();
        assert_eq!(b.failed(&cfg, S(0)), S(0));
    }
}
