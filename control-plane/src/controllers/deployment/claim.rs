//! Which ReplicaSets belong to a Deployment (`ClaimReplicaSets`): the ones it controls whose
//! labels its selector matches, plus matching orphans it adopts (setting itself as their
//! controller); controlled ones that stopped matching are released (the ownerReference is
//! removed), so another Deployment — or nobody — may take them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::json;
use skiff_api::selector::LabelSelector;
use tracing::debug;

use super::DeploymentController;
use crate::apiserver::error::ApiError;
use crate::controllers::owner::{controller_ref, controller_reference, labels_of};
use crate::controllers::{Context, ReconcileError, info, informer::key_of};
use crate::registry::rest::WriteOptions;

impl DeploymentController {
    /// The ReplicaSets `d` owns after adopting and releasing (none being deleted).
    pub(super) async fn claim(&self, d: &Deployment) -> Result<Vec<ReplicaSet>, ReconcileError> {
        let Some(spec) = d.spec.as_ref() else { return Ok(Vec::new()) };
        let key = key_of(&d.metadata);
        let selector = LabelSelector::from_label_selector(&spec.selector)
            .map_err(|source| ReconcileError::Selector { key: key.clone(), source })?;
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let ns = d.metadata.namespace.as_deref().unwrap_or_default();
        let mut mine = Vec::new();
        for rs in self.replicasets.list_namespace(ns) {
            if rs.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let labels = labels_of(&rs.metadata);
            let matches = !selector.is_empty() && selector.matches(labels);
            match controller_ref(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        mine.push((*rs).clone());
                    } else if !deleting {
                        self.release(&rs, uid).await?;
                    }
                }
                Some(_) => {}
                None if matches && !deleting => {
                    if let Some(adopted) = self.adopt(d, &rs).await? {
                        mine.push(adopted);
                    }
                }
                None => {}
            }
        }
        Ok(mine)
    }

    /// Makes `d` the controller of orphan `rs`; `None` if someone else got there first.
    async fn adopt(&self, d: &Deployment, rs: &ReplicaSet) -> Result<Option<ReplicaSet>, ReconcileError> {
        let reference =
            serde_json::to_value(controller_reference("apps/v1", "Deployment", &d.metadata)).unwrap_or_default();
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        debug!(rs = name, "adopting an orphan ReplicaSet");
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
                    let mut refs = old["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
                    if refs.iter().any(|r| r["controller"] == true) {
                        return Err(ApiError::Conflict(format!("ReplicaSet {name} already has a controller")));
                    }
                    refs.push(reference.clone());
                    let mut new = old.clone();
                    new["metadata"]["ownerReferences"] = json!(refs);
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(w) => Ok(serde_json::from_value(w.object).ok()),
            Err(ApiError::Conflict(_) | ApiError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).context(|| format!("adopting ReplicaSet {name}")),
        }
    }

    /// Removes `uid`'s ownerReference from `rs`.
    async fn release(&self, rs: &ReplicaSet, uid: &str) -> Result<(), ReconcileError> {
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        debug!(rs = name, "releasing a ReplicaSet the selector no longer matches");
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
                    if let Some(refs) = new["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                    Ok(new)
                },
            )
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("releasing ReplicaSet {name}")),
        }
    }
}
