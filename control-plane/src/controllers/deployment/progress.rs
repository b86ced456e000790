//! The `Progressing` condition (Kubernetes' `progress.go` and the condition helpers of
//! `deployment/util`): `NewReplicaSetCreated` / `FoundNewReplicaSet` when the new
//! ReplicaSet appears, `ReplicaSetUpdated` whenever the rollout moves (which restarts the
//! `progressDeadlineSeconds` clock: the deadline counts from the condition's
//! `lastUpdateTime`), `NewReplicaSetAvailable` when done, `ProgressDeadlineExceeded`
//! (status False) when stuck past the deadline, and `DeploymentPaused` / `DeploymentResumed`.
//! Every decision reads the controller clock.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::strategy;

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// A condition stamped `now` (to the second, as it is stored, so a re-read compares equal).
pub fn condition(type_: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    let t = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(t.clone()),
        last_update_time: Some(t),
    }
}

/// The condition of `type_`, if any.
pub fn get<'a>(status: Option<&'a DeploymentStatus>, type_: &str) -> Option<&'a DeploymentCondition> {
    status?.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Removes the condition of `type_`.
pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = status.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

/// `SetDeploymentCondition`: nothing changes when status and reason are the same; the
/// transition time survives when only the reason changes.
pub fn set(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get(Some(status), &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove(status, &c.type_);
    status.conditions.get_or_insert_with(Vec::new).push(c);
}

/// `progressDeadlineSeconds` (none when unset or "never", i32::MAX).
pub fn deadline(d: &Deployment) -> Option<i32> {
    d.spec.as_ref()?.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// Records a pause or a resume in `Progressing` (`checkPausedConditions`), unless the
/// deadline was already exceeded; true if the status changed.
pub fn check_paused(d: &mut Deployment, now: Timestamp) -> bool {
    if deadline(d).is_none() {
        return false;
    }
    let reason = get(d.status.as_ref(), PROGRESSING).and_then(|c| c.reason.clone());
    if reason.as_deref() == Some(TIMED_OUT) {
        return false;
    }
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let was_paused = reason.as_deref() == Some(PAUSED);
    let c = match (paused, was_paused) {
        (true, false) => condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused".into(), now),
        (false, true) => condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed".into(), now),
        _ => return false,
    };
    set(d.status.get_or_insert_with(Default::default), c);
    true
}

/// Every replica updated and available, and the spec observed (`DeploymentComplete`).
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let n = strategy::desired(d);
    s.updated_replicas == Some(n)
        && s.replicas == Some(n)
        && s.available_replicas == Some(n)
        && s.observed_generation >= d.metadata.generation
}

/// Whether `new` shows progress over the stored status (`DeploymentProgressing`).
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

fn last_update(c: &DeploymentCondition) -> Option<Timestamp> {
    c.last_update_time.as_ref().map(|t| t.0)
}

/// No progress for longer than the deadline since `Progressing` last moved (`DeploymentTimedOut`).
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(secs) = deadline(d) else { return false };
    let Some(c) = get(Some(s), PROGRESSING) else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => last_update(c).is_some_and(|from| from + SignedDuration::from_secs(secs.into()) < now),
    }
}

/// Sets `Progressing` on the freshly computed status `s` (the condition half of
/// `syncRolloutStatus`); `new_rs` names the new ReplicaSet.
pub fn update_progressing(d: &Deployment, new_rs: Option<&str>, s: &mut DeploymentStatus, now: Timestamp) {
    if deadline(d).is_none() {
        remove(s, PROGRESSING);
        return;
    }
    let current = get(d.status.as_ref(), PROGRESSING).cloned();
    let finished = s.replicas == s.updated_replicas
        && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(NEW_RS_AVAILABLE));
    if finished {
        return;
    }
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let subject = match new_rs {
        Some(rs) => format!("ReplicaSet \"{rs}\""),
        None => format!("Deployment \"{name}\""),
    };
    if complete(d, s) {
        let msg = format!("{subject} has successfully progressed.");
        set(s, condition(PROGRESSING, "True", NEW_RS_AVAILABLE, msg, now));
    } else if progressing(d, s) {
        let mut c = condition(PROGRESSING, "True", RS_UPDATED, format!("{subject} is progressing."), now);
        // Progress refreshes lastUpdateTime (the deadline restarts) but not the transition.
        if let Some(cur) = current.filter(|c| c.status == "True") {
            c.last_transition_time = cur.last_transition_time;
        }
        remove(s, PROGRESSING);
        set(s, c);
    } else if timed_out(d, s, now) {
        let msg = format!("{subject} has timed out progressing.");
        set(s, condition(PROGRESSING, "False", TIMED_OUT, msg, now));
    }
}

