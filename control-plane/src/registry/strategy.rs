//! Per-kind rules the generic write path applies around validation — the Go API server's
//! "strategies": what a create resets (status belongs to controllers and agents), what an
//! update may change on the main resource versus the `status` subresource, and when the
//! `generation` moves.

use serde_json::{Value, json};

use super::catalog::ResourceInfo;
use super::object::{meta_mut, spec_part};

/// Clears what a user may not set on create.
pub fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    match info.kind {
        // Status is written by the agent; a new pod is Pending (with its QoS class).
        "Pod" => {
            let qos = qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "Namespace" => {
            obj["status"] = json!({"phase": "Active"});
        }
        "PersistentVolumeClaim" | "PersistentVolume" => {
            obj["status"] = json!({"phase": "Pending"});
        }
        "Job" => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
            generate_job_selector(obj);
        }
        // Nodes report their own status at registration; other kinds with a status
        // subresource start with an empty one.
        "Node" => {}
        _ if info.has_subresource("status") => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
    let meta = meta_mut(obj);
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("managedFields");
    meta.insert("generation".into(), json!(1));
}

/// The taint keys the DefaultTolerationSeconds admission gives every pod a toleration for.
pub const DEFAULT_TOLERATION_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// Kubernetes' DefaultTolerationSeconds admission: a pod that does not tolerate the
/// not-ready / unreachable `NoExecute` taints gets `{key, Exists, NoExecute, seconds}` for
/// each, so its pods leave a failed node after `seconds` rather than at once.
pub fn add_default_tolerations(pod: &mut Value, seconds: i64) {
    let existing = pod.get("spec").and_then(|s| s.get("tolerations")).and_then(Value::as_array).cloned();
    let existing = existing.unwrap_or_default();
    let covers = |t: &Value, key: &str| {
        let t_key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        (t_key == key || t_key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
    };
    let mut tolerations = existing.clone();
    for key in DEFAULT_TOLERATION_TAINTS {
        if !existing.iter().any(|t| covers(t, key)) {
            tolerations
                .push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
    if tolerations.len() != existing.len() && pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"]["tolerations"] = json!(tolerations);
    }
}

/// Merges an update of the main resource or of a subresource onto `old`, producing the
/// object to store. For the main resource the status is kept from `old` (when the kind has
/// a status subresource); for `status` only the status moves.
pub fn prepare_for_update(info: &ResourceInfo, subresource: Option<&str>, new: &mut Value, old: &Value) {
    match subresource {
        // Binding is the one write that may set spec.nodeName (and the PodScheduled condition).
        Some("binding") => {
            let node = new.get("spec").and_then(|s| s.get("nodeName")).cloned();
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            if let Some(node) = node {
                merged["spec"]["nodeName"] = node;
            }
            if let Some(status) = status {
                merged["status"] = status;
            }
            *new = merged;
        }
        Some("status") => {
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            *new = merged;
        }
        _ => {
            if info.has_subresource("status") {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
    }
    // Fields the server owns survive any update.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = meta_mut(new);
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("managedFields");
    let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
    if subresource != Some("binding") && spec_part(new) != spec_part(old) {
        meta_mut(new).insert("generation".into(), json!(generation + 1));
    }
}

/// Unless `spec.manualSelector`, a Job selects its pods by its own uid: the selector is
/// generated and the template labelled with the uid and the Job's name (both spellings, as
/// Kubernetes does), so two Jobs never fight over pods.
fn generate_job_selector(job: &mut Value) {
    use skiff_api::labels::{JOB_CONTROLLER_UID, JOB_NAME, LEGACY_JOB_CONTROLLER_UID, LEGACY_JOB_NAME};
    if job.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = job.pointer("/metadata/uid").cloned().unwrap_or_default();
    let name = job.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.insert("selector".into(), json!({"matchLabels": {JOB_CONTROLLER_UID: uid}}));
    let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) else { return };
    let meta = template.entry("metadata").or_insert_with(|| json!({}));
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta["labels"] = json!({});
    }
    let labels = &mut meta["labels"];
    labels[JOB_CONTROLLER_UID] = uid.clone();
    labels[LEGACY_JOB_CONTROLLER_UID] = uid;
    // A label value has at most 63 characters; longer names go without the name labels.
    if !name.is_empty() && name.len() <= 63 {
        labels[JOB_NAME] = json!(name);
        labels[LEGACY_JOB_NAME] = json!(name);
    }
}

/// The pod's QoS class from its containers' requests and limits, as Kubernetes computes it.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.get("spec")?.get(*f)?.as_array())
        .flatten()
        .collect();
    let mut any_set = false;
    let mut all_guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.get("resources").and_then(|r| r.get("requests")).and_then(Value::as_object);
        let limits = c.get("resources").and_then(|r| r.get("limits")).and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any_set = true;
        }
        let guaranteed = ["cpu", "memory"].iter().all(|res| {
            let l = limits.and_then(|l| l.get(*res));
            let r = requests.and_then(|r| r.get(*res)).or(l);
            l.is_some() && r == l
        });
        all_guaranteed &= guaranteed;
    }
    if all_guaranteed {
        "Guaranteed"
    } else if any_set {
        "Burstable"
    } else {
        "BestEffort"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::catalog;

    #[test]
    fn main_update_keeps_status_and_bumps_generation_on_spec_change() {
        let info = catalog::find("apps", "v1", "deployments").expect("deployments");
        let old = json!({"metadata": {"name": "a", "uid": "u1", "generation": 2}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let mut new = json!({"metadata": {"name": "a"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        prepare_for_update(info, None, &mut new, &old);
        assert_eq!(new["status"]["replicas"], 1);
        assert_eq!(new["metadata"]["uid"], "u1");
        assert_eq!(new["metadata"]["generation"], 3);
    }

    #[test]
    fn status_update_changes_only_status() {
        let info = catalog::find("", "v1", "pods").expect("pods");
        let old = json!({"metadata": {"name": "p", "generation": 1, "labels": {"a": "b"}}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending"}});
        let mut new = json!({"metadata": {"name": "p", "labels": {"x": "y"}}, "spec": {"nodeName": "other"}, "status": {"phase": "Running"}});
        prepare_for_update(info, Some("status"), &mut new, &old);
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(new["spec"]["nodeName"], "n");
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(new["metadata"]["generation"], 1);
    }

    #[test]
    fn jobs_get_a_selector_on_their_uid_unless_manual() {
        let info = catalog::find("batch", "v1", "jobs").expect("jobs");
        let mut job = json!({"metadata": {"name": "pi", "uid": "u-9"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {}}}, "status": {"active": 3}});
        prepare_for_create(info, &mut job);
        assert_eq!(job["spec"]["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-9"}}));
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app"], "pi");
        assert_eq!(labels["controller-uid"], "u-9");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert!(job.get("status").is_none());
        let mut manual = json!({"metadata": {"name": "m", "uid": "u"}, "spec": {"manualSelector": true,
            "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}});
        prepare_for_create(info, &mut manual);
        assert_eq!(manual["spec"]["selector"], json!({"matchLabels": {"a": "b"}}));
        assert_eq!(manual["spec"]["template"]["metadata"]["labels"], json!({"a": "b"}));
    }

    #[test]
    fn default_tolerations_are_added_once_and_respect_existing_ones() {
        let mut pod = json!({"spec": {"containers": []}});
        add_default_tolerations(&mut pod, 300);
        let tols = pod["spec"]["tolerations"].as_array().expect("tolerations").clone();
        assert_eq!(tols.len(), 2);
        assert_eq!(
            tols[1],
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        );
        add_default_tolerations(&mut pod, 300);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2), "idempotent");
        let mut own = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        add_default_tolerations(&mut own, 300);
        let tols = own["spec"]["tolerations"].as_array().expect("tolerations");
        assert_eq!(tols.len(), 2, "only not-ready added");
        assert_eq!(tols[0]["tolerationSeconds"], 5);
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        add_default_tolerations(&mut all, 300);
        assert_eq!(all["spec"]["tolerations"].as_array().map(Vec::len), Some(1), "tolerates everything already");
    }

    #[test]
    fn qos_classes() {
        let guaranteed = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burstable = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&burstable), "Burstable");
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
    }
}
