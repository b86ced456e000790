//! The Deployment status arithmetic (`calculateStatus`): replica counts summed over its
//! ReplicaSets, and the `Available` condition (`MinimumReplicasAvailable` /
//! `MinimumReplicasUnavailable`, against `replicas - maxUnavailable`). The `Progressing`
//! condition is [`super::progress`]'s.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};

use super::progress::{self, AVAILABLE};
use super::strategy;

fn status_of(rs: &ReplicaSet) -> k8s_openapi::api::apps::v1::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

/// The status of `d` given all its ReplicaSets (`new_rs` among them when it exists); the
/// conditions start from the ones `d` carries now.
pub fn compute(d: &Deployment, new_rs: Option<&ReplicaSet>, all: &[ReplicaSet], now: Timestamp) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|r| status_of(r).available_replicas.unwrap_or(0)).sum();
    let total: i32 = all.iter().map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)).sum();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| status_of(r).replicas).sum()),
        updated_replicas: Some(new_rs.map(|r| status_of(r).replicas).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|r| status_of(r).ready_replicas.unwrap_or(0)).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        conditions: old.conditions.clone(),
        collision_count: old.collision_count,
        terminating_replicas: None,
    };
    let min_available = strategy::desired(d) - strategy::max_unavailable(d);
    let c = if available >= min_available {
        progress::condition(
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        progress::condition(
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    progress::set(&mut s, c);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(spec: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 2}, "spec": spec})).expect("deployment")
    }

    fn rs(name: &str, spec: i32, replicas: i32, ready: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready},
        }))
        .expect("rs")
    }

    #[test]
    fn status_sums_replica_sets_and_sets_available() {
        let d = deploy(json!({"replicas": 3, "selector": {}, "template": {}}));
        let new = rs("web-new", 3, 2, 2);
        let old = rs("web-old", 0, 1, 1);
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let s = compute(&d, Some(&new), &[new.clone(), old], now);
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas),
            (Some(3), Some(2), Some(3), Some(3), Some(0))
        );
        assert_eq!(s.observed_generation, Some(2));
        let c = progress::get(Some(&s), AVAILABLE).expect("available");
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("True", Some("MinimumReplicasAvailable")));

        let none = compute(&d, None, &[], now);
        assert_eq!(progress::get(Some(&none), AVAILABLE).expect("available").status, "False", "0 of 3, none may miss");
        assert_eq!(none.unavailable_replicas, Some(0), "no ReplicaSet asks for pods yet");
    }
}
