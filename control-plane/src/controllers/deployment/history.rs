//! Rollout history, kept in annotations as Kubernetes keeps it (`deployment/util`): each
//! ReplicaSet's `deployment.kubernetes.io/revision` (a reused old template — a rollback —
//! gets the next number, its old numbers going to `revision-history`), the Deployment's
//! annotations copied to its new ReplicaSet (so `kubernetes.io/change-cause` shows in
//! `kubectl rollout history`), the `desired-replicas` / `max-replicas` sizing annotations,
//! and `revisionHistoryLimit`: which old, empty ReplicaSets to delete.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use skiff_api::labels::{
    DEPLOYMENT_DESIRED_REPLICAS, DEPLOYMENT_MAX_REPLICAS, DEPLOYMENT_REVISION, DEPLOYMENT_REVISION_HISTORY,
    DEPRECATED_ROLLBACK_TO, LAST_APPLIED,
};

use super::strategy;

/// Longest `revision-history` annotation kept (Kubernetes' default, in characters).
const MAX_HISTORY_CHARS: usize = 2000;

/// Deployment annotations never copied to ReplicaSets.
const NOT_COPIED: [&str; 7] = [
    LAST_APPLIED,
    // Traffic bookkeeping of scale-to-zero: it moves with connections, the pods do not.
    skiff_api::scale_to_zero::LAST_ACTIVITY,
    DEPLOYMENT_REVISION,
    DEPLOYMENT_REVISION_HISTORY,
    DEPLOYMENT_DESIRED_REPLICAS,
    DEPLOYMENT_MAX_REPLICAS,
    DEPRECATED_ROLLBACK_TO,
];

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a String> {
    rs.metadata.annotations.as_ref()?.get(key)
}

/// A ReplicaSet's revision number (0 when unset or unparsable).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, DEPLOYMENT_REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The `desired-replicas` annotation.
pub fn desired_replicas(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DEPLOYMENT_DESIRED_REPLICAS)?.parse().ok()
}

/// The `max-replicas` annotation.
pub fn max_replicas(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DEPLOYMENT_MAX_REPLICAS)?.parse().ok()
}

fn annotations_mut(rs: &mut ReplicaSet) -> &mut BTreeMap<String, String> {
    rs.metadata.annotations.get_or_insert_with(Default::default)
}

/// Sets `desired-replicas` and `max-replicas` for `d`'s current size; true if they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, d: &Deployment) -> bool {
    let desired = strategy::desired(d);
    let want = [
        (DEPLOYMENT_DESIRED_REPLICAS, desired.to_string()),
        (DEPLOYMENT_MAX_REPLICAS, (desired + strategy::max_surge(d)).to_string()),
    ];
    let a = annotations_mut(rs);
    let mut changed = false;
    for (k, v) in want {
        if a.get(k) != Some(&v) {
            a.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// Brings the new ReplicaSet's annotations up to date (`SetNewReplicaSetAnnotations`): the
/// Deployment's own annotations, `new_revision` when it is higher than the one it has (the
/// old one then joins `revision-history`), and — for one about to be created (`!exists`) —
/// the sizing annotations. True if anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let a = annotations_mut(rs);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(DEPLOYMENT_REVISION).cloned();
    let old_number = match &old {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            // Someone wrote garbage: leave it rather than guess (as Kubernetes does).
            Err(_) => return changed,
        },
    };
    if old_number < new_revision {
        a.insert(DEPLOYMENT_REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = a.get(DEPLOYMENT_REVISION_HISTORY).cloned().unwrap_or_default();
            a.insert(DEPLOYMENT_REVISION_HISTORY.into(), append_history(&history, &old));
        }
    }
    if !exists {
        changed |= set_replicas_annotations(rs, d);
    }
    changed
}

/// `history` with `old` appended, dropping the oldest entries past [`MAX_HISTORY_CHARS`].
fn append_history(history: &str, old: &str) -> String {
    if history.is_empty() {
        return old.to_string();
    }
    let mut entries: Vec<&str> = history.split(',').collect();
    entries.push(old);
    while entries.len() > 1 && entries.join(",").len() > MAX_HISTORY_CHARS {
        entries.remove(0);
    }
    entries.join(",")
}

