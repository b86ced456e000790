//! The scheduler's volume plugins (Kubernetes' VolumeRestrictions + VolumeBinding):
//!
//! - [`pre_filter`] resolves the pod's claims once per attempt. A missing claim, a claim
//!   being deleted, or an unbound claim of an Immediate class makes the pod unschedulable on
//!   every node, with Kubernetes' messages (`persistentvolumeclaim "x" not found`, …).
//! - [`filter`] decides per node: a ReadWriteOncePod claim already used by another pod
//!   blocks every node; a bound claim's volume must admit the node by its node affinity
//!   (`node(s) had volume node affinity conflict`); an unbound WaitForFirstConsumer claim
//!   needs a matching static volume on the node or a class that provisions.
//! - [`claims_to_select`]: after a node is chosen, the unbound claims that get the
//!   `volume.kubernetes.io/selected-node` annotation (the binder then binds or provisions,
//!   and the shell in `run.rs` binds the pod once every claim is Bound).
//!
//! Pure: the objects come through [`VolumeObjects`] (the informer caches in the server).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use skiff_api::labels;

use super::filters::Reason;
use super::node_info::NodeInfo;
use crate::controllers::Informers;
use crate::controllers::informer::Informer;
use crate::controllers::volume::matching::{self, find_match, pv_fits_node};
use crate::controllers::volume::{pod_claims, pod_is_active};

/// Where the volume plugins read claims, volumes, classes and pods.
pub trait VolumeObjects {
    fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    fn volumes(&self) -> Vec<Arc<PersistentVolume>>;
    fn class(&self, name: &str) -> Option<Arc<StorageClass>>;
    fn pods_in(&self, ns: &str) -> Vec<Arc<Pod>>;
}

/// The informer caches the scheduler reads volumes from.
#[derive(Debug, Clone)]
pub struct VolumeCaches {
    pub pvcs: Informer<PersistentVolumeClaim>,
    pub pvs: Informer<PersistentVolume>,
    pub classes: Informer<StorageClass>,
    pub pods: Informer<Pod>,
}

impl VolumeCaches {
    pub fn new(inf: &Informers) -> Self {
        VolumeCaches {
            pvcs: inf.pvcs.clone(),
            pvs: inf.pvs.clone(),
            classes: inf.storage_classes.clone(),
            pods: inf.pods.clone(),
        }
    }
}

impl VolumeObjects for VolumeCaches {
    fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.pvcs.get(&format!("{ns}/{name}"))
    }
    fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.pvs.get(name)
    }
    fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
        self.pvs.list()
    }
    fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
        self.classes.get(name)
    }
    fn pods_in(&self, ns: &str) -> Vec<Arc<Pod>> {
        self.pods.list_namespace(ns)
    }
}

/// An unbound WaitForFirstConsumer claim of the pod.
#[derive(Debug, Clone)]
pub struct UnboundClaim {
    pub claim: Arc<PersistentVolumeClaim>,
    /// Its class creates volumes on demand.
    pub can_provision: bool,
    /// The node already chosen for it (provisioning may be under way there).
    pub selected_node: Option<String>,
}

/// The pod's claims, resolved by [`pre_filter`].
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    /// Volumes of the pod's bound claims.
    pub bound: Vec<Arc<PersistentVolume>>,
    /// Unbound WaitForFirstConsumer claims.
    pub unbound: Vec<UnboundClaim>,
    /// Available volumes, for matching unbound claims per node.
    pub candidates: Vec<Arc<PersistentVolume>>,
    /// A ReadWriteOncePod claim of the pod is used by another active pod.
    pub rwop_conflict: bool,
}

impl PodVolumes {
    /// The pod names no claim: nothing to check.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty() && self.unbound.is_empty() && !self.rwop_conflict
    }
}

