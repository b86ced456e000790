//! The garbage collector's dependency graph (Kubernetes' `GraphBuilder` state): one small
//! node per stored object of any kind — its identity, its owner references and whether it is
//! being deleted — and an index from an owner's uid to its dependents. Whole objects are
//! never kept.
//!
//! [`Graph::apply`] folds one change into the graph and returns the work it calls for
//! (which uids to check for deletion, which owners to orphan), exactly the decisions of
//! `processGraphChanges`. It is pure: the store watch that feeds it lives in
//! [`super::monitor`], the live checks and writes in [`super::collect`].

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::registry::catalog::ResourceInfo;

/// The finalizer of an owner deleted with propagationPolicy=Foreground.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an owner deleted with propagationPolicy=Orphan.
pub const ORPHAN: &str = "orphan";

/// The part of an owner reference the collector needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default)]
    pub block_owner_deletion: Option<bool>,
}

impl OwnerRef {
    /// Whether this reference holds a foreground deletion of its owner back.
    pub fn blocks(&self) -> bool {
        self.block_owner_deletion == Some(true)
    }
}

/// `metadata` decoded from a stored object, only the fields the graph reads (the rest of
/// the object is skipped by the decoder, never materialised).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub owner_references: Option<Vec<OwnerRef>>,
    #[serde(default)]
    pub finalizers: Option<Vec<String>>,
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
}

/// A stored object as the graph sees it.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub metadata: Meta,
}

/// One object in the graph.
#[derive(Debug, Clone)]
pub struct Node {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<OwnerRef>,
    /// Has a deletionTimestamp.
    pub deleting: bool,
    /// Being deleted and waits for its blocking dependents (`foregroundDeletion`).
    pub deleting_dependents: bool,
    /// Being deleted and its dependents are to be orphaned (`orphan`).
    pub orphaning: bool,
}

impl Node {
    fn from_meta(info: &'static ResourceInfo, meta: Meta) -> Node {
        let deleting = meta.deletion_timestamp.is_some();
        let finalizers = meta.finalizers.unwrap_or_default();
        Node {
            info,
            namespace: meta.namespace.filter(|n| !n.is_empty()),
            name: meta.name.unwrap_or_default(),
            owners: meta.owner_references.unwrap_or_default(),
            deleting,
            deleting_dependents: deleting && finalizers.iter().any(|f| f == FOREGROUND),
            orphaning: deleting && finalizers.iter().any(|f| f == ORPHAN),
        }
    }
}

/// What a change calls for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Check whether the object should be deleted, or (owner in foreground deletion)
    /// whether its blocking dependents are gone (`attemptToDelete`).
    Delete(String),
    /// Remove the owner's references from its dependents, then its `orphan` finalizer.
    Orphan(String),
}

