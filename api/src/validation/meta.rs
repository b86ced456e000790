//! `metadata` checks shared by every kind: name (or generateName) syntax per
//! kind, namespace syntax, label keys and values, annotation keys and size.

use serde_json::Value;

use super::FieldCause;
use super::names::{
    dns1035_label_errors, dns1123_label_errors, dns1123_subdomain_errors, label_value_errors, path_segment_errors,
    qualified_name_errors,
};

/// Largest total size of all annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Kinds whose names only need to be safe path segments (RBAC names contain `:`).
const PATH_SEGMENT_KINDS: &[&str] = &["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// Kinds whose names must be DNS-1123 subdomains.
const SUBDOMAIN_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ConfigMap",
    "Secret",
    "Node",
    "ServiceAccount",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "Lease",
    "Endpoints",
    "EndpointSlice",
    "Event",
    "ControllerRevision",
    "StorageClass",
    "PriorityClass",
    "CustomResourceDefinition",
    "ReplicationController",
    "ResourceQuota",
    "LimitRange",
];

/// Problems with a name of `kind`, as Kubernetes' per-kind `ValidateNameFunc`.
pub fn name_errors(kind: &str, name: &str) -> Vec<String> {
    match kind {
        "Namespace" => dns1123_label_errors(name),
        "Service" => dns1035_label_errors(name),
        "CronJob" if name.len() > 52 => {
            let mut errs = vec!["must be no more than 52 characters".to_string()];
            errs.extend(dns1123_subdomain_errors(name));
            errs
        }
        k if SUBDOMAIN_KINDS.contains(&k) => dns1123_subdomain_errors(name),
        k if PATH_SEGMENT_KINDS.contains(&k) => path_segment_errors(name),
        _ => path_segment_errors(name),
    }
}

pub(crate) fn validate_object_meta(kind: &str, obj: &Value, errs: &mut Vec<FieldCause>) {
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let generate_name = meta.get("generateName").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        if generate_name.is_empty() {
            errs.push(FieldCause::required("metadata.name", "name or generateName is required"));
        } else {
            // The server appends a random suffix, so check the prefix without its trailing dash.
            let masked = generate_name.strip_suffix('-').unwrap_or(generate_name);
            for e in name_errors(kind, masked) {
                errs.push(FieldCause::invalid("metadata.generateName", &Value::from(generate_name), &e));
            }
        }
    } else {
        for e in name_errors(kind, name) {
            errs.push(FieldCause::invalid("metadata.name", &Value::from(name), &e));
        }
    }
    if let Some(ns) = meta.get("namespace").and_then(Value::as_str)
        && !ns.is_empty()
    {
        for e in dns1123_label_errors(ns) {
            errs.push(FieldCause::invalid("metadata.namespace", &Value::from(ns), &e));
        }
    }
    validate_labels(meta.get("labels"), "metadata.labels", errs);
    validate_annotations(meta.get("annotations"), "metadata.annotations", errs);
}

/// Label keys must be qualified names and values valid label values.
pub(crate) fn validate_labels(labels: Option<&Value>, path: &str, errs: &mut Vec<FieldCause>) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        for e in qualified_name_errors(k) {
            errs.push(FieldCause::invalid(path, &Value::from(k.as_str()), &e));
        }
        match v.as_str() {
            Some(s) => {
                for e in label_value_errors(s) {
                    errs.push(FieldCause::invalid(path, v, &e));
                }
            }
            None => errs.push(FieldCause::invalid(path, v, "label values must be strings")),
        }
    }
}

/// Annotation keys (lower-cased) must be qualified names; total size is bounded.
pub(crate) fn validate_annotations(annotations: Option<&Value>, path: &str, errs: &mut Vec<FieldCause>) {
    let Some(map) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for e in qualified_name_errors(&k.to_lowercase()) {
            errs.push(FieldCause::invalid(path, &Value::from(k.as_str()), &e));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldCause::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{CauseType, validate};
    use serde_json::json;

    fn errs(kind: &str, obj: Value) -> Vec<FieldCause> {
        let mut out = Vec::new();
        validate_object_meta(kind, &obj, &mut out);
        out
    }

    #[test]
    fn name_required_unless_generate_name() {
        let e = errs("ConfigMap", json!({"metadata": {}}));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "metadata.name");
        assert_eq!(e[0].reason, CauseType::FieldValueRequired);
        assert!(errs("ConfigMap", json!({"metadata": {"generateName": "web-"}})).is_empty());
        assert_eq!(errs("ConfigMap", json!({"metadata": {"generateName": "Web-"}}))[0].field, "metadata.generateName");
    }

    #[test]
    fn name_rules_per_kind() {
        let e = errs("Pod", json!({"metadata": {"name": "Foo_Bar"}}));
        assert_eq!(e.len(), 1);
        assert!(e[0].message.starts_with("Invalid value: \"Foo_Bar\": a lowercase RFC 1123 subdomain"));
        assert!(errs("Pod", json!({"metadata": {"name": "a.b"}})).is_empty());
        assert!(!errs("Namespace", json!({"metadata": {"name": "a.b"}})).is_empty());
        assert!(!errs("Service", json!({"metadata": {"name": "1svc"}})).is_empty());
        assert!(errs("ClusterRole", json!({"metadata": {"name": "system:controller:x"}})).is_empty());
        assert!(!errs("CronJob", json!({"metadata": {"name": "a".repeat(53)}})).is_empty());
    }

    #[test]
    fn namespace_labels_annotations() {
        let e = errs(
            "Pod",
            json!({"metadata": {"name": "p", "namespace": "Bad_NS",
                "labels": {"app": "web", "-bad": "x", "ok": "-bad"},
                "annotations": {"example.com/Note": "anything goes here", "bad key": "x"}}}),
        );
        let fields: Vec<&str> = e.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.namespace", "metadata.labels", "metadata.labels", "metadata.annotations"]);
    }

    #[test]
    fn annotation_size_limit() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let e = validate("ConfigMap", &json!({"metadata": {"name": "c", "annotations": {"a": big}}}), None);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].reason, CauseType::FieldValueTooLong);
    }
}
