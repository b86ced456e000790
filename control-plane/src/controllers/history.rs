//! ControllerRevisions, as Kubernetes' `pkg/controller/history` keeps them: immutable
//! snapshots of a workload's pod template (in `data`, as the strategic merge patch that
//! restores it), numbered by `revision`, named `<owner>-<hash>` and labelled
//! `controller-revision-hash`, so `kubectl rollout history/undo` can list and restore them.
//!
//! Owns: the hash, the name, finding an owner's revisions in the cache, creating a revision
//! (reporting a hash collision) and trimming old ones. General over the owner's kind, so the
//! DaemonSet and StatefulSet controllers can share it. Not here: deciding which revision is
//! current (that compares templates, which is the owner's business).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use skiff_api::labels::CONTROLLER_REVISION_HASH;
use skiff_api::selector::LabelSelector;

use super::informer::Informer;
use super::owner::{controller_ref, controller_reference, labels_of};
use super::{Context, ReconcileError, info};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{DeleteOptions, Registry, WriteOptions};

/// Kubernetes' "safe" alphabet (no vowels, no look-alikes), so hashes never spell words.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The longest owner name kept in a revision name (the Go controller's 223).
const MAX_PREFIX: usize = 223;

fn fnv1a32(h: u32, data: &[u8]) -> u32 {
    data.iter().fold(h, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// The hash naming one snapshot: FNV-1a (32 bit) over the JSON of `data` and, when set, the
/// collision count (which moves the hash off a name already taken by other data), printed
/// in decimal and mapped through the safe alphabet.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h = fnv1a32(0x811c_9dc5, &serde_json::to_vec(data).unwrap_or_default());
    if let Some(c) = collision_count {
        h = fnv1a32(h, &c.to_le_bytes());
    }
    h.to_string().bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// `<owner>-<hash>`, the owner name cut so the result stays a valid name.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let prefix = owner.get(..MAX_PREFIX).unwrap_or(owner);
    format!("{prefix}-{hash}")
}

/// The revisions controlled by the owner with `uid` in `ns` whose labels match `selector`,
/// oldest revision first (ties by name, so the order is stable).
pub fn owned_revisions(
    revisions: &Informer<ControllerRevision>,
    ns: &str,
    uid: &str,
    selector: &LabelSelector,
) -> Vec<Arc<ControllerRevision>> {
    let mut owned: Vec<_> = revisions
        .list_namespace(ns)
        .into_iter()
        .filter(|r| controller_ref(&r.metadata).is_some_and(|o| o.uid == uid))
        .filter(|r| selector.matches(labels_of(&r.metadata)))
        .collect();
    owned.sort_by(|a, b| a.revision.cmp(&b.revision).then_with(|| a.metadata.name.cmp(&b.metadata.name)));
    owned
}

/// The highest revision number among `revisions` (0 when there is none).
pub fn max_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// The hash a revision is known by: its label, else the suffix of its name.
pub fn revision_hash(rev: &ControllerRevision) -> String {
    if let Some(h) = rev.metadata.labels.as_ref().and_then(|l| l.get(CONTROLLER_REVISION_HASH)) {
        return h.clone();
    }
    let name = rev.metadata.name.as_deref().unwrap_or_default();
    name.rsplit_once('-').map(|(_, h)| h.to_string()).unwrap_or_default()
}

/// What [`create`] found.
#[derive(Debug)]
pub enum Created {
    /// The revision was written.
    New(ControllerRevision),
    /// A revision of that name already exists (the caller decides if it is the same one).
    Exists(ControllerRevision),
}

/// A new revision of the owner (`api_version`/`kind`, `meta`) holding `data`, labelled with
/// `labels` plus the hash and annotated with `annotations`.
#[allow(clippy::too_many_arguments)]
pub fn new_revision(
    api_version: &str,
    kind: &str,
    owner: &ObjectMeta,
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    data: &Value,
    revision: i64,
    collision_count: Option<i32>,
) -> Value {
    let h = hash(data, collision_count);
    let mut labels = labels.clone();
    labels.insert(CONTROLLER_REVISION_HASH.into(), h.clone());
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(owner.name.as_deref().unwrap_or_default(), &h),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [controller_reference(api_version, kind, owner)],
        },
        "data": data,
        "revision": revision,
    })
}

