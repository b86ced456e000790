//! The REST operations each served resource offers, described once in a document-neutral form
//! and rendered by both the Swagger 2.0 and the OpenAPI 3.0 documents.
//!
//! Mirrors what the Go API server publishes for a resource: list/create/delete-collection on
//! the collection, get/replace/patch/delete on the item, list across namespaces, and the
//! `status`/`scale` subresources. Every operation carries `x-kubernetes-action` and the
//! `x-kubernetes-group-version-kind` of its body — kubectl's query-parameter verifiers find
//! the PATCH operation of a kind by that extension and look for `fieldValidation` on it.

use serde_json::{Value, json};

use super::schemas::{DELETE_OPTIONS, PATCH, SCALE, STATUS};
use crate::registry::catalog::{RESOURCES, ResourceInfo};

/// HTTP method of an operation; `as_str` is the lower-case key both documents use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Post => "post",
            Method::Delete => "delete",
            Method::Patch => "patch",
        }
    }
}

/// A query parameter: name, primitive type, description.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryParam {
    pub name: &'static str,
    pub ty: &'static str,
    pub description: &'static str,
}

const fn q(name: &'static str, ty: &'static str, description: &'static str) -> QueryParam {
    QueryParam { name, ty, description }
}

const PRETTY: QueryParam = q("pretty", "string", "If 'true', then the output is pretty printed.");
const DRY_RUN: QueryParam = q(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
);
const FIELD_MANAGER: QueryParam = q(
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: QueryParam = q(
    "fieldValidation",
    "string",
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict",
);
const FORCE: QueryParam = q(
    "force",
    "boolean",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
);

const LIST_PARAMS: &[QueryParam] = &[
    q("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    q("continue", "string", "The continue option should be set when retrieving more results from the server."),
    q(
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
    ),
    q(
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
    ),
    q("limit", "integer", "limit is a maximum number of responses to return for a list call."),
    q(
        "resourceVersion",
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    q(
        "resourceVersionMatch",
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    q("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`."),
    q("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    q(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
    PRETTY,
];
const WRITE_PARAMS: &[QueryParam] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, PRETTY];
const PATCH_PARAMS: &[QueryParam] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE, PRETTY];
const DELETE_PARAMS: &[QueryParam] = &[
    DRY_RUN,
    q("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
    q("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy."),
    q("propagationPolicy", "string", "Whether and how garbage collection will be performed."),
    PRETTY,
];

/// Content types a PATCH accepts.
pub(super) const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// One operation on a path.
#[derive(Debug, Clone)]
pub(super) struct Operation {
    pub method: Method,
    pub id: String,
    pub description: String,
    /// `x-kubernetes-action` (`list`, `get`, `post`, `put`, `patch`, `delete`, `deletecollection`).
    pub action: &'static str,
    pub query: Vec<QueryParam>,
    /// Definition name of the request body, if any.
    pub body: Option<String>,
    /// Definition name of the 200 response.
    pub response: String,
    /// `x-kubernetes-group-version-kind` of the operation (an object, not a list).
    pub gvk: Value,
}

/// One path and its operations.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub path: String,
    /// Path parameters in order of appearance (`namespace`, `name`).
    pub path_params: Vec<&'static str>,
    pub ops: Vec<Operation>,
}

/// The endpoints of every served resource.
pub(super) fn endpoints() -> Vec<Endpoint> {
    RESOURCES.iter().flat_map(resource_endpoints).collect()
}

/// The `/api/v1` or `/apis/<group>/<version>` prefix of a resource.
pub(super) fn gv_prefix(group: &str, version: &str) -> String {
    if group.is_empty() { format!("/api/{version}") } else { format!("/apis/{group}/{version}") }
}

fn resource_endpoints(r: &'static ResourceInfo) -> Vec<Endpoint> {
    let prefix = gv_prefix(r.group, r.version);
    let (collection, mut params, scope) = if r.namespaced {
        (format!("{prefix}/namespaces/{{namespace}}/{}", r.plural), vec!["namespace"], "Namespaced")
    } else {
        (format!("{prefix}/{}", r.plural), vec![], "")
    };
    let id = |verb: &str, sub: &str| format!("{verb}{}{scope}{}{sub}", gv_camel(r), r.kind);
    let kind_name = r.codec.schema_name();
    let gvk = super::schemas::gvk(r);
    let op = |method, verb: &str, action, query: &[QueryParam], body: Option<&str>, response: &str| Operation {
        method,
        id: id(verb, ""),
        description: format!("{verb} {}", r.kind),
        action,
        query: query.to_vec(),
        body: body.map(str::to_owned),
        response: response.to_owned(),
        gvk: gvk.clone(),
    };
    let list = format!("{kind_name}List");
    let mut out = vec![Endpoint {
        path: collection.clone(),
        path_params: params.clone(),
        ops: vec![
            op(Method::Get, "list", "list", LIST_PARAMS, None, &list),
            op(Method::Post, "create", "post", WRITE_PARAMS, Some(&kind_name), &kind_name),
            Operation {
                query: [DELETE_PARAMS, LIST_PARAMS].concat(),
                ..op(Method::Delete, "deleteCollection", "deletecollection", &[], Some(DELETE_OPTIONS), STATUS)
            },
        ],
    }];
    params.push("name");
    out.push(Endpoint {
        path: format!("{collection}/{{name}}"),
        path_params: params.clone(),
        ops: vec![
            op(Method::Get, "read", "get", &[PRETTY], None, &kind_name),
            op(Method::Put, "replace", "put", WRITE_PARAMS, Some(&kind_name), &kind_name),
            op(Method::Patch, "patch", "patch", PATCH_PARAMS, Some(PATCH), &kind_name),
            op(Method::Delete, "delete", "delete", DELETE_PARAMS, Some(DELETE_OPTIONS), &kind_name),
        ],
    });
    for (sub, sub_camel, ty, sub_gvk) in [
        ("status", "Status", kind_name.as_str(), gvk.clone()),
        ("scale", "Scale", SCALE, serde_json::json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})),
    ] {
        if !r.has_subresource(sub) {
            continue;
        }
        let sub_op = |method, verb: &str, action, query: &[QueryParam], body: Option<&str>| Operation {
            id: id(verb, sub_camel),
            gvk: sub_gvk.clone(),
            ..op(method, verb, action, query, body, ty)
        };
        out.push(Endpoint {
            path: format!("{collection}/{{name}}/{sub}"),
            path_params: params.clone(),
            ops: vec![
                sub_op(Method::Get, "read", "get", &[PRETTY], None),
                sub_op(Method::Put, "replace", "put", WRITE_PARAMS, Some(ty)),
                sub_op(Method::Patch, "patch", "patch", PATCH_PARAMS, Some(PATCH)),
            ],
        });
    }
    if r.namespaced {
        out.push(Endpoint {
            path: format!("{prefix}/{}", r.plural),
            path_params: vec![],
            ops: vec![Operation {
                id: format!("list{}{}ForAllNamespaces", gv_camel(r), r.kind),
                ..op(Method::Get, "list", "list", LIST_PARAMS, None, &list)
            }],
        });
    }
    out
}

/// `CoreV1`, `AppsV1`, `NetworkingV1` — the Go server's operation-id infix.
fn gv_camel(r: &ResourceInfo) -> String {
    let group = if r.group.is_empty() { "core" } else { r.group.split('.').next().unwrap_or(r.group) };
    format!("{}{}", capitalize(group), capitalize(r.version))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The description of a path parameter.
pub(super) fn path_param_description(name: &str) -> &'static str {
    match name {
        "namespace" => "object name and auth scope, such as for teams and projects",
        _ => "name of the resource",
    }
}

/// Swagger/OpenAPI `x-kubernetes-*` extensions shared by both renderings of an operation.
pub(super) fn operation_extensions(op: &Operation) -> Vec<(&'static str, Value)> {
    vec![("x-kubernetes-action", json!(op.action)), (super::schemas::GVK_EXT, op.gvk.clone())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_endpoints_look_like_go() {
        let eps = endpoints();
        let item = eps.iter().find(|e| e.path == "/api/v1/namespaces/{namespace}/pods/{name}").expect("pod item path");
        let patch = item.ops.iter().find(|o| o.method == Method::Patch).expect("patch op");
        assert_eq!(patch.id, "patchCoreV1NamespacedPod");
        assert!(patch.query.iter().any(|q| q.name == "fieldValidation"));
        assert!(eps.iter().any(|e| e.path == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"));
        assert!(eps.iter().any(|e| e.path == "/api/v1/nodes/{name}/status"));
        let all = eps.iter().find(|e| e.path == "/apis/networking.k8s.io/v1/ingresses").expect("all-namespaces path");
        assert_eq!(all.ops[0].id, "listNetworkingV1IngressForAllNamespaces");
    }
}
