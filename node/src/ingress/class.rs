//! Which Ingresses this node serves: those of an IngressClass whose controller is
//! [`CONTROLLER`] (the control plane creates `skiff`, marked default), and those naming no
//! class at all while such a class is the default — as the Ingress spec says an Ingress
//! without a class belongs to the default class. The legacy `kubernetes.io/ingress.class`
//! annotation counts as a class name when `spec.ingressClassName` is unset.

use std::collections::HashSet;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// The `spec.controller` of IngressClasses this node serves.
pub const CONTROLLER: &str = "skiff.dev/ingress";
/// The class the control plane creates.
pub const CLASS_NAME: &str = "skiff";
/// The annotation marking the default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The pre-`ingressClassName` way of naming a class.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The classes served, from the IngressClass objects.
#[derive(Debug, Clone, Default)]
pub struct ServedClasses {
    names: HashSet<String>,
    /// Whether an Ingress without a class is ours: a served class is marked default, or no
    /// class at all is marked default (then `skiff` is assumed, as the control plane makes
    /// it default — this also covers the moment before the IngressClass watch synced).
    default: bool,
}

impl ServedClasses {
    /// From every IngressClass in the cluster.
    pub fn new<'a>(classes: impl IntoIterator<Item = &'a IngressClass>) -> ServedClasses {
        let mut names: HashSet<String> = HashSet::from([CLASS_NAME.to_string()]);
        let mut ours_default = false;
        let mut any_default = false;
        for class in classes {
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
            let ours = class.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
            any_default |= is_default;
            if let (true, Some(name)) = (ours, &class.metadata.name) {
                names.insert(name.clone());
                ours_default |= is_default;
            }
        }
        ServedClasses { names, default: ours_default || !any_default }
    }

    /// Whether this node serves `ingress`.
    pub fn serves(&self, ingress: &Ingress) -> bool {
        let class = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).or_else(|| {
            ingress.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)).map(String::as_str)
        });
        match class {
            None | Some("") => self.default,
            Some(name) => self.names.contains(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: default.to_string()}},
            "spec": {"controller": controller},
        }))
        .expect("valid class")
    }

    fn ingress(class: Option<&str>) -> Ingress {
        serde_json::from_value(json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": class}}))
            .expect("valid ingress")
    }

    #[test]
    fn serves_own_classes_and_classless_when_default() {
        let classes = [class("skiff", CONTROLLER, true), class("nginx", "k8s.io/ingress-nginx", false)];
        let served = ServedClasses::new(&classes);
        assert!(served.serves(&ingress(Some("skiff"))));
        assert!(served.serves(&ingress(None)));
        assert!(!served.serves(&ingress(Some("nginx"))));
    }

    #[test]
    fn classless_belongs_to_another_default() {
        let classes = [class("skiff", CONTROLLER, false), class("nginx", "k8s.io/ingress-nginx", true)];
        let served = ServedClasses::new(&classes);
        assert!(!served.serves(&ingress(None)));
        assert!(served.serves(&ingress(Some("skiff"))));
    }

    #[test]
    fn before_any_class_exists_skiff_is_assumed_default() {
        let served = ServedClasses::new(std::iter::empty());
        assert!(served.serves(&ingress(None)));
        assert!(served.serves(&ingress(Some("skiff"))));
        assert!(!served.serves(&ingress(Some("other"))));
    }
}
