//! Workload validation: Deployment, ReplicaSet, StatefulSet, DaemonSet, Job
//! and CronJob — selectors against templates, counts, strategy enums, and the
//! fields that are immutable on update.

use serde_json::Value;

use super::FieldCause;
use super::pod::validate_pod_template;
use super::util::{check_enum, check_min, str_at};
use crate::cron::Schedule;
use crate::selector::LabelSelector;

/// Check `spec.selector` (required unless `optional`) and that it selects the template's labels.
fn validate_selector(
    kind: &str,
    spec: &Value,
    template_path: &str,
    template: Option<&Value>,
    optional: bool,
    errs: &mut Vec<FieldCause>,
) {
    let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) else {
        if !optional {
            errs.push(FieldCause::required("spec.selector", ""));
        }
        return;
    };
    let parsed = match LabelSelector::from_json(sel) {
        Ok(p) => p,
        Err(e) => {
            errs.push(FieldCause::invalid("spec.selector", sel, &e.to_string()));
            return;
        }
    };
    if parsed.is_empty() {
        let detail = format!("empty selector is invalid for {}", kind.to_lowercase());
        errs.push(FieldCause::invalid("spec.selector", sel, &detail));
        return;
    }
    if let Some(t) = template {
        let labels = t.pointer("/metadata/labels").cloned().unwrap_or(Value::Object(Default::default()));
        if !parsed.matches_object(&serde_json::json!({"metadata": {"labels": labels}})) {
            errs.push(FieldCause::invalid(
                format!("{template_path}.metadata.labels"),
                &labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
}

/// A value that is either a non-negative integer or a percentage string.
fn check_int_or_percent(errs: &mut Vec<FieldCause>, path: &str, value: Option<&Value>) {
    let Some(v) = value else { return };
    let ok = match v {
        Value::Number(n) => n.as_i64().is_some_and(|n| n >= 0),
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p <= 100),
        _ => false,
    };
    if !ok {
        errs.push(FieldCause::invalid(path, v, "must be a non-negative integer or a percentage between 0% and 100%"));
    }
}

fn is_zero(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Number(n)) if n.as_i64() == Some(0)) || v.and_then(Value::as_str) == Some("0%")
}

/// `template` with a `persistentVolumeClaim` volume for each claim template it does not
/// already declare a volume for.
fn with_claim_volumes(template: &Value, claims: Option<&Value>) -> Value {
    let mut t = template.clone();
    let names: Vec<String> = claims
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c.pointer("/metadata/name")?.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if names.is_empty() {
        return t;
    }
    let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) else { return t };
    let volumes = spec.entry("volumes").or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = volumes.as_array_mut() {
        for name in names {
            if !list.iter().any(|v| v.get("name").and_then(Value::as_str) == Some(name.as_str())) {
                list.push(serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
            }
        }
    }
    t
}