/// Creates `body` (from [`new_revision`]); an existing revision of the same name is returned
/// as [`Created::Exists`] rather than as an error.
pub async fn create(registry: &Registry, body: Value) -> Result<Created, ReconcileError> {
    let ns = body["metadata"]["namespace"].as_str().map(str::to_string);
    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let rinfo = info("apps", "controllerrevisions");
    let decode = |v: Value| {
        serde_json::from_value::<ControllerRevision>(v).map_err(|e| ReconcileError::Api {
            what: format!("decoding ControllerRevision {name}"),
            source: ApiError::Internal(e.to_string()),
        })
    };
    match registry.create(rinfo, ns.as_deref(), body.clone(), WriteOptions::default()).await {
        Ok(created) => Ok(Created::New(decode(created.object)?)),
        Err(ApiError::AlreadyExists { .. }) => {
            let existing =
                registry.get(rinfo, ns.as_deref(), &name).await.context(|| format!("reading revision {name}"))?;
            Ok(Created::Exists(decode(existing)?))
        }
        Err(e) => Err(e).context(|| format!("creating revision {name}")),
    }
}

/// Sets the `revision` number of an existing revision (a rollback makes an old snapshot the
/// newest again).
pub async fn set_revision(registry: &Registry, rev: &ControllerRevision, revision: i64) -> Result<(), ReconcileError> {
    let name = rev.metadata.name.as_deref().unwrap_or_default();
    registry
        .update_with(
            info("apps", "controllerrevisions"),
            rev.metadata.namespace.as_deref(),
            name,
            None,
            WriteOptions::default(),
            None,
            |old| {
                let mut new = old.clone();
                new["revision"] = json!(revision);
                Ok(new)
            },
        )
        .await
        .context(|| format!("renumbering revision {name}"))
        .map(|_| ())
}

/// The revisions to delete so that at most `limit` of `old` remain: oldest first, never one
/// whose hash is still `live` (pods of that revision exist).
pub fn to_trim<'a>(
    old: &'a [Arc<ControllerRevision>],
    live: &BTreeSet<String>,
    limit: usize,
) -> Vec<&'a Arc<ControllerRevision>> {
    let excess = old.len().saturating_sub(limit);
    old.iter().filter(|r| !live.contains(&revision_hash(r))).take(excess).collect()
}

/// Deletes one revision (already gone is fine).
pub async fn delete(registry: &Registry, rev: &ControllerRevision) -> Result<(), ReconcileError> {
    let name = rev.metadata.name.as_deref().unwrap_or_default();
    match registry
        .delete(info("apps", "controllerrevisions"), rev.metadata.namespace.as_deref(), name, &DeleteOptions::default())
        .await
    {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e).context(|| format!("deleting revision {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, revision: i64, hash: Option<&str>) -> Arc<ControllerRevision> {
        let labels = hash.map(|h| json!({CONTROLLER_REVISION_HASH: h})).unwrap_or(json!({}));
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "revision": revision}))
                .expect("revision json"),
        )
    }

    #[test]
    fn hash_is_stable_and_moves_with_data_and_collisions() {
        let a = json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}});
        let b = json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}}}});
        let h = hash(&a, None);
        assert_eq!(h, hash(&a, None));
        assert_ne!(h, hash(&b, None));
        assert_ne!(h, hash(&a, Some(1)), "a collision count gives a new name");
        assert_ne!(hash(&a, Some(1)), hash(&a, Some(2)));
        assert!(!h.is_empty() && h.bytes().all(|c| SAFE_ALPHABET.contains(&c)));
    }

    #[test]
    fn names_are_owner_dash_hash_and_cut_long_owners() {
        assert_eq!(revision_name("agent", "5d8f"), "agent-5d8f");
        let long = "a".repeat(300);
        assert_eq!(revision_name(&long, "h").len(), MAX_PREFIX + 2);
        assert_eq!(revision_hash(&rev("agent-abc", 1, None)), "abc", "from the name without a label");
        assert_eq!(revision_hash(&rev("agent-abc", 1, Some("xyz"))), "xyz", "the label wins");
    }

    #[test]
    fn trimming_keeps_the_limit_and_live_revisions() {
        let old = vec![rev("a-1", 1, Some("h1")), rev("a-2", 2, Some("h2")), rev("a-3", 3, Some("h3"))];
        assert_eq!(max_revision(&old), 3);
        let none = BTreeSet::new();
        let names = |v: Vec<&Arc<ControllerRevision>>| {
            v.iter().map(|r| r.metadata.name.clone().unwrap_or_default()).collect::<Vec<_>>()
        };
        assert_eq!(names(to_trim(&old, &none, 1)), vec!["a-1", "a-2"]);
        assert_eq!(names(to_trim(&old, &none, 5)), Vec::<String>::new());
        let live = BTreeSet::from(["h1".to_string()]);
        assert_eq!(names(to_trim(&old, &live, 1)), vec!["a-2", "a-3"], "a revision with pods is kept");
        assert_eq!(names(to_trim(&old, &live, 0)), vec!["a-2", "a-3"]);
    }
}
