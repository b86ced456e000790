//! A StatefulSet pod's stable identity, as pure functions: its ordinal name
//! (`<set>-<ordinal>`), the identity labels, `hostname`/`subdomain` for stable DNS under the
//! headless Service, and the claims (`<template>-<set>-<ordinal>`) its volumes point at.
//! Mirrors `stateful_set_utils.go` in kube-controller-manager.
//!
//! Not here: talking to the API (see the controller) or revisions (see [`super::revision`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_api::labels::{CONTROLLER_REVISION_HASH, STATEFULSET_POD_NAME};

use crate::controllers::owner::controller_reference;

/// Label with the pod's ordinal (Kubernetes' `PodIndexLabel`).
pub const POD_INDEX: &str = "apps.kubernetes.io/pod-index";

/// The name of the pod with `ordinal`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The name of the claim from template `template` for `ordinal`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// Splits `<parent>-<ordinal>`; `None` when the name has no numeric suffix.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if parent.is_empty() || ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

/// The ordinal of `pod` when it is a member of `set` (named `<set>-<n>`).
pub fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let (parent, ordinal) = parent_and_ordinal(pod.metadata.name.as_deref()?)?;
    (Some(parent) == set.metadata.name.as_deref()).then_some(ordinal)
}

/// The first ordinal (`spec.ordinals.start`, 0 by default).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.ordinals.as_ref()).and_then(|o| o.start).unwrap_or(0).max(0)
}

/// `spec.replicas` (1 by default, never negative).
pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// The revision a pod was made from (its `controller-revision-hash` label).
pub fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(CONTROLLER_REVISION_HASH).map(String::as_str)
}

/// The claims the pod with `ordinal` uses, one per `volumeClaimTemplates` entry: named
/// `<template>-<set>-<ordinal>`, labelled with the selector's `matchLabels`.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else { return Vec::new() };
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let template_name = template.metadata.name.as_deref().unwrap_or_default();
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(template_name, set_name, ordinal)),
                    namespace: set.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The pod with `ordinal` made from `template` (the template of `revision`): the controller
/// reference, the identity labels, `hostname`/`subdomain`, and one volume per claim template
/// pointing at this ordinal's claim (replacing a template volume of the same name).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let name = pod_name(set_name, ordinal);
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = tmeta.labels.unwrap_or_default();
    labels.insert(STATEFULSET_POD_NAME.into(), name.clone());
    labels.insert(POD_INDEX.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH.into(), revision.into());
    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty());

    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.as_deref()).unwrap_or_default();
    let mut volumes: Vec<Volume> = templates
        .iter()
        .map(|t| {
            let template_name = t.metadata.name.clone().unwrap_or_default();
            Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&template_name, set_name, ordinal),
                    read_only: None,
                }),
                name: template_name,
                ..Default::default()
            }
        })
        .collect();
    for v in spec.volumes.take().unwrap_or_default() {
        if !templates.iter().any(|t| t.metadata.name.as_deref() == Some(v.name.as_str())) {
            volumes.push(v);
        }
    }
    spec.volumes = (!volumes.is_empty()).then_some(volumes);

    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![controller_reference("apps/v1", "StatefulSet", &set.metadata)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The identity labels `pod` should carry and lacks (empty when it matches).
pub fn missing_identity_labels(pod: &Pod, ordinal: i32) -> BTreeMap<String, String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let want = [(STATEFULSET_POD_NAME, name), (POD_INDEX, ordinal.to_string())];
    let labels = pod.metadata.labels.as_ref();
    want.into_iter()
        .filter(|(k, v)| labels.and_then(|l| l.get(*k)) != Some(v))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "replicas": 3, "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}],
                    "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
            }
        }))
        .expect("statefulset json")
    }

    #[test]
    fn names_and_ordinals_round_trip() {
        assert_eq!(pod_name("web", 2), "web-2");
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-x1"), None);
        assert_eq!(parent_and_ordinal("-1"), None);
        assert_eq!(claim_name("data", "web", 0), "data-web-0");
    }

    #[test]
    fn a_new_pod_has_identity_dns_and_its_claim() {
        let s = set();
        let template = s.spec.as_ref().map(|s| s.template.clone()).expect("template");
        let pod = new_pod(&s, &template, "web-abc", 1);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-1"));
        let labels = pod.metadata.labels.clone().expect("labels");
        assert_eq!(labels[STATEFULSET_POD_NAME], "web-1");
        assert_eq!(labels[POD_INDEX], "1");
        assert_eq!(labels[CONTROLLER_REVISION_HASH], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.expect("volumes");
        assert_eq!(volumes.len(), 2, "the claim replaces the template volume of the same name");
        assert_eq!(volumes[0].name, "data");
        assert_eq!(volumes[0].persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()), Some("data-web-1"));
        assert_eq!(volumes[1].name, "tmp");
        let owner = &pod.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("StatefulSet", "u1", Some(true)));
        assert!(missing_identity_labels(&new_pod(&s, &template, "r", 1), 1).is_empty());
        let mut bare = new_pod(&s, &template, "r", 1);
        bare.metadata.labels = None;
        assert_eq!(missing_identity_labels(&bare, 1).len(), 2);
    }

    #[test]
    fn claims_carry_template_and_selector_labels() {
        let claims = claims_for(&set(), 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-web-2"));
        let labels = claims[0].metadata.labels.clone().expect("labels");
        assert_eq!((labels["app"].as_str(), labels["tier"].as_str()), ("web", "db"));
        assert!(claims[0].spec.is_some());
    }
}
