//! The collector against the real registry on an in-memory store ([`TestCluster`]): its graph
//! follows the store, and [`drive`] runs `reconcile` on every queued key until nothing is left.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::GarbageCollector;
use crate::controllers::testing::TestCluster;
use crate::registry::rest::DeleteOptions;

const NS: Option<&str> = Some("default");

async fn start() -> (TestCluster, GarbageCollector, DropGuard) {
    let tc = TestCluster::start().await;
    let gc = GarbageCollector::new(&tc.ctx);
    let cancel = CancellationToken::new();
    tokio::spawn(gc.clone().run(tc.registry().store().clone(), cancel.clone()));
    (tc, gc, cancel.drop_guard())
}

/// Waits until the graph has seen every write, then reconciles queued keys; repeats until
/// the queue stays empty.
async fn drive(tc: &TestCluster, gc: &GarbageCollector) {
    let cancel = CancellationToken::new();
    for _ in 0..500 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !gc.caught_up(tc.registry().store()).await.expect("store revision") {
            assert!(tokio::time::Instant::now() < deadline, "the graph did not catch up in 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let Ok(Some(key)) = tokio::time::timeout(Duration::from_millis(100), gc.queue.next(&cancel)).await else {
            return;
        };
        match gc.reconcile(&key).await {
            Ok(()) => gc.queue.forget(&key),
            Err(e) => {
                eprintln!("reconcile {key} failed (retried): {e}");
                gc.queue.retry(&key);
            }
        }
        gc.queue.done(&key);
    }
    panic!("the collector never ran out of work");
}

fn owner_ref(kind: &str, api_version: &str, owner: &Value, block: bool) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": true, "blockOwnerDeletion": block})
}

fn cm(name: &str, owners: Vec<Value>) -> Value {
    json!({"metadata": {"name": name, "ownerReferences": owners}, "data": {"k": "v"}})
}

fn deployment(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
}

fn replicaset(name: &str, owner: &Value, block: bool) -> Value {
    let mut rs = deployment(name);
    rs["metadata"]["ownerReferences"] = json!([owner_ref("Deployment", "apps/v1", owner, block)]);
    rs
}

