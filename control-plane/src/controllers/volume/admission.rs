//! The DefaultStorageClass admission plugin: a PersistentVolumeClaim created without
//! `spec.storageClassName` gets the default StorageClass's name (a claim that sets `""` asks
//! for no class and is left alone). Called by [`crate::registry::rest::Registry::create`]
//! before validation, reading the classes straight from the store so it needs no cache.
//!
//! Not here: the protection finalizers — the volume controller adds them (see `protection`),
//! so stores without that controller (unit tests of other controllers) see plain claims.

use std::sync::Arc;

use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};

use super::matching::default_class;
use crate::apiserver::error::ApiError;
use crate::controllers::info;
use crate::registry::list::{Filter, list};
use crate::storage::SharedStore;

/// Sets the default class on a new claim that names none (no-op for other kinds, and when no
/// class is marked default).
pub async fn default_storage_class(store: &SharedStore, kind: &str, obj: &mut Value) -> Result<(), ApiError> {
    if kind != "PersistentVolumeClaim" || obj.pointer("/spec/storageClassName").is_some_and(|v| !v.is_null()) {
        return Ok(());
    }
    let classes =
        list(store, &info("storage.k8s.io", "storageclasses").key_prefix(), &Filter::default(), 0, None).await?;
    let classes: Vec<Arc<StorageClass>> =
        classes.items.into_iter().filter_map(|v| serde_json::from_value(v).ok()).map(Arc::new).collect();
    if let Some(name) = default_class(&classes).and_then(|c| c.metadata.name.clone())
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("storageClassName".into(), json!(name));
    }
    Ok(())
}
