//! The collector's decisions with live reads and its writes (Kubernetes' `attemptToDeleteItem`,
//! `processDeletingDependentsItem` and `attemptToOrphanWorker`). The graph says where to look;
//! every decision to delete or unlink is taken on objects read from the store just before.

use std::collections::HashSet;

use serde_json::{Value, json};
use tracing::debug;

use super::GarbageCollector;
use super::graph::{FOREGROUND, Node, ORPHAN, OwnerRef, Work};
use crate::apiserver::error::ApiError;
use crate::controllers::{Context, ReconcileError};
use crate::registry::catalog::{self, ResourceInfo};
use crate::registry::object::{self, meta_str};
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// What a live read says about one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerState {
    /// Exists with that uid and is not deleting its dependents first.
    Solid,
    /// Gone, or replaced by an object with another uid.
    Dangling,
    /// Exists and is being deleted in the foreground: it waits for its dependents.
    Waiting,
}

impl GarbageCollector {
    /// Decides about the object `uid`: if it is an owner being deleted in the foreground,
    /// whether its blocking dependents are gone; otherwise whether its owners still exist.
    pub(super) async fn attempt_to_delete(&self, uid: &str) -> Result<(), ReconcileError> {
        let Some(node) = self.shared.graph().get(uid).cloned() else { return Ok(()) };
        if node.deleting && !node.deleting_dependents {
            return Ok(());
        }
        let Some(live) = self.live(&node, uid).await? else { return Ok(()) };
        let deleting = meta_str(&live, "deletionTimestamp").is_some();
        if deleting && object::finalizers(&live).iter().any(|f| f == FOREGROUND) {
            return self.process_deleting_dependents(&node, uid).await;
        }
        if deleting {
            return Ok(());
        }
        let owners: Vec<OwnerRef> = live
            .get("metadata")
            .and_then(|m| m.get("ownerReferences"))
            .and_then(|r| serde_json::from_value(r.clone()).ok())
            .unwrap_or_default();
        if owners.is_empty() {
            return Ok(());
        }
        let mut solid = 0;
        let mut unlink = HashSet::new();
        let mut waiting = false;
        for r in &owners {
            match self.owner_state(&node, r).await? {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => {
                    unlink.insert(r.uid.clone());
                }
                OwnerState::Waiting => {
                    waiting = true;
                    unlink.insert(r.uid.clone());
                }
            }
        }
        if solid > 0 {
            // Some owner lives on: only the references to the others go.
            if !unlink.is_empty() {
                debug!(kind = node.info.kind, name = node.name, "removing references to gone owners");
                self.remove_owner_refs(&node, uid, &unlink).await?;
            }
            return Ok(());
        }
        let finalizers = object::finalizers(&live);
        let has_dependents = !self.shared.graph().dependents(uid).is_empty();
        let policy = if waiting && has_dependents {
            // An owner waits for us and we have dependents: they go first (recursively).
            "Foreground"
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            "Orphan"
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        debug!(kind = node.info.kind, name = node.name, policy, "deleting an object whose owners are gone");
        self.delete_object(&node, uid, policy).await
    }

    /// An owner in foreground deletion: done once no dependent with `blockOwnerDeletion`
    /// remains; until then its blocking dependents are (re)checked.
    async fn process_deleting_dependents(&self, node: &Node, uid: &str) -> Result<(), ReconcileError> {
        let blocking: Vec<(String, bool)> =
            self.shared.graph().blocking_dependents(uid).into_iter().map(|(d, n)| (d, n.deleting_dependents)).collect();
        if blocking.is_empty() {
            debug!(
                kind = node.info.kind,
                name = node.name,
                "no blocking dependents left; finishing foreground deletion"
            );
            return self.remove_finalizer(node, uid, FOREGROUND).await;
        }
        for (dep, deleting_dependents) in blocking {
            if !deleting_dependents {
                self.queue.add(&super::key_of(&Work::Delete(dep)));
            }
        }
        Ok(())
    }

    /// Removes the owner `uid`'s references from all its dependents, then its `orphan` finalizer.
    pub(super) async fn orphan_dependents(&self, uid: &str) -> Result<(), ReconcileError> {
        let Some(node) = self.shared.graph().get(uid).cloned() else { return Ok(()) };
        if !node.orphaning {
            return Ok(());
        }
        let dependents: Vec<(String, Node)> = {
            let graph = self.shared.graph();
            graph.dependents(uid).into_iter().filter_map(|d| Some((d.clone(), graph.get(&d)?.clone()))).collect()
        };
        let owner: HashSet<String> = [uid.to_string()].into();
        for (dep_uid, dep) in &dependents {
            self.remove_owner_refs(dep, dep_uid, &owner).await?;
        }
        debug!(kind = node.info.kind, name = node.name, dependents = dependents.len(), "orphaned dependents");
        self.remove_finalizer(&node, uid, ORPHAN).await
    }

    /// The object of `node` as stored now, `None` when gone or replaced (another uid).
    async fn live(&self, node: &Node, uid: &str) -> Result<Option<Value>, ReconcileError> {
        match self.registry.get(node.info, node.namespace.as_deref(), &node.name).await {
            Ok(o) if meta_str(&o, "uid") == Some(uid) => Ok(Some(o)),
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).context(|| format!("reading {} {}", node.info.kind, node.name)),
        }
    }

