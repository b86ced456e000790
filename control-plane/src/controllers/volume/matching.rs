//! Pure rules shared by the PV binder and the scheduler's volume filters: which
//! PersistentVolume may satisfy which claim (the PV controller's `findMatchingVolume`: a
//! pre-bound volume wins, otherwise the smallest volume of the same class whose capacity,
//! access modes and volume mode fit), whether a volume's node affinity admits a node, and the
//! StorageClass facts (default class, binding mode, provisioner) both sides read.
//!
//! No I/O: everything takes the objects as the caches hold them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use skiff_api::labels;
use skiff_api::quantity::parse_quantity;

use crate::scheduler::affinity::term_matches;

/// Bytes of a `storage` quantity (0 when absent or unparsable).
fn bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| parse_quantity(&q.0).ok()).map(|q| q.as_bytes()).unwrap_or(0)
}

/// What the claim requests (`spec.resources.requests.storage`), in bytes.
pub fn claim_request(pvc: &PersistentVolumeClaim) -> i64 {
    bytes(pvc.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()?.get("storage")))
}

/// The volume's `spec.capacity.storage`, in bytes.
pub fn pv_capacity(pv: &PersistentVolume) -> i64 {
    bytes(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()?.get("storage")))
}

/// The claim's class name (`""` when unset: such a claim only binds volumes without a class).
pub fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// The volume's class name (`""` when unset).
pub fn pv_class(pv: &PersistentVolume) -> &str {
    pv.spec.as_ref().and_then(|s| s.storage_class_name.as_deref()).unwrap_or("")
}

/// The claim's access modes.
pub fn claim_modes(pvc: &PersistentVolumeClaim) -> &[String] {
    pvc.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or(&[])
}

/// Every mode the claim asks for is offered by the volume.
pub fn modes_satisfied(pv: &PersistentVolume, wanted: &[String]) -> bool {
    let offered = pv.spec.as_ref().and_then(|s| s.access_modes.as_deref()).unwrap_or(&[]);
    wanted.iter().all(|m| offered.contains(m))
}

/// `Filesystem` unless set.
fn volume_mode(mode: Option<&str>) -> &str {
    mode.filter(|m| !m.is_empty()).unwrap_or("Filesystem")
}

/// The volume's required node affinity admits `node` (a volume without one is reachable
/// from every node).
pub fn pv_fits_node(pv: &PersistentVolume, node: &Node) -> bool {
    let required = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref());
    let Some(required) = required else { return true };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    required.node_selector_terms.iter().any(|t| term_matches(t, &labels, name))
}

/// The volume's `claimRef` points at this claim (same namespace and name, and same uid when
/// the reference has one).
pub fn claim_ref_is(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.name.as_deref() == pvc.metadata.name.as_deref()
        && r.namespace.as_deref() == pvc.metadata.namespace.as_deref()
        && r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == pvc.metadata.uid.as_deref())
}

/// The volume is free to bind: no claim reference, not being deleted, not Released/Failed.
fn is_available(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    pv.metadata.deletion_timestamp.is_none()
        && pv.spec.as_ref().is_none_or(|s| s.claim_ref.is_none())
        && matches!(phase, "Available" | "Pending")
}

/// The volume `pvc` should bind: one already pre-bound to it, else the smallest available
/// volume of the claim's class with enough capacity, the wanted access modes and volume mode
/// (and, when `node` is given — WaitForFirstConsumer — whose node affinity admits that node).
pub fn find_match(
    pvc: &PersistentVolumeClaim,
    pvs: &[Arc<PersistentVolume>],
    node: Option<&Node>,
) -> Option<Arc<PersistentVolume>> {
    if let Some(pv) = pvs.iter().find(|pv| pv.metadata.deletion_timestamp.is_none() && claim_ref_is(pv, pvc)) {
        return Some(pv.clone());
    }
    let request = claim_request(pvc);
    let class = claim_class(pvc);
    let modes = claim_modes(pvc);
    let mode = volume_mode(pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()));
    pvs.iter()
        .filter(|pv| is_available(pv))
        .filter(|pv| pv_class(pv) == class)
        .filter(|pv| pv_capacity(pv) >= request)
        .filter(|pv| modes_satisfied(pv, modes))
        .filter(|pv| volume_mode(pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref())) == mode)
        .filter(|pv| node.is_none_or(|n| pv_fits_node(pv, n)))
        // Smallest fit; the name breaks ties so the choice is stable.
        .min_by(|a, b| pv_capacity(a).cmp(&pv_capacity(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name)))
        .cloned()
}

