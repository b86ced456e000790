//! The StatefulSet controller (kube-controller-manager's `pkg/controller/statefulset`): pods
//! with stable ordinal names and identities, one PersistentVolumeClaim per ordinal and claim
//! template, ordered (or parallel) creation and removal, rolling updates in reverse ordinal
//! order with a partition, ControllerRevisions for `kubectl rollout history/undo`, and the
//! status `kubectl rollout status` reads.
//!
//! The decisions are pure and tested on their own: identities in [`identity`], revisions in
//! [`revision`], claim ownership in [`claims`], one sync pass in [`plan`]. This file reads the
//! caches, carries the plan out through the registry and records events.
//!
//! Not here: adopting orphaned pods or revisions, releasing pods whose labels stop matching,
//! deleting anything when the set is deleted (the garbage collector follows the
//! ownerReferences), provisioning volumes for the claims.

pub mod claims;
pub mod identity;
pub mod plan;
pub mod revision;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use serde_json::json;
use skiff_api::selector::LabelSelector;
use tracing::{debug, instrument};

use super::clock::Clock;
use super::events::{self, EventType};
use super::informer::{Change, Informer, key_of};
use super::owner::{controller_key, controller_ref};
use super::workqueue::WorkQueue;
use super::{Context, Ctx, ReconcileError, info, write_status};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{DeleteOptions, Registry, WriteOptions};
use plan::{Action, Revisions, Version};
use revision::UpdateRevision;

/// The component name on events.
const COMPONENT: &str = "statefulset-controller";
/// How many hash collisions are resolved in one pass before giving up.
const MAX_COLLISIONS: usize = 8;

/// The StatefulSet controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct StatefulSetController {
    registry: Registry,
    clock: Clock,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    pvcs: Informer<PersistentVolumeClaim>,
    revisions: Informer<ControllerRevision>,
    queue: WorkQueue,
}

/// The two templates of a pass and their revision names.
struct Versions {
    current: (String, PodTemplateSpec),
    update: (String, PodTemplateSpec),
}

impl StatefulSetController {
    /// Creates the controller and subscribes it to the caches.
    pub fn new(ctx: &Ctx) -> Self {
        let inf = &ctx.inf;
        let c = StatefulSetController {
            registry: ctx.registry.clone(),
            clock: ctx.config.clock.clone(),
            sets: inf.statefulsets.clone(),
            pods: inf.pods.clone(),
            pvcs: inf.pvcs.clone(),
            revisions: inf.controller_revisions.clone(),
            queue: WorkQueue::new(),
        };
        let q = c.queue.clone();
        c.sets.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let q = c.queue.clone();
        c.pods.subscribe(move |change| {
            if let Change::Updated { old, .. } = change
                && let Some(owner) = controller_key(&old.metadata, "StatefulSet")
            {
                q.add(&owner);
            }
            if let Some(owner) = controller_key(&change.object().metadata, "StatefulSet") {
                q.add(&owner);
            }
        });
        let q = c.queue.clone();
        c.revisions.subscribe(move |change| {
            if let Some(owner) = controller_key(&change.object().metadata, "StatefulSet") {
                q.add(&owner);
            }
        });
        c
    }

    /// The queue of StatefulSet keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Brings one StatefulSet's revisions, claims, pods and status to the desired state.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(set) = self.sets.get(key) else { return Ok(()) };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(spec) = set.spec.as_ref() else { return Ok(()) };
        LabelSelector::from_label_selector(&spec.selector)
            .map_err(|source| ReconcileError::Selector { key: key.into(), source })?;
        let ns = set.metadata.namespace.as_deref().unwrap_or_default();
        let uid = set.metadata.uid.as_deref().unwrap_or_default();
        let owned_by_set = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            controller_ref(meta).is_some_and(|r| r.uid == uid)
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(ns)
            .into_iter()
            .filter(|p| owned_by_set(&p.metadata) && identity::ordinal_of(&set, p).is_some())
            .collect();
        let mut revs: Vec<ControllerRevision> = self
            .revisions
            .list_namespace(ns)
            .iter()
            .filter(|r| owned_by_set(&r.metadata))
            .map(|r| (**r).clone())
            .collect();
        revision::sort(&mut revs);

