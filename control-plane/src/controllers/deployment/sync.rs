//! One reconcile pass over one Deployment: [`Rollout`] holds a working copy of the
//! Deployment (its revision annotation and conditions change in place) and of its
//! ReplicaSets (kept current after every write), finds or creates the new ReplicaSet
//! (`getAllReplicaSetsAndSyncRevision`), scales ReplicaSets with the `ScalingReplicaSet`
//! events Kubernetes records, and computes the status. What to scale is decided by the
//! strategy files ([`super::rolling`], [`super::recreate`], [`super::scale`]).
//!
//! Every ReplicaSet write carries the cached resourceVersion as a precondition, so a pass
//! that worked from a stale cache fails with a conflict and is retried, never half-applied
//! on top of state it did not see.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use serde_json::json;
use skiff_api::labels::POD_TEMPLATE_HASH;
use tracing::debug;

use super::rolling::Counts;
use super::{DeploymentController, hash, history, progress, status, strategy};
use crate::apiserver::error::ApiError;
use crate::controllers::events::{self, EventType};
use crate::controllers::owner::controller_reference;
use crate::controllers::{Context, ReconcileError, info};
use crate::registry::rest::{DeleteOptions, WriteOptions};

/// The component name on the events this controller records.
const COMPONENT: &str = "deployment-controller";

/// The working state of one reconcile pass (see the module docs).
#[derive(Debug)]
pub struct Rollout<'a> {
    pub c: &'a DeploymentController,
    /// The Deployment, with the revision annotation and conditions as this pass leaves them.
    pub d: Deployment,
    /// Its ReplicaSets (adopted, not being deleted), as last written.
    pub rss: Vec<ReplicaSet>,
    /// The status to write, once a path computed it.
    pub status: Option<DeploymentStatus>,
    /// When to look at this Deployment again even if nothing changes.
    pub recheck: Option<Duration>,
    pub now: Timestamp,
}

impl<'a> Rollout<'a> {
    pub fn new(c: &'a DeploymentController, d: Deployment, rss: Vec<ReplicaSet>, now: Timestamp) -> Self {
        Rollout { c, d, rss, status: None, recheck: None, now }
    }

    pub fn spec_of(&self, i: usize) -> i32 {
        self.rss[i].spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }

    pub fn created(&self, i: usize) -> Option<Timestamp> {
        self.rss[i].metadata.creation_timestamp.as_ref().map(|t| t.0)
    }

    /// Spec and available replicas of ReplicaSet `i`.
    pub fn counts(&self, i: usize) -> Counts {
        let available = self.rss[i].status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        Counts { spec: self.spec_of(i), available }
    }

    fn name_of(&self, i: usize) -> String {
        self.rss[i].metadata.name.clone().unwrap_or_default()
    }

    /// The ReplicaSet running the current template: the oldest whose template equals the
    /// Deployment's, ignoring the hash label (`FindNewReplicaSet`).
    pub fn new_index(&self) -> Option<usize> {
        let template = &self.d.spec.as_ref()?.template;
        let want = hash::template_hash(template);
        (0..self.rss.len())
            .filter(|&i| {
                self.rss[i].spec.as_ref().and_then(|s| s.template.as_ref()).map(hash::template_hash).as_ref()
                    == Some(&want)
            })
            .min_by_key(|&i| (self.created(i), self.name_of(i)))
    }

