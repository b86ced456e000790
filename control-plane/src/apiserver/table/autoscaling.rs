//! The HorizontalPodAutoscaler printer (a port of Kubernetes' `printHorizontalPodAutoscaler`
//! and `formatHPAMetrics`, for the autoscaling/v2 shape).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{age, arr_at, int_at, name, str_at};
use super::{AGE, Cells, Column, NAME, Printer, col};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    (kind == "HorizontalPodAutoscaler").then_some(Printer { columns: HPA, row: hpa })
}

const HPA: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource.",
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    col(
        "MaxPods",
        "integer",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    col("Replicas", "integer", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
    AGE,
];

/// One metric as `current/target` (`formatHPAMetrics`, autoscaling/v2 shape).
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let current = |ptr: &str| {
        status.and_then(|s| s.pointer(ptr)).map(|q| match q {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    match str_at(spec, "/type") {
        "Resource" | "ContainerResource" => {
            let field = if str_at(spec, "/type") == "Resource" { "resource" } else { "containerResource" };
            let resource = str_at(spec, &format!("/{field}/name"));
            if let Some(target) = spec.pointer(&format!("/{field}/target/averageValue")) {
                let target = target.as_str().map_or_else(|| target.to_string(), str::to_string);
                let now = current(&format!("/{field}/current/averageValue"));
                format!("{resource}: {}/{target}", now.as_deref().unwrap_or("<unknown>"))
            } else {
                let now = current(&format!("/{field}/current/averageUtilization"))
                    .map_or_else(|| "<unknown>".to_string(), |u| format!("{u}%"));
                let target = spec
                    .pointer(&format!("/{field}/target/averageUtilization"))
                    .and_then(Value::as_i64)
                    .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                format!("{resource}: {now}/{target}")
            }
        }
        "Pods" => {
            let now = current("/pods/current/averageValue");
            format!("{}/{}", now.as_deref().unwrap_or("<unknown>"), str_at(spec, "/pods/target/averageValue"))
        }
        ty @ ("Object" | "External") => {
            let field = if ty == "Object" { "object" } else { "external" };
            let target = spec
                .pointer(&format!("/{field}/target/value"))
                .or_else(|| spec.pointer(&format!("/{field}/target/averageValue")))
                .map(|q| q.as_str().map_or_else(|| q.to_string(), str::to_string))
                .unwrap_or_else(|| "<unknown>".to_string());
            let now = current(&format!("/{field}/current/value"))
                .or_else(|| current(&format!("/{field}/current/averageValue")));
            format!("{}/{target}", now.as_deref().unwrap_or("<unknown>"))
        }
        _ => "<unknown type>".to_string(),
    }
}

fn hpa(v: &Value, now: Timestamp) -> Cells {
    let specs = arr_at(v, "/spec/metrics");
    let statuses = arr_at(v, "/status/currentMetrics");
    let targets = if specs.is_empty() {
        "<none>".to_string()
    } else {
        let list: Vec<String> = specs.iter().enumerate().map(|(i, spec)| hpa_metric(spec, statuses.get(i))).collect();
        const MAX: usize = 2;
        if list.len() > MAX {
            format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX)
        } else {
            list.join(", ")
        }
    };
    let min =
        v.pointer("/spec/minReplicas").and_then(Value::as_i64).map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        json!(name(v)),
        json!(format!("{}/{}", str_at(v, "/spec/scaleTargetRef/kind"), str_at(v, "/spec/scaleTargetRef/name"))),
        json!(targets),
        json!(min),
        json!(int_at(v, "/spec/maxReplicas")),
        json!(int_at(v, "/status/currentReplicas")),
        json!(age(v, now)),
    ]
}
