//! The Job controller's view of pods: the pod it creates from the template (with the
//! Indexed-mode index, env and hostname), and how it classifies the pods it owns.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use skiff_api::labels::{
    JOB_COMPLETION_INDEX, JOB_CONTROLLER_UID, JOB_NAME, LEGACY_JOB_CONTROLLER_UID, LEGACY_JOB_NAME,
};

use crate::controllers::owner::controller_reference;

/// The env var every container of an Indexed Job's pod gets.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Where a pod of a Job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Pending or running, not being deleted.
    Active,
    /// Phase Succeeded.
    Succeeded,
    /// Phase Failed.
    Failed,
    /// Being deleted before it finished: neither active nor counted.
    Terminating,
}

/// Classifies a pod (a finished pod counts as finished even while being deleted).
pub fn state(pod: &Pod) -> PodState {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => PodState::Succeeded,
        Some("Failed") => PodState::Failed,
        _ if pod.metadata.deletion_timestamp.is_some() => PodState::Terminating,
        _ => PodState::Active,
    }
}

/// Container restarts of an active pod: with `restartPolicy: OnFailure` the node restarts
/// failed containers in place, and Kubernetes counts those restarts against `backoffLimit`.
pub fn restarts(pod: &Pod) -> i32 {
    let Some(status) = pod.status.as_ref() else { return 0 };
    let init = status.init_container_statuses.iter().flatten();
    init.chain(status.container_statuses.iter().flatten()).map(|c| c.restart_count).sum()
}

/// When a finished pod finished: the latest container termination, else its Ready condition
/// change, else its creation (for the back-off before a failed pod is replaced).
pub fn finished_at(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max();
    terminated
        .or_else(|| {
            let conditions = status.conditions.as_ref()?;
            conditions.iter().find(|c| c.type_ == "Ready").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0)
        })
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The pod to create for `job` (for `index` in Indexed mode): the template, the Job's
/// labels, the controller ownerReference, and for an index its annotation, label, env var
/// and hostname `<job>-<index>`.
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Value {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let template = job.spec.as_ref().map(|s| &s.template);
    let tmeta = template.and_then(|t| t.metadata.as_ref());
    let mut labels = json!(tmeta.and_then(|m| m.labels.as_ref()).cloned().unwrap_or_default());
    let mut annotations = json!(tmeta.and_then(|m| m.annotations.as_ref()).cloned().unwrap_or_default());
    // Generated-selector Jobs have these in the template already; a manual selector may not.
    if !uid.is_empty() && labels.get(JOB_CONTROLLER_UID).is_none() && !is_manual(job) {
        labels[JOB_CONTROLLER_UID] = json!(uid);
        labels[LEGACY_JOB_CONTROLLER_UID] = json!(uid);
    }
    if name.len() <= 63 && labels.get(JOB_NAME).is_none() {
        labels[JOB_NAME] = json!(name);
        labels[LEGACY_JOB_NAME] = json!(name);
    }
    let mut spec = serde_json::to_value(template.and_then(|t| t.spec.as_ref())).unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            annotations[JOB_COMPLETION_INDEX] = json!(i.to_string());
            labels[JOB_COMPLETION_INDEX] = json!(i.to_string());
            if spec.get("hostname").is_none_or(Value::is_null) {
                spec["hostname"] = json!(format!("{name}-{i}"));
            }
            for field in ["containers", "initContainers"] {
                for c in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                    add_index_env(c);
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "namespace": job.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [controller_reference("batch/v1", "Job", &job.metadata)],
        },
        "spec": spec,
    })
}

fn is_manual(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.manual_selector) == Some(true)
}

/// `JOB_COMPLETION_INDEX` from the pod's index annotation, unless the container sets it.
fn add_index_env(container: &mut Value) {
    if !container.get("env").is_some_and(Value::is_array) {
        container["env"] = json!([]);
    }
    let Some(env) = container["env"].as_array_mut() else { return };
    if env.iter().any(|e| e["name"] == INDEX_ENV) {
        return;
    }
    env.push(json!({
        "name": INDEX_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": format!("metadata.annotations['{JOB_COMPLETION_INDEX}']")}},
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(mode: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "ns", "uid": "u-1"},
            "spec": {"completionMode": mode, "completions": 3, "template": {
                "metadata": {"labels": {"app": "pi", JOB_CONTROLLER_UID: "u-1"}},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "a", "image": "i"},
                    {"name": "b", "image": "i", "env": [{"name": INDEX_ENV, "value": "mine"}]}]}}},
        }))
        .expect("job json")
    }

    #[test]
    fn indexed_pods_carry_their_index_everywhere() {
        let p = pod_from_template(&job("Indexed"), Some(2));
        assert_eq!(p["metadata"]["generateName"], "pi-2-");
        assert_eq!(p["metadata"]["annotations"][JOB_COMPLETION_INDEX], "2");
        assert_eq!(p["metadata"]["labels"][JOB_COMPLETION_INDEX], "2");
        assert_eq!(p["metadata"]["labels"][JOB_NAME], "pi");
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], true);
        assert_eq!(p["spec"]["hostname"], "pi-2");
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], INDEX_ENV);
        assert_eq!(
            env["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert_eq!(p["spec"]["containers"][1]["env"], json!([{"name": INDEX_ENV, "value": "mine"}]), "kept");
    }

    #[test]
    fn non_indexed_pods_are_plain() {
        let p = pod_from_template(&job("NonIndexed"), None);
        assert_eq!(p["metadata"]["generateName"], "pi-");
        assert!(p["metadata"]["annotations"].get(JOB_COMPLETION_INDEX).is_none());
        assert!(p["spec"].get("hostname").is_none());
        assert!(p["spec"]["containers"][0].get("env").is_none());
    }

    #[test]
    fn states_and_restarts() {
        let pod = |phase: &str, deleting: bool| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "deletionTimestamp": if deleting { json!("2026-01-01T00:00:00Z") } else { Value::Null }},
                "status": {"phase": phase, "containerStatuses": [{"name": "a", "image": "i", "imageID": "", "ready": false, "restartCount": 2},
                    {"name": "b", "image": "i", "imageID": "", "ready": false, "restartCount": 1}]},
            }))
            .expect("pod")
        };
        assert_eq!(state(&pod("Running", false)), PodState::Active);
        assert_eq!(state(&pod("Running", true)), PodState::Terminating);
        assert_eq!(state(&pod("Failed", true)), PodState::Failed);
        assert_eq!(state(&pod("Succeeded", false)), PodState::Succeeded);
        assert_eq!(restarts(&pod("Running", false)), 3);
    }
}
