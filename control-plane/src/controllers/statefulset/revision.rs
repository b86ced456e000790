//! ControllerRevisions for StatefulSets, as pure functions (Kubernetes' `controller_history.go`
//! and the StatefulSet's `getPatch`/`newRevision`/`ApplyRevision`). A revision stores a
//! strategic-merge patch that replaces `spec.template` — exactly what `kubectl rollout undo`
//! applies — is named `<set>-<hash>`, carries the template's labels (so `kubectl rollout
//! history` finds it through the selector) and a monotonically increasing `revision`.
//!
//! Not here: the DaemonSet's revisions (`controllers/history.rs`), reading or writing the API.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};

use crate::controllers::owner::controller_reference;

/// Label on a revision with its hash (Kubernetes' `ControllerRevisionHashLabel`).
pub const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1 (not 1a: Go's `fnv.New32`, which `HashControllerRevision` uses), 32 bit.
fn fnv1_32(h: u32, data: &[u8]) -> u32 {
    data.iter().fold(h, |h, b| h.wrapping_mul(0x0100_0193) ^ u32::from(*b))
}

/// The revision data for `set`: `{"spec": {"template": {..., "$patch": "replace"}}}`.
pub fn patch_data(set: &StatefulSet) -> Value {
    let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Kubernetes' `HashControllerRevision`: the data, then the collision count, through FNV-1,
/// printed in decimal and mapped to the "safe" alphabet.
pub fn hash(data: &Value, collision_count: i32) -> String {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    let h = fnv1_32(0x811c_9dc5, &bytes);
    let h = fnv1_32(h, collision_count.to_string().as_bytes());
    h.to_string().bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// `<set>-<hash>`, the set's name cut so the result stays a valid name.
pub fn revision_name(set: &str, hash: &str) -> String {
    let prefix: String = set.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// The revision `set`'s current template would be, numbered `number`.
pub fn new_revision(set: &StatefulSet, number: i64, collision_count: i32) -> ControllerRevision {
    let data = patch_data(set);
    let h = hash(&data, collision_count);
    let mut labels = set.spec.as_ref().and_then(|s| s.template.metadata.as_ref()?.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.into(), h.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(set.metadata.name.as_deref().unwrap_or_default(), &h)),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: set.metadata.annotations.clone(),
            owner_references: Some(vec![controller_reference("apps/v1", "StatefulSet", &set.metadata)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

/// The pod template a revision holds (`ApplyRevision` for the only field it patches).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// Two revisions hold the same template.
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// Sorts by revision number, then creation time, then name (`SortControllerRevisions`).
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t = |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The number the next revision gets: one past the highest.
pub fn next_number(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// What to do so `set`'s template has a revision, given its `sorted` revisions.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateRevision {
    /// The newest revision already holds the template.
    Latest(String),
    /// An older one does: renumber it to the top (a rollback to a former template).
    Renumber { name: String, number: i64 },
    /// None does: create this one.
    Create(Box<ControllerRevision>),
}

/// Decides the update revision (`getStatefulSetRevisions`).
pub fn update_revision(set: &StatefulSet, sorted: &[ControllerRevision], collision_count: i32) -> UpdateRevision {
    let number = next_number(sorted);
    let wanted = new_revision(set, number, collision_count);
    let name_of = |r: &ControllerRevision| r.metadata.name.clone().unwrap_or_default();
    match sorted.iter().rposition(|r| equal(r, &wanted)) {
        Some(i) if i + 1 == sorted.len() => UpdateRevision::Latest(name_of(&sorted[i])),
        Some(i) => UpdateRevision::Renumber { name: name_of(&sorted[i]), number },
        None => UpdateRevision::Create(Box::new(wanted)),
    }
}

/// The revisions to delete so at most `limit` revisions that no pod, nor the current or
/// update revision, uses remain — the oldest go first (`truncateHistory`).
pub fn to_truncate(sorted: &[ControllerRevision], live: &HashSet<String>, limit: i32) -> Vec<String> {
    let unused: Vec<String> =
        sorted.iter().filter_map(|r| r.metadata.name.clone()).filter(|n| !live.contains(n)).collect();
    let extra = unused.len().saturating_sub(limit.max(0) as usize);
    unused.into_iter().take(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .expect("statefulset json")
    }

    #[test]
    fn fnv1_matches_the_reference_vectors() {
        assert_eq!(fnv1_32(0x811c_9dc5, b""), 0x811c_9dc5);
        assert_eq!(fnv1_32(0x811c_9dc5, b"a"), 0x050c_5d7e);
        assert_eq!(fnv1_32(0x811c_9dc5, b"foobar"), 0x31f0_b262);
    }

    #[test]
    fn a_revision_replaces_the_template_and_round_trips() {
        let s = set("v1");
        let rev = new_revision(&s, 1, 0);
        let name = rev.metadata.name.clone().expect("name");
        let h = rev.metadata.labels.as_ref().expect("labels")[REVISION_HASH_LABEL].clone();
        assert_eq!(name, format!("web-{h}"));
        assert_eq!(rev.metadata.labels.as_ref().expect("labels")["app"], "web", "found by the selector");
        assert_eq!(rev.data.as_ref().expect("data").0["spec"]["template"]["$patch"], "replace");
        assert_eq!(template_of(&rev).as_ref(), s.spec.as_ref().map(|s| &s.template));
        assert_eq!(new_revision(&s, 7, 0).metadata.name, rev.metadata.name, "the number is not hashed");
        assert_ne!(new_revision(&s, 1, 1).metadata.name, rev.metadata.name, "the collision count is");
        assert_ne!(new_revision(&set("v2"), 1, 0).metadata.name, rev.metadata.name);
    }

    #[test]
    fn update_revision_reuses_renumbers_or_creates() {
        let r1 = new_revision(&set("v1"), 1, 0);
        let r2 = new_revision(&set("v2"), 2, 0);
        let revs = vec![r1.clone(), r2.clone()];
        assert_eq!(update_revision(&set("v2"), &revs, 0), UpdateRevision::Latest(r2.metadata.name.clone().expect("n")));
        assert_eq!(
            update_revision(&set("v1"), &revs, 0),
            UpdateRevision::Renumber { name: r1.metadata.name.clone().expect("n"), number: 3 }
        );
        match update_revision(&set("v3"), &revs, 0) {
            UpdateRevision::Create(r) => assert_eq!(r.revision, 3),
            other => panic!("expected a new revision, got {other:?}"),
        }
        let mut shuffled = vec![r2.clone(), r1.clone()];
        sort(&mut shuffled);
        assert_eq!(shuffled[0].revision, 1);
    }

    #[test]
    fn history_keeps_live_revisions_and_the_newest_unused() {
        let revs: Vec<ControllerRevision> =
            (1..=5).map(|i| new_revision(&set(&format!("v{i}")), i64::from(i), 0)).collect();
        let name = |i: usize| revs[i].metadata.name.clone().expect("name");
        let live: HashSet<String> = [name(0), name(4)].into_iter().collect();
        assert_eq!(to_truncate(&revs, &live, 1), vec![name(1), name(2)]);
        assert!(to_truncate(&revs, &live, 10).is_empty());
        assert_eq!(to_truncate(&revs, &live, 0).len(), 3);
    }
}
