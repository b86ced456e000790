//! Pod and pod-template validation: containers, ports, volumes and mounts,
//! resource quantities, enums, and the narrow set of Pod spec updates
//! Kubernetes allows.

use std::collections::BTreeSet;

use serde_json::Value;

use super::FieldCause;
use super::meta::{validate_annotations, validate_labels};
use super::names::{dns1123_label_errors, port_name_errors};
use super::util::{array_at, check_enum, check_min, check_port};
use crate::quantity::{QUANTITY_REGEX, Quantity, parse_quantity};

const RESTART_POLICIES: &[&str] = &["Always", "Never", "OnFailure"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

pub(crate) fn validate_pod(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", errs);
    if let Some(old) = old {
        validate_pod_update(obj, old, errs);
    }
}

/// Validate `template` at `path` (e.g. `spec.template`) whose restart policy
/// must be one of `restart_policies`.
pub(crate) fn validate_pod_template(
    template: Option<&Value>,
    path: &str,
    restart_policies: &[&str],
    errs: &mut Vec<FieldCause>,
) {
    let Some(template) = template else {
        errs.push(FieldCause::required(path, ""));
        return;
    };
    validate_labels(template.pointer("/metadata/labels"), &format!("{path}.metadata.labels"), errs);
    validate_annotations(template.pointer("/metadata/annotations"), &format!("{path}.metadata.annotations"), errs);
    let spec = template.get("spec").unwrap_or(&Value::Null);
    let spec_path = format!("{path}.spec");
    validate_pod_spec(spec, &spec_path, errs);
    let policy = spec.get("restartPolicy").cloned().unwrap_or(Value::from(""));
    if RESTART_POLICIES.contains(&policy.as_str().unwrap_or(""))
        && !restart_policies.contains(&policy.as_str().unwrap_or(""))
    {
        errs.push(FieldCause::not_supported(format!("{spec_path}.restartPolicy"), &policy, restart_policies));
    }
}

/// Validate a pod spec found at `path`.
pub(crate) fn validate_pod_spec(spec: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    let mut volumes = BTreeSet::new();
    for (i, vol) in array_at(spec, "/volumes").iter().enumerate() {
        let p = format!("{path}.volumes[{i}].name");
        match vol.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldCause::required(p, "")),
            name => {
                for e in dns1123_label_errors(name) {
                    errs.push(FieldCause::invalid(&p, &Value::from(name), &e));
                }
                if !volumes.insert(name.to_string()) {
                    errs.push(FieldCause::duplicate(&p, &Value::from(name)));
                }
            }
        }
    }
    let containers = array_at(spec, "/containers");
    if containers.is_empty() {
        errs.push(FieldCause::required(format!("{path}.containers"), ""));
    }
    let mut names = BTreeSet::new();
    for (i, c) in containers.iter().enumerate() {
        validate_container(c, &format!("{path}.containers[{i}]"), &volumes, &mut names, errs);
    }
    for (i, c) in array_at(spec, "/initContainers").iter().enumerate() {
        validate_container(c, &format!("{path}.initContainers[{i}]"), &volumes, &mut names, errs);
    }
    check_enum(errs, &format!("{path}.restartPolicy"), spec.get("restartPolicy"), RESTART_POLICIES);
    check_enum(errs, &format!("{path}.dnsPolicy"), spec.get("dnsPolicy"), DNS_POLICIES);
    check_min(errs, &format!("{path}.terminationGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds"), 0);
    check_min(errs, &format!("{path}.activeDeadlineSeconds"), spec.get("activeDeadlineSeconds"), 1);
}

fn validate_container(
    c: &Value,
    path: &str,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    errs: &mut Vec<FieldCause>,
) {
    match c.get("name").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(FieldCause::required(format!("{path}.name"), "")),
        name => {
            for e in dns1123_label_errors(name) {
                errs.push(FieldCause::invalid(format!("{path}.name"), &Value::from(name), &e));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldCause::duplicate(format!("{path}.name"), &Value::from(name)));
            }
        }
    }
    if c.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
        errs.push(FieldCause::required(format!("{path}.image"), ""));
    }
    check_enum(errs, &format!("{path}.imagePullPolicy"), c.get("imagePullPolicy"), PULL_POLICIES);
    for (i, port) in array_at(c, "/ports").iter().enumerate() {
        let p = format!("{path}.ports[{i}]");
        match port.get("containerPort") {
            None => errs.push(FieldCause::required(format!("{p}.containerPort"), "")),
            Some(v) => check_port(errs, &format!("{p}.containerPort"), v, 1),
        }
        if let Some(v) = port.get("hostPort")
            && v.as_i64() != Some(0)
        {
            check_port(errs, &format!("{p}.hostPort"), v, 1);
        }
        check_enum(errs, &format!("{p}.protocol"), port.get("protocol"), PROTOCOLS);
        if let Some(name) = port.get("name").and_then(Value::as_str) {
            for e in port_name_errors(name) {
                errs.push(FieldCause::invalid(format!("{p}.name"), &Value::from(name), &e));
            }
        }
    }
    for (i, env) in array_at(c, "/env").iter().enumerate() {
        if env.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
            errs.push(FieldCause::required(format!("{path}.env[{i}].name"), ""));
        }
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in array_at(c, "/volumeMounts").iter().enumerate() {
        let p = format!("{path}.volumeMounts[{i}]");
        match m.get("name").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldCause::required(format!("{p}.name"), "")),
            n if !volumes.contains(n) => errs.push(FieldCause::not_found(format!("{p}.name"), &Value::from(n))),
            _ => {}
        }
        match m.get("mountPath").and_then(Value::as_str).unwrap_or("") {
            "" => errs.push(FieldCause::required(format!("{p}.mountPath"), "")),
            mp if !mount_paths.insert(mp.to_string()) => {
                errs.push(FieldCause::invalid(format!("{p}.mountPath"), &Value::from(mp), "must be unique"));
            }
            _ => {}
        }
    }
    validate_resources(c.get("resources"), &format!("{path}.resources"), errs);
}

