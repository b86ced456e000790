//! Node lifecycle and taint eviction against the real registry on an in-memory store, with
//! the fake clock standing in for time.

use std::time::Duration;

use serde_json::{Value, json};

use super::taint_eviction::TaintEvictionController;
use super::*;
use crate::controllers::ControllerConfig;
use crate::controllers::testing::{EPOCH, TestCluster};

async fn cluster() -> TestCluster {
    cluster_with(ControllerConfig::default()).await
}

async fn cluster_with(config: ControllerConfig) -> TestCluster {
    let tc = TestCluster::start_with(config).await;
    tc.create("", "namespaces", None, json!({"metadata": {"name": LEASE_NAMESPACE}})).await;
    tc
}

async fn node(tc: &TestCluster, name: &str) {
    tc.create(
        "",
        "nodes",
        None,
        json!({"metadata": {"name": name}, "spec": {}, "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": EPOCH, "lastTransitionTime": EPOCH},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": EPOCH, "lastTransitionTime": EPOCH}]}}),
    )
    .await;
    tc.create(
        "coordination.k8s.io",
        "leases",
        Some(LEASE_NAMESPACE),
        json!({"metadata": {"name": name}, "spec": {"holderIdentity": name, "renewTime": "2026-01-01T00:00:00.000000Z"}}),
    )
    .await;
}

async fn pod(tc: &TestCluster, name: &str, node: &str, tolerations: Option<Value>) {
    let mut spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "i"}]});
    if let Some(t) = tolerations {
        spec["tolerations"] = t;
    }
    tc.create("", "pods", Some("default"), json!({"metadata": {"name": name}, "spec": spec})).await;
    tc.update("", "pods", Some("default"), name, Some("status"), |p| {
        p["status"]["phase"] = json!("Running");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    })
    .await;
}

