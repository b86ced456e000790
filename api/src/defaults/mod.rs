//! Server-side defaulting: the values the Kubernetes apiserver fills in on
//! create and update, which kubectl output and Skiff's controllers rely on.
//!
//! [`apply_defaults`] only adds missing (or null) fields, never overrides one
//! the client set, and is idempotent. It does not allocate anything (cluster
//! IPs, node ports, generated names, Job selectors): that is the server's job.

mod pod;

use serde_json::{Map, Value, json};

pub use pod::default_pull_policy;

use crate::labels::METADATA_NAME;

/// Insert `value` under `key` unless a non-null value is there.
pub(crate) fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            map.insert(key.to_string(), value);
        }
    }
}

/// The object at `key` of `v`, created (replacing null) when missing; `None`
/// when `v` or the existing child is not an object.
pub(crate) fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let map = v.as_object_mut()?;
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), json!({}));
    }
    map.get_mut(key)?.as_object_mut()
}

/// Apply the Kubernetes defaults for `kind` to `obj` in place.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => pod::apply_pod_defaults(obj),
        "Deployment" => deployment(obj),
        "ReplicaSet" => {
            with_spec(obj, |spec| set_default(spec, "replicas", json!(1)));
            template(obj, "/spec/template");
        }
        "StatefulSet" => statefulset(obj),
        "DaemonSet" => daemonset(obj),
        "Job" => job(obj),
        "CronJob" => cronjob(obj),
        "Service" => service(obj),
        "Namespace" => namespace(obj),
        "Secret" => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
            }
        }
        "PersistentVolumeClaim" => {
            with_spec(obj, |spec| set_default(spec, "volumeMode", json!("Filesystem")));
            if let Some(status) = child(obj, "status") {
                set_default(status, "phase", json!("Pending"));
            }
        }
        "Node" => {
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
                && let Some(capacity) = status.get("capacity").cloned()
            {
                set_default(status, "allocatable", capacity);
            }
        }
        "Endpoints" => {
            if let Some(subsets) = obj.get_mut("subsets").and_then(Value::as_array_mut) {
                for s in subsets {
                    default_port_protocols(s.get_mut("ports"));
                }
            }
        }
        "EndpointSlice" => default_port_protocols(obj.get_mut("ports")),
        _ => {}
    }
}

fn with_spec(obj: &mut Value, f: impl FnOnce(&mut Map<String, Value>)) {
    if let Some(spec) = child(obj, "spec") {
        f(spec);
    }
}

/// Pod spec defaults inside the template at `pointer`, when there is one.
fn template(obj: &mut Value, pointer: &str) {
    if let Some(t) = obj.pointer_mut(pointer)
        && let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut)
    {
        pod::apply_pod_spec_defaults(spec);
    }
}

fn default_port_protocols(ports: Option<&mut Value>) {
    if let Some(ports) = ports.and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

fn deployment(obj: &mut Value) {
    with_spec(obj, |spec| {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(s) = strategy.as_object_mut() {
            set_default(s, "type", json!("RollingUpdate"));
            if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "maxUnavailable", json!("25%"));
                    set_default(ru, "maxSurge", json!("25%"));
                }
            }
        }
    });
    template(obj, "/spec/template");
}

fn statefulset(obj: &mut Value) {
    with_spec(obj, |spec| {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(s) = strategy.as_object_mut() {
            set_default(s, "type", json!("RollingUpdate"));
            if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "partition", json!(0));
                }
            }
        }
        if let Some(claims) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
            for c in claims {
                if let Some(s) = child(c, "spec") {
                    set_default(s, "volumeMode", json!("Filesystem"));
                }
            }
        }
    });
    template(obj, "/spec/template");
}

fn daemonset(obj: &mut Value) {
    with_spec(obj, |spec| {
        set_default(spec, "revisionHistoryLimit", json!(10));
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(s) = strategy.as_object_mut() {
            set_default(s, "type", json!("RollingUpdate"));
            if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "maxUnavailable", json!(1));
                    set_default(ru, "maxSurge", json!(0));
                }
            }
        }
    });
    template(obj, "/spec/template");
}

fn job(obj: &mut Value) {
    with_spec(obj, |spec| {
        // Both unset means a single pod; parallelism alone leaves completions open-ended.
        if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null) {
            spec.insert("completions".into(), json!(1));
        }
        set_default(spec, "parallelism", json!(1));
        let per_index = spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null());
        set_default(spec, "backoffLimit", json!(if per_index { i64::from(i32::MAX) } else { 6 }));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
        let has_failure_policy = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
        set_default(
            spec,
            "podReplacementPolicy",
            json!(if has_failure_policy { "Failed" } else { "TerminatingOrFailed" }),
        );
    });
    // A Job without labels takes its template's labels.
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let (Some(labels), Some(meta)) = (template_labels, child(obj, "metadata")) {
        set_default(meta, "labels", labels);
    }
    template(obj, "/spec/template");
}

fn cronjob(obj: &mut Value) {
    with_spec(obj, |spec| {
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
    });
    template(obj, "/spec/jobTemplate/spec/template");
}

