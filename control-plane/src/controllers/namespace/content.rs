//! Emptying a terminating namespace (Kubernetes' `namespacedResourcesDeleter.deleteAllContent`):
//! every namespaced kind in the catalog is listed in the namespace and each object not yet
//! being deleted is deleted with background propagation (pods gracefully — a pod on a node
//! stays until its node confirms). Events go last, once nothing else remains, so the
//! story of the deletion stays readable meanwhile. What remains is counted, with the
//! finalizers holding it, for the namespace's status conditions ([`super::conditions`]).

use std::collections::BTreeMap;

use crate::apiserver::error::ApiError;
use crate::controllers::{Context, ReconcileError};
use crate::registry::catalog::{RESOURCES, ResourceInfo};
use crate::registry::object::{self, meta_str};
use crate::registry::rest::{DeleteOptions, Registry};
use crate::storage::ListOptions;

/// What one pass over a namespace's content found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Content {
    /// Objects still present after the pass, by resource (`pods.`, `deployments.apps`).
    pub remaining: BTreeMap<String, usize>,
    /// Finalizers on the remaining objects, with how many objects carry each.
    pub finalizers: BTreeMap<String, usize>,
    /// Deletes that failed (other than "already gone").
    pub errors: Vec<String>,
}

impl Content {
    /// Total objects left.
    pub fn remaining_total(&self) -> usize {
        self.remaining.values().sum()
    }
}

/// Kubernetes' `resource.group` spelling in namespace conditions (`pods.` for the core group).
fn resource_group(info: &ResourceInfo) -> String {
    format!("{}.{}", info.plural, info.group)
}

fn is_event(info: &ResourceInfo) -> bool {
    info.kind == "Event"
}

/// Deletes the content of namespace `ns` (see the module docs).
pub async fn delete_all(registry: &Registry, ns: &str) -> Result<Content, ReconcileError> {
    let mut content = Content::default();
    for info in RESOURCES.iter().filter(|r| r.namespaced && !is_event(r)) {
        delete_kind(registry, info, ns, &mut content).await?;
    }
    if content.remaining_total() == 0 {
        for info in RESOURCES.iter().filter(|r| r.namespaced && is_event(r)) {
            delete_kind(registry, info, ns, &mut content).await?;
        }
    }
    Ok(content)
}

/// Deletes every object of `info` in `ns` not already being deleted; counts what stays.
async fn delete_kind(
    registry: &Registry,
    info: &'static ResourceInfo,
    ns: &str,
    content: &mut Content,
) -> Result<(), ReconcileError> {
    let prefix = info.key(Some(ns), "");
    let page = registry
        .store()
        .list(&prefix, ListOptions::default())
        .await
        .map_err(|e| crate::registry::rest::store_err(e, info, ns))
        .context(|| format!("listing {} in namespace {ns}", info.resource_name()))?;
    for kv in &page.items {
        let Ok(obj) = object::decode(kv) else { continue };
        let name = object::name(&obj).to_string();
        let still_there = if meta_str(&obj, "deletionTimestamp").is_some() {
            // Deleting again could cut a pod's grace period short: just wait for it.
            Some(obj)
        } else {
            let opts = DeleteOptions {
                propagation_policy: Some("Background".into()),
                precondition_uid: meta_str(&obj, "uid").map(str::to_string),
                ..Default::default()
            };
            match registry.delete(info, Some(ns), &name, &opts).await {
                Ok(d) if d.gone => None,
                Ok(d) => Some(d.object),
                Err(ApiError::NotFound { .. }) => None,
                Err(e) => {
                    content.errors.push(format!("{} {name}: {e}", info.resource_name()));
                    Some(obj)
                }
            }
        };
        if let Some(obj) = still_there {
            *content.remaining.entry(resource_group(info)).or_default() += 1;
            for f in object::finalizers(&obj) {
                *content.finalizers.entry(f).or_default() += 1;
            }
        }
    }
    Ok(())
}
