//! Both endpoint controllers against the real registry on an in-memory store.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::slices::EndpointSliceController;
use super::*;
use crate::controllers::testing::TestCluster;

/// A pod `name` labelled `app: <app>` with IP `ip`, a container port named `web` (8080), and
/// the given readiness.
async fn pod(tc: &TestCluster, name: &str, app: &str, ip: &str, ready: bool) {
    tc.create(
        "",
        "pods",
        Some("default"),
        json!({"metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
            "ports": [{"name": "web", "containerPort": 8080}]}]}}),
    )
    .await;
    set_ready(tc, name, ip, ready).await;
}

async fn set_ready(tc: &TestCluster, name: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    tc.update("", "pods", Some("default"), name, Some("status"), |p| {
        p["status"]["phase"] = json!("Running");
        p["status"]["podIP"] = json!(ip);
        p["status"]["conditions"] = json!([{"type": "Ready", "status": status}]);
    })
    .await;
}

async fn service(tc: &TestCluster, name: &str, spec: Value) {
    tc.create("", "services", Some("default"), json!({"metadata": {"name": name}, "spec": spec})).await;
}

/// Settles, reconciles `default/<svc>` with `c`, settles and returns the Endpoints.
async fn endpoints(tc: &TestCluster, c: &EndpointsController, svc: &str) -> Option<Value> {
    tc.settle().await;
    c.reconcile(&format!("default/{svc}")).await.expect("reconcile");
    tc.settle().await;
    tc.get("", "endpoints", Some("default"), svc).await
}

fn ips(subset: &Value, field: &str) -> Vec<String> {
    subset[field].as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn ready_and_not_ready_addresses_on_named_and_numeric_ports() {
    let tc = TestCluster::start().await;
    let c = EndpointsController::new(&tc.ctx);
    pod(&tc, "a", "web", "10.1.0.1", true).await;
    pod(&tc, "b", "web", "10.1.0.2", false).await;
    pod(&tc, "other", "db", "10.1.0.9", true).await;
    service(
        &tc,
        "web",
        json!({"selector": {"app": "web"}, "ports": [
        {"name": "http", "port": 80, "targetPort": "web"}, {"name": "metrics", "port": 9000, "targetPort": 9090}]}),
    )
    .await;
    let ep = endpoints(&tc, &c, "web").await.expect("endpoints created");
    let subsets = ep["subsets"].as_array().expect("subsets");
    assert_eq!(subsets.len(), 1, "{ep}");
    assert_eq!(ips(&subsets[0], "addresses"), ["10.1.0.1"]);
    assert_eq!(ips(&subsets[0], "notReadyAddresses"), ["10.1.0.2"]);
    let ports: Vec<(String, i64)> = subsets[0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().to_string(), p["port"].as_i64().unwrap_or_default()))
        .collect();
    assert_eq!(ports, [("http".to_string(), 8080), ("metrics".to_string(), 9090)]);
    let addr = &subsets[0]["addresses"][0];
    assert_eq!((addr["nodeName"].as_str(), addr["targetRef"]["kind"].as_str()), (Some("n1"), Some("Pod")));
    assert_eq!(addr["targetRef"]["name"], "a");
    assert!(addr["targetRef"]["uid"].is_string());

    // b becomes Ready: both ready. Unchanged input writes nothing.
    set_ready(&tc, "b", "10.1.0.2", true).await;
    let ep = endpoints(&tc, &c, "web").await.expect("endpoints");
    assert_eq!(ips(&ep["subsets"][0], "addresses"), ["10.1.0.1", "10.1.0.2"]);
    let rv = ep["metadata"]["resourceVersion"].clone();
    let again = endpoints(&tc, &c, "web").await.expect("endpoints");
    assert_eq!(again["metadata"]["resourceVersion"], rv, "no write without a change");
}

