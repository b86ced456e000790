//! The routing table from Services and EndpointSlices (pure; the balancer's own tests are in
//! `balance`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::table::{self, Frontend, Kind, Placement, Protocol, Skipped};

fn service(name: &str, spec: Value) -> Arc<Service> {
    Arc::new(
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}))
            .expect("service"),
    )
}

/// A slice of `service` with `(ip, ready, serving, terminating)` endpoints and `ports`.
fn slice(
    name: &str,
    service: &str,
    ports: Value,
    endpoints: &[(&str, Option<bool>, bool, bool)],
) -> Arc<EndpointSlice> {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, serving, terminating)| {
            json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
        })
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
        }))
        .expect("slice"),
    )
}

fn bridge() -> Placement {
    Placement {
        local_service_cidr: Some("10.96.0.0/16".parse().expect("cidr")),
        node_ip: IpAddr::from([192, 168, 1, 5]),
        node_port_ip: IpAddr::from(Ipv4Addr::UNSPECIFIED),
    }
}

fn tcp(addr: &str) -> Frontend {
    Frontend { protocol: Protocol::Tcp, addr: addr.parse().expect("addr") }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().expect("addr")).collect()
}

#[test]
fn ready_endpoints_behind_the_cluster_ip_with_the_named_port() {
    let svc = service(
        "web",
        json!({"clusterIP": "10.96.0.20", "ports": [
        {"name": "http", "port": 80, "targetPort": "web"}, {"name": "admin", "port": 9000}]}),
    );
    let slices = [
        slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "admin", "port": 9001}]),
            &[
                ("10.244.0.3", Some(true), true, false),
                ("10.244.0.2", None, true, false),
                ("10.244.0.4", Some(false), false, false),
            ],
        ),
        slice("web-b", "web", json!([{"name": "http", "port": 8081}]), &[("10.244.0.9", Some(true), true, false)]),
        slice("other", "other", json!([{"name": "http", "port": 1}]), &[("10.244.0.7", Some(true), true, false)]),
    ];
    let table = table::build(&[svc], &slices, &[], &bridge());
    let http = &table.routes[&tcp("10.96.0.20:80")];
    assert_eq!(http.kind, Kind::ClusterIp);
    assert_eq!(http.service, "default/web:http");
    assert_eq!(http.backends, addrs(&["10.244.0.2:8080", "10.244.0.3:8080", "10.244.0.9:8081"]));
    assert_eq!(http.affinity, None);
    assert_eq!(table.routes[&tcp("10.96.0.20:9000")].backends, addrs(&["10.244.0.2:9001", "10.244.0.3:9001"]));
    assert!(table.skipped.is_empty(), "{:?}", table.skipped);
}

