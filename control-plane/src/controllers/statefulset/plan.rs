//! One pass of the StatefulSet sync as a pure function (Kubernetes'
//! `updateStatefulSet` / `updateStatefulSetAfterInvariantEstablished`): from the set, its
//! pods, its current and update revisions and the time, the actions to take now and the
//! status to report. `OrderedReady` stops at the first action or unready pod, so pods are
//! created 0,1,2… each after its predecessors are Running and Ready, and removed from the
//! highest ordinal one at a time; `Parallel` does everything at once. Rolling updates delete
//! the highest-ordinal pod not at the update revision (at or above `partition`), at most
//! `maxUnavailable` at a time and never while too many are unhealthy.
//!
//! Not here: carrying the actions out, claims' ownerReferences (see [`super::claims`]).

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::identity::{missing_identity_labels, ordinal_of, pod_revision, replicas, start_ordinal};

/// Which template a pod to create comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The current revision's (ordinals below the partition during a rolling update).
    Current,
    /// The update revision's.
    Update,
}

/// Why a pod is deleted (for logs and events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It failed or completed: it is recreated.
    Failed,
    /// Its ordinal is beyond `replicas`.
    ScaleDown,
    /// It runs an old revision.
    Update,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the pod with `ordinal` (its claims first).
    Create { ordinal: i32, version: Version },
    /// Create any missing claim of the existing (pending) pod with `ordinal`.
    EnsureClaims { ordinal: i32 },
    /// Add the identity labels the pod lacks.
    FixIdentity { name: String, ordinal: i32 },
    /// Delete the pod (`uid` as precondition).
    Delete { name: String, uid: String, why: Why },
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: StatefulSetStatus,
    /// Look again after this long: a Ready pod becomes available (`minReadySeconds`).
    pub requeue_after: Option<Duration>,
}

/// The revisions of this pass.
#[derive(Debug, Clone)]
pub struct Revisions {
    pub current: String,
    pub update: String,
    pub collision_count: i32,
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(c.last_transition_time.as_ref().map(|t| t.0))
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running") && ready_since(pod).is_some()
}

/// How much longer until a running and ready pod counts as available; `Some(ZERO)` when it
/// does, `None` when it is not running and ready.
fn until_available(pod: &Pod, min_ready: i64, now: Timestamp) -> Option<Duration> {
    if !running_and_ready(pod) {
        return None;
    }
    if min_ready <= 0 {
        return Some(Duration::ZERO);
    }
    let Some(Some(since)) = ready_since(pod) else { return Some(Duration::ZERO) };
    let at = since + SignedDuration::from_secs(min_ready);
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

fn available(pod: &Pod, min_ready: i64, now: Timestamp) -> bool {
    until_available(pod, min_ready, now) == Some(Duration::ZERO)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn finished(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Failed" | "Succeeded"))
}

fn name_uid(pod: &Pod) -> (String, String) {
    (pod.metadata.name.clone().unwrap_or_default(), pod.metadata.uid.clone().unwrap_or_default())
}

/// `maxUnavailable` of a rolling update, resolved against `replicas` (percentages round
/// down), at least 1.
pub fn max_unavailable(set: &StatefulSet, replicas: i32) -> i32 {
    let value =
        set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()?.rolling_update.as_ref()?.max_unavailable.clone());
    let n = match value {
        None => 1,
        Some(IntOrString::Int(n)) => n,
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => (i64::from(replicas) * p / 100) as i32,
            None => 1,
        },
    };
    n.max(1)
}

/// The status for these pods (`computeReplicaStatus` + `completeRollingUpdate`).
pub fn status(set: &StatefulSet, pods: &[Arc<Pod>], revs: &Revisions, now: Timestamp) -> StatefulSetStatus {
    let min_ready = set.spec.as_ref().and_then(|s| s.min_ready_seconds).map(i64::from).unwrap_or(0);
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(revs.current.clone()),
        update_revision: Some(revs.update.clone()),
        collision_count: Some(revs.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    let (mut ready, mut avail, mut current, mut updated) = (0, 0, 0, 0);
    for pod in pods {
        st.replicas += 1;
        if running_and_ready(pod) {
            ready += 1;
            if available(pod, min_ready, now) {
                avail += 1;
            }
        }
        if !terminating(pod) {
            let rev = pod_revision(pod);
            current += i32::from(rev == Some(revs.current.as_str()));
            updated += i32::from(rev == Some(revs.update.as_str()));
        }
    }
    (st.ready_replicas, st.available_replicas) = (Some(ready), Some(avail));
    (st.current_replicas, st.updated_replicas) = (Some(current), Some(updated));
    let rolling =
        set.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref()) != Some("OnDelete");
    if rolling && updated == st.replicas && ready == st.replicas {
        st.current_replicas = Some(updated);
        st.current_revision = Some(revs.update.clone());
    }
    st
}

