//! The Swagger 2.0 document served at `/openapi/v2`.
//!
//! kubectl reads it (as protobuf, see [`super::v2_proto`]) for client-side `apply` validation
//! and patch metadata, and its v2 `fieldValidation` query-parameter check. Definitions keep
//! `$ref` with sibling `description`s as the Go server emits them; operations list their
//! parameters inline.

use serde_json::{Map, Value, json};

use super::paths::{self, Endpoint, Method, Operation, PATCH_TYPES};
use super::schemas::{Definitions, rewrite_refs};

const PREFIX: &str = "#/definitions/";

/// Builds the whole Swagger document.
pub(super) fn document(defs: &Definitions) -> Value {
    let mut definitions = Value::Object(defs.map.clone());
    rewrite_refs(&mut definitions, PREFIX);
    let mut paths = Map::new();
    for ep in paths::endpoints() {
        paths.insert(ep.path.clone(), path_item(&ep));
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "definitions": definitions,
    })
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
                "type": "string",
                "uniqueItems": true,
                "description": paths::path_param_description(name),
            })
        })
        .collect();
    if !params.is_empty() {
        item.insert("parameters".into(), Value::Array(params));
    }
    Value::Object(item)
}

fn operation(op: &Operation) -> Value {
    let mut params: Vec<Value> = Vec::new();
    if let Some(body) = &op.body {
        params.push(json!({
            "name": "body",
            "in": "body",
            "required": op.method != Method::Delete,
            "schema": {"$ref": format!("{PREFIX}{body}")},
        }));
    }
    for q in &op.query {
        params.push(json!({
            "name": q.name,
            "in": "query",
            "type": q.ty,
            "uniqueItems": true,
            "description": q.description,
        }));
    }
    let consumes: Vec<&str> = if op.method == Method::Patch { PATCH_TYPES.to_vec() } else { vec!["*/*"] };
    let mut out = json!({
        "description": op.description,
        "operationId": op.id,
        "consumes": consumes,
        "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
        "schemes": ["https"],
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "schema": {"$ref": format!("{PREFIX}{}", op.response)}},
            "401": {"description": "Unauthorized"},
        },
    });
    if let Some(obj) = out.as_object_mut() {
        for (k, v) in paths::operation_extensions(op) {
            obj.insert(k.into(), v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_definitions_paths_and_v2_refs() {
        let doc = document(&Definitions::generate());
        assert_eq!(doc["swagger"], "2.0");
        let spec = &doc["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"];
        assert_eq!(spec["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        let names: Vec<&str> =
            patch["parameters"].as_array().expect("params").iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(names.contains(&"fieldValidation") && names.contains(&"dryRun"), "{names:?}");
        assert!(!doc.to_string().contains("#/$defs/"));
    }
}