/// The class marked default (the newest one when several are, as Kubernetes picks).
pub fn default_class(classes: &[Arc<StorageClass>]) -> Option<Arc<StorageClass>> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .cmp(&b.metadata.creation_timestamp)
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        })
        .cloned()
}

/// The class carries `storageclass.kubernetes.io/is-default-class: "true"`.
pub fn is_default_class(class: &StorageClass) -> bool {
    class.metadata.annotations.as_ref().and_then(|a| a.get(labels::IS_DEFAULT_CLASS)).map(String::as_str)
        == Some("true")
}

/// Binding waits for the first pod using the claim to be scheduled.
pub fn waits_for_first_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// Skiff provisions volumes of this class itself (local-path).
pub fn is_local_path(class: &StorageClass) -> bool {
    class.provisioner == labels::LOCAL_PATH_PROVISIONER || class.provisioner == labels::RANCHER_LOCAL_PATH_PROVISIONER
}

/// The class can create volumes on demand (any provisioner but `kubernetes.io/no-provisioner`).
pub fn can_provision(class: &StorageClass) -> bool {
    class.provisioner != "kubernetes.io/no-provisioner"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(name: &str, size: &str, modes: &[&str], class: Option<&str>) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": size},
                "accessModes": modes, "storageClassName": class, "hostPath": {"path": "/tmp"}},
                "status": {"phase": "Available"}}))
            .expect("pv"),
        )
    }

    fn pvc(size: &str, modes: &[&str], class: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"accessModes": modes, "storageClassName": class, "resources": {"requests": {"storage": size}}}}))
        .expect("pvc")
    }

    #[test]
    fn smallest_fit_with_modes_and_class() {
        let pvs = vec![
            pv("big", "10Gi", &["ReadWriteOnce"], None),
            pv("small", "1Gi", &["ReadWriteOnce"], None),
            pv("tiny", "100Mi", &["ReadWriteOnce"], None),
            pv("rox", "2Gi", &["ReadOnlyMany"], None),
            pv("fast", "1Gi", &["ReadWriteOnce"], Some("fast")),
        ];
        let name = |m: Option<Arc<PersistentVolume>>| m.and_then(|p| p.metadata.name.clone());
        assert_eq!(name(find_match(&pvc("500Mi", &["ReadWriteOnce"], None), &pvs, None)).as_deref(), Some("small"));
        assert_eq!(name(find_match(&pvc("2Gi", &["ReadWriteOnce"], None), &pvs, None)).as_deref(), Some("big"));
        assert_eq!(name(find_match(&pvc("1Gi", &["ReadOnlyMany"], None), &pvs, None)).as_deref(), Some("rox"));
        assert_eq!(
            name(find_match(&pvc("1Gi", &["ReadWriteOnce"], Some("fast")), &pvs, None)).as_deref(),
            Some("fast")
        );
        assert_eq!(find_match(&pvc("20Gi", &["ReadWriteOnce"], None), &pvs, None), None);
        assert_eq!(find_match(&pvc("1Gi", &["ReadWriteMany"], None), &pvs, None), None);
    }

    #[test]
    fn prebound_wins_and_bound_volumes_are_skipped() {
        let mut taken = (*pv("taken", "1Gi", &["ReadWriteOnce"], None)).clone();
        taken.spec.as_mut().expect("spec").claim_ref =
            Some(serde_json::from_value(json!({"namespace": "ns", "name": "other"})).expect("ref"));
        let mut mine = (*pv("mine", "5Gi", &["ReadWriteOnce"], None)).clone();
        mine.spec.as_mut().expect("spec").claim_ref =
            Some(serde_json::from_value(json!({"namespace": "ns", "name": "c", "uid": "u1"})).expect("ref"));
        let pvs = vec![Arc::new(taken), pv("free", "1Gi", &["ReadWriteOnce"], None), Arc::new(mine)];
        let m = find_match(&pvc("1Gi", &["ReadWriteOnce"], None), &pvs, None).expect("a match");
        assert_eq!(m.metadata.name.as_deref(), Some("mine"));
        let m = find_match(&pvc("1Gi", &["ReadWriteOnce"], None), &pvs[..2], None).expect("a match");
        assert_eq!(m.metadata.name.as_deref(), Some("free"));
    }

    #[test]
    fn node_affinity_of_a_volume() {
        let v: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}}))
        .expect("pv");
        let node = |n: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}}))
                .expect("node")
        };
        assert!(pv_fits_node(&v, &node("a")));
        assert!(!pv_fits_node(&v, &node("b")));
        assert!(pv_fits_node(&pv("x", "1Gi", &[], None), &node("b")), "no affinity: any node");
    }
}
