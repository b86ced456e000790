//! Where a DaemonSet's pods belong and what they look like — pure functions, as in the Go
//! controller's `NodeShouldRunDaemonPod`, `AddOrUpdateDaemonPodTolerations` and
//! `ReplaceDaemonSetPodNodeNameNodeAffinity`.
//!
//! A node is eligible when the template's `nodeName` (if any), `nodeSelector`, required node
//! affinity and Skiff's runtime label fit it and it has no NoSchedule/NoExecute taint the pod
//! (with its automatic tolerations) does not tolerate. Readiness does not matter: the
//! automatic tolerations cover not-ready and unreachable. A pod already there may stay when
//! only an untolerated NoSchedule taint was added. The scheduler binds the created pods,
//! guided by a required `matchFields metadata.name In [node]` term.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint,
    Toleration,
};
use serde_json::{Value, json};
use skiff_api::labels::{CONTROLLER_REVISION_HASH, TAINT_NOT_READY, TAINT_UNREACHABLE, TAINT_UNSCHEDULABLE};

use crate::controllers::owner::controller_reference;
use crate::scheduler::affinity;
use crate::scheduler::filters::{runtime_offered, tolerates};

/// Taint keys of node conditions DaemonSet pods tolerate (besides those in `skiff_api::labels`).
pub const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
pub const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
pub const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
pub const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Whether a DaemonSet pod belongs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFit {
    /// A pod should be created there if none exists.
    pub should_run: bool,
    /// A pod already there may stay.
    pub should_continue_running: bool,
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// The tolerations every DaemonSet pod gets: not-ready and unreachable NoExecute without
/// `tolerationSeconds` (so node trouble never evicts it), the pressure and unschedulable
/// NoSchedule ones, and network-unavailable for host-network pods.
pub fn automatic_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut t = vec![
        toleration(TAINT_NOT_READY, "NoExecute"),
        toleration(TAINT_UNREACHABLE, "NoExecute"),
        toleration(TAINT_DISK_PRESSURE, "NoSchedule"),
        toleration(TAINT_MEMORY_PRESSURE, "NoSchedule"),
        toleration(TAINT_PID_PRESSURE, "NoSchedule"),
        toleration(TAINT_UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        t.push(toleration(TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    t
}

/// Adds the automatic tolerations to `spec`; one that matches an existing toleration's key,
/// operator, value and effect replaces it (`AddOrUpdateTolerationInPodSpec`).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network.unwrap_or(false);
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for auto in automatic_tolerations(host_network) {
        let same = |t: &Toleration| {
            t.key == auto.key
                && t.effect == auto.effect
                && t.operator.as_deref().unwrap_or("Equal") == "Exists"
                && t.value.as_deref().unwrap_or("").is_empty()
        };
        match tols.iter_mut().find(|t| same(t)) {
            Some(t) => *t = auto,
            None => tols.push(auto),
        }
    }
}

/// The template's pod as it would be placed: its spec with the automatic tolerations.
pub fn template_pod(ds: &DaemonSet) -> Pod {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let mut spec = template.and_then(|t| t.spec.clone()).unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    Pod { metadata: template.and_then(|t| t.metadata.clone()).unwrap_or_default(), spec: Some(spec), status: None }
}

/// `NodeShouldRunDaemonPod` for the template pod (from [`template_pod`]).
pub fn node_fit(pod: &Pod, node: &Node) -> NodeFit {
    let no = NodeFit { should_run: false, should_continue_running: false };
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let wanted = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
    if !wanted.is_empty() && wanted != node_name {
        return no;
    }
    if !affinity::matches_node_selector(pod, node)
        || !affinity::matches_required_affinity(pod, node)
        || runtime_offered(pod, node).is_err()
    {
        return no;
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    let tols = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    let untolerated = |effect: &str| {
        taints.iter().filter(|t| t.effect == effect).any(|taint: &Taint| !tols.iter().any(|t| tolerates(t, taint)))
    };
    let no_execute = untolerated("NoExecute");
    if no_execute || untolerated("NoSchedule") {
        return NodeFit { should_run: false, should_continue_running: !no_execute };
    }
    NodeFit { should_run: true, should_continue_running: true }
}

/// The required term that pins a pod to `node`.
fn pin(node: &str) -> NodeSelectorRequirement {
    NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.into()]) }
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: every required term's `matchFields` becomes
/// `metadata.name In [node]` (its `matchExpressions` stay); no terms: one term with just that.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = na.required_during_scheduling_ignored_during_execution.get_or_insert_with(NodeSelector::default);
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields = Some(vec![pin(node)]);
    }
    affinity
}

/// The node a DaemonSet pod is meant for: its `nodeName` once bound, else the node its
/// required affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find_map(|r| {
        (r.key == "metadata.name" && r.operator == "In").then(|| r.values.as_ref()?.first().cloned()).flatten()
    })
}

