//! The local-path provisioner's volume: what rancher's local-path-provisioner creates for a
//! claim, adapted to Skiff's nodes. The source is `local` with a path *relative to the node's
//! data directory* (`volumes/pvc-<uid>_<ns>_<name>`): the control plane does not know where
//! each node keeps its data, so the node agent resolves the path under `<data-dir>/` when a
//! pod mounts the claim, and removes it when the volume is deleted.

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};
use skiff_api::labels;

/// Where local-path volumes live, relative to a node's data directory.
pub const VOLUMES_SUBDIR: &str = "volumes";

/// The PV name for a claim (Kubernetes' `pvc-<claim uid>`).
pub fn volume_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

/// The relative path of a claim's directory on its node.
pub fn relative_path(pvc: &PersistentVolumeClaim) -> String {
    format!(
        "{VOLUMES_SUBDIR}/{}_{}_{}",
        volume_name(pvc),
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The PV to create for `pvc` of `class` on `node_name`: pre-bound to the claim, its
/// capacity the request, node affinity on the node's hostname label, reclaim policy from the
/// class (Delete by default), and the cleanup finalizer the node removes.
pub fn local_path_volume(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    node_name: &str,
    node: Option<&Node>,
) -> Value {
    let spec = pvc.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref()?.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_default();
    let hostname = node
        .and_then(|n| n.metadata.labels.as_ref()?.get(labels::HOSTNAME).cloned())
        .unwrap_or_else(|| node_name.to_string());
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(pvc),
            "annotations": {labels::PROVISIONED_BY: class.provisioner},
            "finalizers": [labels::PV_PROTECTION, labels::LOCAL_PATH_CLEANUP],
        },
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.access_modes.unwrap_or_default(),
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "mountOptions": class.mount_options,
            "claimRef": {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": pvc.metadata.namespace, "name": pvc.metadata.name, "uid": pvc.metadata.uid,
                "resourceVersion": pvc.metadata.resource_version,
            },
            "local": {"path": relative_path(pvc)},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": labels::HOSTNAME, "operator": "In", "values": [hostname]},
            ]}]}},
        },
    })
}
