//! The catalog of resources the API server serves: for each one its group/version/kind, its
//! REST names (plural, singular, short names), its scope and subresources, and a [`Codec`]
//! that ties it to its `k8s-openapi` type.
//!
//! Handlers are generic over this table: adding a resource is one line here. The typed codec
//! is what makes bodies real Kubernetes objects — decoding through the `k8s-openapi` type
//! checks every field's type, finds unknown fields (for `fieldValidation=Strict`), and
//! normalises the JSON the way the Go API server's round-trip does.

use std::marker::PhantomData;

use k8s_openapi::Resource;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Why a body could not be decoded into its typed object.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The JSON does not fit the type; `path` names the offending field.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Decoded body: the normalised JSON and the unknown fields that were dropped (JSON paths
/// like `.spec.containers[0].imagee`).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub value: Value,
    pub unknown_fields: Vec<String>,
}

/// Typed operations for one resource kind.
pub trait Codec: Send + Sync + 'static {
    /// Decodes `value` through the typed object and back to JSON.
    fn decode(&self, value: Value) -> Result<Decoded, DecodeError>;
    /// The OpenAPI definition name of the type (e.g. `io.k8s.api.core.v1.Pod`).
    fn schema_name(&self) -> String;
    /// The JSON schema of the type, with referenced definitions added to `generator`.
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
}

/// The [`Codec`] of a `k8s-openapi` type.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> std::fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::any::type_name::<T>())
    }
}

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Typed<T> {
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Codec for Typed<T>
where
    T: DeserializeOwned + Serialize + schemars::JsonSchema + 'static,
{
    fn decode(&self, value: Value) -> Result<Decoded, DecodeError> {
        let mut unknown_fields = Vec::new();
        let mut on_unknown = |path: serde_ignored::Path<'_>| unknown_fields.push(json_path(&path.to_string()));
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        let typed: T = serde_path_to_error::deserialize(de).map_err(|e| DecodeError::Invalid {
            path: json_path(&e.path().to_string()),
            message: e.inner().to_string(),
        })?;
        let value = serde_json::to_value(&typed)
            .map_err(|e| DecodeError::Invalid { path: ".".into(), message: e.to_string() })?;
        Ok(Decoded { value, unknown_fields })
    }

    fn schema_name(&self) -> String {
        T::schema_name().into_owned()
    }

    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// Turns serde's `a.b[0].c` path notation into Kubernetes' `.a.b[0].c` field paths.
fn json_path(p: &str) -> String {
    if p.is_empty() || p == "." { ".".into() } else { format!(".{p}") }
}

/// One servable resource.
pub struct ResourceInfo {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, the REST path segment (`pods`).
    pub plural: &'static str,
    /// Lower-case singular (`pod`).
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources (`status`, `scale`, `binding`, ...).
    pub subresources: &'static [&'static str],
    pub codec: &'static dyn Codec,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ResourceInfo {
    /// `group/version`, or just `version` for the core group (the `apiVersion` field).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The store key prefix of this resource: `<group>/<plural>/` (core: `<plural>/`), like
    /// the Go API server's etcd layout (`/registry/pods/ns/name`).
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() { format!("{}/", self.plural) } else { format!("{}/{}/", self.group, self.plural) }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }

    /// `plural` or `plural.group`: how Kubernetes names the resource in messages.
    pub fn resource_name(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `Kind` or `Kind.group`: how Kubernetes names the kind in `Invalid` messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.to_string() } else { format!("{}.{}", self.kind, self.group) }
    }

    /// `ListKind` of the resource (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

/// Builds a [`ResourceInfo`] from a `k8s-openapi` type; group, version, kind, plural and
/// scope come from the type's own `Resource` impl so they cannot drift.
macro_rules! resource {
    ($ty:ty, $singular:literal, short: [$($short:literal),*], cat: [$($cat:literal),*], sub: [$($sub:literal),*]) => {
        ResourceInfo {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            plural: <$ty as Resource>::URL_PATH_SEGMENT,
            singular: $singular,
            namespaced: is_namespaced::<$ty>(),
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
            codec: &Typed::<$ty>::new(),
        }
    };
}