#[tokio::test]
async fn a_pod_without_the_named_port_is_left_out_for_that_port() {
    let tc = TestCluster::start().await;
    let c = EndpointsController::new(&tc.ctx);
    pod(&tc, "a", "web", "10.1.0.1", true).await;
    tc.create(
        "",
        "pods",
        Some("default"),
        json!({"metadata": {"name": "plain", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    set_ready(&tc, "plain", "10.1.0.5", true).await;
    service(
        &tc,
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
    )
    .await;
    let ep = endpoints(&tc, &c, "web").await.expect("endpoints");
    let subsets = ep["subsets"].as_array().expect("subsets");
    assert_eq!(subsets.len(), 1, "{ep}");
    assert_eq!(ips(&subsets[0], "addresses"), ["10.1.0.1"], "the pod without port `web` is not listed");
}

#[tokio::test]
async fn publish_not_ready_and_terminating_pods() {
    let tc = TestCluster::start().await;
    let c = EndpointsController::new(&tc.ctx);
    pod(&tc, "a", "web", "10.1.0.1", true).await;
    pod(&tc, "b", "web", "10.1.0.2", false).await;
    // A finalizer keeps the deleted pod around, terminating.
    pod(&tc, "t", "web", "10.1.0.3", true).await;
    tc.update("", "pods", Some("default"), "t", None, |p| p["metadata"]["finalizers"] = json!(["test/keep"])).await;
    tc.delete("", "pods", Some("default"), "t", DeleteOptions::default()).await;
    service(&tc, "web", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    service(&tc, "all", json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 80}]}))
        .await;
    let ep = endpoints(&tc, &c, "web").await.expect("endpoints");
    assert_eq!(ips(&ep["subsets"][0], "addresses"), ["10.1.0.1"], "terminating pod left out: {ep}");
    assert_eq!(ips(&ep["subsets"][0], "notReadyAddresses"), ["10.1.0.2"]);
    let ep = endpoints(&tc, &c, "all").await.expect("endpoints");
    assert_eq!(ips(&ep["subsets"][0], "addresses"), ["10.1.0.1", "10.1.0.2", "10.1.0.3"], "{ep}");
    assert!(ep["subsets"][0]["notReadyAddresses"].is_null());
}

#[tokio::test]
async fn selector_less_endpoints_are_untouched_and_deletion_removes_managed_ones() {
    let tc = TestCluster::start().await;
    let c = EndpointsController::new(&tc.ctx);
    pod(&tc, "a", "web", "10.1.0.1", true).await;
    service(&tc, "manual", json!({"ports": [{"port": 80}]})).await;
    let manual = json!({"metadata": {"name": "manual"}, "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]});
    tc.create("", "endpoints", Some("default"), manual).await;
    let ep = endpoints(&tc, &c, "manual").await.expect("manual endpoints");
    assert_eq!(ips(&ep["subsets"][0], "addresses"), ["192.0.2.1"], "the user's endpoints stay");

    // A selector that matches nothing gives an empty Endpoints.
    service(&tc, "none", json!({"selector": {"app": "nothing"}, "ports": [{"port": 80}]})).await;
    let ep = endpoints(&tc, &c, "none").await.expect("empty endpoints exist");
    assert!(ep["subsets"].as_array().is_none_or(Vec::is_empty), "{ep}");

    service(&tc, "web", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    assert!(endpoints(&tc, &c, "web").await.is_some());
    tc.delete("", "services", Some("default"), "web", DeleteOptions::default()).await;
    assert!(endpoints(&tc, &c, "web").await.is_none(), "deleted with the Service");
}

/// Settles, reconciles `default/<svc>` with the slice controller (until it stops waiting for
/// its cache) and returns the Service's managed slices.
async fn slices(tc: &TestCluster, c: &EndpointSliceController, svc: &str) -> Vec<std::sync::Arc<EndpointSlice>> {
    for _ in 0..3 {
        tc.settle().await;
        c.reconcile(&format!("default/{svc}")).await.expect("reconcile");
    }
    tc.settle().await;
    let mut out = tc
        .inf()
        .endpoint_slices
        .list_where(|s| labels_of(&s.metadata).get(addresses::SERVICE_NAME_LABEL).map(String::as_str) == Some(svc));
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out
}

#[tokio::test]
async fn slices_carry_labels_owner_and_conditions() {
    let tc = TestCluster::start().await;
    let c = EndpointSliceController::new(&tc.ctx);
    pod(&tc, "a", "web", "10.1.0.1", true).await;
    pod(&tc, "b", "web", "10.1.0.2", false).await;
    pod(&tc, "t", "web", "10.1.0.3", true).await;
    tc.update("", "pods", Some("default"), "t", None, |p| p["metadata"]["finalizers"] = json!(["test/keep"])).await;
    tc.delete("", "pods", Some("default"), "t", DeleteOptions::default()).await;
    service(
        &tc,
        "web",
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}),
    )
    .await;
    let got = slices(&tc, &c, "web").await;
    assert_eq!(got.len(), 1, "{got:?}");
    let s = &got[0];
    let name = s.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("web-") && name.len() == "web-".len() + 5, "{name}");
    let labels = labels_of(&s.metadata);
    assert_eq!(labels.get(addresses::MANAGED_BY_LABEL).map(String::as_str), Some(addresses::MANAGED_BY));
    let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("Service", "web", Some(true)));
    assert_eq!(s.address_type, "IPv4");
    let port = &s.ports.as_ref().expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), Some(8080)));
    let conds: Vec<(String, bool, bool, bool)> = s
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (e.addresses[0].clone(), c.ready == Some(true), c.serving == Some(true), c.terminating == Some(true))
        })
        .collect();
    assert_eq!(
        conds,
        [
            ("10.1.0.1".into(), true, true, false),
            ("10.1.0.2".into(), false, false, false),
            ("10.1.0.3".into(), false, true, true),
        ]
    );
    assert_eq!(s.endpoints[0].node_name.as_deref(), Some("n1"));
    assert_eq!(s.endpoints[0].target_ref.as_ref().and_then(|r| r.name.as_deref()), Some("a"));

    // Selector removed: the managed slices go.
    tc.update("", "services", Some("default"), "web", None, |s| s["spec"]["selector"] = Value::Null).await;
    assert!(slices(&tc, &c, "web").await.is_empty());
}

