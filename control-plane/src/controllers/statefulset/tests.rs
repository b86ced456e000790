//! The StatefulSet controller against the real registry on an in-memory store, with a fake
//! clock: each test creates a set, calls `reconcile` and reads back what was written.

use std::time::Duration;

use serde_json::{Value, json};

use super::StatefulSetController;
use crate::controllers::testing::TestCluster;
use crate::registry::rest::DeleteOptions;

const NS: Option<&str> = Some("default");

fn sts(name: &str, replicas: i32, policy: &str, extra: Value) -> Value {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "podManagementPolicy": policy, "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        }
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    v
}

async fn setup(body: Value) -> (TestCluster, StatefulSetController) {
    let tc = TestCluster::start().await;
    let c = StatefulSetController::new(&tc.ctx);
    tc.create("apps", "statefulsets", NS, body).await;
    tc.settle().await;
    (tc, c)
}

async fn sync(tc: &TestCluster, c: &StatefulSetController, name: &str) {
    c.reconcile(&format!("default/{name}")).await.expect("reconcile");
    tc.settle().await;
}

fn pod_names(tc: &TestCluster) -> Vec<String> {
    let mut names: Vec<String> =
        tc.inf().pods.list_namespace("default").iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    names
}

fn claim_names(tc: &TestCluster) -> Vec<String> {
    let mut names: Vec<String> =
        tc.inf().pvcs.list_namespace("default").iter().filter_map(|p| p.metadata.name.clone()).collect();
    names.sort();
    names
}

