//! The DaemonSet controller's pure decisions, after the Go controller's `manage`,
//! `podsShouldBeOnNode` and `rollingUpdate`: which nodes need a pod, which pods must go, and
//! — during a RollingUpdate — which old pods to replace now (`maxUnavailable`) or which nodes
//! get a surge pod first (`maxSurge`). Every function looks at a snapshot; the controller
//! applies the result and looks again after the cache has seen it.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_api::labels::CONTROLLER_REVISION_HASH;

use super::placement::NodeFit;
use crate::controllers::replicaset::pods::is_available;

/// A DaemonSet's pods grouped by the node they are bound (or pinned) to, each list oldest
/// first.
pub type NodePods = BTreeMap<String, Vec<Arc<Pod>>>;

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod runs the current template (its `controller-revision-hash` is `hash`).
pub fn is_updated(pod: &Pod, hash: &str) -> bool {
    pod.metadata.labels.as_ref().and_then(|l| l.get(CONTROLLER_REVISION_HASH)).map(String::as_str) == Some(hash)
}

/// Oldest first; at equal age a Running pod before one that is not (the Go controller's
/// `podByCreationTimestampAndPhase`), then by name so the order is stable.
pub fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| (phase(b) == "Running").cmp(&(phase(a) == "Running")))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// Whether a pod counts as on its node: everything but finished pods already being deleted
/// (those are gone as far as placement is concerned).
pub fn counts(pod: &Pod) -> bool {
    !(terminating(pod) && matches!(phase(pod), "Failed" | "Succeeded"))
}

/// What `manage` does on one pass.
#[derive(Debug, Default, PartialEq)]
pub struct Manage {
    /// Nodes that should run a pod and have none.
    pub create_on: Vec<String>,
    /// Pods that must go: excess duplicates, pods on nodes that are no longer eligible,
    /// succeeded pods.
    pub delete: Vec<Arc<Pod>>,
    /// Failed pods to delete (and recreate), subject to the per-node back-off.
    pub failed: Vec<(String, Arc<Pod>)>,
}

/// `podsShouldBeOnNode` over every node: `fits` holds each existing node's [`NodeFit`],
/// `pods` the DaemonSet's pods per node; `surge` says two pods (old and new) may share a node.
pub fn manage(fits: &BTreeMap<String, NodeFit>, pods: &NodePods, hash: &str, surge: bool) -> Manage {
    let mut m = Manage::default();
    for (node, fit) in fits {
        let on_node = pods.get(node).map(Vec::as_slice).unwrap_or(&[]);
        if on_node.is_empty() {
            if fit.should_run {
                m.create_on.push(node.clone());
            }
            continue;
        }
        if !fit.should_continue_running {
            m.delete.extend(on_node.iter().filter(|p| !terminating(p)).cloned());
            continue;
        }
        let mut running = Vec::new();
        for pod in on_node.iter().filter(|p| !terminating(p)) {
            match phase(pod) {
                "Failed" => m.failed.push((node.clone(), pod.clone())),
                "Succeeded" => m.delete.push(pod.clone()),
                _ => running.push(pod.clone()),
            }
        }
        sort_oldest_first(&mut running);
        if !surge {
            // Keep the oldest; more than one pod per node is a leftover of a lost race.
            m.delete.extend(running.into_iter().skip(1));
        } else {
            // During a surge one old and one new pod may share the node: keep the oldest of each.
            let (mut new_kept, mut old_kept) = (false, false);
            for pod in running {
                let kept = if is_updated(&pod, hash) { &mut new_kept } else { &mut old_kept };
                if *kept {
                    m.delete.push(pod);
                } else {
                    *kept = true;
                }
            }
        }
    }
    // Pods pinned to nodes that no longer exist: nothing will ever run them.
    for (node, on_node) in pods {
        if !fits.contains_key(node) {
            m.delete.extend(on_node.iter().filter(|p| !terminating(p)).cloned());
        }
    }
    m
}

/// `maxSurge` and `maxUnavailable` as counts of `desired` nodes (percentages round up); when
/// both come out 0, one pod may be unavailable (so a rollout always moves).
pub fn max_surge_unavailable(ds: &DaemonSet, desired: usize) -> (usize, usize) {
    let ru = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref());
    let scaled = |v: Option<&IntOrString>, default: usize| match v {
        None => default,
        Some(IntOrString::Int(i)) => (*i).max(0) as usize,
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<usize>().ok())
            .map_or(default, |p| (p * desired).div_ceil(100)),
    };
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), 0);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), 1);
    if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) }
}

/// A node's updated pod and old pod, either possibly missing.
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// The one updated and one old live pod of a node; `None` when there are several of either
/// (`manage` cleans that up first).
fn updated_and_old(pods: &[Arc<Pod>], hash: &str) -> Option<NewAndOld> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| !terminating(p)) {
        let slot = if is_updated(pod, hash) { &mut new } else { &mut old };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod.clone());
    }
    Some((new, old))
}

