//! Field labels: which fields each kind can be filtered on with a field
//! selector, and how their values are read from a JSON object.
//!
//! Mirrors Kubernetes' per-kind `GetAttrs` / field label conversion funcs:
//! every kind supports `metadata.name` and `metadata.namespace`; a handful of
//! kinds add their own. Anything else is [`FieldError::Unsupported`], which the
//! API server answers with 400 `field label not supported: <field>`.

use serde_json::Value;

use crate::selector::FieldSelector;

/// Why a field label cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The kind has no such field label.
    #[error("field label not supported: {field}")]
    Unsupported {
        /// The kind that was queried.
        kind: String,
        /// The field label that was asked for.
        field: String,
    },
}

/// How a field's JSON value becomes the string a selector compares.
#[derive(Debug, Clone, Copy)]
enum Conv {
    /// A string; missing is `None` (compares as "").
    Str,
    /// A boolean; missing is `"false"`.
    Bool,
    /// An integer; missing is `"0"`.
    Int,
}

/// (field label, JSON pointer, conversion) for the kind-specific labels.
fn kind_fields(kind: &str) -> &'static [(&'static str, &'static str, Conv)] {
    match kind {
        "Pod" => &[
            ("spec.nodeName", "/spec/nodeName", Conv::Str),
            ("spec.restartPolicy", "/spec/restartPolicy", Conv::Str),
            ("spec.schedulerName", "/spec/schedulerName", Conv::Str),
            ("spec.serviceAccountName", "/spec/serviceAccountName", Conv::Str),
            ("spec.hostNetwork", "/spec/hostNetwork", Conv::Bool),
            ("status.phase", "/status/phase", Conv::Str),
            ("status.podIP", "/status/podIP", Conv::Str),
            ("status.nominatedNodeName", "/status/nominatedNodeName", Conv::Str),
        ],
        "Node" => &[("spec.unschedulable", "/spec/unschedulable", Conv::Bool)],
        "Secret" => &[("type", "/type", Conv::Str)],
        "Namespace" => &[("status.phase", "/status/phase", Conv::Str)],
        "Job" => &[("status.successful", "/status/succeeded", Conv::Int)],
        "ReplicaSet" => &[("status.replicas", "/status/replicas", Conv::Int)],
        "Event" => &[
            ("involvedObject.kind", "/involvedObject/kind", Conv::Str),
            ("involvedObject.namespace", "/involvedObject/namespace", Conv::Str),
            ("involvedObject.name", "/involvedObject/name", Conv::Str),
            ("involvedObject.uid", "/involvedObject/uid", Conv::Str),
            ("involvedObject.apiVersion", "/involvedObject/apiVersion", Conv::Str),
            ("involvedObject.resourceVersion", "/involvedObject/resourceVersion", Conv::Str),
            ("involvedObject.fieldPath", "/involvedObject/fieldPath", Conv::Str),
            ("reason", "/reason", Conv::Str),
            ("reportingComponent", "/reportingComponent", Conv::Str),
            ("source", "/source/component", Conv::Str),
            ("type", "/type", Conv::Str),
        ],
        _ => &[],
    }
}

/// Field labels every kind supports.
const COMMON: [(&str, &str, Conv); 2] =
    [("metadata.name", "/metadata/name", Conv::Str), ("metadata.namespace", "/metadata/namespace", Conv::Str)];

/// Every field label `kind` can be selected on.
pub fn supported_fields(kind: &str) -> Vec<&'static str> {
    COMMON.iter().chain(kind_fields(kind)).map(|(f, _, _)| *f).collect()
}

/// The value of field label `field` of a `kind` object; `Ok(None)` when unset.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Result<Option<String>, FieldError> {
    let (_, pointer, conv) = COMMON
        .iter()
        .chain(kind_fields(kind))
        .find(|(f, _, _)| *f == field)
        .ok_or_else(|| FieldError::Unsupported { kind: kind.to_string(), field: field.to_string() })?;
    let v = obj.pointer(pointer);
    Ok(match conv {
        Conv::Str => v.and_then(Value::as_str).map(str::to_string),
        Conv::Bool => Some(v.and_then(Value::as_bool).unwrap_or(false).to_string()),
        Conv::Int => Some(v.and_then(Value::as_i64).unwrap_or(0).to_string()),
    })
}