async fn make_ready(tc: &TestCluster, name: &str) {
    tc.update("", "pods", NS, name, Some("status"), |p| {
        p["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    })
    .await;
    tc.settle().await;
}

/// Reconciles and readies pods until `n` pods are Running and Ready.
async fn bring_up(tc: &TestCluster, c: &StatefulSetController, set: &str, n: usize) {
    for _ in 0..3 * n + 3 {
        sync(tc, c, set).await;
        for pod in tc.inf().pods.list_namespace("default") {
            let ready = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            if !ready && pod.metadata.deletion_timestamp.is_none() {
                make_ready(tc, pod.metadata.name.as_deref().unwrap_or_default()).await;
            }
        }
        let st = tc.get("apps", "statefulsets", NS, set).await.expect("set");
        if st["status"]["readyReplicas"] == json!(n) && st["status"]["updatedReplicas"] == json!(n) {
            return;
        }
    }
    panic!("{set} did not reach {n} ready pods: {:?}", pod_names(tc));
}

fn label(pod: &Value, key: &str) -> String {
    pod["metadata"]["labels"][key].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn ordered_ready_creates_the_next_ordinal_only_after_the_previous_is_ready() {
    let (tc, c) = setup(sts("web", 3, "OrderedReady", json!({}))).await;
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0"]);
    assert_eq!(claim_names(&tc), vec!["data-web-0"], "the claim comes with the pod");
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0"], "web-0 is not Ready yet");

    let pod = tc.get("", "pods", NS, "web-0").await.expect("web-0");
    assert_eq!(pod["spec"]["hostname"], "web-0");
    assert_eq!(pod["spec"]["subdomain"], "web");
    assert_eq!(label(&pod, "statefulset.kubernetes.io/pod-name"), "web-0");
    assert_eq!(label(&pod, "apps.kubernetes.io/pod-index"), "0");
    assert!(label(&pod, "controller-revision-hash").starts_with("web-"));
    assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-web-0");
    let claim = tc.get("", "persistentvolumeclaims", NS, "data-web-0").await.expect("claim");
    assert_eq!(claim["metadata"]["labels"]["app"], "web");
    assert!(claim["metadata"]["ownerReferences"].is_null(), "Retain: the claim has no owner");

    make_ready(&tc, "web-0").await;
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0", "web-1"]);
    make_ready(&tc, "web-1").await;
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0", "web-1", "web-2"]);
    assert_eq!(claim_names(&tc), vec!["data-web-0", "data-web-1", "data-web-2"]);

    // The status counts what the caches showed at the start of a pass.
    sync(&tc, &c, "web").await;
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    assert_eq!(st["status"]["replicas"], 3);
    assert_eq!(st["status"]["readyReplicas"], 2);
    assert_eq!(st["status"]["observedGeneration"], 1);
    assert_eq!(st["status"]["currentRevision"], st["status"]["updateRevision"]);
}

#[tokio::test]
async fn parallel_creates_every_pod_at_once() {
    let (tc, c) = setup(sts("db", 3, "Parallel", json!({}))).await;
    sync(&tc, &c, "db").await;
    assert_eq!(pod_names(&tc), vec!["db-0", "db-1", "db-2"]);
    assert_eq!(claim_names(&tc), vec!["data-db-0", "data-db-1", "data-db-2"]);
}

#[tokio::test]
async fn scale_down_goes_from_the_highest_ordinal_and_keeps_claims_then_pods_reuse_them() {
    let (tc, c) = setup(sts("web", 3, "OrderedReady", json!({}))).await;
    bring_up(&tc, &c, "web", 3).await;
    tc.update("apps", "statefulsets", NS, "web", None, |s| s["spec"]["replicas"] = json!(1)).await;
    tc.settle().await;
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0", "web-1"], "web-2 goes first, alone");
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0"]);
    assert_eq!(claim_names(&tc), vec!["data-web-0", "data-web-1", "data-web-2"], "claims are retained");

    // A pod deleted by the user comes back with the same name and the same claim.
    let uid = tc.get("", "pods", NS, "web-0").await.expect("web-0")["metadata"]["uid"].clone();
    tc.delete("", "pods", NS, "web-0", DeleteOptions::default()).await;
    tc.settle().await;
    sync(&tc, &c, "web").await;
    let pod = tc.get("", "pods", NS, "web-0").await.expect("web-0 recreated");
    assert_ne!(pod["metadata"]["uid"], uid);
    assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-web-0");

    // Scaling up again reuses the retained claims.
    tc.update("apps", "statefulsets", NS, "web", None, |s| s["spec"]["replicas"] = json!(2)).await;
    make_ready(&tc, "web-0").await;
    sync(&tc, &c, "web").await;
    assert_eq!(pod_names(&tc), vec!["web-0", "web-1"]);
    assert_eq!(claim_names(&tc).len(), 3, "no new claim");
}

#[tokio::test]
async fn failed_pods_are_recreated() {
    let (tc, c) = setup(sts("web", 1, "OrderedReady", json!({}))).await;
    bring_up(&tc, &c, "web", 1).await;
    let uid = tc.get("", "pods", NS, "web-0").await.expect("web-0")["metadata"]["uid"].clone();
    tc.update("", "pods", NS, "web-0", Some("status"), |p| p["status"]["phase"] = json!("Failed")).await;
    tc.settle().await;
    sync(&tc, &c, "web").await;
    sync(&tc, &c, "web").await;
    let pod = tc.get("", "pods", NS, "web-0").await.expect("web-0 recreated");
    assert_ne!(pod["metadata"]["uid"], uid);
}

#[tokio::test]
async fn retention_policy_sets_owner_references() {
    let policy = json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}});
    let (tc, c) = setup(sts("web", 2, "Parallel", policy)).await;
    sync(&tc, &c, "web").await;
    let set_uid = tc.get("apps", "statefulsets", NS, "web").await.expect("set")["metadata"]["uid"].clone();
    for claim in ["data-web-0", "data-web-1"] {
        let claim = tc.get("", "persistentvolumeclaims", NS, claim).await.expect("claim");
        let refs = claim["metadata"]["ownerReferences"].as_array().cloned().expect("owned");
        assert_eq!(refs.len(), 1);
        assert_eq!((refs[0]["kind"].as_str(), &refs[0]["uid"]), (Some("StatefulSet"), &set_uid));
    }
    for p in ["web-0", "web-1"] {
        make_ready(&tc, p).await;
    }
    let pod_uid = tc.get("", "pods", NS, "web-1").await.expect("web-1")["metadata"]["uid"].clone();
    tc.update("apps", "statefulsets", NS, "web", None, |s| s["spec"]["replicas"] = json!(1)).await;
    tc.settle().await;
    sync(&tc, &c, "web").await;
    let claim = tc.get("", "persistentvolumeclaims", NS, "data-web-1").await.expect("claim kept for GC");
    let refs = claim["metadata"]["ownerReferences"].as_array().cloned().expect("owned");
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!((refs[0]["kind"].as_str(), &refs[0]["uid"]), (Some("Pod"), &pod_uid), "scaled away: owned by its pod");
    let kept = tc.get("", "persistentvolumeclaims", NS, "data-web-0").await.expect("claim");
    assert_eq!(kept["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
}

#[tokio::test]
async fn rolling_update_in_reverse_order_with_partition_and_revisions() {
    let strategy = json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
    let (tc, c) = setup(sts("web", 3, "OrderedReady", strategy)).await;
    bring_up(&tc, &c, "web", 3).await;
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    let rev1 = st["status"]["currentRevision"].as_str().expect("current revision").to_string();
    let cr = tc.get("apps", "controllerrevisions", NS, &rev1).await.expect("revision 1");
    assert_eq!(cr["revision"], 1);
    assert_eq!(cr["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(cr["data"]["spec"]["template"]["$patch"], "replace");

    tc.update("apps", "statefulsets", NS, "web", None, |s| {
        s["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v2");
    })
    .await;
    tc.settle().await;
    let mut order = Vec::new();
    for _ in 0..12 {
        let before = pod_names(&tc);
        sync(&tc, &c, "web").await;
        let after = pod_names(&tc);
        order.extend(before.into_iter().filter(|p| !after.contains(p)));
        for p in after {
            make_ready(&tc, &p).await;
        }
    }
    assert_eq!(order, vec!["web-2", "web-1"], "reverse order, web-0 below the partition");
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    let rev2 = st["status"]["updateRevision"].as_str().expect("update revision").to_string();
    assert_ne!(rev1, rev2);
    assert_eq!(st["status"]["currentRevision"], rev1.as_str(), "web-0 still runs revision 1");
    assert_eq!(
        (st["status"]["updatedReplicas"].as_i64(), st["status"]["currentReplicas"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(tc.get("apps", "controllerrevisions", NS, &rev2).await.expect("revision 2")["revision"], 2);
    let image = |p: Value| p["spec"]["containers"][0]["image"].as_str().map(String::from);
    assert_eq!(image(tc.get("", "pods", NS, "web-0").await.expect("web-0")).as_deref(), Some("v1"));
    assert_eq!(image(tc.get("", "pods", NS, "web-2").await.expect("web-2")).as_deref(), Some("v2"));

    // Partition 0 finishes the rollout; rolling back renumbers revision 1 to 3.
    tc.update("apps", "statefulsets", NS, "web", None, |s| {
        s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = json!(0)
    })
    .await;
    bring_up(&tc, &c, "web", 3).await;
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    assert_eq!(st["status"]["currentRevision"], rev2.as_str(), "rollout complete");
    tc.update("apps", "statefulsets", NS, "web", None, |s| {
        s["spec"]["template"]["spec"]["containers"][0]["image"] = json!("v1");
    })
    .await;
    tc.settle().await;
    sync(&tc, &c, "web").await;
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    assert_eq!(st["status"]["updateRevision"], rev1.as_str(), "the old revision is reused");
    assert_eq!(tc.get("apps", "controllerrevisions", NS, &rev1).await.expect("revision")["revision"], 3);
}

#[tokio::test]
async fn min_ready_seconds_follows_the_fake_clock() {
    let (tc, c) = setup(sts("web", 1, "OrderedReady", json!({"minReadySeconds": 30}))).await;
    sync(&tc, &c, "web").await;
    make_ready(&tc, "web-0").await;
    sync(&tc, &c, "web").await;
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    assert_eq!(
        (st["status"]["readyReplicas"].as_i64(), st["status"]["availableReplicas"].as_i64()),
        (Some(1), Some(0))
    );
    tc.clock.advance(Duration::from_secs(31));
    sync(&tc, &c, "web").await;
    let st = tc.get("apps", "statefulsets", NS, "web").await.expect("set");
    assert_eq!(st["status"]["availableReplicas"], 1);
}
