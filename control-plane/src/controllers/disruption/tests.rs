//! PodDisruptionBudget status and evictions against the real registry on an in-memory store.

use serde_json::{Value, json};

use super::eviction::{Outcome, evict};
use super::*;
use crate::controllers::testing::TestCluster;

/// A Deployment `web` with `replicas`, its ReplicaSet, and `ready` Ready pods of it (of `pods`).
async fn workload(tc: &TestCluster, replicas: i32, pods: usize, ready: usize) {
    let template =
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let d = tc
        .create(
            "apps",
            "deployments",
            Some("default"),
            json!({"metadata": {"name": "web"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
        )
        .await;
    let rs = tc
        .create("apps", "replicasets", Some("default"), json!({"metadata": {"name": "web-1", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"], "controller": true}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "template": template}}))
        .await;
    for i in 0..pods {
        let name = format!("web-{i}");
        tc.create("", "pods", Some("default"), json!({"metadata": {"name": name, "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": rs["metadata"]["uid"], "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}))
            .await;
        let ready = if i < ready { "True" } else { "False" };
        tc.update("", "pods", Some("default"), &name, Some("status"), |p| {
            p["status"]["phase"] = json!("Running");
            p["status"]["conditions"] = json!([{"type": "Ready", "status": ready}]);
        })
        .await;
    }
}

async fn pdb(tc: &TestCluster, spec: Value) {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    tc.create("policy", "poddisruptionbudgets", Some("default"), json!({"metadata": {"name": "web"}, "spec": spec}))
        .await;
}

async fn status(tc: &TestCluster, c: &DisruptionController) -> Value {
    tc.settle().await;
    c.reconcile("default/web").await.expect("reconcile");
    tc.settle().await;
    tc.get("policy", "poddisruptionbudgets", Some("default"), "web").await.expect("pdb")["status"].clone()
}

fn counts(s: &Value) -> (i64, i64, i64, i64) {
    let n = |f: &str| s[f].as_i64().unwrap_or(-1);
    (n("currentHealthy"), n("desiredHealthy"), n("expectedPods"), n("disruptionsAllowed"))
}

#[tokio::test]
async fn min_available_int_status() {
    let tc = TestCluster::start().await;
    let c = DisruptionController::new(&tc.ctx);
    workload(&tc, 3, 3, 3).await;
    pdb(&tc, json!({"minAvailable": 2})).await;
    let s = status(&tc, &c).await;
    assert_eq!(counts(&s), (3, 2, 3, 1), "{s}");
    assert_eq!(s["observedGeneration"], 1);
    let cond = &s["conditions"][0];
    assert_eq!(
        (cond["type"].as_str(), cond["status"].as_str(), cond["reason"].as_str()),
        (Some("DisruptionAllowed"), Some("True"), Some("SufficientPods"))
    );
    // One pod stops being ready: no disruption left.
    tc.update("", "pods", Some("default"), "web-0", Some("status"), |p| {
        p["status"]["conditions"][0]["status"] = json!("False")
    })
    .await;
    let s = status(&tc, &c).await;
    assert_eq!(counts(&s), (2, 2, 3, 0));
    assert_eq!(
        (s["conditions"][0]["status"].as_str(), s["conditions"][0]["reason"].as_str()),
        (Some("False"), Some("InsufficientPods"))
    );
}

#[tokio::test]
async fn percentages_and_max_unavailable_use_the_deployment_scale() {
    let tc = TestCluster::start().await;
    let c = DisruptionController::new(&tc.ctx);
    // Four replicas wanted, three pods exist, all ready.
    workload(&tc, 4, 3, 3).await;
    pdb(&tc, json!({"minAvailable": "50%"})).await;
    assert_eq!(counts(&status(&tc, &c).await), (3, 2, 4, 1));
    tc.update("policy", "poddisruptionbudgets", Some("default"), "web", None, |p| {
        p["spec"] = json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}});
    })
    .await;
    let s = status(&tc, &c).await;
    assert_eq!(counts(&s), (3, 3, 4, 0), "{s}");
    assert_eq!(s["observedGeneration"], 2, "generation moved with the spec");
    tc.update("policy", "poddisruptionbudgets", Some("default"), "web", None, |p| {
        p["spec"] = json!({"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "web"}}});
    })
    .await;
    assert_eq!(counts(&status(&tc, &c).await), (3, 2, 4, 1));
}

#[tokio::test]
async fn percentages_without_a_controller_fail_sync() {
    let tc = TestCluster::start().await;
    let c = DisruptionController::new(&tc.ctx);
    tc.create(
        "",
        "pods",
        Some("default"),
        json!({"metadata": {"name": "bare", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    pdb(&tc, json!({"maxUnavailable": "10%"})).await;
    let s = status(&tc, &c).await;
    assert_eq!(s["disruptionsAllowed"], 0);
    assert_eq!(s["conditions"][0]["reason"], "SyncFailed");
}

#[tokio::test]
async fn evictions_spend_the_budget_and_are_denied_when_none_is_left() {
    let tc = TestCluster::start().await;
    let c = DisruptionController::new(&tc.ctx);
    workload(&tc, 3, 3, 3).await;
    pdb(&tc, json!({"minAvailable": 2})).await;
    status(&tc, &c).await;
    let now = tc.clock.now();
    let reg = tc.registry();

    // A dry run changes nothing.
    let dry = json!({"deleteOptions": {"dryRun": ["All"]}});
    assert_eq!(evict(reg, "default", "web-0", &dry, false, now).await.expect("evict"), Outcome::Evicted);
    let p = tc.get("", "pods", Some("default"), "web-0").await.expect("pod");
    assert!(p["metadata"]["deletionTimestamp"].is_null());

    assert_eq!(evict(reg, "default", "web-0", &json!({}), false, now).await.expect("evict"), Outcome::Evicted);
    let p = tc.get("", "pods", Some("default"), "web-0").await.expect("graceful");
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "pod terminating");
    assert!(p["status"]["conditions"].as_array().expect("conditions").iter().any(|c| c["type"] == "DisruptionTarget"));
    let s = tc.get("policy", "poddisruptionbudgets", Some("default"), "web").await.expect("pdb")["status"].clone();
    assert_eq!(s["disruptionsAllowed"], 0, "spent");
    assert!(s["disruptedPods"]["web-0"].is_string(), "recorded: {s}");

    let denied = evict(reg, "default", "web-1", &json!({}), false, now).await.expect("evict");
    assert_eq!(
        denied,
        Outcome::Denied { cause: "The disruption budget web needs 2 healthy pods and has 3 currently".into() }
    );
    // The controller catches up (web-0 terminating): still nothing to spend.
    let s = status(&tc, &c).await;
    assert_eq!(counts(&s), (2, 2, 3, 0));
    assert!(s["disruptedPods"].is_null(), "terminating pods leave disruptedPods");
    let denied = evict(reg, "default", "web-1", &json!({}), false, now).await.expect("evict");
    assert_eq!(
        denied,
        Outcome::Denied { cause: "The disruption budget web needs 2 healthy pods and has 2 currently".into() }
    );
    assert!(
        tc.get("", "pods", Some("default"), "web-1").await.expect("pod")["metadata"]["deletionTimestamp"].is_null()
    );

    // A terminating pod, and an immediate delete through deleteOptions.
    let grace0 = json!({"deleteOptions": {"gracePeriodSeconds": 0}});
    assert_eq!(evict(reg, "default", "web-0", &grace0, false, now).await.expect("evict"), Outcome::Evicted);
    assert!(tc.get("", "pods", Some("default"), "web-0").await.is_none(), "grace 0 honoured");
    assert!(evict(reg, "default", "nope", &json!({}), false, now).await.is_err(), "missing pod is NotFound");
}
