//! The status a DaemonSet reports (`kubectl get ds` columns and what `kubectl rollout status`
//! waits on), computed as the Go controller's `updateDaemonSetStatus` does: per node that
//! should run a pod, whether one is there, ready, available and updated (looking at its oldest
//! pod); pods on nodes that should not run one are misscheduled.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};

use super::placement::NodeFit;
use super::plan::{NodePods, is_updated, sort_oldest_first};
use crate::controllers::replicaset::pods::{is_available, is_ready};

/// The status for `ds` given each node's fit and the pods per node.
pub fn compute(
    ds: &DaemonSet,
    fits: &BTreeMap<String, NodeFit>,
    pods: &NodePods,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).map(i64::from).unwrap_or(0);
    let old = ds.status.as_ref();
    let mut s = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: old.and_then(|o| o.collision_count),
        conditions: old.and_then(|o| o.conditions.clone()),
        ..Default::default()
    };
    let (mut updated, mut available) = (0, 0);
    for (node, fit) in fits {
        let mut on_node = pods.get(node).cloned().unwrap_or_default();
        if !fit.should_run {
            s.number_misscheduled += i32::from(!on_node.is_empty());
            continue;
        }
        s.desired_number_scheduled += 1;
        if on_node.is_empty() {
            continue;
        }
        s.current_number_scheduled += 1;
        sort_oldest_first(&mut on_node);
        let pod = &on_node[0];
        if is_ready(pod) {
            s.number_ready += 1;
            if is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        updated += i32::from(is_updated(pod, hash));
    }
    s.number_available = Some(available);
    s.updated_number_scheduled = Some(updated);
    s.number_unavailable = Some(s.desired_number_scheduled - available);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;
    use skiff_api::labels::CONTROLLER_REVISION_HASH;
    use std::sync::Arc;

    fn pod(hash: &str, ready_since: Option<&str>) -> Arc<Pod> {
        let conditions = match ready_since {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([]),
        };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p", "labels": {CONTROLLER_REVISION_HASH: hash}},
                "status": {"phase": "Running", "conditions": conditions}}))
            .expect("pod"),
        )
    }

    #[test]
    fn counts_per_node() {
        let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "d", "generation": 4},
            "spec": {"selector": {}, "template": {}, "minReadySeconds": 60}, "status": {"collisionCount": 1,
            "currentNumberScheduled": 0, "desiredNumberScheduled": 0, "numberMisscheduled": 0, "numberReady": 0}}))
        .expect("ds");
        let fit = |r| NodeFit { should_run: r, should_continue_running: r };
        let fits: BTreeMap<String, NodeFit> = [("a", true), ("b", true), ("c", true), ("d", true), ("x", false)]
            .iter()
            .map(|(n, r)| (n.to_string(), fit(*r)))
            .collect();
        let pods: NodePods = [
            ("a", pod("new", Some("2026-01-01T00:00:00Z"))),
            ("b", pod("old", Some("2026-01-01T00:09:30Z"))),
            ("c", pod("new", None)),
            ("x", pod("new", None)),
        ]
        .iter()
        .map(|(n, p)| (n.to_string(), vec![p.clone()]))
        .collect();
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().expect("now");
        let s = compute(&ds, &fits, &pods, "new", now);
        assert_eq!((s.desired_number_scheduled, s.current_number_scheduled, s.number_misscheduled), (4, 3, 1));
        assert_eq!(s.number_ready, 2);
        assert_eq!(s.number_available, Some(1), "b is ready for only 30 s of 60");
        assert_eq!(s.number_unavailable, Some(3));
        assert_eq!(s.updated_number_scheduled, Some(2));
        assert_eq!((s.observed_generation, s.collision_count), (Some(4), Some(1)));
    }
}