fn service(obj: &mut Value) {
    with_spec(obj, |spec| {
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
        if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
            set_default(spec, "sessionAffinityConfig", json!({"clientIP": {"timeoutSeconds": 10800}}));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
                let unset = match p.get("targetPort") {
                    None | Some(Value::Null) => true,
                    Some(Value::Number(n)) => n.as_i64() == Some(0),
                    Some(Value::String(s)) => s.is_empty(),
                    _ => false,
                };
                if unset && let Some(port) = p.get("port").cloned() {
                    p.insert("targetPort".into(), port);
                }
            }
        }
        if ty == "ExternalName" {
            return;
        }
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
            set_default(spec, "externalTrafficPolicy", json!("Cluster"));
        }
        if ty == "LoadBalancer" {
            set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
        }
        let v6 = spec.get("clusterIP").and_then(Value::as_str).is_some_and(|ip| ip.contains(':'));
        set_default(spec, "ipFamilies", json!([if v6 { "IPv6" } else { "IPv4" }]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    });
}

fn namespace(obj: &mut Value) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    if !name.is_empty()
        && let Some(meta) = child(obj, "metadata")
        && let Some(labels) = child_value(meta, "labels")
    {
        // Kubernetes always forces this label to the namespace's name.
        labels.insert(METADATA_NAME.into(), json!(name));
    }
    if let Some(status) = child(obj, "status") {
        set_default(status, "phase", json!("Active"));
    }
}

/// Like [`child`], on a map entry.
fn child_value<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), json!({}));
    }
    map.get_mut(key)?.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpl() -> Value {
        json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}})
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": tmpl()}});
        apply_defaults("Deployment", &mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(s["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(s["template"]["spec"]["containers"][0]["imagePullPolicy"], "Always");
        // Templates do not get Pod-only admission defaults.
        assert!(s["template"]["spec"].get("tolerations").is_none());
        let mut r = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply_defaults("Deployment", &mut r);
        assert_eq!(r["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn replicaset_statefulset_daemonset() {
        let mut rs = json!({"spec": {"replicas": 0, "template": tmpl()}});
        apply_defaults("ReplicaSet", &mut rs);
        assert_eq!(rs["spec"]["replicas"], 0);
        let mut ss = json!({"spec": {"template": tmpl(), "volumeClaimTemplates": [{"metadata": {"name": "d"}}]}});
        apply_defaults("StatefulSet", &mut ss);
        assert_eq!(ss["spec"]["replicas"], 1);
        assert_eq!(ss["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(ss["spec"]["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
        assert_eq!(ss["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(ss["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
        let mut ds = json!({"spec": {"template": tmpl()}});
        apply_defaults("DaemonSet", &mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn job_and_cronjob() {
        let mut j = json!({"metadata": {"name": "j"}, "spec": {"template": tmpl()}});
        apply_defaults("Job", &mut j);
        let s = &j["spec"];
        assert_eq!((s["completions"].clone(), s["parallelism"].clone()), (json!(1), json!(1)));
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(j["metadata"]["labels"], json!({"app": "x"}));
        let mut p = json!({"spec": {"parallelism": 3, "template": tmpl()}});
        apply_defaults("Job", &mut p);
        assert!(p["spec"].get("completions").is_none());
        let mut c = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": tmpl()}}}});
        apply_defaults("CronJob", &mut c);
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(c["spec"]["suspend"], false);
        assert_eq!(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["schedulerName"], "default-scheduler");
    }

    #[test]
    fn service_defaults() {
        let mut s =
            json!({"spec": {"selector": {"app": "x"}, "ports": [{"port": 80}, {"port": 81, "targetPort": "web"}]}});
        apply_defaults("Service", &mut s);
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(spec["ports"][1]["targetPort"], "web");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        let mut e = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        apply_defaults("Service", &mut e);
        assert!(e["spec"].get("ipFamilies").is_none());
        let mut np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply_defaults("Service", &mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn small_kinds() {
        let mut ns = json!({"metadata": {"name": "team", "labels": {"kubernetes.io/metadata.name": "other"}}});
        apply_defaults("Namespace", &mut ns);
        assert_eq!(ns["metadata"]["labels"][METADATA_NAME], "team");
        assert_eq!(ns["status"]["phase"], "Active");
        let mut secret = json!({"metadata": {"name": "s"}});
        apply_defaults("Secret", &mut secret);
        assert_eq!(secret["type"], "Opaque");
        let mut pvc = json!({"spec": {}});
        apply_defaults("PersistentVolumeClaim", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        let mut node = json!({"status": {"capacity": {"cpu": "4"}}});
        apply_defaults("Node", &mut node);
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));
        let mut ep = json!({"subsets": [{"ports": [{"port": 80}]}]});
        apply_defaults("Endpoints", &mut ep);
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
        let mut unknown = json!({"spec": {}});
        apply_defaults("Widget", &mut unknown);
        assert_eq!(unknown, json!({"spec": {}}));
    }
}
