//! Unit tests of the pure scheduling logic: every filter, the scores, the message format.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::filters::{self, Reason};
use super::node_info::{HostPort, NodeInfo, PodDemand};
use super::{FitError, feasible_nodes_to_find, schedule, schedule_from, scores};

/// A Ready node offering wasm with 4 cpu, 8Gi, 110 pods; `patch` is merged in (JSON merge).
fn node(name: &str, patch: Value) -> NodeInfo {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"skiff.dev/runtimes": "wasm", "kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    json_patch::merge(&mut v, &patch);
    NodeInfo::new(Arc::new(serde_json::from_value::<Node>(v).expect("node json")))
}

/// A pod with one container; `patch` is merged into it.
fn pod(patch: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "app.wasm"}]},
    });
    json_patch::merge(&mut v, &patch);
    serde_json::from_value(v).expect("pod json")
}

fn with_requests(cpu: &str, mem: &str) -> Pod {
    pod(
        json!({"spec": {"containers": [{"name": "c", "image": "a", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
    )
}

fn filter(p: &Pod, n: &NodeInfo) -> Result<(), Vec<Reason>> {
    filters::run_filters(p, &PodDemand::of(p), n)
}

#[test]
fn ready_filter() {
    assert_eq!(filter(&pod(json!({})), &node("a", json!({}))), Ok(()));
    let not_ready = node("a", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
    assert_eq!(filter(&pod(json!({})), &not_ready), Err(vec![Reason::NotReady]));
    let no_conditions = node("a", json!({"status": {"conditions": null}}));
    assert_eq!(filter(&pod(json!({})), &no_conditions), Err(vec![Reason::NotReady]));
}

#[test]
fn unschedulable_filter_and_its_toleration() {
    let cordoned = node("a", json!({"spec": {"unschedulable": true}}));
    assert_eq!(filter(&pod(json!({})), &cordoned), Err(vec![Reason::Unschedulable]));
    let tolerant = pod(
        json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(filter(&tolerant, &cordoned), Ok(()));
}

#[test]
fn runtime_filter() {
    let wasm_only = node("a", json!({}));
    let both = node("b", json!({"metadata": {"labels": {"skiff.dev/runtimes": "wasm.oci"}}}));
    let none = node("c", json!({"metadata": {"labels": {"skiff.dev/runtimes": null}}}));
    let oci = pod(json!({"spec": {"runtimeClassName": "oci"}}));
    assert_eq!(filter(&pod(json!({})), &wasm_only), Ok(()));
    assert_eq!(filter(&oci, &wasm_only), Err(vec![Reason::RuntimeNotOffered("oci".into())]));
    assert_eq!(filter(&oci, &both), Ok(()));
    assert_eq!(filter(&pod(json!({})), &none), Err(vec![Reason::RuntimeNotOffered("wasm".into())]));
    assert_eq!(filters::required_runtime(&pod(json!({"spec": {"runtimeClassName": "fast"}}))), "wasm");
}

#[test]
fn resources_filter_counts_bound_pods_but_not_finished_ones() {
    let mut n = node("a", json!({"status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "2"}}}));
    assert_eq!(filter(&with_requests("600m", "600Mi"), &n), Ok(()));
    n.add_pod(&with_requests("500m", "500Mi"));
    assert_eq!(
        filter(&with_requests("600m", "600Mi"), &n),
        Err(vec![Reason::Insufficient("cpu"), Reason::Insufficient("memory")])
    );
    assert_eq!(filter(&with_requests("500m", "100Mi"), &n), Ok(()));
    let mut finished = with_requests("500m", "500Mi");
    finished.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
    n.add_pod(&finished);
    assert_eq!(filter(&with_requests("500m", "100Mi"), &n), Ok(()), "a Succeeded pod frees its requests");
    // Requests of zero always fit the resources, whatever is left.
    assert_eq!(filter(&pod(json!({})), &n), Ok(()));
}

#[test]
fn pod_count_filter() {
    let mut n = node("a", json!({"status": {"allocatable": {"pods": "1"}}}));
    assert_eq!(filter(&pod(json!({})), &n), Ok(()));
    n.add_pod(&pod(json!({})));
    assert_eq!(filter(&pod(json!({})), &n), Err(vec![Reason::TooManyPods]));
}

#[test]
fn init_containers_and_overhead_count_in_requests() {
    let p = pod(json!({"spec": {
        "containers": [{"name": "a", "image": "a", "resources": {"requests": {"cpu": "100m"}}},
                       {"name": "b", "image": "b", "resources": {"requests": {"cpu": "200m"}}}],
        "initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "1Mi"}}}],
        "overhead": {"cpu": "10m"},
    }}));
    let d = PodDemand::of(&p);
    assert_eq!(d.requests.milli_cpu, 510);
    assert_eq!(d.requests.memory, 1024 * 1024);
}

#[test]
fn node_selector_filter() {
    let n = node("a", json!({"metadata": {"labels": {"disk": "ssd"}}}));
    assert_eq!(filter(&pod(json!({"spec": {"nodeSelector": {"disk": "ssd"}}})), &n), Ok(()));
    assert_eq!(filter(&pod(json!({"spec": {"nodeSelector": {"disk": "hdd"}}})), &n), Err(vec![Reason::NodeAffinity]));
    assert_eq!(filter(&pod(json!({"spec": {"nodeSelector": {"gpu": "yes"}}})), &n), Err(vec![Reason::NodeAffinity]));
}

fn affinity(terms: Value) -> Pod {
    pod(
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
    )
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]})
}

#[test]
fn required_node_affinity_operators() {
    let n = node("a", json!({"metadata": {"labels": {"zone": "z1", "cores": "8"}}}));
    let ok = |terms: Value| filter(&affinity(terms), &n).is_ok();
    assert!(ok(json!([expr("zone", "In", &["z1", "z2"])])));
    assert!(!ok(json!([expr("zone", "In", &["z2"])])));
    assert!(ok(json!([expr("zone", "NotIn", &["z2"])])));
    assert!(!ok(json!([expr("zone", "NotIn", &["z1"])])));
    assert!(ok(json!([expr("absent", "NotIn", &["x"])])));
    assert!(ok(json!([expr("zone", "Exists", &[])])));
    assert!(!ok(json!([expr("absent", "Exists", &[])])));
    assert!(ok(json!([expr("absent", "DoesNotExist", &[])])));
    assert!(!ok(json!([expr("zone", "DoesNotExist", &[])])));
    assert!(ok(json!([expr("cores", "Gt", &["4"])])));
    assert!(!ok(json!([expr("cores", "Gt", &["8"])])));
    assert!(ok(json!([expr("cores", "Lt", &["16"])])));
    assert!(!ok(json!([expr("zone", "Lt", &["16"])])), "a non-integer label never compares");
    assert!(!ok(json!([expr("absent", "Gt", &["1"])])));
    // Terms are ORed; an empty term matches nothing.
    assert!(ok(json!([expr("zone", "In", &["z9"]), expr("zone", "In", &["z1"])])));
    assert!(!ok(json!([{}])));
    // Expressions within a term are ANDed.
    let both = json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}, {"key": "cores", "operator": "Lt", "values": ["2"]}]}]);
    assert!(!ok(both));
    // matchFields on metadata.name.
    assert!(ok(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}])));
    assert!(!ok(json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]}])));
    assert_eq!(filter(&affinity(json!([expr("zone", "In", &["z2"])])), &n), Err(vec![Reason::NodeAffinity]));
}