const fn is_namespaced<T: Resource>() -> bool
where
    T::Scope: ScopeKind,
{
    <T::Scope as ScopeKind>::NAMESPACED
}

trait ScopeKind {
    const NAMESPACED: bool;
}
impl ScopeKind for k8s_openapi::NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl ScopeKind for k8s_openapi::ClusterResourceScope {
    const NAMESPACED: bool = false;
}
impl ScopeKind for k8s_openapi::SubResourceScope {
    const NAMESPACED: bool = true;
}

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch, coordination::v1 as coordination,
    core::v1 as core, discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, storage::v1 as storage,
};

/// Every resource the API server serves.
pub static RESOURCES: &[ResourceInfo] = &[
    resource!(core::Namespace, "namespace", short: ["ns"], cat: [], sub: ["status", "finalize"]),
    resource!(core::Pod, "pod", short: ["po"], cat: ["all"], sub: ["status", "binding", "eviction", "log", "exec", "attach", "portforward"]),
    resource!(core::Service, "service", short: ["svc"], cat: ["all"], sub: ["status"]),
    resource!(core::Endpoints, "endpoints", short: ["ep"], cat: [], sub: []),
    resource!(core::ConfigMap, "configmap", short: ["cm"], cat: [], sub: []),
    resource!(core::Secret, "secret", short: [], cat: [], sub: []),
    resource!(core::Node, "node", short: ["no"], cat: [], sub: ["status"]),
    resource!(core::Event, "event", short: ["ev"], cat: [], sub: []),
    resource!(core::ServiceAccount, "serviceaccount", short: ["sa"], cat: [], sub: []),
    resource!(core::PersistentVolume, "persistentvolume", short: ["pv"], cat: [], sub: ["status"]),
    resource!(core::PersistentVolumeClaim, "persistentvolumeclaim", short: ["pvc"], cat: [], sub: ["status"]),
    resource!(apps::Deployment, "deployment", short: ["deploy"], cat: ["all"], sub: ["status", "scale"]),
    resource!(apps::ReplicaSet, "replicaset", short: ["rs"], cat: ["all"], sub: ["status", "scale"]),
    resource!(apps::DaemonSet, "daemonset", short: ["ds"], cat: ["all"], sub: ["status"]),
    resource!(apps::StatefulSet, "statefulset", short: ["sts"], cat: ["all"], sub: ["status", "scale"]),
    resource!(apps::ControllerRevision, "controllerrevision", short: [], cat: [], sub: []),
    resource!(batch::Job, "job", short: [], cat: ["all"], sub: ["status"]),
    resource!(batch::CronJob, "cronjob", short: ["cj"], cat: ["all"], sub: ["status"]),
    resource!(autoscaling::HorizontalPodAutoscaler, "horizontalpodautoscaler", short: ["hpa"], cat: ["all"], sub: ["status"]),
    resource!(discovery::EndpointSlice, "endpointslice", short: [], cat: [], sub: []),
    resource!(networking::Ingress, "ingress", short: ["ing"], cat: [], sub: ["status"]),
    resource!(networking::IngressClass, "ingressclass", short: [], cat: [], sub: []),
    resource!(coordination::Lease, "lease", short: [], cat: [], sub: []),
    resource!(storage::StorageClass, "storageclass", short: ["sc"], cat: [], sub: []),
    resource!(policy::PodDisruptionBudget, "poddisruptionbudget", short: ["pdb"], cat: [], sub: ["status"]),
    resource!(events::Event, "event", short: [], cat: [], sub: []),
];

/// Finds a resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by group and kind (any version).
pub fn find_kind(group: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// The distinct `(group, version)` pairs served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}