fn condition<'a>(obj: &'a Value, type_: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t["key"].as_str().unwrap_or(""), t["effect"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn lease_expiry_marks_node_unknown_and_taints_it_and_renewal_clears_the_taints() {
    let tc = cluster().await;
    let c = NodeLifecycleController::new(&tc.ctx);
    node(&tc, "n1").await;
    pod(&tc, "web", "n1", None).await;
    tc.settle().await;

    c.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    let n = tc.get("", "nodes", None, "n1").await.expect("node");
    assert_eq!(condition(&n, "Ready")["status"], "True");
    assert!(taint_keys(&n).is_empty(), "healthy node untainted");

    tc.clock.advance(Duration::from_secs(39));
    c.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    let n = tc.get("", "nodes", None, "n1").await.expect("node");
    assert_eq!(condition(&n, "Ready")["status"], "True", "still within the grace period");

    tc.clock.advance(Duration::from_secs(2));
    c.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    let n = tc.get("", "nodes", None, "n1").await.expect("node");
    let ready = condition(&n, "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("Unknown"), Some("NodeStatusUnknown")));
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert_eq!(ready["lastHeartbeatTime"], EPOCH, "heartbeat kept");
    assert_eq!(condition(&n, "MemoryPressure")["status"], "Unknown", "every condition");
    assert_eq!(
        taint_keys(&n),
        ["node.kubernetes.io/unreachable:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
    );
    let no_exec = &n["spec"]["taints"][1];
    assert_eq!(no_exec["timeAdded"], "2026-01-01T00:00:41Z");
    let p = tc.get("", "pods", Some("default"), "web").await.expect("pod");
    assert_eq!(condition(&p, "Ready")["status"], "False", "pods of the node marked not ready");

    // A second pass changes nothing (level-triggered, idempotent).
    let rv = n["metadata"]["resourceVersion"].clone();
    c.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    assert_eq!(tc.get("", "nodes", None, "n1").await.expect("node")["metadata"]["resourceVersion"], rv);

    // The agent is back: the lease moves, the taints go.
    tc.update("coordination.k8s.io", "leases", Some(LEASE_NAMESPACE), "n1", None, |l| {
        l["spec"]["renewTime"] = json!("2026-01-01T00:00:45.000000Z");
    })
    .await;
    tc.settle().await;
    c.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    let n = tc.get("", "nodes", None, "n1").await.expect("node");
    assert!(taint_keys(&n).is_empty(), "taints removed: {:?}", taint_keys(&n));
}

#[tokio::test]
async fn not_ready_node_gets_the_not_ready_taints() {
    let tc = cluster().await;
    let c = NodeLifecycleController::new(&tc.ctx);
    node(&tc, "n1").await;
    tc.update("", "nodes", None, "n1", Some("status"), |n| n["status"]["conditions"][0]["status"] = json!("False"))
        .await;
    tc.settle().await;
    c.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    let n = tc.get("", "nodes", None, "n1").await.expect("node");
    assert_eq!(taint_keys(&n), ["node.kubernetes.io/not-ready:NoSchedule", "node.kubernetes.io/not-ready:NoExecute"]);
}

#[tokio::test]
async fn tainted_pods_are_evicted_after_their_toleration_seconds() {
    // A configured default toleration (not Kubernetes' 300 s) reaches pod defaulting.
    let config =
        ControllerConfig { default_unreachable_toleration: Duration::from_secs(200), ..ControllerConfig::default() };
    let tc = cluster_with(config).await;
    let nl = NodeLifecycleController::new(&tc.ctx);
    let te = TaintEvictionController::new(&tc.ctx);
    node(&tc, "n1").await;
    // Defaulted tolerations (200 s), an explicit 60 s one, and one tolerating forever.
    pod(&tc, "default-tol", "n1", None).await;
    pod(&tc, "short", "n1", Some(json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]))).await;
    pod(&tc, "forever", "n1", Some(json!([{"operator": "Exists"}]))).await;
    tc.settle().await;
    let p = tc.get("", "pods", Some("default"), "default-tol").await.expect("pod");
    assert_eq!(p["spec"]["tolerations"].as_array().map(Vec::len), Some(2), "DefaultTolerationSeconds: {p}");
    assert_eq!(p["spec"]["tolerations"][0]["tolerationSeconds"], 200);

    nl.reconcile("n1").await.expect("reconcile");
    tc.clock.advance(Duration::from_secs(41));
    nl.reconcile("n1").await.expect("reconcile");
    tc.settle().await;
    let exists = |name: &'static str| {
        let tc = &tc;
        async move { tc.get("", "pods", Some("default"), name).await.is_some() }
    };
    for name in ["default-tol", "short", "forever"] {
        te.reconcile(&format!("default/{name}")).await.expect("reconcile");
    }
    tc.settle().await;
    assert!(exists("default-tol").await && exists("short").await && exists("forever").await, "all tolerated for now");

    tc.clock.advance(Duration::from_secs(59));
    te.reconcile("default/short").await.expect("reconcile");
    tc.settle().await;
    assert!(exists("short").await, "59 s < 60 s");
    tc.clock.advance(Duration::from_secs(1));
    te.reconcile("default/short").await.expect("reconcile");
    tc.settle().await;
    assert!(!exists("short").await, "gone after 60 s (grace 0 on a silent node)");

    tc.clock.advance(Duration::from_secs(139));
    te.reconcile("default/default-tol").await.expect("reconcile");
    tc.settle().await;
    assert!(exists("default-tol").await, "199 s < 200 s");
    tc.clock.advance(Duration::from_secs(1));
    te.reconcile("default/default-tol").await.expect("reconcile");
    te.reconcile("default/forever").await.expect("reconcile");
    tc.settle().await;
    assert!(!exists("default-tol").await, "gone after 200 s");
    assert!(exists("forever").await, "tolerates forever");

    let events = crate::registry::list::list(
        tc.registry().store(),
        &info("", "events").key_prefix(),
        &crate::registry::list::Filter::default(),
        0,
        None,
    )
    .await
    .expect("events");
    assert!(
        events
            .items
            .iter()
            .any(|e| e["reason"] == "TaintManagerEviction" && e["message"] == "Marking for deletion Pod default/short"),
        "eviction event recorded"
    );
}

#[tokio::test]
async fn untolerated_no_execute_taint_evicts_at_once_and_a_deleted_nodes_pods_go() {
    let tc = cluster().await;
    let nl = NodeLifecycleController::new(&tc.ctx);
    let te = TaintEvictionController::new(&tc.ctx);
    node(&tc, "n1").await;
    node(&tc, "n2").await;
    pod(&tc, "a", "n1", None).await;
    pod(&tc, "b", "n2", None).await;
    tc.update("", "nodes", None, "n1", None, |n| {
        n["spec"]["taints"] = json!([{"key": "maintenance", "effect": "NoExecute", "timeAdded": EPOCH}]);
    })
    .await;
    tc.settle().await;
    te.reconcile("default/a").await.expect("reconcile");
    tc.settle().await;
    let a = tc.get("", "pods", Some("default"), "a").await.expect("graceful delete on a live node");
    assert!(a["metadata"]["deletionTimestamp"].is_string(), "pod a terminating");

    tc.delete("", "nodes", None, "n2", crate::registry::rest::DeleteOptions::default()).await;
    tc.settle().await;
    nl.reconcile("n2").await.expect("reconcile");
    tc.settle().await;
    assert!(tc.get("", "pods", Some("default"), "b").await.is_none(), "pod of a deleted node force-deleted");
}