        let (update_name, collision_count) = self.ensure_update_revision(&set, &revs).await?;
        let current = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.as_deref())
            .and_then(|name| revs.iter().find(|r| r.metadata.name.as_deref() == Some(name)))
            .and_then(|r| Some((r.metadata.name.clone()?, revision::template_of(r)?)));
        let update = (update_name.clone(), spec.template.clone());
        let versions = Versions { current: current.unwrap_or_else(|| update.clone()), update };
        let revisions = Revisions { current: versions.current.0.clone(), update: update_name, collision_count };

        self.sync_claim_refs(&set, &pods).await?;
        let plan = plan::plan(&set, &pods, &revisions, self.clock.now());
        for action in plan.actions {
            if !self.execute(&set, &versions, action).await? {
                break;
            }
        }
        if set.status.as_ref() != Some(&plan.status) {
            let value = serde_json::to_value(&plan.status).unwrap_or_default();
            let name = set.metadata.name.as_deref().unwrap_or_default();
            write_status(&self.registry, info("apps", "statefulsets"), Some(ns), name, value).await?;
        }
        self.truncate_history(&set, &revs, &pods, &revisions).await?;
        if let Some(after) = plan.requeue_after {
            self.queue.add_after(key, after);
        }
        Ok(())
    }

    /// Finds or makes the revision of the set's current template; returns its name and the
    /// collision count it was made with.
    async fn ensure_update_revision(
        &self,
        set: &StatefulSet,
        revs: &[ControllerRevision],
    ) -> Result<(String, i32), ReconcileError> {
        let mut collisions = set.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
        let ns = set.metadata.namespace.as_deref();
        let cr = info("apps", "controllerrevisions");
        for _ in 0..MAX_COLLISIONS {
            match revision::update_revision(set, revs, collisions) {
                UpdateRevision::Latest(name) => return Ok((name, collisions)),
                UpdateRevision::Renumber { name, number } => {
                    debug!(revision = name, number, "an older revision is the update revision again");
                    self.registry
                        .update_with(cr, ns, &name, None, WriteOptions::default(), None, |old| {
                            let mut new = old.clone();
                            new["revision"] = json!(number);
                            Ok(new)
                        })
                        .await
                        .context(|| format!("renumbering ControllerRevision {name}"))?;
                    return Ok((name, collisions));
                }
                UpdateRevision::Create(rev) => {
                    let name = rev.metadata.name.clone().unwrap_or_default();
                    let body = serde_json::to_value(&*rev).unwrap_or_default();
                    match self.registry.create(cr, ns, body, WriteOptions::default()).await {
                        Ok(_) => return Ok((name, collisions)),
                        Err(ApiError::AlreadyExists { .. }) => {
                            let existing =
                                self.registry.get(cr, ns, &name).await.context(|| format!("reading {name}"))?;
                            let existing: Option<ControllerRevision> = serde_json::from_value(existing).ok();
                            if existing.is_some_and(|e| revision::equal(&e, &rev)) {
                                return Ok((name, collisions));
                            }
                            // Another template hashed to the same name: probe with a new count.
                            collisions += 1;
                        }
                        Err(e) => return Err(e).context(|| format!("creating ControllerRevision {name}")),
                    }
                }
            }
        }
        Err(ApiError::Conflict(format!("{MAX_COLLISIONS} hash collisions for the revision")))
            .context(|| format!("StatefulSet {}", set.metadata.name.as_deref().unwrap_or_default()))
    }

    /// Carries out one action; false when the pass should stop and wait for the caches.
    async fn execute(&self, set: &StatefulSet, versions: &Versions, action: Action) -> Result<bool, ReconcileError> {
        let ns = set.metadata.namespace.as_deref();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        match action {
            Action::Create { ordinal, version } => {
                if !self.ensure_claims(set, ordinal).await? {
                    return Ok(false);
                }
                let (rev, template) = match version {
                    Version::Current => &versions.current,
                    Version::Update => &versions.update,
                };
                let pod = identity::new_pod(set, template, rev, ordinal);
                let name = pod.metadata.name.clone().unwrap_or_default();
                let body = serde_json::to_value(&pod).unwrap_or_default();
                match self.registry.create(info("", "pods"), ns, body, WriteOptions::default()).await {
                    Ok(_) => {
                        let msg = format!("create Pod {name} in StatefulSet {set_name} successful");
                        self.event(set, EventType::Normal, "SuccessfulCreate", &msg).await;
                        Ok(true)
                    }
                    // The cache has not seen it yet (or it is still being deleted).
                    Err(ApiError::AlreadyExists { .. }) => Ok(false),
                    Err(e) => {
                        let msg = format!("create Pod {name} in StatefulSet {set_name} failed error: {e}");
                        self.event(set, EventType::Warning, "FailedCreate", &msg).await;
                        Err(e).context(|| format!("creating pod {name}"))
                    }
                }
            }
            Action::EnsureClaims { ordinal } => self.ensure_claims(set, ordinal).await,
            Action::FixIdentity { name, ordinal } => {
                let result = self
                    .registry
                    .update_with(info("", "pods"), ns, &name, None, WriteOptions::default(), None, |old| {
                        let mut new = old.clone();
                        new["metadata"]["labels"][skiff_api::labels::STATEFULSET_POD_NAME] = json!(name);
                        new["metadata"]["labels"][identity::POD_INDEX] = json!(ordinal.to_string());
                        Ok(new)
                    })
                    .await;
                match result {
                    Ok(_) | Err(ApiError::NotFound { .. }) => Ok(true),
                    Err(e) => Err(e).context(|| format!("labelling pod {name}")),
                }
            }
            Action::Delete { name, uid, why } => {
                debug!(pod = name, ?why, "deleting");
                let opts = DeleteOptions { precondition_uid: Some(uid), ..Default::default() };
                match self.registry.delete(info("", "pods"), ns, &name, &opts).await {
                    Ok(_) => {
                        let msg = format!("delete Pod {name} in StatefulSet {set_name} successful");
                        self.event(set, EventType::Normal, "SuccessfulDelete", &msg).await;
                        Ok(true)
                    }
                    Err(ApiError::NotFound { .. } | ApiError::Conflict(_)) => Ok(true),
                    Err(e) => {
                        let msg = format!("delete Pod {name} in StatefulSet {set_name} failed error: {e}");
                        self.event(set, EventType::Warning, "FailedDelete", &msg).await;
                        Err(e).context(|| format!("deleting pod {name}"))
                    }
                }
            }
        }
    }

    /// Creates the claims of `ordinal` that do not exist; false while one is being deleted
    /// (the pod must not start on a claim about to vanish).
    async fn ensure_claims(&self, set: &StatefulSet, ordinal: i32) -> Result<bool, ReconcileError> {
        let ns = set.metadata.namespace.as_deref();
        let set_name = set.metadata.name.as_deref().unwrap_or_default();
        let pod_name = identity::pod_name(set_name, ordinal);
        for mut claim in identity::claims_for(set, ordinal) {
            let name = claim.metadata.name.clone().unwrap_or_default();
            if let Some(existing) = self.pvcs.get(&key_of(&claim.metadata)) {
                if existing.metadata.deletion_timestamp.is_some() {
                    debug!(claim = name, "waiting for a claim being deleted");
                    return Ok(false);
                }
                continue;
            }
            claim.metadata.owner_references = claims::desired_refs(&[], set, None, true).filter(|r| !r.is_empty());
            let body = serde_json::to_value(&claim).unwrap_or_default();
            match self.registry.create(info("", "persistentvolumeclaims"), ns, body, WriteOptions::default()).await {
                Ok(_) => {
                    let msg = format!("create Claim {name} Pod {pod_name} in StatefulSet {set_name} success");
                    self.event(set, EventType::Normal, "SuccessfulCreate", &msg).await;
                }
                Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => {
                    let msg =
                        format!("create Claim {name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}");
                    self.event(set, EventType::Warning, "FailedCreate", &msg).await;
                    return Err(e).context(|| format!("creating claim {name}"));
                }
            }
        }
        Ok(true)
    }

    /// Puts the retention policy's ownerReferences on the claims of every pod.
    async fn sync_claim_refs(&self, set: &StatefulSet, pods: &[Arc<Pod>]) -> Result<(), ReconcileError> {
        let start = identity::start_ordinal(set);
        let end = start + identity::replicas(set);
        for pod in pods {
            let Some(ordinal) = identity::ordinal_of(set, pod) else { continue };
            let in_range = (start..end).contains(&ordinal);
            for claim in identity::claims_for(set, ordinal) {
                let Some(existing) = self.pvcs.get(&key_of(&claim.metadata)) else { continue };
                let current = existing.metadata.owner_references.clone().unwrap_or_default();
                let Some(refs) = claims::desired_refs(&current, set, Some(pod), in_range) else { continue };
                let name = existing.metadata.name.clone().unwrap_or_default();
                let refs = serde_json::to_value(&refs).unwrap_or_default();
                let result = self
                    .registry
                    .update_with(
                        info("", "persistentvolumeclaims"),
                        existing.metadata.namespace.as_deref(),
                        &name,
                        None,
                        WriteOptions::default(),
                        None,
                        |old| {
                            let mut new = old.clone();
                            new["metadata"]["ownerReferences"] = refs.clone();
                            Ok(new)
                        },
                    )
                    .await;
                match result {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e).context(|| format!("updating the owners of claim {name}")),
                }
            }
        }
        Ok(())
    }

    /// Deletes the oldest revisions nothing uses beyond `revisionHistoryLimit`.
    async fn truncate_history(
        &self,
        set: &StatefulSet,
        sorted: &[ControllerRevision],
        pods: &[Arc<Pod>],
        revs: &Revisions,
    ) -> Result<(), ReconcileError> {
        let mut live: HashSet<String> =
            pods.iter().filter_map(|p| identity::pod_revision(p).map(String::from)).collect();
        live.extend([revs.current.clone(), revs.update.clone()]);
        let limit = set.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10);
        for name in revision::to_truncate(sorted, &live, limit) {
            let ns = set.metadata.namespace.as_deref();
            match self.registry.delete(info("apps", "controllerrevisions"), ns, &name, &DeleteOptions::default()).await
            {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e).context(|| format!("deleting ControllerRevision {name}")),
            }
        }
        Ok(())
    }

    async fn event(&self, set: &StatefulSet, kind: EventType, reason: &str, message: &str) {
        let involved = events::reference("apps/v1", "StatefulSet", &set.metadata);
        events::record(&self.registry, COMPONENT, &involved, kind, reason, message).await;
    }
}

impl super::Reconcile for StatefulSetController {
    const NAME: &'static str = "statefulset";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        StatefulSetController::reconcile(self, key).await
    }
}
