//! The Deployment status arithmetic: replica counts summed over its ReplicaSets, and the
//! `Available` / `Progressing` conditions with Kubernetes' reasons and messages.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `maxUnavailable` as a count: an int, or a percentage of `replicas` rounded down; 25% when
/// unset (the default), 0 for `Recreate`.
pub fn max_unavailable(d: &Deployment, replicas: i32) -> i32 {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return 0;
    }
    let value = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.max_unavailable.clone());
    let n = match value {
        Some(IntOrString::Int(n)) => n,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            (i64::from(replicas) * pct / 100) as i32
        }
        None => replicas / 4,
    };
    n.clamp(0, replicas.max(0))
}

fn sum(rss: &[Arc<ReplicaSet>], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    rss.iter().map(|r| f(r)).sum()
}

fn condition(
    old: Option<&DeploymentStatus>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: &Time,
) -> DeploymentCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let prev = old.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let unchanged = prev.is_some_and(|p| {
        p.status == status && p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(&message)
    });
    if unchanged && let Some(p) = prev {
        return p.clone();
    }
    let transition =
        prev.filter(|p| p.status == status).and_then(|p| p.last_transition_time.clone()).unwrap_or_else(|| now.clone());
    DeploymentCondition {
        type_: type_.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(transition),
        last_update_time: Some(now.clone()),
    }
}

/// The status of `d` given its ReplicaSets (`new_rs` among them when it exists).
pub fn compute(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    all: &[Arc<ReplicaSet>],
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status_of = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let replicas = sum(all, |r| status_of(r).replicas);
    let ready = sum(all, |r| status_of(r).ready_replicas.unwrap_or(0));
    let available = sum(all, |r| status_of(r).available_replicas.unwrap_or(0));
    let updated = new_rs.map(|r| status_of(r).replicas).unwrap_or(0);
    let spec_total = sum(all, |r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    let now = Time(now);
    let old = d.status.as_ref();
    let min_available = desired - max_unavailable(d, desired);
    let available_cond = if available >= min_available {
        condition(
            old,
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            &now,
        )
    } else {
        condition(
            old,
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            &now,
        )
    };
    let rs_name = new_rs.and_then(|r| r.metadata.name.clone()).unwrap_or_default();
    let complete = updated == desired && replicas == desired && available == desired;
    let progressing = if complete {
        condition(
            old,
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            &now,
        )
    } else {
        condition(
            old,
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            &now,
        )
    };
    DeploymentStatus {
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total.max(desired) - available).max(0)),
        observed_generation: d.metadata.generation,
        conditions: Some(vec![available_cond, progressing]),
        collision_count: old.and_then(|s| s.collision_count),
        terminating_replicas: None,
    }
}

/// Whether two statuses differ in more than the conditions' update times (so an unchanged
/// deployment is not rewritten on every pass).
pub fn differs(a: Option<&DeploymentStatus>, b: &DeploymentStatus) -> bool {
    let strip = |s: &DeploymentStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_update_time = None;
            c.last_transition_time = None;
        }
        s
    };
    a.is_none_or(|a| strip(a) != strip(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(spec: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "generation": 2}, "spec": spec})).expect("deployment")
    }

    fn rs(name: &str, spec: i32, replicas: i32, ready: i32) -> Arc<ReplicaSet> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"replicas": spec, "selector": {}},
                "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready},
            }))
            .expect("rs"),
        )
    }

    #[test]
    fn max_unavailable_forms() {
        let sel = json!({"matchLabels": {"a": "b"}});
        assert_eq!(max_unavailable(&deploy(json!({"selector": sel, "template": {}})), 10), 2, "25% rounded down");
        let pct =
            deploy(json!({"strategy": {"rollingUpdate": {"maxUnavailable": "50%"}}, "selector": sel, "template": {}}));
        assert_eq!(max_unavailable(&pct, 5), 2);
        let int =
            deploy(json!({"strategy": {"rollingUpdate": {"maxUnavailable": 3}}, "selector": sel, "template": {}}));
        assert_eq!(max_unavailable(&int, 2), 2, "never more than replicas");
        let recreate = deploy(json!({"strategy": {"type": "Recreate"}, "selector": sel, "template": {}}));
        assert_eq!(max_unavailable(&recreate, 5), 0);
    }

    #[test]
    fn status_sums_replica_sets_and_sets_conditions() {
        let d = deploy(json!({"replicas": 3, "selector": {}, "template": {}}));
        let new = rs("web-new", 3, 2, 2);
        let old = rs("web-old", 0, 1, 1);
        let now: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let s = compute(&d, Some(&new), &[new.clone(), old], now);
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas),
            (Some(3), Some(2), Some(3), Some(3))
        );
        assert_eq!(s.observed_generation, Some(2));
        let conds = s.conditions.clone().expect("conditions");
        assert_eq!((conds[0].type_.as_str(), conds[0].status.as_str()), ("Available", "True"));
        assert_eq!(conds[1].reason.as_deref(), Some("ReplicaSetUpdated"));

        let done = rs("web-new", 3, 3, 3);
        let s2 = compute(&d, Some(&done), std::slice::from_ref(&done), now);
        assert_eq!(s2.conditions.expect("conditions")[1].reason.as_deref(), Some("NewReplicaSetAvailable"));

        let none = compute(&d, None, &[], now);
        assert_eq!(none.conditions.expect("conditions")[0].status, "False", "0 of 3 available, 0 may be missing");
        assert!(!differs(
            Some(&s),
            &compute(
                &d,
                Some(&new),
                &[new.clone(), rs("web-old", 0, 1, 1)],
                "2026-01-02T00:00:00Z".parse().expect("t")
            )
        ));
    }
}