/// Check that every field in `selector` is supported by `kind`.
pub fn check_supported(kind: &str, selector: &FieldSelector) -> Result<(), FieldError> {
    let supported = supported_fields(kind);
    match selector.requirements().iter().find(|r| !supported.contains(&r.field.as_str())) {
        Some(r) => Err(FieldError::Unsupported { kind: kind.to_string(), field: r.field.clone() }),
        None => Ok(()),
    }
}

/// Whether a `kind` object satisfies `selector`; errors on unsupported fields.
pub fn matches(kind: &str, obj: &Value, selector: &FieldSelector) -> Result<bool, FieldError> {
    check_supported(kind, selector)?;
    // Every field is known now, so lookups cannot fail.
    Ok(selector.matches(|f| field_value(kind, obj, f).ok().flatten()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler"},
            "status": {"phase": "Running", "podIP": "10.0.0.5"}
        })
    }

    #[test]
    fn common_fields_for_any_kind() {
        let obj = json!({"metadata": {"name": "x"}});
        assert_eq!(field_value("Widget", &obj, "metadata.name"), Ok(Some("x".into())));
        assert_eq!(field_value("Widget", &obj, "metadata.namespace"), Ok(None));
        assert_eq!(
            field_value("Widget", &obj, "spec.foo").expect_err("unsupported").to_string(),
            "field label not supported: spec.foo"
        );
    }

    #[test]
    fn pod_fields() {
        let p = pod();
        assert_eq!(field_value("Pod", &p, "spec.nodeName"), Ok(Some("n1".into())));
        assert_eq!(field_value("Pod", &p, "status.phase"), Ok(Some("Running".into())));
        assert_eq!(field_value("Pod", &p, "status.podIP"), Ok(Some("10.0.0.5".into())));
        assert_eq!(field_value("Pod", &p, "spec.hostNetwork"), Ok(Some("false".into())));
        assert_eq!(field_value("Pod", &p, "status.nominatedNodeName"), Ok(None));
        assert!(field_value("Pod", &p, "spec.containers").is_err());
        assert!(field_value("Node", &p, "spec.nodeName").is_err());
    }

    #[test]
    fn other_kinds() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert_eq!(field_value("Node", &node, "spec.unschedulable"), Ok(Some("true".into())));
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        assert_eq!(field_value("Secret", &secret, "type"), Ok(Some("Opaque".into())));
        let job = json!({"status": {"succeeded": 2}});
        assert_eq!(field_value("Job", &job, "status.successful"), Ok(Some("2".into())));
        assert_eq!(field_value("ReplicaSet", &json!({}), "status.replicas"), Ok(Some("0".into())));
        let ns = json!({"status": {"phase": "Terminating"}});
        assert_eq!(field_value("Namespace", &ns, "status.phase"), Ok(Some("Terminating".into())));
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "web", "uid": "u1"}, "reason": "Started",
                        "source": {"component": "kubelet"}, "type": "Normal"});
        assert_eq!(field_value("Event", &ev, "involvedObject.kind"), Ok(Some("Pod".into())));
        assert_eq!(field_value("Event", &ev, "involvedObject.uid"), Ok(Some("u1".into())));
        assert_eq!(field_value("Event", &ev, "source"), Ok(Some("kubelet".into())));
        assert_eq!(field_value("Event", &ev, "reason"), Ok(Some("Started".into())));
        assert_eq!(field_value("Event", &ev, "involvedObject.fieldPath"), Ok(None));
        assert!(supported_fields("Event").contains(&"reportingComponent"));
    }

    #[test]
    fn selector_matching() {
        let p = pod();
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").expect("valid");
        assert_eq!(matches("Pod", &p, &s), Ok(true));
        let s = FieldSelector::parse("spec.nodeName=").expect("valid");
        assert_eq!(matches("Pod", &p, &s), Ok(false));
        assert_eq!(matches("Pod", &json!({}), &s), Ok(true));
        let s = FieldSelector::parse("spec.bogus=x").expect("valid");
        assert!(matches!(matches("Pod", &p, &s), Err(FieldError::Unsupported { .. })));
    }
}
