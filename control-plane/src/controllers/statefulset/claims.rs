//! `persistentVolumeClaimRetentionPolicy` as ownerReferences on a StatefulSet's claims
//! (Kubernetes' `updateClaimOwnerRefs`): with `whenDeleted: Delete` a claim is owned by the
//! StatefulSet, with `whenScaled: Delete` a claim whose pod was scaled away is owned by that
//! pod — so the garbage collector removes the claim with its owner. `Retain` (the default)
//! leaves claims unowned and they outlive everything.
//!
//! Not here: creating claims (the controller) or deleting them (the garbage collector).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controllers::owner::controller_reference;

/// `Delete` for `whenDeleted` / `whenScaled` (anything else retains).
fn deletes(set: &StatefulSet, when_scaled: bool) -> bool {
    let policy = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let value = policy.and_then(|p| if when_scaled { p.when_scaled.as_deref() } else { p.when_deleted.as_deref() });
    value == Some("Delete")
}

/// The reference to the pod that makes a scaled-away claim go with it (not a controller
/// reference: the claim is not the pod's to manage).
fn pod_reference(pod: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.name.clone().unwrap_or_default(),
        uid: pod.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The ownerReferences a claim should have, given the ones it has (`current`), its
/// StatefulSet, and its pod (`None` before the pod exists) with whether the pod's ordinal is
/// still within the set's range. `None` when `current` is already right.
pub fn desired_refs(
    current: &[OwnerReference],
    set: &StatefulSet,
    pod: Option<&Pod>,
    in_range: bool,
) -> Option<Vec<OwnerReference>> {
    let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
    let set_ref = controller_reference("apps/v1", "StatefulSet", &set.metadata);
    let (want_set, want_pod) = match (deletes(set, false), deletes(set, true)) {
        (false, false) => (false, false),
        (true, false) => (true, false),
        (false, true) => (false, !in_range),
        (true, true) => (in_range, !in_range),
    };
    let pod_ref = pod.map(|p| pod_reference(&p.metadata));
    let is_set = |r: &OwnerReference| r.kind == "StatefulSet" && r.uid == set_uid;
    let is_pod = |r: &OwnerReference| pod_ref.as_ref().is_some_and(|p| r.kind == "Pod" && r.name == p.name);
    // A reference to an earlier pod of the same name (another uid) is stale too.
    let keep = |r: &OwnerReference| {
        if is_set(r) {
            want_set
        } else if is_pod(r) {
            want_pod && pod_ref.as_ref().is_some_and(|p| p.uid == r.uid)
        } else {
            true
        }
    };
    let mut refs: Vec<OwnerReference> = current.iter().filter(|r| keep(r)).cloned().collect();
    if want_set && !refs.iter().any(is_set) {
        refs.push(set_ref);
    }
    if let Some(p) = pod_ref.filter(|_| want_pod)
        && !refs.iter().any(|r| r.kind == "Pod" && r.uid == p.uid)
    {
        refs.push(p);
    }
    (refs != current).then_some(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(when_deleted: &str, when_scaled: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "set-uid"},
            "spec": {"selector": {}, "template": {},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": when_scaled}}
        }))
        .expect("statefulset json")
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web-2", "uid": "pod-uid"}})).expect("pod json")
    }

    fn kinds(refs: &[OwnerReference]) -> Vec<(&str, &str)> {
        refs.iter().map(|r| (r.kind.as_str(), r.uid.as_str())).collect()
    }

    #[test]
    fn retain_retain_owns_nothing_and_removes_stale_refs() {
        let s = set("Retain", "Retain");
        assert_eq!(desired_refs(&[], &s, Some(&pod()), true), None);
        let stale = vec![controller_reference("apps/v1", "StatefulSet", &s.metadata)];
        assert_eq!(desired_refs(&stale, &s, Some(&pod()), true), Some(vec![]));
    }

    #[test]
    fn when_deleted_delete_is_owned_by_the_set() {
        let s = set("Delete", "Retain");
        let refs = desired_refs(&[], &s, None, true).expect("a change");
        assert_eq!(kinds(&refs), vec![("StatefulSet", "set-uid")]);
        assert_eq!(desired_refs(&refs, &s, Some(&pod()), false), None, "scaling away keeps it with the set");
    }

    #[test]
    fn when_scaled_delete_is_owned_by_the_pod_once_scaled_away() {
        let s = set("Retain", "Delete");
        assert_eq!(desired_refs(&[], &s, Some(&pod()), true), None);
        let refs = desired_refs(&[], &s, Some(&pod()), false).expect("a change");
        assert_eq!(kinds(&refs), vec![("Pod", "pod-uid")]);
        assert_eq!(refs[0].controller, None);
        assert_eq!(desired_refs(&refs, &s, Some(&pod()), true), Some(vec![]), "scaled back up: kept again");
    }

    #[test]
    fn delete_delete_moves_from_set_to_pod() {
        let s = set("Delete", "Delete");
        let in_range = desired_refs(&[], &s, Some(&pod()), true).expect("a change");
        assert_eq!(kinds(&in_range), vec![("StatefulSet", "set-uid")]);
        let scaled = desired_refs(&in_range, &s, Some(&pod()), false).expect("a change");
        assert_eq!(kinds(&scaled), vec![("Pod", "pod-uid")]);
    }
}
