//! The ReplicaSet controller's pure decisions: the pod it creates from its template, which
//! pods go first when scaling down, and the status it reports.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::controllers::owner::controller_reference;

/// The pod to create for `rs`: its template, `generateName: <rs>-`, and the controller
/// ownerReference.
pub fn pod_from_template(rs: &ReplicaSet) -> Value {
    let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
    let tmeta = template.and_then(|t| t.metadata.as_ref());
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "namespace": rs.metadata.namespace,
            "labels": tmeta.and_then(|m| m.labels.as_ref()),
            "annotations": tmeta.and_then(|m| m.annotations.as_ref()),
            "ownerReferences": [controller_reference("apps/v1", "ReplicaSet", &rs.metadata)],
        },
        "spec": template.and_then(|t| t.spec.as_ref()),
    })
}

fn condition_true<'a>(pod: &'a Pod, kind: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True")
}

/// The pod reports Ready.
pub fn is_ready(pod: &Pod) -> bool {
    condition_true(pod, "Ready").is_some()
}

/// Ready for at least `min_ready_seconds` (at `now`).
pub fn is_available(pod: &Pod, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
    let Some(c) = condition_true(pod, "Ready") else { return false };
    if min_ready_seconds <= 0 {
        return true;
    }
    c.last_transition_time.as_ref().is_some_and(|t| t.0 + jiff::SignedDuration::from_secs(min_ready_seconds) <= now)
}

/// How long until the next Ready pod counts as available (`minReadySeconds` after it became
/// Ready), plus a second so the recheck is past it; `None` when no pod is waiting.
pub fn next_available_in(rs: &ReplicaSet, pods: &[Arc<Pod>], now: jiff::Timestamp) -> Option<std::time::Duration> {
    let min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds).map(i64::from).unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    pods.iter()
        .filter(|p| !is_available(p, min_ready, now))
        .filter_map(|p| condition_true(p, "Ready")?.last_transition_time.as_ref().map(|t| t.0))
        .map(|ready_at| ready_at + jiff::SignedDuration::from_secs(min_ready))
        .min()
        .map(|due| {
            std::time::Duration::try_from(due.duration_since(now)).unwrap_or_default()
                + std::time::Duration::from_secs(1)
        })
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    }
}

/// Kubernetes' "which pod to delete first" order (`ActivePods` sort): unscheduled before
/// scheduled, pending before unknown before running, not ready before ready, newest first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    assigned(a).cmp(&assigned(b)).then(phase_rank(a).cmp(&phase_rank(b))).then(is_ready(a).cmp(&is_ready(b))).then_with(
        || {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        },
    )
}

/// The `n` pods to delete when there are too many.
pub fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut sorted = pods.to_vec();
    sorted.sort_by(|a, b| deletion_order(a, b));
    sorted.truncate(n);
    sorted
}

/// The status the controller reports for `rs` with these (owned, active) pods.
pub fn compute_status(rs: &ReplicaSet, pods: &[Arc<Pod>], now: jiff::Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).map(i64::from).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    let fully_labeled = count(&|p: &Pod| {
        let labels = p.metadata.labels.as_ref();
        template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    });
    ReplicaSetStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|p: &Pod| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: rs.status.as_ref().and_then(|s| s.terminating_replicas),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": created, "labels": {"app": "web"}},
                "spec": {"containers": [], "nodeName": node},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            }))
            .expect("pod json"),
        )
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| p.metadata.name.as_deref().unwrap_or("")).collect()
    }

    #[test]
    fn scale_down_removes_unscheduled_then_not_ready_then_newest() {
        let pods = vec![
            pod("old-ready", Some("n1"), "Running", true, "2026-01-01T00:00:00Z"),
            pod("new-ready", Some("n1"), "Running", true, "2026-01-02T00:00:00Z"),
            pod("not-ready", Some("n1"), "Running", false, "2026-01-01T00:00:00Z"),
            pod("pending", Some("n2"), "Pending", false, "2026-01-01T00:00:00Z"),
            pod("unscheduled", None, "Pending", false, "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(names(&pods_to_delete(&pods, 1)), vec!["unscheduled"]);
        assert_eq!(names(&pods_to_delete(&pods, 4)), vec!["unscheduled", "pending", "not-ready", "new-ready"]);
        assert_eq!(pods_to_delete(&pods, 9).len(), 5);
    }

    fn rs() -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ns", "uid": "u-1", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "minReadySeconds": 60,
                     "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .expect("rs json")
    }

    #[test]
    fn pods_come_from_the_template_with_an_owner() {
        let p = pod_from_template(&rs());
        assert_eq!(p["metadata"]["generateName"], "web-abc-");
        assert_eq!(p["metadata"]["namespace"], "ns");
        assert_eq!(p["metadata"]["labels"], json!({"app": "web", "tier": "fe"}));
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(p["spec"]["containers"][0]["image"], "i");
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let now: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().expect("time");
        let pods = vec![
            pod("a", Some("n"), "Running", true, "2026-01-01T00:00:00Z"),
            pod("b", Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
        ];
        let s = compute_status(&rs(), &pods, now);
        assert_eq!((s.replicas, s.fully_labeled_replicas, s.ready_replicas), (2, Some(0), Some(1)));
        assert_eq!(s.available_replicas, Some(0), "ready for 30s < minReadySeconds 60");
        assert_eq!(s.observed_generation, Some(3));
        let later: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().expect("time");
        assert_eq!(compute_status(&rs(), &pods, later).available_replicas, Some(1));
        assert_eq!(next_available_in(&rs(), &pods, now), Some(std::time::Duration::from_secs(31)), "30 s left + 1");
        assert_eq!(next_available_in(&rs(), &pods, later), None, "nothing left to wait for");
    }
}