/// Resolves the pod's claims; `Err` is the reason the pod fits no node at all.
pub fn pre_filter(pod: &Pod, objects: &impl VolumeObjects) -> Result<PodVolumes, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = PodVolumes::default();
    let claims: Vec<String> = pod_claims(pod).collect();
    if claims.is_empty() {
        return Ok(out);
    }
    for key in &claims {
        let name = key.split_once('/').map(|(_, n)| n).unwrap_or(key);
        let Some(pvc) = objects.claim(ns, name) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        if matching::claim_modes(&pvc).iter().any(|m| m == "ReadWriteOncePod") {
            out.rwop_conflict |= objects.pods_in(ns).iter().any(|other| {
                other.metadata.uid != pod.metadata.uid
                    && pod_is_active(other)
                    && other.metadata.deletion_timestamp.is_none()
                    && other.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
                    && pod_claims(other).any(|c| &c == key)
            });
        }
        let volume_name = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty());
        if let Some(volume_name) = volume_name {
            let Some(pv) = objects.volume(volume_name) else {
                return Err(format!("persistentvolume \"{volume_name}\" not found"));
            };
            out.bound.push(pv);
            continue;
        }
        let class = objects.class(matching::claim_class(&pvc));
        if !matching::waits_for_first_consumer(class.as_deref()) {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        let selected_node = pvc.metadata.annotations.as_ref().and_then(|a| a.get(labels::SELECTED_NODE)).cloned();
        out.unbound.push(UnboundClaim {
            can_provision: class.is_some_and(|c| matching::can_provision(&c)),
            claim: pvc,
            selected_node,
        });
    }
    if !out.unbound.is_empty() {
        out.candidates = objects.volumes();
    }
    Ok(out)
}

/// Whether the pod's volumes allow `node` (see the module docs).
pub fn filter(vols: &PodVolumes, node: &NodeInfo) -> Result<(), Reason> {
    if vols.rwop_conflict {
        return Err(Reason::ReadWriteOncePodConflict);
    }
    if vols.bound.iter().any(|pv| !pv_fits_node(pv, &node.node)) {
        return Err(Reason::VolumeNodeAffinityConflict);
    }
    for u in &vols.unbound {
        if u.selected_node.as_deref().is_some_and(|n| n != node.name()) {
            return Err(Reason::VolumeNodeAffinityConflict);
        }
        if !u.can_provision && find_match(&u.claim, &vols.candidates, Some(&node.node)).is_none() {
            return Err(Reason::NoVolumeToBind);
        }
    }
    Ok(())
}

