//! One volume: its phase (Available, Bound, Released), the reclaim of a Released volume
//! (`Retain` keeps it with its data; `Delete` deletes the PV — a local-path PV then waits on
//! its cleanup finalizer until its node removed the directory; `Delete` of a volume no
//! provisioner of ours made, and `Recycle`, turn it Failed as Kubernetes does without a
//! plugin for it), and pv-protection (the `kubernetes.io/pv-protection` finalizer, removed
//! once the volume being deleted is no longer Bound).

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::json;
use skiff_api::labels;

use super::{VolumeController, has_finalizer};
use crate::apiserver::error::ApiError;
use crate::controllers::events::{self, EventType};
use crate::controllers::{Context, ReconcileError, info, write_status};
use crate::registry::rest::DeleteOptions;

fn phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// What the volume's phase should be given whether its claim still exists.
fn desired_phase(pv: &PersistentVolume, claim_exists: Option<bool>) -> &'static str {
    match claim_exists {
        // No claimRef, or pre-bound by the user to a claim not created yet.
        None => "Available",
        Some(true) => "Bound",
        Some(false) => match phase(pv) {
            "Failed" => "Failed",
            _ => "Released",
        },
    }
}

impl VolumeController {
    /// `Some(true)` when the volume's claim exists (same uid), `Some(false)` when the claim it
    /// was bound to is gone, `None` when it names no claim (or one not yet created).
    fn claim_exists(&self, pv: &PersistentVolume) -> Option<bool> {
        let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
        let key = format!("{}/{}", r.namespace.as_deref().unwrap_or_default(), r.name.as_deref().unwrap_or_default());
        let uid = r.uid.as_deref().filter(|u| !u.is_empty());
        match (self.ctx.inf.pvcs.get(&key), uid) {
            (Some(pvc), Some(uid)) => Some(pvc.metadata.uid.as_deref() == Some(uid)),
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }

    pub(super) async fn sync_volume(&self, name: &str) -> Result<(), ReconcileError> {
        let Some(pv) = self.ctx.inf.pvs.get(name) else { return Ok(()) };
        let pv_info = info("", "persistentvolumes");
        let desired = desired_phase(&pv, self.claim_exists(&pv));
        if phase(&pv) != desired {
            write_status(&self.ctx.registry, pv_info, None, name, json!({"phase": desired})).await?;
        }
        if pv.metadata.deletion_timestamp.is_some() {
            if has_finalizer(&pv.metadata, labels::PV_PROTECTION) && desired != "Bound" {
                self.set_finalizer("persistentvolumes", None, name, labels::PV_PROTECTION, false).await?;
            }
            return Ok(());
        }
        if !has_finalizer(&pv.metadata, labels::PV_PROTECTION) {
            self.set_finalizer("persistentvolumes", None, name, labels::PV_PROTECTION, true).await?;
        }
        if desired == "Released" {
            self.reclaim(&pv).await?;
        }
        Ok(())
    }

    async fn reclaim(&self, pv: &PersistentVolume) -> Result<(), ReconcileError> {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain");
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::PROVISIONED_BY))
            .is_some_and(|p| p == labels::LOCAL_PATH_PROVISIONER || p == labels::RANCHER_LOCAL_PATH_PROVISIONER);
        let involved = events::reference("v1", "PersistentVolume", &pv.metadata);
        match policy {
            "Retain" => Ok(()),
            "Delete" if ours => {
                match self
                    .ctx
                    .registry
                    .delete(info("", "persistentvolumes"), None, name, &DeleteOptions::default())
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e).context(|| format!("deleting released persistentvolume {name}")),
                }
            }
            other => {
                let message = if other == "Delete" {
                    format!(
                        "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                    )
                } else {
                    format!("reclaim policy {other} is not supported")
                };
                let status = json!({"phase": "Failed", "message": message});
                write_status(&self.ctx.registry, info("", "persistentvolumes"), None, name, status).await?;
                events::record(
                    &self.ctx.registry,
                    super::BINDER,
                    &involved,
                    EventType::Warning,
                    "VolumeFailedDelete",
                    &message,
                )
                .await;
                Ok(())
            }
        }
    }
}