#[test]
fn taint_filter_and_tolerations() {
    let tainted =
        |effect: &str| node("a", json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": effect}]}}));
    let untolerated = Err(vec![Reason::UntoleratedTaint { key: "dedicated".into(), value: "gpu".into() }]);
    assert_eq!(filter(&pod(json!({})), &tainted("NoSchedule")), untolerated);
    assert_eq!(filter(&pod(json!({})), &tainted("NoExecute")), untolerated);
    assert_eq!(filter(&pod(json!({})), &tainted("PreferNoSchedule")), Ok(()), "PreferNoSchedule only scores");
    let tol = |t: Value| pod(json!({"spec": {"tolerations": [t]}}));
    let n = tainted("NoSchedule");
    assert!(
        filter(&tol(json!({"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"})), &n)
            .is_ok()
    );
    assert!(
        filter(&tol(json!({"key": "dedicated", "value": "gpu"})), &n).is_ok(),
        "default operator Equal, any effect"
    );
    assert!(filter(&tol(json!({"key": "dedicated", "operator": "Exists"})), &n).is_ok());
    assert!(filter(&tol(json!({"operator": "Exists"})), &n).is_ok(), "empty key with Exists tolerates everything");
    assert!(filter(&tol(json!({"key": "dedicated", "value": "cpu"})), &n).is_err());
    assert!(filter(&tol(json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})), &n).is_err());
    assert!(filter(&tol(json!({"key": "other", "operator": "Exists"})), &n).is_err());
}

