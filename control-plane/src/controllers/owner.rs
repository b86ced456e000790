//! ownerReferences: who controls an object, and how a controller marks what it creates.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// An object's labels, borrowed (empty when it has none): selectors match against this in
/// every pass over a cache, where cloning each map would cost an allocation per object.
pub fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&NONE)
}

/// The ownerReference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.as_ref()?.iter().find(|r| r.controller == Some(true))
}

/// The `namespace/name` key of the controller of an object, when it is of `kind`.
pub fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<String> {
    let r = controller_ref(meta).filter(|r| r.kind == kind)?;
    Some(format!("{}/{}", meta.namespace.as_deref().unwrap_or_default(), r.name))
}

/// The reference a controller puts on what it creates (`controller` and
/// `blockOwnerDeletion` set, as the Go controllers do).
pub fn controller_reference(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}
