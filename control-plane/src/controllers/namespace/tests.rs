//! The namespace controller and the registry's namespace rules against the real registry on
//! an in-memory store ([`TestCluster`]).

use std::time::Duration;

use serde_json::{Value, json};

use super::NamespaceController;
use crate::apiserver::error::ApiError;
use crate::controllers::info;
use crate::controllers::testing::TestCluster;
use crate::registry::rest::{DeleteOptions, WriteOptions};

const NS: Option<&str> = Some("ns1");

fn condition<'a>(ns: &'a Value, kind: &str) -> &'a Value {
    ns["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("condition {kind} in {ns}"))
}

async fn create_in_ns1(tc: &TestCluster, group: &str, plural: &str, body: Value) -> Result<(), ApiError> {
    tc.registry().create(info(group, plural), NS, body, WriteOptions::default()).await.map(|_| ())
}

#[tokio::test]
async fn a_deleted_namespace_is_emptied_then_removed() {
    let tc = TestCluster::start().await;
    let c = NamespaceController::new(&tc.ctx);
    tc.create("", "namespaces", None, json!({"metadata": {"name": "ns1"}})).await;
    tc.create("", "configmaps", NS, json!({"metadata": {"name": "cm"}, "data": {"a": "b"}})).await;
    tc.create("", "secrets", NS, json!({"metadata": {"name": "s"}})).await;
    tc.create("", "services", NS, json!({"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})).await;
    let pod = |name: &str, node: Option<&str>| {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    };
    tc.create("", "pods", NS, pod("unbound", None)).await;
    tc.create("", "pods", NS, pod("running", Some("node-1"))).await;
    tc.create("", "configmaps", Some("default"), json!({"metadata": {"name": "elsewhere"}})).await;

    tc.delete("", "namespaces", None, "ns1", DeleteOptions::default()).await;
    let ns = tc.get("", "namespaces", None, "ns1").await.expect("a namespace is not removed at once");
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    // Admission reads a namespace cache fed by a watch: give it a moment to see the delete.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match create_in_ns1(&tc, "", "configmaps", json!({"metadata": {"name": "late"}})).await {
            Ok(()) => {
                assert!(tokio::time::Instant::now() < deadline, "creates in ns1 still admitted after 10 s");
                tc.delete("", "configmaps", NS, "late", DeleteOptions::default()).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other,
        }
    };
    match refused {
        Err(ApiError::Forbidden(m)) => assert_eq!(
            m,
            "configmaps \"late\" is forbidden: unable to create new content in namespace ns1 because it is being terminated"
        ),
        other => panic!("a create in a terminating namespace must be Forbidden, got {other:?}"),
    }
    let again = tc.registry().delete(info("", "namespaces"), None, "ns1", &DeleteOptions::default()).await;
    assert!(matches!(again, Err(ApiError::Conflict(_))), "a second delete is a conflict as in Kubernetes: {again:?}");

    tc.settle().await;
    c.reconcile("ns1").await.expect("reconcile");
    for (plural, name) in [("configmaps", "cm"), ("secrets", "s"), ("services", "svc"), ("pods", "unbound")] {
        assert!(tc.get("", plural, NS, name).await.is_none(), "{plural}/{name} deleted");
    }
    let running = tc.get("", "pods", NS, "running").await.expect("a pod on a node waits for its node");
    assert!(running["metadata"]["deletionTimestamp"].is_string());
    let ns = tc.get("", "namespaces", None, "ns1").await.expect("still there while content remains");
    assert_eq!(condition(&ns, "NamespaceContentRemaining")["status"], "True");
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining")["message"],
        "Some resources are remaining: pods. has 1 resource instances"
    );
    assert_eq!(condition(&ns, "NamespaceDeletionContentFailure")["status"], "False");
    assert_eq!(condition(&ns, "NamespaceDeletionDiscoveryFailure")["status"], "False");
    assert_eq!(condition(&ns, "NamespaceFinalizersRemaining")["status"], "False");

    // The node confirms; the next pass finalizes and the namespace is gone.
    tc.clock.advance(Duration::from_secs(5));
    tc.delete("", "pods", NS, "running", DeleteOptions { grace_period_seconds: Some(0), ..Default::default() }).await;
    tc.settle().await;
    c.reconcile("ns1").await.expect("reconcile");
    assert!(tc.get("", "namespaces", None, "ns1").await.is_none(), "the namespace is removed once empty");
    assert!(tc.get("", "configmaps", Some("default"), "elsewhere").await.is_some(), "other namespaces untouched");
}

#[tokio::test]
async fn system_namespaces_cannot_be_deleted() {
    let tc = TestCluster::start().await;
    let result = tc.registry().delete(info("", "namespaces"), None, "default", &DeleteOptions::default()).await;
    match result {
        Err(ApiError::Forbidden(m)) => {
            assert_eq!(m, "namespaces \"default\" is forbidden: this namespace may not be deleted")
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(tc.get("", "namespaces", None, "default").await.is_some());
}
