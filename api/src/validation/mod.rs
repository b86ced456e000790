//! Object validation with Kubernetes' field paths and messages.
//!
//! [`validate`] checks one object (after defaulting) of a given kind and, on
//! update, what may not change relative to the old object. It returns every
//! problem as a [`FieldCause`], which the API server turns into a 422
//! `Invalid` status (see [`invalid_message`]). Identity fields the server owns
//! (uid, resourceVersion, name/namespace changes on update) are not checked here.

mod meta;
mod names;
mod other;
mod pod;
mod service;
mod workloads;

use std::fmt;

use serde_json::Value;

pub use names::{
    config_key_errors, dns1035_label_errors, dns1123_label_errors, dns1123_subdomain_errors, is_dns1035_label,
    is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name, label_value_errors, path_segment_errors,
    port_name_errors, qualified_name_errors,
};

/// The kind of problem, named as in a Kubernetes `StatusCause.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseType {
    /// A required field is missing.
    FieldValueRequired,
    /// A value is malformed or out of range.
    FieldValueInvalid,
    /// A value is not one of the allowed ones.
    FieldValueNotSupported,
    /// A value that must be unique repeats.
    FieldValueDuplicate,
    /// A value is too long.
    FieldValueTooLong,
    /// A field may not be set or changed.
    FieldValueForbidden,
    /// A reference points to something that does not exist.
    FieldValueNotFound,
}

impl CauseType {
    /// The `StatusCause.reason` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            CauseType::FieldValueRequired => "FieldValueRequired",
            CauseType::FieldValueInvalid => "FieldValueInvalid",
            CauseType::FieldValueNotSupported => "FieldValueNotSupported",
            CauseType::FieldValueDuplicate => "FieldValueDuplicate",
            CauseType::FieldValueTooLong => "FieldValueTooLong",
            CauseType::FieldValueForbidden => "FieldValueForbidden",
            CauseType::FieldValueNotFound => "FieldValueNotFound",
        }
    }
}

impl fmt::Display for CauseType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validation problem: a field path, its kind and the Kubernetes message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// Path of the field, e.g. `spec.containers[0].image`.
    pub field: String,
    /// What kind of problem it is.
    pub reason: CauseType,
    /// Kubernetes' message body, e.g. `Required value`.
    pub message: String,
}

/// Kubernetes renders values with Go's `%q` for strings and plain text for numbers.
fn render(value: &Value) -> String {
    value.to_string()
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() { head } else { format!("{head}: {detail}") }
}

impl FieldCause {
    fn new(field: impl Into<String>, reason: CauseType, message: String) -> Self {
        Self { field: field.into(), reason, message }
    }

    /// `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::new(field, CauseType::FieldValueRequired, with_detail("Required value".into(), detail))
    }

    /// `Invalid value: <value>: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let head = format!("Invalid value: {}", render(value));
        Self::new(field, CauseType::FieldValueInvalid, with_detail(head, detail))
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let message = format!("Unsupported value: {}: supported values: {}", render(value), list.join(", "));
        Self::new(field, CauseType::FieldValueNotSupported, message)
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self::new(field, CauseType::FieldValueDuplicate, format!("Duplicate value: {}", render(value)))
    }

    /// `Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self::new(field, CauseType::FieldValueNotFound, format!("Not found: {}", render(value)))
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(field, CauseType::FieldValueTooLong, format!("Too long: may not be more than {max} bytes"))
    }

    /// `Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new(field, CauseType::FieldValueForbidden, with_detail("Forbidden".into(), detail))
    }

    /// `Invalid value: <value>: field is immutable`.
    pub fn immutable(field: impl Into<String>, value: &Value) -> Self {
        Self::invalid(field, value, "field is immutable")
    }
}

impl fmt::Display for FieldCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The `Status.message` Kubernetes gives for a rejected object, e.g.
/// `Pod "web" is invalid: spec.containers[0].image: Required value`.
/// `kind` is the qualified kind as Kubernetes prints it (`Deployment.apps`).
pub fn invalid_message(kind: &str, name: &str, causes: &[FieldCause]) -> String {
    let list: Vec<String> = causes.iter().map(ToString::to_string).collect();
    match list.as_slice() {
        [one] => format!("{kind} {name:?} is invalid: {one}"),
        _ => format!("{kind} {name:?} is invalid: [{}]", list.join(", ")),
    }
}