#[tokio::test]
async fn more_than_a_hundred_endpoints_split_and_shrink_in_place() {
    let tc = TestCluster::start().await;
    let c = EndpointSliceController::new(&tc.ctx);
    for i in 0..130 {
        pod(&tc, &format!("p{i:03}"), "web", &format!("10.2.{}.{}", i / 200, i % 200 + 1), true).await;
    }
    service(&tc, "web", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    let got = slices(&tc, &c, "web").await;
    let mut sizes: Vec<usize> = got.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, [30, 100]);
    let before: Vec<_> = got.iter().map(|s| s.metadata.name.clone()).collect();
    for i in 0..40 {
        let now = DeleteOptions { grace_period_seconds: Some(0), ..DeleteOptions::default() };
        tc.delete("", "pods", Some("default"), &format!("p{i:03}"), now).await;
    }
    let got = slices(&tc, &c, "web").await;
    let total: usize = got.iter().map(|s| s.endpoints.len()).sum();
    assert_eq!(total, 90);
    assert!(got.iter().all(|s| before.contains(&s.metadata.name)), "updated in place, none created");
}

#[tokio::test]
async fn a_label_change_moves_a_pod_out_of_both() {
    let tc = TestCluster::start().await;
    let eps = EndpointsController::new(&tc.ctx);
    let c = EndpointSliceController::new(&tc.ctx);
    pod(&tc, "a", "web", "10.1.0.1", true).await;
    pod(&tc, "b", "web", "10.1.0.2", true).await;
    service(&tc, "web", json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})).await;
    assert_eq!(slices(&tc, &c, "web").await[0].endpoints.len(), 2);
    assert_eq!(ips(&endpoints(&tc, &eps, "web").await.expect("ep")["subsets"][0], "addresses").len(), 2);
    tc.update("", "pods", Some("default"), "b", None, |p| p["metadata"]["labels"]["app"] = json!("moved")).await;
    let got = slices(&tc, &c, "web").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].endpoints.iter().map(|e| e.addresses[0].as_str()).collect::<Vec<_>>(), ["10.1.0.1"]);
    assert_eq!(ips(&endpoints(&tc, &eps, "web").await.expect("ep")["subsets"][0], "addresses"), ["10.1.0.1"]);
}

