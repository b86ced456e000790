//! The Job controller's pure decisions about status: conditions (set like Kubernetes does —
//! the transition time moves only when the status flips), when a Job finished, how many
//! pods it should run, and how long a failed pod's replacement waits.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition types the controller sets.
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUSPENDED: &str = "Suspended";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
pub const FAILURE_TARGET: &str = "FailureTarget";

/// The first delay before a failed pod is replaced; it doubles per failure (Kubernetes'
/// `DefaultJobPodFailureBackOff`), up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay before a failed pod is replaced.
pub const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// The condition of `kind` when it is True.
pub fn true_condition<'a>(conditions: &'a [JobCondition], kind: &str) -> Option<&'a JobCondition> {
    conditions.iter().find(|c| c.type_ == kind && c.status == "True")
}

/// Sets condition `kind`; returns true when something changed. The transition time moves
/// only when the status flips.
pub fn set_condition(
    conditions: &mut Vec<JobCondition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c)
            if c.status == status && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message) =>
        {
            false
        }
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(Time(now));
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = Some(Time(now));
            true
        }
        None => {
            conditions.push(JobCondition {
                type_: kind.into(),
                status: status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_probe_time: Some(Time(now)),
                last_transition_time: Some(Time(now)),
            });
            true
        }
    }
}

/// When the Job finished (Complete or Failed), if it did.
pub fn finished_at(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let c = true_condition(conditions, COMPLETE).or_else(|| true_condition(conditions, FAILED))?;
    status
        .completion_time
        .as_ref()
        .or(c.last_transition_time.as_ref())
        .map(|t| t.0)
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// How many pods a NonIndexed Job should run now (Kubernetes' `wantActive`).
pub fn want_active(completions: Option<i32>, parallelism: i32, succeeded: i32, active: i32) -> i32 {
    match completions {
        // A work queue: once one pod succeeded, no new ones; the running ones finish.
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism),
    }
}

/// The delay before replacing a pod after `failures` failures (none for no failure).
pub fn failure_backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exp = (failures - 1).min(16) as u32;
    INITIAL_BACKOFF.saturating_mul(2u32.saturating_pow(exp)).min(MAX_BACKOFF)
}

/// `t` plus `secs` seconds, saturating (a huge deadline from a user must not panic).
pub fn plus_secs(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(jiff::SignedDuration::from_secs(secs)).unwrap_or(Timestamp::MAX)
}

/// How long until `at`, zero if it passed (for requeueing on real time).
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    #[test]
    fn conditions_keep_their_transition_time_unless_the_status_flips() {
        let mut cs = Vec::new();
        assert!(set_condition(&mut cs, SUSPENDED, true, "JobSuspended", "Job suspended", at("2026-01-01T00:00:00Z")));
        assert!(!set_condition(&mut cs, SUSPENDED, true, "JobSuspended", "Job suspended", at("2026-01-01T00:01:00Z")));
        assert!(set_condition(&mut cs, SUSPENDED, false, "JobResumed", "Job resumed", at("2026-01-01T00:02:00Z")));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, Some(Time(at("2026-01-01T00:02:00Z"))));
        assert!(true_condition(&cs, SUSPENDED).is_none());
    }

    #[test]
    fn wanted_pods() {
        assert_eq!(want_active(Some(5), 2, 0, 0), 2);
        assert_eq!(want_active(Some(5), 2, 4, 1), 1);
        assert_eq!(want_active(Some(5), 2, 7, 0), 0);
        assert_eq!(want_active(None, 3, 0, 0), 3);
        assert_eq!(want_active(None, 3, 1, 2), 2, "work queue: the running ones finish");
    }

    #[test]
    fn back_off_doubles_up_to_six_minutes() {
        assert_eq!(failure_backoff(0), Duration::ZERO);
        assert_eq!(failure_backoff(1), Duration::from_secs(10));
        assert_eq!(failure_backoff(3), Duration::from_secs(40));
        assert_eq!(failure_backoff(30), MAX_BACKOFF);
    }
}