/// The dependency graph (see the module docs).
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → uids of the objects that reference it (whether or not the owner exists).
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// The node of `uid`.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// How many objects the graph holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the graph holds nothing.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The uids of the objects that reference `owner`.
    pub fn dependents(&self, owner: &str) -> Vec<String> {
        self.dependents.get(owner).map(|d| d.iter().cloned().collect()).unwrap_or_default()
    }

    /// The dependents of `owner` whose reference to it has `blockOwnerDeletion`, with their nodes.
    pub fn blocking_dependents(&self, owner: &str) -> Vec<(String, &Node)> {
        let Some(deps) = self.dependents.get(owner) else { return vec![] };
        deps.iter()
            .filter_map(|uid| Some((uid.clone(), self.nodes.get(uid)?)))
            .filter(|(_, n)| n.owners.iter().any(|r| r.uid == owner && r.blocks()))
            .collect()
    }

    /// Replaces the graph with a full listing; returns the work a fresh start calls for
    /// (objects whose owners are absent, owners mid-deletion).
    pub fn reset(&mut self, objects: Vec<(&'static ResourceInfo, Meta)>) -> Vec<Work> {
        self.nodes.clear();
        self.dependents.clear();
        for (info, meta) in objects {
            let Some(uid) = meta.uid.clone() else { continue };
            let node = Node::from_meta(info, meta);
            self.link(&uid, &node.owners);
            self.nodes.insert(uid, node);
        }
        self.scan()
    }

    /// Work for every object that looks like it needs attention now: an owner missing from
    /// the graph, or a deletion in progress that waits for the collector (the periodic
    /// resync, and the start).
    pub fn scan(&self) -> Vec<Work> {
        let mut work = Vec::new();
        for (uid, node) in &self.nodes {
            if node.owners.iter().any(|r| !self.nodes.contains_key(&r.uid)) || node.deleting_dependents {
                work.push(Work::Delete(uid.clone()));
            }
            if node.orphaning {
                work.push(Work::Orphan(uid.clone()));
            }
        }
        work
    }

    /// Folds in a create or update of an object.
    pub fn upsert(&mut self, info: &'static ResourceInfo, meta: Meta) -> Vec<Work> {
        let Some(uid) = meta.uid.clone() else { return vec![] };
        let node = Node::from_meta(info, meta);
        let mut work = Vec::new();
        let old = self.nodes.remove(&uid);
        let (old_owners, was_deleting_dependents) = match &old {
            Some(o) => (o.owners.clone(), o.deleting_dependents),
            None => (vec![], false),
        };
        if old_owners != node.owners {
            self.unlink(&uid, &old_owners);
            self.link(&uid, &node.owners);
            // An owner waiting for its dependents may be unblocked by a removed reference
            // or a dropped blockOwnerDeletion.
            for r in &old_owners {
                let still_blocks = node.owners.iter().any(|n| n.uid == r.uid && n.blocks());
                if r.blocks() && !still_blocks && self.nodes.get(&r.uid).is_some_and(|o| o.deleting_dependents) {
                    work.push(Work::Delete(r.uid.clone()));
                }
            }
            // A new owner reference may point at nothing, or at an owner already deleting its
            // dependents in the foreground (the owner's update was folded first: each resource
            // has its own watch, so events of different resources arrive in any order): verify.
            let owner_waits = |r: &OwnerRef| self.nodes.get(&r.uid).is_none_or(|o| o.deleting_dependents);
            if node.owners.iter().any(owner_waits) {
                work.push(Work::Delete(uid.clone()));
            }
        } else if old.is_none() && node.owners.iter().any(|r| !self.nodes.contains_key(&r.uid)) {
            work.push(Work::Delete(uid.clone()));
        }
        if node.deleting_dependents {
            work.push(Work::Delete(uid.clone()));
            if !was_deleting_dependents {
                work.extend(self.dependents(&uid).into_iter().map(Work::Delete));
            }
        }
        if node.orphaning {
            work.push(Work::Orphan(uid.clone()));
        }
        self.nodes.insert(uid, node);
        work
    }

    /// Folds in the removal of the object `uid` from the store.
    pub fn remove(&mut self, uid: &str) -> Vec<Work> {
        let Some(node) = self.nodes.remove(uid) else { return vec![] };
        self.unlink(uid, &node.owners);
        // Its dependents may now have no owner left; its owners may be waiting for it.
        let mut work: Vec<Work> = self.dependents(uid).into_iter().map(Work::Delete).collect();
        for r in &node.owners {
            if self.nodes.get(&r.uid).is_some_and(|o| o.deleting_dependents) {
                work.push(Work::Delete(r.uid.clone()));
            }
        }
        work
    }

    fn link(&mut self, uid: &str, owners: &[OwnerRef]) {
        for r in owners {
            self.dependents.entry(r.uid.clone()).or_default().insert(uid.to_string());
        }
    }

    fn unlink(&mut self, uid: &str, owners: &[OwnerRef]) {
        for r in owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::info;

    fn meta(uid: &str, owners: &[(&str, bool)]) -> Meta {
        Meta {
            uid: Some(uid.into()),
            name: Some(uid.into()),
            namespace: Some("ns".into()),
            owner_references: Some(
                owners
                    .iter()
                    .map(|(o, block)| OwnerRef {
                        api_version: "v1".into(),
                        kind: "Secret".into(),
                        name: (*o).into(),
                        uid: (*o).into(),
                        block_owner_deletion: Some(*block),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn deleting(mut m: Meta, finalizer: &str) -> Meta {
        m.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
        m.finalizers = Some(vec![finalizer.into()]);
        m
    }

    #[test]
    fn a_dependent_of_a_missing_owner_is_checked_and_owner_removal_requeues_dependents() {
        let cm = info("", "configmaps");
        let mut g = Graph::default();
        assert_eq!(g.upsert(cm, meta("dep", &[("owner", false)])), vec![Work::Delete("dep".into())]);
        assert_eq!(g.upsert(cm, meta("owner", &[])), vec![]);
        assert_eq!(g.upsert(cm, meta("dep", &[("owner", false)])), vec![], "nothing changed");
        assert_eq!(g.remove("owner"), vec![Work::Delete("dep".into())]);
        assert_eq!(g.dependents("owner"), vec!["dep".to_string()], "kept while the dependent references it");
        g.remove("dep");
        assert!(g.dependents("owner").is_empty());
        assert!(g.is_empty());
    }

    #[test]
    fn foreground_owner_queues_its_dependents_and_is_requeued_when_a_blocker_goes() {
        let cm = info("", "configmaps");
        let mut g = Graph::default();
        g.upsert(cm, meta("owner", &[]));
        g.upsert(cm, meta("a", &[("owner", true)]));
        g.upsert(cm, meta("b", &[("owner", false)]));
        let mut work = g.upsert(cm, deleting(meta("owner", &[]), FOREGROUND));
        work.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(work, vec![Work::Delete("a".into()), Work::Delete("b".into()), Work::Delete("owner".into())]);
        assert_eq!(g.blocking_dependents("owner").len(), 1);
        assert_eq!(g.remove("a"), vec![Work::Delete("owner".into())]);
        assert!(g.blocking_dependents("owner").is_empty());
    }

    #[test]
    fn a_dependent_seen_after_its_owner_went_foreground_is_checked() {
        let cm = info("", "configmaps");
        let mut g = Graph::default();
        g.upsert(cm, meta("owner", &[]));
        g.upsert(cm, deleting(meta("owner", &[]), FOREGROUND));
        assert_eq!(g.upsert(cm, meta("late", &[("owner", false)])), vec![Work::Delete("late".into())]);
    }

    #[test]
    fn orphan_finalizer_and_dropped_block_are_noticed() {
        let cm = info("", "configmaps");
        let mut g = Graph::default();
        g.upsert(cm, meta("owner", &[]));
        g.upsert(cm, meta("a", &[("owner", true)]));
        g.upsert(cm, deleting(meta("owner", &[]), FOREGROUND));
        // The owner is requeued (no blocker left); the changed dependent is checked too.
        assert_eq!(
            g.upsert(cm, meta("a", &[("owner", false)])),
            vec![Work::Delete("owner".into()), Work::Delete("a".into())]
        );
        assert!(g.upsert(cm, deleting(meta("x", &[]), ORPHAN)).contains(&Work::Orphan("x".into())));
        assert!(g.scan().contains(&Work::Orphan("x".into())));
    }
}
