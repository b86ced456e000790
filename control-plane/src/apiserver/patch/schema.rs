//! Where strategic merge stands in the type of the object it patches: a walk over the real
//! OpenAPI schemas of the served kinds, from a kind's definition down `properties`, list
//! `items` and map `additionalProperties`, through `$ref`s to nested definitions.
//!
//! At each field it asks [`super::merge_keys`] for the struct tag of `(definition, property)`,
//! so the merge key of a list depends on where the list sits, exactly as the Go tags do. The
//! schemas are the OpenAPI documents' own definitions (built once, see
//! [`crate::apiserver::openapi::definitions`]), so the type graph cannot drift from what
//! kubectl sees. This module owns only the navigation; the merge itself is in
//! [`super::strategic`].

use serde_json::{Map, Value};

use super::merge_keys;
use crate::apiserver::openapi;
use crate::registry::catalog::RESOURCES;

/// Where refs point in the shared definitions (their neutral, schemars form).
const REF_PREFIX: &str = "#/$defs/";
/// The definition every object's `metadata` has.
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
/// The body of the `scale` subresource, patched as kind `Scale`.
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
/// Refs followed in a row before giving up (guards against a ref cycle).
const MAX_REF_HOPS: usize = 16;

/// A position in the type graph: the schema of the value whose fields we are looking at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ty {
    /// Nothing known: every field gets the default strategy.
    Unknown,
    /// The top level of an object of a kind we have no schema for: only `metadata` is known.
    AnyObject,
    /// A schema node: a definition, or a schema inline in one (a list's items, a map's values).
    Schema(Node),
}

/// A schema node and the definition it is, if it is one (struct tags are keyed by it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    definition: Option<&'static str>,
    schema: &'static Value,
}

/// How a field is combined with the patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// No tag: objects merge recursively, lists are replaced.
    Default,
    /// `patchStrategy:"merge"`: lists are merged, by `key` for lists of objects and by value
    /// for lists of primitives (`key` is `None`).
    Merge { key: Option<&'static str> },
}

/// The patch metadata of one field: its strategy, and the type of its value (for a list, the
/// type of its items).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldMeta {
    pub(crate) strategy: Strategy,
    pub(crate) ty: Ty,
}

impl FieldMeta {
    const UNKNOWN: FieldMeta = FieldMeta { strategy: Strategy::Default, ty: Ty::Unknown };

    const fn of(ty: Ty) -> FieldMeta {
        FieldMeta { strategy: Strategy::Default, ty }
    }
}

impl Ty {
    /// The definition this position resolves to, if any (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn definition(self) -> Option<&'static str> {
        match self {
            Ty::Schema(node) => resolve(node).definition,
            Ty::Unknown | Ty::AnyObject => None,
        }
    }
}

/// The root type of an object of `kind` (e.g. `"Deployment"`, or `"Scale"` for the scale
/// subresource); [`Ty::AnyObject`] for a kind without a served schema.
pub(crate) fn root_type(kind: &str) -> Ty {
    let name = if kind == "Scale" {
        SCALE.to_owned()
    } else {
        // Kinds are unique among served resources except `Event` (core and events.k8s.io),
        // whose two types carry no struct tags beyond `metadata`: either one will do.
        match RESOURCES.iter().find(|r| r.kind == kind) {
            Some(r) => r.codec.schema_name(),
            None => return Ty::AnyObject,
        }
    };
    definition(&name).map_or(Ty::AnyObject, Ty::Schema)
}

/// The patch metadata of field `name` of a value of type `ty`.
pub(crate) fn field(ty: Ty, name: &str) -> FieldMeta {
    let node = match ty {
        Ty::Unknown => return FieldMeta::UNKNOWN,
        Ty::AnyObject if name == "metadata" => {
            return FieldMeta::of(definition(OBJECT_META).map_or(Ty::Unknown, Ty::Schema));
        }
        Ty::AnyObject => return FieldMeta::UNKNOWN,
        Ty::Schema(node) => resolve(node),
    };
    if let Some(property) = node.schema.get("properties").and_then(|p| p.get(name)) {
        let strategy = match node.definition.and_then(|d| merge_keys::patch_meta(d, name)) {
            Some((key, strategy)) if merge_keys::merges(strategy) => Strategy::Merge { key },
            _ => Strategy::Default,
        };
        return FieldMeta { strategy, ty: Ty::Schema(value_type(property)) };
    }
    // A map: every key holds a value of the same (untagged) type.
    match node.schema.get("additionalProperties") {
        Some(values @ Value::Object(_)) => FieldMeta::of(Ty::Schema(value_type(values))),
        _ => FieldMeta::UNKNOWN,
    }
}