/// Parse every quantity of one resource map, reporting bad and negative values.
fn quantities(map: Option<&Value>, path: &str, errs: &mut Vec<FieldCause>) -> Vec<(String, Quantity)> {
    let mut out = Vec::new();
    let Some(map) = map.and_then(Value::as_object) else {
        return out;
    };
    for (name, v) in map {
        let p = format!("{path}[{name}]");
        let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        match parse_quantity(&text) {
            Ok(q) if q.is_negative() => {
                errs.push(FieldCause::invalid(p, v, "must be greater than or equal to 0"));
            }
            Ok(q) => out.push((name.clone(), q)),
            Err(_) => errs.push(FieldCause::invalid(
                p,
                v,
                &format!("quantities must match the regular expression '{QUANTITY_REGEX}'"),
            )),
        }
    }
    out
}

fn validate_resources(resources: Option<&Value>, path: &str, errs: &mut Vec<FieldCause>) {
    let Some(res) = resources else { return };
    let limits = quantities(res.get("limits"), &format!("{path}.limits"), errs);
    let requests = quantities(res.get("requests"), &format!("{path}.requests"), errs);
    for (name, req) in &requests {
        if let Some((_, limit)) = limits.iter().find(|(n, _)| n == name)
            && req > limit
        {
            errs.push(FieldCause::invalid(
                format!("{path}.requests[{name}]"),
                &Value::from(req.to_string()),
                &format!("must be less than or equal to {name} limit of {limit}"),
            ));
        }
    }
}

const UPDATABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative),`spec.schedulingGates` (only removals)";

/// Only images, a shrinking deadline, added tolerations and removed
/// scheduling gates may change in a Pod spec.
fn validate_pod_update(new: &Value, old: &Value, errs: &mut Vec<FieldCause>) {
    let (Some(new_spec), Some(old_spec)) = (new.get("spec"), old.get("spec")) else {
        return;
    };
    // Start from the old spec and carry over what may change; any remaining
    // difference is a forbidden change.
    let mut munged = old_spec.clone();
    for list in ["containers", "initContainers"] {
        let new_list = array_at(new_spec, &format!("/{list}"));
        if let Some(old_list) = munged.get_mut(list).and_then(Value::as_array_mut)
            && old_list.len() == new_list.len()
        {
            for (o, n) in old_list.iter_mut().zip(new_list) {
                if let (Some(o), Some(img)) = (o.as_object_mut(), n.get("image")) {
                    o.insert("image".into(), img.clone());
                }
            }
        }
    }
    let Some(m) = munged.as_object_mut() else {
        return;
    };
    let new_deadline = new_spec.get("activeDeadlineSeconds");
    match (old_spec.get("activeDeadlineSeconds").and_then(Value::as_i64), new_deadline) {
        (Some(_), None) => errs.push(FieldCause::invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        (Some(o), Some(n)) if n.as_i64().is_some_and(|n| n > o) => errs.push(FieldCause::invalid(
            "spec.activeDeadlineSeconds",
            n,
            "must be less than or equal to previous value",
        )),
        _ => {}
    }
    carry(m, "activeDeadlineSeconds", new_deadline);
    let old_tolerations = array_at(old_spec, "/tolerations");
    let new_tolerations = array_at(new_spec, "/tolerations");
    if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
        carry(m, "tolerations", new_spec.get("tolerations"));
    }
    if old_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64).is_some_and(|g| g < 0) {
        carry(m, "terminationGracePeriodSeconds", new_spec.get("terminationGracePeriodSeconds"));
    }
    let new_gates = array_at(new_spec, "/schedulingGates");
    let old_gates = array_at(old_spec, "/schedulingGates");
    if new_gates.iter().all(|g| old_gates.contains(g)) {
        carry(m, "schedulingGates", new_spec.get("schedulingGates"));
    }
    if &munged != new_spec {
        let changed: Vec<String> = changed_keys(&munged, new_spec).into_iter().map(|k| format!("spec.{k}")).collect();
        errs.push(FieldCause::forbidden("spec", &format!("{UPDATABLE} (changed: {})", changed.join(", "))));
    }
}