/// Sets the Deployment's revision annotation; true if it changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: i64) -> bool {
    let a = d.metadata.annotations.get_or_insert_with(Default::default);
    let v = revision.to_string();
    if a.get(DEPLOYMENT_REVISION) == Some(&v) {
        return false;
    }
    a.insert(DEPLOYMENT_REVISION.into(), v);
    true
}

/// The old ReplicaSets to delete so at most `limit` remain (`cleanupDeployment`): lowest
/// revisions first, and only ones with no pods, no desired pods and an up-to-date status.
pub fn to_delete<'a>(old: &[&'a ReplicaSet], limit: i32) -> Vec<&'a ReplicaSet> {
    let mut alive: Vec<&ReplicaSet> =
        old.iter().copied().filter(|rs| rs.metadata.deletion_timestamp.is_none()).collect();
    let excess = alive.len().saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    alive.sort_by_key(|rs| (revision(rs), rs.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    alive
        .into_iter()
        .take(excess)
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            status.replicas == 0
                && rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0
                && rs.metadata.generation.unwrap_or(0) <= status.observed_generation.unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(revision: Option<&str>, spec: i32, status: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{}", revision.unwrap_or("x")), "generation": 1,
                         "annotations": revision.map(|r| json!({DEPLOYMENT_REVISION: r}))},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": status, "observedGeneration": 1},
        }))
        .expect("rs")
    }

    fn deploy(annotations: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web", "annotations": annotations},
            "spec": {"replicas": 4, "selector": {}, "template": {},
                     "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}}))
        .expect("deployment")
    }

    #[test]
    fn a_new_replica_set_gets_the_revision_change_cause_and_sizes() {
        let d = deploy(json!({"kubernetes.io/change-cause": "v2", LAST_APPLIED: "{}", DEPLOYMENT_REVISION: "1"}));
        let mut new = rs(None, 0, 0);
        assert!(set_new_rs_annotations(&d, &mut new, 2, false));
        let a = new.metadata.annotations.clone().expect("annotations");
        assert_eq!(a.get(DEPLOYMENT_REVISION).map(String::as_str), Some("2"));
        assert_eq!(a.get("kubernetes.io/change-cause").map(String::as_str), Some("v2"));
        assert_eq!(a.get(DEPLOYMENT_DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(a.get(DEPLOYMENT_MAX_REPLICAS).map(String::as_str), Some("5"));
        assert!(!a.contains_key(LAST_APPLIED) && !a.contains_key(DEPLOYMENT_REVISION_HISTORY));
        assert!(!set_new_rs_annotations(&d, &mut new, 2, true), "idempotent");
    }

    #[test]
    fn a_rollback_renumbers_and_keeps_the_old_numbers() {
        let d = deploy(json!({}));
        let mut reused = rs(Some("1"), 0, 0);
        assert!(set_new_rs_annotations(&d, &mut reused, 3, true));
        assert_eq!(revision(&reused), 3);
        assert_eq!(annotation(&reused, DEPLOYMENT_REVISION_HISTORY).map(String::as_str), Some("1"));
        assert!(set_new_rs_annotations(&d, &mut reused, 5, true));
        assert_eq!(annotation(&reused, DEPLOYMENT_REVISION_HISTORY).map(String::as_str), Some("1,3"));
        assert!(!set_new_rs_annotations(&d, &mut reused, 4, true), "a lower number never replaces a higher");
        assert!(append_history(&"9,".repeat(1000), "1").len() <= MAX_HISTORY_CHARS);
    }

    #[test]
    fn history_limit_deletes_the_lowest_empty_revisions() {
        let (r1, r2, r3, r4) = (rs(Some("1"), 0, 0), rs(Some("2"), 0, 1), rs(Some("3"), 0, 0), rs(Some("4"), 0, 0));
        let names = |v: Vec<&ReplicaSet>| v.iter().map(|r| revision(r)).collect::<Vec<_>>();
        assert_eq!(names(to_delete(&[&r4, &r3, &r2, &r1], 2)), vec![1], "revision 2 still has a pod");
        assert_eq!(names(to_delete(&[&r4, &r3, &r1], 0)), vec![1, 3, 4]);
        assert!(to_delete(&[&r4, &r3], 10).is_empty());
    }
}
