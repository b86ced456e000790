//! The `skiff` IngressClass: the class every node's ingress serves (controller
//! `skiff.dev/ingress`), marked the cluster's default so Ingresses naming no class are served
//! too. Created at every start when missing; an existing one is left as the user has it (they
//! may have taken the default mark away, or handed it to another controller's class).

use serde_json::{Value, json};

use crate::apiserver::error::ApiError;
use crate::registry::catalog;
use crate::registry::rest::{Registry, WriteOptions};

/// The class name, as nodes know it.
pub const NAME: &str = "skiff";
/// The `spec.controller` nodes serve.
pub const CONTROLLER: &str = "skiff.dev/ingress";

fn class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": NAME, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": CONTROLLER},
    })
}

/// Creates the IngressClass unless it exists (idempotent).
pub async fn ensure(registry: &Registry) -> Result<(), ApiError> {
    let info = catalog::find("networking.k8s.io", "v1", "ingressclasses").ok_or(ApiError::NoRoute)?;
    match registry.create(info, None, class(), WriteOptions::default()).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