#[tokio::test]
async fn manual_endpoints_of_a_selector_less_service_are_mirrored() {
    let tc = TestCluster::start().await;
    let c = EndpointSliceController::new(&tc.ctx);
    service(&tc, "manual", json!({"ports": [{"name": "http", "port": 80}]})).await;
    let manual = json!({"metadata": {"name": "manual", "labels": {"team": "a"}}, "subsets": [{
        "addresses": [{"ip": "192.0.2.1"}], "notReadyAddresses": [{"ip": "192.0.2.2"}],
        "ports": [{"name": "http", "port": 8080}]}]});
    tc.create("", "endpoints", Some("default"), manual).await;
    let got = slices(&tc, &c, "manual").await;
    assert_eq!(got.len(), 1, "{got:?}");
    let labels = labels_of(&got[0].metadata);
    assert_eq!(labels.get(addresses::MANAGED_BY_LABEL).map(String::as_str), Some(mirror::MIRROR_MANAGED_BY));
    assert_eq!(labels.get("team").map(String::as_str), Some("a"), "the Endpoints' labels are carried");
    let owner = &got[0].metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Service", "manual"));
    let port = &got[0].ports.as_ref().expect("ports")[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), Some(8080)));
    let ready: Vec<(String, bool)> = got[0]
        .endpoints
        .iter()
        .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().and_then(|c| c.ready) == Some(true)))
        .collect();
    assert_eq!(ready, [("192.0.2.1".into(), true), ("192.0.2.2".into(), false)]);

    // Edits follow; skip-mirror and deleting the Endpoints take the slices away.
    tc.update("", "endpoints", Some("default"), "manual", None, |e| {
        e["subsets"][0]["addresses"] = json!([{"ip": "192.0.2.7"}]);
    })
    .await;
    let got = slices(&tc, &c, "manual").await;
    assert_eq!(got.len(), 1);
    assert!(got[0].endpoints.iter().any(|e| e.addresses == ["192.0.2.7"]), "{got:?}");
    tc.update("", "endpoints", Some("default"), "manual", None, |e| {
        e["metadata"]["labels"][mirror::SKIP_MIRROR_LABEL] = json!("true");
    })
    .await;
    assert!(slices(&tc, &c, "manual").await.is_empty(), "skip-mirror");
    tc.update("", "endpoints", Some("default"), "manual", None, |e| {
        e["metadata"]["labels"] = json!({});
    })
    .await;
    assert_eq!(slices(&tc, &c, "manual").await.len(), 1);
    tc.delete("", "endpoints", Some("default"), "manual", DeleteOptions::default()).await;
    assert!(slices(&tc, &c, "manual").await.is_empty(), "Endpoints deleted");

    // A selecting Service's slices are never the mirror's.
    service(&tc, "sel", json!({"selector": {"app": "x"}, "ports": [{"port": 80}]})).await;
    let got = slices(&tc, &c, "sel").await;
    assert!(
        got.iter().all(|s| labels_of(&s.metadata).get(addresses::MANAGED_BY_LABEL).map(String::as_str)
            == Some(addresses::MANAGED_BY))
    );
}
