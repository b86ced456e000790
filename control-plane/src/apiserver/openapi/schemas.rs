//! The schema definitions behind both OpenAPI documents: every type reachable from the served
//! kinds, generated once from the `k8s-openapi` types' schemars implementations.
//!
//! The generated schemas refer to each other as `#/$defs/<name>`; this module keeps that
//! neutral form and offers [`rewrite_refs`] so each document can point refs where it keeps its
//! definitions. It also adds what `k8s-openapi` does not carry but clients rely on: the
//! `x-kubernetes-group-version-kind` extension on top-level kinds (kubectl keys its models by
//! it), synthesised `<Kind>List` definitions, and the strategic-merge-patch extensions of the
//! tagged fields (so `kubectl apply` merges containers by name instead of replacing), taken
//! from the table in [`crate::apiserver::patch::merge_keys`] that the PATCH code reads too.
//!
//! The definitions are generated once per process ([`Definitions::shared`]) and shared by the
//! documents and by strategic merge, which walks them to find each field's type
//! ([`definitions`]).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::apiserver::patch::merge_keys::PATCH_META;
use crate::registry::catalog::{RESOURCES, ResourceInfo};

/// The ref prefix of the generated schemas (schemars' draft 2020-12 default).
pub(super) const NEUTRAL_PREFIX: &str = "#/$defs/";

/// Definition name of `ListMeta`, used by the synthesised list kinds.
pub(super) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
/// Definition name of `Status`, returned by delete-collection.
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
/// Definition name of `DeleteOptions`, the body of deletes.
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
/// Definition name of `Patch`, the body of patches.
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
/// Definition name of `autoscaling/v1` `Scale`, the body of the `scale` subresource.
pub(super) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// `x-kubernetes-group-version-kind` name.
pub(super) const GVK_EXT: &str = "x-kubernetes-group-version-kind";

/// Every definition the documents need, keyed by OpenAPI name, refs in neutral form.
#[derive(Debug)]
pub(super) struct Definitions {
    pub map: Map<String, Value>,
}

static SHARED: OnceLock<Definitions> = OnceLock::new();

/// The definitions map, generated on first use (it takes a moment) and kept for the process.
pub(crate) fn definitions() -> &'static Map<String, Value> {
    &Definitions::shared().map
}

impl Definitions {
    /// The process-wide definitions, generated on first use.
    pub fn shared() -> &'static Definitions {
        SHARED.get_or_init(Self::generate)
    }

    /// Generates the definitions of every served kind, their lists and the shared meta types.
    pub fn generate() -> Self {
        let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
        let mut kinds = Vec::new();
        for r in RESOURCES {
            let schema = r.codec.schema(&mut generator);
            kinds.push((r, r.codec.schema_name(), schema.to_value()));
        }
        add::<meta::ListMeta>(&mut generator);
        add::<meta::Status>(&mut generator);
        add::<meta::DeleteOptions>(&mut generator);
        add::<meta::Patch>(&mut generator);
        add::<k8s_openapi::api::autoscaling::v1::Scale>(&mut generator);

        let mut map = generator.take_definitions(false);
        for (r, name, mut schema) in kinds {
            // k8s-openapi marks `metadata` required because the Rust field is not optional;
            // the Go schema does not, and client-side validation would reject bare objects.
            if let Some(obj) = schema.as_object_mut() {
                remove_required(obj, "metadata");
                obj.insert(GVK_EXT.into(), json!([gvk(r)]));
            }
            map.insert(format!("{name}List"), list_schema(r, &name));
            map.insert(name, schema);
        }
        if let Some(Value::Object(scale)) = map.get_mut(SCALE) {
            scale.insert(GVK_EXT.into(), json!([{"group": "autoscaling", "version": "v1", "kind": "Scale"}]));
        }
        if let Some(Value::Object(status)) = map.get_mut(STATUS) {
            status.insert(GVK_EXT.into(), json!([{"group": "", "version": "v1", "kind": "Status"}]));
        }
        for (def, prop, key, strategy) in PATCH_META {
            let Some(Value::Object(p)) = map.get_mut(*def).and_then(|d| d.pointer_mut(&format!("/properties/{prop}")))
            else {
                continue;
            };
            if let Some(key) = key {
                p.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
            p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
        map.sort_keys();
        Self { map }
    }

    /// Names of the definitions reachable from `roots` (the roots included), following refs.
    pub fn reachable<'a>(&self, roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = roots.into_iter().map(str::to_owned).collect();
        while let Some(name) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(schema) = self.map.get(&name) {
                collect_refs(schema, &mut |r| {
                    if !seen.contains(r) {
                        stack.push(r.to_owned());
                    }
                });
            }
        }
        seen
    }
}

