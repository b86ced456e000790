//! The allocator through the registry's write path, on the real (in-memory) store.

use serde_json::{Value, json};

use super::*;
use crate::registry::catalog;
use crate::registry::rest::{Registry, WriteOptions};
use crate::storage::embedded::EmbeddedStore;

async fn registry(network: ServiceNetwork) -> Registry {
    let store: SharedStore = std::sync::Arc::new(EmbeddedStore::in_memory().expect("in-memory store"));
    let registry = Registry::new(store).with_service_network(network);
    let namespaces = catalog::find("", "v1", "namespaces").expect("namespaces");
    let default_ns = json!({"metadata": {"name": "default"}});
    registry.create(namespaces, None, default_ns, WriteOptions::default()).await.expect("default namespace");
    registry
}

fn small() -> ServiceNetwork {
    ServiceNetwork { cidr: "10.96.0.0/28".parse().expect("cidr"), node_ports: 30000..=30019 }
}

fn svc(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

async fn create(r: &Registry, obj: Value) -> Result<Value, ApiError> {
    let info = catalog::find("", "v1", "services").expect("services");
    r.create(info, Some("default"), obj, WriteOptions::default()).await.map(|w| w.object)
}

async fn replace(r: &Registry, name: &str, obj: Value) -> Result<Value, ApiError> {
    let info = catalog::find("", "v1", "services").expect("services");
    r.update(info, Some("default"), name, None, obj, WriteOptions::default()).await.map(|w| w.object)
}

async fn delete_service(r: &Registry, name: &str) {
    let info = catalog::find("", "v1", "services").expect("services");
    r.delete(info, Some("default"), name, &Default::default()).await.expect("delete");
}

fn ip(obj: &Value) -> String {
    obj["spec"]["clusterIP"].as_str().expect("a cluster IP").to_string()
}

fn message(e: &ApiError) -> String {
    match e {
        ApiError::Invalid { causes, .. } => causes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn every_service_gets_its_own_ip_until_the_range_is_full() {
    let r = registry(small()).await;
    // A /28 has 14 usable addresses.
    let mut seen = std::collections::HashSet::new();
    for i in 0..14 {
        let created = create(&r, svc(&format!("s{i}"), json!({}))).await.expect("create");
        let ip = ip(&created);
        assert!(small().cidr.contains(&ip.parse::<Ipv4Addr>().expect("an IPv4 address")), "{ip}");
        assert_ne!(ip, "10.96.0.0");
        assert_ne!(ip, "10.96.0.15");
        assert_eq!(created["spec"]["clusterIPs"], json!([ip]));
        assert!(seen.insert(ip.clone()), "{ip} handed out twice");
    }
    let full = create(&r, svc("one-too-many", json!({}))).await.expect_err("the range is full");
    assert!(message(&full).contains("range is full"), "{}", message(&full));
    // A requested address is not special once the range is full.
    let requested = create(&r, svc("requested", json!({"clusterIP": "10.96.0.1"}))).await.expect_err("taken");
    assert!(message(&requested).contains("already allocated"), "{}", message(&requested));
}

#[tokio::test]
async fn requested_ips_are_honoured_once_and_checked_against_the_range() {
    let r = registry(ServiceNetwork::default()).await;
    let dns = create(&r, svc("kube-dns", json!({"clusterIP": "10.96.0.10"}))).await.expect("create");
    assert_eq!(ip(&dns), "10.96.0.10");
    let twice = create(&r, svc("other", json!({"clusterIP": "10.96.0.10"}))).await.expect_err("taken");
    assert!(
        message(&twice).contains("spec.clusterIP") && message(&twice).contains("already allocated"),
        "{}",
        message(&twice)
    );
    let outside = create(&r, svc("outside", json!({"clusterIP": "10.0.0.5"}))).await.expect_err("out of range");
    assert!(
        message(&outside).contains("not in the valid range") && message(&outside).contains("10.96.0.0/16"),
        "{}",
        message(&outside)
    );
    // Neither failure kept a Service or an address: "other" can be created with another IP.
    let other = create(&r, svc("other", json!({}))).await.expect("create");
    assert_ne!(ip(&other), "10.96.0.10");
    // Dynamic picks stay out of the static band while the upper band has room.
    let offset = u32::from(ip(&other).parse::<Ipv4Addr>().expect("v4")) - u32::from(Ipv4Addr::new(10, 96, 0, 0));
    assert!(offset > 256, "{offset}");
}

#[tokio::test]
async fn headless_and_external_name_services_get_no_ip() {
    let r = registry(small()).await;
    let headless = create(&r, svc("h", json!({"clusterIP": "None"}))).await.expect("create");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let external = create(&r, svc("e", json!({"type": "ExternalName", "externalName": "example.com", "ports": []})))
        .await
        .expect("create");
    assert!(external["spec"].get("clusterIP").is_none(), "{external}");
}

#[tokio::test]
async fn node_ports_are_allocated_kept_on_update_and_never_shared() {
    let r = registry(small()).await;
    let np = create(&r, svc("np", json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443, "nodePort": 30005}]})))
        .await
        .expect("create");
    let first = np["spec"]["ports"][0]["nodePort"].as_i64().expect("allocated");
    assert!((30000..=30019).contains(&first) && first != 30005, "{first}");
    assert_eq!(np["spec"]["ports"][1]["nodePort"], 30005);
    let clash = create(&r, svc("clash", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30005}]})))
        .await
        .expect_err("taken");
    assert!(
        message(&clash).contains("spec.ports[0].nodePort") && message(&clash).contains("already allocated"),
        "{}",
        message(&clash)
    );
    let outside = create(&r, svc("far", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]})))
        .await
        .expect_err("out of range");
    assert!(message(&outside).contains("30000-30019"), "{}", message(&outside));

    // A replace that leaves out clusterIP and nodePorts keeps them (as `kubectl replace` does).
    let mut again =
        svc("np", json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}));
    again["metadata"]["resourceVersion"] = np["metadata"]["resourceVersion"].clone();
    let replaced = replace(&r, "np", again).await.expect("replace");
    assert_eq!(ip(&replaced), ip(&np));
    assert_eq!(replaced["spec"]["ports"][0]["nodePort"], first);
    assert_eq!(replaced["spec"]["ports"][1]["nodePort"], 30005);
    // Back to ClusterIP: the node ports go from the object.
    let back =
        replace(&r, "np", svc("np", json!({"type": "ClusterIP", "ports": [{"port": 80}]}))).await.expect("replace");
    assert!(back["spec"]["ports"][0].get("nodePort").is_none(), "{back}");
    assert_eq!(ip(&back), ip(&np));
    delete_service(&r, "np").await;
}