/// The unbound claims that still need `node` as their selected node, as `(ns, name)`.
pub fn claims_to_select(vols: &PodVolumes, node: &str) -> Vec<(String, String)> {
    vols.unbound
        .iter()
        .filter(|u| u.selected_node.as_deref() != Some(node))
        .map(|u| {
            let m = &u.claim.metadata;
            (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
        })
        .collect()
}

/// Every claim of the pod is Bound (what the pod's binding waits for).
pub fn all_bound(pod: &Pod, objects: &impl VolumeObjects) -> bool {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    pod_claims(pod).all(|key| {
        let name = key.split_once('/').map(|(_, n)| n).unwrap_or(&key);
        objects.claim(ns, name).is_some_and(|c| {
            c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{FitError, filters};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    #[derive(Default)]
    struct Objects {
        claims: Vec<Arc<PersistentVolumeClaim>>,
        volumes: Vec<Arc<PersistentVolume>>,
        classes: Vec<Arc<StorageClass>>,
        pods: Vec<Arc<Pod>>,
    }

    fn named<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("object json"))
    }

    impl VolumeObjects for Objects {
        fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
            self.claims
                .iter()
                .find(|c| c.metadata.namespace.as_deref() == Some(ns) && c.metadata.name.as_deref() == Some(name))
                .cloned()
        }
        fn volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
            self.volumes.iter().find(|v| v.metadata.name.as_deref() == Some(name)).cloned()
        }
        fn volumes(&self) -> Vec<Arc<PersistentVolume>> {
            self.volumes.clone()
        }
        fn class(&self, name: &str) -> Option<Arc<StorageClass>> {
            self.classes.iter().find(|c| c.metadata.name.as_deref() == Some(name)).cloned()
        }
        fn pods_in(&self, _ns: &str) -> Vec<Arc<Pod>> {
            self.pods.clone()
        }
    }

    fn node(name: &str) -> NodeInfo {
        NodeInfo::new(named::<Node>(json!({"metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "skiff.dev/runtimes": "wasm"}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}})))
    }

    fn pod(name: &str, uid: &str, claim: &str, node: Option<&str>) -> Arc<Pod> {
        named(json!({"metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "a"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}))
    }

    fn claim(name: &str, modes: &[&str], class: &str, volume: Option<&str>) -> Arc<PersistentVolumeClaim> {
        named(json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": modes, "storageClassName": class, "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": if volume.is_some() { "Bound" } else { "Pending" }}}))
    }

    fn local_volume(name: &str, node: &str) -> Arc<PersistentVolume> {
        named(json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path", "local": {"path": "volumes/x"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}))
    }

    fn wffc(provisioner: &str) -> Arc<StorageClass> {
        named(json!({"metadata": {"name": "local-path"}, "provisioner": provisioner,
            "volumeBindingMode": "WaitForFirstConsumer"}))
    }

    /// The scheduler's whole decision (built-in filters + volume filters) as a message.
    fn decide(p: &Pod, objects: &Objects, nodes: &[NodeInfo]) -> Result<String, String> {
        let vols = pre_filter(p, objects).map_err(|r| format!("prefilter: {r}"))?;
        crate::scheduler::schedule_from_with(p, nodes, 0, &|n| filter(&vols, n)).0.map_err(|e: FitError| e.to_string())
    }

    #[test]
    fn missing_deleting_and_immediate_unbound_claims_fit_nowhere() {
        let objects = Objects::default();
        let nodes = [node("a")];
        let p = pod("p", "u1", "data", None);
        assert_eq!(decide(&p, &objects, &nodes), Err("prefilter: persistentvolumeclaim \"data\" not found".into()));
        let mut deleting = (*claim("data", &["ReadWriteOnce"], "", None)).clone();
        deleting.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).expect("time"));
        let objects = Objects { claims: vec![Arc::new(deleting)], ..Default::default() };
        assert_eq!(
            decide(&p, &objects, &nodes),
            Err("prefilter: persistentvolumeclaim \"data\" is being deleted".into())
        );
        let objects = Objects { claims: vec![claim("data", &["ReadWriteOnce"], "", None)], ..Default::default() };
        assert_eq!(
            decide(&p, &objects, &nodes),
            Err("prefilter: pod has unbound immediate PersistentVolumeClaims".into())
        );
    }

    #[test]
    fn a_bound_local_volume_pins_the_pod_to_its_node() {
        let objects = Objects {
            claims: vec![claim("data", &["ReadWriteOnce"], "local-path", Some("pv1"))],
            volumes: vec![local_volume("pv1", "b")],
            ..Default::default()
        };
        let p = pod("p", "u1", "data", None);
        assert_eq!(decide(&p, &objects, &[node("a"), node("b"), node("c")]), Ok("b".into()));
        assert_eq!(
            decide(&p, &objects, &[node("a"), node("c")]),
            Err("0/2 nodes are available: 2 node(s) had volume node affinity conflict.".into())
        );
    }

    #[test]
    fn read_write_once_pod_admits_one_pod() {
        let objects = Objects {
            claims: vec![claim("data", &["ReadWriteOncePod"], "local-path", Some("pv1"))],
            volumes: vec![local_volume("pv1", "a")],
            pods: vec![pod("first", "u1", "data", Some("a"))],
            ..Default::default()
        };
        let second = pod("second", "u2", "data", None);
        assert_eq!(
            decide(&second, &objects, &[node("a"), node("b")]),
            Err("0/2 nodes are available: 2 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode.".into())
        );
        // The pod itself (rescheduled, same uid) does not conflict with itself.
        assert_eq!(decide(&pod("first", "u1", "data", None), &objects, &[node("a"), node("b")]), Ok("a".into()));
        let rwo = Objects { claims: vec![claim("data", &["ReadWriteOnce"], "local-path", Some("pv1"))], ..objects };
        assert_eq!(decide(&second, &rwo, &[node("a"), node("b")]), Ok("a".into()), "ReadWriteOnce shares the node");
    }

    #[test]
    fn wait_for_first_consumer_claims_go_where_they_can_be_provisioned_or_matched() {
        let p = pod("p", "u1", "data", None);
        let dynamic = Objects {
            claims: vec![claim("data", &["ReadWriteOnce"], "local-path", None)],
            classes: vec![wffc(labels::LOCAL_PATH_PROVISIONER)],
            ..Default::default()
        };
        assert_eq!(decide(&p, &dynamic, &[node("a"), node("b")]), Ok("a".into()));
        let vols = pre_filter(&p, &dynamic).expect("prefilter");
        assert_eq!(claims_to_select(&vols, "a"), vec![("default".to_string(), "data".to_string())]);
        assert!(!all_bound(&p, &dynamic));

        let static_only = Objects {
            claims: vec![claim("data", &["ReadWriteOnce"], "local-path", None)],
            classes: vec![wffc("kubernetes.io/no-provisioner")],
            volumes: vec![local_volume("pv-b", "b")],
            ..Default::default()
        };
        assert_eq!(decide(&p, &static_only, &[node("a"), node("b")]), Ok("b".into()));
        assert_eq!(
            decide(&p, &static_only, &[node("a")]),
            Err("0/1 nodes are available: 1 node(s) didn't find available persistent volumes to bind.".into())
        );
        assert_eq!(
            filters::Reason::NoVolumeToBind.to_string(),
            "node(s) didn't find available persistent volumes to bind"
        );
    }
}
