//! Pure node-health rules of the node lifecycle controller: what a node's conditions become
//! when its agent stopped reporting, and which `node.kubernetes.io/*` taints its Ready
//! condition calls for — as kube-controller-manager's `tryUpdateNodeHealth` and its
//! taint-based eviction and TaintNodesByCondition parts decide them.
//!
//! Not here: observing heartbeats or writing anything (see the parent module).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The taint of a node whose agent stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports Ready=False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The status of the node's Ready condition (`None` when it has none).
pub fn ready_status(node: &Node) -> Option<&str> {
    conditions(node).iter().find(|c| c.type_ == "Ready").map(|c| c.status.as_str())
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[])
}

/// The heartbeat the agent last posted on the Ready condition (kept unchanged when the
/// controller marks the node Unknown, so only the agent moves it).
pub fn ready_heartbeat(node: &Node) -> Option<Timestamp> {
    conditions(node).iter().find(|c| c.type_ == "Ready").and_then(|c| c.last_heartbeat_time.as_ref()).map(|t| t.0)
}

/// The conditions of a node whose agent missed the grace period: every condition not yet
/// Unknown becomes Unknown with reason `NodeStatusUnknown` (heartbeat times kept, transition
/// time `now`), and a node that never reported gets Ready=Unknown `NodeStatusNeverUpdated`.
/// `None` when nothing changes.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut out = conditions(node).to_vec();
    let mut changed = false;
    for c in &mut out {
        if c.status != "Unknown" {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(Time(now));
            changed = true;
        }
    }
    if !out.iter().any(|c| c.type_ == "Ready") {
        out.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_heartbeat_time: None,
            last_transition_time: Some(Time(now)),
        });
        changed = true;
    }
    changed.then_some(out)
}

/// The `node.kubernetes.io/{unreachable,not-ready}` taint key a node should carry:
/// unreachable when its agent is silent, not-ready when the agent reports Ready=False.
/// A reporting agent whose Ready is still the controller's Unknown gets none: it has just
/// come back and posts Ready=True itself.
pub fn condition_taint_key(node: &Node, reachable: bool) -> Option<&'static str> {
    if !reachable {
        return Some(UNREACHABLE);
    }
    match ready_status(node) {
        Some("False") => Some(NOT_READY),
        _ => None,
    }
}

/// The node's taints with the controller-owned ones (`UNREACHABLE`, `NOT_READY`, both
/// effects) replaced by those for `key`; an existing taint keeps its `timeAdded`, a new one
/// gets `now`. `None` when nothing changes.
pub fn desired_taints(node: &Node, key: Option<&str>, now: Timestamp) -> Option<Vec<Taint>> {
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let owned = |t: &Taint| t.key == UNREACHABLE || t.key == NOT_READY;
    let mut out: Vec<Taint> = current.iter().filter(|t| !owned(t)).cloned().collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let kept = current.iter().find(|t| t.key == key && t.effect == effect).cloned();
            out.push(kept.unwrap_or_else(|| Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                // Only NoExecute taints are timed (tolerationSeconds counts from it).
                time_added: (effect == "NoExecute").then_some(Time(now)),
            }));
        }
    }
    (out != current).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn node(ready: &str, taints: Vec<Taint>) -> Node {
        Node {
            spec: Some(NodeSpec { taints: Some(taints), ..NodeSpec::default() }),
            status: Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition { type_: "Ready".into(), status: ready.into(), ..NodeCondition::default() },
                    NodeCondition { type_: "DiskPressure".into(), status: "False".into(), ..NodeCondition::default() },
                ]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint { key: key.into(), effect: effect.into(), ..Taint::default() }
    }

    #[test]
    fn silent_node_conditions_become_unknown_once() {
        let now = Timestamp::from_second(100).expect("ts");
        let n = node("True", vec![]);
        let cs = unknown_conditions(&n, now).expect("changed");
        assert!(cs.iter().all(|c| c.status == "Unknown" && c.reason.as_deref() == Some("NodeStatusUnknown")));
        assert_eq!(cs[0].message.as_deref(), Some("Kubelet stopped posting node status."));
        let mut n2 = n.clone();
        n2.status.as_mut().expect("status").conditions = Some(cs);
        assert!(unknown_conditions(&n2, now).is_none(), "already Unknown");
        let never = Node::default();
        let cs = unknown_conditions(&never, now).expect("changed");
        assert_eq!(cs[0].reason.as_deref(), Some("NodeStatusNeverUpdated"));
    }

    #[test]
    fn taints_follow_reachability_and_readiness() {
        let now = Timestamp::from_second(100).expect("ts");
        let user = taint("dedicated", "NoSchedule");
        let n = node("True", vec![user.clone()]);
        assert_eq!(condition_taint_key(&n, true), None);
        assert_eq!(condition_taint_key(&n, false), Some(UNREACHABLE));
        assert_eq!(condition_taint_key(&node("False", vec![]), true), Some(NOT_READY));
        assert_eq!(condition_taint_key(&node("Unknown", vec![]), true), None, "just came back");

        let ts = desired_taints(&n, Some(UNREACHABLE), now).expect("changed");
        assert_eq!(ts.len(), 3, "user taint kept, two added: {ts:?}");
        assert_eq!(ts[2].time_added, Some(Time(now)));
        assert_eq!(ts[1].time_added, None, "NoSchedule untimed");
        let mut tainted = n.clone();
        tainted.spec.as_mut().expect("spec").taints = Some(ts.clone());
        let later = Timestamp::from_second(500).expect("ts");
        assert!(desired_taints(&tainted, Some(UNREACHABLE), later).is_none(), "timeAdded kept");
        let swapped = desired_taints(&tainted, Some(NOT_READY), later).expect("changed");
        assert!(swapped.iter().all(|t| t.key != UNREACHABLE) && swapped.len() == 3);
        assert_eq!(desired_taints(&tainted, None, later), Some(vec![user]));
    }
}
