//! Discovery: `/version`, `/api`, `/apis`, and the per-group-version resource lists, built
//! from the catalog. Served in the legacy (unaggregated) form, which kubectl falls back to
//! when the response is not an aggregated `APIGroupDiscoveryList`.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::SharedState;
use super::error::ApiError;
use crate::registry::catalog::{self, RESOURCES, ResourceInfo};

/// The Kubernetes minor version whose API (k8s-openapi `v1_33`) Skiff serves.
pub const KUBE_MINOR: &str = "33";

pub async fn healthy() -> &'static str {
    "ok"
}

pub async fn version() -> Json<Value> {
    Json(json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    }))
}

/// The architecture in Go's spelling, which clients expect.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn core_versions(State(state): State<SharedState>) -> Json<Value> {
    Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.advertise}],
    }))
}

fn group_json(group: &str) -> Value {
    let versions: Vec<Value> = catalog::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub async fn groups() -> Json<Value> {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in catalog::group_versions() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    let groups: Vec<Value> = names.into_iter().map(group_json).collect();
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

pub async fn group(Path(group): Path<String>) -> Response {
    if !RESOURCES.iter().any(|r| r.group == group) {
        return ApiError::NoRoute.into_response();
    }
    let mut g = group_json(&group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Json(g).into_response()
}

pub async fn core_resources() -> Response {
    resource_list("", "v1")
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    resource_list(&group, &version)
}

const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "binding" | "eviction" => &["create"],
        "finalize" => &["update"],
        "log" => &["get"],
        "exec" | "portforward" | "attach" | "proxy" => &["create", "get"],
        _ => &["get", "patch", "update"],
    }
}

fn resource_json(r: &ResourceInfo) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
        "shortNames": r.short_names,
        "categories": r.categories,
    })];
    for sub in r.subresources {
        let (group, version, kind) = match *sub {
            "scale" => ("autoscaling", "v1", "Scale"),
            "binding" => ("", "v1", "Binding"),
            "eviction" => ("policy", "v1", "Eviction"),
            _ => (r.group, r.version, r.kind),
        };
        let mut v = json!({
            "name": format!("{}/{sub}", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": kind,
            "verbs": subresource_verbs(sub),
        });
        if (group, version) != (r.group, r.version) {
            v["group"] = json!(group);
            v["version"] = json!(version);
        }
        out.push(v);
    }
    out
}

fn resource_list(group: &str, version: &str) -> Response {
    let resources: Vec<Value> =
        RESOURCES.iter().filter(|r| r.group == group && r.version == version).flat_map(resource_json).collect();
    if resources.is_empty() {
        return ApiError::NoRoute.into_response();
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Json(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
        .into_response()
}