/// The type a field's value is navigated as: its items for a list, itself otherwise.
fn value_type(schema: &'static Value) -> Node {
    let node = resolve(Node { definition: None, schema });
    match node.schema.get("items") {
        Some(items @ Value::Object(_)) => Node { definition: None, schema: items },
        _ => node,
    }
}

/// Follows `$ref`s to the definition a node names; a dangling ref leaves the node as it is.
fn resolve(mut node: Node) -> Node {
    for _ in 0..MAX_REF_HOPS {
        let Some(name) = node.schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX))
        else {
            break;
        };
        match definition(name) {
            Some(target) => node = target,
            None => break,
        }
    }
    node
}

/// The named definition, with the name borrowed from the shared map.
fn definition(name: &str) -> Option<Node> {
    let definitions: &'static Map<String, Value> = openapi::definitions();
    definitions.get_key_value(name).map(|(name, schema)| Node { definition: Some(name.as_str()), schema })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(meta: FieldMeta) -> Option<&'static str> {
        match meta.strategy {
            Strategy::Merge { key } => key,
            Strategy::Default => None,
        }
    }

    /// Walks `path` (field names; lists are stepped into implicitly) from the root of `kind`.
    fn walk(kind: &str, path: &[&str]) -> FieldMeta {
        let mut meta = FieldMeta::of(root_type(kind));
        for name in path {
            meta = field(meta.ty, name);
        }
        meta
    }

    #[test]
    fn ports_key_depends_on_where_the_field_sits() {
        let container_ports = walk("Pod", &["spec", "containers", "ports"]);
        assert_eq!(key_of(container_ports), Some("containerPort"));
        assert_eq!(key_of(walk("Service", &["spec", "ports"])), Some("port"));
        assert_eq!(field(Ty::Unknown, "ports").strategy, Strategy::Default);
    }

    #[test]
    fn deployment_reaches_container_env() {
        let containers = walk("Deployment", &["spec", "template", "spec", "containers"]);
        assert_eq!(key_of(containers), Some("name"));
        assert_eq!(containers.ty.definition(), Some("io.k8s.api.core.v1.Container"));
        assert_eq!(key_of(field(containers.ty, "env")), Some("name"));
    }

    #[test]
    fn cronjob_reaches_pod_spec() {
        let pod_spec = walk("CronJob", &["spec", "jobTemplate", "spec", "template", "spec"]);
        assert_eq!(pod_spec.ty.definition(), Some("io.k8s.api.core.v1.PodSpec"));
        let meta = walk("CronJob", &["spec", "jobTemplate", "metadata", "finalizers"]);
        assert_eq!(meta.strategy, Strategy::Merge { key: None });
    }

    #[test]
    fn finalizers_merge_as_primitives_and_taints_are_replaced() {
        assert_eq!(walk("Deployment", &["metadata", "finalizers"]).strategy, Strategy::Merge { key: None });
        assert_eq!(walk("Node", &["spec", "taints"]).strategy, Strategy::Default);
        assert_eq!(walk("Pod", &["spec", "tolerations"]).strategy, Strategy::Default);
        // `retainKeys` alone does not make a field merge differently.
        assert_eq!(walk("Deployment", &["spec", "strategy"]).strategy, Strategy::Default);
    }

    #[test]
    fn maps_unknown_kinds_and_scale() {
        let label = walk("Pod", &["metadata", "labels", "app"]);
        assert_eq!(label.strategy, Strategy::Default);
        assert!(matches!(label.ty, Ty::Schema(_)));
        assert_eq!(walk("Widget", &["metadata", "finalizers"]).strategy, Strategy::Merge { key: None });
        assert!(matches!(walk("Widget", &["spec"]).ty, Ty::Unknown));
        assert_eq!(root_type("Scale").definition(), Some(SCALE));
        assert_eq!(walk("Scale", &["metadata", "ownerReferences"]).strategy, Strategy::Merge { key: Some("uid") });
    }

    #[test]
    fn tags_beyond_the_old_hand_graph_apply() {
        // Every status with a tagged `conditions` list, wherever the kind sits.
        assert_eq!(key_of(walk("PersistentVolumeClaim", &["status", "conditions"])), Some("type"));
        assert_eq!(key_of(walk("HorizontalPodAutoscaler", &["status", "conditions"])), Some("type"));
        assert_eq!(key_of(walk("ServiceAccount", &["secrets"])), Some("name"));
        assert_eq!(key_of(walk("Pod", &["spec", "ephemeralContainers", "volumeMounts"])), Some("mountPath"));
    }

    #[test]
    fn every_served_kind_has_a_schema() {
        for r in RESOURCES {
            assert!(root_type(r.kind).definition().is_some(), "{} has no definition", r.kind);
        }
    }
}