#[test]
fn host_port_filter() {
    let with_port = |ip: Option<&str>, port: i32, proto: &str| {
        pod(
            json!({"spec": {"containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}}),
        )
    };
    let mut n = node("a", json!({}));
    n.add_pod(&with_port(Some("127.0.0.1"), 8080, "TCP"));
    assert_eq!(
        filter(&with_port(None, 8080, "TCP"), &n),
        Err(vec![Reason::HostPorts]),
        "wildcard clashes with any address"
    );
    assert_eq!(filter(&with_port(Some("127.0.0.1"), 8080, "TCP"), &n), Err(vec![Reason::HostPorts]));
    assert_eq!(filter(&with_port(Some("127.0.0.2"), 8080, "TCP"), &n), Ok(()));
    assert_eq!(filter(&with_port(Some("127.0.0.1"), 8080, "UDP"), &n), Ok(()));
    assert_eq!(filter(&with_port(None, 8081, "TCP"), &n), Ok(()));
    let wild = HostPort { ip: "0.0.0.0".into(), protocol: "TCP".into(), port: 1 };
    assert!(wild.conflicts(&HostPort { ip: "10.0.0.1".into(), protocol: "TCP".into(), port: 1 }));
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let empty = node("a", json!({}));
    let mut busy = node("b", json!({}));
    busy.add_pod(&with_requests("2", "4Gi"));
    let p = with_requests("1", "1Gi");
    let d = PodDemand::of(&p);
    assert!(scores::least_allocated(&d, &empty) > scores::least_allocated(&d, &busy));
    assert_eq!(scores::least_allocated(&d, &empty), (75 + 87) / 2);
    // Default requests count for pods that declare none, so they still spread.
    let mut with_idle = node("c", json!({}));
    with_idle.add_pod(&pod(json!({})));
    let none = PodDemand::of(&pod(json!({})));
    assert!(scores::least_allocated(&none, &node("d", json!({}))) > scores::least_allocated(&none, &with_idle));
}

fn owned(uid: &str) -> Pod {
    pod(
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]}}),
    )
}

#[test]
fn spread_prefers_nodes_with_fewer_pods_of_the_same_owner() {
    let mut a = node("a", json!({}));
    let mut b = node("b", json!({}));
    a.add_pod(&owned("u1"));
    a.add_pod(&owned("u1"));
    b.add_pod(&owned("u1"));
    b.add_pod(&owned("u2"));
    let d = PodDemand::of(&owned("u1"));
    assert_eq!(scores::spread(&d, &[&a, &b]), vec![0, 50]);
    assert_eq!(scores::spread(&PodDemand::of(&pod(json!({}))), &[&a, &b]), vec![100, 100]);
    assert_eq!(scores::spread(&PodDemand::of(&owned("u3")), &[&a, &b]), vec![100, 100]);
    // End to end: the pod lands on b although a was listed first.
    assert_eq!(schedule(&owned("u1"), &[a, b]), Ok("b".to_string()));
}