fn carry(m: &mut serde_json::Map<String, Value>, key: &str, value: Option<&Value>) {
    match value {
        Some(v) => m.insert(key.to_string(), v.clone()),
        None => m.remove(key),
    };
}

fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{CauseType, validate};
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn fields(errs: &[FieldCause]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn valid_pod() {
        let p = pod(json!({
            "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "restartPolicy": "Always"
        }));
        assert_eq!(validate("Pod", &p, None), vec![]);
    }

    #[test]
    fn containers_required() {
        let e = validate("Pod", &pod(json!({})), None);
        assert_eq!(fields(&e), vec!["spec.containers"]);
        assert_eq!(e[0].message, "Required value");
    }

    #[test]
    fn container_problems() {
        let p = pod(json!({
            "containers": [
                {"name": "app", "image": "", "ports": [{"containerPort": 0}, {"containerPort": 70000, "protocol": "HTTP"}]},
                {"name": "app", "image": "x", "volumeMounts": [{"name": "missing", "mountPath": "/m"}]},
                {"name": "Bad_Name", "image": "x", "env": [{"value": "v"}]}
            ],
            "restartPolicy": "Sometimes"
        }));
        let e = validate("Pod", &p, None);
        assert_eq!(
            fields(&e),
            vec![
                "spec.containers[0].image",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[1].containerPort",
                "spec.containers[0].ports[1].protocol",
                "spec.containers[1].name",
                "spec.containers[1].volumeMounts[0].name",
                "spec.containers[2].name",
                "spec.containers[2].env[0].name",
                "spec.restartPolicy",
            ]
        );
        assert_eq!(e[1].message, "Invalid value: 0: must be between 1 and 65535, inclusive");
        assert_eq!(e[4].reason, CauseType::FieldValueDuplicate);
        assert_eq!(e[5].reason, CauseType::FieldValueNotFound);
        assert_eq!(
            e[8].message,
            "Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\""
        );
    }

    #[test]
    fn volumes_unique() {
        let p = pod(json!({"containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": "v"}, {"name": "v"}, {}]}));
        let e = validate("Pod", &p, None);
        assert_eq!(fields(&e), vec!["spec.volumes[1].name", "spec.volumes[2].name"]);
    }

    #[test]
    fn resources() {
        let p = pod(json!({"containers": [{"name": "a", "image": "x", "resources": {
            "limits": {"cpu": "500m", "memory": "lots"},
            "requests": {"cpu": "1", "memory": "-1"}}}]}));
        let e = validate("Pod", &p, None);
        assert_eq!(
            fields(&e),
            vec![
                "spec.containers[0].resources.limits[memory]",
                "spec.containers[0].resources.requests[memory]",
                "spec.containers[0].resources.requests[cpu]",
            ]
        );
        assert_eq!(e[2].message, "Invalid value: \"1\": must be less than or equal to cpu limit of 500m");
        assert!(e[0].message.contains("quantities must match the regular expression"));
    }

    #[test]
    fn template_restart_policy() {
        let mut errs = Vec::new();
        let t = json!({"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "a", "image": "x"}], "restartPolicy": "Never"}});
        validate_pod_template(Some(&t), "spec.template", &["Always"], &mut errs);
        assert_eq!(fields(&errs), vec!["spec.template.spec.restartPolicy"]);
        errs.clear();
        validate_pod_template(None, "spec.template", &["Always"], &mut errs);
        assert_eq!(fields(&errs), vec!["spec.template"]);
    }

    #[test]
    fn pod_updates() {
        let old = pod(json!({"containers": [{"name": "a", "image": "x:1"}], "activeDeadlineSeconds": 100,
            "tolerations": [{"key": "k", "operator": "Exists"}]}));
        let ok = pod(json!({"containers": [{"name": "a", "image": "x:2"}], "activeDeadlineSeconds": 50,
            "tolerations": [{"key": "k", "operator": "Exists"}, {"key": "j", "operator": "Exists"}]}));
        assert_eq!(validate("Pod", &ok, Some(&old)), vec![]);
        let bad = pod(json!({"containers": [{"name": "a", "image": "x:1", "command": ["sh"]}],
            "activeDeadlineSeconds": 100, "tolerations": [{"key": "k", "operator": "Exists"}]}));
        let e = validate("Pod", &bad, Some(&old));
        assert_eq!(fields(&e), vec!["spec"]);
        assert_eq!(e[0].reason, CauseType::FieldValueForbidden);
        assert!(e[0].message.contains("changed: spec.containers"), "{}", e[0].message);
        let longer = pod(json!({"containers": [{"name": "a", "image": "x:1"}], "activeDeadlineSeconds": 200,
            "tolerations": [{"key": "k", "operator": "Exists"}]}));
        assert_eq!(fields(&validate("Pod", &longer, Some(&old))), vec!["spec.activeDeadlineSeconds"]);
        let dropped = pod(json!({"containers": [{"name": "a", "image": "x:1"}], "activeDeadlineSeconds": 100}));
        assert_eq!(fields(&validate("Pod", &dropped, Some(&old))), vec!["spec"]);
    }
}