pub(crate) fn validate_workload(kind: &str, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    if kind != "DaemonSet" {
        check_min(errs, "spec.replicas", spec.get("replicas"), 0);
    }
    check_min(errs, "spec.minReadySeconds", spec.get("minReadySeconds"), 0);
    check_min(errs, "spec.revisionHistoryLimit", spec.get("revisionHistoryLimit"), 0);
    let template = spec.get("template");
    validate_selector(kind, spec, "spec.template", template, false, errs);
    if kind == "StatefulSet" {
        // Containers may mount the claims of `volumeClaimTemplates`: the controller adds those
        // volumes to each pod, so the template is checked with them, as Kubernetes does.
        let with_claims = template.map(|t| with_claim_volumes(t, spec.get("volumeClaimTemplates")));
        validate_pod_template(with_claims.as_ref(), "spec.template", &["Always"], errs);
    } else {
        validate_pod_template(template, "spec.template", &["Always"], errs);
    }
    match kind {
        "Deployment" => {
            let ty = spec.pointer("/strategy/type");
            check_enum(errs, "spec.strategy.type", ty, &["Recreate", "RollingUpdate"]);
            let rolling = spec.pointer("/strategy/rollingUpdate");
            if ty.and_then(Value::as_str) == Some("Recreate") && rolling.is_some() {
                errs.push(FieldCause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            } else if let Some(r) = rolling {
                check_int_or_percent(errs, "spec.strategy.rollingUpdate.maxUnavailable", r.get("maxUnavailable"));
                check_int_or_percent(errs, "spec.strategy.rollingUpdate.maxSurge", r.get("maxSurge"));
                if is_zero(r.get("maxUnavailable")) && is_zero(r.get("maxSurge")) {
                    errs.push(FieldCause::invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        r.get("maxUnavailable").unwrap_or(&Value::Null),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
            if let (Some(p), Some(m)) = (
                spec.get("progressDeadlineSeconds").and_then(Value::as_i64),
                spec.get("minReadySeconds").and_then(Value::as_i64),
            ) && p <= m
            {
                errs.push(FieldCause::invalid(
                    "spec.progressDeadlineSeconds",
                    &Value::from(p),
                    "must be greater than minReadySeconds",
                ));
            }
        }
        "StatefulSet" => {
            check_enum(
                errs,
                "spec.podManagementPolicy",
                spec.get("podManagementPolicy"),
                &["OrderedReady", "Parallel"],
            );
            check_enum(
                errs,
                "spec.updateStrategy.type",
                spec.pointer("/updateStrategy/type"),
                &["OnDelete", "RollingUpdate"],
            );
            check_min(
                errs,
                "spec.updateStrategy.rollingUpdate.partition",
                spec.pointer("/updateStrategy/rollingUpdate/partition"),
                0,
            );
        }
        "DaemonSet" => {
            check_enum(
                errs,
                "spec.updateStrategy.type",
                spec.pointer("/updateStrategy/type"),
                &["OnDelete", "RollingUpdate"],
            );
        }
        _ => {}
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        if spec.get("selector") != old_spec.get("selector") {
            errs.push(FieldCause::immutable("spec.selector", spec.get("selector").unwrap_or(&Value::Null)));
        }
        if kind == "StatefulSet" {
            validate_statefulset_update(spec, old_spec, errs);
        }
    }
}

/// StatefulSet spec updates may only touch a handful of fields.
fn validate_statefulset_update(spec: &Value, old_spec: &Value, errs: &mut Vec<FieldCause>) {
    const MUTABLE: &[&str] = &[
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
        "selector",
    ];
    let strip = |s: &Value| -> Value {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            m.retain(|k, _| !MUTABLE.contains(&k.as_str()));
        }
        s
    };
    if strip(spec) != strip(old_spec) {
        errs.push(FieldCause::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

pub(crate) fn validate_job(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    validate_job_spec(spec, "spec", errs);
    // The server generates the selector unless `manualSelector`, so it may be absent here.
    validate_selector("Job", spec, "spec.template", spec.get("template"), true, errs);
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        for field in ["selector", "template", "completionMode"] {
            if spec.get(field) != old_spec.get(field) {
                errs.push(FieldCause::immutable(format!("spec.{field}"), spec.get(field).unwrap_or(&Value::Null)));
            }
        }
        if spec.get("completions") != old_spec.get("completions") && str_at(spec, "/completionMode") != "Indexed" {
            errs.push(FieldCause::immutable("spec.completions", spec.get("completions").unwrap_or(&Value::Null)));
        }
    }
}

/// Checks shared by a Job's spec and a CronJob's `jobTemplate.spec`.
fn validate_job_spec(spec: &Value, path: &str, errs: &mut Vec<FieldCause>) {
    for field in ["parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"] {
        check_min(errs, &format!("{path}.{field}"), spec.get(field), 0);
    }
    check_min(errs, &format!("{path}.activeDeadlineSeconds"), spec.get("activeDeadlineSeconds"), 1);
    check_enum(errs, &format!("{path}.completionMode"), spec.get("completionMode"), &["Indexed", "NonIndexed"]);
    if str_at(spec, "/completionMode") == "Indexed" && spec.get("completions").is_none() {
        errs.push(FieldCause::required(format!("{path}.completions"), "when completion mode is Indexed"));
    }
    validate_pod_template(spec.get("template"), &format!("{path}.template"), &["OnFailure", "Never"], errs);
}

pub(crate) fn validate_cronjob(obj: &Value, errs: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match spec.get("schedule").and_then(Value::as_str).unwrap_or("") {
        "" => errs.push(FieldCause::required("spec.schedule", "")),
        s => {
            if let Err(e) = Schedule::parse(s) {
                errs.push(FieldCause::invalid("spec.schedule", &Value::from(s), &e.to_string()));
            }
        }
    }
    if let Some(tz) = spec.get("timeZone").filter(|v| !v.is_null()) {
        validate_time_zone(tz, errs);
    }
    check_enum(errs, "spec.concurrencyPolicy", spec.get("concurrencyPolicy"), &["Allow", "Forbid", "Replace"]);
    for field in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"] {
        check_min(errs, &format!("spec.{field}"), spec.get(field), 0);
    }
    match spec.pointer("/jobTemplate/spec") {
        Some(job_spec) => validate_job_spec(job_spec, "spec.jobTemplate.spec", errs),
        None => errs.push(FieldCause::required("spec.jobTemplate.spec.template", "")),
    }
}

/// `spec.timeZone`: an IANA name the server knows ("Local" is refused, as in Kubernetes).
fn validate_time_zone(tz: &Value, errs: &mut Vec<FieldCause>) {
    let name = tz.as_str().unwrap_or_default();
    if name == "Local" || name.is_empty() {
        let detail = "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones";
        errs.push(FieldCause::invalid("spec.timeZone", tz, detail));
    } else if jiff::tz::TimeZone::get(name).is_err() {
        errs.push(FieldCause::invalid("spec.timeZone", tz, &format!("unknown time zone {name}")));
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::{CauseType, FieldCause, validate};
    use serde_json::{Value, json};

    fn fields(errs: &[FieldCause]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    fn template(labels: Value, restart: &str) -> Value {
        json!({"metadata": {"labels": labels},
               "spec": {"containers": [{"name": "a", "image": "x"}], "restartPolicy": restart}})
    }

    fn deployment(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn valid_deployment() {
        let d = deployment(json!({"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web", "tier": "fe"}), "Always"),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}}}));
        assert_eq!(validate("Deployment", &d, None), vec![]);
    }

    #[test]
    fn statefulset_containers_may_mount_their_claim_templates_only() {
        let sts = |mount: &str| {
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
                "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "a", "image": "x", "volumeMounts": [{"name": mount, "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
        };
        assert_eq!(validate("StatefulSet", &sts("data"), None), vec![]);
        let errs = validate("StatefulSet", &sts("other"), None);
        assert_eq!(fields(&errs), vec!["spec.template.spec.containers[0].volumeMounts[0].name"]);
    }

    #[test]
    fn selector_problems() {
        let missing = deployment(json!({"template": template(json!({"app": "web"}), "Always")}));
        let e = validate("Deployment", &missing, None);
        assert_eq!(fields(&e), vec!["spec.selector"]);
        assert_eq!(e[0].reason, CauseType::FieldValueRequired);
        let empty = deployment(json!({"selector": {}, "template": template(json!({"app": "web"}), "Always")}));
        assert!(validate("ReplicaSet", &empty, None)[0].message.contains("empty selector is invalid for replicaset"));
        let mismatch = deployment(json!({"selector": {"matchLabels": {"app": "db"}},
            "template": template(json!({"app": "web"}), "Always")}));
        let e = validate("DaemonSet", &mismatch, None);
        assert_eq!(fields(&e), vec!["spec.template.metadata.labels"]);
        assert!(e[0].message.ends_with("`selector` does not match template `labels`"));
        let bad_op = deployment(json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Equals"}]},
            "template": template(json!({"a": "b"}), "Always")}));
        assert!(validate("StatefulSet", &bad_op, None)[0].message.contains("not a valid label selector operator"));
    }

    #[test]
    fn counts_and_enums() {
        let d = deployment(json!({"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web"}), "OnFailure"),
            "strategy": {"type": "Blue"}}));
        let e = validate("Deployment", &d, None);
        assert_eq!(fields(&e), vec!["spec.replicas", "spec.template.spec.restartPolicy", "spec.strategy.type"]);
        let r = deployment(json!({"selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web"}), "Always"),
            "strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}));
        assert_eq!(fields(&validate("Deployment", &r, None)), vec!["spec.strategy.rollingUpdate"]);
        let s = deployment(json!({"selector": {"matchLabels": {"app": "web"}},
            "template": template(json!({"app": "web"}), "Always"),
            "podManagementPolicy": "Random", "updateStrategy": {"type": "Yolo"}}));
        assert_eq!(
            fields(&validate("StatefulSet", &s, None)),
            vec!["spec.podManagementPolicy", "spec.updateStrategy.type"]
        );
    }

    #[test]
    fn immutable_selector_and_statefulset_fields() {
        let base = json!({"selector": {"matchLabels": {"app": "web"}}, "serviceName": "web",
            "template": template(json!({"app": "web", "v": "1"}), "Always")});
        let old = deployment(base.clone());
        let mut new_spec = base.clone();
        new_spec["selector"] = json!({"matchLabels": {"app": "web", "v": "1"}});
        let e = validate("Deployment", &deployment(new_spec.clone()), Some(&old));
        assert_eq!(fields(&e), vec!["spec.selector"]);
        assert!(e[0].message.ends_with("field is immutable"));
        let mut scaled = base.clone();
        scaled["replicas"] = json!(5);
        assert_eq!(validate("StatefulSet", &deployment(scaled), Some(&old)), vec![]);
        let mut renamed = base;
        renamed["serviceName"] = json!("other");
        assert_eq!(fields(&validate("StatefulSet", &deployment(renamed), Some(&old))), vec!["spec"]);
    }

    #[test]
    fn jobs() {
        let ok = deployment(json!({"template": template(json!({"job": "x"}), "Never"), "completions": 3}));
        assert_eq!(validate("Job", &ok, None), vec![]);
        let bad = deployment(json!({"template": template(json!({}), "Always"), "parallelism": -1}));
        let e = validate("Job", &bad, None);
        assert_eq!(fields(&e), vec!["spec.parallelism", "spec.template.spec.restartPolicy"]);
        assert_eq!(e[1].message, "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"");
        let mut changed = ok.clone();
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("y");
        assert_eq!(fields(&validate("Job", &changed, Some(&ok))), vec!["spec.template"]);
    }

    #[test]
    fn cronjobs() {
        let ok = deployment(json!({"schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": template(json!({}), "OnFailure")}}}));
        assert_eq!(validate("CronJob", &ok, None), vec![]);
        let bad = deployment(json!({"schedule": "every day", "concurrencyPolicy": "Sometimes",
            "jobTemplate": {"spec": {"template": template(json!({}), "Always")}}}));
        assert_eq!(
            fields(&validate("CronJob", &bad, None)),
            vec!["spec.schedule", "spec.concurrencyPolicy", "spec.jobTemplate.spec.template.spec.restartPolicy"]
        );
        let macro_ok = deployment(json!({"schedule": "@hourly",
            "jobTemplate": {"spec": {"template": template(json!({}), "Never")}}}));
        assert_eq!(validate("CronJob", &macro_ok, None), vec![]);
        let mut tz = deployment(json!({"schedule": "CRON_TZ=UTC 0 * * * *", "timeZone": "Mars/Olympus",
            "jobTemplate": {"spec": {"template": template(json!({}), "Never")}}}));
        assert_eq!(fields(&validate("CronJob", &tz, None)), vec!["spec.schedule", "spec.timeZone"]);
        tz["spec"]["schedule"] = json!("61 * * * *");
        tz["spec"]["timeZone"] = json!("Europe/Berlin");
        assert_eq!(fields(&validate("CronJob", &tz, None)), vec!["spec.schedule"]);
        tz["spec"]["schedule"] = json!("0 9 * * mon-fri");
        assert_eq!(validate("CronJob", &tz, None), vec![]);
    }
}