    /// Looks up one owner reference of `dependent` in the store.
    async fn owner_state(&self, dependent: &Node, r: &OwnerRef) -> Result<OwnerState, ReconcileError> {
        let group = r.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let Some(info) = catalog::find_kind(group, &r.kind) else {
            // A kind this server does not serve cannot be checked: never delete for it.
            debug!(kind = %r.kind, api_version = %r.api_version, "owner of an unknown kind; kept");
            return Ok(OwnerState::Solid);
        };
        let ns = match (info.namespaced, dependent.namespace.as_deref()) {
            (false, _) => None,
            (true, Some(ns)) => Some(ns),
            // A cluster-scoped object cannot be owned by a namespaced one.
            (true, None) => return Ok(OwnerState::Dangling),
        };
        let owner = match self.registry.get(info, ns, &r.name).await {
            Ok(o) => o,
            Err(ApiError::NotFound { .. }) => return Ok(OwnerState::Dangling),
            Err(e) => return Err(e).context(|| format!("reading owner {} {}", r.kind, r.name)),
        };
        if meta_str(&owner, "uid") != Some(r.uid.as_str()) {
            return Ok(OwnerState::Dangling);
        }
        let foreground = object::finalizers(&owner).iter().any(|f| f == FOREGROUND);
        if meta_str(&owner, "deletionTimestamp").is_some() && foreground {
            Ok(OwnerState::Waiting)
        } else {
            Ok(OwnerState::Solid)
        }
    }

    /// Drops the owner references with uids in `owners` from the object `uid`.
    async fn remove_owner_refs(&self, node: &Node, uid: &str, owners: &HashSet<String>) -> Result<(), ReconcileError> {
        let result = self
            .edit(node.info, node, uid, |obj| {
                let Some(refs) = obj["metadata"].get_mut("ownerReferences").and_then(Value::as_array_mut) else {
                    return;
                };
                refs.retain(|r| r.get("uid").and_then(Value::as_str).is_none_or(|u| !owners.contains(u)));
                let none_left = refs.is_empty();
                if none_left && let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
            })
            .await;
        result.context(|| format!("removing owner references from {} {}", node.info.kind, node.name))
    }

    /// Drops `finalizer` from the object `uid` (the registry completes a pending delete).
    async fn remove_finalizer(&self, node: &Node, uid: &str, finalizer: &str) -> Result<(), ReconcileError> {
        let result = self
            .edit(node.info, node, uid, |obj| {
                let kept: Vec<String> = object::finalizers(obj).into_iter().filter(|f| f != finalizer).collect();
                obj["metadata"]["finalizers"] = json!(kept);
            })
            .await;
        result.context(|| format!("removing finalizer {finalizer} from {} {}", node.info.kind, node.name))
    }

    /// Read-modify-write of the object `uid`; an object gone or replaced meanwhile is no error.
    async fn edit(
        &self,
        info: &ResourceInfo,
        node: &Node,
        uid: &str,
        change: impl Fn(&mut Value) + Send + Sync,
    ) -> Result<(), ApiError> {
        let result = self
            .registry
            .update_with(info, node.namespace.as_deref(), &node.name, None, WriteOptions::default(), None, |old| {
                if meta_str(old, "uid") != Some(uid) {
                    return Err(crate::registry::rest::not_found(info, &node.name));
                }
                let mut new = old.clone();
                change(&mut new);
                Ok(new)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the object `uid` with `policy` (a uid precondition guards against a namesake).
    async fn delete_object(&self, node: &Node, uid: &str, policy: &str) -> Result<(), ReconcileError> {
        let opts = DeleteOptions {
            precondition_uid: Some(uid.to_string()),
            propagation_policy: Some(policy.to_string()),
            ..Default::default()
        };
        match self.registry.delete(node.info, node.namespace.as_deref(), &node.name, &opts).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            // The uid precondition failed: a new object took the name; not ours to delete.
            Err(ApiError::Conflict(m)) if m.starts_with("Precondition failed") => Ok(()),
            Err(e) => Err(e).context(|| format!("deleting {} {}", node.info.kind, node.name)),
        }
    }
}
