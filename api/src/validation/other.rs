//! Validation for the smaller kinds: ConfigMap, Secret, Node, Namespace,
//! Lease, Event and PersistentVolumeClaim.

use std::collections::BTreeSet;

use serde_json::Value;

use super::FieldCause;
use super::names::{config_key_errors, qualified_name_errors};
use super::util::{array_at, check_enum, check_min, str_at};
use crate::quantity::parse_quantity;

/// Largest total size of a ConfigMap's or Secret's data.
pub const MAX_CONFIG_SIZE: usize = 1024 * 1024;

const IMMUTABLE_DETAIL: &str = "field is immutable when `immutable` is set";

pub(crate) fn validate_config(kind: &str, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let fields: &[&str] = if kind == "Secret" { &["data", "stringData"] } else { &["data", "binaryData"] };
    let mut seen = BTreeSet::new();
    let mut size = 0usize;
    for field in fields {
        let Some(map) = obj.get(*field).and_then(Value::as_object) else {
            continue;
        };
        for (k, v) in map {
            let path = format!("{field}[{k}]");
            for e in config_key_errors(k) {
                errs.push(FieldCause::invalid(&path, &Value::from(k.as_str()), &e));
            }
            // For Secrets stringData overlays data, so a key in both is fine.
            if !seen.insert(k.clone()) && kind == "ConfigMap" {
                errs.push(FieldCause::invalid(&path, &Value::from(k.as_str()), "duplicate of key present in data"));
            }
            size += k.len() + v.as_str().map_or(0, str::len);
        }
    }
    if size > MAX_CONFIG_SIZE {
        errs.push(FieldCause::too_long(fields[0], MAX_CONFIG_SIZE));
    }
    if kind == "Secret" {
        validate_secret_type(obj, &seen, errs);
    }
    let Some(old) = old else { return };
    if kind == "Secret" && old.get("type") != obj.get("type") {
        errs.push(FieldCause::immutable("type", obj.get("type").unwrap_or(&Value::Null)));
    }
    if old.get("immutable").and_then(Value::as_bool) == Some(true) {
        if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
            errs.push(FieldCause::forbidden("immutable", IMMUTABLE_DETAIL));
        }
        // stringData is folded into data by the server, so compare data only.
        let compared: &[&str] = if kind == "Secret" { &["data"] } else { &["data", "binaryData"] };
        for field in compared {
            if obj.get(*field) != old.get(*field) {
                errs.push(FieldCause::forbidden(*field, IMMUTABLE_DETAIL));
            }
        }
    }
}

/// Secret types that require particular keys.
fn validate_secret_type(obj: &Value, keys: &BTreeSet<String>, errs: &mut Vec<FieldCause>) {
    let required: &[&str] = match str_at(obj, "/type") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/service-account-token" => {
            if str_at(obj, "/metadata/annotations/kubernetes.io~1service-account.name").is_empty() {
                errs.push(FieldCause::required("metadata.annotations[kubernetes.io/service-account.name]", ""));
            }
            &[]
        }
        _ => &[],
    };
    for key in required {
        if !keys.contains(*key) {
            errs.push(FieldCause::required(format!("data[{key}]"), ""));
        }
    }
}

pub(crate) fn validate_node(obj: &Value, errs: &mut Vec<FieldCause>) {
    let mut seen = BTreeSet::new();
    for (i, taint) in array_at(obj, "/spec/taints").iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        let key = str_at(taint, "/key");
        if key.is_empty() {
            errs.push(FieldCause::required(format!("{p}.key"), ""));
        }
        for e in qualified_name_errors(key).into_iter().filter(|_| !key.is_empty()) {
            errs.push(FieldCause::invalid(format!("{p}.key"), &Value::from(key), &e));
        }
        match taint.get("effect") {
            None => errs.push(FieldCause::required(format!("{p}.effect"), "")),
            v => check_enum(errs, &format!("{p}.effect"), v, &["NoExecute", "NoSchedule", "PreferNoSchedule"]),
        }
        let effect = str_at(taint, "/effect");
        if !seen.insert((key, effect)) {
            errs.push(FieldCause::duplicate(p.clone(), &Value::from(format!("{key}:{effect}"))));
        }
    }
    if let Some(cidr) = obj.pointer("/spec/podCIDR").and_then(Value::as_str)
        && !cidr.is_empty()
        && !is_cidr(cidr)
    {
        errs.push(FieldCause::invalid("spec.podCIDR", &Value::from(cidr), "must be a valid CIDR"));
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
        _ => false,
    }
}

pub(crate) fn validate_namespace(obj: &Value, errs: &mut Vec<FieldCause>) {
    for (i, f) in array_at(obj, "/spec/finalizers").iter().enumerate() {
        for e in qualified_name_errors(f.as_str().unwrap_or("")) {
            errs.push(FieldCause::invalid(format!("spec.finalizers[{i}]"), f, &e));
        }
    }
    check_enum(errs, "status.phase", obj.pointer("/status/phase"), &["Active", "Terminating"]);
}

pub(crate) fn validate_lease(obj: &Value, errs: &mut Vec<FieldCause>) {
    check_min(errs, "spec.leaseDurationSeconds", obj.pointer("/spec/leaseDurationSeconds"), 1);
    check_min(errs, "spec.leaseTransitions", obj.pointer("/spec/leaseTransitions"), 0);
}

pub(crate) fn validate_event(obj: &Value, errs: &mut Vec<FieldCause>) {
    check_enum(errs, "type", obj.get("type").filter(|t| t.as_str() != Some("")), &["Normal", "Warning"]);
    check_min(errs, "count", obj.get("count"), 0);
    let event_ns = str_at(obj, "/metadata/namespace");
    let involved_ns = str_at(obj, "/involvedObject/namespace");
    if !involved_ns.is_empty() && !event_ns.is_empty() && involved_ns != event_ns {
        errs.push(FieldCause::invalid(
            "involvedObject.namespace",
            &Value::from(involved_ns),
            "does not match event.namespace",
        ));
    }
}

