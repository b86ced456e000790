//! One claim: pvc-protection (the `kubernetes.io/pvc-protection` finalizer, removed once no
//! active pod uses a claim being deleted) and binding, as the PV controller's `syncClaim`
//! does it — a bound claim is kept consistent with its volume; an unbound one is matched to an
//! available volume (Immediate), or waits for the scheduler's selected node and is then
//! matched or provisioned there (WaitForFirstConsumer).
//!
//! Binding writes, in Kubernetes' order: the PV's `claimRef`, the PV's phase, the claim's
//! `volumeName` + annotations, the claim's phase. Each step is idempotent, so an interrupted
//! binding finishes at the next pass.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use serde_json::{Value, json};
use skiff_api::labels;

use super::events::EventType;
use super::matching::{self, find_match, waits_for_first_consumer};
use super::{BINDER, VolumeController, YES, has_finalizer, pod_claims, pod_is_active, provision};
use crate::apiserver::error::ApiError;
use crate::controllers::{Context, ReconcileError, info, write_status};
use crate::registry::rest::WriteOptions;

fn phase(pvc: &PersistentVolumeClaim) -> &str {
    pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

impl VolumeController {
    /// Whether an active pod of the claim's namespace names it in its volumes.
    pub fn claim_in_use(&self, ns: &str, name: &str) -> bool {
        let key = format!("{ns}/{name}");
        self.ctx.inf.pods.list_namespace(ns).iter().any(|p| pod_is_active(p) && pod_claims(p).any(|c| c == key))
    }

    pub(super) async fn sync_claim(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(pvc) = self.ctx.inf.pvcs.get(key) else { return Ok(()) };
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        if pvc.metadata.deletion_timestamp.is_some() {
            if has_finalizer(&pvc.metadata, labels::PVC_PROTECTION) && !self.claim_in_use(&ns, &name) {
                self.set_finalizer("persistentvolumeclaims", Some(&ns), &name, labels::PVC_PROTECTION, false).await?;
            }
            return Ok(());
        }
        if !has_finalizer(&pvc.metadata, labels::PVC_PROTECTION) {
            self.set_finalizer("persistentvolumeclaims", Some(&ns), &name, labels::PVC_PROTECTION, true).await?;
        }
        let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
        if let Some(volume_name) = volume_name {
            return self.sync_bound_claim(&pvc, &volume_name).await;
        }

        let class_name = matching::claim_class(&pvc);
        let class = (!class_name.is_empty()).then(|| self.ctx.inf.storage_classes.get(class_name)).flatten();
        if !class_name.is_empty() && class.is_none() {
            let msg = format!("storageclass.storage.k8s.io \"{class_name}\" not found");
            self.announce(&pvc, EventType::Warning, "ProvisioningFailed", &msg).await;
            return Ok(());
        }
        let pvs = self.ctx.inf.pvs.list();
        if waits_for_first_consumer(class.as_deref()) {
            let selected = pvc.metadata.annotations.as_ref().and_then(|a| a.get(labels::SELECTED_NODE)).cloned();
            let Some(node_name) = selected else {
                let msg = "waiting for first consumer to be created before binding";
                self.announce(&pvc, EventType::Normal, "WaitForFirstConsumer", msg).await;
                return Ok(());
            };
            let node = self.ctx.inf.nodes.get(&node_name);
            if let Some(pv) = node.as_deref().and_then(|n| find_match(&pvc, &pvs, Some(n))) {
                return self.bind(&pvc, &pv).await;
            }
            // Provisioned but not yet in the cache: its creation will enqueue this claim again.
            let class = class.expect("a WaitForFirstConsumer class exists");
            if matching::is_local_path(&class) {
                return self.provision(&pvc, &class, &node_name, node.as_deref()).await;
            }
            let msg = format!("waiting for a volume to be created by external provisioner {:?}", class.provisioner);
            self.announce(&pvc, EventType::Normal, "ExternalProvisioning", &msg).await;
            return Ok(());
        }
        if let Some(pv) = find_match(&pvc, &pvs, None) {
            return self.bind(&pvc, &pv).await;
        }
        match class {
            Some(class) if matching::is_local_path(&class) => {
                let msg = format!(
                    "local-path volumes are created on the node of their first pod: storageclass {class_name:?} needs volumeBindingMode WaitForFirstConsumer"
                );
                self.announce(&pvc, EventType::Warning, "ProvisioningFailed", &msg).await;
            }
            Some(_) => {}
            None => {
                let msg = "no persistent volumes available for this claim and no storage class is set";
                self.announce(&pvc, EventType::Normal, "FailedBinding", msg).await;
            }
        }
        Ok(())
    }

    /// Creates the local-path PV for `pvc` on `node_name` (once: the name is derived from the
    /// claim's uid, so a repeat finds it existing).
    async fn provision(
        &self,
        pvc: &PersistentVolumeClaim,
        class: &k8s_openapi::api::storage::v1::StorageClass,
        node_name: &str,
        node: Option<&k8s_openapi::api::core::v1::Node>,
    ) -> Result<(), ReconcileError> {
        let body = provision::local_path_volume(pvc, class, node_name, node);
        let pv_name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match self.ctx.registry.create(info("", "persistentvolumes"), None, body, WriteOptions::default()).await {
            Ok(_) => {
                let msg = format!("Successfully provisioned volume {pv_name}");
                self.announce(pvc, EventType::Normal, "ProvisioningSucceeded", &msg).await;
                Ok(())
            }
            Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e).context(|| format!("provisioning {pv_name}")),
        }
    }

    /// A claim naming a volume: finish binding it, or mark it Lost when the volume is gone or
    /// bound to someone else.
    async fn sync_bound_claim(&self, pvc: &PersistentVolumeClaim, volume_name: &str) -> Result<(), ReconcileError> {
        let Some(pv) = self.ctx.inf.pvs.get(volume_name) else {
            if phase(pvc) == "Bound" {
                self.set_claim_phase(pvc, None, "Lost").await?;
                let msg = "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!";
                self.announce(pvc, EventType::Warning, "ClaimLost", msg).await;
            }
            return Ok(());
        };
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if claim_ref.is_none() || matching::claim_ref_is(&pv, pvc) {
            return self.bind(pvc, &pv).await;
        }
        if phase(pvc) == "Bound" {
            self.set_claim_phase(pvc, None, "Lost").await?;
            let msg = "Two claims are bound to the same volume, this one is bound incorrectly";
            self.announce(pvc, EventType::Warning, "ClaimMisbound", msg).await;
        }
        Ok(())
    }

    /// Binds `pvc` and `pv` to each other (each step only when not done yet).
    async fn bind(&self, pvc: &PersistentVolumeClaim, pv: &Arc<PersistentVolume>) -> Result<(), ReconcileError> {
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let uid = pvc.metadata.uid.clone().unwrap_or_default();
        // 1. The volume points at the claim.
        let claim_ref = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name,
            "uid": uid, "resourceVersion": pvc.metadata.resource_version});
        let pv_info = info("", "persistentvolumes");
        let result = self
            .ctx
            .registry
            .update_with(pv_info, None, &pv_name, None, WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                let r = &old["spec"]["claimRef"];
                let current = r["namespace"] == ns.as_str() && r["name"] == name.as_str();
                if current && r["uid"] == uid.as_str() {
                    return Ok(new);
                }
                if !r.is_null() && !current {
                    return Err(ApiError::Conflict(format!("persistentvolume {pv_name} is bound to another claim")));
                }
                if r.is_null() {
                    new["metadata"]["annotations"][labels::BOUND_BY_CONTROLLER] = json!(YES);
                }
                new["spec"]["claimRef"] = claim_ref.clone();
                Ok(new)
            })
            .await;
        let written = match result {
            Ok(w) => w.object,
            Err(ApiError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e).context(|| format!("binding persistentvolume {pv_name} to {ns}/{name}")),
        };
        // 2. The volume is Bound.
        if written["status"]["phase"] != "Bound" {
            write_status(&self.ctx.registry, pv_info, None, &pv_name, json!({"phase": "Bound"})).await?;
        }
        // 3. The claim names the volume.
        let chosen_by_us = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty);
        let pvc_info = info("", "persistentvolumeclaims");
        let done = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv_name.as_str())
            && pvc.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(labels::BIND_COMPLETED));
        if !done {
            let result = self
                .ctx
                .registry
                .update_with(pvc_info, Some(&ns), &name, None, WriteOptions::default(), None, |old| {
                    let mut new = old.clone();
                    new["spec"]["volumeName"] = json!(pv_name);
                    new["metadata"]["annotations"][labels::BIND_COMPLETED] = json!(YES);
                    if chosen_by_us {
                        new["metadata"]["annotations"][labels::BOUND_BY_CONTROLLER] = json!(YES);
                    }
                    Ok(new)
                })
                .await;
            match result {
                Ok(_) => {}
                Err(ApiError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e).context(|| format!("binding claim {ns}/{name} to {pv_name}")),
            }
        }
        // 4. The claim is Bound, with the volume's capacity and modes.
        if phase(pvc) != "Bound" {
            self.set_claim_phase(pvc, Some(pv), "Bound").await?;
            tracing::debug!(claim = %format!("{ns}/{name}"), volume = pv_name, controller = BINDER, "bound");
        }
        Ok(())
    }

    async fn set_claim_phase(
        &self,
        pvc: &PersistentVolumeClaim,
        pv: Option<&PersistentVolume>,
        phase: &str,
    ) -> Result<(), ReconcileError> {
        let mut status = json!({"phase": phase});
        if let Some(spec) = pv.and_then(|pv| pv.spec.as_ref()) {
            status["accessModes"] = json!(spec.access_modes);
            status["capacity"] = json!(spec.capacity);
        }
        let status: Value = status;
        let ns = pvc.metadata.namespace.as_deref();
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        write_status(&self.ctx.registry, info("", "persistentvolumeclaims"), ns, name, status).await
    }
}