/// When to look again so a stuck rollout is marked `ProgressDeadlineExceeded` on time
/// (`requeueStuckDeployment`); `None` when there is no deadline to watch.
pub fn recheck_after(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let secs = deadline(d)?;
    let c = get(Some(s), PROGRESSING)?;
    if complete(d, s) || matches!(c.reason.as_deref(), Some(TIMED_OUT) | Some(NEW_RS_AVAILABLE) | Some(PAUSED)) {
        return None;
    }
    let due = last_update(c)? + SignedDuration::from_secs(secs.into());
    let left = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO);
    // One second past the deadline, so the recheck sees it exceeded.
    Some(left + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2026-01-01T00:00:00Z";

    fn t(secs: i64) -> Timestamp {
        T0.parse::<Timestamp>().expect("t0") + SignedDuration::from_secs(secs)
    }

    fn deploy(paused: bool, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 1},
            "spec": {"replicas": 2, "paused": paused, "progressDeadlineSeconds": 60, "selector": {}, "template": {}},
            "status": status}))
        .expect("deployment")
    }

    fn counts(replicas: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(available),
            available_replicas: Some(available),
            observed_generation: Some(1),
            ..Default::default()
        }
    }

    fn reason(s: &DeploymentStatus) -> Option<String> {
        get(Some(s), PROGRESSING).and_then(|c| c.reason.clone())
    }

    #[test]
    fn set_keeps_the_transition_time_and_ignores_repeats() {
        let mut s = DeploymentStatus::default();
        set(&mut s, condition(PROGRESSING, "True", NEW_RS_CREATED, "a".into(), t(0)));
        set(&mut s, condition(PROGRESSING, "True", NEW_RS_CREATED, "b".into(), t(5)));
        assert_eq!(get(Some(&s), PROGRESSING).and_then(|c| c.message.clone()).as_deref(), Some("a"));
        set(&mut s, condition(PROGRESSING, "True", RS_UPDATED, "c".into(), t(9)));
        let c = get(Some(&s), PROGRESSING).expect("condition");
        assert_eq!((c.last_transition_time.clone().map(|x| x.0), last_update(c)), (Some(t(0)), Some(t(9))));
    }

    #[test]
    fn progress_refreshes_and_silence_times_out() {
        let d = deploy(
            false,
            json!({"replicas": 2, "updatedReplicas": 0, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
                            "lastUpdateTime": T0, "lastTransitionTime": T0}]}),
        );
        let mut moved = counts(3, 1, 2);
        update_progressing(&d, Some("web-1"), &mut moved, t(30));
        assert_eq!(reason(&moved).as_deref(), Some(RS_UPDATED));
        let mut stuck = counts(2, 0, 2);
        stuck.conditions = d.status.as_ref().and_then(|s| s.conditions.clone());
        update_progressing(&d, Some("web-1"), &mut stuck, t(30));
        assert_eq!(reason(&stuck).as_deref(), Some(NEW_RS_CREATED), "within the deadline");
        assert_eq!(recheck_after(&d, &stuck, t(30)), Some(Duration::from_secs(31)));
        update_progressing(&d, Some("web-1"), &mut stuck, t(61));
        let c = get(Some(&stuck), PROGRESSING).expect("condition");
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("False", Some(TIMED_OUT)));
        assert_eq!(c.message.as_deref(), Some("ReplicaSet \"web-1\" has timed out progressing."));
        assert_eq!(recheck_after(&d, &stuck, t(61)), None);
        let mut done = counts(2, 2, 2);
        update_progressing(&d, Some("web-1"), &mut done, t(90));
        assert_eq!(reason(&done).as_deref(), Some(NEW_RS_AVAILABLE));
    }

    #[test]
    fn pause_and_resume_are_recorded_once() {
        let mut d = deploy(true, json!({}));
        assert!(check_paused(&mut d, t(0)));
        assert_eq!(reason(d.status.as_ref().expect("status")).as_deref(), Some(PAUSED));
        assert!(!check_paused(&mut d, t(1)));
        if let Some(spec) = d.spec.as_mut() {
            spec.paused = Some(false);
        }
        assert!(check_paused(&mut d, t(2)));
        let c = get(d.status.as_ref(), PROGRESSING).expect("condition");
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("Unknown", Some(RESUMED)));
    }
}