fn add<T: JsonSchema>(generator: &mut SchemaGenerator) {
    // `subschema_for` registers the type (and all it references) as a definition.
    let _ = generator.subschema_for::<T>();
}

fn remove_required(obj: &mut Map<String, Value>, field: &str) {
    if let Some(Value::Array(req)) = obj.get_mut("required") {
        req.retain(|v| v != field);
        if req.is_empty() {
            obj.remove("required");
        }
    }
}

/// The `{group, version, kind}` object of a resource.
pub(super) fn gvk(r: &ResourceInfo) -> Value {
    json!({"group": r.group, "kind": r.kind, "version": r.version})
}

/// The `<Kind>List` definition: the Go server publishes one per kind, and list operations
/// return it.
fn list_schema(r: &ResourceInfo, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", r.kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": {"$ref": format!("{NEUTRAL_PREFIX}{item}")},
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "$ref": format!("{NEUTRAL_PREFIX}{LIST_META}"),
                "description": "Standard list metadata.",
            },
        },
        "required": ["items"],
        GVK_EXT: [{"group": r.group, "kind": r.list_kind(), "version": r.version}],
    })
}

/// Calls `f` with the definition name of every `$ref` inside `value`.
fn collect_refs(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(NEUTRAL_PREFIX) {
                            f(name);
                        }
                    }
                    _ => collect_refs(v, f),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, f)),
        _ => {}
    }
}

/// Rewrites every neutral `$ref` in `value` to `prefix<name>`.
pub(super) fn rewrite_refs(value: &mut Value, prefix: &str) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match v {
                    Value::String(r) if k == "$ref" => {
                        if let Some(name) = r.strip_prefix(NEUTRAL_PREFIX) {
                            *r = format!("{prefix}{name}");
                        }
                    }
                    _ => rewrite_refs(v, prefix),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, prefix)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_carry_gvk_and_every_ref_resolves() {
        let defs = Definitions::generate();
        let pod = defs.map.get("io.k8s.api.core.v1.Pod").expect("pod definition");
        assert_eq!(pod[GVK_EXT], json!([{"group": "", "kind": "Pod", "version": "v1"}]));
        assert!(pod.get("required").is_none(), "metadata must not be required");
        assert!(defs.map.contains_key("io.k8s.api.apps.v1.DeploymentList"));
        let mut missing = Vec::new();
        for schema in defs.map.values() {
            collect_refs(schema, &mut |r| {
                if !defs.map.contains_key(r) {
                    missing.push(r.to_owned());
                }
            });
        }
        assert!(missing.is_empty(), "dangling refs: {missing:?}");
        let containers = &defs.map["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        // Every patch-metadata entry names a real property (a typo would silently break
        // `kubectl apply` merging for that list).
        for (def, prop, _, strategy) in PATCH_META {
            let p = defs.map.get(*def).and_then(|d| d.pointer(&format!("/properties/{prop}")));
            assert_eq!(p.map(|p| &p["x-kubernetes-patch-strategy"]), Some(&json!(strategy)), "{def}.{prop}");
        }
    }

    #[test]
    fn reachable_follows_refs() {
        let defs = Definitions::generate();
        let set = defs.reachable(["io.k8s.api.apps.v1.Deployment"]);
        assert!(set.contains("io.k8s.api.core.v1.PodSpec"));
        assert!(set.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(!set.contains("io.k8s.api.core.v1.Pod"));
    }
}
