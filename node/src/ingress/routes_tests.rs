//! Route matching and precedence (Kubernetes' Ingress path and host semantics).

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::routes::{PortRef, RouteTable, ServiceRef, normalize_host};

fn path(p: &str, kind: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": kind, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
}

fn ingress(name: &str, created: &str, spec: Value) -> Ingress {
    let mut ing: Ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("valid ingress");
    ing.metadata.creation_timestamp = Some(Time(created.parse().expect("timestamp")));
    ing
}

/// The Service name a request goes to, `None` for a 404.
fn svc(table: &RouteTable, host: &str, p: &str) -> Option<String> {
    table.route(host, p).map(|t| t.service.as_ref().map_or("<none>".into(), |s| s.name.clone()))
}

fn one(spec: Value) -> RouteTable {
    RouteTable::build([&ingress("a", "2026-01-01T00:00:00Z", spec)])
}

#[test]
fn prefix_matches_whole_path_elements() {
    let t = one(json!({"rules": [{"http": {"paths": [path("/foo", "Prefix", "foo")]}}]}));
    assert_eq!(svc(&t, "x", "/foo").as_deref(), Some("foo"));
    assert_eq!(svc(&t, "x", "/foo/").as_deref(), Some("foo"));
    assert_eq!(svc(&t, "x", "/foo/bar").as_deref(), Some("foo"));
    assert_eq!(svc(&t, "x", "/foobar"), None);
    assert_eq!(svc(&t, "x", "/"), None);
}

#[test]
fn prefix_with_trailing_slash_matches_without_it() {
    let t = one(json!({"rules": [{"http": {"paths": [path("/foo/", "Prefix", "foo")]}}]}));
    assert_eq!(svc(&t, "x", "/foo").as_deref(), Some("foo"));
    assert_eq!(svc(&t, "x", "/foo/x").as_deref(), Some("foo"));
}

#[test]
fn root_prefix_matches_everything() {
    let t = one(json!({"rules": [{"http": {"paths": [path("/", "Prefix", "root")]}}]}));
    assert_eq!(svc(&t, "x", "/").as_deref(), Some("root"));
    assert_eq!(svc(&t, "x", "/any/thing").as_deref(), Some("root"));
}

#[test]
fn exact_is_exact() {
    let t = one(json!({"rules": [{"http": {"paths": [path("/foo", "Exact", "foo")]}}]}));
    assert_eq!(svc(&t, "x", "/foo").as_deref(), Some("foo"));
    assert_eq!(svc(&t, "x", "/foo/"), None);
    assert_eq!(svc(&t, "x", "/foo/bar"), None);
}

#[test]
fn implementation_specific_is_prefix() {
    let t = one(json!({"rules": [{"http": {"paths": [path("/api", "ImplementationSpecific", "api")]}}]}));
    assert_eq!(svc(&t, "x", "/api/v1").as_deref(), Some("api"));
    assert_eq!(svc(&t, "x", "/apis"), None);
}

#[test]
fn longest_match_wins_then_exact_before_prefix() {
    let t = one(json!({"rules": [{"http": {"paths": [
        path("/", "Prefix", "root"),
        path("/aaa", "Prefix", "short"),
        path("/aaa/bbb", "Prefix", "long"),
        path("/aaa/bbb", "Exact", "exact"),
    ]}}]}));
    assert_eq!(svc(&t, "x", "/aaa/bbb").as_deref(), Some("exact"));
    assert_eq!(svc(&t, "x", "/aaa/bbb/c").as_deref(), Some("long"));
    assert_eq!(svc(&t, "x", "/aaa/bbbb").as_deref(), Some("short"));
    assert_eq!(svc(&t, "x", "/aaa").as_deref(), Some("short"));
    assert_eq!(svc(&t, "x", "/zzz").as_deref(), Some("root"));
}