const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

pub(crate) fn validate_pvc(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let modes = array_at(spec, "/accessModes");
    if modes.is_empty() {
        errs.push(FieldCause::required("spec.accessModes", "at least 1 access mode is required"));
    }
    for (i, m) in modes.iter().enumerate() {
        check_enum(errs, &format!("spec.accessModes[{i}]"), Some(m), ACCESS_MODES);
    }
    check_enum(errs, "spec.volumeMode", spec.get("volumeMode"), &["Block", "Filesystem"]);
    match spec.pointer("/resources/requests/storage") {
        None => errs.push(FieldCause::required("spec.resources[storage]", "")),
        Some(v) => {
            let valid = v.as_str().and_then(|s| parse_quantity(s).ok()).is_some_and(|q| q.as_bytes() > 0);
            if !valid {
                errs.push(FieldCause::invalid("spec.resources[storage]", v, "must be greater than zero"));
            }
        }
    }
    let Some(old_spec) = old.and_then(|o| o.get("spec")) else {
        return;
    };
    let strip = |s: &Value, keep_volume_name: bool| {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            m.remove("resources");
            m.remove("volumeAttributesClassName");
            if !keep_volume_name {
                m.remove("volumeName");
            }
        }
        s
    };
    // Binding may set volumeName once, while it is still empty.
    let keep = !str_at(old_spec, "/volumeName").is_empty();
    if strip(spec, keep) != strip(old_spec, keep) {
        errs.push(FieldCause::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::{CauseType, FieldCause, validate};
    use serde_json::json;

    fn fields(errs: &[FieldCause]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn config_keys() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"ok.key": "v", "bad/key": "v"}, "binaryData": {"ok.key": "dg=="}});
        let e = validate("ConfigMap", &cm, None);
        assert_eq!(fields(&e), vec!["data[bad/key]", "binaryData[ok.key]"]);
        assert!(e[0].message.contains("a valid config key must consist of"));
        let big = json!({"metadata": {"name": "c"}, "data": {"k": "x".repeat(super::MAX_CONFIG_SIZE)}});
        assert_eq!(validate("ConfigMap", &big, None)[0].reason, CauseType::FieldValueTooLong);
    }

    #[test]
    fn secret_types() {
        let tls = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        assert_eq!(fields(&validate("Secret", &tls, None)), vec!["data[tls.key]"]);
        let sa = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/service-account-token"});
        assert_eq!(
            fields(&validate("Secret", &sa, None)),
            vec!["metadata.annotations[kubernetes.io/service-account.name]"]
        );
        let both = json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"a": "x"}});
        assert_eq!(validate("Secret", &both, None), vec![]);
    }

    #[test]
    fn immutable_config() {
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let changed = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
        assert_eq!(fields(&validate("ConfigMap", &changed, Some(&old))), vec!["data"]);
        let unlocked = json!({"metadata": {"name": "c"}, "immutable": false, "data": {"a": "1"}});
        assert_eq!(fields(&validate("ConfigMap", &unlocked, Some(&old))), vec!["immutable"]);
        assert_eq!(validate("ConfigMap", &old, Some(&old)), vec![]);
        let retyped = json!({"metadata": {"name": "s"}, "type": "Other"});
        let orig = json!({"metadata": {"name": "s"}, "type": "Opaque"});
        assert_eq!(fields(&validate("Secret", &retyped, Some(&orig))), vec!["type"]);
    }

    #[test]
    fn nodes_namespaces_leases_events() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.0.0/24", "taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "x", "effect": "Sometimes"}, {"effect": "NoSchedule"}]}});
        assert_eq!(fields(&validate("Node", &node, None)), vec!["spec.taints[1].effect", "spec.taints[2].key"]);
        let bad_cidr = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/40"}});
        assert_eq!(fields(&validate("Node", &bad_cidr, None)), vec!["spec.podCIDR"]);
        assert!(
            validate("Namespace", &json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}}), None)
                .is_empty()
        );
        assert_eq!(fields(&validate("Namespace", &json!({"metadata": {"name": "Bad"}}), None)), vec!["metadata.name"]);
        let lease = json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}});
        assert_eq!(fields(&validate("Lease", &lease, None)), vec!["spec.leaseDurationSeconds"]);
        let ev = json!({"metadata": {"name": "e", "namespace": "a"}, "type": "Fatal",
            "involvedObject": {"kind": "Pod", "namespace": "b"}});
        assert_eq!(fields(&validate("Event", &ev, None)), vec!["type", "involvedObject.namespace"]);
    }

    #[test]
    fn pvcs() {
        let ok = json!({"metadata": {"name": "p"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(validate("PersistentVolumeClaim", &ok, None), vec![]);
        let bad = json!({"metadata": {"name": "p"}, "spec": {"accessModes": ["ReadSometimes"]}});
        assert_eq!(
            fields(&validate("PersistentVolumeClaim", &bad, None)),
            vec!["spec.accessModes[0]", "spec.resources[storage]"]
        );
        let mut bound = ok.clone();
        bound["spec"]["volumeName"] = json!("pv-1");
        bound["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        assert_eq!(validate("PersistentVolumeClaim", &bound, Some(&ok)), vec![]);
        let mut remoded = bound.clone();
        remoded["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert_eq!(fields(&validate("PersistentVolumeClaim", &remoded, Some(&bound))), vec!["spec"]);
    }
}
