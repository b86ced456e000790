//! A DaemonSet's ControllerRevisions (the Go controller's `constructHistory` and
//! `cleanupHistory`): each holds the strategic merge patch `kubectl rollout undo` applies to
//! restore that template, `{"spec":{"template":{…,"$patch":"replace"}}}`. The revision whose
//! template equals the DaemonSet's is current; it gets the highest number (a rollback
//! renumbers an old snapshot), and its hash labels the pods it creates.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{Value, json};
use skiff_api::selector::LabelSelector;

use super::DaemonSetController;
use crate::controllers::history::{self, Created};
use crate::controllers::{ReconcileError, info, write_status};

/// The annotation the API server keeps on a DaemonSet (and its revisions) with the template
/// generation; Skiff has no separate counter and records the object's generation.
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// The patch that restores `ds`'s template.
pub fn patch(ds: &DaemonSet) -> Value {
    let mut template = serde_json::to_value(ds.spec.as_ref().map(|s| &s.template)).unwrap_or(json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The template a revision restores.
pub fn revision_template(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

fn same_template(ds: &DaemonSet, rev: &ControllerRevision) -> bool {
    ds.spec.as_ref().map(|s| &s.template) == revision_template(rev).as_ref()
}

/// The current revision's hash and the older revisions, oldest first.
#[derive(Debug)]
pub struct History {
    pub hash: String,
    pub old: Vec<Arc<ControllerRevision>>,
}

impl DaemonSetController {
    /// Finds (or creates) the revision for `ds`'s template and numbers it newest.
    pub(super) async fn construct_history(
        &self,
        ds: &DaemonSet,
        selector: &LabelSelector,
    ) -> Result<History, ReconcileError> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or_default();
        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
        let all = history::owned_revisions(&self.ctx.inf.controller_revisions, ns, uid, selector);
        let (mut cur, mut old): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| same_template(ds, r));
        let next = history::max_revision(&old) + 1;
        // Duplicates of the current template (a lost race): the newest is current, the rest
        // age out with the old ones.
        let current = cur.pop();
        old.extend(cur);
        old.sort_by_key(|r| r.revision);
        let cur = match current {
            Some(c) => {
                if c.revision < next {
                    history::set_revision(&self.ctx.registry, &c, next).await?;
                }
                c
            }
            None => Arc::new(self.snapshot(ds, next).await?),
        };
        Ok(History { hash: history::revision_hash(&cur), old })
    }

    /// Writes a new revision of `ds`; a name taken by other data bumps `collisionCount`
    /// (which changes the hash) and fails this pass so the next one retries.
    async fn snapshot(&self, ds: &DaemonSet, revision: i64) -> Result<ControllerRevision, ReconcileError> {
        let template = ds.spec.as_ref().map(|s| &s.template);
        let labels = template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
        let mut annotations: BTreeMap<String, String> = ds.metadata.annotations.clone().unwrap_or_default();
        annotations
            .entry(TEMPLATE_GENERATION.into())
            .or_insert_with(|| ds.metadata.generation.unwrap_or(1).to_string());
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let data = patch(ds);
        let body = history::new_revision(
            "apps/v1",
            "DaemonSet",
            &ds.metadata,
            &labels,
            &annotations,
            &data,
            revision,
            collisions,
        );
        match history::create(&self.ctx.registry, body).await? {
            Created::New(rev) => Ok(rev),
            Created::Exists(rev)
                if same_template(ds, &rev)
                    && crate::controllers::owner::controller_ref(&rev.metadata)
                        .is_some_and(|o| Some(&o.uid) == ds.metadata.uid.as_ref()) =>
            {
                Ok(rev)
            }
            Created::Exists(rev) => {
                let mut status = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or(json!({}));
                status["collisionCount"] = json!(collisions.unwrap_or(0) + 1);
                let name = ds.metadata.name.as_deref().unwrap_or_default();
                write_status(
                    &self.ctx.registry,
                    info("apps", "daemonsets"),
                    ds.metadata.namespace.as_deref(),
                    name,
                    status,
                )
                .await?;
                Err(ReconcileError::Api {
                    what: format!("DaemonSet {name}"),
                    source: crate::apiserver::error::ApiError::Conflict(format!(
                        "hash collision with ControllerRevision {}; collisionCount raised",
                        rev.metadata.name.unwrap_or_default()
                    )),
                })
            }
        }
    }

    /// Deletes the oldest revisions beyond `revisionHistoryLimit` (10) that no pod uses.
    pub(super) async fn cleanup_history(
        &self,
        ds: &DaemonSet,
        old: &[Arc<ControllerRevision>],
        live: &BTreeSet<String>,
    ) -> Result<(), ReconcileError> {
        let limit = ds.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
        for rev in history::to_trim(old, live, limit) {
            history::delete(&self.ctx.registry, rev).await?;
        }
        Ok(())
    }
}