/// Plans one pass (see the module docs). `pods` are the set's own pods.
pub fn plan(set: &StatefulSet, pods: &[Arc<Pod>], revs: &Revisions, now: Timestamp) -> Plan {
    let spec = set.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).map(i64::from).unwrap_or(0);
    let requeue_after = pods
        .iter()
        .filter_map(|p| until_available(p, min_ready, now))
        .filter(|d| !d.is_zero())
        .min()
        .map(|d| d + Duration::from_millis(100));
    let mut plan = Plan { actions: Vec::new(), status: status(set, pods, revs, now), requeue_after };
    if set.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let start = start_ordinal(set);
    let count = replicas(set);
    let monotonic = spec.and_then(|s| s.pod_management_policy.as_deref()) != Some("Parallel");
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|u| u.type_.as_deref()) == Some("OnDelete");
    let partition = strategy.and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0).max(0);

    let mut slots: Vec<Option<&Arc<Pod>>> = vec![None; count as usize];
    let mut condemned: Vec<(i32, &Arc<Pod>)> = Vec::new();
    for pod in pods {
        let Some(ordinal) = ordinal_of(set, pod) else { continue };
        if (start..start + count).contains(&ordinal) {
            slots[(ordinal - start) as usize] = Some(pod);
        } else {
            condemned.push((ordinal, pod));
        }
    }
    condemned.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
    // The first pod (in creation order, then condemned from the highest) that is not healthy:
    // the only condemned pod OrderedReady may remove while unhealthy.
    let first_unhealthy_slot: Option<Option<String>> = slots.iter().find_map(|s| match s {
        Some(p) if healthy(p) => None,
        Some(p) => Some(Some(name_uid(p).1)),
        None => Some(None),
    });
    let first_unhealthy = match first_unhealthy_slot {
        Some(found) => found,
        None => condemned.iter().find(|(_, p)| !healthy(p)).map(|(_, p)| name_uid(p).1),
    };

    let version_for = |index: i32| if !on_delete && index < partition { Version::Current } else { Version::Update };
    let mut unhealthy_slots = 0;
    for (index, slot) in slots.iter().enumerate() {
        let (index, ordinal) = (index as i32, start + index as i32);
        let mut pod = *slot;
        if let Some(p) = pod.filter(|p| finished(p) && !terminating(p)) {
            let (name, uid) = name_uid(p);
            plan.actions.push(Action::Delete { name, uid, why: Why::Failed });
            pod = None;
        }
        let Some(pod) = pod else {
            unhealthy_slots += 1;
            plan.actions.push(Action::Create { ordinal, version: version_for(index) });
            if monotonic {
                return plan;
            }
            continue;
        };
        if !healthy(pod) {
            unhealthy_slots += 1;
        }
        if phase(pod).is_none_or(|p| p == "Pending") {
            plan.actions.push(Action::EnsureClaims { ordinal });
        }
        if monotonic && (terminating(pod) || !available(pod, min_ready, now)) {
            return plan;
        }
        if !missing_identity_labels(pod, ordinal).is_empty() {
            plan.actions.push(Action::FixIdentity { name: name_uid(pod).0, ordinal });
        }
    }

    for (_, pod) in &condemned {
        if terminating(pod) {
            if monotonic {
                return plan;
            }
            continue;
        }
        let (name, uid) = name_uid(pod);
        if monotonic && !available(pod, min_ready, now) && first_unhealthy.as_deref() != Some(uid.as_str()) {
            return plan;
        }
        plan.actions.push(Action::Delete { name, uid, why: Why::ScaleDown });
        if monotonic {
            return plan;
        }
    }

    if on_delete {
        return plan;
    }
    let budget = max_unavailable(set, count) - unhealthy_slots;
    let mut deleted = 0;
    for index in (partition..count).rev() {
        if deleted >= budget {
            break;
        }
        let Some(pod) = slots[index as usize] else { continue };
        if pod_revision(pod) != Some(revs.update.as_str()) && !terminating(pod) {
            let (name, uid) = name_uid(pod);
            plan.actions.push(Action::Delete { name, uid, why: Why::Update });
            deleted += 1;
        }
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