#[test]
fn prefer_no_schedule_scores_lower() {
    let tainted = node("a", json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}));
    let clean = node("b", json!({}));
    assert_eq!(scores::prefer_no_schedule(&pod(json!({})), &[&tainted, &clean]), vec![0, 100]);
    assert_eq!(schedule(&pod(json!({})), &[tainted, clean]), Ok("b".to_string()));
}

#[test]
fn unschedulable_message_has_the_go_form() {
    let small = json!({"status": {"allocatable": {"cpu": "4", "memory": "1Mi", "pods": "110"}}});
    let nodes = vec![
        node("a", small.clone()),
        node("b", small),
        node("c", json!({"spec": {"taints": [{"key": "key", "value": "value", "effect": "NoSchedule"}]}})),
    ];
    let err = schedule(&with_requests("100m", "1Gi"), &nodes).expect_err("nothing fits");
    assert_eq!(err.num_nodes, 3);
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient memory."
    );
    let sel = schedule(&pod(json!({"spec": {"nodeSelector": {"x": "y"}}})), &nodes[..2]).expect_err("no match");
    assert_eq!(sel.to_string(), "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.");
    let none = FitError { num_nodes: 0, reasons: Default::default() };
    assert_eq!(none.to_string(), "no nodes available to schedule pods");
}

#[test]
fn schedule_picks_a_feasible_node() {
    let nodes = vec![node("a", json!({"spec": {"unschedulable": true}})), node("b", json!({}))];
    assert_eq!(schedule(&pod(json!({})), &nodes), Ok("b".to_string()));
}

#[test]
fn feasible_nodes_to_find_follows_the_go_schedulers_percentage() {
    assert_eq!(feasible_nodes_to_find(0), 0);
    assert_eq!(feasible_nodes_to_find(99), 99, "small clusters: every node");
    assert_eq!(feasible_nodes_to_find(100), 100);
    assert_eq!(feasible_nodes_to_find(1000), 420, "50 - 8 = 42 %");
    assert_eq!(feasible_nodes_to_find(5000), 500, "50 - 40 = 10 %");
    assert_eq!(feasible_nodes_to_find(20_000), 1000, "at least 5 %");
    assert_eq!(feasible_nodes_to_find(150), 100, "never fewer than 100");
}

#[test]
fn a_bounded_search_walks_round_robin_and_still_reports_every_node_when_nothing_fits() {
    let nodes: Vec<NodeInfo> = (0..1000).map(|i| node(&format!("n{i:04}"), json!({}))).collect();
    let (choice, next) = schedule_from(&pod(json!({})), &nodes, 990);
    // 420 feasible wanted, starting at 990: n0990..n0999 then n0000..n0409.
    assert_eq!(next, 410);
    let chosen = choice.expect("fits");
    let idx: usize = chosen[1..].parse().expect("index");
    assert!(!(410..990).contains(&idx), "chosen among the searched nodes, got {chosen}");
    let (_, next) = schedule_from(&pod(json!({})), &nodes, next);
    assert_eq!(next, 830);

    let big =
        pod(json!({"spec": {"containers": [{"name": "c", "image": "a", "resources": {"requests": {"cpu": "64"}}}]}}));
    let (err, _) = schedule_from(&big, &nodes, 500);
    let err = err.expect_err("nothing fits");
    assert_eq!(err.num_nodes, 1000);
    assert_eq!(err.reasons.get("Insufficient cpu"), Some(&1000), "every node examined when too few fit");
}