    /// Every ReplicaSet but `new`, oldest first.
    pub fn olds(&self, new: Option<usize>) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.rss.len()).filter(|&i| Some(i) != new).collect();
        v.sort_by_key(|&i| (self.created(i), self.name_of(i)));
        v
    }

    /// Finds the new ReplicaSet and brings its annotations up to date, or — with `create` —
    /// creates it; records the revision on the Deployment and the first `Progressing`
    /// condition (`getAllReplicaSetsAndSyncRevision`).
    pub async fn sync_revision(&mut self, create: bool) -> Result<Option<usize>, ReconcileError> {
        let new = self.new_index();
        let max_old = self.olds(new).into_iter().map(|i| history::revision(&self.rss[i])).max().unwrap_or(0);
        let next = max_old + 1;
        let has_deadline = progress::deadline(&self.d).is_some();
        if let Some(i) = new {
            let mut rs = self.rss[i].clone();
            let mut changed = history::set_new_rs_annotations(&self.d, &mut rs, next, true);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if let Some(spec) = rs.spec.as_mut()
                && spec.min_ready_seconds != min_ready
            {
                spec.min_ready_seconds = min_ready;
                changed = true;
            }
            if changed {
                self.write_rs(i, rs).await?;
            }
            history::set_deployment_revision(&mut self.d, history::revision(&self.rss[i]));
            if has_deadline && progress::get(self.d.status.as_ref(), progress::PROGRESSING).is_none() {
                let msg = format!("Found new replica set \"{}\"", self.name_of(i));
                let c = progress::condition(progress::PROGRESSING, "True", progress::FOUND_NEW_RS, msg, self.now);
                progress::set(self.d.status.get_or_insert_with(Default::default), c);
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }
        let Some(spec) = self.d.spec.as_ref() else { return Ok(None) };
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = hash::template_hash_with(&spec.template, collisions);
        let mut rs = new_replica_set(&self.d, &hash);
        let desired = strategy::desired(&self.d);
        let replicas = if strategy::is_rolling(&self.d) {
            let total: i32 = (0..self.rss.len()).map(|i| self.spec_of(i)).sum();
            super::rolling::new_rs_replicas(desired, strategy::max_surge(&self.d), total, 0)
        } else {
            desired
        };
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(replicas);
        }
        history::set_new_rs_annotations(&self.d, &mut rs, next, false);
        let ns = self.d.metadata.namespace.clone();
        let body = serde_json::to_value(&rs).unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        debug!(rs = name, replicas, revision = next, "creating the new ReplicaSet");
        let created = match self
            .c
            .registry
            .create(info("apps", "replicasets"), ns.as_deref(), body, WriteOptions::default())
            .await
        {
            Ok(w) => w.object,
            Err(ApiError::AlreadyExists { .. }) => return self.collided(&name, collisions).await,
            Err(e) => return Err(e).context(|| format!("creating ReplicaSet {name}")),
        };
        let created: ReplicaSet = serde_json::from_value(created).unwrap_or(rs);
        if replicas > 0 {
            self.event(format!("Scaled up replica set {name} from 0 to {replicas}")).await;
        }
        self.rss.push(created);
        history::set_deployment_revision(&mut self.d, next);
        if has_deadline {
            let msg = format!("Created new replica set \"{name}\"");
            let c = progress::condition(progress::PROGRESSING, "True", progress::NEW_RS_CREATED, msg, self.now);
            progress::set(self.d.status.get_or_insert_with(Default::default), c);
        }
        Ok(Some(self.rss.len() - 1))
    }

    /// The new ReplicaSet's name is taken. Ours with this template (the cache is behind):
    /// retry later. Anyone else's: count a collision in the status, so the next pass hashes
    /// to another name (`collisionCount`). Either way this pass stops with a conflict.
    async fn collided(&mut self, name: &str, collisions: Option<i32>) -> Result<Option<usize>, ReconcileError> {
        let ns = self.d.metadata.namespace.clone();
        let existing = self.c.registry.get(info("apps", "replicasets"), ns.as_deref(), name).await.ok();
        let existing: Option<ReplicaSet> = existing.and_then(|v| serde_json::from_value(v).ok());
        let template = self.d.spec.as_ref().map(|s| hash::template_hash(&s.template));
        let ours = existing.is_some_and(|rs| {
            crate::controllers::owner::controller_ref(&rs.metadata).map(|r| r.uid.as_str())
                == self.d.metadata.uid.as_deref()
                && rs.spec.as_ref().and_then(|s| s.template.as_ref()).map(hash::template_hash) == template
        });
        if !ours {
            let count = collisions.unwrap_or(0).saturating_add(1);
            debug!(rs = name, count, "ReplicaSet name taken; counting a collision");
            let mut status = self.d.status.clone().unwrap_or_default();
            status.collision_count = Some(count);
            let value = serde_json::to_value(&status).unwrap_or_default();
            let dname = self.d.metadata.name.clone().unwrap_or_default();
            crate::controllers::write_status(
                &self.c.registry,
                info("apps", "deployments"),
                ns.as_deref(),
                &dname,
                value,
            )
            .await?;
        }
        Err(ApiError::Conflict(format!("ReplicaSet {name} exists but is not in the cache yet")))
            .context(|| format!("creating ReplicaSet {name}"))
    }

    /// Scales ReplicaSet `i` to `n` with a `ScalingReplicaSet` event; false when it already
    /// is that size (`scaleReplicaSetAndRecordEvent`).
    pub async fn scale(&mut self, i: usize, n: i32) -> Result<bool, ReconcileError> {
        if self.spec_of(i) == n {
            return Ok(false);
        }
        self.resize(i, n).await?;
        Ok(true)
    }

    /// Sets ReplicaSet `i` to `n` replicas and refreshes its sizing annotations, writing only
    /// when either changes (`scaleReplicaSet`).
    pub async fn resize(&mut self, i: usize, n: i32) -> Result<(), ReconcileError> {
        let from = self.spec_of(i);
        let mut rs = self.rss[i].clone();
        let annotations_changed = history::set_replicas_annotations(&mut rs, &self.d);
        if from == n && !annotations_changed {
            return Ok(());
        }
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(n);
        }
        self.write_rs(i, rs).await?;
        if from != n {
            let way = if n > from { "up" } else { "down" };
            self.event(format!("Scaled {way} replica set {} from {from} to {n}", self.name_of(i))).await;
        }
        Ok(())
    }

    /// Writes the spec and annotations of `rs` over ReplicaSet `i`, if nobody changed it since
    /// the cache saw it.
    async fn write_rs(&mut self, i: usize, rs: ReplicaSet) -> Result<(), ReconcileError> {
        let name = self.name_of(i);
        let precondition = self.rss[i].metadata.resource_version.as_deref().and_then(|v| v.parse().ok());
        let spec = serde_json::to_value(&rs.spec).unwrap_or_default();
        let annotations = serde_json::to_value(&rs.metadata.annotations).unwrap_or_default();
        let written = self
            .c
            .registry
            .update_with(
                info("apps", "replicasets"),
                rs.metadata.namespace.as_deref(),
                &name,
                None,
                WriteOptions::default(),
                precondition,
                |old| {
                    let mut new = old.clone();
                    new["spec"] = spec.clone();
                    new["metadata"]["annotations"] = annotations.clone();
                    Ok(new)
                },
            )
            .await
            .context(|| format!("updating ReplicaSet {name}"))?;
        self.rss[i] = serde_json::from_value(written.object).unwrap_or(rs);
        Ok(())
    }

    /// Deletes the oldest empty ReplicaSets beyond `revisionHistoryLimit` (`cleanupDeployment`).
    pub async fn cleanup(&mut self) -> Result<(), ReconcileError> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        let new = self.new_index();
        let olds: Vec<&ReplicaSet> = self.olds(new).into_iter().map(|i| &self.rss[i]).collect();
        let victims: Vec<(Option<String>, String)> = history::to_delete(&olds, limit)
            .into_iter()
            .map(|rs| (rs.metadata.namespace.clone(), rs.metadata.name.clone().unwrap_or_default()))
            .collect();
        for (ns, name) in victims {
            debug!(rs = name, "deleting an old ReplicaSet past the history limit");
            let r = self
                .c
                .registry
                .delete(info("apps", "replicasets"), ns.as_deref(), &name, &DeleteOptions::default())
                .await;
            match r {
                Ok(_) | Err(ApiError::NotFound { .. }) => {
                    self.rss.retain(|rs| rs.metadata.name.as_deref() != Some(&name))
                }
                Err(e) => return Err(e).context(|| format!("deleting old ReplicaSet {name}")),
            }
        }
        Ok(())
    }

    /// The stored status says the rollout is complete (cleanup runs only then).
    pub fn was_complete(&self) -> bool {
        self.d.status.as_ref().is_some_and(|s| progress::complete(&self.d, s))
    }

    /// The status from the ReplicaSets as they are now (`syncDeploymentStatus`).
    pub fn finish_status(&mut self) {
        let new = self.new_index();
        self.status = Some(status::compute(&self.d, new.map(|i| &self.rss[i]), &self.rss, self.now));
    }

    /// The status with the `Progressing` condition moved on, and when to recheck the
    /// deadline (`syncRolloutStatus`).
    pub fn finish_rollout(&mut self) -> Result<(), ReconcileError> {
        let new = self.new_index();
        let mut s = status::compute(&self.d, new.map(|i| &self.rss[i]), &self.rss, self.now);
        let name = new.map(|i| self.name_of(i));
        progress::update_progressing(&self.d, name.as_deref(), &mut s, self.now);
        self.recheck = progress::recheck_after(&self.d, &s, self.now);
        self.status = Some(s);
        Ok(())
    }

    async fn event(&self, message: String) {
        let involved = events::reference("apps/v1", "Deployment", &self.d.metadata);
        events::record(&self.c.registry, COMPONENT, &involved, EventType::Normal, "ScalingReplicaSet", &message).await;
    }
}

/// The ReplicaSet for the current template of `d` (0 replicas; the caller sizes it): named
/// `<deployment>-<hash>`, the hash added to its labels, selector and pod template.
pub fn new_replica_set(d: &Deployment, hash: &str) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.into());
    let labels = meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.into());
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "namespace": d.metadata.namespace,
            "labels": labels,
            "ownerReferences": [controller_reference("apps/v1", "Deployment", &d.metadata)],
        },
        "spec": {
            "replicas": 0,
            "minReadySeconds": spec.min_ready_seconds,
            "selector": selector,
            "template": template,
        },
    });
    serde_json::from_value(value).unwrap_or_default()
}
