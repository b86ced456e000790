//! The volume controller against the real registry on an in-memory store (TestCluster):
//! default class, provisioning after the selected node, binding, static matching, reclaim,
//! and protection.

use serde_json::{Value, json};
use skiff_api::labels;

use super::VolumeController;
use crate::controllers::testing::TestCluster;
use crate::registry::rest::DeleteOptions;

const NS: Option<&str> = Some("default");

async fn local_path_class(tc: &TestCluster, name: &str, reclaim: &str, default: bool) {
    let annotations = if default { json!({labels::IS_DEFAULT_CLASS: "true"}) } else { json!({}) };
    tc.create(
        "storage.k8s.io",
        "storageclasses",
        None,
        json!({"metadata": {"name": name, "annotations": annotations}, "provisioner": labels::LOCAL_PATH_PROVISIONER,
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": reclaim}),
    )
    .await;
}

async fn claim(tc: &TestCluster, name: &str, size: &str, modes: &[&str], class: Option<&str>) -> Value {
    let mut spec = json!({"accessModes": modes, "resources": {"requests": {"storage": size}}});
    if let Some(class) = class {
        spec["storageClassName"] = json!(class);
    }
    tc.create("", "persistentvolumeclaims", NS, json!({"metadata": {"name": name}, "spec": spec})).await
}

async fn static_volume(tc: &TestCluster, name: &str, size: &str, modes: &[&str], reclaim: &str) {
    tc.create(
        "",
        "persistentvolumes",
        None,
        json!({"metadata": {"name": name}, "spec": {"capacity": {"storage": size}, "accessModes": modes,
            "persistentVolumeReclaimPolicy": reclaim, "hostPath": {"path": format!("/tmp/{name}")}}}),
    )
    .await;
}

async fn pvc(tc: &TestCluster, name: &str) -> Option<Value> {
    tc.get("", "persistentvolumeclaims", NS, name).await
}

async fn pv(tc: &TestCluster, name: &str) -> Option<Value> {
    tc.get("", "persistentvolumes", None, name).await
}

/// Reconciles `keys` in order, settling the caches before each.
async fn run(tc: &TestCluster, c: &VolumeController, keys: &[&str]) {
    for key in keys {
        tc.settle().await;
        c.reconcile(key).await.expect("reconcile");
    }
    tc.settle().await;
}

async fn events_for(tc: &TestCluster, name: &str) -> Vec<String> {
    let list = crate::registry::list::list(
        tc.registry().store(),
        &crate::controllers::info("", "events").key_prefix(),
        &Default::default(),
        0,
        None,
    )
    .await
    .expect("list events");
    list.items
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .map(|e| format!("{}: {}", e["reason"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
        .collect()
}

#[tokio::test]
async fn a_default_class_claim_waits_for_its_consumer_then_is_provisioned_on_the_selected_node_and_bound() {
    let tc = TestCluster::start().await;
    let c = VolumeController::new(&tc.ctx);
    local_path_class(&tc, "local-path", "Delete", true).await;
    tc.create("", "nodes", None, json!({"metadata": {"name": "n1", "labels": {labels::HOSTNAME: "n1-host"}}})).await;
    let created = claim(&tc, "data", "1Gi", &["ReadWriteOnce"], None).await;
    assert_eq!(created["spec"]["storageClassName"], "local-path", "DefaultStorageClass admission");
    let uid = created["metadata"]["uid"].as_str().expect("uid").to_string();

    run(&tc, &c, &["claim:default/data"]).await;
    let p = pvc(&tc, "data").await.expect("claim");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["metadata"]["finalizers"], json!([labels::PVC_PROTECTION]));
    assert!(tc.inf().pvs.list().is_empty(), "nothing provisioned before a consumer is scheduled");
    let events = events_for(&tc, "data").await;
    assert_eq!(events, vec!["WaitForFirstConsumer: waiting for first consumer to be created before binding"]);
    run(&tc, &c, &["claim:default/data"]).await;
    assert_eq!(events_for(&tc, "data").await.len(), 1, "said once");

    tc.update("", "persistentvolumeclaims", NS, "data", None, |p| {
        p["metadata"]["annotations"][labels::SELECTED_NODE] = json!("n1");
    })
    .await;
    run(&tc, &c, &["claim:default/data"]).await;
    let name = format!("pvc-{uid}");
    let v = pv(&tc, &name).await.expect("provisioned");
    assert_eq!(v["spec"]["capacity"]["storage"], "1Gi");
    assert_eq!(v["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(v["spec"]["storageClassName"], "local-path");
    assert_eq!(v["spec"]["local"]["path"], format!("volumes/{name}_default_data"));
    assert_eq!(v["spec"]["claimRef"]["uid"], uid.as_str());
    assert_eq!(
        v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": labels::HOSTNAME, "operator": "In", "values": ["n1-host"]})
    );
    assert_eq!(v["metadata"]["annotations"][labels::PROVISIONED_BY], labels::LOCAL_PATH_PROVISIONER);
    assert!(
        events_for(&tc, "data")
            .await
            .contains(&format!("ProvisioningSucceeded: Successfully provisioned volume {name}"))
    );

    run(&tc, &c, &["claim:default/data", &format!("volume:{name}")]).await;
    let p = pvc(&tc, "data").await.expect("claim");
    assert_eq!(p["spec"]["volumeName"], name.as_str());
    assert_eq!(p["status"]["phase"], "Bound");
    assert_eq!(p["status"]["capacity"]["storage"], "1Gi");
    assert_eq!(p["metadata"]["annotations"][labels::BIND_COMPLETED], "yes");
    let v = pv(&tc, &name).await.expect("volume");
    assert_eq!(v["status"]["phase"], "Bound");
    assert_eq!(v["metadata"]["finalizers"], json!([labels::PV_PROTECTION, labels::LOCAL_PATH_CLEANUP]));
}

#[tokio::test]
async fn static_volumes_bind_by_smallest_fit_class_and_access_modes() {
    let tc = TestCluster::start().await;
    let c = VolumeController::new(&tc.ctx);
    static_volume(&tc, "big", "10Gi", &["ReadWriteOnce"], "Retain").await;
    static_volume(&tc, "small", "1Gi", &["ReadWriteOnce", "ReadOnlyMany"], "Retain").await;
    static_volume(&tc, "tiny", "100Mi", &["ReadWriteOnce"], "Retain").await;
    static_volume(&tc, "shared", "2Gi", &["ReadWriteMany"], "Retain").await;
    run(&tc, &c, &["volume:big", "volume:small", "volume:tiny", "volume:shared"]).await;
    assert_eq!(pv(&tc, "small").await.expect("pv")["status"]["phase"], "Available");

    claim(&tc, "a", "500Mi", &["ReadWriteOnce"], None).await;
    claim(&tc, "b", "500Mi", &["ReadWriteOnce"], None).await;
    claim(&tc, "rwx", "1Gi", &["ReadWriteMany"], None).await;
    claim(&tc, "huge", "100Gi", &["ReadWriteOnce"], None).await;
    run(&tc, &c, &["claim:default/a", "claim:default/b", "claim:default/rwx", "claim:default/huge"]).await;
    let bound_to = |v: Option<Value>| v.expect("claim")["spec"]["volumeName"].as_str().map(str::to_string);
    assert_eq!(bound_to(pvc(&tc, "a").await).as_deref(), Some("small"), "smallest that fits");
    assert_eq!(bound_to(pvc(&tc, "b").await).as_deref(), Some("big"), "small is taken now");
    assert_eq!(bound_to(pvc(&tc, "rwx").await).as_deref(), Some("shared"), "only one offers ReadWriteMany");
    assert_eq!(bound_to(pvc(&tc, "huge").await), None);
    assert_eq!(pvc(&tc, "huge").await.expect("claim")["status"]["phase"], "Pending");
    assert!(
        events_for(&tc, "huge").await.contains(
            &"FailedBinding: no persistent volumes available for this claim and no storage class is set".into()
        )
    );
    for (claim, volume) in [("a", "small"), ("b", "big")] {
        assert_eq!(pvc(&tc, claim).await.expect("claim")["status"]["phase"], "Bound");
        let v = pv(&tc, volume).await.expect("pv");
        assert_eq!(v["status"]["phase"], "Bound");
        assert_eq!(v["spec"]["claimRef"]["name"], claim);
    }
    assert_eq!(pv(&tc, "tiny").await.expect("pv")["status"]["phase"], "Available");
}

#[tokio::test]
async fn deleting_a_claim_releases_its_volume_retain_keeps_it_and_delete_waits_for_the_node() {
    let tc = TestCluster::start().await;
    let c = VolumeController::new(&tc.ctx);
    // Retain: a static volume.
    static_volume(&tc, "keep", "1Gi", &["ReadWriteOnce"], "Retain").await;
    claim(&tc, "kept", "1Gi", &["ReadWriteOnce"], Some("")).await;
    run(&tc, &c, &["claim:default/kept", "volume:keep"]).await;
    assert_eq!(pv(&tc, "keep").await.expect("pv")["status"]["phase"], "Bound");
    tc.delete("", "persistentvolumeclaims", NS, "kept", DeleteOptions::default()).await;
    run(&tc, &c, &["claim:default/kept", "volume:keep"]).await;
    assert!(pvc(&tc, "kept").await.is_none(), "no pod uses it: protection lets it go");
    run(&tc, &c, &["volume:keep"]).await;
    let v = pv(&tc, "keep").await.expect("a Retain volume stays");
    assert_eq!(v["status"]["phase"], "Released");
    assert!(v["metadata"]["deletionTimestamp"].is_null());

    // Delete: a provisioned local-path volume.
    local_path_class(&tc, "local-path", "Delete", false).await;
    tc.create("", "nodes", None, json!({"metadata": {"name": "n1"}})).await;
    let created = claim(&tc, "scratch", "1Gi", &["ReadWriteOnce"], Some("local-path")).await;
    let name = format!("pvc-{}", created["metadata"]["uid"].as_str().expect("uid"));
    tc.update("", "persistentvolumeclaims", NS, "scratch", None, |p| {
        p["metadata"]["annotations"][labels::SELECTED_NODE] = json!("n1");
    })
    .await;
    run(&tc, &c, &["claim:default/scratch", "claim:default/scratch", &format!("volume:{name}")]).await;
    assert_eq!(pvc(&tc, "scratch").await.expect("claim")["status"]["phase"], "Bound");
    tc.delete("", "persistentvolumeclaims", NS, "scratch", DeleteOptions::default()).await;
    run(&tc, &c, &["claim:default/scratch", &format!("volume:{name}")]).await;
    assert!(pvc(&tc, "scratch").await.is_none());
    let v = pv(&tc, &name).await.expect("the node has not cleaned up yet");
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "reclaim Delete deletes the volume");
    run(&tc, &c, &[&format!("volume:{name}")]).await;
    let v = pv(&tc, &name).await.expect("still waiting for the node");
    assert_eq!(v["metadata"]["finalizers"], json!([labels::LOCAL_PATH_CLEANUP]), "pv-protection released");
    // What the node agent does once the directory is gone:
    tc.update("", "persistentvolumes", None, &name, None, |v| v["metadata"]["finalizers"] = json!([])).await;
    assert!(pv(&tc, &name).await.is_none());
}

#[tokio::test]
async fn a_claim_in_use_by_a_pod_is_deleted_only_after_the_pod_finishes() {
    let tc = TestCluster::start().await;
    let c = VolumeController::new(&tc.ctx);
    static_volume(&tc, "v", "1Gi", &["ReadWriteOnce"], "Retain").await;
    claim(&tc, "data", "1Gi", &["ReadWriteOnce"], None).await;
    tc.create(
        "",
        "pods",
        NS,
        json!({"metadata": {"name": "user"}, "spec": {"containers": [{"name": "c", "image": "app.wasm"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    )
    .await;
    run(&tc, &c, &["claim:default/data", "volume:v"]).await;
    tc.delete("", "persistentvolumeclaims", NS, "data", DeleteOptions::default()).await;
    run(&tc, &c, &["claim:default/data", "volume:v"]).await;
    let p = pvc(&tc, "data").await.expect("protected while the pod runs");
    assert!(p["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(pv(&tc, "v").await.expect("pv")["status"]["phase"], "Bound");
    tc.update("", "pods", NS, "user", Some("status"), |p| p["status"]["phase"] = json!("Succeeded")).await;
    run(&tc, &c, &["claim:default/data", "volume:v"]).await;
    assert!(pvc(&tc, "data").await.is_none(), "the finished pod no longer holds the claim");
    assert_eq!(pv(&tc, "v").await.expect("pv")["status"]["phase"], "Released");

    // A volume being deleted while bound keeps pv-protection until it is released.
    static_volume(&tc, "w", "1Gi", &["ReadWriteOnce"], "Retain").await;
    claim(&tc, "other", "1Gi", &["ReadWriteOnce"], None).await;
    run(&tc, &c, &["claim:default/other", "volume:w"]).await;
    tc.delete("", "persistentvolumes", None, "w", DeleteOptions::default()).await;
    run(&tc, &c, &["volume:w"]).await;
    assert!(pv(&tc, "w").await.is_some(), "pv-protection holds a bound volume");
    tc.delete("", "persistentvolumeclaims", NS, "other", DeleteOptions::default()).await;
    run(&tc, &c, &["claim:default/other", "volume:w", "volume:w"]).await;
    assert!(pv(&tc, "w").await.is_none(), "released: pv-protection lets it go");
}