/// Validate a `kind` object (normalised JSON, defaults applied); `old` is the
/// stored object on update. Returns every problem found; empty means valid.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
    let mut errs = Vec::new();
    meta::validate_object_meta(kind, obj, &mut errs);
    match kind {
        "Pod" => pod::validate_pod(obj, old, &mut errs),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            workloads::validate_workload(kind, obj, old, &mut errs)
        }
        "Job" => workloads::validate_job(obj, old, &mut errs),
        "CronJob" => workloads::validate_cronjob(obj, &mut errs),
        "Service" => service::validate_service(obj, old, &mut errs),
        "Endpoints" => service::validate_endpoints(obj, &mut errs),
        "ConfigMap" | "Secret" => other::validate_config(kind, obj, old, &mut errs),
        "Node" => other::validate_node(obj, &mut errs),
        "Namespace" => other::validate_namespace(obj, &mut errs),
        "Lease" => other::validate_lease(obj, &mut errs),
        "Event" => other::validate_event(obj, &mut errs),
        "PersistentVolumeClaim" => other::validate_pvc(obj, old, &mut errs),
        _ => {}
    }
    errs
}

/// Shared helpers for the per-kind validators.
pub(crate) mod util {
    use serde_json::Value;

    use super::FieldCause;

    /// `value` as a string, or "" when absent or not a string.
    pub fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
        obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
    }

    /// Report a string field whose value is not in `allowed` (absent is fine).
    pub fn check_enum(errs: &mut Vec<FieldCause>, path: &str, value: Option<&Value>, allowed: &[&str]) {
        if let Some(v) = value
            && !v.as_str().is_some_and(|s| allowed.contains(&s))
        {
            errs.push(FieldCause::not_supported(path, v, allowed));
        }
    }

    /// Report an integer field below `min` (absent is fine).
    pub fn check_min(errs: &mut Vec<FieldCause>, path: &str, value: Option<&Value>, min: i64) {
        if let Some(v) = value
            && v.as_i64().is_none_or(|n| n < min)
        {
            errs.push(FieldCause::invalid(path, v, &format!("must be greater than or equal to {min}")));
        }
    }

    /// Report a port number outside `min..=65535`.
    pub fn check_port(errs: &mut Vec<FieldCause>, path: &str, value: &Value, min: i64) {
        if value.as_i64().is_none_or(|n| !(min..=65535).contains(&n)) {
            errs.push(FieldCause::invalid(path, value, &format!("must be between {min} and 65535, inclusive")));
        }
    }

    /// The array at `pointer`, or an empty slice.
    pub fn array_at<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
        obj.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cause_messages() {
        assert_eq!(FieldCause::required("spec.x", "").to_string(), "spec.x: Required value");
        assert_eq!(
            FieldCause::invalid("metadata.name", &json!("Foo_Bar"), "bad").message,
            "Invalid value: \"Foo_Bar\": bad"
        );
        assert_eq!(
            FieldCause::invalid("spec.replicas", &json!(-1), "must be greater than or equal to 0").message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldCause::not_supported("spec.restartPolicy", &json!("Sometimes"), &["Always", "Never"]).message,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\""
        );
        assert_eq!(FieldCause::too_long("x", 10).message, "Too long: may not be more than 10 bytes");
        assert_eq!(FieldCause::forbidden("x", "nope").reason.as_str(), "FieldValueForbidden");
    }

    #[test]
    fn status_message() {
        let one = [FieldCause::required("spec.containers", "")];
        assert_eq!(invalid_message("Pod", "web", &one), "Pod \"web\" is invalid: spec.containers: Required value");
        let two = [FieldCause::required("a", ""), FieldCause::required("b", "")];
        assert_eq!(
            invalid_message("Deployment.apps", "d", &two),
            "Deployment.apps \"d\" is invalid: [a: Required value, b: Required value]"
        );
    }

    #[test]
    fn unknown_kinds_get_metadata_checks_only() {
        assert!(validate("Widget", &json!({"metadata": {"name": "Any_Name"}, "spec": 1}), None).is_empty());
        assert_eq!(validate("Widget", &json!({"metadata": {"name": "a/b"}}), None).len(), 1);
    }
}
