//! Which Deployments a Service can wake: those in its namespace that opted in to scale-to-zero
//! (`skiff.dev/scale-to-zero: "true"`, see [`skiff_api::scale_to_zero`]) and whose pod template
//! the Service's selector picks.
//!
//! Pure: objects in, targets out. A frontend with wake targets keeps listening with no ready
//! backend, and holds a connection while `scaler` brings a Deployment up; one without refuses
//! at once, as before. A Deployment whose annotations do not parse is no target (the control
//! plane's scale-to-zero controller reports it with a Warning event).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use skiff_api::scale_to_zero;

/// An opted-in Deployment a Service's connections can scale up from zero.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WakeTarget {
    pub namespace: String,
    pub name: String,
    /// The Deployment's uid (for events about it).
    pub uid: String,
    /// Its idle period (activity reports are spaced by a fraction of it).
    pub idle: Duration,
}

impl fmt::Display for WakeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deployment {}/{}", self.namespace, self.name)
    }
}

/// The opted-in Deployments behind `svc`, sorted (none for a Service without a selector).
pub fn targets(svc: &Service, deployments: &[Arc<Deployment>]) -> Vec<WakeTarget> {
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return Vec::new() };
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let mut found: Vec<WakeTarget> = deployments
        .iter()
        .filter(|d| d.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .filter(|d| d.metadata.deletion_timestamp.is_none())
        .filter_map(|d| {
            let settings = scale_to_zero::parse(d.metadata.annotations.as_ref()).ok()??;
            let labels = d.spec.as_ref()?.template.metadata.as_ref()?.labels.as_ref();
            scale_to_zero::selects(Some(selector), labels).then(|| WakeTarget {
                namespace: ns.to_string(),
                name: d.metadata.name.clone().unwrap_or_default(),
                uid: d.metadata.uid.clone().unwrap_or_default(),
                idle: settings.idle,
            })
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn deployment(ns: &str, name: &str, labels: Value, annotations: Value) -> Arc<Deployment> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "annotations": annotations},
                "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}}}
            }))
            .expect("deployment"),
        )
    }

    fn service(selector: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": selector, "ports": [{"port": 80}]}}))
        .expect("service")
    }

    #[test]
    fn only_opted_in_deployments_of_the_namespace_that_the_selector_picks() {
        let on = json!({"skiff.dev/scale-to-zero": "true", "skiff.dev/scale-to-zero-idle": "5s"});
        let deployments = [
            deployment("default", "web", json!({"app": "web", "v": "1"}), on.clone()),
            deployment("default", "plain", json!({"app": "web"}), json!({})),
            deployment("default", "bad", json!({"app": "web"}), json!({"skiff.dev/scale-to-zero": "maybe"})),
            deployment("default", "api", json!({"app": "api"}), on.clone()),
            deployment("other", "web", json!({"app": "web"}), on),
        ];
        let found = targets(&service(json!({"app": "web"})), &deployments);
        assert_eq!(
            found,
            [WakeTarget {
                namespace: "default".into(),
                name: "web".into(),
                uid: "uid-web".into(),
                idle: Duration::from_secs(5)
            }]
        );
        assert!(targets(&service(json!({"app": "none"})), &deployments).is_empty());
        assert!(targets(&service(json!({})), &deployments).is_empty(), "an empty selector selects nothing");
    }
}