/// What one rolling-update pass does.
#[derive(Debug, Default, PartialEq)]
pub struct Rolling {
    /// Old pods to delete now (their node gets a new pod once they are gone).
    pub delete: Vec<Arc<Pod>>,
    /// Nodes that get a new pod beside their old one (surge).
    pub create_on: Vec<String>,
}

/// The Go controller's `rollingUpdate`. `wanted` are the nodes that should run a pod; nodes are
/// walked in name order, so the update goes node by node. Unavailable old pods are replaced at
/// once; available ones only while fewer than `max_unavailable` nodes are unavailable (or,
/// with surge, while fewer than `max_surge` new pods are not yet available).
pub fn rolling_update(ds: &DaemonSet, wanted: &[String], pods: &NodePods, hash: &str, now: Timestamp) -> Rolling {
    let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).map(i64::from).unwrap_or(0);
    let (max_surge, max_unavailable) = max_surge_unavailable(ds, wanted.len());
    let available = |p: &Pod| is_available(p, min_ready, now);
    let mut nodes: Vec<&String> = wanted.iter().chain(pods.keys()).collect();
    nodes.sort();
    nodes.dedup();
    let empty = Vec::new();
    let mut out = Rolling::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut candidates = Vec::new();
        for node in nodes {
            let Some((new, old)) = updated_and_old(pods.get(node).unwrap_or(&empty), hash) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => unavailable += usize::from(!available(&new)),
                (None, Some(old)) if !available(&old) => out.delete.push(old),
                (None, Some(old)) => candidates.push(old),
            }
        }
        let room = max_unavailable.saturating_sub(unavailable).min(candidates.len());
        out.delete.extend(candidates.into_iter().take(room));
    } else {
        let mut surging = 0;
        let mut candidates = Vec::new();
        for node in nodes {
            let Some((new, old)) = updated_and_old(pods.get(node).unwrap_or(&empty), hash) else {
                surging += 1;
                continue;
            };
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) if !available(&old) => out.create_on.push(node.clone()),
                (None, Some(_)) => candidates.push(node.clone()),
                (Some(new), Some(_)) if !available(&new) => surging += 1,
                (Some(_), Some(old)) => out.delete.push(old),
            }
        }
        let room = max_surge.saturating_sub(surging).min(candidates.len());
        out.create_on.extend(candidates.into_iter().take(room));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: &str = "2026-01-01T00:10:00Z";

    fn pod(name: &str, hash: &str, phase: &str, ready_since: Option<&str>) -> Arc<Pod> {
        let conditions = match ready_since {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {CONTROLLER_REVISION_HASH: hash},
                             "creationTimestamp": format!("2026-01-01T00:00:0{}Z", name.len() % 10)},
                "spec": {"containers": []},
                "status": {"phase": phase, "conditions": conditions},
            }))
            .expect("pod json"),
        )
    }

    fn ready(name: &str, hash: &str) -> Arc<Pod> {
        pod(name, hash, "Running", Some("2026-01-01T00:00:00Z"))
    }

    fn ds(strategy: Value) -> DaemonSet {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"selector": {}, "template": {},
            "updateStrategy": strategy}}))
        .expect("ds json")
    }

    fn fits(entries: &[(&str, bool, bool)]) -> BTreeMap<String, NodeFit> {
        entries
            .iter()
            .map(|(n, r, c)| (n.to_string(), NodeFit { should_run: *r, should_continue_running: *c }))
            .collect()
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect()
    }

    #[test]
    fn manage_creates_deletes_and_reports_failed_pods() {
        let f =
            fits(&[("a", true, true), ("b", true, true), ("c", false, true), ("d", false, false), ("e", true, true)]);
        let mut pods = NodePods::new();
        pods.insert("b".into(), vec![ready("b1", "h"), ready("b22", "h")]);
        pods.insert("c".into(), vec![ready("c1", "h")]);
        pods.insert("d".into(), vec![ready("d1", "h")]);
        pods.insert("e".into(), vec![pod("e1", "h", "Failed", None)]);
        pods.insert("gone".into(), vec![ready("g1", "h")]);
        let m = manage(&f, &pods, "h", false);
        assert_eq!(m.create_on, vec!["a"]);
        assert_eq!(names(&m.delete), vec!["b22", "d1", "g1"], "duplicate, ineligible, on a deleted node");
        assert_eq!(m.failed.len(), 1);
        assert_eq!(m.failed[0].0, "e");
    }

    #[test]
    fn manage_with_surge_keeps_one_old_and_one_new() {
        let f = fits(&[("a", true, true)]);
        let pods = NodePods::from([("a".into(), vec![ready("o1", "old"), ready("n22", "new"), ready("n333", "new")])]);
        assert_eq!(names(&manage(&f, &pods, "new", true).delete), vec!["n333"]);
        assert_eq!(names(&manage(&f, &pods, "new", false).delete), vec!["n22", "n333"]);
    }

    #[test]
    fn max_values_scale_with_desired_and_never_both_zero() {
        let d = |s: Value| ds(json!({"type": "RollingUpdate", "rollingUpdate": s}));
        assert_eq!(max_surge_unavailable(&d(json!({})), 10), (0, 1));
        assert_eq!(max_surge_unavailable(&d(json!({"maxUnavailable": "25%"})), 10), (0, 3), "rounds up");
        assert_eq!(max_surge_unavailable(&d(json!({"maxUnavailable": 0, "maxSurge": "10%"})), 5), (1, 0));
        assert_eq!(max_surge_unavailable(&d(json!({"maxUnavailable": 0, "maxSurge": 0})), 5), (0, 1));
    }

    fn wanted(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rolling_update_respects_max_unavailable_node_by_node() {
        let now: Timestamp = NOW.parse().expect("now");
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}));
        let mut pods = NodePods::new();
        for n in ["a", "b", "c"] {
            pods.insert(n.into(), vec![ready(n, "old")]);
        }
        let w = wanted(&["a", "b", "c"]);
        assert_eq!(names(&rolling_update(&d, &w, &pods, "new", now).delete), vec!["a"], "one at a time, by name");
        // a's old pod is gone and its new one is not ready yet: nothing more.
        pods.insert("a".into(), vec![pod("a", "new", "Running", None)]);
        assert!(rolling_update(&d, &w, &pods, "new", now).delete.is_empty());
        pods.remove("a");
        assert!(rolling_update(&d, &w, &pods, "new", now).delete.is_empty(), "a node without a pod is unavailable");
        // Ready: the next node.
        pods.insert("a".into(), vec![ready("a", "new")]);
        assert_eq!(names(&rolling_update(&d, &w, &pods, "new", now).delete), vec!["b"]);
        // An unavailable old pod is replaced regardless of the budget.
        pods.insert("c".into(), vec![pod("c", "old", "Running", None)]);
        pods.insert("b".into(), vec![pod("b", "new", "Pending", None)]);
        assert_eq!(names(&rolling_update(&d, &w, &pods, "new", now).delete), vec!["c"]);
        let two = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}));
        let all_old: NodePods = ["a", "b", "c"].iter().map(|n| (n.to_string(), vec![ready(n, "old")])).collect();
        assert_eq!(names(&rolling_update(&two, &w, &all_old, "new", now).delete), vec!["a", "b"]);
    }

    #[test]
    fn rolling_update_waits_for_min_ready_seconds() {
        let d: DaemonSet =
            serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"selector": {}, "template": {},
            "minReadySeconds": 60, "updateStrategy": {"type": "RollingUpdate"}}}))
            .expect("ds");
        let w = wanted(&["a", "b"]);
        let pods = NodePods::from([
            ("a".into(), vec![pod("a", "new", "Running", Some("2026-01-01T00:09:30Z"))]),
            ("b".into(), vec![ready("b", "old")]),
        ]);
        let now: Timestamp = NOW.parse().expect("now");
        assert!(rolling_update(&d, &w, &pods, "new", now).delete.is_empty(), "ready 30 s < 60 s");
        let later = now + jiff::SignedDuration::from_secs(30);
        assert_eq!(names(&rolling_update(&d, &w, &pods, "new", later).delete), vec!["b"]);
    }

    #[test]
    fn rolling_update_with_surge_creates_first_then_deletes() {
        let now: Timestamp = NOW.parse().expect("now");
        let d = ds(json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}));
        let w = wanted(&["a", "b"]);
        let mut pods: NodePods = ["a", "b"].iter().map(|n| (n.to_string(), vec![ready(n, "old")])).collect();
        let r = rolling_update(&d, &w, &pods, "new", now);
        assert_eq!((r.create_on, r.delete.len()), (vec!["a".to_string()], 0));
        pods.get_mut("a").expect("a").push(pod("a2", "new", "Running", None));
        let r = rolling_update(&d, &w, &pods, "new", now);
        assert_eq!((r.create_on.len(), r.delete.len()), (0, 0), "the surge pod is not ready yet");
        pods.get_mut("a").expect("a")[1] = ready("a2", "new");
        let r = rolling_update(&d, &w, &pods, "new", now);
        assert_eq!(names(&r.delete), vec!["a"], "new pod available: the old one goes");
        assert_eq!(r.create_on, vec!["b"], "and the next node surges");
    }
}