fn pod(name: &str, owner: &Value, block: bool, node: Option<&str>) -> Value {
    let mut p = json!({"metadata": {"name": name, "labels": {"app": "web"},
        "ownerReferences": [owner_ref("ReplicaSet", "apps/v1", owner, block)]},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

/// Deployment → ReplicaSet → Pod, with `block` on every reference.
async fn chain(tc: &TestCluster, block: bool, node: Option<&str>) -> (Value, Value, Value) {
    let d = tc.create("apps", "deployments", NS, deployment("web")).await;
    let rs = tc.create("apps", "replicasets", NS, replicaset("web-1", &d, block)).await;
    let p = tc.create("", "pods", NS, pod("web-1-a", &rs, block, node)).await;
    (d, rs, p)
}

fn policy(p: &str) -> DeleteOptions {
    DeleteOptions { propagation_policy: Some(p.into()), ..Default::default() }
}

#[tokio::test]
async fn background_cascades_across_kinds_and_levels() {
    let (tc, gc, _guard) = start().await;
    let secret = tc.create("", "secrets", NS, json!({"metadata": {"name": "s"}})).await;
    tc.create("", "configmaps", NS, cm("owned", vec![owner_ref("Secret", "v1", &secret, false)])).await;
    tc.create("", "configmaps", NS, cm("unrelated", vec![])).await;
    chain(&tc, true, None).await;
    drive(&tc, &gc).await;
    assert!(tc.get("", "configmaps", NS, "owned").await.is_some(), "its owner exists");
    assert!(tc.get("", "pods", NS, "web-1-a").await.is_some(), "its owners exist");

    tc.delete("", "secrets", NS, "s", policy("Background")).await;
    tc.delete("apps", "deployments", NS, "web", DeleteOptions::default()).await;
    drive(&tc, &gc).await;
    assert!(tc.get("", "configmaps", NS, "owned").await.is_none(), "a ConfigMap owned by a Secret goes with it");
    assert!(tc.get("apps", "replicasets", NS, "web-1").await.is_none(), "the ReplicaSet goes with its Deployment");
    assert!(tc.get("", "pods", NS, "web-1-a").await.is_none(), "the pod goes with its ReplicaSet");
    assert!(tc.get("", "configmaps", NS, "unrelated").await.is_some(), "objects without owners stay");
}

#[tokio::test]
async fn a_dependent_with_an_owner_left_only_loses_the_dangling_reference() {
    let (tc, gc, _guard) = start().await;
    let a = tc.create("", "secrets", NS, json!({"metadata": {"name": "a"}})).await;
    let b = tc.create("", "secrets", NS, json!({"metadata": {"name": "b"}})).await;
    let mut ref_b = owner_ref("Secret", "v1", &b, false);
    ref_b["controller"] = json!(false);
    tc.create("", "configmaps", NS, cm("shared", vec![owner_ref("Secret", "v1", &a, false), ref_b])).await;
    // A reference whose uid no longer matches the live object counts as gone.
    let stale = json!({"metadata": {"name": "b", "uid": "0000-stale"}});
    tc.create("", "configmaps", NS, cm("stale", vec![owner_ref("Secret", "v1", &stale, false)])).await;
    tc.delete("", "secrets", NS, "a", DeleteOptions::default()).await;
    drive(&tc, &gc).await;
    let shared = tc.get("", "configmaps", NS, "shared").await.expect("one owner is left: it lives");
    let refs = shared["metadata"]["ownerReferences"].as_array().cloned().expect("references left");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0]["name"], "b");
    assert!(tc.get("", "configmaps", NS, "stale").await.is_none(), "the owner with its name is another object");
}

#[tokio::test]
async fn foreground_waits_for_blocking_dependents_bottom_up() {
    let (tc, gc, _guard) = start().await;
    chain(&tc, true, Some("node-1")).await;
    let d = tc.get("apps", "deployments", NS, "web").await.expect("deployment");
    tc.create("", "configmaps", NS, cm("loose", vec![owner_ref("Deployment", "apps/v1", &d, false)])).await;
    tc.delete("apps", "deployments", NS, "web", policy("Foreground")).await;
    drive(&tc, &gc).await;

    // The pod is on a node: it terminates gracefully and everything above it waits.
    let p = tc.get("", "pods", NS, "web-1-a").await.expect("the pod waits for its node");
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "the pod is being deleted");
    let rs = tc.get("apps", "replicasets", NS, "web-1").await.expect("the ReplicaSet waits for its pod");
    assert_eq!(rs["metadata"]["finalizers"], json!(["foregroundDeletion"]), "deleted in the foreground too");
    let d = tc.get("apps", "deployments", NS, "web").await.expect("the Deployment waits for its ReplicaSet");
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    // The loose dependent's deletion may land after the pass above went idle on a loaded
    // machine (its delete event is one more graph update): drive again until it is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tc.get("", "configmaps", NS, "loose").await.is_some() {
        assert!(tokio::time::Instant::now() < deadline, "non-blocking dependents are deleted, not waited for");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drive(&tc, &gc).await;
    }

    // The node confirms the pod's end: then the ReplicaSet, then the Deployment go.
    tc.delete("", "pods", NS, "web-1-a", DeleteOptions { grace_period_seconds: Some(0), ..Default::default() }).await;
    drive(&tc, &gc).await;
    assert!(tc.get("", "pods", NS, "web-1-a").await.is_none());
    assert!(tc.get("apps", "replicasets", NS, "web-1").await.is_none());
    assert!(tc.get("apps", "deployments", NS, "web").await.is_none());
}

#[tokio::test]
async fn orphan_removes_references_and_keeps_dependents() {
    let (tc, gc, _guard) = start().await;
    chain(&tc, true, None).await;
    tc.delete("apps", "deployments", NS, "web", policy("Orphan")).await;
    drive(&tc, &gc).await;
    assert!(tc.get("apps", "deployments", NS, "web").await.is_none(), "the owner is gone");
    let rs = tc.get("apps", "replicasets", NS, "web-1").await.expect("the ReplicaSet stays");
    assert!(rs["metadata"].get("ownerReferences").is_none(), "and has no owner: {rs}");
    let p = tc.get("", "pods", NS, "web-1-a").await.expect("the pod stays");
    assert_eq!(p["metadata"]["ownerReferences"][0]["name"], "web-1", "still owned by its ReplicaSet");
}

#[tokio::test]
async fn a_job_deleted_without_a_policy_orphans_its_pods_as_in_kubernetes() {
    let (tc, gc, _guard) = start().await;
    let job = tc
        .create(
            "batch",
            "jobs",
            NS,
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}),
        )
        .await;
    let mut p = json!({"metadata": {"name": "j-1", "ownerReferences": [owner_ref("Job", "batch/v1", &job, true)]},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    tc.create("", "pods", NS, p.take()).await;
    tc.delete("batch", "jobs", NS, "j", DeleteOptions::default()).await;
    drive(&tc, &gc).await;
    assert!(tc.get("batch", "jobs", NS, "j").await.is_none());
    let p = tc.get("", "pods", NS, "j-1").await.expect("batch/v1 Jobs orphan by default");
    assert!(p["metadata"].get("ownerReferences").is_none());
}