#[test]
fn exact_host_before_wildcard_before_any_host() {
    let t = one(json!({"rules": [
        {"http": {"paths": [path("/", "Prefix", "any")]}},
        {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
        {"host": "a.example.com", "http": {"paths": [path("/", "Prefix", "a")]}},
    ]}));
    assert_eq!(svc(&t, "a.example.com", "/").as_deref(), Some("a"));
    assert_eq!(svc(&t, "b.example.com", "/").as_deref(), Some("wild"));
    // A wildcard covers one label only.
    assert_eq!(svc(&t, "c.b.example.com", "/").as_deref(), Some("any"));
    assert_eq!(svc(&t, "example.com", "/").as_deref(), Some("any"));
}

#[test]
fn host_is_normalised() {
    let t = one(json!({"rules": [{"host": "web.example.com", "http": {"paths": [path("/", "Prefix", "web")]}}]}));
    assert_eq!(svc(&t, "WEB.Example.com:8443", "/").as_deref(), Some("web"));
    assert_eq!(svc(&t, "web.example.com.", "/").as_deref(), Some("web"));
    assert_eq!(svc(&t, "other.example.com", "/"), None);
    assert_eq!(normalize_host("[::1]:80"), "::1");
    assert_eq!(normalize_host("10.0.0.1"), "10.0.0.1");
}

#[test]
fn unmatched_host_path_falls_through_to_host_less_rules_then_default() {
    let t = one(json!({
        "defaultBackend": {"service": {"name": "fallback", "port": {"number": 8080}}},
        "rules": [
            {"host": "a.example.com", "http": {"paths": [path("/api", "Prefix", "api")]}},
            {"http": {"paths": [path("/static", "Prefix", "static")]}},
        ]
    }));
    assert_eq!(svc(&t, "a.example.com", "/api").as_deref(), Some("api"));
    assert_eq!(svc(&t, "a.example.com", "/static/x").as_deref(), Some("static"));
    assert_eq!(svc(&t, "a.example.com", "/other").as_deref(), Some("fallback"));
    assert_eq!(svc(&t, "b.example.com", "/").as_deref(), Some("fallback"));
}

#[test]
fn older_ingress_wins_a_conflict_whatever_the_order_given() {
    let spec = |s: &str| json!({"rules": [{"host": "h", "http": {"paths": [path("/", "Prefix", s)]}}]});
    let old = ingress("zzz-old", "2026-01-01T00:00:00Z", spec("old"));
    let new = ingress("aaa-new", "2026-02-01T00:00:00Z", spec("new"));
    assert_eq!(svc(&RouteTable::build([&new, &old]), "h", "/").as_deref(), Some("old"));
    assert_eq!(svc(&RouteTable::build([&old, &new]), "h", "/").as_deref(), Some("old"));
}

#[test]
fn rules_of_several_ingresses_merge_by_host() {
    let a = ingress(
        "a",
        "2026-01-01T00:00:00Z",
        json!({"rules": [{"host": "h", "http": {"paths": [path("/a", "Prefix", "a")]}}]}),
    );
    let b = ingress(
        "b",
        "2026-01-02T00:00:00Z",
        json!({"rules": [{"host": "h", "http": {"paths": [path("/b", "Prefix", "b")]}}]}),
    );
    let t = RouteTable::build([&a, &b]);
    assert_eq!(svc(&t, "h", "/a").as_deref(), Some("a"));
    assert_eq!(svc(&t, "h", "/b").as_deref(), Some("b"));
    assert_eq!(t.route("h", "/b").map(|t| t.ingress.as_str()), Some("default/b"));
}

#[test]
fn port_by_name_or_number_and_unservable_backends() {
    let t = one(json!({"rules": [{"http": {"paths": [
        {"path": "/named", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"name": "web"}}}},
        {"path": "/numbered", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 8080}}}},
        {"path": "/resource", "pathType": "Prefix", "backend": {"resource": {"kind": "Bucket", "name": "b"}}},
    ]}}]}));
    let port = |p: &str| t.route("x", p).and_then(|t| t.service.as_ref()).map(|s| s.port.clone());
    assert_eq!(port("/named"), Some(PortRef::Name("web".into())));
    assert_eq!(port("/numbered"), Some(PortRef::Number(8080)));
    assert_eq!(svc(&t, "x", "/resource").as_deref(), Some("<none>"));
    let services = t.services();
    assert_eq!(services.len(), 2);
    assert!(services.contains(&&ServiceRef {
        namespace: "default".into(),
        name: "s".into(),
        port: PortRef::Number(8080)
    }));
}

#[test]
fn nothing_matches_without_rules() {
    let t = RouteTable::default();
    assert!(t.route("x", "/").is_none());
}
