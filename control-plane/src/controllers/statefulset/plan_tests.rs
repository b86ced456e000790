//! Unit tests of the pure sync planner.

use super::*;
use serde_json::json;

const NOW: &str = "2026-01-01T00:10:00Z";

fn set(replicas: i32, policy: &str, extra: serde_json::Value) -> StatefulSet {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 2},
        "spec": {"replicas": replicas, "podManagementPolicy": policy, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(v).expect("statefulset json")
}

fn pod(ordinal: i32, rev: &str, phase: &str, ready: bool) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{ordinal}"), "uid": format!("uid-{ordinal}"),
                "labels": {"app": "web", "controller-revision-hash": rev,
                    "statefulset.kubernetes.io/pod-name": format!("web-{ordinal}"),
                    "apps.kubernetes.io/pod-index": ordinal.to_string()}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                "lastTransitionTime": "2026-01-01T00:09:30Z"}]}
        }))
        .expect("pod json"),
    )
}

fn revs(current: &str, update: &str) -> Revisions {
    Revisions { current: current.into(), update: update.into(), collision_count: 0 }
}

fn now() -> Timestamp {
    NOW.parse().expect("now")
}

fn deletes(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .filter_map(|a| if let Action::Delete { name, .. } = a { Some(name.clone()) } else { None })
        .collect()
}

#[test]
fn ordered_ready_creates_one_at_a_time_after_readiness() {
    let s = set(3, "OrderedReady", json!({}));
    let r = revs("a", "a");
    assert_eq!(plan(&s, &[], &r, now()).actions, vec![Action::Create { ordinal: 0, version: Version::Update }]);
    let not_ready = [pod(0, "a", "Running", false)];
    assert!(plan(&s, &not_ready, &r, now()).actions.is_empty(), "waits for web-0 to be Ready");
    let ready = [pod(0, "a", "Running", true)];
    assert_eq!(plan(&s, &ready, &r, now()).actions, vec![Action::Create { ordinal: 1, version: Version::Update }]);
}

#[test]
fn parallel_creates_all_and_scales_down_all() {
    let s = set(3, "Parallel", json!({}));
    let r = revs("a", "a");
    let p = plan(&s, &[], &r, now());
    assert_eq!(p.actions.len(), 3);
    let pods: Vec<_> = (0..4).map(|i| pod(i, "a", "Pending", false)).collect();
    let down = set(1, "Parallel", json!({}));
    assert_eq!(deletes(&plan(&down, &pods, &r, now())), vec!["web-3", "web-2", "web-1"]);
}

#[test]
fn ordered_scale_down_takes_the_highest_first_and_waits() {
    let s = set(1, "OrderedReady", json!({}));
    let r = revs("a", "a");
    let pods: Vec<_> = (0..3).map(|i| pod(i, "a", "Running", true)).collect();
    assert_eq!(deletes(&plan(&s, &pods, &r, now())), vec!["web-2"]);
    let mut terminating = (*pods[2]).clone();
    terminating.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let pods2 = vec![pods[0].clone(), pods[1].clone(), Arc::new(terminating)];
    assert!(plan(&s, &pods2, &r, now()).actions.is_empty(), "web-1 waits for web-2 to be gone");
}

#[test]
fn failed_pods_are_deleted_and_recreated() {
    let s = set(2, "OrderedReady", json!({}));
    let pods = [pod(0, "a", "Failed", false), pod(1, "a", "Running", true)];
    let p = plan(&s, &pods, &revs("a", "a"), now());
    assert_eq!(p.actions[0], Action::Delete { name: "web-0".into(), uid: "uid-0".into(), why: Why::Failed });
    assert_eq!(p.actions[1], Action::Create { ordinal: 0, version: Version::Update });
}

#[test]
fn rolling_update_goes_in_reverse_and_honours_the_partition() {
    let s =
        set(3, "OrderedReady", json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}));
    let r = revs("a", "b");
    let old: Vec<_> = (0..3).map(|i| pod(i, "a", "Running", true)).collect();
    assert_eq!(deletes(&plan(&s, &old, &r, now())), vec!["web-2"]);
    let some_new = vec![old[0].clone(), old[1].clone(), pod(2, "b", "Running", true)];
    assert_eq!(deletes(&plan(&s, &some_new, &r, now())), vec!["web-1"]);
    let done = vec![old[0].clone(), pod(1, "b", "Running", true), pod(2, "b", "Running", true)];
    assert!(deletes(&plan(&s, &done, &r, now())).is_empty(), "web-0 is below the partition");
    // A missing pod below the partition is recreated at the current revision.
    assert_eq!(plan(&s, &done[1..], &r, now()).actions[0], Action::Create { ordinal: 0, version: Version::Current });
    let st = plan(&s, &done, &r, now()).status;
    assert_eq!((st.updated_replicas, st.current_replicas, st.ready_replicas), (Some(2), Some(1), Some(3)));
    assert_eq!(st.current_revision.as_deref(), Some("a"), "not complete while web-0 is old");
}

#[test]
fn max_unavailable_and_on_delete() {
    let s = set(
        3,
        "Parallel",
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}),
    );
    let old: Vec<_> = (0..3).map(|i| pod(i, "a", "Running", true)).collect();
    assert_eq!(deletes(&plan(&s, &old, &revs("a", "b"), now())), vec!["web-2", "web-1"]);
    let one_down = vec![old[0].clone(), old[1].clone(), pod(2, "b", "Running", false)];
    assert_eq!(deletes(&plan(&s, &one_down, &revs("a", "b"), now())), vec!["web-1"]);
    let od = set(3, "OrderedReady", json!({"updateStrategy": {"type": "OnDelete"}}));
    assert!(plan(&od, &old, &revs("a", "b"), now()).actions.is_empty());
    assert_eq!(
        max_unavailable(
            &set(10, "Parallel", json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": "25%"}}})),
            10
        ),
        2
    );
}

#[test]
fn status_counts_and_completes_a_rollout() {
    let s = set(2, "OrderedReady", json!({"minReadySeconds": 60}));
    let pods = [pod(0, "b", "Running", true), pod(1, "b", "Running", true)];
    let p = plan(&s, &pods, &revs("a", "b"), now());
    let st = &p.status;
    assert_eq!((st.replicas, st.ready_replicas, st.available_replicas), (2, Some(2), Some(0)));
    assert_eq!((st.current_revision.as_deref(), st.current_replicas), (Some("b"), Some(2)));
    assert_eq!(st.observed_generation, Some(2));
    let wait = p.requeue_after.expect("requeued for minReadySeconds");
    assert!(wait > Duration::from_secs(29) && wait < Duration::from_secs(31), "{wait:?}");
    let later = now() + SignedDuration::from_secs(31);
    assert_eq!(plan(&s, &pods, &revs("a", "b"), later).status.available_replicas, Some(2));
}
