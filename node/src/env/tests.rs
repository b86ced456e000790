use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodStatus, ResourceFieldSelector, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| map.get(name).cloned()
}

#[test]
fn expansion_follows_kubernetes() {
    let vars = lookup(&[("A", "alpha"), ("B", "b$(A)")]);
    assert_eq!(expand("x-$(A)-y", &vars), "x-alpha-y");
    assert_eq!(expand("$(A)$(A)", &vars), "alphaalpha");
    // Values are not expanded again.
    assert_eq!(expand("$(B)", &vars), "b$(A)");
    assert_eq!(expand("$(MISSING)", &vars), "$(MISSING)");
    assert_eq!(expand("$$(A)", &vars), "$(A)");
    assert_eq!(expand("$$$(A)", &vars), "$alpha");
    assert_eq!(expand("cost: $5 $", &vars), "cost: $5 $");
    assert_eq!(expand("$(A", &vars), "$(A");
    assert_eq!(expand("$()", &vars), "$()");
    assert_eq!(expand("ü$ü$(A)", &vars), "ü$üalpha");
}

#[test]
fn env_name_rule() {
    for ok in ["A", "_x", "a.b-c_9", "-dash", ".dot"] {
        assert!(is_valid_env_name(ok), "{ok}");
    }
    for bad in ["", "1abc", "a b", "a=b", "ü"] {
        assert!(!is_valid_env_name(bad), "{bad}");
    }
}

#[test]
fn env_list_replaces_in_place() {
    let mut env = EnvList::default();
    env.set("A".into(), "1".into());
    env.set("B".into(), "2".into());
    env.set("A".into(), "3".into());
    assert_eq!(env.vars, vec![("A".to_string(), "3".to_string()), ("B".to_string(), "2".to_string())]);
}

fn pod() -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some("web".into());
    pod.metadata.namespace = Some("team".into());
    pod.metadata.uid = Some("u-1".into());
    pod.metadata.labels =
        Some(BTreeMap::from([("app".to_string(), "web".to_string()), ("tier".to_string(), "front".to_string())]));
    pod.metadata.annotations = Some(BTreeMap::from([("note".to_string(), "hi".to_string())]));
    pod.spec = Some(PodSpec {
        node_name: Some("node-a".into()),
        service_account_name: Some("sa".into()),
        ..Default::default()
    });
    pod.status = Some(PodStatus { host_ip: Some("10.0.0.5".into()), ..Default::default() });
    pod
}

#[test]
fn field_refs() {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 244, 1, 7));
    let p = pod();
    let f = |path: &str| field_value(&p, path, ip);
    assert_eq!(f("metadata.name").as_deref(), Ok("web"));
    assert_eq!(f("metadata.namespace").as_deref(), Ok("team"));
    assert_eq!(f("metadata.uid").as_deref(), Ok("u-1"));
    assert_eq!(f("metadata.labels['tier']").as_deref(), Ok("front"));
    assert_eq!(f("metadata.labels['absent']").as_deref(), Ok(""));
    assert_eq!(f("metadata.annotations['note']").as_deref(), Ok("hi"));
    assert_eq!(f("metadata.labels").as_deref(), Ok("app=\"web\"\ntier=\"front\"\n"));
    assert_eq!(f("spec.nodeName").as_deref(), Ok("node-a"));
    assert_eq!(f("spec.serviceAccountName").as_deref(), Ok("sa"));
    assert_eq!(f("status.podIP").as_deref(), Ok("127.244.1.7"));
    assert_eq!(f("status.podIPs").as_deref(), Ok("127.244.1.7"));
    assert_eq!(f("status.hostIP").as_deref(), Ok("10.0.0.5"));
    assert!(f("spec.bogus").is_err());
}

#[test]
fn resource_refs() {
    let container = Container {
        name: "c".into(),
        resources: Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("250m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            requests: Some(BTreeMap::from([("memory".to_string(), Quantity("32Mi".into()))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = NodeCapacity { cpu_millis: 4000, memory_bytes: 8 << 30 };
    let sel = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
        resource: resource.into(),
        divisor: divisor.map(|d| Quantity(d.into())),
        container_name: None,
    };
    assert_eq!(resource_value(&container, &sel("limits.cpu", None), node).as_deref(), Ok("1"));
    assert_eq!(resource_value(&container, &sel("limits.cpu", Some("1m")), node).as_deref(), Ok("250"));
    assert_eq!(resource_value(&container, &sel("limits.memory", None), node).as_deref(), Ok("67108864"));
    assert_eq!(resource_value(&container, &sel("limits.memory", Some("1Mi")), node).as_deref(), Ok("64"));
    assert_eq!(resource_value(&container, &sel("requests.memory", Some("1Mi")), node).as_deref(), Ok("32"));
    let bare = Container { name: "c".into(), ..Default::default() };
    assert_eq!(resource_value(&bare, &sel("limits.cpu", None), node).as_deref(), Ok("4"));
    assert_eq!(resource_value(&bare, &sel("limits.memory", Some("1Gi")), node).as_deref(), Ok("8"));
}