/// The pod to create for `ds` on `node`: the template with the automatic tolerations, the
/// `controller-revision-hash` label, the node pin, `generateName: <ds>-` and the controller
/// ownerReference.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Value {
    let mut pod = template_pod(ds);
    pod.metadata.labels.get_or_insert_with(Default::default).insert(CONTROLLER_REVISION_HASH.into(), hash.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
    let name = ds.metadata.name.as_deref().unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "namespace": ds.metadata.namespace,
            "labels": pod.metadata.labels,
            "annotations": pod.metadata.annotations,
            "ownerReferences": [controller_reference("apps/v1", "DaemonSet", &ds.metadata)],
        },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(template_spec: Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u-ds"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": template_spec}},
        }))
        .expect("ds json")
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        let mut labels = labels;
        labels["skiff.dev/runtimes"] = json!("wasm");
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}))
            .expect("node json")
    }

    fn fit(spec: Value, n: &Node) -> (bool, bool) {
        let f = node_fit(&template_pod(&ds(spec)), n);
        (f.should_run, f.should_continue_running)
    }

    const C: &str = r#"[{"name": "c", "image": "i"}]"#;

    fn containers() -> Value {
        serde_json::from_str(C).expect("containers")
    }

    #[test]
    fn node_selector_affinity_and_node_name_decide() {
        let a = node("a", json!({"disk": "ssd"}), json!([]));
        let b = node("b", json!({}), json!([]));
        assert_eq!(fit(json!({"containers": containers()}), &a), (true, true));
        let sel = json!({"containers": containers(), "nodeSelector": {"disk": "ssd"}});
        assert_eq!(fit(sel.clone(), &a), (true, true));
        assert_eq!(fit(sel, &b), (false, false));
        let aff = json!({"containers": containers(), "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}}});
        assert_eq!(fit(aff.clone(), &a), (true, true));
        assert_eq!(fit(aff, &b), (false, false));
        let named = json!({"containers": containers(), "nodeName": "b"});
        assert_eq!(fit(named.clone(), &a), (false, false));
        assert_eq!(fit(named, &b), (true, true));
        let no_wasm: Node = serde_json::from_value(json!({"metadata": {"name": "c"}})).expect("node");
        assert_eq!(fit(json!({"containers": containers()}), &no_wasm), (false, false), "no runtime offered");
    }

    #[test]
    fn taints_with_automatic_tolerations() {
        let spec = json!({"containers": containers()});
        let taint = |k: &str, e: &str| json!([{"key": k, "effect": e}]);
        // Node trouble never keeps a daemon pod away.
        for (k, e) in [
            (TAINT_NOT_READY, "NoExecute"),
            (TAINT_UNREACHABLE, "NoExecute"),
            (TAINT_UNSCHEDULABLE, "NoSchedule"),
            (TAINT_DISK_PRESSURE, "NoSchedule"),
            (TAINT_MEMORY_PRESSURE, "NoSchedule"),
            (TAINT_PID_PRESSURE, "NoSchedule"),
        ] {
            assert_eq!(fit(spec.clone(), &node("n", json!({}), taint(k, e))), (true, true), "{k}");
        }
        let net = node("n", json!({}), taint(TAINT_NETWORK_UNAVAILABLE, "NoSchedule"));
        assert_eq!(fit(spec.clone(), &net), (false, true), "only host-network pods tolerate network-unavailable");
        assert_eq!(fit(json!({"containers": containers(), "hostNetwork": true}), &net), (true, true));
        // Other taints: NoSchedule keeps running pods, NoExecute evicts them.
        assert_eq!(fit(spec.clone(), &node("n", json!({}), taint("dedicated", "NoSchedule"))), (false, true));
        assert_eq!(fit(spec.clone(), &node("n", json!({}), taint("dedicated", "NoExecute"))), (false, false));
        assert_eq!(fit(spec.clone(), &node("n", json!({}), taint("dedicated", "PreferNoSchedule"))), (true, true));
        let tolerant = json!({"containers": containers(), "tolerations": [{"key": "dedicated", "operator": "Exists"}]});
        assert_eq!(fit(tolerant, &node("n", json!({}), taint("dedicated", "NoExecute"))), (true, true));
    }

    #[test]
    fn automatic_tolerations_replace_a_matching_one_and_keep_others() {
        let mut spec: PodSpec = serde_json::from_value(json!({"containers": containers(), "tolerations": [
            {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "x", "operator": "Exists"}]}))
        .expect("spec");
        add_daemon_tolerations(&mut spec);
        let tols = spec.tolerations.clone().unwrap_or_default();
        assert_eq!(tols.len(), 7, "6 automatic + the user's own: {tols:?}");
        assert!(tols.iter().all(|t| t.toleration_seconds.is_none()), "not-ready tolerated forever");
        assert!(tols.iter().any(|t| t.key.as_deref() == Some("x")));
        add_daemon_tolerations(&mut spec);
        assert_eq!(spec.tolerations.map(|t| t.len()), Some(7), "idempotent");
    }

    #[test]
    fn new_pods_are_pinned_labelled_and_owned() {
        let spec = json!({"containers": containers(), "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "Exists"}], "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}}});
        let p = new_pod(&ds(spec), "n1", "h1");
        assert_eq!(p["metadata"]["generateName"], "agent-");
        assert_eq!(p["metadata"]["labels"], json!({"app": "agent", CONTROLLER_REVISION_HASH: "h1"}));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u-ds");
        let terms = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        let pin = json!([{"key": "metadata.name", "operator": "In", "values": ["n1"]}]);
        assert_eq!(terms[0]["matchFields"], pin, "the template's matchFields are replaced");
        assert_eq!(terms[0]["matchExpressions"][0]["key"], "disk", "matchExpressions stay");
        assert_eq!(terms[1]["matchFields"], pin);
        assert_eq!(p["spec"]["tolerations"].as_array().map(Vec::len), Some(6));
        let pod: Pod = serde_json::from_value(p).expect("pod");
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));

        let plain = new_pod(&ds(json!({"containers": containers()})), "n2", "h1");
        assert_eq!(
            plain["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}])
        );
    }
}