#[test]
fn no_ready_endpoint_falls_back_to_serving_terminating_ones() {
    let svc = service("web", json!({"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}));
    let slices = [slice(
        "web-a",
        "web",
        json!([{"port": 8080}]),
        &[("10.244.0.3", Some(false), true, true), ("10.244.0.4", Some(false), false, false)],
    )];
    let table = table::build(std::slice::from_ref(&svc), &slices, &[], &bridge());
    assert_eq!(table.routes[&tcp("10.96.0.20:80")].backends, addrs(&["10.244.0.3:8080"]));

    // None at all: the frontend is still in the table, with no backend (it refuses).
    let table = table::build(&[svc], &[], &[], &bridge());
    assert!(table.routes[&tcp("10.96.0.20:80")].backends.is_empty());
}

#[test]
fn node_ports_and_load_balancer_ports() {
    let svc = service(
        "lb",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.30",
        "ports": [{"port": 8088, "nodePort": 30080}]}),
    );
    let np = service(
        "np",
        json!({"type": "NodePort", "clusterIP": "10.96.0.31",
        "ports": [{"port": 80, "nodePort": 30081, "protocol": "UDP"}]}),
    );
    let table = table::build(&[svc, np], &[], &[], &bridge());
    let kinds: Vec<(Frontend, Kind)> = table.routes.iter().map(|(f, r)| (*f, r.kind)).collect();
    let udp = |a: &str| Frontend { protocol: Protocol::Udp, addr: a.parse().expect("addr") };
    assert_eq!(
        kinds,
        vec![
            (tcp("0.0.0.0:30080"), Kind::NodePort),
            (tcp("10.96.0.30:8088"), Kind::ClusterIp),
            (tcp("192.168.1.5:8088"), Kind::LoadBalancer),
            (udp("0.0.0.0:30081"), Kind::NodePort),
            (udp("10.96.0.31:80"), Kind::ClusterIp),
        ]
    );
}

#[test]
fn affinity_timeout_defaults_to_three_hours() {
    let a = service("a", json!({"clusterIP": "10.96.0.40", "sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
    let b = service(
        "b",
        json!({"clusterIP": "10.96.0.41", "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}),
    );
    let table = table::build(&[a, b], &[], &[], &bridge());
    assert_eq!(table.routes[&tcp("10.96.0.40:80")].affinity, Some(Duration::from_secs(10800)));
    assert_eq!(table.routes[&tcp("10.96.0.41:80")].affinity, Some(Duration::from_secs(60)));
}

#[test]
fn what_is_not_served_and_why() {
    let headless = service("headless", json!({"clusterIP": "None", "ports": [{"port": 80}]}));
    let external = service("ext", json!({"type": "ExternalName", "externalName": "example.com"}));
    let far = service("far", json!({"clusterIP": "10.96.0.50", "ports": [{"port": 80}]}));
    let loopback = Placement {
        local_service_cidr: None,
        node_ip: IpAddr::from([127, 0, 0, 1]),
        node_port_ip: IpAddr::from([127, 0, 0, 1]),
    };
    let table = table::build(&[headless, external, far], &[], &[], &loopback);
    assert!(table.routes.is_empty(), "{:?}", table.routes);
    assert_eq!(
        table.skipped,
        vec![Skipped::NotLocal { service: "default/far:80".into(), ip: IpAddr::from([10, 96, 0, 50]) }]
    );
    assert!(table.skipped[0].to_string().contains("loopback"), "{}", table.skipped[0]);
}

#[test]
fn a_taken_frontend_stays_with_the_first_service() {
    let a = service(
        "a",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.60", "ports": [{"port": 80, "nodePort": 30001}]}),
    );
    let b = service(
        "b",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.61", "ports": [{"port": 80, "nodePort": 30002}]}),
    );
    let table = table::build(&[b, a], &[], &[], &bridge());
    assert_eq!(table.routes[&tcp("192.168.1.5:80")].service, "default/a:80");
    assert_eq!(
        table.skipped,
        vec![Skipped::Taken {
            service: "default/b:80".into(),
            frontend: tcp("192.168.1.5:80"),
            by: "default/a:80".into(),
        }]
    );
}

#[test]
fn routing_follows_one_service_at_a_time_and_hands_a_taken_frontend_on() {
    use super::routing::Routing;
    let lb = |name: &str, ip: &str| {
        service(name, json!({"type": "LoadBalancer", "clusterIP": ip, "ports": [{"port": 80, "nodePort": 0}]}))
    };
    let routes = |svc: &Service| table::service_routes(svc, &[], &[], &bridge());
    let key = |name: &str| ("default".to_owned(), name.to_owned());
    let (a, b) = (lb("a", "10.96.0.70"), lb("b", "10.96.0.71"));
    let mut routing = Routing::default();
    assert_eq!(routing.set(key("b"), routes(&b)), [tcp("10.96.0.71:80"), tcp("192.168.1.5:80")]);
    assert_eq!(routing.route(&tcp("192.168.1.5:80")).expect("b serves").service, "default/b:80");
    assert_eq!(routing.set(key("a"), routes(&a)), [tcp("10.96.0.70:80"), tcp("192.168.1.5:80")]);
    assert_eq!(routing.route(&tcp("192.168.1.5:80")).expect("a serves").service, "default/a:80", "first by name");
    assert!(matches!(routing.skipped(&key("b"))[..], [Skipped::Taken { .. }]));
    assert!(routing.set(key("b"), routes(&b)).is_empty(), "nothing changed, nothing touched");
    assert_eq!(routing.set(key("a"), table::ServiceRoutes::default()), [tcp("10.96.0.70:80"), tcp("192.168.1.5:80")]);
    assert_eq!(routing.route(&tcp("192.168.1.5:80")).expect("b again").service, "default/b:80");
    assert!(routing.route(&tcp("10.96.0.70:80")).is_none());
    assert!(routing.skipped(&key("b")).is_empty());
    assert_eq!(routing.keys().count(), 1, "a Service without frontends is forgotten");
}
