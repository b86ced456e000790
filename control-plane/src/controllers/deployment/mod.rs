//! The Deployment controller, minimal: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`, the hash also labelled on it, its selector and its
//! pods' template), with the Deployment's `replicas` passed down.
//!
//! When the template changes, the new ReplicaSet is created at full size and every older one
//! is scaled to 0 at once — a Recreate-like switch that ignores `maxSurge`/`maxUnavailable`.
//! The real rolling update (and revision history, rollback, pause, progress deadlines) is a
//! later issue; `status` and the `Available` condition are already what kubectl expects.

pub mod hash;
pub mod status;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::{Value, json};
use skiff_api::labels::{DEPLOYMENT_REVISION, POD_TEMPLATE_HASH};
use tracing::{debug, instrument};

use super::informer::{Change, Informer, key_of};
use super::owner::{controller_key, controller_ref, controller_reference};
use super::workqueue::WorkQueue;
use super::{Context, Informers, ReconcileError, info, write_status};
use crate::apiserver::error::ApiError;
use crate::registry::rest::{Registry, WriteOptions};

/// The Deployment controller (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct DeploymentController {
    registry: Registry,
    deployments: Informer<Deployment>,
    replicasets: Informer<ReplicaSet>,
    queue: WorkQueue,
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(DEPLOYMENT_REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The ReplicaSet for the current template of `d`.
pub fn new_replica_set(d: &Deployment, hash: &str, revision: i64) -> Value {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.into());
    let labels = meta.labels.clone();
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(Default::default).insert(POD_TEMPLATE_HASH.into(), hash.into());
    let name = d.metadata.name.as_deref().unwrap_or_default();
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "namespace": d.metadata.namespace,
            "labels": labels,
            "annotations": {DEPLOYMENT_REVISION: revision.to_string()},
            "ownerReferences": [controller_reference("apps/v1", "Deployment", &d.metadata)],
        },
        "spec": {
            "replicas": spec.replicas.unwrap_or(1),
            "minReadySeconds": spec.min_ready_seconds,
            "selector": selector,
            "template": template,
        },
    })
}

impl DeploymentController {
    /// Creates the controller and subscribes it to the caches.
    pub fn new(registry: Registry, inf: &Informers) -> Self {
        let c = DeploymentController {
            registry,
            deployments: inf.deployments.clone(),
            replicasets: inf.replicasets.clone(),
            queue: WorkQueue::new(),
        };
        let me = c.clone();
        c.deployments.subscribe(move |change| me.queue.add(&key_of(&change.object().metadata)));
        let me = c.clone();
        c.replicasets.subscribe(move |change| {
            if let Change::Updated { old, .. } = change
                && let Some(owner) = controller_key(&old.metadata, "Deployment")
            {
                me.queue.add(&owner);
            }
            if let Some(owner) = controller_key(&change.object().metadata, "Deployment") {
                me.queue.add(&owner);
            }
        });
        c
    }

    /// The queue of Deployment keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Brings one Deployment's ReplicaSets and status to the desired state.
    #[instrument(level = "debug", skip(self))]
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(d) = self.deployments.get(key) else { return Ok(()) };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let Some(spec) = d.spec.as_ref() else { return Ok(()) };
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let owned: Vec<Arc<ReplicaSet>> = self
            .replicasets
            .list_namespace(ns)
            .into_iter()
            .filter(|rs| {
                rs.metadata.deletion_timestamp.is_none() && controller_ref(&rs.metadata).is_some_and(|r| r.uid == uid)
            })
            .collect();
        let hash = hash::template_hash(&spec.template);
        let is_new =
            |rs: &ReplicaSet| rs.metadata.labels.as_ref().and_then(|l| l.get(POD_TEMPLATE_HASH)) == Some(&hash);
        let replicas = spec.replicas.unwrap_or(1);

        let new_rs = owned.iter().find(|rs| is_new(rs)).cloned();
        match &new_rs {
            None => {
                let next_revision = owned.iter().map(|rs| revision(rs)).max().unwrap_or(0) + 1;
                debug!(deployment = key, hash, "creating ReplicaSet");
                let body = new_replica_set(&d, &hash, next_revision);
                match self.registry.create(info("apps", "replicasets"), Some(ns), body, WriteOptions::default()).await {
                    // Already there but not in the cache yet: its watch event brings us back.
                    Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e).context(|| format!("creating the ReplicaSet of Deployment {key}")),
                }
            }
            Some(rs) if rs.spec.as_ref().and_then(|s| s.replicas) != Some(replicas) => self.scale(rs, replicas).await?,
            Some(_) => {}
        }
        for old in owned.iter().filter(|rs| !is_new(rs)) {
            if old.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) != 0 {
                self.scale(old, 0).await?;
            }
        }

        let status = status::compute(&d, new_rs.as_deref(), &owned, jiff::Timestamp::now());
        if !status::differs(d.status.as_ref(), &status) {
            return Ok(());
        }
        let value = serde_json::to_value(&status).unwrap_or_default();
        write_status(
            &self.registry,
            info("apps", "deployments"),
            Some(ns),
            d.metadata.name.as_deref().unwrap_or_default(),
            value,
        )
        .await
    }

    async fn scale(&self, rs: &ReplicaSet, replicas: i32) -> Result<(), ReconcileError> {
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        debug!(rs = name, replicas, "scaling ReplicaSet");
        let result = self
            .registry
            .update_with(
                info("apps", "replicasets"),
                rs.metadata.namespace.as_deref(),
                name,
                None,
                WriteOptions::default(),
                None,
                |old| {
                    let mut new = old.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("scaling ReplicaSet {name} to {replicas}")),
        }
    }
}


impl super::Reconcile for DeploymentController {
    const NAME: &'static str = "deployment";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        DeploymentController::reconcile(self, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_set_carries_hash_owner_and_replicas() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-1"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }))
        .expect("deployment");
        let h = hash::template_hash(&d.spec.as_ref().expect("spec").template);
        let rs = new_replica_set(&d, &h, 2);
        assert_eq!(rs["metadata"]["name"], format!("web-{h}"));
        assert_eq!(rs["metadata"]["labels"][POD_TEMPLATE_HASH], h.as_str());
        assert_eq!(rs["metadata"]["annotations"][DEPLOYMENT_REVISION], "2");
        assert_eq!(rs["metadata"]["ownerReferences"][0]["uid"], "d-1");
        assert_eq!(rs["spec"]["replicas"], 3);
        assert_eq!(rs["spec"]["selector"]["matchLabels"], json!({"app": "web", POD_TEMPLATE_HASH: h}));
        assert_eq!(rs["spec"]["template"]["metadata"]["labels"], json!({"app": "web", POD_TEMPLATE_HASH: h}));
    }
}
