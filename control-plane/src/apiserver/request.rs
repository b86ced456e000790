//! Understanding a request: which resource a URL path names, the Kubernetes query parameters,
//! the body (JSON, YAML or protobuf, size-limited) and what representation the client accepts.
//!
//! Path grammar below `/api/v1` and `/apis/<group>/<version>`:
//! `[namespaces/<ns>/]<plural>[/<name>[/<subresource>]]`, with the legacy `watch/` prefix.
//! `namespaces/<name>[/<sub>]` is the Namespace object itself.

use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::Value;

use super::error::ApiError;
use super::protobuf;
use crate::registry::catalog::{self, ResourceInfo};

/// Largest request body accepted, as the Go API server (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// A resolved resource path.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The path used the legacy `/watch/` prefix.
    pub legacy_watch: bool,
}

impl ResourcePath {
    /// Parses `rest` (the part after the group/version prefix).
    pub fn parse(group: &str, version: &str, rest: &str) -> Result<ResourcePath, ApiError> {
        let mut segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let legacy_watch = segs.first() == Some(&"watch");
        if legacy_watch {
            segs.remove(0);
        }
        let find = |plural: &str| catalog::find(group, version, plural);
        let (info, namespace, rest) = match segs.as_slice() {
            ["namespaces", ns, plural, rest @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
                (find(plural).ok_or(ApiError::NoRoute)?, Some((*ns).to_string()), rest)
            }
            [plural, rest @ ..] => (find(plural).ok_or(ApiError::NoRoute)?, None, rest),
            [] => return Err(ApiError::NoRoute),
        };
        let (name, subresource) = match rest {
            [] => (None, None),
            [name] => (Some((*name).to_string()), None),
            [name, sub] => {
                if !info.has_subresource(sub) {
                    return Err(ApiError::NoRoute);
                }
                (Some((*name).to_string()), Some((*sub).to_string()))
            }
            _ => return Err(ApiError::NoRoute),
        };
        Ok(ResourcePath { info, namespace, name, subresource, legacy_watch })
    }

    /// `plural` or `plural.group`: how Kubernetes names the resource in error messages.
    pub fn resource_name(&self) -> String {
        self.info.resource_name()
    }

    /// The namespace for a namespaced resource, or `None` for cluster-scoped ones.
    pub fn object_namespace(&self) -> Option<&str> {
        if self.info.namespaced { self.namespace.as_deref() } else { None }
    }

    /// The store key of the named object.
    pub fn key(&self) -> Option<String> {
        self.name.as_deref().map(|n| self.info.key(self.object_namespace(), n))
    }

    /// The store prefix for a list (all namespaces when none was given).
    pub fn list_prefix(&self) -> String {
        match self.object_namespace() {
            Some(ns) => format!("{}{ns}/", self.info.key_prefix()),
            None => self.info.key_prefix(),
        }
    }
}

/// Query parameters Kubernetes clients send; unknown ones are ignored, as the Go server does.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<i64>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: Option<String>,
    pub allow_watch_bookmarks: Option<String>,
    pub send_initial_events: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub dry_run: Option<String>,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<String>,
    pub include_object: Option<String>,
    pub pretty: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1" | "True"))
}

impl Query {
    pub fn is_watch(&self) -> bool {
        truthy(&self.watch)
    }
    pub fn bookmarks(&self) -> bool {
        truthy(&self.allow_watch_bookmarks)
    }
    pub fn send_initial_events(&self) -> bool {
        truthy(&self.send_initial_events)
    }
    /// `sendInitialEvents` when given at all (`false` differs from absent for watches).
    pub fn send_initial_events_param(&self) -> Option<bool> {
        self.send_initial_events.as_ref().map(|_| truthy(&self.send_initial_events))
    }
    /// `dryRun=All` (the only value Kubernetes accepts).
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::BadRequest(format!("unsupported dryRun value {other:?}: only \"All\" is supported")))
            }
        }
    }
    pub fn field_validation(&self) -> Result<FieldValidation, ApiError> {
        match self.field_validation.as_deref() {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::BadRequest(format!(
                "invalid fieldValidation directive {other:?}: must be one of Ignore, Warn, Strict"
            ))),
        }
    }
}

/// `fieldValidation`: what to do with unknown or duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Reads a body of at most [`MAX_BODY`] bytes (413 beyond).
pub async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge { limit: MAX_BODY }),
        Err(e) => Err(ApiError::BadRequest(format!("reading request body: {e}"))),
    }
}

/// Decodes a JSON, YAML or Kubernetes protobuf body into a JSON value (400 with the parser's
/// message on failure).
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    let is_yaml = ct.contains("yaml");
    let value: Value = if ct == protobuf::MEDIA_TYPE {
        protobuf::decode(body).map_err(|e| ApiError::BadRequest(format!("error decoding protobuf body: {e}")))?
    } else if is_yaml {
        serde_yaml::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
    } else if ct.is_empty() || ct.contains("json") {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("couldn't get version/kind; json parse error: {e}")))?
    } else {
        return Err(ApiError::UnsupportedMediaType);
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest("the request body must be a JSON or YAML object".into()));
    }
    Ok(value)
}

/// The media type of the request body, lower-cased, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// True when the client asked for server-side `Table` output.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers.get_all(axum::http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |part| {
            let part = part.trim();
            part.contains("as=Table") && part.contains("g=meta.k8s.io") && part.starts_with("application/json")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let p = ResourcePath::parse("", "v1", "namespaces/default/pods/web/status").expect("path");
        assert_eq!(p.info.kind, "Pod");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        assert_eq!(p.key().as_deref(), Some("pods/default/web"));

        let p = ResourcePath::parse("", "v1", "namespaces/kube-system").expect("path");
        assert_eq!(p.info.kind, "Namespace");
        assert_eq!(p.name.as_deref(), Some("kube-system"));
        assert_eq!(p.key().as_deref(), Some("namespaces/kube-system"));

        let p = ResourcePath::parse("", "v1", "namespaces/x/finalize").expect("path");
        assert_eq!(p.subresource.as_deref(), Some("finalize"));

        let p = ResourcePath::parse("apps", "v1", "deployments").expect("path");
        assert_eq!(p.list_prefix(), "apps/deployments/");

        let p = ResourcePath::parse("", "v1", "watch/namespaces/a/pods").expect("path");
        assert!(p.legacy_watch);
        assert_eq!(p.list_prefix(), "pods/a/");
    }

    #[test]
    fn rejects_unknown_resources_and_subresources() {
        assert!(ResourcePath::parse("", "v1", "widgets").is_err());
        assert!(ResourcePath::parse("", "v1", "namespaces/a/pods/x/bogus").is_err());
        assert!(ResourcePath::parse("", "v1", "namespaces/a/pods/x/status/y").is_err());
    }

    #[test]
    fn table_accept_detection() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
                .parse()
                .expect("header"),
        );
        assert!(wants_table(&h));
        h.insert(axum::http::header::ACCEPT, "application/json".parse().expect("header"));
        assert!(!wants_table(&h));
    }

    #[test]
    fn protobuf_bodies_decode_or_answer_bad_request() {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_TYPE, protobuf::MEDIA_TYPE.parse().expect("header"));
        let cm = parse_body(&h, include_bytes!("protobuf/testdata/configmap.pb")).expect("configmap");
        assert_eq!(cm["kind"], "ConfigMap");
        assert!(matches!(parse_body(&h, b"k8s\0\x0a"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse_body(&h, b"{}"), Err(ApiError::BadRequest(_))));
    }
}
