//! The OpenAPI 3.0 documents served under `/openapi/v3`: one per group-version, listed by an
//! index whose URLs carry a content hash (clients cache by it).
//!
//! `kubectl explain` and `kubectl apply`'s patch metadata read these; kubectl's
//! `QueryParamVerifierV3` checks the PATCH operation of a kind for a `fieldValidation` query
//! parameter before it leaves field validation to the server. Schemas follow the Go server's
//! v3 shape: a `$ref` with sibling keywords becomes `allOf: [{$ref}]` plus the siblings,
//! because OpenAPI 3.0 ignores siblings of a bare `$ref`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::paths::{self, Endpoint, Method, Operation, PATCH_TYPES};
use super::schemas::{Definitions, rewrite_refs};
use crate::registry::catalog::{RESOURCES, group_versions};

const PREFIX: &str = "#/components/schemas/";

/// The index key of a group-version: `api/v1` or `apis/<group>/<version>`.
pub(super) fn gv_key(group: &str, version: &str) -> String {
    paths::gv_prefix(group, version).trim_start_matches('/').to_owned()
}

/// Builds the document of every served group-version, keyed by [`gv_key`].
pub(super) fn documents(defs: &Definitions) -> BTreeMap<String, Value> {
    let endpoints = paths::endpoints();
    group_versions()
        .into_iter()
        .map(|(group, version)| {
            let key = gv_key(group, version);
            let prefix = format!("/{key}/");
            let eps: Vec<&Endpoint> = endpoints.iter().filter(|e| e.path.starts_with(&prefix)).collect();
            (key, document(defs, group, version, &eps))
        })
        .collect()
}

fn document(defs: &Definitions, group: &str, version: &str, eps: &[&Endpoint]) -> Value {
    // Roots: the kinds of this group-version and every type its operations name.
    let mut roots: Vec<String> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let name = r.codec.schema_name();
            [format!("{name}List"), name]
        })
        .collect();
    for op in eps.iter().flat_map(|e| &e.ops) {
        roots.extend(op.body.iter().cloned());
        roots.push(op.response.clone());
    }
    let mut schemas = Map::new();
    for name in defs.reachable(roots.iter().map(String::as_str)) {
        if let Some(schema) = defs.map.get(&name) {
            let mut schema = schema.clone();
            wrap_ref_siblings(&mut schema);
            rewrite_refs(&mut schema, PREFIX);
            schemas.insert(name, schema);
        }
    }
    let mut paths = Map::new();
    for ep in eps {
        paths.insert(ep.path.clone(), path_item(ep));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// Turns `{"$ref": R, "description": D, ...}` into `{"allOf": [{"$ref": R}], "description": D, ...}`
/// throughout a schema.
fn wrap_ref_siblings(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if obj.len() > 1
                && let Some(r) = obj.remove("$ref")
            {
                obj.insert("allOf".into(), json!([{"$ref": r}]));
            }
            obj.values_mut().for_each(wrap_ref_siblings);
        }
        Value::Array(items) => items.iter_mut().for_each(wrap_ref_siblings),
        _ => {}
    }
}

fn path_item(ep: &Endpoint) -> Value {
    let mut item = Map::new();
    for op in &ep.ops {
        item.insert(op.method.as_str().into(), operation(op));
    }
    let params: Vec<Value> = ep
        .path_params
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": paths::path_param_description(name),
                "schema": {"type": "string", "uniqueItems": true},
            })
        })
        .collect();
    if !params.is_empty() {
        item.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(item)
}

fn content(types: &[&str], schema_name: &str) -> Value {
    let schema = json!({"$ref": format!("{PREFIX}{schema_name}")});
    Value::Object(types.iter().map(|t| ((*t).to_owned(), json!({"schema": schema.clone()}))).collect())
}

fn operation(op: &Operation) -> Value {
    let params: Vec<Value> = op
        .query
        .iter()
        .map(|q| {
            json!({
                "name": q.name,
                "in": "query",
                "description": q.description,
                "schema": {"type": q.ty, "uniqueItems": true},
            })
        })
        .collect();
    let mut out = json!({
        "description": op.description,
        "operationId": op.id,
        "parameters": params,
        "responses": {
            "200": {
                "description": "OK",
                "content": content(&["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"], &op.response),
            },
            "401": {"description": "Unauthorized"},
        },
    });
    let Some(obj) = out.as_object_mut() else { return out };
    if let Some(body) = &op.body {
        let types: &[&str] = if op.method == Method::Patch { PATCH_TYPES } else { &["*/*"] };
        obj.insert(
            "requestBody".into(),
            json!({"content": content(types, body), "required": op.method != Method::Delete}),
        );
    }
    for (k, v) in paths::operation_extensions(op) {
        obj.insert(k.into(), v);
    }
    out
}

/// The `/openapi/v3` index: each group-version's relative URL with its content hash.
pub(super) fn index(hashes: &BTreeMap<String, String>) -> Value {
    let paths: Map<String, Value> = hashes
        .iter()
        .map(|(key, hash)| (key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")})))
        .collect();
    json!({"paths": paths})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_document_has_components_and_field_validation() {
        let docs = documents(&Definitions::generate());
        let apps = docs.get("apis/apps/v1").expect("apps/v1 document");
        let deployment = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deployment["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert_eq!(
            deployment["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(apps["components"]["schemas"].get("io.k8s.api.core.v1.PodSpec").is_some());
        assert!(apps["components"]["schemas"].get("io.k8s.api.core.v1.Pod").is_none());
        let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
        assert!(docs.contains_key("api/v1"));
        assert!(!apps.to_string().contains("#/$defs/"));
    }
}
