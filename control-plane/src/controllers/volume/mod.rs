//! Storage: kube-controller-manager's PersistentVolume controller (binding claims to volumes,
//! releasing and reclaiming volumes whose claim is gone), the pvc-protection and
//! pv-protection controllers, and rancher's local-path provisioner, in one controller with
//! two kinds of keys — `claim:<ns>/<name>` and `volume:<name>`.
//!
//! How a local-path claim flows: the claim (class `local-path`, `WaitForFirstConsumer`) stays
//! Pending until the scheduler picks a node for its first pod and writes the
//! `volume.kubernetes.io/selected-node` annotation; then [`provision`] creates the PV
//! `pvc-<claim uid>` pre-bound to the claim, with node affinity to that node and a `local`
//! source whose path is *relative* (`volumes/pvc-<uid>_<ns>_<name>`): the node agent resolves
//! it under its own data directory (`<data-dir>/volumes/...`), since only the node knows
//! where that is. The binder then binds both sides, and the scheduler binds the pod. When the
//! claim is deleted the PV turns Released and, with reclaim policy `Delete`, is deleted; its
//! `skiff.dev/local-path-cleanup` finalizer stays until the node has removed the directory.
//!
//! Owns: [`matching`] (pure rules, shared with the scheduler's volume filters), [`admission`]
//! (DefaultStorageClass), `claim` (binder + pvc-protection), `reclaim` (phases, release, reclaim,
//! pv-protection), [`provision`]. Not here: volume expansion, snapshots, data sources,
//! `Recycle`, selectors on claims.

pub mod admission;
mod claim;
pub mod matching;
pub mod provision;
mod reclaim;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};
use skiff_api::labels;

use super::events::{self, EventType};
use super::informer::{Change, key_of};
use super::workqueue::WorkQueue;
use super::{Context, Ctx, ReconcileError, info};
use crate::apiserver::error::ApiError;
use crate::registry::rest::WriteOptions;

/// The component name on events about binding (as kube-controller-manager's).
pub const BINDER: &str = "persistentvolume-controller";

const CLAIM: &str = "claim:";
const VOLUME: &str = "volume:";

/// The PV controller + provisioner + protection (cheap to clone; clones share everything).
#[derive(Debug, Clone)]
pub struct VolumeController {
    ctx: Ctx,
    queue: WorkQueue,
    /// `(uid, reason)` of events already recorded, so a waiting claim says so once.
    announced: Arc<Mutex<HashSet<(String, String)>>>,
}

/// The claims a pod's volumes name, as `ns/name` keys.
pub fn pod_claims(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(move |c| format!("{ns}/{}", c.claim_name))
}

/// The pod has not finished (Kubernetes' `!IsPodTerminal`): it may still use its claims.
pub fn pod_is_active(pod: &Pod) -> bool {
    !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.as_ref().is_some_and(|fs| fs.iter().any(|x| x == f))
}

impl VolumeController {
    /// Creates the controller and subscribes it to claims, volumes, classes and pods.
    pub fn new(ctx: &Ctx) -> Self {
        let c = VolumeController { ctx: ctx.clone(), queue: WorkQueue::new(), announced: Arc::default() };
        let me = c.clone();
        ctx.inf.pvcs.subscribe(move |change| {
            let pvc = change.object();
            me.queue.add(&format!("{CLAIM}{}", key_of(&pvc.metadata)));
            // A claim that goes away releases its volume.
            if let Some(v) = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
                me.queue.add(&format!("{VOLUME}{v}"));
            }
        });
        let me = c.clone();
        ctx.inf.pvs.subscribe(move |change| {
            let pv = change.object();
            me.queue.add(&format!("{VOLUME}{}", pv.metadata.name.as_deref().unwrap_or_default()));
            if let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                let (ns, name) = (r.namespace.as_deref().unwrap_or_default(), r.name.as_deref().unwrap_or_default());
                me.queue.add(&format!("{CLAIM}{ns}/{name}"));
            }
        });
        let me = c.clone();
        ctx.inf.pods.subscribe(move |change| {
            // Protection: a claim being deleted may go once its last pod is gone or finished.
            let relevant = match change {
                Change::Added(_) => false,
                Change::Updated { old, new } => pod_is_active(old) && !pod_is_active(new),
                Change::Deleted(_) => true,
            };
            if relevant {
                for claim in pod_claims(change.object()) {
                    me.queue.add(&format!("{CLAIM}{claim}"));
                }
            }
        });
        let me = c.clone();
        ctx.inf.storage_classes.subscribe(move |_| {
            // A class created after its claims lets them proceed.
            for pvc in me.ctx.inf.pvcs.list_where(|p| p.spec.as_ref().is_none_or(|s| s.volume_name.is_none())) {
                me.queue.add(&format!("{CLAIM}{}", key_of(&pvc.metadata)));
            }
        });
        c
    }

    /// The queue of `claim:`/`volume:` keys.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    /// Reconciles `claim:<ns>/<name>` or `volume:<name>`.
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        if let Some(claim) = key.strip_prefix(CLAIM) {
            self.sync_claim(claim).await
        } else if let Some(volume) = key.strip_prefix(VOLUME) {
            self.sync_volume(volume).await
        } else {
            Ok(())
        }
    }

    /// Records an event about a claim once per claim uid and reason.
    async fn announce(&self, pvc: &PersistentVolumeClaim, kind: EventType, reason: &str, message: &str) {
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        let first =
            self.announced.lock().map(|mut seen| seen.insert((uid, format!("{reason}:{message}")))).unwrap_or(true);
        if first {
            let involved = events::reference("v1", "PersistentVolumeClaim", &pvc.metadata);
            events::record(&self.ctx.registry, BINDER, &involved, kind, reason, message).await;
        }
    }

    /// Adds (`add`) or removes a finalizer on a claim or volume; a missing object is fine.
    async fn set_finalizer(
        &self,
        plural: &str,
        ns: Option<&str>,
        name: &str,
        finalizer: &str,
        add: bool,
    ) -> Result<(), ReconcileError> {
        let result = self
            .ctx
            .registry
            .update_with(info("", plural), ns, name, None, WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                let mut fs: Vec<Value> = old["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
                let present = fs.iter().any(|f| f == finalizer);
                if add && !present {
                    // Never re-add protection to an object already being deleted.
                    if old["metadata"]["deletionTimestamp"].is_string() {
                        return Ok(new);
                    }
                    fs.push(json!(finalizer));
                } else if !add && present {
                    fs.retain(|f| f != finalizer);
                } else {
                    return Ok(new);
                }
                new["metadata"]["finalizers"] = json!(fs);
                Ok(new)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("updating finalizer {finalizer} of {plural} {name}")),
        }
    }
}

impl super::Reconcile for VolumeController {
    const NAME: &'static str = "persistentvolume";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        VolumeController::reconcile(self, key).await
    }
}

/// The `yes` value Kubernetes writes in its binding annotations.
const YES: &str = "yes";

/// Keys of the annotations the binder writes (re-exported for tests and the scheduler).
pub use labels::{BIND_COMPLETED, BOUND_BY_CONTROLLER, SELECTED_NODE};
